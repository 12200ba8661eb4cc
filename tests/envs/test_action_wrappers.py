"""RL action types (issue 18, deliverable 6): `NormalizedPlanAction` (Box(-1, 1, (24,)) mapped affinely onto per-pose
plan bounds) and `ResidualExpertAction` (a scaled residual on the pseudo-expert's plan)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import simscale_env  # noqa: F401  (registration)
from simscale_env.envs import (ACTION_WRAPPERS, NormalizedPlanAction, ResidualExpertAction, SB3ObservationWrapper,
                               plan_bounds, residual_scale, sb3_observation)
from simscale_env.envs.simscale_env import PLAN_HIGH, PLAN_LOW

KW = dict(split="mini-navhard", observation_keys=("ego_status",), disable_env_checker=True, episode_steps=3)
T = 0.5 * np.arange(1, 9)


@pytest.fixture(scope="module")
def plain():
    return gym.make("SimScale-navhard-v0", pseudo_experts=False, plan_scoring=None, valid_start=False, **KW)


def test_plan_bounds_are_documented_values():
    low, high = plan_bounds()
    assert low.shape == high.shape == (8, 3)
    np.testing.assert_allclose(low[:, 0], -0.5)
    np.testing.assert_allclose(high[:, 0], 20.0 * T)  # 20 m/s
    np.testing.assert_allclose(high[:, 1], 0.5 + 1.5 * T ** 2)
    np.testing.assert_allclose(low[:, 1], -high[:, 1])
    np.testing.assert_allclose(high[:, 2], 0.3 + 0.45 * T)
    assert np.all(low >= PLAN_LOW) and np.all(high <= PLAN_HIGH)  # inside the env's plan bounds
    with pytest.raises(ValueError, match="high > low"):
        plan_bounds(max_speed=-1.0)


def test_normalized_round_trip_and_bounds(plain):
    env = NormalizedPlanAction(plain)
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (24,), np.float32)
    low, high = plan_bounds()
    np.testing.assert_array_equal(env.action(-np.ones(24)), low.astype(np.float32))  # -1 hits the low bounds
    np.testing.assert_array_equal(env.action(np.ones(24)), high.astype(np.float32))  # 1 the high ones
    mid = env.action(np.zeros(24))
    np.testing.assert_allclose(mid[:, 0], 10.0 * T - 0.25, atol=1e-5)  # straight ahead at about 10 m/s
    np.testing.assert_allclose(mid[:, 1:], 0.0, atol=1e-6)
    a = np.random.default_rng(0).uniform(-1, 1, (100, 24)).astype(np.float32)
    back = np.stack([env.reverse_action(env.action(x)) for x in a])
    np.testing.assert_allclose(back, a, atol=1e-5)
    # row-major: action[3 * i + j] is pose i's coordinate j
    one = np.zeros(24, np.float32)
    one[3 * 5 + 1] = 1.0
    p = env.action(one)
    assert p[5, 1] == np.float32(high[5, 1]) and np.count_nonzero(p[:, 1]) == 1
    # out of range: actions clip to [-1, 1], plans beyond the bounds map to +-1
    np.testing.assert_array_equal(env.action(5 * np.ones(24)), env.action(np.ones(24)))
    far = np.tile([100.0, -100.0, 3.0], (8, 1))
    np.testing.assert_array_equal(env.reverse_action(far), np.tile([1.0, -1.0, 1.0], 8))
    # steps the env
    env.reset(seed=0)
    obs, r, term, trunc, info = env.step(np.zeros(24, np.float32))
    assert env.unwrapped.world.iteration == 5 and np.isfinite(r)


def test_normalized_custom_bounds_and_errors(plain):
    env = NormalizedPlanAction(plain, low=[0.0, -1.0, -0.1], high=[10.0, 1.0, 0.1])
    np.testing.assert_allclose(env.action(np.zeros(24)), np.tile([5.0, 0.0, 0.0], (8, 1)))
    with pytest.raises(ValueError, match="high > low"):
        NormalizedPlanAction(plain, low=[0.0, 0.0, 0.0], high=[1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="within the env's plan bounds"):
        NormalizedPlanAction(plain, low=[-50.0, -1.0, -0.1], high=[10.0, 1.0, 0.1])
    ctrl = gym.make("SimScale-navhard-v0", action_type="control", pseudo_experts=False, **KW)
    with pytest.raises(ValueError, match="action_type='plan'"):
        NormalizedPlanAction(ctrl)
    with pytest.raises(ValueError, match="action_type='plan'"):
        ResidualExpertAction(ctrl)


def test_residual_zero_action_is_the_expert():
    """Stepping with zeros gives the same trajectory, rewards and EPDMS as stepping with the expert's plan."""
    kw = dict(KW, plan_scoring="non_reactive")
    ref = gym.make("SimScale-navhard-v0", **kw)
    res = ResidualExpertAction(gym.make("SimScale-navhard-v0", **kw))
    assert res.action_space == gym.spaces.Box(-1.0, 1.0, (24,), np.float32)
    _, info_r = ref.reset(seed=3)
    _, info_w = res.reset(seed=3)
    np.testing.assert_array_equal(res.expert_plan, info_w["pseudo_expert"]["pdm_closed"])
    np.testing.assert_array_equal(res.action(np.zeros(24)), info_r["pseudo_expert"]["pdm_closed"])
    np.testing.assert_array_equal(res.reverse_action(info_w["pseudo_expert"]["pdm_closed"]), np.zeros(24))
    for _ in range(3):
        _, rr, tr, ur, info_r = ref.step(info_r["pseudo_expert"]["pdm_closed"])
        _, rw, tw, uw, info_w = res.step(np.zeros(24, np.float32))
        assert ref.unwrapped.world.ego.tobytes() == res.unwrapped.world.ego.tobytes()
        assert rr == rw and info_r["epdms"] == info_w["epdms"] and (tr, ur) == (tw, uw)
        if tr or ur:
            break
    assert info_r["epdms_episode"]["epdms"] == info_w["epdms_episode"]["epdms"]


