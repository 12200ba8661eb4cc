"""Bad input raises a specific error naming the file and the missing or offending piece; readers never write."""

import hashlib
import io
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from simscale_env.data import LogDB, ScenarioBuilder, extract_scenario
from simscale_env.data.safe_pickle import safe_loads
from simscale_env.errors import (CorruptFileError, MapError, MissingFileError, SchemaError, UnknownTokenError,
                                 UnsafePickleError)
from simscale_env.map import MapAPI, load_map
from simscale_env.map.gpkg import resolve_map_file
from tests.conftest import TINY_TAG


def test_missing_db(tmp_path):
    with pytest.raises(MissingFileError, match="nope.db"):
        LogDB(tmp_path / "nope.db")


def test_truncated_and_non_sqlite_db(tmp_path, tiny_log):
    t = tmp_path / "trunc.db"
    t.write_bytes(tiny_log.read_bytes()[:5000])
    with pytest.raises(CorruptFileError, match="trunc.db"):
        db = LogDB(t)
        db.ego_arrays()
    j = tmp_path / "junk.db"
    j.write_bytes(b"this is not a database at all" * 10)
    with pytest.raises(CorruptFileError, match="not an SQLite database"):
        LogDB(j)


def test_missing_table_and_column(tmp_path, tiny_log):
    p = tmp_path / "notable.db"
    shutil.copy(tiny_log, p)
    c = sqlite3.connect(p)
    c.execute("DROP TABLE scenario_tag")
    c.commit()
    c.close()
    with pytest.raises(SchemaError, match="missing table 'scenario_tag'"):
        LogDB(p)
    p2 = tmp_path / "nocol.db"
    shutil.copy(tiny_log, p2)
    c = sqlite3.connect(p2)
    c.execute("ALTER TABLE lidar_box DROP COLUMN yaw")
    c.commit()
    c.close()
    with pytest.raises(SchemaError, match="table 'lidar_box' lacks column 'yaw'"):
        LogDB(p2)


def test_unknown_tokens(tiny_log):
    with LogDB(tiny_log) as db:
        with pytest.raises(UnknownTokenError, match="unknown lidar_pc token 00000000deadbeef"):
            extract_scenario(db, "00000000deadbeef")
        with pytest.raises(ValueError, match="16-character hex"):
            extract_scenario(db, "xyz")
    with pytest.raises(UnknownTokenError, match="unknown scenario token"):
        ScenarioBuilder([tiny_log]).load("00000000deadbeef")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_restricted_unpickler():
    data = pickle.dumps(_Evil())
    with pytest.raises(UnsafePickleError, match=r"calib\.pkl: pickle references (posix|os)\.system"):
        safe_loads(data, "calib.pkl")
    # plain data and numpy arrays load
    obj = {"a": [1.0, 2.0], "b": np.arange(6.0).reshape(2, 3), "c": (1, "x")}
    out = safe_loads(pickle.dumps(obj), "ok.pkl")
    assert out["a"] == [1.0, 2.0] and np.array_equal(out["b"], obj["b"])
    # the devkit's list subclasses are read as lists
    raw = (b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c!nuplan.database.common.data_types\x94\x8c\x0b"
           b"Translation\x94\x93\x94)\x81\x94(G?\xf0\x00\x00\x00\x00\x00\x00e.")
    assert safe_loads(raw, "t.pkl") == [1.0]
    with pytest.raises(CorruptFileError, match="bad.pkl"):
        safe_loads(b"\x80\x04garbage", "bad.pkl")


def test_map_bad_input(tmp_path, tiny_maps):
    with pytest.raises(MapError, match="unknown map location 'atlantis'"):
        load_map("atlantis", tiny_maps)
    with pytest.raises(MapError, match="unknown map version '0.0.1'"):
        resolve_map_file(tiny_maps, "us-nv-las-vegas-strip", "0.0.1")
    with pytest.raises(MissingFileError, match="nuplan-maps-v1.0.json"):
        load_map("us-nv-las-vegas-strip", tmp_path)
    # a GeoPackage without meta, and one without a required layer
    src = resolve_map_file(tiny_maps, "us-nv-las-vegas-strip")
    p = tmp_path / "nometa.gpkg"
    shutil.copy(src, p)
    c = sqlite3.connect(p)
    c.execute("DROP TABLE meta")
    c.execute("DELETE FROM gpkg_contents WHERE table_name='meta'")
    c.commit()
    c.close()
    with pytest.raises(SchemaError, match="no 'meta' layer"):
        MapAPI(p)
    p2 = tmp_path / "nolanes.gpkg"
    shutil.copy(src, p2)
    c = sqlite3.connect(p2)
    c.execute("DELETE FROM gpkg_contents WHERE table_name='lanes_polygons'")
    c.execute("DELETE FROM gpkg_geometry_columns WHERE table_name='lanes_polygons'")
    c.execute("DROP TABLE lanes_polygons")
    c.commit()
    c.close()
    with pytest.raises(SchemaError, match="lacks the required layer 'lanes_polygons'"):
        MapAPI(p2)
    p3 = tmp_path / "junk.gpkg"
    p3.write_bytes(b"nope" * 100)
    with pytest.raises(CorruptFileError, match="not a GeoPackage"):
        MapAPI(p3)


def _digest(paths):
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def test_readers_never_modify_files(tiny_log, tiny_maps):
    files = [tiny_log] + sorted(tiny_maps.rglob("*"))
    files = [f for f in files if f.is_file()]
    before = _digest(files)
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    from simscale_env.map import clear_map_cache

    clear_map_cache()
    b = ScenarioBuilder([tiny_log])
    b.load(b.refs()[0])
    load_map("us-nv-las-vegas-strip", tiny_maps).drivable_area
    assert _digest(files) == before
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes
    assert not list(tiny_log.parent.glob("*-journal")) and not list(tiny_log.parent.glob("*-wal"))


def test_cli_prints_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "simscale_env.cli", "data", "info", str(tmp_path / "missing")],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "missing" in lines[0] and lines[0].startswith("simscale: error:")


def test_bad_calibration_and_light_rows_name_the_field(tmp_path, tiny_log):
    p = tmp_path / "badcal.db"
    shutil.copy(tiny_log, p)
    c = sqlite3.connect(p)
    c.execute("UPDATE camera SET intrinsic = ? WHERE channel = 'CAM_F0'", (pickle.dumps([1.0, 2.0]),))
    c.commit()
    c.close()
    with LogDB(p) as db:
        with pytest.raises(SchemaError, match=r"camera\[CAM_F0\]\.intrinsic: expected a pickled array of shape"):
            db.cameras
    p2 = tmp_path / "badlight.db"
    shutil.copy(tiny_log, p2)
    c = sqlite3.connect(p2)
    n = c.execute("SELECT COUNT(*) FROM traffic_light_status").fetchone()[0]
    c.execute("UPDATE traffic_light_status SET lane_connector_id = NULL")
    c.commit()
    c.close()
    assert n > 0
    with LogDB(p2) as db:
        with pytest.raises(SchemaError, match="lane_connector_id must be an integer, got NULL"):
            extract_scenario(db, TINY_TAG)


def test_openscene_log_with_a_bad_later_frame(tmp_path, mini):
    from simscale_env.data.openscene import load_log

    src = next((mini / "navsim_logs" / "mini").glob("*.pkl"))
    frames = load_log(src)
    frames[5] = "not a frame"
    p = tmp_path / "bad.pkl"
    p.write_bytes(pickle.dumps(frames))
    with pytest.raises(SchemaError, match="frame 5 is a str, expected a dict"):
        load_log(p)
