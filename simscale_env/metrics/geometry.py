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


def boxes_overlap(ego, obj, obj_valid):
    """ego [N, T, 4, 2], obj [T, M, 4, 2] with obj_valid [T, M] -> (n, t, m) index arrays of intersecting pairs
    (touching counts), ordered by n, then t, then m."""
    ego = np.ascontiguousarray(ego, dtype=np.float64)
    obj = np.ascontiguousarray(obj, dtype=np.float64)
    valid = np.ascontiguousarray(obj_valid, dtype=np.bool_)
    cap = max(1024, ego.shape[0] * ego.shape[1])
    while True:
        n_idx = np.empty(cap, dtype=np.int64)
        t_idx = np.empty(cap, dtype=np.int64)
        m_idx = np.empty(cap, dtype=np.int64)
        k = _boxes_overlap_kernel(ego, obj, valid, n_idx, t_idx, m_idx)
        if k <= cap:
            return n_idx[:k], t_idx[:k], m_idx[:k]
        cap = k


@njit(cache=True)
def _boxes_overlap_kernel(ego, obj, obj_valid, n_out, t_out, m_out):
    N, T = ego.shape[0], ego.shape[1]
    M = obj.shape[1]
    cap = len(n_out)
    # per step: valid objects sorted by centre x, with their bounding radius
    ox = np.zeros((T, M))
    oy = np.zeros((T, M))
    orad = np.zeros((T, M))
    order = np.zeros((T, M), dtype=np.int64)
    nvalid = np.zeros(T, dtype=np.int64)
    sx = np.zeros((T, M))
    maxr = np.zeros(T)
    for t in range(T):
        cnt = 0
        for m in range(M):
            if not obj_valid[t, m]:
                continue
            cx = 0.25 * (obj[t, m, 0, 0] + obj[t, m, 1, 0] + obj[t, m, 2, 0] + obj[t, m, 3, 0])
            cy = 0.25 * (obj[t, m, 0, 1] + obj[t, m, 1, 1] + obj[t, m, 2, 1] + obj[t, m, 3, 1])
            r = 0.0
            for k in range(4):
                r = max(r, np.hypot(obj[t, m, k, 0] - cx, obj[t, m, k, 1] - cy))
            ox[t, m] = cx
            oy[t, m] = cy
            orad[t, m] = r
            maxr[t] = max(maxr[t], r)
            order[t, cnt] = m
            cnt += 1
        nvalid[t] = cnt
        xs = np.empty(cnt)
        for q in range(cnt):
            xs[q] = ox[t, order[t, q]]
        perm = np.argsort(xs)
        tmp = order[t, :cnt].copy()
        for q in range(cnt):
            order[t, q] = tmp[perm[q]]
            sx[t, q] = xs[perm[q]]
    k = 0
    found = np.empty(M, dtype=np.int64)
    for n in range(N):
        for t in range(T):
            cnt = nvalid[t]
            if cnt == 0:
                continue
            cx = 0.25 * (ego[n, t, 0, 0] + ego[n, t, 1, 0] + ego[n, t, 2, 0] + ego[n, t, 3, 0])
            cy = 0.25 * (ego[n, t, 0, 1] + ego[n, t, 1, 1] + ego[n, t, 2, 1] + ego[n, t, 3, 1])
            er = 0.0
            for c in range(4):
                er = max(er, np.hypot(ego[n, t, c, 0] - cx, ego[n, t, c, 1] - cy))
            reach = er + maxr[t] + 1e-9
            lo = np.searchsorted(sx[t, :cnt], cx - reach)
            hi = np.searchsorted(sx[t, :cnt], cx + reach, side="right")
            nf = 0
            for q in range(lo, hi):
                m = order[t, q]
                if np.hypot(ox[t, m] - cx, oy[t, m] - cy) > er + orad[t, m] + 1e-9:
                    continue
                if _sat_overlap(ego[n, t], obj[t, m]):
                    found[nf] = m
                    nf += 1
            if nf:
                srt = np.sort(found[:nf])
                for q in range(nf):
                    if k < cap:
                        n_out[k] = n
                        t_out[k] = t
                        m_out[k] = srt[q]
                    k += 1
    return k


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


def polyline_project(points, xy, s):
    """Arc length of the nearest point and distance of each point [P, 2] to a polyline (shapely project /
    distance; ties go to the first segment)."""
    xy = np.ascontiguousarray(xy, dtype=np.float64)
    chunk = 16
    nseg = len(xy) - 1
    nch = (nseg + chunk - 1) // chunk
    bb = np.empty((nch, 4))
    for c in range(nch):
        a, b = c * chunk, min(nseg, (c + 1) * chunk) + 1
        bb[c] = (xy[a:b, 0].min(), xy[a:b, 1].min(), xy[a:b, 0].max(), xy[a:b, 1].max())
    return _project_chunked(np.ascontiguousarray(points, dtype=np.float64), xy, np.asarray(s, dtype=np.float64),
                            bb, chunk)


