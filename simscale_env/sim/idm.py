"""IDM-reactive agents with nuPlan's semantics, vectorized in numba.

Reference: nuplan/planning/simulation/observation/idm_agents.py, idm/idm_agents_builder.py, idm/idm_agent_manager.py,
idm/idm_agent.py, idm/idm_policy.py (devkit v1.2.2). Constants in IDMConfig.

Spawn (iteration 0, vehicles only, in the log's row order): the box centre picks a lane (or, inside an
intersection, a lane connector) with the closest baseline heading; the box is snapped to the baseline and dropped if
it then overlaps the ego, a replayed object or an accepted agent; speed = |(vx, vy)|; target speed = the segment's
speed limit or 10 m/s.

Each step, in spawn order, every agent:
1. drops out for good if its centre is more than `radius` from the ego's centre;
2. grows its route while the path to go is shorter than `minimum_path_length + v_target * headway`: the straightest
   (smallest |curvature| at the start) outgoing edge that is green (for connectors with a light) or not red;
3. finds its leader: the nearest (by footprint distance) of the ego's box, the other agents' footprints
   (box + path ahead for `v * headway`), the replayed objects' boxes and the stop lines of red connectors on its
   route, among those that touch its path to go (buffered by half its width); leader speed is projected on the
   agent's heading (0 for stop lines and replayed objects); without a leader it stops at the end of its path;
4. IDM update (forward Euler): s* = s0 + vT + v(v - v_l)/(2 sqrt(ab)), a = a_max (1 - (v/v0)^4 - (s*/max(gap - l_r,
   s0))^2) clipped to [-b, a_max]; progress += v dt; v = max(v + a dt, 0); v0 is the speed limit of the route's last
   segment when positive.
Agents are updated one after another and each sees the footprints the others already have (as in the devkit).

Geometry is in lane coordinates: footprints are arc intervals on the lanes they cover, replayed objects and the ego
are projected onto the lanes their boxes touch, and crossing or merging lanes have precomputed conflict intervals. On
straight lanes the gaps equal the devkit's polygon distances exactly; on curves they follow the lane instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import shapely
from numba import njit

from ..data.schema import BARRIER, BICYCLE, CZONE_SIGN, GENERIC_OBJECT, PEDESTRIAN, TRAFFIC_CONE, VEHICLE
from ..map.map_api import MapAPI, MapLayer
from .lanegraph import LaneGraph, lane_graph

# nuplan/planning/script/config/simulation/observation/idm_agents_observation.yaml and idm_agents_builder.py
DEVKIT_OPEN_LOOP_TYPES = (PEDESTRIAN, BARRIER, CZONE_SIGN, TRAFFIC_CONE, GENERIC_OBJECT)
# ours: cyclists are replayed too, instead of vanishing as they do in nuPlan's reactive mode. Issue 3 asks for
# nuPlan's semantics (replayed objects are leaders). NAVSIM's navsim_IDM_traffic_agents.yaml instead sets
# open_loop_detections_types: [] (its agents do not see pedestrians or static objects); here this one set decides both
# what is replayed and what the agents yield to
OPEN_LOOP_TYPES = (PEDESTRIAN, BICYCLE, BARRIER, CZONE_SIGN, TRAFFIC_CONE, GENERIC_OBJECT)
# nuplan/planning/simulation/observation/idm/idm_policy.py IDMPolicy._idm_equations: acceleration_exponent = 4
IDM_ACCELERATION_EXPONENT = 4

P_MAX = 12  # lanes ahead per agent
R_MAX = 5  # nuPlan route deque length (IDMAgent max_route_len)


@dataclass(frozen=True)
class IDMConfig:
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


@dataclass(frozen=True, eq=False)
class IDMAgents:
    """State of the IDM agents (struct of arrays, spawn order). `track` indexes the scenario's AgentTracks."""

    track: np.ndarray  # [A] int64
    alive: np.ndarray  # [A] bool
    lanes: np.ndarray  # [A, P_MAX] lane indices ahead, lanes[:, 0] the current one
    n_lanes: np.ndarray
    prev: np.ndarray  # [A, 2] the lanes just behind (for footprints reaching back)
    route: np.ndarray  # [A, R_MAX] nuPlan's route deque (stop lines of red connectors on it count)
    n_route: np.ndarray
    s: np.ndarray  # progress on lanes[:, 0]
    v: np.ndarray
    target: np.ndarray
    length: np.ndarray
    width: np.ndarray
    height: np.ndarray
    occ_lo: np.ndarray  # footprint interval in own lane coordinates
    occ_hi: np.ndarray
    pose: np.ndarray  # [A, 3] box centre pose

    def copy(self) -> "IDMAgents":
        return IDMAgents(**{k: getattr(self, k).copy() for k in self.__dataclass_fields__})

    @property
    def num_alive(self) -> int:
        return int(self.alive.sum())


