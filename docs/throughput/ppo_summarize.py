"""Issue 20 acceptance: PPO (residual on PDM-Closed) from `simscale train-rl` on SimScaleVectorEnv, 3 training seeds,
each evaluated closed-loop on mini-navhard at eval seeds 100-102 (27 episodes); baselines on the same starts."""
import json, sys
from pathlib import Path
import numpy as np
import pyarrow.parquet as pq
from scipy import stats

R = Path(sys.argv[1] if len(sys.argv) > 1 else "/work/runs/ppo20")
def episodes(prefix):
    cols = {}
    for e in (100, 101, 102):
        t = pq.read_table(R / f"eval_{prefix}_e{e}" / "results.parquet").to_pydict()
        for k, v in t.items():
            cols.setdefault(k, []).extend(v)
    return {k: np.asarray(v) for k, v in cols.items()}
out = {}
seed_means = []
for s in (0, 1, 2):
    d = episodes(f"ppo_s{s}")
    seed_means.append(float(d["score"].mean()))
    tr = json.loads((R / f"train_s{s}.json").read_text())
    out[f"ppo_s{s}"] = {"epdms": round(seed_means[-1], 4), "episodes": len(d["score"]),
                        "train_steps_per_s": tr["steps_per_s"], "train_min": round(tr["wall_s"] / 60, 1),
                        "collisions": round(float(d["at_fault_collision"].mean()), 3),
                        "off_road": round(float(d["off_road"].mean()), 3)}
m = np.mean(seed_means); sd = np.std(seed_means, ddof=1); h = stats.t.ppf(0.975, 2) * sd / np.sqrt(3)
out["ppo_mean_over_seeds"] = round(float(m), 4); out["ppo_t95_over_seeds"] = [round(float(m - h), 4), round(float(m + h), 4)]
for p in ("stand_still", "pdm_closed"):
    d = episodes(p)
    v = d["score"]
    rng = np.random.default_rng(0)
    boot = [rng.choice(v, len(v)).mean() for _ in range(2000)]
    out[p] = {"epdms": round(float(v.mean()), 4), "episodes": len(v),
              "boot95": [round(float(np.percentile(boot, 2.5)), 4), round(float(np.percentile(boot, 97.5)), 4)],
              "collisions": round(float(d["at_fault_collision"].mean()), 3), "off_road": round(float(d["off_road"].mean()), 3)}
print(json.dumps(out, indent=1))
