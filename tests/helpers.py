"""Small helpers shared by several test modules: byte corruption for the property-based tests of hostile files,
deep equality of env traces."""

from __future__ import annotations

import numpy as np


def corrupt(data: bytes, flips, runs, cut) -> bytes:
    """`data` with each (offset, mask) of `flips` XORed in, each (offset, bytes) of `runs` written over it, then
    truncated at `cut` (None: not truncated)."""
    out = bytearray(data)
    for off, x in flips:
        out[off] ^= x
    for off, b in runs:
        out[off:off + len(b)] = b
    if cut is not None:
        del out[cut:]
    return bytes(out)


def same(a, b) -> bool:
    """Deep, exact equality of nested dicts / lists / tuples / numpy arrays (dtype included) / floats (NaN == NaN):
    what "bit-identical episodes" means in the tests."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, float) and np.isnan(a):
        return isinstance(b, float) and np.isnan(b)
    return a == b
