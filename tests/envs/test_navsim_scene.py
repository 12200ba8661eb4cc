"""A split token is NAVSIM's current frame: the env starts there with NAVSIM's 1.5 s past; HC reads the logged past
at a logged start and the perturbed past at a perturbed start; info["epdms"] is stage 1 (human filter) at a logged
start and stage 2 (no filter) elsewhere."""

import dataclasses

import numpy as np
import pytest

import gymnasium as gym

import simscale_env  # noqa: F401
from simscale_env.data.openscene import frame_pose, load_log
from simscale_env.data.scenario import EgoTrack
from simscale_env.geometry import global_to_local

SMALL = dict(cameras=("CAM_F0",), width=64, height=32, observation_keys=("ego_status",))
MOVING = "5f579fdb03767689"  # mini-navhard, 12.5 m/s on a curved road
# mini-navhard, 13 m/s on a curved road: the logged human fails no sub-score over its first 4 s (MOVING's
# follows its lead closely enough to fail TTC)
CLEAN = "548475be2f57654e"


@pytest.fixture(scope="module", autouse=True)
def _mini(mini):
    import os

    os.environ.setdefault("SIMSCALE_MINI", str(mini))


def _frames(mini, log_name):
    frames = load_log(mini / "navsim_logs" / "mini" / f"{log_name}.pkl")
    return frames, [f["token"] for f in frames]


def test_logged_start_is_the_openscene_frame_of_the_token(mini):
    env = gym.make("SimScale-navhard-v0", perturb=False, pseudo_experts=False, **SMALL)
    u = env.unwrapped
    for tok in u.tokens:
        obs, info = env.reset(seed=0, options={"scenario_token": tok})
        frames, tokens = _frames(mini, info["log_name"])
        i = tokens.index(tok)
        cur = frames[i]
        assert info["time_us"] == cur["timestamp"] and info["iteration"] == 0
        np.testing.assert_allclose(u.world.ego[:3], frame_pose(cur), atol=1e-9)
        # velocity and acceleration (ego frame) as the frame's ego_dynamic_state
        np.testing.assert_allclose(obs["ego_status"][:4], cur["ego_dynamic_state"][:4], atol=1e-5)
        # the past: NAVSIM's 4 history frames (1.5, 1.0, 0.5 s ago and now) in the current rear-axle frame
        hist = global_to_local(np.stack([frame_pose(frames[j]) for j in range(i - 3, i + 1)]), frame_pose(cur))
        np.testing.assert_allclose(obs["ego_status"][8:20].reshape(4, 3), hist, atol=1e-4)
        # the episode runs to the end of the nuPlan challenge window (t + 12 s) where the log has it
        sc = u.sim.scenario
        assert sc.timestamps_us[-1] <= cur["timestamp"] + 12_000_000
        assert info["episode_steps"] == (sc.num_iterations - 1) // 5 and info["episode_steps"] >= 20
    env.close()


def test_nuplan_window_by_kwarg(mini):
    env = gym.make("SimScale-navhard-v0", perturb=False, pseudo_experts=False, scene_window="nuplan", **SMALL)
    obs, info = env.reset(seed=0, options={"scenario_token": MOVING})
    frames, tokens = _frames(mini, info["log_name"])
    t_token = frames[tokens.index(MOVING)]["timestamp"]
    assert 0 <= info["time_us"] - (t_token - 3_000_000) < 100_000  # the challenge window: 3 s before the token
    assert info["episode_steps"] == 30
    with pytest.raises(ValueError, match="scene_window"):
        gym.make("SimScale-navhard-v0", scene_window="nuscenes")
    with pytest.raises(ValueError, match="human_filter"):
        gym.make("SimScale-navhard-v0", human_filter="always")


def _edit_ego(env, token, **cols):
    """Replace the scenario of `token` in the env by one whose logged ego arrays are edited (frame -> value)."""
    u = env.unwrapped
    sc = u._scenario(token)
    e = sc.ego
    kw = {f: np.array(getattr(e, f)) for f in e.__dataclass_fields__}
    for name, fn in cols.items():
        fn(kw[name], sc.start_index)
    u._scenarios[token] = dataclasses.replace(sc, ego=EgoTrack(**kw))


def _hc(env, token, perturbation, plan=None):
    obs, info = env.reset(seed=0, options={"scenario_token": token, "perturbation": perturbation})
    assert info["perturbed"] == (perturbation is not None)
    if plan is None:
        v = float(obs["ego_status"][0])
        plan = np.zeros((8, 3), np.float32)
        plan[:, 0] = v * 0.5 * np.arange(1, 9)  # straight on at constant speed: comfortable in itself
    obs, r, term, trunc, info = env.step(plan)
    return info["epdms"]["history_comfort"], info


