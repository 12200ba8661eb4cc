"""docs/experiments.md shows what `simscale experiment simscale` wrote: the files under docs/experiments/ (the full
run) and docs/experiments/seeds8/ (the 8-seed run of claim 1) are the command's own (experiment.json, results.csv,
table.md, table.csv, summary.md, the plot), the page embeds each table.md as it is, and each table is recomputed
exactly from the per-cell rows of its results.csv."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest

from evaluation.experiment import ExperimentConfig, results_csv, table_csv, table_markdown, table_rows

DOCS = Path(__file__).resolve().parents[2] / "docs"
RUN = DOCS / "experiments"
INTS = ("rounds", "seed", "sim_samples", "real_samples")


def _rows(cfg: ExperimentConfig, run: Path) -> list[dict]:
    with open(run / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for k in INTS:
            r[k] = int(r[k])
        for mode in cfg.eval_modes:
            for k in ("epdms", "lo", "hi"):
                v = r[f"{mode}_{k}"]
                r[f"{mode}_{k}"] = float(v) if v != "" else None
            r[f"{mode}_n"] = int(r[f"{mode}_n"]) if r[f"{mode}_n"] != "" else None
    return rows


@pytest.mark.parametrize("run", [RUN, RUN / "seeds8"], ids=["full", "seeds8"])
def test_the_docs_show_the_tables_and_plots_the_command_wrote(run):
    doc = json.loads((run / "experiment.json").read_text())
    assert doc["format"] == "simscale-experiment/1" and doc["complete"] and not doc["failed"]
    cfg = ExperimentConfig(**doc["config"])
    rows = _rows(cfg, run)
    assert [r["cell"] for r in rows] == [c.name for c in cfg.cells()] == doc["cells"]
    assert results_csv(cfg, rows) == (run / "results.csv").read_text()  # the rows round-trip exactly
    trows = table_rows(cfg, rows)
    table = table_markdown(cfg, trows)
    assert table == (run / "table.md").read_text() and table_csv(cfg, trows) == (run / "table.csv").read_text()
    page = (DOCS / "experiments.md").read_text()
    rel = run.relative_to(DOCS).as_posix()
    assert table in page and f"]({rel}/epdms_vs_sim_samples.png)" in page
    assert (run / "epdms_vs_sim_samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert doc["command"] in page and doc["command"] in (run / "summary.md").read_text()
    assert doc["machine"]["cores"] == 2


def test_the_full_run_fits_the_budget():
    """The full mini-size run: the command's defaults, in one invocation of at most two hours on two cores."""
    doc = json.loads((RUN / "experiment.json").read_text())
    assert len(doc["invocations"]) == 1 and doc["invocations"][0]["seconds"] <= 2 * 3600
    assert doc["config"] == json.loads(json.dumps(dataclasses.asdict(
        ExperimentConfig(**{k: doc["config"][k] for k in ("env_kwargs", "eval_env_kwargs")}))))
