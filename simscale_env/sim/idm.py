"""IDM-reactive agents with nuPlan's semantics, vectorized in numba.

Reference: nuplan/planning/simulation/observation/idm_agents.py, idm/idm_agents_builder.py, idm/idm_agent_manager.py,
idm/idm_agent.py, idm/idm_policy.py, idm/utils.py, simulation/path/utils.py and interpolated_path.py (devkit v1.2.2).
Constants in IDMConfig.

Spawn (iteration 0, vehicles only, in the log's row order; `get_starting_segment`): the box centre picks a lane (or,
inside an intersection, a lane connector) with the closest baseline heading; the box is snapped to the baseline
(`get_nearest_pose_from_position`) and dropped if it then overlaps the ego, a replayed object or an accepted agent;
speed = |(vx, vy)|; target speed = the segment's speed limit or 10 m/s. The agent's path is the segment's discrete
baseline as the devkit's `InterpolatedPath` (`create_path_from_se2`: repeated points and the last point dropped), its
progress the projection of its centre on the full baseline (which can lie beyond the path's end: the devkit then
re-bases its path on the path's last two points, one vertex behind).

Each step, in spawn order, every agent (`IDMAgentManager.propagate_agents`):
1. drops out for good if its centre is more than `radius` from the ego's centre;
2. grows its route (`IDMAgent.plan_route`) while the path to go is shorter than `minimum_path_length + v_target *
   headway`: the straightest (smallest |curvature| at the start) outgoing edge that is green (for connectors with a
   light) or not red; the path becomes the path to go plus the new segment's baseline, progress 0;
3. finds its leader as the devkit does: the path to go, buffered by half its width (flat caps, round joins), is
   intersected with the ego's box, the replayed objects' boxes, the other agents' footprints (their box united with
   their path ahead for `v * headway` buffered by half their width, as left by their last update) and the stop-line
   polygons of the red connectors on its route; the leader is the nearest of those by polygon distance from the
   agent's own footprint, its speed projected on the agent's heading (negative when it comes towards it; 0 for stop
   lines and replayed objects); without a leader it stops at the end of its path;
4. IDM update (forward Euler): s* = s0 + vT + v(v - v_l)/(2 sqrt(ab)), a = a_max (1 - (v/v0)^4 - (s*/max(gap - l_r,
   s0))^2) clipped to [-b, a_max]; progress += v dt; v = max(v + a dt, 0); v0 is the speed limit of the route's last
   segment when positive.
Agents are updated one after another and each sees the footprints the others already have (as in the devkit).

Geometry is array code reproducing the shapely/GEOS polygons the devkit builds (`path.buffer(width / 2,
cap_style=flat)`, GEOS 3.11 as shapely 2.0 ships it): a buffered polyline is a set of convex pieces, each segment's
rectangle and, on the outer side of each turn, GEOS's fillet (16 segments per quarter circle, its point positions,
its straight joins of nearly parallel offsets), clipped at the flat caps where an inner corner overshoots them (and
with the sliver GEOS keeps there when the offsets do not meet). Intersections are separating-axis tests and distances
vertex-to-edge minima over the pieces; only bounds-overlapping pieces are built and compared. GEOS's input-line
simplification only removes vertices within 1 % of the half-width of the previous one and is not reproduced. Leaders
at exactly the same distance (overlapping footprints) go to the first in the order agents (spawn order), ego,
replayed objects, stop lines; the devkit's STRtree `nearest` breaks such ties by its tree layout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import shapely
from numba import njit

from ..data.schema import BARRIER, BICYCLE, CZONE_SIGN, GENERIC_OBJECT, PEDESTRIAN, TRAFFIC_CONE
from ..map.map_api import MapAPI, MapLayer
from .lanegraph import LaneGraph, lane_graph

log = logging.getLogger(__name__)

# nuplan/planning/script/config/simulation/observation/idm_agents_observation.yaml and idm_agents_builder.py
DEVKIT_OPEN_LOOP_TYPES = (PEDESTRIAN, BARRIER, CZONE_SIGN, TRAFFIC_CONE, GENERIC_OBJECT)
# ours: cyclists are replayed too, instead of vanishing as they do in nuPlan's reactive mode. Issue 3 asks for
# nuPlan's semantics (replayed objects are leaders). NAVSIM's navsim_IDM_traffic_agents.yaml instead sets
# open_loop_detections_types: [] (its agents do not see pedestrians or static objects); here this one set decides both
# what is replayed and what the agents yield to
OPEN_LOOP_TYPES = (PEDESTRIAN, BICYCLE, BARRIER, CZONE_SIGN, TRAFFIC_CONE, GENERIC_OBJECT)
# nuplan/planning/simulation/observation/idm/idm_policy.py IDMPolicy.idm_model: acceleration_exponent = 4
IDM_ACCELERATION_EXPONENT = 4
# nuplan/planning/simulation/observation/idm/idm_agent.py IDMAgent(max_route_len=5)
R_MAX = 5
# nuplan/planning/simulation/observation/idm/utils.py create_path_from_se2: np.isclose(progress_diff, 0.0) (atol)
REPEATED_POINT_ATOL = 1e-8
# navsim/planning/simulation/observation/navsim_idm_agents.py NavsimIDMAgents.get_observation: a vehicle is
# stationary below 0.1 m/s
NAVSIM_STATIONARY_SPEED = 0.1


@dataclass(frozen=True)
class IDMConfig:
    """IDM agents' settings; defaults are nuplan-devkit's idm_agents_observation.yaml, except `open_loop_types` and
    `snap_threshold` (see the module constants; `DEVKIT_OPEN_LOOP_TYPES` and None give the devkit's)."""

    target_velocity: float = 10.0
    min_gap_to_lead_agent: float = 1.0
    headway_time: float = 1.5
    accel_max: float = 1.0
    decel_max: float = 2.0
    minimum_path_length: float = 20.0
    radius: float = 100.0
    open_loop_types: tuple = OPEN_LOOP_TYPES
    # NAVSIM's navsim_IDM_traffic_agents.yaml idm_snap_threshold: a vehicle further than this from the chosen
    # baseline is not made an IDM agent. nuPlan has no threshold (None).
    snap_threshold: float | None = 3.0
    # nuPlan: every step each agent extends its route (`plan_route`, by the traffic lights) and stops at the stop
    # lines of red connectors on it. NAVSIM's NavsimIDMTrafficAgents passes no traffic-light status (its MetricCache
    # has none), so `plan_route` and the stop lines are skipped: its agents stop at the end of their first lane and
    # ignore red lights (False)
    extend_route: bool = True
    # NAVSIM's NavsimIDMAgents(add_open_loop_parked_vehicles=True): vehicles not made IDM agents are shown static at
    # their current pose when they stand still off the lanes or sit further than the snap threshold from their
    # baseline, unless they overlap an active agent (see `navsim_parked_vehicles`). nuPlan drops them (False)
    add_open_loop_parked_vehicles: bool = False


# NAVSIM's reactive traffic (navsim/planning/script/config/common/traffic_agents_policy/navsim_IDM_traffic_agents.yaml,
# navsim/traffic_agents_policies/navsim_IDM_traffic_agents.py, navsim/planning/simulation/observation/
# navsim_idm_agents.py and navsim_idm/): IDMAgents(10, 1.0, 1.5, 1.0, 2.0, open_loop_detections_types=[],
# minimum_path_length=20, radius=100, add_open_loop_parked_vehicles=True, idm_snap_threshold=3.0), no traffic-light
# status (no route extension, no stop lines), a fixed 0.1 s step. Not reproduced: NAVSIM simplifies every occupancy
# geometry with tolerance 1e-5 m (navsim_idm_agent_manager.simplify_occupancy_map_geometries), which moves no
# vertex by more than 1e-5 m.
NAVSIM_IDM = IDMConfig(open_loop_types=(), snap_threshold=3.0, extend_route=False, add_open_loop_parked_vehicles=True)


@dataclass(frozen=True, eq=False)
class IDMAgents:
    """State of the IDM agents (struct of arrays, spawn order). `track` indexes the scenario's AgentTracks.

    Each agent's devkit `InterpolatedPath` is `path[a, :n_path[a]]` (x, y, heading, progress); `s` is its progress
    on it (unbounded, as the devkit's state), `pose` the box centre the devkit reports (its cached `to_se2`). `box`
    and `foot` (polyline of the path ahead for `v * headway`, `n_foot` points, 0 at spawn) are the footprint the other
    agents see."""

    track: np.ndarray  # [A] int64
    alive: np.ndarray  # [A] bool
    path: np.ndarray  # [A, NP, 4] x, y, heading, progress
    n_path: np.ndarray  # [A]
    route: np.ndarray  # [A, R_MAX] nuPlan's route deque (lane-graph indices)
    n_route: np.ndarray
    s: np.ndarray  # progress on the path
    v: np.ndarray
    target: np.ndarray
    length: np.ndarray
    width: np.ndarray
    height: np.ndarray
    pose: np.ndarray  # [A, 3] box centre pose
    box: np.ndarray  # [A, 4, 2] footprint box
    foot: np.ndarray  # [A, NP, 2] footprint path polyline
    n_foot: np.ndarray  # [A]
    # the leader of the last step: kind (0 none, 1 agent, 2 ego, 3 replayed object, 4 stop line), its index (agent
    # row, object row, stop triangle), the polygon gap and its projected speed
    lead_kind: np.ndarray  # [A] int64
    lead_index: np.ndarray  # [A] int64
    lead_gap: np.ndarray  # [A]
    lead_speed: np.ndarray  # [A]

    def copy(self, share: tuple[str, ...] = ()) -> "IDMAgents":
        """A copy of every array but those named in `share`, which the copy shares with this state."""
        new = object.__new__(IDMAgents)  # a frozen dataclass: its fields set as its __init__ would, cheaper
        new.__dict__.update({k: getattr(self, k) if k in share else getattr(self, k).copy()
                             for k in self.__dataclass_fields__})
        return new

    def slim(self) -> "IDMAgents":
        """The state without its paths, footprints and routes (zero-length arrays; the rest shared, not copied): what
        observing and scoring a past state read (poses, speeds, sizes, who is alive), a few kB instead of the paths'
        MBs. `step_agents` refuses it."""
        A = len(self.alive)
        new = object.__new__(IDMAgents)  # a frozen dataclass: its fields set as dataclasses.replace would, cheaper
        new.__dict__.update(self.__dict__, path=np.zeros((A, 0, 4)), foot=np.zeros((A, 0, 2)),
                            route=np.zeros((A, 0), np.int64))
        return new

    @property
    def num_alive(self) -> int:
        return int(self.alive.sum())

    @property
    def capacity(self) -> int:
        return int(self.path.shape[1])

    def grown(self, capacity: int, foot_capacity: int) -> "IDMAgents":
        """A copy of the state with room for `capacity` path points and `foot_capacity` footprint points per
        agent."""
        A, n = self.path.shape[:2]
        path = np.zeros((A, max(capacity, n), 4))
        path[:, :n] = self.path
        nf = self.foot.shape[1]
        foot = np.zeros((A, max(foot_capacity, nf), 2))
        foot[:, :nf] = self.foot
        return replace(self.copy(), path=path, foot=foot)


# ------------------------------------------------------------------------------------------------ path kernels
@njit(cache=True, inline="always")
def _principal(a):
    """nuplan principal_value: wrap to [-pi, pi)."""
    return (a + np.pi) % (2.0 * np.pi) - np.pi


@njit(cache=True, inline="always")
def _unwrap_step(d):
    """np.unwrap's correction of one heading difference."""
    if abs(d) < np.pi:
        return d
    dm = (d + np.pi) % (2.0 * np.pi) - np.pi
    if dm == -np.pi and d > 0:
        dm = np.pi
    return dm


@njit(cache=True)
def _state_at(path, n, p):
    """InterpolatedPath.get_state_at_progress: scipy interp1d (searchsorted left, clipped to [1, n-1]) on x, y and on
    the unwrapped heading, wrapped back."""
    lo_i = 1
    hi_i = n - 1
    while lo_i < hi_i:  # first k in [1, n-1] with progress[k] >= p
        mid = (lo_i + hi_i) // 2
        if path[mid, 3] < p:
            lo_i = mid + 1
        else:
            hi_i = mid
    k = lo_i
    x0 = path[k - 1, 3]
    x1 = path[k, 3]
    dx = x1 - x0
    t = p - x0
    x = (path[k, 0] - path[k - 1, 0]) / dx * t + path[k - 1, 0]
    y = (path[k, 1] - path[k - 1, 1]) / dx * t + path[k - 1, 1]
    h0 = path[k - 1, 2]
    h1 = h0 + _unwrap_step(path[k, 2] - h0)
    h = _principal((h1 - h0) / dx * t + h0)
    return x, y, h


@njit(cache=True, inline="always")
def _clamp(path, n, p):
    lo = path[0, 3]
    hi = path[n - 1, 3]
    return max(lo, min(p, hi))


@njit(cache=True, inline="always")
def _first_above(path, n, p, strict=True):
    """The first k in [0, n] with progress path[k, 3] > p (`strict`; else >= p), by bisection: progress never
    decreases along a path, so these are the indices where the devkit's linear scans stop."""
    lo = 0
    hi = n
    while lo < hi:
        mid = (lo + hi) // 2
        if path[mid, 3] < p or (strict and path[mid, 3] == p):
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def _trim_up_to(path, n, p, out, cols=3):
    """trim_path_up_to_progress: [state at p] + the points beyond p, or the last two points, into `out`: x, y and
    heading (`cols` 3) or x, y only (2: the path to go, as the leader search reads it). Returns the count."""
    k = _first_above(path, n, p)
    if k == n:
        for j in range(cols):
            out[0, j] = path[n - 2, j]
            out[1, j] = path[n - 1, j]
        return 2
    x, y, h = _state_at(path, n, p)
    out[0, 0] = x
    out[0, 1] = y
    if cols > 2:
        out[0, 2] = h
    m = 1
    for q in range(k, n):
        for j in range(cols):
            out[m, j] = path[q, j]
        m += 1
    return m


@njit(cache=True)
def _trim(path, n, start, end, out):
    """trim_path: [state at start] + the points strictly between + [state at end] (or the first / last two points).
    Writes x, y into `out`; returns the count, or -1 when `out` is too short."""
    front = _first_above(path, n, start)
    if front == n:
        out[0, 0] = path[n - 2, 0]
        out[0, 1] = path[n - 2, 1]
        out[1, 0] = path[n - 1, 0]
        out[1, 1] = path[n - 1, 1]
        return 2
    tail = _first_above(path, n, end, False) - 1  # the last point before end
    if tail < 0:
        out[0, 0] = path[0, 0]
        out[0, 1] = path[0, 1]
        out[1, 0] = path[1, 0]
        out[1, 1] = path[1, 1]
        return 2
    if tail - front + 3 > out.shape[0]:
        return -1
    x, y, _ = _state_at(path, n, start)
    out[0, 0] = x
    out[0, 1] = y
    m = 1
    for q in range(front, tail + 1):
        out[m, 0] = path[q, 0]
        out[m, 1] = path[q, 1]
        m += 1
    x, y, _ = _state_at(path, n, end)
    out[m, 0] = x
    out[m, 1] = y
    return m + 1


@njit(cache=True)
def _create_path(states, m, path):
    """create_path_from_se2: cumulative progress, points followed by a repeated one dropped, the last point dropped.
    Returns the count written into `path` (x, y, heading, progress)."""
    prog = 0.0
    n = 0
    for k in range(m - 1):
        dx = states[k + 1, 0] - states[k, 0]
        dy = states[k + 1, 1] - states[k, 1]
        nxt = prog + np.sqrt(dx * dx + dy * dy)
        if abs(nxt - prog) > REPEATED_POINT_ATOL:
            path[n, 0] = states[k, 0]
            path[n, 1] = states[k, 1]
            path[n, 2] = states[k, 2]
            path[n, 3] = prog
            n += 1
        prog = nxt
    return n


# ------------------------------------------------------------------------------------------------ geometry kernels
@njit(cache=True, inline="always")
def _pt_seg_d2(px, py, ax, ay, bx, by):
    dx = bx - ax
    dy = by - ay
    l2 = dx * dx + dy * dy
    rx = px - ax
    ry = py - ay
    t = 0.0
    if l2 > 0.0:
        t = (rx * dx + ry * dy) / l2
        if t < 0.0:
            t = 0.0
        elif t > 1.0:
            t = 1.0
    ex = rx - t * dx
    ey = ry - t * dy
    return ex * ex + ey * ey


@njit(cache=True, inline="always")
def _quads_overlap(p, q):
    """Separating-axis test of two convex quads (triangles as quads with a repeated vertex); touching overlaps."""
    for which in range(2):
        a = p if which == 0 else q
        for k in range(4):
            ex = a[(k + 1) % 4, 0] - a[k, 0]
            ey = a[(k + 1) % 4, 1] - a[k, 1]
            if ex == 0.0 and ey == 0.0:
                continue
            nx = -ey
            ny = ex
            pmin = 1e300
            pmax = -1e300
            qmin = 1e300
            qmax = -1e300
            for j in range(4):
                v = p[j, 0] * nx + p[j, 1] * ny
                pmin = min(pmin, v)
                pmax = max(pmax, v)
                w = q[j, 0] * nx + q[j, 1] * ny
                qmin = min(qmin, w)
                qmax = max(qmax, w)
            if pmax < qmin or qmax < pmin:
                return False
    return True


@njit(cache=True, inline="always")
def _quad_quad_sep(p, q):
    """Distance between two convex quads known not to overlap: the least vertex-to-edge distance."""
    best = 1e300
    for k in range(4):
        for j in range(4):
            d = _pt_seg_d2(p[k, 0], p[k, 1], q[j, 0], q[j, 1], q[(j + 1) % 4, 0], q[(j + 1) % 4, 1])
            if d < best:
                best = d
            d = _pt_seg_d2(q[k, 0], q[k, 1], p[j, 0], p[j, 1], p[(j + 1) % 4, 0], p[(j + 1) % 4, 1])
            if d < best:
                best = d
    return np.sqrt(best)


@njit(cache=True, inline="always")
def _quad_quad_dist(p, q):
    if _quads_overlap(p, q):
        return 0.0
    return _quad_quad_sep(p, q)


# GEOS buffer parameters (shapely's defaults, as the devkit calls `buffer(width / 2, cap_style=flat)`):
# BufferParameters quadrantSegments = 16 (fillet angle quantum pi / 2 / 16), OffsetSegmentGenerator
# OFFSET_SEGMENT_SEPARATION_FACTOR = 1e-3 (outside turns whose offset points are closer get no fillet)
_FILLET_ANGLE_QUANTUM = np.pi / 2.0 / 16.0
_OFFSET_SEGMENT_SEPARATION_FACTOR = 1.0e-3
# turns below this cosine are far from GEOS's first fillet point (nSegs = round(angle / quantum) >= 1 from half a
# quantum on): they are joined by one triangle without computing angles
_COS_NO_FILLET = float(np.cos(0.45 * _FILLET_ANGLE_QUANTUM))


@njit(cache=True, inline="always")
def _put_quad(out, bb, c, x0, y0, x1, y1, x2, y2, x3, y3):
    out[c, 0, 0] = x0
    out[c, 0, 1] = y0
    out[c, 1, 0] = x1
    out[c, 1, 1] = y1
    out[c, 2, 0] = x2
    out[c, 2, 1] = y2
    out[c, 3, 0] = x3
    out[c, 3, 1] = y3
    bb[c, 0] = min(min(x0, x1), min(x2, x3))
    bb[c, 1] = min(min(y0, y1), min(y2, y3))
    bb[c, 2] = max(max(x0, x1), max(x2, x3))
    bb[c, 3] = max(max(y0, y1), max(y2, y3))


@njit(cache=True)
def _emit_clipped(out, bb, c, qx, qy, planes, n_planes):
    """Emit the convex quad (qx, qy) [4] clipped to the half-planes (p - o) . n >= 0 of `planes[:n_planes]` (rows
    ox, oy, nx, ny), fan-split into quads / triangles. Returns the new count, or -1 when `out` is full."""
    cap = out.shape[0]
    inside = True
    for h in range(n_planes):
        for q in range(4):
            if (qx[q] - planes[h, 0]) * planes[h, 2] + (qy[q] - planes[h, 1]) * planes[h, 3] < 0.0:
                inside = False
                break
    if inside:  # the common case: nothing to clip
        if c >= cap:
            return -1
        _put_quad(out, bb, c, qx[0], qy[0], qx[1], qy[1], qx[2], qy[2], qx[3], qy[3])
        return c + 1
    px = np.empty(12)
    py = np.empty(12)
    nx_ = np.empty(12)
    ny_ = np.empty(12)
    k = 4
    for q in range(4):
        px[q] = qx[q]
        py[q] = qy[q]
    for h in range(n_planes):
        ox = planes[h, 0]
        oy = planes[h, 1]
        dx = planes[h, 2]
        dy = planes[h, 3]
        inside = True
        for q in range(k):
            if (px[q] - ox) * dx + (py[q] - oy) * dy < 0.0:
                inside = False
                break
        if inside:
            continue
        m = 0
        for q in range(k):
            ax = px[q]
            ay = py[q]
            bx = px[(q + 1) % k]
            by = py[(q + 1) % k]
            fa = (ax - ox) * dx + (ay - oy) * dy
            fb = (bx - ox) * dx + (by - oy) * dy
            if fa >= 0.0:
                nx_[m] = ax
                ny_[m] = ay
                m += 1
            if (fa >= 0.0) != (fb >= 0.0):
                t = fa / (fa - fb)
                nx_[m] = ax + t * (bx - ax)
                ny_[m] = ay + t * (by - ay)
                m += 1
        k = m
        for q in range(k):
            px[q] = nx_[q]
            py[q] = ny_[q]
        if k < 3:
            return c
    if k == 4:
        if c >= cap:
            return -1
        _put_quad(out, bb, c, px[0], py[0], px[1], py[1], px[2], py[2], px[3], py[3])
        return c + 1
    for q in range(1, k - 1):
        if c >= cap:
            return -1
        _put_quad(out, bb, c, px[0], py[0], px[q], py[q], px[q + 1], py[q + 1], px[q + 1], py[q + 1])
        c += 1
    return c


@njit(cache=True, inline="always")
def _orient(ax, ay, bx, by, cx, cy):
    v = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    return 1 if v > 0.0 else (-1 if v < 0.0 else 0)


@njit(cache=True)
def _segments_intersect(ax, ay, bx, by, cx, cy, dx, dy):
    o1 = _orient(ax, ay, bx, by, cx, cy)
    o2 = _orient(ax, ay, bx, by, dx, dy)
    o3 = _orient(cx, cy, dx, dy, ax, ay)
    o4 = _orient(cx, cy, dx, dy, bx, by)
    if o1 != o2 and o3 != o4:
        return True
    # collinear touching
    if o1 == 0 and min(ax, bx) <= cx <= max(ax, bx) and min(ay, by) <= cy <= max(ay, by):
        return True
    if o2 == 0 and min(ax, bx) <= dx <= max(ax, bx) and min(ay, by) <= dy <= max(ay, by):
        return True
    if o3 == 0 and min(cx, dx) <= ax <= max(cx, dx) and min(cy, dy) <= ay <= max(cy, dy):
        return True
    if o4 == 0 and min(cx, dx) <= bx <= max(cx, dx) and min(cy, dy) <= by <= max(cy, dy):
        return True
    return False


# GEOS OffsetSegmentGenerator: INSIDE_TURN_VERTEX_SNAP_DISTANCE_FACTOR = 1e-3, MAX_CLOSING_SEG_LEN_FACTOR = 80 (used
# for round joins with >= 8 quadrant segments)
_INSIDE_TURN_VERTEX_SNAP_DISTANCE_FACTOR = 1.0e-3
_CLOSING_SEG_LEN_FACTOR = 80.0


@njit(cache=True)
def _end_sliver(out, bb, c, ux, uy, vx, vy, ex, ey, hw, qx, qy):
    """The part of a buffered polyline beyond its flat cap at e (last segment v-e short after a turn at v) that GEOS
    keeps: where the inner offsets of u-v and v-e do not intersect, GEOS joins them through a closing segment near
    the corner, and the band of u-v's rectangle outside that segment and beyond the cap stays in the buffer."""
    d0x = vx - ux
    d0y = vy - uy
    d1x = ex - vx
    d1y = ey - vy
    cr = d0x * d1y - d0y * d1x
    if cr == 0.0:
        return c
    l0 = np.sqrt(d0x * d0x + d0y * d0y)
    l1 = np.sqrt(d1x * d1x + d1y * d1y)
    sg = 1.0 if cr > 0.0 else -1.0  # inner side: left for a left turn
    n0x = -d0y / l0 * hw * sg
    n0y = d0x / l0 * hw * sg
    n1x = -d1y / l1 * hw * sg
    n1y = d1x / l1 * hw * sg
    ax = vx + n0x
    ay = vy + n0y
    bx = vx + n1x
    by = vy + n1y
    cx = ex + n1x
    cy = ey + n1y
    # beyond the cap at all?
    if (ax - ex) * d1x + (ay - ey) * d1y <= 0.0:
        return c
    if np.sqrt((ax - bx) ** 2 + (ay - by) ** 2) < hw * _INSIDE_TURN_VERTEX_SNAP_DISTANCE_FACTOR:
        m0x = ax
        m0y = ay
        m1x = cx
        m1y = cy
    else:
        if _segments_intersect(ux + n0x, uy + n0y, ax, ay, bx, by, cx, cy):
            return c
        f = _CLOSING_SEG_LEN_FACTOR
        m0x = (f * ax + vx) / (f + 1.0)
        m0y = (f * ay + vy) / (f + 1.0)
        m1x = (f * bx + vx) / (f + 1.0)
        m1y = (f * by + vy) / (f + 1.0)
    planes = np.empty((2, 4))
    planes[0, 0] = ex
    planes[0, 1] = ey
    planes[0, 2] = d1x
    planes[0, 3] = d1y
    # the side of the closing line away from v
    lx = m1x - m0x
    ly = m1y - m0y
    nx = -ly
    ny = lx
    if (vx - m0x) * nx + (vy - m0y) * ny > 0.0:
        nx = -nx
        ny = -ny
    planes[1, 0] = m0x
    planes[1, 1] = m0y
    planes[1, 2] = nx
    planes[1, 3] = ny
    qx[0] = ux + n0x
    qy[0] = uy + n0y
    qx[1] = ax
    qy[1] = ay
    qx[2] = vx - n0x
    qy[2] = vy - n0y
    qx[3] = ux - n0x
    qy[3] = uy - n0y
    return _emit_clipped(out, bb, c, qx, qy, planes, 2)


@njit(cache=True, inline="always")
def _in_caps(x0, y0, x1, y1, x2, y2, x3, y3, sx, sy, sdx, sdy, ex, ey, edx, edy):
    """Whether the quad lies ahead of the start cap plane and behind the end cap plane (nothing to clip)."""
    return ((x0 - sx) * sdx + (y0 - sy) * sdy >= 0.0 and (x1 - sx) * sdx + (y1 - sy) * sdy >= 0.0
            and (x2 - sx) * sdx + (y2 - sy) * sdy >= 0.0 and (x3 - sx) * sdx + (y3 - sy) * sdy >= 0.0
            and (x0 - ex) * edx + (y0 - ey) * edy >= 0.0 and (x1 - ex) * edx + (y1 - ey) * edy >= 0.0
            and (x2 - ex) * edx + (y2 - ey) * edy >= 0.0 and (x3 - ex) * edx + (y3 - ey) * edy >= 0.0)


@njit(cache=True)
def _emit_slow(out, bb, c, x0, y0, x1, y1, x2, y2, x3, y3, caps):
    qx = np.empty(4)
    qy = np.empty(4)
    qx[0] = x0
    qy[0] = y0
    qx[1] = x1
    qy[1] = y1
    qx[2] = x2
    qy[2] = y2
    qx[3] = x3
    qy[3] = y3
    return _emit_clipped(out, bb, c, qx, qy, caps, 2)


@njit(cache=True)
def _build_pieces(has_box, box, line, n, hw, out, bb, start, filt, n_filt):
    """`_build_pieces_into` with its own scratch arrays."""
    return _build_pieces_into(has_box, box, line, n, hw, out, bb, start, filt, n_filt, np.empty(max(n, 1), np.int64),
                              np.empty(max(n, 1), np.bool_), np.empty(4), np.empty(4), np.empty((2, 4)))


@njit(cache=True)
def _build_pieces_into(has_box, box, line, n, hw, out, bb, start, filt, n_filt, idx, need, qx, qy, caps):
    """Convex pieces (quads; triangles repeat a vertex) of a box united with the polyline `line[:n]` buffered by hw
    as GEOS buffers it (flat caps, round joins of 16 segments per quarter circle): each segment's rectangle and, at
    each turning vertex, the fillet fan on the outer side. Written from `start`; returns the end, or -1 when `out`
    is full. With `n_filt` >= 0 only the pieces of segments whose bounds (+- hw) meet one of the bounds
    `filt[:n_filt]` are made (the others cannot touch those)."""
    cap = out.shape[0]
    c = start
    if has_box:
        if c >= cap:
            return -1
        _put_quad(out, bb, c, box[0, 0], box[0, 1], box[1, 0], box[1, 1], box[2, 0], box[2, 1], box[3, 0], box[3, 1])
        c += 1
    # GEOS drops repeated points
    m = 0
    for k in range(n):
        if m > 0 and line[k, 0] == line[idx[m - 1], 0] and line[k, 1] == line[idx[m - 1], 1]:
            continue
        idx[m] = k
        m += 1
    if m < 2:
        return c
    need[:m] = True
    if n_filt >= 0:
        for q in range(m - 1):
            a = idx[q]
            b = idx[q + 1]
            x0 = min(line[a, 0], line[b, 0]) - hw
            x1 = max(line[a, 0], line[b, 0]) + hw
            y0 = min(line[a, 1], line[b, 1]) - hw
            y1 = max(line[a, 1], line[b, 1]) + hw
            hit = False
            for f in range(n_filt):
                if not (x1 < filt[f, 0] or filt[f, 2] < x0 or y1 < filt[f, 1] or filt[f, 3] < y0):
                    hit = True
                    break
            need[q] = hit
    # GEOS's buffer never reaches beyond its flat caps (inner corners overshooting a cap form backward loops),
    # except for the slivers of `_end_sliver`
    caps[0, 0] = line[idx[0], 0]
    caps[0, 1] = line[idx[0], 1]
    caps[0, 2] = line[idx[1], 0] - line[idx[0], 0]
    caps[0, 3] = line[idx[1], 1] - line[idx[0], 1]
    caps[1, 0] = line[idx[m - 1], 0]
    caps[1, 1] = line[idx[m - 1], 1]
    caps[1, 2] = line[idx[m - 2], 0] - line[idx[m - 1], 0]
    caps[1, 3] = line[idx[m - 2], 1] - line[idx[m - 1], 1]
    sx = caps[0, 0]
    sy = caps[0, 1]
    sdx = caps[0, 2]
    sdy = caps[0, 3]
    ex = caps[1, 0]
    ey = caps[1, 1]
    edx = caps[1, 2]
    edy = caps[1, 3]
    if m >= 3:
        for end in range(2):
            if end == 0:
                if not need[m - 3]:
                    continue
                u = idx[m - 3]
                v = idx[m - 2]
                e = idx[m - 1]
            else:
                if not need[1]:
                    continue
                u = idx[2]
                v = idx[1]
                e = idx[0]
            c = _end_sliver(out, bb, c, line[u, 0], line[u, 1], line[v, 0], line[v, 1], line[e, 0], line[e, 1], hw,
                            qx, qy)
            if c < 0:
                return -1
    for q in range(m - 1):
        if not need[q]:
            continue
        a = idx[q]
        b = idx[q + 1]
        ax = line[a, 0]
        ay = line[a, 1]
        bx = line[b, 0]
        by = line[b, 1]
        dx = bx - ax
        dy = by - ay
        L = np.sqrt(dx * dx + dy * dy)
        ux = hw * dx / L  # OffsetSegmentGenerator::computeOffsetSegment (left side: (x - uy, y + ux))
        uy = hw * dy / L
        if _in_caps(ax - uy, ay + ux, bx - uy, by + ux, bx + uy, by - ux, ax + uy, ay - ux, sx, sy, sdx, sdy, ex, ey,
                    edx, edy):
            if c >= cap:
                return -1
            _put_quad(out, bb, c, ax - uy, ay + ux, bx - uy, by + ux, bx + uy, by - ux, ax + uy, ay - ux)
            c += 1
        else:
            c = _emit_slow(out, bb, c, ax - uy, ay + ux, bx - uy, by + ux, bx + uy, by - ux, ax + uy, ay - ux, caps)
            if c < 0:
                return -1
    for q in range(1, m - 1):
        if not (need[q - 1] or need[q]):
            continue
        a = idx[q - 1]
        v = idx[q]
        b = idx[q + 1]
        vx = line[v, 0]
        vy = line[v, 1]
        d0x = vx - line[a, 0]
        d0y = vy - line[a, 1]
        d1x = line[b, 0] - vx
        d1y = line[b, 1] - vy
        cr = d0x * d1y - d0y * d1x
        if cr == 0.0:
            continue
        l0 = np.sqrt(d0x * d0x + d0y * d0y)
        l1 = np.sqrt(d1x * d1x + d1y * d1y)
        if cr < 0.0:  # right turn: the fillet is on the left (traversed forwards)
            p0x = vx - hw * d0y / l0
            p0y = vy + hw * d0x / l0
            p1x = vx - hw * d1y / l1
            p1y = vy + hw * d1x / l1
        else:  # left turn: on the right (GEOS traverses the line backwards for it)
            p0x = vx + hw * d1y / l1
            p0y = vy - hw * d1x / l1
            p1x = vx + hw * d0y / l0
            p1y = vy - hw * d0x / l0
        # a turn well below half the fillet quantum gets no fillet points either (nSegs < 1): one triangle
        small = (d0x * d1x + d0y * d1y) > l0 * l1 * _COS_NO_FILLET
        if small or np.sqrt((p0x - p1x) ** 2 + (p0y - p1y) ** 2) < hw * _OFFSET_SEGMENT_SEPARATION_FACTOR:
            # GEOS joins the offset segments straight (no fillet points): the wedge between them stays covered
            if _in_caps(vx, vy, p0x, p0y, p1x, p1y, p1x, p1y, sx, sy, sdx, sdy, ex, ey, edx, edy):
                if c >= cap:
                    return -1
                _put_quad(out, bb, c, vx, vy, p0x, p0y, p1x, p1y, p1x, p1y)
                c += 1
            else:
                c = _emit_slow(out, bb, c, vx, vy, p0x, p0y, p1x, p1y, p1x, p1y, caps)
                if c < 0:
                    return -1
            continue
        # OffsetSegmentGenerator::addDirectedFillet, clockwise
        sa = np.arctan2(p0y - vy, p0x - vx)
        ea = np.arctan2(p1y - vy, p1x - vx)
        if sa <= ea:
            sa += 2.0 * np.pi
        total = abs(sa - ea)
        nseg = int(total / _FILLET_ANGLE_QUANTUM + 0.5)
        fx = p0x
        fy = p0y
        if nseg >= 1:
            inc = total / nseg
            for k in range(1, nseg):
                ang = sa - k * inc
                nx = vx + hw * np.cos(ang)
                ny = vy + hw * np.sin(ang)
                if _in_caps(vx, vy, fx, fy, nx, ny, nx, ny, sx, sy, sdx, sdy, ex, ey, edx, edy):
                    if c >= cap:
                        return -1
                    _put_quad(out, bb, c, vx, vy, fx, fy, nx, ny, nx, ny)
                    c += 1
                else:
                    c = _emit_slow(out, bb, c, vx, vy, fx, fy, nx, ny, nx, ny, caps)
                    if c < 0:
                        return -1
                fx = nx
                fy = ny
        if _in_caps(vx, vy, fx, fy, p1x, p1y, p1x, p1y, sx, sy, sdx, sdy, ex, ey, edx, edy):
            if c >= cap:
                return -1
            _put_quad(out, bb, c, vx, vy, fx, fy, p1x, p1y, p1x, p1y)
            c += 1
        else:
            c = _emit_slow(out, bb, c, vx, vy, fx, fy, p1x, p1y, p1x, p1y, caps)
            if c < 0:
                return -1
    return c


@njit(cache=True)
def _bounds(has_box, box, line, n, hw):
    """Bounds of a box united with a polyline buffered by hw (a superset of its pieces' bounds)."""
    x0 = 1e300
    y0 = 1e300
    x1 = -1e300
    y1 = -1e300
    if has_box:
        for k in range(4):
            x0 = min(x0, box[k, 0])
            y0 = min(y0, box[k, 1])
            x1 = max(x1, box[k, 0])
            y1 = max(y1, box[k, 1])
    for k in range(n):
        x0 = min(x0, line[k, 0] - hw)
        y0 = min(y0, line[k, 1] - hw)
        x1 = max(x1, line[k, 0] + hw)
        y1 = max(y1, line[k, 1] + hw)
    return x0, y0, x1, y1


@njit(cache=True)
def _quads_bounds(q, out):
    for k in range(q.shape[0]):
        out[k, 0] = min(min(q[k, 0, 0], q[k, 1, 0]), min(q[k, 2, 0], q[k, 3, 0]))
        out[k, 1] = min(min(q[k, 0, 1], q[k, 1, 1]), min(q[k, 2, 1], q[k, 3, 1]))
        out[k, 2] = max(max(q[k, 0, 0], q[k, 1, 0]), max(q[k, 2, 0], q[k, 3, 0]))
        out[k, 3] = max(max(q[k, 0, 1], q[k, 1, 1]), max(q[k, 2, 1], q[k, 3, 1]))


@njit(cache=True)
def _pieces_bounds(bb, a0, a1, out):
    out[0] = 1e300
    out[1] = 1e300
    out[2] = -1e300
    out[3] = -1e300
    for k in range(a0, a1):
        out[0] = min(out[0], bb[k, 0])
        out[1] = min(out[1], bb[k, 1])
        out[2] = max(out[2], bb[k, 2])
        out[3] = max(out[3], bb[k, 3])


@njit(cache=True, inline="always")
def _disjoint(a, b):
    return a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]