def test_residual_mapping_and_errors():
    s = residual_scale()
    np.testing.assert_allclose(s[-1], [5.0, 2.0, 0.3])  # the largest residual, at the last pose (4 s)
    np.testing.assert_allclose(s[0], np.array([5.0, 2.0, 0.3]) / 8)  # growing linearly with time
    with pytest.raises(ValueError, match="residual scale"):
        residual_scale((1.0, -1.0, 0.1))
    env = ResidualExpertAction(gym.make("SimScale-navhard-v0", **KW), scale=(8.0, 4.0, 0.8))
    with pytest.raises(RuntimeError, match="reset"):
        env.action(np.zeros(24))
    _, info = env.reset(seed=0)
    a = np.random.default_rng(1).uniform(-1, 1, 24).astype(np.float32)
    want = info["pseudo_expert"]["pdm_closed"].astype(np.float64) + residual_scale((8.0, 4.0, 0.8)) * a.reshape(8, 3)
    np.testing.assert_allclose(env.action(a), want, atol=1e-5)
    np.testing.assert_allclose(env.reverse_action(env.action(a)), a, atol=1e-4)
    # the expert followed is the one of the state just observed
    _, _, _, _, info = env.step(a)
    np.testing.assert_array_equal(env.expert_plan, info["pseudo_expert"]["pdm_closed"])
    rec = ResidualExpertAction(gym.make("SimScale-navhard-v0", **KW), expert="recovery")
    _, info = rec.reset(seed=0)
    np.testing.assert_array_equal(rec.action(np.zeros(24)), info["pseudo_expert"]["recovery"])
    with pytest.raises(ValueError, match="pseudo_experts=True"):
        ResidualExpertAction(gym.make("SimScale-navhard-v0", pseudo_experts=False, **KW))
    with pytest.raises(KeyError, match="'nobody'"):
        ResidualExpertAction(gym.make("SimScale-navhard-v0", **KW), expert="nobody").reset(seed=0)
    assert ACTION_WRAPPERS == {"normalized": NormalizedPlanAction, "residual": ResidualExpertAction}


def test_sb3_observation_function_matches_the_wrapper(plain):
    env = gym.make("SimScale-navhard-v0", pseudo_experts=False, plan_scoring=None, valid_start=False,
                   **dict(KW, observation_keys=("cameras", "ego_status", "bev")), width=32, height=16, bev_size=24)
    obs, _ = env.reset(seed=0)
    w = SB3ObservationWrapper(env)
    out = sb3_observation(obs)
    assert out["cameras"].shape == (9, 16, 32) and out["bev"].shape == (5, 24, 24)
    assert w.observation_space["cameras"].shape == out["cameras"].shape
    np.testing.assert_array_equal(out["cameras"][3:6], np.transpose(obs["cameras"][1], (2, 0, 1)))
    for k, v in w.observation(obs).items():
        np.testing.assert_array_equal(v, out[k])
