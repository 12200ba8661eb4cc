"""Hand-built scenarios on a real map: an ego and objects on given poses, lights with given states.

For tests with known answers and for users probing a planner in a constructed situation (a stopped car ahead, a red
light), without a log. The result is an ordinary :class:`~simscale_env.data.scenario.Scenario`.

>>> from simscale_env.data.synthetic import ObjectSpec, synthetic_scenario      # doctest: +SKIP
>>> sc = synthetic_scenario("us-ma-boston", ["20050", "20317"], ego_pose=(341560.0, 4701008.7, 0.0),
...                         ego_speed=10.0, objects=[ObjectSpec(341590.0, 4701008.7, 0.0)])  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .schema import TL_GREEN, TL_RED, VEHICLE
from .scenario import AgentTracks, EgoTrack, Scenario, TrafficLights


@dataclass(frozen=True)
class ObjectSpec:
    """An object at (x, y, heading) at iteration 0, moving at `speed` along its heading (0: static)."""

    x: float
    y: float
    heading: float
    speed: float = 0.0
    category: int = VEHICLE
    length: float = 4.6
    width: float = 1.9
    height: float = 1.6
    token: str | None = None


def synthetic_scenario(map_location: str, route_roadblock_ids: Sequence[str], *, ego_pose, ego_speed: float = 0.0,
                       ego_trajectory: np.ndarray | None = None, objects: Sequence[ObjectSpec] = (),
                       red_connectors: Sequence[str] = (), green_connectors: Sequence[str] = (),
                       num_iterations: int = 150, history_frames: int = 20, dt: float = 0.1,
                       token: str = "5e17e71c00000000", scenario_type: str = "synthetic",
                       t0_us: int = 1_600_000_000_000_000) -> Scenario:
    """A scenario of `num_iterations` steps (plus `history_frames` before iteration 0).

    The logged ego drives straight from `ego_pose` at `ego_speed` (history included), unless `ego_trajectory`
    [history_frames + num_iterations, 3] gives its global poses. Objects move at constant velocity. Lights hold
    their state throughout."""
    T = history_frames + num_iterations
    ts = t0_us + np.round(np.arange(T) * dt * 1e6).astype(np.int64)
    t_rel = (np.arange(T) - history_frames) * dt
    if ego_trajectory is None:
        x0, y0, h0 = (float(v) for v in ego_pose)
        poses = np.stack([x0 + np.cos(h0) * ego_speed * t_rel, y0 + np.sin(h0) * ego_speed * t_rel,
                          np.full(T, h0)], -1)
        vx = np.full(T, float(ego_speed))
    else:
        poses = np.asarray(ego_trajectory, dtype=np.float64)
        if poses.shape != (T, 3):
            raise ValueError(f"ego_trajectory must have shape [{T}, 3], got {poses.shape}")
        v = np.gradient(poses[:, :2], dt, axis=0)
        vx = np.cos(poses[:, 2]) * v[:, 0] + np.sin(poses[:, 2]) * v[:, 1]
    ax = np.gradient(vx, dt)
    yaw_rate = np.gradient(np.unwrap(poses[:, 2]), dt)
    ego = EgoTrack(timestamps_us=ts, x=poses[:, 0], y=poses[:, 1], heading=poses[:, 2], vx=vx, vy=np.zeros(T),
                   ax=ax, ay=vx * yaw_rate, yaw_rate=yaw_rate)
    M = len(objects)
    kw = {f: np.full((T, M), np.nan) for f in ("x", "y", "z", "heading", "vx", "vy", "length", "width", "height")}
    for j, o in enumerate(objects):
        c, s = np.cos(o.heading), np.sin(o.heading)
        kw["x"][:, j] = o.x + c * o.speed * t_rel
        kw["y"][:, j] = o.y + s * o.speed * t_rel
        kw["z"][:, j] = 0.0
        kw["heading"][:, j] = o.heading
        kw["vx"][:, j] = c * o.speed
        kw["vy"][:, j] = s * o.speed
        kw["length"][:, j], kw["width"][:, j], kw["height"][:, j] = o.length, o.width, o.height
    tokens = tuple(o.token or f"{0xa9e0000000000000 + j:016x}" for j, o in enumerate(objects))
    agents = AgentTracks(track_tokens=tokens, category=np.array([o.category for o in objects], dtype=np.int8),
                         valid=np.ones((T, M), dtype=bool), log_order=np.tile(np.arange(M), (T, 1)), **kw)
    ids = [int(c) for c in red_connectors] + [int(c) for c in green_connectors]
    status = np.array([TL_RED] * len(red_connectors) + [TL_GREEN] * len(green_connectors), dtype=np.int8)
    lights = TrafficLights(np.array(ids, dtype=np.int64), np.tile(status, (T, 1)).reshape(T, len(ids)))
    return Scenario(token=token, log_name="synthetic", log_path="", scenario_type=scenario_type,
                    map_location=map_location, timestamps_us=ts,
                    lidar_pc_tokens=tuple(f"{0x5e17e71c00000000 + k:016x}" for k in range(T)),
                    start_index=history_frames, ego=ego, agents=agents, traffic_lights=lights,
                    route_roadblock_ids=tuple(str(r) for r in route_roadblock_ids), goal=None)
