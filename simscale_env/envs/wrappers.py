"""Wrappers: observations for stable-baselines3's `MultiInputPolicy` and RL action types.

Action types in the manner of HighwayEnv's `highway_env/envs/common/action.py` (one small class per type, each with
its own space), for the plan action (`action_type="plan"`: 8 poses (x, y, heading) 0.5 s apart in the current
rear-axle frame):

- `NormalizedPlanAction(env)`: Box(-1, 1, (24,)) mapped affinely onto the plan within per-pose bounds
  (`plan_bounds`: what a driving plan uses over 4 s, far tighter than the env's PLAN_LOW / PLAN_HIGH); the zero
  action is the bounds' midpoint, straight ahead at 10 m/s.
- `ResidualExpertAction(env, expert="pdm_closed")`: Box(-1, 1, (24,)) added, scaled (`residual_scale`), to the
  pseudo-expert's plan of the current state; the zero action is the expert's plan exactly.

stable-baselines3's RL tips (rl_tips.md; reference navsim-agents-and-planners.md section 6): a Gaussian policy starts
at mean 0, std 1 and PPO clips its samples to the bounds, so the action space is a symmetric [-1, 1] Box and the
rescaling happens here. Both map back with `reverse_action(plan)` (clipped to [-1, 1]): the expert's action in the
wrapped space, e.g. for a behaviour-cloning warm start (`training.rl`). The mappings are also plain functions
(`normalized_to_plan`, `residual_to_plan`, `sb3_observation`) for a policy that acts outside the wrappers.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

PLAN_POSES = 8  # NAVSIM's plan: 8 poses 0.5 s apart (navsim/agents/abstract_agent.py TrajectorySampling(4 s, 0.5 s))
PLAN_INTERVAL_S = 0.5
PLAN_TIMES = PLAN_INTERVAL_S * np.arange(1, PLAN_POSES + 1)  # 0.5 ... 4.0 s
ACTION_SIZE = PLAN_POSES * 3


def sb3_observation(observation: dict) -> dict:
    """The env's observation as `SB3ObservationWrapper` gives it: cameras [n, H, W, 3] -> [3n, H, W], BEV
    [S, S, 5] -> [5, S, S] (channel-first uint8), vector keys unchanged."""
    out = dict(observation)
    if "cameras" in out:
        cams = out["cameras"]
        out["cameras"] = np.ascontiguousarray(np.transpose(cams, (0, 3, 1, 2)).reshape(-1, *cams.shape[1:3]))
    if "bev" in out:
        out["bev"] = np.ascontiguousarray(np.transpose(out["bev"], (2, 0, 1)))
    return out


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
        return sb3_observation(observation)


# ------------------------------------------------------------------------------------------------ normalised plan
def plan_bounds(max_speed: float = 20.0, max_reverse: float = 0.5, lateral_m: tuple[float, float] = (0.5, 1.5),
                heading_rad: tuple[float, float] = (0.3, 0.45)) -> tuple[np.ndarray, np.ndarray]:
    """Per-pose bounds (low, high) [8, 3] of a driving plan over 4 s, pose i at t_i = 0.5 (i + 1) s:

    - x in [-max_reverse, max_speed * t_i]: forward up to `max_speed` (20 m/s = 72 km/h; the mini dataset's logged
      humans reach 16 m/s, perturbed starts 1.5x that briefly), standing still (0) inside;
    - y in +-(a + b t_i^2) m with (a, b) = `lateral_m`: +-0.9 m at 0.5 s, +-24.5 m at 4 s (the mini logs' tightest
      turns reach 1.4 m at 1 s and 20.8 m at 4 s);
    - heading in +-min(pi, a + b t_i) rad with (a, b) = `heading_rad`: +-0.53 rad at 0.5 s (a 20 degree perturbed
      start's correction plus a turn's first yaw), +-2.1 rad at 4 s (a right-angle turn reaches 1.53).

    All of it lies inside the env's plan bounds (PLAN_LOW / PLAN_HIGH). The midpoint, the zero action of
    `NormalizedPlanAction`, is straight ahead at (max_speed - max_reverse / t) / 2, about 10 m/s."""
    t = PLAN_TIMES
    a, b = lateral_m
    ha, hb = heading_rad
    lat = a + b * t ** 2
    head = np.minimum(np.pi, ha + hb * t)
    low = np.stack([np.full_like(t, -max_reverse), -lat, -head], -1)
    high = np.stack([max_speed * t, lat, head], -1)
    if not np.all(high > low):
        raise ValueError(f"plan bounds must have high > low everywhere, got low {low.tolist()} high {high.tolist()}")
    return low.astype(np.float64), high.astype(np.float64)


def normalized_to_plan(action, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """[-1, 1]^24 (clipped) -> plan [8, 3] float32 = low + (a + 1) / 2 * (high - low)."""
    a = np.clip(np.asarray(action, np.float64).reshape(PLAN_POSES, 3), -1.0, 1.0)
    return (low + 0.5 * (a + 1.0) * (high - low)).astype(np.float32)


def plan_to_normalized(plan, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The inverse of `normalized_to_plan`: plan [8, 3] -> action [24] float32, clipped to [-1, 1]."""
    p = np.asarray(plan, np.float64).reshape(PLAN_POSES, 3)
    return np.clip(2.0 * (p - low) / (high - low) - 1.0, -1.0, 1.0).astype(np.float32).ravel()


