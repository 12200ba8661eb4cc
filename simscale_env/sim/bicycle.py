"""Batched kinematic bicycle model on the rear axle.

Follows navsim/planning/simulation/planner/pdm_planner/simulation/batch_kinematic_bicycle.py (itself the batch form of
nuplan/planning/simulation/controller/motion_model/kinematic_bicycle.py): first-order lags on the commands
(acceleration tau 0.2 s, steering angle tau 0.05 s), explicit Euler, heading integrated with the *previous* steering
angle, steering clipped to +-pi/3, lateral velocity 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .state import (ACCELERATION_X, ACCELERATION_Y, ANGULAR_ACCELERATION, ANGULAR_VELOCITY, CMD_ACCELERATION,
                    CMD_STEERING_RATE, HEADING, STEERING_ANGLE, STEERING_RATE, VELOCITY_X, VELOCITY_Y, X, Y,
                    principal_value)
from .vehicle import PACIFICA, VehicleParameters


@dataclass(frozen=True)
class BicycleConfig:
    vehicle: VehicleParameters = PACIFICA
    max_steering_angle: float = np.pi / 3
    accel_time_constant: float = 0.2
    steering_angle_time_constant: float = 0.05


def propagate(states: np.ndarray, commands: np.ndarray, dt: float, config: BicycleConfig = BicycleConfig()) -> np.ndarray:
    """One step for a batch: `states` [N, 11], `commands` [N, 2] (acceleration, steering rate) -> [N, 11]."""
    s = states
    accel = s[:, ACCELERATION_X]
    steer = s[:, STEERING_ANGLE]
    ideal_steer = dt * commands[:, CMD_STEERING_RATE] + steer
    new_accel = dt / (dt + config.accel_time_constant) * (commands[:, CMD_ACCELERATION] - accel) + accel
    new_steer = dt / (dt + config.steering_angle_time_constant) * (ideal_steer - steer) + steer
    steer_rate = (new_steer - steer) / dt
    v = s[:, VELOCITY_X]
    out = s.copy()
    out[:, X] = s[:, X] + v * np.cos(s[:, HEADING]) * dt
    out[:, Y] = s[:, Y] + v * np.sin(s[:, HEADING]) * dt
    out[:, HEADING] = principal_value(s[:, HEADING] + v * np.tan(steer) / config.vehicle.wheel_base * dt)
    out[:, VELOCITY_X] = v + new_accel * dt
    out[:, VELOCITY_Y] = 0.0
    out[:, STEERING_ANGLE] = np.clip(steer + steer_rate * dt, -config.max_steering_angle, config.max_steering_angle)
    out[:, ANGULAR_VELOCITY] = out[:, VELOCITY_X] * np.tan(out[:, STEERING_ANGLE]) / config.vehicle.wheel_base
    out[:, ACCELERATION_X] = new_accel
    out[:, ACCELERATION_Y] = 0.0
    out[:, ANGULAR_ACCELERATION] = (out[:, ANGULAR_VELOCITY] - s[:, ANGULAR_VELOCITY]) / dt
    out[:, STEERING_RATE] = steer_rate
    return out
