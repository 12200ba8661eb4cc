"""`simscale bench evaluate`: closed-loop episodes per second of `simscale evaluate` with 1 and 2 local workers.

PDM-Closed (`--policy pdm_closed`), cameras off (`observation_keys=("ego_status",)`), closed_loop mode, every token of
mini-navhard (one episode each, reactive agents, the env's episode EPDMS), through `evaluation.run_evaluation`: the
1-worker run in this process, the 2-worker run in two spawned worker processes. Target (issue 16): scaling >= 1.7 on
2 cores.

How it is timed: each worker builds its env and policy once and runs its first episode once untimed
(`run_evaluation(warmup=True)`: process start, imports, env build, numba kernels from the cache, the first map load
are not counted per episode). Every episode is timed in its worker (`time.perf_counter` around `run_item`), and
`episodes_per_s_K = episodes / (sum of the K workers' episode seconds / K)`: the throughput of K workers that share
the episodes evenly (independent of which worker drew which episode; with 9 episodes on 2 workers one worker always
runs one more). `scaling` is the ratio of the two. The wall-clock figures of the whole calls (worker start, env
builds, warm-up and the unevenly shared tail included) are reported beside them (`wall_s_*`, `setup_s_*`), and the
rows of the two runs are checked to be identical.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv) -> int:
    ap = argparse.ArgumentParser(prog="simscale bench evaluate")
    ap.add_argument("--data", default=None, help="mini dataset root (default: the cache)")
    ap.add_argument("--split", default="mini-navhard", help="split name or scene_filter YAML (default mini-navhard)")
    ap.add_argument("--policy", default="pdm_closed", help="policy spec (default pdm_closed)")
    ap.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per worker count; the best rate is kept (default 1)")
    args = ap.parse_args(argv)
    if args.data:
        os.environ["SIMSCALE_MINI"] = args.data
    from evaluation.modes import EvalConfig
    from evaluation.runner import run_evaluation, to_json

    cfg = EvalConfig(policy=args.policy, split=args.split, mode="closed_loop", seed=args.seed,
                     env_kwargs={"observation_keys": ("ego_status",)})
    out, rows = {}, {}
    for k in (1, 2):
        best = None
        for rep in range(max(1, args.repeats)):
            r = run_evaluation(cfg, workers=k, progress=False, warmup=True, command="simscale bench evaluate")
            busy = sum(v["seconds"] for v in r.timing["items"].values())
            rate = len(r.rows) / (busy / k)
            print(f"{k} worker(s), run {rep + 1}: {len(r.rows)} episodes, {r.failed} failed; episode seconds summed "
                  f"{busy:.2f} s -> {rate:.2f} episodes/s; wall {r.seconds:.2f} s (setup "
                  f"{', '.join(f'{s:.2f}' for s in r.timing.get('setup_s', []))} s)", file=sys.stderr)
            if best is None or rate > best[0]:
                best = (rate, r)
        rate, r = best
        rows[k] = to_json(r.rows)
        key = "1_worker" if k == 1 else f"{k}_workers"
        out[f"episodes_per_s_{key}"] = round(rate, 3)
        out[f"wall_s_{key}"] = round(r.seconds, 2)
        out[f"setup_s_{key}"] = round(max(r.timing.get("setup_s") or [0.0]), 2)
        out["episodes"] = len(r.rows)
        out["failed"] = out.get("failed", 0) + r.failed
    out["scaling"] = round(out["episodes_per_s_2_workers"] / out["episodes_per_s_1_worker"], 3)
    head = ("episodes_per_s_1_worker", "episodes_per_s_2_workers", "scaling")
    out = {**{h: out[h] for h in head}, **{k: v for k, v in out.items() if k not in head}}
    out["rows_identical"] = rows[1] == rows[2]
    out["cpus"] = os.cpu_count()
    out["policy"], out["split"] = args.policy, args.split
    print(json.dumps(out))
    return 0 if out["rows_identical"] else 1
