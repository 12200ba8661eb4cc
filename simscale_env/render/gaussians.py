"""3D Gaussian sets (post-activation, gsplat's inputs) and the standard 3DGS PLY format.

Round trips: a PLY read and written back is identical byte for byte (the stored pre-activation columns travel with
an untouched set); a set written and read back has identical means and SH, and scales, opacities and rotations
equal up to float32 rounding of exp/log/sigmoid.

PLY layout (graphdeco-inria/gaussian-splatting): one `vertex` element of float32 properties x, y, z, nx, ny, nz,
f_dc_0..2, f_rest_0..(3((d+1)^2-1)-1), opacity, scale_0..2, rot_0..3. Stored values are pre-activation: scale =
exp(scale_i), opacity = sigmoid(opacity), rotation = normalise(rot) with rot_0 the real part (w, x, y, z). f_rest is
channel-major ([N, 3, K-1] flattened). Nerfstudio's degree-0 exports hold sigmoid-activated colours in f_dc instead
of SH DC coefficients (`dc_activation="sigmoid"`, recognised automatically from the header comment).
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CorruptFileError, MissingFileError, SchemaError

SH_C0 = 0.28209479177387814  # degree-0 SH basis 1 / (2 sqrt(pi)) (gsplat cuda/_torch_impl.py, 3DGS utils/sh_utils.py)


def rgb_to_sh_dc(rgb) -> np.ndarray:
    """Colour in [0, 1] -> degree-0 SH coefficient (colour = C0 * dc + 0.5)."""
    return (np.asarray(rgb, dtype=np.float32) - 0.5) / SH_C0


@dataclass(frozen=True, eq=False)
class Gaussians:
    """N Gaussians: means [N, 3], quats [N, 4] (w, x, y, z), scales [N, 3] (> 0), opacities [N] in [0, 1],
    sh [N, K, 3] with K = (degree + 1)^2, DC first. float32."""

    means: np.ndarray
    quats: np.ndarray
    scales: np.ndarray
    opacities: np.ndarray
    sh: np.ndarray
    # the stored (pre-activation) opacity, scale_0..2, rot_0..3 columns when read from a PLY and untouched since, so
    # that writing it back reproduces the file bit for bit
    ply_raw: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        n = len(self.means)
        for name, shape in (("means", (n, 3)), ("quats", (n, 4)), ("scales", (n, 3)), ("opacities", (n,))):
            a = getattr(self, name)
            if a.shape != shape:
                raise ValueError(f"Gaussians.{name} must have shape {shape}, got {a.shape}")
        if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3:
            raise ValueError(f"Gaussians.sh must have shape [{n}, K, 3], got {self.sh.shape}")
        k = self.sh.shape[1]
        if int(round(np.sqrt(k))) ** 2 != k or k > 25:
            raise ValueError(f"Gaussians.sh must hold (d+1)^2 coefficients, d <= 4; got K = {k}")

    @staticmethod
    def create(means, quats, scales, opacities, sh) -> "Gaussians":
        f = lambda a: np.ascontiguousarray(np.asarray(a, dtype=np.float32))  # noqa: E731
        sh = np.asarray(sh, dtype=np.float32)
        if sh.ndim == 2:
            sh = sh[:, None, :]
        return Gaussians(f(means), f(quats), f(scales), f(opacities), f(sh))

    @staticmethod
    def empty(sh_degree: int = 0) -> "Gaussians":
        k = (sh_degree + 1) ** 2
        return Gaussians(np.zeros((0, 3), np.float32), np.zeros((0, 4), np.float32), np.zeros((0, 3), np.float32),
                         np.zeros(0, np.float32), np.zeros((0, k, 3), np.float32))

    def __len__(self) -> int:
        return len(self.means)

    @property
    def sh_degree(self) -> int:
        return int(round(np.sqrt(self.sh.shape[1]))) - 1

    def with_sh_degree(self, degree: int) -> "Gaussians":
        """Truncate or zero-pad the SH coefficients to `degree`."""
        k = (degree + 1) ** 2
        sh = np.zeros((len(self), k, 3), np.float32)
        m = min(k, self.sh.shape[1])
        sh[:, :m] = self.sh[:, :m]
        return Gaussians(self.means, self.quats, self.scales, self.opacities, sh)

    def subset(self, idx) -> "Gaussians":
        return Gaussians(self.means[idx], self.quats[idx], self.scales[idx], self.opacities[idx], self.sh[idx])

    @staticmethod
    def concat(parts) -> "Gaussians":
        parts = [p for p in parts if p is not None]
        if not parts:
            return Gaussians.empty()
        deg = max(p.sh_degree for p in parts)
        parts = [p if p.sh_degree == deg else p.with_sh_degree(deg) for p in parts]
        return Gaussians(*(np.ascontiguousarray(np.concatenate([getattr(p, f) for p in parts]))
                           for f in ("means", "quats", "scales", "opacities", "sh")))

    def transformed(self, rotation: np.ndarray, translation: np.ndarray, quat: np.ndarray) -> "Gaussians":
        """Rigidly moved: means R m + t, quaternions q * q_i (SH coefficients are not rotated, as HUGSIM/MTGS)."""
        R = np.asarray(rotation, dtype=np.float32)
        means = self.means @ R.T + np.asarray(translation, dtype=np.float32)
        return Gaussians(np.ascontiguousarray(means, dtype=np.float32), quat_multiply(quat, self.quats),
                         self.scales, self.opacities, self.sh)


def quat_multiply(q, r) -> np.ndarray:
    """Hamilton product q * r (w, x, y, z); q [4] or [N, 4], r [N, 4]."""
    q = np.asarray(q, dtype=np.float32)
    r = np.asarray(r, dtype=np.float32)
    w1, x1, y1, z1 = np.moveaxis(np.broadcast_to(q, r.shape), -1, 0)
    w2, x2, y2, z2 = np.moveaxis(r, -1, 0)
    return np.ascontiguousarray(np.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
                                          w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                                          w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                                          w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], -1), dtype=np.float32)


def yaw_quat(yaw: float) -> np.ndarray:
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)], dtype=np.float32)


# ---------------------------------------------------------------------------------------------- PLY
_PLY_TYPES = {"float": "f4", "float32": "f4", "double": "f8", "float64": "f8", "uchar": "u1", "uint8": "u1",
              "char": "i1", "int8": "i1", "ushort": "u2", "uint16": "u2", "short": "i2", "int16": "i2",
              "uint": "u4", "uint32": "u4", "int": "i4", "int32": "i4"}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def write_ply(path: str | Path, g: Gaussians, *, comment: str | None = None) -> Path:
    """Write the standard 3DGS PLY (binary little endian, pre-activation values), atomically."""
    path = Path(path)
    k = g.sh.shape[1]
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * (k - 1))]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    n = len(g)
    data = np.zeros((n, len(names)), dtype="<f4")
    data[:, 0:3] = g.means
    data[:, 6:9] = g.sh[:, 0]
    if k > 1:
        data[:, 9:9 + 3 * (k - 1)] = np.transpose(g.sh[:, 1:], (0, 2, 1)).reshape(n, -1)  # channel-major
    c = 9 + 3 * (k - 1)
    if g.ply_raw is not None and g.ply_raw.shape == (n, 8):
        data[:, c:c + 8] = g.ply_raw
    else:
        o = np.clip(g.opacities.astype(np.float64), 1e-12, 1 - 1e-7)
        data[:, c] = np.log(o / (1 - o))
        data[:, c + 1:c + 4] = np.log(np.maximum(g.scales.astype(np.float64), 1e-30))
        data[:, c + 4:c + 8] = g.quats
    header = ["ply", "format binary_little_endian 1.0"]
    if comment:
        header.append(f"comment {comment}")
    header.append(f"element vertex {n}")
    header += [f"property float {nm}" for nm in names]
    header.append("end_header")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(("\n".join(header) + "\n").encode("ascii"))
            f.write(data.tobytes())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


_PLY_FORMATS = ("ascii", "binary_little_endian", "binary_big_endian")
_PLY_REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
                 "rot_0", "rot_1", "rot_2", "rot_3")
_PLY_MAX_HEADER = 1 << 20  # bytes; 3DGS headers are a few kB


def _ply_header(f, path: Path) -> tuple[str, list[str], list[tuple[str, str]], int]:
    """Parse the header up to end_header: (format, comments, vertex properties (name, numpy type), vertex count).
    Every malformed line is a CorruptFileError naming the file and the line; a well-formed PLY that is no 3DGS
    vertex set (list properties, an element before `vertex`, an unsupported format) is a SchemaError."""
    if f.readline(16).strip() != b"ply":
        raise CorruptFileError(path, "not a PLY file (missing 'ply' magic)")
    fmt = None
    comments, props = [], []
    n = None
    in_vertex = False
    other_before = 0
    while True:
        line = f.readline(_PLY_MAX_HEADER)
        if not line:
            raise CorruptFileError(path, "PLY header has no end_header")
        if f.tell() > _PLY_MAX_HEADER:
            raise CorruptFileError(path, f"PLY header longer than {_PLY_MAX_HEADER} bytes (no end_header?)")
        text = line.decode("ascii", errors="replace").strip()
        parts = text.split()
        if not parts:
            continue
        if parts[0] == "end_header":
            break
        if parts[0] == "format":
            if len(parts) < 2 or parts[1] not in _PLY_FORMATS:
                raise CorruptFileError(path, f"bad PLY format line '{text[:80]}'; expected 'format "
                                             f"binary_little_endian 1.0' ({', '.join(_PLY_FORMATS)})")
            fmt = parts[1]
        elif parts[0] == "comment":
            comments.append(" ".join(parts[1:]))
        elif parts[0] == "element":
            if len(parts) != 3 or not re.fullmatch(r"[0-9]+", parts[2]):
                raise CorruptFileError(path, f"bad PLY element line '{text[:80]}'; expected 'element <name> <count>' "
                                             f"with a non-negative integer count")
            in_vertex = parts[1] == "vertex"
            if in_vertex:
                if n is not None:
                    raise CorruptFileError(path, "PLY header declares the vertex element twice")
                n = int(parts[2])
            elif n is None:
                other_before += 1
        elif parts[0] == "property" and in_vertex:
            if len(parts) >= 2 and parts[1] == "list":
                raise SchemaError(path, "vertex list properties are not 3DGS PLY")
            if len(parts) != 3:
                raise CorruptFileError(path, f"bad PLY property line '{text[:80]}'; expected 'property <type> <name>'")
            if parts[1] not in _PLY_TYPES:
                raise SchemaError(path, f"unknown PLY property type '{parts[1]}'")
            if any(parts[2] == nm for nm, _ in props):
                raise CorruptFileError(path, f"PLY vertex property '{parts[2]}' is declared twice")
            props.append((parts[2], _PLY_TYPES[parts[1]]))
    if fmt is None:
        raise CorruptFileError(path, "PLY header has no format line")
    if fmt != "binary_little_endian":
        raise SchemaError(path, f"only binary_little_endian 3DGS PLY is supported, got format '{fmt}'")
    if n is None or other_before:
        raise SchemaError(path, "the vertex element must be the first element")
    return fmt, comments, props, n


def read_ply(path: str | Path, *, dc_activation: str = "auto") -> Gaussians:
    """Read a 3DGS PLY into post-activation Gaussians. `dc_activation`: "sh" (graphdeco: colour = C0 dc + 0.5),
    "sigmoid" (nerfstudio degree-0 exports: colour = sigmoid(dc)), or "auto" (sigmoid when the file has no f_rest
    and a header comment names nerfstudio).

    Hostile files get a CorruptFileError or SchemaError naming the file: the vertex count is checked against the
    file's size before anything is allocated, and non-finite stored values are rejected."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(path, "Gaussian PLY not found")
    if dc_activation not in ("auto", "sh", "sigmoid"):
        raise ValueError(f"dc_activation must be 'auto', 'sh' or 'sigmoid', got {dc_activation!r}")
    with open(path, "rb") as f:
        _fmt, comments, props, n = _ply_header(f, path)
        names = [nm for nm, _ in props]
        missing = [r for r in _PLY_REQUIRED if r not in names]
        if missing:
            raise SchemaError(path, f"missing 3DGS vertex properties: {', '.join(missing)}")
        rest = [nm for nm in names if nm.startswith("f_rest_")]
        n_rest = len(rest)
        if rest != [f"f_rest_{i}" for i in range(n_rest)]:
            raise SchemaError(path, f"f_rest properties must be f_rest_0..f_rest_{n_rest - 1} in order, got "
                                    f"{', '.join(rest[:6])}{', ...' if n_rest > 6 else ''}")
        k = n_rest // 3 + 1
        if n_rest % 3 or int(round(np.sqrt(k))) ** 2 != k or k > 25:
            raise SchemaError(path, f"{n_rest} f_rest properties do not match an SH degree d <= 4 (3((d+1)^2 - 1))")
        dtype = np.dtype([(nm, "<" + t) for nm, t in props])
        need = n * dtype.itemsize
        left = os.fstat(f.fileno()).st_size - f.tell()
        if need > left:
            raise CorruptFileError(path, f"truncated or bad vertex count: {n} vertices of {dtype.itemsize} bytes "
                                         f"need {need} bytes, the file has {left} after the header")
        raw = f.read(need)
        if len(raw) < need:
            raise CorruptFileError(path, f"truncated: {n} vertices need {need} bytes, got {len(raw)}")
        v = np.frombuffer(raw, dtype=dtype, count=n)
    means = np.stack([v["x"], v["y"], v["z"]], -1).astype(np.float32)
    dc = np.stack([v["f_dc_0"], v["f_dc_1"], v["f_dc_2"]], -1).astype(np.float64)
    fr = np.stack([v[nm] for nm in rest], -1).astype(np.float32).reshape(n, 3, k - 1) if k > 1 else None
    quats = np.stack([v["rot_0"], v["rot_1"], v["rot_2"], v["rot_3"]], -1).astype(np.float64)
    log_scales = np.stack([v["scale_0"], v["scale_1"], v["scale_2"]], -1).astype(np.float64)
    opacity = v["opacity"].astype(np.float64)
    # NaN/inf in any stored value the set is built from (one pass over arrays built anyway)
    bad = [name for name, a in (("x/y/z", means), ("f_dc_*", dc), ("f_rest_*", fr), ("rot_*", quats),
                                ("scale_*", log_scales), ("opacity", opacity))
           if a is not None and not np.isfinite(a).all()]
    if bad:
        raise CorruptFileError(path, f"non-finite values in vertex properties {', '.join(bad)}")
    mode = dc_activation
    if mode == "auto":
        mode = "sigmoid" if (k == 1 and any("nerfstudio" in c.lower() for c in comments)) else "sh"
    with np.errstate(over="ignore"):
        if mode == "sigmoid":
            dc = (_sigmoid(dc) - 0.5) / SH_C0  # the same colour through the SH path
        sh = np.zeros((n, k, 3), np.float32)
        sh[:, 0] = dc
        if k > 1:
            sh[:, 1:] = np.transpose(fr, (0, 2, 1))
        norm = np.linalg.norm(quats, axis=-1, keepdims=True)
        quats = np.where(norm > 0, quats / np.where(norm > 0, norm, 1), np.array([1.0, 0, 0, 0]))
        scales = np.exp(log_scales)
        opac = _sigmoid(opacity)
        g = Gaussians.create(means, quats, scales, opac, sh)
    raw = np.stack([v["opacity"], v["scale_0"], v["scale_1"], v["scale_2"], v["rot_0"], v["rot_1"], v["rot_2"],
                    v["rot_3"]], -1).astype(np.float32)
    g = Gaussians(g.means, g.quats, g.scales, g.opacities, g.sh, raw if mode == "sh" else None)
    if not (np.all(np.isfinite(g.means)) and np.all(np.isfinite(g.sh))):
        raise CorruptFileError(path, "non-finite means or colours")
    if not (np.all(np.isfinite(g.scales)) and np.all(np.isfinite(g.quats))):
        raise CorruptFileError(path, "scales or rotations overflow float32 (scale_i or rot_i far out of range)")
    return g


def ply_raw_values(path: str | Path) -> dict[str, np.ndarray]:
    """The stored (pre-activation) vertex properties of a PLY, by name (for exact round-trip checks)."""
    path = Path(path)
    with open(path, "rb") as f:
        header = b""
        while not header.endswith(b"end_header\n"):
            header += f.readline()
        props = [ln.split()[2] for ln in header.decode().splitlines() if ln.startswith("property")]
        n = int([ln for ln in header.decode().splitlines() if ln.startswith("element vertex")][0].split()[2])
        v = np.frombuffer(f.read(), dtype=np.dtype([(p, "<f4") for p in props]), count=n)
    return {p: v[p].copy() for p in props}
