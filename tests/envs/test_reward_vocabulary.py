"""The env's `reward_vocabulary` option (issue 18, deliverable 4): info["vocab_scores"] / info["vocab_epdms"] at every
decision step are the data engine's vocabulary labels (`metrics.vocabulary.label_scene`, as `training.generate`
writes them) of the current state; a bad vocabulary file fails at gym.make, naming it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import simscale_env  # noqa: F401  (registration)
from simscale_env.errors import CorruptFileError, MissingFileError
from simscale_env.metrics import SUB_METRICS
from simscale_env.metrics.vocabulary import human_plans, kmeans_vocabulary, label_scene, save_vocabulary

KW = dict(split="mini-navhard", observation_keys=("ego_status",), disable_env_checker=True)


@pytest.fixture(scope="module")
def vocab40(mini_logs, tmp_path_factory):
    """A tiny vocabulary: 16 k-means centres of the logged 4 s futures (40 poses 0.1 s apart) of two mini logs."""
    v = kmeans_vocabulary(human_plans(mini_logs[:2]), 16, iterations=10, seed=0)
    path = save_vocabulary(tmp_path_factory.mktemp("vocab") / "v16.npy", v)
    return path, np.load(path).astype(np.float64)  # as stored: float32


def _labels(sim, world, vocab, interval):
    lab = label_scene(sim, world, vocab, interval_s=interval, agent_mode="non_reactive", reference="pdm_closed")
    return np.stack([lab.get(m, np.full(len(vocab), np.nan, np.float16)) for m in SUB_METRICS], -1), lab["pdm_score"]


def test_vocab_scores_at_reset_and_step_are_label_scene(vocab40):
    path, v = vocab40
    env = gym.make("SimScale-navhard-v0", reward_vocabulary=str(path), **KW)
    obs, info = env.reset(seed=0)
    u = env.unwrapped
    scores, epdms = info["vocab_scores"], info["vocab_epdms"]
    assert scores.shape == (16, len(SUB_METRICS)) and scores.dtype == np.float16
    assert epdms.shape == (16,) and epdms.dtype == np.float16
    want, want_epdms = _labels(u.sim, u.world, v, 0.1)
    assert scores.tobytes() == want.astype(np.float16).tobytes()  # bit-identical (NaN EC included)
    assert epdms.tobytes() == want_epdms.tobytes()
    assert np.isnan(scores[:, SUB_METRICS.index("two_frame_extended_comfort")]).all()
    finite = np.delete(scores, SUB_METRICS.index("two_frame_extended_comfort"), 1).astype(np.float64)
    assert np.all((finite >= 0) & (finite <= 1)) and 0 < len(np.unique(epdms)) and epdms.max() > 0
    # after a step: the labels of the state the ego drove into, not the start's
    obs, r, term, trunc, info = env.step(info["pseudo_expert"]["pdm_closed"])
    want2, _ = _labels(u.sim, u.world, v, 0.1)
    assert info["vocab_scores"].tobytes() == want2.astype(np.float16).tobytes()
    assert info["vocab_scores"].tobytes() != scores.tobytes()
    # without the option: no keys
    plain = gym.make("SimScale-navhard-v0", **KW)
    _, pinfo = plain.reset(seed=0)
    assert "vocab_scores" not in pinfo and "vocab_epdms" not in pinfo


def test_vocab_scores_match_the_data_engine(mini, tmp_path):
    """At a perturbed start: the bytes `training.generate.generate_sample` writes for the same seed (an 8-pose
    vocabulary: the engine's label plan and a swerve off the road)."""
    import training.generate as g

    steps = np.arange(1, 9)
    left = np.stack([3.0 * steps, np.minimum(1.2 * steps ** 2, 70), np.minimum(0.25 * steps, 3)], -1)
    straight = np.stack([5.0 * steps, 0 * steps, 0 * steps], -1)
    path = tmp_path / "v8.npy"
    np.save(path, np.stack([straight, left]).astype(np.float32))
    token = "8fdc86b11dbe9efc"  # mini-navtrain: valid at round 1, seed 0 (tests/training/test_generate.py)
    cfg = g.GenConfig(width=64, height=32, vocab=str(path), env_kwargs={"reward_vocabulary": str(path)})
    env = g.make_generator_env(cfg)
    row, reason = g.generate_sample(env, cfg, token, 1)
    assert reason is None
    _, info = env.reset(seed=g.sample_seed(cfg.seed, token, 1), options={"scenario_token": token})
    assert info["perturbed"]
    assert info["vocab_scores"].astype("<f2").tobytes() == row["vocab_scores"]
    assert info["vocab_epdms"].astype("<f2").tobytes() == row["vocab_epdms"]
    assert info["vocab_scores"][1, SUB_METRICS.index("drivable_area_compliance")] == 0  # the swerve leaves the road


def test_bad_vocabulary_fails_at_make(tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 7, 3)))  # 7 poses do not split 4 s into 0.1 s multiples
    with pytest.raises(CorruptFileError, match=r"bad\.npy.*\[K, P, 3\].*4 s"):
        gym.make("SimScale-navhard-v0", reward_vocabulary=str(bad), **KW)
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((3, 40)))
    with pytest.raises(CorruptFileError, match=r"flat\.npy.*\[K, P, 3\]"):
        gym.make("SimScale-navhard-v0", reward_vocabulary=flat, **KW)  # a Path is accepted
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not numpy")
    with pytest.raises(CorruptFileError, match=r"junk\.npy.*\[K, P, 3\]"):
        gym.make("SimScale-navhard-v0", reward_vocabulary=str(junk), **KW)
    with pytest.raises(MissingFileError, match=r"missing\.npy.*\[K, P, 3\]"):
        gym.make("SimScale-navhard-v0", reward_vocabulary=str(tmp_path / "missing.npy"), **KW)
    with pytest.raises(ValueError, match="reward_vocabulary"):
        gym.make("SimScale-navhard-v0", reward_vocabulary=np.zeros((2, 8, 3)), **KW)


def test_vocabulary_scores_function_is_exported(vocab40):
    from simscale_env.envs import load_reward_vocabulary, vocabulary_scores

    path, v = vocab40
    assert np.array_equal(load_reward_vocabulary(path), v)
    env = gym.make("SimScale-navhard-v0", **KW)
    env.reset(seed=1)
    u = env.unwrapped
    s, e = vocabulary_scores(u.sim, u.world, load_reward_vocabulary(path))
    want, want_e = _labels(u.sim, u.world, v, 0.1)
    assert s.tobytes() == want.astype(np.float16).tobytes() and e.tobytes() == want_e.tobytes()
