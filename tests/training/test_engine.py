"""The sim data engine (training.engine): kill + resume equals an uninterrupted run, executors give the same shards,
failures are retried once and recorded, bad inputs are one error with nothing written. Most tests run the engine
over a stand-in generator (tests/training/fake_generate.py); one runs `simscale generate` on the mini dataset."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from simscale_env.errors import SimScaleError
from tests.training.fake_generate import FakeConfig, generate_sample
from training.engine import run_generation

FAKE = "tests.training.fake_generate"
ROOT = Path(__file__).resolve().parents[2]


def _shards(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.parquet"))}


def _rows(out: Path) -> list:
    rows = []
    for p in sorted(out.glob("*.parquet")):
        rows += pq.read_table(p).to_pylist()
    return sorted(rows, key=lambda r: (r["round"], r["token"]))


def _gen(cfg, out, **kw):
    return run_generation(cfg, out, api=FAKE, progress=False, shard_mb=0.004, command="test", **kw)


def test_rounds_are_nested_and_rows_round_trip_through_parquet(tmp_path):
    cfg = FakeConfig(split="fake-10", rounds=3)
    m = _gen(cfg, tmp_path / "a")
    r1, r2, r3 = m["rounds"]
    assert r1["tried"] == 10 and r2["tried"] == r1["valid"] and r3["tried"] == r2["valid"]
    for r in m["rounds"]:
        assert r["valid"] + sum(r["rejected"].values()) + len(r["failed"]) == r["tried"]
        assert math.isclose(r["valid_ratio"], r["valid"] / r["tried"])
    rows = _rows(tmp_path / "a")
    assert len(rows) == m["samples"] == sum(r["valid"] for r in m["rounds"]) and len(m["shards"]) > 3
    assert len({r["token"] for r in rows}) == len(rows)  # no duplicates
    valid1 = {r["base_token"] for r in rows if r["round"] == 1}
    assert {r["base_token"] for r in rows if r["round"] == 2} <= valid1  # round 2 only from round 1's valid tokens
    for row in rows:  # each row is exactly what the generator returned (bytes, NaN, ints, bools)
        want, _ = generate_sample(None, cfg, row["base_token"], row["round"])
        assert row["CAM_F0"] == want["CAM_F0"] and row["vocab_epdms"] == want["vocab_epdms"]
        assert row["ego_pose"] == want["ego_pose"] and row["driving_command"] == want["driving_command"]
        assert math.isnan(row["label_ec"]) and row["flag"] is want["flag"] and row["timestamp_us"] == \
            want["timestamp_us"] and row["label_epdms"] == float(want["label_epdms"])
    import hashlib

    for s in m["shards"]:
        assert hashlib.sha256((tmp_path / "a" / s["file"]).read_bytes()).hexdigest() == s["sha256"]
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["rounds"] == m["rounds"]
    assert not list((tmp_path / "a").glob(".*")) and not list((tmp_path / "a").glob("*.partial.jsonl"))


def test_a_failing_task_is_retried_once_then_recorded_and_the_run_goes_on(tmp_path):
    bad, flaky = f"{3:016x}", f"{5:016x}"
    m = _gen(FakeConfig(split="fake-8", rounds=1, fail=(bad,), flaky=(flaky,), valid_p=1.0), tmp_path / "a")
    r = m["rounds"][0]
    assert r["valid"] == 7 and r["failed"] == [{"token": bad, "error": f"RuntimeError: boom at {bad}"}]
    assert m["failures"] == [{"round": 1, "token": bad, "error": f"RuntimeError: boom at {bad}"}]
    assert flaky in {row["base_token"] for row in _rows(tmp_path / "a")}  # its retry succeeded


def test_workers_1_2_and_local_ray_give_identical_shards(tmp_path):
    cfg = FakeConfig(split="fake-9", rounds=2)
    m1 = _gen(cfg, tmp_path / "w1")
    m2 = _gen(cfg, tmp_path / "w2", workers=2)
    m3 = _gen(cfg, tmp_path / "ray", workers=2, ray=True)
    assert _shards(tmp_path / "w1") == _shards(tmp_path / "w2") == _shards(tmp_path / "ray")
    assert m1["rounds"] == m2["rounds"] == m3["rounds"] and len(_shards(tmp_path / "w1")) > 2


_KILLED_RUN = """
import sys
from tests.training.fake_generate import FakeConfig
from training.engine import run_generation
run_generation(FakeConfig(split="fake-10", rounds=2), sys.argv[1], api="tests.training.fake_generate",
               progress=False, shard_mb=0.004, resume=len(sys.argv) > 2, command="test")