def test_history_comfort_reads_the_logged_past_at_a_logged_start():
    """An uncomfortable logged past (a -6 m/s^2 braking 0.5 to 1.0 s before the token) makes HC 0 at the logged start;
    the same plan after the unedited past scores HC 1 (HC would be 1 for both if it ignored the past). A perturbed
    start reads the perturbed past, derived from the poses the ego drove in, not the logged accelerations."""
    env = gym.make("SimScale-navhard-v0", pseudo_experts=False, **SMALL)
    clean, _ = _hc(env, MOVING, None)
    assert clean == 1.0

    def brake(a, f0):
        a[f0 - 10:f0 - 5] = -6.0

    _edit_ego(env, MOVING, ax=brake)
    braked, info = _hc(env, MOVING, None)
    assert braked == 0.0 and info["epdms_stage"] == 1
    pert, info = _hc(env, MOVING, {"lateral": 0.3})
    assert pert == 1.0 and info["epdms_stage"] == 2  # the poses carry no braking: the perturbed past is comfortable
    env.close()


def test_history_comfort_reads_the_perturbed_past_at_a_perturbed_start():
    """A logged path that swerves (heading +-0.15 rad every 0.1 s over the last 1.5 s): the perturbed past follows the
    logged path, so it swerves too and HC is 0 at a perturbed start, as at the logged start; with a clean log both
    are 1. (Without a past HC would be 1: the plan itself is straight.)"""
    env = gym.make("SimScale-navhard-v0", pseudo_experts=False, **SMALL)
    assert _hc(env, MOVING, {"lateral": 0.3})[0] == 1.0

    def swerve(h, f0):
        h[f0 - 14:f0] += 0.15 * (-1.0) ** np.arange(14)

    _edit_ego(env, MOVING, heading=swerve)
    assert _hc(env, MOVING, {"lateral": 0.3})[0] == 0.0
    assert _hc(env, MOVING, None)[0] == 0.0
    env.close()


def test_epdms_is_stage_one_at_a_logged_start_and_stage_two_at_a_perturbed_start():
    """The logged human leaves the road 1 s after the token (an edited log): a plan that leaves the road too has DAC
    filtered to 1 at the logged start (NAVSIM's stage 1, human filter on), and DAC 0 at a perturbed start (stage 2) or
    with `human_filter=None`."""
    plan = np.zeros((8, 3), np.float32)
    plan[:, 0] = 6.0 * np.arange(1, 9)
    plan[:, 1] = 1.0 * np.arange(1, 9) ** 2  # veers left off the road

    def away(v, f0):
        v[f0 + 10:] += 40.0

    rows = {}
    for hf in ("fixed", None):
        env = gym.make("SimScale-navhard-v0", pseudo_experts=False, human_filter=hf, terminate_off_road=False,
                       **SMALL)
        _edit_ego(env, MOVING, x=away, y=away)
        rows[hf, "logged"] = _hc(env, MOVING, None, plan)[1]
        rows[hf, "perturbed"] = _hc(env, MOVING, {"lateral": 0.3}, plan)[1]
        env.close()
    stage1 = rows["fixed", "logged"]
    assert stage1["epdms_stage"] == 1 and stage1["epdms"]["drivable_area_compliance"] == 1.0
    assert rows[None, "logged"]["epdms"]["drivable_area_compliance"] == 0.0
    assert rows[None, "logged"]["epdms"]["epdms"] == 0.0 < stage1["epdms"]["epdms"]
    for key in (("fixed", "perturbed"), (None, "perturbed")):
        assert rows[key]["epdms_stage"] == 2 and rows[key]["epdms"]["drivable_area_compliance"] == 0.0
    # the reward reads the same (filtered) scores
    assert stage1["reward_terms"]["progress"] is not None
    # a human that fails nothing changes nothing: the clean log at the logged start gives the unfiltered scores
    a = gym.make("SimScale-navhard-v0", pseudo_experts=False, **SMALL)
    b = gym.make("SimScale-navhard-v0", pseudo_experts=False, human_filter=None, **SMALL)
    straight = np.zeros((8, 3), np.float32)
    straight[:, 0] = 6.0 * np.arange(1, 9)
    assert _hc(a, CLEAN, None, straight)[1]["epdms"] == _hc(b, CLEAN, None, straight)[1]["epdms"]


DISCRETE = ("no_at_fault_collisions", "drivable_area_compliance", "driving_direction_compliance",
            "traffic_light_compliance", "time_to_collision_within_bound", "lane_keeping", "history_comfort",
            "multiplicative_metrics_prod")
TOLERANCE = 1e-6  # as simscale_env.golden.scores compares EP and the scores


@pytest.fixture(scope="module")
def golden_env_args(oracle_mini_dir, tmp_path_factory):
    """The env's arguments for the frozen golden logs (a split of the 12 scenes NAVSIM scored) and the scenes."""
    import json

    from simscale_env.data.openscene import write_split
    from simscale_env.golden.oracle import GoldenFolder

    folder = oracle_mini_dir
    g = GoldenFolder.open(folder)
    scenes = json.loads((folder / "navsim_scores_nonreactive.json").read_text())["scenes"]
    logs = sorted({s["log"] for s in scenes.values()})
    root = tmp_path_factory.mktemp("golden_env")
    d = root / "nuplan-v1.1" / "splits" / "mini"
    d.mkdir(parents=True)
    for log in logs:
        (d / f"{log}.db").symlink_to(g.log_path(log))
    split = write_split(root / "golden.yaml", log_names=logs, tokens=list(scenes))
    return dict(data_root=str(root), maps_root=str(g.maps_root), split_file=str(split)), scenes


