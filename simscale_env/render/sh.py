"""Real spherical harmonics up to degree 4 with gsplat's constants and basis order
(gsplat/cuda/_torch_impl.py `_eval_sh_bases_fast`, Sloan's JCGT 2013 evaluation); colour = max(0, sum + 0.5)."""

from __future__ import annotations

import math

import numpy as np
import numba
from numba import get_thread_id, njit, prange

# Y_0^0 = 1 / (2 sqrt(pi)), gsplat/cuda/_torch_impl.py `_eval_sh_bases_fast` (and its CUDA sh kernel)
SH_C0 = 0.2820947917738781


@njit(cache=True)
def _bases(x, y, z, nb, out):
    out[0] = SH_C0
    if nb <= 1:
        return
    fTmpA = -0.48860251190292
    out[2] = -fTmpA * z
    out[3] = fTmpA * x
    out[1] = fTmpA * y
    if nb <= 4:
        return
    z2 = z * z
    fTmpB = -1.092548430592079 * z
    fTmpA = 0.5462742152960395
    fC1 = x * x - y * y
    fS1 = 2 * x * y
    out[6] = 0.9461746957575601 * z2 - 0.3153915652525201
    out[7] = fTmpB * x
    out[5] = fTmpB * y
    out[8] = fTmpA * fC1
    out[4] = fTmpA * fS1
    if nb <= 9:
        return
    fTmpC = -2.285228997322329 * z2 + 0.4570457994644658
    fTmpB = 1.445305721320277 * z
    fTmpA = -0.5900435899266435
    fC2 = x * fC1 - y * fS1
    fS2 = x * fS1 + y * fC1
    out[12] = z * (1.865881662950577 * z2 - 1.119528997770346)
    out[13] = fTmpC * x
    out[11] = fTmpC * y
    out[14] = fTmpB * fC1
    out[10] = fTmpB * fS1
    out[15] = fTmpA * fC2
    out[9] = fTmpA * fS2
    if nb <= 16:
        return
    fTmpD = z * (-4.683325804901025 * z2 + 2.007139630671868)
    fTmpC = 3.31161143515146 * z2 - 0.47308734787878
    fTmpB = -1.770130769779931 * z
    fTmpA = 0.6258357354491763
    fC3 = x * fC2 - y * fS2
    fS3 = x * fS2 + y * fC2
    out[20] = 1.984313483298443 * z2 * (1.865881662950577 * z2 - 1.119528997770346) + -1.006230589874905 * (
        0.9461746957575601 * z2 - 0.3153915652525201)
    out[21] = fTmpD * x
    out[19] = fTmpD * y
    out[22] = fTmpC * fC1
    out[18] = fTmpC * fS1
    out[23] = fTmpB * fC2
    out[17] = fTmpB * fS2
    out[24] = fTmpA * fC3
    out[16] = fTmpA * fS3


@njit(cache=True, parallel=True)
def _sh_kernel(coeffs, dirs, degree, clamp):
    n = len(coeffs)
    nb = (degree + 1) * (degree + 1)
    out = np.empty((n, 3), dtype=np.float32)
    for i in prange(n):
        x, y, z = np.float64(dirs[i, 0]), np.float64(dirs[i, 1]), np.float64(dirs[i, 2])
        norm = math.sqrt(x * x + y * y + z * z)
        if norm > 0:
            x, y, z = x / norm, y / norm, z / norm
        b = np.empty(25)
        _bases(x, y, z, nb, b)
        for ch in range(3):
            s = 0.0
            for k in range(nb):
                s += b[k] * coeffs[i, k, ch]
            if clamp:
                s = max(s + 0.5, 0.0)
            out[i, ch] = s
    return out


def spherical_harmonics(degree: int, dirs: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """gsplat's `spherical_harmonics(degrees_to_use, dirs, coeffs)`: sum of bases x coefficients [N, 3] (no offset);
    `dirs` need not be unit length."""
    coeffs = np.ascontiguousarray(coeffs, dtype=np.float32)
    if (degree + 1) ** 2 > coeffs.shape[1]:
        raise ValueError(f"degree {degree} needs {(degree + 1) ** 2} coefficients, got {coeffs.shape[1]}")
    return _sh_kernel(coeffs, np.ascontiguousarray(dirs, dtype=np.float32), int(degree), False)


def eval_sh_colors(coeffs: np.ndarray, dirs: np.ndarray, degree: int | None = None) -> np.ndarray:
    """Render colours as gsplat's `rasterization(..., sh_degree=d)`: max(0, SH(dirs) + 0.5). Degree 0 needs no
    direction."""
    coeffs = np.asarray(coeffs, dtype=np.float32)
    d = int(round(np.sqrt(coeffs.shape[1]))) - 1 if degree is None else int(degree)
    if d == 0:
        return np.maximum(np.float32(SH_C0) * coeffs[:, 0] + np.float32(0.5), np.float32(0.0))
    return _sh_kernel(np.ascontiguousarray(coeffs), np.ascontiguousarray(dirs, dtype=np.float32), d, True)


@njit(cache=True, inline="always")
def _camera_of(r, starts):
    """The camera whose slice starts[c]:starts[c + 1] of the visible ids holds row r."""
    c = 0
    while c + 1 < len(starts) - 1 and starts[c + 1] <= r:
        c += 1
    return c


@njit(cache=True, parallel=True)
def _sh_all(coeffs, means, campos, ids, starts, degree, out, scratch):
    nb = (degree + 1) * (degree + 1)
    for c in range(len(starts) - 1):
        px, py, pz = campos[c, 0], campos[c, 1], campos[c, 2]
        for r in prange(starts[c], starts[c + 1]):
            i = ids[r]
            x = np.float64(means[i, 0] - px)
            y = np.float64(means[i, 1] - py)
            z = np.float64(means[i, 2] - pz)
            norm = math.sqrt(x * x + y * y + z * z)
            if norm > 0:
                x, y, z = x / norm, y / norm, z / norm
            b = scratch[get_thread_id()]  # no allocation per element
            _bases(x, y, z, nb, b)
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            for k in range(nb):  # the coefficients in memory order; each channel summed over k as before
                bk = b[k]
                s0 += bk * coeffs[i, k, 0]
                s1 += bk * coeffs[i, k, 1]
                s2 += bk * coeffs[i, k, 2]
            out[c, i, 0] = max(s0 + 0.5, 0.0)
            out[c, i, 1] = max(s1 + 0.5, 0.0)
            out[c, i, 2] = max(s2 + 0.5, 0.0)


@njit(cache=True, parallel=True)
def _dc_all(coeffs, ids, starts, out):
    for r in prange(len(ids)):
        c = _camera_of(r, starts)
        i = ids[r]
        for ch in range(3):
            out[c, i, ch] = max(np.float32(SH_C0) * coeffs[i, 0, ch] + np.float32(0.5), np.float32(0.0))


def sh_colors_all(coeffs, means, campos, ids, starts, degree, out) -> None:
    """out[c, ids[starts[c]:starts[c + 1]]] = colours seen from camera c (one parallel pass for all cameras)."""
    d = int(round(np.sqrt(coeffs.shape[1]))) - 1 if degree is None else int(degree)
    if d == 0:
        _dc_all(coeffs, ids, starts, out)
        return
    scratch = np.empty((numba.config.NUMBA_NUM_THREADS + 1, 25))
    _sh_all(coeffs, means, np.asarray(campos, np.float32), ids, starts, d, out, scratch)