@njit(cache=True)
def _pieces_touch(P, Pbb, a0, a1, abb, Q, Qbb, b0, b1, bbb):
    """Whether the unions of pieces P[a0:a1] and Q[b0:b1] (bounds abb, bbb) intersect."""
    if _disjoint(abb, bbb):
        return False
    for i in range(a0, a1):
        if _disjoint(Pbb[i], bbb):
            continue
        for j in range(b0, b1):
            if _disjoint(Pbb[i], Qbb[j]):
                continue
            if _quads_overlap(P[i], Q[j]):
                return True
    return False


@njit(cache=True, inline="always")
def _gap2(ax0, ay0, ax1, ay1, bx0, by0, bx1, by1):
    gx = max(0.0, max(bx0 - ax1, ax0 - bx1))
    gy = max(0.0, max(by0 - ay1, ay0 - by1))
    return gx * gx + gy * gy


@njit(cache=True)
def _pieces_distance(P, Pbb, a0, a1, Q, Qbb, b0, b1):
    """Distance between the unions of pieces P[a0:a1] and Q[b0:b1]: a first bound from the pieces nearest by their
    bounds, then every pair whose bounds are nearer than the best so far."""
    px0 = py0 = 1e300
    px1 = py1 = -1e300
    for i in range(a0, a1):
        px0 = min(px0, Pbb[i, 0])
        py0 = min(py0, Pbb[i, 1])
        px1 = max(px1, Pbb[i, 2])
        py1 = max(py1, Pbb[i, 3])
    qx0 = qy0 = 1e300
    qx1 = qy1 = -1e300
    for j in range(b0, b1):
        qx0 = min(qx0, Qbb[j, 0])
        qy0 = min(qy0, Qbb[j, 1])
        qx1 = max(qx1, Qbb[j, 2])
        qy1 = max(qy1, Qbb[j, 3])
    # the piece of P nearest (by bounds) to Q, and the piece of Q nearest to that one
    bi = a0
    g = 1e300
    for i in range(a0, a1):
        gi = _gap2(Pbb[i, 0], Pbb[i, 1], Pbb[i, 2], Pbb[i, 3], qx0, qy0, qx1, qy1)
        if gi < g:
            g = gi
            bi = i
    bj = b0
    g = 1e300
    for j in range(b0, b1):
        gj = _gap2(Pbb[bi, 0], Pbb[bi, 1], Pbb[bi, 2], Pbb[bi, 3], Qbb[j, 0], Qbb[j, 1], Qbb[j, 2], Qbb[j, 3])
        if gj < g:
            g = gj
            bj = j
    best = _quad_quad_dist(P[bi], Q[bj])
    if best == 0.0:
        return 0.0
    b2 = best * best
    for i in range(a0, a1):
        if _gap2(Pbb[i, 0], Pbb[i, 1], Pbb[i, 2], Pbb[i, 3], qx0, qy0, qx1, qy1) >= b2:
            continue
        for j in range(b0, b1):
            if _gap2(Pbb[i, 0], Pbb[i, 1], Pbb[i, 2], Pbb[i, 3], Qbb[j, 0], Qbb[j, 1], Qbb[j, 2], Qbb[j, 3]) >= b2:
                continue
            gij = _gap2(Pbb[i, 0], Pbb[i, 1], Pbb[i, 2], Pbb[i, 3], Qbb[j, 0], Qbb[j, 1], Qbb[j, 2], Qbb[j, 3])
            d = _quad_quad_sep(P[i], Q[j]) if gij > 0.0 else _quad_quad_dist(P[i], Q[j])
            if d < best:
                best = d
                b2 = best * best
                if best == 0.0:
                    return 0.0
    return best


