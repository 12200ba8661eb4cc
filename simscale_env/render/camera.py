"""The nuPlan camera rig: intrinsics and camera-to-ego extrinsics from the log's `camera` table (OpenCV camera: x
right, y down, z forward), resized to the render resolution, and world-to-camera view matrices (gsplat's
`viewmats`) for an ego pose.

Resizing keeps the focal length's aspect: the image is scaled to the target width and centre-cropped (or padded)
vertically, e.g. 1920x1080 -> 480x270 -> 480x224 (23 rows cut at the top and bottom), as NAVSIM's camera feature
builders crop rather than squash."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import quaternion_to_matrix

DEFAULT_CHANNELS = ("CAM_L0", "CAM_F0", "CAM_R0")  # the three front cameras
DEFAULT_SIZE = (480, 224)  # width, height


@dataclass(frozen=True, eq=False)
class CameraModel:
    channel: str
    K: np.ndarray  # [3, 3] at (width, height)
    cam_to_ego: np.ndarray  # [4, 4]
    width: int
    height: int


def camera_models(calibrations, channels=DEFAULT_CHANNELS, width: int = DEFAULT_SIZE[0],
                  height: int = DEFAULT_SIZE[1]) -> tuple[CameraModel, ...]:
    """CameraModels for `channels` (in that order) from CameraCalibration rows (Scenario.cameras or LogDB.cameras)."""
    by = {c.channel: c for c in calibrations}
    missing = [ch for ch in channels if ch not in by]
    if missing:
        raise ValueError(f"camera channels {missing} are not in the log's camera table (has {sorted(by)})")
    if width < 8 or height < 8:
        raise ValueError(f"render resolution must be at least 8x8, got {width}x{height}")
    out = []
    for ch in channels:
        c = by[ch]
        s = width / float(c.width)
        K = np.asarray(c.intrinsic, dtype=np.float64).copy()
        K[0, :] *= s
        K[1, :] *= s
        K[1, 2] -= (c.height * s - height) / 2.0  # centre crop (or pad) vertically
        T = np.eye(4)
        T[:3, :3] = quaternion_to_matrix(np.asarray(c.rotation, dtype=np.float64))
        T[:3, 3] = np.asarray(c.translation, dtype=np.float64)
        out.append(CameraModel(ch, K, T, int(width), int(height)))
    return tuple(out)


def ego_to_world(x: float, y: float, heading: float, z: float = 0.0) -> np.ndarray:
    T = np.eye(4)
    c, s = np.cos(heading), np.sin(heading)
    T[:2, :2] = [[c, -s], [s, c]]
    T[:3, 3] = [x, y, z]
    return T


def view_matrices(cameras, ego_pose, z: float = 0.0, origin=(0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """(viewmats [C, 4, 4] world-to-camera, Ks [C, 3, 3]) for the rear-axle pose (x, y, heading). `origin` is
    subtracted from world x, y (render in a local frame to keep float32 precision with UTM coordinates)."""
    E = ego_to_world(ego_pose[0] - origin[0], ego_pose[1] - origin[1], ego_pose[2], z)
    views = np.stack([np.linalg.inv(E @ cam.cam_to_ego) for cam in cameras])
    Ks = np.stack([cam.K for cam in cameras])
    return views, Ks
