"""Reinforcement learning on the env with stable-baselines3 PPO (issue 18, deliverable 6): `simscale train-rl`.

    from training.rl import RLConfig, train_rl
    summary = train_rl(RLConfig(split="mini-navhard", total_timesteps=32_768, action="residual"), "runs/ppo")
    policy = agents.load_policy("runs/ppo/ppo.zip")      # agents.ppo_policy.PPOPolicy

The env is `SimScale-<base>-v0` on the split (`simscale_env.envs.split_env_spec`) with privileged observations by
default ("ego_status", "agents", "route"; "bev" and cameras optional), wrapped in an RL action type
(`simscale_env.envs.ACTION_WRAPPERS`: "residual" on the PDM-Closed pseudo-expert's plan, or "normalized" plan
bounds; both Box(-1, 1, (24,)), as SB3's tips ask) and `SB3ObservationWrapper`. Following SB3's pitfalls
(reference navsim-agents-and-planners.md section 6): the vec env (DummyVecEnv; for n_envs > 1 by default
`SimScaleVectorEnv`, all envs in this process sharing one set of caches, or SubprocVecEnv: `vec_env`) is wrapped
in `VecMonitor` (a VecEnv handed to PPO gets no Monitor), then `VecNormalize` (observations; rewards for the
PPO update only, so the Monitor's returns stay raw). Episode EPDMS comes from `info["epdms_episode"]` of the infos
whose `dones` is set, read by `EpdmsCallback` in `_on_step` (the callback runs before SB3 fills its episode buffer,
and `info["episode"]` is the Monitor's).

A run directory holds: `rl_config.json` (format, the config, the env id and kwargs, the action mapping, versions),
`ppo.zip` (SB3's `model.save`, written atomically; rewritten every `checkpoint_every` timesteps and at the end),
`obs_norm.npz` (the observation normalisation the policy needs), `episodes.csv` (one row per finished episode:
timesteps, env, scenario, EPDMS and its sub-scores, return, length), `logs/` (SB3's logger: TensorBoard events and
`progress.csv` with rollout/ep_epdms_mean and rollout/ep_<sub-score>_mean, the means over the episodes finished in
each rollout) and `summary.json` when done. A rerun with the same config into a finished run directory returns its
summary; another config there is refused.

`agents.ppo_policy.PPOPolicy` acts with the saved policy (deterministic: the Gaussian's mean) in a plain env;
`import agents` registers its loader for `.zip` files that are SB3 saves with a `rl_config.json` of this format
beside them.

Behaviour-cloning warm start (`bc_init_steps` > 0): the pseudo-expert (`expert`) drives `bc_init_steps` decision
steps of one env; its plans, mapped into the action space (`reverse_action`: zeros for the residual on the same
expert), are regressed by the policy's mean (MSE, Adam, `bc_epochs` epochs) before PPO starts.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache, partial
from pathlib import Path

import numpy as np

from agents.ppo_policy import CONFIG_NAME, FORMAT, MODEL_NAME, NORM_NAME, PPOPolicy  # noqa: F401 (re-exported)
from simscale_env.errors import OutputFolderError, SimScaleError

log = logging.getLogger(__name__)

EPISODES_NAME = "episodes.csv"
SUMMARY_NAME = "summary.json"
ALGOS = ("ppo",)
VEC_ENVS = ("simscale", "subproc", "dummy")
PRIVILEGED_KEYS = ("ego_status", "agents", "route")
DEFAULT_CAMERAS = ("CAM_L0", "CAM_F0", "CAM_R0")  # the env's default front cameras (render.camera.DEFAULT_CHANNELS)
# the episode EPDMS sub-scores logged (metrics.SUB_METRICS minus EC, which needs a previous frame's plan)
EPISODE_METRICS = ("no_at_fault_collisions", "drivable_area_compliance", "driving_direction_compliance",
                   "traffic_light_compliance", "ego_progress", "time_to_collision_within_bound", "lane_keeping",
                   "history_comfort")


class RLError(SimScaleError, ValueError):
    """An RL config or run directory that cannot work."""


@dataclass(frozen=True)
class RLConfig:
    split: str = "mini-navhard"  # a split name or NAVSIM scene_filter YAML
    algo: str = "ppo"
    total_timesteps: int = 32_768  # PPO env steps (decision steps of 0.5 s), summed over the envs
    observation_keys: tuple[str, ...] = PRIVILEGED_KEYS  # any of ego_status, agents, route, bev
    cameras: tuple[str, ...] = ()  # camera channels observed (channel-first uint8 stack); () none
    width: int = 128  # camera image size when cameras are observed
    height: int = 64
    action: str = "residual"  # "residual" (on `expert`'s plan) or "normalized" (simscale_env.envs.ACTION_WRAPPERS)
    expert: str = "pdm_closed"  # the residual's base plan and the behaviour-cloning teacher
    residual_scale: tuple[float, float, float] = (5.0, 2.0, 0.3)  # x m, y m, heading rad at 4 s (residual_scale)
    n_envs: int = 1
    # how n_envs > 1 envs run: "simscale" (default; `simscale_env.envs.SimScaleVectorEnv`: the envs in this process,
    # sharing one set of caches, through `SB3VecEnv`), "subproc" (SB3's SubprocVecEnv: one process per env, one set
    # of caches each; before issue 20 the only choice) or "dummy" (SB3's DummyVecEnv: separate envs in this process)
    vec_env: str = "simscale"
    env_workers: int = 1  # vec_env="simscale": worker processes stepping the envs (SimScaleVectorEnv(workers=))
    seed: int = 0
    learning_rate: float = 3e-4  # SB3 PPO defaults below unless noted
    n_steps: int = 512  # per env and rollout (SB3: 2048)
    batch_size: int = 64
    n_epochs: int = 10
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    # the Gaussian's initial log std (SB3: 0, i.e. std 1 over the whole [-1, 1] box): -1 keeps the first rollouts
    # near the action mapping's centre (the expert's plan for "residual")
    log_std_init: float = -1.0
    net_arch: tuple[int, ...] = (256, 256)
    normalize_observations: bool = True  # VecNormalize's running mean / std of the vector observations
    normalize_reward: bool = True  # VecNormalize's return scaling (the PPO update only; logged returns stay raw)
    bc_init_steps: int = 0  # behaviour-cloning warm start: expert decision steps collected (0: off)
    bc_epochs: int = 20
    bc_learning_rate: float = 1e-3
    episode_steps: int | None = None  # decision steps per episode (None: to the scenario's end)
    plan_scoring: str | None = "non_reactive"  # the reward's TTC / LK / HC terms (None: off, faster)
    checkpoint_every: int | None = None  # timesteps between checkpoints (None: only at the end)
    # torch's intra-op threads while training (restored after): the MLP is tiny, and OpenMP threads competing with
    # the env's numba threads on 2 busy cores made one 64 x 596 x 256 linear layer take 7 ms instead of 0.1 ms
    torch_threads: int = 1
    env_kwargs: dict = field(default_factory=dict)  # any other gym.make kwargs (data_root, agent_mode, ...)

    def __post_init__(self):
        object.__setattr__(self, "observation_keys", tuple(self.observation_keys))
        object.__setattr__(self, "cameras", tuple(self.cameras))
        object.__setattr__(self, "residual_scale", tuple(float(x) for x in self.residual_scale))
        object.__setattr__(self, "net_arch", tuple(int(x) for x in self.net_arch))
        if self.algo not in ALGOS:
            raise RLError(f"algo must be one of {ALGOS}, got {self.algo!r}")
        if self.vec_env not in VEC_ENVS:
            raise RLError(f"vec_env must be one of {VEC_ENVS}, got {self.vec_env!r}")
        from simscale_env.envs import ACTION_WRAPPERS

        if self.action not in ACTION_WRAPPERS:
            raise RLError(f"action must be one of {tuple(ACTION_WRAPPERS)}, got {self.action!r}")
        bad = [k for k in self.observation_keys if k not in ("ego_status", "agents", "route", "bev")]
        if bad or not (self.observation_keys or self.cameras):
            raise RLError(f"observation_keys must be some of ego_status, agents, route, bev (cameras go in "
                          f"`cameras`), got {self.observation_keys!r}")
        for name in ("total_timesteps", "n_envs", "n_steps", "batch_size", "n_epochs", "width", "height",
                     "bc_epochs", "torch_threads", "env_workers"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise RLError(f"{name} must be a positive integer, got {v!r}")
        for name in ("seed", "bc_init_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise RLError(f"{name} must be an integer >= 0, got {v!r}")
        for name in ("learning_rate", "bc_learning_rate", "gamma", "gae_lambda", "clip_range"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
                raise RLError(f"{name} must be a positive number, got {v!r}")
        for name in ("ent_coef", "log_std_init"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise RLError(f"{name} must be a finite number, got {v!r}")
        if self.episode_steps is not None and (isinstance(self.episode_steps, bool) or self.episode_steps < 1):
            raise RLError(f"episode_steps must be a positive integer or None, got {self.episode_steps!r}")
        if self.checkpoint_every is not None and (isinstance(self.checkpoint_every, bool)
                                                  or self.checkpoint_every < 1):
            raise RLError(f"checkpoint_every must be a positive integer or None, got {self.checkpoint_every!r}")
        if not isinstance(self.env_kwargs, dict):
            raise RLError(f"env_kwargs must be a dict, got {type(self.env_kwargs).__name__}")
        owned = sorted(set(self.env_kwargs) & {"observation_keys", "cameras", "action_type"})
        if owned:
            raise RLError(f"env_kwargs may not set {owned}: RLConfig's observation_keys / cameras own them and the "
                          f"RL action wrappers need action_type='plan'")
        if len(self.residual_scale) != 3:
            raise RLError(f"residual_scale must be (x m, y m, heading rad), got {self.residual_scale!r}")

    @property
    def env_observation_keys(self) -> tuple[str, ...]:
        return (("cameras",) if self.cameras else ()) + self.observation_keys

    def to_json(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=_jsonable))

    @classmethod
    def from_json(cls, d: dict) -> "RLConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise RLError(f"unknown RLConfig fields {unknown}")
        return cls(**d)


def _jsonable(o):
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, (np.ndarray, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


# ---------------------------------------------------------------------------------------------- env
def env_spec(cfg: RLConfig) -> tuple[str, dict]:
    """(env id, gym.make kwargs) of a config: the split's env, the plan action, the observations, the episode
    length and plan scoring, the pseudo-experts where the residual or the behaviour cloning read them, then
    `cfg.env_kwargs`."""
    from simscale_env.envs import split_env_spec

    env_id, kw = split_env_spec(cfg.split)
    kw.update(action_type="plan", observation_keys=cfg.env_observation_keys, plan_scoring=cfg.plan_scoring,
              episode_steps=cfg.episode_steps)
    if cfg.cameras:
        kw.update(cameras=cfg.cameras, width=cfg.width, height=cfg.height)
    if cfg.action == "residual" or cfg.bc_init_steps:
        kw["pseudo_experts"] = True
    kw.update(cfg.env_kwargs)
    return env_id, kw


def _action_kwargs(cfg: RLConfig) -> dict:
    return {"residual": {"expert": cfg.expert, "scale": cfg.residual_scale}}.get(cfg.action, {})


def make_rl_env(cfg: RLConfig, rank: int = 0):
    """One env as PPO sees it: the SimScale env, the RL action wrapper, `SB3ObservationWrapper`. `rank` is unused
    (the vec env seeds env i with seed + i); it keeps the factories of a SubprocVecEnv distinct."""
    import gymnasium as gym

    import simscale_env  # noqa: F401  (registration)
    from simscale_env.envs import ACTION_WRAPPERS, SB3ObservationWrapper

    env_id, kw = env_spec(cfg)
    env = gym.make(env_id, disable_env_checker=True, **kw)
    return SB3ObservationWrapper(ACTION_WRAPPERS[cfg.action](env, **_action_kwargs(cfg)))


def make_simscale_vec_env(cfg: RLConfig):
    """SB3's VecEnv over `SimScaleVectorEnv` (SAME_STEP autoreset, SB3's semantics): `cfg.n_envs` sibling envs in
    this process, each wrapped as `make_rl_env` wraps one."""
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode

    import simscale_env  # noqa: F401  (registration)
    from simscale_env.envs import ACTION_WRAPPERS, SB3ObservationWrapper, SB3VecEnv, SimScaleVectorEnv

    env_id, kw = env_spec(cfg)
    kw = {**gym.spec(env_id).kwargs, **kw}  # the id's split unless the spec names another (as gym.make merges them)
    wrap = partial(ACTION_WRAPPERS[cfg.action], **_action_kwargs(cfg))
    venv = SimScaleVectorEnv(cfg.n_envs, autoreset_mode=AutoresetMode.SAME_STEP,
                             wrappers=(wrap, SB3ObservationWrapper), workers=cfg.env_workers, **kw)
    return SB3VecEnv.make(venv)


def _action_wrapper(env):
    from simscale_env.envs import ACTION_WRAPPERS

    e = env
    while not isinstance(e, tuple(ACTION_WRAPPERS.values())):
        e = e.env
    return e


def _image_keys(space) -> list[str]:
    return [k for k, s in space.spaces.items() if s.dtype == np.uint8 and len(s.shape) == 3]


def make_vec_env(cfg: RLConfig):
    """The training vec env: DummyVecEnv (n_envs 1), else as `vec_env` says (`SimScaleVectorEnv` through
    `SB3VecEnv`, SubprocVecEnv or DummyVecEnv), then VecMonitor, then VecNormalize (as configured). The three give
    the same episodes for the same seed (env i seeded seed + i, the same wrappers)."""
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecMonitor, VecNormalize

    if cfg.n_envs == 1 or cfg.vec_env == "dummy":
        venv = DummyVecEnv([partial(make_rl_env, cfg, i) for i in range(cfg.n_envs)])
    elif cfg.vec_env == "subproc":
        venv = SubprocVecEnv([partial(make_rl_env, cfg, i) for i in range(cfg.n_envs)])
    else:
        venv = make_simscale_vec_env(cfg)
    venv = VecMonitor(venv)
    if cfg.normalize_observations or cfg.normalize_reward:
        keys = [k for k in venv.observation_space.spaces if k not in _image_keys(venv.observation_space)]
        venv = VecNormalize(venv, norm_obs=cfg.normalize_observations and bool(keys),
                            norm_reward=cfg.normalize_reward, gamma=cfg.gamma, norm_obs_keys=keys or None)
    return venv


# ---------------------------------------------------------------------------------------------- callbacks
@lru_cache(maxsize=1)
def _callbacks():
    from stable_baselines3.common.callbacks import BaseCallback

    class EpdmsCallback(BaseCallback):
        """Reads the episodes that just ended from `self.locals["infos"]` / `["dones"]` (SB3 calls `_on_step` before
        it fills its episode buffer; `info["episode"]` is the Monitor's, `info["epdms_episode"]` the env's) and
        logs their EPDMS and sub-scores: `rollout/ep_epdms_mean` and `rollout/ep_<sub-score>_mean` through SB3's
        logger (means over the episodes finished in the rollout) and a row each in `csv_path`."""

        COLUMNS = ("timesteps", "env", "scenario_token", "perturbed", "epdms", *EPISODE_METRICS, "r", "l")

        def __init__(self, csv_path: str | Path | None = None, progress: bool = False, verbose: int = 0):
            super().__init__(verbose)
            self.csv_path = None if csv_path is None else Path(csv_path)
            self.progress = progress
            self.episodes: list[dict] = []
            self._file = self._writer = None
            self._rollout_start = 0

        def _on_training_start(self) -> None:
            if self.csv_path is not None:
                new = not self.csv_path.exists()
                self._file = open(self.csv_path, "a", newline="")
                self._writer = csv.DictWriter(self._file, self.COLUMNS)
                if new:
                    self._writer.writeheader()

        def _on_rollout_start(self) -> None:
            self._rollout_start = len(self.episodes)

        def _on_step(self) -> bool:
            for i, (done, info) in enumerate(zip(self.locals["dones"], self.locals["infos"])):
                if not done or "epdms_episode" not in info:
                    continue
                ep = info["epdms_episode"]
                row = {"timesteps": int(self.num_timesteps), "env": i,
                       "scenario_token": str(info.get("scenario_token", "")),
                       "perturbed": bool(info.get("perturbed", False)), "epdms": float(ep["epdms"]),
                       "r": float(ep["r"]), "l": int(ep["l"])}
                self.logger.record_mean("rollout/ep_epdms_mean", row["epdms"])
                for m in EPISODE_METRICS:
                    v = ep.get(m)
                    row[m] = float("nan") if v is None else float(v)
                    if v is not None and math.isfinite(float(v)):
                        self.logger.record_mean(f"rollout/ep_{m}_mean", float(v))
                self.episodes.append(row)
                if self._writer is not None:
                    self._writer.writerow(row)
                    self._file.flush()
            return True

        def _on_rollout_end(self) -> None:
            new = self.episodes[self._rollout_start:]
            if new:
                level = logging.INFO if self.progress else logging.DEBUG
                log.log(level, "PPO %d steps: %d episodes, EPDMS %.3f (NC %.2f DAC %.2f EP %.2f)", self.num_timesteps,
                        len(new), np.mean([e["epdms"] for e in new]),
                        np.mean([e["no_at_fault_collisions"] for e in new]),
                        np.mean([e["drivable_area_compliance"] for e in new]),
                        np.mean([e["ego_progress"] for e in new]))

        def _on_training_end(self) -> None:
            if self._file is not None:
                self._file.close()
                self._file = self._writer = None

    class CheckpointCallback(BaseCallback):
        """Saves the model (atomically) every `every` timesteps."""

        def __init__(self, save, every: int):
            super().__init__(0)
            self.save, self.every, self._next = save, int(every), int(every)

        def _on_step(self) -> bool:
            if self.num_timesteps >= self._next:
                self.save()
                self._next += self.every
            return True

    for c in (EpdmsCallback, CheckpointCallback):
        c.__qualname__, c.__module__ = c.__name__, __name__
    return EpdmsCallback, CheckpointCallback


def __getattr__(name):  # SB3 imports lazily: `training.rl` stays light to import (the loader registers at import)
    if name in ("EpdmsCallback", "CheckpointCallback"):
        return dict(zip(("EpdmsCallback", "CheckpointCallback"), _callbacks()))[name]
    raise AttributeError(name)


# ---------------------------------------------------------------------------------------------- files
def _atomic(path: Path, write) -> Path:
    from simscale_env.data.atomic import atomic_write_path

    return atomic_write_path(path, write, suffix=".tmp" + path.suffix)


def _write_json(path: Path, obj) -> Path:
    return _atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=1, default=_jsonable)))


def _versions() -> dict:
    import gymnasium  # noqa: F401
    import stable_baselines3  # noqa: F401
    import torch  # noqa: F401

    from .runs import versions

    return versions("torch", "stable_baselines3", "gymnasium")


def _action_mapping(cfg: RLConfig) -> dict:
    from simscale_env.envs import plan_bounds, residual_scale

    if cfg.action == "normalized":
        low, high = plan_bounds()
        return {"type": "normalized", "low": low.tolist(), "high": high.tolist()}
    return {"type": "residual", "expert": cfg.expert, "scale": residual_scale(cfg.residual_scale).tolist()}


def _save_norm(venv, path: Path) -> None:
    from stable_baselines3.common.vec_env import VecNormalize

    arrays = {}
    if isinstance(venv, VecNormalize) and venv.norm_obs:
        for k, rms in venv.obs_rms.items():
            arrays[f"mean/{k}"] = np.asarray(rms.mean, np.float64)
            arrays[f"var/{k}"] = np.asarray(rms.var, np.float64)
        arrays["clip_obs"] = np.float64(venv.clip_obs)
        arrays["epsilon"] = np.float64(venv.epsilon)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    _atomic(path, write)


# ---------------------------------------------------------------------------------------------- behaviour cloning
def behaviour_clone(model, cfg: RLConfig, venv) -> dict:
    """The warm start: `cfg.bc_init_steps` decision steps of one env driven by `cfg.expert`, its plans mapped into
    the action space; the policy's mean regressed on them (MSE, Adam, `cfg.bc_epochs` epochs, minibatches of
    `cfg.batch_size`), the observations normalised by `venv`'s statistics updated with them. Returns the sample
    count and the MSE before and after."""
    import torch
    from stable_baselines3.common.vec_env import VecNormalize

    env = make_rl_env(cfg)
    wrapper = _action_wrapper(env)
    obs_list, acts = [], []
    obs, info = env.reset(seed=cfg.seed + 1_000_003)  # not the seeds PPO's envs start from
    for _ in range(cfg.bc_init_steps):
        a = wrapper.reverse_action(info["pseudo_expert"][cfg.expert])
        obs_list.append(obs)
        acts.append(a)
        obs, _, term, trunc, info = env.step(a)
        if term or trunc:
            obs, info = env.reset()
    env.close()
    batch = {k: np.stack([o[k] for o in obs_list]) for k in obs_list[0]}
    if isinstance(venv, VecNormalize) and venv.norm_obs:
        for k, rms in venv.obs_rms.items():
            rms.update(batch[k])
        batch = venv.normalize_obs(batch)
    target = torch.as_tensor(np.stack(acts), dtype=torch.float32)
    policy = model.policy
    policy.set_training_mode(True)
    obs_t, _ = policy.obs_to_tensor(batch)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.bc_learning_rate)

    def mse() -> float:
        with torch.no_grad():
            return float(((policy.get_distribution(obs_t).distribution.mean - target) ** 2).mean())

    before = mse()
    n = len(target)
    for _ in range(cfg.bc_epochs):
        for idx in torch.randperm(n, generator=gen).split(cfg.batch_size):
            sub = {k: v[idx] for k, v in obs_t.items()}
            loss = ((policy.get_distribution(sub).distribution.mean - target[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    policy.set_training_mode(False)
    after = mse()
    log.info("behaviour cloning: %d expert steps, action MSE %.4f -> %.4f", n, before, after)
    return {"samples": n, "mse_before": before, "mse_after": after}


# ---------------------------------------------------------------------------------------------- training
def train_rl(cfg: RLConfig, out_dir: str | Path, progress: bool = True, callback=None) -> dict:
    """Train SB3 PPO on the env as `cfg` says into the run directory `out_dir` (layout in the module docstring) and
    return the summary (also `summary.json`): timesteps, episodes, wall time, env steps per second, the mean episode
    EPDMS of the first and last 10 % of the episodes, the checkpoint path and, with a warm start, its MSEs.
    `callback`: an extra SB3 callback (or list) run alongside. A pure function of `cfg` for the same data and
    versions (seeded envs, policy and sampling; `torch_threads` fixes the float summation order). n_envs > 1 with
    vec_env="subproc" runs the envs in SubprocVecEnv workers (SB3's default start method, forkserver): a script
    calling this needs the `if __name__ == "__main__":` guard."""
    import torch

    from .runs import check_run_folder, config_diff

    out = Path(out_dir)
    conf_path = out / CONFIG_NAME
    old = check_run_folder(out, CONFIG_NAME, "a train-rl run")
    if old is not None:
        # where the envs run (vec_env, env_workers) changes no result: not part of a run's identity
        diff = config_diff(_identity(old.get("config") or {}), _identity(cfg.to_json()))
        if old.get("format") != FORMAT or diff:
            raise OutputFolderError(out, f"holds a run of another config ({diff or 'format'}); use another --out")
        if (out / SUMMARY_NAME).exists():
            log.info("%s: finished run of the same config, reused", out)
            return json.loads((out / SUMMARY_NAME).read_text())
        for stale in (EPISODES_NAME,):  # an interrupted run starts again
            (out / stale).unlink(missing_ok=True)
    from simscale_env.envs import split_tokens

    env_id, kw = env_spec(cfg)
    split_tokens(cfg.split, cfg.env_kwargs)  # an unknown split is one error before anything is written
    out.mkdir(parents=True, exist_ok=True)
    _write_json(conf_path, {"format": FORMAT, "config": cfg.to_json(), "env_id": env_id, "env_kwargs": kw,
                            "action_mapping": _action_mapping(cfg), "versions": _versions()})
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.torch_threads)
    try:
        return _train(cfg, out, progress, callback, t0)
    finally:
        torch.set_num_threads(threads)


EXECUTION_FIELDS = ("vec_env", "env_workers")  # where the envs run: the same episodes either way (tested)


def _identity(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in EXECUTION_FIELDS}


def _train(cfg: RLConfig, out: Path, progress: bool, callback, t0: float) -> dict:
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import configure

    EpdmsCallback, CheckpointCallback = _callbacks()
    venv = make_vec_env(cfg)
    model = PPO("MultiInputPolicy", venv, learning_rate=cfg.learning_rate, n_steps=cfg.n_steps,
                batch_size=cfg.batch_size, n_epochs=cfg.n_epochs, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda,
                clip_range=cfg.clip_range, ent_coef=cfg.ent_coef, seed=cfg.seed, device="cpu", verbose=0,
                policy_kwargs={"log_std_init": cfg.log_std_init, "net_arch": list(cfg.net_arch)})
    model.set_logger(configure(str(out / "logs"), ["csv", "tensorboard"]))
    bc = behaviour_clone(model, cfg, venv) if cfg.bc_init_steps else None

    def save():
        _atomic(out / MODEL_NAME, lambda tmp: model.save(tmp))
        _save_norm(venv, out / NORM_NAME)

    epdms_cb = EpdmsCallback(out / EPISODES_NAME, progress=progress)
    cbs = [epdms_cb]
    if cfg.checkpoint_every:
        cbs.append(CheckpointCallback(save, cfg.checkpoint_every))
    if callback is not None:
        cbs.extend(callback if isinstance(callback, (list, tuple)) else [callback])
    t1 = time.perf_counter()
    model.learn(cfg.total_timesteps, callback=cbs, log_interval=1, progress_bar=False)
    learn_s = time.perf_counter() - t1
    save()
    venv.close()
    eps = epdms_cb.episodes
    k = max(1, len(eps) // 10)
    summary = {"out_dir": str(out), "checkpoint": str(out / MODEL_NAME), "algo": cfg.algo, "action": cfg.action,
               "timesteps": int(model.num_timesteps), "episodes": len(eps), "learn_s": round(learn_s, 2),
               "wall_s": round(time.perf_counter() - t0, 2),
               "steps_per_s": round(model.num_timesteps / learn_s, 1) if learn_s > 0 else None,
               "ep_epdms_mean": float(np.mean([e["epdms"] for e in eps])) if eps else None,
               "ep_epdms_first": float(np.mean([e["epdms"] for e in eps[:k]])) if eps else None,
               "ep_epdms_last": float(np.mean([e["epdms"] for e in eps[-k:]])) if eps else None,
               "behaviour_cloning": bc}
    _write_json(out / SUMMARY_NAME, summary)
    log.info("PPO done: %d steps in %.0f s (%.1f steps/s), %d episodes, EPDMS first %s last %s -> %s",
             summary["timesteps"], learn_s, summary["steps_per_s"] or 0, len(eps), summary["ep_epdms_first"],
             summary["ep_epdms_last"], summary["checkpoint"])
    return summary


# ---------------------------------------------------------------------------------------------- the policy
# ---------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The `simscale train-rl` arguments."""
    d = RLConfig()
    parser.add_argument("--algo", choices=ALGOS, default=d.algo, help="the RL algorithm (ppo)")
    parser.add_argument("--split", default=d.split, help="split name or NAVSIM scene_filter YAML")
    parser.add_argument("--timesteps", type=int, default=d.total_timesteps, help="PPO env steps in all")
    parser.add_argument("--out", required=True, help="run directory (ppo.zip, rl_config.json, episodes.csv, logs/)")
    parser.add_argument("--cameras", nargs="*", default=None, metavar="CHANNEL",
                        help=f"observe cameras (no channel: {' '.join(DEFAULT_CAMERAS)})")
    parser.add_argument("--bev", action="store_true", help="observe the bird's-eye raster too")
    parser.add_argument("--action", choices=("residual", "normalized"), default=d.action,
                        help="residual on the pseudo-expert's plan (default) or a normalised [-1, 1] plan")
    parser.add_argument("--expert", default=d.expert, choices=("pdm_closed", "recovery"),
                        help="the residual's base plan and the behaviour-cloning teacher (default pdm_closed)")
    parser.add_argument("--bc-init-steps", type=int, default=d.bc_init_steps,
                        help="behaviour-cloning warm start: expert steps collected (0: off)")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of PPO and the env resets (default 0)")
    parser.add_argument("--n-envs", type=int, default=d.n_envs, help="parallel envs (default 1)")
    parser.add_argument("--vec-env", choices=VEC_ENVS, default=d.vec_env,
                        help="how n-envs > 1 envs run: simscale (SimScaleVectorEnv, one process; default), subproc "
                             "(SubprocVecEnv), dummy (DummyVecEnv)")
    parser.add_argument("--env-workers", type=int, default=d.env_workers,
                        help="--vec-env simscale: worker processes stepping the envs (default 1: in this process)")
    parser.add_argument("--n-steps", type=int, default=d.n_steps, help="steps per env and rollout")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="PPO minibatch size (default 64)")
    parser.add_argument("--learning-rate", type=float, default=d.learning_rate, help="PPO learning rate (default 3e-4)")
    parser.add_argument("--episode-steps", type=int, default=None, help="decision steps per episode")
    parser.add_argument("--no-plan-scoring", action="store_true", help="no TTC/LK/HC reward terms (faster)")
    parser.add_argument("--checkpoint-every", type=int, default=None, help="timesteps between checkpoints")
    parser.add_argument("--env-kwargs", type=json.loads, default={}, metavar="JSON",
                        help='other gym.make kwargs, e.g. \'{"agent_mode": "non_reactive"}\'')
    return parser


def config_from_args(args) -> RLConfig:
    keys = PRIVILEGED_KEYS + (("bev",) if getattr(args, "bev", False) else ())
    cams = () if args.cameras is None else (tuple(args.cameras) or DEFAULT_CAMERAS)
    return RLConfig(split=args.split, algo=args.algo, total_timesteps=args.timesteps, observation_keys=keys,
                    cameras=cams, action=args.action, expert=args.expert, bc_init_steps=args.bc_init_steps,
                    seed=args.seed, n_envs=args.n_envs, vec_env=args.vec_env, env_workers=args.env_workers,
                    n_steps=args.n_steps,
                    batch_size=args.batch_size,
                    learning_rate=args.learning_rate, episode_steps=args.episode_steps,
                    plan_scoring=None if args.no_plan_scoring else RLConfig.plan_scoring,
                    checkpoint_every=args.checkpoint_every, env_kwargs=dict(args.env_kwargs or {}))


def run_from_args(args) -> dict:
    """`simscale train-rl`: train into --out; returns the summary (summary.json) the CLI prints as one JSON line."""
    return json.loads(json.dumps(train_rl(config_from_args(args), args.out, progress=True), default=_jsonable))
