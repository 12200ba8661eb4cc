"""`simscale check-golden` on the golden folder of real nuplan-devkit / NAVSIM outputs
(../shared/reference/golden/oracle_mini) and on reduced, corrupted and edited copies of it."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest

from simscale_env.cli import main
from simscale_env.golden.check import CHECKS, SUMMARY_KEYS
from tests.conftest import ORACLE_MINI

ORACLE = ORACLE_MINI

pytestmark = pytest.mark.usefixtures("oracle_mini_dir")
# what the map and scenario comparisons cover on oracle_mini (every field of every object, every point query)
MAP_VALUES = 21008
SCENARIO_VALUES = 186


def _run(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _summary(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def oracle_run():
    """One run of the whole check on the shared golden folder (extraction cached under SIMSCALE_CACHE)."""
    return _run(["check-golden", str(ORACLE), "--quiet"])


def _link_archives(dst, *, maps=True, logs=True, navsim_logs=True):
    """Link the fixture's archives into `dst` (same names and contents: the cached extraction is reused)."""
    dst.mkdir(parents=True, exist_ok=True)
    if maps:
        (dst / "maps.tar.xz").symlink_to(ORACLE / "maps.tar.xz")
    if logs:
        (dst / "logs").symlink_to(ORACLE / "logs", target_is_directory=True)
    if navsim_logs:
        (dst / "navsim_logs").symlink_to(ORACLE / "navsim_logs", target_is_directory=True)
    return dst


def test_oracle_mini_maps_and_scenarios_match_and_every_kind_is_compared(oracle_run):
    rc, out, _ = oracle_run
    summary = _summary(out)
    assert set(SUMMARY_KEYS) <= set(summary)
    assert summary["map_queries"] == MAP_VALUES and summary["map_mismatches"] == 0
    assert summary["scenarios"] == SCENARIO_VALUES and summary["scenario_mismatches"] == 0
    # every kind ran on the full folder (their 0-mismatch assertions live with their own tests)
    assert summary["skipped"] == {}
    for _, _, kind, count_key, _ in CHECKS:
        assert summary[count_key] > 0, kind
        assert f"== {kind}: " in out
    # exit status 0 iff every mismatch count is 0
    total = sum(summary[k] for k in SUMMARY_KEYS if k.endswith("_mismatches"))
    assert rc == (1 if total else 0)
    # per-file agreement tables of the map and scenario comparisons, one row per map / log part
    assert "-- devkit_maps.json" in out and "-- devkit_scenarios.json" in out
    for loc in ("us-nv-las-vegas-strip", "us-ma-boston", "us-pa-pittsburgh-hazelwood", "sg-one-north"):
        assert loc in out


def test_a_folder_with_only_the_maps_skips_the_other_kinds_and_says_so(tmp_path):
    d = _link_archives(tmp_path / "g", logs=False, navsim_logs=False)
    shutil.copy(ORACLE / "devkit_maps.json", d)
    rc, out, _ = _run(["check-golden", str(d), "--quiet", "--cache", str(tmp_path / "cache")])
    assert rc == 0
    summary = _summary(out)
    assert summary["map_queries"] == MAP_VALUES and summary["map_mismatches"] == 0
    assert set(summary["skipped"]) == {"traces", "scores", "plans", "scenarios"}
    for kind in ("traces", "scores", "plans", "scenarios"):
        assert summary[dict((c[2], c[3]) for c in CHECKS)[kind]] == 0
        assert any(line.startswith(f"skipped: {kind}: ") for line in out.splitlines()), kind
    assert "skipped: scenarios: no devkit_scenarios.json" in out


def test_a_missing_folder_is_one_line_and_exit_2(tmp_path):
    rc, out, err = _run(["check-golden", str(tmp_path / "nope"), "--quiet"])
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "nope" in err and "golden folder not found" in err


def test_a_folder_without_golden_files_is_a_user_error(tmp_path):
    rc, out, err = _run(["check-golden", str(tmp_path), "--quiet"])
    assert rc == 2 and out == "" and err.count("\n") == 1 and "no golden files" in err


@pytest.mark.parametrize("name, text", [("navsim_scores_x.json", '{"scenes": {"a": [1, 2'),
                                        ("navsim_scores_x.json", "[1, 2, 3]"),
                                        ("devkit_maps.json", "\x00\x01 not json")])
