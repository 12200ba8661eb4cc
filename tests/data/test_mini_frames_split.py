"""The mini dataset's NAVSIM-style all-frames training split `mini-navtrain-frames` (issue 17, deliverable 6)."""

from __future__ import annotations

import numpy as np

from simscale_env.data.mini.build import FRAMES_FUTURE, FRAMES_HISTORY, NUM_LOGS, TEST_LOGS
from simscale_env.data.openscene import load_log, load_split


def test_frames_split_holds_every_valid_frame_of_the_training_logs(mini):
    spec = load_split(mini / "splits" / "mini-navtrain-frames.yaml")
    tagged = load_split(mini / "splits" / "mini-navtrain.yaml")
    assert (spec.num_history_frames, spec.num_future_frames, spec.frame_interval) == (4, 10, 1)
    assert set(spec.log_names) == set(tagged.log_names) and len(spec.log_names) == NUM_LOGS - TEST_LOGS
    want = []
    for name in sorted(spec.log_names):  # known answer: frames 3 .. n-11 of each log (3 past, 10 future frames: NAVSIM's navtrain filter)
        frames = load_log(mini / "navsim_logs" / "mini" / f"{name}.pkl")
        want += [f["token"] for f in frames[FRAMES_HISTORY - 1:len(frames) - FRAMES_FUTURE] if f["roadblock_ids"]]
    assert list(spec.tokens) == want and len(want) > 10 * len(tagged.tokens)
    assert len(set(want)) == len(want)


def test_env_runs_on_the_frames_split_at_its_last_frame(mini):
    import gymnasium as gym

    import simscale_env  # noqa: F401  (registers the ids)

    env = gym.make("SimScale-navtrain-v0", data_root=str(mini), split_file=str(mini / "splits" /
                                                                                  "mini-navtrain-frames.yaml"),
                   observation_keys=("ego_status",))
    try:
        spec = load_split(mini / "splits" / "mini-navtrain-frames.yaml")
        assert env.unwrapped.tokens == list(spec.tokens)
        obs, info = env.reset(seed=0, options={"scenario_token": spec.tokens[-1], "perturbation": None})
        assert np.isfinite(obs["ego_status"]).all()
        obs, *_ = env.step(np.zeros((8, 3), np.float32) + np.array([1.0, 0, 0], np.float32) * np.arange(1, 9)[:, None])
        assert np.isfinite(obs["ego_status"]).all()
    finally:
        env.close()
    by_name = gym.make("SimScale-navtrain-v0", data_root=str(mini), split="mini-navtrain-frames",
                       observation_keys=("ego_status",))
    assert by_name.unwrapped.tokens == list(spec.tokens)
    by_name.close()
