"""PDM-Closed's path projection (`_Path.project`, `_geos_project`) equals shapely's line_locate_point (GEOS's
LengthIndexedLine.project) bit for bit: random polylines at UTM-like offsets, repeated vertices, points on vertices,
near and far from the line."""

from __future__ import annotations

import numpy as np
import shapely

from simscale_env.experts.pdm_closed import _geos_project, _Path


def test_projection_matches_geos_bit_for_bit():
    rng = np.random.default_rng(0)
    checked = 0
    for trial in range(120):
        n = int(rng.integers(2, 300))
        xy = np.cumsum(rng.normal(size=(n, 2)) * rng.choice([0.01, 1.0, 50.0]), axis=0) + rng.normal(size=2) * 1e5
        if trial % 4 == 0 and n > 3:
            xy[2] = xy[1]  # a repeated vertex: GEOS's projection factor is inf or NaN there
        pts = xy[rng.integers(0, n, 30)] + rng.normal(size=(30, 2)) * rng.choice([0.0, 0.1, 10.0, 1000.0])
        pts = np.vstack([pts, xy[:3]])
        want = shapely.line_locate_point(shapely.linestrings(xy), shapely.points(pts))
        got = _geos_project(np.ascontiguousarray(xy), np.ascontiguousarray(pts))
        assert want.tobytes() == got.tobytes(), trial
        checked += len(pts)
    assert checked > 3000
    path = _Path.of(xy, np.zeros(len(xy)))
    assert path.project(pts).tobytes() == shapely.line_locate_point(path.geom, shapely.points(pts)).tobytes()
