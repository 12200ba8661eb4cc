"""NAVSIM / OpenScene logs: reading `navsim_logs/<split>/<log>.pkl`, scenes of 4 history + 10 future frames at
2 Hz, split token lists, and writing OpenScene-format logs from nuPlan databases.

Formats follow OpenScene `DriveEngine/process_data/create_openscene_metadata.py` (one pickle per log: a list of
frame dicts) and NAVSIM `navsim/common/dataloader.py` / `dataclasses.py` (scene windows, `initial_token` =
frame[num_history - 1].token, future trajectory in the rear-axle frame of that frame). Pickles are read through the
restricted unpickler.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import yaml

from ..errors import CorruptFileError, MissingFileError, SchemaError, UnknownTokenError
from ..geometry import global_to_local, quaternion_to_matrix, wrap_angle, yaw_from_quaternion
from .atomic import atomic_write, atomic_write_text, is_temporary
from .safe_pickle import safe_load_file

log = logging.getLogger(__name__)

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


MAX_SPLIT_BYTES = 64 * 1024 * 1024  # the largest NAVSIM scene filter (navtrain, 103k tokens) is ~2.5 MB
# keys of NAVSIM's SceneFilter (navsim/common/dataclasses.py) and its hydra YAMLs that we read or knowingly ignore
_SPLIT_IGNORED_KEYS = {"_target_", "_convert_", "include_synthetic_scenes", "synthetic_scene_tokens",
                       "reactive_synthetic_initial_tokens", "non_reactive_synthetic_initial_tokens", "all_mapping",
                       "data_split", "defaults"}
_SPLIT_EXPECTED = ("a NAVSIM scene_filter YAML: a mapping with `tokens:` (a list of scene tokens) and/or `log_names:` "
                   "(a list of log names; write `tokens: null` / `log_names: null` explicitly to select every scene)")


def _read_yaml(path: Path):
    """The plain data of a YAML file, refusing what only hostile or broken files hold: anchors and aliases (an alias
    bomb expands a few hundred bytes into gigabytes), files over MAX_SPLIT_BYTES, and anything unreadable."""
    try:
        size = path.stat().st_size
        if size > MAX_SPLIT_BYTES:
            raise CorruptFileError(path, f"{size / 2**20:.1f} MB is too large for a split YAML "
                                         f"(at most {MAX_SPLIT_BYTES // 2**20} MB)")
        with open(path, "rb") as fh:  # bounded: a device or FIFO reports no size
            raw = fh.read(MAX_SPLIT_BYTES + 1)
        if len(raw) > MAX_SPLIT_BYTES:
            raise CorruptFileError(path, f"more than {MAX_SPLIT_BYTES // 2**20} MB: too large for a split YAML")
    except OSError as exc:
        raise CorruptFileError(path, f"cannot read the split file ({exc})") from exc
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        if b"&" in raw or b"*" in raw:  # cheap: events are not expanded, and the first anchor/alias stops the scan
            for ev in yaml.parse(raw, Loader=loader):
                if isinstance(ev, yaml.AliasEvent) or getattr(ev, "anchor", None) is not None:
                    what = "alias" if isinstance(ev, yaml.AliasEvent) else "anchor"
                    line = ev.start_mark.line + 1 if ev.start_mark is not None else "?"
                    raise CorruptFileError(path, f"line {line}: YAML {what} '{ev.anchor}' refused (split files are "
                                                 f"plain data; anchors and aliases can expand without bound)")
        return yaml.load(raw, Loader=loader)
    except CorruptFileError:
        raise
    except yaml.YAMLError as exc:
        raise CorruptFileError(path, f"not valid YAML ({exc})") from exc
    except Exception as exc:  # values the safe constructor cannot build (a bad date, a 5000-digit int, deep nesting)
        raise CorruptFileError(path, f"not valid YAML ({type(exc).__name__}: {exc})") from exc


def _split_int(path: Path, data: dict, key: str, default, minimum: int, *, nullable: bool = False):
    v = data.get(key, default)
    if v is None and nullable:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise SchemaError(path, f"field '{key}' is {v!r} ({type(v).__name__}); expected an integer >= {minimum}"
                                + (" or null" if nullable else ""))
    if v < minimum:
        raise SchemaError(path, f"field '{key}' is {v}; expected an integer >= {minimum}")
    return v


def _split_names(path: Path, data: dict, key: str, what: str) -> tuple[str, ...] | None:
    v = data.get(key)
    if v is None:
        return None
    if not isinstance(v, list):
        raise SchemaError(path, f"field '{key}' is a {type(v).__name__} ({str(v)[:40]!r}); expected a list of {what} "
                                f"or null")
    for i, x in enumerate(v):
        if not isinstance(x, str) or not x:
            hint = " (quote it: YAML reads unquoted digits as a number)" if isinstance(x, (int, float)) else ""
            raise SchemaError(path, f"field '{key}' entry {i} is {x!r} ({type(x).__name__}); expected a non-empty "
                                    f"string, one of the {what}{hint}")
    return tuple(v)


def load_split(path: str | Path, _seen: tuple = ()) -> SplitSpec:
    """Read a NAVSIM split YAML: a `scene_filter` file (keys log_names, tokens, num_history_frames, ...) or a
    `train_test_split` file whose `defaults` names one in a `scene_filter/` folder beside it.

    As NAVSIM's SceneFilter, a null `tokens` / `log_names` selects every scene / log, but the file must name at least
    one of them: an empty file or a mapping without either is an error, not a split of every scene. Anchors and
    aliases, files over 64 MB and fields of the wrong type raise (CorruptFileError / SchemaError naming the field)."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(path, "split file not found")
    if path.is_dir():
        raise CorruptFileError(path, f"is a folder; expected {_SPLIT_EXPECTED}")
    data = _read_yaml(path)
    if data is None:
        raise SchemaError(path, f"the split file is empty; expected {_SPLIT_EXPECTED}")
    if not isinstance(data, dict):
        raise SchemaError(path, f"found a YAML {type(data).__name__}; expected {_SPLIT_EXPECTED}")
    if "defaults" in data and "tokens" not in data and "log_names" not in data:
        defaults = data["defaults"]
        for d in defaults if isinstance(defaults, list) else ():
            if isinstance(d, dict) and "scene_filter" in d:
                name = d["scene_filter"]
                if not isinstance(name, str) or not name:
                    raise SchemaError(path, f"defaults: scene_filter is {name!r}; expected the name of a YAML in "
                                            f"{path.parent / 'scene_filter'}")
                target = path.parent / "scene_filter" / f"{name}.yaml"
                key = str(target.resolve())
                if key in _seen or len(_seen) > 8:
                    raise SchemaError(path, f"defaults: scene_filter '{name}' loops back to a file already read")
                return load_split(target, _seen + (str(path.resolve()), key))
        raise SchemaError(path, "defaults names no scene_filter (expected `defaults: [{scene_filter: NAME}]` with "
                                "scene_filter/NAME.yaml beside it)")
    if "tokens" not in data and "log_names" not in data:
        raise SchemaError(path, f"the split has neither `tokens:` nor `log_names:` (keys: "
                                f"{sorted(map(str, data))[:8]}); expected {_SPLIT_EXPECTED}")
    has_route = data.get("has_route", True)
    if not isinstance(has_route, bool):
        raise SchemaError(path, f"field 'has_route' is {has_route!r} ({type(has_route).__name__}); expected true or "
                                f"false")
    spec = SplitSpec(
        name=path.stem, num_history_frames=_split_int(path, data, "num_history_frames", 4, 1),
        num_future_frames=_split_int(path, data, "num_future_frames", 10, 0),
        frame_interval=_split_int(path, data, "frame_interval", None, 1, nullable=True),
        has_route=has_route, max_scenes=_split_int(path, data, "max_scenes", None, 0, nullable=True),
        log_names=_split_names(path, data, "log_names", "log names"),
        tokens=_split_names(path, data, "tokens", "scene tokens"))
    unknown = sorted(str(k) for k in data if k not in SplitSpec.__dataclass_fields__ and k not in _SPLIT_IGNORED_KEYS)
    if unknown:
        log.warning("%s: ignoring keys %s (not fields of NAVSIM's SceneFilter)", path, unknown[:8])
    if spec.tokens is None and spec.log_names is None:
        log.info("%s: tokens and log_names are null: the split selects every scene of every log", path)
    return spec


