"""NAVSIM's `pdm_score` cells of a golden folder (`navsim_scores_*.json`) against our scorer.

Each score file holds, per scene token, named 8-pose plans (ego rear-axle frame, 0.5 s apart), NAVSIM's dense
PDM-Closed trajectory `pdm_closed_40x0p1s` and the cells `"<trajectory>|<nr|r>|<raw|filt>"` of NAVSIM's sub-scores.
We rebuild NAVSIM's metric cache at the token's frame from the folder's OpenScene pickle
(:func:`simscale_env.metrics.navsim_cache.metric_cache_scene`; the simulation it runs in is built from the nuPlan
log, or with source "openscene" from the OpenScene frames alone: :class:`~simscale_env.golden.oracle.GoldenScenes`),
simulate each plan with the LQR + bicycle, normalise EP against the golden dense PDM-Closed trajectory (so the scorer
is checked independently of our planner) and apply NAVSIM's human filter (`filt`: the human plan scored without the
human past). `nr` is log replay, `r` NAVSIM's reactive IDM agents
(:data:`simscale_env.metrics.pseudo_sim.NAVSIM_REACTIVE`).

Compared per cell: the eight sub-scores, EC (NAVSIM leaves it out of a single frame: null), the multiplicative
product, the weighted-metrics vector, NAVSIM's own `pdm_score` (stale after the filter: NAVSIM recomputes the product
and the weighted vector but not this column), `epdms_no_ec` and `epdms_ec1`. Discrete values must be equal, the
others within 1e-6.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import MissingFileError, SchemaError, UnknownTokenError
from ..metrics.constants import ScorerConfig
from .oracle import GoldenFolder, GoldenScenes
from .report import CheckResult, Mismatch

log = logging.getLogger(__name__)

TOLERANCE = 1e-6
DISCRETE = ("no_at_fault_collisions", "drivable_area_compliance", "driving_direction_compliance",
            "traffic_light_compliance", "time_to_collision_within_bound", "lane_keeping", "history_comfort",
            "multiplicative_metrics_prod")
SUB_SCORES = ("no_at_fault_collisions", "drivable_area_compliance", "driving_direction_compliance",
              "traffic_light_compliance", "ego_progress", "time_to_collision_within_bound", "lane_keeping",
              "history_comfort", "two_frame_extended_comfort", "multiplicative_metrics_prod", "weighted_metrics",
              "pdm_score", "epdms_no_ec", "epdms_ec1")
MODES = {"nr": "non_reactive", "r": "reactive"}
FILTERS = ("raw", "filt")
DENSE_REFERENCE_KEY = "pdm_closed_40x0p1s"
DENSE_REFERENCE_INTERVAL_S = 0.1
HUMAN_KEY = "human"


def cell_values(scores, i: int, raw_pdm_score: float, config: ScorerConfig = ScorerConfig()) -> dict:
    """The values of one NAVSIM cell from row `i` of (possibly filtered) PlanScores: `pdm_score` is given (NAVSIM's
    own column, the unfiltered score)."""
    w = np.array(config.weights)
    ep, ttc, lk, hc = (float(getattr(scores, f)[i]) for f in ("ego_progress", "time_to_collision_within_bound",
                                                               "lane_keeping", "history_comfort"))
    prod = float(scores.multiplicative_metrics_prod[i])
    part = w[0] * ep + w[1] * ttc + w[2] * lk + w[3] * hc
    ec = float(scores.two_frame_extended_comfort[i])
    out = {f: float(getattr(scores, f)[i]) for f in SUB_SCORES[:8]}
    out.update(two_frame_extended_comfort=None if np.isnan(ec) else ec, multiplicative_metrics_prod=prod,
               weighted_metrics=[ep, ttc, lk, hc, 0.0 if np.isnan(ec) else ec], pdm_score=float(raw_pdm_score),
               epdms_no_ec=prod * part / w[:4].sum(), epdms_ec1=prod * (part + w[4]) / w.sum())
    return out


def _agree(field: str, ours, golden) -> bool:
    if golden is None or ours is None:
        return golden is None and ours is None
    if field == "weighted_metrics":
        a, b = np.asarray(ours, dtype=np.float64), np.asarray(golden, dtype=np.float64)
        return a.shape == b.shape and bool(np.all(np.abs(a - b) <= TOLERANCE))
    if field in DISCRETE or field == "two_frame_extended_comfort":
        return float(ours) == float(golden)
    return abs(float(ours) - float(golden)) <= TOLERANCE


def _parse_cell(cell: str) -> tuple[str, str, str]:
    parts = cell.split("|")
    if len(parts) != 3 or parts[1] not in MODES or parts[2] not in FILTERS:
        raise ValueError(f"cell {cell!r} is not '<trajectory>|<{'|'.join(MODES)}>|<{'|'.join(FILTERS)}>'")
    return parts[0], parts[1], parts[2]


def score_scene(scenes: GoldenScenes, token: str, scene: dict, cells: list[str], dense_reference=None,
                config: ScorerConfig = ScorerConfig(), path: Path | str = "navsim_scores") -> dict:
    """Our values of the requested cells of one golden scene: {cell: {sub-score: value}}. EP is normalised against
    the scene's dense PDM-Closed trajectory (`dense_reference` where the scene has none), else its 8-pose one."""
    from ..metrics.navsim_cache import (NavsimReactiveTraffic, frame_ego_state, frame_objects, interpolate_detections,
                                         metric_cache_scene, navsim_frames, pdm_path_start_pose)
    from ..experts.route_correction import route_roadblock_correction
    from ..metrics.pseudo_sim import navsim_plan_scores
    from ..sim.plans import local_to_global_poses

    frames, cur = navsim_frames(scenes.frames(scene["log"]), token)
    sim = scenes.simulation(scene["log"], token)
    ego = frame_ego_state(frames[cur])
    if "ego0" in scene and np.abs(ego[[0, 1, 2, 3, 5]] - np.asarray(scene["ego0"], dtype=np.float64)).max() > 1e-6:
        log.warning("%s: our start state %s differs from the file's ego0 %s", token, ego[[0, 1, 2, 3, 5]],
                    scene["ego0"])
    world = sim.reset(ego_state=ego)
    # PDM-Closed's route: NAVSIM's on-route lanes and centreline come from it
    route = route_roadblock_correction(sim.map, (float(ego[0]), float(ego[1]), float(ego[2])),
                                       list(frames[cur].get("roadblock_ids") or sim.scenario.route_roadblock_ids))
    detections = interpolate_detections([frame_objects(f) for f in frames[cur:]])
    base = metric_cache_scene(sim, frames, cur, ego=ego, detections=detections, route_roadblock_ids=route)
    dense = scene.get(DENSE_REFERENCE_KEY, dense_reference)
    if dense is not None:
        reference, ref_interval = np.asarray(dense, dtype=np.float64), DENSE_REFERENCE_INTERVAL_S
    else:
        log.warning("%s: no %s in the folder; EP is normalised by the 8-pose pdm_closed plan", token,
                    DENSE_REFERENCE_KEY)
        reference, ref_interval = np.asarray(scene["trajectories"]["pdm_closed"], dtype=np.float64), 0.5
    ref_global = local_to_global_poses(reference[None], (ego[0], ego[1], ego[2]))[0]
    ref_start = pdm_path_start_pose(sim, ego, ref_global, route_roadblock_ids=route)
    human = np.asarray(scene["trajectories"][HUMAN_KEY], dtype=np.float64) if HUMAN_KEY in scene["trajectories"] \
        else None
    out: dict = {}
    wanted: dict = {}
    for cell in cells:
        name, mode, filt = _parse_cell(cell)
        if name not in scene["trajectories"]:
            raise SchemaError(path, f"scene {token}: cell {cell!r} names a trajectory the scene does not hold")
        wanted.setdefault(mode, {}).setdefault(name, set()).add(filt)
    for mode, by_name in wanted.items():
        names = sorted(by_name)
        plans = np.stack([np.asarray(scene["trajectories"][n], dtype=np.float64) for n in names])
        need_filter = any("filt" in f for f in by_name.values())
        if need_filter and human is None:
            raise SchemaError(path, f"scene {token}: 'filt' cells need the '{HUMAN_KEY}' trajectory (NAVSIM's "
                                    "human filter scores it)")
        reactive = NavsimReactiveTraffic.from_frames(sim, frames, cur, base, ego=ego, detections=detections).scene \
            if mode == "r" else None
        raw, filt = navsim_plan_scores(sim, world, plans, base, agent_mode=MODES[mode], reference_plan=reference,
                                       reactive_scene=reactive,
                                       reference_interval_s=ref_interval,
                                       reference_start_pose=ref_start,
                                       human_plan=human if need_filter else None, config=config)
        pdm = raw.pdm_score(config)
        for i, n in enumerate(names):
            for f in by_name[n]:
                s = filt if f == "filt" else raw
                out[f"{n}|{mode}|{f}"] = cell_values(s, i, float(pdm[i]), config)
    return out