# ------------------------------------------------------------------------------------------------ kernels
@njit(cache=True)
def _pose_on_lanes(g_vtx_ptr, g_vx, g_vy, g_vh, g_vs, lanes, n, s):
    """Pose at progress s (on lanes[0]) along the lane sequence, nuPlan path interpolation (vertex headings
    interpolated, the last vertex of a lane taking its successor's first heading)."""
    k = 0
    while k < n - 1:
        ln = lanes[k]
        L = g_vs[g_vtx_ptr[ln + 1] - 1]
        if s <= L:
            break
        s -= L
        k += 1
    ln = lanes[k]
    a = g_vtx_ptr[ln]
    b = g_vtx_ptr[ln + 1]
    if s <= 0.0:
        return g_vx[a], g_vy[a], g_vh[a]
    j = a
    while j < b - 2 and g_vs[j + 1] < s:
        j += 1
    s0 = g_vs[j]
    s1 = g_vs[j + 1]
    t = (s - s0) / (s1 - s0) if s1 > s0 else 0.0
    if t > 1.0:
        t = 1.0
    x = g_vx[j] + t * (g_vx[j + 1] - g_vx[j])
    y = g_vy[j] + t * (g_vy[j + 1] - g_vy[j])
    h0 = g_vh[j]
    if j + 1 == b - 1 and k < n - 1:
        h1 = g_vh[g_vtx_ptr[lanes[k + 1]]]
    else:
        h1 = g_vh[j + 1]
    dh = h1 - h0
    while dh > np.pi:
        dh -= 2 * np.pi
    while dh < -np.pi:
        dh += 2 * np.pi
    h = h0 + t * dh
    h = (h + np.pi) % (2 * np.pi) - np.pi
    return x, y, h


@njit(cache=True)
def _path_end(g_len, g_eff, lanes, n):
    e = 0.0
    for k in range(n - 1):
        e += g_len[lanes[k]]
    return e + g_eff[lanes[n - 1]]


@njit(cache=True, inline="always")
def _interval_gap(ia, ib, s_i, end_i, f_lo, f_hi):
    """Gap along i's path from its footprint [f_lo, f_hi] to an occupied interval [ia, ib], 0 when they overlap;
    1e300 (never a leader) when the interval lies outside i's look-ahead window [s_i, end_i]."""
    if not (ib >= s_i and ia <= end_i):
        return 1e300
    gap = ia - f_hi
    if f_lo - ib > gap:
        gap = f_lo - ib
    if gap < 0.0:
        gap = 0.0
    return gap


