"""Export a generation run (`simscale generate`: Parquet shards + manifest.json) in NAVSIM's OpenScene layout, so
NAVSIM-based code (and SimScale's co-training recipe) trains on it unchanged::

    OUT/navsim_logs/<split>/<sample token>.pkl                 one synthetic log per sample: a list of frame dicts
    OUT/sensor_blobs/<split>/<sample token>/CAM_*/<frame token>.jpg   the sample's JPEG bytes, as generated
    OUT/splits/<split>.yaml                                    NAVSIM scene_filter listing the sample tokens
    OUT/export.json                                            what was exported (counts, conventions, source run)

Each synthetic log holds NUM_HISTORY (4) history frames at 2 Hz, oldest first, the sample token on the current
(last history) frame and tokens `<sample>-h3 .. -h1` on the older ones, then NUM_FUTURE (8) future frames
`<sample>-f1 .. -f8` built from the label: NAVSIM reads a scene's future trajectory from the ego poses of its
future frames (`Scene.get_future_trajectory`), so the label poses become those frames' ego poses. Future frames hold
ego state only (no cameras, no annotations; their velocity is the finite difference of the label poses, their
acceleration zero, their driving command the current one).

Pose convention: a sample stores its poses relative to the current frame, so the export's "global" frame IS the
current frame's rear axle: the current frame's `ego2global` is the identity, the history frames' are the sample's
relative poses, the future frames' the label poses (z = 0). Everything relative (history, future trajectory,
annotations) is then exactly what NAVSIM computes from real logs; absolute map coordinates are not (a map-based
metric cache needs the base scene's logged pose, which the sample does not carry). `map_location`, `log_name` and the
base token are kept (`base_log_name`, `base_token` on every frame). Frame fields follow
`simscale_env.data.openscene.db_to_openscene` and NAVSIM `navsim/common/dataclasses.py`
(`Scene.from_scene_dict_list`): every frame's `cams` has all eight channels (NAVSIM indexes all of them); the channels
the run did not render are empty dicts, so ask NAVSIM's SensorConfig only for the exported ones. `lidar_path` names a
point cloud that is not written (NAVSIM requires the key; do not request the lidar). Annotations are the sample's
agents on the current frame (empty on the others); `roadblock_ids` come from the row's optional `roadblock_ids`
column, and without it the scene filter says `has_route: false` (NAVSIM drops route-less scenes otherwise).

The run folder is only read. The export is written into a hidden folder beside OUT and renamed into place, so OUT
is either absent or complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np

from simscale_env.data.atomic import atomic_write_text
from simscale_env.data.openscene import write_split
from simscale_env.data.schema import CATEGORIES
from simscale_env.errors import CorruptFileError, MissingFileError, OutputFolderError, SchemaError
from simscale_env.geometry import global_to_local

log = logging.getLogger(__name__)

NUM_HISTORY = 4  # NAVSIM's history frames (navsim/common/dataclasses.py SceneFilter.num_history_frames)
NUM_FUTURE = 8  # the label's 8 poses at 0.5 s (4 s)
INTERVAL_US = 500_000  # NAVSIM frames are 0.5 s apart (NAVSIM_INTERVAL_LENGTH)
CHANNELS = ("CAM_F0", "CAM_L0", "CAM_L1", "CAM_L2", "CAM_R0", "CAM_R1", "CAM_R2", "CAM_B0")  # OpenScene's eight
BOX_HEIGHT = 1.5  # m: the samples' agents have no height; gt_boxes' h column gets this
REQUIRED_COLUMNS = ("token", "base_token", "round", "log_name", "map_location", "timestamp_us", "ego_pose",
                    "ego_velocity", "ego_acceleration", "driving_command", "camera_meta", "label_poses", "agents")
_LENGTHS = {"ego_pose": 3 * NUM_HISTORY, "ego_velocity": 2 * NUM_HISTORY, "ego_acceleration": 2 * NUM_HISTORY,
            "driving_command": 4 * NUM_HISTORY, "label_poses": 3 * NUM_FUTURE}


def _shard_paths(run_dir: Path) -> list[Path]:
    """The shard files the run's manifest lists (strings or {"path"|"file"|"name": ..., "sha256": ...} entries,
    relative to the run folder), checked against their checksums where the manifest has them."""
    mpath = run_dir / "manifest.json"
    if not mpath.is_file():
        raise MissingFileError(mpath, "no manifest.json: not a run folder of `simscale generate`")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as exc:
        raise CorruptFileError(mpath, f"not readable JSON ({exc})") from exc
    shards = manifest.get("shards") if isinstance(manifest, dict) else None
    if isinstance(manifest, dict) and manifest.get("complete") is False:
        log.warning("%s: the run is not complete (resume it with `simscale generate --resume`); exporting the "
                    "shards written so far", mpath)
    if not isinstance(shards, list):
        raise SchemaError(mpath, "field 'shards' is missing or not a list of shard files")
    out = []
    for i, entry in enumerate(shards):
        rel = entry if isinstance(entry, str) else next(
            (entry[k] for k in ("path", "file", "name") if isinstance(entry, dict) and isinstance(entry.get(k), str)),
            None)
        if not rel:
            raise SchemaError(mpath, f"field 'shards' entry {i} names no file ({str(entry)[:60]!r})")
        p = run_dir / rel
        if not p.is_file():
            raise MissingFileError(p, f"shard {i} of {mpath} not found")
        want = entry.get("sha256") if isinstance(entry, dict) else None
        if isinstance(want, str):
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            if h.hexdigest() != want:
                raise CorruptFileError(p, f"sha256 {h.hexdigest()[:12]}... differs from the manifest's {want[:12]}...")
        out.append(p)
    return out


def _array(path, row, key, n, dtype=np.float64) -> np.ndarray:
    v = row.get(key)
    a = np.asarray(v if v is not None else [], dtype=dtype)
    if a.shape != (n,) or (a.dtype.kind == "f" and not np.isfinite(a).all()):
        raise SchemaError(path, f"sample {row.get('token')!r}: column '{key}' has shape {a.shape}; expected {n} "
                                f"finite numbers")
    return a


def _quat(h: float) -> list[float]:
    return [float(np.cos(h / 2)), 0.0, 0.0, float(np.sin(h / 2))]


def _mat(x, y, h) -> np.ndarray:
    m = np.eye(4)
    c, s = np.cos(h), np.sin(h)
    m[:2, :2] = [[c, -s], [s, c]]
    m[:2, 3] = [x, y]
    return m


def _anns(path, row) -> dict:
    a = np.asarray(row.get("agents") or [], dtype=np.float64)
    if a.size % 8:
        raise SchemaError(path, f"sample {row['token']!r}: column 'agents' has {a.size} numbers; expected N x 8")
    a = a.reshape(-1, 8)
    a = a[(a[:, 5] > 0) | (a[:, 6] > 0)]  # an observation's padding rows (no length, no width) are no boxes
    n = len(a)
    cat = a[:, 7].astype(np.int64)
    if n and (cat.min() < 0 or cat.max() >= len(CATEGORIES)):
        raise SchemaError(path, f"sample {row['token']!r}: column 'agents' has category codes outside "
                                f"0..{len(CATEGORIES) - 1}")
    boxes = np.stack([a[:, 0], a[:, 1], np.zeros(n), a[:, 5], a[:, 6], np.full(n, BOX_HEIGHT), a[:, 2]], -1)
    tracks = [f"{row['token']}-a{i:03d}" for i in range(n)]
    return {"gt_boxes": boxes.reshape(n, 7), "gt_names": np.array([CATEGORIES[c] for c in cat], dtype=str),
            "gt_velocity_3d": np.stack([a[:, 3], a[:, 4], np.zeros(n)], -1).reshape(n, 3),
            "instance_tokens": tracks, "track_tokens": list(tracks)}


def _empty_anns() -> dict:
    return {"gt_boxes": np.zeros((0, 7)), "gt_names": np.zeros(0, dtype=str), "gt_velocity_3d": np.zeros((0, 3)),
            "instance_tokens": [], "track_tokens": []}


def sample_frames(row: dict, *, source: str | Path = "<row>") -> tuple[list[dict], dict[tuple[int, str], bytes]]:
    """The OpenScene frame dicts of one sample row (see the module docstring) and its images: {(frame index,
    channel): JPEG bytes}, with each frame's `cams[channel]["data_path"]` relative to `sensor_blobs/<split>`."""
    for key in REQUIRED_COLUMNS:
        if key not in row:
            raise SchemaError(source, f"sample {row.get('token')!r}: column '{key}' is missing")
    token = row["token"]
    if not isinstance(token, str) or not token or "/" in token or token.startswith("."):
        raise SchemaError(source, f"column 'token' is {token!r}; expected a non-empty name without '/'")
    hist = _array(source, row, "ego_pose", _LENGTHS["ego_pose"]).reshape(NUM_HISTORY, 3)
    vel = _array(source, row, "ego_velocity", _LENGTHS["ego_velocity"]).reshape(NUM_HISTORY, 2)
    acc = _array(source, row, "ego_acceleration", _LENGTHS["ego_acceleration"]).reshape(NUM_HISTORY, 2)
    cmd = _array(source, row, "driving_command", _LENGTHS["driving_command"], np.int64).reshape(NUM_HISTORY, 4)
    label = _array(source, row, "label_poses", _LENGTHS["label_poses"]).reshape(NUM_FUTURE, 3)
    try:
        meta = json.loads(row["camera_meta"])
    except (TypeError, ValueError) as exc:
        raise SchemaError(source, f"sample {token!r}: column 'camera_meta' is not a JSON string ({exc})") from exc
    if not isinstance(meta, dict):
        raise SchemaError(source, f"sample {token!r}: column 'camera_meta' is not a mapping of channels")
    hist = global_to_local(hist, hist[-1])  # the current frame is the origin (it is (0, 0, 0) already)
    poses = np.concatenate([hist, label])
    # future velocities: finite differences of the label poses, in each pose's own frame
    prev = np.concatenate([poses[NUM_HISTORY - 1:NUM_HISTORY], label[:-1]])
    d = (label[:, :2] - prev[:, :2]) / (INTERVAL_US / 1e6)
    c, s = np.cos(label[:, 2]), np.sin(label[:, 2])
    fut_vel = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], -1)
    t0 = int(row["timestamp_us"])
    n = NUM_HISTORY + NUM_FUTURE
    tokens = [f"{token}-h{NUM_HISTORY - 1 - k}" for k in range(NUM_HISTORY - 1)] + [token] + \
             [f"{token}-f{k + 1}" for k in range(NUM_FUTURE)]
    roadblocks = row.get("roadblock_ids")
    if isinstance(roadblocks, str):
        roadblocks = json.loads(roadblocks)
    roadblocks = [str(r) for r in (roadblocks if roadblocks is not None else [])]
    images: dict[tuple[int, str], bytes] = {}
    cam_meta = {}
    for ch, m in meta.items():
        if ch not in CHANNELS or not isinstance(m, dict):
            raise SchemaError(source, f"sample {token!r}: column 'camera_meta' has {ch!r}; expected channels of "
                                      f"{CHANNELS} mapping to their calibration")
        jpgs = row.get(ch)
        if jpgs is None or len(jpgs) != NUM_HISTORY or not all(isinstance(b, bytes) and b for b in jpgs):
            raise SchemaError(source, f"sample {token!r}: column '{ch}' is not a list of {NUM_HISTORY} JPEG images")
        try:
            cam_meta[ch] = {"sensor2lidar_rotation": np.asarray(m["sensor2lidar_rotation"], np.float64).reshape(3, 3),
                            "sensor2lidar_translation": np.asarray(m["sensor2lidar_translation"],
                                                                   np.float64).reshape(3),
                            "cam_intrinsic": np.asarray(m["intrinsics"], np.float64).reshape(3, 3),
                            "distortion": np.asarray(m["distortion"], np.float64).reshape(-1)}
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(source, f"sample {token!r}: camera_meta['{ch}'] lacks or mangles a field "
                                      f"({exc})") from exc
        for k, b in enumerate(jpgs):
            images[(k, ch)] = b
    frames = []
    for k in range(n):
        x, y, h = poses[k]
        history = k < NUM_HISTORY
        v = vel[k] if history else fut_vel[k - NUM_HISTORY]
        a = acc[k] if history else np.zeros(2)
        cams = {ch: ({"data_path": f"{token}/{ch}/{tokens[k]}.jpg", **cam_meta[ch]} if history and ch in cam_meta
                     else {}) for ch in CHANNELS}
        ego2global = _mat(x, y, h)
        q = _quat(h)
        frames.append({
            "token": tokens[k], "frame_idx": k, "timestamp": t0 + (k - NUM_HISTORY + 1) * INTERVAL_US,
            "log_name": token, "log_token": token, "scene_name": f"simscale-{token}", "scene_token": token,
            "map_location": row["map_location"], "roadblock_ids": list(roadblocks), "vehicle_name": "simscale",
            "can_bus": [float(x), float(y), 0.0, *q, float(a[0]), float(a[1]), 0.0, float(v[0]), float(v[1]), 0.0,
                        0.0, 0.0, 0.0, 0.0, 0.0],  # db_to_openscene's 18 values (yaw rate unknown: 0)
            "lidar_path": f"{token}/MergedPointCloud/{tokens[k]}.pcd",  # not written: NAVSIM needs the key
            "lidar2ego_translation": [0.0, 0.0, 0.0], "lidar2ego_rotation": [1.0, 0.0, 0.0, 0.0],
            "ego2global_translation": [float(x), float(y), 0.0], "ego2global_rotation": q,
            "ego2global": ego2global, "lidar2ego": np.eye(4), "lidar2global": ego2global.copy(),
            "ego_dynamic_state": [float(v[0]), float(v[1]), float(a[0]), float(a[1])],
            "traffic_lights": [],
            "driving_command": (cmd[k] if history else cmd[-1]).copy(),
            "sample_prev": tokens[k - 1] if k > 0 else None,
            "sample_next": tokens[k + 1] if k + 1 < n else None,
            "cams": cams,
            "anns": _anns(source, row) if k == NUM_HISTORY - 1 else _empty_anns(),
            "base_log_name": row["log_name"], "base_token": row["base_token"], "round": int(row["round"]),
        })
    return frames, images


