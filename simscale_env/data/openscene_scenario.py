"""Scenarios from OpenScene logs alone (what NAVSIM users download: ``navsim_logs/<split>/*.pkl``, no nuPlan ``.db``).

A NAVSIM scene is a list of 2 Hz frames (ego pose and dynamic state, annotated boxes with velocities and track
tokens, traffic-light statuses, roadblock ids, driving command). NAVSIM simulates and scores on them at 10 Hz
(`navsim/planning/scenario_builder/navsim_scenario.py`, `navsim/planning/metric_caching/metric_cache_processor.py`
@ 0a380a9), and so does :func:`scenario_from_frames`, giving the same :class:`~simscale_env.data.scenario.Scenario`
type the ``.db`` path gives:

- **objects**: each frame's annotations turned global with the frame's ego pose (`annotations_to_detection_tracks`:
  box centre rotated and translated, heading normalised, velocity rotated; static objects get no velocity), then per
  track linearly interpolated to 10 Hz between its first and last sighting, heading unwrapped, as
  `_interpolate_gt_observation` does with `StateInterpolator` (scipy ``interp1d``); box sizes are the first
  sighting's. NAVSIM keeps a track seen in a single frame at every step of its 4 s horizon; over our longer episodes
  it is kept for its frame's 0.5 s (that frame's step and the 4 after it), like the lights below (ours);
- **traffic lights**: each frame's (connector, is_red) pairs as red or green, held for the frame's 5 steps
  (`_interpolate_traffic_light_status`); connectors a frame does not list are unknown;
- **ego**: the frame's rear-axle pose (translation, quaternion yaw) and ``ego_dynamic_state`` (velocity and
  acceleration in the ego frame, through float32 as NAVSIM's ``EgoStatus`` holds them), interpolated linearly
  between frames like nuPlan's ``InterpolatedTrajectory`` of ego states (NAVSIM's past for HC); NAVSIM's ego state
  has no yaw rate, ours is the time derivative of the interpolated heading (numpy's ``gradient``);
- **route**: the current frame's ``roadblock_ids``; no goal (NAVSIM's scenario has a dummy one); scenario type
  ``unknown`` (NAVSIM's); the cameras of the current frame (camera -> ego = ``lidar2ego @ sensor2lidar``).

What differs from the ``.db`` path: the source is 2 Hz, so motion between frames is linear (nuPlan logs have 20 Hz
states), and nuPlan's 20 Hz closed-loop traces (the devkit's IDM runs) need the databases.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..cache import LRUCache
from ..errors import MissingFileError, SchemaError, UnknownTokenError
from ..geometry import matrix_to_quaternion, quaternion_to_matrix, wrap_angle
from .atomic import is_temporary
from .nuplan_db import CameraCalibration
from .openscene import NAVSIM_INTERVAL_LENGTH, load_log
from .openscene import frame_pose as frame_ego_pose  # (x, y, heading) of the rear axle, NAVSIM's ego pose
from .scenario import (EXTRACTION_OFFSET_S, HISTORY_S, NAVSIM_SCENE_DURATION_S, SCENARIO_DURATION_S, AgentTracks,
                       EgoTrack, Scenario, ScenarioBuilder, ScenarioRef, TrafficLights)
from .schema import CATEGORIES, GENERIC_OBJECT, TL_GREEN, TL_RED, TL_UNKNOWN

log = logging.getLogger(__name__)

STEP_S = 0.1  # the simulation's step
STEPS_PER_FRAME = int(round(NAVSIM_INTERVAL_LENGTH / STEP_S))  # 5
AGENT_NAMES = ("vehicle", "pedestrian", "bicycle")  # nuplan AGENT_TYPES: the objects NAVSIM gives a velocity
PAST_FRAMES, FUTURE_FRAMES = 3, 8  # a NAVSIM scene: 3 frames before the current one, 4 s after it
# nuPlan's camera images (the camera table's width x height); OpenScene's cams carry no image size
OPENSCENE_IMAGE_SIZE = (1920, 1080)


def frame_ego_dynamics(frame: dict) -> np.ndarray:
    """(vx, vy, ax, ay) in the ego frame, through float32 as NAVSIM's EgoStatus holds them."""
    return np.asarray(frame["ego_dynamic_state"], dtype=np.float32)[:4].astype(np.float64)


