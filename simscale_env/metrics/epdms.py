"""EPDMS sub-metrics of NAVSIM v2, batched over proposals.

Each function mirrors a method of navsim/planning/simulation/planner/pdm_planner/scoring/pdm_scorer.py (PDMScorer,
NAVSIM @ 0a380a9) and is cited beside it; geometry is vectorized (numba) instead of one shapely query per proposal,
with the same predicates: point-in-polygon excludes the boundary (`shapely.vectorized.contains`), box overlap
includes touching (`intersects`), `is_in_layer(INTERSECTION)` is `within` for the box centre.

Entry point: :func:`score_states` (states [N, 41, 11] simulated from the current ego state) -> :class:`PlanScores`.
"""

from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields

import numpy as np
from numba import njit
from scipy.signal import savgol_filter

from ..sim.state import (ACCELERATION_X, ACCELERATION_Y, ANGULAR_ACCELERATION, ANGULAR_VELOCITY, HEADING,
                         STATE_SIZE, VELOCITY_X, VELOCITY_Y, X, Y)
from ..sim.vehicle import PACIFICA, VehicleParameters
from . import constants as C
from .geometry import (AreaIndex, PolygonSet, _flags_at, object_index, polyline_project,
                       query_overlaps, quads_meet_polygons, segment_hits_quad)

# map object types as in nuPlan's SemanticMapLayer names
DRIVABLE_TYPES = ("ROADBLOCK", "INTERSECTION", "DRIVABLE_AREA", "CARPARK_AREA")  # PDMScorer._calculate_ego_area
LANE_TYPES = ("LANE", "LANE_CONNECTOR")  # PDMScorer._calculate_ego_area drivable_lane_idcs
RED_LIGHT_TOKEN = "red_light"  # PDMObservation._red_light_token


_AREA_CACHE: "OrderedDict[tuple, tuple]" = OrderedDict()
_AREA_CACHE_SIZE = 128  # scenes of many envs at once (SimScaleVectorEnv): one entry per map neighbourhood


def _cached_area_index(ids, types, polygons, on_route) -> AreaIndex:
    """Area indices of recent scenes (consecutive simulation steps see the same map polygons): keyed by the ids, the
    on-route flags and the polygon objects themselves."""
    key = (tuple(ids), tuple(types), on_route.tobytes())
    hit = _AREA_CACHE.get(key)
    if hit is not None and len(hit[0]) == len(polygons) and all(a is b for a, b in zip(hit[0], polygons)):
        _AREA_CACHE.move_to_end(key)
        return hit[1]
    tmask = np.array([t in DRIVABLE_TYPES for t in types], dtype=bool)
    lane = np.array([t in LANE_TYPES for t in types], dtype=bool)
    inter = np.array([t == "INTERSECTION" for t in types], dtype=bool)
    index = AreaIndex(list(polygons), tmask, lane, on_route, inter)
    _AREA_CACHE[key] = (tuple(polygons), index)
    while len(_AREA_CACHE) > _AREA_CACHE_SIZE:
        _AREA_CACHE.popitem(last=False)
    return index


@dataclass(frozen=True, eq=False)
class ScoringScene:
    """Everything the scorer reads about one scene (the equivalent of NAVSIM's metric cache entry).

    Objects are oriented boxes per step ([T, M, 4, 2] corners FL, RL, RR, FR, with a validity mask); `obj_*`
    attributes are those of the object as first seen (NAVSIM's `unique_objects`), which drive the collision type and
    TTC. Red lights are the polygons of the on-route connectors whose light is red, per step.
    """

    map_ids: tuple
    map_types: tuple
    map_polygons: tuple
    route_lane_ids: frozenset
    centerline: np.ndarray  # [K, 2] polyline
    obj_tokens: tuple
    obj_is_agent: np.ndarray  # [M] vehicle / pedestrian / bicycle (else a static object)
    obj_heading: np.ndarray  # [M] first-seen box heading
    obj_speed: np.ndarray  # [M] first-seen speed; static objects count as stopped
    obj_corners: np.ndarray  # [T, M, 4, 2]
    obj_valid: np.ndarray  # [T, M]
    red_light_polygons: tuple = ()  # per step: tuple of (connector id, shapely polygon)
    collided_track_ids: frozenset = frozenset()
    human_past_states: np.ndarray | None = None  # [H, 11] rear-axle states at 0.1 s before t0 (HC)
    name: str = ""
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def num_steps(self) -> int:
        return self.obj_corners.shape[0]

    def area_index(self) -> AreaIndex:
        if "areas" not in self._cache:
            lane = self.type_mask(LANE_TYPES)
            on_route = lane & np.array([i in self.route_lane_ids for i in self.map_ids], dtype=bool)
            self._cache["areas"] = _cached_area_index(self.map_ids, self.map_types, self.map_polygons, on_route)
        return self._cache["areas"]

    def red_light_index(self):
        """(PolygonSet of the distinct red-light polygons, step_ptr, step_poly) or None when no light is red."""
        if "red" not in self._cache:
            keys: dict = {}
            polys, step_poly, step_ptr = [], [], [0]
            for lights in self.red_light_polygons:
                for lane_id, poly in lights:
                    key = (lane_id, id(poly))  # the map's polygon objects (kept alive by `polys`)
                    if key not in keys:
                        keys[key] = len(polys)
                        polys.append(poly)
                    step_poly.append(keys[key])
                step_ptr.append(len(step_poly))
            self._cache["red"] = None if not polys else (
                PolygonSet(polys), np.array(step_ptr, dtype=np.int64), np.array(step_poly, dtype=np.int64))
        return self._cache["red"]

    def type_mask(self, types) -> np.ndarray:
        return np.array([t in types for t in self.map_types], dtype=bool)

    def centerline_s(self) -> np.ndarray:
        if "cl_s" not in self._cache:
            d = np.hypot(*np.diff(self.centerline, axis=0).T)
            self._cache["cl_s"] = np.concatenate([[0.0], np.cumsum(d)])
        return self._cache["cl_s"]