@njit(cache=True)
def _box_corners_one(x, y, h, length, width, out):
    c = np.cos(h)
    s = np.sin(h)
    hl = length / 2.0
    hw = width / 2.0
    # FL, RL, RR, FR (nuPlan OrientedBox), as _box_corners
    out[0, 0] = x + c * hl - s * hw
    out[0, 1] = y + s * hl + c * hw
    out[1, 0] = x - c * hl - s * hw
    out[1, 1] = y - s * hl + c * hw
    out[2, 0] = x - c * hl + s * hw
    out[2, 1] = y - s * hl - c * hw
    out[3, 0] = x + c * hl + s * hw
    out[3, 1] = y + s * hl - c * hw


# ------------------------------------------------------------------------------------------------ the step
@njit(cache=True)
def _idm_step(g_vtx_ptr, g_vx, g_vy, g_vh, g_speed, g_haslight, g_curv0, g_out_ptr, g_out_idx, g_stop_ptr, g_stop_tri,
              g_stop_bb, green, red, extend_route, ego_box, ego_cx, ego_cy, ego_speed, ego_heading, obj_boxes,
              alive, path, n_path, route, n_route, s, v, target, length, width, pose, box, foot, n_foot,
              lead_kind, lead_index, lead_gap, lead_speed, dt, min_gap, headway, a_max, b_max, min_path_len, radius,
              scratch_pieces, scratch_bb, scratch_togo, scratch_togo_bb):
    """One devkit `propagate_agents` call. Returns 0; 1 when a path outgrew the arrays, 2 when the footprint pieces
    outgrew `scratch_pieces`, 3 when a footprint outgrew `foot` (the caller retries on a fresh copy with more room)."""
    A = len(alive)
    NP = path.shape[1]
    sqrt_ab = np.sqrt(a_max * b_max)
    tmp = np.zeros((NP + 1, 4))
    togo_xy = np.zeros((NP + 1, 2))
    # 1. agents beyond the radius from the ego's centre are dropped for good
    for i in range(A):
        if alive[i] and np.sqrt((pose[i, 0] - ego_cx) ** 2 + (pose[i, 1] - ego_cy) ** 2) > radius:
            alive[i] = False
    # the occupancy map as convex pieces, made when first needed: agents' footprints (remade when an agent moves),
    # the ego, the replayed objects; bounds of all first
    FP = scratch_pieces
    FPbb = scratch_bb
    piece_cap = FP.shape[0]
    fp0 = np.zeros(A, dtype=np.int64)
    fp1 = np.zeros(A, dtype=np.int64)
    built = np.zeros(A, dtype=np.bool_)
    fbb = np.zeros((A, 4))
    fill = 0
    nofilt = np.zeros((1, 4))
    for j in range(A):
        if alive[j]:
            b4 = _bounds(True, box[j], foot[j], n_foot[j], width[j] / 2.0)
            fbb[j, 0], fbb[j, 1], fbb[j, 2], fbb[j, 3] = b4
    empty = np.zeros((1, 2))
    EP = np.empty((1, 4, 2))
    EP[0] = ego_box
    EPbb = np.empty((1, 4))
    _quads_bounds(EP, EPbb)
    K = obj_boxes.shape[0]
    OP = obj_boxes
    OPbb = np.empty((K, 4))
    _quads_bounds(OP, OPbb)
    TP = scratch_togo
    TPbb = scratch_togo_bb
    tbb = np.zeros(4)
    ST = g_stop_tri.shape[0]
    SP = g_stop_tri
    SPbb = g_stop_bb
    # candidates of one agent: kind (1 agent, 2 ego, 3 object, 4 stop triangle), index, bounds
    NW = max(NP, foot.shape[1]) + 8
    w_idx = np.empty(NW, dtype=np.int64)
    w_need = np.empty(NW, dtype=np.bool_)
    w_qx = np.empty(4)
    w_qy = np.empty(4)
    w_caps = np.empty((2, 4))
    cand_kind = np.empty(A + K + 1 + R_MAX * ST, dtype=np.int64)
    cand_idx = np.empty(A + K + 1 + R_MAX * ST, dtype=np.int64)
    cand_bb = np.empty((A + K + 1 + R_MAX * ST, 4))
    for i in range(A):
        if not alive[i]:
            continue
        n = n_path[i]
        # 2. route extension (IDMAgent.plan_route)
        if extend_route:
            while path[i, n - 1, 3] - s[i] < min_path_len + target[i] * headway:
                last = route[i, n_route[i] - 1]
                best = -1
                best_c = 1e300
                for q in range(g_out_ptr[last], g_out_ptr[last + 1]):
                    e = g_out_idx[q]
                    ok = green[e] if g_haslight[e] else not red[e]
                    if ok:
                        c = abs(g_curv0[e])
                        if c < best_c:
                            best_c = c
                            best = e
                if best < 0:
                    break
                if n_route[i] < R_MAX:
                    route[i, n_route[i]] = best
                    n_route[i] += 1
                else:
                    for q in range(R_MAX - 1):
                        route[i, q] = route[i, q + 1]
                    route[i, R_MAX - 1] = best
                m = _trim_up_to(path[i], n, _clamp(path[i], n, s[i]), tmp)
                a = g_vtx_ptr[best]
                b_ = g_vtx_ptr[best + 1]
                if m + b_ - a > NP + 1:
                    return 1
                for q in range(a, b_):
                    tmp[m, 0] = g_vx[q]
                    tmp[m, 1] = g_vy[q]
                    tmp[m, 2] = g_vh[q]
                    m += 1
                n = _create_path(tmp, m, path[i])
                n_path[i] = n
                s[i] = 0.0
        # 3. leader: what the buffered path to go touches, nearest to the agent's footprint
        hw = width[i] / 2.0
        m = _trim_up_to(path[i], n, _clamp(path[i], n, s[i]), togo_xy, 2)
        b4 = _bounds(False, box[i], togo_xy, m, hw)
        tbb[0], tbb[1], tbb[2], tbb[3] = b4
        nc = 0
        for j in range(A):
            if j != i and alive[j] and not _disjoint(tbb, fbb[j]):
                cand_kind[nc] = 1
                cand_idx[nc] = j
                cand_bb[nc] = fbb[j]
                nc += 1
        if not _disjoint(tbb, EPbb[0]):
            cand_kind[nc] = 2
            cand_idx[nc] = 0
            cand_bb[nc] = EPbb[0]
            nc += 1
        for o in range(K):
            if not _disjoint(tbb, OPbb[o]):
                cand_kind[nc] = 3
                cand_idx[nc] = o
                cand_bb[nc] = OPbb[o]
                nc += 1
        if extend_route:
            for q in range(n_route[i]):
                rl = route[i, q]
                if not red[rl]:
                    continue
                for t in range(g_stop_ptr[rl], g_stop_ptr[rl + 1]):
                    if not _disjoint(tbb, SPbb[t]):
                        cand_kind[nc] = 4
                        cand_idx[nc] = t
                        cand_bb[nc] = SPbb[t]
                        nc += 1
        best_d = 1e300
        best_v = 0.0
        best_h = 0.0
        kind = 0
        idx = -1
        hi_ = pose[i, 2]
        nt = 0
        i0 = 0
        i1 = 0
        if nc > 0:
            nt = _build_pieces_into(False, box[i], togo_xy, m, hw, TP, TPbb, 0, cand_bb, nc, w_idx, w_need, w_qx,
                                    w_qy, w_caps)
            if nt < 0:
                return 1
            _pieces_bounds(TPbb, 0, nt, tbb)
            if not built[i]:
                e = _build_pieces_into(True, box[i], foot[i], n_foot[i], hw, FP, FPbb, fill, nofilt, -1, w_idx, w_need,
                                       w_qx, w_qy, w_caps)
                if e < 0:
                    return 2
                fp0[i] = fill
                fp1[i] = e
                fill = e
                built[i] = True
            i0 = fp0[i]
            i1 = fp1[i]
        for c_ in range(nc):
            ck = cand_kind[c_]
            ci = cand_idx[c_]
            if ck == 1:
                if not built[ci]:
                    e = _build_pieces_into(True, box[ci], foot[ci], n_foot[ci], width[ci] / 2.0, FP, FPbb, fill,
                                           nofilt, -1, w_idx, w_need, w_qx, w_qy, w_caps)
                    if e < 0:
                        return 2
                    fp0[ci] = fill
                    fp1[ci] = e
                    fill = e
                    built[ci] = True
                if not _pieces_touch(TP, TPbb, 0, nt, tbb, FP, FPbb, fp0[ci], fp1[ci], fbb[ci]):
                    continue
                d = _pieces_distance(FP, FPbb, i0, i1, FP, FPbb, fp0[ci], fp1[ci])
                if d < best_d:
                    best_d = d
                    best_v = v[ci]
                    best_h = pose[ci, 2] - hi_
                    kind = 1
                    idx = ci
            elif ck == 2:
                if not _pieces_touch(TP, TPbb, 0, nt, tbb, EP, EPbb, 0, 1, EPbb[0]):
                    continue
                d = _pieces_distance(FP, FPbb, i0, i1, EP, EPbb, 0, 1)
                if d < best_d:
                    best_d = d
                    best_v = ego_speed
                    best_h = ego_heading - hi_
                    kind = 2
                    idx = 0
            elif ck == 3:
                if not _pieces_touch(TP, TPbb, 0, nt, tbb, OP, OPbb, ci, ci + 1, OPbb[ci]):
                    continue
                d = _pieces_distance(FP, FPbb, i0, i1, OP, OPbb, ci, ci + 1)
                if d < best_d:
                    best_d = d
                    best_v = 0.0
                    best_h = 0.0
                    kind = 3
                    idx = ci
            else:
                if not _pieces_touch(TP, TPbb, 0, nt, tbb, SP, SPbb, ci, ci + 1, SPbb[ci]):
                    continue
                d = _pieces_distance(FP, FPbb, i0, i1, SP, SPbb, ci, ci + 1)
                if d < best_d:
                    best_d = d
                    best_v = 0.0
                    best_h = 0.0
                    kind = 4
                    idx = ci
        if kind > 0:
            rel = best_d
            v_lead = best_v * np.cos(_principal(best_h))
            l_r = 0.0
        else:
            rel = path[i, n - 1, 3] - s[i]
            v_lead = 0.0
            l_r = length[i] / 2.0
        lead_kind[i] = kind
        lead_index[i] = idx
        lead_gap[i] = rel
        lead_speed[i] = v_lead
        # 4. IDM (IDMAgent.propagate, IDMPolicy.solve_forward_euler_idm_policy)
        sl = g_speed[route[i, n_route[i] - 1]]
        if sl > 0.0:
            target[i] = sl
        vi = v[i]
        s_star = min_gap + vi * headway + (vi * (vi - v_lead)) / (2.0 * sqrt_ab)
        s_alpha = max(rel - l_r, min_gap)
        acc = a_max * (1.0 - (vi / target[i]) ** IDM_ACCELERATION_EXPONENT - (s_star / s_alpha) ** 2)
        s[i] = s[i] + dt * vi
        vn = vi + dt * min(max(-b_max, acc), a_max)
        v[i] = vn if vn > 0.0 else 0.0
        # the box at the new progress and the projected footprint the others see
        x, y, h = _state_at(path[i], n, _clamp(path[i], n, s[i]))
        pose[i, 0] = x
        pose[i, 1] = y
        pose[i, 2] = h
        _box_corners_one(x, y, h, length[i], width[i], box[i])
        lo = _clamp(path[i], n, s[i] - length[i] / 2.0)
        hi = _clamp(path[i], n, s[i] + length[i] / 2.0 + v[i] * headway)
        nf = _trim(path[i], n, lo, hi, foot[i])
        if nf < 0:
            return 3
        n_foot[i] = nf
        built[i] = False
        b4 = _bounds(True, box[i], foot[i], n_foot[i], hw)
        fbb[i, 0], fbb[i, 1], fbb[i, 2], fbb[i, 3] = b4
    return 0


