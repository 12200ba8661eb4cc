"""Build the embedded mini dataset: maps, logs, OpenScene logs and splits, deterministically from a seed.

Layout (the same as a nuPlan + NAVSIM installation, so every reader takes one code path)::

    OUT/maps/nuplan-maps-v1.0.json
    OUT/maps/<location>/<version>/map.gpkg
    OUT/nuplan-v1.1/splits/mini/<log>.db
    OUT/navsim_logs/mini/<log>.pkl
    OUT/splits/mini-navtrain.yaml, mini-navtest.yaml, mini-navhard.yaml   (NAVSIM scene_filter format)
    OUT/splits/mini-navtrain-frames.yaml      (every valid 2 Hz frame of the training logs, as NAVSIM's navtrain)
    OUT/sensor_blobs/mini/<log>/<channel>/<token>.jpg                     (rendered cameras of the test scenes)
    OUT/manifest.json                                                     (written last: the build is complete)

Every file is written to a hidden temporary beside it and renamed into place (`data.atomic`; the finders skip hidden
names and temporaries); an interrupted build (even by SIGKILL) resumes with the logs it already has, removes the
temporaries it left and finishes with the same bytes as an uninterrupted build. `logs=N` builds the first N logs
only (a small dataset for tests; the marker and manifest record N). The camera blobs of the test splits' scenes
(`blobs.py`) are rendered after the splits are written (none when the test splits are empty).

A generated log is accepted only if its movers never overlap, its ego moves for most of the log and stays on the
map, and it has scenario tags; otherwise the next seed of a fixed sequence is tried.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import shapely

from ...errors import OutputFolderError
from ..atomic import atomic_write_text, is_temporary, kill_point
from ..schema import TL_RED
from .blobs import BLOB_SIZE, BLOB_SPLIT, JPEG_QUALITY, write_sensor_blobs
from .gpkg_writer import write_gpkg, write_maps_json, write_stub_gpkg
from .locations import LOCATIONS, MAP_VERSION, STUB_LOCATIONS, build_location

# 3: lawful humans (issue 13): signal commitment, comfort bounds, smoothed paths; 4: the test scenes' camera
# sensor_blobs (issue 15: a build without them is not complete), OpenScene cams with camera -> lidar extrinsics
# (sensor2lidar_*, as OpenScene writes them; v3 wrote camera -> ego there); 5: splits/mini-navtrain-frames.yaml
# (issue 17: every valid 2 Hz frame of the training logs); 6: that split with navtrain's 10 future frames (v5 had 8)
BUILDER_VERSION = 6
NUM_LOGS = 12
LOG_DURATION_S = 45.0
log = logging.getLogger(__name__)
TEST_LOGS = 4  # the last logs form the test split


@dataclass(frozen=True)
class MiniPreset:
    """A size of the mini dataset: `num_logs` logs of which the last `test_logs` form the test splits (mini-navtest,
    mini-navhard), built into the cache folder `folder` (`data.paths.ensure_mini`) or where `env_var` points."""

    name: str
    num_logs: int
    test_logs: int
    folder: str
    env_var: str
    size_mb: int  # what to expect (measured: `du -sm`, `simscale data build-mini` on two cores)
    build_minutes: str


# "mini": the embedded dataset every test and demo uses (12 logs, 4 test logs; mini-navhard 9 tokens, mini-navtrain-
# frames 616). "large": three times the logs and test logs (mini-navhard 31 tokens, mini-navtest 64, mini-navtrain
# 96, mini-navtrain-frames 1,848; 634 MB, built in 4.8 min on two cores) for issue 19's experiment (10 evaluation
# scenes cannot separate anything), built on demand into its own folder, never committed; its first logs are not
# the mini preset's files (a log's acceptance depends on whether it is a test log).
PRESETS = {
    "mini": MiniPreset("mini", NUM_LOGS, TEST_LOGS, "mini", "SIMSCALE_MINI", 210, "2-3"),
    "large": MiniPreset("large", 3 * NUM_LOGS, 3 * TEST_LOGS, "mini-large", "SIMSCALE_MINI_LARGE", 640, "5"),
}


def get_preset(preset: "str | MiniPreset") -> MiniPreset:
    if isinstance(preset, MiniPreset):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown mini dataset preset {preset!r} (known: {', '.join(PRESETS)})")
    return PRESETS[preset]


# the split YAMLs every build writes into OUT/splits (`data.paths.ensure_mini` checks a caller's split names against
# them before a build)
SPLIT_NAMES = ("mini-navhard", "mini-navtest", "mini-navtrain", "mini-navtrain-frames")
# scenario types that make mini-navhard (interactions, turns, lane changes, curves, vulnerable road users)
HARD_TYPES = (
    "starting_left_turn", "starting_right_turn", "changing_lane", "high_lateral_acceleration",
    "waiting_for_pedestrian_to_cross", "stopping_with_lead", "behind_long_vehicle", "near_multiple_vehicles",
    "starting_straight_traffic_light_intersection_traversal",
)
LOCATION_CYCLE = ("us-nv-las-vegas-strip", "us-ma-boston", "us-pa-pittsburgh-hazelwood")
MAX_TRIES = 40  # the jerk-limited traffic of builder 3 needs up to 15 tries for some logs (seed 0)
MIN_HARD_TAGS = 2  # a test log needs this many tags of HARD_TYPES (mini-navhard)


@dataclass(frozen=True)
class LogPlan:
    index: int
    name: str
    location: str
    seed: int
    construction: bool
    start_us: int
    test: bool = False  # one of the last TEST_LOGS logs (mini-navtest, mini-navhard)


def plan_logs(seed: int, n_logs: int = NUM_LOGS, test_logs: int = TEST_LOGS) -> list[LogPlan]:
    """The logs of a build of `n_logs` logs of which the last `test_logs` are test logs (a preset's sizes)."""
    plans = []
    for k in range(n_logs):
        loc = LOCATION_CYCLE[k % len(LOCATION_CYCLE)]
        day = 3 + k // 6
        minute = (7 * k + seed) % 60
        start_us = int((1622700000 + k * 3600 + seed * 86400) * 1_000_000)
        name = f"2021.06.{day:02d}.{10 + k % 8:02d}.{minute:02d}.{(13 * k) % 60:02d}_veh-90_{k * 1000:05d}_{k * 1000 + 900:05d}"
        plans.append(LogPlan(k, name, loc, seed * 1000 + k, construction=(k % 3 != 2 and k % 2 == 0), start_us=start_us,
                             test=k >= n_logs - test_logs))
    return plans


def _movers_overlap(frames) -> bool:
    for fr in frames:
        mv = np.nonzero(np.isin(fr.cat, [0, 1]))[0]
        if len(mv) < 2:
            continue
        c, s = np.cos(fr.heading[mv]), np.sin(fr.heading[mv])
        L, W = fr.size[mv, 0] / 2, fr.size[mv, 1] / 2
        corners = np.stack([
            np.stack([fr.xy[mv, 0] + c * dx * L - s * dy * W, fr.xy[mv, 1] + s * dx * L + c * dy * W], -1)
            for dx, dy in ((1, 1), (1, -1), (-1, -1), (-1, 1))], axis=1)
        polys = shapely.polygons(corners)
        tree = shapely.STRtree(polys)
        a, b = tree.query(polys, predicate="intersects")
        if np.any(a < b):
            return True
    return False


def _ego_on_red(frames, map_api) -> float | None:
    """The first time (s) the ego's box touches a connector whose light is red, among the connectors of the
    roadblocks it drives through (NAVSIM's TLC: a red route connector under the ego's box), or None."""
    from .traffic import EGO_LENGTH, EGO_WIDTH

    lanes = map_api.lanes
    rbs = {lanes[f.ego_elem].roadblock_id for f in frames}
    polys = {}
    for fr in frames:
        red = [c for c, st in fr.lights.items() if st == TL_RED and lanes[str(c)].roadblock_id in rbs]
        if not red:
            continue
        x, y, h = fr.ego[:3]
        c, s = np.cos(h), np.sin(h)
        box = shapely.Polygon([(x + c * dx * EGO_LENGTH / 2 - s * dy * EGO_WIDTH / 2,
                                y + s * dx * EGO_LENGTH / 2 + c * dy * EGO_WIDTH / 2)
                               for dx, dy in ((1, 1), (1, -1), (-1, -1), (-1, 1))])
        for cid in red:
            poly = polys.get(cid) or polys.setdefault(cid, lanes[str(cid)].polygon)
            if poly.intersects(box):
                return float(fr.t)
    return None


def generate_log(plan: LogPlan, out_db: Path, maps_root: Path) -> dict:
    """Simulate and write one log (tries successive seeds until the log passes the quality checks)."""
    from ...map.map_api import MapAPI
    from .logwriter import write_log_db
    from .traffic import LogSpec, simulate

    loc = LOCATIONS[plan.location]
    net = build_location(plan.location)
    map_api = MapAPI(maps_root / plan.location / MAP_VERSION / "map.gpkg", plan.location, MAP_VERSION)
    # written under a hidden name until accepted: a rejected (or interrupted) log never has the log's name
    candidate = out_db.with_name(f".{out_db.name}.candidate")
    reasons = []
    for attempt in range(MAX_TRIES):
        seed = plan.seed + 100_003 * attempt
        spec = LogSpec(plan.location, seed, duration_s=LOG_DURATION_S, construction=plan.construction,
                       cyclists={"grid": 2, "arterial": 1, "curve": 1}[loc.recipe])
        try:
            frames, world = simulate(net, map_api, spec)
        except RuntimeError as exc:
            reasons.append(str(exc))
            continue
        ego_v = np.array([f.ego[3] for f in frames])
        if np.mean(ego_v < 0.2) > 0.55:
            reasons.append(f"seed {seed}: ego stopped {np.mean(ego_v < 0.2):.0%} of the log")
            continue
        if _movers_overlap(frames):
            reasons.append(f"seed {seed}: movers overlap")
            continue
        t_red = _ego_on_red(frames, map_api)
        if t_red is not None:
            reasons.append(f"seed {seed}: the ego is on a red connector at t={t_red:.1f}s")
            continue
        summary = write_log_db(
            candidate, log_name=plan.name, location=plan.location, city=loc.city, epsg=loc.epsg,
            start_us=plan.start_us, frames=frames, track_meta=world.track_meta, ego_track=world.ego.track,
            ego_future_elems=world.ego.elems, map_api=map_api, crosswalks=world.crosswalk_polys, seed=seed,
            duration_s=LOG_DURATION_S)
        n_hard = sum(t[0] in HARD_TYPES for t in summary["tags"])
        if len(summary["tags"]) < 2 or (plan.test and n_hard < MIN_HARD_TAGS):
            reasons.append(f"seed {seed}: only {len(summary['tags'])} scenario tags ({n_hard} of the hard types)")
            candidate.unlink()
            continue
        os.replace(candidate, out_db)
        summary.update(seed=seed, attempts=attempt + 1, ego_stopped=float(np.mean(ego_v < 0.2)), rejected=reasons)
        return summary
    raise RuntimeError(f"log {plan.name}: no acceptable log in {MAX_TRIES} seeds: {reasons[-3:]}")


def _db_job(args) -> tuple[str, dict, float]:
    plan, out_db, maps_root = args
    t0 = time.perf_counter()
    summary = generate_log(plan, out_db, maps_root)
    return plan.name, summary, time.perf_counter() - t0


def _navsim_job(args) -> tuple[str, float]:
    name, db_path, maps_root, navsim_path = args
    t0 = time.perf_counter()
    _write_navsim(db_path, maps_root, navsim_path)
    return name, time.perf_counter() - t0


def _write_navsim(db_path: Path, maps_root: Path, out_pkl: Path) -> None:
    from ...map.map_api import load_map
    from ..nuplan_db import LogDB
    from ..openscene import db_to_openscene, write_openscene_log

    with LogDB(db_path) as db:
        frames = db_to_openscene(db, load_map(db.map_location, maps_root))
    write_openscene_log(frames, out_pkl)


# mini-navtrain-frames: NAVSIM's navtrain scene filter (navsim/planning/script/config/common/train_test_split/
# scene_filter/navtrain.yaml: num_history_frames 4, num_future_frames 10, frame_interval 1, has_route true)
FRAMES_HISTORY, FRAMES_FUTURE = 4, 10


def navtrain_frame_tokens(nav_dir: Path, log_names) -> dict[str, str]:
    """token -> log name of every valid current frame of the OpenScene logs `log_names` in `nav_dir`, in log-name and
    time order: NAVSIM's scene filter (`NavsimSceneLoader`, frame_interval 1, has_route) with FRAMES_HISTORY history
    and FRAMES_FUTURE future frames."""
    from ..openscene import NavsimSceneLoader, SplitSpec

    spec = SplitSpec("mini-navtrain-frames", num_history_frames=FRAMES_HISTORY, num_future_frames=FRAMES_FUTURE,
                     frame_interval=1, has_route=True, log_names=tuple(log_names))
    loader = NavsimSceneLoader(nav_dir, spec)
    return {t: loader.scene(t).log_name for t in loader.tokens}


BUILD_MARKER = ".simscale-mini"  # written first by build_mini: the folder is ours to (re)build into
PARTIAL = "logs.partial.json"  # the summaries of the logs generated so far (a resumed build keeps them)
_SUBFOLDERS = ("maps", "nuplan-v1.1", "navsim_logs", "splits", "sensor_blobs")


def is_complete(out: str | Path, seed: int | None = None, logs: int | None = None, preset: str | None = None) -> bool:
    """Whether `out` holds a finished build (`manifest.json`) of this builder version, and of `seed`, of `logs` logs
    and of `preset` where they are given (a manifest without `num_logs`, from before that option, is a build of all
    NUM_LOGS; one without `preset` is of the "mini" preset)."""
    m = Path(out) / "manifest.json"
    if not m.exists():
        return False
    try:
        data = json.loads(m.read_text())
    except ValueError:  # not JSON, not text
        return False
    return (isinstance(data, dict) and data.get("builder_version") == BUILDER_VERSION
            and (seed is None or data.get("seed") == seed)
            and (logs is None or data.get("num_logs", NUM_LOGS) == logs)
            and (preset is None or data.get("preset", "mini") == preset))


def _stamp(seed: int, logs: int = NUM_LOGS, preset: str = "mini") -> str:
    """The marker's text: version, seed, (unless "mini") preset and (unless all its logs) number of logs of the
    build in progress."""
    p = get_preset(preset)
    return (f"builder_version={BUILDER_VERSION} seed={seed}" + (f" preset={p.name}" if p.name != "mini" else "")
            + (f" logs={logs}" if logs != p.num_logs else "") + "\n")


def clear_stale(out: str | Path, seed: int, logs: int = NUM_LOGS, preset: str = "mini") -> bool:
    """Remove what another builder version, seed or number of logs generated in `out` (a folder with this builder's
    marker or manifest), so that it is rebuilt rather than resumed: the logs' names do not change between versions,
    and a smaller build must not keep the logs of a larger one. The marker names the version, seed and size of the
    build in progress. Returns whether anything was removed."""
    out = Path(out)
    marker = out / BUILD_MARKER
    if not (marker.exists() or (out / "manifest.json").exists()):
        return False
    if (marker.exists() and marker.read_text() == _stamp(seed, logs, preset)) or is_complete(out, seed, logs, preset):
        return False
    for sub in _SUBFOLDERS:
        shutil.rmtree(out / sub, ignore_errors=True)
    for f in ("manifest.json", PARTIAL):
        (out / f).unlink(missing_ok=True)
    return True


def remove_temporaries(out: str | Path) -> list[Path]:
    """Delete what interrupted writers left in the build folder `out`: hidden temporaries and rejected candidates,
    SQLite journals, earlier builders' `tmpXXXXXXXX.db/.pkl/.gpkg` (:func:`..atomic.is_temporary`; the marker is
    kept). Returns the files removed."""
    out = Path(out)
    found = [f for f in out.iterdir() if f.is_file() and f.name != BUILD_MARKER and is_temporary(f.name)]
    for sub in _SUBFOLDERS:
        if (out / sub).is_dir():
            found += sorted(f for f in (out / sub).rglob("*") if f.is_file() and is_temporary(f.name))
    for f in found:
        f.unlink(missing_ok=True)
    return found


def build_mini(out: str | Path, seed: int = 0, *, workers: int | None = None, progress: bool = True,
               logs: int | None = None, on_log=None, preset: str = "mini") -> Path:
    """Build (or finish building) the mini dataset of `preset` (`PRESETS`: "mini", "large") in `out`. Returns `out`.
    `logs` (1 to the preset's number of logs, default all): build only the first `logs` logs of the full build (the
    same files; the splits hold what was built, so without test logs the test splits are empty), e.g. a small
    dataset for a test. `on_log(done, total)` is called as logs are done (e.g. a progress bar: `paths.ensure_mini`)."""
    from ..scenario import ScenarioBuilder
    from ..openscene import write_split

    spec = get_preset(preset)
    if logs is None:
        logs = spec.num_logs
    if isinstance(logs, bool) or not isinstance(logs, int) or not 1 <= logs <= spec.num_logs:
        raise ValueError(f"build_mini: logs must be an integer from 1 to {spec.num_logs} (preset {spec.name!r}), "
                         f"got {logs!r}")
    out = Path(out)
    t_start = time.perf_counter()
    # never write into someone else's folder (e.g. SIMSCALE_MINI pointing at a real dataset by mistake): only an
    # empty or missing folder, or one this builder started (its marker) or finished (manifest.json), is built into
    marker = out / BUILD_MARKER
    if out.exists() and not out.is_dir():
        raise OutputFolderError(out, "exists and is not a folder; pass an empty or new folder for the mini dataset")
    if out.is_dir() and any(out.iterdir()) and not marker.exists() and not (out / "manifest.json").exists():
        raise OutputFolderError(out, f"not empty and not a SimScale mini dataset (no {BUILD_MARKER} or "
                                     f"manifest.json); refusing to build the mini dataset into it: pass an empty or "
                                     f"new folder")
    out.mkdir(parents=True, exist_ok=True)
    if clear_stale(out, seed, logs, spec.name):
        log.warning("%s: built by another builder version, seed, preset or number of logs; regenerating", out)
    atomic_write_text(marker, _stamp(seed, logs, spec.name))
    stray = remove_temporaries(out)  # resuming: what an interrupted run was writing is redone from scratch
    if stray:
        log.info("%s: removed %d temporaries of an interrupted build (%s)", out, len(stray),
                 ", ".join(str(f.relative_to(out)) for f in stray[:4]) + (", ..." if len(stray) > 4 else ""))
    maps_root = out / "maps"
    maps_root.mkdir(parents=True, exist_ok=True)
    say = log.info if progress else log.debug  # progress; the CLI shows INFO on stderr
    # maps
    for name, loc in LOCATIONS.items():
        p = maps_root / name / MAP_VERSION / "map.gpkg"
        if not p.exists():
            write_gpkg(build_location(name), p, loc.epsg, MAP_VERSION)
            say(f"map {name} ({loc.recipe}) -> {p}")
    for name, epsg in STUB_LOCATIONS.items():
        p = maps_root / name / MAP_VERSION / "map.gpkg"
        if not p.exists():
            write_stub_gpkg(p, epsg, MAP_VERSION)
    write_maps_json(maps_root, {**{n: MAP_VERSION for n in LOCATIONS}, **{n: MAP_VERSION for n in STUB_LOCATIONS}})
    # logs
    db_dir = out / "nuplan-v1.1" / "splits" / "mini"
    nav_dir = out / "navsim_logs" / "mini"
    db_dir.mkdir(parents=True, exist_ok=True)
    nav_dir.mkdir(parents=True, exist_ok=True)
    plans = plan_logs(seed, spec.num_logs, spec.test_logs)[:logs]  # the first logs of the full build: the same files
    db_of = {p.name: db_dir / f"{p.name}.db" for p in plans}
    pkl_of = {p.name: nav_dir / f"{p.name}.pkl" for p in plans}
    manifest_logs = out / PARTIAL
    summaries: dict[str, dict] = {}
    if is_complete(out, seed, logs, spec.name):  # run again over a finished build: its logs are done
        done_logs = json.loads((out / "manifest.json").read_text()).get("logs") or {}
        summaries.update({name: {k: v for k, v in entry.items() if k != "location"}
                          for name, entry in done_logs.items() if isinstance(entry, dict) and "tags" in entry})
    if manifest_logs.exists():
        summaries.update(json.loads(manifest_logs.read_text()))
    # a log is done when its database, OpenScene log and summary are there; one with its database and summary needs
    # only the OpenScene pass; any other is generated (again: a log's files do not depend on what came before)
    gen = [p for p in plans if p.name not in summaries or not db_of[p.name].exists()]
    # the test logs first: they must also have tags of the hard types and take the most tries, so the other
    # worker(s) generate the rest meanwhile (the logs do not depend on the order)
    gen.sort(key=lambda p: not p.test)
    nav = [p for p in plans if p not in gen and not pkl_of[p.name].exists()]
    n_todo = len(gen) + len(nav)
    workers = workers or min(n_todo, os.cpu_count() or 1) or 1
    if n_todo:
        say(f"generating {len(gen)} of {len(plans)} logs" + (f" (and the OpenScene logs of {len(nav)} more)" if nav
                                                             else "") + f" with {workers} worker(s)")
    done = len(plans) - n_todo
    if on_log is not None:
        on_log(done, len(plans))
    seconds: dict[str, float] = {}

    def generated(name, summary, dt):  # the log's database is in place: keep its summary at once
        summaries[name] = summary
        seconds[name] = dt
        atomic_write_text(manifest_logs, json.dumps(summaries, indent=1, sort_keys=True))

    def converted(name, dt):  # the log's OpenScene pickle is in place: the log is done
        nonlocal done
        done += 1
        say(f"[{done}/{len(plans)}] {name}: {len(summaries[name]['tags'])} tags, {seconds.get(name, 0.0) + dt:.1f} s")
        if on_log is not None:
            on_log(done, len(plans))
        kill_point("log")  # test hook (data.atomic): between two logs

    def nav_job(p):
        return p.name, db_of[p.name], maps_root, pkl_of[p.name]

    if workers > 1 and n_todo > 1:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            pending = {ex.submit(_navsim_job, nav_job(p)): p for p in nav}
            pending.update({ex.submit(_db_job, (p, db_of[p.name], maps_root)): p for p in gen})
            try:
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        p = pending.pop(fut)
                        result = fut.result()
                        if len(result) == 3:  # _db_job: then its OpenScene pass
                            generated(*result)
                            pending[ex.submit(_navsim_job, nav_job(p))] = p
                        else:
                            converted(*result)
            except BaseException:
                for fut in pending:
                    fut.cancel()
                raise
    else:
        for p in nav:
            converted(*_navsim_job(nav_job(p)))
        for p in gen:
            generated(*_db_job((p, db_of[p.name], maps_root)))
            converted(*_navsim_job(nav_job(p)))
    # splits (NAVSIM scene_filter YAML): tokens are the tagged lidar_pcs, which are OpenScene keyframes
    builder = ScenarioBuilder([db_of[p.name] for p in plans])
    refs = builder.all_refs()
    test_names = {p.name for p in plans if p.test}
    train = [r for r in refs if r.log_name not in test_names]
    test = [r for r in refs if r.log_name in test_names]
    hard = [r for r in test if r.scenario_type in HARD_TYPES]

    def uniq(seq):
        return list(dict.fromkeys(seq))

    splits_dir = out / "splits"  # the names of SPLIT_NAMES
    write_split(splits_dir / "mini-navtrain.yaml", log_names=uniq(r.log_name for r in train),
                tokens=uniq(r.token for r in train), comment="mini-navtrain: scenarios of the training logs")
    write_split(splits_dir / "mini-navtest.yaml", log_names=uniq(r.log_name for r in test),
                tokens=uniq(r.token for r in test), comment="mini-navtest: every scenario of the test logs")
    write_split(splits_dir / "mini-navhard.yaml", log_names=uniq(r.log_name for r in hard),
                tokens=uniq(r.token for r in hard), num_future_frames=8,
                comment="mini-navhard: the test scenarios of the harder types " + ", ".join(HARD_TYPES))
    # NAVSIM-style all-frames training split: every 2 Hz frame of the training logs with NAVSIM's 3 past frames and
    # 5 s (10 frames) of future in its log and a route (navsim/common/dataloader.py `filter_scenes` with navtrain's
    # filter: frame_interval 1, has_route)
    frame_tokens = navtrain_frame_tokens(nav_dir, [p.name for p in plans if not p.test])
    write_split(splits_dir / "mini-navtrain-frames.yaml", log_names=list(dict.fromkeys(frame_tokens.values())),
                tokens=list(frame_tokens), num_future_frames=FRAMES_FUTURE,
                comment="mini-navtrain-frames: every valid 2 Hz frame of the training logs (NAVSIM's navtrain filter)")
    # camera JPEGs of the test splits' scenes (navhard is a subset of navtest), for the logged-camera path
    blobs = write_sensor_blobs(out, uniq(r.token for r in test), say=say)
    manifest = {
        "builder_version": BUILDER_VERSION, "seed": seed, "map_version": MAP_VERSION, "num_logs": logs,
        "preset": spec.name, "test_logs": sum(p.test for p in plans),
        "locations": {n: asdict(l) for n, l in LOCATIONS.items()},
        "logs": {p.name: {"location": p.location, **summaries.get(p.name, {})} for p in plans},
        "splits": {"mini-navtrain": len(uniq(r.token for r in train)), "mini-navtest": len(uniq(r.token for r in test)),
                   "mini-navhard": len(uniq(r.token for r in hard)), "mini-navtrain-frames": len(frame_tokens)},
        "sensor_blobs": {"split": BLOB_SPLIT, "width": BLOB_SIZE[0], "height": BLOB_SIZE[1],
                         "jpeg_quality": JPEG_QUALITY, "frames": blobs["frames"], "images": blobs["images"]},
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True, default=str))
    if manifest_logs.exists():
        manifest_logs.unlink()
    say(f"mini dataset ready in {out} ({time.perf_counter() - t_start:.0f} s): "
        f"{len(refs)} scenarios, splits {manifest['splits']}")
    return out
