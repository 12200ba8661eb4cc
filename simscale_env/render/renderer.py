"""Camera rendering of a simulation state: static Gaussians (a reconstruction or the map-synthesised background) +
actors posed from the state, rasterized by gsplat on CUDA or by the CPU rasterizer.

>>> r = CameraRenderer(sim.map, sim.scenario.cameras)                    # doctest: +SKIP
>>> out = r.render(world.ego, sim.objects(world))                       # doctest: +SKIP
>>> out.rgb.shape                                                       # doctest: +SKIP
(3, 224, 480, 3)
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cache import LRUCache
from ..errors import MissingFileError
from .camera import DEFAULT_CHANNELS, DEFAULT_SIZE, camera_models, view_matrices
from .gaussians import Gaussians, read_ply
from .raster import covariances, rasterize_cpu
from .synth import StaticScene, actor_gaussians, sky_background

BACKENDS = ("auto", "cpu", "gsplat")
# map-synthesised backgrounds per (map, seed), least recently used dropped first
_STATIC_SCENES: LRUCache = LRUCache(4)


@functools.lru_cache(maxsize=1)
def gsplat_available() -> bool:
    """CUDA present and gsplat's CUDA extension loaded (torch first). gsplat is never called with CPU tensors: on
    CPU-only machines it fails with a misleading ImportError. `import gsplat` succeeds even where its extension is
    missing or failed to build (gsplat/cuda/_backend.py then leaves `_C = None` and prints "No CUDA toolkit found"),
    so the extension itself is probed; checked once per process (the probe may build gsplat's JIT kernels)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return False
        import gsplat  # noqa: F401
        from gsplat.cuda._backend import _C
    except Exception:
        return False
    return _C is not None


@dataclass(frozen=True, eq=False)
class RenderOutput:
    rgb: np.ndarray  # [C, H, W, 3] uint8
    depth: np.ndarray | None  # [C, H, W] float32 expected depth (m), 0 where nothing was hit
    channels: tuple[str, ...]
    num_gaussians: int


def load_reconstruction(folder: str | Path, names) -> Gaussians | None:
    """The first `<folder>/<name>.ply` among `names` (e.g. the log name, then the map location), or None."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(folder, "reconstruction folder not found")
    for n in names:
        p = folder / f"{n}.ply"
        if p.exists():
            return read_ply(p)
    return None


class CameraRenderer:
    """Renders the rig's cameras for ego states. `reconstruction`: a Gaussians set in map coordinates (e.g. from
    `load_reconstruction`); without one the background is synthesised from the map (`StaticScene`)."""

    def __init__(self, map_api, calibrations, channels=DEFAULT_CHANNELS, width: int = DEFAULT_SIZE[0],
                 height: int = DEFAULT_SIZE[1], *, seed: int = 0, backend: str = "auto", radius: float = 90.0,
                 reconstruction: Gaussians | None = None, near: float = 0.05, far: float = 500.0):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.cameras = camera_models(calibrations, channels, width, height)
        self.width, self.height = int(width), int(height)
        self.backend = ("gsplat" if gsplat_available() else "cpu") if backend == "auto" else backend
        if self.backend == "gsplat" and not gsplat_available():
            raise RuntimeError("backend 'gsplat' needs CUDA (torch.cuda.is_available()) and the gsplat package")
        key = (id(map_api), str(map_api.path), int(seed))
        # shared by renderers of the same map (chunks are generated once); the key's map stays alive in the scene
        self.static = _STATIC_SCENES.get_or_create(key, lambda: StaticScene(map_api, seed))
        self.origin = self.static.origin
        self.radius = radius
        self.near, self.far = near, far
        self._recon = None
        if reconstruction is not None:
            g = reconstruction
            means = (g.means.astype(np.float64) - np.array([*self.origin, 0.0])).astype(np.float32)
            g = Gaussians(means, g.quats, g.scales, g.opacities, g.sh)
            self._recon = (g, covariances(g.quats, g.scales))
        self._sky_cache: dict = {}
        from .raster import Workspace

        self._workspace = Workspace()

    def scene(self, ego_state, objects) -> tuple[Gaussians, np.ndarray]:
        """The Gaussians of one frame (local coordinates) and their covariances: static + actors."""
        if self._recon is not None:
            static, cov = self._recon
        else:
            static, cov = self.static.near(float(ego_state[0]), float(ego_state[1]), self.radius)
        if objects is not None and len(objects):
            ag = actor_gaussians(objects.category, objects.x, objects.y, objects.heading, objects.length,
                                 objects.width, objects.height, objects.tokens if hasattr(objects, "tokens")
                                 else objects.track, self.origin)
            acov = covariances(ag.quats, ag.scales)
            return Gaussians.concat([static, ag]), np.concatenate([cov, acov])
        return static, cov

    def render(self, ego_state, objects=None, *, with_depth: bool = True) -> RenderOutput:
        ego = np.asarray(ego_state, dtype=np.float64)
        g, cov = self.scene(ego, objects)
        views, Ks = view_matrices(self.cameras, ego, 0.0, self.origin)
        sky = self._sky(views, Ks)
        if self.backend == "gsplat":
            rgb, alpha, depth = self._render_gsplat(g, views, Ks)
        else:
            rgb, alpha, depth, _ = rasterize_cpu(g.means, cov, g.opacities, g.sh, views.astype(np.float32),
                                                 Ks.astype(np.float32), self.width, self.height, near=self.near,
                                                 far=self.far, workspace=self._workspace)
        rgb = rgb + (1.0 - alpha)[..., None] * sky
        img = (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return RenderOutput(img, np.where(alpha > 0.5, depth, 0.0).astype(np.float32) if with_depth else None,
                            tuple(c.channel for c in self.cameras), len(g))

    def _sky(self, views, Ks):
        # the sky depends on the camera's pitch and roll only (yaw-invariant): a ray's elevation is the world up axis
        # seen from the camera, column 2 of the world-to-camera rotation; cache per rig orientation
        key = tuple(np.round(views[:, :3, 2], 4).ravel())
        if key not in self._sky_cache:
            if len(self._sky_cache) > 64:
                self._sky_cache.clear()
            self._sky_cache[key] = sky_background(Ks, views, self.width, self.height)
        return self._sky_cache[key]

    def _render_gsplat(self, g: Gaussians, views, Ks):
        import torch  # torch before gsplat
        from gsplat import rasterization

        dev = torch.device("cuda")
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a), device=dev, dtype=torch.float32)  # noqa: E731
        colors, alphas, _ = rasterization(t(g.means), t(g.quats), t(g.scales), t(g.opacities), t(g.sh), t(views),
                                          t(Ks), self.width, self.height, near_plane=self.near, far_plane=self.far,
                                          sh_degree=g.sh_degree, render_mode="RGB+ED", packed=False)
        out = colors.cpu().numpy()
        return out[..., :3], alphas[..., 0].cpu().numpy(), out[..., 3]


def render_threads(n: int | None = None) -> None:
    """Set numba's thread count for the CPU rasterizer (default: NUMBA_NUM_THREADS or all cores)."""
    from numba import set_num_threads

    set_num_threads(int(n or os.environ.get("NUMBA_NUM_THREADS", os.cpu_count() or 1)))


def psnr(a, b, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio (dB) of two images of the same shape (uint8 images: peak 255); inf if equal."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"psnr needs images of the same shape, got {a.shape} and {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0.0 else float(10.0 * np.log10(peak * peak / mse))


def compare_backends(map_api, calibrations, ego_state, objects, channels=DEFAULT_CHANNELS,
                     width: int = DEFAULT_SIZE[0], height: int = DEFAULT_SIZE[1], *, seed: int = 0) -> dict:
    """Render one frame with gsplat (CUDA) and with the CPU rasterizer; PSNR per camera of the uint8 images.
    Raises RuntimeError where CUDA or gsplat is missing."""
    if not gsplat_available():
        raise RuntimeError("comparing backends needs CUDA (torch.cuda.is_available()) and the gsplat package")
    out = {}
    for backend in ("cpu", "gsplat"):
        r = CameraRenderer(map_api, calibrations, channels, width, height, seed=seed, backend=backend)
        out[backend] = r.render(ego_state, objects, with_depth=False)
    cams = out["cpu"].channels
    return {"psnr_db": {ch: psnr(out["cpu"].rgb[k], out["gsplat"].rgb[k]) for k, ch in enumerate(cams)},
            "cpu": out["cpu"], "gsplat": out["gsplat"]}