"""


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ref = tmp_path / "ref"
    _gen(FakeConfig(split="fake-10", rounds=2), ref)  # uninterrupted, in this process
    out = tmp_path / "killed"
    for kill_at in ("task:4", "task:13"):  # mid round 1, then mid round 2 (after round 1's shards)
        p = subprocess.run([sys.executable, "-c", _KILLED_RUN, str(out), *(["resume"] if out.exists() else [])],
                           env={**env, "SIMSCALE_TEST_KILL_AT": kill_at}, cwd=ROOT)
        assert p.returncode == -9
        assert not (out / "manifest.json").exists() or not json.loads((out / "manifest.json").read_text())[
            "complete"]
    assert (out / "round-01.json").exists() and (out / "round-02.partial.jsonl").exists()
    subprocess.run([sys.executable, "-c", _KILLED_RUN, str(out), "resume"], check=True, env=env, cwd=ROOT)
    assert _shards(out) == _shards(ref)
    rows = _rows(out)
    assert [r["token"] for r in rows] == [r["token"] for r in _rows(ref)] and len({r["token"] for r in rows}) == \
        len(rows)
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (out, ref))
    assert a["rounds"] == b["rounds"] and a["complete"] and a["samples"] == len(rows)


def test_bad_inputs_are_one_error_each_and_nothing_is_written(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SimScaleError, match="unknown split"):
        _gen(FakeConfig(split="navnowhere"), out)
    assert not out.exists()
    bad = tmp_path / "v.npy"
    np.save(bad, np.zeros((4, 8, 2)))
    with pytest.raises(SimScaleError, match=r"v\.npy.*\[4, 8, 2\].*\[K, poses, 3\]"):
        _gen(FakeConfig(vocab=str(bad)), out)
    assert not out.exists()
    with pytest.raises(SimScaleError, match="127.0.0.1:9.*no Ray cluster answers"):
        _gen(FakeConfig(), out, ray=True, ray_address="127.0.0.1:9")
    assert not out.exists()
    _gen(FakeConfig(split="fake-3", rounds=1), out)
    before = _shards(out), sorted(p.name for p in out.iterdir())
    with pytest.raises(SimScaleError, match="another config.*seed: 0 there, 1 now"):
        _gen(FakeConfig(split="fake-3", rounds=1, seed=1), out, resume=True)
    with pytest.raises(SimScaleError, match="--resume"):
        _gen(FakeConfig(split="fake-3", rounds=1), out)
    assert (_shards(out), sorted(p.name for p in out.iterdir())) == before
    assert _gen(FakeConfig(split="fake-3", rounds=1), out, resume=True)["complete"]  # a finished run: as it was
    assert _shards(out) == before[0]
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("a user's file")
    with pytest.raises(SimScaleError, match="not a generation run folder"):
        _gen(FakeConfig(), other)
    assert [p.name for p in other.iterdir()] == ["precious.txt"]


def test_simscale_generate_on_the_mini_dataset_and_kill_resume_through_the_cli(mini, tmp_path, capsys):
    """The real generator through the CLI: 3 base tokens, 2 rounds, 64x32 front camera; --resume of the finished
    run changes nothing; a CLI run SIGKILLed mid-run and resumed gives the same shards."""
    from simscale_env.cli import main

    text = (mini / "splits" / "mini-navtrain.yaml").read_text()
    head, toks = text.split("tokens:\n")
    split = tmp_path / "three.yaml"
    split.write_text(head + "tokens:\n" + "".join(toks.splitlines(keepends=True)[:3]))
    out = tmp_path / "gen"
    argv = ["generate", "--split", str(split), "--rounds", "2", "--seed", "3", "--out", str(out), "--cameras",
            "CAM_F0", "--width", "64", "--height", "32", "--quiet", "--data", str(mini)]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("round 1: ") and "valid" in lines[0]
    summary = json.loads(lines[-1])
    m = json.loads((out / "manifest.json").read_text())
    assert summary["samples"] == m["samples"] == len(_rows(out)) and m["rounds"][0]["tried"] == 3
    assert m["command"].startswith("simscale generate") and m["seed"] == 3
    rows = _rows(out)
    if rows:
        assert rows[0]["token"] == f"{rows[0]['base_token']}-{rows[0]['round']:03d}" and len(rows[0]["CAM_F0"]) == 4
        assert rows[0]["CAM_F0"][0][:2] == b"\xff\xd8"  # JPEG
    before = _shards(out)
    assert main(argv + ["--resume"]) == 0 and _shards(out) == before
    # the CLI in a subprocess, SIGKILLed after its 4th task (round 1 done, round 2 begun), then resumed
    killed = tmp_path / "killed"
    cli = [sys.executable, "-m", "simscale_env.cli", *argv]
    cli[cli.index(str(out))] = str(killed)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(cli, env={**env, "SIMSCALE_TEST_KILL_AT": "task:4"}, cwd=ROOT, capture_output=True)
    assert p.returncode == -9 and (killed / "round-01.json").exists() and not (killed / "round-02.json").exists()
    subprocess.run(cli + ["--resume"], env=env, cwd=ROOT, check=True, capture_output=True)
    assert _shards(killed) == before
    assert json.loads((killed / "manifest.json").read_text())["rounds"] == m["rounds"]


def test_journal_is_read_line_by_line_and_a_torn_last_line_is_dropped(tmp_path):
    """The journal reader keeps offsets, not samples, and drops (truncates) a line a kill tore mid-write."""
    from training.engine import _read_journal

    j = tmp_path / "round-01.partial.jsonl"
    a = json.dumps({"index": 0, "token": "t0", "status": "valid", "error": None, "sample": {"x": 1}},
                   separators=(",", ":")).encode()
    b = json.dumps({"index": 1, "token": "t1", "status": "rejected", "reason": "r", "error": None,
                    "sample": None}, separators=(",", ":")).encode()
    failed = json.dumps({"index": 2, "token": "t2", "status": "failed", "error": "E: x", "sample": None},
                        separators=(",", ":")).encode()
    j.write_bytes(a + b"\n" + b + b"\n" + failed + b"\n" + b'{"index": 2, "tok')
    done = _read_journal(j, {0: "t0", 1: "t1", 2: "t2"})
    assert sorted(done) == [0, 1]  # the failed task is not done; the torn line is gone
    pos, length, rec = done[0]
    assert (pos, length) == (0, len(a)) and "sample" not in rec and rec["status"] == "valid"
    assert done[1][0] == len(a) + 1 and done[1][1] == len(b)
    assert j.read_bytes() == a + b"\n" + b + b"\n" + failed + b"\n"  # truncated to the last whole line
    with pytest.raises(SimScaleError, match="line 2 is task 1"):
        _read_journal(j, {0: "t0", 1: "other", 2: "t2"})