@njit(cache=True)
def _idm_step(g_vtx_ptr, g_vx, g_vy, g_vh, g_vs, g_len, g_eff, g_speed, g_haslight, g_curv0, g_out_ptr, g_out_idx,
              g_stop_ptr, g_stop_lane, g_stop_int, g_conf_ptr, g_conf_other, g_conf_int,
              green, red, obj_lane, obj_int, obj_speed, obj_heading,
              alive, lanes, n_lanes, prev, route, n_route, s, v, target, length, width, occ_lo, occ_hi, pose,
              dt, min_gap, headway, a_max, b_max, min_path_len):
    A = len(alive)
    sqrt_ab = np.sqrt(a_max * b_max)
    off = np.zeros(P_MAX)
    for i in range(A):
        if not alive[i]:
            continue
        # 1. route growth
        n = n_lanes[i]
        while True:
            togo = _path_end(g_len, g_eff, lanes[i], n) - s[i]
            if togo >= min_path_len + target[i] * headway or n >= P_MAX:
                break
            last = lanes[i, n - 1]
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
            lanes[i, n] = best
            n += 1
            if n_route[i] < R_MAX:
                route[i, n_route[i]] = best
                n_route[i] += 1
            else:
                for q in range(R_MAX - 1):
                    route[i, q] = route[i, q + 1]
                route[i, R_MAX - 1] = best
        n_lanes[i] = n
        # lane offsets of the path ahead
        off[0] = 0.0
        for k in range(1, n):
            off[k] = off[k - 1] + g_len[lanes[i, k - 1]]
        end_i = off[n - 1] + g_eff[lanes[i, n - 1]]
        s_i = s[i]
        hw = width[i] / 2.0
        f_lo = occ_lo[i]
        f_hi = occ_hi[i]
        best_gap = 1e300
        best_v = 0.0
        found = False
        hi_ = pose[i, 2]
        # 2a. other agents' footprints
        for j in range(A):
            if j == i or not alive[j]:
                continue
            nj = n_lanes[j]
            lo_j = occ_lo[j]
            hi_j = occ_hi[j]
            # walk j's lanes: prev[1], prev[0], lanes[0..nj-1]
            for q in range(-2, nj):
                if q == -2:
                    ln = prev[j, 1]
                    if ln < 0 or prev[j, 0] < 0:
                        continue
                    start = -g_len[prev[j, 0]] - g_len[ln]
                elif q == -1:
                    ln = prev[j, 0]
                    if ln < 0:
                        continue
                    start = -g_len[ln]
                else:
                    ln = lanes[j, q]
                    start = 0.0
                    for r in range(q):
                        start += g_len[lanes[j, r]]
                L = g_len[ln]
                a_ = lo_j if lo_j > start else start
                b_ = hi_j if hi_j < start + L else start + L
                if b_ < a_:
                    continue
                la = a_ - start
                lb = b_ - start
                # same lane ahead of i
                for k in range(n):
                    if lanes[i, k] == ln:
                        ia = off[k] + la
                        ib = off[k] + lb
                        gap = _interval_gap(ia, ib, s_i, end_i, f_lo, f_hi)
                        if gap < best_gap:
                            best_gap = gap
                            dh = pose[j, 2] - hi_
                            best_v = v[j] * np.cos(dh)
                            found = True
                    # conflicts of i's lane k with j's lane ln
                    lk = lanes[i, k]
                    for c in range(g_conf_ptr[lk], g_conf_ptr[lk + 1]):
                        if g_conf_other[c] != ln:
                            continue
                        if lb < g_conf_int[c, 2] or la > g_conf_int[c, 3]:
                            continue
                        ia = off[k] + g_conf_int[c, 0]
                        ib = off[k] + g_conf_int[c, 1]
                        gap = _interval_gap(ia, ib, s_i, end_i, f_lo, f_hi)
                        if gap < best_gap:
                            best_gap = gap
                            dh = pose[j, 2] - hi_
                            best_v = v[j] * np.cos(dh)
                            found = True
        # 2b. ego and replayed objects (projected on the lanes their boxes touch)
        for o in range(len(obj_lane)):
            ln = obj_lane[o]
            if obj_int[o, 3] < -hw or obj_int[o, 2] > hw:
                continue
            for k in range(n):
                if lanes[i, k] == ln:
                    ia = off[k] + obj_int[o, 0]
                    ib = off[k] + obj_int[o, 1]
                    gap = _interval_gap(ia, ib, s_i, end_i, f_lo, f_hi)
                    if gap < best_gap:
                        best_gap = gap
                        best_v = obj_speed[o] * np.cos(obj_heading[o] - hi_)
                        found = True
        # 2c. stop lines of red connectors on the route
        for q in range(n_route[i]):
            rl = route[i, q]
            if not red[rl]:
                continue
            for c in range(g_stop_ptr[rl], g_stop_ptr[rl + 1]):
                ln = g_stop_lane[c]
                if g_stop_int[c, 3] < -hw or g_stop_int[c, 2] > hw:
                    continue
                for k in range(n):
                    if lanes[i, k] == ln:
                        ia = off[k] + g_stop_int[c, 0]
                        ib = off[k] + g_stop_int[c, 1]
                        gap = _interval_gap(ia, ib, s_i, end_i, f_lo, f_hi)
                        if gap < best_gap:
                            best_gap = gap
                            best_v = 0.0
                            found = True
        if found:
            rel = best_gap
            v_lead = best_v
            l_r = 0.0
        else:
            rel = end_i - s_i
            v_lead = 0.0
            l_r = length[i] / 2.0
        # 3. IDM (forward Euler)
        sl = g_speed[lanes[i, n - 1]]
        if sl > 0.0:
            target[i] = sl
        vi = v[i]
        s_star = min_gap + vi * headway + vi * (vi - v_lead) / (2.0 * sqrt_ab)
        s_alpha = rel - l_r
        if s_alpha < min_gap:
            s_alpha = min_gap
        acc = a_max * (1.0 - (vi / target[i]) ** IDM_ACCELERATION_EXPONENT - (s_star / s_alpha) ** 2)
        if acc < -b_max:
            acc = -b_max
        if acc > a_max:
            acc = a_max
        s[i] = s_i + dt * vi
        vn = vi + dt * acc
        v[i] = vn if vn > 0.0 else 0.0
        # advance the lane window
        while n > 1 and s[i] > g_len[lanes[i, 0]]:
            s[i] -= g_len[lanes[i, 0]]
            prev[i, 1] = prev[i, 0]
            prev[i, 0] = lanes[i, 0]
            for q in range(n - 1):
                lanes[i, q] = lanes[i, q + 1]
            lanes[i, n - 1] = -1
            n -= 1
        n_lanes[i] = n
        end_i = _path_end(g_len, g_eff, lanes[i], n)
        pb = s[i] if s[i] < end_i else end_i
        x, y, h = _pose_on_lanes(g_vtx_ptr, g_vx, g_vy, g_vh, g_vs, lanes[i], n, pb)
        pose[i, 0] = x
        pose[i, 1] = y
        pose[i, 2] = h
        # 4. the footprint others see: box + path ahead for v * headway (clamped to the path end)
        front = s[i] + length[i] / 2.0 + v[i] * headway
        if front > end_i:
            front = end_i
        occ_lo[i] = pb - length[i] / 2.0
        occ_hi[i] = front if front > pb + length[i] / 2.0 else pb + length[i] / 2.0


