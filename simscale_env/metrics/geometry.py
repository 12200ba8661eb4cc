"""Vectorized geometry for batched scoring (numba): points in polygons, oriented-box overlap, point-polyline distance.

Semantics follow shapely where NAVSIM uses it: `shapely.vectorized.contains` (a point on the boundary is outside),
`intersects` between boxes (touching counts), `LineString.project` / `distance`.
"""

from __future__ import annotations

import numpy as np
from numba import njit


class PolygonSet:
    """Polygon exteriors flattened for the kernels (vertices, ring offsets, bounds) and the extent of a grid of
    `cell`-sized cells around them (origin, shape)."""

    def __init__(self, polygons, cell: float = 4.0):
        import shapely

        self.n = len(polygons)
        arr = np.asarray(polygons, dtype=object) if self.n else np.zeros(0, dtype=object)
        if self.n:
            rings = shapely.get_exterior_ring(arr)
            counts = shapely.get_num_coordinates(rings)
            coords = shapely.get_coordinates(rings)
            # drop each ring's closing vertex
            keep = np.ones(len(coords), dtype=bool)
            ends = np.cumsum(counts) - 1
            keep[ends[counts > 0]] = False
            self.xy = np.ascontiguousarray(coords[keep], dtype=np.float64)
            self.ptr = np.concatenate([[0], np.cumsum(np.maximum(counts - 1, 0))]).astype(np.int64)
            b = shapely.bounds(arr)
        else:
            self.xy = np.zeros((0, 2))
            self.ptr = np.zeros(1, dtype=np.int64)
            b = np.zeros((0, 4))
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


# ---------------------------------------------------------------------------------------------- exact predicates
# GEOS (behind shapely) decides orientation with a filtered double-double determinant; we use Shewchuk's filter
# with an exact expansion fallback, so points on or within rounding of an edge are classified as shapely does.
_EPS = 2.0 ** -53
_CCW_ERRBOUND_A = (3.0 + 16.0 * _EPS) * _EPS
_SPLITTER = 134217729.0  # 2^27 + 1


@njit(cache=True, nogil=True)
def _two_sum(a, b):
    x = a + b
    bv = x - a
    av = x - bv
    return x, (a - av) + (b - bv)


@njit(cache=True, nogil=True)
def _two_diff(a, b):
    x = a - b
    bv = a - x
    av = x + bv
    return x, (a - av) + (bv - b)


@njit(cache=True, nogil=True)
def _two_prod(a, b):
    p = a * b
    c = _SPLITTER * a
    ah = c - (c - a)
    al = a - ah
    c = _SPLITTER * b
    bh = c - (c - b)
    bl = b - bh
    return p, al * bl - (((p - ah * bh) - al * bh) - ah * bl)


@njit(cache=True, nogil=True)
def _orient_exact(ax, ay, bx, by, cx, cy):
    d1, d1l = _two_diff(bx, ax)
    d2, d2l = _two_diff(cy, ay)
    d3, d3l = _two_diff(by, ay)
    d4, d4l = _two_diff(cx, ax)
    terms = np.empty(16)
    k = 0
    for u, v, sg in ((d1, d2, 1.0), (d1, d2l, 1.0), (d1l, d2, 1.0), (d1l, d2l, 1.0),
                     (d3, d4, -1.0), (d3, d4l, -1.0), (d3l, d4, -1.0), (d3l, d4l, -1.0)):
        p, e = _two_prod(u, v)
        terms[k] = sg * p
        terms[k + 1] = sg * e
        k += 2
    # grow an expansion (non-overlapping, increasing magnitude); its sign is that of its last non-zero component
    exp_ = np.zeros(17)
    n = 0
    for i in range(16):
        q = terms[i]
        for j in range(n):
            q, h = _two_sum(q, exp_[j])
            exp_[j] = h
        exp_[n] = q
        n += 1
    for j in range(n - 1, -1, -1):
        if exp_[j] > 0.0:
            return 1
        if exp_[j] < 0.0:
            return -1
    return 0


