"""NAVSIM's metric cache, built from OpenScene frames as NAVSIM builds it (autonomousvision/navsim @ 0a380a9).

NAVSIM scores a plan at a scene token against a `MetricCache` computed from the scene's OpenScene frames
(`navsim/planning/metric_caching/metric_cache_processor.py` over `NavSimScenario`,
`navsim/planning/scenario_builder/navsim_scenario.py`), not from the 20 Hz nuPlan log:

- the **current frame is the token's frame**; the ego state there is the frame's rear-axle pose, with the frame's
  `ego_dynamic_state` velocity and acceleration as float32 (`dataclasses.Scene._build_ego_status`), no steering
  angle and no yaw rate (`navsim_scenario_utils.ego_status_to_ego_state`);
- **objects** are the 2 Hz frames' annotations (ego-frame boxes and velocities turned global with the frame's ego
  pose, `annotations_to_detection_tracks`) over 0 ... 4 s, linearly interpolated to 10 Hz per track between its
  first and last sighting (heading unwrapped, `_interpolate_gt_observation` with `StateInterpolator`); a track seen
  in a single frame is kept unchanged at **every** one of the 41 steps;
- **traffic lights** are each 2 Hz frame's statuses held for its 5 steps (`_interpolate_traffic_light_status`);
  the red connectors of the route's roadblocks are red-light polygons (`PDMObservation._get_traffic_light_geometries`);
- **log replay** (`LogReplayTrafficAgents.simulate_environment`) drops from every step the tracks whose box
  intersects the ego box at t0; nothing else is exempt (the scorer's `update_detections_tracks` clears
  `collided_track_ids`), so a red connector the ego already stands in counts;
- the **human past** for HC is the 4 frames from 1.5 s ago to now (`get_ego_past_trajectory(0, 1.5)` with
  `TrajectorySampling(num_poses=3, interval_length=0.5)`), interpolated as an `InterpolatedTrajectory` of ego states
  whose yaw rate is 0 (`EgoState.to_split_state` does not carry it).

:func:`metric_cache_scene` assembles a :class:`ScoringScene` from these; :func:`navsim_frames` picks a token's frames
out of an OpenScene log.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import logging

import numpy as np
import shapely
from scipy.interpolate import interp1d

from ..data.openscene_scenario import frame_boxes, frame_ego_dynamics, frame_ego_pose
from ..errors import UnknownTokenError
from ..sim.idm import box_corners
from ..sim.state import make_state
from ..sim.world import Simulation, ego_box
from .constants import (NAVSIM_AGENT_NAMES, NAVSIM_FRAME_INTERVAL_S, NAVSIM_HORIZON_S, NAVSIM_INTERVAL_S,
                        NAVSIM_PAST_FRAMES, NAVSIM_VEHICLE_NAME, PDM_CLOSED_LATERAL_OFFSETS)
from .epdms import ScoringScene, human_past_for_hc

log = logging.getLogger(__name__)

# how close (m) a trajectory must lie to a path for `pdm_path_start_pose` to take it as that path's (ours)
PATH_MATCH_TOLERANCE_M = 1e-3


def _normalize_angle(a):
    """navsim pdm_geometry_utils.normalize_angle."""
    return np.arctan2(np.sin(a), np.cos(a))


def navsim_frames(log_frames: list, token: str) -> tuple[list, int]:
    """(frames, index of the current frame) of the scene at `token` in an OpenScene log: the past frames NAVSIM
    reads (1.5 s) and the future ones (4 s), as far as the log has them."""
    idx = next((k for k, f in enumerate(log_frames) if f["token"] == token), None)
    if idx is None:
        where = log_frames[0].get("log_name", "OpenScene log") if log_frames else "OpenScene log"
        raise UnknownTokenError(where, f"scene token {token} not found in the OpenScene log")
    lo = max(0, idx - NAVSIM_PAST_FRAMES)
    n_future = int(round(NAVSIM_HORIZON_S / NAVSIM_FRAME_INTERVAL_S))
    return list(log_frames[lo:idx + n_future + 1]), idx - lo


def frame_ego_state(frame: dict) -> np.ndarray:
    """NAVSIM's ego state of a frame as our [11] rear-axle state: velocity and acceleration through float32 as
    NAVSIM's EgoStatus stores them, no steering, no yaw rate."""
    x, y, h = frame_ego_pose(frame)
    d = frame_ego_dynamics(frame)
    return make_state(x, y, h, velocity=d[0], velocity_y=d[1], acceleration=d[2], acceleration_y=d[3])


