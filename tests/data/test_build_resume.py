"""Interrupted mini-dataset builds resume cleanly (issue 14).

A small build (`logs=2`, one worker) is made once, uninterrupted; the same build run by the CLI and SIGKILLed at
chosen points (the `SIMSCALE_TEST_KILL_AT` hook of `simscale_env.data.atomic`) and then resumed must end with the
same files, byte for byte, and no temporaries. Stray temporaries in a log folder are never read as logs.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from simscale_env.data.atomic import KILL_ENV, is_temporary

LOGS = 2
DB_DIR = Path("nuplan-v1.1") / "splits" / "mini"
NAV_DIR = Path("navsim_logs") / "mini"


def _digest(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (hidden ones included), by relative path."""
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(root.rglob("*")) if f.is_file()}


def _build_cli(out: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    if kill_at:
        env[KILL_ENV] = kill_at
    return subprocess.run([sys.executable, "-m", "simscale_env.cli", "data", "build-mini", "--out", str(out),
                           "--logs", str(LOGS), "--workers", "1", "--quiet"],
                          env=env, capture_output=True, text=True, timeout=600)


def _killed(r: subprocess.CompletedProcess, point: str) -> None:
    assert r.returncode == -signal.SIGKILL, f"not killed at {point}: rc {r.returncode}\n{r.stderr[-2000:]}"


@pytest.fixture(scope="module")
def small_build(tmp_path_factory) -> Path:
    """An uninterrupted build of the first LOGS logs (seed 0, one worker)."""
    from simscale_env.data.mini.build import build_mini

    out = tmp_path_factory.mktemp("small") / "mini"
    build_mini(out, 0, workers=1, progress=False, logs=LOGS)
    return out


def test_a_small_build_is_the_first_logs_of_the_full_build(small_build, mini):
    """`logs=N` writes the first N logs of the full build byte for byte (so the build is deterministic: here one
    worker against the session's dataset, built by another process, usually with several), records N, and makes
    the splits from what it built (the test logs are the last four of twelve: no test split here)."""
    from simscale_env.data.mini.build import BUILD_MARKER, NUM_LOGS, is_complete, plan_logs

    names = [p.name for p in plan_logs(0)[:LOGS]]
    files = _digest(small_build)
    maps = [f"maps/{loc}/simscale-mini-1.0/map.gpkg" for loc in (
        "sg-one-north", "us-ma-boston", "us-nv-las-vegas-strip", "us-pa-pittsburgh-hazelwood")]
    assert sorted(files) == sorted([BUILD_MARKER, "manifest.json", "maps/nuplan-maps-v1.0.json", *maps]
                                   + [str(DB_DIR / f"{n}.db") for n in names]
                                   + [str(NAV_DIR / f"{n}.pkl") for n in names]
                                   + [f"splits/mini-{s}.yaml"
                                      for s in ("navtrain", "navtest", "navhard", "navtrain-frames")])
    manifest = json.loads((small_build / "manifest.json").read_text())
    assert manifest["num_logs"] == LOGS and sorted(manifest["logs"]) == sorted(names)
    assert is_complete(small_build, 0, LOGS) and is_complete(small_build)
    assert not is_complete(small_build, 0, NUM_LOGS)
    train = yaml.safe_load((small_build / "splits" / "mini-navtrain.yaml").read_text())
    assert sorted(train["log_names"]) == sorted(names)
    assert len(train["tokens"]) == manifest["splits"]["mini-navtrain"] > 0
    assert yaml.safe_load((small_build / "splits" / "mini-navtest.yaml").read_text())["tokens"] == []
    full = _digest(mini)
    same = [f for f in files if f.startswith(("maps/", str(DB_DIR), str(NAV_DIR)))]
    assert len(same) == 5 + 2 * LOGS
    assert {f: files[f] for f in same} == {f: full.get(f) for f in same}


def test_a_build_killed_anywhere_resumes_to_the_same_bytes(small_build, tmp_path):
    """SIGKILL inside a map, between logs, inside a log's database write, inside its OpenScene pass and inside the
    splits, each time resumed by the next run; the finished folder is byte-identical to the uninterrupted build."""
    from simscale_env.data.mini.build import plan_logs
    from simscale_env.data.openscene import NavsimSceneLoader
    from simscale_env.data.scenario import find_log_files

    out = tmp_path / "mini"
    db_dir, nav_dir = out / DB_DIR, out / NAV_DIR
    first, second = (p.name for p in plan_logs(0)[:LOGS])

    _killed(_build_cli(out, "gpkg:2"), "the second map")  # GDAL was writing it under a hidden name
    assert [f.name for f in (out / "maps").rglob("*") if f.is_file() and is_temporary(f.name)]

    _killed(_build_cli(out, "log:1"), "the end of the first log")
    assert (db_dir / f"{first}.db").exists() and (nav_dir / f"{first}.pkl").exists()
    assert not (db_dir / f"{second}.db").exists()

    _killed(_build_cli(out, "db:1"), "the second log's database write")
    strays = sorted(f.name for f in db_dir.iterdir() if f.name not in (f"{first}.db",))
    assert all(f.startswith(f".{second}.db.") for f in strays), strays  # its hidden temporary, mid-transaction
    assert any(f.endswith(".tmp") for f in strays) and any(f.endswith(".tmp-journal") for f in strays), strays
    assert find_log_files(db_dir) == [db_dir / f"{first}.db"]  # what made the old builder's rerun fail

    _killed(_build_cli(out, "pkl:1"), "the second log's OpenScene pass")
    assert (db_dir / f"{second}.db").exists() and not (nav_dir / f"{second}.pkl").exists()
    assert [f.name for f in nav_dir.iterdir() if f.name.startswith(f".{second}.pkl.")]
    assert NavsimSceneLoader(nav_dir).files == [nav_dir / f"{first}.pkl"]
    second_db = os.stat(db_dir / f"{second}.db").st_ino

    _killed(_build_cli(out, "yaml:2"), "the second split")
    # and what earlier builders left beside the logs: Python tempfile names, an SQLite journal
    (db_dir / "tmpk3j_x9a2.db").write_bytes(b"not an SQLite database")
    (db_dir / f"{first}.db-journal").write_bytes(b"")
    (nav_dir / "tmpq0w_e8r7.pkl").write_bytes(b"")
    r = _build_cli(out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert os.stat(db_dir / f"{second}.db").st_ino == second_db  # resumed with the OpenScene pass, not regenerated
    assert _digest(out) == _digest(small_build)


def test_building_over_a_finished_build_changes_nothing(small_build, tmp_path):
    """Run again over a finished build, the builder regenerates no log and writes the same manifest (its log
    summaries come from the manifest when there is no partial record)."""
    import shutil

    from simscale_env.data.mini.build import build_mini

    out = tmp_path / "mini"
    shutil.copytree(small_build, out)
    inodes = {f: os.stat(f).st_ino for f in (out / DB_DIR).glob("*.db")}
    build_mini(out, 0, workers=1, progress=False, logs=LOGS)
    assert {f: os.stat(f).st_ino for f in (out / DB_DIR).glob("*.db")} == inodes
    assert _digest(out) == _digest(small_build)


def test_stray_temporaries_are_never_logs(tiny_log, tmp_path):
    """Hidden names, Python tempfile names and SQLite journals beside the logs are skipped by the log and OpenScene
    finders, in a flat folder and in the nuPlan layout (where hidden folders are skipped too)."""
    import shutil

    from simscale_env.data.openscene import NavsimSceneLoader
    from simscale_env.data.scenario import find_log_files

    flat = tmp_path / "logs"
    flat.mkdir()
    log = flat / tiny_log.name
    shutil.copyfile(tiny_log, log)
    for name in ("tmpk3j_x9a2.db", ".something.db", f".{tiny_log.name}.abc123.tmp", f"{tiny_log.name}-journal",
                 "x.db-journal", "x.db-wal"):
        (flat / name).write_bytes(b"not an SQLite database")
    (flat / "tmpabcdefgh.db").write_bytes(b"")  # an empty one, as mkstemp leaves it
    assert find_log_files(flat) == [log]
    nested = tmp_path / "root" / "nuplan-v1.1" / "splits"
    (nested / "mini").mkdir(parents=True)
    (nested / ".staging").mkdir()
    shutil.copyfile(tiny_log, nested / "mini" / tiny_log.name)
    (nested / ".staging" / "x.db").write_bytes(b"junk")
    (nested / "mini" / ".y.db").write_bytes(b"junk")
    assert find_log_files(tmp_path / "root") == [nested / "mini" / tiny_log.name]
    nav = tmp_path / "navsim_logs"
    nav.mkdir()
    for name in (".a.pkl", "tmpk3j_x9a2.pkl", "b.pkl.tmp"):
        (nav / name).write_bytes(b"junk")
    (nav / "real.pkl").write_bytes(b"")
    assert NavsimSceneLoader(nav).files == [nav / "real.pkl"]
    assert [is_temporary(n) for n in ("2021.06.03.10.00.00_veh-90_00000_00900.db", "tmp.db", "template.db",
                                      "tmpk3j_x9a2", ".simscale-mini", "a.db-shm")] == [False, False, False, True,
                                                                                         True, True]


def test_the_env_ignores_stray_files_beside_the_logs(small_build, tmp_path):
    """The env lists its logs with find_log_files: a garbage `tmpXXXXXXXX.db` (and a hidden one) beside the logs of
    a split without log_names would otherwise be opened as a log (CorruptFileError)."""
    from simscale_env.envs.simscale_env import SimScaleEnv

    root = tmp_path / "mini"
    for f in small_build.rglob("*"):
        if f.is_file():
            (root / f.relative_to(small_build)).parent.mkdir(parents=True, exist_ok=True)
            (root / f.relative_to(small_build)).symlink_to(f)
    (root / DB_DIR / "tmpk3j_x9a2.db").write_bytes(b"not an SQLite database")
    (root / DB_DIR / ".x.db").write_bytes(b"not an SQLite database")
    split = yaml.safe_load((small_build / "splits" / "mini-navtrain.yaml").read_text())
    del split["log_names"]
    (tmp_path / "tokens-only.yaml").write_text(yaml.safe_dump(split))
    env = SimScaleEnv("navtrain", data_root=str(root), split_file=str(tmp_path / "tokens-only.yaml"))
    assert sorted(env._builder.log_files) == sorted(f.stem for f in (small_build / DB_DIR).glob("*.db"))
    assert len(env.tokens) == len(split["tokens"])


def test_another_number_of_logs_is_another_build(tmp_path):
    """The marker and manifest record the number of logs: a build of another number is regenerated, not resumed or
    taken as complete; a manifest from before the option is a build of all NUM_LOGS."""
    from simscale_env.data.mini.build import BUILD_MARKER, BUILDER_VERSION, NUM_LOGS, build_mini, clear_stale, \
        is_complete

    def fake(out, marker=None, **manifest):
        db = out / DB_DIR / "log.db"
        db.parent.mkdir(parents=True)
        db.write_bytes(b"old")
        if marker is not None:
            (out / BUILD_MARKER).write_text(marker)
        if manifest:
            (out / "manifest.json").write_text(json.dumps({"builder_version": BUILDER_VERSION, "seed": 0, **manifest}))
        return db

    small = fake(tmp_path / "a", num_logs=2)
    assert is_complete(tmp_path / "a", 0, 2) and is_complete(tmp_path / "a", 0)  # logs=None: any number
    assert not is_complete(tmp_path / "a", 0, NUM_LOGS) and not is_complete(tmp_path / "a", 0, 3)
    assert not clear_stale(tmp_path / "a", 0, 2) and small.exists()
    assert clear_stale(tmp_path / "a", 0) and not small.exists()  # a full build does not keep the small one's logs
    old = fake(tmp_path / "b", placeholder=1)  # no num_logs: all of them
    assert is_complete(tmp_path / "b", 0, NUM_LOGS) and not is_complete(tmp_path / "b", 0, 3)
    assert clear_stale(tmp_path / "b", 0, 3) and not old.exists()
    running = fake(tmp_path / "c", marker=f"builder_version={BUILDER_VERSION} seed=0 logs=3\n")
    assert not clear_stale(tmp_path / "c", 0, 3) and running.exists()
    assert clear_stale(tmp_path / "c", 0, 4) and not running.exists()
    for bad in (0, NUM_LOGS + 1, 2.0, True):
        with pytest.raises(ValueError, match="logs must be an integer from 1 to"):
            build_mini(tmp_path / "d", logs=bad)
    assert not (tmp_path / "d").exists()


def test_cli_build_mini_logs_option(tmp_path, capsys):
    from simscale_env.cli import build_parser

    p = build_parser()
    assert p.parse_args(["data", "build-mini", "--out", "x", "--logs", "3"]).logs == 3
    assert p.parse_args(["data", "build-mini", "--out", "x"]).logs is None
    for bad in ("0", "two"):
        with pytest.raises(SystemExit) as exc:
            p.parse_args(["data", "build-mini", "--out", "x", "--logs", bad])
        assert exc.value.code == 2
    assert p.parse_args(["data", "build-mini", "--out", "x", "--preset", "large", "--logs", "30"]).preset == "large"
    from simscale_env.cli import main

    # more logs than the preset has: one line, status 2, nothing written
    assert main(["data", "build-mini", "--out", str(tmp_path / "x"), "--logs", "13", "--quiet"]) == 2
    assert "the mini preset has 12 logs, got 13" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_the_large_preset_plans_three_times_the_logs_and_test_logs(tmp_path):
    """The "large" preset: 36 logs, the last 12 of them test logs; its stamp and manifest name the preset, so a mini
    build in its folder is regenerated rather than taken for it."""
    from simscale_env.data.mini.build import BUILD_MARKER, BUILDER_VERSION, PRESETS, _stamp, build_mini, clear_stale, \
        is_complete, plan_logs

    spec = PRESETS["large"]
    plans = plan_logs(0, spec.num_logs, spec.test_logs)
    assert len(plans) == 36 and [p.index for p in plans if p.test] == list(range(24, 36))
    assert len({p.name for p in plans}) == 36 and len({p.seed for p in plans}) == 36
    assert [p.name for p in plan_logs(0)] == [p.name for p in plans[:12]]  # the same names, other test flags
    assert _stamp(0, 36, "large") == f"builder_version={BUILDER_VERSION} seed=0 preset=large\n"
    assert _stamp(0, 30, "large") == f"builder_version={BUILDER_VERSION} seed=0 preset=large logs=30\n"
    assert _stamp(0) == f"builder_version={BUILDER_VERSION} seed=0\n"  # the mini preset's stamp did not change
    out = tmp_path / "l"
    (out / DB_DIR).mkdir(parents=True)
    (out / DB_DIR / "log.db").write_bytes(b"mini")
    (out / "manifest.json").write_text(json.dumps({"builder_version": BUILDER_VERSION, "seed": 0, "num_logs": 36}))
    assert is_complete(out, 0, 36) and not is_complete(out, 0, 36, "large") and is_complete(out, 0, 36, "mini")
    assert clear_stale(out, 0, 36, "large") and not (out / DB_DIR / "log.db").exists()
    (out / BUILD_MARKER).write_text(_stamp(0, 36, "large"))
    assert not clear_stale(out, 0, 36, "large")  # its own build in progress is resumed
    with pytest.raises(ValueError, match=r"from 1 to 36 \(preset 'large'\)"):
        build_mini(tmp_path / "d", logs=37, preset="large")
    with pytest.raises(ValueError, match="unknown mini dataset preset"):
        build_mini(tmp_path / "d", preset="huge")
    assert not (tmp_path / "d").exists()
