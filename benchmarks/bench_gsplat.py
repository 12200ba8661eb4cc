"""`simscale bench gsplat`: gsplat (CUDA) against the CPU rasterizer on mini-dataset frames.

Renders the start of the first scenarios of mini-navhard (logged ego, logged objects) through all eight nuPlan
cameras at 480x224 with both backends and reports the PSNR of the uint8 images per camera (issue 6: >= 40 dB) and
the time per 8-view frame of each backend. Needs a CUDA device and gsplat; exits with status 2 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv) -> int:
    ap = argparse.ArgumentParser(prog="simscale bench gsplat")
    ap.add_argument("--data", default=None, help="mini dataset root (default: the cache)")
    ap.add_argument("--scenes", type=int, default=3)
    args = ap.parse_args(argv)
    from simscale_env.render import CameraRenderer, compare_backends, gsplat_available

    if not gsplat_available():
        print("simscale: error: bench gsplat needs a CUDA device (torch.cuda.is_available()) and gsplat",
              file=sys.stderr)
        return 2
    import numpy as np
    import torch

    from simscale_env.data import ScenarioBuilder
    from simscale_env.data.openscene import load_split
    from simscale_env.data.paths import DataConfig, ensure_mini
    from simscale_env.map import load_map
    from simscale_env.sim import SimConfig, Simulation

    root = ensure_mini(args.data)
    cfg = DataConfig(root, root / "maps", root, "mini", True)
    builder = ScenarioBuilder(cfg.log_dir)
    tokens = list(load_split(cfg.split_file("navhard")).tokens)[: args.scenes]
    chans = ("CAM_L0", "CAM_F0", "CAM_R0", "CAM_L1", "CAM_B0", "CAM_R1", "CAM_L2", "CAM_R2")
    worst, per_scene, t_cpu, t_gpu = np.inf, {}, [], []
    for tok in tokens:
        sc = builder.load(tok)
        m = load_map(sc.map_location, cfg.nuplan_maps_root)
        sim = Simulation(sc, m, SimConfig(agent_mode="non_reactive"))
        w = sim.reset()
        objs = sim.objects(w)
        have = {c.channel for c in sc.cameras}
        cams = tuple(c for c in chans if c in have)
        r = compare_backends(m, sc.cameras, w.ego, objs, cams, 480, 224)
        # identical images have infinite PSNR: reported as null (JSON has no infinity)
        per_scene[tok] = {k: round(v, 2) if np.isfinite(v) else None for k, v in r["psnr_db"].items()}
        worst = min(worst, min(r["psnr_db"].values()))
        for backend, times in (("cpu", t_cpu), ("gsplat", t_gpu)):
            rend = CameraRenderer(m, sc.cameras, cams, 480, 224, backend=backend)
            rend.render(w.ego, objs)  # warm-up
            t = time.perf_counter()
            rend.render(w.ego, objs)
            if backend == "gsplat":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        print(f"{tok}: PSNR per camera {per_scene[tok]}", file=sys.stderr)
    print(json.dumps({"psnr_db_min": round(float(worst), 2) if np.isfinite(worst) else None, "psnr_db": per_scene,
                      "cpu_s_8cams": round(float(np.median(t_cpu)), 3),
                      "gsplat_s_8cams": round(float(np.median(t_gpu)), 4),
                      "device": torch.cuda.get_device_name()}))
    return 0