@njit(cache=True)
def _project_corners(g_vtx_ptr, g_vx, g_vy, g_vs, corners, pair_obj, pair_lane, out):
    """Arc/lateral extents of object corners [K, 4, 2] on lanes: one row of `out` [P, 4] per (object, lane) pair."""
    for p in range(len(pair_obj)):
        o = pair_obj[p]
        ln = pair_lane[p]
        a = g_vtx_ptr[ln]
        b = g_vtx_ptr[ln + 1]
        s_lo = 1e300
        s_hi = -1e300
        l_lo = 1e300
        l_hi = -1e300
        for c in range(corners.shape[1]):
            px = corners[o, c, 0]
            py = corners[o, c, 1]
            best = 1e300
            barc = 0.0
            blat = 0.0
            for j in range(a, b - 1):
                dx = g_vx[j + 1] - g_vx[j]
                dy = g_vy[j + 1] - g_vy[j]
                l2 = dx * dx + dy * dy
                if l2 < 1e-12:
                    l2 = 1e-12
                rx = px - g_vx[j]
                ry = py - g_vy[j]
                t = (rx * dx + ry * dy) / l2
                if t < 0.0:
                    t = 0.0
                elif t > 1.0:
                    t = 1.0
                ex = rx - t * dx
                ey = ry - t * dy
                d2 = ex * ex + ey * ey
                if d2 < best:
                    best = d2
                    barc = g_vs[j] + t * np.sqrt(l2)
                    cr = dx * ry - dy * rx
                    blat = np.sqrt(d2) if cr >= 0 else -np.sqrt(d2)
            if barc < s_lo:
                s_lo = barc
            if barc > s_hi:
                s_hi = barc
            if blat < l_lo:
                l_lo = blat
            if blat > l_hi:
                l_hi = blat
        out[p, 0] = s_lo
        out[p, 1] = s_hi
        out[p, 2] = l_lo
        out[p, 3] = l_hi


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


