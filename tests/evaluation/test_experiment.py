"""`simscale experiment simscale` (evaluation.experiment) on a tiny configuration: one planner (LTF at 128x32), rounds
0 and 1, one seed, 1 epoch of 2 steps, 4 real / generation tokens, 1 mini-navhard token in two-stage (2 stage-2
starts) and closed loop. Every artefact is written and its numbers are the cells' own; a rerun reuses every cell; a
run SIGKILLed after its first cell resumes to the same results.csv bytes; round views, intervals, bad configs and
the command-line options."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation.experiment import (FILES, ExperimentConfig, ExperimentError, round_view, run_experiment, t_interval,
                                   table_rows)

ROOT = Path(__file__).resolve().parents[2]
# the mini-navhard token of the evaluation slice: one where the barely trained planner scores EPDMS > 0 in both modes
# (on the others it leaves the road at once: every number 0 would make the consistency checks weak)
HARD_TOKEN = "223f6c4e48feb977"


@pytest.fixture(scope="module")
def splits(mini, tmp_path_factory):
    """A 4-token slice of mini-navtrain (real samples and generation) and a 1-token slice of mini-navhard (its name
    keeps navhard's perturbation ranges)."""
    root = tmp_path_factory.mktemp("experiment_splits")
    head, toks = (mini / "splits" / "mini-navtrain.yaml").read_text().split("tokens:\n")
    four = root / "four.yaml"
    four.write_text(head + "tokens:\n" + "".join(toks.splitlines(keepends=True)[:4]))
    head, toks = (mini / "splits" / "mini-navhard.yaml").read_text().split("tokens:\n")
    hard = root / "mini-navhard-1.yaml"
    hard.write_text(head + "tokens:\n" + "".join(t for t in toks.splitlines(keepends=True) if HARD_TOKEN in t))
    return {"four": str(four), "hard": str(hard)}


def tiny(splits, **kw) -> ExperimentConfig:
    base = dict(planners=("ltf",), experts=("pdm_closed",), rounds=(0, 1), seeds=1, real_split=splits["four"],
                eval_split=splits["hard"], eval_modes=("two_stage", "closed_loop"), stage2_starts=2, epochs=1,
                batch_size=2, max_steps_per_epoch=2, planner_config={"image_size": [128, 32]}, gen_width=96,
                gen_height=48, gen_every=1, lr=None, workers=1)
    base.update(kw)
    return ExperimentConfig(**base)


@pytest.fixture(scope="module")
def done(splits, tmp_path_factory):
    """The tiny experiment, run once without interruption."""
    out = tmp_path_factory.mktemp("experiment") / "A"
    cfg = tiny(splits)
    r = run_experiment(cfg, out, progress=False, command="simscale experiment simscale (test)")
    return {"cfg": cfg, "out": out, "result": r}


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_artefact_is_written_and_the_table_is_the_cells_numbers(done):
    out, r = done["out"], done["result"]
    assert sorted(r.ran) == ["ltf-pdm_closed-r1-s0", "ltf-real-s0"] and not r.reused and not r.failed
    assert any(float(x) > 0 for row in _csv(out / "results.csv") for k, x in row.items() if k.endswith("_epdms"))
    for name in FILES.values():
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / FILES["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # sim data: the generation run (3 valid of 4), the round-1 view listing its shard, a cell trained on it
    gen = json.loads((out / "experiment.json").read_text())["generation"]["pdm_closed"]
    assert gen["rounds"] == [{"round": 1, "tried": 4, "valid": 3}]
    rows = _csv(out / "results.csv")
    assert [(x["cell"], x["expert"], x["rounds"], x["sim_samples"], x["real_samples"]) for x in rows] == \
        [("ltf-real-s0", "", "0", "0", "4"), ("ltf-pdm_closed-r1-s0", "pdm_closed", "1", "3", "4")]
    table = {(t["expert"], t["rounds"]): t for t in _csv(out / "table.csv")}
    md = (out / "table.md").read_text()
    for row in rows:
        cell = out / "cells" / row["cell"]
        res = json.loads((cell / "result.json").read_text())
        assert res["train"]["steps"] == 2 and res["real_samples"] == 4
        t = table[(row["expert"], row["rounds"])]
        assert t["seeds"] == "1"
        for mode in ("two_stage", "closed_loop"):
            agg = json.loads((cell / f"eval-{mode}" / "aggregate.json").read_text())
            assert agg["mode"] == mode and agg["rows"] == 1 and agg["seed"] == 0
            assert agg["policy"] == str((cell / "train" / "checkpoint.pt").resolve())
            e = agg["epdms"]
            assert res["eval"][mode]["epdms"] == e
            # results.csv holds the numbers exactly (repr), the one-seed table row the cell's scene interval
            assert float(row[f"{mode}_epdms"]) == e["mean"] and int(row[f"{mode}_n"]) == e["n"] == 1
            assert [float(row[f"{mode}_lo"]), float(row[f"{mode}_hi"])] == e["ci95"]
            assert float(t[f"{mode}_epdms"]) == e["mean"] and t[f"{mode}_interval"] == "scenes"
            assert [float(t[f"{mode}_lo"]), float(t[f"{mode}_hi"])] == e["ci95"]
            assert f"{e['mean']:.3f} [{e['ci95'][0]:.3f}, {e['ci95'][1]:.3f}] (scenes)" in md
    summary = (out / "summary.md").read_text()
    assert "simscale experiment simscale (test)" in summary and md.splitlines()[2] in summary
    assert f"]({FILES['plot']})" in summary and "cores" in summary and "min this invocation" in summary
    doc = json.loads((out / "experiment.json").read_text())
    assert doc["complete"] and doc["config"] == json.loads(json.dumps(dataclasses.asdict(done["cfg"])))
    assert len(doc["invocations"]) == 1 and doc["versions"]["torch"]
    # the data it read: the mini dataset's manifest, stated in the summary
    manifest = json.loads((Path(doc["data"]["root"]) / "manifest.json").read_text())
    assert doc["data"]["logs"] == manifest["num_logs"] and doc["data"]["splits"] == manifest["splits"]
    assert f"({manifest['num_logs']} logs" in summary and doc["data"]["root"] in summary


def test_a_rerun_reuses_every_cell(done):
    """No cell is trained or evaluated again: nothing in the cell folders changes, the outputs are the same bytes."""
    out = done["out"]
    watched = [p for p in (out / "cells").rglob("*") if p.is_file()]
    before = {p: p.stat().st_mtime_ns for p in watched}
    csv_before = (out / "results.csv").read_bytes()
    r = run_experiment(done["cfg"], out, progress=False, command="simscale experiment simscale (test)")
    assert r.ran == () and sorted(r.reused) == ["ltf-pdm_closed-r1-s0", "ltf-real-s0"] and not r.failed
    assert {p: p.stat().st_mtime_ns for p in watched} == before
    assert sorted(p for p in (out / "cells").rglob("*") if p.is_file()) == sorted(watched)
    assert (out / "results.csv").read_bytes() == csv_before
    assert len(json.loads((out / "experiment.json").read_text())["invocations"]) >= 2


def test_a_killed_experiment_resumes_to_the_same_results(done, tmp_path):
    """SIGKILLed after its first finished cell (SIMSCALE_TEST_KILL_AT=cell:1), then rerun: the finished cell is
    reused, the other runs, and results.csv has the bytes of the uninterrupted run."""
    out = tmp_path / "B"
    kw = dataclasses.asdict(done["cfg"])
    script = (f"import json\nfrom evaluation.experiment import ExperimentConfig, run_experiment\n"
              f"cfg = ExperimentConfig(**json.loads({json.dumps(json.dumps(kw))}))\n"
              f"run_experiment(cfg, {str(out)!r}, progress=False)\n")
    env = {**os.environ, "SIMSCALE_TEST_KILL_AT": "cell:1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == -9, p.stderr[-2000:]
    finished = sorted(c.parent.name for c in (out / "cells").glob("*/result.json"))
    assert len(finished) == 1 and not (out / "results.csv").exists()
    r = run_experiment(done["cfg"], out, progress=False)
    assert r.reused == tuple(finished) and len(r.ran) == 1 and not r.failed
    assert (out / "results.csv").read_bytes() == (done["out"] / "results.csv").read_bytes()


def test_a_changed_config_is_refused_before_anything_runs(done, splits):
    """The same cell names with another training config: one error naming the cell and the field; the cells and
    experiment.json stay as they were."""
    out = done["out"]
    record = (out / "experiment.json").read_bytes()
    with pytest.raises(ExperimentError, match=r"ltf-real-s0 .*epochs: 1 there, 2 now"):
        run_experiment(tiny(splits, epochs=2), out, progress=False)
    assert (out / "experiment.json").read_bytes() == record


def test_the_command_line_reuses_the_finished_experiment(done, splits, capsys):
    """`simscale experiment simscale ...` options (add_arguments / run_from_args) give the fixture's config: every cell
    reused, one JSON line, status 0."""
    import argparse

    from evaluation.experiment import add_arguments, config_from_args, run_from_args

    ap = argparse.ArgumentParser()
    add_arguments(ap)
    argv = ["--planners", "ltf", "--experts", "pdm_closed", "--rounds", "0,1", "--seeds", "1", "--real-split",
            splits["four"], "--eval-split", splits["hard"], "--eval-modes", "two_stage,closed_loop", "--stage2-starts",
            "2", "--epochs", "1", "--batch-size", "2", "--max-steps", "2", "--set", "image_size=[128,32]",
            "--gen-size", "96x48", "--workers", "1", "--out", str(done["out"]), "--quiet", "--dataset", "mini",
            "--gen-every", "1", "--lr", "recipe"]
    args = ap.parse_args(argv)
    assert config_from_args(args) == done["cfg"]
    assert run_from_args(args)["reused"] == 2
    assert capsys.readouterr().out == ""  # the library prints nothing; the CLI prints its summary
    from simscale_env.cli import main

    assert main(["experiment", "simscale", *argv]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["ran"] == 0 and line["reused"] == 2 and line["failed"] == 0
    assert line["table"] == str(done["out"] / "table.md")
    # per-planner overrides and the defaults
    args = ap.parse_args(["--out", "x", "--set", "image_size=[256,64]", "--set", "gtrs_dense.num_decoder_layers=1",
                          "--gtrs-imitation"])
    cfg = config_from_args(args)
    # the defaults: the mini-size experiment of docs/experiments.md
    assert cfg.planners == ("ltf", "gtrs_dense") and cfg.rounds == (0, 1, 3)
    assert cfg.experts == ("pdm_closed", "recovery")
    assert cfg.seeds == 3 and cfg.eval_modes == ("two_stage", "closed_loop") and not cfg.gtrs_rewards_only
    assert (cfg.epochs, cfg.stage2_starts, cfg.gen_every, cfg.lr) == (2, 2, 8, 1e-3)
    assert config_from_args(ap.parse_args(["--out", "x", "--lr", "recipe"])).lr is None
    assert args.dataset == "large"  # the experiment's default data: the large mini preset
    assert cfg.eval_seed == 0 and config_from_args(ap.parse_args(["--out", "x", "--eval-seed", "cell"])).eval_seed is None
    assert cfg.planner_overrides("ltf") == {"image_size": [256, 64]}
    assert cfg.planner_overrides("gtrs_dense") == {"image_size": [256, 64], "num_decoder_layers": 1}
    assert len(cfg.cells()) == 2 * (1 + 2 * 2) * 3


def test_round_view_lists_only_rounds_up_to_r(tmp_path):
    """A view of rounds 1..2 of a 3-round run: its manifest lists those shards (linked, same bytes) and their samples;
    `training.datasets.shard_paths` reads it; the same shards give the same folder."""
    from training.datasets import shard_paths

    gen = tmp_path / "gen"
    gen.mkdir()
    shards, rounds = [], []
    for r, n in ((1, 5), (2, 4), (3, 2)):
        name = f"samples-r{r:02d}-00000.parquet"
        (gen / name).write_bytes(bytes([r]) * (10 * r))
        shards.append({"round": r, "file": name, "rows": n, "bytes": 10 * r, "sha256": f"{r:064d}"})
        rounds.append({"round": r, "tried": n + 1, "valid": n, "shards": [], "failed": []})
    (gen / "manifest.json").write_text(json.dumps({"format": "simscale-gen-manifest/1", "expert": "recovery",
                                                   "rounds": rounds, "shards": shards, "samples": 11,
                                                   "failures": [], "complete": True}))
    folder, view = round_view(gen, 2, tmp_path / "sim")
    assert folder.name.startswith("recovery-r2-") and view["samples"] == 9
    m, paths = shard_paths(folder)
    assert [s["round"] for s in m["shards"]] == [1, 2] and m["view"]["rounds"] == 2
    assert [p.read_bytes() for p in paths] == [b"\x01" * 10, b"\x02" * 20]
    again, _ = round_view(gen, 2, tmp_path / "sim")
    assert again == folder
    one, v1 = round_view(gen, 1, tmp_path / "sim")
    assert one != folder and v1["samples"] == 5 and [s["round"] for s in v1["shards"]] == [1]


def test_intervals_over_seeds_are_student_t():
    """Three seeds: mean +- t_{0.975, 2} s / sqrt(3); one seed: the cell's scene interval, marked."""
    m = t_interval([0.5, 0.6, 0.7])
    half = 4.302652729749462 * 0.1 / math.sqrt(3)  # scipy.stats.t.ppf(0.975, 2)
    assert m["n"] == 3 and m["mean"] == pytest.approx(0.6)
    assert m["ci95"] == pytest.approx([0.6 - half, 0.6 + half], abs=1e-12)
    assert all(math.isnan(v) for v in t_interval([0.4])["ci95"])
    cfg = ExperimentConfig(planners=("ltf",), experts=("recovery",), rounds=(0, 2), seeds=3, eval_modes=("two_stage",))
    rows = [{"planner": "ltf", "expert": "recovery", "rounds": 2, "seed": s, "sim_samples": 7,
             "two_stage_epdms": v, "two_stage_lo": 0.0, "two_stage_hi": 1.0, "two_stage_n": 9}
            for s, v in enumerate([0.5, 0.6, 0.7])]
    rows.append({"planner": "ltf", "expert": "", "rounds": 0, "seed": 0, "sim_samples": 0, "two_stage_epdms": 0.3,
                 "two_stage_lo": 0.1, "two_stage_hi": 0.45, "two_stage_n": 9})
    t = {x["rounds"]: x for x in table_rows(cfg, rows)}
    assert t[2]["seeds"] == 3 and t[2]["two_stage"]["interval"] == "t_seeds"
    assert t[2]["two_stage"]["ci95"] == pytest.approx(m["ci95"])
    assert t[0]["two_stage"] == {"mean": 0.3, "ci95": [0.1, 0.45], "n": 1, "interval": "scenes"}


@pytest.mark.parametrize("kw, match", [
    ({"planners": ("ltf", "nope")}, r"planners: unknown \['nope'\]"),
    ({"rounds": (0, -1)}, "rounds must be integers >= 0"),
    ({"experts": ("human",)}, "experts must be distinct names of"),
    ({"eval_modes": ("two_stage", "open_loop")}, "eval_modes must be distinct names of"),
    ({"seeds": 0}, "seeds must be an integer >= 1"),
    ({"ray_address": "h:1"}, "ray_address is given without ray=True"),
    ({"lr": 0.0}, "lr must be a positive number"),
    ({"gen_every": 0}, "gen_every must be an integer >= 1"),
])
def test_bad_configs_are_one_clear_error(kw, match):
    with pytest.raises(ExperimentError, match=match):
        ExperimentConfig(**kw)


def test_a_foreign_folder_is_refused(splits, tmp_path):
    from simscale_env.errors import OutputFolderError

    (tmp_path / "mine.txt").write_text("a user's file")
    with pytest.raises(OutputFolderError, match="not an experiment folder"):
        run_experiment(tiny(splits), tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_a_failing_cell_is_reported_and_the_others_are_kept(splits, tmp_path):
    """DiffusionDrive's 20 k-means anchors cannot be fitted to 4 real samples: the cell fails with that error, the
    outputs are still written (without it) and summary.md names it."""
    r = run_experiment(tiny(splits, planners=("diffusiondrive",), rounds=(0,), eval_modes=("closed_loop",)), tmp_path,
                       progress=False)
    assert r.ran == () and [f["cell"] for f in r.failed] == ["diffusiondrive-real-s0"]
    assert "k=20 clusters need at least 20 human plans" in r.failed[0]["error"]
    assert (tmp_path / "results.csv").read_text().count("\n") == 1  # the header only
    assert "**1 cell(s) failed**" in (tmp_path / "summary.md").read_text()
    assert not json.loads((tmp_path / "experiment.json").read_text())["complete"]


def test_every_cell_is_evaluated_on_the_same_starts_unless_asked(splits, tmp_path):
    """eval_seed (default 0): every cell's evaluation configs carry the same seed, so every cell is scored on the
    same perturbed starts (NAVSIM's navhard is one fixed set); eval_seed=None gives each cell its own seed, and the
    seed is part of a cell's identity."""
    from evaluation.experiment import cell_specs

    paired = cell_specs(tiny(splits, rounds=(0,), seeds=2), tmp_path, None, {}, command="x")
    own = cell_specs(tiny(splits, rounds=(0,), seeds=2, eval_seed=None), tmp_path, None, {}, command="x")
    assert [[e["seed"] for e in s["evals"]] for s in paired] == [[0, 0], [0, 0]]
    assert [[e["seed"] for e in s["evals"]] for s in own] == [[0, 0], [1, 1]]
    assert [s["train"]["seed"] for s in paired] == [0, 1]
    assert paired[0]["identity"] == own[0]["identity"] and paired[1]["identity"] != own[1]["identity"]
    with pytest.raises(ExperimentError, match="eval_seed must be an integer >= 0"):
        tiny(splits, eval_seed=-1)


def test_gen_every_writes_a_split_of_every_nth_token(splits, tmp_path):
    """gen_every=2: the generation split is every 2nd token of the real split (first included), a NAVSIM scene_filter
    YAML with the source split's frames and logs under DIR/splits/, written once; gen_every=1 is the split itself."""
    from evaluation.experiment import generation_split_file
    from simscale_env.data.openscene import load_split
    from simscale_env.envs import split_env_spec, split_tokens

    assert generation_split_file(tiny(splits), tmp_path) == splits["four"]
    path = generation_split_file(tiny(splits, gen_every=2), tmp_path)
    assert path == str(tmp_path.resolve() / "splits" / "four-every2.yaml")
    src, sub = load_split(Path(splits["four"])), load_split(Path(path))
    assert list(sub.tokens) == list(src.tokens)[::2] == split_tokens(path)
    assert (sub.log_names, sub.num_history_frames, sub.num_future_frames) == \
        (src.log_names, src.num_history_frames, src.num_future_frames)
    mtime = Path(path).stat().st_mtime_ns
    assert generation_split_file(tiny(splits, gen_every=2), tmp_path) == path and Path(path).stat().st_mtime_ns == mtime
    # a mini-navtrain-frames subset keeps navtrain's env
    assert split_env_spec(str(tmp_path / "mini-navtrain-frames-every4.yaml"))[0] == "SimScale-navtrain-v0"