@pytest.mark.parametrize("human_filter,cell,pseudo_experts", [("fixed", "filt", True), (None, "raw", False)])
def test_epdms_at_a_logged_start_is_navsims_on_the_golden_scenes(golden_env_args, human_filter, cell,
                                                                  pseudo_experts):
    """The env on the frozen golden logs: at the logged start of each of the 12 scenes NAVSIM scored, the first
    plan's info["epdms"] has NAVSIM's sub-scores (non-reactive, with and without the human filter) for each of the
    three trajectories: the start state is NAVSIM's `ego0`, HC reads the logged past, the filter the logged human,
    DDC and EP the route PDM-Closed repaired, and EP is normalised by PDM-Closed's dense trajectory planned on the
    log (the env's world is reactive, the default). Discrete values exact, EP and the scores within 1e-6."""
    args, scenes = golden_env_args
    env = gym.make("SimScale-navtest-v0", **args, perturb=False, pseudo_experts=pseudo_experts,
                   plan_scoring="non_reactive", human_filter=human_filter, **SMALL)
    u = env.unwrapped
    checked = 0
    for tok, s in scenes.items():
        for name, traj in s["trajectories"].items():
            obs, info = env.reset(seed=0, options={"scenario_token": tok})
            assert info["time_us"] == s["time_us"]
            np.testing.assert_allclose(u.world.ego[:3], s["ego0"][:3], atol=1e-6)
            info = env.step(np.asarray(traj, np.float32))[4]
            want = s["navsim_scores"][f"{name}|nr|{cell}"]
            got = info["epdms"]
            assert {c: got[c] for c in DISCRETE} == {c: want[c] for c in DISCRETE}, (tok, name)
            assert abs(got["ego_progress"] - want["ego_progress"]) <= TOLERANCE, (tok, name)
            # EC is unknown at a single frame: NAVSIM's final score is then epdms_no_ec (/14)
            assert got["two_frame_extended_comfort"] is None and want["two_frame_extended_comfort"] is None
            assert abs(got["epdms"] - want["epdms_no_ec"]) <= TOLERANCE, (tok, name)
            if cell == "raw":  # NAVSIM's pdm_score column is the unfiltered score (stale after the filter)
                assert abs(got["pdm_score"] - want["pdm_score"]) <= TOLERANCE, (tok, name)
            checked += 1
    assert checked == 36
    env.close()


def test_plans_are_scored_on_the_route_pdm_closed_repaired(golden_env_args, monkeypatch):
    """The env scores on NAVSIM's metric-cache route (`route_lane_ids` of the golden file): the scenario's route as
    PDM-Closed repairs it from the start state, which differs from the logged route where the ego waits before
    the route's first roadblock (3 of the 12 scenes). The repair runs once per reset: the label's own, not again."""
    from simscale_env.experts import pdm_closed, route_correction

    args, scenes = golden_env_args
    calls = []

    def counted(*a, **kw):
        calls.append(1)
        return route_correction.route_roadblock_correction(*a, **kw)

    monkeypatch.setattr(pdm_closed, "route_roadblock_correction", counted)
    same = {}
    for rc in (True, False):
        env = gym.make("SimScale-navtest-v0", **args, perturb=False, route_correction=rc, **SMALL)
        u = env.unwrapped
        for tok, s in scenes.items():
            calls.clear()
            env.reset(seed=0, options={"scenario_token": tok})
            if rc:
                assert len(calls) == 1  # the label's repair, reused for scoring
            lanes = set(u.sim.map.route_lane_ids(u.scoring_route_roadblock_ids))
            same[rc, tok] = lanes == set(s["route_lane_ids"])
        env.close()
    assert all(same[True, t] for t in scenes)
    assert sum(not same[False, t] for t in scenes) == 3


def test_a_navsim_token_that_is_no_tagged_scenario_starts_at_its_frame(mini, tmp_path):
    """NAVSIM's splits list any 2 Hz frame; one without a nuPlan scenario tag is found among the split's logs."""
    from simscale_env.data import ScenarioBuilder
    from simscale_env.data.openscene import write_split

    tagged = {r.token for r in ScenarioBuilder(mini / "nuplan-v1.1" / "splits" / "mini").all_refs()}
    log = sorted((mini / "navsim_logs" / "mini").glob("*.pkl"))[0]
    frame = next(f for f in load_log(log)[10:-20] if f["token"] not in tagged)
    split = write_split(tmp_path / "one.yaml", log_names=[log.stem], tokens=[frame["token"]])
    env = gym.make("SimScale-navtest-v0", split_file=str(split), perturb=False, pseudo_experts=False, **SMALL)
    obs, info = env.reset(seed=0)
    assert info["scenario_token"] == frame["token"] and info["time_us"] == frame["timestamp"]
    np.testing.assert_allclose(env.unwrapped.world.ego[:3], frame_pose(frame), atol=1e-9)