def write_split(path: str | Path, *, log_names: Sequence[str], tokens: Sequence[str], num_history_frames: int = 4,
                num_future_frames: int = 10, comment: str = "") -> Path:
    """Write a split in NAVSIM's scene_filter YAML format (loadable by NAVSIM's hydra config and :func:`load_split`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"_target_": "navsim.common.dataclasses.SceneFilter", "_convert_": "all",
            "num_history_frames": num_history_frames, "num_future_frames": num_future_frames, "frame_interval": 1,
            "has_route": True, "max_scenes": None, "log_names": list(log_names), "tokens": list(tokens)}
    text = (f"# {comment}\n" if comment else "") + yaml.safe_dump(data, sort_keys=False)
    return atomic_write_text(path, text)


# ---------------------------------------------------------------------------------------------- reading
# value checks of the frame fields this package reads: (key, trailing shape, allowed dtype kinds, finite)
_FRAME_ARRAYS = (("ego2global_translation", (3,), "iuf", True), ("ego2global_rotation", (4,), "iuf", True),
                 ("ego_dynamic_state", (4,), "iuf", True), ("driving_command", (4,), "biuf", True),
                 ("timestamp", (), "iu", False))
_FRAME_STRINGS = ("token", "log_name", "map_location")


def _bad_value(v, shape: tuple, kinds: str, finite: bool) -> str | None:
    """Why one frame value is not a numeric array of `shape` (None when it is)."""
    if isinstance(v, (str, bytes, dict)) or v is None:
        return f"a {type(v).__name__}"
    try:
        a = np.asarray(v)
    except Exception as exc:  # ragged lists
        return f"not an array ({type(exc).__name__})"
    if a.dtype.kind not in kinds:
        return f"an array of {a.dtype}" if a.dtype.kind != "O" else f"a {type(v).__name__} holding non-numbers"
    if a.shape != shape:
        return f"of shape {a.shape}"
    if finite and a.dtype.kind == "f" and not np.isfinite(a).all():
        return "not finite"
    return None


def _check_frames(path, frames: list) -> None:
    """Raise CorruptFileError naming the frame and key whose value has the wrong type or shape. One vectorised pass
    per key over the whole log; the per-frame search runs only on a bad log."""
    n = len(frames)
    for key, shape, kinds, finite in _FRAME_ARRAYS:
        vals = [f[key] for f in frames]
        try:
            a = np.asarray(vals)
            ok = (a.dtype.kind in kinds and a.shape == (n, *shape)
                  and (not finite or a.dtype.kind != "f" or bool(np.isfinite(a).all())))
        except Exception:
            ok = False
        if not ok:
            for k, v in enumerate(vals):
                why = _bad_value(v, shape, kinds, finite)
                if why:
                    what = "an integer" if shape == () else f"{shape[0]} finite numbers"
                    raise CorruptFileError(path, f"frame {k}: '{key}' is {why}; expected {what}")
    for key in _FRAME_STRINGS:
        for k, f in enumerate(frames):
            if not isinstance(f[key], str):
                raise CorruptFileError(path, f"frame {k}: '{key}' is a {type(f[key]).__name__}; expected a string")
    for k, f in enumerate(frames):
        rb = f["roadblock_ids"]
        if not isinstance(rb, (list, tuple, np.ndarray)) or not all(isinstance(r, str) for r in rb):
            raise CorruptFileError(path, f"frame {k}: 'roadblock_ids' is {str(rb)[:40]!r}; expected a list of "
                                         f"roadblock id strings")
        cams = f["cams"]
        if not isinstance(cams, dict) or not all(
                isinstance(c, dict) and isinstance(c.get("data_path", ""), str) for c in cams.values()):
            raise CorruptFileError(path, f"frame {k}: 'cams' is not a mapping of channel -> {{data_path: str, ...}}")
        anns = f.get("anns")
        if anns is not None:
            _check_anns(path, k, anns)


def _check_anns(path, k: int, anns) -> None:
    if not isinstance(anns, dict):
        raise CorruptFileError(path, f"frame {k}: 'anns' is a {type(anns).__name__}; expected a dict")
    sizes = {}
    for key, width in (("gt_boxes", 7), ("gt_velocity_3d", 3)):
        if key not in anns:
            continue
        v = anns[key]
        try:
            a = None if isinstance(v, (str, bytes, dict)) or v is None else np.asarray(v)
        except Exception:  # ragged lists
            a = None
        if a is None or a.dtype.kind not in "iuf" or a.size % width or (a.ndim != 2 and a.size):
            raise CorruptFileError(path, f"frame {k}: 'anns.{key}' is not an [N, {width}] array of numbers")
        sizes[key] = a.size // width
    for key in ("gt_names", "track_tokens"):
        if key in anns:
            v = anns[key]
            if isinstance(v, (str, bytes, dict)) or not hasattr(v, "__len__"):
                raise CorruptFileError(path, f"frame {k}: 'anns.{key}' is a {type(v).__name__}; expected a list "
                                             f"of strings")
            sizes[key] = len(v)
    if len(set(sizes.values())) > 1:
        raise CorruptFileError(path, f"frame {k}: the annotation arrays disagree on the number of boxes ({sizes})")


def load_log(path: str | Path) -> list[dict]:
    """One OpenScene log: the list of frame dicts, through the restricted unpickler. A frame without a key this package
    reads is a SchemaError; one whose value has the wrong type or shape (a string for the pose, a None timestamp, a
    3-vector for the quaternion) a CorruptFileError naming the frame and key."""
    frames = safe_load_file(path)
    if not isinstance(frames, list):
        raise SchemaError(path, f"expected a list of frame dicts, found {type(frames).__name__}")
    for k, f in enumerate(frames):  # every frame: a bad later one must not surface as an AttributeError
        if not isinstance(f, dict):
            raise SchemaError(path, f"frame {k} is a {type(f).__name__}, expected a dict")
        missing = [key for key in REQUIRED_FRAME_KEYS if key not in f]
        if missing:
            raise SchemaError(path, f"frame {k} lacks keys {missing}")
    _check_frames(path, frames)
    return frames


def frame_pose(frame: dict) -> np.ndarray:
    """(x, y, heading) of a frame's rear axle, float64 (NAVSIM `Scene._build_ego_status`: translation, quaternion
    yaw)."""
    t = frame["ego2global_translation"]
    q = frame["ego2global_rotation"]
    return np.array([float(t[0]), float(t[1]), float(yaw_from_quaternion(q[0], q[1], q[2], q[3]))])


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
        files = sorted(f for f in self.root.glob("*.pkl") if not is_temporary(f.name))  # not a writer's temporary
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
            # OpenScene's extrinsics are camera -> lidar: lidar2ego^-1 @ camera -> ego (the camera table's)
            cam_dict[rec.channel] = {
                "data_path": rec.filename_jpg,
                "sensor2lidar_rotation": lidar2ego[:3, :3].T @ quaternion_to_matrix(cal.rotation),
                "sensor2lidar_translation": lidar2ego[:3, :3].T @ (np.asarray(cal.translation) - l_t),
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
    with atomic_write(path) as fh:  # a hidden temporary beside `path`, renamed into place
        pickle.dump(frames, fh, protocol=4)
    return path