# ------------------------------------------------------------------------------------------------ python side
_CORNER_SIGNS = np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])  # (lon, lat): FL, RL, RR, FR


@njit(cache=True)
def _box_corners(x, y, h, length, width, signs, out):
    for i in range(x.shape[0]):
        c = np.cos(h[i])
        s = np.sin(h[i])
        hl = length[i] / 2
        hw = width[i] / 2
        for k in range(4):
            lo = signs[k, 0]
            la = signs[k, 1]
            out[i, k, 0] = x[i] + c * lo * hl - s * la * hw
            out[i, k, 1] = y[i] + s * lo * hl + c * la * hw


@njit(cache=True)
def _one_box(x, y, h, length, width, signs):
    """`_box_corners` of one box given as floats (the same arithmetic), without box_corners' array handling."""
    out = np.empty((4, 2))
    c = np.cos(h)
    s = np.sin(h)
    hl = length / 2
    hw = width / 2
    for k in range(4):
        lo = signs[k, 0]
        la = signs[k, 1]
        out[k, 0] = x + c * lo * hl - s * la * hw
        out[k, 1] = y + s * lo * hl + c * la * hw
    return out


def one_box_corners(x: float, y: float, h: float, length: float, width: float) -> np.ndarray:
    """Corners [4, 2] of one box: `box_corners(x, y, h, length, width)[0]`, bit for bit, at a fraction of its call
    cost (the ego's box, several times per step)."""
    return _one_box(float(x), float(y), float(h), float(length), float(width), _CORNER_SIGNS)