def frame_boxes(frame: dict) -> dict[str, np.ndarray]:
    """A frame's annotations in global coordinates (NAVSIM `annotations_to_detection_tracks`): track tokens, names,
    centre x, y, z, heading (normalised), length, width, height, global velocity (0 for static objects)."""
    anns = frame.get("anns")
    if anns is None or "gt_boxes" not in anns:
        raise SchemaError(frame.get("log_name", "?"), f"frame {frame.get('token')} has no annotations (anns)")
    boxes = np.asarray(anns["gt_boxes"], dtype=np.float64).reshape(-1, 7)
    names = np.asarray(anns["gt_names"]).astype(str).reshape(-1)
    vel = np.asarray(anns["gt_velocity_3d"], dtype=np.float64).reshape(-1, 3)
    ex, ey, eh = frame_ego_pose(frame)
    ez = float(frame["ego2global_translation"][2])
    s, c = np.sin(eh), np.cos(eh)
    # rotate_state_se2 then translation and normalize_angle, as gt_boxes_oriented_box
    gx = boxes[:, 0] * c - boxes[:, 1] * s + ex
    gy = boxes[:, 0] * s + boxes[:, 1] * c + ey
    gh = np.arctan2(np.sin(boxes[:, 6] + eh), np.cos(boxes[:, 6] + eh))
    gh = np.arctan2(np.sin(gh), np.cos(gh))
    agent = np.isin(names, AGENT_NAMES)
    return {"track": np.array([str(t) for t in anns["track_tokens"]], dtype=object), "names": names,
            "x": gx, "y": gy, "z": boxes[:, 2] + ez, "heading": gh, "length": boxes[:, 3].copy(),
            "width": boxes[:, 4].copy(), "height": boxes[:, 5].copy(),
            "vx": np.where(agent, vel[:, 0] * c - vel[:, 1] * s, 0.0),
            "vy": np.where(agent, vel[:, 0] * s + vel[:, 1] * c, 0.0)}


def frame_cameras(frame: dict) -> tuple[CameraCalibration, ...]:
    """The frame's cameras as CameraCalibration rows (camera -> ego = lidar2ego @ sensor2lidar)."""
    lt = np.asarray(frame.get("lidar2ego_translation", (0.0, 0.0, 0.0)), dtype=np.float64)
    lq = np.asarray(frame.get("lidar2ego_rotation", (1.0, 0.0, 0.0, 0.0)), dtype=np.float64)
    lr = quaternion_to_matrix(lq)
    out = []
    for ch in sorted(frame.get("cams") or {}):
        cam = frame["cams"][ch]
        if "sensor2lidar_rotation" not in cam or "cam_intrinsic" not in cam:
            continue
        r = lr @ np.asarray(cam["sensor2lidar_rotation"], dtype=np.float64).reshape(3, 3)
        t = lr @ np.asarray(cam["sensor2lidar_translation"], dtype=np.float64).reshape(3) + lt
        dist = np.asarray(cam.get("distortion", np.zeros(5)), dtype=np.float64).reshape(-1)
        out.append(CameraCalibration(token="", channel=ch, model="openscene", translation=t,
                                     rotation=matrix_to_quaternion(r),
                                     intrinsic=np.asarray(cam["cam_intrinsic"], dtype=np.float64).reshape(3, 3),
                                     distortion=dist, width=OPENSCENE_IMAGE_SIZE[0], height=OPENSCENE_IMAGE_SIZE[1]))
    return tuple(out)


