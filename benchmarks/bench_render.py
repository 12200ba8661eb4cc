"""`simscale bench render`: 8 cameras at 480x224 of synthetic driving scenes with 100k and 1M Gaussians, CPU
rasterizer with 2 threads, against a vectorized pure-torch formulation of the same rules in the same run.

Scene (as in ../shared/reference/gaussian-rendering.md): Gaussians on a road plane around the ego, two building
facades at +-12 m and clutter blobs; log-normal scales (2 cm - 1 m, flattened), sigmoid opacities, SH degree 3.
Cameras: the mini dataset's nuPlan-style rig (8 cameras at 45-ish degree steps). The covariances of the static scene
are computed once (the renderer caches them across steps); the timing covers projection, SH, binning and
compositing of one 8-view frame.

Targets: issue 6 <= 0.2 s (100k) and <= 1.2 s (1M) per 8-view frame on CPU; issue 20 <= 0.10 s and <= 0.60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def synthetic_scene(n: int, seed: int = 0):
    """Road plane (60 %) over 200 m x 30 m around the ego, facades at +-12 m (30 %), 40 clutter blobs (10 %);
    log-normal scales about 2 cm - 0.5 m (flattened on the road and facades), sigmoid opacities, SH degree 3."""
    import numpy as np

    rng = np.random.default_rng(seed)
    k_road, k_fac = int(n * 0.6), int(n * 0.3)
    k_clut = n - k_road - k_fac
    road = np.c_[rng.uniform(-100, 100, k_road), rng.uniform(-15, 15, k_road), np.zeros(k_road)]
    side = rng.choice([-12.0, 12.0], k_fac)
    fac = np.c_[rng.uniform(-100, 100, k_fac), side, rng.uniform(0, 15, k_fac)]
    cent = rng.uniform([-80, -9, 0], [80, 9, 2], (40, 3))
    clut = cent[rng.integers(0, 40, k_clut)] + rng.normal(0, 0.8, (k_clut, 3))
    means = np.concatenate([road, fac, clut]).astype(np.float32)
    scales = np.exp(rng.normal(np.log(0.1), 0.6, (n, 3))).clip(0.02, 0.5)
    scales[:k_road, 2] *= 0.1
    scales[k_road:k_road + k_fac, 0] *= 0.2
    q = rng.normal(size=(n, 4))
    opac = 1 / (1 + np.exp(-rng.normal(0.0, 1.5, n)))
    sh = rng.normal(0, 0.3, (n, 16, 3))
    return means, q.astype(np.float32), scales.astype(np.float32), opac.astype(np.float32), sh.astype(np.float32)


def rig(width=480, height=224):
    import numpy as np

    from simscale_env.data.mini.logwriter import CAMERA_FOCAL, CAMERA_RIG, CAMERA_SIZE, camera_rotation
    from simscale_env.data.nuplan_db import CameraCalibration
    from simscale_env.render.camera import camera_models, view_matrices

    cal = [CameraCalibration("0" * 16, ch, "pinhole", np.array(tr), np.asarray(camera_rotation(yaw, pitch)),
                             np.array([[CAMERA_FOCAL, 0, CAMERA_SIZE[0] / 2], [0, CAMERA_FOCAL, CAMERA_SIZE[1] / 2],
                                       [0, 0, 1]]), np.zeros(5), CAMERA_SIZE[0], CAMERA_SIZE[1])
           for ch, yaw, pitch, tr in CAMERA_RIG]
    cams = camera_models(cal, [c.channel for c in cal], width, height)
    return view_matrices(cams, (0.0, 0.0, 0.0))


def main(argv) -> int:
    ap = argparse.ArgumentParser(prog="simscale bench render")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--skip-torch", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    import numpy as np
    from numba import set_num_threads

    from simscale_env.render.raster import Workspace, covariances, rasterize_cpu

    set_num_threads(args.threads)
    views, Ks = rig()
    views, Ks = views.astype(np.float32), Ks.astype(np.float32)
    W, H = 480, 224
    out = {}
    frames = {}
    for label, n in (("100k", 100_000), ("1m", 1_000_000)):
        means, q, s, o, sh = synthetic_scene(n)
        cov = covariances(q, s)
        ws = Workspace()  # the renderer keeps one across steps
        rasterize_cpu(means, cov, o, sh, views, Ks, W, H, workspace=ws)  # compile / warm up
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            rgb, alpha, dep, meta = rasterize_cpu(means, cov, o, sh, views, Ks, W, H, workspace=ws)
            times.append(time.perf_counter() - t)
        out[f"s_{label}_8cams"] = round(statistics.median(times), 3)
        vis = int(np.sum(meta["radii"][..., 0] > 0))
        isects = int(len(meta["tile_entries"]))
        out[f"pairs_{label}"] = vis
        out[f"tile_intersections_{label}"] = isects
        out[f"mean_alpha_{label}"] = round(float(alpha.mean()), 3)
        print(f"{label}: {statistics.median(times):.3f} s per 8-view frame ({vis} visible camera-Gaussian pairs, "
              f"{isects} tile intersections, mean alpha {alpha.mean():.2f})", file=sys.stderr)
        frames[label] = (means, q, s, o, sh, rgb)
    if not args.skip_torch:
        import torch

        from benchmarks.torch_raster import rasterize_torch

        torch.set_num_threads(args.threads)
        means, q, s, o, sh, rgb = frames["100k"]
        rasterize_torch(means[:1000], q[:1000], s[:1000], o[:1000], sh[:1000], views, Ks, W, H)
        t = time.perf_counter()
        trgb = rasterize_torch(means, q, s, o, sh, views, Ks, W, H)
        t_torch = time.perf_counter() - t
        err = float(np.abs(trgb - rgb).max())
        out["torch_s_100k_8cams"] = round(t_torch, 3)
        out["speedup_vs_torch"] = round(t_torch / out["s_100k_8cams"], 1)
        out["torch_max_abs_diff"] = round(err, 5)
        print(f"torch: {t_torch:.2f} s for the 100k frame (max abs difference {err:.2e})", file=sys.stderr)
    out["threads"] = args.threads
    print(json.dumps(out))
    return 0
