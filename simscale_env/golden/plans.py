"""NAVSIM's PDM-Closed plans of a golden folder (`navsim_scores_*.json`) against our planner.

Each scene of a score file holds NAVSIM's `metric_cache.trajectory`: `trajectories["pdm_closed"]` (8 poses at
0.5 ... 4.0 s) and, in some files, `pdm_closed_40x0p1s` (the 40 poses at 0.1 s), both in the rear-axle frame of the
start state. NAVSIM computes it with `MetricCacheProcessor.compute_metric_cache` on `NavSimScenario`: PDM-Closed
planned once, from a fresh planner, at the token's own frame, with

- the ego state of the OpenScene frame (rear-axle pose, `ego_dynamic_state` velocity and acceleration through
  float32, no steering: :func:`simscale_env.metrics.navsim_cache.frame_ego_state`),
- the frame's route (`roadblock_ids`), repaired by PDM-Closed from the ego pose,
- the frame's objects and traffic lights (identical to the nuPlan log's lidar_pc of the token, which we read).

We rebuild that start from the folder's nuPlan log (scenario at the token, offset 0; with source "openscene" the
scenario is built from the OpenScene frames instead, and no log is opened) and OpenScene pickle (ego state and route)
and plan with :class:`~simscale_env.experts.PDMClosedPlanner`'s defaults. A plan agrees when every pose
lies within `TOLERANCE_M` of NAVSIM's (position error, metres). A scene whose file has no dense trajectory uses the
one another file holds for the same scene (as the shared reactive file does), else only the 8 poses are compared.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from .oracle import GoldenFolder, GoldenScenes
from .report import CheckResult, Mismatch

log = logging.getLogger(__name__)

TOLERANCE_M = 0.01  # issue 13: NAVSIM's PDM-Closed plan within 1 cm
PLAN_KEY = "pdm_closed"  # navsim_scores_*.json: trajectories["pdm_closed"] (8 poses at 0.5 s)
DENSE_KEY = "pdm_closed_40x0p1s"  # the dense trajectory (40 poses at 0.1 s)
PLAN_STEP = 5  # 0.5 s in 0.1 s steps
HEADER = ("token", "max error 8-pose [m]", "max error 40-step [m]", "match")


class _Planner:
    """Our PDM-Closed plans at the scenes of a golden folder, each made once."""

    def __init__(self, folder: GoldenFolder, source: str = "nuplan"):
        self.scenes = GoldenScenes(folder, source)
        self._plans: dict = {}

    def plan(self, log_name: str, token: str) -> tuple[np.ndarray, np.ndarray]:
        """(8 poses [8, 3], 40 poses [40, 3]) of our PDM-Closed at NAVSIM's start, in its rear-axle frame."""
        if (log_name, token) in self._plans:
            return self._plans[(log_name, token)]
        from ..experts import PDMClosedPlanner
        from ..geometry import global_to_local
        from ..metrics.navsim_cache import frame_ego_state
        from ..sim import Simulation

        frame = self.scenes.frame(log_name, token)
        base = self.scenes.simulation(log_name, token)
        # NavSimScenario.get_route_roadblock_ids: the current frame's roadblock ids
        sc = dataclasses.replace(base.scenario, route_roadblock_ids=tuple(str(r) for r in frame["roadblock_ids"]))
        sim = Simulation(sc, base.map, base.config)
        ego = frame_ego_state(frame)
        plan = PDMClosedPlanner().plan(sim, sim.reset(ego_state=ego))
        dense = global_to_local(plan.trajectory[1:], ego[:3])
        self._plans[(log_name, token)] = (plan.poses, dense)
        return plan.poses, dense


def _max_error(ours: np.ndarray, golden) -> float:
    g = np.asarray(golden, dtype=np.float64)
    if g.shape != ours.shape:
        return float("inf")
    return float(np.hypot(*(ours[:, :2] - g[:, :2]).T).max())


def check_plans(folder: GoldenFolder, source: str = "nuplan") -> CheckResult:
    """Every scene of every `navsim_scores_*.json` of `folder`: our PDM-Closed's 8 poses and 40 steps against
    NAVSIM's, the start built from `source` ("nuplan": the .db log; "openscene": the OpenScene frames alone).
    `compared` counts scenes; one mismatch per (file, scene, plan) off by more than `TOLERANCE_M`."""
    result = CheckResult("plans")
    result.skipped = folder.scene_skip_reason(source)
    if result.skipped:
        return result
    dense_of = folder.dense_plans(DENSE_KEY)
    planner = _Planner(folder, source)
    for path, data in folder.scores():
        rows = []
        for token, scene in data["scenes"].items():
            gold8 = scene.get("trajectories", {}).get(PLAN_KEY)
            gold40 = scene.get(DENSE_KEY, dense_of.get((token, scene.get("time_us"))))
            if gold8 is None and gold40 is None:
                continue
            result.compared += 1
            poses, dense = planner.plan(scene["log"], token)
            e8 = _max_error(poses, gold8) if gold8 is not None else None
            e40 = _max_error(dense, gold40) if gold40 is not None else None
            ok = True
            for what, err in (("8-pose plan", e8), ("40-step trajectory", e40)):
                if err is not None and not err <= TOLERANCE_M:
                    ok = False
                    result.mismatches.append(Mismatch(f"{path.name} {token}", f"{what} max position error [m]",
                                                      err, f"<= {TOLERANCE_M}"))
            rows.append((token, "-" if e8 is None else f"{e8:.2e}", "-" if e40 is None else f"{e40:.2e}",
                         "yes" if ok else "no"))
        result.tables[path.name] = (HEADER, rows)
        log.info("%s: %d of %d PDM-Closed plans agree", path.name, sum(r[3] == "yes" for r in rows), len(rows))
    return result


def main(root: str | Path) -> CheckResult:  # pragma: no cover - a manual entry point
    return check_plans(GoldenFolder.open(root))