def _lerp_frames(values: np.ndarray, n_steps: int) -> np.ndarray:
    """Frame values [F, ...] at the 10 Hz steps [5 (F - 1) + 1, ...]: linear between consecutive frames (interp1d on
    the frames' nominal times, k * 0.5 s, as NAVSIM's interpolators use)."""
    if len(values) == 1:
        return np.repeat(values, n_steps, axis=0)
    t = np.arange(n_steps) / STEPS_PER_FRAME
    k = np.minimum(np.floor(t).astype(np.int64), len(values) - 2)
    w = (t - k).reshape(-1, *([1] * (values.ndim - 1)))
    return values[k] * (1.0 - w) + values[k + 1] * w


def _agents(frames: list[dict], n_steps: int) -> AgentTracks:
    """The frames' annotated objects as dense [T, M] tracks at 10 Hz (module docstring), vectorized over tracks."""
    per = [frame_boxes(f) for f in frames]
    F, T = len(frames), n_steps
    fields = ("x", "y", "z", "heading", "vx", "vy")
    counts = [len(b["track"]) for b in per]
    cat_all = {k: np.concatenate([b[k] for b in per]) if sum(counts) else np.zeros(0) for k in
               (*fields, "length", "width", "height")}
    tracks = np.concatenate([b["track"] for b in per]).astype(str) if sum(counts) else np.zeros(0, dtype=str)
    names = np.concatenate([b["names"] for b in per]).astype(str) if sum(counts) else np.zeros(0, dtype=str)
    frame_of = np.repeat(np.arange(F), counts)
    pos = np.concatenate([np.arange(c) for c in counts]) if F else np.zeros(0, np.int64)
    # tracks in the order of their first sighting (NAVSIM's dict order)
    uniq, first, inv = np.unique(tracks, return_index=True, return_inverse=True)
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
    col = rank[inv]
    M = len(uniq)
    tokens = [""] * M
    for u, r in zip(uniq, rank):
        tokens[r] = str(u)
    seen = np.zeros((F, M), dtype=bool)
    seen[frame_of, col] = True
    order = np.full((F, M), -1, dtype=np.int64)
    order[frame_of, col] = pos
    # the first sighting's size and category (NAVSIM keeps the initial detection's box)
    size = {f: np.empty(M) for f in ("length", "width", "height")}
    for f in size:
        size[f][rank] = cat_all[f][first]
    codes = {n: i for i, n in enumerate(CATEGORIES)}
    cat = np.full(M, GENERIC_OBJECT, dtype=np.int8)
    cat[rank] = [codes.get(n, GENERIC_OBJECT) for n in names[first]]
    # headings unwrapped along each track's sightings (np.unwrap per track), so interpolation takes the short way
    srt = np.lexsort((frame_of, col))
    h = cat_all["heading"][srt]
    start = np.r_[True, col[srt][1:] != col[srt][:-1]] if len(srt) else np.zeros(0, bool)
    d = np.r_[0.0, np.diff(h)] if len(h) else h
    dm = np.mod(d + np.pi, 2 * np.pi) - np.pi
    dm[(dm == -np.pi) & (d > 0)] = np.pi
    corr = np.where(np.abs(d) >= np.pi, dm - d, 0.0)
    corr[start] = 0.0
    csum = np.cumsum(corr)
    group_start = np.maximum.accumulate(np.where(start, np.arange(len(h)), 0)) if len(h) else np.zeros(0, np.int64)
    unwrapped = np.empty_like(h)
    unwrapped[srt] = h + csum - (csum[group_start] - corr[group_start])
    vals = {f: np.zeros((F, M)) for f in fields}
    for f in fields:
        vals[f][frame_of, col] = unwrapped if f == "heading" else cat_all[f]
    # per step: the track's sightings before and after it (linear between them, as interp1d between first and last)
    k = np.arange(F)[:, None]
    prev = np.maximum.accumulate(np.where(seen, k, -1), axis=0)
    nxt = np.minimum.accumulate(np.where(seen, k, F)[::-1], axis=0)[::-1]
    t = np.arange(T) / STEPS_PER_FRAME  # in frames
    lo, hi = np.floor(t).astype(np.int64), np.minimum(np.ceil(t).astype(np.int64), F - 1)
    p, n = prev[lo], nxt[hi]  # [T, M]
    multi = seen.sum(0) > 1
    fk = np.minimum(lo, F - 1)
    valid = ((p >= 0) & (n < F) & multi) | (seen[fk] & ~multi)
    pc, nc = np.clip(p, 0, F - 1), np.clip(n, 0, F - 1)
    w = np.where(nc > pc, (t[:, None] - pc) / np.maximum(nc - pc, 1), 0.0)
    m_idx = np.arange(M)[None, :]
    kw = {}
    for f in fields:
        a, b = vals[f][pc, m_idx], vals[f][nc, m_idx]
        single = vals[f][fk[:, None], m_idx]
        v = np.where(multi, a * (1.0 - w) + b * w, single)
        kw[f] = np.where(valid, v, np.nan)
    kw["heading"] = np.where(valid, wrap_angle(np.nan_to_num(kw["heading"])), np.nan)
    for f in size:
        kw[f] = np.where(valid, size[f][None, :], np.nan)
    # the devkit orders IDM agents by their row in the log: here the box's place in its (or the previous) frame
    log_order = np.where(valid, np.where(order[fk] >= 0, order[fk], 10 ** 6 + np.arange(M)), -1)
    return AgentTracks(track_tokens=tuple(tokens), category=cat, valid=valid, log_order=log_order, **kw)