@njit(cache=True)
def _seg_d2(px, py, xy, j):
    dx = xy[j + 1, 0] - xy[j, 0]
    dy = xy[j + 1, 1] - xy[j, 1]
    l2 = dx * dx + dy * dy
    rx = px - xy[j, 0]
    ry = py - xy[j, 1]
    t = (rx * dx + ry * dy) / l2 if l2 > 0 else 0.0
    if t < 0.0:
        t = 0.0
    elif t > 1.0:
        t = 1.0
    ex = rx - t * dx
    ey = ry - t * dy
    return ex * ex + ey * ey, t * np.sqrt(l2)


@njit(cache=True)
def _project_chunked(points, xy, s, bb, chunk):
    P = len(points)
    nseg = len(xy) - 1
    nch = len(bb)
    arc = np.empty(P)
    dist = np.empty(P)
    lb = np.empty(nch)
    for q in range(P):
        px = points[q, 0]
        py = points[q, 1]
        for c in range(nch):
            dx = max(bb[c, 0] - px, 0.0, px - bb[c, 2])
            dy = max(bb[c, 1] - py, 0.0, py - bb[c, 3])
            lb[c] = dx * dx + dy * dy
        ordc = np.argsort(lb)
        best = 1e300
        bj = nseg
        ba = 0.0
        for r in range(nch):
            c = ordc[r]
            if lb[c] > best:
                break
            for j in range(c * chunk, min(nseg, (c + 1) * chunk)):
                d2, off = _seg_d2(px, py, xy, j)
                if d2 < best or (d2 == best and j < bj):
                    best = d2
                    bj = j
                    ba = s[j] + off
        arc[q] = ba
        dist[q] = np.sqrt(best)
    return arc, dist


