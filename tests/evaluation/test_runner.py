"""The evaluation runner (evaluation.runner), its run directory and report (evaluation.report), `simscale compare`,
and the CLI's `evaluate` on top of them: results independent of the executor, failures recorded, resumes."""

import csv
import json
import math
import os
import sys
from dataclasses import replace
from html.parser import HTMLParser

import numpy as np
import pytest

from evaluation.modes import EvalConfig
from evaluation.runner import SCORE_COLUMNS, SUBSCORES, EvaluationError, run_evaluation, to_json

# three mini-navhard tokens (split indices 2, 3, 7) where constant velocity collides, leaves the road or drives on
TOKENS = ["548475be2f57654e", "290309543eee8f7e", "5eb1f89b9ed66bb9"]
# no pseudo-experts, no plan scoring, no expert start check: episodes of a baseline in a fraction of a second
FAST = {"pseudo_experts": False, "plan_scoring": None, "valid_start": False}
CFG = EvalConfig(policy="constant_velocity", split="mini-navhard", mode="closed_loop", seed=3, env_kwargs=FAST)


class FailOn:
    """A policy that stands still and raises at the reset of one token: a failing item (loaded in the workers as
    'tests.evaluation.test_runner:FailOn')."""

    name = "fail_on"
    observation_keys = None
    cameras = None
    needs_pseudo_experts = False
    env_kwargs = dict(FAST)

    def __init__(self, token: str):
        self.token = token

    def reset(self, info):
        if info["scenario_token"] == self.token:
            raise RuntimeError(f"planned failure on {self.token}")

    def act(self, observation, info):
        return np.zeros((8, 3), np.float32)


class CrashOn(FailOn):
    """A policy whose worker process dies (os._exit) at the reset of one token: a crash in native code."""

    def __init__(self, token: str, parent: int):
        super().__init__(token)
        self.parent = parent

    def reset(self, info):
        if info["scenario_token"] == self.token and os.getpid() != self.parent:
            os._exit(3)


@pytest.fixture(scope="module", autouse=True)
def _mini(mini):
    os.environ.setdefault("SIMSCALE_MINI", str(mini))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The rows of CFG on TOKENS in this process, with its run directory (no videos)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    return run_evaluation(CFG, tokens=TOKENS, out=out, progress=False, videos=False)


def _same(a, b) -> bool:
    """Bit-identical rows (floats by their shortest repr, NaN equal to NaN)."""
    return to_json(a) == to_json(b)


def test_same_seed_gives_identical_rows_across_runs_and_worker_counts(reference):
    rows = reference.rows
    assert [r["index"] for r in rows] == [2, 3, 7] and [r["token"] for r in rows] == TOKENS
    assert reference.failed == 0 and all(r["valid"] and r["error"] is None for r in rows)
    # the rows hold what the episodes did: constant velocity leaves the road here, drives on there
    assert {r["off_road"] for r in rows} == {True, False}
    assert len({r["score"] for r in rows}) > 1
    again = run_evaluation(CFG, tokens=TOKENS, progress=False)
    assert _same(again.rows, rows)
    two = run_evaluation(CFG, tokens=TOKENS, workers=2, progress=False)
    assert two.timing["executor"] == "processes" and len({v["pid"] for v in two.timing["items"].values()}) == 2
    assert _same(two.rows, rows)
    # a token's row does not depend on which other tokens run: its index in the split seeds it
    alone = run_evaluation(CFG, tokens=[TOKENS[2]], progress=False)
    assert _same(alone.rows, rows[2:])
    other_seed = run_evaluation(replace(CFG, seed=4), tokens=[TOKENS[2]], progress=False)
    assert other_seed.rows[0]["seed"] == rows[2]["seed"] + 1


def test_local_ray_with_two_cpus_gives_the_same_rows(reference):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'simscale[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}})
    try:
        res = run_evaluation(CFG, tokens=TOKENS, workers=2, ray=True, progress=False)
    finally:
        ray.shutdown()
    assert res.timing["executor"] == "ray" and res.failed == 0
    assert _same(res.rows, reference.rows)


