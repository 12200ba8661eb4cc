"""training.generate: one sample of SimScale's rounds (issue 17 deliverables 1 and 2) on the mini dataset.

Tokens of mini-navtrain whose round-1 outcome at seed 0 is known: 8fdc86b11dbe9efc is valid; ab039fbab189cedc has no
valid perturbed start; 05643bd9def6aa52 has a red light ahead. Cameras are 64x32 to keep the tests small."""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest

import training.generate as g

VALID = "8fdc86b11dbe9efc"
NO_START = "ab039fbab189cedc"
RED_AHEAD = "05643bd9def6aa52"
STEPS = np.arange(1, 9)
# a plan straight ahead at 24 m/s (into the traffic ahead) and one swerving left off the road
FAST = np.stack([12.0 * STEPS, 0 * STEPS, 0 * STEPS], -1).astype(np.float32)
LEFT = np.stack([3.0 * STEPS, np.minimum(1.2 * STEPS ** 2, 70), np.minimum(0.25 * STEPS, 3)], -1).astype(np.float32)


@pytest.fixture(scope="module")
def cfg(mini):
    return g.GenConfig(width=64, height=32)


@pytest.fixture(scope="module")
def env(cfg):
    e = g.make_generator_env(cfg)
    yield e
    e.close()


@pytest.fixture(scope="module")
def valid_row(env, cfg):
    row, reason = g.generate_sample(env, cfg, VALID, 1)
    assert reason is None
    return row


def test_sample_seed_is_stable_and_distinct():
    s = g.sample_seed(0, VALID, 1)
    assert s == g.sample_seed(0, VALID, 1) and 0 <= s < 2 ** 63
    assert s == 3732449659619017616  # blake2b: the same in every process and machine (no Python hash())
    assert len({s, g.sample_seed(1, VALID, 1), g.sample_seed(0, VALID, 2), g.sample_seed(0, NO_START, 1)}) == 4


def test_base_tokens_are_the_split_in_order(cfg, env):
    toks = g.base_tokens(cfg)
    assert toks == list(env.unwrapped.tokens) and len(toks) == len(set(toks)) and VALID in toks


def test_valid_sample_contents(env, cfg, valid_row):
    from PIL import Image

    from simscale_env.metrics import SUB_METRICS

    row = valid_row
    assert row["token"] == f"{VALID}-001" and row["base_token"] == VALID and row["round"] == 1
    assert row["expert"] == "pdm_closed" and row["log_name"] and row["map_location"]
    for k in ("ego_pose", "ego_velocity", "ego_acceleration", "driving_command", "label_poses", "label_trajectory",
              "agents", "route"):
        assert all(np.isfinite(row[k])), k
    assert (len(row["ego_pose"]), len(row["ego_velocity"]), len(row["ego_acceleration"]),
            len(row["driving_command"])) == (12, 8, 8, 16)
    assert row["ego_pose"][-3:] == [0.0, 0.0, 0.0]  # the current frame is the origin
    assert np.asarray(row["driving_command"]).reshape(4, 4).sum(1).tolist() == [1, 1, 1, 1]
    assert len(row["label_poses"]) == 24 and len(row["label_trajectory"]) == 120
    assert len(row["agents"]) % 8 == 0 and len(row["agents"]) > 0 and len(row["route"]) == 64
    assert row["label_epdms"] >= cfg.epdms_threshold
    assert all(f"label_{m}" in row for m in SUB_METRICS)
    # the label is the expert's plan at that state: the same reset gives the same info["pseudo_expert"]
    obs, info = env.reset(seed=g.sample_seed(cfg.seed, VALID, 1), options={"scenario_token": VALID})
    assert info["perturbed"]
    np.testing.assert_array_equal(np.asarray(row["label_poses"], np.float32).reshape(8, 3),
                                  info["pseudo_expert"]["pdm_closed"])
    traj = np.asarray(row["label_trajectory"], np.float32).reshape(40, 3)
    np.testing.assert_array_equal(traj[4::5], info["pseudo_expert"]["pdm_closed"])
    np.testing.assert_array_equal(np.asarray(row["ego_pose"], np.float32).reshape(4, 3),
                                  info["ego_history"]["ego_pose"])
    p = info["perturbation"]
    assert (row["perturbation_lateral"], row["perturbation_heading"]) == (p["lateral"], p["heading"])
    assert row["timestamp_us"] == info["time_us"]
    # cameras: 4 JPEGs per channel that decode to the requested size
    meta = json.loads(row["camera_meta"])
    assert sorted(meta) == sorted(cfg.channels)
    for ch in cfg.channels:
        assert len(row[ch]) == 4
        for jpg in row[ch]:
            assert jpg[:2] == b"\xff\xd8"
            im = Image.open(io.BytesIO(jpg))
            assert im.format == "JPEG" and im.size == (64, 32)
        assert (meta[ch]["width"], meta[ch]["height"]) == (64, 32)
        assert np.asarray(meta[ch]["intrinsics"]).shape == (3, 3) and len(meta[ch]["distortion"]) == 5
    # the past frames are other views than the current one (the ego moved)
    assert row["CAM_F0"][0] != row["CAM_F0"][3]


