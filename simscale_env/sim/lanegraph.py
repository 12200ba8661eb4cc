"""The lane graph as flat arrays for the numba kernels (built once per map and cached on the MapAPI).

Baselines keep nuPlan's discrete-path conventions (nuplan/common/maps/nuplan_map/utils.py): vertex headings are the
heading of the segment leaving the vertex (the last vertex repeats the previous one). Lanes and connectors share one
index space. Also precomputed:

- `curvature0`: `estimate_curvature_along_path(baseline, 0, 2.0)`, which nuPlan's IDM agents use to pick the
  straightest outgoing edge;
- stop-line intervals: each connector's stop-line polygons projected onto the lanes they touch, in lane
  coordinates (arc range, lateral range);
- conflicts: pairs of lanes whose polygons overlap other than end-to-end (crossing or merging connectors), with the
  arc range of the overlap on each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from ..map.map_api import MapAPI


@dataclass(frozen=True, eq=False)
class LaneGraph:
    ids: tuple
    index: dict
    vtx_ptr: np.ndarray  # [L+1] into the vertex arrays
    vx: np.ndarray
    vy: np.ndarray
    vh: np.ndarray  # devkit vertex headings
    vs: np.ndarray  # arc length at each vertex (per lane, from 0)
    length: np.ndarray  # [L]
    eff_length: np.ndarray  # arc of the second-to-last vertex (where a nuPlan IDM path ends)
    speed: np.ndarray  # [L] speed limit, 0 where none
    is_connector: np.ndarray
    has_light: np.ndarray
    curvature0: np.ndarray
    out_ptr: np.ndarray
    out_idx: np.ndarray
    stop_ptr: np.ndarray  # per lane (connector): its stop-line intervals
    stop_lane: np.ndarray
    stop_int: np.ndarray  # [K, 4] s_lo, s_hi, lat_lo, lat_hi
    conf_ptr: np.ndarray  # per lane: conflicts
    conf_other: np.ndarray
    conf_int: np.ndarray  # [C, 4]: s_lo, s_hi on this lane; s_lo, s_hi on the other


def _curvature3(p1, p2, p3) -> float:
    """nuplan compute_curvature (Heron's formula, signed)."""
    a = float(np.hypot(*(p1 - p2)))
    b = float(np.hypot(*(p2 - p3)))
    c = float(np.hypot(*(p3 - p1)))
    surface_2 = (a + (b + c)) * (c - (a - b)) * (c + (a - b)) * (a + (b - c))
    if surface_2 < 1e-6:
        return 0.0
    k = np.sqrt(surface_2) / 4
    den = a * b * c
    curvature = 4 * k / den if not np.isclose(den, 0.0) else 0.0
    position = np.sign((p2[0] - p1[0]) * (p3[1] - p1[1]) - (p2[1] - p1[1]) * (p3[0] - p1[0]))
    return float(position * curvature)


def _curvature_at(line, arc: float, d: float = 2.0) -> float:
    """nuplan estimate_curvature_along_path."""
    L = line.length
    if L < 2.0 * d:
        a1, a2, a3 = 0.0, L / 2.0, L
    elif arc - d < 0.0:
        a1, a2, a3 = 0.0, d, 2.0 * d
    elif arc + d > L:
        a1, a2, a3 = L - 2.0 * d, L - d, L
    else:
        a1, a2, a3 = arc - d, arc, arc + d
    p = [np.asarray(line.interpolate(a).coords[0]) for a in (a1, a2, a3)]
    return _curvature3(*p)


def _project_points(xy, h, s, pts):
    """Arc and signed lateral of points [P, 2] on a polyline (vertices xy, cumulative s)."""
    a = xy[:-1]
    d = np.diff(xy, axis=0)
    l2 = np.maximum((d ** 2).sum(1), 1e-12)
    rel = pts[:, None, :] - a[None]
    t = np.clip((rel * d[None]).sum(-1) / l2[None], 0.0, 1.0)
    proj = a[None] + t[..., None] * d[None]
    diff = pts[:, None, :] - proj
    dist2 = (diff ** 2).sum(-1)
    j = np.argmin(dist2, axis=1)
    r = np.arange(len(pts))
    arc = s[j] + t[r, j] * np.sqrt(l2[j])
    cross = d[j, 0] * rel[r, j, 1] - d[j, 1] * rel[r, j, 0]
    lat = np.sign(cross) * np.sqrt(dist2[r, j])
    return arc, lat


def build_lane_graph(m: MapAPI) -> LaneGraph:
    ids = tuple(m.lanes)
    index = {lid: k for k, lid in enumerate(ids)}
    ptr = [0]
    vx, vy, vh, vs = [], [], [], []
    length, eff, speed, conn, light, curv0 = [], [], [], [], [], []
    lines = []
    for lid in ids:
        lane = m.lanes[lid]
        xy = lane.baseline.xy
        d = np.diff(xy, axis=0)
        h = np.arctan2(d[:, 1], d[:, 0])
        h = np.concatenate([h, h[-1:]])
        s = np.concatenate([[0.0], np.cumsum(np.hypot(d[:, 0], d[:, 1]))])
        vx.append(xy[:, 0]), vy.append(xy[:, 1]), vh.append(h), vs.append(s)
        ptr.append(ptr[-1] + len(xy))
        length.append(s[-1])
        eff.append(s[-2] if len(s) > 2 else s[-1])
        speed.append(lane.speed_limit_mps or 0.0)
        conn.append(lane.is_connector)
        light.append(lane.has_traffic_light)
        line = shapely.LineString(xy)
        lines.append(line)
        curv0.append(_curvature_at(line, 0.0))
    out_ptr, out_idx = [0], []
    for lid in ids:
        outs = [index[o] for o in m.lanes[lid].outgoing_ids if o in index]
        out_idx += outs
        out_ptr.append(len(out_idx))
    VX, VY, VH, VS = (np.concatenate(a) for a in (vx, vy, vh, vs))
    ptr_a = np.array(ptr, dtype=np.int64)

    def lane_arrays(k):
        a, b = ptr_a[k], ptr_a[k + 1]
        return np.stack([VX[a:b], VY[a:b]], -1), VH[a:b], VS[a:b]

    # stop-line intervals of each connector, on every lane its stop polygons touch
    polys = np.array([m.lanes[l].polygon for l in ids], dtype=object)
    tree = shapely.STRtree(polys)
    stop_ptr, stop_lane, stop_int = [0], [], []
    for k, lid in enumerate(ids):
        lane = m.lanes[lid]
        for sid in lane.stop_line_ids:
            poly = m.stop_lines[sid].polygon
            pts = np.asarray(poly.exterior.coords)[:-1]
            for j in tree.query(poly, predicate="intersects"):
                xy, h, s = lane_arrays(int(j))
                arc, lat = _project_points(xy, h, s, pts)
                stop_lane.append(int(j))
                stop_int.append([arc.min(), arc.max(), lat.min(), lat.max()])
        stop_ptr.append(len(stop_lane))
    # conflicts between lanes whose polygons overlap, except predecessor/successor and same-group neighbours
    conf = {k: [] for k in range(len(ids))}
    bands = np.array([shapely.buffer(l, 0.95, cap_style="flat") for l in lines], dtype=object)
    ai, bj = tree.query(bands, predicate="intersects")
    for a, b in zip(ai, bj):
        if a >= b:
            continue
        la, lb = m.lanes[ids[a]], m.lanes[ids[b]]
        linked = (ids[b] in la.outgoing_ids or ids[a] in lb.outgoing_ids or ids[b] in la.incoming_ids
                  or ids[a] in lb.incoming_ids)
        same_start = la.is_connector and lb.is_connector and la.incoming_ids == lb.incoming_ids
        if linked or same_start:
            continue
        inter = shapely.intersection(bands[a], bands[b])
        if inter.is_empty or inter.area < 0.05:
            continue
        pts = shapely.get_coordinates(inter)
        ra = _project_points(*lane_arrays(a), pts)[0]
        rb = _project_points(*lane_arrays(b), pts)[0]
        conf[a].append((b, ra.min(), ra.max(), rb.min(), rb.max()))
        conf[b].append((a, rb.min(), rb.max(), ra.min(), ra.max()))
    conf_ptr, conf_other, conf_int = [0], [], []
    for k in range(len(ids)):
        for o, *iv in conf[k]:
            conf_other.append(o)
            conf_int.append(iv)
        conf_ptr.append(len(conf_other))
    return LaneGraph(
        ids=ids, index=index, vtx_ptr=ptr_a, vx=VX, vy=VY, vh=VH, vs=VS,
        length=np.array(length), eff_length=np.array(eff), speed=np.array(speed),
        is_connector=np.array(conn, dtype=bool), has_light=np.array(light, dtype=bool),
        curvature0=np.array(curv0), out_ptr=np.array(out_ptr, dtype=np.int64),
        out_idx=np.array(out_idx, dtype=np.int64), stop_ptr=np.array(stop_ptr, dtype=np.int64),
        stop_lane=np.array(stop_lane, dtype=np.int64), stop_int=np.array(stop_int, dtype=np.float64).reshape(-1, 4),
        conf_ptr=np.array(conf_ptr, dtype=np.int64), conf_other=np.array(conf_other, dtype=np.int64),
        conf_int=np.array(conf_int, dtype=np.float64).reshape(-1, 4))


def lane_graph(m: MapAPI) -> LaneGraph:
    """The lane graph of a map, built on first use and cached on the map object."""
    g = m.__dict__.get("_lane_graph")
    if g is None:
        g = build_lane_graph(m)
        m.__dict__["_lane_graph"] = g
    return g
