"""The map API on the golden tiny map (devkit semantics) and on the mini maps."""

import numpy as np
import pytest
import shapely

from simscale_env.map import MapAPI, MapLayer, load_map
from simscale_env.map.gpkg import resolve_map_file


@pytest.fixture(scope="module")
def lv(tiny_maps):
    return load_map("us-nv-las-vegas-strip", tiny_maps)


def test_lanes_at_point_and_layers(lv):
    assert lv.lanes_at(664061.0, 3997001.75) == ["11"]
    # inside the intersection, lane 12's two connectors overlap near their start
    assert set(lv.lanes_at(664101.0, 3996998.25)) == {"102", "103"}
    assert lv.objects_at(664110.0, 3997000.0, MapLayer.INTERSECTION) == ["601"]
    assert lv.is_in_layer(664061.0, 3997001.75, MapLayer.ROADBLOCK)
    assert lv.objects_at(664061.0, 3997001.75, MapLayer.ROADBLOCK) == ["1"]


def test_connector_exit_entry_semantics(lv):
    # a connector leaves its exit lane and enters its entry lane (lane_connectors.exit_lane_fid / entry_lane_fid)
    assert [c.id for c in lv.outgoing_edges("12")] == ["102", "103"]
    assert [c.id for c in lv.incoming_edges("21")] == ["101"]
    c = lv.lane("103")
    assert c.is_connector and c.incoming_ids == ("12",) and c.outgoing_ids == ("31",)
    assert c.has_traffic_light and c.stop_line_ids == ("502",)
    assert lv.lane("11").outgoing_ids == ("101",) and lv.lane("11").incoming_ids == ()
    # roadblocks and roadblock connectors
    rb = lv.roadblock("1")
    assert rb.lane_ids == ("11", "12") and set(rb.outgoing_ids) == {"201", "202"}
    assert lv.roadblock("201").is_connector and lv.roadblock("201").lane_ids == ("101", "102")
    # lane_index 0 is the leftmost lane
    assert lv.lane("11").right_neighbor_id == "12" and lv.lane("12").left_neighbor_id == "11"


def test_baseline_projection(lv):
    lid, s, lat, herr = lv.nearest_baseline(664061.0, 3997001.0, 0.0)
    assert lid == "11" and s == pytest.approx(61.0, abs=1e-6) and lat == pytest.approx(-0.75, abs=1e-6)
    assert herr == pytest.approx(0.0, abs=1e-6)
    # heading selects among nearby baselines: near the end of right turn 103 (heading -83.6 deg there) lane 31 starts
    # due south (-90 deg), 2.1 m away
    end = lv.lane("103").baseline.xy[-5]
    lid, _, _, herr = lv.nearest_baseline(end[0], end[1], -np.pi / 2, max_distance=3.0)
    assert lid == "31" and abs(herr) < 1e-6
    bl = lv.lane("103").baseline
    h103 = bl.interpolate(bl.project([end])[0][0])[2]
    lid, *_ = lv.nearest_baseline(end[0], end[1], h103, max_distance=3.0)
    assert lid == "103"


def test_drivable_area(lv):
    inside = lv.is_in_drivable_area([[664061.0, 3997001.75], [664110.0, 3997000.0], [664061.0, 3997020.0]])
    assert inside.tolist() == [True, True, False]


def test_route_centerline_continuity(lv):
    line = lv.route_centerline(["1", "201", "2"], (664061.0, 3997001.75, 0.0))
    assert lv.route_lanes(["1", "201", "2"], (664061.0, 3997001.75, 0.0)) == ["11", "101", "21"]
    steps = np.hypot(*np.diff(line.xy, axis=0).T)
    assert steps.max() < 1.5 and line.length == pytest.approx(300.0, abs=1e-3)
    # starting in the right lane follows the right lane
    assert lv.route_lanes(["1", "201", "2"], (664061.0, 3996998.25, 0.0)) == ["12", "102", "22"]


def test_route_searches_and_centrelines_are_kept_per_map(tiny_maps):
    """A route's lane sequence and centreline are computed once per (route, starting lane, depth): asked again
    (from another pose on the same lane), the same answer as a freshly loaded map's; a centreline is one read-only
    polyline; another starting lane or depth is its own entry; a bad route is still an error every time."""
    from simscale_env.errors import UnknownMapObjectError
    from simscale_env.map.map_api import MapAPI as _MapAPI

    m = load_map("us-nv-las-vegas-strip", tiny_maps)
    fresh = _MapAPI(m.path)
    route = ["1", "201", "2"]
    a = m.route_centerline(route, (664061.0, 3997001.75, 0.0))
    b = m.route_centerline(tuple(route), (664070.0, 3997001.5, 0.05))  # the same starting lane, further on
    assert a is b and not a.xy.flags.writeable and not a.s.flags.writeable
    np.testing.assert_array_equal(a.xy, fresh.route_centerline(route, (664061.0, 3997001.75, 0.0)).xy)
    for start, depth in (((664061.0, 3997001.75, 0.0), None), ((664061.0, 3996998.25, 0.0), None),
                         ((664061.0, 3996998.25, 0.0), 1)):
        got = m.route_lanes(route, start, search_depth=depth)
        assert got == fresh.route_lanes(route, start, search_depth=depth)
        got.append("mutated")  # a caller's list is its own
        assert m.route_lanes(route, start, search_depth=depth) == fresh.route_lanes(route, start, search_depth=depth)
    assert m.route_lanes(route, (664061.0, 3996998.25, 0.0), search_depth=1) == ["12"]
    for _ in range(2):
        with pytest.raises(UnknownMapObjectError, match="nowhere"):
            m.route_lanes(["1", "nowhere"], (664061.0, 3997001.75, 0.0))


def test_map_is_cached_per_location(tiny_maps):
    assert load_map("us-nv-las-vegas-strip", tiny_maps) is load_map("us-nv-las-vegas-strip", tiny_maps)


def test_mini_maps_graph_is_consistent(mini):
    for loc in ("us-nv-las-vegas-strip", "us-ma-boston", "us-pa-pittsburgh-hazelwood"):
        m = load_map(loc, mini / "maps")
        for lane in m.lanes.values():
            for o in lane.outgoing_ids:
                nxt = m.lane(o)
                assert lane.id in nxt.incoming_ids
                # the successor starts where this one ends
                assert np.hypot(*(nxt.baseline.xy[0] - lane.baseline.xy[-1])) < 0.05
            if lane.is_connector:
                assert len(lane.incoming_ids) == 1 and len(lane.outgoing_ids) == 1
        # every lane lies in the drivable area (its baseline samples)
        pts = np.concatenate([l.baseline.xy for l in m.lanes.values()])
        assert m.is_in_drivable_area(pts).mean() > 0.995


def test_mini_route_centerlines_follow_the_logged_ego(mini_builder, mini):
    for ref in mini_builder.refs()[:12]:
        s = mini_builder.load(ref)
        m = load_map(s.map_location, mini / "maps")
        t0 = s.start_index
        start = (s.ego.x[t0], s.ego.y[t0], s.ego.heading[t0])
        line = m.route_centerline(s.route_roadblock_ids, start)
        assert np.hypot(*np.diff(line.xy, axis=0).T).max() < 2.0  # continuous
        _, lat, dist = line.project(np.stack([s.ego.x[t0:t0 + 40], s.ego.y[t0:t0 + 40]], -1))
        # the ego (rear axle) drives along its route for the next 4 s, lane changes aside
        assert np.median(dist) < 1.0, ref