def test_a_corrupt_golden_file_is_one_clear_error_naming_it(tmp_path, name, text):
    d = _link_archives(tmp_path / "g", logs=False, navsim_logs=False)
    (d / name).write_text(text)
    rc, out, err = _run(["check-golden", str(d), "--quiet", "--cache", str(tmp_path / "cache")])
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and str(d / name) in err
    assert "Traceback" not in err


def test_a_corrupt_archive_is_one_clear_error_naming_it(tmp_path):
    d = tmp_path / "g"
    d.mkdir()
    (d / "maps.tar.xz").write_bytes((ORACLE / "maps.tar.xz").read_bytes()[:5000])
    shutil.copy(ORACLE / "devkit_maps.json", d)
    rc, out, err = _run(["check-golden", str(d), "--quiet", "--cache", str(tmp_path / "cache")])
    assert rc == 2 and err.count("\n") == 1 and "maps.tar.xz" in err and "not a readable .tar.xz" in err


def test_edited_golden_values_are_each_one_mismatch_naming_map_object_and_field(tmp_path):
    """Known answers: five edits of the devkit's outputs give exactly five mismatches, each named."""
    d = _link_archives(tmp_path / "g")
    maps = json.loads((ORACLE / "devkit_maps.json").read_text())
    vegas = maps["objects"]["us-nv-las-vegas-strip"]
    vegas["lanes"]["10005"]["length"] += 1e-6  # above the 1e-9 tolerance
    vegas["lanes"]["10442"]["stop"] = ["99999"]
    vegas["roadblocks"]["10465"]["lanes"] = ["10444", "10443"]  # the order is compared
    maps["point_queries"]["us-ma-boston"][0]["drivable"] = not maps["point_queries"]["us-ma-boston"][0]["drivable"]
    (d / "devkit_maps.json").write_text(json.dumps(maps))
    scen = json.loads((ORACLE / "devkit_scenarios.json").read_text())
    s0 = scen["tagged"][0]
    s0["ego0"][2] += 1e-3
    (d / "devkit_scenarios.json").write_text(json.dumps(scen))

    rc, out, _ = _run(["check-golden", str(d), "--quiet", "--max-mismatches", "2"])
    assert rc == 1
    summary = _summary(out)
    assert summary["map_queries"] == MAP_VALUES and summary["map_mismatches"] == 4
    assert summary["scenarios"] == SCENARIO_VALUES and summary["scenario_mismatches"] == 1
    lines = [line for line in out.splitlines() if line.startswith("MISMATCH")]
    assert any("devkit_maps.json us-nv-las-vegas-strip lane 10005: length" in line for line in lines)
    assert any("devkit_maps.json us-nv-las-vegas-strip lane 10442: stop ours=['10434'] golden=['99999']" in line
               for line in lines)
    # printing stops at 2 per kind; the count in the JSON stays exact
    assert "... 2 more maps mismatches" in out
    assert any(f"devkit_scenarios.json scenario {s0['token']}: ego0" in line for line in lines)
    # the agreement table shows where they are
    table = out[out.index("-- devkit_maps.json"):out.index("== scenarios")]
    vegas_lanes = next(row for row in table.splitlines() if "us-nv-las-vegas-strip" in row and " lanes " in row)
    assert vegas_lanes.split()[-1] == "2"



def test_a_missing_check_module_is_skipped_and_a_crashing_check_is_a_mismatch(tmp_path, monkeypatch):
    from simscale_env.golden import check, maps

    fn, why = check._load("no_such_module", "check_nothing")
    assert fn is None and why.startswith("not implemented")

    def boom(folder):
        raise RuntimeError("bug in a check")

    monkeypatch.setattr(maps, "check_maps", boom)
    d = _link_archives(tmp_path / "g", logs=False, navsim_logs=False)
    shutil.copy(ORACLE / "devkit_maps.json", d)
    rc, out, _ = _run(["check-golden", str(d), "--quiet", "--cache", str(tmp_path / "cache")])
    assert rc == 1
    assert _summary(out)["map_mismatches"] == 1
    assert "MISMATCH maps.check_maps: the check raised ours='RuntimeError: bug in a check'" in out
