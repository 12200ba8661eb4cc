"""The reset option `start_offset_s`: a start at the token's logged frame some seconds later or earlier."""

import gymnasium as gym
import numpy as np
import pytest

import simscale_env  # noqa: F401

# two mini-navtest tokens of one log, the second 0.5 s after the first
TOKEN, NEXT = "548475be2f57654e", "c33b7dcdffb6da57"


@pytest.fixture(scope="module")
def env(mini):
    e = gym.make("SimScale-navtest-v0", data_root=str(mini), observation_keys=("ego_status",),
                 plan_scoring="reactive", episode_steps=2)
    yield e
    e.close()


def _first_step(env, token, offset, plan):
    obs, info = env.reset(seed=0, options={"scenario_token": token, "perturbation": None, "start_offset_s": offset})
    ego = env.unwrapped.world.ego.copy()
    _, _, _, _, step = env.step(plan)
    return obs, info, ego, step


def test_an_offset_start_is_the_split_token_at_that_frame(env):
    """Half a second after TOKEN is NEXT, a token of the split: the same logged start, past, logged plan, pseudo-expert
    and stage-1 score (human filter, reactive traffic) of a submitted plan, to the bit."""
    sc = env.unwrapped._scenario(TOKEN)
    assert NEXT in env.unwrapped.tokens and sc.lidar_pc_tokens[sc.start_index + 5] == NEXT
    plan = np.stack([np.arange(1, 9) * 4.0, np.zeros(8), np.zeros(8)], -1).astype(np.float32)
    a = _first_step(env, TOKEN, 0.5, plan)
    b = _first_step(env, NEXT, 0.0, plan)
    assert a[1]["time_us"] == b[1]["time_us"] and a[1]["scenario_token"] == TOKEN
    assert np.array_equal(a[2], b[2]) and np.array_equal(a[0]["ego_status"], b[0]["ego_status"])
    for k in ("logged_plan",):
        assert np.array_equal(a[1][k], b[1][k])
    assert np.array_equal(a[1]["pseudo_expert"]["pdm_closed"], b[1]["pseudo_expert"]["pdm_closed"])
    assert a[3]["epdms_stage"] == b[3]["epdms_stage"] == 1 and a[3]["epdms"] == b[3]["epdms"]
    # and 0.5 s before the token: the logged state there, still stage 1
    obs, info, ego, step = _first_step(env, TOKEN, -0.5, plan)
    f = sc.start_index - 5
    assert info["time_us"] == sc.timestamps_us[f] and np.array_equal(ego[:3], [sc.ego.x[f], sc.ego.y[f],
                                                                                sc.ego.heading[f]])
    assert step["epdms_stage"] == 1


def test_offset_starts_are_perturbed_like_any_start(env):
    _, info = env.reset(seed=3, options={"scenario_token": TOKEN, "start_offset_s": 4.0})
    sc = env.unwrapped._scenario(TOKEN)
    assert info["perturbed"] and info["time_us"] == sc.timestamps_us[sc.start_index + 40]
    _, _, _, _, step = env.step(info["pseudo_expert"]["pdm_closed"])
    assert step["epdms_stage"] == 2
    p = dict(info["perturbation"])
    _, again = env.reset(seed=9, options={"scenario_token": TOKEN, "start_offset_s": 4.0, "perturbation": p})
    assert again["perturbation"] == p and again["time_us"] == info["time_us"]


def test_offset_bounds_and_types_are_checked(env):
    for off, msg in ((-1.0, "earliest offset is -0.5 s"), (0.05, "multiple of the scenario step"),
                     (12.0, "needs one decision step"), (True, "finite number"), (float("nan"), "finite number"),
                     ("0.5", "finite number")):
        with pytest.raises(ValueError, match=msg):
            env.reset(seed=0, options={"scenario_token": TOKEN, "start_offset_s": off})
    with pytest.raises(ValueError, match="start_offset_s"):
        env.reset(seed=0, options={"scenario_token": TOKEN, "start_offst_s": 0.5})


def test_the_logged_drive_reference_is_kept_per_start_frame(mini):
    """The episode summary's human-filter reference (the logged drive over the episode's iterations) is cached per
    start frame: 2-step episodes from the token and from +0.5 s end at the same iteration but cover different
    stretches of the log, and must not share it (no mini scene's logged drive scores 0 anywhere in 1 s, so the
    cache itself is checked)."""
    e = gym.make("SimScale-navtest-v0", data_root=str(mini), observation_keys=("ego_status",), pseudo_experts=False,
                 episode_steps=2)
    try:
        for offset in (0.5, 0.0):
            _, info = e.reset(seed=0, options={"scenario_token": TOKEN, "perturbation": None,
                                               "start_offset_s": offset})
            while True:
                _, _, term, trunc, info = e.step(info["logged_plan"])
                if term or trunc:
                    break
        refs = [e.unwrapped._human_cache[k] for k in e.unwrapped._human_cache]
    finally:
        e.close()
    assert len(refs) == 2 and refs[0].progress_raw[0] != refs[1].progress_raw[0]
