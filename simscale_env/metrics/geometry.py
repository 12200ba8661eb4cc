"""Vectorized geometry for batched scoring (numba): points in polygons, oriented-box overlap, point-polyline distance.

Semantics follow shapely where NAVSIM uses it: `shapely.vectorized.contains` (a point on the boundary is outside),
`intersects` between boxes (touching counts), `LineString.project` / `distance`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


class PolygonSet:
    """Polygon exteriors flattened for the kernels, with a uniform grid of candidate polygons per cell."""

    def __init__(self, polygons, cell: float = 4.0):
        import shapely

        self.n = len(polygons)
        rings = [np.asarray(p.exterior.coords)[:-1] if not p.is_empty else np.zeros((0, 2)) for p in polygons]
        self.ptr = np.zeros(self.n + 1, dtype=np.int64)
        for k, r in enumerate(rings):
            self.ptr[k + 1] = self.ptr[k] + len(r)
        self.xy = np.concatenate(rings) if rings else np.zeros((0, 2))
        self.xy = np.ascontiguousarray(self.xy, dtype=np.float64)
        b = shapely.bounds(np.asarray(polygons, dtype=object)) if self.n else np.zeros((0, 4))
        self.bounds = np.ascontiguousarray(b, dtype=np.float64)
        if self.n:
            x0, y0 = b[:, 0].min() - cell, b[:, 1].min() - cell
            x1, y1 = b[:, 2].max() + cell, b[:, 3].max() + cell
        else:
            x0 = y0 = 0.0
            x1 = y1 = cell
        self.origin = np.array([x0, y0])
        self.cell = float(cell)
        nx = int(np.ceil((x1 - x0) / cell)) + 1
        ny = int(np.ceil((y1 - y0) / cell)) + 1
        self.shape = (nx, ny)
        lists = [[] for _ in range(nx * ny)]
        for k in range(self.n):
            i0 = int((b[k, 0] - x0) // cell)
            i1 = int((b[k, 2] - x0) // cell)
            j0 = int((b[k, 1] - y0) // cell)
            j1 = int((b[k, 3] - y0) // cell)
            for i in range(i0, i1 + 1):
                for j in range(j0, j1 + 1):
                    lists[i * ny + j].append(k)
        self.cell_ptr = np.zeros(nx * ny + 1, dtype=np.int64)
        for c, lst in enumerate(lists):
            self.cell_ptr[c + 1] = self.cell_ptr[c] + len(lst)
        self.cell_idx = np.array([k for lst in lists for k in lst], dtype=np.int64)

    def contains(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pairs (point index, polygon index) with the point strictly inside the polygon."""
        p = np.ascontiguousarray(np.asarray(points, dtype=np.float64).reshape(-1, 2))
        counts = _count_hits(p, self.xy, self.ptr, self.bounds, self.origin, self.cell, self.shape[0], self.shape[1],
                             self.cell_ptr, self.cell_idx)
        offs = np.concatenate([[0], np.cumsum(counts)])
        pi = np.empty(offs[-1], dtype=np.int64)
        gi = np.empty(offs[-1], dtype=np.int64)
        _fill_hits(p, self.xy, self.ptr, self.bounds, self.origin, self.cell, self.shape[0], self.shape[1],
                   self.cell_ptr, self.cell_idx, offs, pi, gi)
        return pi, gi

    def contains_matrix(self, points: np.ndarray) -> np.ndarray:
        """Bool [n_polygons, n_points] (use for small point sets only)."""
        pi, gi = self.contains(points)
        out = np.zeros((self.n, len(np.asarray(points).reshape(-1, 2))), dtype=bool)
        out[gi, pi] = True
        return out


@njit(cache=True)
def _point_in_ring(px, py, xy, a, b):
    """Strictly inside the ring xy[a:b] (implicitly closed); on an edge -> False."""
    inside = False
    j = b - 1
    for i in range(a, b):
        xi = xy[i, 0]
        yi = xy[i, 1]
        xj = xy[j, 0]
        yj = xy[j, 1]
        # on the edge (collinear and within the segment's box)
        cross = (xj - xi) * (py - yi) - (yj - yi) * (px - xi)
        if cross == 0.0 and min(xi, xj) <= px <= max(xi, xj) and min(yi, yj) <= py <= max(yi, yj):
            return False
        if (yi > py) != (yj > py):
            xint = xi + (py - yi) * (xj - xi) / (yj - yi)
            if px < xint:
                inside = not inside
        j = i
    return inside


