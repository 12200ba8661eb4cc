"""The vectorized geometry kernels against shapely, the reference NAVSIM scores with (gsplat-style: a fast kernel
tested against a reference implementation)."""

import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, Polygon, box

from simscale_env.metrics.geometry import (AreaIndex, PolygonSet, boxes_overlap, polyline_project,
                                           quads_meet_polygons)


def _random_polygons(rng, n=12):
    polys = []
    for _ in range(n):
        c = rng.uniform(-40, 40, 2)
        k = rng.integers(5, 40)
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        r = rng.uniform(2, 15) * rng.uniform(0.5, 1.0, k)
        polys.append(Polygon(np.c_[c[0] + r * np.cos(ang), c[1] + r * np.sin(ang)]))
    # a long thin lane along x with many vertices and one along y: the slab axis choice
    xs = np.linspace(-50, 50, 200)
    polys.append(Polygon(np.r_[np.c_[xs, np.full_like(xs, 1.75)], np.c_[xs[::-1], np.full_like(xs, -1.75)]]))
    polys.append(Polygon(np.r_[np.c_[np.full_like(xs, 8.25), xs], np.c_[np.full_like(xs, 4.75), xs[::-1]]]))
    return [p if p.is_valid else p.buffer(0) for p in polys]


def _query_points(rng, polys):
    pts = [rng.uniform(-60, 60, (20000, 2))]
    for p in polys:  # vertices, edge midpoints and points next to edges
        ring = np.asarray(p.exterior.coords)
        mid = 0.5 * (ring[1:] + ring[:-1])
        pts += [ring, mid, mid + rng.normal(0, 1e-6, mid.shape)]
    pts.append(np.array([[0.5, 0.5], [1.0, 1.0], [-0.5, 1.75], [3.0, -1.75]]))  # on fine-grid lines and lane edges
    return np.concatenate(pts)


def test_area_index_point_flags_match_shapely_contains():
    rng = np.random.default_rng(0)
    polys = [p for p in _random_polygons(rng) if isinstance(p, Polygon)]
    n = len(polys)
    flags = [np.arange(n) % 4 == i for i in range(4)]
    index = AreaIndex(polys, *flags)
    pts = _query_points(rng, polys)
    got = index.point_flags(pts)
    want = np.zeros(len(pts), dtype=np.int64)
    for k, p in enumerate(polys):
        inside = shapely.contains_xy(p, pts[:, 0], pts[:, 1])
        want[inside] |= int(index.flags[k])
    assert np.array_equal(got, want)
    assert (got > 0).mean() > 0.1  # the test exercises insides, not just the empty plane


def test_area_index_fine_cells_are_classified_exactly():
    rng = np.random.default_rng(1)
    polys = [p for p in _random_polygons(rng) if isinstance(p, Polygon)]
    index = AreaIndex(polys, *[np.ones(len(polys), bool)] * 4)
    nx, ny = index.fine_shape
    assert index.fine_full.any() and not index.fine_full.all()
    for c in rng.choice(nx * ny, 3000, replace=False):
        i, j = divmod(int(c), ny)
        x0, y0 = index.origin + np.array([i, j]) * index.fine_cell
        cell = box(x0, y0, x0 + index.fine_cell, y0 + index.fine_cell)
        entries = dict(zip(index.fine_idx[index.fine_ptr[c]:index.fine_ptr[c + 1]],
                           index.fine_full[index.fine_ptr[c]:index.fine_ptr[c + 1]]))
        for k, p in enumerate(polys):
            if p.contains_properly(cell):
                assert entries.get(k) == 1
            elif p.intersects(cell) and not p.touches(cell):
                assert entries.get(k) == 0


def test_boxes_overlap_matches_shapely_intersects_including_touching():
    rng = np.random.default_rng(2)
    N, T, M = 30, 5, 25

    def boxes(n):
        c = rng.uniform(-20, 20, (n, 2))
        h = rng.uniform(-np.pi, np.pi, n)
        hl, hw = rng.uniform(0.5, 3, n), rng.uniform(0.3, 1.2, n)
        d = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=float)
        loc = d[None] * np.stack([hl, hw], -1)[:, None]
        rot = np.stack([np.stack([np.cos(h), -np.sin(h)], -1), np.stack([np.sin(h), np.cos(h)], -1)], -2)
        return c[:, None] + np.einsum("nij,nkj->nki", rot, loc)

    ego = boxes(N * T).reshape(N, T, 4, 2)
    obj = boxes(T * M).reshape(T, M, 4, 2)
    obj[0, 0] = ego[0, 0] + np.array([ego[0, 0, 0] - ego[0, 0, 1]])  # shares an edge: touching counts
    valid = rng.random((T, M)) > 0.2
    valid[0, 0] = True
    n_idx, t_idx, m_idx = boxes_overlap(ego, obj, valid)
    got = set(zip(n_idx.tolist(), t_idx.tolist(), m_idx.tolist()))
    want = set()
    for n in range(N):
        for t in range(T):
            e = Polygon(ego[n, t])
            for m in range(M):
                if valid[t, m] and e.intersects(Polygon(obj[t, m])):
                    want.add((n, t, m))
    assert got == want
    assert (0, 0, 0) in got and len(got) > 20
    order = np.lexsort((m_idx, t_idx, n_idx))
    assert np.array_equal(order, np.arange(len(order)))


def test_quads_meet_polygons_matches_shapely():
    rng = np.random.default_rng(3)
    polys = [p for p in _random_polygons(rng, 6) if isinstance(p, Polygon)]
    ps = PolygonSet(polys)
    N, T = 400, 3
    c = rng.uniform(-50, 50, (N, T, 1, 2))
    quads = c + rng.uniform(0.5, 4, (N, T, 1, 1)) * np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], float)
    quads[0, 0] = np.array([[10, 1.75], [0, 1.75], [0, 0], [10, 0]])  # lies inside the long lane, touching its edge
    step_poly = np.array([0, len(polys) - 2, 1, 2, 3, len(polys) - 1], dtype=np.int64)
    step_ptr = np.array([0, 2, 4, 6], dtype=np.int64)
    got = quads_meet_polygons(quads, ps.xy, ps.ptr, ps.bounds, step_ptr, step_poly)
    want = np.array([any(Polygon(quads[n, t]).intersects(polys[k]) for t in range(T)
                         for k in step_poly[step_ptr[t]:step_ptr[t + 1]]) for n in range(N)])
    assert np.array_equal(got, want) and want[0] and 0 < want.sum() < N


def test_polyline_project_matches_shapely_project_and_distance():
    rng = np.random.default_rng(4)
    t = np.linspace(0, 3 * np.pi, 300)
    xy = np.c_[20 * t, 15 * np.sin(t)]
    line = LineString(xy)
    s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))])
    pts = np.cumsum(rng.normal(0, 2, (2000, 2)), axis=0) * 0.2 + np.array([90.0, 0.0])
    pts = np.concatenate([pts, rng.uniform([-20, -40], [210, 40], (2000, 2)), xy[::7]])
    arc, dist = polyline_project(pts, xy, s)
    want_arc = np.array([line.project(shapely.Point(p)) for p in pts])
    want_dist = np.array([line.distance(shapely.Point(p)) for p in pts])
    np.testing.assert_allclose(dist, want_dist, atol=1e-9)
    np.testing.assert_allclose(arc, want_arc, atol=1e-6)
    with pytest.raises(ValueError, match="at least 2 points"):
        polyline_project(pts, xy[:1], s[:1])