def box_corners(x, y, h, length, width) -> np.ndarray:
    """Corners [N, 4, 2] (FL, RL, RR, FR as nuPlan's OrientedBox) of boxes centred at (x, y) with heading h
    (scalars broadcast)."""
    args = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64).reshape(-1) for a in (x, y, h, length, width)))
    x, y, h, length, width = (np.ascontiguousarray(a) for a in args)
    out = np.empty((x.shape[0], 4, 2))
    _box_corners(x, y, h, length, width, _CORNER_SIGNS, out)
    return out


def project_objects(m: MapAPI, g: LaneGraph, corners: np.ndarray):
    """(lane, [s_lo, s_hi, lat_lo, lat_hi]) of every object box (corners [K, 4, 2]) on every lane it touches."""
    if len(corners) == 0:
        return np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, np.int64)
    polys = shapely.polygons(corners)
    obj, lane = m._lane_tree.query(polys, predicate="intersects")
    order = np.lexsort((lane, obj))
    obj, lane = obj[order].astype(np.int64), lane[order].astype(np.int64)
    out = np.zeros((len(obj), 4))
    _project_corners(g.vtx_ptr, g.vx, g.vy, g.vs, np.ascontiguousarray(corners, dtype=np.float64), obj, lane, out)
    return lane, out, obj


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


def spawn_agents(m: MapAPI, boxes: dict, ego_box_corners: np.ndarray, open_loop_corners: np.ndarray,
                 ego_speed: float, config: IDMConfig = IDMConfig()) -> IDMAgents:
    """Build IDM agents from the vehicles of iteration 0 (`boxes`: arrays x, y, heading, vx, vy, length, width,
    height, track (column index), in the log's row order), as nuPlan's `build_idm_agents_on_map_rails`."""
    g = lane_graph(m)
    occ = [shapely.Polygon(c) for c in np.asarray(ego_box_corners).reshape(-1, 4, 2)]
    occ += [shapely.Polygon(c) for c in np.asarray(open_loop_corners).reshape(-1, 4, 2)]
    rows = []
    lines = {}
    for k in range(len(boxes["x"])):
        x, y, h = float(boxes["x"][k]), float(boxes["y"][k]), float(boxes["heading"][k])
        if m.objects_at(x, y, MapLayer.LANE):
            cands = m.objects_at(x, y, MapLayer.LANE)
        elif m.objects_at(x, y, MapLayer.INTERSECTION):
            cands = m.objects_at(x, y, MapLayer.LANE_CONNECTOR)
        else:
            continue
        if not cands:
            continue
        best = None
        for lid in cands:
            line = lines.setdefault(lid, shapely.LineString(m.lanes[lid].baseline.xy))
            arc, px, py, ph = _nearest_pose(line, x, y)
            diff = abs(ph - h)  # nuPlan compares raw headings
            if best is None or diff < best[0]:
                best = (diff, lid, arc, px, py, ph)
        _, lid, arc, px, py, ph = best
        if config.snap_threshold is not None and np.hypot(px - x, py - y) > config.snap_threshold:
            continue
        L, W = float(boxes["length"][k]), float(boxes["width"][k])
        snapped = shapely.Polygon(box_corners(px, py, ph, L, W)[0])
        if any(snapped.intersects(o) for o in occ):
            continue
        occ.append(snapped)
        vx, vy = float(boxes["vx"][k]), float(boxes["vy"][k])
        speed = ego_speed if (np.isnan(vx) or np.isnan(vy)) else float(np.hypot(vx, vy))
        lane = g.index[lid]
        rows.append((int(boxes["track"][k]), lane, arc, speed, L, W, float(boxes["height"][k]), px, py, ph))
    A = len(rows)
    lanes = np.full((A, P_MAX), -1, dtype=np.int64)
    route = np.full((A, R_MAX), -1, dtype=np.int64)
    out = IDMAgents(
        track=np.array([r[0] for r in rows], dtype=np.int64), alive=np.ones(A, dtype=bool), lanes=lanes,
        n_lanes=np.ones(A, dtype=np.int64), prev=np.full((A, 2), -1, dtype=np.int64), route=route,
        n_route=np.ones(A, dtype=np.int64), s=np.array([r[2] for r in rows], dtype=np.float64),
        v=np.array([r[3] for r in rows], dtype=np.float64),
        target=np.array([g.speed[r[1]] if g.speed[r[1]] > 0 else config.target_velocity for r in rows],
                        dtype=np.float64),
        length=np.array([r[4] for r in rows], dtype=np.float64), width=np.array([r[5] for r in rows], dtype=np.float64),
        height=np.array([r[6] for r in rows], dtype=np.float64),
        occ_lo=np.array([r[2] - r[4] / 2 for r in rows], dtype=np.float64),
        occ_hi=np.array([r[2] + r[4] / 2 for r in rows], dtype=np.float64),
        pose=np.array([[r[7], r[8], r[9]] for r in rows], dtype=np.float64).reshape(A, 3))
    for k, r in enumerate(rows):
        lanes[k, 0] = r[1]
        route[k, 0] = r[1]
        # the agent is observed at its path pose (nuPlan `to_se2`: path interpolation at its progress)
        out.pose[k] = _pose_on_lanes(g.vtx_ptr, g.vx, g.vy, g.vh, g.vs, lanes[k], 1, min(r[2], g.eff_length[r[1]]))
    return out