def box_corners(x, y, h, length, width) -> np.ndarray:
    """Corners [N, 4, 2] (FL, RL, RR, FR as nuPlan's OrientedBox) of boxes centred at (x, y) with heading h
    (scalars broadcast)."""
    args = [np.asarray(a, dtype=np.float64).reshape(-1) for a in (x, y, h, length, width)]
    n = len(args[0])
    if any(len(a) != n for a in args):  # scalars (or length-1 arrays) among arrays: broadcast
        args = np.broadcast_arrays(*args)
    x, y, h, length, width = (np.ascontiguousarray(a) for a in args)
    out = np.empty((x.shape[0], 4, 2))
    _box_corners(x, y, h, length, width, _CORNER_SIGNS, out)
    return out


def _nearest_pose(line, px, py, d=0.5):
    """nuPlan `get_nearest_pose_from_position` (heading from the projection to 0.5 m further)."""
    arc = line.project(shapely.Point(px, py))
    p1 = line.interpolate(arc)
    p2 = line.interpolate(arc + d)
    if p1.equals(p2):
        p2 = line.interpolate(arc - d)
        h = np.arctan2(p1.y - p2.y, p1.x - p2.x)
    else:
        h = np.arctan2(p2.y - p1.y, p2.x - p1.x)
    return arc, p1.x, p1.y, h


