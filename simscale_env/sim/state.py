"""The ego state vector: NAVSIM's `StateIndex` order
(navsim/planning/simulation/planner/pdm_planner/utils/pdm_enums.py), rear-axle values in the ego body frame."""

from __future__ import annotations

import numpy as np

X, Y, HEADING, VELOCITY_X, VELOCITY_Y, ACCELERATION_X, ACCELERATION_Y, STEERING_ANGLE, STEERING_RATE, \
    ANGULAR_VELOCITY, ANGULAR_ACCELERATION = range(11)
STATE_SIZE = 11
STATE_NAMES = ("x", "y", "heading", "velocity_x", "velocity_y", "acceleration_x", "acceleration_y",
               "steering_angle", "steering_rate", "angular_velocity", "angular_acceleration")
# controller output (DynamicStateIndex)
CMD_ACCELERATION, CMD_STEERING_RATE = 0, 1


def principal_value(angle, min_: float = -np.pi):
    """nuplan/common/geometry/compute.py `principal_value`: wrap to [min_, min_ + 2 pi)."""
    return (np.asarray(angle, dtype=np.float64) - min_) % (2 * np.pi) + min_


def normalize_angle(angle):
    """navsim pdm_geometry_utils `normalize_angle`: arctan2(sin, cos)."""
    a = np.asarray(angle, dtype=np.float64)
    return np.arctan2(np.sin(a), np.cos(a))


def make_state(x=0.0, y=0.0, heading=0.0, velocity=0.0, acceleration=0.0, steering=0.0, **kw) -> np.ndarray:
    s = np.zeros(STATE_SIZE)
    s[X], s[Y], s[HEADING], s[VELOCITY_X], s[ACCELERATION_X], s[STEERING_ANGLE] = (
        x, y, heading, velocity, acceleration, steering)
    for k, v in kw.items():
        s[STATE_NAMES.index(k)] = v
    return s


def check_states(states, name: str = "states") -> np.ndarray:
    """Validate an [..., 11] state array: finite, right shape. Raises ValueError naming the argument."""
    a = np.asarray(states, dtype=np.float64)
    if a.shape[-1:] != (STATE_SIZE,):
        raise ValueError(f"{name} must have shape [..., {STATE_SIZE}] (NAVSIM StateIndex order), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a