@dataclass(frozen=True)
class FrameObjects:
    """The annotations of one frame in global coordinates (NAVSIM's `annotations_to_detection_tracks`)."""

    tokens: tuple
    names: np.ndarray  # gt_names (vehicle, pedestrian, ...)
    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray
    length: np.ndarray
    width: np.ndarray
    vx: np.ndarray  # 0 for static objects
    vy: np.ndarray
    height: np.ndarray

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def is_agent(self) -> np.ndarray:
        return np.isin(self.names, NAVSIM_AGENT_NAMES)

    def corners(self) -> np.ndarray:
        return box_corners(self.x, self.y, self.heading, self.length, self.width)

    def select(self, idx) -> "FrameObjects":
        idx = np.asarray(idx, dtype=np.int64)
        return FrameObjects(tuple(self.tokens[i] for i in idx), self.names[idx], self.x[idx], self.y[idx],
                            self.heading[idx], self.length[idx], self.width[idx], self.vx[idx], self.vy[idx],
                            self.height[idx])


def frame_objects(frame: dict) -> FrameObjects:
    """A frame's annotations in global coordinates (`data.openscene_scenario.frame_boxes`)."""
    b = frame_boxes(frame)
    return FrameObjects(tuple(b["track"]), b["names"], b["x"], b["y"], b["heading"], b["length"], b["width"], b["vx"],
                        b["vy"], b["height"])


@dataclass(frozen=True)
class Detections:
    """Objects per 10 Hz step [T, M] (tracks in order of first sighting), as NAVSIM's interpolated detections.
    `first` holds each track as first detected (its 2 Hz sighting: NAVSIM's `unique_objects`)."""

    tokens: tuple
    names: np.ndarray
    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray
    vx: np.ndarray
    vy: np.ndarray
    length: np.ndarray
    width: np.ndarray
    valid: np.ndarray
    first: FrameObjects

    @property
    def num_steps(self) -> int:
        return self.valid.shape[0]

    def corners(self) -> np.ndarray:
        T, M = self.valid.shape
        out = np.zeros((T, M, 4, 2))
        if M:
            ti, mi = np.nonzero(self.valid)
            out[ti, mi] = box_corners(self.x[ti, mi], self.y[ti, mi], self.heading[ti, mi], self.length[mi],
                                      self.width[mi])
        return out


