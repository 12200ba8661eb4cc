"""The Gymnasium environment: API checks, determinism, actions, rewards, info, vectorization."""

import numpy as np
import pytest

import gymnasium as gym

import simscale_env  # noqa: F401
from simscale_env.envs import ENV_IDS, SB3ObservationWrapper, save_video
from simscale_env.errors import UnknownTokenError
from tests.helpers import same

SMALL = dict(cameras=("CAM_F0",), width=64, height=32)


@pytest.fixture(scope="module", autouse=True)
def _mini(mini):
    import os

    os.environ.setdefault("SIMSCALE_MINI", str(mini))


@pytest.mark.parametrize("env_id", sorted(ENV_IDS))
def test_gymnasium_check_env(env_id):
    from gymnasium.utils.env_checker import check_env

    env = gym.make(env_id, observation_keys=("cameras", "ego_status", "bev", "agents", "route"), bev_size=64,
                   **SMALL)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("env_id", sorted(ENV_IDS))
def test_sb3_check_env_with_the_wrapper(env_id):
    from stable_baselines3.common.env_checker import check_env

    env = SB3ObservationWrapper(gym.make(env_id, pseudo_experts=False, **SMALL).unwrapped)
    check_env(env, warn=True)
    assert env.observation_space["cameras"].shape == (3, 32, 64)


def _episode(seed, **kw):
    env = gym.make("SimScale-navhard-v0", **SMALL, **kw)
    obs, info = env.reset(seed=seed)
    trace = [(obs, info)]
    while True:
        obs, r, term, trunc, info = env.step(info["pseudo_expert"]["pdm_closed"])
        trace.append((obs, r, term, trunc, info))
        if term or trunc:
            return trace




def test_same_seed_same_episode_different_seed_different_start():
    a, b = _episode(3), _episode(3)
    assert len(a) == len(b) > 5
    assert same(a, b)  # observations, rewards, flags and infos, bit for bit
    env = gym.make("SimScale-navhard-v0", pseudo_experts=False, **SMALL)
    starts = {tuple(sorted((env.reset(seed=s, options={"scenario_token": env.unwrapped.tokens[0]})[1]
                            ["perturbation"] or {}).items())) for s in range(4)}
    assert len(starts) == 4
    ep = a[-1][4]["episode"]
    assert 0.0 <= ep["epdms"] <= 1.0 and ep["steps"] == a[-1][4]["iteration"] + 1


def test_info_holds_experts_scores_and_context():
    env = gym.make("SimScale-navhard-v0", **SMALL)
    obs, info = env.reset(seed=0)
    assert set(info["pseudo_expert"]) == {"pdm_closed", "recovery"}
    for plan in info["pseudo_expert"].values():
        assert plan.shape == (8, 3) and env.action_space.contains(plan)
    for key in ("scenario_token", "log_name", "time_us", "perturbation"):
        assert key in info
    obs, r, term, trunc, info = env.step(info["pseudo_expert"]["pdm_closed"])
    assert {"no_at_fault_collisions", "ego_progress", "epdms", "pdm_score"} <= set(info["epdms"])
    terms = info["reward_terms"]
    assert r == pytest.approx(sum(terms.values()))
    assert terms["progress"] > 0  # the expert moves along the route


@pytest.mark.parametrize("brake", [True, False])
def test_pdm_closed_pseudo_expert_brake_option_reaches_the_planner(monkeypatch, brake):
    """The env's PDM-Closed is NAVSIM's (no brake) unless `expert_emergency_brake=True` (tuplan's)."""
    from simscale_env.experts import PDMClosedPlanner

    seen = []
    plan = PDMClosedPlanner.plan
    monkeypatch.setattr(PDMClosedPlanner, "plan", lambda self, *a, **k: seen.append(self.config.emergency_brake)
                        or plan(self, *a, **k))
    kw = {"expert_emergency_brake": True} if brake else {}
    env = gym.make("SimScale-navhard-v0", perturb=False, valid_start=False, plan_scoring=None, **SMALL, **kw)
    env.reset(seed=0)
    assert seen == [brake]


