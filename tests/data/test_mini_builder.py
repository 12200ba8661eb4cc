"""The mini-dataset builder: reprojection round trip, determinism, plausible traffic."""

import hashlib

import numpy as np
import pytest
import shapely

from simscale_env.data import LogDB
from simscale_env.data.mini.gpkg_writer import write_gpkg
from simscale_env.data.mini.locations import LOCATIONS, MAP_VERSION, build_location
from simscale_env.data.mini.roadnet import Feature, Network
from simscale_env.data.schema import PEDESTRIAN, TL_RED, VEHICLE
from simscale_env.map import MapAPI, load_map
from simscale_env.map.gpkg import read_layer


def test_reprojection_round_trip_within_1cm(tmp_path):
    """A point written in UTM (stored as WGS84, as nuPlan does) reads back within 1 cm."""
    pts = np.array([[601234.567, 4101234.891], [602000.0, 4100000.0], [600500.25, 4102500.75]])
    net = Network({"crosswalks": [Feature(1, shapely.Polygon(pts), {"creator_id": 0})]}, {}, {}, {}, {}, {}, [],
                  [], [], [], {})
    p = write_gpkg(net, tmp_path / "m.gpkg", 32611, "1")
    lay = read_layer(p, "crosswalks", "epsg:32611")
    back = shapely.get_coordinates(lay.geoms[0])[:3]
    assert np.abs(back - pts).max() < 0.01
    raw = shapely.get_coordinates(read_layer(p, "crosswalks", "EPSG:4326").geoms[0])
    assert np.all(np.abs(raw[:, 0]) < 180) and np.all(np.abs(raw[:, 1]) < 90)  # stored in degrees


def test_map_reads_back_what_the_recipe_built(mini):
    net = build_location("us-ma-boston")
    m = load_map("us-ma-boston", mini / "maps")
    assert set(m.lanes) == {str(k) for k in net.lanes} | {str(k) for k in net.connectors}
    for fid, lane in list(net.lanes.items())[:10]:
        assert np.abs(m.lane(str(fid)).baseline.xy - lane.baseline).max() < 0.01


def test_map_writing_is_deterministic(tmp_path):
    net = build_location("us-pa-pittsburgh-hazelwood")
    a = write_gpkg(net, tmp_path / "a.gpkg", 32617, MAP_VERSION)
    b = write_gpkg(build_location("us-pa-pittsburgh-hazelwood"), tmp_path / "b.gpkg", 32617, MAP_VERSION)
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()


def test_log_generation_is_deterministic(mini):
    from simscale_env.data.mini.traffic import LogSpec, simulate

    loc = "us-pa-pittsburgh-hazelwood"
    net = build_location(loc)
    m = MapAPI(mini / "maps" / loc / MAP_VERSION / "map.gpkg", loc)
    spec = LogSpec(loc, 123, duration_s=4.0, warmup_s=3.0)
    f1, _ = simulate(net, m, spec)
    f2, _ = simulate(net, m, spec)
    assert len(f1) == len(f2)
    for a, b in zip(f1, f2):
        assert np.array_equal(a.tracks, b.tracks) and np.array_equal(a.xy, b.xy) and np.array_equal(a.ego, b.ego)


def _boxes_overlap(x, y, h, L, W):
    c, s = np.cos(h), np.sin(h)
    corners = np.stack([np.stack([x + c * dx * L / 2 - s * dy * W / 2, y + s * dx * L / 2 + c * dy * W / 2], -1)
                        for dx, dy in ((1, 1), (1, -1), (-1, -1), (-1, 1))], axis=1)
    polys = shapely.polygons(corners)
    a, b = shapely.STRtree(polys).query(polys, predicate="intersects")
    return int(np.sum(a < b))


