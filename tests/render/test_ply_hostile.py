"""Hostile 3DGS PLY files: every malformed header or body ends in one SimScaleError naming the file (never a
ValueError, IndexError or MemoryError), checked before anything is allocated for the vertex count."""

from __future__ import annotations

import re
import shutil
import tempfile
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simscale_env.errors import CorruptFileError, SchemaError, SimScaleError
from simscale_env.render.gaussians import Gaussians, read_ply, write_ply
from tests.helpers import corrupt


def _gaussians(n: int = 6, degree: int = 1) -> Gaussians:
    rng = np.random.default_rng(7)
    q = rng.normal(size=(n, 4))
    return Gaussians.create(rng.normal(0, 10, (n, 3)), q / np.linalg.norm(q, axis=1, keepdims=True),
                            np.exp(rng.normal(-2, 1, (n, 3))), rng.uniform(0.05, 0.95, n),
                            rng.normal(0, 1, (n, (degree + 1) ** 2, 3)))


def _split(p: Path) -> tuple[str, bytes]:
    data = p.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    return data[:end].decode("ascii"), data[end:]


def _hostile(tmp_path: Path, name: str, edit, body=None, degree: int = 1) -> Path:
    """A valid PLY written by write_ply, its header text passed through `edit` (and its body replaced by `body`)."""
    p = write_ply(tmp_path / name, _gaussians(degree=degree))
    header, data = _split(p)
    p.write_bytes(edit(header).encode("ascii") + (data if body is None else body))
    return p


@pytest.mark.parametrize("count", ["abc", "-5", "1e3", "0x10", "5_0"])
def test_non_integer_or_negative_vertex_count(tmp_path, count):
    p = _hostile(tmp_path, "count.ply", lambda h: h.replace("element vertex 6", f"element vertex {count}"))
    with pytest.raises(CorruptFileError, match=r"count\.ply: bad PLY element line 'element vertex .*non-negative "
                                               r"integer count"):
        read_ply(p)


def test_huge_vertex_count_is_checked_against_the_file_size(tmp_path):
    p = _hostile(tmp_path, "huge.ply", lambda h: h.replace("element vertex 6", f"element vertex {10 ** 15}"))
    size = len(_split(p)[1])
    with pytest.raises(CorruptFileError, match=rf"huge\.ply: truncated or bad vertex count: {10 ** 15} vertices of "
                                               rf"104 bytes need {104 * 10 ** 15} bytes, the file has {size} after"):
        read_ply(p)


@pytest.mark.parametrize("edit,match", [
    (lambda h: h.replace("format binary_little_endian 1.0", "format banana 1.0"), r"bad PLY format line 'format "
                                                                                  r"banana 1.0'; expected"),
    (lambda h: h.replace("format binary_little_endian 1.0", "format"), r"bad PLY format line 'format'"),
    (lambda h: h.replace("format binary_little_endian 1.0\n", ""), r"no format line"),
    (lambda h: h.replace("element vertex 6", "element vertex"), r"bad PLY element line 'element vertex'"),
    (lambda h: h.replace("property float rot_3", "property float"), r"bad PLY property line 'property float'"),
    (lambda h: h.replace("property float rot_3", "property float rot_2"), r"'rot_2' is declared twice"),
    (lambda h: h.replace("element vertex 6", "element vertex 6\nelement vertex 6"), r"vertex element twice"),
], ids=["unknown-format", "format-without-name", "no-format", "element-without-count", "property-without-name",
        "duplicate-property", "two-vertex-elements"])
def test_malformed_header_lines(tmp_path, edit, match):
    p = _hostile(tmp_path, "hdr.ply", edit)
    with pytest.raises(CorruptFileError, match=r"hdr\.ply: .*" + match):
        read_ply(p)


