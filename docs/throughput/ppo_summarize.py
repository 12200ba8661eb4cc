"""Issue 20's RL acceptance run, summarised: PPO (residual on PDM-Closed) from `simscale train-rl` on
SimScaleVectorEnv, 3 training seeds, each evaluated closed loop on mini-navhard at eval seeds 100-102 (27 perturbed
starts); standing still and PDM-Closed on the same starts.

    python docs/throughput/ppo_summarize.py RUNS_DIR      # from the run folders: writes ppo_episodes.csv, ppo_train.json
    python docs/throughput/ppo_summarize.py               # from those two files: prints ppo_vector_env.json

RUNS_DIR holds ppo_s{0,1,2}/ and train_s{0,1,2}.json (`simscale train-rl ... --seed S --out RUNS_DIR/ppo_sS`, its
JSON line) and eval_{ppo_sS,stand_still,pdm_closed}_e{100,101,102}/ (`simscale evaluate ... --seed E --out ...`)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
POLICIES = ("ppo_s0", "ppo_s1", "ppo_s2", "stand_still", "pdm_closed")
EVAL_SEEDS = (100, 101, 102)
COLUMNS = ("policy", "eval_seed", "token", "score", "at_fault_collision", "off_road")


def collect(runs: Path) -> None:
    import pyarrow.parquet as pq

    rows = []
    for p in POLICIES:
        for e in EVAL_SEEDS:
            t = pq.read_table(runs / f"eval_{p}_e{e}" / "results.parquet").to_pydict()
            for i in range(len(t["token"])):
                rows.append({"policy": p, "eval_seed": e, "token": t["token"][i], "score": repr(float(t["score"][i])),
                             "at_fault_collision": int(bool(t["at_fault_collision"][i])),
                             "off_road": int(bool(t["off_road"][i]))})
    with open(HERE / "ppo_episodes.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    train = {f"ppo_s{s}": {k: json.loads((runs / f"train_s{s}.json").read_text())[k]
                           for k in ("timesteps", "episodes", "learn_s", "wall_s", "steps_per_s")} for s in range(3)}
    (HERE / "ppo_train.json").write_text(json.dumps(train, indent=1) + "\n")


def summary() -> dict:
    from scipy import stats

    with open(HERE / "ppo_episodes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    train = json.loads((HERE / "ppo_train.json").read_text())
    by = {p: [r for r in rows if r["policy"] == p] for p in POLICIES}
    out = {}
    means = []
    for s in range(3):
        r = by[f"ppo_s{s}"]
        means.append(float(np.mean([float(x["score"]) for x in r])))
        t = train[f"ppo_s{s}"]
        out[f"ppo_s{s}"] = {"epdms": round(means[-1], 4), "episodes": len(r), "train_steps_per_s": t["steps_per_s"],
                            "train_min": round(t["wall_s"] / 60, 1),
                            "collisions": round(float(np.mean([int(x["at_fault_collision"]) for x in r])), 3),
                            "off_road": round(float(np.mean([int(x["off_road"]) for x in r])), 3)}
    m, sd = float(np.mean(means)), float(np.std(means, ddof=1))
    h = float(stats.t.ppf(0.975, len(means) - 1)) * sd / np.sqrt(len(means))
    out["ppo_mean_over_seeds"] = round(m, 4)
    out["ppo_t95_over_seeds"] = [round(m - h, 4), round(m + h, 4)]
    for p in ("stand_still", "pdm_closed"):
        v = np.array([float(x["score"]) for x in by[p]])
        rng = np.random.default_rng(0)
        boot = [rng.choice(v, len(v)).mean() for _ in range(2000)]
        out[p] = {"epdms": round(float(v.mean()), 4), "episodes": len(v),
                  "boot95": [round(float(np.percentile(boot, 2.5)), 4), round(float(np.percentile(boot, 97.5)), 4)],
                  "collisions": round(float(np.mean([int(x["at_fault_collision"]) for x in by[p]])), 3),
                  "off_road": round(float(np.mean([int(x["off_road"]) for x in by[p]])), 3)}
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1:
        collect(Path(sys.argv[1]))
    print(json.dumps(summary(), indent=1))