@njit(cache=True)
def _count_hits(p, xy, ptr, bounds, origin, cell, nx, ny, cell_ptr, cell_idx):
    n = len(p)
    counts = np.zeros(n, dtype=np.int64)
    for q in range(n):
        i = int((p[q, 0] - origin[0]) // cell)
        j = int((p[q, 1] - origin[1]) // cell)
        if i < 0 or j < 0 or i >= nx or j >= ny:
            continue
        c = i * ny + j
        for r in range(cell_ptr[c], cell_ptr[c + 1]):
            k = cell_idx[r]
            if p[q, 0] <= bounds[k, 0] or p[q, 0] >= bounds[k, 2] or p[q, 1] <= bounds[k, 1] or p[q, 1] >= bounds[k, 3]:
                continue
            if _point_in_ring(p[q, 0], p[q, 1], xy, ptr[k], ptr[k + 1]):
                counts[q] += 1
    return counts


@njit(cache=True)
def _fill_hits(p, xy, ptr, bounds, origin, cell, nx, ny, cell_ptr, cell_idx, offs, pi, gi):
    for q in range(len(p)):
        i = int((p[q, 0] - origin[0]) // cell)
        j = int((p[q, 1] - origin[1]) // cell)
        if i < 0 or j < 0 or i >= nx or j >= ny:
            continue
        c = i * ny + j
        w = offs[q]
        for r in range(cell_ptr[c], cell_ptr[c + 1]):
            k = cell_idx[r]
            if p[q, 0] <= bounds[k, 0] or p[q, 0] >= bounds[k, 2] or p[q, 1] <= bounds[k, 1] or p[q, 1] >= bounds[k, 3]:
                continue
            if _point_in_ring(p[q, 0], p[q, 1], xy, ptr[k], ptr[k + 1]):
                pi[w] = q
                gi[w] = k
                w += 1


@njit(cache=True)
def _sat_overlap(a, b):
    """Do convex quads a [4, 2] and b [4, 2] intersect (touching counts)?"""
    for poly in range(2):
        P = a if poly == 0 else b
        for e in range(4):
            x0 = P[e, 0]
            y0 = P[e, 1]
            x1 = P[(e + 1) % 4, 0]
            y1 = P[(e + 1) % 4, 1]
            nx_ = -(y1 - y0)
            ny_ = x1 - x0
            amin = 1e300
            amax = -1e300
            bmin = 1e300
            bmax = -1e300
            for k in range(4):
                pa = a[k, 0] * nx_ + a[k, 1] * ny_
                pb = b[k, 0] * nx_ + b[k, 1] * ny_
                amin = min(amin, pa)
                amax = max(amax, pa)
                bmin = min(bmin, pb)
                bmax = max(bmax, pb)
            if amax < bmin or bmax < amin:
                return False
    return True


@njit(cache=True, parallel=False)
def boxes_overlap(ego, obj, obj_valid):
    """ego [N, T, 4, 2], obj [T, M, 4, 2] with obj_valid [T, M] -> hits [N, T, M] (bool)."""
    N, T = ego.shape[0], ego.shape[1]
    M = obj.shape[1]
    out = np.zeros((N, T, M), dtype=np.bool_)
    # bounding circles for a cheap rejection
    orad = np.zeros((T, M))
    oc = np.zeros((T, M, 2))
    for t in range(T):
        for m in range(M):
            if not obj_valid[t, m]:
                continue
            cx = 0.25 * (obj[t, m, 0, 0] + obj[t, m, 1, 0] + obj[t, m, 2, 0] + obj[t, m, 3, 0])
            cy = 0.25 * (obj[t, m, 0, 1] + obj[t, m, 1, 1] + obj[t, m, 2, 1] + obj[t, m, 3, 1])
            oc[t, m, 0] = cx
            oc[t, m, 1] = cy
            r = 0.0
            for k in range(4):
                r = max(r, np.hypot(obj[t, m, k, 0] - cx, obj[t, m, k, 1] - cy))
            orad[t, m] = r
    for n in prange(N):
        for t in range(T):
            cx = 0.25 * (ego[n, t, 0, 0] + ego[n, t, 1, 0] + ego[n, t, 2, 0] + ego[n, t, 3, 0])
            cy = 0.25 * (ego[n, t, 0, 1] + ego[n, t, 1, 1] + ego[n, t, 2, 1] + ego[n, t, 3, 1])
            er = 0.0
            for k in range(4):
                er = max(er, np.hypot(ego[n, t, k, 0] - cx, ego[n, t, k, 1] - cy))
            for m in range(M):
                if not obj_valid[t, m]:
                    continue
                if np.hypot(oc[t, m, 0] - cx, oc[t, m, 1] - cy) > er + orad[t, m] + 1e-9:
                    continue
                if _sat_overlap(ego[n, t], obj[t, m]):
                    out[n, t, m] = True
    return out


@njit(cache=True)
def segment_hits_quad(p0, p1, quad):
    """Does segment p0-p1 intersect (touch) the convex quad [4, 2]?"""
    # inside test for an endpoint
    for p in (p0, p1):
        inside = True
        sgn = 0.0
        for e in range(4):
            x0 = quad[e, 0]
            y0 = quad[e, 1]
            x1 = quad[(e + 1) % 4, 0]
            y1 = quad[(e + 1) % 4, 1]
            c = (x1 - x0) * (p[1] - y0) - (y1 - y0) * (p[0] - x0)
            if c != 0.0:
                if sgn == 0.0:
                    sgn = c
                elif c * sgn < 0:
                    inside = False
                    break
        if inside:
            return True
    for e in range(4):
        if _seg_seg(p0[0], p0[1], p1[0], p1[1], quad[e, 0], quad[e, 1], quad[(e + 1) % 4, 0], quad[(e + 1) % 4, 1]):
            return True
    return False


@njit(cache=True)
def _orient(ax, ay, bx, by, cx, cy):
    v = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    if v > 0:
        return 1
    if v < 0:
        return -1
    return 0


@njit(cache=True)
def _on_seg(ax, ay, bx, by, cx, cy):
    return min(ax, bx) <= cx <= max(ax, bx) and min(ay, by) <= cy <= max(ay, by)


@njit(cache=True)
def _seg_seg(ax, ay, bx, by, cx, cy, dx, dy):
    o1 = _orient(ax, ay, bx, by, cx, cy)
    o2 = _orient(ax, ay, bx, by, dx, dy)
    o3 = _orient(cx, cy, dx, dy, ax, ay)
    o4 = _orient(cx, cy, dx, dy, bx, by)
    if o1 != o2 and o3 != o4:
        return True
    if o1 == 0 and _on_seg(ax, ay, bx, by, cx, cy):
        return True
    if o2 == 0 and _on_seg(ax, ay, bx, by, dx, dy):
        return True
    if o3 == 0 and _on_seg(cx, cy, dx, dy, ax, ay):
        return True
    if o4 == 0 and _on_seg(cx, cy, dx, dy, bx, by):
        return True
    return False


@njit(cache=True, parallel=False)
def polyline_project(points, xy, s):
    """Arc length of the nearest point and distance of each point [P, 2] to a polyline (shapely project/distance)."""
    P = len(points)
    arc = np.empty(P)
    dist = np.empty(P)
    for q in prange(P):
        best = 1e300
        ba = 0.0
        for j in range(len(xy) - 1):
            dx = xy[j + 1, 0] - xy[j, 0]
            dy = xy[j + 1, 1] - xy[j, 1]
            l2 = dx * dx + dy * dy
            rx = points[q, 0] - xy[j, 0]
            ry = points[q, 1] - xy[j, 1]
            t = (rx * dx + ry * dy) / l2 if l2 > 0 else 0.0
            if t < 0.0:
                t = 0.0
            elif t > 1.0:
                t = 1.0
            ex = rx - t * dx
            ey = ry - t * dy
            d2 = ex * ex + ey * ey
            if d2 < best:
                best = d2
                ba = s[j] + t * np.sqrt(l2)
        arc[q] = ba
        dist[q] = np.sqrt(best)
    return arc, dist
