"""Hostile nuPlan .db files: malformed values, WAL-mode logs in read-only folders, random byte corruption.

Every case must end in one SimScaleError naming the file, the table.column and the row (rowid, token) when the log is
opened or the scenario loaded - never a ValueError/TypeError later, never NaN inside a Scenario.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simscale_env.data import LogDB, extract_scenario
from simscale_env.data.scenario import scenario_refs_in_log
from simscale_env.errors import SchemaError, SimScaleError
from tests.conftest import TINY_TAG
from tests.helpers import corrupt

REPO = Path(__file__).resolve().parents[2]


def _copy(tiny_log: Path, folder: Path, name: str = "log.db") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    shutil.copy(tiny_log, p)
    return p


def _row_of(p: Path, table: str) -> tuple[int, str]:
    """(rowid, token hex) of the `table` row that the scenario at TINY_TAG reads (its anchor frame)."""
    c = sqlite3.connect(p)
    tag = bytes.fromhex(TINY_TAG)
    sql = {
        "lidar_pc": "SELECT rowid, token FROM lidar_pc WHERE token = ?",
        "ego_pose": "SELECT ep.rowid, ep.token FROM lidar_pc AS lp JOIN ego_pose AS ep ON ep.token = lp.ego_pose_token "
                    "WHERE lp.token = ?",
        "lidar_box": "SELECT rowid, token FROM lidar_box WHERE lidar_pc_token = ? ORDER BY rowid LIMIT 1",
    }[table]
    rowid, tok = c.execute(sql, (tag,)).fetchone()
    c.close()
    return int(rowid), bytes(tok).hex()


def _set(p: Path, table: str, column: str, value, rowid: int) -> None:
    c = sqlite3.connect(p)
    if isinstance(value, float) and np.isinf(value):  # the sqlite3 module binds inf as a REAL, but be explicit
        c.execute(f"UPDATE {table} SET {column} = {'9e999' if value > 0 else '-9e999'} WHERE rowid = ?", (rowid,))
    else:
        c.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (value, rowid))
    c.commit()
    c.close()


# (table, column, stored value, what the message must say was expected, how the message names the value)
HOSTILE = [
    pytest.param("ego_pose", "qw", "abc", "a finite number", "text 'abc'", id="text-in-ego_pose"),
    pytest.param("lidar_box", "width", "wide", "a finite number", "text 'wide'", id="text-in-lidar_box"),
    pytest.param("lidar_box", "track_token", "abc", "a token (BLOB)", "text 'abc'", id="text-token-in-lidar_box"),
    pytest.param("lidar_pc", "timestamp", None, "an integer", "NULL", id="null-timestamp"),
    pytest.param("lidar_pc", "timestamp", 1.5, "an integer", "1.5", id="fractional-timestamp"),
    pytest.param("lidar_box", "x", None, "a finite number", "NULL", id="null-box-x"),
    pytest.param("ego_pose", "x", None, "a finite number", "NULL", id="null-ego-x"),
    # SQLite stores a bound NaN as NULL; inf stays a REAL
    pytest.param("lidar_box", "y", float("nan"), "a finite number", "NULL", id="nan-box-y"),
    pytest.param("lidar_box", "yaw", float("inf"), "a finite number", "inf", id="inf-box-yaw"),
    pytest.param("ego_pose", "y", float("-inf"), "a finite number", "-inf", id="inf-ego-y"),
]


@pytest.mark.parametrize("table,column,value,expected,got", HOSTILE)
def test_hostile_value_names_file_table_column_and_row(tmp_path, tiny_log, table, column, value, expected, got):
    p = _copy(tiny_log, tmp_path, "hostile.db")
    rowid, token = _row_of(p, table)
    _set(p, table, column, value, rowid)
    with pytest.raises(SchemaError) as ei:
        with LogDB(p) as db:
            extract_scenario(db, TINY_TAG)
    msg = str(ei.value)
    assert str(p) in msg
    assert f"{table}.{column} must be {expected}, got {got} (rowid {rowid}, token {token})" in msg, msg


def test_null_goal_pose_is_an_error_not_a_missing_goal(tmp_path, tiny_log):
    p = _copy(tiny_log, tmp_path, "goal.db")
    c = sqlite3.connect(p)
    rowid, tok = c.execute("SELECT ep.rowid, ep.token FROM scene AS s JOIN ego_pose AS ep "
                           "ON ep.token = s.goal_ego_pose_token ORDER BY s.name LIMIT 1").fetchone()
    c.execute("UPDATE ego_pose SET qz = 'north' WHERE rowid = ?", (rowid,))
    c.commit()
    c.close()
    with LogDB(p) as db, pytest.raises(SchemaError, match=rf"ego_pose\.qz must be a finite number, got text 'north' "
                                                          rf"\(rowid {rowid}, token {bytes(tok).hex()}\)"):
        db.scenes


def test_dangling_scene_token_is_a_schema_error(tmp_path, tiny_log):
    p = _copy(tiny_log, tmp_path, "scene.db")
    c = sqlite3.connect(p)
    c.execute("UPDATE lidar_pc SET scene_token = ? WHERE token = ?", (bytes(8), bytes.fromhex(TINY_TAG)))
    c.commit()
    c.close()
    with LogDB(p) as db, pytest.raises(SchemaError, match=rf"lidar_pc {TINY_TAG} references scene_token "
                                                          rf"0000000000000000, which is not in table 'scene'"):
        extract_scenario(db, TINY_TAG)


# ---------------------------------------------------------------------------------------------- WAL journal mode
def _to_wal(p: Path) -> None:
    c = sqlite3.connect(p)
    assert c.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    c.close()  # the last connection checkpoints and removes -wal/-shm
    assert p.read_bytes()[18:20] == b"\x02\x02"


def test_wal_log_without_pending_changes_is_read_in_place(tmp_path, tiny_log):
    """A WAL-mode log (no -wal left) is read with immutable=1: it works in a read-only folder and SQLite leaves no
    -shm/-wal files beside it (before, SQLite created both in a writable folder, and failed with 'attempt to write a
    readonly database', reported as 'may be corrupt', in a read-only one)."""
    folder = tmp_path / "ro"
    p = _copy(tiny_log, folder)
    _to_wal(p)
    assert sorted(os.listdir(folder)) == ["log.db"]
    folder.chmod(0o555)
    try:
        with LogDB(p) as db:
            s = extract_scenario(db, TINY_TAG)
            assert sorted(os.listdir(folder)) == ["log.db"]
            assert db.wal_mode
        with LogDB(tiny_log) as ref:
            r = extract_scenario(ref, TINY_TAG)
        assert np.array_equal(s.ego.x, r.ego.x) and np.array_equal(s.agents.x, r.agents.x, equal_nan=True)
        assert sorted(os.listdir(folder)) == ["log.db"]
    finally:
        folder.chmod(0o755)


def _drop_dac_caps() -> None:
    """preexec_fn: a root child loses CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH, so folder permissions apply to it.
    Best effort: where that is not allowed the child finds the folder writable and the test blocks the -shm index
    another way."""
    try:
        libc = ctypes.CDLL(None)
        for cap in (1, 2):
            libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP
    except (OSError, AttributeError):
        pass


_CHILD = r"""
import sys
from pathlib import Path
p = Path(sys.argv[1])
try:
    (p.parent / "probe").touch()
    print("WRITABLE")
    sys.exit(0)
except PermissionError:
    pass
from simscale_env.data import LogDB, extract_scenario
try:
    with LogDB(p) as db:
        extract_scenario(db, sys.argv[2])
    print("OPENED")
except Exception as exc:
    print(type(exc).__name__)
    print(exc)
"""


def test_wal_log_with_pending_changes_in_read_only_folder(tmp_path, tiny_log):
    """WAL-mode log whose -wal holds committed changes not yet in the .db, no -shm, in a read-only folder: SQLite
    cannot read it; the error says what the file is and how to convert it (before: 'may be truncated or corrupt')."""
    src = _copy(tiny_log, tmp_path / "src")
    c = sqlite3.connect(src)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA wal_autocheckpoint=0")
    c.execute("UPDATE ego_pose SET x = x + 1 WHERE rowid < 5")
    c.commit()
    folder = tmp_path / "ro"
    folder.mkdir()
    shutil.copy(src, folder / "log.db")
    shutil.copy(f"{src}-wal", folder / "log.db-wal")  # copied while the writer is open: the changes are pending
    c.close()
    assert (folder / "log.db-wal").stat().st_size > 0 and not (folder / "log.db-shm").exists()
    folder.chmod(0o555)
    try:
        r = subprocess.run([sys.executable, "-c", _CHILD, str(folder / "log.db"), TINY_TAG], cwd=REPO,
                           capture_output=True, text=True, timeout=120,
                           preexec_fn=_drop_dac_caps if os.geteuid() == 0 else None)
    finally:
        folder.chmod(0o755)
    out = r.stdout.splitlines()
    assert r.returncode == 0 and out, r.stderr
    if out[0] == "WRITABLE":
        # root that keeps CAP_DAC_OVERRIDE writes into any folder: SQLite is then kept from creating the -shm index
        # by a dangling -shm symlink instead (the same failure: a pending -wal, no -shm, and none can be created)
        from simscale_env.errors import DataError

        (folder / "probe").unlink(missing_ok=True)
        os.symlink(tmp_path / "no-such-folder" / "shm", folder / "log.db-shm")
        with pytest.raises(DataError) as info:
            with LogDB(folder / "log.db") as db:
                extract_scenario(db, TINY_TAG)
        assert type(info.value) is DataError  # neither CorruptFileError nor a raw sqlite3 error
        out = ["DataError", str(info.value)]
    assert out[0] == "DataError", r.stdout  # neither CorruptFileError nor a raw sqlite3 error
    msg = "\n".join(out[1:])
    assert str(folder / "log.db") in msg
    assert "is a WAL-mode SQLite database" in msg and "log.db-shm" in msg and "read-only" in msg
    assert "PRAGMA journal_mode=DELETE" in msg


# ---------------------------------------------------------------------------------------------- fuzzing
@pytest.fixture(scope="module")
def small_db(tiny_log, tmp_path_factory) -> bytes:
    """The tiny log without its image table (not read by a scenario), so that most corrupted bytes hit pages that
    opening the log and loading a scenario read."""
    p = tmp_path_factory.mktemp("fuzz") / "small.db"
    shutil.copy(tiny_log, p)
    c = sqlite3.connect(p)
    c.execute("DELETE FROM image")
    c.commit()
    c.execute("VACUUM")
    c.close()
    return p.read_bytes()


def _corruptions(size: int):
    flips = st.lists(st.tuples(st.integers(0, size - 1), st.integers(1, 255)), max_size=6)
    runs = st.lists(st.tuples(st.integers(0, size - 1), st.binary(min_size=1, max_size=48)), max_size=2)
    cut = st.one_of(st.none(), st.integers(0, size - 1))
    return st.tuples(flips, runs, cut).filter(lambda t: t[0] or t[1] or t[2] is not None)


def _load_all(path: Path) -> None:
    with LogDB(path) as db:
        refs = scenario_refs_in_log(db, require_goal=False)
        tokens = [TINY_TAG] + [r.token for r in refs if r.token != TINY_TAG]
        for tok in tokens[:2]:
            s = extract_scenario(db, tok)
            # what loads is clean: no NaN inside the simulation
            for f in ("x", "y", "heading", "vx", "vy", "ax", "ay", "yaw_rate"):
                assert np.isfinite(getattr(s.ego, f)).all(), f
            v = s.agents.valid
            for f in ("x", "y", "heading", "vx", "vy", "length", "width", "height"):
                assert np.isfinite(getattr(s.agents, f)[v]).all(), f


def test_random_byte_corruption_raises_only_simscale_errors(small_db, tmp_path):
    """Flipped bytes, overwritten runs and truncation anywhere in a copy of a log: opening it and loading scenarios
    either works (and then holds no NaN) or raises a SimScaleError naming the file (derandomized: same examples on
    every run)."""
    size = len(small_db)
    path = tmp_path / "fuzz.db"
    seen: dict[str, int] = {}

    @settings(max_examples=60, deadline=timedelta(seconds=10), derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(_corruptions(size))
    def run(corruption):
        path.write_bytes(corrupt(small_db, *corruption))
        try:
            _load_all(path)
            seen["ok"] = seen.get("ok", 0) + 1
        except SimScaleError as exc:  # anything else fails the test
            seen[type(exc).__name__] = seen.get(type(exc).__name__, 0) + 1
            assert "fuzz.db" in str(exc), str(exc)  # names the file

    run()
    assert sum(seen.values()) >= 30 and len(seen) >= 2, seen  # both clean loads and errors were exercised