def starting_segment(m: MapAPI, x: float, y: float, h: float, lines: dict | None = None):
    """nuPlan `get_starting_segment` + `get_nearest_pose_from_position`: (lane id, progress, snapped x, y, heading) of
    a box centre, or None off the lanes and intersections."""
    lines = {} if lines is None else lines
    if m.objects_at(x, y, MapLayer.LANE):
        cands = m.objects_at(x, y, MapLayer.LANE)
    elif m.objects_at(x, y, MapLayer.INTERSECTION):
        cands = m.objects_at(x, y, MapLayer.LANE_CONNECTOR)
    else:
        return None
    if not cands:
        return None
    best = None
    for lid in cands:
        line = lines.setdefault(lid, shapely.LineString(m.lanes[lid].baseline.xy))
        arc, px, py, ph = _nearest_pose(line, x, y)
        diff = abs(ph - h)  # nuPlan compares raw headings
        if best is None or diff < best[0]:
            best = (diff, lid, arc, px, py, ph)
    return best[1:]


def _lane_states(g: LaneGraph, lane: int) -> np.ndarray:
    a, b = g.vtx_ptr[lane], g.vtx_ptr[lane + 1]
    return np.stack([g.vx[a:b], g.vy[a:b], g.vh[a:b], np.zeros(b - a)], -1)


