"""PDM-Closed (Dauner et al., tuplan_garage), as NAVSIM runs it to build its metric cache.

Mirrors navsim/planning/simulation/planner/pdm_planner (NAVSIM @ 0a380a9):

- route (`pdm_closed_planner.py`, `utils/route_utils.py`): at the first call the route is repaired from the ego pose
  (`route_roadblock_correction`, :mod:`.route_correction`: an ego waiting before the route's first roadblock gets its
  own roadblock prepended) and kept, with its lanes, for scoring as NAVSIM's metric cache keeps it;
- centreline (`abstract_pdm_planner.py`): starting lane = the on-route lane under the rear axle with the smallest
  heading error (else the closest on-route lane); NAVSIM's Dijkstra over on-route lanes to the route roadblock 29
  after the starting lane's (:func:`.route_correction.centerline_lanes`); the lanes' discrete paths joined as they are
  (junction vertices twice, each vertex with the heading towards its successor, as the devkit's `discrete_path`),
  interpolated as `PDMPath` does (scipy's interp1d over progress, heading unwrapped); kept from the first call, as
  the planner does from its first iteration;
- proposals (`abstract_pdm_closed_planner.py`, `pdm_proposal.py`): the centreline and its parallels at -1 m / +1 m,
  times 5 IDM policies with target speeds 0.2 ... 1.0 x the starting lane's speed limit (15 m/s without one);
- forecast (`observation/pdm_observation.py`, `pdm_object_manager.py`): objects within 100 m of the ego centre (the
  map radius), of those the nearest 50 vehicles, 25 pedestrians,
  10 bicycles and 50 static objects, agents at constant velocity along their heading (flipped when reversing),
  sampled every 0.2 s; red-light polygons of on-route connectors; objects touching the ego are ignored from then on;
- unrolling (`proposal/pdm_generator.py`, `batch_idm_policy.py`): IDM (min gap 1 m, headway 1.5 s, a_max 1.5,
  b 3.0, exponent 10) along each path; the leader is the nearest object (box distance from the ego box) ahead in
  progress among those meeting the path corridor (half the ego width, square caps, max target speed x 5 s long),
  refreshed every second step, velocity projected on the ego heading (0 for static objects and red lights); the
  quirks are kept: at the first step the leader array is still zero (the IDM brakes), and the leader array is
  shared across a path's proposals (a free proposal keeps the previous one's leader velocity);
- selection: the 15 proposals are tracked by the LQR + bicycle and scored by the EPDMS engine against the forecast
  (EP jointly, HC = 1 without human history); the argmax is chosen. tuplan's emergency brake is an option.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely.ops import substring
from numba import njit

from ..data.schema import AGENT_CATEGORIES, BICYCLE, PEDESTRIAN, VEHICLE
from ..geometry import global_to_local, wrap_angle
from ..metrics.constants import ScorerConfig
from ..metrics.epdms import PlanScores, ScoringScene, score_states
from ..metrics.pseudo_sim import MAP_RADIUS, _map_layers, near_map_indices
from ..sim.idm import box_corners
from ..sim.lqr import LQRConfig, track_references
from ..sim.state import ACCELERATION_X, HEADING, VELOCITY_X, VELOCITY_Y, X, Y
from ..sim.vehicle import PACIFICA, VehicleParameters
from ..sim.world import Simulation, WorldState, ego_box
from .route_correction import centerline_lanes, discrete_path, route_roadblock_correction

RED_LIGHT = "red_light"


@dataclass(frozen=True)
class PDMClosedConfig:
    # Sources. navsim/planning/metric_caching/metric_cache_processor.py (PDMClosedPlanner and its BatchIDMPolicy
    # arguments): lateral offsets, speed-limit fractions, fallback velocity, min gap, headway, accel/decel max; the
    # exponent 10 is hard-coded in proposal/batch_idm_policy.py BatchIDMPolicy.propagate; proposal sampling
    # 40 x 0.1 s and trajectory sampling 50 x 0.1 s as there; leader refresh every 2 steps (proposal/pdm_generator.py
    # leading_agent_update_rate); occupancy every 0.2 s (observation/pdm_observation.py observation_sample_res);
    # search depth 30 (abstract_pdm_planner.py _get_discrete_centerline); object limits
    # (observation/pdm_object_manager.py MAX_DYNAMIC_OBJECTS, MAX_STATIC_OBJECTS); brake: tuplan pdm_emergency_brake.py
    lateral_offsets: tuple[float, ...] = (-1.0, 1.0)
    speed_limit_fractions: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
    fallback_target_velocity: float = 15.0  # [m/s] when the lane has no speed limit
    min_gap_to_lead_agent: float = 1.0
    headway_time: float = 1.5
    accel_max: float = 1.5
    decel_max: float = 3.0
    acceleration_exponent: float = 10.0
    proposal_poses: int = 40  # 4 s at 0.1 s
    trajectory_poses: int = 50  # NAVSIM metric cache: 40 + 1 s for TTC (sets the corridor length)
    interval_s: float = 0.1
    leading_agent_update_rate: int = 2
    observation_sample_res: int = 2
    map_radius: float = MAP_RADIUS
    search_depth: int = 30  # roadblocks ahead for the centreline's Dijkstra
    max_vehicles: int = 50
    max_pedestrians: int = 25
    max_bicycles: int = 10
    max_static: int = 50
    # route_utils.py route_roadblock_correction at the first call (pdm_closed_planner.py compute_planner_trajectory);
    # False: no repair, the scenario's route (deduplicated) as it is
    route_correction: bool = True
    emergency_brake: bool = False  # tuplan's PDMEmergencyBrake (NAVSIM does not call it)
    brake_time_to_infraction_s: float = 2.0
    brake_max_ego_speed: float = 5.0
    brake_accel_range: tuple[float, float] = (-4.05, 2.40)
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    lqr: LQRConfig = field(default_factory=LQRConfig)


@dataclass(frozen=True, eq=False)
class ExpertPlan:
    """A pseudo-expert's output: `poses` [8, 3] in the current rear-axle frame every 0.5 s (the env's action format),
    `trajectory` [41, 3] global rear-axle poses every 0.1 s (t = 0 the current pose), `states` [41, 11] that
    trajectory tracked by the LQR + bicycle, and what produced it."""

    poses: np.ndarray
    trajectory: np.ndarray
    states: np.ndarray
    source: str
    scores: PlanScores | None = None
    index: int = -1
    info: dict = field(default_factory=dict)


def plan_from_trajectory(trajectory: np.ndarray, origin: np.ndarray, step: int = 5) -> np.ndarray:
    """Poses every `step` samples (t > 0) of a global trajectory [T, 3], in the frame of `origin` (x, y, heading)."""
    return global_to_local(trajectory[step::step], origin[:3])


@dataclass(frozen=True, eq=False)
class _Path:
    """PDMPath (utils/pdm_path.py): a discrete path (x, y, heading) interpolated linearly in progress, as scipy's
    interp1d does it over the vertices as given (junction vertices of consecutive lanes appear twice), heading
    unwrapped along the path. `heading` keeps the vertices' own headings (the lateral offsets use them)."""

    xy: np.ndarray
    heading: np.ndarray
    heading_unwrapped: np.ndarray
    progress: np.ndarray
    geom: shapely.LineString
    _xyh: np.ndarray = field(default=None, repr=False)  # [N, 3] x, y, unwrapped heading

    def __post_init__(self):
        if self._xyh is None:
            object.__setattr__(self, "_xyh", np.column_stack([self.xy, self.heading_unwrapped]))

    @staticmethod
    def of(xy: np.ndarray, heading: np.ndarray) -> "_Path":
        xy = np.ascontiguousarray(xy, dtype=np.float64)
        heading = np.asarray(heading, dtype=np.float64)
        progress = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))])
        return _Path(xy, heading, np.unwrap(heading), progress, shapely.linestrings(xy))

    @property
    def length(self) -> float:
        return float(self.progress[-1])

    def interpolate(self, progress) -> np.ndarray:
        """(x, y, heading) at `progress` clipped to [1e-5, length] (PDMPath.interpolate)."""
        q = np.asarray(progress, dtype=np.float64)
        out = _interp_path(np.ascontiguousarray(q.reshape(-1)), self.progress, self._xyh)
        if not np.isfinite(out).all():  # only on a degenerate path; PDMPath sets NaN to 0
            out = np.nan_to_num(out, nan=0.0)
        return out.reshape(q.shape + (3,))

    def project(self, points) -> np.ndarray:
        """shapely.line_locate_point(self.geom, points) (GEOS's LengthIndexedLine.project), computed as GEOS does
        (`_geos_project`) without a shapely call per point set."""
        pts = np.ascontiguousarray(np.asarray(points, dtype=np.float64).reshape(-1, 2))
        return _geos_project(self.xy, pts)

    def substring(self, a: float, b: float) -> shapely.LineString:
        a, b = float(np.clip(a, 0.0, self.length)), float(np.clip(b, 0.0, self.length))
        inside = (a <= self.progress) & (self.progress <= b)
        if inside.sum() > 1:
            return shapely.LineString(self.xy[inside])
        return substring(self.geom, a, b)