def test_actions_are_checked():
    env = gym.make("SimScale-navhard-v0", pseudo_experts=False, **SMALL)
    env.reset(seed=0)
    bad = np.zeros((8, 3), np.float32)
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        env.step(bad)
    far = np.zeros((8, 3), np.float32)
    far[:, 0] = 500.0
    with pytest.raises(ValueError, match="out of bounds"):
        env.step(far)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros((8, 2), np.float32))
    clip = gym.make("SimScale-navhard-v0", pseudo_experts=False, invalid_action="clip", **SMALL)
    clip.reset(seed=0)
    got = clip.step(far)  # clipped to the box: the same as submitting the clipped plan
    env.reset(seed=0)
    want = env.step(np.clip(far, env.action_space.low, env.action_space.high))
    np.testing.assert_array_equal(got[0]["ego_status"], want[0]["ego_status"])
    assert got[1] == want[1]
    ctrl = gym.make("SimScale-navhard-v0", pseudo_experts=False, action_type="control", **SMALL)
    obs0, _ = ctrl.reset(seed=0)
    obs, r, term, trunc, info = ctrl.step(np.array([2.0, 0.0], np.float32))
    assert ctrl.action_space.shape == (2,) and "epdms" in info
    assert obs["ego_status"][0] > obs0["ego_status"][0] + 0.3  # accelerating at 2 m/s^2 for 0.5 s (with lag)


def test_reset_options_and_errors():
    env = gym.make("SimScale-navhard-v0", pseudo_experts=False, **SMALL)
    tok = env.unwrapped.tokens[-1]
    obs, info = env.reset(seed=1, options={"scenario_token": tok, "perturbation": {"lateral": 0.5,
                                                                                    "speed_scale": 0.9}})
    assert info["scenario_token"] == tok and info["perturbation"]["lateral"] == 0.5
    obs, info = env.reset(seed=1, options={"scenario_token": tok, "perturbation": None})
    assert not info["perturbed"] and info["perturbation_error"] is None
    assert info["perturbation"] == {"lateral": 0.0, "longitudinal": 0.0, "heading": 0.0, "speed_scale": 1.0}
    with pytest.raises(UnknownTokenError, match="ffffffffffffffff"):
        env.reset(options={"scenario_token": "ffffffffffffffff"})
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"token": tok})
    with pytest.raises(TypeError, match="unknown SimScaleEnv arguments"):
        gym.make("SimScale-navhard-v0", camera=("CAM_F0",))
    with pytest.raises(ValueError, match="perturbation field 'lateral' must be a finite number"):
        env.reset(options={"scenario_token": tok, "perturbation": {"lateral": float("nan")}})
    with pytest.raises(ValueError, match="'speed_scale' must be >= 0"):
        env.reset(options={"scenario_token": tok, "perturbation": {"speed_scale": -1.0}})
    for kw, msg in ((dict(episode_steps=0), "episode_steps must be a positive integer"),
                    (dict(replan_interval=5.0), "replan_interval must be <= 4.0"),
                    (dict(plan_scoring="sometimes"), "got 'sometimes'")):
        with pytest.raises(ValueError, match=msg):
            gym.make("SimScale-navhard-v0", **kw)


def test_reward_terms_follow_the_documented_formula():
    """TTC, LK and HC of the submitted plan weigh 5 : 2 : 2 against EP's 5 (1.0, 0.4, 0.4), spread over N steps."""
    env = gym.make("SimScale-navhard-v0", pseudo_experts=False, **SMALL)
    obs, info = env.reset(seed=2)
    n = info["episode_steps"]
    plan = np.zeros((8, 3), np.float32)
    plan[:, 0] = np.arange(1, 9) * 4.0
    seen = 0
    for _ in range(3):
        obs, r, term, trunc, info = env.step(plan)
        t, e = info["reward_terms"], info["epdms"]
        assert t["ttc"] == pytest.approx(-1.0 * (1 - e["time_to_collision_within_bound"]) / n)
        assert t["lane_keeping"] == pytest.approx(-0.4 * (1 - e["lane_keeping"]) / n)
        assert t["comfort"] == pytest.approx(-0.4 * (1 - e["history_comfort"]) / n)
        assert r == pytest.approx(sum(t.values()))
        seen += 1
        if term or trunc:
            break
    assert seen >= 1


