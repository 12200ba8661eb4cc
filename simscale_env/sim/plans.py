"""Plans (poses in the current rear-axle frame) to reference pose sequences for the tracker.

NAVSIM's `transform_trajectory` + `get_trajectory_as_array` (navsim/evaluate/pdm_score.py): the plan's poses are made
global, the initial ego state is prepended, and the sequence is interpolated in time (linearly in x, y; heading
unwrapped, interpolated, wrapped) at `dt` over the horizon, with nuPlan's integer-microsecond time points.
"""

from __future__ import annotations

import numpy as np

from .state import HEADING, X, Y, principal_value


def plan_times_us(t0_us: int, horizon_s: float, interval_s: float) -> np.ndarray:
    """nuPlan's `_get_fixed_timesteps` as TimePoint(int(t * 1e6)): the times of the plan's poses."""
    t0_s = t0_us * 1e-6
    ts = np.arange(0.0, horizon_s, interval_s) + interval_s + t0_s
    return np.array([int(t * 1e6) for t in ts], dtype=np.int64)


def sample_times_us(t0_us: int, horizon_s: float, dt: float) -> np.ndarray:
    """The times `get_trajectory_as_array` samples: arange(0, horizon + dt, dt) + t0, truncated to microseconds."""
    ts = np.arange(0.0, horizon_s + dt, dt) + t0_us * 1e-6
    n = int(round(horizon_s / dt)) + 1
    return np.array([int(t * 1e6) for t in ts[:n]], dtype=np.int64)


def local_to_global_poses(local: np.ndarray, origin) -> np.ndarray:
    """Relative poses [..., 3] in the frame `origin` (x, y, heading) to global (nuPlan relative_to_absolute_poses)."""
    ox, oy, oh = float(origin[0]), float(origin[1]), float(origin[2])
    c, s = np.cos(oh), np.sin(oh)
    out = np.empty_like(local, dtype=np.float64)
    out[..., 0] = ox + c * local[..., 0] - s * local[..., 1]
    out[..., 1] = oy + s * local[..., 0] + c * local[..., 1]
    rc, rs = np.cos(local[..., 2]), np.sin(local[..., 2])
    out[..., 2] = np.arctan2(s * rc + c * rs, c * rc - s * rs)
    return out


def interpolate_poses(times_us: np.ndarray, poses: np.ndarray, query_us: np.ndarray) -> np.ndarray:
    """Linear interpolation of x, y and of the unwrapped heading (then wrapped): nuPlan's InterpolatedTrajectory.

    `poses` [..., K, 3] at `times_us` [K]; returns [..., Q, 3].
    """
    t = np.asarray(times_us, dtype=np.float64)
    q = np.asarray(query_us, dtype=np.float64)
    poses = np.asarray(poses, dtype=np.float64)
    if len(t) < 2 or np.any(np.diff(t) <= 0):
        raise ValueError(f"times_us must be strictly increasing with at least 2 entries, got {np.asarray(times_us)}")
    if poses.shape[-2:] != (len(t), 3):
        raise ValueError(f"poses must have shape [..., {len(t)}, 3] to match times_us, got {poses.shape}")
    if not np.all(np.isfinite(poses)):
        raise ValueError("poses contains NaN or infinite values")
    idx = np.clip(np.searchsorted(t, q, side="right") - 1, 0, len(t) - 2)
    t_lo, t_hi = t[idx], t[idx + 1]
    lin = poses[..., :2]
    ang = np.unwrap(poses[..., 2], axis=-1)
    lo, hi = lin[..., idx, :], lin[..., idx + 1, :]
    xy = (hi - lo) / (t_hi - t_lo)[:, None] * (q - t_lo)[:, None] + lo
    a_lo, a_hi = ang[..., idx], ang[..., idx + 1]
    h = (a_hi - a_lo) / (t_hi - t_lo) * (q - t_lo) + a_lo
    return np.concatenate([xy, principal_value(h)[..., None]], axis=-1)


def plan_to_reference(plan_local, initial_state, t0_us: int, *, plan_interval_s: float = 0.5,
                      horizon_s: float | None = None, dt: float = 0.1) -> np.ndarray:
    """Plans [N, K, 3] (or [K, 3]) in the rear-axle frame of `initial_state` -> reference poses [N, T, 3] at `dt`
    (T = horizon/dt + 1; the horizon defaults to K * plan_interval, 4 s for NAVSIM's 8 poses at 0.5 s)."""
    plan = np.asarray(plan_local, dtype=np.float64)
    single = plan.ndim == 2
    if single:
        plan = plan[None]
    if plan.ndim != 3 or plan.shape[-1] != 3 or plan.shape[1] < 1:
        raise ValueError(f"plan must have shape [N, K, 3] or [K, 3] (x, y, heading), got {np.shape(plan_local)}")
    if not np.all(np.isfinite(plan)):
        raise ValueError("plan contains NaN or infinite values")
    init = np.asarray(initial_state, dtype=np.float64)
    K = plan.shape[1]
    horizon = K * plan_interval_s if horizon_s is None else horizon_s
    origin = (init[X], init[Y], init[HEADING])
    glob = local_to_global_poses(plan, origin)
    times = np.concatenate([[int(t0_us)], plan_times_us(t0_us, K * plan_interval_s, plan_interval_s)])
    poses = np.concatenate([np.broadcast_to(np.array(origin), (len(plan), 1, 3)), glob], axis=1)
    q = np.clip(sample_times_us(t0_us, horizon, dt), times[0], times[-1])
    ref = interpolate_poses(times, poses, q)
    return ref[0] if single else ref
