"""Read-only access to a nuPlan log database (.db, plain SQLite).

Opens the file with the SQLite URI ``mode=ro`` so that nothing can ever be written into a user's dataset, checks
the published schema (every table and column of :data:`~simscale_env.data.schema.NUPLAN_SCHEMA`), and answers
the queries the simulator needs with numpy arrays. Tokens are 16-hex strings everywhere outside this module.
The queries follow nuplan/database/nuplan_db/nuplan_scenario_queries.py.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import CorruptFileError, MissingFileError, SchemaError, UnknownTokenError
from ..geometry import yaw_from_quaternion
from .safe_pickle import safe_loads
from .schema import (
    CAMERA_CHANNELS,
    CATEGORIES,
    LIDAR_CHANNEL,
    NUPLAN_SCHEMA,
    TL_UNKNOWN,
    TRAFFIC_LIGHT_STATUS,
)

_SQLITE_MAGIC = b"SQLite format 3\x00"


def token_to_bytes(token: str, what: str = "token") -> bytes:
    """A 16-hex token string as the 8-byte BLOB nuPlan stores."""
    if not isinstance(token, str) or len(token) != 16:
        raise ValueError(f"{what} must be a 16-character hex string, got {token!r}")
    try:
        return bytes.fromhex(token)
    except ValueError as exc:
        raise ValueError(f"{what} must be a 16-character hex string, got {token!r}") from exc


def _hex(b) -> str | None:
    return None if b is None else bytes(b).hex()


@dataclass(frozen=True)
class LogRecord:
    token: str
    vehicle_name: str
    date: str
    timestamp: int
    logfile: str
    location: str
    map_version: str  # the map *location* key, e.g. "us-nv-las-vegas-strip"


@dataclass(frozen=True)
class SceneRecord:
    token: str
    name: str
    roadblock_ids: tuple[str, ...]
    goal: tuple[float, float, float] | None  # (x, y, heading) of the goal ego pose (rear axle), or None
    goal_ego_pose_token: str | None


@dataclass(frozen=True)
class ScenarioTagRecord:
    token: str
    lidar_pc_token: str
    type: str
    agent_track_token: str | None
    timestamp: int  # of the tagged lidar_pc


@dataclass(frozen=True)
class CameraCalibration:
    """One row of the `camera` table, pickles decoded. Extrinsics are camera -> ego (rear axle), OpenCV camera."""

    token: str
    channel: str
    model: str
    translation: np.ndarray  # [3]
    rotation: np.ndarray  # [4] quaternion (w, x, y, z)
    intrinsic: np.ndarray  # [3, 3]
    distortion: np.ndarray  # [5] Caltech model k1, k2, p1, p2, k3
    width: int
    height: int


@dataclass(frozen=True)
class ImageRecord:
    token: str
    camera_token: str
    channel: str
    filename_jpg: str
    timestamp: int


def split_roadblock_ids(text: str | None) -> tuple[str, ...]:
    """Route roadblock ids of a scene. The devkit splits on spaces; the schema docs say commas: accept both."""
    if not text:
        return ()
    return tuple(t for t in text.replace(",", " ").split() if t)


class LogDB:
    """One nuPlan log. Cheap to open; tables are read on demand and cached (the file never changes)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise MissingFileError(self.path, "nuPlan log database not found")
        if not self.path.is_file():
            raise CorruptFileError(self.path, "expected a nuPlan .db file, found a folder")
        with open(self.path, "rb") as fh:
            head = fh.read(16)
        if head != _SQLITE_MAGIC:
            raise CorruptFileError(self.path, "not an SQLite database (bad header); expected a nuPlan .db log")
        uri = self.path.resolve().as_uri() + "?mode=ro"
        try:
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self._conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            raise CorruptFileError(self.path, f"cannot open as SQLite: {exc}") from exc
        self._check_schema()

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getstate__(self):  # for multiprocessing: reopen in the child
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    @property
    def name(self) -> str:
        """Log name, i.e. the file name without `.db` (nuPlan's `absolute_path_to_log_name`)."""
        return self.path.stem

    def execute(self, sql: str, params=()) -> list[tuple]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise CorruptFileError(self.path, f"SQLite error ({exc}); the file may be truncated or corrupt") from exc

    def _check_schema(self) -> None:
        try:
            tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise CorruptFileError(self.path, f"SQLite error ({exc}); the file may be truncated or corrupt") from exc
        for table, columns in NUPLAN_SCHEMA.items():
            if table not in tables:
                raise SchemaError(self.path, f"missing table '{table}' of the nuPlan schema")
            have = {r[1] for r in self.execute(f"PRAGMA table_info('{table}')")}
            for col, _ in columns:
                if col not in have:
                    raise SchemaError(self.path, f"table '{table}' lacks column '{col}' of the nuPlan schema")

    def table_names(self) -> list[str]:
        return sorted(r[0] for r in self.execute("SELECT name FROM sqlite_master WHERE type='table'"))

    def count(self, table: str) -> int:
        if table not in NUPLAN_SCHEMA:
            raise SchemaError(self.path, f"unknown table '{table}'")
        return int(self.execute(f"SELECT COUNT(*) FROM {table}")[0][0])

    def read_table(self, table: str, limit: int | None = None) -> list[dict]:
        """Rows of any schema table as dicts; tokens as hex strings, pickles decoded with the safe unpickler."""
        if table not in NUPLAN_SCHEMA:
            raise SchemaError(self.path, f"unknown table '{table}'")
        cols = [c for c, _ in NUPLAN_SCHEMA[table]]
        sql = f"SELECT {', '.join(cols)} FROM {table}" + (f" LIMIT {int(limit)}" if limit else "")
        out = []
        for row in self.execute(sql):
            d = {}
            for c, v in zip(cols, row):
                if c == "token" or c.endswith("_token"):
                    d[c] = _hex(v)
                elif table in ("camera", "lidar") and c in ("translation", "rotation", "intrinsic", "distortion"):
                    d[c] = safe_loads(v, f"{self.path}:{table}.{c}")
                else:
                    d[c] = v
            out.append(d)
        return out

    # ------------------------------------------------------------------ log-level records
    @cached_property
    def log(self) -> LogRecord:
        rows = self.execute(
            "SELECT token, vehicle_name, date, timestamp, logfile, location, map_version FROM log")
        if not rows:
            raise SchemaError(self.path, "table 'log' is empty")
        r = rows[0]
        return LogRecord(_hex(r[0]), r[1], r[2], int(r[3] or 0), r[4], r[5], r[6])

    @property
    def map_location(self) -> str:
        return self.log.map_version

    @cached_property
    def lidar_token(self) -> bytes | None:
        rows = self.execute("SELECT token FROM lidar WHERE channel = ?", (LIDAR_CHANNEL,))
        return rows[0][0] if rows else None

    @cached_property
    def _lidar_pc(self) -> dict:
        """The 20 Hz master clock: every lidar_pc of the merged lidar, ordered by timestamp."""
        if self.lidar_token is not None:
            rows = self.execute(
                "SELECT lp.token, lp.timestamp, lp.ego_pose_token, lp.scene_token, lp.filename FROM lidar_pc AS lp "
                "WHERE lp.lidar_token = ? ORDER BY lp.timestamp ASC", (self.lidar_token,))
        else:
            rows = self.execute(
                "SELECT token, timestamp, ego_pose_token, scene_token, filename FROM lidar_pc ORDER BY timestamp ASC")
        tokens = [bytes(r[0]) for r in rows]
        return {
            "token": tokens,
            "hex": [t.hex() for t in tokens],
            "timestamp": np.array([r[1] for r in rows], dtype=np.int64),
            "ego_pose_token": [r[2] for r in rows],
            "scene_token": [_hex(r[3]) for r in rows],
            "filename": [r[4] for r in rows],
            "index": {t.hex(): i for i, t in enumerate(tokens)},
        }

    @property
    def lidar_pc_tokens(self) -> list[str]:
        return self._lidar_pc["hex"]

    @property
    def lidar_pc_timestamps(self) -> np.ndarray:
        return self._lidar_pc["timestamp"]

    def lidar_pc_index(self, token: str) -> int:
        token_to_bytes(token, "lidar_pc token")
        try:
            return self._lidar_pc["index"][token]
        except KeyError:
            raise UnknownTokenError(self.path, f"unknown lidar_pc token {token}") from None

    @property
    def duration_s(self) -> float:
        ts = self.lidar_pc_timestamps
        return float(ts[-1] - ts[0]) / 1e6 if len(ts) > 1 else 0.0

    @cached_property
    def _ego(self) -> dict:
        """Ego poses at every lidar_pc (the lidar_pc timestamp is used, as in the devkit)."""
        rows = self.execute(
            "SELECT lp.timestamp, ep.x, ep.y, ep.z, ep.qw, ep.qx, ep.qy, ep.qz, ep.vx, ep.vy, ep.vz, "
            "ep.acceleration_x, ep.acceleration_y, ep.acceleration_z, ep.angular_rate_x, ep.angular_rate_y, "
            "ep.angular_rate_z, ep.epsg FROM lidar_pc AS lp INNER JOIN ego_pose AS ep ON lp.ego_pose_token = ep.token "
            + ("WHERE lp.lidar_token = ? " if self.lidar_token is not None else "")
            + "ORDER BY lp.timestamp ASC",
            (self.lidar_token,) if self.lidar_token is not None else ())
        a = np.array([[np.nan if v is None else v for v in r[:17]] for r in rows], dtype=np.float64).reshape(-1, 17)
        if len(a) != len(self.lidar_pc_timestamps):
            raise SchemaError(self.path, "some lidar_pc rows reference a missing ego_pose (ego_pose_token)")
        return {
            "timestamp": a[:, 0].astype(np.int64), "x": a[:, 1], "y": a[:, 2], "z": a[:, 3],
            "heading": yaw_from_quaternion(a[:, 4], a[:, 5], a[:, 6], a[:, 7]),
            "vx": a[:, 8], "vy": a[:, 9], "ax": a[:, 11], "ay": a[:, 12], "yaw_rate": a[:, 16],
            "epsg": rows[0][17] if rows else None,
        }

    def ego_arrays(self, indices=None) -> dict[str, np.ndarray]:
        """Ego rear-axle states at lidar_pc `indices` (all when None): x, y, z, heading (global);
        vx, vy, ax, ay (ego-local, as stored); yaw_rate; timestamp (of the lidar_pc)."""
        e = self._ego
        keys = ("timestamp", "x", "y", "z", "heading", "vx", "vy", "ax", "ay", "yaw_rate")
        if indices is None:
            return {k: e[k].copy() for k in keys}
        idx = np.asarray(indices, dtype=np.int64)
        return {k: e[k][idx] for k in keys}

    def ego_pose_by_token(self, token: str) -> tuple[float, float, float]:
        rows = self.execute("SELECT x, y, qw, qx, qy, qz FROM ego_pose WHERE token = ?",
                            (token_to_bytes(token, "ego_pose token"),))
        if not rows:
            raise UnknownTokenError(self.path, f"unknown ego_pose token {token}")
        x, y, qw, qx, qy, qz = rows[0]
        return float(x), float(y), float(yaw_from_quaternion(qw, qx, qy, qz))

    @cached_property
    def scenes(self) -> list[SceneRecord]:
        """Scenes ordered by name (the devkit orders them so; the first two and last two never yield scenarios)."""
        rows = self.execute(
            "SELECT s.token, s.name, s.roadblock_ids, s.goal_ego_pose_token, ep.x, ep.y, ep.qw, ep.qx, ep.qy, ep.qz "
            "FROM scene AS s LEFT JOIN ego_pose AS ep ON ep.token = s.goal_ego_pose_token ORDER BY s.name ASC")
        out = []
        for tok, name, rb, goal_tok, x, y, qw, qx, qy, qz in rows:
            goal = None
            if goal_tok is not None and x is not None:
                goal = (float(x), float(y), float(yaw_from_quaternion(qw, qx, qy, qz)))
            out.append(SceneRecord(_hex(tok), name, split_roadblock_ids(rb), goal, _hex(goal_tok)))
        return out

    def scene(self, token: str) -> SceneRecord:
        for s in self.scenes:
            if s.token == token:
                return s
        raise UnknownTokenError(self.path, f"unknown scene token {token}")

    @cached_property
    def scenario_tags(self) -> list[ScenarioTagRecord]:
        rows = self.execute(
            "SELECT st.token, st.lidar_pc_token, st.type, st.agent_track_token, lp.timestamp FROM scenario_tag AS st "
            "INNER JOIN lidar_pc AS lp ON lp.token = st.lidar_pc_token ORDER BY lp.timestamp ASC, st.type ASC")
        return [ScenarioTagRecord(_hex(r[0]), _hex(r[1]), r[2], _hex(r[3]), int(r[4])) for r in rows]

    @cached_property
    def cameras(self) -> tuple[CameraCalibration, ...]:
        rows = self.execute(
            "SELECT token, channel, model, translation, rotation, intrinsic, distortion, width, height FROM camera")
        out = []
        for tok, ch, model, tr, rot, intr, dist, w, h in rows:
            src = f"camera[{ch}]"

            def arr(blob, name, shape):
                try:
                    return np.asarray(safe_loads(blob, f"{self.path}:{src}.{name}"), dtype=np.float64).reshape(shape)
                except (TypeError, ValueError) as exc:
                    raise SchemaError(self.path, f"{src}.{name}: expected a pickled array of shape {shape} "
                                                 f"({exc})") from None

            if w is None or h is None:
                raise SchemaError(self.path, f"{src}: width and height must be set, got {w!r} x {h!r}")
            out.append(CameraCalibration(
                token=_hex(tok), channel=ch, model=model, translation=arr(tr, "translation", (3,)),
                rotation=arr(rot, "rotation", (4,)), intrinsic=arr(intr, "intrinsic", (3, 3)),
                distortion=arr(dist, "distortion", (-1,)), width=int(w), height=int(h)))
        order = {c: i for i, c in enumerate(CAMERA_CHANNELS)}
        return tuple(sorted(out, key=lambda c: order.get(c.channel, 99)))

    @cached_property
    def lidar_extrinsic(self) -> tuple[np.ndarray, np.ndarray] | None:
        rows = self.execute("SELECT translation, rotation FROM lidar WHERE channel = ?", (LIDAR_CHANNEL,))
        if not rows:
            return None
        src = f"{self.path}:lidar"
        return (np.asarray(safe_loads(rows[0][0], src + ".translation"), dtype=np.float64),
                np.asarray(safe_loads(rows[0][1], src + ".rotation"), dtype=np.float64))

    # ------------------------------------------------------------------ per-frame queries
    # Per-frame tables (lidar_box, traffic_light_status) are read in blocks of BLOCK lidar_pcs and kept as numpy
    # arrays, so that extracting many scenarios from one log reads each row once.
    BLOCK = 400
    MAX_BLOCKS = 64

    @cached_property
    def _tracks(self) -> dict:
        cat_code = {n: i for i, n in enumerate(CATEGORIES)}
        toks, cats = [], []
        for tok, name in self.execute(
                "SELECT t.token, c.name FROM track AS t INNER JOIN category AS c ON c.token = t.category_token"):
            if name not in cat_code:
                raise SchemaError(self.path, f"category name '{name}' is not one of {CATEGORIES}")
            toks.append(bytes(tok))
            cats.append(cat_code[name])
        return {"index": {t: i for i, t in enumerate(toks)}, "hex": np.array([t.hex() for t in toks], dtype="<U16"),
                "category": np.array(cats, dtype=np.int8)}

    def _block(self, kind: str, b: int) -> dict:
        cache = self.__dict__.setdefault("_blocks", {})
        key = (kind, b)
        if key in cache:
            cache[key] = cache.pop(key)  # LRU order
            return cache[key]
        lp = self._lidar_pc
        lo, hi = b * self.BLOCK, min(len(lp["token"]), (b + 1) * self.BLOCK)
        toks = lp["token"][lo:hi]
        pos = {t: lo + k for k, t in enumerate(toks)}
        ph = ",".join("?" * len(toks))
        if kind == "box":
            rows = self.execute(
                "SELECT lidar_pc_token, track_token, x, y, z, width, length, height, vx, vy, yaw, token, rowid "
                f"FROM lidar_box WHERE lidar_pc_token IN ({ph})", toks) if toks else []
            cols = list(zip(*rows)) if rows else [()] * 13
            tindex = self._tracks["index"]
            try:
                tidx = np.fromiter((tindex[bytes(t)] for t in cols[1]), dtype=np.int64, count=len(rows))
            except KeyError as exc:
                raise SchemaError(self.path, f"lidar_box references a track missing from 'track': {exc}") from None
            blk = {"lidx": np.fromiter((pos[bytes(t)] for t in cols[0]), dtype=np.int64, count=len(rows)),
                   "tidx": tidx, "token": list(cols[11]), "rowid": np.array(cols[12], dtype=np.int64)}
            for j, k in enumerate(("x", "y", "z", "width", "length", "height", "vx", "vy", "yaw")):
                blk[k] = np.array(cols[2 + j], dtype=np.float64)  # NULL -> nan
        else:
            rows = self.execute("SELECT lidar_pc_token, lane_connector_id, status FROM traffic_light_status "
                                f"WHERE lidar_pc_token IN ({ph})", toks) if toks else []
            cols = list(zip(*rows)) if rows else [()] * 3
            try:
                conn = np.array(cols[1], dtype=np.int64)
            except (TypeError, ValueError):
                bad = next((c for c in cols[1] if not isinstance(c, int)), None)
                raise SchemaError(self.path, f"traffic_light_status.lane_connector_id must be an integer, "
                                             f"got {bad!r}") from None
            # unknown strings (e.g. 'GREEN') silently become unknown, as in the devkit
            blk = {"lidx": np.fromiter((pos[bytes(t)] for t in cols[0]), dtype=np.int64, count=len(rows)),
                   "lane_connector_id": conn,
                   "status": np.fromiter((TRAFFIC_LIGHT_STATUS.get(v, TL_UNKNOWN) for v in cols[2]), dtype=np.int8,
                                         count=len(rows))}
        cache[key] = blk
        while len(cache) > self.MAX_BLOCKS:
            cache.pop(next(iter(cache)))
        return blk

    def _rows(self, kind: str, indices) -> tuple[dict, np.ndarray]:
        """Rows of the given frames from the block cache, and each row's position in `indices`."""
        indices = np.asarray(indices, dtype=np.int64)
        where = np.full(len(self._lidar_pc["token"]), -1, dtype=np.int64)
        where[indices] = np.arange(len(indices))
        parts = []
        for b in np.unique(indices // self.BLOCK):
            blk = self._block(kind, int(b))
            sel = np.nonzero(where[blk["lidx"]] >= 0)[0]
            parts.append((blk, sel))
        keys = [k for k in parts[0][0] if k != "token"] if parts else []
        out = {k: np.concatenate([blk[k][sel] for blk, sel in parts]) for k in keys}
        if parts and "token" in parts[0][0]:
            out["token"] = [blk["token"][i] for blk, sel in parts for i in sel]
        return out, (where[out["lidx"]] if parts else np.zeros(0, np.int64))

    def boxes(self, indices, with_tokens: bool = False) -> dict[str, np.ndarray]:
        """All lidar_box rows at lidar_pc `indices` (positions into :attr:`lidar_pc_tokens`).

        Returns flat arrays sorted by frame then track: `frame` (position in `indices`), `track` (hex), `category`
        (code, see schema.CATEGORIES), x, y, z (box centre, global), width, length, height, vx, vy (global frame),
        yaw (global heading), `rowid` (the row's position in the table: the devkit iterates a frame's boxes in this
        order); with `with_tokens`, also `token` (the box, hex).
        """
        rows, frame = self._rows("box", indices)
        keys = ("x", "y", "z", "width", "length", "height", "vx", "vy", "yaw")
        if not len(frame):
            out = {"frame": np.zeros(0, np.int64), "track": np.zeros(0, "<U16"), "category": np.zeros(0, np.int8),
                   "rowid": np.zeros(0, np.int64)}
            out.update({k: np.zeros(0) for k in keys})
            if with_tokens:
                out["token"] = np.zeros(0, "<U16")
            return out
        tr = self._tracks
        order = np.lexsort((rows["tidx"], frame))
        out = {"frame": frame[order], "track": tr["hex"][rows["tidx"][order]],
               "category": tr["category"][rows["tidx"][order]], "rowid": rows["rowid"][order]}
        for k in keys:
            out[k] = rows[k][order]
        if with_tokens:
            out["token"] = np.array([bytes(rows["token"][i]).hex() for i in order], dtype="<U16")
        return out

    def traffic_lights(self, indices) -> dict[str, np.ndarray]:
        """traffic_light_status rows at lidar_pc `indices`: `frame`, `lane_connector_id` (int), `status` (code)."""
        rows, frame = self._rows("tl", indices)
        if not len(frame):
            return {"frame": np.zeros(0, np.int64), "lane_connector_id": np.zeros(0, np.int64),
                    "status": np.zeros(0, np.int8)}
        order = np.lexsort((rows["lane_connector_id"], frame))
        return {"frame": frame[order], "lane_connector_id": rows["lane_connector_id"][order],
                "status": rows["status"][order]}

    def images(self, indices, channels=None) -> list[list[ImageRecord]]:
        """Images matched to each lidar_pc of `indices` within +-50 ms (`get_images_from_lidar_tokens`)."""
        cams = {c.token: c.channel for c in self.cameras}
        want = set(channels) if channels else set(cams.values())
        ts = self.lidar_pc_timestamps[np.asarray(indices, dtype=np.int64)]
        if len(ts) == 0:
            return []
        rows = self.execute(
            "SELECT token, camera_token, filename_jpg, timestamp FROM image WHERE timestamp BETWEEN ? AND ? "
            "ORDER BY timestamp", (int(ts.min()) - 50_000, int(ts.max()) + 50_000))
        recs = [ImageRecord(_hex(r[0]), _hex(r[1]), cams.get(_hex(r[1]), "?"), r[2], int(r[3])) for r in rows]
        recs = [r for r in recs if r.channel in want]
        its = np.array([r.timestamp for r in recs], dtype=np.int64)
        out = []
        for t in ts:
            sel = np.nonzero(np.abs(its - t) <= 50_000)[0]
            best: dict[str, ImageRecord] = {}
            for k in sel:
                r = recs[k]
                if r.channel not in best or abs(r.timestamp - t) < abs(best[r.channel].timestamp - t):
                    best[r.channel] = r
            out.append([best[c] for c in CAMERA_CHANNELS if c in best])
        return out

    def category_counts(self) -> dict[str, int]:
        rows = self.execute(
            "SELECT c.name, COUNT(t.token) FROM track AS t INNER JOIN category AS c ON c.token = t.category_token "
            "GROUP BY c.name")
        return {name: int(n) for name, n in rows}