def interpolate_detections(frames: list[FrameObjects], horizon_s: float = NAVSIM_HORIZON_S,
                           frame_interval_s: float = NAVSIM_FRAME_INTERVAL_S,
                           step_s: float = NAVSIM_INTERVAL_S) -> Detections:
    """`MetricCacheProcessor._interpolate_gt_observation` over the frames from the current one on (2 Hz), to
    `horizon_s / step_s + 1` steps: per track, linear interpolation (scipy's interp1d, heading unwrapped then
    normalised) between its first and last sighting; a track seen once stays at its sighting at every step."""
    n_frames = int(horizon_s / frame_interval_s) + 1
    frames = list(frames[:n_frames])
    rel_t = np.arange(0, len(frames), 1, dtype=float) * frame_interval_s
    tokens: list[str] = []
    col: dict[str, int] = {}
    first_ref: list[tuple[int, int]] = []
    for k, fo in enumerate(frames):
        for i, tok in enumerate(fo.tokens):
            if tok not in col:
                col[tok] = len(tokens)
                tokens.append(tok)
                first_ref.append((k, i))
    M = len(tokens)
    first = _gather_first(frames, first_ref)
    t_steps = np.arange(0, int(horizon_s / step_s) + 1, 1, dtype=float) * step_s
    T = len(t_steps)
    x = np.zeros((T, M))
    y = np.zeros((T, M))
    h = np.zeros((T, M))
    vx = np.zeros((T, M))
    vy = np.zeros((T, M))
    valid = np.zeros((T, M), dtype=bool)
    # per track: its sightings [time, x, y, heading, vx, vy]
    sightings: list[list] = [[] for _ in range(M)]
    for k, fo in enumerate(frames):
        for i, tok in enumerate(fo.tokens):
            sightings[col[tok]].append((rel_t[k], fo.x[i], fo.y[i], fo.heading[i], fo.vx[i], fo.vy[i]))
    for m in range(M):
        st = np.array(sightings[m], dtype=np.float64)
        if st[0, 0] == st[-1, 0]:  # seen once: the initial detection at every step
            x[:, m], y[:, m], h[:, m], vx[:, m], vy[:, m] = st[0, 1:]
            valid[:, m] = True
            continue
        states = st[:, 1:].copy()
        states[:, 2] = np.unwrap(states[:, 2], axis=0)
        f = interp1d(st[:, 0], states, axis=0)
        inside = (st[0, 0] <= t_steps) & (t_steps <= st[-1, 0])
        v = f(t_steps[inside])
        x[inside, m], y[inside, m] = v[:, 0], v[:, 1]
        h[inside, m] = _normalize_angle(v[:, 2])
        vx[inside, m], vy[inside, m] = v[:, 3], v[:, 4]
        valid[inside, m] = True
    return Detections(tuple(tokens), first.names, x, y, h, vx, vy, first.length, first.width, valid, first)


def _gather_first(frames: list[FrameObjects], refs: list[tuple[int, int]]) -> FrameObjects:
    if not refs:
        e = np.zeros(0)
        return FrameObjects((), np.zeros(0, dtype=str), e, e, e, e, e, e, e, e)
    fields = ("names", "x", "y", "heading", "length", "width", "vx", "vy", "height")
    vals = {f: np.array([getattr(frames[k], f)[i] for k, i in refs]) for f in fields}
    return FrameObjects(tuple(frames[k].tokens[i] for k, i in refs), **vals)


