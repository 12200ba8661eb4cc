"""`simscale bench generate`: samples per second of `simscale generate` with 1 and 2 local workers.

One round of PDM-Closed generation (`training.engine.run_generation`) on the base tokens of mini-navtrain (or the
first `--limit` of them), three front cameras (CAM_L0, CAM_F0, CAM_R0) at 480x224 for the 4 history frames, JPEG
quality 90: the 1-worker run in this process, the 2-worker run in two spawned worker processes. Targets (issue 17):
>= 1 sample/s per worker; scaling >= 1.7 on 2 cores.

How it is timed (as `simscale bench evaluate`): each worker builds its env once and runs its first task once untimed
(`run_generation(warmup=True)`); every task (one base token: reset into the perturbed start, the expert's 4 s
rollout, rendering, JPEG encoding) is timed in its worker, and `samples_per_s_K = tasks / (sum of the K workers'
task seconds / K)`. A "sample" here is a task tried (valid or rejected); `valid_samples_per_s_*` counts only the
valid ones. `mb_per_sample` is the Parquet bytes per valid sample (10^6 bytes).

Workers and threads. A worker is one process with one core, as a Ray actor (`num_cpus=1`) on a cluster runs it:
`samples_per_s_1_worker` and `samples_per_s_2_workers` run every worker with one numba/torch thread, and
`scaling` is their ratio (how throughput grows with cores; target >= 1.7 on 2 cores). On a 2-core machine
`simscale generate --workers 1` gives its one worker both cores (numba's rendering kernels run on 2 threads), which
is measured too: `samples_per_s_1_worker_all_cores` and `scaling_vs_1_worker_all_cores` (= 2 workers over that):
what `--workers 2` gains over `--workers 1` on this machine, lower because one worker already renders in parallel.
The per-phase split (`phase_s`: mean seconds per task of reset, rollout, render, encode, ... as
`training.generate.generate_sample` reports them) is from the 1-worker, 1-thread run, `phase_s_all_cores` from the
all-cores run. The shards of the runs are checked to be byte-identical.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path


def main(argv) -> int:
    ap = argparse.ArgumentParser(prog="simscale bench generate")
    ap.add_argument("--data", default=None, help="mini dataset root (default: the cache)")
    ap.add_argument("--split", default="mini-navtrain", help="split name or scene_filter YAML (default mini-navtrain)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N base tokens (a YAML split; 0: all)")
    ap.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    ap.add_argument("--width", type=int, default=480)
    ap.add_argument("--height", type=int, default=224)
    args = ap.parse_args(argv)
    if args.data:
        os.environ["SIMSCALE_MINI"] = args.data
    from training.engine import run_generation
    from training.generate import GenConfig, base_tokens

    tmp = Path(tempfile.mkdtemp(prefix="bench_generate_"))
    split = args.split
    if args.limit > 0:  # a scene_filter YAML of the first N tokens
        import yaml

        from simscale_env.data.paths import DataConfig

        src = Path(split) if split.endswith(".yaml") else DataConfig.resolve().split_file(split)
        doc = yaml.safe_load(Path(src).read_text())
        toks = base_tokens(GenConfig(split=split))[:args.limit]
        doc["tokens"] = toks
        split = str(tmp / "split.yaml")
        Path(split).write_text(yaml.safe_dump(doc))
    cfg = GenConfig(split=split, rounds=1, expert="pdm_closed", seed=args.seed,
                    cameras=("CAM_L0", "CAM_F0", "CAM_R0"), width=args.width, height=args.height)
    import numba  # noqa: F401  (imported before its thread count is set: the all-cores run needs its full pool)

    from simscale_env.parallel import set_worker_threads

    out, shards = {}, {}
    # (key, workers, threads per worker in this process: 1 for the one-core worker, None for all cores)
    runs = (("1_worker", 1, 1), ("2_workers", 2, 1), ("1_worker_all_cores", 1, os.cpu_count() or 1))
    for key, k, threads in runs:
        set_worker_threads(threads)  # the inline (1-worker) run computes in this process
        timing = {}
        m = run_generation(cfg, tmp / key, workers=k, progress=False, warmup=True, timing=timing,
                           command="simscale bench generate", shard_mb=256)
        tasks = timing["tasks"]
        busy = sum(t["seconds"] for t in tasks)
        rate = len(tasks) / (busy / k)
        valid = m["samples"]
        out[f"samples_per_s_{key}"] = round(rate, 3)
        out[f"valid_samples_per_s_{key}"] = round(valid / (busy / k), 3)
        out[f"setup_s_{key}"] = round(max(timing.get("setup_s") or [0.0]), 2)
        print(f"{key.replace('_', ' ')}: {len(tasks)} tasks, {valid} valid; task seconds summed {busy:.2f} s -> "
              f"{rate:.2f} samples/s (setup {', '.join(f'{s:.2f}' for s in timing.get('setup_s', []))} s)",
              file=sys.stderr)
        shards[key] = {p.name: p.read_bytes() for p in sorted((tmp / key).glob("*.parquet"))}
        if k == 1:
            phases = {}
            for t in tasks:
                for name, s in (t.get("timing") or {}).items():
                    phases[name] = phases.get(name, 0.0) + s
            suffix = "" if key == "1_worker" else "_all_cores"
            out[f"phase_s{suffix}"] = {name: round(s / len(tasks), 4) for name, s in sorted(phases.items())}
            out[f"task_s{suffix}"] = round(busy / len(tasks), 4)
        if key == "1_worker":
            out["valid_ratio"] = round(m["rounds"][0]["valid_ratio"], 4)
            out["mb_per_sample"] = round(sum(s["bytes"] for s in m["shards"]) / max(1, valid) / 1e6, 4)
            out["tasks"] = len(tasks)
    out["scaling"] = round(out["samples_per_s_2_workers"] / out["samples_per_s_1_worker"], 3)
    out["scaling_vs_1_worker_all_cores"] = round(out["samples_per_s_2_workers"] /
                                                 out["samples_per_s_1_worker_all_cores"], 3)
    head = ("samples_per_s_1_worker", "samples_per_s_2_workers", "scaling", "valid_ratio", "mb_per_sample")
    out = {**{h: out[h] for h in head}, **{k: v for k, v in out.items() if k not in head}}
    first = shards["1_worker"]
    out["shards_identical"] = all(v == first for v in shards.values())
    out["cpus"] = os.cpu_count()
    out["split"], out["size"] = args.split, f"{args.width}x{args.height}"
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))
    return 0 if out["shards_identical"] else 1
