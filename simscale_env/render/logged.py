"""Logged camera images (NAVSIM/OpenScene `sensor_blobs`) as camera observations.

A logged JPEG becomes the observation image exactly as the render path frames a camera (`camera.fit_to_width`, the
arithmetic `camera_models` uses for the intrinsics): scaled to the target width and centre-cropped (or padded with
black) vertically, uint8 [H, W, 3]. So a logged image and its rendered counterpart have the same size, intrinsics and
crop: 1920x1080 -> 480x224 keeps rows 92-987 of the sensor image (23 rows of the 480x270 image cut at the top and
bottom). A JPEG smaller than the camera's full resolution with the same aspect (e.g. the mini dataset's 480x270 blobs
of a 1920x1080 camera) is the whole sensor image downscaled, and is mapped accordingly; another aspect is a
CorruptFileError.

>>> cams = LoggedCameras(".cache/mini/sensor_blobs/mini")                     # doctest: +SKIP
>>> cams.images(frame, ("CAM_L0", "CAM_F0", "CAM_R0"), 480, 224).shape       # doctest: +SKIP
(3, 224, 480, 3)

`frame` is an OpenScene frame dict (`data.openscene.load_log`) or its `cams` mapping; the full resolution of each
camera comes from the log's camera table (`calibrations=`: CameraCalibration rows, e.g. `Scenario.cameras`), else
nuPlan's 1920x1080.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import CorruptFileError, DataError, MissingFileError
from .camera import fit_intrinsics, fit_to_width

NUPLAN_CAMERA_SIZE = (1920, 1080)  # width, height of nuPlan's eight cameras (the `camera` table's width/height)
# a downscaled sensor image keeps the aspect up to rounding its height to whole pixels: at most this many rows off
ASPECT_TOLERANCE_ROWS = 1.0
MAX_PIXELS = 64_000_000  # far beyond any driving camera; larger is refused before decoding (decompression bombs)


def fit_image(image: np.ndarray, full_width: int, full_height: int, width: int, height: int) -> np.ndarray:
    """An image [h, w, 3] uint8 of a camera whose full resolution is `full_width` x `full_height` (the image itself
    may be that sensor image downscaled) as the `width` x `height` observation: the `fit_to_width` scale and centre
    crop/pad of the full image, resampled with PIL's bilinear filter (antialiased when shrinking); padded rows are
    black. Raises ValueError when the image's aspect is not the camera's."""
    from PIL import Image

    img = np.ascontiguousarray(image, dtype=np.uint8)
    h_j, w_j = img.shape[:2]
    if abs(h_j - full_height * w_j / full_width) > ASPECT_TOLERANCE_ROWS:
        raise ValueError(f"a {w_j}x{h_j} image is not a {full_width}x{full_height} camera's image (another aspect)")
    scale, top = fit_to_width(full_width, full_height, width, height)
    # target row v <-> full-resolution row (v + top) / scale <-> image row of that * h_j / full_height; x likewise
    sx, sy = w_j / float(full_width), h_j / float(full_height)
    eps = 1e-9
    r0 = max(0, math.ceil(-top - eps))  # the target rows the image covers (all of them when cropping)
    r1 = min(height, math.floor(full_height * scale - top + eps))
    out = np.zeros((height, width, 3), np.uint8)
    if r1 <= r0:
        return out
    y0, y1 = (r0 + top) / scale * sy, (r1 + top) / scale * sy
    x1 = width / scale * sx  # = w_j
    if w_j == width and abs(y0 - round(y0)) < 1e-9 and abs((y1 - y0) - (r1 - r0)) < 1e-9:
        out[r0:r1] = img[int(round(y0)):int(round(y0)) + r1 - r0]  # same scale, whole-row offset: a plain crop
        return out
    pil = Image.fromarray(img, "RGB")
    out[r0:r1] = np.asarray(pil.resize((width, r1 - r0), Image.Resampling.BILINEAR, box=(0.0, y0, x1, y1)))
    return out


def read_jpeg(path: str | Path) -> np.ndarray:
    """A JPEG file as uint8 [h, w, 3] RGB. A missing file is a MissingFileError, anything else (not a JPEG,
    truncated, unreadable, absurdly large) a CorruptFileError naming the file."""
    from PIL import Image

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.format != "JPEG":
                    raise CorruptFileError(path, f"is a {im.format or 'unknown'} image; expected a JPEG camera image")
                if im.width * im.height > MAX_PIXELS:
                    raise CorruptFileError(path, f"{im.width}x{im.height} is too large for a camera image")
                im.load()  # decode now: a truncated file raises here
                rgb = im.convert("RGB") if im.mode != "RGB" else im
                return np.asarray(rgb, dtype=np.uint8).copy()
    except CorruptFileError:
        raise
    except FileNotFoundError:
        raise MissingFileError(path, "camera image not found") from None
    except Exception as exc:  # PIL.UnidentifiedImageError, OSError (truncated), DecompressionBomb*, ...
        raise CorruptFileError(path, f"not a readable JPEG ({type(exc).__name__}: {exc})") from exc


def load_logged_image(path: str | Path, full_width: int, full_height: int, width: int, height: int) -> np.ndarray:
    """One logged camera JPEG as the `width` x `height` observation image (`fit_image`). A file that is no readable
    JPEG, or whose aspect is not the camera's (`full_width` x `full_height`), is a CorruptFileError naming it."""
    img = read_jpeg(path)
    try:
        return fit_image(img, full_width, full_height, width, height)
    except ValueError as exc:
        raise CorruptFileError(path, f"{exc}; expected the {full_width}x{full_height} camera's image or the same "
                                     f"aspect downscaled") from None


