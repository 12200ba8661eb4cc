"""The mini dataset is genuine nuPlan/NAVSIM data: schema, the devkit's requirements (reference §8), timing."""

import json
import pickle
import sqlite3

import numpy as np
import pyogrio
import pytest

from simscale_env.data import LogDB
from simscale_env.data.schema import CATEGORIES, NUPLAN_SCHEMA
from simscale_env.map.gpkg import REQUIRED_LAYERS, read_meta

NUPLAN_LOCATIONS = {"sg-one-north", "us-ma-boston", "us-nv-las-vegas-strip", "us-pa-pittsburgh-hazelwood"}


def _ro(path):
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def test_at_least_12_logs_of_40s(mini_logs):
    assert len(mini_logs) >= 12
    for p in mini_logs:
        with LogDB(p) as db:
            assert db.duration_s >= 40.0


def test_exact_tables_and_columns(mini_logs):
    for p in mini_logs:
        c = _ro(p)
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == set(NUPLAN_SCHEMA), p
        for t, cols in NUPLAN_SCHEMA.items():
            have = [(r[1], r[2]) for r in c.execute(f"PRAGMA table_info('{t}')")]
            assert have == [(n, ty.replace(" NOT NULL", "")) for n, ty in cols], t
        c.close()


def test_devkit_requirements(mini_logs, mini):
    maps_index = json.loads((mini / "maps" / "nuplan-maps-v1.0.json").read_text())
    assert NUPLAN_LOCATIONS <= set(maps_index)
    for p in mini_logs:
        c = _ro(p)
        # lidar_pc at 20 Hz, every row in a scene
        ts = np.array([r[0] for r in c.execute("SELECT timestamp FROM lidar_pc ORDER BY timestamp")])
        assert np.all(np.diff(ts) == 50_000)
        assert c.execute("SELECT COUNT(*) FROM lidar_pc WHERE scene_token IS NULL").fetchone()[0] == 0
        assert c.execute("SELECT COUNT(*) FROM lidar WHERE channel='MergedPointCloud'").fetchone()[0] == 1
        names = [r[0] for r in c.execute("SELECT name FROM scene ORDER BY name")]
        assert len(names) >= 5 and names == sorted(names)
        # goals reference existing ego poses; routes are space-separated roadblock ids of the map
        assert c.execute("SELECT COUNT(*) FROM scene s LEFT JOIN ego_pose e ON e.token = s.goal_ego_pose_token "
                         "WHERE e.token IS NULL").fetchone()[0] == 0
        loc = c.execute("SELECT map_version FROM log").fetchone()[0]
        assert loc in maps_index
        from simscale_env.map import load_map

        m = load_map(loc, mini / "maps")
        for (rb,) in c.execute("SELECT roadblock_ids FROM scene"):
            assert "," not in rb and rb.split()
            assert all(r in m.roadblocks for r in rb.split())
        statuses = {r[0] for r in c.execute("SELECT DISTINCT status FROM traffic_light_status")}
        assert statuses <= {"green", "yellow", "red", "unknown"}
        cats = {r[0] for r in c.execute("SELECT name FROM category")}
        assert cats == set(CATEGORIES)
        # calibration pickles are plain lists, the camera rig has the 8 nuPlan channels
        chans = []
        for ch, tr, rot, K in c.execute("SELECT channel, translation, rotation, intrinsic FROM camera"):
            chans.append(ch)
            assert type(pickle.loads(tr)) is list and len(pickle.loads(rot)) == 4
            assert np.asarray(pickle.loads(K)).shape == (3, 3)
        assert sorted(chans) == sorted(["CAM_F0", "CAM_B0", "CAM_L0", "CAM_L1", "CAM_L2", "CAM_R0", "CAM_R1",
                                        "CAM_R2"])
        # every lane connector id with a status is a connector of the map
        ids = {r[0] for r in c.execute("SELECT DISTINCT lane_connector_id FROM traffic_light_status")}
        assert all(str(i) in m.lanes and m.lanes[str(i)].is_connector for i in ids)
        # images at 10 Hz per camera
        n_img = c.execute("SELECT COUNT(*) FROM image").fetchone()[0]
        assert n_img == 8 * len(ts) // 2
        c.close()


def test_agents_of_every_kind(mini_logs):
    total = {}
    for p in mini_logs:
        with LogDB(p) as db:
            for k, v in db.category_counts().items():
                total[k] = total.get(k, 0) + v
    for cat in ("vehicle", "pedestrian", "bicycle", "traffic_cone"):
        assert total.get(cat, 0) > 0, total