def test_logs_are_plausible(mini_logs, mini):
    """Vehicles never overlap, stop at red lights, stay on the drivable area; the ego follows lanes; pedestrians
    cross at crosswalks."""
    ped_on_crosswalk = 0
    for p in mini_logs:
        with LogDB(p) as db:
            m = load_map(db.map_location, mini / "maps")
            n = len(db.lidar_pc_timestamps)
            idx = np.arange(0, n, 10)
            bx = db.boxes(idx)
            tl = db.traffic_lights(idx)
            red = {}
            for f, c, st in zip(tl["frame"], tl["lane_connector_id"], tl["status"]):
                if st == TL_RED:
                    red.setdefault(int(f), set()).add(str(c))
            veh = bx["category"] == VEHICLE
            on_road = m.is_in_drivable_area(np.stack([bx["x"][veh], bx["y"][veh]], -1))
            assert on_road.mean() > 0.99, p
            violations = 0
            for k in range(len(idx)):
                sel = (bx["frame"] == k) & veh
                assert _boxes_overlap(bx["x"][sel], bx["y"][sel], bx["yaw"][sel], bx["length"][sel],
                                      bx["width"][sel]) == 0, (p, k)
                # a vehicle at speed on the first metres of a connector whose light is red ran the light
                # (red for at least 0.5 s: a vehicle that could not stop at yellow may still be clearing the line)
                red_k = red.get(k, set()) & red.get(k - 1, set())
                for x, y, h, vx, vy in zip(bx["x"][sel], bx["y"][sel], bx["yaw"][sel], bx["vx"][sel], bx["vy"][sel]):
                    for lid in m.lanes_at(x, y):
                        if lid not in red_k or np.hypot(vx, vy) < 3.0:
                            continue
                        bl = m.lanes[lid].baseline
                        s_, lat, _ = bl.project([[x, y]])
                        dh = abs((h - bl.interpolate(s_[0])[2] + np.pi) % (2 * np.pi) - np.pi)
                        if s_[0] < 3.0 and abs(lat[0]) < 1.0 and dh < 0.5:
                            violations += 1
                peds = (bx["frame"] == k) & (bx["category"] == PEDESTRIAN)
                for x, y in zip(bx["x"][peds], bx["y"][peds]):
                    ped_on_crosswalk += any(cw.polygon.contains(shapely.Point(x, y)) for cw in m.crosswalks.values())
            assert violations == 0, p
            ego = db.ego_arrays()
            pts = np.stack([ego["x"], ego["y"]], -1)
            assert m.is_in_drivable_area(pts).all(), p
            assert np.isfinite(ego["vx"]).all() and ego["vx"].max() < 25.0
    assert ped_on_crosswalk > 0


def test_a_dataset_of_another_builder_version_is_regenerated_not_resumed(tmp_path):
    """The logs' names do not change between builder versions: what an older builder (or another seed) left is
    removed before building, a build of this version and seed in progress is resumed, a finished one is kept."""
    import json

    from simscale_env.data.mini.build import BUILD_MARKER, BUILDER_VERSION, clear_stale

    def old_build(out, version, seed=0, marker=""):
        db = out / "nuplan-v1.1" / "splits" / "mini" / "log.db"
        db.parent.mkdir(parents=True)
        db.write_bytes(b"old")
        (out / BUILD_MARKER).write_text(marker)
        (out / "manifest.json").write_text(json.dumps({"builder_version": version, "seed": seed}))
        return db

    stale = old_build(tmp_path / "a", BUILDER_VERSION - 1)
    assert clear_stale(tmp_path / "a", 0) and not stale.exists() and not (tmp_path / "a" / "manifest.json").exists()
    other_seed = old_build(tmp_path / "b", BUILDER_VERSION, seed=1)
    assert clear_stale(tmp_path / "b", 0) and not other_seed.exists()
    done = old_build(tmp_path / "c", BUILDER_VERSION)
    assert not clear_stale(tmp_path / "c", 0) and done.exists()
    in_progress = old_build(tmp_path / "d", BUILDER_VERSION - 1, marker=f"builder_version={BUILDER_VERSION} seed=0\n")
    (tmp_path / "d" / "manifest.json").unlink()
    assert not clear_stale(tmp_path / "d", 0) and in_progress.exists()
    assert not clear_stale(tmp_path / "e", 0)  # nothing there
