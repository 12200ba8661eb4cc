"""IDM traces: the devkit's reactive closed loop (``idm_traces/<token>.json``) reproduced step by step.

Each trace is nuplan-devkit's ``Simulation`` on the nuPlan challenge window of a tagged lidar_pc: ``IDMAgents`` with
the devkit's open-loop types and no snap threshold, the ego on ``LogFuturePlanner(16, 8.0)`` tracked by the devkit's
LQR (``jerk_regularizer="nuplan"``) and bicycle, vehicles the devkit does not spawn dropped. Every record (the ego and
each Agent-type object: IDM vehicles and replayed pedestrians) must agree to `TOLERANCE` with the same agents at
every step.

With source "openscene" the same closed loop runs on the window built from the OpenScene frames alone
(:func:`~simscale_env.data.openscene_scenario.scenario_from_frames` at offset -3 s, 15 s, 2 s of history: 2 Hz
frames interpolated to 10 Hz) with the ego's log future read from those frames
(:func:`openscene_log_future_reference`). The traces came from the 20 Hz databases, so they are not expected to agree:
each trace's deviation (ego and agent position errors, agents present on one side only) is reported under
``trace_deviation`` and never counted as a mismatch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..data import LogDB, extract_scenario
from ..data.openscene_scenario import frame_ego_pose
from ..data.scenario import EXTRACTION_OFFSET_S, HISTORY_S, SCENARIO_DURATION_S
from ..data.schema import PEDESTRIAN
from ..map import load_map
from ..sim import LQRConfig, PlanTracker, SimConfig, Simulation
from ..sim.idm import DEVKIT_OPEN_LOOP_TYPES, IDMConfig
from ..sim.plans import interpolate_poses
from .oracle import GoldenFolder, GoldenScenes, check_source
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


def openscene_log_future_reference(frames: list, ts_us: int, horizon_samples: int = LOG_FUTURE_POSES,
                                   step_us: int = LOG_FUTURE_STEP_ROWS * 50_000,
                                   dt_us: int = TRACKER_DT_US) -> np.ndarray:
    """:func:`log_future_reference` on an OpenScene log (its 2 Hz frames, linear between them, as the OpenScene
    scenario's ego track): the logged pose at `ts_us` and every 0.5 s after it for 8 s, as far as the log goes,
    sampled every 0.1 s from `ts_us`. Poses [T, 3] (rear axle)."""
    ft = np.array([int(f["timestamp"]) for f in frames], dtype=np.int64)
    fp = np.stack([frame_ego_pose(f) for f in frames])
    fp[:, 2] = np.unwrap(fp[:, 2])
    t = ts_us + step_us * np.arange(horizon_samples + 1, dtype=np.int64)
    t = t[t <= ft[-1]]
    if len(t) < 2:  # at the log's end: hold the last pose
        t = np.array([ts_us, ts_us + dt_us], dtype=np.int64)
    poses = interpolate_poses(ft, fp, np.minimum(t, ft[-1]))
    q = np.arange(t[0], t[-1], dt_us)
    if q[-1] + dt_us <= t[-1]:
        q = np.append(q, q[-1] + dt_us)
    return interpolate_poses(t, poses, q)


def run_devkit_loop(db: LogDB, token: str, maps_root, config: SimConfig = DEVKIT_TRACE_CONFIG):
    """Yield (world, sim, agents {track token: [x, y, heading, speed]}) of the devkit's closed loop on the challenge
    window of `token`, one per iteration (the records the devkit's trace lists: IDM agents and replayed pedestrians)."""
    sc = extract_scenario(db, token)
    m = load_map(sc.map_location, maps_root)
    yield from devkit_loop(Simulation(sc, m, config), lambda ts_us: log_future_reference(db, ts_us))


def run_openscene_devkit_loop(scenes: GoldenScenes, log_name: str, token: str,
                              config: SimConfig = DEVKIT_TRACE_CONFIG):
    """:func:`run_devkit_loop` on the challenge window of `token` built from the log's OpenScene frames
    (`scenes.source` "openscene"), the ego's log future from those frames."""
    sc = scenes.scenario(log_name, token, offset_s=EXTRACTION_OFFSET_S, duration_s=SCENARIO_DURATION_S,
                         history_s=HISTORY_S)
    frames = scenes.frames(log_name)
    yield from devkit_loop(Simulation(sc, scenes.map(sc.map_location), config),
                           lambda ts_us: openscene_log_future_reference(frames, ts_us))


def devkit_loop(sim: Simulation, reference):
    """The devkit's closed loop on `sim`; `reference(time_us)` is the ego's log-future reference poses [T, 3] (0.1 s
    apart from `time_us`). Yields what :func:`run_devkit_loop` yields."""
    config = sim.config
    sc = sim.scenario
    world = sim.reset()
    while True:
        objs = sim.objects(world)
        listed = objs.reactive | (objs.category == PEDESTRIAN)
        agents = {sc.agents.track_tokens[t]: [x, y, h, float(np.hypot(vx, vy))] for t, x, y, h, vx, vy, keep in zip(
            objs.track, objs.x, objs.y, objs.heading, objs.vx, objs.vy, listed) if keep}
        yield world, sim, agents
        if world.iteration + 1 >= sim.num_iterations:
            return
        tracker = PlanTracker(reference(world.time_us), world.iteration, config.lqr)
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


DEVIATION_HEADER = ("steps", "ego max [m]", "ego mean [m]", "agent records", "agent max [m]", "agent mean [m]",
                    "only golden", "only ours")


def trace_deviation(trace: list, loop) -> dict:
    """How far the closed loop `loop` (what :func:`devkit_loop` yields) lies from a devkit trace, step by step (by
    iteration): the ego's and the common agents' position errors (metres; max and mean over the records), and the
    agents (track tokens) present in only one of them. Steps the loop does not reach count in `steps_missing`."""
    ego_err: list[float] = []
    agent_err: list[float] = []
    gold_tracks: set = set()
    our_tracks: set = set()
    missing = 0
    for rec in trace:
        try:
            world, _, agents = next(loop)
        except StopIteration:
            missing += 1
            continue
        ego_err.append(float(np.hypot(world.ego[0] - rec["ego"][0], world.ego[1] - rec["ego"][1])))
        gold = rec["agents"]
        gold_tracks.update(gold)
        our_tracks.update(agents)
        common = sorted(set(gold) & set(agents))
        if common:
            a = np.array([agents[t][:2] for t in common], dtype=np.float64)
            g = np.array([gold[t][:2] for t in common], dtype=np.float64)
            agent_err.extend(np.hypot(*(a - g).T).tolist())
    e, a = np.asarray(ego_err), np.asarray(agent_err)
    r = (lambda v: round(float(v), 4))  # 0.1 mm
    return {"steps": len(ego_err), "steps_missing": missing,
            "ego_max_m": r(e.max()) if len(e) else None, "ego_mean_m": r(e.mean()) if len(e) else None,
            "agent_records": len(a), "agent_max_m": r(a.max()) if len(a) else None,
            "agent_mean_m": r(a.mean()) if len(a) else None,
            "agents_only_golden": len(gold_tracks - our_tracks), "agents_only_ours": len(our_tracks - gold_tracks)}


def check_traces(folder: GoldenFolder, source: str = "nuplan") -> CheckResult:
    """Every ``idm_traces/<token>.json`` of a golden folder against our closed loop (kind "traces"). With `source`
    "openscene" the kind is skipped and each trace's deviation from our loop on the OpenScene-built window is
    reported instead (``sections["trace_deviation"]``, ``summary["trace_deviation"]``; module docstring)."""
    res = CheckResult("traces")
    files = folder.trace_files
    if not files:
        res.skipped = f"no idm_traces/*.json in {folder.root}"
        return res
    if folder.maps_root is None:
        res.skipped = f"{folder.root}: idm_traces/ needs maps.tar.xz"
        return res
    if check_source(source) == "openscene":
        return _trace_deviations(folder, res)
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


def _trace_deviations(folder: GoldenFolder, res: CheckResult) -> CheckResult:
    res.skipped = ("source openscene: the devkit traces ran on the 20 Hz databases; their deviation from the "
                   "OpenScene-built loop is under trace_deviation (not counted as mismatches)")
    if folder.navsim_log_dir is None:
        res.skipped = f"source openscene: idm_traces/ needs navsim_logs/ in {folder.root}"
        return res
    scenes = GoldenScenes(folder, "openscene")
    deviation: dict = {}
    tables: dict = {}
    for path, data in folder.traces():
        name = f"idm_traces/{Path(path).name}"
        d = trace_deviation(data["trace"], run_openscene_devkit_loop(scenes, data["log"], data["token"]))
        deviation[name] = d
        tables[name] = (DEVIATION_HEADER, [[d["steps"] if not d["steps_missing"] else
                                            f"{d['steps']} (+{d['steps_missing']} missing)",
                                            _m(d["ego_max_m"]), _m(d["ego_mean_m"]), d["agent_records"],
                                            _m(d["agent_max_m"]), _m(d["agent_mean_m"]), d["agents_only_golden"],
                                            d["agents_only_ours"]]])
        log.info("%s (openscene): ego max %s m, agents max %s m, %d agents only in the trace, %d only ours", name,
                 d["ego_max_m"], d["agent_max_m"], d["agents_only_golden"], d["agents_only_ours"])
    res.sections["trace_deviation"] = (f"{len(deviation)} devkit traces (20 Hz databases) against the closed loop "
                                       f"on the OpenScene frames (2 Hz): deviation, not counted as mismatches",
                                       tables)
    res.summary["trace_deviation"] = deviation
    return res


def _m(v) -> str:
    return "-" if v is None else f"{v:.4f}"
