"""`SimScaleVectorEnv`: N scenarios in one process behind gymnasium's `VectorEnv` API (issue 20, first part).

    envs = gym.make_vec("SimScale-navhard-v0", num_envs=8, vectorization_mode="vector_entry_point",
                        observation_keys=("ego_status",), pseudo_experts=False)
    obs, info = envs.reset(seed=0)              # sub-env i seeded with 0 + i, as SyncVectorEnv seeds
    obs, reward, terminated, truncated, info = envs.step(plans)   # plans [N, 8, 3]

What it is today, and what it is for:

- **One process, shared caches.** The N sub-envs are siblings (`SimScaleEnv.sibling`): one dataset resolution, one
  split, one reward vocabulary and one set of caches (maps, scenarios, their simulations, camera renderers, the
  logged drive's scores), where N separate envs (`SyncVectorEnv`, `AsyncVectorEnv`) hold N copies. The caches hold
  only episode-independent values, so a sibling gives what it would alone (tested: bit-identical observations,
  rewards and infos per sub-env against single envs with the same seeds). The renderer cache grows to N entries so
  that N sub-envs in N logs do not evict each other's renderers at every step.
- **Stepping.** The sub-envs step in turn (gymnasium's `SyncVectorEnv` loop). Batching the kernels across sub-envs
  (one LQR for N plans, one IDM update over every scene's agents, one EPDMS call for N plans) goes behind this API
  next, held to the same bit-identity test.
- **Autoreset**: gymnasium's modes. NEXT_STEP (default): the step after a sub-env's episode ends resets it (its action
  ignored, reward 0, not terminated or truncated) and returns the reset observation and info. SAME_STEP: the ending
  step resets it at once, with the last observation and info under ``info["final_obs"]`` / ``info["final_info"]``
  (SB3's semantics: `SB3VecEnv`).
- `SB3VecEnv(vector_env)`: the stable-baselines3 `VecEnv` interface over a SAME_STEP vector env (``dones``, a list of
  per-env infos with ``terminal_observation`` and ``TimeLimit.truncated``), so PPO runs on it directly.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv


class SimScaleVectorEnv(SyncVectorEnv):
    """N SimScale scenarios in one process (module docstring). `wrappers`: single-env wrapper classes or callables
    applied to every sub-env, in order (e.g. `ResidualExpertAction`); the other keyword arguments are
    `SimScaleEnv`'s."""

    def __init__(self, num_envs: int = 1, split: str = "navhard", *, autoreset_mode=AutoresetMode.NEXT_STEP,
                 wrappers=(), copy: bool = True, render_mode: str | None = None, **kwargs):
        from ..cache import CacheSizes
        from .simscale_env import SimScaleEnv

        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        kwargs.pop("max_episode_steps", None)  # gym.make_vec's (the env ends episodes itself: episode_steps)
        if "cache_sizes" not in kwargs and num_envs > 1:
            sizes = CacheSizes()
            if sizes.renderers is not None and sizes.renderers < num_envs:
                kwargs["cache_sizes"] = dataclasses.replace(sizes, renderers=int(num_envs))
        first = SimScaleEnv(split=split, render_mode=render_mode, **kwargs)
        subs = [first] + [first.sibling() for _ in range(int(num_envs) - 1)]
        fns = [partial(_wrapped, env, tuple(wrappers)) for env in subs]
        super().__init__(fns, copy=copy, autoreset_mode=autoreset_mode)

    @property
    def sub_envs(self) -> list:
        """The unwrapped sub-envs (`SimScaleEnv`), in order."""
        return [e.unwrapped for e in self.envs]


def _wrapped(env, wrappers):
    for w in wrappers:
        env = w(env)
    return env


class SB3VecEnv:
    """stable-baselines3's `VecEnv` interface over a gymnasium vector env in SAME_STEP autoreset mode (module
    docstring): `reset() -> obs`, `step_async` / `step_wait -> (obs, rewards, dones, infos)` with SB3's
    ``terminal_observation`` and ``TimeLimit.truncated`` in the info of an env whose episode ended (its returned
    observation is already the next episode's first). Subclasses SB3's `VecEnv` when it is imported (`make`)."""

    @staticmethod
    def make(vector_env, seed: int | None = None):
        from stable_baselines3.common.vec_env.base_vec_env import VecEnv

        if vector_env.metadata.get("autoreset_mode") != AutoresetMode.SAME_STEP:
            raise ValueError("SB3VecEnv needs a vector env with autoreset_mode=AutoresetMode.SAME_STEP (SB3 resets an "
                             "env in the step that ends its episode)")
        cls = type("SB3VecEnv", (_SB3VecEnvImpl, VecEnv), {})
        return cls(vector_env, seed)


class _SB3VecEnvImpl:
    def __init__(self, vector_env, seed=None):
        self.venv = vector_env
        self._actions = None
        self._seed = seed
        super().__init__(vector_env.num_envs, vector_env.single_observation_space, vector_env.single_action_space)

    # -- SB3 VecEnv API
    def reset(self):
        seed = self._seed
        self._seed = None  # a seed is used for the first reset only (SB3's VecEnv.seed semantics)
        obs, info = self.venv.reset(seed=seed)
        self.reset_infos = _split_infos(info, self.num_envs)
        return obs

    def seed(self, seed=None):
        self._seed = seed
        return [None if seed is None else seed + i for i in range(self.num_envs)]

    def step_async(self, actions):
        self._actions = np.asarray(actions)

    def step_wait(self):
        obs, rew, term, trunc, info = self.venv.step(self._actions)
        infos = _split_infos(info, self.num_envs)
        dones = np.logical_or(term, trunc)
        for i in np.nonzero(dones)[0]:
            final = infos[i].pop("final_info", None) or {}
            final_obs = infos[i].pop("final_obs", None)
            infos[i] = {**final, "terminal_observation": final_obs,
                        "TimeLimit.truncated": bool(trunc[i] and not term[i])}
        return obs, np.asarray(rew, dtype=np.float32), dones, infos

    def close(self):
        self.venv.close()

    def get_attr(self, attr_name, indices=None):
        return [getattr(self.venv.envs[i], attr_name) for i in self._indices(indices)]

    def set_attr(self, attr_name, value, indices=None):
        for i in self._indices(indices):
            setattr(self.venv.envs[i], attr_name, value)

    def env_method(self, method_name, *args, indices=None, **kwargs):
        return [getattr(self.venv.envs[i], method_name)(*args, **kwargs) for i in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None):
        from stable_baselines3.common.env_util import is_wrapped

        return [is_wrapped(self.venv.envs[i], wrapper_class) for i in self._indices(indices)]

    def get_images(self):
        return [e.render() for e in self.venv.envs]

    def _indices(self, indices):
        if indices is None:
            return range(self.num_envs)
        return [indices] if isinstance(indices, int) else indices


def _split_infos(info: dict, n: int) -> list[dict]:
    """gymnasium's vector info (arrays per key with ``_key`` masks, nested dicts alike) -> one dict per env."""
    out = [{} for _ in range(n)]
    for k, v in info.items():
        if k.startswith("_"):
            continue
        mask = info.get(f"_{k}")
        subs = _split_infos(v, n) if isinstance(v, dict) else None
        for i in range(n):
            if mask is None or mask[i]:
                out[i][k] = subs[i] if subs is not None else v[i]
    return out