def _plan_env(env: gym.Env, who: str) -> None:
    if getattr(env.unwrapped, "config", None) is not None and env.unwrapped.config.action_type != "plan":
        raise ValueError(f"{who} needs the plan action (action_type='plan'), the env has action_type="
                         f"{env.unwrapped.config.action_type!r}")
    if tuple(env.action_space.shape) != (PLAN_POSES, 3):
        raise ValueError(f"{who} needs an env whose action is a plan [8, 3], got action space {env.action_space}")


def _clip_to(plan: np.ndarray, space: spaces.Box) -> np.ndarray:
    return np.clip(plan, space.low, space.high).astype(np.float32)


class NormalizedPlanAction(gym.ActionWrapper):
    """Action Box(-1, 1, (24,)) -> plan [8, 3] = low + (a + 1) / 2 (high - low), row-major (pose 0's x, y, heading,
    then pose 1's ...). `low`, `high`: [8, 3] per-pose bounds, default `plan_bounds()` (x in [-0.5, 20 t] m,
    y in +-(0.5 + 1.5 t^2) m, heading in +-(0.3 + 0.45 t) rad at t = 0.5 ... 4 s). -1 and 1 give the bounds."""

    pure_action = True  # action() has no side effects (SimScaleVectorEnv may call it ahead of step)

    def __init__(self, env: gym.Env, low=None, high=None):
        super().__init__(env)
        _plan_env(env, "NormalizedPlanAction")
        d_low, d_high = plan_bounds()
        self.low = np.broadcast_to(np.asarray(d_low if low is None else low, np.float64), (PLAN_POSES, 3)).copy()
        self.high = np.broadcast_to(np.asarray(d_high if high is None else high, np.float64), (PLAN_POSES, 3)).copy()
        if not (np.all(np.isfinite(self.low)) and np.all(np.isfinite(self.high)) and np.all(self.high > self.low)):
            raise ValueError("NormalizedPlanAction bounds must be finite with high > low for every pose and axis")
        sp = env.action_space
        if np.any(self.low < sp.low - 1e-6) or np.any(self.high > sp.high + 1e-6):
            raise ValueError(f"NormalizedPlanAction bounds must lie within the env's plan bounds (low "
                             f"{sp.low.min(0).tolist()}, high {sp.high.max(0).tolist()})")
        self.action_space = spaces.Box(-1.0, 1.0, (ACTION_SIZE,), np.float32)

    def action(self, action) -> np.ndarray:
        return _clip_to(normalized_to_plan(action, self.low, self.high), self.env.action_space)

    def reverse_action(self, plan) -> np.ndarray:
        return plan_to_normalized(plan, self.low, self.high)