def test_history_cameras_end_with_the_observed_frame(mini):
    """`SimScaleEnv.history_camera_images()[-1]` is the rendered observation of the current state."""
    import gymnasium as gym

    env = gym.make("SimScale-navtrain-v0", split="mini-navtrain", width=64, height=32, disable_env_checker=True,
                   observation_keys=("cameras",), pseudo_experts=False, plan_scoring=None)
    obs, info = env.reset(seed=g.sample_seed(0, VALID, 1), options={"scenario_token": VALID})
    imgs = env.unwrapped.history_camera_images()
    assert imgs.shape == (4, 3, 32, 64, 3) and imgs.dtype == np.uint8
    np.testing.assert_array_equal(imgs[-1], obs["cameras"])
    assert not np.array_equal(imgs[0], imgs[-1])
    env.close()


def test_determinism_same_and_fresh_env(env, cfg, valid_row):
    g.generate_sample(env, cfg, NO_START, 1)  # something else in between
    again, _ = g.generate_sample(env, cfg, VALID, 1)
    assert pickle.dumps(again) == pickle.dumps(valid_row)
    fresh = g.make_generator_env(cfg)
    try:
        row, _ = g.generate_sample(fresh, cfg, VALID, 1)
    finally:
        fresh.close()
    assert pickle.dumps(row) == pickle.dumps(valid_row)
    other, reason = g.generate_sample(env, cfg, VALID, 2)  # another round: another perturbation
    assert reason is not None or other["perturbation_lateral"] != valid_row["perturbation_lateral"]


# ------------------------------------------------------------------------------------------ every rejection reason
def test_reject_no_valid_start(env, cfg):
    assert g.generate_sample(env, cfg, NO_START, 1) == (None, "no_valid_start")
    _, info = env.reset(seed=g.sample_seed(cfg.seed, NO_START, 1), options={"scenario_token": NO_START})
    assert not info["perturbed"] and info["perturbation_error"]


@pytest.mark.parametrize("token, plan, reason", [(VALID, FAST, "expert_collision"), (VALID, LEFT, "expert_off_road"),
                                                 (RED_AHEAD, FAST, "expert_red_light")])
def test_reject_rollout_failures(env, cfg, monkeypatch, token, plan, reason):
    """An expert that drives into the car ahead, off the road or over a red light fails its own rollout."""
    monkeypatch.setattr(g, "_expert_action", lambda info, cfg: plan)
    assert g.generate_sample(env, cfg, token, 1) == (None, reason)


def test_reject_epdms_below_threshold(env, cfg, valid_row):
    from dataclasses import replace

    assert valid_row["label_epdms"] <= 1.0
    assert g.generate_sample(env, replace(cfg, epdms_threshold=1.01), VALID, 1) == (None,
                                                                                   "expert_epdms_below_threshold")


def test_reject_scenario_too_short(cfg):
    from dataclasses import replace

    c = replace(cfg, env_kwargs={"episode_steps": 4})
    e = g.make_generator_env(c)
    try:
        assert g.generate_sample(e, c, VALID, 1) == (None, "scenario_too_short")
    finally:
        e.close()


def test_reasons_are_declared():
    assert set(g.REJECTION_REASONS) == {"no_valid_start", "expert_collision", "expert_off_road", "expert_red_light",
                                        "scenario_too_short", "expert_epdms_below_threshold"}


# ------------------------------------------------------------------------------------------ vocabulary labels
def test_vocab_labels(env, cfg, valid_row, tmp_path):
    from dataclasses import replace

    from simscale_env.errors import CorruptFileError
    from simscale_env.metrics import SUB_METRICS

    label = np.asarray(valid_row["label_poses"]).reshape(8, 3)
    vocab = np.stack([label, LEFT.astype(np.float64)])
    path = tmp_path / "vocab.npy"
    np.save(path, vocab)
    row, reason = g.generate_sample(env, replace(cfg, vocab=str(path)), VALID, 1)
    assert reason is None
    scores = np.frombuffer(row["vocab_scores"], "<f2").reshape(2, len(SUB_METRICS))
    epdms = np.frombuffer(row["vocab_epdms"], "<f2")
    assert epdms.shape == (2,)
    nc, dac = SUB_METRICS.index("no_at_fault_collisions"), SUB_METRICS.index("drivable_area_compliance")
    assert scores[0, nc] == 1 and scores[0, dac] == 1 and epdms[0] > 0.5  # the label itself is safe
    assert scores[1, dac] == 0 and epdms[1] == 0  # the swerve leaves the road
    assert np.isnan(scores[:, SUB_METRICS.index("two_frame_extended_comfort")]).all()
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 7, 3)))
    with pytest.raises(CorruptFileError, match="bad.npy"):
        g.generate_sample(env, replace(cfg, vocab=str(bad)), VALID, 1)


def test_bad_config():
    with pytest.raises(g.GenerationError, match="expert"):
        g.GenConfig(expert="human")
    with pytest.raises(g.GenerationError, match="plan_scoring"):
        g.make_generator_env(g.GenConfig(env_kwargs={"plan_scoring": None}))
    assert g.GenConfig(cameras=("all",)).channels == g.ALL_CHANNELS
