"""Hostile GeoPackage maps: a bad projectedCoordSystem, NULL ids in the columns the lane graph is built from, NULL
geometries and random byte corruption each end in one SimScaleError naming the file (and the layer, column and rows),
never a pyproj/GEOS/pyogrio error or a silently broken lane graph. Every case works on a copy of the golden tiny map
under tmp_path (MapAPI is built from the path directly, so load_map's per-path cache plays no part)."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simscale_env.errors import CorruptFileError, MapError, SchemaError, SimScaleError
from simscale_env.map import MapAPI
from simscale_env.map.gpkg import NOT_NULL_COLUMNS, read_layer, resolve_map_file
from tests.helpers import corrupt


@pytest.fixture(scope="module")
def tiny_gpkg(tiny_maps) -> Path:
    return resolve_map_file(tiny_maps, "us-nv-las-vegas-strip")


def _copy(src: Path, folder: Path, name: str) -> Path:
    p = folder / name
    shutil.copy(src, p)
    return p


def _sql(p: Path, *statements, params=()) -> None:
    """Run attribute-only UPDATEs on a copy. GeoPackage's R-tree triggers call SpatiaLite functions the sqlite3
    module lacks; they only keep the spatial index in step with geometry edits, so they are dropped first."""
    c = sqlite3.connect(p)
    for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        c.execute(f'DROP TRIGGER "{name}"')
    for s in statements:
        c.execute(s, params)
    c.commit()
    c.close()


@pytest.mark.parametrize("value,match", [
    ("garbage", r"meta projectedCoordSystem 'garbage' is not a known CRS"),
    ("epsg:99999", r"meta projectedCoordSystem 'epsg:99999' is not a known CRS .*crs not found"),
    ("epsg:32699", r"meta projectedCoordSystem 'epsg:32699' is not a known CRS"),
    ("+proj=utm +zone=99 +datum=WGS84",
     r"meta projectedCoordSystem '\+proj=utm \+zone=99 \+datum=WGS84' is not a known CRS .*zone"),
    ("epsg:4326", r"meta projectedCoordSystem 'epsg:4326' \(WGS 84\) is not a projected CRS"),
    ("", r"meta projectedCoordSystem is empty"),
    (None, r"meta projectedCoordSystem is empty"),
], ids=["garbage", "unknown-epsg", "unknown-utm-epsg", "bad-utm-zone", "geographic", "empty", "null"])
def test_invalid_projected_coord_system_names_file_and_value(tmp_path, tiny_gpkg, value, match):
    p = _copy(tiny_gpkg, tmp_path, "badcrs.gpkg")
    _sql(p, "UPDATE meta SET value = ? WHERE key = 'projectedCoordSystem'", params=(value,))
    with pytest.raises(MapError, match=r"badcrs\.gpkg: " + match + r".*expected a projected CRS such as 'epsg:32611'"):
        MapAPI(p)


def test_missing_projected_coord_system(tmp_path, tiny_gpkg):
    p = _copy(tiny_gpkg, tmp_path, "nocrs.gpkg")
    _sql(p, "DELETE FROM meta WHERE key = 'projectedCoordSystem'")
    with pytest.raises(SchemaError, match=r"nocrs\.gpkg: layer 'meta' has no 'projectedCoordSystem' row"):
        MapAPI(p)


NULL_CASES = [(layer, col) for layer, cols in NOT_NULL_COLUMNS.items() for col in cols]


@pytest.mark.parametrize("layer,column", NULL_CASES, ids=[f"{l}.{c}" for l, c in NULL_CASES])
def test_null_lane_graph_ids_are_an_error(tmp_path, tiny_gpkg, layer, column):
    p = _copy(tiny_gpkg, tmp_path, f"null_{layer}_{column}.gpkg")
    c = sqlite3.connect(p)
    fids = [r[0] for r in c.execute(f"SELECT fid FROM {layer} ORDER BY fid")]
    c.close()
    assert len(fids) >= 2
    _sql(p, f'UPDATE {layer} SET "{column}" = NULL WHERE fid IN ({fids[0]}, {fids[-1]})')
    with pytest.raises(MapError, match=rf"null_{layer}_{column}\.gpkg: layer '{layer}', column '{column}' is NULL in "
                                       rf"2 row\(s\) \(fid {fids[0]}, {fids[-1]}\)"):
        MapAPI(p)


@pytest.mark.parametrize("value,shown", [("9e999", "inf"), ("101.5", "101.5")], ids=["inf", "fractional"])
def test_non_integer_ids_are_an_error(tmp_path, tiny_gpkg, value, shown):
    """baseline_paths stores its ids as REAL: an infinite or fractional one is no id (it was an OverflowError, or
    silently truncated)."""
    p = _copy(tiny_gpkg, tmp_path, f"badid_{shown}.gpkg")
    _sql(p, f"UPDATE baseline_paths SET lane_connector_fid = {value} WHERE lane_connector_fid = 101")
    c = sqlite3.connect(p)
    fid = c.execute(f"SELECT fid FROM baseline_paths WHERE lane_connector_fid = {value}").fetchone()[0]
    c.close()
    with pytest.raises(MapError, match=rf"badid_{shown}\.gpkg: layer 'baseline_paths', column 'lane_connector_fid' "
                                       rf"holds {shown} in 1 row\(s\) \(fid {fid}\); expected an integer id"):
        MapAPI(p)


def test_null_geometry_is_an_error(tmp_path, tiny_gpkg):
    p = _copy(tiny_gpkg, tmp_path, "nullgeom.gpkg")
    _sql(p, "UPDATE lanes_polygons SET geom = NULL WHERE fid = (SELECT MAX(fid) FROM lanes_polygons)")
    c = sqlite3.connect(p)
    fid = c.execute("SELECT MAX(fid) FROM lanes_polygons").fetchone()[0]
    c.close()
    with pytest.raises(CorruptFileError, match=rf"nullgeom\.gpkg: layer 'lanes_polygons' has 1 NULL or unreadable "
                                               rf"geometries \(fid {fid}\)"):
        MapAPI(p)


def test_coordinates_outside_the_projection_are_an_error(tmp_path):
    """A stored latitude of 95 deg has no UTM position: PROJ's error, not inf coordinates in the map."""
    from pyogrio import raw

    p = tmp_path / "offworld.gpkg"
    line = shapely.to_wkb(np.array([shapely.LineString([(-115.17, 36.1), (-115.17, 95.0)])], dtype=object))
    raw.write(p, line, [np.array([7], np.int64)], ["fid"], layer="boundaries", driver="GPKG",
              geometry_type="LineString", crs="EPSG:4326")
    with pytest.raises(CorruptFileError, match=r"offworld\.gpkg: layer 'boundaries' cannot be reprojected from its CRS "
                                               r"'EPSG:4326' to 'epsg:32611' \(.*Invalid latitude"):
        read_layer(p, "boundaries", "epsg:32611")


