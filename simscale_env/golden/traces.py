"""IDM traces: the devkit's reactive closed loop (``idm_traces/<token>.json``) reproduced step by step.

Each trace is nuplan-devkit's ``Simulation`` on the nuPlan challenge window of a tagged lidar_pc: ``IDMAgents`` with
the devkit's open-loop types and no snap threshold, the ego on ``LogFuturePlanner(16, 8.0)`` tracked by the devkit's
LQR (``jerk_regularizer="nuplan"``) and bicycle, vehicles the devkit does not spawn dropped. Every record (the ego and
each Agent-type object: IDM vehicles and replayed pedestrians) must agree to `TOLERANCE` with the same agents at
every step.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..data import LogDB, extract_scenario
from ..data.schema import PEDESTRIAN
from ..map import load_map
from ..sim import LQRConfig, PlanTracker, SimConfig, Simulation
from ..sim.idm import DEVKIT_OPEN_LOOP_TYPES, IDMConfig
from ..sim.plans import interpolate_poses
from .oracle import GoldenFolder
from .report import CheckResult, Mismatch

log = logging.getLogger(__name__)

TOLERANCE = 1e-6
# the devkit traces' settings (idm_traces README, devkit_tiny README): IDMAgents(open_loop_detections_types=[PEDESTRIAN,
# BARRIER, CZONE_SIGN, TRAFFIC_CONE, GENERIC_OBJECT]) without a snap threshold, LQRTracker(jerk_penalty=1e-4) as the
# devkit regularises, unspawned vehicles absent, the bicycle integrating through zero speed (no standstill hold)
DEVKIT_TRACE_CONFIG = SimConfig(idm=IDMConfig(open_loop_types=DEVKIT_OPEN_LOOP_TYPES, snap_threshold=None),
                                lqr=LQRConfig(jerk_regularizer="nuplan"), replay_unspawned_vehicles=False,
                                hold_at_standstill=False)
# nuplan/planning/simulation/planner/log_future_planner.py as the traces run it: LogFuturePlanner(num_poses=16,
# future_time_horizon=8.0) on the 20 Hz log (every 10th lidar_pc is 0.5 s), sampled at 0.1 s by the tracker
LOG_FUTURE_POSES = 16
LOG_FUTURE_STEP_ROWS = 10
TRACKER_DT_US = 100_000


def log_future_reference(db: LogDB, ts_us: int, horizon_samples: int = LOG_FUTURE_POSES,
                         step_rows: int = LOG_FUTURE_STEP_ROWS, dt_us: int = TRACKER_DT_US) -> np.ndarray:
    """LogFuturePlanner(num_poses=16, future_time_horizon=8.0): the logged state now and every 0.5 s for 8 s, as an
    InterpolatedTrajectory sampled every 0.1 s from its start
    (tracker_utils.get_interpolated_reference_trajectory_poses). Poses [T, 3] (rear axle)."""
    ts = db.lidar_pc_timestamps
    e = db.ego_arrays()
    li = int(np.searchsorted(ts, ts_us))
    idx = np.concatenate([[li], li + step_rows * np.arange(1, horizon_samples + 1)])
    idx = idx[idx < len(ts)]
    poses = np.stack([e["x"][idx], e["y"][idx], e["heading"][idx]], -1)
    q = np.arange(ts[idx[0]], ts[idx[-1]], dt_us)
    if q[-1] + dt_us <= ts[idx[-1]]:
        q = np.append(q, q[-1] + dt_us)
    return interpolate_poses(ts[idx], poses, q)


def _wrap(a):
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def _err(ours, golden, heading_index: int) -> float:
    d = np.abs(np.asarray(ours, dtype=np.float64) - np.asarray(golden, dtype=np.float64))
    d[heading_index] = abs(float(_wrap(ours[heading_index] - golden[heading_index])))
    return float(d.max())


def run_devkit_loop(db: LogDB, token: str, maps_root, config: SimConfig = DEVKIT_TRACE_CONFIG):
    """Yield (world, sim, agents {track token: [x, y, heading, speed]}) of the devkit's closed loop on the challenge
    window of `token`, one per iteration (the records the devkit's trace lists: IDM agents and replayed pedestrians)."""
    sc = extract_scenario(db, token)
    m = load_map(sc.map_location, maps_root)
    sim = Simulation(sc, m, config)
    world = sim.reset()
    while True:
        objs = sim.objects(world)
        listed = objs.reactive | (objs.category == PEDESTRIAN)
        agents = {sc.agents.track_tokens[t]: [x, y, h, float(np.hypot(vx, vy))] for t, x, y, h, vx, vy, keep in zip(
            objs.track, objs.x, objs.y, objs.heading, objs.vx, objs.vy, listed) if keep}
        yield world, sim, agents
        if world.iteration + 1 >= sim.num_iterations:
            return
        tracker = PlanTracker(log_future_reference(db, world.time_us), world.iteration, config.lqr)
        world = sim.step(world, tracker=tracker)


def compare_trace(name: str, trace: list, db: LogDB, token: str, maps_root,
                  config: SimConfig = DEVKIT_TRACE_CONFIG) -> tuple[list[Mismatch], dict]:
    """Mismatches of one trace (records: it, t_us, ego, agents) and its agreement row."""
    mismatches: list[Mismatch] = []
    matched = total = 0
    worst = 0.0
    tracks = set()
    loop = run_devkit_loop(db, token, maps_root, config)
    steps = 0
    for rec in trace:
        it = rec["it"]
        where = f"{name} step {it}"
        try:
            world, sim, agents = next(loop)
        except StopIteration:
            mismatches.append(Mismatch(where, "step missing (the scenario ended)"))
            total += 1 + len(rec["agents"])
            continue
        steps += 1
        if world.iteration != it or world.time_us != rec["t_us"]:
            mismatches.append(Mismatch(where, "iteration / time", (world.iteration, world.time_us),
                                       (it, rec["t_us"])))
        e = world.ego
        mine = [e[0], e[1], e[2], e[3], e[5], e[7]]
        err = _err(mine, rec["ego"], 2)
        total += 1
        worst = max(worst, err)
        if err > TOLERANCE:
            mismatches.append(Mismatch(f"{where} ego", f"max abs error {err:.3g}", [float(x) for x in mine],
                                       rec["ego"]))
        else:
            matched += 1
        gold = rec["agents"]
        tracks.update(gold)
        for tok, val in gold.items():
            total += 1
            if tok not in agents:
                mismatches.append(Mismatch(f"{where} agent {tok}", "missing", None, val))
                continue
            err = _err(agents[tok], val, 2)
            worst = max(worst, err)
            if err > TOLERANCE:
                mismatches.append(Mismatch(f"{where} agent {tok}", f"max abs error {err:.3g}",
                                           [float(x) for x in agents[tok]], val))
            else:
                matched += 1
        for tok in sorted(set(agents) - set(gold)):
            total += 1
            mismatches.append(Mismatch(f"{where} agent {tok}", "extra", [float(x) for x in agents[tok]], None))
    row = {"steps": steps, "agents": len(tracks), "records": total, "matched": matched, "max_abs_error": worst}
    return mismatches, row


TABLE_HEADER = ("steps", "agents", "records", "matched", "max abs error")


def check_traces(folder: GoldenFolder) -> CheckResult:
    """Every ``idm_traces/<token>.json`` of a golden folder against our closed loop (kind "traces")."""
    res = CheckResult("traces")
    files = folder.trace_files
    if not files:
        res.skipped = f"no idm_traces/*.json in {folder.root}"
        return res
    if folder.maps_root is None:
        res.skipped = f"{folder.root}: idm_traces/ needs maps.tar.xz"
        return res
    for path, data in folder.traces():
        name = f"idm_traces/{Path(path).name}"
        db = LogDB(folder.log_path(data["log"]))
        mis, row = compare_trace(name, data["trace"], db, data["token"], folder.maps_root)
        res.compared += 1
        res.mismatches += mis
        res.tables[name] = (TABLE_HEADER, [[row["steps"], row["agents"], row["records"], row["matched"],
                                            f"{row['max_abs_error']:.3g}"]])
        log.info("%s: %d of %d records match (max abs error %.3g)", name, row["matched"], row["records"],
                 row["max_abs_error"])
    return res