# ------------------------------------------------------------------------------------------------ residual
def residual_scale(scale=(5.0, 2.0, 0.3)) -> np.ndarray:
    """Per-pose residual scales [8, 3]: `scale` as (x m, y m, heading rad) is the largest residual at the plan's last
    pose (4 s), pose i's is scale * t_i / 4 s (a bounded offset of speed, lateral speed and yaw rate: +-1.25 m/s,
    +-0.5 m/s, +-0.075 rad/s by default); an [8, 3] array is taken as it is."""
    s = np.asarray(scale, np.float64)
    if s.shape == (3,):
        s = s[None] * (PLAN_TIMES / PLAN_TIMES[-1])[:, None]
    if s.shape != (PLAN_POSES, 3) or not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError(f"residual scale must be 3 non-negative numbers (x m, y m, heading rad at 4 s) or an [8, 3] "
                         f"array, got {np.asarray(scale).tolist()}")
    return s


def residual_to_plan(action, expert_plan, scale: np.ndarray) -> np.ndarray:
    """[-1, 1]^24 (clipped) -> the expert's plan [8, 3] + scale * action (float32; a zero action is the expert's plan
    exactly)."""
    a = np.clip(np.asarray(action, np.float64).reshape(PLAN_POSES, 3), -1.0, 1.0)
    return (np.asarray(expert_plan, np.float64) + scale * a).astype(np.float32)


class ResidualExpertAction(gym.ActionWrapper):
    """Action Box(-1, 1, (24,)) -> info["pseudo_expert"][expert] of the current state (kept from the last reset or
    step) + `residual_scale(scale)` * action, clipped to the env's plan bounds. The zero action is the expert's plan
    exactly. Needs the env's pseudo-experts (`pseudo_experts=True`, the default)."""

    pure_action = True  # action() has no side effects (SimScaleVectorEnv may call it ahead of step)

    def __init__(self, env: gym.Env, expert: str = "pdm_closed", scale=(5.0, 2.0, 0.3)):
        super().__init__(env)
        _plan_env(env, "ResidualExpertAction")
        cfg = getattr(env.unwrapped, "config", None)
        if cfg is not None and not cfg.pseudo_experts:
            raise ValueError("ResidualExpertAction needs the env's pseudo-experts (pseudo_experts=True)")
        self.expert = str(expert)
        self.scale = residual_scale(scale)
        self.expert_plan: np.ndarray | None = None
        self.action_space = spaces.Box(-1.0, 1.0, (ACTION_SIZE,), np.float32)

    def _keep(self, info: dict) -> None:
        experts = info.get("pseudo_expert")
        if experts is None or self.expert not in experts:
            raise KeyError(f"ResidualExpertAction: info['pseudo_expert'] has no {self.expert!r} plan (known: "
                           f"{sorted(experts or {})})")
        self.expert_plan = np.asarray(experts[self.expert], np.float32).copy()

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._keep(info)
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(self.action(action))
        if not (terminated or truncated):
            self._keep(info)
        return obs, reward, terminated, truncated, info

    def action(self, action) -> np.ndarray:
        if self.expert_plan is None:
            raise RuntimeError("call reset() before step()")
        return _clip_to(residual_to_plan(action, self.expert_plan, self.scale), self.env.action_space)

    def reverse_action(self, plan) -> np.ndarray:
        if self.expert_plan is None:
            raise RuntimeError("call reset() first")
        p = np.asarray(plan, np.float64).reshape(PLAN_POSES, 3)
        d = p - self.expert_plan
        a = np.divide(d, self.scale, out=np.zeros_like(d), where=self.scale > 0)
        return np.clip(a, -1.0, 1.0).astype(np.float32).ravel()


ACTION_WRAPPERS = {"normalized": NormalizedPlanAction, "residual": ResidualExpertAction}