def step_agents(m: MapAPI, agents: IDMAgents, *, ego_corners: np.ndarray, ego_center: np.ndarray, ego_speed: float,
                ego_heading: float, object_corners: np.ndarray, green_ids, red_ids, dt: float = 0.1,
                config: IDMConfig = IDMConfig()) -> IDMAgents:
    """One step of all agents (a new IDMAgents; the input is not modified).

    `ego_corners` [4, 2] and `object_corners` [K, 4, 2]: the ego box and the replayed objects at the next
    iteration; `green_ids` / `red_ids`: connector ids with that light at the next iteration.
    """
    g = lane_graph(m)
    a = agents.copy()
    # 1. agents beyond the radius from the ego's centre are dropped for good
    if len(a.alive):
        d = np.hypot(a.pose[:, 0] - ego_center[0], a.pose[:, 1] - ego_center[1])
        a.alive[d > config.radius] = False
    green = np.zeros(len(g.ids), dtype=bool)
    red = np.zeros(len(g.ids), dtype=bool)
    for cid in green_ids:
        k = g.index.get(str(cid))
        if k is not None:
            green[k] = True
    for cid in red_ids:
        k = g.index.get(str(cid))
        if k is not None:
            red[k] = True
    corners = np.concatenate([np.asarray(ego_corners, dtype=np.float64).reshape(1, 4, 2),
                              np.asarray(object_corners, dtype=np.float64).reshape(-1, 4, 2)])
    lane_i, ints, obj = project_objects(m, g, corners)
    speed = np.where(obj == 0, ego_speed, 0.0)
    heading = np.where(obj == 0, ego_heading, 0.0)
    _idm_step(g.vtx_ptr, g.vx, g.vy, g.vh, g.vs, g.length, g.eff_length, g.speed, g.has_light, g.curvature0,
              g.out_ptr, g.out_idx, g.stop_ptr, g.stop_lane, g.stop_int, g.conf_ptr, g.conf_other, g.conf_int,
              green, red, lane_i, ints, speed, heading,
              a.alive, a.lanes, a.n_lanes, a.prev, a.route, a.n_route, a.s, a.v, a.target, a.length, a.width,
              a.occ_lo, a.occ_hi, a.pose, float(dt), config.min_gap_to_lead_agent, config.headway_time,
              config.accel_max, config.decel_max, config.minimum_path_length)
    return a