def red_light_steps(sim: Simulation, frames: list[dict], route_lane_ids, num_steps: int) -> tuple:
    """Per 10 Hz step, (connector id, polygon) of the red connectors among `route_lane_ids`: each 2 Hz frame's
    statuses held for its steps (`_interpolate_traffic_light_status`)."""
    per_frame = int(round(NAVSIM_FRAME_INTERVAL_S / NAVSIM_INTERVAL_S))
    want = {str(i) for i in route_lane_ids}
    lanes = sim.map.lanes
    out = []
    for t in range(num_steps):
        fr = frames[min(t // per_frame, len(frames) - 1)]
        red = sorted({str(int(cid)) for cid, is_red in fr.get("traffic_lights", []) if is_red})
        out.append(tuple((cid, lanes[cid].polygon) for cid in red if cid in want and cid in lanes))
    return tuple(out)


def human_past_states(past_frames: list[dict]) -> np.ndarray | None:
    """The human past HC prepends (`PDMScorer._calculate_history_comfort` over the cache's
    `past_human_trajectory`): the frames' ego states interpolated every 0.1 s, yaw rate 0."""
    if len(past_frames) < 2:
        return None
    states = np.stack([frame_ego_state(f) for f in past_frames])
    times = np.array([int(f["timestamp"]) for f in past_frames], dtype=np.int64)
    return human_past_for_hc(states, times)


def metric_cache_scene(sim: Simulation, frames: list[dict], current: int, *, ego: np.ndarray | None = None,
                       centerline: np.ndarray | None = None, route_roadblock_ids=None, radius: float = 100.0,
                       detections: Detections | None = None) -> ScoringScene:
    """The log-replay scoring scene of NAVSIM's metric cache at `frames[current]` (see the module docstring).

    `sim` supplies the map; `ego` defaults to the frame's ego state. `route_roadblock_ids`: PDM-Closed's route, from
    which NAVSIM takes the on-route lanes (DDC: `metric_cache.route_lane_ids`) and the centreline (EP, LK): the frame's
    route after PDM-Closed's first-iteration route correction (`experts.route_correction`); default the frame's route
    uncorrected. The red lights always come from the frame's own route (`_load_route_dicts` of the scenario's
    roadblocks). `centerline` overrides the centreline."""
    from .pseudo_sim import _map_layers, near_map_indices

    m = sim.map
    ego = frame_ego_state(frames[current]) if ego is None else np.asarray(ego, dtype=np.float64)
    T = int(round(NAVSIM_HORIZON_S / NAVSIM_INTERVAL_S)) + 1
    future = frames[current:]
    det = detections if detections is not None else interpolate_detections([frame_objects(f) for f in future])
    route_rb = [str(r) for r in frames[current].get("roadblock_ids", sim.scenario.route_roadblock_ids)]
    light_lanes = m.route_lane_ids(list(dict.fromkeys(r for r in route_rb if r in m.roadblocks)))
    pdm_rb = route_rb if route_roadblock_ids is None else [str(r) for r in route_roadblock_ids]
    pdm_rb = list(dict.fromkeys(r for r in pdm_rb if r in m.roadblocks))
    route_ids = frozenset(m.route_lane_ids(pdm_rb))
    corners = det.corners()
    ego_poly = shapely.Polygon(ego_box(ego, sim.config.vehicle))
    collided = frozenset()
    if len(det.tokens) and det.valid[0].any():
        idx = np.nonzero(det.valid[0])[0]
        hit = shapely.intersects(shapely.polygons(corners[0, idx]), ego_poly)
        collided = frozenset(det.tokens[i] for i in idx[hit])
    layers = _map_layers(m)
    near = near_map_indices(m, ego_box(ego, sim.config.vehicle).mean(axis=0), radius)
    if centerline is None:
        cl = np.asarray(m.route_centerline(pdm_rb, (float(ego[0]), float(ego[1]), float(ego[2]))).xy)
    else:
        cl = np.asarray(centerline, dtype=np.float64)
    past = human_past_states(frames[max(0, current - NAVSIM_PAST_FRAMES):current + 1])
    first = det.first
    return ScoringScene(
        map_ids=tuple(layers["ids"][near]), map_types=tuple(layers["types"][near]),
        map_polygons=tuple(layers["polys"][near]), route_lane_ids=route_ids, centerline=cl,
        obj_tokens=det.tokens, obj_is_agent=first.is_agent, obj_heading=first.heading,
        obj_speed=np.hypot(first.vx, first.vy), obj_corners=corners, obj_valid=det.valid.copy(),
        red_light_polygons=red_light_steps(sim, future, light_lanes, T), collided_track_ids=collided,
        human_past_states=past, name=str(frames[current]["token"]))


def pdm_path_start_pose(sim: Simulation, ego: np.ndarray, trajectory: np.ndarray,
                        offsets=PDM_CLOSED_LATERAL_OFFSETS, route_roadblock_ids=None) -> np.ndarray:
    """The t0 pose of a PDM-Closed trajectory whose later poses are `trajectory` [T, 3] (global): PDM-Closed's
    trajectory starts at the ego's rear axle projected on the path it planned on (pdm_generator.py
    `_initialize_states`: `path.interpolate(linestring.project(ego))`), the route centreline or one of its parallels
    (`parallel_discrete_path`) of `route_roadblock_ids` (PDM-Closed's route; default the scenario's). The path is
    the one holding `trajectory` (within PATH_MATCH_TOLERANCE_M); if none does, the ego's pose is returned (and
    logged)."""
    ego = np.asarray(ego, dtype=np.float64)
    m = sim.map
    route = sim.scenario.route_roadblock_ids if route_roadblock_ids is None else route_roadblock_ids
    rbs = [r for r in dict.fromkeys(str(r) for r in route) if r in m.roadblocks]
    lanes = m.route_lanes(rbs, (float(ego[0]), float(ego[1]), float(ego[2]))) if rbs else []
    if not lanes:
        log.warning("%s: no route lanes; the reference starts at the ego", sim.scenario.token)
        return ego[:3].copy()
    xy_parts, h_parts = [], []
    for lid in lanes:  # the lanes' discrete paths joined as they are (_get_discrete_centerline)
        b = np.asarray(m.lanes[lid].baseline.xy, dtype=np.float64)
        b = b.T if b.shape[0] == 2 and b.shape[1] != 2 else b
        seg = np.diff(b, axis=0)
        h = np.arctan2(seg[:, 1], seg[:, 0])
        xy_parts.append(b)
        h_parts.append(np.append(h, h[-1]))
    xy, hv = np.concatenate(xy_parts), np.concatenate(h_parts)
    pts = shapely.points(np.asarray(trajectory, dtype=np.float64)[:, :2])
    best = None
    for off in offsets:
        th = hv + np.pi / 2
        pxy = np.stack([xy[:, 0] + np.cos(th) * off, xy[:, 1] + np.sin(th) * off], -1)
        line = shapely.LineString(pxy)
        d = float(shapely.distance(line, pts).max())
        if best is None or d < best[0]:
            best = (d, pxy, line)
    d, pxy, line = best
    if d > PATH_MATCH_TOLERANCE_M:
        log.info("%s: the trajectory lies %.3g m from every PDM-Closed path; the reference starts at the ego",
                    sim.scenario.token, d)
        return ego[:3].copy()
    # PDMPath.interpolate: progress clipped to [1e-5, length], interp1d over the vertices, heading unwrapped
    prog = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pxy, axis=0).T))])
    q = float(np.clip(line.project(shapely.Point(ego[0], ego[1])), 1e-5, prog[-1]))
    hi = int(np.clip(np.searchsorted(prog, q, side="left"), 1, len(prog) - 1))
    lo = hi - 1
    w = (q - prog[lo]) / (prog[hi] - prog[lo])
    hu = np.unwrap(hv)
    out = np.array([pxy[lo, 0] + w * (pxy[hi, 0] - pxy[lo, 0]), pxy[lo, 1] + w * (pxy[hi, 1] - pxy[lo, 1]),
                    hu[lo] + w * (hu[hi] - hu[lo])])
    out[2] = _normalize_angle(out[2])
    return np.nan_to_num(out, nan=0.0)


