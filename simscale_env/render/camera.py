"""The nuPlan camera rig: intrinsics and camera-to-ego extrinsics from the log's `camera` table (OpenCV camera: x
right, y down, z forward), resized to the render resolution, and world-to-camera view matrices (gsplat's
`viewmats`) for an ego pose.

Resizing keeps the focal length's aspect: the image is scaled to the target width and centre-cropped (or padded)
vertically, e.g. 1920x1080 -> 480x270 -> 480x224 (23 rows cut at the top and bottom), as NAVSIM's camera feature
builders crop rather than squash. `fit_to_width` is that arithmetic, shared with the logged camera images
(`render.logged`), so that a logged JPEG and its rendered counterpart have the same size, intrinsics and crop."""

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


def fit_to_width(src_width: float, src_height: float, width: int, height: int) -> tuple[float, float]:
    """How an image of `src_width` x `src_height` becomes the `width` x `height` observation: (scale, top). It is
    scaled by `scale` = width / src_width (both axes) and rows [top, top + height) of the scaled image are kept, a
    centre crop (top > 0) or pad (top < 0). A point (u, v) of the source maps to (scale * u, scale * v - top)
    (pixel corners at integers, centres at +0.5, as gsplat and PIL's resize)."""
    scale = width / float(src_width)
    return scale, (src_height * scale - height) / 2.0


def fit_intrinsics(K, src_width: float, src_height: float, width: int, height: int) -> np.ndarray:
    """The [3, 3] intrinsics `K` of a `src_width` x `src_height` camera after `fit_to_width` to `width` x `height`."""
    scale, top = fit_to_width(src_width, src_height, width, height)
    K = np.asarray(K, dtype=np.float64).copy()
    K[0, :] *= scale
    K[1, :] *= scale
    K[1, 2] -= top  # centre crop (or pad) vertically
    return K


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
        K = fit_intrinsics(c.intrinsic, c.width, c.height, width, height)
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