def _iter_rows(shards: list[Path]):
    import pyarrow.parquet as pq

    for p in shards:
        try:
            f = pq.ParquetFile(p)
        except Exception as exc:  # pyarrow's ArrowInvalid and friends: not a Parquet file
            raise CorruptFileError(p, f"not a readable Parquet shard ({type(exc).__name__}: {exc})") from exc
        names = set(f.schema_arrow.names)
        missing = [c for c in REQUIRED_COLUMNS if c not in names]
        if missing:
            raise SchemaError(p, f"columns {missing} are missing (a shard of `simscale generate` has them)")
        for batch in f.iter_batches(batch_size=16):
            for row in batch.to_pylist():
                yield p, row


def export_openscene(run_dir: str | Path, out: str | Path, split: str = "simscale") -> Path:
    """Write the samples of the generation run in `run_dir` to `out` in NAVSIM's OpenScene layout (module
    docstring). `out` must be absent or an empty folder, and outside `run_dir` (never written). Returns `out`."""
    run_dir, out = Path(run_dir), Path(out)
    if not run_dir.is_dir():
        raise MissingFileError(run_dir, "run folder not found")
    if not split or "/" in split or split.startswith("."):
        raise ValueError(f"split must be a plain folder name, got {split!r}")
    r_abs, o_abs = run_dir.resolve(), out.resolve()
    if o_abs == r_abs or r_abs in o_abs.parents:
        raise OutputFolderError(out, f"is inside the run folder {run_dir}; the export never writes into a run")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputFolderError(out, "exists and is not an empty folder; pass a new folder for the export")
    shards = _shard_paths(run_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.export-{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        logs_dir = tmp / "navsim_logs" / split
        blobs_dir = tmp / "sensor_blobs" / split
        logs_dir.mkdir(parents=True)
        blobs_dir.mkdir(parents=True)
        tokens: list[str] = []
        seen: set[str] = set()
        images = 0
        with_route = True
        for shard, row in _iter_rows(shards):
            frames, jpgs = sample_frames(row, source=shard)
            token = row["token"]
            if token in seen:
                raise SchemaError(shard, f"sample token {token!r} appears twice in the run")
            seen.add(token)
            tokens.append(token)
            with_route &= bool(frames[NUM_HISTORY - 1]["roadblock_ids"])
            for (k, ch), data in jpgs.items():
                p = blobs_dir / frames[k]["cams"][ch]["data_path"]
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
                images += 1
            with open(logs_dir / f"{token}.pkl", "wb") as fh:
                pickle.dump(frames, fh, protocol=4)
        # sorted: the same export whatever order the shards hold the samples in
        tokens.sort()
        comment = f"{split}: the {len(tokens)} samples of the generation run {r_abs.name} (simscale export)"
        yaml_path = write_split(tmp / "splits" / f"{split}.yaml", log_names=tokens, tokens=tokens,
                                num_history_frames=NUM_HISTORY, num_future_frames=NUM_FUTURE, comment=comment)
        if not with_route:  # NAVSIM's filter drops route-less scenes under has_route: true
            text = yaml_path.read_text().replace("has_route: true", "has_route: false", 1)
            atomic_write_text(yaml_path, text)
        atomic_write_text(tmp / "export.json", json.dumps({
            "format": "openscene", "split": split, "run_dir": str(r_abs), "samples": len(tokens), "images": images,
            "num_history_frames": NUM_HISTORY, "num_future_frames": NUM_FUTURE, "has_route": with_route,
            "pose_frame": "the current frame's rear axle (ego2global of the current frame is the identity)",
            "shards": [str(p.relative_to(run_dir)) for p in shards]}, indent=1, sort_keys=True))
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %d samples (%d images) to %s", len(tokens), images, out)
    return out


__all__ = ["export_openscene", "sample_frames", "NUM_HISTORY", "NUM_FUTURE", "CHANNELS"]
