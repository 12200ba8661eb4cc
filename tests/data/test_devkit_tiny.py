"""The readers on the golden tiny log + map that nuplan-devkit v1.2.2 opens (tests/fixtures/golden/devkit_tiny)."""

import json

import numpy as np
import pytest

from simscale_env.data import LogDB, ScenarioBuilder, extract_scenario, iterate_log
from simscale_env.data.schema import PEDESTRIAN, TL_GREEN, TL_RED, TRAFFIC_CONE, VEHICLE
from tests.conftest import DEVKIT_TINY, TINY_TAG


def test_tagged_scenario_timing_route_goal(tiny_log):
    b = ScenarioBuilder([tiny_log])
    refs = b.refs()
    assert [(r.token, r.scenario_type) for r in refs] == [(TINY_TAG, "following_lane_with_lead")]
    s = b.load(refs[0])
    assert s.num_iterations == 151
    it = s.iteration_timestamps_us
    assert np.all(np.diff(it) == 100_000)
    # iteration 0 is 3 s before the tagged lidar_pc
    assert it[0] == s.tag_timestamp_us - 3_000_000 == 1620857245000000
    assert s.route_roadblock_ids == ("1", "201", "2")
    assert s.goal == pytest.approx((664244.6, 3997001.75, 0.0))
    assert s.map_location == "us-nv-las-vegas-strip"
    # the devkit history buffer: 2 s before iteration 0 at the same step
    assert s.num_history == 20 and np.all(np.diff(s.timestamps_us) == 100_000)


def test_agents_by_category_and_lights(tiny_log):
    with LogDB(tiny_log) as db:
        s = extract_scenario(db, TINY_TAG)
        counts = db.category_counts()
    assert counts == {"vehicle": 3, "pedestrian": 1, "traffic_cone": 1}
    cats = sorted(s.agents.category.tolist())
    assert cats == sorted([VEHICLE] * 3 + [PEDESTRIAN, TRAFFIC_CONE])
    t0 = s.start_index
    assert s.traffic_lights.at(t0) == {101: TL_GREEN, 102: TL_GREEN, 103: TL_RED}
    # agents the devkit's trace holds at iteration 0 are in the log at iteration 0, at the logged positions
    trace = json.loads((DEVKIT_TINY / "closed_loop_log_future_idm_agents.json").read_text())
    present = s.agents.at(t0)
    pos = {tok: (x, y) for tok, x, y in zip(present["track_token"], present["x"], present["y"])}
    assert trace[0]["t_us"] == s.timestamps_us[t0]
    for tok in trace[0]["agents"]:
        assert tok in pos
    # the ego at iteration 0 is the rear axle of the log
    assert trace[0]["ego"][:3] == pytest.approx([s.ego.x[t0], s.ego.y[t0], s.ego.heading[t0]], abs=1e-9)


def test_cameras_and_images(tiny_log):
    with LogDB(tiny_log) as db:
        cams = db.cameras
        assert [c.channel for c in cams] == ["CAM_F0", "CAM_B0", "CAM_L0", "CAM_L1", "CAM_L2", "CAM_R0", "CAM_R1",
                                             "CAM_R2"]
        f0 = cams[0]
        assert f0.intrinsic.shape == (3, 3) and f0.width == 1920 and f0.height == 1080
        imgs = db.images([0, 2])
        assert len(imgs) == 2 and len(imgs[0]) == 8
        assert all(abs(im.timestamp - db.lidar_pc_timestamps[0]) <= 50_000 for im in imgs[0])


def test_whole_log_iteration(tiny_log):
    with LogDB(tiny_log) as db:
        s = iterate_log(db)
        assert s.num_iterations == 300  # 29.95 s at 10 Hz
        assert np.all(np.diff(s.timestamps_us) == 100_000)
        assert s.route_roadblock_ids == ("1", "201", "2")


def test_every_table_reads(tiny_log):
    from simscale_env.data.schema import NUPLAN_SCHEMA

    with LogDB(tiny_log) as db:
        for table in NUPLAN_SCHEMA:
            rows = db.read_table(table, limit=3)
            assert rows and set(rows[0]) == {c for c, _ in NUPLAN_SCHEMA[table]}
            assert all(len(v) == 16 for r in rows for k, v in r.items() if (k == "token" or k.endswith("_token"))
                       and v is not None)
        cam = db.read_table("camera", limit=1)[0]
        assert isinstance(cam["intrinsic"], list) and len(cam["rotation"]) == 4


def test_scenario_filters(mini_builder):
    refs = mini_builder.refs()
    typ = refs[0].scenario_type
    by_type = mini_builder.refs(scenario_types=[typ])
    assert by_type and all(r.scenario_type == typ for r in by_type)
    log = refs[-1].log_name
    assert all(r.log_name == log for r in mini_builder.refs(log_names=[log]))
    toks = [refs[1].token, refs[2].token]
    assert [r.token for r in mini_builder.refs(tokens=toks)] == toks
    assert len(mini_builder.refs(limit=3)) == 3


def test_a_lidar_pc_with_several_tags_is_one_scenario(tiny_log, tmp_path):
    """The devkit's get_scenarios_from_db groups tags by lidar_pc and types the scenario with MAX(st.type); a type
    filter is applied before grouping."""
    import shutil
    import sqlite3

    p = tmp_path / "logs" / tiny_log.name
    p.parent.mkdir()
    shutil.copy(tiny_log, p)
    c = sqlite3.connect(p)
    lp = bytes.fromhex(TINY_TAG)
    (first,) = c.execute("SELECT type FROM scenario_tag WHERE lidar_pc_token = ?", (lp,)).fetchone()
    c.execute("INSERT INTO scenario_tag (token, lidar_pc_token, type, agent_track_token) VALUES (?, ?, ?, NULL)",
              (bytes.fromhex("ab" * 16), lp, "zzz_extra_type"))
    c.execute("INSERT INTO scenario_tag (token, lidar_pc_token, type, agent_track_token) VALUES (?, ?, ?, NULL)",
              (bytes.fromhex("cd" * 16), lp, "aaa_extra_type"))
    c.commit()
    c.close()
    b = ScenarioBuilder(p.parent)
    tok = lp.hex()
    refs = [r for r in b.refs() if r.token == tok]
    assert len(refs) == 1
    r = refs[0]
    assert r.scenario_type == "zzz_extra_type" and set(r.tags) == {first, "zzz_extra_type", "aaa_extra_type"}
    only = b.refs(scenario_types=["aaa_extra_type", first])
    assert [x.scenario_type for x in only if x.token == tok] == [max("aaa_extra_type", first)]
    assert b.load(r).scenario_type == "zzz_extra_type"
