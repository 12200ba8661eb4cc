"""`simscale bench vector`: decision steps per second of `SimScaleVectorEnv` at N = 1, 8, 32, 128 sub-envs (issue 20).

Three modes, as `simscale bench env`'s: (a) no cameras, no pseudo-experts, no plan scoring, no expert start check
(each sub-env submits its logged plan, `info["logged_plan"]`); (b) with both pseudo-experts and plan scoring, driven
by PDM-Closed's plan; (c) as (b) with the three front cameras at 256x128 (the RL resolution). Each (mode, N): one
vector env, `reset(seed=0)`, --warmup vector steps untimed (every sub-env's scene loaded, caches filled), then vector
steps timed for at least --min-seconds; decision steps/s = N x vector steps / seconds, autoresets included (NEXT_STEP:
a resetting sub-env's step is its reset). `rss_mb_n<N>`: the process's resident memory after mode (c) at N (VmRSS).
With --async, gymnasium's `AsyncVectorEnv` of N single envs (one process each) at N = 8 beside it, for comparison;
with --workers 1,2 also `SimScaleVectorEnv(workers=2)` (keys ending in _w2; its RSS is the parent's only).
--scenario-cache / --open-logs shrink the env's scenario and open-log caches (the resets of a split larger than them
load scenarios, and open logs: what a user of nuPlan's or NAVSIM's full splits meets), --prefetch turns on
`prefetch_scenarios`; the JSON line then names them.

Targets (issue 20, 2 cores): >= 2,000 steps/s at N = 32 without cameras, >= 300 with experts, >= 100 with cameras;
RSS at N = 128 under 8 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

MODES = {
    "no_cameras": dict(observation_keys=("ego_status",), pseudo_experts=False, plan_scoring=None, valid_start=False),
    "experts": dict(observation_keys=("ego_status",), pseudo_experts=True),
    "cameras": dict(observation_keys=("cameras", "ego_status"), pseudo_experts=True, width=256, height=128),
}


def _rss_mb() -> float:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _actions(mode: str, info: dict):
    import numpy as np

    if mode == "no_cameras":
        return np.asarray(info["logged_plan"], np.float32)
    return np.asarray(info["pseudo_expert"]["pdm_closed"], np.float32)


def time_vector(venv, mode: str, warmup: int, min_seconds: float) -> tuple[float, int, float]:
    """(decision steps/s, decision steps timed, seconds) of `venv` driven as `mode` drives it."""
    import numpy as np

    obs, info = venv.reset(seed=0)
    low, high = venv.single_action_space.low, venv.single_action_space.high
    for _ in range(warmup):
        obs, r, te, tr, info = venv.step(np.clip(_actions(mode, info), low, high))
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_seconds:
        obs, r, te, tr, info = venv.step(np.clip(_actions(mode, info), low, high))
        steps += venv.num_envs
    dt = time.perf_counter() - t0
    return steps / dt, steps, dt


def rss_after_episodes(venv, max_steps: int = 400) -> float:
    """Step `venv` (no-cameras mode) until every sub-env has ended an episode; the RSS then (MB)."""
    import numpy as np

    ended = np.zeros(venv.num_envs, dtype=bool)
    obs, info = venv.reset(seed=1)
    low, high = venv.single_action_space.low, venv.single_action_space.high
    for _ in range(max_steps):
        obs, r, te, tr, info = venv.step(np.clip(_actions("no_cameras", info), low, high))
        ended |= te | tr
        if ended.all():
            break
    return _rss_mb()


def _data_kwargs(args, n: int) -> dict:
    """The env kwargs of --scenario-cache, --open-logs and --prefetch (none: the env's defaults)."""
    kw: dict = {}
    sizes = {k: v for k, v in (("scenarios", args.scenario_cache), ("open_logs", args.open_logs)) if v is not None}
    if sizes:
        kw["cache_sizes"] = dict(sizes, renderers=max(4, n))  # as SimScaleVectorEnv sizes it by default
    if args.prefetch:
        kw["prefetch_scenarios"] = True
    return kw


def main(argv) -> int:
    ap = argparse.ArgumentParser(prog="simscale bench vector")
    ap.add_argument("--data", default=None, help="mini dataset root (default: the cache)")
    ap.add_argument("--sizes", default="1,8,32,128", help="numbers of sub-envs (default 1,8,32,128)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"modes (default {','.join(MODES)})")
    ap.add_argument("--warmup", type=int, default=2, help="untimed vector steps after the reset (default 2)")
    ap.add_argument("--min-seconds", type=float, default=3.0, help="time each (mode, N) at least this long")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--async", dest="async_", action="store_true", help="also AsyncVectorEnv at N = 8")
    ap.add_argument("--rss-episodes", action="store_true",
                    help="after timing, step each N without cameras until every sub-env has ended an episode and "
                         "report that RSS too (rss_mb_n<N>_episodes: the episode's kept states included)")
    ap.add_argument("--workers", default="1",
                    help="worker processes of SimScaleVectorEnv, comma-separated (default 1: one process; e.g. 1,2)")
    ap.add_argument("--scenario-cache", type=int, default=None,
                    help="cache_sizes.scenarios of the env (default 64: every mini scene stays loaded); e.g. 2 to "
                         "time the resets of a split larger than its cache, which load their scenario")
    ap.add_argument("--open-logs", type=int, default=None,
                    help="cache_sizes.open_logs (default 16); e.g. 1: most of those loads open their log too")
    ap.add_argument("--prefetch", action="store_true",
                    help="prefetch_scenarios=True: load the next episode's scenario on a background thread")
    args = ap.parse_args(argv)
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    if args.data:
        os.environ["SIMSCALE_MINI"] = args.data
    import gymnasium as gym
    from numba import set_num_threads

    import simscale_env  # noqa: F401  (registration)
    from simscale_env.envs import SimScaleVectorEnv

    set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad:
        print(f"simscale bench vector: error: unknown modes {bad} (known: {', '.join(MODES)})", file=sys.stderr)
        return 2
    out = {}
    workers = [int(w) for w in str(args.workers).split(",") if w]
    for n in sizes:
        for w in workers:
            tag = "" if w == 1 else f"_w{w}"
            for mode in modes:
                t = time.perf_counter()
                venv = SimScaleVectorEnv(num_envs=n, workers=w, **MODES[mode], **_data_kwargs(args, n))
                rate, steps, dt = time_vector(venv, mode, args.warmup, args.min_seconds)
                out[f"steps_per_s_{mode}_n{n}{tag}"] = round(rate, 1)
                if w == 1:
                    out[f"rss_mb_n{n}"] = _rss_mb()
                if w == 1 and mode == "no_cameras" and args.rss_episodes:
                    out[f"rss_mb_n{n}_episodes"] = rss_after_episodes(venv)
                print(f"N={n} workers={w} {mode}: {rate:.1f} decision steps/s ({steps} in {dt:.1f} s; "
                      f"{time.perf_counter() - t:.0f} s with set-up)"
                      + (f", RSS {out[f'rss_mb_n{n}']} MB" if w == 1 else ""), file=sys.stderr)
                venv.close()
    if args.async_:
        for mode in modes:
            venv = gym.make_vec("SimScale-navhard-v0", num_envs=8, vectorization_mode="async", **MODES[mode],
                                **_data_kwargs(args, 1))
            rate, steps, dt = time_vector(venv, mode, args.warmup, args.min_seconds)
            out[f"async_steps_per_s_{mode}_n8"] = round(rate, 1)
            print(f"AsyncVectorEnv N=8 {mode}: {rate:.1f} decision steps/s ({steps} in {dt:.1f} s)", file=sys.stderr)
            venv.close()
    if args.scenario_cache is not None or args.open_logs is not None or args.prefetch:
        out.update(scenario_cache=args.scenario_cache, open_logs=args.open_logs, prefetch=args.prefetch)
    out["cameras"] = 3
    out["resolution"] = "256x128"
    out["cores"] = os.cpu_count()
    print(json.dumps(out))
    return 0
