"""NAVSIM / OpenScene logs: reading `navsim_logs/<split>/<log>.pkl`, scenes of 4 history + 10 future frames at
2 Hz, split token lists, and writing OpenScene-format logs from nuPlan databases.

Formats follow OpenScene `DriveEngine/process_data/create_openscene_metadata.py` (one pickle per log: a list of
frame dicts) and NAVSIM `navsim/common/dataloader.py` / `dataclasses.py` (scene windows, `initial_token` =
frame[num_history - 1].token, future trajectory in the rear-axle frame of that frame). Pickles are read through the
restricted unpickler.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import yaml

from ..errors import CorruptFileError, MissingFileError, SchemaError, UnknownTokenError
from ..geometry import global_to_local, quaternion_to_matrix, wrap_angle, yaw_from_quaternion
from .safe_pickle import safe_load_file

NAVSIM_INTERVAL_LENGTH = 0.5  # navsim/common/dataclasses.py NAVSIM_INTERVAL_LENGTH
OPENSCENE_SAMPLE_INTERVAL = 10  # every 10th lidar_pc (2 Hz), create_openscene_metadata.py
REQUIRED_FRAME_KEYS = ("token", "timestamp", "log_name", "map_location", "roadblock_ids", "ego2global_translation",
                       "ego2global_rotation", "ego_dynamic_state", "driving_command", "cams")


# ---------------------------------------------------------------------------------------------- splits
@dataclass(frozen=True)
class SplitSpec:
    """A NAVSIM scene filter (navsim/common/dataclasses.py `SceneFilter`), as found in its YAML files."""

    name: str
    num_history_frames: int = 4
    num_future_frames: int = 10
    frame_interval: int | None = None
    has_route: bool = True
    max_scenes: int | None = None
    log_names: tuple[str, ...] | None = None
    tokens: tuple[str, ...] | None = None

    @property
    def num_frames(self) -> int:
        return self.num_history_frames + self.num_future_frames


def load_split(path: str | Path) -> SplitSpec:
    """Read a NAVSIM split YAML: a `scene_filter` file (keys log_names, tokens, num_history_frames, ...) or a
    `train_test_split` file whose `defaults` names one in a `scene_filter/` folder beside it."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(path, "split file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise CorruptFileError(path, f"not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise SchemaError(path, "expected a mapping with log_names/tokens")
    if "defaults" in data and "tokens" not in data and "log_names" not in data:
        for d in data["defaults"] or []:
            if isinstance(d, dict) and "scene_filter" in d:
                return load_split(path.parent / "scene_filter" / f"{d['scene_filter']}.yaml")
        raise SchemaError(path, "split file names no scene_filter")
    frame_interval = data.get("frame_interval")
    return SplitSpec(
        name=path.stem, num_history_frames=int(data.get("num_history_frames", 4)),
        num_future_frames=int(data.get("num_future_frames", 10)),
        frame_interval=None if frame_interval is None else int(frame_interval),
        has_route=bool(data.get("has_route", True)),
        max_scenes=data.get("max_scenes"),
        log_names=tuple(str(x) for x in data["log_names"]) if data.get("log_names") is not None else None,
        tokens=tuple(str(x) for x in data["tokens"]) if data.get("tokens") is not None else None)


def write_split(path: str | Path, *, log_names: Sequence[str], tokens: Sequence[str], num_history_frames: int = 4,
                num_future_frames: int = 10, comment: str = "") -> Path:
    """Write a split in NAVSIM's scene_filter YAML format (loadable by NAVSIM's hydra config and :func:`load_split`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"_target_": "navsim.common.dataclasses.SceneFilter", "_convert_": "all",
            "num_history_frames": num_history_frames, "num_future_frames": num_future_frames, "frame_interval": 1,
            "has_route": True, "max_scenes": None, "log_names": list(log_names), "tokens": list(tokens)}
    text = (f"# {comment}\n" if comment else "") + yaml.safe_dump(data, sort_keys=False)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------- reading
def load_log(path: str | Path) -> list[dict]:
    """One OpenScene log: the list of frame dicts, through the restricted unpickler."""
    frames = safe_load_file(path)
    if not isinstance(frames, list):
        raise SchemaError(path, f"expected a list of frame dicts, found {type(frames).__name__}")
    for k, f in enumerate(frames):  # every frame: a bad later one must not surface as an AttributeError
        if not isinstance(f, dict):
            raise SchemaError(path, f"frame {k} is a {type(f).__name__}, expected a dict")
        missing = [key for key in REQUIRED_FRAME_KEYS if key not in f]
        if missing:
            raise SchemaError(path, f"frame {k} lacks keys {missing}")
    return frames


def frame_pose(frame: dict) -> np.ndarray:
    t = frame["ego2global_translation"]
    q = frame["ego2global_rotation"]
    return np.array([t[0], t[1], float(yaw_from_quaternion(q[0], q[1], q[2], q[3]))])


@dataclass(frozen=True)
class NavsimScene:
    """A NAVSIM scene: `num_history` + `num_future` frames at 2 Hz; the current frame is the last history frame."""

    frames: tuple
    num_history_frames: int
    num_future_frames: int
    sensor_blobs_root: Path | None = None

    @property
    def token(self) -> str:
        return self.frames[self.num_history_frames - 1]["token"]

    @property
    def current(self) -> dict:
        return self.frames[self.num_history_frames - 1]

    @property
    def log_name(self) -> str:
        return self.current["log_name"]

    @property
    def map_location(self) -> str:
        return self.current["map_location"]

    @property
    def roadblock_ids(self) -> list[str]:
        return list(self.current["roadblock_ids"])

    def global_poses(self) -> np.ndarray:
        return np.stack([frame_pose(f) for f in self.frames])

    def future_trajectory(self, num_poses: int | None = None) -> np.ndarray:
        """[num_future, 3] poses at 0.5 s in the rear-axle frame of the current frame (`get_future_trajectory`)."""
        n = self.num_future_frames if num_poses is None else num_poses
        poses = self.global_poses()
        cur = poses[self.num_history_frames - 1]
        return global_to_local(poses[self.num_history_frames:self.num_history_frames + n], cur)

    def history_trajectory(self) -> np.ndarray:
        poses = self.global_poses()
        return global_to_local(poses[: self.num_history_frames], poses[self.num_history_frames - 1])

    def ego_status(self) -> dict[str, np.ndarray]:
        f = self.current
        d = np.asarray(f["ego_dynamic_state"], dtype=np.float64)
        return {"velocity": d[:2], "acceleration": d[2:4], "driving_command": np.asarray(f["driving_command"])}

    def camera_path(self, channel: str, frame_index: int | None = None) -> Path:
        f = self.frames[self.num_history_frames - 1 if frame_index is None else frame_index]
        rel = f["cams"][channel]["data_path"]
        return (self.sensor_blobs_root / rel) if self.sensor_blobs_root else Path(rel)


class NavsimSceneLoader:
    """Scenes of a NAVSIM split over `navsim_logs/<split>/*.pkl` (NAVSIM's `filter_scenes`)."""

    def __init__(self, navsim_logs: str | Path, split: SplitSpec | None = None,
                 sensor_blobs: str | Path | None = None):
        self.root = Path(navsim_logs)
        if not self.root.is_dir():
            raise MissingFileError(self.root, "navsim_logs folder not found")
        self.split = split or SplitSpec("all")
        self.sensor_blobs = Path(sensor_blobs) if sensor_blobs else None
        files = sorted(self.root.glob("*.pkl"))
        if self.split.log_names is not None:
            want = set(self.split.log_names)
            files = [f for f in files if f.stem in want]
        self.files = files
        self._scenes: dict[str, tuple[Path, int]] | None = None
        self._logs: dict[Path, list] = {}

    def _log(self, f: Path) -> list:
        if f not in self._logs:
            self._logs[f] = load_log(f)
        return self._logs[f]

    def _index(self) -> dict[str, tuple[Path, int]]:
        if self._scenes is None:
            sp = self.split
            n = sp.num_frames
            stride = sp.frame_interval or n
            tokens = set(sp.tokens) if sp.tokens is not None else None
            out: dict[str, tuple[Path, int]] = {}
            for f in self.files:
                if sp.max_scenes is not None and len(out) >= sp.max_scenes:
                    break  # over all logs, as NAVSIM's filter_scenes (stop_loading)
                frames = self._log(f)
                for start in range(0, len(frames) - n + 1, stride):
                    cur = frames[start + sp.num_history_frames - 1]
                    if sp.has_route and not cur.get("roadblock_ids"):
                        continue
                    if tokens is not None and cur["token"] not in tokens:
                        continue
                    out[cur["token"]] = (f, start)
                    if sp.max_scenes is not None and len(out) >= sp.max_scenes:
                        break
            self._scenes = out
        return self._scenes

    @property
    def tokens(self) -> list[str]:
        return list(self._index())

    def __len__(self) -> int:
        return len(self._index())

    def scene(self, token: str) -> NavsimScene:
        try:
            f, start = self._index()[token]
        except KeyError:
            raise UnknownTokenError(self.root, f"unknown scene token {token} in split '{self.split.name}'") from None
        frames = self._log(f)[start:start + self.split.num_frames]
        return NavsimScene(tuple(frames), self.split.num_history_frames, self.split.num_future_frames,
                           self.sensor_blobs)

    def __iter__(self) -> Iterator[NavsimScene]:
        for t in self.tokens:
            yield self.scene(t)


# ---------------------------------------------------------------------------------------------- writing
def _mat(rot3, t):
    m = np.eye(4)
    m[:3, :3] = rot3
    m[:3, 3] = t
    return m


def db_to_openscene(db, map_api=None, *, sample_interval: int = OPENSCENE_SAMPLE_INTERVAL) -> list[dict]:
    """Convert an open :class:`LogDB` into OpenScene frame dicts (keyframes every `sample_interval` lidar_pcs)."""
    from ..map.commands import driving_command
    from .schema import CATEGORIES, TRAFFIC_LIGHT_NAMES

    ts = db.lidar_pc_timestamps
    idx = np.arange(0, len(ts), sample_interval)
    ego = db.ego_arrays(idx)
    scene_names = {s.token: s.name for s in db.scenes}
    scene_route = {s.token: list(s.roadblock_ids) for s in db.scenes}
    lidar_ext = db.lidar_extrinsic
    l_t = np.asarray(lidar_ext[0]) if lidar_ext else np.zeros(3)
    l_q = np.asarray(lidar_ext[1]) if lidar_ext else np.array([1.0, 0, 0, 0])
    lidar2ego = _mat(quaternion_to_matrix(l_q), l_t)
    boxes = db.boxes(idx, with_tokens=True)
    lights = db.traffic_lights(idx)
    images = db.images(idx)
    cams = {c.channel: c for c in db.cameras}
    frames = []
    in_scene: dict = {}  # frame_idx counts within each scene (reference §6)
    for k, i in enumerate(idx):
        tok = db.lidar_pc_tokens[i]
        x, y, z, h = ego["x"][k], ego["y"][k], ego["z"][k], ego["heading"][k]
        q = np.array([np.cos(h / 2), 0.0, 0.0, np.sin(h / 2)])
        ego2global = _mat(quaternion_to_matrix(q), [x, y, z])
        scene_tok = db._lidar_pc["scene_token"][i]
        frame_idx = in_scene.get(scene_tok, 0)
        in_scene[scene_tok] = frame_idx + 1
        lidar_file = db._lidar_pc["filename"][i] or f"{db.name}/MergedPointCloud/{tok}.pcd"
        route = scene_route.get(scene_tok, [])
        sel = boxes["frame"] == k
        c, s = np.cos(h), np.sin(h)
        dx, dy = boxes["x"][sel] - x, boxes["y"][sel] - y
        gt = np.stack([c * dx + s * dy, -s * dx + c * dy, boxes["z"][sel], boxes["length"][sel], boxes["width"][sel],
                       boxes["height"][sel], wrap_angle(boxes["yaw"][sel] - h)], axis=-1) if sel.any() else np.zeros((0, 7))
        vx, vy = boxes["vx"][sel], boxes["vy"][sel]
        vel = np.stack([c * vx + s * vy, -s * vx + c * vy, np.zeros(sel.sum())], axis=-1) if sel.any() else np.zeros((0, 3))
        tsel = lights["frame"] == k
        cam_dict = {}
        for rec in images[k]:
            cal = cams[rec.channel]
            cam_dict[rec.channel] = {
                "data_path": rec.filename_jpg,
                "sensor2lidar_rotation": quaternion_to_matrix(cal.rotation),
                "sensor2lidar_translation": np.asarray(cal.translation),
                "cam_intrinsic": np.asarray(cal.intrinsic), "distortion": np.asarray(cal.distortion)}
        cmd = np.array([0, 0, 0, 1])
        if map_api is not None and route:
            cmd = driving_command(map_api, route, (x, y, h))
        can_bus = [x, y, z, *q, ego["ax"][k], ego["ay"][k], 0.0, ego["vx"][k], ego["vy"][k], 0.0, 0.0, 0.0,
                   ego["yaw_rate"][k], 0.0, 0.0]
        frames.append({
            "token": tok, "frame_idx": int(frame_idx), "timestamp": int(ts[i]), "log_name": db.name,
            "log_token": db.log.token, "scene_name": f"log-0000-{scene_names.get(scene_tok, 'scene')}",
            "scene_token": scene_tok, "map_location": db.map_location, "roadblock_ids": route,
            "vehicle_name": db.log.vehicle_name, "can_bus": [float(v) for v in can_bus],
            "lidar_path": lidar_file,  # lidar_pc.filename
            "lidar2ego_translation": l_t.tolist(), "lidar2ego_rotation": l_q.tolist(),
            "ego2global_translation": [float(x), float(y), float(z)], "ego2global_rotation": [float(v) for v in q],
            "ego2global": ego2global, "lidar2ego": lidar2ego, "lidar2global": ego2global @ lidar2ego,
            "ego_dynamic_state": [float(ego["vx"][k]), float(ego["vy"][k]), float(ego["ax"][k]), float(ego["ay"][k])],
            "traffic_lights": [(int(cid), bool(st == TRAFFIC_LIGHT_NAMES.index("red"))) for cid, st in
                               zip(lights["lane_connector_id"][tsel], lights["status"][tsel])],
            "driving_command": cmd,
            "sample_prev": db.lidar_pc_tokens[idx[k - 1]] if k > 0 else None,
            "sample_next": db.lidar_pc_tokens[idx[k + 1]] if k + 1 < len(idx) else None,
            "cams": cam_dict,
            "anns": {"gt_boxes": gt, "gt_names": np.array([CATEGORIES[c] for c in boxes["category"][sel]]),
                     "gt_velocity_3d": vel, "instance_tokens": [str(t) for t in boxes["token"][sel]],
                     "track_tokens": [str(t) for t in boxes["track"][sel]]},
        })
    return frames


def write_openscene_log(frames: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".pkl", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        pickle.dump(frames, fh, protocol=4)
    os.replace(tmp, path)
    return path
