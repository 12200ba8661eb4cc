"""The lane graph as flat arrays for the numba kernels (built once per map and cached on the MapAPI).

Baselines keep nuPlan's discrete-path conventions (nuplan/common/maps/nuplan_map/utils.py): vertex headings are the
heading of the segment leaving the vertex (the last vertex repeats the previous one). Lanes and connectors share one
index space. Also precomputed:

- `curvature0`: `estimate_curvature_along_path(baseline, 0, 2.0)`, which nuPlan's IDM agents use to pick the
  straightest outgoing edge;
- stop-line triangles: each connector's stop-line polygons (the devkit's `LaneConnector.stop_lines`), triangulated
  into convex pieces (quads with a repeated vertex) for the IDM agents' polygon tests.
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
    stop_ptr: np.ndarray  # [L+1] per lane (connector): its stop-line triangles
    stop_tri: np.ndarray  # [T, 4, 2] triangles (last vertex repeated) of the stop-line polygons
    stop_bb: np.ndarray  # [T, 4] their bounds (x0, y0, x1, y1)


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


def _triangles(poly) -> list:
    """Convex pieces of a polygon: the polygon itself when it is a convex quad or triangle, else its constrained
    Delaunay triangles; each as 4 corners (a triangle repeats its last vertex)."""
    poly = shapely.normalize(poly)
    ring = np.asarray(poly.exterior.coords)[:-1]
    if len(ring) in (3, 4) and not len(poly.interiors) and shapely.equals(poly, poly.convex_hull):
        return [np.concatenate([ring, ring[-1:]]) if len(ring) == 3 else ring]
    out = []
    for t in shapely.get_parts(shapely.constrained_delaunay_triangles(poly)):
        c = np.asarray(t.exterior.coords)[:3]
        out.append(np.concatenate([c, c[-1:]]))
    return out


def build_lane_graph(m: MapAPI) -> LaneGraph:
    ids = tuple(m.lanes)
    index = {lid: k for k, lid in enumerate(ids)}
    ptr = [0]
    vx, vy, vh, vs = [], [], [], []
    length, eff, speed, conn, light, curv0 = [], [], [], [], [], []
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
        curv0.append(_curvature_at(line, 0.0))
    out_ptr, out_idx = [0], []
    for lid in ids:
        outs = [index[o] for o in m.lanes[lid].outgoing_ids if o in index]
        out_idx += outs
        out_ptr.append(len(out_idx))
    VX, VY, VH, VS = (np.concatenate(a) for a in (vx, vy, vh, vs))
    ptr_a = np.array(ptr, dtype=np.int64)

    # stop-line triangles of each connector
    tri_cache = {}
    stop_ptr, stop_tri = [0], []
    for lid in ids:
        for sid in m.lanes[lid].stop_line_ids:
            if sid not in tri_cache:
                tri_cache[sid] = _triangles(m.stop_lines[sid].polygon)
            stop_tri += tri_cache[sid]
        stop_ptr.append(len(stop_tri))
    tri = np.ascontiguousarray(np.array(stop_tri, dtype=np.float64).reshape(-1, 4, 2))
    return LaneGraph(
        ids=ids, index=index, vtx_ptr=ptr_a, vx=VX, vy=VY, vh=VH, vs=VS,
        length=np.array(length), eff_length=np.array(eff), speed=np.array(speed),
        is_connector=np.array(conn, dtype=bool), has_light=np.array(light, dtype=bool),
        curvature0=np.array(curv0), out_ptr=np.array(out_ptr, dtype=np.int64),
        out_idx=np.array(out_idx, dtype=np.int64), stop_ptr=np.array(stop_ptr, dtype=np.int64),
        stop_tri=tri, stop_bb=np.concatenate([tri.min(1), tri.max(1)], axis=1))


def lane_graph(m: MapAPI) -> LaneGraph:
    """The lane graph of a map, built on first use and cached on the map object."""
    g = m.__dict__.get("_lane_graph")
    if g is None:
        g = build_lane_graph(m)
        m.__dict__["_lane_graph"] = g
    return g