def _initial_capacity(g: LaneGraph, lanes) -> int:
    """Path points per agent to start with: twice the longest starting segment (a path is the rest of one segment
    plus the next ones; a step that needs more grows the arrays)."""
    counts = np.diff(g.vtx_ptr)
    return int(max(64, 2 * max((counts[k] for k in lanes), default=0) + 16))


# footprint points per agent to start with (grown when a step needs more)
_FOOT_CAPACITY = 96


@dataclass(frozen=True, eq=False)
class SpawnCandidates:
    """The part of `spawn_agents` (and of `navsim_parked_vehicles`) that does not depend on the ego, for one set of
    vehicle boxes and replayed objects: each vehicle's starting segment, its snapped box and path, and which snapped
    boxes overlap a replayed object or each other. A simulation prepares it once per scenario (`prepare_spawn`), so
    a reset only checks the snapped boxes against the ego box; the agents are the same as without it."""

    boxes: dict
    segments: list  # per vehicle: `starting_segment` (None off the lanes and intersections)
    candidate: np.ndarray  # [N] bool: a starting segment within the snap threshold
    lane: np.ndarray  # [N] lane-graph index of the starting segment (-1 where no candidate)
    polygons: np.ndarray  # [N] shapely polygons of the snapped boxes (None where no candidate)
    corners: np.ndarray  # [N, 4, 2] snapped box corners
    hits_objects: np.ndarray  # [N] bool: the snapped box intersects a replayed object's box
    hits: list  # per vehicle: the (earlier and later) vehicles whose snapped boxes its snapped box intersects
    two_point: np.ndarray  # [N] bool: the starting segment's baseline has fewer than 3 points
    paths: list  # per candidate: its InterpolatedPath rows [n, 4] (None elsewhere)
    poses: np.ndarray  # [N, 3] the path pose at the clamped progress


def prepare_spawn(m: MapAPI, boxes: dict, open_loop_corners: np.ndarray,
                  config: IDMConfig = IDMConfig()) -> SpawnCandidates:
    """The ego-independent part of `spawn_agents` for these vehicles (`boxes`) and replayed objects."""
    g = lane_graph(m)
    n = len(boxes["x"])
    lines = {}
    segs, cand = [], np.zeros(n, dtype=bool)
    lane = np.full(n, -1, dtype=np.int64)
    corners = np.zeros((n, 4, 2))
    two_point = np.zeros(n, dtype=bool)
    paths: list = [None] * n
    poses = np.zeros((n, 3))
    for k in range(n):
        x, y, h = float(boxes["x"][k]), float(boxes["y"][k]), float(boxes["heading"][k])
        seg = starting_segment(m, x, y, h, lines)
        segs.append(seg)
        if seg is None:
            continue
        lid, arc, px, py, ph = seg
        if config.snap_threshold is not None and np.hypot(px - x, py - y) > config.snap_threshold:
            continue
        cand[k] = True
        lane[k] = g.index[lid]
        corners[k] = box_corners(px, py, ph, float(boxes["length"][k]), float(boxes["width"][k]))[0]
        two_point[k] = np.diff(g.vtx_ptr)[g.index[lid]] < 3
        if not two_point[k]:
            st = _lane_states(g, lane[k])
            buf = np.zeros((len(st), 4))
            npath = _create_path(st, len(st), buf)
            paths[k] = buf[:npath]
            poses[k] = _state_at(buf, npath, _clamp(buf, npath, arc))
    polys = np.full(n, None, dtype=object)
    idx = np.nonzero(cand)[0]
    hits_objects = np.zeros(n, dtype=bool)
    hits: list = [np.zeros(0, dtype=np.int64) for _ in range(n)]
    if len(idx):
        polys[idx] = shapely.polygons(corners[idx])
        ol = np.asarray(open_loop_corners, dtype=np.float64).reshape(-1, 4, 2)
        if len(ol):
            a, _ = shapely.STRtree(shapely.polygons(ol)).query(polys[idx], predicate="intersects")
            hits_objects[idx[a]] = True
        a, b = shapely.STRtree(polys[idx]).query(polys[idx], predicate="intersects")
        for i in range(len(idx)):
            hits[idx[i]] = np.sort(idx[b[a == i]])
    return SpawnCandidates(boxes, segs, cand, lane, polys, corners, hits_objects, hits, two_point, paths, poses)


def spawn_agents(m: MapAPI, boxes: dict, ego_box_corners: np.ndarray, open_loop_corners: np.ndarray,
                 ego_speed: float, config: IDMConfig = IDMConfig(),
                 prepared: SpawnCandidates | None = None) -> IDMAgents:
    """Build IDM agents from the vehicles of iteration 0 (`boxes`: arrays x, y, heading, vx, vy, length, width,
    height, track (column index), in the log's row order), as nuPlan's `build_idm_agents_on_map_rails`.
    `prepared`: `prepare_spawn(m, boxes, open_loop_corners, config)` computed beforehand (reused across egos)."""
    g = lane_graph(m)
    prep = prepared if prepared is not None else prepare_spawn(m, boxes, open_loop_corners, config)
    n = len(boxes["x"])
    idx = np.nonzero(prep.candidate)[0]
    hits_ego = np.zeros(n, dtype=bool)
    ego = shapely.polygons(np.asarray(ego_box_corners, dtype=np.float64).reshape(-1, 4, 2))
    if len(idx) and len(ego):
        hits_ego[idx] = shapely.intersects(prep.polygons[idx][:, None], ego[None, :]).any(axis=1)
    accepted = np.zeros(n, dtype=bool)
    rows = []
    for k in idx.tolist():
        # dropped if the snapped box overlaps the ego, a replayed object or an agent accepted before it
        if hits_ego[k] or prep.hits_objects[k] or accepted[prep.hits[k]].any():
            continue
        if prep.two_point[k]:
            # a two-point baseline leaves the devkit's InterpolatedPath one point (it asserts); not an agent here
            log.warning("vehicle %d: its starting segment %s has a two-point baseline; not made an IDM agent",
                        int(boxes["track"][k]), prep.segments[k][0])
            continue
        accepted[k] = True
        vx, vy = float(boxes["vx"][k]), float(boxes["vy"][k])
        speed = ego_speed if (np.isnan(vx) or np.isnan(vy)) else float(np.hypot(vx, vy))
        rows.append((int(boxes["track"][k]), int(prep.lane[k]), prep.segments[k][1], speed,
                     float(boxes["length"][k]), float(boxes["width"][k]), float(boxes["height"][k]), k))
    A = len(rows)
    NP = _initial_capacity(g, [r[1] for r in rows])
    path = np.zeros((A, NP, 4))
    n_path = np.zeros(A, dtype=np.int64)
    route = np.full((A, R_MAX), -1, dtype=np.int64)
    pose = np.zeros((A, 3))
    for a, r in enumerate(rows):
        p = prep.paths[r[7]]
        path[a, :len(p)] = p
        n_path[a] = len(p)
        route[a, 0] = r[1]
        # the devkit reports the agent at its path pose (`to_se2`: path interpolation at its clamped progress)
        pose[a] = prep.poses[r[7]]
    sel = np.array([r[7] for r in rows], dtype=np.int64)
    return IDMAgents(
        track=np.array([r[0] for r in rows], dtype=np.int64), alive=np.ones(A, dtype=bool), path=path, n_path=n_path,
        route=route, n_route=np.ones(A, dtype=np.int64), s=np.array([r[2] for r in rows], dtype=np.float64),
        v=np.array([r[3] for r in rows], dtype=np.float64),
        target=np.array([g.speed[r[1]] if g.speed[r[1]] > 0 else config.target_velocity for r in rows],
                        dtype=np.float64),
        length=np.array([r[4] for r in rows], dtype=np.float64), width=np.array([r[5] for r in rows], dtype=np.float64),
        height=np.array([r[6] for r in rows], dtype=np.float64), pose=pose,
        box=prep.corners[sel].reshape(A, 4, 2).copy(), foot=np.zeros((A, _FOOT_CAPACITY, 2)),
        n_foot=np.zeros(A, dtype=np.int64), lead_kind=np.zeros(A, dtype=np.int64),
        lead_index=np.full(A, -1, dtype=np.int64), lead_gap=np.zeros(A), lead_speed=np.zeros(A))


