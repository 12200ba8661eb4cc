"""Rendered `sensor_blobs` of the mini dataset: camera JPEGs of the test splits' frames, so that the logged-camera
path (`render.logged`, the env's `camera_source=`) runs on the mini dataset as on NAVSIM's data.

For each scene token of the test splits (mini-navtest, mini-navhard), its NAVSIM scene's history frames (3 history +
the current frame, 2 Hz) get all eight cameras, rendered with the env's camera renderer (`CameraRenderer`, the
map-synthesised scene of seed 0, CPU rasterizer so that the bytes do not depend on the machine) at the logged ego
pose with the logged boxes (coloured per track token, as the env colours them), at BLOB_SIZE (a quarter of nuPlan's
1920x1080, the same aspect: `render.logged` maps it as the downscaled sensor image). Written as
``OUT/sensor_blobs/mini/<frame cams[channel].data_path>`` (``<log>/<channel>/<image token>.jpg``, the nuPlan image
table's file names), JPEG quality JPEG_QUALITY, each through a hidden temporary renamed into place; a resumed build
skips the blobs already there. Deterministic: the same inputs give the same bytes.
"""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from ...errors import CorruptFileError

log = logging.getLogger(__name__)

BLOB_SIZE = (480, 270)  # width, height: 1/4 of nuPlan's 1920x1080 cameras (the same aspect), to keep the build fast
JPEG_QUALITY = 90
BLOB_SPLIT = "mini"  # sensor_blobs/<split>, as navsim_logs/<split>
NUM_HISTORY_FRAMES = 4  # NAVSIM's scene: 3 history frames + the current one (SceneFilter.num_history_frames)
SCENE_SEED = 0  # the env's default scene_seed


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """Baseline JPEG bytes of a uint8 [H, W, 3] image (PIL's libjpeg, 4:2:0; deterministic)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB").save(buf, format="JPEG", quality=int(quality),
                                                                          optimize=False, progressive=False)
    return buf.getvalue()


def blob_path(root: Path, data_path: str, pkl: Path) -> Path:
    """`root / data_path`, refusing a data_path that would leave `root` (absolute, or with '..')."""
    rel = Path(data_path)
    if not data_path or rel.is_absolute() or ".." in rel.parts:
        raise CorruptFileError(pkl, f"camera data_path {data_path!r} is not a relative path inside sensor_blobs")
    return root / rel


def scene_frames(frames: list[dict], tokens: Iterable[str], num_history: int = NUM_HISTORY_FRAMES) -> list[int]:
    """Sorted indices of the frames of the scenes of `tokens` in this log: each token's frame and the
    `num_history - 1` frames before it (fewer at the log's start). Tokens not in the log are ignored."""
    at = {f["token"]: i for i, f in enumerate(frames)}
    out = set()
    for t in tokens:
        i = at.get(t)
        if i is not None:
            out.update(range(max(0, i - num_history + 1), i + 1))
    return sorted(out)


def write_sensor_blobs(out: str | Path, tokens: Iterable[str], *, size: tuple[int, int] = BLOB_SIZE,
                       quality: int = JPEG_QUALITY, num_history: int = NUM_HISTORY_FRAMES,
                       say=log.debug) -> dict:
    """Render and write the camera blobs of the scenes of `tokens` in the mini dataset `out` (module docstring).
    Blobs already there are kept (a resumed build). Returns {"frames", "images", "written", "seconds"}."""
    from ...map.map_api import load_map
    from ...render.renderer import CameraRenderer
    from ...sim.world import Objects
    from ..atomic import atomic_write
    from ..nuplan_db import LogDB
    from ..openscene import load_log

    out = Path(out)
    tokens = set(tokens)
    t0 = time.perf_counter()
    nav_dir = out / "navsim_logs" / BLOB_SPLIT
    db_dir = out / "nuplan-v1.1" / "splits" / BLOB_SPLIT
    root = out / "sensor_blobs" / BLOB_SPLIT
    n_frames = n_images = n_written = 0
    if not tokens:
        return {"frames": 0, "images": 0, "written": 0, "seconds": 0.0}
    width, height = size
    for pkl in sorted(nav_dir.glob("*.pkl")):
        if pkl.name.startswith("."):
            continue
        frames = load_log(pkl)
        idx = scene_frames(frames, tokens, num_history)
        if not idx:
            continue
        todo = []  # (frame index, [(channel, path) still to write])
        for i in idx:
            cams = frames[i]["cams"]
            paths = [(ch, blob_path(root, cams[ch]["data_path"], pkl)) for ch in cams]
            n_images += len(paths)
            missing = [(ch, p) for ch, p in paths if not p.is_file()]
            if missing:
                todo.append((i, missing))
        n_frames += len(idx)
        if not todo:
            continue
        with LogDB(db_dir / f"{pkl.stem}.db") as db:
            channels = [c.channel for c in db.cameras]
            renderer = CameraRenderer(load_map(db.map_location, out / "maps"), db.cameras, channels, width, height,
                                      seed=SCENE_SEED, backend="cpu")
            for i, missing in todo:
                li = db.lidar_pc_index(frames[i]["token"])
                e = db.ego_arrays([li])
                b = db.boxes([li])
                n = len(b["x"])
                objs = Objects(track=b["track"], category=b["category"], x=b["x"], y=b["y"], heading=b["yaw"],
                               vx=b["vx"], vy=b["vy"], length=b["length"], width=b["width"], height=b["height"],
                               reactive=np.zeros(n, bool))
                rgb = renderer.render(np.array([e["x"][0], e["y"][0], e["heading"][0]]), objs, with_depth=False).rgb
                for ch, p in missing:
                    if ch not in channels:
                        raise CorruptFileError(pkl, f"frame {i}: camera {ch} is not in the log's camera table")
                    data = encode_jpeg(rgb[channels.index(ch)], quality)
                    with atomic_write(p) as fh:
                        fh.write(data)
                    n_written += 1
    dt = time.perf_counter() - t0
    if n_written:
        say(f"sensor blobs: {n_written} of {n_images} camera images ({n_frames} frames, {width}x{height}) in "
            f"{dt:.1f} s")
    return {"frames": n_frames, "images": n_images, "written": n_written, "seconds": dt}
