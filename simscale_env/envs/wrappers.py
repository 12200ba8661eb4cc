"""Wrappers: observations for stable-baselines3's `MultiInputPolicy`."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class SB3ObservationWrapper(gym.ObservationWrapper):
    """Cameras [n, H, W, 3] -> one channel-first image [3n, H, W] (uint8, what SB3's CombinedExtractor treats as an
    image); BEV [S, S, 5] -> [5, S, S]; vector keys unchanged (SB3 flattens them)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        obs = dict(env.observation_space.spaces)
        if "cameras" in obs:
            n, h, w, c = obs["cameras"].shape
            obs["cameras"] = spaces.Box(0, 255, (n * c, h, w), np.uint8)
        if "bev" in obs:
            s1, s2, c = obs["bev"].shape
            obs["bev"] = spaces.Box(0, 255, (c, s1, s2), np.uint8)
        self.observation_space = spaces.Dict(obs)

    def observation(self, observation):
        out = dict(observation)
        if "cameras" in out:
            cams = out["cameras"]
            out["cameras"] = np.ascontiguousarray(np.transpose(cams, (0, 3, 1, 2)).reshape(-1, *cams.shape[1:3]))
        if "bev" in out:
            out["bev"] = np.ascontiguousarray(np.transpose(out["bev"], (2, 0, 1)))
        return out
