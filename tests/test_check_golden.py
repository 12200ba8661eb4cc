"""`simscale check-golden` on the golden folder of real nuplan-devkit / NAVSIM outputs
(../shared/reference/golden/oracle_mini) and on reduced, corrupted and edited copies of it."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
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


# ---------------------------------------------------------------------------------------------- --source openscene
# two of the five devkit traces (one per map of the traced logs' cheapest pair) keep the added test time small; the
# score and plan files are complete
OPENSCENE_TRACES = ("ed7a703df855ba4f", "7ffc94b8da34b707")


@pytest.fixture(scope="module")
def openscene_run(tmp_path_factory):
    """`check-golden --source openscene` on a copy of the golden folder without logs/ (no nuPlan .db at all: what
    NAVSIM users have), extracted into its own cache (the extraction is keyed by the archives present)."""
    tmp = tmp_path_factory.mktemp("golden_openscene")
    d = _link_archives(tmp / "g", logs=False)
    for p in ORACLE.glob("navsim_scores_*.json"):
        shutil.copy(p, d)
    shutil.copy(ORACLE / "devkit_scenarios.json", d)
    (d / "idm_traces").mkdir()
    for tok in OPENSCENE_TRACES:
        shutil.copy(ORACLE / "idm_traces" / f"{tok}.json", d / "idm_traces")
    return _run(["check-golden", str(d), "--quiet", "--source", "openscene", "--cache", str(tmp / "cache")]), d


def test_openscene_source_matches_every_navsim_score_cell_and_plan_without_any_db(openscene_run):
    (rc, out, _), d = openscene_run
    assert not (d / "logs").exists() and rc == 0
    summary = _summary(out)
    assert summary["source"] == "openscene"
    # the whole NAVSIM side of oracle_mini, from the OpenScene pickles alone
    assert summary["score_cells"] == 2016 and summary["score_mismatches"] == 0
    assert summary["plans"] == 24 and summary["plan_mismatches"] == 0
    assert "== scores: 2016 compared, 0 mismatches" in out and "== plans: 24 compared, 0 mismatches" in out
    # the .db scenario-builder check and the exact trace comparison are skipped, each with its reason
    assert summary["scenarios"] == 0 and summary["traces"] == 0 and summary["trace_mismatches"] == 0
    assert "nuPlan .db" in summary["skipped"]["scenarios"] and "--source nuplan" in summary["skipped"]["scenarios"]
    assert "trace_deviation" in summary["skipped"]["traces"]


def test_openscene_source_reports_each_traces_deviation_apart_from_the_mismatches(openscene_run):
    (_, out, _), _ = openscene_run
    dev = _summary(out)["trace_deviation"]
    assert sorted(dev) == sorted(f"idm_traces/{t}.json" for t in OPENSCENE_TRACES)
    for name, d in dev.items():
        assert d["steps"] == 150 and d["steps_missing"] == 0, name
        # a 2 Hz source: the ego on its log future differs from the 20 Hz run, but by centimetres
        assert 0.0 < d["ego_mean_m"] <= d["ego_max_m"] < 0.1, name
        assert d["agent_records"] > 0 and 0.0 <= d["agent_mean_m"] <= d["agent_max_m"], name
        assert d["agents_only_golden"] == 0 and d["agents_only_ours"] == 0, name
        assert f"-- {name}" in out
    assert out.startswith("== trace_deviation: 2 devkit traces")


def test_the_default_source_is_nuplan_and_names_itself(oracle_run):
    summary = _summary(oracle_run[1])
    assert summary["source"] == "nuplan" and "trace_deviation" not in summary
    assert list(summary)[0] == "source" and list(summary)[-1] == "skipped"


def test_an_unknown_source_is_a_usage_error():
    with pytest.raises(SystemExit) as exc, contextlib.redirect_stderr(io.StringIO()):
        main(["check-golden", str(ORACLE), "--source", "waymo"])
    assert exc.value.code == 2


def test_trace_deviation_known_answers():
    """Position errors by iteration against a made-up loop: ego 3-4-5 and 0, one common agent 1 m off, one agent on
    each side only, one step the loop does not reach."""
    from simscale_env.golden.traces import trace_deviation

    class W:
        def __init__(self, x, y):
            self.ego = np.array([x, y, 0.0, 0, 0, 0, 0, 0])

    trace = [{"ego": [0.0, 0.0], "agents": {"a": [1.0, 1.0, 0, 0], "g": [0.0, 0.0, 0, 0]}},
             {"ego": [1.0, 1.0], "agents": {"a": [2.0, 2.0, 0, 0]}},
             {"ego": [2.0, 2.0], "agents": {}}]
    loop = iter([(W(3.0, 4.0), None, {"a": [1.0, 2.0, 0, 0], "o": [5.0, 5.0, 0, 0]}),
                 (W(1.0, 1.0), None, {"a": [2.0, 2.0, 0, 0]})])
    d = trace_deviation(trace, loop)
    assert d == {"steps": 2, "steps_missing": 1, "ego_max_m": 5.0, "ego_mean_m": 2.5, "agent_records": 2,
                 "agent_max_m": 1.0, "agent_mean_m": 0.5, "agents_only_golden": 1, "agents_only_ours": 1}


def test_openscene_log_future_reference_follows_the_frames():
    """Frames 0.5 s apart on a straight line at 2 m/s: the reference starts at the query time, 0.1 s apart, to the
    last 0.5 s sample the log still has (as the devkit's LogFuturePlanner drops samples past the log's end)."""
    from simscale_env.golden.traces import openscene_log_future_reference

    h = 0.3
    frames = [{"timestamp": 1_000_000 + 500_000 * k, "ego2global_translation": [k * np.cos(h), k * np.sin(h), 0.0],
               "ego2global_rotation": [np.cos(h / 2), 0.0, 0.0, np.sin(h / 2)]} for k in range(6)]
    ref = openscene_log_future_reference(frames, 1_250_000)  # between frames 0 and 1: 0.25 s in
    s = 0.5 + 0.2 * np.arange(len(ref))  # metres along the line
    assert len(ref) == 21  # 1.25 s ... 3.25 s: the log ends at 3.5 s, so the 0.5 s samples end at 3.25 s
    np.testing.assert_allclose(ref[:, :2], np.stack([s * np.cos(h), s * np.sin(h)], -1), atol=1e-9)
    np.testing.assert_allclose(ref[:, 2], h, atol=1e-12)