class AreaIndex(PolygonSet):
    """PolygonSet with per-polygon y-slabs of edges (exact point-in-polygon touching only the few edges that can
    cross the point's horizontal ray) and category flags, for the ego-area kernel."""

    def __init__(self, polygons, drivable, lane, on_route, intersection, cell: float = 4.0):
        super().__init__(polygons, cell)
        self.flags = np.zeros(self.n, dtype=np.int64)
        for k in range(self.n):
            self.flags[k] = (1 if drivable[k] else 0) | (2 if lane[k] else 0) | (4 if on_route[k] else 0) | (
                8 if intersection[k] else 0)
        slab_ptr = [0]
        slab_edges: list[int] = []
        poly_slab = np.zeros((self.n + 1,), dtype=np.int64)
        slab_y0 = np.zeros(self.n)
        slab_h = np.ones(self.n)
        for k in range(self.n):
            a, b = self.ptr[k], self.ptr[k + 1]
            ne = b - a
            ns = int(min(256, max(1, ne // 4)))
            y0, y1 = self.bounds[k, 1], self.bounds[k, 3]
            h = max((y1 - y0) / ns, 1e-9)
            slab_y0[k], slab_h[k] = y0, h
            ys = self.xy[a:b, 1]
            ys2 = np.roll(ys, 1)  # edge i goes from vertex i-1 to i
            lo = np.minimum(ys, ys2)
            hi = np.maximum(ys, ys2)
            s0 = np.clip(((lo - y0) / h).astype(np.int64), 0, ns - 1)
            s1 = np.clip(((hi - y0) / h).astype(np.int64), 0, ns - 1)
            buckets = [[] for _ in range(ns)]
            for e in range(ne):
                for sl in range(s0[e], s1[e] + 1):
                    buckets[sl].append(a + e)
            for bk in buckets:
                slab_edges.extend(bk)
                slab_ptr.append(len(slab_edges))
            poly_slab[k + 1] = poly_slab[k] + ns
        self.slab_ptr = np.array(slab_ptr, dtype=np.int64)
        self.slab_edges = np.array(slab_edges, dtype=np.int64)
        self.poly_slab = poly_slab
        self.slab_y0 = slab_y0
        self.slab_h = slab_h

    def areas(self, coords: np.ndarray) -> tuple[np.ndarray, ...]:
        """coords [N, T, 5, 2] (FL, RL, RR, FR, centre) -> non_drivable, multiple_lanes, centre_on_route,
        centre_in_intersection, each [N, T]."""
        c = np.ascontiguousarray(coords, dtype=np.float64)
        return _ego_area_kernel(c, self.xy, self.ptr, self.bounds, self.origin, self.cell, self.shape[0],
                                self.shape[1], self.cell_ptr, self.cell_idx, self.flags, self.slab_ptr,
                                self.slab_edges, self.poly_slab, self.slab_y0, self.slab_h)

    def point_flags(self, points: np.ndarray) -> np.ndarray:
        """OR of the category flags of the polygons containing each point [P, 2]."""
        p = np.ascontiguousarray(np.asarray(points, dtype=np.float64).reshape(-1, 2))
        return _point_flags_kernel(p, self.xy, self.ptr, self.bounds, self.origin, self.cell, self.shape[0],
                                   self.shape[1], self.cell_ptr, self.cell_idx, self.flags, self.slab_ptr,
                                   self.slab_edges, self.poly_slab, self.slab_y0, self.slab_h)


@njit(cache=True)
def _pip_slab(px, py, xy, k, poly_slab, slab_ptr, slab_edges, slab_y0, slab_h, ptr):
    ns = poly_slab[k + 1] - poly_slab[k]
    s = int((py - slab_y0[k]) / slab_h[k])
    if s < 0:
        s = 0
    if s >= ns:
        s = ns - 1
    sl = poly_slab[k] + s
    inside = False
    a = ptr[k]
    b = ptr[k + 1]
    for r in range(slab_ptr[sl], slab_ptr[sl + 1]):
        i = slab_edges[r]
        j = i - 1 if i > a else b - 1
        xi = xy[i, 0]
        yi = xy[i, 1]
        xj = xy[j, 0]
        yj = xy[j, 1]
        cross = (xj - xi) * (py - yi) - (yj - yi) * (px - xi)
        if cross == 0.0 and min(xi, xj) <= px <= max(xi, xj) and min(yi, yj) <= py <= max(yi, yj):
            return False
        if (yi > py) != (yj > py):
            xint = xi + (py - yi) * (xj - xi) / (yj - yi)
            if px < xint:
                inside = not inside
    return inside


@njit(cache=True)
def _point_flags_kernel(p, xy, ptr, bounds, origin, cell, nx, ny, cell_ptr, cell_idx, flags, slab_ptr, slab_edges,
                        poly_slab, slab_y0, slab_h):
    out = np.zeros(len(p), dtype=np.int64)
    for q in range(len(p)):
        px = p[q, 0]
        py = p[q, 1]
        i = int((px - origin[0]) // cell)
        j = int((py - origin[1]) // cell)
        if i < 0 or j < 0 or i >= nx or j >= ny:
            continue
        c = i * ny + j
        for r in range(cell_ptr[c], cell_ptr[c + 1]):
            k = cell_idx[r]
            if px <= bounds[k, 0] or px >= bounds[k, 2] or py <= bounds[k, 1] or py >= bounds[k, 3]:
                continue
            if _pip_slab(px, py, xy, k, poly_slab, slab_ptr, slab_edges, slab_y0, slab_h, ptr):
                out[q] |= flags[k]
    return out


@njit(cache=True)
def _ego_area_kernel(coords, xy, ptr, bounds, origin, cell, nx, ny, cell_ptr, cell_idx, flags, slab_ptr,
                     slab_edges, poly_slab, slab_y0, slab_h):
    N, T = coords.shape[0], coords.shape[1]
    non_drivable = np.zeros((N, T), dtype=np.bool_)
    multiple = np.zeros((N, T), dtype=np.bool_)
    on_route = np.zeros((N, T), dtype=np.bool_)
    inter = np.zeros((N, T), dtype=np.bool_)
    lane_ids = np.empty(64, dtype=np.int64)
    lane_cnt = np.empty(64, dtype=np.int64)
    for n in range(N):
        for t in range(T):
            n_lanes = 0
            drv_corners = 0
            for pt in range(5):
                px = coords[n, t, pt, 0]
                py = coords[n, t, pt, 1]
                i = int((px - origin[0]) // cell)
                j = int((py - origin[1]) // cell)
                in_drv = False
                if 0 <= i < nx and 0 <= j < ny:
                    c = i * ny + j
                    for r in range(cell_ptr[c], cell_ptr[c + 1]):
                        k = cell_idx[r]
                        f = flags[k]
                        if pt < 4:
                            if (f & 3) == 0:
                                continue
                            if (f & 2) == 0 and in_drv:
                                continue
                        else:
                            if (f & 12) == 0:
                                continue
                        if px <= bounds[k, 0] or px >= bounds[k, 2] or py <= bounds[k, 1] or py >= bounds[k, 3]:
                            continue
                        if not _pip_slab(px, py, xy, k, poly_slab, slab_ptr, slab_edges, slab_y0, slab_h, ptr):
                            continue
                        if pt < 4:
                            if f & 1:
                                in_drv = True
                            if f & 2:
                                found = -1
                                for q in range(n_lanes):
                                    if lane_ids[q] == k:
                                        found = q
                                if found < 0 and n_lanes < 64:
                                    lane_ids[n_lanes] = k
                                    lane_cnt[n_lanes] = 1
                                    n_lanes += 1
                                elif found >= 0:
                                    lane_cnt[found] += 1
                        else:
                            if f & 4:
                                on_route[n, t] = True
                            if f & 8:
                                inter[n, t] = True
                if pt < 4 and in_drv:
                    drv_corners += 1
            non_drivable[n, t] = drv_corners < 4
            if n_lanes > 1:
                single = False
                for q in range(n_lanes):
                    if lane_cnt[q] == 4:
                        single = True
                multiple[n, t] = not single
    return non_drivable, multiple, on_route, inter
