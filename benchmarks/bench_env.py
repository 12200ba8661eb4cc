"""`simscale bench env`: decision steps (0.5 s of simulated time each) per second of `SimScale-navhard-v0` on 2 cores.

(a) no cameras, no pseudo-experts, no plan scoring and no expert check of the start (the kwargs turn them off): the
    policy replays the logged future as its plan; (b) with both pseudo-experts in `info` (and the submitted plan
    scored), driven by `info["pseudo_expert"]["pdm_closed"]`; (c) as (b) with the three front cameras at 480x224;
    (d) as (b) with `reward_vocabulary=` a K-plan vocabulary (--vocab-k, default 256: k-means centres of the
    dataset's logged 4 s futures, 40 poses at 0.1 s, `metrics.vocabulary`), i.e. info["vocab_scores"] at every
    decision step: `steps_per_s_vocab`, and `vocab_ms_per_step`, the median time of the labelling itself
    (`envs.vocabulary_scores`, what the env calls) on the states an expert episode visits.
Each mode runs whole episodes (resets and episode summaries included) in steady state: the same seeded episodes
are run once before timing and then repeated for at least --min-seconds, so scenario loading from the .db, map
loading, scene-chunk synthesis and the human reference replay (cached per scenario) are not timed.
Targets (issue 7): >= 200, >= 30, >= 10.

Reset time (issue 14): per mode, `env.reset` alone, timed with `time.perf_counter`: `reset_ms_cold_<mode>` is the
first reset of the mode's fresh env (scenario loading from the .db, map loading, the first expert and spawn work; only
the first mode's also pays process-wide first uses such as loading the numba kernels from their cache); then one
warm-up reset on each scene of the split, then `--resets` resets with seeds 0, 1, ... (scenes and perturbed starts
drawn as a user's resets draw them), whose median and 95th percentile are `reset_ms_p50_<mode>` /
`reset_ms_p95_<mode>` (mode: no_cameras, experts, cameras as above). `reset_ms_p50` / `reset_ms_p95` /
`reset_ms_cold` without a suffix are the default kwargs without cameras, what
`gym.make("SimScale-navhard-v0", observation_keys=("ego_status",))` gives: pseudo-experts, plan scoring and the
expert start check on, i.e. mode (b). Targets (issue 14): p50 <= 30 ms, p95 <= 150 ms without cameras.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _log_plan(env):
    """The logged ego's next 4 s as a plan from the current (realised) pose."""
    import numpy as np

    from simscale_env.geometry import global_to_local

    u = env.unwrapped
    sc = u.sim.scenario
    f = sc.start_index + u.world.iteration
    idx = np.minimum(f + 5 * np.arange(1, 9), len(sc.ego.x) - 1)
    poses = np.stack([sc.ego.x[idx], sc.ego.y[idx], sc.ego.heading[idx]], -1)
    return global_to_local(poses, u.world.ego[:3]).astype(np.float32)


def _vocabulary(k: int, folder: str) -> str:
    """A K-plan vocabulary .npy in `folder`: k-means centres (seed 0) of the logged 4 s futures of the dataset's
    logs (40 poses at 0.1 s)."""
    from pathlib import Path

    from simscale_env.data.paths import DataConfig
    from simscale_env.metrics.vocabulary import human_plans, kmeans_vocabulary, save_vocabulary

    logs = sorted(DataConfig.resolve().log_dir.glob("*.db"))
    vocab = kmeans_vocabulary(human_plans(logs), k, iterations=10, seed=0)
    return str(save_vocabulary(Path(folder) / f"vocab{k}.npy", vocab))


def _vocab_ms(env, seed: int = 0) -> float:
    """Median ms of `vocabulary_scores` (the env's labelling) over the states of one expert episode."""
    import numpy as np

    from simscale_env.envs import load_reward_vocabulary, vocabulary_scores

    u = env.unwrapped
    vocab = load_reward_vocabulary(u.config.reward_vocabulary)
    obs, info = env.reset(seed=seed)
    times = []
    while True:
        t = time.perf_counter()
        vocabulary_scores(u.sim, u.world, vocab)
        times.append((time.perf_counter() - t) * 1e3)
        obs, r, term, trunc, info = env.step(info["pseudo_expert"]["pdm_closed"])
        if term or trunc:
            return round(float(np.median(times)), 1)