@dataclass(frozen=True, eq=False)
class Forecast:
    """The constant-velocity observation: objects (tokens, first-seen attributes) and their boxes per occupancy
    sample [S, M, 4, 2], plus the red-light polygons (constant)."""

    tokens: tuple
    is_agent: np.ndarray
    heading: np.ndarray
    speed: np.ndarray
    corners: np.ndarray  # [S, M, 4, 2]
    red_ids: tuple
    red_polygons: tuple
    sample_res: int

    _cache: dict = field(default_factory=dict, repr=False)

    def sample(self, time_idx: int) -> int:
        return min(time_idx // self.sample_res, self.corners.shape[0] - 1)

    def restrict(self, bounds) -> None:
        """Build polygons only for objects whose boxes come within `bounds` (x0, y0, x1, y1) over the horizon; the
        others are None (they cannot meet a corridor inside those bounds)."""
        if len(self.tokens):
            lo = self.corners.min(axis=(0, 2))
            hi = self.corners.max(axis=(0, 2))
            self._cache["relevant"] = ((hi[:, 0] >= bounds[0]) & (lo[:, 0] <= bounds[2]) & (hi[:, 1] >= bounds[1])
                                       & (lo[:, 1] <= bounds[3]))

    def occupancy(self, s: int) -> tuple[np.ndarray, list, np.ndarray]:
        """(polygons incl. red lights, tokens, centroids) of occupancy sample s (cached)."""
        if s not in self._cache:
            objs = np.full(len(self.tokens), None, dtype=object)
            rel = self._cache.get("relevant", np.ones(len(self.tokens), dtype=bool))
            if rel.any():
                objs[rel] = shapely.polygons(self.corners[s][rel])
            polys = list(objs) + list(self.red_polygons)
            arr = np.array(polys, dtype=object)
            tokens = list(self.tokens) + [f"{RED_LIGHT}_{r}" for r in self.red_ids]
            self._cache[s] = (arr, tokens, shapely.centroid(arr) if len(arr) else arr)
        return self._cache[s]


def forecast_objects(sim: Simulation, world: WorldState, route_lane_ids, config: PDMClosedConfig) -> Forecast:
    """PDMObservation.update from the current detections."""
    o = sim.objects(world)
    ag = sim.scenario.agents
    ego_c = ego_box(world.ego).mean(axis=0)
    keep = []
    dxy = np.zeros((len(o), 2))
    limits = {VEHICLE: config.max_vehicles, PEDESTRIAN: config.max_pedestrians, BICYCLE: config.max_bicycles}
    dist = np.hypot(o.x - ego_c[0], o.y - ego_c[1])
    is_agent = np.isin(o.category, np.asarray(AGENT_CATEGORIES))
    # pdm_observation.py _get_object_manager: objects farther than the map radius from the ego centre are dropped
    near = dist <= config.map_radius
    for cat, k in limits.items():
        idx = np.nonzero((o.category == cat) & near)[0]
        keep.extend(idx[np.argsort(dist[idx], kind="stable")][:k].tolist())
    static = np.nonzero(~is_agent & near)[0]
    keep_static = static[np.argsort(dist[static], kind="stable")][:config.max_static]
    speed = np.hypot(o.vx, o.vy)
    vel_angle = np.arctan2(o.vy, o.vx)
    forward = np.abs(wrap_angle(o.heading - vel_angle)) < np.pi / 2
    th = np.where(forward, o.heading, wrap_angle(o.heading + np.pi))
    dxy[:, 0] = np.cos(th) * speed
    dxy[:, 1] = np.sin(th) * speed
    order = np.concatenate([keep_static, np.asarray(keep, dtype=np.int64)]).astype(np.int64)
    c0 = box_corners(o.x[order], o.y[order], o.heading[order], o.length[order], o.width[order])
    moving = is_agent[order]
    S = len(range(0, config.trajectory_poses + config.observation_sample_res, config.observation_sample_res))
    corners = np.empty((S, len(order), 4, 2))
    for k in range(S):
        dt = float(k * config.observation_sample_res) * config.interval_s
        corners[k] = c0 + np.where(moving[:, None, None], dt * dxy[order][:, None, :], 0.0)
    red = sim.red_light_polygons(world.iteration, route_lane_ids)
    red_ids = tuple(sorted(red))
    return Forecast(tuple(ag.track_tokens[t] for t in o.track[order]), moving, o.heading[order].copy(),
                    np.where(moving, speed[order], 0.0), corners, red_ids, tuple(red[i] for i in red_ids),
                    config.observation_sample_res)


class PDMClosedPlanner:
    """PDM-Closed for one scenario (its map and route). Keeps, as the planner does, the centreline of its first call
    and the tracks ever found touching the ego. `plan(sim, world)` returns an :class:`ExpertPlan`."""

    def __init__(self, config: PDMClosedConfig = PDMClosedConfig(), vehicle: VehicleParameters = PACIFICA):
        self.config = config
        self.vehicle = vehicle
        self.reset()

    def reset(self) -> None:
        self._centerline: _Path | None = None
        self._route_rbs: list[str] | None = None
        self._collided: set[str] = set()

    # ------------------------------------------------------------------ route
    def _starting_lane(self, sim: Simulation, ego: np.ndarray, route_lanes: list[str]) -> str:
        m = sim.map
        on_route = set(route_lanes)
        inside = [lid for lid in m.lanes_at(ego[X], ego[Y]) if lid in on_route]
        if inside:
            errs = []
            for lid in inside:
                bl = m.lanes[lid].baseline
                k = int(np.argmin(np.hypot(bl.xy[:, 0] - ego[X], bl.xy[:, 1] - ego[Y])))
                # _get_intersecting_lanes: the heading of the nearest vertex of the lane's discrete path
                errs.append(abs(float(wrap_angle(discrete_path(bl.xy)[1][k] - ego[HEADING]))))
            return inside[int(np.argmin(errs))]
        poly = shapely.Polygon(ego_box(ego, self.vehicle))
        centre = shapely.Point(*poly.centroid.coords[0])
        best, best_d = None, np.inf
        for lid in route_lanes:
            lp = m.lanes[lid].polygon
            if lp.contains(centre):
                return lid
            d = lp.distance(poly)
            if d < best_d:
                best, best_d = lid, d
        return best

    def _paths(self, sim: Simulation, ego: np.ndarray, start_lane: str, route_rbs) -> list[_Path]:
        if self._centerline is None:
            lanes = centerline_lanes(sim.map, route_rbs, start_lane, self.config.search_depth)
            # the lanes' discrete paths joined as they are (abstract_pdm_planner.py _get_discrete_centerline)
            parts = [discrete_path(sim.map.lanes[lid].baseline.xy) for lid in lanes]
            self._centerline = _Path.of(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        cl = self._centerline
        paths = [cl]
        h = cl.heading
        for off in self.config.lateral_offsets:  # pdm_geometry_utils.py parallel_discrete_path
            th = h + np.pi / 2
            xy = np.stack([cl.xy[:, 0] + np.cos(th) * off, cl.xy[:, 1] + np.sin(th) * off], -1)
            paths.append(_Path.of(xy, h))
        return paths

    # ------------------------------------------------------------------ plan
    def plan(self, sim: Simulation, world: WorldState) -> ExpertPlan:
        job = self._prepare(sim, world)
        proposals = _unroll_jobs([job], self.config)[0]
        states = track_references(job.ego, proposals, self.config.proposal_poses, self.config.lqr)
        return self._finish(job, proposals, states)

    def _prepare(self, sim: Simulation, world: WorldState) -> "_Job":
        """Everything before the proposals' unrolling: route, paths, targets, forecast, corridors and their
        candidates (this planner's route, centreline and ignored tracks updated as `plan` does)."""
        cfg = self.config
        ego = np.asarray(world.ego, dtype=np.float64)
        m = sim.map
        if self._route_rbs is None:  # the route of the first call, repaired from the ego's pose as NAVSIM does
            route_rbs = [r for r in dict.fromkeys(sim.scenario.route_roadblock_ids) if r in m.roadblocks]
            if cfg.route_correction:
                route_rbs = route_roadblock_correction(m, ego[:3], route_rbs)
            self._route_rbs = route_rbs
        route_rbs = self._route_rbs
        route_lanes = m.route_lane_ids(route_rbs)
        start_lane = self._starting_lane(sim, ego, route_lanes)
        paths = self._paths(sim, ego, start_lane, route_rbs)
        limit = m.speed_limit(start_lane)
        fractions = np.asarray(cfg.speed_limit_fractions, dtype=np.float64)
        targets = fractions * (limit if limit is not None else cfg.fallback_target_velocity)
        fc = forecast_objects(sim, world, route_lanes, cfg)
        ego_poly = shapely.Polygon(ego_box(ego, self.vehicle))
        # tracks touching the ego now are ignored from now on (red lights only when the ego is inside them)
        if len(fc.tokens):
            hit = shapely.intersects(shapely.polygons(fc.corners[0]), ego_poly)
            self._collided.update(t for t, h in zip(fc.tokens, hit) if h)
        for rid, poly in zip(fc.red_ids, fc.red_polygons):
            if ego_poly.intersects(poly) and ego_poly.within(poly):
                self._collided.add(f"{RED_LIGHT}_{rid}")
        T = cfg.proposal_poses
        starts = [float(path.project(ego[None, :2])[0]) for path in paths]
        reach = abs(targets.max()) * cfg.trajectory_poses * cfg.interval_s
        corridors = [shapely.buffer(path.substring(p0, p0 + reach), self.vehicle.width / 2, cap_style="square")
                     for path, p0 in zip(paths, starts)]
        fc.restrict(shapely.total_bounds(np.array(corridors, dtype=object)))
        for c in corridors:
            shapely.prepare(c)
        cands = [self._corridor_candidates(path, fc, c, T) for path, c in zip(paths, corridors)]
        return _Job(self, sim, world, ego, route_rbs, route_lanes, start_lane, limit, targets, fc, paths, starts,
                    cands)

    def _finish(self, job: "_Job", proposals: np.ndarray, states: np.ndarray) -> ExpertPlan:
        """Scoring of the tracked proposals and the choice (and the emergency brake where configured)."""
        cfg = self.config
        ego, T = job.ego, cfg.proposal_poses
        scene = self._scene(job.sim, job.world, ego, job.fc, job.route_lanes, T)
        scores = score_states(scene, states, cfg.scorer)
        pdm = scores.pdm_score(cfg.scorer)
        best = int(np.argmax(pdm))
        info = {"speed_limit": job.limit, "target_speeds": job.targets.tolist(), "starting_lane": job.start_lane,
                "pdm_score": float(pdm[best]), "route_roadblock_ids": list(job.route_rbs)}
        if cfg.emergency_brake:
            speed = float(np.hypot(ego[VELOCITY_X], ego[VELOCITY_Y]))
            if scores.time_to_at_fault_collision_s[best] <= cfg.brake_time_to_infraction_s and \
                    speed <= cfg.brake_max_ego_speed:
                traj = self._brake(ego)
                st = track_references(ego, traj[None], T, cfg.lqr)[0]
                return ExpertPlan(plan_from_trajectory(traj, ego), traj, st, "emergency_brake", scores, best, info)
        traj = proposals[best]
        return ExpertPlan(plan_from_trajectory(traj, ego), traj, states[best], "pdm_closed", scores, best, info)

    def _corridor_candidates(self, path: _Path, fc: Forecast, corridor, T: int) -> dict:
        """{occupancy sample: (polygons, indices of those meeting the corridor and not ignored, their progress on the
        path)} for the samples the leader updates read (`_get_intersecting_objects` and the object progress of
        `_update_leading_agents`), in one shapely call per kind over every sample."""
        rate = self.config.leading_agent_update_rate
        samples = sorted({fc.sample(t) for t in range(rate, T + 1, rate)})
        occ = [fc.occupancy(k) for k in samples]
        sizes = [len(o[0]) for o in occ]
        out = {}
        if not sum(sizes):
            return {k: (o[0], np.zeros(0, dtype=np.int64), np.zeros(0)) for k, o in zip(samples, occ)}
        hit = shapely.intersects(corridor, np.concatenate([o[0] for o in occ]))
        offs = np.concatenate([[0], np.cumsum(sizes)])
        per = []
        for j, (polys, tokens, _) in enumerate(occ):
            cand = np.nonzero(hit[offs[j]:offs[j + 1]])[0]
            if self._collided and len(cand):
                cand = cand[np.array([tokens[i] not in self._collided for i in cand], dtype=bool)]
            per.append(cand)
        cents = [o[2][c] for o, c in zip(occ, per)]
        n = sum(len(c) for c in per)
        prog = path.project(shapely.get_coordinates(np.concatenate(cents))) if n else np.zeros(0)
        k0 = 0
        for k, o, c in zip(samples, occ, per):
            out[k] = (o[0], c, prog[k0:k0 + len(c)])
            k0 += len(c)
        return out

    def _scene(self, sim, world, ego, fc: Forecast, route_lanes, T) -> ScoringScene:
        """The scene PDM-Closed scores against: the forecast objects (occupancy sample t // 2), constant red lights,
        the drivable map within the radius, its own centreline."""
        layers = _map_layers(sim.map)
        near = near_map_indices(sim.map, ego_box(ego, self.vehicle).mean(axis=0), self.config.map_radius)
        idx = [fc.sample(t) for t in range(T + 1)]
        corners = fc.corners[idx] if len(fc.tokens) else np.zeros((T + 1, 0, 4, 2))
        red = tuple(zip(fc.red_ids, fc.red_polygons))
        return ScoringScene(
            map_ids=tuple(layers["ids"][near]), map_types=tuple(layers["types"][near]),
            map_polygons=tuple(layers["polys"][near]), route_lane_ids=frozenset(route_lanes),
            centerline=self._centerline.xy, obj_tokens=fc.tokens, obj_is_agent=fc.is_agent,
            obj_heading=fc.heading, obj_speed=fc.speed, obj_corners=corners,
            obj_valid=np.ones(corners.shape[:2], dtype=bool), red_light_polygons=(red,) * (T + 1),
            collided_track_ids=frozenset(t for t in self._collided if not t.startswith(RED_LIGHT)),
            human_past_states=None, name=f"pdm_closed:{sim.scenario.token}")

    def _brake(self, ego: np.ndarray) -> np.ndarray:
        """PDMEmergencyBrake._generate_trajectory: straight ahead at a P-controlled constant velocity."""
        lo, hi = self.config.brake_accel_range
        d = self.vehicle.rear_axle_to_center
        v = float(ego[VELOCITY_X])  # centre and rear axle share the longitudinal velocity
        a = float(ego[ACCELERATION_X])
        # tuplan PDMEmergencyBrake: P-controller gain 10 above 0.2 m/s, then (velocity gain 4, acceleration gain 1)
        # at standstill; the 11/10 factor is its one-step look-ahead of the first-order lag
        if v > 0.2:
            u = max(min(10.0 * -v, hi), lo)
            vc = 11 / 10 * (v + u)
        else:
            vc = max(min(4.0 * -v + 1.0 * -a, hi), lo)
        t = np.arange(self.config.proposal_poses + 1) * self.config.interval_s
        h = ego[HEADING]
        cx, cy = ego[X] + d * np.cos(h), ego[Y] + d * np.sin(h)
        px = cx + np.cos(h) * vc * t - d * np.cos(h)
        py = cy + np.sin(h) * vc * t - d * np.sin(h)
        return np.stack([px, py, np.full_like(t, h)], -1)


def pdm_closed_plan(sim: Simulation, world: WorldState, config: PDMClosedConfig = PDMClosedConfig()) -> ExpertPlan:
    """One PDM-Closed plan from a fresh planner (centreline from this state), as NAVSIM's metric cache computes it."""
    return PDMClosedPlanner(config).plan(sim, world)


def pdm_closed_plans(sims, worlds, config: PDMClosedConfig = PDMClosedConfig(),
                     vehicle: VehicleParameters = PACIFICA) -> list[ExpertPlan]:
    """`pdm_closed_plan(sims[i], worlds[i], config)` for every i, computed together (issue 20): the proposals of
    all scenes are unrolled as one batch (one leader search and one IDM update per step over every scene's
    proposals) and tracked by one LQR + bicycle call; each scene's scoring and choice stay its own. Bit-identical
    to planning each scene alone (every batched operation is row-wise; tested)."""
    if len(sims) != len(worlds):
        raise ValueError(f"pdm_closed_plans needs as many worlds as simulations, got {len(worlds)} and {len(sims)}")
    jobs = [PDMClosedPlanner(config, vehicle)._prepare(sim, w) for sim, w in zip(sims, worlds)]
    if not jobs:
        return []
    proposals = _unroll_jobs(jobs, config)
    T = config.proposal_poses
    init = np.concatenate([np.broadcast_to(j.ego, (len(p), len(j.ego))) for j, p in zip(jobs, proposals)])
    states = track_references(init, np.concatenate(proposals), T, config.lqr)
    out, k = [], 0
    for j, p in zip(jobs, proposals):
        out.append(j.planner._finish(j, p, states[k:k + len(p)]))
        k += len(p)
    return out


@dataclass(eq=False)
class _Job:
    """One scene's PDM-Closed inputs after `PDMClosedPlanner._prepare`: what the unrolling and the scoring read."""

    planner: PDMClosedPlanner
    sim: Simulation
    world: WorldState
    ego: np.ndarray
    route_rbs: list
    route_lanes: list
    start_lane: str
    limit: float | None
    targets: np.ndarray
    fc: Forecast
    paths: list
    starts: list
    cands: list  # per path: `_corridor_candidates`


def _unroll_jobs(jobs: list[_Job], config: PDMClosedConfig) -> list[np.ndarray]:
    """PDMGenerator.generate_proposals of every path of every job as one batch: poses [P * L, T + 1, 3] per job
    (path-major, as `plan` stacks them). The rows (one per path and IDM policy) step together: per leader update one
    interpolation of every row's pose, one shapely distance call over every (row, candidate ahead) pair, the nearest
    candidate ahead and NAVSIM's leader array shared across a path's proposals in one kernel (`_leaders`), and one
    IDM update of all rows (`_idm_propagate`); each row's values are those of unrolling its path alone."""
    cfg = config
    T = cfg.proposal_poses
    groups = [(j, p) for j in jobs for p in range(len(j.paths))]
    L = [len(j.targets) for j, _ in groups]
    row0 = np.concatenate([[0], np.cumsum(L)]).astype(np.int64)
    R = int(row0[-1])
    progress = np.zeros((R, T + 1))
    vel = np.zeros((R, T + 1))
    lead = np.zeros((R, T + 1, 3))  # progress, velocity, rear length
    tgt = np.ascontiguousarray(np.concatenate([j.targets for j, _ in groups]), dtype=np.float64)
    # every group's path as one flat array (rows read their own slice)
    p_all = np.concatenate([j.paths[p].progress for j, p in groups])
    xyh_all = np.ascontiguousarray(np.concatenate([j.paths[p]._xyh for j, p in groups]))
    n_pts = np.array([len(j.paths[p].progress) for j, p in groups], dtype=np.int64)
    pt0 = np.concatenate([[0], np.cumsum(n_pts)]).astype(np.int64)
    g_of_row = np.repeat(np.arange(len(groups)), L)
    row_pt0, row_pt1 = pt0[g_of_row], pt0[g_of_row + 1]
    path_len = np.array([j.paths[p].length for j, p in groups])
    # every group's forecast attributes as flat arrays (a row's candidate jj < n_tok of its group is an object)
    fcs = [j.fc for j, _ in groups]
    n_tok = np.array([len(f.tokens) for f in fcs], dtype=np.int64)
    fc_ofs = np.concatenate([[0], np.cumsum(n_tok)]).astype(np.int64)
    fc_heading = np.concatenate([f.heading for f in fcs]) if fc_ofs[-1] else np.zeros(0)
    fc_speed = np.concatenate([f.speed for f in fcs]) if fc_ofs[-1] else np.zeros(0)
    fc_agent = np.concatenate([f.is_agent for f in fcs]) if fc_ofs[-1] else np.zeros(0, dtype=bool)
    for g, (j, p) in enumerate(groups):
        progress[row0[g]:row0[g + 1], 0] = j.starts[p]
        vel[row0[g]:row0[g + 1], 0] = j.ego[VELOCITY_X]
    sqrt_ab = np.sqrt(cfg.accel_max * cfg.decel_max)
    idm_params = tuple(float(x) for x in (cfg.min_gap_to_lead_agent, cfg.headway_time, sqrt_ab, cfg.accel_max,
                                          cfg.decel_max, cfg.acceleration_exponent, cfg.interval_s))
    veh = jobs[0].planner.vehicle
    if any(j.planner.vehicle != veh for j in jobs):
        raise ValueError("the jobs of one unrolling batch must share one vehicle")
    d_rc = veh.rear_axle_to_center
    half_len = veh.length / 2
    for t in range(1, T + 1):
        if t % cfg.leading_agent_update_rate != 0:
            lead[:, t] = lead[:, t - 1]
        else:
            cur_all = progress[:, t - 1]
            parts = [j.cands[p][j.fc.sample(t)] for j, p in groups]
            k_ofs = np.concatenate([[0], np.cumsum([len(c) for _, c, _ in parts])]).astype(np.int64)
            has = np.zeros(R, dtype=np.bool_)
            dmin = np.zeros(R)
            valid = np.zeros(R, dtype=np.bool_)
            v_lead = np.zeros(R)
            if k_ofs[-1]:
                cand = np.concatenate([c for _, c, _ in parts])
                obj_prog = np.concatenate([pr for _, _, pr in parts])
                # the pairs (row, candidate) of the groups with a candidate ahead of one of their rows
                pair_row, pair_k = _pairs(row0, k_ofs, obj_prog, cur_all)
            else:
                pair_row = np.zeros(0, dtype=np.int64)
            if len(pair_row):
                polys = np.concatenate([a[c] for a, c, _ in parts])
                pose = _interp_rows(np.ascontiguousarray(cur_all), row_pt0, row_pt1, p_all, xyh_all)
                if not np.isfinite(pose).all():  # only on a degenerate path; PDMPath sets NaN to 0
                    pose = np.nan_to_num(pose, nan=0.0)
                h = pose[:, 2]
                eb = box_corners(pose[:, 0] + d_rc * np.cos(h), pose[:, 1] + d_rc * np.sin(h), h,
                                 np.full(R, veh.length), np.full(R, veh.width))
                need = np.unique(pair_row)  # the rows of the searching groups, ascending
                ebp = np.full(R, None, dtype=object)
                ebp[need] = shapely.polygons(eb[need])
                dists = shapely.distance(ebp[pair_row], polys[pair_k])
                kk = _nearest_ahead(pair_row, obj_prog[pair_k], dists, cur_all, has, dmin)
                jj = cand[pair_k[kk[need]]]  # the chosen candidate of each searching row (index in its forecast)
                g = g_of_row[need]
                ok = jj < n_tok[g]
                valid[need] = ok
                r, fi = need[ok], fc_ofs[g[ok]] + jj[ok]
                rel = wrap_angle(fc_heading[fi] - pose[r, 2])
                v_lead[r] = np.where(fc_agent[fi], fc_speed[fi] * np.cos(rel), 0.0)
            _leaders(lead, t, row0, has, dmin, valid, v_lead, cur_all, path_len, half_len)
        _idm_propagate(progress, vel, lead, tgt, t, *idm_params)
    out = []
    for g, (j, p) in enumerate(groups):
        path = j.paths[p]
        o = np.zeros((L[g], T + 1, 3))
        o[:, 0] = path.interpolate(j.starts[p])
        o[:, 1:] = path.interpolate(progress[row0[g]:row0[g + 1], 1:])
        out.append(o)
    res, k = [], 0
    for j in jobs:
        res.append(np.concatenate(out[k:k + len(j.paths)]))
        k += len(j.paths)
    return res


@njit(cache=True)
def _pairs(row0, k_ofs, obj_prog, cur):
    """The (row, candidate) pairs of every group g (rows row0[g]:row0[g + 1], candidates k_ofs[g]:k_ofs[g + 1]) with
    a candidate ahead (progress > a row's) of one of its rows, by row, candidates in order: (rows, candidates)."""
    n = 0
    for g in range(len(row0) - 1):
        if _any_ahead(row0[g], row0[g + 1], k_ofs[g], k_ofs[g + 1], obj_prog, cur):
            n += (row0[g + 1] - row0[g]) * (k_ofs[g + 1] - k_ofs[g])
    rows = np.empty(n, dtype=np.int64)
    ks = np.empty(n, dtype=np.int64)
    q = 0
    for g in range(len(row0) - 1):
        if _any_ahead(row0[g], row0[g + 1], k_ofs[g], k_ofs[g + 1], obj_prog, cur):
            for r in range(row0[g], row0[g + 1]):
                for k in range(k_ofs[g], k_ofs[g + 1]):
                    rows[q] = r
                    ks[q] = k
                    q += 1
    return rows, ks


@njit(cache=True, inline="always")
def _any_ahead(r0, r1, k0, k1, obj_prog, cur):
    for r in range(r0, r1):
        for k in range(k0, k1):
            if obj_prog[k] > cur[r]:
                return True
    return False


@njit(cache=True)
def _nearest_ahead(rows, prog, dists, cur, has, dmin):
    """For pairs (row, candidate) grouped by row, candidates in order: each row's nearest candidate ahead (progress >
    the row's; the others count as inf), chosen as numpy's argmin over the row's candidates chooses; has[row] (a
    candidate ahead) and dmin[row] set, the chosen pair's index returned per row (-1: the row has no pairs)."""
    kk = np.full(len(cur), -1, dtype=np.int64)
    best = np.empty(len(cur))
    for q in range(len(rows)):
        r = rows[q]
        d = dists[q] if prog[q] > cur[r] else np.inf
        # numpy's argmin: the first minimum, a NaN counting as the minimum (the first NaN)
        if kk[r] < 0 or d < best[r] or (np.isnan(d) and not np.isnan(best[r])):
            kk[r] = q
            best[r] = d
        if prog[q] > cur[r]:
            has[r] = True
    for r in range(len(cur)):
        if kk[r] >= 0:
            dmin[r] = best[r]
    return kk


@njit(cache=True)
def _leaders(lead, t, row0, has, dmin, valid, v_lead, cur, path_len, half_len):
    """NAVSIM's leader array of each path group at step t (pdm_generator.py `_update_leading_agents`): one array
    shared across the group's proposals in order, reset per step, so a free proposal keeps the previous one's leader
    velocity and later proposals keep the rear length a free one set."""
    for g in range(len(row0) - 1):
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        for i in range(row0[g], row0[g + 1]):
            if has[i]:
                s0 = cur[i] + dmin[i]
                if valid[i]:
                    s1 = v_lead[i]
            else:
                s0 = path_len[g]
                s2 = half_len
            lead[i, t, 0] = s0
            lead[i, t, 1] = s1
            lead[i, t, 2] = s2


@njit(cache=True, error_model="numpy")
def _interp_rows(q, lo, hi, p_all, xyh_all):
    """`_interp_path` of each row's q[i] on its own path p_all[lo[i]:hi[i]], xyh_all[lo[i]:hi[i]]."""
    out = np.empty((len(q), 3))
    for i in range(len(q)):
        out[i] = _interp_path(q[i:i + 1], p_all[lo[i]:hi[i]], xyh_all[lo[i]:hi[i]])[0]
    return out


@njit(cache=True, error_model="numpy")
def _idm_propagate(progress, vel, lead, targets, t, min_gap, headway, sqrt_ab, accel_max, decel_max, exponent,
                   interval):
    """BatchIDMPolicy.propagate of every proposal from step t - 1 to t (leaders in lead[:, t])."""
    for i in range(progress.shape[0]):
        x = progress[i, t - 1]
        v = vel[i, t - 1]
        s_star = min_gap + v * headway + v * (v - lead[i, t, 1]) / (2 * sqrt_ab)
        s_alpha = max(lead[i, t, 0] - x - lead[i, t, 2], min_gap)
        acc = accel_max * (1 - (v / targets[i]) ** exponent - (s_star / s_alpha) ** 2)
        if np.isnan(acc):  # ours: v = target = 0 gives 0/0; upstream lets the NaN through, here it brakes
            acc = -decel_max
        acc = min(max(acc, -decel_max), accel_max)
        progress[i, t] = x + interval * v
        vel[i, t] = v + interval * acc


@njit(cache=True, error_model="numpy")
def _geos_project(xy, pts):
    """GEOS's LengthIndexedLine::project of each point onto the polyline `xy` [N, 2] (what shapely's
    line_locate_point returns), operation for operation: LengthIndexOfPoint::indexOfFromStart walks the segments,
    keeping the first with the strictly smallest Distance::pointToSegment, and measures the point's projection on it
    (LineSegment::projectionFactor clamped to the segment) plus the lengths of the segments before it. IEEE
    division (a repeated vertex gives the projection factor inf or NaN, as in GEOS)."""
    n = xy.shape[0]
    out = np.empty(pts.shape[0])
    for i in range(pts.shape[0]):
        px = pts[i, 0]
        py = pts[i, 1]
        min_d = np.inf
        measure = -1.0  # minIndex
        start = 0.0
        for k in range(n - 1):
            ax = xy[k, 0]
            ay = xy[k, 1]
            bx = xy[k + 1, 0]
            by = xy[k + 1, 1]
            # Distance::pointToSegment(p, A, B)
            if ax == bx and ay == by:
                d = np.sqrt((px - ax) * (px - ax) + (py - ay) * (py - ay))
            else:
                len2 = (bx - ax) * (bx - ax) + (by - ay) * (by - ay)
                r = ((px - ax) * (bx - ax) + (py - ay) * (by - ay)) / len2
                if r <= 0.0:
                    d = np.sqrt((px - ax) * (px - ax) + (py - ay) * (py - ay))
                elif r >= 1.0:
                    d = np.sqrt((px - bx) * (px - bx) + (py - by) * (py - by))
                else:
                    s = ((ay - py) * (bx - ax) - (ax - px) * (by - ay)) / len2
                    d = abs(s) * np.sqrt(len2)
            seg_len = np.sqrt((ax - bx) * (ax - bx) + (ay - by) * (ay - by))  # p0.distance(p1)
            # LengthIndexOfPoint::segmentNearestMeasure with LineSegment::projectionFactor
            if px == ax and py == ay:
                f = 0.0
            elif px == bx and py == by:
                f = 1.0
            else:
                dx = bx - ax
                dy = by - ay
                f = ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)
            if f <= 0.0:
                m = start
            elif f <= 1.0:
                m = start + f * seg_len
            else:
                m = start + seg_len
            if d < min_d and m > -1.0:
                measure = m
                min_d = d
            start += seg_len
        out[i] = measure
    return out


@njit(cache=True, error_model="numpy")
def _interp_path(q, p, xyh):
    """PDMPath.interpolate: `q` clipped to [1e-5, length], scipy interp1d's interval (the first vertex at or beyond
    the query, clamped to [1, N - 1]) over progress `p` of the vertices (x, y, unwrapped heading) `xyh`, the heading
    normalised with arctan2(sin, cos) (pdm_geometry_utils.normalize_angle)."""
    n = len(p)
    out = np.empty((len(q), 3))
    length = p[n - 1]
    for i in range(len(q)):
        v = min(max(q[i], 1e-5), length)
        hi = np.searchsorted(p, v)  # side="left"
        hi = min(max(hi, 1), n - 1)
        lo = hi - 1
        w = (v - p[lo]) / (p[hi] - p[lo])
        for k in range(3):
            out[i, k] = xyh[lo, k] + w * (xyh[hi, k] - xyh[lo, k])
        out[i, 2] = np.arctan2(np.sin(out[i, 2]), np.cos(out[i, 2]))
    return out
