"""The inputs every learned planner reads, built the same way from the env's observation (the policy wrappers), from a
sim sample of `simscale generate` and from a real sample of the logs (`training.datasets`): what makes real and sim
look alike to a model.

- The image: the current frame's three front cameras stitched left | front | right, as NAVSIM's TransFuser features
  do (navsim/agents/transfuser/transfuser_features.py `_get_camera_feature`: rows 28:-28 of 1080 for all three,
  columns 416:-416 of 1920 for l0 and r0), here as the same fractions of our rendered width and height, then
  resized to the planner's `image_size` (W, H). uint8 [H, W, 3] (`stitch_front_cameras`); `image_tensor` makes the
  float [3, H, W] in [0, 1] a model reads (ToTensor: no mean/std normalisation, as NAVSIM).
- The status: driving command one-hot (4) || velocity (2) || acceleration (2) of the current frame, NAVSIM's LTF
  order (transfuser_features.py `_get_ego_status`): float32 [8] (`status_vector`).
"""

from __future__ import annotations

import numpy as np

FRONT_CHANNELS = ("CAM_L0", "CAM_F0", "CAM_R0")
STATUS_SIZE = 8
# TransFuser's crops as fractions of a 1920 x 1080 image: rows 28:-28, side-camera columns 416:-416
_ROW_CROP = 28 / 1080
_SIDE_COL_CROP = 416 / 1920


def _crop(img: np.ndarray, side: bool) -> np.ndarray:
    h, w = img.shape[:2]
    r = int(round(h * _ROW_CROP))
    c = int(round(w * _SIDE_COL_CROP)) if side else 0
    return img[r:h - r if r else h, c:w - c if c else w]


def stitch_front_cameras(images, channels, image_size: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, 3] (W, H = `image_size`): the cameras `images` ([n, h, w, 3] uint8, or a list of n such images)
    of `channels` (n names, any order, holding CAM_L0, CAM_F0 and CAM_R0) cropped as TransFuser crops them, stitched
    left | front | right and resized (bilinear, PIL)."""
    from PIL import Image

    channels = tuple(channels)
    missing = [c for c in FRONT_CHANNELS if c not in channels]
    if missing:
        raise ValueError(f"the planners read the cameras {FRONT_CHANNELS}; {missing} are not among {channels}")
    parts = [_crop(np.asarray(images[channels.index(c)]), side=c != "CAM_F0") for c in FRONT_CHANNELS]
    h = min(p.shape[0] for p in parts)
    stitched = np.concatenate([p[:h] for p in parts], axis=1)
    w_out, h_out = int(image_size[0]), int(image_size[1])
    if stitched.shape[1] == w_out and stitched.shape[0] == h_out:
        return np.ascontiguousarray(stitched, dtype=np.uint8)
    im = Image.fromarray(np.ascontiguousarray(stitched, dtype=np.uint8)).resize((w_out, h_out), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def image_tensor(image: np.ndarray):
    """uint8 [..., H, W, 3] -> torch float32 [..., 3, H, W] in [0, 1]."""
    import torch

    a = np.ascontiguousarray(image)
    if not a.flags.writeable:
        a = a.copy()
    t = torch.from_numpy(a)
    return t.movedim(-1, -3).to(torch.float32).div_(255.0)


def status_vector(command, velocity, acceleration) -> np.ndarray:
    """float32 [8]: driving command one-hot (4) || velocity (vx, vy) || acceleration (ax, ay), NAVSIM's order."""
    c = np.asarray(command, dtype=np.float32).reshape(-1)
    if c.shape != (4,):
        raise ValueError(f"driving command must be a one-hot of 4, got shape {c.shape}")
    return np.concatenate([c, np.asarray(velocity, np.float32).reshape(2),
                           np.asarray(acceleration, np.float32).reshape(2)]).astype(np.float32)


def status_from_observation(ego_status) -> np.ndarray:
    """The status vector of the env's `obs["ego_status"]` (vx, vy, ax, ay, command one-hot (4), past poses)."""
    e = np.asarray(ego_status, dtype=np.float32)
    return status_vector(e[4:8], e[0:2], e[2:4])