def test_expert_beats_standing_still():
    env = gym.make("SimScale-navhard-v0", **SMALL)

    def run(policy):
        obs, info = env.reset(seed=5, options={"scenario_token": "5f579fdb03767689"})
        total = 0.0
        while True:
            obs, r, term, trunc, info = env.step(policy(info))
            total += r
            if term or trunc:
                return total, info["episode"]["epdms"]

    expert = run(lambda info: info["pseudo_expert"]["pdm_closed"])
    still = run(lambda info: np.zeros((8, 3), np.float32))
    assert expert[0] > still[0] + 0.3 and expert[1] > still[1]


def test_render_and_video(tmp_path):
    env = gym.make("SimScale-navhard-v0", render_mode="rgb_array", pseudo_experts=False, **SMALL)
    env.reset(seed=0)
    frame = env.render()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8
    p = save_video([frame, frame], tmp_path / "ep.mp4")
    assert p.exists() and p.stat().st_size > 100


def test_async_vector_env():
    envs = gym.vector.AsyncVectorEnv([lambda: gym.make("SimScale-navhard-v0", pseudo_experts=False, **SMALL)] * 2)
    obs, info = envs.reset(seed=[0, 1])
    assert obs["cameras"].shape == (2, 1, 32, 64, 3)
    act = np.zeros((2, 8, 3), np.float32)
    act[:, :, 0] = np.arange(1, 9) * 2.0
    obs, r, term, trunc, info = envs.step(act)
    assert r.shape == (2,)
    envs.close()


def test_reconstructions_replace_the_synthesised_scene(tmp_path):
    """A reconstruction PLY named after the map location is used as the static scene: a red carpet of Gaussians
    under the ego turns the lower half of the front camera red (the synthesised street is grey asphalt)."""
    from simscale_env.render import Gaussians, write_ply
    from simscale_env.render.gaussians import rgb_to_sh_dc

    env = gym.make("SimScale-navhard-v0", pseudo_experts=False, perturb=False, cameras=("CAM_F0",), width=96,
                   height=48)
    obs, info = env.reset(seed=0)
    u = env.unwrapped
    x, y = u.world.ego[:2]
    street = obs["cameras"][0, 30:].reshape(-1, 3).astype(float).mean(0)
    gx, gy = np.meshgrid(np.arange(-60.0, 60.0, 0.5), np.arange(-60.0, 60.0, 0.5))
    n = gx.size
    means = np.c_[gx.ravel() + x, gy.ravel() + y, np.zeros(n)]
    g = Gaussians.create(means, np.tile([1.0, 0.0, 0.0, 0.0], (n, 1)), np.tile([0.3, 0.3, 0.02], (n, 1)),
                         np.full(n, 0.99), rgb_to_sh_dc(np.tile([0.9, 0.05, 0.05], (n, 1))))
    write_ply(tmp_path / f"{u.sim.scenario.map_location}.ply", g)
    env2 = gym.make("SimScale-navhard-v0", pseudo_experts=False, perturb=False, cameras=("CAM_F0",), width=96,
                    height=48, reconstructions=str(tmp_path))
    obs2, info2 = env2.reset(seed=0)
    assert info2["scenario_token"] == info["scenario_token"]
    carpet = obs2["cameras"][0, 30:].reshape(-1, 3).astype(float).mean(0)
    assert carpet[0] > 150 and carpet[1] < 80 and carpet[2] < 80, carpet
    assert abs(street[0] - street[1]) < 40, street  # grey-ish asphalt without the reconstruction


def _sb3_env():
    import simscale_env  # noqa: F401  (registration in the worker)

    return SB3ObservationWrapper(gym.make("SimScale-navhard-v0", pseudo_experts=False, cameras=("CAM_F0",), width=64,
                                          height=64, episode_steps=4))