@dataclass(frozen=True, eq=False)
class PlanScores:
    """Sub-scores per proposal ([N] arrays), as the columns of NAVSIM's PDMResults."""

    no_at_fault_collisions: np.ndarray
    drivable_area_compliance: np.ndarray
    driving_direction_compliance: np.ndarray
    traffic_light_compliance: np.ndarray
    ego_progress: np.ndarray
    time_to_collision_within_bound: np.ndarray
    lane_keeping: np.ndarray
    history_comfort: np.ndarray
    two_frame_extended_comfort: np.ndarray  # NaN where the frame has no partner 0.5 s earlier
    progress_raw: np.ndarray
    time_to_at_fault_collision_s: np.ndarray  # inf when none
    time_to_ttc_infraction_s: np.ndarray

    @property
    def multiplicative_metrics_prod(self) -> np.ndarray:
        return (self.no_at_fault_collisions * self.drivable_area_compliance * self.driving_direction_compliance
                * self.traffic_light_compliance)

    def weighted(self, config: C.ScorerConfig = C.ScorerConfig(), with_ec: bool | None = None) -> np.ndarray:
        """Weighted sum / weight total. EC is included where it is known (with_ec None), always, or never."""
        w = np.array(config.weights)
        vals = np.stack([self.ego_progress, self.time_to_collision_within_bound, self.lane_keeping,
                         self.history_comfort, np.nan_to_num(self.two_frame_extended_comfort)], axis=0)
        has_ec = ~np.isnan(self.two_frame_extended_comfort) if with_ec is None else np.full(len(self), bool(with_ec))
        num = (vals[:4] * w[:4, None]).sum(0) + np.where(has_ec, vals[4] * w[4], 0.0)
        den = w[:4].sum() + np.where(has_ec, w[4], 0.0)
        return num / den

    def pdm_score(self, config: C.ScorerConfig = C.ScorerConfig()) -> np.ndarray:
        """The per-frame score `score_proposals` returns: EC masked out (/14)."""
        return self.multiplicative_metrics_prod * self.weighted(config, with_ec=False)

    def epdms(self, config: C.ScorerConfig = C.ScorerConfig()) -> np.ndarray:
        """The final EPDMS (compute_final_scores): EC put back where a partner frame exists (/16), else /14."""
        return self.multiplicative_metrics_prod * self.weighted(config, with_ec=None)

    def __len__(self) -> int:
        return len(self.no_at_fault_collisions)

    def row(self, i: int) -> dict:
        d = {f.name: float(getattr(self, f.name)[i]) for f in fields(self)}
        d["multiplicative_metrics_prod"] = float(self.multiplicative_metrics_prod[i])
        d["pdm_score"] = float(self.pdm_score()[i])
        d["epdms"] = float(self.epdms()[i])
        return d

    def select(self, idx) -> "PlanScores":
        return PlanScores(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def replace(self, **kw) -> "PlanScores":
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update(kw)
        return PlanScores(**d)


# ---------------------------------------------------------------------------------------------- ego geometry
def ego_coords(states: np.ndarray, vehicle: VehicleParameters = PACIFICA) -> np.ndarray:
    """[N, T, 5, 2]: FL, RL, RR, FR, centre (pdm_array_representation.state_array_to_coords_array). Trigonometry in
    numpy as NAVSIM, the arithmetic in a kernel in the same order."""
    h = states[..., HEADING]
    half_pi = np.pi / 2.0
    return _ego_coords_kernel(np.ascontiguousarray(states[..., X]), np.ascontiguousarray(states[..., Y]), np.cos(h),
                              np.sin(h), np.cos(h + half_pi), np.sin(h + half_pi), vehicle.rear_axle_to_center,
                              vehicle.length / 2.0, vehicle.width / 2.0)


@njit(cache=True, nogil=True)
def _ego_coords_kernel(x, y, c, s, cp, sp, d, hl, hw):
    out = np.empty(x.shape + (5, 2))
    lons = (hl, -hl, -hl, hl)
    lats = (hw, hw, -hw, -hw)
    for n in range(x.shape[0]):
        for t in range(x.shape[1]):
            cx = x[n, t] + d * c[n, t]
            cy = y[n, t] + d * s[n, t]
            for k in range(4):
                # translate_lon_and_lat: lat along heading + pi/2
                out[n, t, k, 0] = cx + lats[k] * cp[n, t] + lons[k] * c[n, t]
                out[n, t, k, 1] = cy + lats[k] * sp[n, t] + lons[k] * s[n, t]
            out[n, t, 4, 0] = cx
            out[n, t, 4, 1] = cy
    return out


def ego_areas(scene: ScoringScene, coords: np.ndarray) -> dict[str, np.ndarray]:
    """PDMScorer._calculate_ego_area: MULTIPLE_LANES, NON_DRIVABLE_AREA, ONCOMING_TRAFFIC, plus the centre's
    INTERSECTION membership (`is_in_layer`, within). Arrays [N, T]."""
    non_drivable, multiple, on_route, inter = scene.area_index().areas(coords)
    return {"multiple_lanes": multiple, "non_drivable": non_drivable, "oncoming": ~on_route,
            "centre_in_intersection": inter}


@njit(cache=True, nogil=True, error_model="numpy")
def _relative_angle(ex, ey, eh, box):
    """nuplan idm utils.get_agent_relative_angle between the ego pose and the centroid of a box [4, 2]: arccos of
    the heading vector dotted with the normalised direction, unclipped (a rounding |dot| > 1 gives NaN, which is
    neither ahead nor behind, as in nuPlan)."""
    vx = (((box[0, 0] + box[1, 0]) + box[2, 0]) + box[3, 0]) / 4.0 - ex
    vy = (((box[0, 1] + box[1, 1]) + box[2, 1]) + box[3, 1]) / 4.0 - ey
    n = np.sqrt(vx * vx + vy * vy)
    return np.arccos(np.cos(eh) * (vx / n) + np.sin(eh) * (vy / n))


# ---------------------------------------------------------------------------------------------- the scorer
def score_states(scene: ScoringScene, states: np.ndarray, config: C.ScorerConfig = C.ScorerConfig(), *,
                 progress_reference: np.ndarray | None = None, previous_states: np.ndarray | None = None,
                 vehicle: VehicleParameters = PACIFICA, multiplicative_only: bool = False) -> PlanScores:
    """Score proposals `states` [N, T, 11] (T = scene.num_steps) against one scene.

    `multiplicative_only`: only NC, DAC, DDC and TLC (and the collision time); EP, TTC, LK, HC, EC and the raw
    progress are NaN (what the env's per-step reward reads of the driven 0.5 s, without the rest's cost).

    EP normalisation: NAVSIM's `score_proposals` normalises jointly over the proposals scored together
    (`progress_reference=None`). With `progress_reference` = (raw progress, multiplicative product) of the
    PDM-Closed plan, each proposal is normalised against max(reference, itself) - what NAVSIM does for an agent
    scored beside PDM-Closed - so scoring plans one at a time or in a batch gives identical results.
    `previous_states` [N, T, 11]: the simulated plans of the frame 0.5 s earlier, for EC.
    """
    states = np.asarray(states, dtype=np.float64)
    if states.ndim != 3 or states.shape[2] != STATE_SIZE:
        raise ValueError(f"states must have shape [N, T, {STATE_SIZE}], got {states.shape}")
    if states.shape[1] != scene.num_steps:
        raise ValueError(f"states have {states.shape[1]} steps but the scene has {scene.num_steps}")
    if not np.all(np.isfinite(states)):
        raise ValueError("states contains NaN or infinite values")
    if previous_states is not None:
        previous_states = np.asarray(previous_states, dtype=np.float64)
    parts = score_parts(len(states))
    if parts is None:
        s = _score_part(scene, states, config, previous_states, vehicle, multiplicative_only)
    else:
        s = _score_on_threads(scene, states, config, previous_states, vehicle, multiplicative_only, parts)
    if multiplicative_only:
        return s
    ep = _normalise_progress(s.progress_raw, s.multiplicative_metrics_prod, config, progress_reference)
    return s.replace(ego_progress=ep)


# proposals spread over threads from this many on (fewer: one part, no thread pool per call)
PARALLEL_MIN_ROWS = 256


def score_parts(n: int) -> list[tuple[int, int]] | None:
    """How `score_states` spreads `n` proposals over numba's thread count: contiguous parts (lo, hi), up to 4 a
    thread for balance (at least 512 proposals a part beyond one a thread), each scored by a Python thread with
    GIL-free kernels; or None (one thread, or fewer than PARALLEL_MIN_ROWS proposals): one part, in this thread.
    Every proposal is scored alone, so the parts change no value."""
    import numba

    threads = numba.get_num_threads()
    if threads < 2 or n < PARALLEL_MIN_ROWS:
        return None
    k = min(4 * threads, max(threads, n // 512), n)
    cuts = [round(i * n / k) for i in range(k + 1)]
    return [(cuts[i], cuts[i + 1]) for i in range(k)]


def _score_on_threads(scene, states, config, previous_states, vehicle, multiplicative_only, parts) -> PlanScores:
    """`_score_part` of each part on a pool of numba's thread count, concatenated in order."""
    import numba

    # the scene's lazily built indices, built once here rather than raced for by the threads
    scene.area_index()
    scene.red_light_index()
    scene.centerline_s()

    def one(bounds):
        lo, hi = bounds
        return _score_part(scene, states[lo:hi], config, None if previous_states is None else previous_states[lo:hi],
                           vehicle, multiplicative_only)

    with ThreadPoolExecutor(max_workers=min(numba.get_num_threads(), len(parts))) as pool:
        done = list(pool.map(one, parts))
    return PlanScores(**{f.name: np.concatenate([getattr(d, f.name) for d in done]) for f in fields(PlanScores)})


def _score_part(scene, states, config, previous_states, vehicle, multiplicative_only) -> PlanScores:
    """Every sub-score of the proposals `states` but EP (NaN: its normalisation looks at all proposals)."""
    N = states.shape[0]
    coords = ego_coords(states, vehicle)
    areas = ego_areas(scene, coords)
    quads = coords[..., :4, :]
    nc, t_coll = _no_at_fault_collision(scene, states, quads, areas, config)
    dac = np.where(areas["non_drivable"].any(1), 0.0, 1.0)
    tlc = _traffic_light_compliance(scene, quads)
    ddc = _driving_direction(scene, coords, areas, config)
    nan = np.full(N, np.nan)
    if multiplicative_only:
        return PlanScores(nc, dac, ddc, tlc, nan, nan, nan, nan, nan, nan, t_coll * config.dt, nan)
    progress_raw = _progress(scene, coords)
    ttc, t_ttc = _ttc(scene, states, coords, areas, config)
    lk = _lane_keeping(scene, coords, areas, config)
    hc = _history_comfort(scene, states, vehicle, config.dt)
    ec = nan
    if previous_states is not None:
        ec = two_frame_extended_comfort(states, previous_states, config.dt)
    return PlanScores(nc, dac, ddc, tlc, nan, ttc, lk, hc, ec, progress_raw, t_coll * config.dt, t_ttc * config.dt)


def _normalise_progress(progress_raw, prod, config, reference):
    """PDMScorer._aggregate_pdm_scores: normaliser max(raw * prod) over the proposals, 1 if below 5 m."""
    masked = progress_raw * prod
    if reference is None:
        norm = np.full(len(masked), masked.max() if len(masked) else 0.0)
    else:
        ref_raw, ref_prod = (float(v) for v in reference)
        norm = np.maximum(masked, ref_raw * ref_prod)
    with np.errstate(invalid="ignore", divide="ignore"):
        ep = np.clip(progress_raw / norm, 0.0, 1.0)
    return np.where(norm > config.progress_distance_threshold, ep, 1.0)


def _no_at_fault_collision(scene, states, quads, areas, config):
    """PDMScorer._calculate_no_at_fault_collision with pdm_scorer_utils.get_collision_type."""
    N = states.shape[0]
    if scene.obj_corners.shape[1] == 0:
        return np.ones(N), np.full(N, np.inf)
    skip = np.array([tok in scene.collided_track_ids for tok in scene.obj_tokens], dtype=bool)
    track_stopped = (~scene.obj_is_agent) | (scene.obj_speed <= C.COLLISION_STOPPED_SPEED_THRESHOLD)
    speeds = np.hypot(states[..., VELOCITY_X], states[..., VELOCITY_Y])
    risky = areas["multiple_lanes"] | areas["non_drivable"]
    args = (quads, speeds, states[..., X:HEADING + 1], scene.obj_corners, scene.obj_valid, skip,
            np.asarray(scene.obj_is_agent, dtype=bool), track_stopped, risky,
            float(C.COLLISION_STOPPED_SPEED_THRESHOLD), np.deg2rad(C.BEHIND_ANGLE_DEG),
            object_index(scene.obj_corners, scene.obj_valid))
    return _by_proposal(_nc_rows, N, args)


def _by_proposal(rows, N: int, args: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(score [N] starting at 1, first time [N] starting at inf) of a per-proposal kernel `rows(lo, hi, *args,
    score, t_first)` (`score_states` spreads many proposals over threads in parts)."""
    score, t_first = np.ones(N), np.full(N, np.inf)
    rows(0, N, *args, score, t_first)
    return score, t_first


@njit(cache=True, nogil=True, error_model="numpy")
def _nc_rows(lo, hi, quads, speeds, rear, obj, obj_valid, skip, is_agent, track_stopped, risky, stopped, behind_rad,
             index, nc, t_first):
    """Per proposal (lo..hi-1) in NAVSIM's order (time, then track): collision types STOPPED_EGO, STOPPED_TRACK,
    ACTIVE_REAR, ACTIVE_FRONT (the FL-FR segment meets the track), ACTIVE_LATERAL; at fault: stopped track, active
    front, or lateral while in multiple lanes / off the drivable area -> 0 for agents, 0.5 for static objects. A
    harmless contact adds the track to the proposal's ignore list."""
    T = quads.shape[1]
    M = obj.shape[1]
    ignored = np.zeros(M, dtype=np.bool_)
    found = np.empty(M, dtype=np.int64)
    for n in range(lo, hi):
        for m in range(M):
            ignored[m] = skip[m]
        for t in range(T):
            nf = query_overlaps(quads[n, t], obj, t, index, found)
            if nf == 0:
                continue
            ego_stopped = speeds[n, t] <= stopped
            for r in range(nf):
                m = found[r]
                if ignored[m]:
                    continue
                if ego_stopped:
                    at_fault = False
                elif track_stopped[m]:
                    at_fault = True
                else:
                    ob = obj[t, m]
                    if _relative_angle(rear[n, t, 0], rear[n, t, 1], rear[n, t, 2], ob) > behind_rad:
                        at_fault = False  # active rear
                    elif segment_hits_quad(quads[n, t, 0], quads[n, t, 3], ob):
                        at_fault = True  # active front
                    else:
                        at_fault = risky[n, t]  # active lateral
                if at_fault:
                    v = 0.0 if is_agent[m] else 0.5
                    if v < nc[n]:
                        nc[n] = v
                    if t < t_first[n]:
                        t_first[n] = float(t)
                else:
                    ignored[m] = True
            if nc[n] == 0.0:
                break


def _traffic_light_compliance(scene, quads):
    """PDMScorer._calculate_traffic_light_compliance: the ego box intersects a red-light polygon at any step."""
    N, T = quads.shape[:2]
    lights = scene.red_light_index()
    if lights is None:
        return np.ones(N)
    polys, step_ptr, step_poly = lights
    hit = quads_meet_polygons(quads, polys.xy, polys.ptr, polys.bounds, step_ptr, step_poly)
    return np.where(hit, 0.0, 1.0)


def _driving_direction(scene, coords, areas, config):
    """PDMScorer._calculate_driving_direction_compliance."""
    centre = coords[:, :, 4]
    N, T = centre.shape[:2]
    prog = np.zeros((N, T))
    prog[:, 1:] = np.linalg.norm(centre[:, 1:] - centre[:, :-1], axis=-1)
    prog[~areas["oncoming"] | areas["centre_in_intersection"]] = 0.0
    h = int(config.driving_direction_horizon / config.dt)
    c = np.concatenate([np.zeros((N, 1)), np.cumsum(prog, axis=1)], axis=1)
    idx = np.arange(T)
    window = c[:, idx + 1] - c[:, np.maximum(0, idx - h)]
    m = window.max(axis=1)
    return np.where(m < config.driving_direction_compliance_threshold, 1.0,
                    np.where(m < config.driving_direction_violation_threshold, 0.5, 0.0))


def _progress(scene, coords):
    """PDMScorer._calculate_progress: centreline projection of the end centre minus the start centre, >= 0."""
    pts = np.ascontiguousarray(np.stack([coords[:, 0, 4], coords[:, -1, 4]], 1).reshape(-1, 2))
    arc, _ = polyline_project(pts, np.ascontiguousarray(scene.centerline, dtype=np.float64), scene.centerline_s())
    arc = arc.reshape(-1, 2)
    return np.clip(arc[:, 1] - arc[:, 0], 0.0, None)


def _ttc(scene, states, coords, areas, config):
    """PDMScorer._calculate_ttc: ego boxes projected 0, 0.3, 0.6, 0.9 s ahead at constant speed, t <= T-1-9."""
    N, T = states.shape[:2]
    future = np.arange(0, int(config.future_collision_horizon_window * 10), 3).astype(np.int64)
    speeds = np.hypot(states[..., VELOCITY_X], states[..., VELOCITY_Y])
    dxy = np.stack([np.cos(states[..., HEADING]) * speeds, np.sin(states[..., HEADING]) * speeds], -1)
    n_eval = T - 1 - int(future.max())
    if scene.obj_corners.shape[1] == 0:
        return np.ones(N), np.full(N, np.inf)
    skip = np.array([tok in scene.collided_track_ids for tok in scene.obj_tokens], dtype=bool)
    risky = areas["multiple_lanes"] | areas["non_drivable"]
    args = (coords[:, :, :4, :], dxy, speeds, states[..., X:HEADING + 1], scene.obj_corners,
            scene.obj_valid, skip, risky, future, n_eval, float(config.dt), float(config.stopped_speed_threshold),
            np.deg2rad(C.AHEAD_ANGLE_DEG), np.deg2rad(C.BEHIND_ANGLE_DEG), scene.area_index()._kernel_args(),
            object_index(scene.obj_corners, scene.obj_valid))
    return _by_proposal(_ttc_rows, N, args)


@njit(cache=True, nogil=True, error_model="numpy")
def _ttc_rows(lo, hi, quads, dxy, speeds, rear, obj, obj_valid, skip, risky, future, n_eval, dt, stopped, ahead_rad,
              behind_rad, area_args, index, ttc, t_first):
    """The loop of _calculate_ttc per proposal (lo..hi-1) in NAVSIM's order (time, then projection offset): a track
    hit harmlessly joins the proposal's ignore list; the first violation sets TTC to 0 (and its time)."""
    xy, ptr, origin, cell, nx, ny, fine_ptr, fine_idx, fine_full, flags, slabs = area_args
    M = obj.shape[1]
    ignored = np.zeros(M, dtype=np.bool_)
    found = np.empty(M, dtype=np.int64)
    q = np.empty((4, 2))
    for n in range(lo, hi):
        for m in range(M):
            ignored[m] = skip[m]
        done = False
        for t in range(n_eval + 1):
            if speeds[n, t] < stopped:
                continue
            inter = -1
            ex = rear[n, t, 0]
            ey = rear[n, t, 1]
            eh = rear[n, t, 2]
            for fi in range(len(future)):
                f = future[fi]
                d = float(f) * dt
                for c in range(4):
                    q[c, 0] = quads[n, t, c, 0] + dxy[n, t, 0] * d
                    q[c, 1] = quads[n, t, c, 1] + dxy[n, t, 1] * d
                nf = query_overlaps(q, obj, t + f, index, found)
                for r in range(nf):
                    m = found[r]
                    if ignored[m]:
                        continue
                    ang = _relative_angle(ex, ey, eh, obj[t + f, m])
                    violation = ang < ahead_rad
                    if not violation and not ang > behind_rad:
                        if risky[n, t]:
                            violation = True
                        else:
                            if inter < 0:
                                inter = 1 if _flags_at(ex, ey, xy, ptr, origin, cell, nx, ny, fine_ptr, fine_idx,
                                                       fine_full, flags, slabs, 8) else 0
                            violation = inter == 1
                    if violation:
                        ttc[n] = 0.0
                        t_first[n] = float(t)
                        done = True
                        break
                    ignored[m] = True
                if done:
                    break
            if done:
                break


def _lane_keeping(scene, coords, areas, config):
    """PDMScorer._calculate_lane_keeping: > 0.5 m from the centreline for ceil(2.0 / 0.1) consecutive evaluated
    steps; steps whose centre is in an intersection are skipped (neither counted nor resetting)."""
    N, T = coords.shape[:2]
    _, dist = polyline_project(np.ascontiguousarray(coords[:, :, 4].reshape(-1, 2)),
                               np.ascontiguousarray(scene.centerline, dtype=np.float64), scene.centerline_s())
    exceed = (dist.reshape(N, T) > config.lane_keeping_deviation_limit)
    need = int(np.ceil(config.lane_keeping_horizon_window / config.dt))
    lk = np.ones(N)
    _lane_keeping_rows(exceed, areas["centre_in_intersection"], need, lk)
    return lk


@njit(cache=True, nogil=True)
def _lane_keeping_rows(exceed, skip, need, lk):
    """0 where `need` consecutive non-skipped steps exceed (fewer than `need` non-skipped steps never can)."""
    for n in range(exceed.shape[0]):
        run = 0
        for t in range(exceed.shape[1]):
            if skip[n, t]:
                continue
            run = run + 1 if exceed[n, t] else 0
            if run >= need:
                lk[n] = 0.0
                break


# ---------------------------------------------------------------------------------------------- comfort
def _center_accelerations(acc_x, acc_y, w, wd, vehicle):
    """state_array_to_center_state_array: rear-axle accelerations shifted to the box centre (from the rear-axle
    accelerations, yaw rate and yaw acceleration)."""
    d = vehicle.rear_axle_to_center
    ax = acc_x + d * w ** 2 + d * wd
    ay = acc_y + 0.0 * w ** 2 + 0.0 * wd
    return ax, ay


_SAVGOL_CACHE: dict = {}


def _savgol_matrix(n: int, window: int, poly: int, deriv: int, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """scipy's savgol_filter(mode="interp") along a length-n axis as a linear map (the filter is linear in its
    input: interior convolution, polynomial fits at the edges), built once per shape by filtering the identity:
    (the [n, n] matrix, each row's first nonzero column). Every row's nonzeros are `window` consecutive columns."""
    key = (n, window, poly, deriv, float(delta))
    hit = _SAVGOL_CACHE.get(key)
    if hit is None:
        m = savgol_filter(np.eye(n), polyorder=poly, window_length=window, deriv=deriv, delta=delta, axis=0)
        first = np.clip(np.arange(n) - (window - 1) // 2, 0, n - window).astype(np.int64)
        band = np.zeros_like(m, dtype=bool)
        for i, f in enumerate(first):
            band[i, f:f + window] = True
        if np.any(m[~band] != 0.0):
            raise RuntimeError(f"scipy's savgol_filter (window {window}, order {poly}, derivative {deriv}, length {n}) "
                               "has nonzero weights outside each output's window: the banded kernel does not apply")
        hit = _SAVGOL_CACHE[key] = (np.ascontiguousarray(m), first)
    return hit


def _savgol(y, window, poly, deriv=0, delta=1.0):
    """scipy's savgol_filter(mode="interp") along the last axis, up to floating-point summation order: each output
    is its window's weighted sum in column order (a kernel: no BLAS, whose threads would compete with the scorer's;
    the same bits on every machine)."""
    n = y.shape[-1]
    window, poly = _checked_window(n, window, poly)
    m, first = _savgol_matrix(n, window, poly, deriv, delta)
    flat = np.ascontiguousarray(y, dtype=np.float64).reshape(-1, n)
    return _banded_apply(flat, m, first, window).reshape(y.shape)


@njit(cache=True, nogil=True)
def _banded_apply(y, m, first, window):
    out = np.empty_like(y)
    for r in range(y.shape[0]):
        for i in range(y.shape[1]):
            f = first[i]
            acc = 0.0
            for k in range(f, f + window):
                acc += m[i, k] * y[r, k]
            out[r, i] = acc
    return out


def _savgol_accel(a, window=8):
    # pdm_comfort_metrics._extract_ego_acceleration defaults: window_length 8, poly_order 2, decimals 8
    return np.round(_savgol(a, window, 2), 8)


def _derivative(y, dt, window, poly, deriv):
    return _savgol(y, window, poly, deriv, dt)


def _phase_unwrap(h):
    adj = np.zeros_like(h)
    adj[..., 1:] = np.cumsum(np.round(np.diff(h, axis=-1) / (2 * np.pi)), axis=-1)
    return h - 2 * np.pi * adj


def _yaw_rate(states, dt, deriv=1, poly=2):
    return _yaw_rate_of(states[..., HEADING], dt, deriv, poly)


def _yaw_rate_of(heading, dt, deriv=1, poly=2):
    # _extract_ego_yaw_rate does not forward its window_length: _approximate_derivatives uses its default 5
    return np.round(_derivative(_phase_unwrap(heading), dt, 5, poly, deriv), 8)


def _open_bounds(lo=None, hi=None) -> tuple[float, float]:
    """pdm_comfort_metrics._within_bound's bounds: a bound of None (or 0) is open."""
    return (lo if lo else -np.inf), (hi if hi else np.inf)


def _within(metric, lo=None, hi=None):
    lo, hi = _open_bounds(lo, hi)
    return np.all((metric > lo) & (metric < hi), axis=-1)


def comfort_checks(states: np.ndarray, dt: float = 0.1, vehicle: VehicleParameters = PACIFICA) -> np.ndarray:
    """pdm_comfort_metrics.ego_is_comfortable: [N, 6] booleans (lon accel, lat accel, jerk, lon jerk, yaw accel,
    yaw rate)."""
    return _comfort_of(states[..., ACCELERATION_X], states[..., ACCELERATION_Y], states[..., ANGULAR_VELOCITY],
                       states[..., ANGULAR_ACCELERATION], states[..., HEADING], dt, vehicle)


def _comfort_of(acc_x, acc_y, w, wd, heading, dt, vehicle):
    """`comfort_checks` from the five state columns it reads ([..., T] each), in one kernel (`_comfort_rows`):
    the same operations as `_comfort_of_numpy`, bit for bit (tested), without its ~40 array calls."""
    acc_x, acc_y, w, wd, heading = (np.asarray(a, dtype=np.float64) for a in (acc_x, acc_y, w, wd, heading))
    shape = acc_x.shape
    n = shape[-1]
    # the filters `_comfort_of_numpy` applies (window, order, derivative, delta; pdm_comfort_metrics): accelerations
    # (8, 2: _extract_ego_acceleration's defaults), jerk (15, 2, first derivative: _extract_ego_jerk's), yaw
    # acceleration (5, 3, second) and yaw rate (5, 2, first: _approximate_derivatives' default window)
    specs = ((8, 2, 0, 1.0), (15, 2, 1, dt), (5, 3, 2, dt), (5, 2, 1, dt))
    windows = [_checked_window(n, window, poly) for window, poly, _, _ in specs]
    mats = [_savgol_matrix(n, window, poly, deriv, delta)
            for (window, poly), (_, _, deriv, delta) in zip(windows, specs)]
    rows = [np.ascontiguousarray(a).reshape(-1, n) for a in (acc_x, acc_y, w, wd, heading)]
    mag_in = np.hypot(rows[0], rows[1])  # numpy's hypot, as `_comfort_of_numpy` computes it
    bounds = np.array([_open_bounds(lo, hi) for lo, hi in _COMFORT_BOUNDS], dtype=np.float64)
    out = _comfort_rows(*rows, mag_in, float(vehicle.rear_axle_to_center), bounds,
                        *(m for pair in mats for m in pair), windows[0][0], windows[1][0], windows[2][0])
    return out.reshape(shape[:-1] + (6,))


def _checked_window(n: int, window: int, poly: int) -> tuple[int, int]:
    """(window, poly) as `_savgol` uses them (window capped at n), with its error for too short an input."""
    window = min(window, n)
    if not poly < window:
        raise ValueError(f"{poly} < {window} does not hold!")
    return window, poly


# comfort_checks' six bounds (lower, upper), in its column order (pdm_comfort_metrics' constants: metrics.constants)
_COMFORT_BOUNDS = ((C.MIN_LON_ACCEL, C.MAX_LON_ACCEL), (-C.MAX_ABS_LAT_ACCEL, C.MAX_ABS_LAT_ACCEL),
                   (-C.MAX_ABS_MAG_JERK, C.MAX_ABS_MAG_JERK), (-C.MAX_ABS_LON_JERK, C.MAX_ABS_LON_JERK),
                   (-C.MAX_ABS_YAW_ACCEL, C.MAX_ABS_YAW_ACCEL), (-C.MAX_ABS_YAW_RATE, C.MAX_ABS_YAW_RATE))
_TWO_PI = 2 * np.pi


@njit(cache=True, nogil=True, inline="always")
def _band_row(y, m, first, window, out):
    """One row of `_banded_apply`."""
    for i in range(y.shape[0]):
        f = first[i]
        acc = 0.0
        for k in range(f, f + window):
            acc += m[i, k] * y[k]
        out[i] = acc


@njit(cache=True, nogil=True, inline="always")
def _round8(y):
    """np.round(y, 8) element by element: rint(y * 1e8) / 1e8, as numpy rounds with decimals."""
    for i in range(y.shape[0]):
        y[i] = np.rint(y[i] * 1e8) / 1e8


@njit(cache=True, nogil=True, inline="always")
def _all_within(y, lo, hi):
    for i in range(y.shape[0]):
        if not (y[i] > lo and y[i] < hi):
            return False
    return True


@njit(cache=True, nogil=True, inline="always")
def _filter_within(y, m, first, window, out, lo, hi):
    """The filtered signal rounded to 8 decimals into out; whether it stays within (lo, hi)."""
    _band_row(y, m, first, window, out)
    _round8(out)
    return _all_within(out, lo, hi)


@njit(cache=True, nogil=True)
def _comfort_rows(acc_x, acc_y, w, wd, heading, mag_in, d, bounds, m_acc, f_acc, m_jerk, f_jerk, m_yacc, f_yacc,
                  m_yrate, f_yrate, w_acc, w_jerk, w_yaw):
    """`_comfort_of_numpy` row by row: centre accelerations, Savitzky-Golay filters as banded sums, rounding to 8
    decimals, the phase-unwrapped heading's derivatives, the six bounds."""
    R, n = acc_x.shape
    out = np.zeros((R, 6), dtype=np.bool_)
    ax = np.empty(n)
    ay = np.empty(n)
    lon = np.empty(n)
    lat = np.empty(n)
    mag = np.empty(n)
    tmp = np.empty(n)
    hu = np.empty(n)
    for r in range(R):
        for i in range(n):
            w2 = w[r, i] * w[r, i]
            ax[i] = acc_x[r, i] + d * w2 + d * wd[r, i]
            ay[i] = acc_y[r, i] + 0.0 * w2 + 0.0 * wd[r, i]
        out[r, 0] = _filter_within(ax, m_acc, f_acc, w_acc, lon, bounds[0, 0], bounds[0, 1])
        out[r, 1] = _filter_within(ay, m_acc, f_acc, w_acc, lat, bounds[1, 0], bounds[1, 1])
        _band_row(mag_in[r], m_acc, f_acc, w_acc, mag)
        _round8(mag)
        out[r, 2] = _filter_within(mag, m_jerk, f_jerk, w_jerk, tmp, bounds[2, 0], bounds[2, 1])
        out[r, 3] = _filter_within(lon, m_jerk, f_jerk, w_jerk, tmp, bounds[3, 0], bounds[3, 1])
        # _phase_unwrap: h - 2 pi cumsum(round(diff(h) / (2 pi)))
        adj = 0.0
        hu[0] = heading[r, 0] - _TWO_PI * adj
        for i in range(1, n):
            adj += np.rint((heading[r, i] - heading[r, i - 1]) / _TWO_PI)
            hu[i] = heading[r, i] - _TWO_PI * adj
        out[r, 4] = _filter_within(hu, m_yacc, f_yacc, w_yaw, tmp, bounds[4, 0], bounds[4, 1])
        out[r, 5] = _filter_within(hu, m_yrate, f_yrate, w_yaw, tmp, bounds[5, 0], bounds[5, 1])
    return out


def _comfort_of_numpy(acc_x, acc_y, w, wd, heading, dt, vehicle):
    """`comfort_checks` from the five state columns it reads ([..., T] each), in numpy: the reference
    `_comfort_of`'s kernel is tested against."""
    ax, ay = _center_accelerations(acc_x, acc_y, w, wd, vehicle)
    lon = _savgol_accel(ax)
    lat = _savgol_accel(ay)
    mag = _savgol_accel(np.hypot(acc_x, acc_y))
    # pdm_comfort_metrics._extract_ego_jerk defaults: window_length 15, poly_order 2, decimals 8
    jerk = np.round(_derivative(mag, dt, 15, 2, 1), 8)
    lon_jerk = np.round(_derivative(lon, dt, 15, 2, 1), 8)
    yaw_acc = _yaw_rate_of(heading, dt, deriv=2, poly=3)
    yaw_rate = _yaw_rate_of(heading, dt)
    return np.stack([_within(m, lo, hi) for m, (lo, hi) in zip((lon, lat, jerk, lon_jerk, yaw_acc, yaw_rate),
                                                                 _COMFORT_BOUNDS)], axis=-1)


def _history_comfort(scene, states, vehicle, dt=0.1):
    """PDMScorer._calculate_history_comfort: the human past is prepended; 1 when there is none."""
    if scene.human_past_states is None or len(scene.human_past_states) == 0:
        return np.ones(len(states))
    hist = np.asarray(scene.human_past_states, dtype=np.float64)
    N, H, T = len(states), len(hist), states.shape[1]
    cols = []
    for c in (ACCELERATION_X, ACCELERATION_Y, ANGULAR_VELOCITY, ANGULAR_ACCELERATION, HEADING):  # what comfort reads
        col = np.empty((N, H + T))
        col[:, :H] = hist[:, c]
        col[:, H:] = states[:, :, c]
        cols.append(col)
    return _comfort_of(*cols, dt, vehicle).all(axis=-1).astype(np.float64)


def human_past_for_hc(past_states: np.ndarray, past_times_us: np.ndarray) -> np.ndarray:
    """NAVSIM's sampling of the human past for HC: every 0.1 s from its start, excluding its end and the last sample
    (`arange(start, end, 0.1 s)[:-1]`), linearly interpolated."""
    t = np.asarray(past_times_us, dtype=np.int64)
    q = np.arange(t[0], t[-1], 100_000, dtype=np.int64)[:-1]
    q = np.clip(q, t[0], t[-1])
    s = np.asarray(past_states, dtype=np.float64)
    out = np.empty((len(q), s.shape[1]))
    for k in range(s.shape[1]):
        col = np.unwrap(s[:, k]) if k == HEADING else s[:, k]
        out[:, k] = np.interp(q, t, col)
    out[:, HEADING] = (out[:, HEADING] + np.pi) % (2 * np.pi) - np.pi
    return out


def _ec_features(states, dt):
    # the same extractors as HC (pdm_comfort_metrics: acceleration window 8, jerk window 15, orders 2, decimals 8)
    mag = _savgol_accel(np.hypot(states[..., ACCELERATION_X], states[..., ACCELERATION_Y]))
    return {"acceleration": mag, "jerk": np.round(_derivative(mag, dt, 15, 2, 1), 8),
            "yaw_rate": _yaw_rate(states, dt), "yaw_accel": _yaw_rate(states, dt, deriv=2)}


def two_frame_extended_comfort(current: np.ndarray, previous: np.ndarray, dt: float = 0.1,
                               frame_gap_s: float = 0.5) -> np.ndarray:
    """scene_aggregator._compute_two_frame_comfort + ego_is_two_frame_extended_comfort: the current simulated
    states [:-k] against the previous frame's [k:] (k = gap / dt, 36 states for 41), RMS of the feature
    differences within 0.7 m/s^2, 0.5 m/s^3, 0.1 rad/s, 0.1 rad/s^2. Returns [N] in {0, 1}."""
    if not 0 < frame_gap_s < C.EC_MAX_FRAME_GAP_S:
        raise ValueError(f"frame_gap_s must be in (0, {C.EC_MAX_FRAME_GAP_S}), got {frame_gap_s}")
    k = int(round(frame_gap_s / dt))
    cur = np.asarray(current, dtype=np.float64)[:, :-k]
    prev = np.asarray(previous, dtype=np.float64)[:, k:]
    f1, f2 = _ec_features(cur, dt), _ec_features(prev, dt)

    def rms(x):
        return np.sqrt(np.mean(x ** 2, axis=1))

    ok = ((rms(f1["acceleration"] - f2["acceleration"]) <= C.EC_ACCELERATION_THRESHOLD)
          & (rms(f1["jerk"] - f2["jerk"]) <= C.EC_JERK_THRESHOLD)
          & (rms(f1["yaw_rate"] - f2["yaw_rate"]) <= C.EC_YAW_RATE_THRESHOLD)
          & (rms(f1["yaw_accel"] - f2["yaw_accel"]) <= C.EC_YAW_ACCEL_THRESHOLD))
    return ok.astype(np.float64)


# ---------------------------------------------------------------------------------------------- human filter
FILTERED_COLUMNS = ("no_at_fault_collisions", "drivable_area_compliance", "driving_direction_compliance",
                    "traffic_light_compliance", "ego_progress", "time_to_collision_within_bound", "lane_keeping",
                    "history_comfort")


@dataclass(frozen=True)
class FilteredScores:
    scores: PlanScores  # the visible columns after the filter
    final: np.ndarray  # the EPDMS the leaderboard counts


def human_filter(agent: PlanScores, human: PlanScores, variant: str = "fixed",
                 config: C.ScorerConfig = C.ScorerConfig(), columns=FILTERED_COLUMNS) -> FilteredScores:
    """NAVSIM's human false-positive filter (navsim/evaluate/pdm_score.py): every sub-metric column where the human's
    score is exactly 0 becomes 1 for the agent. `variant="fixed"` (default, NAVSIM since 2025-09-29, issue #151)
    recomputes the products and the score from the filtered columns; `variant="pre_fix"` reproduces the earlier code
    (SimScale's included): the visible columns change but the final score stays unfiltered. `columns`: NAVSIM's
    eight by default; a subset applies the rule to those only (the experts filter TLC alone)."""
    if variant not in ("fixed", "pre_fix"):
        raise ValueError(f"variant must be 'fixed' or 'pre_fix', got {variant!r}")
    if len(human) != 1 and len(human) != len(agent):
        raise ValueError("human scores must have one row or one per agent row")
    if not set(columns) <= set(FILTERED_COLUMNS):
        raise ValueError(f"columns must be among {FILTERED_COLUMNS}, got {tuple(columns)}")
    kw = {}
    for col in columns:
        hv = np.broadcast_to(getattr(human, col), (len(agent),))
        kw[col] = np.where(hv == 0, 1.0, getattr(agent, col))
    filtered = agent.replace(**kw)
    final = filtered.epdms(config) if variant == "fixed" else agent.epdms(config)
    return FilteredScores(filtered, final)