@njit(cache=True, nogil=True)
def orient2d(ax, ay, bx, by, cx, cy):
    """Exact sign of (b - a) x (c - a): 1 if c is left of a->b, -1 right, 0 collinear."""
    detl = (bx - ax) * (cy - ay)
    detr = (by - ay) * (cx - ax)
    det = detl - detr
    bound = _CCW_ERRBOUND_A * (abs(detl) + abs(detr))
    if det > bound:
        return 1
    if -det > bound:
        return -1
    return _orient_exact(ax, ay, bx, by, cx, cy)


@njit(cache=True, nogil=True)
def _ray_count(pu, pv, u1, v1, u2, v2):
    """GEOS RayCrossingCounter::countSegment for the edge (u1, v1)->(u2, v2) and a ray from (pu, pv) along +u:
    returns 2 if the point is on the edge, 1 if the edge crosses the ray, else 0."""
    if u1 < pu and u2 < pu:
        return 0
    if pu == u2 and pv == v2:
        return 2
    if v1 == pv and v2 == pv:
        lo = min(u1, u2)
        hi = max(u1, u2)
        return 2 if lo <= pu <= hi else 0
    if (v1 > pv and v2 <= pv) or (v2 > pv and v1 <= pv):
        sg = orient2d(u1, v1, u2, v2, pu, pv)
        if sg == 0:
            return 2
        if v2 < v1:
            sg = -sg
        return 1 if sg > 0 else 0
    return 0


@njit(cache=True, nogil=True)
def _slab_edges(xy, ptr, poly_slab, axes, v0s, hs, pos, edges, fill):
    """Every (slab, edge) pair of every polygon: counted into pos[slab] (fill False), or written to
    edges[pos[slab]] with pos advanced (fill True)."""
    for k in range(len(ptr) - 1):
        a = ptr[k]
        b = ptr[k + 1]
        ns = poly_slab[k + 1] - poly_slab[k]
        v = 1 - axes[k]
        for e in range(b - a):
            i = a + e
            j = a + e - 1 if e > 0 else b - 1
            lo = min(xy[i, v], xy[j, v])
            hi = max(xy[i, v], xy[j, v])
            s0 = min(max(int((lo - v0s[k]) / hs[k]), 0), ns - 1)
            s1 = min(max(int((hi - v0s[k]) / hs[k]), 0), ns - 1)
            for sl in range(s0, s1 + 1):
                q = poly_slab[k] + sl
                if fill:
                    edges[pos[q]] = i
                pos[q] += 1


