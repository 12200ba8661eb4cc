"""Golden folders in the format of ``oracle_mini/`` (outputs of the real nuplan-devkit and NAVSIM on frozen logs).

A golden folder holds, each optional:

| path | what |
|---|---|
| ``maps.tar.xz`` | a maps root (``maps/nuplan-maps-v1.0.json``, ``maps/<location>/<version>/map.gpkg``) |
| ``logs/<log>.db.xz`` | nuPlan SQLite logs, xz-compressed |
| ``navsim_logs/<log>.pkl.xz`` | OpenScene pickles of the same logs, xz-compressed |
| ``idm_traces/<token>.json`` | the devkit's reactive closed loop on a scenario |
| ``navsim_scores_*.json`` | NAVSIM's ``pdm_score`` of named trajectories and its PDM-Closed plan per scene |
| ``devkit_scenarios.json`` / ``devkit_maps.json`` | the devkit's scenario builder and map API on the logs and maps |

The folder itself is never written to: compressed files are extracted once into the cache
(``SIMSCALE_CACHE/golden/<digest>``, keyed by the archives' contents), atomically, and reused afterwards.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..data.paths import cache_dir
from ..errors import CorruptFileError, MissingFileError


def _digest(paths) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


SOURCES = ("nuplan", "openscene")  # where the checks build scenarios from: the .db logs or the OpenScene pickles


def check_source(source: str) -> str:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    return source


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(path, f"not valid JSON ({exc})") from exc


@dataclass(frozen=True)
class GoldenFolder:
    """A golden folder and its extracted copy in the cache."""

    root: Path
    cache: Path = field(default=None)

    @staticmethod
    def open(root: str | Path, cache: str | Path | None = None) -> "GoldenFolder":
        root = Path(root)
        if not root.is_dir():
            raise MissingFileError(root, "golden folder not found")
        return GoldenFolder(root, Path(cache) if cache is not None else None)

    # ------------------------------------------------------------------ what is there
    @property
    def archives(self) -> list[Path]:
        out = []
        if (self.root / "maps.tar.xz").exists():
            out.append(self.root / "maps.tar.xz")
        out += sorted((self.root / "logs").glob("*.db.xz")) if (self.root / "logs").is_dir() else []
        out += sorted((self.root / "navsim_logs").glob("*.pkl.xz")) if (self.root / "navsim_logs").is_dir() else []
        return out

    @cached_property
    def extracted(self) -> Path:
        """The folder holding ``maps/``, ``logs/`` and ``navsim_logs/`` extracted (made on first use)."""
        base = self.cache if self.cache is not None else cache_dir() / "golden"
        dest = base / _digest(self.archives)
        if (dest / ".complete").exists():
            return dest
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=base))
        try:
            for a in self.archives:
                if a.name == "maps.tar.xz":
                    try:
                        with tarfile.open(a, "r:xz") as tf:
                            tf.extractall(tmp, filter="data")
                    except (tarfile.TarError, lzma.LZMAError, EOFError) as exc:
                        raise CorruptFileError(a, f"not a readable .tar.xz ({exc})") from exc
                    continue
                out = tmp / a.parent.name / a.name[:-3]
                out.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with lzma.open(a) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                except (lzma.LZMAError, EOFError) as exc:
                    raise CorruptFileError(a, f"not a readable .xz file ({exc})") from exc
            (tmp / ".complete").write_text("")
            try:
                os.replace(tmp, dest)
            except OSError:  # another process finished first
                if not (dest / ".complete").exists():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return dest

    @property
    def maps_root(self) -> Path | None:
        if not (self.root / "maps.tar.xz").exists():
            return None
        return self.extracted / "maps"

    @property
    def log_dir(self) -> Path | None:
        """Folder of the extracted nuPlan ``.db`` logs (None without ``logs/``)."""
        return self.extracted / "logs" if (self.root / "logs").is_dir() else None

    def log_path(self, log_name: str) -> Path:
        p = self.extracted / "logs" / f"{log_name}.db"
        if not p.exists():
            raise MissingFileError(self.root / "logs" / f"{log_name}.db.xz", "log referenced by the golden files")
        return p

    def navsim_log_path(self, log_name: str) -> Path:
        p = self.extracted / "navsim_logs" / f"{log_name}.pkl"
        if not p.exists():
            raise MissingFileError(self.root / "navsim_logs" / f"{log_name}.pkl.xz",
                                   "OpenScene log referenced by the golden files")
        return p

    @property
    def navsim_log_dir(self) -> Path | None:
        return self.extracted / "navsim_logs" if (self.root / "navsim_logs").is_dir() else None

    # ------------------------------------------------------------------ golden outputs
    @property
    def trace_files(self) -> list[Path]:
        d = self.root / "idm_traces"
        return sorted(d.glob("*.json")) if d.is_dir() else []

    def traces(self):
        """(path, trace dict) of every IDM trace."""
        for p in self.trace_files:
            yield p, _read_json(p)

    @property
    def score_files(self) -> list[Path]:
        return sorted(self.root.glob("navsim_scores_*.json"))

    def scores(self):
        for p in self.score_files:
            yield p, _read_json(p)

    def scene_skip_reason(self, source: str = "nuplan") -> str | None:
        """Why the score and plan checks cannot run on this folder with scenes from `source` (None when they can):
        "nuplan" reads ``logs/`` and ``navsim_logs/``, "openscene" only ``navsim_logs/``."""
        check_source(source)
        if not self.score_files:
            return "no navsim_scores_*.json"
        if source == "openscene":
            if self.navsim_log_dir is None or self.maps_root is None:
                return "the folder lacks navsim_logs/ or maps.tar.xz"
            return None
        if self.log_dir is None or self.navsim_log_dir is None or self.maps_root is None:
            return "the folder lacks logs/, navsim_logs/ or maps.tar.xz"
        return None

    def dense_plans(self, key: str = "pdm_closed_40x0p1s") -> dict:
        """{(token, time_us): NAVSIM's dense PDM-Closed trajectory} over every score file: a file may leave it to
        another one of the same scenes (the shared reactive file has none)."""
        out = {}
        for _, data in self.scores():
            for token, scene in (data.get("scenes") or {}).items():
                if isinstance(scene, dict) and key in scene:
                    out.setdefault((token, scene.get("time_us")), scene[key])
        return out

    def devkit_scenarios(self):
        p = self.root / "devkit_scenarios.json"
        return (p, _read_json(p)) if p.exists() else (p, None)

    def devkit_maps(self):
        p = self.root / "devkit_maps.json"
        return (p, _read_json(p)) if p.exists() else (p, None)


class GoldenScenes:
    """The logs, OpenScene frames, maps and NAVSIM-scene simulations of a golden folder, each opened once.

    `source` says where :meth:`simulation` builds its scenario from: "nuplan" (the default) extracts it from the
    folder's nuPlan ``.db`` log; "openscene" builds it from the log's OpenScene frames alone
    (:func:`~simscale_env.data.openscene_scenario.scenario_from_frames`: 2 Hz frames interpolated to 10 Hz as NAVSIM
    does), without opening a ``.db``."""

    def __init__(self, folder: GoldenFolder, source: str = "nuplan"):
        self.folder = folder
        self.source = check_source(source)
        self._db: dict = {}
        self._frames: dict = {}
        self._by_token: dict = {}
        self._index: dict = {}
        self._maps: dict = {}

    def frames(self, log_name: str) -> list:
        """The OpenScene frame list of a log."""
        from ..data.openscene import load_log

        if log_name not in self._frames:
            self._frames[log_name] = load_log(self.folder.navsim_log_path(log_name))
        return self._frames[log_name]

    def frame_index(self, log_name: str, token: str) -> int:
        """The index of a scene token's frame in its OpenScene log."""
        from ..errors import UnknownTokenError

        if log_name not in self._index:
            idx: dict = {}
            for k, f in enumerate(self.frames(log_name)):
                idx.setdefault(f["token"], k)
            self._index[log_name] = idx
        k = self._index[log_name].get(token)
        if k is None:
            raise UnknownTokenError(self.folder.navsim_log_path(log_name), f"scene token {token} not in the log")
        return k

    def frame(self, log_name: str, token: str) -> dict:
        """The OpenScene frame of a scene token."""
        return self.frames(log_name)[self.frame_index(log_name, token)]

    def map(self, location: str):
        """The map of a location, from the folder's maps (loaded once)."""
        from ..map import load_map

        if location not in self._maps:
            self._maps[location] = load_map(location, self.folder.maps_root)
        return self._maps[location]

    def db(self, log_name: str):
        """The nuPlan log of `log_name` (opened once; source "nuplan" only)."""
        from ..data.nuplan_db import LogDB

        if self.source != "nuplan":
            raise ValueError(f"GoldenScenes(source={self.source!r}) opens no nuPlan .db log")
        if log_name not in self._db:
            self._db[log_name] = LogDB(self.folder.log_path(log_name))
        return self._db[log_name]

    def scenario(self, log_name: str, token: str, *, offset_s: float, history_s: float, duration_s: float):
        """The scenario anchored at `token` from this source: the ``.db`` extraction (nuplan) or the OpenScene frames
        interpolated to 10 Hz (openscene)."""
        if self.source == "openscene":
            from ..data.openscene_scenario import scenario_from_frames

            return scenario_from_frames(self.frames(log_name), self.frame_index(log_name, token),
                                        path=self.folder.navsim_log_path(log_name), offset_s=offset_s,
                                        duration_s=duration_s, history_s=history_s)
        from ..data.scenario import extract_scenario

        return extract_scenario(self.db(log_name), token, offset_s=offset_s, history_s=history_s,
                                duration_s=duration_s)

    def simulation(self, log_name: str, token: str):
        """A non-reactive simulation whose iteration 0 is the token's frame (NAVSIM's current frame), 1.5 s of
        history before it and NAVSIM's 4 s horizon after it."""
        from ..metrics.navsim_cache import NAVSIM_HORIZON_S
        from ..sim import SimConfig, Simulation

        sc = self.scenario(log_name, token, offset_s=0.0, history_s=1.5, duration_s=NAVSIM_HORIZON_S + 0.5)
        return Simulation(sc, self.map(sc.map_location), SimConfig(agent_mode="non_reactive"))