def main(argv) -> int:
    ap = argparse.ArgumentParser(prog="simscale bench env")
    ap.add_argument("--data", default=None, help="mini dataset root (default: the cache)")
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-seconds", type=float, default=3.0, help="time each mode for at least this long")
    ap.add_argument("--resets", type=int, default=40, help="timed resets per mode (after a warm-up on every scene)")
    ap.add_argument("--vocab-k", type=int, default=256, help="plans of the reward vocabulary of mode (d); 0: skip it")
    args = ap.parse_args(argv)
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    if args.data:
        os.environ["SIMSCALE_MINI"] = args.data
    import gymnasium as gym
    import numpy as np
    from numba import set_num_threads

    import simscale_env  # noqa: F401  (registration)

    set_num_threads(args.threads)
    modes = {
        "steps_per_s_no_cameras": dict(observation_keys=("ego_status",), pseudo_experts=False, plan_scoring=None,
                                       valid_start=False),
        "steps_per_s_experts": dict(observation_keys=("ego_status",), pseudo_experts=True),
        "steps_per_s_cameras": dict(observation_keys=("cameras", "ego_status"), pseudo_experts=True),
    }
    tmp = None
    if args.vocab_k > 0:
        import tempfile

        tmp = tempfile.TemporaryDirectory(prefix="simscale-bench-vocab-")
        modes["steps_per_s_vocab"] = dict(observation_keys=("ego_status",), pseudo_experts=True,
                                          reward_vocabulary=_vocabulary(args.vocab_k, tmp.name))
    out = {}
    for key, kw in modes.items():
        env = gym.make("SimScale-navhard-v0", **kw)
        expert = kw["pseudo_experts"]
        mode = key.removeprefix("steps_per_s_")
        t = time.perf_counter()
        env.reset(seed=0)
        out[f"reset_ms_cold_{mode}"] = round((time.perf_counter() - t) * 1e3, 1)
        for tok in env.unwrapped.tokens:  # warm-up: every scene once (scenario and map loads, per-scene caches)
            env.reset(seed=0, options={"scenario_token": tok})
        times = []
        for s_ in range(args.resets):
            t = time.perf_counter()
            env.reset(seed=s_)
            times.append((time.perf_counter() - t) * 1e3)
        if times:
            out[f"reset_ms_p50_{mode}"] = round(float(np.percentile(times, 50)), 1)
            out[f"reset_ms_p95_{mode}"] = round(float(np.percentile(times, 95)), 1)
            print(f"reset ({mode}): cold {out[f'reset_ms_cold_{mode}']} ms; {args.resets} resets after a warm-up on "
                  f"{len(env.unwrapped.tokens)} scenes: p50 {out[f'reset_ms_p50_{mode}']} ms, "
                  f"p95 {out[f'reset_ms_p95_{mode}']} ms, max {max(times):.1f} ms", file=sys.stderr)

        def run(seed):
            obs, info = env.reset(seed=seed)
            n = 0
            while True:
                a = info["pseudo_expert"]["pdm_closed"] if expert else _log_plan(env)
                obs, r, term, trunc, info = env.step(np.clip(a, env.action_space.low, env.action_space.high))
                n += 1
                if term or trunc:
                    return n

        for s_ in range(args.episodes):  # warm-up: the same episodes once (scenario loads, scene chunks, caches)
            run(s_)
        # timed: the same episodes, repeated until at least --min-seconds have passed (short passes are noisy)
        steps, dt, passes = 0, 0.0, 0
        while dt < args.min_seconds:
            t = time.perf_counter()
            steps += sum(run(s) for s in range(args.episodes))
            dt += time.perf_counter() - t
            passes += 1
        out[key] = round(steps / dt, 1)
        print(f"{key}: {steps} steps in {dt:.1f} s ({args.episodes} episodes x {passes})", file=sys.stderr)
        if "reward_vocabulary" in kw:
            out["vocab_k"] = args.vocab_k
            out["vocab_ms_per_step"] = _vocab_ms(env)
            print(f"vocabulary labels (K={args.vocab_k}): {out['vocab_ms_per_step']} ms per decision step",
                  file=sys.stderr)
        env.close()
    if tmp is not None:
        tmp.cleanup()
    for k in ("p50", "p95", "cold"):  # the figures: default kwargs without cameras (mode b)
        if f"reset_ms_{k}_experts" in out:
            out[f"reset_ms_{k}"] = out[f"reset_ms_{k}_experts"]
    out["cameras"] = 3
    out["resolution"] = "480x224"
    print(json.dumps(out))
    return 0
