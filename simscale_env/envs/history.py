"""The ego's past in the env: the poses `obs["ego_status"]` reads and the states EPDMS's history comfort (HC)
prepends to a submitted plan.

NAVSIM's scene has 4 history frames at 2 Hz, the last one the current frame (`navsim/common/dataclasses.py`
`SceneFilter.num_history_frames = 4`, `NAVSIM_INTERVAL_LENGTH = 0.5`), so its past reaches 1.5 s back; its metric
cache gives HC the human past over the same 1.5 s (`metric_cache_processor.py`:
`scenario.get_ego_past_trajectory(0, 1.5)`). The env keeps the ego's last 1.5 s as full states, 0.1 s apart:

- at a logged start, the logged states (`logged_past_states`);
- at a perturbed start, the perturbed past the ego drove in: `sim.perturb.perturbed_past` gives its poses, and
  `states_from_poses` derives the kinematics HC reads (speeds, accelerations, yaw rate and yaw acceleration) from them;
- after each step, the realised states.
"""

from __future__ import annotations

import numpy as np

from ..metrics.epdms import human_past_for_hc
from ..sim.state import (ACCELERATION_X, ACCELERATION_Y, ANGULAR_ACCELERATION, ANGULAR_VELOCITY, HEADING, STATE_SIZE,
                         VELOCITY_X, VELOCITY_Y, X, Y, make_state)

# navsim/common/dataclasses.py: num_history_frames 4 at NAVSIM_INTERVAL_LENGTH 0.5 s (the current frame included);
# metric_cache_processor.py: get_ego_past_trajectory(0, 1.5)
PAST_S = 1.5


def logged_past_states(scenario, frame: int, n: int) -> np.ndarray:
    """The logged ego states [n', 11] of the `n` frames before `frame` (oldest first; fewer where the scenario's
    history is shorter)."""
    e = scenario.ego
    lo = max(0, int(frame) - int(n))
    rows = [make_state(e.x[k], e.y[k], e.heading[k], velocity=e.vx[k], acceleration=e.ax[k], velocity_y=e.vy[k],
                       acceleration_y=e.ay[k], angular_velocity=e.yaw_rate[k]) for k in range(lo, int(frame))]
    return np.array(rows).reshape(-1, STATE_SIZE)


def states_from_poses(poses: np.ndarray, now: np.ndarray, dt: float) -> np.ndarray:
    """Full states [n, 11] for past poses [n, 3] (x, y, heading, `dt` apart, oldest first) that lead into the state
    `now` [11]: the kinematics of the poses themselves, by central differences over the poses and now's pose
    (velocity in the heading frame, its derivative as acceleration, the heading's derivative as yaw rate and its
    derivative as yaw acceleration; lateral acceleration v * yaw rate, the kinematic bicycle's)."""
    poses = np.asarray(poses, dtype=np.float64).reshape(-1, 3)
    n = len(poses)
    if n == 0:
        return np.zeros((0, STATE_SIZE))
    seq = np.vstack([poses, np.asarray(now, dtype=np.float64)[[X, Y, HEADING]]])
    h = np.unwrap(seq[:, 2])
    gx, gy, gh = np.gradient(seq[:, 0], dt), np.gradient(seq[:, 1], dt), np.gradient(h, dt)  # >= 2 points
    c, s = np.cos(seq[:, 2]), np.sin(seq[:, 2])
    v_lon = c * gx + s * gy
    v_lat = -s * gx + c * gy
    acc = np.gradient(v_lon, dt)
    yaw_acc = np.gradient(gh, dt)
    out = np.zeros((n, STATE_SIZE))
    out[:, X], out[:, Y], out[:, HEADING] = poses[:, 0], poses[:, 1], poses[:, 2]
    out[:, VELOCITY_X], out[:, VELOCITY_Y] = v_lon[:n], v_lat[:n]
    out[:, ACCELERATION_X] = acc[:n]
    out[:, ACCELERATION_Y] = v_lon[:n] * gh[:n]
    out[:, ANGULAR_VELOCITY] = gh[:n]
    out[:, ANGULAR_ACCELERATION] = yaw_acc[:n]
    return out


def hc_past(past: np.ndarray, now: np.ndarray, time_us: int, dt: float) -> np.ndarray:
    """The past states HC prepends, sampled as NAVSIM samples the human past (`metrics.epdms.human_past_for_hc`:
    every 0.1 s from its start, its last sample and its end left out) from the ego's past states [H, 11] (`dt`
    apart) and the current state. Empty (HC then judges the plan alone) only when there is no past at all."""
    past = np.asarray(past, dtype=np.float64).reshape(-1, STATE_SIZE)
    if len(past) == 0:
        return np.zeros((0, STATE_SIZE))
    seq = np.vstack([past, np.asarray(now, dtype=np.float64)[None]])
    step = int(round(dt * 1e6))
    times = int(time_us) - step * np.arange(len(past), -1, -1, dtype=np.int64)
    return human_past_for_hc(seq, times)


def start_past_states(scenario, start: np.ndarray, perturbation=None) -> np.ndarray:
    """The ego's past states [n, 11] before iteration 0 of `scenario` (0.1 s apart, oldest first, up to `PAST_S`):
    the logged states at the logged start (`perturbation` None), else the perturbed past the ego drove in to the
    perturbed `start` state (`sim.perturb.perturbed_past`: the log's path at the perturbed speed with the offset
    blended in, kinematics from `states_from_poses`)."""
    from ..sim.perturb import perturbed_past

    e = scenario.ego
    f0 = scenario.start_index
    n_keep = int(round(PAST_S / scenario.dt_s))
    n_past = min(n_keep, f0)
    if perturbation is None:
        return logged_past_states(scenario, f0, n_past)
    a = max(0, f0 - 2 * n_keep)  # enough logged path for a past driven up to 2x faster
    log = np.stack([e.x[a:f0 + 1], e.y[a:f0 + 1], e.heading[a:f0 + 1]], -1)
    return states_from_poses(perturbed_past(log, start, perturbation.speed_scale, n=n_past), start, scenario.dt_s)


def past_is_comfortable(scenario, start: np.ndarray, perturbation, past: np.ndarray | None = None) -> bool:
    """Whether the perturbed past driven into `start` (`start_past_states`, sampled as HC prepends it by `hc_past`)
    passes EPDMS's comfort checks (`metrics.epdms.comfort_checks`). `past`: that past when the caller has it."""
    from ..metrics.epdms import comfort_checks

    if past is None:
        past = start_past_states(scenario, start, perturbation)
    hist = hc_past(past, start, int(scenario.timestamps_us[scenario.start_index]), scenario.dt_s)
    if len(hist) < 2:
        return True
    return bool(np.all(comfort_checks(np.vstack([hist, np.asarray(start, dtype=np.float64)[None]]))))