def _lights(frames: list[dict], n_steps: int) -> TrafficLights:
    ids = sorted({int(cid) for f in frames for cid, _ in (f.get("traffic_lights") or ())})
    col = {c: i for i, c in enumerate(ids)}
    per_frame = np.full((len(frames), len(ids)), TL_UNKNOWN, dtype=np.int8)
    for k, f in enumerate(frames):
        for cid, is_red in f.get("traffic_lights") or ():
            per_frame[k, col[int(cid)]] = TL_RED if bool(is_red) else TL_GREEN
    fk = np.minimum(np.arange(n_steps) // STEPS_PER_FRAME, len(frames) - 1)
    return TrafficLights(np.array(ids, dtype=np.int64), per_frame[fk])


def scenario_from_frames(frames: Sequence[dict], current: int, *, path: str | Path = "", offset_s: float = 0.0,
                         duration_s: float = NAVSIM_SCENE_DURATION_S, history_s: float = HISTORY_S,
                         scenario_type: str = "unknown") -> Scenario:
    """The scenario anchored at `frames[current]` (an OpenScene log's frame list), at 10 Hz (module docstring).

    Iteration 0 is the frame `offset_s` after the anchor (0: NAVSIM's current frame; -3 s: nuPlan's challenge
    window), the last iteration the frame `duration_s` after iteration 0 (as far as the log goes), with `history_s`
    of frames before iteration 0 where the log has them. Every step between two frames is interpolated."""
    n = len(frames)
    if not 0 <= current < n:
        raise UnknownTokenError(path, f"frame index {current} outside the log's {n} frames")
    i0 = max(0, current + int(round(offset_s / NAVSIM_INTERVAL_LENGTH)))
    i1 = min(n - 1, i0 + int(round(duration_s / NAVSIM_INTERVAL_LENGTH)))
    lo = max(0, i0 - int(np.ceil(history_s / NAVSIM_INTERVAL_LENGTH - 1e-9)))
    win = list(frames[lo:i1 + 1])
    T = STEPS_PER_FRAME * (len(win) - 1) + 1
    ts_f = np.array([int(f["timestamp"]) for f in win], dtype=np.int64)
    if len(win) > 1 and np.any(np.diff(ts_f) <= 0):
        k = int(np.argmax(np.diff(ts_f) <= 0))
        raise SchemaError(path, f"frame {lo + k + 1}: timestamp {ts_f[k + 1]} does not follow {ts_f[k]}; expected "
                                f"frames in time order")
    ts = np.round(_lerp_frames(ts_f.astype(np.float64), T)).astype(np.int64)
    poses = np.stack([frame_ego_pose(f) for f in win])
    poses[:, 2] = np.unwrap(poses[:, 2])
    dyn = np.stack([frame_ego_dynamics(f) for f in win])
    p = _lerp_frames(poses, T)
    d = _lerp_frames(dyn, T)
    yaw_rate = np.gradient(p[:, 2], ts / 1e6) if T > 1 else np.zeros(1)
    ego = EgoTrack(timestamps_us=ts, x=p[:, 0], y=p[:, 1], heading=wrap_angle(p[:, 2]), vx=d[:, 0], vy=d[:, 1],
                   ax=d[:, 2], ay=d[:, 3], yaw_rate=yaw_rate)
    tokens = [""] * T
    for k, f in enumerate(win):  # the frames' tokens at their steps; interpolated steps have none
        tokens[k * STEPS_PER_FRAME] = str(f["token"])
    anchor = frames[current]
    return Scenario(
        token=str(anchor["token"]), log_name=str(anchor["log_name"]), log_path=str(path), scenario_type=scenario_type,
        map_location=str(anchor["map_location"]), timestamps_us=ts.copy(), lidar_pc_tokens=tuple(tokens),
        start_index=(i0 - lo) * STEPS_PER_FRAME, ego=ego, agents=_agents(win, T), traffic_lights=_lights(win, T),
        route_roadblock_ids=tuple(str(r) for r in anchor["roadblock_ids"]), goal=None,
        cameras=frame_cameras(anchor), tag_track_token=None, dt_s=STEP_S)


def find_openscene_logs(root: str | Path, split: str | None = None) -> list[Path]:
    """OpenScene logs (``*.pkl``) under `root`: ``navsim_logs/<split>/``, else a folder of pickles, else every
    ``navsim_logs/*/``. Hidden names and writers' temporaries are skipped."""
    root = Path(root)
    if not root.exists():
        raise MissingFileError(root, "OpenScene data folder not found")
    if root.is_file():
        return [root]
    cands = ([root / "navsim_logs" / split] if split else []) + [root]
    for c in cands:
        if c.is_dir():
            files = [f for f in sorted(c.glob("*.pkl")) if not is_temporary(f.name)]
            if files:
                return files
    nl = root / "navsim_logs"
    files = [f for f in sorted(nl.glob("*/*.pkl")) if not is_temporary(f.name)] if nl.is_dir() else []
    if files:
        return files
    raise MissingFileError(root, f"no OpenScene logs found (looked for navsim_logs/{split or '<split>'}/*.pkl, "
                                 f"*.pkl and navsim_logs/*/*.pkl)")


@dataclass(frozen=True)
class _FrameRef:
    log_name: str
    index: int


class OpenSceneScenarioBuilder:
    """Lists and loads scenarios over OpenScene logs, with the interface of
    :class:`~simscale_env.data.scenario.ScenarioBuilder` that the env uses (`refs`, `ref`, `missing_tokens`,
    `load`, `navsim_scenario`, `log_tail`). Every frame with NAVSIM's 3 past frames and 4 s of future is a scenario
    (there are no scenario tags in OpenScene logs); a split's tokens may name any frame.

    >>> b = OpenSceneScenarioBuilder(".cache/mini/navsim_logs/mini")        # doctest: +SKIP
    >>> sc = b.navsim_scenario(b.refs()[0].token)                            # doctest: +SKIP
    """

    source = "openscene"

    def __init__(self, logs: str | Path | Iterable[str | Path], *, split: str | None = None,
                 max_open_logs: int | None = 16):
        files = find_openscene_logs(logs, split) if isinstance(logs, (str, Path)) else [Path(p) for p in logs]
        self.log_files = {f.stem: f for f in files}
        self._frames: LRUCache[str, list] = LRUCache(max_open_logs)
        self._index: dict[str, _FrameRef] | None = None
        self._refs: list[ScenarioRef] | None = None

    def frames(self, log_name: str) -> list[dict]:
        """The frame list of a log (read through the restricted unpickler, validated; LRU-cached)."""
        if log_name not in self.log_files:
            raise UnknownTokenError(None, f"unknown log '{log_name}'")
        return self._frames.get_or_create(log_name, lambda: load_log(self.log_files[log_name]))

    def close(self) -> None:
        self._frames.clear()

    @property
    def index(self) -> dict[str, _FrameRef]:
        """token -> (log, frame index) over every frame of every log (read once)."""
        if self._index is None:
            idx = {}
            for name in sorted(self.log_files):
                for k, f in enumerate(self.frames(name)):
                    idx.setdefault(str(f["token"]), _FrameRef(name, k))
            self._index = idx
        return self._index

    def all_refs(self) -> list[ScenarioRef]:
        if self._refs is None:
            refs = []
            for name in sorted(self.log_files):
                fr = self.frames(name)
                for k in range(PAST_FRAMES, len(fr) - FUTURE_FRAMES):
                    f = fr[k]
                    refs.append(ScenarioRef(str(f["token"]), name, str(self.log_files[name]), "unknown",
                                            int(f["timestamp"]), str(f["map_location"])))
            self._refs = refs
        return self._refs

    # filters over `all_refs` by type, log, token and count: the .db builder's (OpenScene refs have no tags)
    refs = ScenarioBuilder.refs

    def missing_tokens(self, tokens: Sequence[str], *, tagged: bool = False) -> list[str]:
        """The `tokens` (in their order) that are no frame of the builder's logs (`tagged` is accepted for the
        ScenarioBuilder interface: OpenScene frames carry no tags, any frame anchors a scenario)."""
        idx = self.index
        return [t for t in tokens if t not in idx]

    def _locate(self, token: str) -> _FrameRef:
        ref = self.index.get(token)
        if ref is None:
            raise UnknownTokenError(None, f"unknown scene token '{token}' (not a frame of the {len(self.log_files)} "
                                          f"OpenScene logs)")
        return ref

    def ref(self, token: str) -> ScenarioRef:
        r = self._locate(token)
        f = self.frames(r.log_name)[r.index]
        return ScenarioRef(token, r.log_name, str(self.log_files[r.log_name]), "unknown", int(f["timestamp"]),
                           str(f["map_location"]))

    def load(self, ref: ScenarioRef | str, **kw) -> Scenario:
        """nuPlan's challenge window at a token (15 s from 3 s before it), as the ``.db`` builder's `load`."""
        token = ref if isinstance(ref, str) else ref.token
        r = self._locate(token)
        kw.setdefault("offset_s", EXTRACTION_OFFSET_S)
        kw.setdefault("duration_s", SCENARIO_DURATION_S)
        return scenario_from_frames(self.frames(r.log_name), r.index, path=self.log_files[r.log_name], **kw)

    def navsim_scenario(self, token: str, *, duration_s: float = NAVSIM_SCENE_DURATION_S,
                        history_s: float = HISTORY_S) -> Scenario:
        """The scenario whose iteration 0 is NAVSIM's current frame `token`."""
        r = self._locate(token)
        return scenario_from_frames(self.frames(r.log_name), r.index, path=self.log_files[r.log_name],
                                    duration_s=duration_s, history_s=history_s)

    def log_tail(self, scenario: Scenario, num_steps: int) -> np.ndarray:
        """The logged ego's poses [num_steps, 3] at the 0.1 s steps after the scenario's last one, interpolated
        between the log's frames (the last frame's pose past the log's end)."""
        last = next(t for t in reversed(scenario.lidar_pc_tokens) if t)
        r = self._locate(last)
        fr = self.frames(r.log_name)[r.index:]
        poses = np.stack([frame_ego_pose(f) for f in fr])
        poses[:, 2] = np.unwrap(poses[:, 2])
        steps_after_last = len(scenario.lidar_pc_tokens) - 1 - max(
            i for i, t in enumerate(scenario.lidar_pc_tokens) if t)
        T = STEPS_PER_FRAME * (len(fr) - 1) + 1
        p = _lerp_frames(poses, T)
        want = np.minimum(steps_after_last + np.arange(1, num_steps + 1), T - 1)
        out = p[want]
        out[:, 2] = wrap_angle(out[:, 2])
        return out
