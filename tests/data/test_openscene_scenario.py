"""Scenarios from OpenScene logs alone (issue 15): NAVSIM's 2 Hz frames interpolated to 10 Hz, the same Scenario type
as the .db path, and the env, demo and evaluation on a copy of the mini dataset without its databases."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from simscale_env.data import ScenarioBuilder
from simscale_env.data.openscene_scenario import OpenSceneScenarioBuilder, scenario_from_frames
from simscale_env.data.paths import DataConfig
from simscale_env.data.schema import TL_GREEN, TL_RED, TL_UNKNOWN
from simscale_env.errors import MissingFileError, SchemaError, UnknownTokenError


def _tokens(mini, split):
    return yaml.safe_load((mini / "splits" / f"mini-{split}.yaml").read_text())["tokens"]


@pytest.fixture(scope="module")
def builders(mini):
    return (OpenSceneScenarioBuilder(mini / "navsim_logs" / "mini"),
            ScenarioBuilder(mini / "nuplan-v1.1" / "splits" / "mini"))


def test_at_the_frames_the_openscene_scenario_is_the_logs(builders, mini):
    """Every 5th step of the 10 Hz scenario is a 2 Hz frame, which the builder wrote from the log: there the ego pose,
    the objects and the red lights are the .db scenario's (velocities and accelerations through float32, as NAVSIM
    holds them); the window, history and timestamps are the same."""
    osb, dbb = builders
    for tok in _tokens(mini, "navhard")[:3]:
        a, b = osb.navsim_scenario(tok), dbb.navsim_scenario(tok)
        assert (a.token, a.log_name, a.map_location, a.route_roadblock_ids) == (b.token, b.log_name, b.map_location,
                                                                                b.route_roadblock_ids)
        assert a.start_index == b.start_index == 20 and len(a.timestamps_us) == len(b.timestamps_us)
        np.testing.assert_array_equal(a.timestamps_us, b.timestamps_us)
        f = np.arange(0, len(a.timestamps_us), 5)
        assert all(a.lidar_pc_tokens[i] == b.lidar_pc_tokens[i] for i in f)
        for k in ("x", "y", "heading"):
            np.testing.assert_allclose(getattr(a.ego, k)[f], getattr(b.ego, k)[f], atol=1e-9)
        for k in ("vx", "vy", "ax", "ay"):
            np.testing.assert_allclose(getattr(a.ego, k)[f], getattr(b.ego, k)[f].astype(np.float32), atol=1e-6)
        for i in f:
            oa, ob = a.agents.at(i), b.agents.at(i)
            assert sorted(oa["track_token"]) == sorted(ob["track_token"])
            ia = {t: k for k, t in enumerate(oa["track_token"])}
            j = [ia[t] for t in ob["track_token"]]
            for k in ("x", "y", "heading", "length", "width"):
                np.testing.assert_allclose(oa[k][j], ob[k], atol=1e-9, err_msg=k)
            np.testing.assert_array_equal(oa["category"][j], ob["category"])
            assert sorted(a.traffic_lights.red_connectors(i)) == sorted(b.traffic_lights.red_connectors(i))


def _frame(token, t_s, x, heading, boxes=(), lights=()):
    """A minimal OpenScene frame: the ego at (x, 0, heading) and boxes (track, x, y, yaw, vx) in its frame."""
    q = [np.cos(heading / 2), 0.0, 0.0, np.sin(heading / 2)]
    b = np.array([[bx, by, 0.5, 4.0, 2.0, 1.5, yaw] for _, bx, by, yaw, _ in boxes]).reshape(-1, 7)
    v = np.array([[vx, 0.0, 0.0] for *_, vx in boxes]).reshape(-1, 3)
    return {"token": token, "timestamp": int(1e15 + t_s * 1e6), "log_name": "log", "map_location": "m",
            "roadblock_ids": ["1"], "ego2global_translation": [x, 0.0, 0.0], "ego2global_rotation": q,
            "ego_dynamic_state": [2.0, 0.0, 0.0, 0.0], "driving_command": [0, 1, 0, 0], "cams": {},
            "traffic_lights": list(lights),
            "anns": {"gt_boxes": b, "gt_names": ["vehicle"] * len(boxes), "gt_velocity_3d": v,
                     "track_tokens": [t for t, *_ in boxes], "instance_tokens": [t for t, *_ in boxes]}}


def test_interpolation_is_navsims_known_answers():
    """Linear between frames (NAVSIM's StateInterpolator), the short way round through +-pi; a track seen in a single
    frame is kept for that frame's 0.5 s; lights are held for the frame's 5 steps (red or green, unknown where a
    frame does not list the connector)."""
    frames = [
        _frame("a", 0.0, 0.0, 0.0, [("car", 10.0, 0.0, np.pi - 0.1, 1.0)], [(7, True)]),
        _frame("b", 0.5, 1.0, 0.0, [("car", 10.0, 0.0, -np.pi + 0.1, 1.0), ("cone", 5.0, 3.0, 0.0, 0.0)],
               [(7, False), (8, True)]),
        _frame("c", 1.0, 2.0, 0.2, [("car", 12.0, 0.0, -np.pi + 0.1, 1.0)]),
    ]
    sc = scenario_from_frames(frames, 1, offset_s=0.0, duration_s=0.5, history_s=0.5)
    assert sc.start_index == 5 and len(sc.timestamps_us) == 11
    np.testing.assert_array_equal(np.diff(sc.timestamps_us), 100_000)
    np.testing.assert_allclose(sc.ego.x, np.arange(11) * 0.2)
    np.testing.assert_allclose(sc.ego.heading[5:], np.linspace(0.0, 0.2, 6))
    np.testing.assert_allclose(sc.ego.vx, 2.0)
    assert sc.lidar_pc_tokens[::5] == ("a", "b", "c") and sc.lidar_pc_tokens[1] == ""
    car = sc.agents.track_tokens.index("car")
    h = sc.agents.heading[:6, car]  # pi - 0.1 -> -pi + 0.1 through pi, not through 0
    assert np.all(np.abs(h) > np.pi - 0.11)
    np.testing.assert_allclose(sc.agents.x[:6, car], 10.0 + 0.2 * np.arange(6))  # ego moves 1 m per frame
    np.testing.assert_allclose(sc.agents.x[5:, car], 11.0 + (2 + 12.0 * np.cos(0.2) - 11.0) * np.arange(6) / 5)
    cone = sc.agents.track_tokens.index("cone")
    assert sc.agents.valid[:, cone].tolist() == [False] * 5 + [True] * 5 + [False]
    assert sc.agents.vx[5, cone] == 0.0  # static objects get no velocity
    lid = list(sc.traffic_lights.connector_ids)
    assert lid == [7, 8]
    assert sc.traffic_lights.status[:, 0].tolist() == [TL_RED] * 5 + [TL_GREEN] * 5 + [TL_UNKNOWN]
    assert sc.traffic_lights.status[:, 1].tolist() == [TL_UNKNOWN] * 5 + [TL_RED] * 5 + [TL_UNKNOWN]
    assert sc.route_roadblock_ids == ("1",) and sc.goal is None and sc.scenario_type == "unknown"
    frames[2]["timestamp"] = frames[1]["timestamp"]
    with pytest.raises(SchemaError, match="frame 2: timestamp"):
        scenario_from_frames(frames, 1, path="x.pkl", duration_s=0.5, history_s=0.5)


def test_log_tail_and_unknown_tokens(builders, mini):
    osb, dbb = builders
    tok = _tokens(mini, "navtest")[0]
    a, b = osb.navsim_scenario(tok, duration_s=2.0), dbb.navsim_scenario(tok, duration_s=2.0)
    ta, tb = osb.log_tail(a, 40), dbb.log_tail(b, 40)
    np.testing.assert_allclose(ta[4::5, :2], tb[4::5, :2], atol=1e-9)  # 0.5 s, 1.0 s, ... after: logged frames
    assert osb.missing_tokens([tok, "0123456789abcdef"]) == ["0123456789abcdef"]
    with pytest.raises(UnknownTokenError, match="0123456789abcdef"):
        osb.navsim_scenario("0123456789abcdef")


def test_the_source_follows_the_data(mini, mini_openscene, tmp_path, monkeypatch):
    for v in ("NUPLAN_DATA_ROOT", "NUPLAN_MAPS_ROOT", "OPENSCENE_DATA_ROOT"):
        monkeypatch.delenv(v, raising=False)
    assert DataConfig.resolve(mini).source() == "nuplan"
    assert DataConfig.resolve(mini).source("openscene") == "openscene"
    cfg = DataConfig.resolve(mini_openscene)
    assert cfg.source() == "openscene"
    with pytest.raises(MissingFileError, match="no nuPlan .db logs"):
        cfg.source("nuplan")
    # NAVSIM's variables: OPENSCENE_DATA_ROOT and NUPLAN_MAPS_ROOT, no nuPlan data root
    monkeypatch.setenv("OPENSCENE_DATA_ROOT", str(mini_openscene))
    monkeypatch.setenv("NUPLAN_MAPS_ROOT", str(mini_openscene / "maps"))
    cfg = DataConfig.resolve()
    assert cfg.nuplan_data_root is None and cfg.source() == "openscene"
    assert cfg.split_file("navhard") == mini_openscene / "splits" / "mini-navhard.yaml"
    # the .db logs of a split (`simscale vocab`, the experiment's vocabulary): none in OpenScene-only data
    with pytest.raises(MissingFileError, match="`simscale vocab` reads human plans at 0.1 s from the nuPlan .db logs"):
        cfg.split_logs("navhard", "`simscale vocab`")
    spec, logs = DataConfig.resolve(mini).split_logs("navhard")
    assert logs and sorted(logs) == logs and {p.stem for p in logs} == set(spec.log_names)
    monkeypatch.delenv("NUPLAN_MAPS_ROOT")
    with pytest.raises(MissingFileError, match="NUPLAN_MAPS_ROOT"):
        DataConfig.resolve(openscene_root=tmp_path)


SMALL = dict(cameras=("CAM_F0",), width=64, height=32)


def test_env_on_openscene_only_data(mini_openscene):
    """gymnasium's check_env, a logged start (NAVSIM's one-stage score) and a perturbed one (stage two) on data
    without databases; the same kwargs on the full dataset read the .db logs."""
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    import simscale_env  # noqa: F401

    env = gym.make("SimScale-navhard-v0", data_root=str(mini_openscene), **SMALL)
    u = env.unwrapped
    assert u.data_source == "openscene"
    check_env(u, skip_render_check=True)
    for perturb, stage in ((False, 1), (True, 2)):
        e = gym.make("SimScale-navhard-v0", data_root=str(mini_openscene), perturb=perturb, **SMALL)
        obs, info = e.reset(seed=3)
        assert info["perturbed"] is perturb
        obs, r, term, trunc, info = e.step(info["pseudo_expert"]["pdm_closed"])
        assert info["epdms_stage"] == stage and np.isfinite(r)
        assert 0.0 <= info["epdms"]["epdms"] <= 1.0
        assert obs["cameras"].shape == (1, 32, 64, 3)


def test_demo_and_evaluate_run_without_databases(mini_openscene, tmp_path):
    """`make demo`'s episode and `simscale evaluate` (closed loop, episode EPDMS) from the OpenScene pickles."""
    from evaluation import evaluate

    from agents.baselines import make_agent

    tokens = _tokens(mini_openscene, "navhard")[:2]
    r = evaluate(make_agent("pdm_closed"), "SimScale-navhard-v0", tokens=tokens, data_root=str(mini_openscene),
                 data_source="openscene")
    assert len(r["episodes"]) == 2 and 0.0 <= r["epdms"] <= 1.0
    out = subprocess.run([sys.executable, "-m", "simscale_env.cli", "demo", "--data", str(mini_openscene), "--out",
                          str(tmp_path / "demo"), "--source", "openscene"], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert 0.0 <= summary["epdms"] <= 1.0 and (tmp_path / "demo" / "episode.mp4").exists()


def test_one_stage_scores_at_logged_starts_do_not_depend_on_the_source(mini, mini_openscene):
    """NAVSIM scores a plan at a logged frame from the OpenScene frames alone; so does the env, from either source
    (mini-navtest, PDM-Closed's plan: every sub-score the same to 1e-6, relative for the raw progress in metres)."""
    import gymnasium as gym

    import simscale_env  # noqa: F401

    kw = dict(observation_keys=("ego_status",), perturb=False)
    envs = [gym.make("SimScale-navtest-v0", data_root=str(root), **kw) for root in (mini, mini_openscene)]
    assert [e.unwrapped.data_source for e in envs] == ["nuplan", "openscene"]
    for tok in _tokens(mini, "navtest")[:4]:
        got = []
        for e in envs:
            _, info = e.reset(seed=0, options={"scenario_token": tok})
            plan = info["pseudo_expert"]["pdm_closed"]
            _, r, _, _, info = e.step(plan)
            got.append((plan, info["epdms"], info["epdms_stage"]))
        np.testing.assert_allclose(got[0][0], got[1][0], atol=1e-3)
        assert got[0][2] == got[1][2] == 1
        for k, v in got[0][1].items():
            w = got[1][1][k]
            assert v == w or abs(v - w) <= 1e-6 * max(1.0, abs(v)), (tok, k, v, w)