# room for the occupancy map's convex pieces in one step (grown for good when a step needs more)
_PIECE_CAPACITY = [16384]
_SCRATCH: dict = {}


def _scratch(shape) -> np.ndarray:
    """A reused work array of this shape (the kernel's scratch space; its contents never outlive a call, and the
    kernel holds the GIL, so calls never overlap)."""
    a = _SCRATCH.get(shape)
    if a is None:
        a = _SCRATCH[shape] = np.empty(shape)
    return a


def _needs_extension(agents: IDMAgents, config: IDMConfig, g: LaneGraph, green: np.ndarray, red: np.ndarray) -> bool:
    """Whether the kernel may write an agent's path (`_idm_step` step 2, on the input state as the kernel reads it:
    the radius cut before it only clears `alive`): an alive agent whose path ahead is shorter than the extension
    bound (with a margin against rounding) and whose route's last lane has an outgoing lane it may take (green where
    it has a light, else not red). Conservative: never False where the kernel writes."""
    return bool(_may_extend(agents.alive, agents.path, agents.n_path, agents.s, agents.target, agents.route,
                            agents.n_route, g.out_ptr, g.out_idx, g.has_light, green, red,
                            float(config.minimum_path_length), float(config.headway_time)))


@njit(cache=True)
def _may_extend(alive, path, n_path, s, target, route, n_route, out_ptr, out_idx, has_light, green, red, min_len,
                headway):
    for i in range(len(alive)):
        if not alive[i] or not path[i, n_path[i] - 1, 3] - s[i] < min_len + target[i] * headway + 1e-6:
            continue
        last = route[i, n_route[i] - 1]
        for q in range(out_ptr[last], out_ptr[last + 1]):
            e = out_idx[q]
            if (green[e] if has_light[e] else not red[e]):
                return True
    return False


def light_masks(m: MapAPI, green_ids, red_ids) -> tuple[np.ndarray, np.ndarray]:
    """(green, red): bool masks over the map's lane graph of the connectors with that light."""
    g = lane_graph(m)
    green = np.zeros(len(g.ids), dtype=bool)
    red = np.zeros(len(g.ids), dtype=bool)
    for ids, mask in ((green_ids, green), (red_ids, red)):
        for cid in ids:
            k = g.index.get(str(cid))
            if k is not None:
                mask[k] = True
    return green, red


# the arrays `_idm_step` only reads: a step's state shares them with its input
_NEVER_WRITTEN = ("track", "length", "width", "height")


def step_agents(m: MapAPI, agents: IDMAgents, *, ego_corners: np.ndarray, ego_center: np.ndarray, ego_speed: float,
                ego_heading: float, object_corners: np.ndarray, green_ids, red_ids, dt: float = 0.1,
                config: IDMConfig = IDMConfig(), masks: tuple | None = None) -> IDMAgents:
    """One step of all agents (a new IDMAgents; the input is not modified).

    `ego_corners` [4, 2] and `object_corners` [K, 4, 2]: the ego box and the replayed objects at the next
    iteration; `green_ids` / `red_ids`: connector ids with that light at the next iteration (or `masks`, their
    `light_masks(m, green_ids, red_ids)` computed beforehand); `ego_speed` and `ego_heading`: the ego's rear-axle
    speed and heading (what a leading ego's velocity is projected from).
    """
    if agents.path.shape[1] == 0 and agents.alive.any():
        raise ValueError("these IDM agents were slimmed (IDMAgents.slim: a past state kept for observation); step the "
                         "state they were slimmed from")
    g = lane_graph(m)
    green, red = masks if masks is not None else light_masks(m, green_ids, red_ids)
    ego = np.ascontiguousarray(np.asarray(ego_corners, dtype=np.float64).reshape(4, 2))
    objs = np.ascontiguousarray(np.asarray(object_corners, dtype=np.float64).reshape(-1, 4, 2))
    cap = agents.capacity
    fcap = agents.foot.shape[1]
    # the kernel writes an agent's path only to extend its route (step 2, `extend_route`), where the path ahead has run
    # shorter than min_path_len + target * headway: without such an agent the new state shares the input's path
    # array (by far its largest, [A, NP, 4]) instead of copying it; no code writes a state's arrays after its step
    share_path = not (config.extend_route and _needs_extension(agents, config, g, green, red))
    while True:
        if (cap, fcap) != (agents.capacity, agents.foot.shape[1]):
            a = agents.grown(cap, fcap)
        elif share_path:
            a = agents.copy(share=("path",) + _NEVER_WRITTEN)
        else:
            a = agents.copy(share=_NEVER_WRITTEN)
        pieces = _PIECE_CAPACITY[0]
        sp, sb = _scratch((pieces, 4, 2)), _scratch((pieces, 4))
        st, stb = _scratch((40 * (cap + 2), 4, 2)), _scratch((40 * (cap + 2), 4))
        status = _idm_step(g.vtx_ptr, g.vx, g.vy, g.vh, g.speed, g.has_light, g.curvature0, g.out_ptr, g.out_idx,
                           g.stop_ptr, g.stop_tri, g.stop_bb, green, red, bool(config.extend_route), ego,
                           float(ego_center[0]), float(ego_center[1]), float(ego_speed), float(ego_heading), objs,
                           a.alive, a.path, a.n_path, a.route, a.n_route, a.s, a.v, a.target, a.length, a.width,
                           a.pose, a.box, a.foot, a.n_foot, a.lead_kind, a.lead_index, a.lead_gap, a.lead_speed,
                           float(dt), config.min_gap_to_lead_agent,
                           config.headway_time, config.accel_max, config.decel_max, config.minimum_path_length,
                           float(config.radius), sp, sb, st, stb)
        if status == 0:
            return a
        if status == 1:
            cap *= 2
        elif status == 3:
            fcap *= 2
        else:
            _PIECE_CAPACITY[0] = 2 * pieces


def navsim_parked_vehicles(m: MapAPI, boxes: dict, agents: IDMAgents, snap_threshold: float | None,
                           prepared: SpawnCandidates | None = None) -> np.ndarray:
    """NAVSIM's `add_open_loop_parked_vehicles` candidates among the vehicles of the current frame (`boxes` as for
    `spawn_agents`): bool [N], True for a vehicle that is not an IDM agent and either stands still (< 0.1 m/s) with
    its centre off the lanes and intersections, or sits further than `snap_threshold` from its starting segment's
    baseline. NAVSIM shows those at their current pose unless their box overlaps an active agent's box at that step
    (`parked_overlaps`). `prepared`: the vehicles' `prepare_spawn` (their starting segments, reused)."""
    n = len(boxes["x"])
    out = np.zeros(n, dtype=bool)
    active = set(np.asarray(agents.track).tolist())
    lines = {}
    for k in range(n):
        if int(boxes["track"][k]) in active:
            continue
        x, y, h = float(boxes["x"][k]), float(boxes["y"][k]), float(boxes["heading"][k])
        vx, vy = float(boxes["vx"][k]), float(boxes["vy"][k])
        stationary = bool(np.hypot(vx, vy) < NAVSIM_STATIONARY_SPEED)  # NaN compares False, as in NAVSIM
        in_lanes = bool(m.objects_at(x, y, MapLayer.LANE) or m.objects_at(x, y, MapLayer.INTERSECTION))
        seg = prepared.segments[k] if prepared is not None else starting_segment(m, x, y, h, lines)
        deviation = None if seg is None else float(np.hypot(seg[2] - x, seg[3] - y))
        far = deviation is not None and snap_threshold is not None and deviation > snap_threshold
        out[k] = (stationary and not in_lanes) or far
    return out


def parked_overlaps(parked_corners: np.ndarray, agents: IDMAgents) -> np.ndarray:
    """bool [P]: which parked boxes [P, 4, 2] overlap the box of an alive agent (NAVSIM then leaves them out)."""
    parked_corners = np.asarray(parked_corners, dtype=np.float64).reshape(-1, 4, 2)
    if len(parked_corners) == 0 or agents.num_alive == 0:
        return np.zeros(len(parked_corners), dtype=bool)
    alive = np.nonzero(agents.alive)[0]
    boxes = box_corners(agents.pose[alive, 0], agents.pose[alive, 1], agents.pose[alive, 2], agents.length[alive],
                        agents.width[alive])
    tree = shapely.STRtree(shapely.polygons(boxes))
    hit, _ = tree.query(shapely.polygons(parked_corners), predicate="intersects")
    out = np.zeros(len(parked_corners), dtype=bool)
    out[hit] = True
    return out
