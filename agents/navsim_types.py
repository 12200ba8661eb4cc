"""Look-alikes of NAVSIM's agent-interface dataclasses (`navsim/common/dataclasses.py`, `navsim/agents/
abstract_agent.py`; nuplan-devkit's `TrajectorySampling`), for when `navsim` is not importable (it needs
nuplan-devkit, which is not on PyPI). Same class names, field names, defaults and helper methods as NAVSIM's, so an
agent written against NAVSIM runs on either: `navsim_classes()` returns NAVSIM's own classes when `import navsim`
works, else these.

Frames and units as NAVSIM's (`../shared/reference/navsim-agents-and-planners.md` §1): poses (x, y, heading) in the
current rear-axle frame (x forward, y left), m, rad, m/s, m/s^2; images uint8 H x W x 3 RGB.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import List, Optional, Union

import numpy as np

# NAVSIM's camera fields of `Cameras`, in its order, and the nuPlan channel each one is
CAMERA_NAMES = ("cam_f0", "cam_l0", "cam_l1", "cam_l2", "cam_r0", "cam_r1", "cam_r2", "cam_b0")
NAVSIM_INTERVAL_LENGTH = 0.5  # navsim/common/dataclasses.py


def channel_of(camera_name: str) -> str:
    """NAVSIM's camera field name -> the nuPlan channel (``cam_f0`` -> ``CAM_F0``)."""
    return camera_name.upper()


@dataclass
class Camera:
    """A camera of one frame; every field None when it was not loaded (NAVSIM's empty camera)."""

    image: Optional[np.ndarray] = None  # uint8 [H, W, 3] RGB
    sensor2lidar_rotation: Optional[np.ndarray] = None  # [3, 3] camera -> lidar
    sensor2lidar_translation: Optional[np.ndarray] = None  # [3]
    intrinsics: Optional[np.ndarray] = None  # [3, 3] of `image`
    distortion: Optional[np.ndarray] = None  # [5]
    camera_path: Optional[Path] = None


@dataclass
class Cameras:
    cam_f0: Camera
    cam_l0: Camera
    cam_l1: Camera
    cam_l2: Camera
    cam_r0: Camera
    cam_r1: Camera
    cam_r2: Camera
    cam_b0: Camera


@dataclass
class Lidar:
    lidar_pc: Optional[np.ndarray] = None  # [6, N] float32: x, y, z, intensity, ring, lidar_id
    lidar_path: Optional[Path] = None


@dataclass
class EgoStatus:
    ego_pose: np.ndarray  # [3] (x, y, heading)
    ego_velocity: np.ndarray  # [2] float32, m/s, the frame's own vehicle frame
    ego_acceleration: np.ndarray  # [2] float32, m/s^2
    driving_command: np.ndarray  # [4] one-hot: left, straight, right, unknown
    in_global_frame: bool = False  # False for AgentInput


@dataclass
class AgentInput:
    ego_statuses: List[EgoStatus]  # one per history frame, oldest first, the current one last
    cameras: List[Cameras]
    lidars: List[Lidar]


@dataclass
class SensorConfig:
    """Which sensors an agent reads at which history index (0 ... 3, 3 the current frame): True, False or a list of
    indices."""

    cam_f0: Union[bool, List[int]]
    cam_l0: Union[bool, List[int]]
    cam_l1: Union[bool, List[int]]
    cam_l2: Union[bool, List[int]]
    cam_r0: Union[bool, List[int]]
    cam_r1: Union[bool, List[int]]
    cam_r2: Union[bool, List[int]]
    cam_b0: Union[bool, List[int]]
    lidar_pc: Union[bool, List[int]]

    def get_sensors_at_iteration(self, iteration: int) -> List[str]:
        out = []
        for name, include in asdict(self).items():
            if isinstance(include, bool) and include:
                out.append(name)
            elif isinstance(include, list) and iteration in include:
                out.append(name)
        return out

    @classmethod
    def build_all_sensors(cls, include: Union[bool, List[int]] = True) -> "SensorConfig":
        return cls(cam_f0=include, cam_l0=include, cam_l1=include, cam_l2=include, cam_r0=include, cam_r1=include,
                   cam_r2=include, cam_b0=include, lidar_pc=include)

    @classmethod
    def build_no_sensors(cls) -> "SensorConfig":
        return cls.build_all_sensors(include=False)


@dataclass(frozen=True)
class TrajectorySampling:
    """nuplan-devkit's TrajectorySampling: two of (num_poses, time_horizon, interval_length) given, the third
    derived."""

    num_poses: Optional[int] = None
    time_horizon: Optional[float] = None
    interval_length: Optional[float] = None

    def __post_init__(self):
        n, t, dt = self.num_poses, self.time_horizon, self.interval_length
        if n is None and t is not None and dt is not None:
            n = int(round(t / dt))
        elif t is None and n is not None and dt is not None:
            t = n * dt
        elif dt is None and n is not None and t is not None:
            dt = t / n
        if n is None or t is None or dt is None:
            raise ValueError("TrajectorySampling needs two of num_poses, time_horizon, interval_length")
        object.__setattr__(self, "num_poses", int(n))
        object.__setattr__(self, "time_horizon", float(t))
        object.__setattr__(self, "interval_length", float(dt))

    @property
    def step_time(self) -> float:
        return self.interval_length


@dataclass
class Trajectory:
    """NAVSIM's plan: poses [N, 3] (x, y, heading) in the current rear-axle frame, the first one
    `trajectory_sampling.interval_length` after now (default 8 poses 0.5 s apart)."""

    poses: np.ndarray
    trajectory_sampling: TrajectorySampling = field(
        default_factory=lambda: TrajectorySampling(time_horizon=4, interval_length=0.5))

    def __post_init__(self):
        assert self.poses.ndim == 2, "Trajectory poses should have two dimensions for samples and poses."
        assert self.poses.shape[0] == self.trajectory_sampling.num_poses, \
            "Trajectory poses and sampling have unequal number of poses."
        assert self.poses.shape[1] == 3, "Trajectory requires (x, y, heading) at last dim."


LOOKALIKES = SimpleNamespace(Camera=Camera, Cameras=Cameras, Lidar=Lidar, EgoStatus=EgoStatus, AgentInput=AgentInput,
                             SensorConfig=SensorConfig, Trajectory=Trajectory, TrajectorySampling=TrajectorySampling,
                             real=False)


def navsim_classes(prefer_real: bool = True) -> SimpleNamespace:
    """NAVSIM's own dataclasses (`navsim.common.dataclasses`, nuplan-devkit's TrajectorySampling) when importable and
    `prefer_real`, else the look-alikes of this module; `.real` says which."""
    if prefer_real:
        try:
            from navsim.common.dataclasses import (AgentInput, Camera, Cameras, EgoStatus, Lidar, SensorConfig,
                                                   Trajectory)
            from nuplan.planning.simulation.trajectory.trajectory_sampling import TrajectorySampling
        except Exception:  # noqa: BLE001  (not installed, or its nuplan-devkit dependency is missing or broken)
            return LOOKALIKES
        return SimpleNamespace(Camera=Camera, Cameras=Cameras, Lidar=Lidar, EgoStatus=EgoStatus,
                               AgentInput=AgentInput, SensorConfig=SensorConfig, Trajectory=Trajectory,
                               TrajectorySampling=TrajectorySampling, real=True)
    return LOOKALIKES