def _cams(frame) -> Mapping:
    if not isinstance(frame, Mapping):
        raise TypeError(f"expected an OpenScene frame dict or its 'cams' mapping, got {type(frame).__name__}")
    cams = frame["cams"] if "cams" in frame else frame
    if not isinstance(cams, Mapping):
        raise TypeError(f"the frame's 'cams' is a {type(cams).__name__}; expected a mapping channel -> dict")
    return cams


class LoggedCameras:
    """The logged camera images of OpenScene frames under `sensor_blobs_root` (``<root>/sensor_blobs/<split>``: the
    frames' `cams[channel]["data_path"]` are relative to it)."""

    def __init__(self, sensor_blobs_root: str | Path):
        self.root = Path(sensor_blobs_root)

    def paths(self, frame, channels: Sequence[str]) -> list[Path | None]:
        """The blob path of each channel (None for a channel the frame does not list)."""
        cams = _cams(frame)
        out = []
        for ch in channels:
            entry = cams.get(ch)
            rel = entry.get("data_path") if isinstance(entry, Mapping) else None
            out.append(self.root / rel if isinstance(rel, str) and rel else None)
        return out

    @staticmethod
    def full_sizes(channels: Sequence[str], calibrations=None) -> list[tuple[int, int]]:
        """(width, height) of each channel's full image: the calibration's where given, else nuPlan's 1920x1080."""
        by = {c.channel: (int(c.width), int(c.height)) for c in calibrations or ()}
        return [by.get(ch, NUPLAN_CAMERA_SIZE) for ch in channels]

    def images(self, frame, channels: Sequence[str], width: int, height: int,
               calibrations=None) -> np.ndarray | None:
        """uint8 [n, height, width, 3] of `channels` (in that order), framed like the render path, or None when a
        blob (or a channel of the frame) is missing. A blob that is not a readable JPEG of the camera's aspect raises
        CorruptFileError naming it."""
        paths = self.paths(frame, channels)
        if any(p is None or not p.is_file() for p in paths):
            return None
        sizes = self.full_sizes(channels, calibrations)
        out = np.empty((len(paths), int(height), int(width), 3), np.uint8)
        for k, (p, (fw, fh)) in enumerate(zip(paths, sizes)):
            out[k] = load_logged_image(p, fw, fh, int(width), int(height))
        return out

    def intrinsics(self, frame, channels: Sequence[str], width: int, height: int, calibrations=None) -> np.ndarray:
        """[n, 3, 3] intrinsics of the framed images: each frame camera's `cam_intrinsic` (full resolution) through
        `camera.fit_intrinsics`, the transform `camera_models` applies to the calibration's."""
        cams = _cams(frame)
        out = []
        for ch, (fw, fh) in zip(channels, self.full_sizes(channels, calibrations)):
            entry = cams.get(ch)
            K = entry.get("cam_intrinsic") if isinstance(entry, Mapping) else None
            if K is None or np.shape(K) != (3, 3):
                raise DataError(None, f"camera {ch}: the frame has no [3, 3] 'cam_intrinsic'")
            out.append(fit_intrinsics(K, fw, fh, int(width), int(height)))
        return np.stack(out)
