"""Read-only access to a nuPlan log database (.db, plain SQLite).

Opens the file with the SQLite URI ``mode=ro`` so that nothing can ever be written into a user's dataset, checks
the published schema (every table and column of :data:`~simscale_env.data.schema.NUPLAN_SCHEMA`), and answers
the queries the simulator needs with numpy arrays. Tokens are 16-hex strings everywhere outside this module.
The queries follow nuplan/database/nuplan_db/nuplan_scenario_queries.py.

Every value a reader uses is checked where its table is read (vectorized over the fetched column): a NULL, text or
blob in a numeric column, a non-finite coordinate or a non-BLOB token raises :class:`SchemaError` naming the file,
``table.column``, the row (rowid and token) and what was expected, so that nothing malformed reaches the simulation
as NaN or as a late ``TypeError``.

A database in WAL journal mode (header bytes 18/19 == 2) without pending changes in a ``-wal`` file is opened with
``immutable=1``: SQLite then needs no ``-shm`` index, so it reads in a read-only folder and creates no ``-shm``/``-wal``
beside the log. With a non-empty ``-wal``, the log is read through SQLite's WAL machinery; where that cannot work (no
``-shm`` and a folder SQLite cannot write to) the error says so and how to convert the log.
"""

from __future__ import annotations

import logging
import math
import re
import sqlite3
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import CorruptFileError, DataError, MissingFileError, SchemaError, UnknownTokenError
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

log = logging.getLogger(__name__)

_SQLITE_MAGIC = b"SQLite format 3\x00"
_FLOAT_TYPES = frozenset((float, int))


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


def _describe(v) -> str:
    """A stored SQLite value as a user would name it in an error message."""
    if v is None:
        return "NULL"
    if isinstance(v, str):
        return f"text {v[:40]!r}"
    if isinstance(v, bytes):
        return f"a {len(v)}-byte blob"
    return repr(v)