def check_scores(folder: GoldenFolder, source: str = "nuplan") -> CheckResult:
    """Every sub-score of every cell of every `navsim_scores_*.json` of `folder` against our scorer, the scenes'
    simulations built from `source` (:class:`~simscale_env.golden.oracle.GoldenScenes`)."""
    result = CheckResult("score_cells")
    result.skipped = folder.scene_skip_reason(source)
    if result.skipped:
        return result
    scenes = GoldenScenes(folder, source)
    # a file may leave the dense PDM-Closed trajectory to another one of the same scenes (the shared reactive file)
    dense = folder.dense_plans(DENSE_REFERENCE_KEY)
    for path, data in folder.scores():
        agree = {f: 0 for f in SUB_SCORES}
        total = {f: 0 for f in SUB_SCORES}
        if not isinstance(data.get("scenes"), dict):
            raise SchemaError(path, "expected an object with 'scenes' {token: scene}")
        for token, scene in data["scenes"].items():
            missing = [k for k in ("log", "trajectories", "navsim_scores") if k not in scene]
            if missing:
                raise SchemaError(path, f"scene {token} lacks {missing}")
            gold = scene["navsim_scores"]
            bad = []
            for cell in gold:
                try:
                    _parse_cell(cell)
                except ValueError as exc:
                    bad.append(cell)
                    result.mismatches.append(Mismatch(f"{path.name} {token} {cell}", "cell", str(exc), None))
            cells = sorted(c for c in gold if c not in bad)
            try:
                ours = score_scene(scenes, token, scene, cells, dense.get((token, scene.get("time_us"))),
                                   path=path)
            except (MissingFileError, UnknownTokenError) as exc:  # the scene's log or frame is not in the folder
                result.mismatches.append(Mismatch(f"{path.name} {token}", "scene", str(exc), None))
                continue
            for cell in cells:
                values = gold[cell]
                for f in SUB_SCORES:
                    if f not in values:
                        continue
                    total[f] += 1
                    result.compared += 1
                    mine = ours[cell][f]
                    if _agree(f, mine, values[f]):
                        agree[f] += 1
                    else:
                        result.mismatches.append(Mismatch(f"{path.name} {token} {cell}", f, mine, values[f]))
        header = ("sub-score", "agree", "compared")
        rows = [(f, agree[f], total[f]) for f in SUB_SCORES if total[f]]
        rows.append(("all", sum(agree.values()), sum(total.values())))
        result.tables[path.name] = (header, rows)
        log.info("%s: %d of %d sub-scores agree", path.name, sum(agree.values()), sum(total.values()))
    return result