def test_maps_layers_columns_crs(mini):
    for loc in ("us-nv-las-vegas-strip", "us-ma-boston", "us-pa-pittsburgh-hazelwood"):
        p = next((mini / "maps" / loc).glob("*/map.gpkg"))
        layers = dict(pyogrio.list_layers(p))
        for layer, cols in REQUIRED_LAYERS.items():
            assert layer in layers
            info = pyogrio.read_info(p, layer=layer)
            assert set(cols) <= set(info["fields"]), layer
            assert info["crs"] == "EPSG:4326"  # stored in WGS84, as nuPlan ships its maps
        for layer in ("crosswalks", "walkways", "road_segments", "generic_drivable_areas", "carpark_areas"):
            assert layer in layers
        assert read_meta(p)["projectedCoordSystem"].lower().startswith("epsg:326")
        # integer-valued *_fid columns; '' (never NULL) where a connector has no light
        c = _ro(p)
        assert c.execute("SELECT COUNT(*) FROM lane_connectors WHERE traffic_light_stop_line_fids IS NULL"
                         ).fetchone()[0] == 0
        assert c.execute("SELECT COUNT(*) FROM baseline_paths WHERE (lane_fid IS NULL) = (lane_connector_fid IS NULL)"
                         ).fetchone()[0] == 0
        c.close()
    # the stub location the devkit needs
    stub = next((mini / "maps" / "sg-one-north").glob("*/map.gpkg"))
    assert {"lane_connectors", "meta"} <= set(dict(pyogrio.list_layers(stub)))


def test_scenario_timing(mini_builder):
    refs = mini_builder.refs()
    assert len(refs) >= 30
    for r in refs[:10]:
        s = mini_builder.load(r)
        assert s.num_iterations == 151
        it = s.iteration_timestamps_us
        assert np.all(np.diff(it) == 100_000)
        assert it[0] == r.timestamp_us - 3_000_000
        assert s.route_roadblock_ids and s.goal is not None


def test_splits(mini):
    from simscale_env.data.openscene import load_split

    sp = {n: load_split(mini / "splits" / f"{n}.yaml") for n in ("mini-navtrain", "mini-navtest", "mini-navhard")}
    assert set(sp["mini-navhard"].tokens) <= set(sp["mini-navtest"].tokens)
    assert not set(sp["mini-navtrain"].log_names) & set(sp["mini-navtest"].log_names)
    assert len(sp["mini-navhard"].tokens) >= 5


def test_build_mini_refuses_a_folder_that_is_not_its_own(tmp_path):
    """SIMSCALE_MINI or --out pointing at a user's dataset by mistake: nothing is written there."""
    from simscale_env.data.mini.build import build_mini
    from simscale_env.data.paths import ensure_mini

    (tmp_path / "my_logs").mkdir()
    (tmp_path / "my_logs" / "a.db").write_bytes(b"precious")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(FileExistsError, match="not a SimScale mini dataset"):
        build_mini(tmp_path)
    with pytest.raises(FileExistsError, match="refusing"):
        ensure_mini(tmp_path, progress=False)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_block_size_changes_no_row(mini_logs):
    """Boxes and traffic-light rows read through blocks of 1 s (`LogDB.BLOCK`, issue 20), and of their lidar_pcs of
    one parity where a call asks for every other one (10 Hz), are those blocks of 20 s give, in the same order: frames
    within one block, across blocks, either parity, single frames, and across calls (whole blocks serving a parity,
    halves cached before a whole block is asked for)."""
    p = mini_logs[0]
    with LogDB(p) as small, LogDB(p) as large:
        large.BLOCK, large.MAX_BLOCKS = 400, 64
        n = len(small.lidar_pc_timestamps)
        assert small.BLOCK == 20 and n > 2 * large.BLOCK
        cases = (np.arange(3, 17), np.arange(0, n, 2), np.arange(395, 830, 2), np.array([n - 1, 5, 401]),
                 np.arange(n), np.arange(1, 41, 2), np.arange(860, 900, 4))
        for idx in cases:
            for kind in ("boxes", "traffic_lights"):
                a, b = getattr(small, kind)(idx), getattr(large, kind)(idx)
                assert set(a) == set(b) and len(a["frame"])
                for k in a:
                    assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), (kind, k)
        a, b = small.boxes(np.arange(0, 60), with_tokens=True), large.boxes(np.arange(0, 60), with_tokens=True)
        assert np.array_equal(a["token"], b["token"])
        assert {k[2] for k in small._blocks} == {None, 0, 1}  # whole blocks and both halves were read