def test_sb3_subproc_vec_env_trains_a_multi_input_policy():
    """SB3's SubprocVecEnv over the wrapped env, and a PPO update with MultiInputPolicy (CNN on the cameras)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import SubprocVecEnv

    venv = SubprocVecEnv([_sb3_env, _sb3_env])
    try:
        venv.seed(0)
        obs = venv.reset()
        assert obs["cameras"].shape == (2, 3, 64, 64) and obs["cameras"].dtype == np.uint8
        model = PPO("MultiInputPolicy", venv, n_steps=4, batch_size=4, n_epochs=1, seed=0, device="cpu")
        before = [p.detach().clone() for p in model.policy.parameters()]
        model.learn(total_timesteps=8)  # episodes of 4 steps end inside: SB3 reads info["episode"]["r"] / ["l"]
        assert len(model.ep_info_buffer) >= 2
        assert all(1 <= e["l"] <= 4 and np.isfinite(e["r"]) and "epdms" in e for e in model.ep_info_buffer)
        after = list(model.policy.parameters())
        assert any(not np.allclose(a.detach().numpy(), b.numpy()) for a, b in zip(after, before))
        act, _ = model.predict(venv.reset(), deterministic=True)
        assert act.shape == (2, 8, 3)
    finally:
        venv.close()


def test_window_perturbations_through_the_env():
    """The default (window) sampler through the env: offsets within the logged travel's reach and the heading of the
    drift; a log standing over the window resets to the logged start and says why."""
    env = gym.make("SimScale-navhard-v0", pseudo_experts=False, valid_start=False, **SMALL)
    u = env.unwrapped
    drawn = standing = 0
    for i, tok in enumerate(u.tokens):
        obs, info = env.reset(seed=i, options={"scenario_token": tok})
        sc = u.sim.scenario
        f = u.sim.frame(0)
        travel = float(np.sum(np.hypot(np.diff(sc.ego.x[f - 20:f + 1]), np.diff(sc.ego.y[f - 20:f + 1]))))
        p = info["perturbation"]
        if not info["perturbed"]:
            assert "standing ego" in info["perturbation_error"] or "no valid perturbed start" in info[
                "perturbation_error"], info["perturbation_error"]
            standing += travel < 0.1
            continue
        assert info["perturbation_error"] is None
        drawn += 1
        assert abs(p["lateral"]) <= travel * np.tan(np.radians(20.0)) + 1e-9
        assert abs(p["longitudinal"]) <= 0.5 * travel + 1e-9
        assert p["heading"] * p["lateral"] >= 0 and abs(np.tan(p["heading"])) <= 2 * abs(p["lateral"]) / travel + 1e-9
    assert drawn >= 5
    # a log standing over the window (every mini-navhard ego drives: one made to stand by editing its past)
    import dataclasses

    from simscale_env.data.scenario import EgoTrack

    tok = u.tokens[0]
    sc = u._scenario(tok)
    f0 = sc.start_index
    kw = {f: np.array(getattr(sc.ego, f)) for f in sc.ego.__dataclass_fields__}
    for f in ("x", "y"):
        kw[f][:f0 + 1] = kw[f][f0]
    u._scenarios[tok] = dataclasses.replace(sc, ego=EgoTrack(**kw))
    obs, info = env.reset(seed=0, options={"scenario_token": tok})
    assert not info["perturbed"] and "standing ego" in info["perturbation_error"], info["perturbation_error"]
    env.close()


def test_vector_env_is_deterministic_through_autoresets():
    """Gymnasium #1321: seeds given once at reset also fix every episode after an autoreset."""

    def run():
        envs = gym.vector.SyncVectorEnv(
            [lambda: gym.make("SimScale-navhard-v0", pseudo_experts=False, episode_steps=2, **SMALL)] * 2)
        obs, info = envs.reset(seed=[3, 4])
        act = np.zeros((2, 8, 3), np.float32)
        act[:, :, 0] = np.arange(1, 9) * 2.0
        out = [obs["ego_status"].copy()]
        tokens = []
        for _ in range(7):  # three autoresets per env
            obs, r, term, trunc, info = envs.step(act)
            out += [obs["ego_status"].copy(), r.copy()]
            tokens.append(tuple(info["scenario_token"]))
        envs.close()
        return out, tokens

    a, ta = run()
    b, tb = run()
    assert ta == tb and len({t for pair in ta for t in pair}) > 1
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_perturbed_history_leads_into_the_start():
    """The ego status's past poses after a perturbed reset drive into the start (no jump from the log's past)."""
    from simscale_env.sim.perturb import PerturbationError

    env = gym.make("SimScale-navhard-v0", pseudo_experts=False, valid_start=False, **SMALL)
    u = env.unwrapped
    for tok in u.tokens:
        obs0, _ = env.reset(seed=0, options={"scenario_token": tok, "perturbation": None})
        if obs0["ego_status"][0] < 3.0:
            continue
        try:
            obs, info = env.reset(seed=0, options={"scenario_token": tok, "perturbation": {"lateral": 1.0}})
        except PerturbationError:
            continue
        break
    else:
        pytest.fail("no moving scenario accepts a 1 m lateral perturbation")
    past0 = obs0["ego_status"][8:20].reshape(4, 3)  # 1.5, 1.0, 0.5 s ago and now, in the current frame
    past = obs["ego_status"][8:20].reshape(4, 3)
    np.testing.assert_allclose(past[3], 0.0, atol=1e-6)
    # the log's past seen from a start 1 m to its left would sit 1 m to the right; the blended past leaves the
    # log's line 1.5 s ago and closes the offset smoothly
    assert abs((past[0, 1] - past0[0, 1]) - (-1.0)) < 0.1
    assert abs(past[2, 1] - past0[2, 1]) < 0.3
    assert np.all(np.diff(past[:, 1] - past0[:, 1]) > 0)
    env.close()