def test_nullable_columns_still_load(tmp_path, tiny_gpkg):
    """NULL where the devkit allows one (stop line type, speed limit, stop-line list, turn type) loads as None."""
    p = _copy(tiny_gpkg, tmp_path, "nullable.gpkg")
    _sql(p, "UPDATE stop_polygons SET stop_polygon_type_fid = NULL",
         "UPDATE lane_connectors SET speed_limit_mps = NULL, turn_type_fid = NULL, traffic_light_stop_line_fids = NULL "
         "WHERE fid = 103")
    m = MapAPI(p)
    assert {a.attributes["type"] for a in m.stop_lines.values()} == {None}
    c = m.lane("103")
    assert c.speed_limit_mps is None and c.turn_type is None and not c.has_traffic_light
    assert c.incoming_ids == ("12",) and c.outgoing_ids == ("31",)  # the graph is intact


# ---------------------------------------------------------------------------------------------- fuzzing
def test_random_byte_corruption_raises_only_simscale_errors(tiny_gpkg):
    good = tiny_gpkg.read_bytes()
    size = len(good)
    folder = Path(tempfile.mkdtemp(prefix="simscale_mapfuzz_"))
    seen: dict[str, int] = {}
    flips = st.lists(st.tuples(st.integers(0, size - 1), st.integers(1, 255)), min_size=1, max_size=8)
    runs = st.lists(st.tuples(st.integers(0, size - 1), st.binary(min_size=1, max_size=32)), max_size=2)
    cut = st.one_of(st.none(), st.none(), st.integers(0, size - 1))
    counter = iter(range(10 ** 9))

    @settings(max_examples=80, deadline=timedelta(seconds=10), derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.tuples(flips, runs, cut))
    def run(corruption):
        path = folder / f"fuzz{next(counter)}.gpkg"  # a fresh path per example
        path.write_bytes(corrupt(good, *corruption))
        try:
            m = MapAPI(path)
        except SimScaleError as exc:  # anything else fails the test
            seen[type(exc).__name__] = seen.get(type(exc).__name__, 0) + 1
            assert path.name in str(exc), str(exc)
            return
        finally:
            path.unlink()
        seen["ok"] = seen.get("ok", 0) + 1
        # what loads is usable: finite projected coordinates, string ids throughout the lane graph
        assert all(isinstance(i, str) for ln in m.lanes.values() for i in (ln.roadblock_id, *ln.incoming_ids,
                                                                              *ln.outgoing_ids))
        assert np.isfinite(m.bounds).all()

    try:
        run()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert seen.get("ok", 0) > 0 and sum(v for k, v in seen.items() if k != "ok") > 0, seen