def test_bad_f_rest_names_and_sh_degree(tmp_path):
    p = _hostile(tmp_path, "rest.ply", lambda h: h.replace("property float f_rest_8", "property float f_rest_x"))
    with pytest.raises(SchemaError, match=r"rest\.ply: f_rest properties must be f_rest_0\.\.f_rest_8 in order"):
        read_ply(p)
    # degree 5 (K = 36 coefficients, 105 f_rest) is beyond what Gaussians hold (d <= 4)
    n, nprop = 2, 14 + 3 + 105
    header = ("ply\nformat binary_little_endian 1.0\nelement vertex 2\n"
              + "".join(f"property float {nm}\n" for nm in ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1",
                                                           "f_dc_2"] + [f"f_rest_{i}" for i in range(105)]
                        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
              + "end_header\n")
    d5 = tmp_path / "deg5.ply"
    d5.write_bytes(header.encode() + np.zeros((n, nprop), "<f4").tobytes())
    with pytest.raises(SchemaError, match=r"deg5\.ply: 105 f_rest properties do not match an SH degree d <= 4"):
        read_ply(d5)


@pytest.mark.parametrize("column,value,shown", [("scale_0", np.nan, "scale_*"), ("opacity", np.inf, "opacity"),
                                                ("rot_1", -np.inf, "rot_*"), ("f_rest_4", np.nan, "f_rest_*"),
                                                ("scale_2", 1e30, None)])
def test_non_finite_or_overflowing_stored_values(tmp_path, column, value, shown):
    p = write_ply(tmp_path / "vals.ply", _gaussians())
    header, data = _split(p)
    names = [ln.split()[2] for ln in header.splitlines() if ln.startswith("property")]
    arr = np.frombuffer(data, "<f4").reshape(6, len(names)).copy()
    arr[3, names.index(column)] = value
    p.write_bytes(header.encode() + arr.tobytes())
    match = (rf"vals\.ply: non-finite values in vertex properties {re.escape(shown)}$" if shown
             else r"vals\.ply: scales or rotations overflow float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow RuntimeWarning either
        with pytest.raises(CorruptFileError, match=match):
            read_ply(p)


# ---------------------------------------------------------------------------------------------- fuzzing
def test_random_byte_corruption_raises_only_simscale_errors(tmp_path):
    good = write_ply(tmp_path / "good.ply", _gaussians(n=8, degree=1)).read_bytes()
    size = len(good)
    header_end = good.index(b"end_header\n") + len(b"end_header\n")
    folder = Path(tempfile.mkdtemp(prefix="simscale_plyfuzz_"))
    path = folder / "fuzz.ply"
    seen: dict[str, int] = {}
    # header bytes get most of the attention (the body is plain floats); runs may splice in header-like words
    words = st.sampled_from([b"ply", b"format", b"element", b"property", b"float", b"list", b"vertex", b"face",
                             b"end_header", b"-1", b"99999999999999999", b"abc", b"\n", b" ", b"\x00", b"nan"])
    flips = st.lists(st.tuples(st.one_of(st.integers(0, header_end - 1), st.integers(0, size - 1)),
                               st.integers(1, 255)), max_size=6)
    runs = st.lists(st.tuples(st.integers(0, header_end - 1), st.one_of(words, st.binary(min_size=1, max_size=16))),
                    max_size=3)
    cut = st.one_of(st.none(), st.integers(0, size - 1))

    @settings(max_examples=150, deadline=timedelta(seconds=5), derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(st.tuples(flips, runs, cut).filter(lambda t: t[0] or t[1] or t[2] is not None))
    def run(corruption):
        path.write_bytes(corrupt(good, *corruption))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a RuntimeWarning (overflow, invalid value) fails the test too
            try:
                g = read_ply(path)
            except SimScaleError as exc:  # anything else fails the test
                seen[type(exc).__name__] = seen.get(type(exc).__name__, 0) + 1
                assert "fuzz.ply" in str(exc), str(exc)
                return
        seen["ok"] = seen.get("ok", 0) + 1
        # what loads is clean: finite, positive scales, unit quaternions, opacities in [0, 1]
        assert np.isfinite(g.means).all() and np.isfinite(g.sh).all()
        assert np.isfinite(g.scales).all() and (g.scales >= 0).all()
        assert np.allclose(np.linalg.norm(g.quats, axis=1), 1, atol=1e-5)
        assert ((g.opacities >= 0) & (g.opacities <= 1)).all()

    try:
        run()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert seen.get("ok", 0) > 0 and sum(v for k, v in seen.items() if k != "ok") > 0, seen