def _is_finite_number(v) -> bool:
    return type(v) in _FLOAT_TYPES and math.isfinite(v)


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
            head = fh.read(20)
        if head[:16] != _SQLITE_MAGIC:
            raise CorruptFileError(self.path, "not an SQLite database (bad header); expected a nuPlan .db log")
        # header bytes 18/19 (file format write/read version) are 2 in WAL journal mode
        self.wal_mode = len(head) == 20 and 2 in (head[18], head[19])
        wal = Path(f"{self.path}-wal")
        self._pending_wal = self.wal_mode and wal.is_file() and wal.stat().st_size > 0
        uri = self.path.resolve().as_uri() + "?mode=ro"
        if self.wal_mode and not self._pending_wal:
            # everything is in the .db: read it as a fixed file, so that SQLite neither needs a -shm index (which a
            # read-only folder cannot hold) nor leaves -shm/-wal files beside the user's log
            uri += "&immutable=1"
            log.debug("%s: WAL-mode database without a pending -wal: opened immutable", self.path)
        try:
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self._conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            raise self._sqlite_error(exc) from exc
        self._check_schema()

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        """Close the connection; tables already read stay, and a later query reopens the file (so a LogDB that
        ScenarioBuilder's open-log cache closed keeps working for whoever still holds it)."""
        self._conn.close()
        self._closed = True

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
        if self.__dict__.get("_closed"):
            self._closed = False
            self.__init__(self.path)  # reopen (as unpickling does); cached tables are kept
        try:
            return self._conn.execute(sql, params).fetchall()
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise self._sqlite_error(exc, sql) from exc

    def _sqlite_error(self, exc: Exception, sql: str | None = None) -> DataError:
        if isinstance(exc, UnicodeDecodeError):  # the sqlite3 module decodes TEXT values as UTF-8
            m = re.search(r"\bFROM (\w+)", sql or "")
            where = f"table '{m.group(1)}'" if m else "the schema"
            return CorruptFileError(self.path, f"{where} holds text that is not valid UTF-8 ({exc}); the file may be "
                                               f"corrupt")
        if self._pending_wal and not Path(f"{self.path}-shm").exists():
            return DataError(self.path, (
                f"is a WAL-mode SQLite database (journal_mode=WAL) whose changes in {self.path.name}-wal are not yet "
                f"in the .db, and SQLite cannot create its {self.path.name}-shm index beside it (a read-only "
                f"folder?): SQLite error ({exc}). Copy the .db with its -wal into a writable folder and run "
                f"`sqlite3 {self.path.name} 'PRAGMA journal_mode=DELETE'` there (this merges the -wal into the .db "
                f"and leaves a plain database), then use the copy"))
        return CorruptFileError(self.path, f"SQLite error ({exc}); the file may be truncated or corrupt")

    # ------------------------------------------------------------------ value checks
    # A column as fetched (a tuple of Python values) -> a numpy array, or SchemaError at its first bad value naming
    # table.column, the row (rowid, token) and what was expected. The common, clean case costs one C-level pass
    # (set(map(type, ...))) and, for floats, one np.isfinite.
    def _bad_value(self, table: str, column: str, value, rowid, token, expected: str) -> SchemaError:
        row = f"rowid {rowid}" + (f", token {bytes(token).hex()}" if isinstance(token, bytes) else "")
        return SchemaError(self.path, f"{table}.{column} must be {expected}, got {_describe(value)} ({row})")

    def _floats(self, table: str, column: str, values, rowids, tokens=()) -> np.ndarray:
        if set(map(type, values)) <= _FLOAT_TYPES:
            a = np.array(values, dtype=np.float64)
            bad = ~np.isfinite(a)
            if not bad.any():
                return a
            i = int(np.argmax(bad))
        else:
            i = next(k for k, v in enumerate(values) if not _is_finite_number(v))
        raise self._bad_value(table, column, values[i], rowids[i], tokens[i] if tokens else None, "a finite number")

    def _ints(self, table: str, column: str, values, rowids, tokens=()) -> np.ndarray:
        if set(map(type, values)) <= {int}:
            return np.array(values, dtype=np.int64)
        i = next(k for k, v in enumerate(values) if type(v) is not int)
        raise self._bad_value(table, column, values[i], rowids[i], tokens[i] if tokens else None, "an integer")

    def _blobs(self, table: str, column: str, values, rowids, tokens=(), *, nullable: bool = False) -> None:
        ok = {bytes, type(None)} if nullable else {bytes}
        if set(map(type, values)) <= ok:
            return
        i = next(k for k, v in enumerate(values) if type(v) not in ok)
        raise self._bad_value(table, column, values[i], rowids[i], tokens[i] if tokens else None,
                              "a token (BLOB)" + (" or NULL" if nullable else ""))

    def _texts(self, table: str, column: str, values, rowids, tokens=(), *, nullable: bool = False) -> None:
        ok = {str, type(None)} if nullable else {str}
        if set(map(type, values)) <= ok:
            return
        i = next(k for k, v in enumerate(values) if type(v) not in ok)
        raise self._bad_value(table, column, values[i], rowids[i], tokens[i] if tokens else None,
                              "text" + (" or NULL" if nullable else ""))

    def _check_schema(self) -> None:
        try:
            tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise self._sqlite_error(exc) from exc
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
            "SELECT token, vehicle_name, date, timestamp, logfile, location, map_version, rowid FROM log LIMIT 1")
        if not rows:
            raise SchemaError(self.path, "table 'log' is empty")
        r = rows[0]
        self._blobs("log", "token", (r[0],), (r[7],))
        if r[3] is not None:
            self._ints("log", "timestamp", (r[3],), (r[7],), (r[0],))
        self._texts("log", "map_version", (r[6],), (r[7],), (r[0],))
        return LogRecord(_hex(r[0]), r[1], r[2], int(r[3] or 0), r[4], r[5], r[6])

    @property
    def map_location(self) -> str:
        return self.log.map_version

    @cached_property
    def lidar_token(self) -> bytes | None:
        rows = self.execute("SELECT token, rowid FROM lidar WHERE channel = ?", (LIDAR_CHANNEL,))
        if rows:
            self._blobs("lidar", "token", (rows[0][0],), (rows[0][1],))
        return rows[0][0] if rows else None

    @cached_property
    def _lidar_pc(self) -> dict:
        """The 20 Hz master clock: every lidar_pc of the merged lidar, ordered by timestamp."""
        if self.lidar_token is not None:
            rows = self.execute(
                "SELECT lp.token, lp.timestamp, lp.ego_pose_token, lp.scene_token, lp.filename, lp.rowid "
                "FROM lidar_pc AS lp WHERE lp.lidar_token = ? ORDER BY lp.timestamp ASC", (self.lidar_token,))
        else:
            rows = self.execute("SELECT token, timestamp, ego_pose_token, scene_token, filename, rowid FROM lidar_pc "
                                "ORDER BY timestamp ASC")
        cols = list(zip(*rows)) if rows else [()] * 6
        self._blobs("lidar_pc", "token", cols[0], cols[5])
        self._blobs("lidar_pc", "scene_token", cols[3], cols[5], cols[0], nullable=True)
        tokens = list(cols[0])
        return {
            "token": tokens,
            "hex": [t.hex() for t in tokens],
            "timestamp": self._ints("lidar_pc", "timestamp", cols[1], cols[5], cols[0]),
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
        lp = self._lidar_pc  # validates lidar_pc (timestamps, tokens) first
        names = ("x", "y", "z", "qw", "qx", "qy", "qz", "vx", "vy", "acceleration_x", "acceleration_y",
                 "angular_rate_z")
        rows = self.execute(
            "SELECT lp.timestamp, ep.rowid, ep.token, ep.epsg, " + ", ".join(f"ep.{c}" for c in names)
            + " FROM lidar_pc AS lp INNER JOIN ego_pose AS ep ON lp.ego_pose_token = ep.token "
            + ("WHERE lp.lidar_token = ? " if self.lidar_token is not None else "")
            + "ORDER BY lp.timestamp ASC",
            (self.lidar_token,) if self.lidar_token is not None else ())
        if len(rows) != len(lp["token"]):
            raise SchemaError(self.path, "some lidar_pc rows reference a missing ego_pose (ego_pose_token)")
        cols = list(zip(*rows)) if rows else [()] * (4 + len(names))
        a = {c: self._floats("ego_pose", c, cols[4 + j], cols[1], cols[2]) for j, c in enumerate(names)}
        return {
            "timestamp": lp["timestamp"].copy(), "x": a["x"], "y": a["y"], "z": a["z"],
            "heading": yaw_from_quaternion(a["qw"], a["qx"], a["qy"], a["qz"]),
            "vx": a["vx"], "vy": a["vy"], "ax": a["acceleration_x"], "ay": a["acceleration_y"],
            "yaw_rate": a["angular_rate_z"], "epsg": rows[0][3] if rows else None,
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
        rows = self.execute("SELECT x, y, qw, qx, qy, qz, rowid, token FROM ego_pose WHERE token = ?",
                            (token_to_bytes(token, "ego_pose token"),))
        if not rows:
            raise UnknownTokenError(self.path, f"unknown ego_pose token {token}")
        r = rows[0]
        x, y, qw, qx, qy, qz = (float(self._floats("ego_pose", c, (r[j],), (r[6],), (r[7],))[0])
                                for j, c in enumerate(("x", "y", "qw", "qx", "qy", "qz")))
        return x, y, float(yaw_from_quaternion(qw, qx, qy, qz))

    @cached_property
    def scenes(self) -> list[SceneRecord]:
        """Scenes ordered by name (the devkit orders them so; the first two and last two never yield scenarios)."""
        rows = self.execute(
            "SELECT s.token, s.name, s.roadblock_ids, s.goal_ego_pose_token, s.rowid, ep.rowid, ep.token, "
            "ep.x, ep.y, ep.qw, ep.qx, ep.qy, ep.qz "
            "FROM scene AS s LEFT JOIN ego_pose AS ep ON ep.token = s.goal_ego_pose_token ORDER BY s.name ASC")
        cols = list(zip(*rows)) if rows else [()] * 13
        self._blobs("scene", "token", cols[0], cols[4])
        self._blobs("scene", "goal_ego_pose_token", cols[3], cols[4], cols[0], nullable=True)
        self._texts("scene", "roadblock_ids", cols[2], cols[4], cols[0], nullable=True)
        out = []
        for tok, name, rb, goal_tok, _, ep_rowid, ep_tok, *pose in rows:
            goal = None
            if ep_rowid is not None:  # the goal ego_pose exists: its pose must be numbers
                x, y, qw, qx, qy, qz = (float(self._floats("ego_pose", c, (v,), (ep_rowid,), (ep_tok,))[0])
                                        for c, v in zip(("x", "y", "qw", "qx", "qy", "qz"), pose))
                goal = (x, y, float(yaw_from_quaternion(qw, qx, qy, qz)))
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
            "SELECT st.token, st.lidar_pc_token, st.type, st.agent_track_token, lp.timestamp, st.rowid, lp.rowid "
            "FROM scenario_tag AS st INNER JOIN lidar_pc AS lp ON lp.token = st.lidar_pc_token "
            "ORDER BY lp.timestamp ASC, st.type ASC")
        cols = list(zip(*rows)) if rows else [()] * 7
        self._blobs("scenario_tag", "token", cols[0], cols[5])
        self._blobs("scenario_tag", "agent_track_token", cols[3], cols[5], cols[0], nullable=True)
        self._texts("scenario_tag", "type", cols[2], cols[5], cols[0])
        ts = self._ints("lidar_pc", "timestamp", cols[4], cols[6], cols[1])
        return [ScenarioTagRecord(_hex(r[0]), _hex(r[1]), r[2], _hex(r[3]), int(t)) for r, t in zip(rows, ts)]

    @cached_property
    def cameras(self) -> tuple[CameraCalibration, ...]:
        rows = self.execute(
            "SELECT token, channel, model, translation, rotation, intrinsic, distortion, width, height, rowid "
            "FROM camera")
        cols = list(zip(*rows)) if rows else [()] * 10
        self._blobs("camera", "token", cols[0], cols[9])
        self._texts("camera", "channel", cols[1], cols[9], cols[0])
        out = []
        for tok, ch, model, tr, rot, intr, dist, w, h, rowid in rows:
            src = f"camera[{ch}]"

            def arr(blob, name, shape):
                try:
                    return np.asarray(safe_loads(blob, f"{self.path}:{src}.{name}"), dtype=np.float64).reshape(shape)
                except (TypeError, ValueError) as exc:
                    raise SchemaError(self.path, f"{src}.{name}: expected a pickled array of shape {shape} "
                                                 f"({exc})") from None

            if w is None or h is None:
                raise SchemaError(self.path, f"{src}: width and height must be set, got {w!r} x {h!r}")
            w, h = (int(self._ints("camera", c, (v,), (rowid,), (tok,))[0]) for c, v in (("width", w), ("height", h)))
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
    # arrays, so that extracting many scenarios from one log reads each row once. Blocks of 1 s (20 lidar_pcs), of
    # which a 10 Hz scenario reads only its parity (`_rows`): it reads little beyond its own rows (blocks of 400 read
    # up to 40 s of rows around a 14 s window: a reset opening its log took 133-149 ms on the mini logs, ~49 ms with
    # these; issue 20). MAX_BLOCKS keeps the same 25,600 lidar_pcs of rows per open log. The rows of a frame are the
    # same whatever the block size.
    BLOCK = 20
    MAX_BLOCKS = 1280

    @cached_property
    def _tracks(self) -> dict:
        cat_code = {n: i for i, n in enumerate(CATEGORIES)}
        toks, cats = [], []
        rows = self.execute("SELECT t.token, c.name, t.rowid FROM track AS t "
                            "INNER JOIN category AS c ON c.token = t.category_token")
        self._blobs("track", "token", [r[0] for r in rows], [r[2] for r in rows])
        for tok, name, _ in rows:
            if not isinstance(name, str) or name not in cat_code:
                raise SchemaError(self.path, f"category name {name!r} is not one of {CATEGORIES}")
            toks.append(tok)
            cats.append(cat_code[name])
        return {"index": {t: i for i, t in enumerate(toks)}, "hex": np.array([t.hex() for t in toks], dtype="<U16"),
                "category": np.array(cats, dtype=np.int8)}

    def _block(self, kind: str, b: int, parity: int | None = None) -> dict:
        """The rows of block `b` (lidar_pcs b * BLOCK .. (b + 1) * BLOCK - 1), or with `parity` those of its lidar_pcs
        of that parity only (a 10 Hz scenario reads every other 20 Hz lidar_pc; the whole block serves it too when
        it is cached)."""
        cache = self.__dict__.setdefault("_blocks", {})
        for key in ((kind, b, None), (kind, b, parity)):
            if key in cache:
                cache[key] = cache.pop(key)  # LRU order
                return cache[key]
        lp = self._lidar_pc
        lo, hi = b * self.BLOCK, min(len(lp["token"]), (b + 1) * self.BLOCK)
        frames = range(lo, hi) if parity is None else range(lo + (parity - lo) % 2, hi, 2)
        toks = [lp["token"][f] for f in frames]
        pos = dict(zip(toks, frames))
        ph = ",".join("?" * len(toks))
        if kind == "box":
            rows = self.execute(
                "SELECT lidar_pc_token, track_token, x, y, z, width, length, height, vx, vy, yaw, token, rowid "
                f"FROM lidar_box WHERE lidar_pc_token IN ({ph})", toks) if toks else []
            cols = list(zip(*rows)) if rows else [()] * 13
            self._blobs("lidar_box", "token", cols[11], cols[12])
            self._blobs("lidar_box", "track_token", cols[1], cols[12], cols[11])
            tindex = self._tracks["index"]
            tidx = np.fromiter((tindex.get(t, -1) for t in cols[1]), dtype=np.int64, count=len(rows))
            if (tidx < 0).any():
                i = int(np.argmax(tidx < 0))
                raise SchemaError(self.path, f"lidar_box.track_token {cols[1][i].hex()} is not in table 'track' "
                                             f"(rowid {cols[12][i]}, token {cols[11][i].hex()})")
            blk = {"lidx": np.fromiter((pos[t] for t in cols[0]), dtype=np.int64, count=len(rows)),
                   "tidx": tidx, "token": list(cols[11]), "rowid": np.array(cols[12], dtype=np.int64)}
            for j, k in enumerate(("x", "y", "z", "width", "length", "height", "vx", "vy", "yaw")):
                blk[k] = self._floats("lidar_box", k, cols[2 + j], cols[12], cols[11])
        else:
            rows = self.execute("SELECT lidar_pc_token, lane_connector_id, status, rowid, token "
                                f"FROM traffic_light_status WHERE lidar_pc_token IN ({ph})", toks) if toks else []
            cols = list(zip(*rows)) if rows else [()] * 5
            conn = self._ints("traffic_light_status", "lane_connector_id", cols[1], cols[3], cols[4])
            # unknown strings (e.g. 'GREEN') silently become unknown, as in the devkit
            blk = {"lidx": np.fromiter((pos[bytes(t)] for t in cols[0]), dtype=np.int64, count=len(rows)),
                   "lane_connector_id": conn,
                   "status": np.fromiter((TRAFFIC_LIGHT_STATUS.get(v, TL_UNKNOWN) for v in cols[2]), dtype=np.int8,
                                         count=len(rows))}
        cache[(kind, b, parity)] = blk
        while len(cache) > self.MAX_BLOCKS:
            cache.pop(next(iter(cache)))
        return blk

    def _rows(self, kind: str, indices) -> tuple[dict, np.ndarray]:
        """Rows of the given frames from the block cache, and each row's position in `indices`."""
        indices = np.asarray(indices, dtype=np.int64)
        where = np.full(len(self._lidar_pc["token"]), -1, dtype=np.int64)
        where[indices] = np.arange(len(indices))
        parts = []
        blocks, inv = np.unique(indices // self.BLOCK, return_inverse=True)
        # per block, the parities asked for: one parity (a 10 Hz window) reads only those lidar_pcs
        lo_par, hi_par = np.full(len(blocks), 2), np.full(len(blocks), -1)
        np.minimum.at(lo_par, inv, indices % 2)
        np.maximum.at(hi_par, inv, indices % 2)
        for b, p0, p1 in zip(blocks.tolist(), lo_par.tolist(), hi_par.tolist()):
            blk = self._block(kind, b, p0 if p0 == p1 else None)
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
            "SELECT token, camera_token, filename_jpg, timestamp, rowid FROM image WHERE timestamp BETWEEN ? AND ? "
            "ORDER BY timestamp", (int(ts.min()) - 50_000, int(ts.max()) + 50_000))
        cols = list(zip(*rows)) if rows else [()] * 5
        self._blobs("image", "token", cols[0], cols[4])
        self._blobs("image", "camera_token", cols[1], cols[4], cols[0])
        its = self._ints("image", "timestamp", cols[3], cols[4], cols[0])
        recs = [ImageRecord(_hex(r[0]), _hex(r[1]), cams.get(_hex(r[1]), "?"), r[2], int(t))
                for r, t in zip(rows, its)]
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