def test_reset_label_is_the_one_valid_start_judged():
    """The PDM-Closed label served at reset is the plan `valid_start` accepted (not planned twice), equal to a fresh
    plan from the start, and valid."""
    from simscale_env.experts import PDMClosedPlanner, valid_start

    env = gym.make("SimScale-navhard-v0", **SMALL)
    u = env.unwrapped
    obs, info = env.reset(seed=0, options={"scenario_token": "5f579fdb03767689"})
    assert info["perturbed"]
    fresh = PDMClosedPlanner().plan(u.sim, u.world)
    np.testing.assert_array_equal(info["pseudo_expert"]["pdm_closed"], fresh.poses.astype(np.float32))
    assert valid_start(u.sim, u.world, fresh)
    env.close()


def test_perturbed_starts_have_a_comfortable_past():
    """comfortable_past (default) redraws starts whose perturbed past breaks the comfort bounds; without it, some of
    mini-navhard's seed-0 starts do (a lateral offset blended into 1.5 s of past is a swerve HC charges to any agent)."""
    from simscale_env.envs.history import past_is_comfortable, start_past_states

    counts = {}
    for flag in (True, False):
        env = gym.make("SimScale-navhard-v0", observation_keys=("ego_status",), comfortable_past=flag)
        u = env.unwrapped
        bad = perturbed = 0
        for k, tok in enumerate(u.tokens):
            env.reset(seed=k, options={"scenario_token": tok})
            # the episode's past is the accepted start's (the draws' check computed it: reset keeps that one)
            np.testing.assert_array_equal(np.array(list(u._past)).reshape(-1, 11),
                                          start_past_states(u.sim.scenario, u.world.ego, u.perturbation))
            if u.perturbation is None:
                continue
            perturbed += 1
            bad += not past_is_comfortable(u.sim.scenario, u.world.ego, u.perturbation)
        env.close()
        counts[flag] = (bad, perturbed)
    assert counts[True][0] == 0 and counts[True][1] >= len(u.tokens) // 2, counts
    assert counts[False][0] >= 1, counts


def test_a_start_that_falls_back_to_the_log_keeps_the_logged_past(monkeypatch):
    """Every perturbed draw rejected (by the comfort check or valid_start, which refuses them all here): the logged
    start, with the logged past, not one a rejected draw computed."""
    import simscale_env.experts as experts
    from simscale_env.envs.history import start_past_states

    monkeypatch.setattr(experts, "valid_start", lambda *a, **k: False)
    env = gym.make("SimScale-navhard-v0", observation_keys=("ego_status",), pseudo_experts=False, max_start_draws=3)
    u = env.unwrapped
    env.reset(seed=0, options={"scenario_token": u.tokens[0]})
    assert u.perturbation is None and "in the last of 3 perturbed starts" in u._pert_error
    np.testing.assert_array_equal(np.array(list(u._past)).reshape(-1, 11),
                                  start_past_states(u.sim.scenario, u.world.ego, None))
    env.close()
