"""nuplan-devkit's own closed loop (IDM agents + LQR tracking the logged future), reproduced step by step.

tests/fixtures/golden/devkit_tiny/closed_loop_log_future_idm_agents.json is the devkit's trace of its tagged scenario
(settings in the README beside it): the same agents per step and every ego and agent state within 1e-6.
"""

import json

import numpy as np
import pytest

from simscale_env.data import LogDB, extract_scenario
from simscale_env.data.schema import PEDESTRIAN
from simscale_env.map import load_map
from simscale_env.sim import LQRConfig, PlanTracker, SimConfig, Simulation
from simscale_env.sim.idm import DEVKIT_OPEN_LOOP_TYPES, IDMConfig
from simscale_env.sim.plans import interpolate_poses
from tests.conftest import DEVKIT_TINY, TINY_TAG


def log_future_reference(db, ts_us, horizon_samples=16, step_rows=10, dt_us=100_000):
    """LogFuturePlanner(num_poses=16, future_time_horizon=8.0): the logged state now and every 0.5 s for 8 s, as an
    InterpolatedTrajectory sampled every 0.1 s from its start (tracker_utils.get_interpolated_reference_trajectory_poses)."""
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


def test_reproduces_devkit_trace(tiny_log, tiny_maps):
    trace = json.loads((DEVKIT_TINY / "closed_loop_log_future_idm_agents.json").read_text())
    db = LogDB(tiny_log)
    sc = extract_scenario(db, TINY_TAG)
    m = load_map(sc.map_location, tiny_maps)
    cfg = SimConfig(idm=IDMConfig(open_loop_types=DEVKIT_OPEN_LOOP_TYPES, snap_threshold=None),
                    lqr=LQRConfig(jerk_regularizer="nuplan"),
                    replay_unspawned_vehicles=False)
    sim = Simulation(sc, m, cfg)
    world = sim.reset()
    worst = 0.0
    assert len(trace) == 150
    for rec in trace:
        assert rec["it"] == world.iteration and rec["t_us"] == world.time_us
        e = world.ego
        mine = [e[0], e[1], e[2], e[3], e[5], e[7]]
        worst = max(worst, float(np.max(np.abs(np.array(rec["ego"]) - mine))))
        objs = sim.objects(world)
        listed = (objs.reactive | (objs.category == PEDESTRIAN))  # agents of the devkit observation
        got = {sc.agents.track_tokens[t]: [x, y, h, np.hypot(vx, vy)] for t, x, y, h, vx, vy, keep in zip(
            objs.track, objs.x, objs.y, objs.heading, objs.vx, objs.vy, listed) if keep}
        assert set(got) == set(rec["agents"]), rec["it"]
        for tok, val in rec["agents"].items():
            worst = max(worst, float(np.max(np.abs(np.array(val) - np.array(got[tok])))))
        if world.iteration + 1 < sim.num_iterations:
            tracker = PlanTracker(log_future_reference(db, world.time_us), world.iteration, cfg.lqr)
            world = sim.step(world, tracker=tracker)
    assert worst < 1e-6, worst