def test_missing_ray_is_one_clear_error(monkeypatch, tmp_path, capsys):
    from simscale_env.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(EvaluationError, match=r"pip install 'simscale\[ray\]'"):
        run_evaluation(CFG, tokens=TOKENS, ray=True, progress=False)
    assert main(["evaluate", "--policy", "stand_still", "--split", "mini-navhard", "--ray", "--out",
                 str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install" in err and not (tmp_path / "r").exists()


def test_a_failing_item_is_a_row_with_its_error_and_the_run_goes_on(tmp_path, capsys):
    """Through the CLI: the failing token's row is invalid with the error, the others are scored, the exit status
    is 1 with a line saying how many failed, and the report lists the failure."""
    from simscale_env.cli import main

    out = tmp_path / "run"
    argv = ["evaluate", "--policy", "tests.evaluation.test_runner:FailOn", "--policy-kwargs",
            json.dumps({"token": TOKENS[1]}), "--split", "mini-navhard", "--tokens", *TOKENS, "--out", str(out),
            "--quiet", "--no-videos"]
    assert main(argv) == 1
    cap = capsys.readouterr()
    assert "1 of 3 items failed" in cap.err and "Traceback" not in cap.err
    summary = json.loads(cap.out.strip().splitlines()[-1])
    assert summary["failed"] == 1 and summary["rows"] == 3
    agg = json.loads((out / "aggregate.json").read_text())
    assert agg["failures"] == [{"index": 3, "token": TOKENS[1], "error_type": "RuntimeError",
                                "error": f"planned failure on {TOKENS[1]}"}]
    assert agg["valid_rows"] == 2 and agg["epdms"]["n"] == 2
    assert agg["command"].startswith("simscale evaluate --policy tests.evaluation.test_runner:FailOn")
    with open(out / "navsim.csv", newline="") as fh:
        table = list(csv.reader(fh))
    bad = table[2]
    assert bad[1] == TOKENS[1] and bad[2] == "False" and bad[3:] == [""] * len(SCORE_COLUMNS)
    assert table[1][2] == table[3][2] == "True" and table[-1][1] == "average_all_frames" and table[-1][2] == "False"
    assert "planned failure" in (out / "report.md").read_text()
    # a rerun into the same directory runs the failed item again (and fails it again); the others are read back
    assert main(argv) == 1
    assert "1 of 3 items failed" in capsys.readouterr().err


def test_a_worker_process_that_dies_fails_only_its_item():
    cfg = replace(CFG, policy="tests.evaluation.test_runner:CrashOn",
                  policy_kwargs={"token": TOKENS[0], "parent": os.getpid()})
    res = run_evaluation(cfg, tokens=TOKENS, workers=2, progress=False)
    assert res.failed == 1 and [r["error_type"] for r in res.rows] == ["WorkerCrash", None, None]
    assert not res.rows[0]["valid"] and all(r["valid"] for r in res.rows[1:])


def test_a_rerun_resumes_and_a_different_config_is_refused(reference, tmp_path):
    from simscale_env.errors import OutputFolderError

    out = tmp_path / "run"
    first = run_evaluation(CFG, tokens=TOKENS[:2], out=out, progress=False, videos=False)
    assert first.resumed == 0 and sorted(first.timing["items"]) == [2, 3]
    second = run_evaluation(CFG, tokens=TOKENS, out=out, progress=False, videos=False)
    assert second.resumed == 2 and sorted(second.timing["items"]) == [7]  # only the new item ran
    assert _same(second.rows, reference.rows)
    # an append cut short by a kill: the torn line is dropped, the finished items stay finished
    with open(out / "rows.partial.jsonl", "a") as fh:
        fh.write('{"index": 7, "row": {"tok')
    third = run_evaluation(CFG, tokens=TOKENS, out=out, progress=False, videos=False)
    assert third.resumed == 3 and third.timing["items"] == {} and _same(third.rows, reference.rows)
    assert (out / "rows.partial.jsonl").read_text().endswith("}\n")
    with pytest.raises(EvaluationError, match=r"another config \(seed: 3 there, 4 now\)"):
        run_evaluation(replace(CFG, seed=4), tokens=TOKENS, out=out, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OutputFolderError, match="notes.txt"):
        run_evaluation(CFG, tokens=TOKENS, out=tmp_path / "other", progress=False)
    with pytest.raises(EvaluationError, match="ffffffffffffffff"):
        run_evaluation(CFG, tokens=["ffffffffffffffff"], progress=False)


def test_navsim_csv_has_navsim_columns_and_the_average_row_and_parquet_round_trips(reference):
    import pyarrow.parquet as pq

    out = reference.run_dir
    with open(out / "navsim.csv", newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["", "token", "valid", *SUBSCORES, "score"]
    assert [r[0] for r in table[1:]] == ["0", "1", "2", "3"]
    assert [r[1] for r in table[1:]] == [*TOKENS, "average_all_frames"]
    for r, row in zip(table[1:4], reference.rows):
        assert r[2] == "True" and float(r[-1]) == row["score"] and float(r[3]) == row["no_at_fault_collisions"]
        assert r[-2] == ""  # EC: a realised episode has no two-frame pair -> NaN, an empty field as pandas writes it
    avg = table[4]
    for k, c in enumerate(SCORE_COLUMNS):
        vals = [row[c] for row in reference.rows if not math.isnan(row[c])]
        assert (avg[3 + k] == "") if not vals else float(avg[3 + k]) == pytest.approx(np.mean(vals), abs=1e-15)
    back = pq.read_table(out / "results.parquet").to_pylist()
    assert _same(back, reference.rows)
    agg = json.loads((out / "aggregate.json").read_text())
    assert agg["epdms"]["mean"] == pytest.approx(np.mean([r["score"] for r in reference.rows]))
    lo, hi = agg["epdms"]["ci95"]
    assert min(r["score"] for r in reference.rows) <= lo <= agg["epdms"]["mean"] <= hi
    assert agg["metrics"]["offroad_rate"]["mean"] == pytest.approx(np.mean([r["off_road"] for r in reference.rows]))
    assert agg["metrics"]["two_frame_extended_comfort"]["mean"] is None  # NaN -> null: strict JSON
    assert agg["config"]["seed"] == 3 and agg["versions"]["numpy"] == np.__version__ and agg["run_time_s"] > 0


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("src", "href")]


def test_two_stage_report_has_plots_with_data_and_every_linked_file(tmp_path):
    from evaluation import report

    cfg = EvalConfig(policy="pdm_closed", split="mini-navhard", mode="two_stage", stage2_starts=1,
                     env_kwargs={"observation_keys": ("ego_status",)})
    res = run_evaluation(cfg, tokens=TOKENS[:2], out=tmp_path / "run", progress=False, videos=True)
    out = res.run_dir
    assert res.failed == 0
    s = res.summary
    # plots hold data: one bar per metric with a value, at the metric's mean; bars per scenario type; a histogram
    ax = report.fig_subscores(s).axes[0]
    names = ["epdms", "stage_one", "stage_two", *SUBSCORES]
    assert [round(p.get_width(), 12) for p in ax.patches] == [round(s["metrics"][n]["mean"], 12) for n in names]
    ax = report.fig_by_scenario_type(res.rows).axes[0]
    types = sorted({r["scenario_type"] for r in res.rows})
    assert len(ax.patches) == len(types) and [t.get_text().split(" (")[0] for t in ax.get_yticklabels()] == types
    ax = report.fig_score_hist(res.rows).axes[0]
    assert sum(p.get_height() for p in ax.patches) == len(res.rows)
    # the HTML links only files that exist: the plots, both videos, the tables
    parser = _Links()
    parser.feed((out / "report.html").read_text())
    assert len(parser.links) >= 3 + 2 + 4
    for link in parser.links:
        assert (out / link).is_file() and (out / link).stat().st_size > 0, link
    assert sum(link.endswith(".mp4") for link in parser.links) == 2
    assert {"plots/subscores.png", "plots/scenario_types.png", "plots/epdms_histogram.png"} <= set(parser.links)
    # NAVSIM's two-stage CSV layout and summary rows
    with open(out / "navsim.csv", newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["", "token", "valid", *(f"{c}_stage_one" for c in SUBSCORES),
                        *(f"{c}_stage_two" for c in SUBSCORES), "score"]
    assert [r[1] for r in table[1:]] == [*TOKENS[:2], "extended_pdm_score_stage_one", "extended_pdm_score_stage_two",
                                         "extended_pdm_score_combined"]
    assert float(table[-1][-1]) == pytest.approx(s["epdms"]["mean"])
    assert s["navsim"]["combined"] == pytest.approx(s["epdms"]["mean"])


def test_compare_puts_runs_side_by_side(reference, tmp_path, capsys):
    from evaluation.compare import compare_runs, fig_compare
    from simscale_env.cli import main

    other = run_evaluation(replace(CFG, policy="stand_still"), tokens=TOKENS,
                           out=tmp_path / "stand_still", progress=False, videos=False)
    r = compare_runs([reference.run_dir, other.run_dir], out=tmp_path / "cmp")
    assert [row["policy"] for row in r["rows"]] == ["constant_velocity", "stand_still"]
    assert r["rows"][1]["epdms"] == pytest.approx(other.summary["epdms"]["mean"])
    assert "two_frame_extended_comfort" not in r["metrics"]  # no run has a value
    assert r["markdown"].splitlines()[0].startswith("| run | policy | split | mode | seed | rows | failed | EPDMS |")
    with open(tmp_path / "cmp" / "compare.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert float(rows[0]["epdms"]) == pytest.approx(reference.summary["epdms"]["mean"])
    assert float(rows[0]["epdms_lo"]) <= float(rows[0]["epdms"]) <= float(rows[0]["epdms_hi"])
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 0
    ax = fig_compare(r["rows"], r["metrics"]).axes[0]
    assert len(ax.patches) == 2 * len(r["metrics"])
    assert main(["compare", str(reference.run_dir), str(tmp_path / "missing"), "--out", str(tmp_path / "c2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing" in err
    assert main(["compare", str(reference.run_dir), str(other.run_dir), "--out", str(tmp_path / "c3")]) == 0
    assert "| constant_velocity |" in capsys.readouterr().out


def test_old_agents_form_maps_to_closed_loop_runs(tmp_path, capsys):
    from simscale_env.cli import main

    assert main(["evaluate", "--agents", "stand_still", "--split", "mini-navhard", "--tokens", TOKENS[0], "--seed",
                 "3", "--out", str(tmp_path), "--quiet", "--no-videos"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("| agent | EPDMS |") and "| stand_still | " in out
    res = json.loads(out.strip().splitlines()[-1])
    agg = json.loads((tmp_path / "stand_still" / "aggregate.json").read_text())
    assert res["stand_still"]["epdms"] == round(agg["epdms"]["mean"], 4) and agg["config"]["mode"] == "closed_loop"