class NavsimReactiveTraffic:
    """NAVSIM's reactive traffic at one frame
    (`NavsimIDMTrafficAgents(NavsimIDMAgents(10, 1.0, 1.5, 1.0, 2.0, [], add_open_loop_parked_vehicles=True,
    idm_snap_threshold=3.0))`, navsim/traffic_agents_policies/navsim_IDM_traffic_agents.py): what does not depend on
    the ego's plan is prepared once; :meth:`scene` runs the agents around one simulated ego trajectory.

    - step 0 holds the current frame's objects as annotated (`metric_cache.current_tracked_objects`), overlapping the
      ego or not (nothing is exempt);
    - the vehicles of the current frame become IDM agents (`idm.spawn_agents` with `idm.NAVSIM_IDM`: snap threshold
      3 m, no open-loop types, the ego box of t0 as occupied) and step 0.1 s at a time; at step t they see the ego of
      step t - 1 with NAVSIM's footprint, a box *centred* on the rear axle (`build_ego_state_from_simulated_ego_states`
      builds `CarFootprint(center=rear axle)`), and no traffic lights (the metric cache has none, so no route
      extension and no stop lines);
    - vehicles that are no active agent at step t are shown at their current pose where NAVSIM's
      `add_open_loop_parked_vehicles` rule keeps them (`idm.navsim_parked_vehicles`, `idm.parked_overlaps`);
    - every other object type replays the interpolated log (`metric_cache.future_tracked_objects`).

    `base` is the log-replay metric-cache scene of the same frame (map, route, lights, human past)."""

    def __init__(self, sim: Simulation, base: ScoringScene, current: FrameObjects, future: Detections,
                 ego: np.ndarray, *, idm_config=None, step_s: float = NAVSIM_INTERVAL_S):
        """`current`: the objects at t0; `future`: the objects over the 41 steps (only the non-vehicles are read);
        `ego`: the ego state at t0."""
        from ..sim import idm as IDM

        self.sim, self.base, self.step_s = sim, base, step_s
        self.config = IDM.NAVSIM_IDM if idm_config is None else idm_config
        cfg = self.config
        m = sim.map
        self.ego0 = np.asarray(ego, dtype=np.float64)
        cur = self.cur = current
        self.det = future
        vsel = self.vsel = np.nonzero(cur.names == NAVSIM_VEHICLE_NAME)[0]
        boxes = {"x": cur.x[vsel], "y": cur.y[vsel], "heading": cur.heading[vsel], "vx": cur.vx[vsel],
                 "vy": cur.vy[vsel], "length": cur.length[vsel], "width": cur.width[vsel],
                 "height": cur.height[vsel], "track": vsel}
        e0 = self.ego0
        self.agents0 = IDM.spawn_agents(m, boxes, ego_box(e0, sim.config.vehicle)[None], np.zeros((0, 4, 2)),
                                        float(np.hypot(e0[3], e0[4])), cfg)
        self.parked_rule = np.zeros(len(vsel), dtype=bool)
        if cfg.add_open_loop_parked_vehicles and len(vsel):
            nobody = replace(self.agents0, track=np.zeros(0, dtype=np.int64))
            self.parked_rule = IDM.navsim_parked_vehicles(m, boxes, nobody, cfg.snap_threshold)
        self.cur_corners = cur.corners()
        self.det_corners = future.corners()
        self.non_vehicle = future.names != NAVSIM_VEHICLE_NAME

    @staticmethod
    def from_frames(sim: Simulation, frames: list[dict], current: int, base: ScoringScene, *,
                    ego: np.ndarray | None = None, detections: Detections | None = None,
                    **kw) -> "NavsimReactiveTraffic":
        """At `frames[current]` of an OpenScene log, as NAVSIM's metric cache holds it."""
        det = detections if detections is not None else interpolate_detections(
            [frame_objects(f) for f in frames[current:]])
        ego = frame_ego_state(frames[current]) if ego is None else ego
        return NavsimReactiveTraffic(sim, base, frame_objects(frames[current]), det, ego, **kw)

    @staticmethod
    def from_world(sim: Simulation, world, base: ScoringScene, num_steps: int = 41,
                   **kw) -> "NavsimReactiveTraffic":
        """At a simulation's world state: the objects the world shows now (its IDM agents and replayed objects in
        a reactive world) are NAVSIM's current frame; the other object types replay the scenario's log at its
        own 10 Hz steps (NAVSIM interpolates its 2 Hz frames)."""
        from ..data.schema import CATEGORIES, VEHICLE

        ag = sim.scenario.agents
        names = np.asarray(CATEGORIES)
        objs = sim.objects(world)
        tokens = tuple(ag.track_tokens[int(t)] for t in objs.track)
        f64 = (lambda a: np.asarray(a, dtype=np.float64))
        cur = FrameObjects(tokens, names[np.asarray(objs.category, dtype=np.int64)], f64(objs.x), f64(objs.y),
                           f64(objs.heading), f64(objs.length), f64(objs.width), np.nan_to_num(f64(objs.vx)),
                           np.nan_to_num(f64(objs.vy)), f64(objs.height))
        last = sim.num_iterations - 1
        frames = sim.frame(0) + np.minimum(world.iteration + np.arange(num_steps), last)
        valid = ag.valid[frames] & (ag.category != VEHICLE)[None]
        cols = np.nonzero(valid.any(axis=0))[0]
        first = np.argmax(valid[:, cols], axis=0)
        order = np.lexsort((cols, first))
        cols, first = cols[order], first[order]
        v = valid[:, cols]
        fr0 = frames[first]
        get = (lambda a: np.where(v, f64(a[frames][:, cols]), 0.0))
        vx, vy = np.nan_to_num(get(ag.vx)), np.nan_to_num(get(ag.vy))
        firsts = FrameObjects(tuple(ag.track_tokens[int(c)] for c in cols), names[ag.category[cols].astype(np.int64)],
                              f64(ag.x[fr0, cols]), f64(ag.y[fr0, cols]), f64(ag.heading[fr0, cols]),
                              f64(ag.length[fr0, cols]), f64(ag.width[fr0, cols]),
                              np.nan_to_num(f64(ag.vx[fr0, cols])), np.nan_to_num(f64(ag.vy[fr0, cols])),
                              f64(ag.height[fr0, cols]))
        det = Detections(firsts.tokens, firsts.names, get(ag.x), get(ag.y), get(ag.heading), vx, vy,
                         firsts.length, firsts.width, v, firsts)
        return NavsimReactiveTraffic(sim, base, cur, det, world.ego, **kw)

    def scene(self, ego_states: np.ndarray) -> ScoringScene:
        """The scene NAVSIM scores a plan in whose simulated ego trajectory is `ego_states` [41, 11]."""
        from ..sim import idm as IDM

        m, cfg, cur, det, vsel = self.sim.map, self.config, self.cur, self.det, self.vsel
        veh = self.sim.config.vehicle
        ego_states = np.asarray(ego_states, dtype=np.float64)
        T = ego_states.shape[0]
        agents = self.agents0
        no_objects = np.zeros((0, 4, 2))
        steps: list[tuple[list, np.ndarray]] = [(list(cur.tokens), self.cur_corners)]
        first: dict[str, tuple] = {tok: (cur.names[i], cur.heading[i], np.hypot(cur.vx[i], cur.vy[i]))
                                   for i, tok in enumerate(cur.tokens)}
        for t in range(1, T):
            e = ego_states[t - 1]
            foot = box_corners(e[0], e[1], e[2], veh.length, veh.width)[0]  # NAVSIM's footprint centred on the axle
            agents = IDM.step_agents(m, agents, ego_corners=foot, ego_center=e[:2],
                                     ego_speed=float(np.hypot(e[3], e[4])), ego_heading=float(e[2]),
                                     object_corners=no_objects, green_ids=(), red_ids=(), dt=self.step_s, config=cfg)
            alive = np.nonzero(agents.alive)[0]
            toks = [cur.tokens[int(k)] for k in agents.track[alive]]
            corners = [box_corners(agents.pose[alive, 0], agents.pose[alive, 1], agents.pose[alive, 2],
                                   agents.length[alive], agents.width[alive])]
            if self.parked_rule.any():
                active = set(agents.track[alive].tolist())
                cand = np.array([k for k in np.nonzero(self.parked_rule)[0] if int(vsel[k]) not in active],
                                dtype=np.int64)
                if len(cand):
                    pc = self.cur_corners[vsel[cand]]
                    keep = ~IDM.parked_overlaps(pc, agents)
                    toks += [cur.tokens[int(vsel[k])] for k in cand[keep]]
                    corners.append(pc[keep])
            nv = np.nonzero(self.non_vehicle & det.valid[t])[0] if t < det.num_steps else np.zeros(0, np.int64)
            toks += [det.tokens[i] for i in nv]
            corners.append(self.det_corners[t, nv] if len(nv) else no_objects)
            for i in nv:
                tok = det.tokens[i]
                if tok not in first:
                    first[tok] = (det.names[i], det.heading[t, i], np.hypot(det.vx[t, i], det.vy[t, i]))
            steps.append((toks, np.concatenate(corners).reshape(-1, 4, 2)))
        tokens: list[str] = []
        col: dict[str, int] = {}
        for toks, _ in steps:
            for tok in toks:
                if tok not in col:
                    col[tok] = len(tokens)
                    tokens.append(tok)
        M = len(tokens)
        obj_corners = np.zeros((T, M, 4, 2))
        valid = np.zeros((T, M), dtype=bool)
        for t, (toks, c) in enumerate(steps):
            if toks:
                idx = np.array([col[k] for k in toks], dtype=np.int64)
                obj_corners[t, idx] = c
                valid[t, idx] = True
        names = np.array([first[k][0] for k in tokens], dtype=str) if M else np.zeros(0, dtype=str)
        return replace(self.base, obj_tokens=tuple(tokens), obj_is_agent=np.isin(names, NAVSIM_AGENT_NAMES),
                       obj_heading=np.array([first[k][1] for k in tokens], dtype=np.float64),
                       obj_speed=np.array([first[k][2] for k in tokens], dtype=np.float64), obj_corners=obj_corners,
                       obj_valid=valid, collided_track_ids=frozenset(), _cache=self.base._cache)
