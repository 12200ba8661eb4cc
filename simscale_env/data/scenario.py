"""Scenarios with nuPlan semantics.

A scenario starts at a tagged `lidar_pc` (nuplan/planning/scenario_builder/nuplan_db/nuplan_scenario_utils.py,
`get_scenarios_from_db`): the challenge extraction is [duration 15 s, offset -3 s, subsample 0.5], i.e. the window
[t_tag - 3 s, t_tag + 12 s] (both ends inclusive), every 2nd lidar_pc, so 10 Hz and ~151 iterations, iteration 0
three seconds before the tag. Route roadblocks and goal come from the scene of the tagged lidar_pc; scenes are
ordered by name and the first two and last two never yield scenarios; scenarios without a goal are dropped
(`remove_invalid_goals`).

Everything is returned as typed, frozen dataclasses of numpy arrays (read-only).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..cache import LRUCache
from ..errors import MissingFileError, SchemaError, UnknownTokenError
from .atomic import is_temporary
from .nuplan_db import CameraCalibration, LogDB
from .schema import DATABASE_ROW_INTERVAL_S, TL_UNKNOWN

# nuplan/planning/script/config/common/scenario_builder/scenario_mapping/nuplan_challenge_scenario_mapping.yaml:
# every challenge type uses [scenario_duration, extraction_offset, subsample_ratio] = [15.0, -3.0, 0.5]
SCENARIO_DURATION_S = 15.0
EXTRACTION_OFFSET_S = -3.0
SUBSAMPLE_RATIO = 0.5
# Devkit simulation history buffer (default_simulation.yaml: 2.0 s)
HISTORY_S = 2.0


def _freeze(*arrays):
    for a in arrays:
        if isinstance(a, np.ndarray):
            a.flags.writeable = False


@dataclass(frozen=True)
class EgoTrack:
    """Ego rear-axle states [T]: x, y, heading global; vx, vy, ax, ay in the ego frame; yaw_rate."""

    timestamps_us: np.ndarray
    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray
    vx: np.ndarray
    vy: np.ndarray
    ax: np.ndarray
    ay: np.ndarray
    yaw_rate: np.ndarray

    def __post_init__(self):
        _freeze(*(getattr(self, f) for f in self.__dataclass_fields__))

    @property
    def poses(self) -> np.ndarray:
        """[T, 3] (x, y, heading)."""
        return np.stack([self.x, self.y, self.heading], axis=-1)

    @property
    def speed(self) -> np.ndarray:
        return np.hypot(self.vx, self.vy)

    def __len__(self) -> int:
        return len(self.x)

    def slice(self, sl: slice) -> "EgoTrack":
        return EgoTrack(**{f: getattr(self, f)[sl] for f in self.__dataclass_fields__})


@dataclass(frozen=True)
class AgentTracks:
    """Every tracked object seen in a window, as dense [T, M] arrays with a validity mask.

    `category` codes index :data:`simscale_env.data.schema.CATEGORIES`. Positions are box centres (global), `vx, vy`
    the logged global-frame velocity, `heading` the box yaw. Invalid entries hold NaN.
    """

    track_tokens: tuple[str, ...]
    category: np.ndarray  # [M] int8
    valid: np.ndarray  # [T, M] bool
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    heading: np.ndarray
    vx: np.ndarray
    vy: np.ndarray
    length: np.ndarray
    width: np.ndarray
    height: np.ndarray
    log_order: np.ndarray | None = None  # [T, M] the boxes' row positions in lidar_box (-1 where invalid)

    def __post_init__(self):
        _freeze(*(getattr(self, f) for f in self.__dataclass_fields__ if f != "track_tokens"))

    @property
    def num_tracks(self) -> int:
        return len(self.track_tokens)

    def at(self, t: int) -> dict[str, np.ndarray]:
        """The objects present at frame t as flat arrays (plus `index` into the track axis)."""
        m = self.valid[t]
        idx = np.nonzero(m)[0]
        out = {"index": idx, "category": self.category[idx],
               "track_token": np.array(self.track_tokens, dtype="<U16")[idx] if len(idx) else np.array([], "<U16")}
        for f in ("x", "y", "z", "heading", "vx", "vy", "length", "width", "height"):
            out[f] = getattr(self, f)[t, idx]
        return out

    def slice(self, sl: slice) -> "AgentTracks":
        kw = {f: getattr(self, f)[sl] for f in ("valid", "x", "y", "z", "heading", "vx", "vy", "length", "width",
                                                "height")}
        lo = None if self.log_order is None else self.log_order[sl]
        return AgentTracks(track_tokens=self.track_tokens, category=self.category, log_order=lo, **kw)

    @staticmethod
    def from_boxes(boxes: dict[str, np.ndarray], num_frames: int) -> "AgentTracks":
        tracks, col = np.unique(boxes["track"], return_inverse=True)
        m = len(tracks)
        valid = np.zeros((num_frames, m), dtype=bool)
        valid[boxes["frame"], col] = True
        cat = np.zeros(m, dtype=np.int8)
        cat[col] = boxes["category"]
        kw = {}
        for f in ("x", "y", "z", "vx", "vy", "length", "width", "height"):
            a = np.full((num_frames, m), np.nan)
            a[boxes["frame"], col] = boxes[f]
            kw[f] = a
        h = np.full((num_frames, m), np.nan)
        h[boxes["frame"], col] = boxes["yaw"]
        order = np.full((num_frames, m), -1, dtype=np.int64)
        if "rowid" in boxes:
            order[boxes["frame"], col] = boxes["rowid"]
        return AgentTracks(track_tokens=tuple(str(t) for t in tracks), category=cat, valid=valid, heading=h,
                           log_order=order, **kw)


@dataclass(frozen=True)
class TrafficLights:
    """Status per lane connector and frame: [T, K] codes (0 green, 1 yellow, 2 red, 3 unknown)."""

    connector_ids: np.ndarray  # [K] int64
    status: np.ndarray  # [T, K] int8

    def __post_init__(self):
        _freeze(self.connector_ids, self.status)

    def at(self, t: int) -> dict[int, int]:
        return {int(c): int(s) for c, s in zip(self.connector_ids, self.status[t])}

    def red_connectors(self, t: int) -> np.ndarray:
        from .schema import TL_RED

        return self.connector_ids[self.status[t] == TL_RED]

    def slice(self, sl: slice) -> "TrafficLights":
        return TrafficLights(self.connector_ids, self.status[sl])

    @staticmethod
    def from_rows(rows: dict[str, np.ndarray], num_frames: int) -> "TrafficLights":
        ids, col = np.unique(rows["lane_connector_id"], return_inverse=True)
        status = np.full((num_frames, len(ids)), TL_UNKNOWN, dtype=np.int8)
        status[rows["frame"], col] = rows["status"]
        return TrafficLights(ids.astype(np.int64), status)


@dataclass(frozen=True)
class Scenario:
    """A window of a log at a fixed step, ready for simulation.

    Frames [0, start_index) are history before iteration 0 (the devkit's history buffer); frames
    [start_index, T) are the simulation iterations.
    """

    token: str  # the tagged lidar_pc (hex); for whole-log iteration, the first iteration's lidar_pc
    log_name: str
    log_path: str
    scenario_type: str
    map_location: str  # log.map_version, a key of nuplan-maps-v1.0.json
    timestamps_us: np.ndarray  # [T]
    lidar_pc_tokens: tuple[str, ...]
    start_index: int
    ego: EgoTrack
    agents: AgentTracks
    traffic_lights: TrafficLights
    route_roadblock_ids: tuple[str, ...]
    goal: tuple[float, float, float] | None
    cameras: tuple[CameraCalibration, ...] = field(default=())
    tag_track_token: str | None = None
    dt_s: float = 0.1

    def __post_init__(self):
        _freeze(self.timestamps_us)

    @property
    def num_iterations(self) -> int:
        return len(self.timestamps_us) - self.start_index

    @property
    def num_history(self) -> int:
        return self.start_index

    @property
    def iteration_timestamps_us(self) -> np.ndarray:
        return self.timestamps_us[self.start_index:]

    @property
    def tag_timestamp_us(self) -> int:
        idx = self.lidar_pc_tokens.index(self.token) if self.token in self.lidar_pc_tokens else self.start_index
        return int(self.timestamps_us[idx])

    def __repr__(self) -> str:
        return (f"Scenario({self.token}, {self.scenario_type}, log={self.log_name}, map={self.map_location}, "
                f"iterations={self.num_iterations}, history={self.num_history}, agents={self.agents.num_tracks})")


@dataclass(frozen=True)
class ScenarioRef:
    """A cheap handle on a scenario: enough to list, filter and load it."""

    token: str
    log_name: str
    log_path: str
    scenario_type: str
    timestamp_us: int
    map_location: str
    tags: tuple[str, ...] = ()  # every scenario_tag type of this lidar_pc (scenario_type is the largest)


def sample_window(timestamps: np.ndarray, start_us: int, end_us: int, step: int) -> np.ndarray:
    """Indices of every `step`-th lidar_pc with start <= t <= end, starting at the first one in the window
    (`get_sampled_sensor_tokens_in_time_window_from_db`)."""
    lo = int(np.searchsorted(timestamps, start_us, side="left"))
    hi = int(np.searchsorted(timestamps, end_us, side="right"))
    return np.arange(lo, hi, step, dtype=np.int64)


def extract_window(db: LogDB, indices: np.ndarray, start_index: int, *, token: str, scenario_type: str,
                   route: Sequence[str], goal, tag_track_token: str | None = None, dt_s: float = 0.1) -> Scenario:
    """Build a :class:`Scenario` from lidar_pc `indices` of an open log."""
    indices = np.asarray(indices, dtype=np.int64)
    e = db.ego_arrays(indices)
    ego = EgoTrack(timestamps_us=e["timestamp"], x=e["x"], y=e["y"], heading=e["heading"], vx=e["vx"], vy=e["vy"],
                   ax=e["ax"], ay=e["ay"], yaw_rate=e["yaw_rate"])
    agents = AgentTracks.from_boxes(db.boxes(indices), len(indices))
    lights = TrafficLights.from_rows(db.traffic_lights(indices), len(indices))
    return Scenario(
        token=token, log_name=db.name, log_path=str(db.path), scenario_type=scenario_type,
        map_location=db.map_location, timestamps_us=e["timestamp"].copy(),
        lidar_pc_tokens=tuple(db.lidar_pc_tokens[i] for i in indices), start_index=int(start_index), ego=ego,
        agents=agents, traffic_lights=lights, route_roadblock_ids=tuple(route), goal=goal, cameras=db.cameras,
        tag_track_token=tag_track_token, dt_s=dt_s)


def _scene_of(db: LogDB, idx: int):
    tok = db._lidar_pc["scene_token"][idx]
    if tok is None:
        return None
    try:
        return db.scene(tok)
    except UnknownTokenError:
        raise SchemaError(db.path, f"lidar_pc {db.lidar_pc_tokens[idx]} references scene_token {tok}, which is not "
                                   f"in table 'scene'") from None


def extract_scenario(db: LogDB, token: str, *, scenario_type: str | None = None,
                     duration_s: float = SCENARIO_DURATION_S, offset_s: float = EXTRACTION_OFFSET_S,
                     subsample_ratio: float = SUBSAMPLE_RATIO, history_s: float = HISTORY_S) -> Scenario:
    """The scenario anchored at lidar_pc `token` with nuPlan's extraction (defaults: the challenge mapping).

    `history_s` seconds of log before iteration 0 are prepended (at the same step) where the log has them.
    """
    tag_idx = db.lidar_pc_index(token)
    ts = db.lidar_pc_timestamps
    anchor = int(ts[tag_idx])
    start = int(anchor + offset_s * 1e6)
    end = int(start + duration_s * 1e6)
    step = int(1.0 / subsample_ratio)
    iters = sample_window(ts, start, end, step)
    if len(iters) == 0:
        raise UnknownTokenError(db.path, f"scenario {token}: no lidar_pc in its window")
    n_hist = int(round(history_s / (step * DATABASE_ROW_INTERVAL_S)))
    hist = iters[0] - step * np.arange(n_hist, 0, -1)
    hist = hist[hist >= 0]
    indices = np.concatenate([hist, iters])
    tags = [t for t in db.scenario_tags if t.lidar_pc_token == token]
    if scenario_type is None:  # the devkit's MAX(st.type) over the lidar_pc's tags
        scenario_type = max(t.type for t in tags) if tags else "unknown"
    tag_track = next((t.agent_track_token for t in tags if t.type == scenario_type), None)
    scene = _scene_of(db, tag_idx)
    route = scene.roadblock_ids if scene else ()
    goal = scene.goal if scene else None
    return extract_window(db, indices, len(hist), token=token, scenario_type=scenario_type, route=route, goal=goal,
                          tag_track_token=tag_track, dt_s=step * DATABASE_ROW_INTERVAL_S)


# A NAVSIM scene (navsim/common/dataclasses.py, scene_loader.py): the token is the current frame, the last of
# num_history_frames = 4 frames at 2 Hz (1.5 s of past), followed by num_future_frames (10 in navtest/navtrain, 8 in
# navhard_two_stage) at 2 Hz. Our episodes run past NAVSIM's 4-5 s of future, to the end of the nuPlan challenge
# window the same token anchors (t + 12 s: duration 15 s from offset -3 s), so an episode covers the log it did
# under the nuPlan window minus the 3 s before the token.
NAVSIM_SCENE_DURATION_S = SCENARIO_DURATION_S + EXTRACTION_OFFSET_S


def extract_navsim_scenario(db: LogDB, token: str, *, scenario_type: str | None = None,
                            duration_s: float = NAVSIM_SCENE_DURATION_S, history_s: float = HISTORY_S) -> Scenario:
    """The scenario whose iteration 0 is NAVSIM's current frame `token` (offset 0), `duration_s` long, at 10 Hz, with
    `history_s` of log before it (default the devkit's 2 s buffer, of which NAVSIM's past is the last 1.5 s)."""
    return extract_scenario(db, token, scenario_type=scenario_type, duration_s=duration_s, offset_s=0.0,
                            history_s=history_s)


def iterate_log(db: LogDB, *, step_s: float = 0.1, start_s: float = 0.0, duration_s: float | None = None,
                history_s: float = 0.0) -> Scenario:
    """A whole log (or a part) as one long scenario at `step_s` (default 10 Hz), for episodes longer than 15 s.

    The route is the union, in order of appearance, of the roadblock ids of the scenes the window passes; the goal
    is that of the last scene with one.
    """
    step = max(1, int(round(step_s / DATABASE_ROW_INTERVAL_S)))
    ts = db.lidar_pc_timestamps
    t0 = int(ts[0] + start_s * 1e6)
    t1 = int(ts[-1]) if duration_s is None else int(t0 + duration_s * 1e6)
    iters = sample_window(ts, t0, t1, step)
    if len(iters) == 0:
        raise ValueError(f"start_s={start_s} is past the end of log {db.name} ({db.duration_s:.1f} s)")
    n_hist = int(round(history_s / (step * DATABASE_ROW_INTERVAL_S)))
    hist = iters[0] - step * np.arange(n_hist, 0, -1)
    hist = hist[hist >= 0]
    route: list[str] = []
    goal = None
    seen_scenes = []
    for i in iters:
        st = db._lidar_pc["scene_token"][i]
        if st is not None and (not seen_scenes or seen_scenes[-1] != st):
            seen_scenes.append(st)
    for st in seen_scenes:
        sc = db.scene(st)
        for rb in sc.roadblock_ids:
            if rb not in route:
                route.append(rb)
        goal = sc.goal or goal
    return extract_window(db, np.concatenate([hist, iters]), len(hist), token=db.lidar_pc_tokens[iters[0]],
                          scenario_type="log", route=route, goal=goal, dt_s=step * DATABASE_ROW_INTERVAL_S)


def scenario_refs_in_log(db: LogDB, *, require_goal: bool = True) -> list[ScenarioRef]:
    """Scenario candidates of one log with the devkit's validity rules (tagged lidar_pcs, not in the first two or
    last two scenes by name, with a goal when `require_goal`)."""
    scenes = db.scenes
    invalid = {s.token for s in scenes[:2]} | {s.token for s in scenes[-2:]} if len(scenes) else set()
    by_token = {s.token: s for s in scenes}
    # one scenario per tagged lidar_pc, typed by the largest of its tags, as the devkit's get_scenarios_from_db
    # (GROUP BY lp.token, MAX(st.type)); in the order the tags are first seen
    grouped: dict[str, list] = {}
    for tag in db.scenario_tags:
        grouped.setdefault(tag.lidar_pc_token, []).append(tag)
    out = []
    for token, tags in grouped.items():
        idx = db._lidar_pc["index"].get(token)
        if idx is None:
            continue
        st = db._lidar_pc["scene_token"][idx]
        if st is None or st in invalid:
            continue
        if require_goal and (st not in by_token or by_token[st].goal is None):
            continue
        types = tuple(sorted({t.type for t in tags}))
        out.append(ScenarioRef(token, db.name, str(db.path), types[-1], tags[0].timestamp, db.map_location, types))
    return out


def find_log_files(data_root: str | Path, split: str | None = None) -> list[Path]:
    """`.db` logs under `data_root` (a folder of .db files, or a nuPlan root with nuplan-v1.1/splits/<split>/).
    Hidden names, writers' temporaries and SQLite's `-journal`/`-wal` siblings are never logs (`atomic.is_temporary`):
    what an interrupted writer leaves behind is skipped."""
    root = Path(data_root)
    if not root.exists():
        raise MissingFileError(root, "data folder not found")
    if root.is_file():
        return [root]
    cands = []
    if split:
        cands.append(root / "nuplan-v1.1" / "splits" / split)
        cands.append(root / "splits" / split)
    cands += [root, root / "nuplan-v1.1" / "splits"]
    for c in cands:
        if c.is_dir():
            files = sorted(c.rglob("*.db")) if c.name == "splits" else sorted(c.glob("*.db"))
            files = [f for f in files if not any(is_temporary(part) for part in f.relative_to(c).parts)]
            if files:
                return files
    raise MissingFileError(root, "no nuPlan .db logs found (looked in nuplan-v1.1/splits/<split>/ and the folder)")


def _close_log(name: str, db: LogDB) -> None:  # a module function: the builder stays picklable
    db.close()


class ScenarioBuilder:
    """Lists and loads scenarios over a set of nuPlan logs, with the devkit's filters. (OpenScene logs:
    `openscene_scenario.OpenSceneScenarioBuilder`, the same interface.)

    >>> b = ScenarioBuilder("data/nuplan-v1.1/splits/mini")             # doctest: +SKIP
    >>> refs = b.refs(scenario_types=["stopping_with_lead"], limit=5)    # doctest: +SKIP
    >>> scenario = b.load(refs[0])                                       # doctest: +SKIP
    """

    source = "nuplan"

    def __init__(self, logs: str | Path | Iterable[str | Path], *, split: str | None = None,
                 require_goal: bool = True, max_open_logs: int | None = 16):
        if isinstance(logs, (str, Path)):
            files = find_log_files(logs, split)
        else:
            files = [Path(p) for p in logs]
        self.log_files = {f.stem: f for f in files}
        self.require_goal = require_goal
        # open logs, least recently used closed first (`max_open_logs`, None: unbounded): a LogDB keeps its tables in
        # memory once read, and a split of nuPlan's trainval spans hundreds of logs. A LogDB that `db` returned stays
        # open until `max_open_logs` other logs have been used after it
        if max_open_logs is not None and (not isinstance(max_open_logs, int) or max_open_logs < 1):
            raise ValueError(f"max_open_logs must be a positive integer or None (unbounded), got {max_open_logs!r}")
        self._dbs: LRUCache[str, LogDB] = LRUCache(max_open_logs, on_evict=_close_log)
        self._refs: list[ScenarioRef] | None = None

    def db(self, log_name: str) -> LogDB:
        db = self._dbs.get(log_name)
        if db is None:
            if log_name not in self.log_files:
                raise UnknownTokenError(None, f"unknown log '{log_name}'")
            db = LogDB(self.log_files[log_name])
            self._dbs[log_name] = db
        return db

    def close(self) -> None:
        """Close every open log (they reopen on the next use)."""
        self._dbs.clear(evict=True)

    def all_refs(self) -> list[ScenarioRef]:
        if self._refs is None:
            refs = []
            for name in sorted(self.log_files):
                refs.extend(scenario_refs_in_log(self.db(name), require_goal=self.require_goal))
            self._refs = refs
        return self._refs

    def refs(self, *, scenario_types: Sequence[str] | None = None, log_names: Sequence[str] | None = None,
             tokens: Sequence[str] | None = None, limit: int | None = None) -> list[ScenarioRef]:
        out = self.all_refs()
        if scenario_types is not None:
            # the devkit filters tags before grouping: the largest matching tag names the scenario
            st = set(scenario_types)
            out = [replace(r, scenario_type=max(t for t in (r.tags or (r.scenario_type,)) if t in st)) for r in out
                   if st.intersection(r.tags or (r.scenario_type,))]
        if log_names is not None:
            ln = set(log_names)
            out = [r for r in out if r.log_name in ln]
        if tokens is not None:
            tk = set(tokens)
            out = [r for r in out if r.token in tk]
        return out[:limit] if limit is not None else out

    def missing_tokens(self, tokens: Sequence[str], *, tagged: bool = False) -> list[str]:
        """The `tokens` (in their order) that are no lidar_pc of the merged lidar in any of the builder's logs, or with
        `tagged`, no scenario of :meth:`all_refs`. Cheap: one indexed SQL lookup per log (or its cached token index)
        instead of reading every lidar_pc table."""
        if tagged:
            known = {r.token for r in self.all_refs()}
            return [t for t in tokens if t not in known]
        todo: dict[bytes, str] = {}
        for t in tokens:
            try:
                b = bytes.fromhex(t)
            except (TypeError, ValueError):  # not hex: no lidar_pc token
                continue
            if b.hex() == t:  # tokens are lower-case hex, as LogDB.lidar_pc_tokens spells them
                todo[b] = t
        found: set[str] = set()
        for name in sorted(self.log_files):
            if not todo:
                break
            db = self.db(name)
            lidar = " WHERE lidar_token = ?" if db.lidar_token is not None else ""
            head = (db.lidar_token,) if db.lidar_token is not None else ()
            if "_lidar_pc" in db.__dict__:  # already read: its token index answers
                hits = [b for b, t in todo.items() if t in db._lidar_pc["index"]]
            elif len(todo) > 256:  # many tokens: one scan of the log's token column beats that many lookups
                hits = [b for b in (bytes(r[0]) for r in db.execute("SELECT token FROM lidar_pc" + lidar, head))
                        if b in todo]
            else:  # a few: indexed lookups
                want = list(todo)
                cond = (lidar + " AND" if lidar else " WHERE") + " token IN ({})"
                hits = [bytes(r[0]) for r in db.execute(
                    "SELECT token FROM lidar_pc" + cond.format(",".join("?" * len(want))), head + tuple(want))]
            found.update(t for t in (todo.pop(b, None) for b in hits) if t is not None)
        return [t for t in tokens if t not in found]

    def ref(self, token: str) -> ScenarioRef:
        for r in self.all_refs():
            if r.token == token:
                return r
        raise UnknownTokenError(None, f"unknown scenario token '{token}' (not a valid tagged lidar_pc in "
                                      f"{len(self.log_files)} logs)")

    def load(self, ref: ScenarioRef | str, **kw) -> Scenario:
        if isinstance(ref, str):
            ref = self.ref(ref)
        return extract_scenario(self.db(ref.log_name), ref.token, scenario_type=ref.scenario_type, **kw)

    def navsim_scenario(self, token: str, *, duration_s: float = NAVSIM_SCENE_DURATION_S,
                        history_s: float = HISTORY_S) -> Scenario:
        """The scenario whose iteration 0 is NAVSIM's current frame `token` (`extract_navsim_scenario`): a tagged
        scenario keeps its type; any other lidar_pc of the logs anchors one too (a NAVSIM token is any 2 Hz frame)."""
        try:
            ref = self.ref(token)
            db, kind = self.db(ref.log_name), ref.scenario_type
        except UnknownTokenError:
            db = next((self.db(n) for n in sorted(self.log_files) if token in self.db(n).lidar_pc_tokens), None)
            if db is None:
                raise
            kind = None
        return extract_navsim_scenario(db, token, scenario_type=kind, duration_s=duration_s, history_s=history_s)

    def log_tail(self, scenario: Scenario, num_steps: int) -> np.ndarray:
        """The logged ego's poses [num_steps, 3] at the `num_steps` iterations after the scenario's last one, read
        from its log (the log's last pose where it ends)."""
        db = self.db(scenario.log_name)
        step = int(round(scenario.dt_s / DATABASE_ROW_INTERVAL_S))  # lidar_pc rows per iteration (2 at 10 Hz)
        idx = db.lidar_pc_index(scenario.lidar_pc_tokens[-1]) + step * np.arange(1, num_steps + 1)
        e = db.ego_arrays(np.minimum(idx, len(db.lidar_pc_timestamps) - 1))
        return np.stack([e["x"], e["y"], e["heading"]], -1)

    def __iter__(self) -> Iterator[Scenario]:
        for r in self.all_refs():
            yield self.load(r)

    def __len__(self) -> int:
        return len(self.all_refs())