@njit(cache=True, nogil=True)
def _build_slabs(xy, ptr, bounds):
    """Per polygon, slabs of its edges along the axis whose heaviest slabs are lighter (sum of squared slab sizes);
    axis 0: y-slabs (horizontal ray), 1: x-slabs (vertical ray). Edge i runs from vertex i-1 to i."""
    n = len(ptr) - 1
    poly_slab = np.zeros(n + 1, dtype=np.int64)
    v0s = np.zeros(n)
    hs = np.ones(n)
    axes = np.zeros(n, dtype=np.int64)
    nss = np.zeros(n, dtype=np.int64)
    total = 0
    for k in range(n):
        a = ptr[k]
        b = ptr[k + 1]
        ne = b - a
        ns = max(1, min(1024, ne // 2))
        best = -1.0
        for axis in range(2):
            v = 1 - axis
            v0 = bounds[k, v]
            h = max((bounds[k, v + 2] - v0) / ns, 1e-9)
            cnt = np.zeros(ns, dtype=np.int64)
            for e in range(ne):
                i = a + e
                j = a + e - 1 if e > 0 else b - 1
                lo = min(xy[i, v], xy[j, v])
                hi = max(xy[i, v], xy[j, v])
                s0 = min(max(int((lo - v0) / h), 0), ns - 1)
                s1 = min(max(int((hi - v0) / h), 0), ns - 1)
                for sl in range(s0, s1 + 1):
                    cnt[sl] += 1
            cost = 0.0
            tot = 0
            for sl in range(ns):
                cost += float(cnt[sl]) * float(cnt[sl])
                tot += cnt[sl]
            if best < 0 or cost < best:
                best = cost
                axes[k] = axis
                v0s[k] = v0
                hs[k] = h
                nss[k] = tot
        poly_slab[k + 1] = poly_slab[k] + ns
        total += nss[k]
    slab_ptr = np.zeros(poly_slab[n] + 1, dtype=np.int64)
    edges = np.empty(0, dtype=np.int64)
    _slab_edges(xy, ptr, poly_slab, axes, v0s, hs, slab_ptr[1:], edges, False)  # counts per slab
    for q in range(poly_slab[n]):
        slab_ptr[q + 1] += slab_ptr[q]
    edges = np.empty(slab_ptr[poly_slab[n]], dtype=np.int64)
    fill = slab_ptr[:poly_slab[n]].copy()
    _slab_edges(xy, ptr, poly_slab, axes, v0s, hs, fill, edges, True)
    return poly_slab, slab_ptr, edges, v0s, hs, axes


@njit(cache=True, nogil=True)
def _point_in_ring(px, py, xy, a, b):
    """Strictly inside the ring xy[a:b] (implicitly closed); on an edge -> False (shapely `contains`)."""
    inside = False
    j = b - 1
    for i in range(a, b):
        c = _ray_count(px, py, xy[j, 0], xy[j, 1], xy[i, 0], xy[i, 1])
        if c == 2:
            return False
        if c == 1:
            inside = not inside
        j = i
    return inside


@njit(cache=True, nogil=True)
def _sat_overlap(a, b):
    """Do convex quads a [4, 2] and b [4, 2] intersect (touching counts)? Separating axes decide clear cases; gaps
    within rounding reach of zero go to the exact test."""
    scale = 1.0
    for k in range(4):
        scale = max(scale, abs(a[k, 0]), abs(a[k, 1]), abs(b[k, 0]), abs(b[k, 1]))
    unsure = False
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
            gap = max(bmin - amax, amin - bmax)
            tol = 1e-10 * (abs(nx_) + abs(ny_)) * scale
            if gap > tol:
                return False
            if gap >= -tol:
                unsure = True
    if not unsure:
        return True
    return _quads_intersect_exact(a, b)


@njit(cache=True, nogil=True)
def _in_convex(px, py, quad):
    """Inside or on the boundary of the convex quad (either orientation)?"""
    sgn = 0
    for e in range(4):
        o = orient2d(quad[e, 0], quad[e, 1], quad[(e + 1) % 4, 0], quad[(e + 1) % 4, 1], px, py)
        if o != 0:
            if sgn == 0:
                sgn = o
            elif o != sgn:
                return False
    return True


@njit(cache=True, nogil=True)
def _quads_intersect_exact(a, b):
    for i in range(4):
        for j in range(4):
            if _seg_seg(a[i, 0], a[i, 1], a[(i + 1) % 4, 0], a[(i + 1) % 4, 1], b[j, 0], b[j, 1], b[(j + 1) % 4, 0],
                        b[(j + 1) % 4, 1]):
                return True
    return _in_convex(a[0, 0], a[0, 1], b) or _in_convex(b[0, 0], b[0, 1], a)


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


@njit(cache=True, nogil=True)
def object_index(obj, obj_valid):
    """Per step: the valid objects sorted by centre x, with centres and bounding radii, for pruned overlap queries.
    Returns (oy, orad, order, nvalid, sx, maxr): step t's q-th object by x is order[t, q], centred at
    (sx[t, q], oy[t, q]) with radius orad[t, q] (in sorted order: a query reads them contiguously)."""
    T, M = obj.shape[0], obj.shape[1]
    oy = np.zeros((T, M))
    orad = np.zeros((T, M))
    order = np.zeros((T, M), dtype=np.int64)
    nvalid = np.zeros(T, dtype=np.int64)
    sx = np.zeros((T, M))
    maxr = np.zeros(T)
    xs = np.empty(M)
    ys = np.empty(M)
    rs = np.empty(M)
    idx = np.empty(M, dtype=np.int64)
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
            xs[cnt] = cx
            ys[cnt] = cy
            rs[cnt] = r
            idx[cnt] = m
            maxr[t] = max(maxr[t], r)
            cnt += 1
        nvalid[t] = cnt
        perm = np.argsort(xs[:cnt], kind="mergesort")
        for q in range(cnt):
            order[t, q] = idx[perm[q]]
            sx[t, q] = xs[perm[q]]
            oy[t, q] = ys[perm[q]]
            orad[t, q] = rs[perm[q]]
    return oy, orad, order, nvalid, sx, maxr


@njit(cache=True, nogil=True)
def query_overlaps(quad, obj, t, index, found):
    """Objects at step t whose box intersects (touches) the quad [4, 2]; writes their indices, ascending, into
    `found` and returns how many."""
    oy, orad, order, nvalid, sx, maxr = index
    cnt = nvalid[t]
    if cnt == 0:
        return 0
    cx = 0.25 * (quad[0, 0] + quad[1, 0] + quad[2, 0] + quad[3, 0])
    cy = 0.25 * (quad[0, 1] + quad[1, 1] + quad[2, 1] + quad[3, 1])
    # bounding circles only prune (the 1e-9 m slack dwarfs the rounding of sqrt vs hypot): squared distances
    e2 = 0.0
    for c in range(4):
        dx = quad[c, 0] - cx
        dy = quad[c, 1] - cy
        e2 = max(e2, dx * dx + dy * dy)
    er = np.sqrt(e2)
    reach = er + maxr[t] + 1e-9
    row = sx[t, :cnt]
    lo = np.searchsorted(row, cx - reach)
    hi = np.searchsorted(row, cx + reach, side="right")
    nf = 0
    for q in range(lo, hi):
        dy = oy[t, q] - cy
        reach_q = er + orad[t, q] + 1e-9
        if abs(dy) > reach_q:  # implies the test below: a cheaper rejection of the same objects
            continue
        dx = sx[t, q] - cx
        if dx * dx + dy * dy > reach_q * reach_q:
            continue
        m = order[t, q]
        if _sat_overlap(quad, obj[t, m]):
            found[nf] = m
            nf += 1
    if nf > 1:
        found[:nf] = np.sort(found[:nf])
    return nf


@njit(cache=True, nogil=True)
def _boxes_overlap_kernel(ego, obj, obj_valid, n_out, t_out, m_out):
    N, T = ego.shape[0], ego.shape[1]
    M = obj.shape[1]
    cap = len(n_out)
    index = object_index(obj, obj_valid)
    k = 0
    found = np.empty(M, dtype=np.int64)
    for n in range(N):
        for t in range(T):
            nf = query_overlaps(ego[n, t], obj, t, index, found)
            for q in range(nf):
                if k < cap:
                    n_out[k] = n
                    t_out[k] = t
                    m_out[k] = found[q]
                k += 1
    return k


@njit(cache=True, nogil=True)
def segment_hits_quad(p0, p1, quad):
    """Does segment p0-p1 intersect (touch) the convex quad [4, 2]?"""
    if _in_convex(p0[0], p0[1], quad) or _in_convex(p1[0], p1[1], quad):
        return True
    for e in range(4):
        if _seg_seg(p0[0], p0[1], p1[0], p1[1], quad[e, 0], quad[e, 1], quad[(e + 1) % 4, 0], quad[(e + 1) % 4, 1]):
            return True
    return False


@njit(cache=True, nogil=True)
def quad_meets_ring(quad, xy, a, b):
    """Do the convex quad [4, 2] and the polygon with exterior ring xy[a:b] (implicitly closed) intersect, touching
    included (shapely `intersects`)?"""
    for e in range(a, b):
        f = e - 1 if e > a else b - 1
        for c in range(4):
            d = (c + 1) % 4
            if _seg_seg(xy[f, 0], xy[f, 1], xy[e, 0], xy[e, 1], quad[c, 0], quad[c, 1], quad[d, 0], quad[d, 1]):
                return True
    # no boundaries meet: one contains the other, or they are disjoint
    if _point_in_ring(quad[0, 0], quad[0, 1], xy, a, b):
        return True
    return segment_hits_quad(xy[a], xy[a], quad)


@njit(cache=True, nogil=True)
def quads_meet_polygons(quads, xy, ptr, bounds, step_ptr, step_poly):
    """[N] bool: does quads[n, t] meet any polygon listed for step t (step_poly[step_ptr[t]:step_ptr[t + 1]])?"""
    N, T = quads.shape[0], quads.shape[1]
    out = np.zeros(N, dtype=np.bool_)
    for n in range(N):
        for t in range(min(T, len(step_ptr) - 1)):
            q = quads[n, t]
            qx0 = min(min(q[0, 0], q[1, 0]), min(q[2, 0], q[3, 0]))
            qx1 = max(max(q[0, 0], q[1, 0]), max(q[2, 0], q[3, 0]))
            qy0 = min(min(q[0, 1], q[1, 1]), min(q[2, 1], q[3, 1]))
            qy1 = max(max(q[0, 1], q[1, 1]), max(q[2, 1], q[3, 1]))
            for r in range(step_ptr[t], step_ptr[t + 1]):
                k = step_poly[r]
                if qx1 < bounds[k, 0] or qx0 > bounds[k, 2] or qy1 < bounds[k, 1] or qy0 > bounds[k, 3]:
                    continue
                if quad_meets_ring(q, xy, ptr[k], ptr[k + 1]):
                    out[n] = True
                    break
            if out[n]:
                break
    return out


@njit(cache=True, nogil=True)
def _on_seg(ax, ay, bx, by, cx, cy):
    return min(ax, bx) <= cx <= max(ax, bx) and min(ay, by) <= cy <= max(ay, by)


@njit(cache=True, nogil=True)
def _seg_seg(ax, ay, bx, by, cx, cy, dx, dy):
    o1 = orient2d(ax, ay, bx, by, cx, cy)
    o2 = orient2d(ax, ay, bx, by, dx, dy)
    o3 = orient2d(cx, cy, dx, dy, ax, ay)
    o4 = orient2d(cx, cy, dx, dy, bx, by)
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
    if xy.ndim != 2 or len(xy) < 2:
        raise ValueError(f"polyline needs at least 2 points [K, 2], got shape {xy.shape}")
    chunk = 16
    bb = _chunk_bounds(xy, chunk)
    return _project_chunked(np.ascontiguousarray(points, dtype=np.float64), xy, np.asarray(s, dtype=np.float64),
                            bb, chunk)


@njit(cache=True, nogil=True)
def _chunk_bounds(xy, chunk):
    """Bounding boxes of the polyline's segments in chunks of `chunk` segments."""
    nseg = len(xy) - 1
    nch = (nseg + chunk - 1) // chunk
    bb = np.empty((nch, 4))
    for c in range(nch):
        a = c * chunk
        b = min(nseg, (c + 1) * chunk) + 1
        x0 = xy[a, 0]
        y0 = xy[a, 1]
        x1 = x0
        y1 = y0
        for k in range(a, b):
            x0 = min(x0, xy[k, 0])
            x1 = max(x1, xy[k, 0])
            y0 = min(y0, xy[k, 1])
            y1 = max(y1, xy[k, 1])
        bb[c, 0], bb[c, 1], bb[c, 2], bb[c, 3] = x0, y0, x1, y1
    return bb


@njit(cache=True, nogil=True)
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


@njit(cache=True, nogil=True)
def _project_chunked(points, xy, s, bb, chunk):
    """Nearest segment per point (min distance, ties to the first segment). The previous point's segment seeds the
    bound (consecutive points are near), so most chunks are pruned by their bounding box."""
    P = len(points)
    nseg = len(xy) - 1
    nch = len(bb)
    arc = np.empty(P)
    dist = np.empty(P)
    prev = 0
    for q in range(P):
        px = points[q, 0]
        py = points[q, 1]
        best, off = _seg_d2(px, py, xy, prev)
        bj = prev
        ba = s[prev] + off
        for c in range(nch):
            dx = max(bb[c, 0] - px, 0.0, px - bb[c, 2])
            dy = max(bb[c, 1] - py, 0.0, py - bb[c, 3])
            if dx * dx + dy * dy > best:
                continue
            for j in range(c * chunk, min(nseg, (c + 1) * chunk)):
                d2, off = _seg_d2(px, py, xy, j)
                if d2 < best or (d2 == best and j < bj):
                    best = d2
                    bj = j
                    ba = s[j] + off
        arc[q] = ba
        dist[q] = np.sqrt(best)
        prev = bj
    return arc, dist


class AreaIndex(PolygonSet):
    """PolygonSet with per-polygon slabs of edges (exact point-in-polygon touching only the few edges that can
    cross the point's ray), a fine grid of (cell, polygon) entries marking cells strictly inside, and category
    flags, for the ego-area kernel."""

    def __init__(self, polygons, drivable, lane, on_route, intersection, cell: float = 4.0,
                 fine_cell: float = 0.5, max_fine_cells: int = 4_000_000):
        super().__init__(polygons, cell)
        self.flags = (np.asarray(drivable, bool).astype(np.int64) | (np.asarray(lane, bool).astype(np.int64) << 1)
                      | (np.asarray(on_route, bool).astype(np.int64) << 2)
                      | (np.asarray(intersection, bool).astype(np.int64) << 3)) if self.n else np.zeros(0, np.int64)
        (self.poly_slab, self.slab_ptr, self.slab_edges, self.slab_y0, self.slab_h,
         self.slab_axis) = _build_slabs(self.xy, self.ptr, self.bounds)
        self.slabs = (self.poly_slab, self.slab_ptr, self.slab_edges, self.slab_y0, self.slab_h, self.slab_axis)
        # a finer grid whose (cell, polygon) entries are classified: cells strictly inside a polygon need no
        # point-in-polygon test, cells outside it are dropped
        extent = (self.shape[0] * cell) * (self.shape[1] * cell)
        self.fine_cell = float(max(fine_cell, np.sqrt(extent / max_fine_cells)))
        fx0, fy0 = self.origin
        fnx = int(np.ceil((self.shape[0] * cell) / self.fine_cell)) + 1
        fny = int(np.ceil((self.shape[1] * cell) / self.fine_cell)) + 1
        self.fine_shape = (fnx, fny)
        counts = _classify_cells(self.xy, self.ptr, self.bounds, self.origin, self.fine_cell, fnx, fny,
                                 np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int8),
                                 self.slabs, False)
        self.fine_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.fine_idx = np.empty(self.fine_ptr[-1], dtype=np.int64)
        self.fine_full = np.empty(self.fine_ptr[-1], dtype=np.int8)
        _classify_cells(self.xy, self.ptr, self.bounds, self.origin, self.fine_cell, fnx, fny, self.fine_ptr,
                        self.fine_idx, self.fine_full, self.slabs, True)

    def _kernel_args(self):
        return (self.xy, self.ptr, self.origin, self.fine_cell, self.fine_shape[0], self.fine_shape[1], self.fine_ptr,
                self.fine_idx, self.fine_full, self.flags, self.slabs)

    def areas(self, coords: np.ndarray) -> tuple[np.ndarray, ...]:
        """coords [N, T, 5, 2] (FL, RL, RR, FR, centre) -> non_drivable, multiple_lanes, centre_on_route,
        centre_in_intersection, each [N, T]."""
        c = np.ascontiguousarray(coords, dtype=np.float64)
        N, T = c.shape[0], c.shape[1]
        out = tuple(np.zeros((N, T), dtype=np.bool_) for _ in range(4))
        _ego_area_rows(0, N, c, *self._kernel_args(), *out)
        return out

    def point_flags(self, points: np.ndarray) -> np.ndarray:
        """OR of the category flags of the polygons containing each point [P, 2]."""
        p = np.ascontiguousarray(np.asarray(points, dtype=np.float64).reshape(-1, 2))
        return _point_flags_kernel(p, *self._kernel_args())


@njit(cache=True, nogil=True)
def _seg_meets_rect(ax, ay, bx, by, x0, y0, x1, y1):
    """Does segment a-b meet the closed rectangle [x0, x1] x [y0, y1]? (Liang-Barsky clipping, conservative by a
    relative epsilon so rounding never hides a crossing.)"""
    eps = 1e-9 * (1.0 + abs(x0) + abs(y0) + abs(x1) + abs(y1))
    x0 -= eps
    y0 -= eps
    x1 += eps
    y1 += eps
    dx = bx - ax
    dy = by - ay
    t0 = 0.0
    t1 = 1.0
    for k in range(4):
        if k == 0:
            p, q = -dx, ax - x0
        elif k == 1:
            p, q = dx, x1 - ax
        elif k == 2:
            p, q = -dy, ay - y0
        else:
            p, q = dy, y1 - ay
        if p == 0.0:
            if q < 0.0:
                return False
        else:
            r = q / p
            if p < 0.0:
                if r > t1:
                    return False
                if r > t0:
                    t0 = r
            else:
                if r < t0:
                    return False
                if r < t1:
                    t1 = r
    return True


@njit(cache=True, nogil=True)
def _classify_cells(xy, ptr, bounds, origin, cell, nx, ny, out_ptr, out_idx, out_full, slabs, fill):
    """Per fine cell, the polygons that touch it: 1 = cell strictly inside (no edge meets it), 0 = an edge crosses
    it (test each point). Cells outside a polygon are left out. Two passes: counts, then fill."""
    counts = np.zeros(nx * ny, dtype=np.int64)
    w = out_ptr[:-1].copy() if fill else np.zeros(0, dtype=np.int64)
    for k in range(len(ptr) - 1):
        a = ptr[k]
        b = ptr[k + 1]
        if b - a < 3:
            continue
        i0 = max(0, int((bounds[k, 0] - origin[0]) // cell))
        i1 = min(nx - 1, int((bounds[k, 2] - origin[0]) // cell))
        j0 = max(0, int((bounds[k, 1] - origin[1]) // cell))
        j1 = min(ny - 1, int((bounds[k, 3] - origin[1]) // cell))
        wi = i1 - i0 + 1
        wj = j1 - j0 + 1
        mixed = np.zeros((wi, wj), dtype=np.bool_)
        for e in range(a, b):
            f = e - 1 if e > a else b - 1
            ax, ay, bx, by = xy[f, 0], xy[f, 1], xy[e, 0], xy[e, 1]
            ci0 = max(i0, int((min(ax, bx) - origin[0]) // cell) - 1)
            ci1 = min(i1, int((max(ax, bx) - origin[0]) // cell) + 1)
            cj0 = max(j0, int((min(ay, by) - origin[1]) // cell) - 1)
            cj1 = min(j1, int((max(ay, by) - origin[1]) // cell) + 1)
            for i in range(ci0, ci1 + 1):
                for j in range(cj0, cj1 + 1):
                    if mixed[i - i0, j - j0]:
                        continue
                    rx0 = origin[0] + i * cell
                    ry0 = origin[1] + j * cell
                    if _seg_meets_rect(ax, ay, bx, by, rx0, ry0, rx0 + cell, ry0 + cell):
                        mixed[i - i0, j - j0] = True
        for j in range(j0, j1 + 1):
            status = -1  # inside-ness of the current run of cells no edge meets (constant along the run)
            for i in range(i0, i1 + 1):
                full = 0
                if mixed[i - i0, j - j0]:
                    status = -1
                else:
                    if status < 0:
                        cx = origin[0] + (i + 0.5) * cell
                        cy = origin[1] + (j + 0.5) * cell
                        status = 1 if _pip_slab(cx, cy, xy, ptr, k, slabs) else 0
                    if status == 0:
                        continue
                    full = 1
                c = i * ny + j
                if fill:
                    out_idx[w[c]] = k
                    out_full[w[c]] = full
                    w[c] += 1
                else:
                    counts[c] += 1
    return counts


@njit(cache=True, nogil=True)
def _cell_of(px, py, origin, cell, nx, ny):
    i = int((px - origin[0]) // cell)
    j = int((py - origin[1]) // cell)
    if i < 0 or j < 0 or i >= nx or j >= ny:
        return -1
    return i * ny + j


@njit(cache=True, nogil=True)
def _flags_at(px, py, xy, ptr, origin, cell, nx, ny, fine_ptr, fine_idx, fine_full, flags, slabs, mask):
    """OR of the flags (restricted to `mask`) of the polygons strictly containing the point."""
    c = _cell_of(px, py, origin, cell, nx, ny)
    out = 0
    if c < 0:
        return out
    for r in range(fine_ptr[c], fine_ptr[c + 1]):
        k = fine_idx[r]
        f = flags[k] & mask
        if f == 0 or (out | f) == out:
            continue
        if fine_full[r] or _pip_slab(px, py, xy, ptr, k, slabs):
            out |= f
    return out


@njit(cache=True, nogil=True)
def _pip_slab(px, py, xy, ptr, k, slabs):
    """Strictly inside polygon k (on an edge -> False), by the crossings of a ray across the point's slab."""
    poly_slab, slab_ptr, slab_edges, slab_y0, slab_h, slab_axis = slabs
    u_ax = slab_axis[k]  # 0: ray along +x, slabs cut y; 1: ray along +y, slabs cut x
    v_ax = 1 - u_ax
    pu = px if u_ax == 0 else py
    pv = py if u_ax == 0 else px
    ns = poly_slab[k + 1] - poly_slab[k]
    s = int((pv - slab_y0[k]) / slab_h[k])
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
        c = _ray_count(pu, pv, xy[j, u_ax], xy[j, v_ax], xy[i, u_ax], xy[i, v_ax])
        if c == 2:
            return False
        if c == 1:
            inside = not inside
    return inside


@njit(cache=True, nogil=True)
def _point_flags_kernel(p, xy, ptr, origin, cell, nx, ny, fine_ptr, fine_idx, fine_full, flags, slabs):
    out = np.zeros(len(p), dtype=np.int64)
    for q in range(len(p)):
        out[q] = _flags_at(p[q, 0], p[q, 1], xy, ptr, origin, cell, nx, ny, fine_ptr, fine_idx, fine_full, flags,
                           slabs, 15)
    return out


@njit(cache=True, nogil=True)
def _ego_area_rows(lo, hi, coords, xy, ptr, origin, cell, nx, ny, fine_ptr, fine_idx, fine_full, flags, slabs,
                   non_drivable, multiple, on_route, inter):
    """PDMScorer._calculate_ego_area per (proposal, step) for proposals lo..hi-1: a corner outside every drivable
    polygon -> non-drivable; corners in more than one lane with no lane holding all four -> multiple lanes; the
    centre's on-route lane and intersection membership (written into the four [N, T] outputs)."""
    T = coords.shape[1]
    lane_ids = np.empty(64, dtype=np.int64)
    lane_cnt = np.empty(64, dtype=np.int64)
    for n in range(lo, hi):
        for t in range(T):
            n_lanes = 0
            drv_corners = 0
            for pt in range(4):
                px = coords[n, t, pt, 0]
                py = coords[n, t, pt, 1]
                c = _cell_of(px, py, origin, cell, nx, ny)
                in_drv = False
                if c >= 0:
                    for r in range(fine_ptr[c], fine_ptr[c + 1]):
                        k = fine_idx[r]
                        f = flags[k]
                        if (f & 3) == 0:
                            continue
                        if (f & 2) == 0 and in_drv:
                            continue
                        if not (fine_full[r] or _pip_slab(px, py, xy, ptr, k, slabs)):
                            continue
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
                if in_drv:
                    drv_corners += 1
            fc = _flags_at(coords[n, t, 4, 0], coords[n, t, 4, 1], xy, ptr, origin, cell, nx, ny, fine_ptr, fine_idx,
                           fine_full, flags, slabs, 12)
            on_route[n, t] = (fc & 4) != 0
            inter[n, t] = (fc & 8) != 0
            non_drivable[n, t] = drv_corners < 4
            if n_lanes > 1:
                single = False
                for q in range(n_lanes):
                    if lane_cnt[q] == 4:
                        single = True
                multiple[n, t] = not single
