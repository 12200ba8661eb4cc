"""docs/experiments.md shows what `simscale experiment simscale` wrote: the files under docs/experiments/ are the
command's own (experiment.json, results.csv, table.md, table.csv, summary.md, the plot), the page embeds table.md
as it is, and the table is recomputed exactly from the per-cell rows of results.csv."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from evaluation.experiment import ExperimentConfig, results_csv, table_csv, table_markdown, table_rows

DOCS = Path(__file__).resolve().parents[2] / "docs"
RUN = DOCS / "experiments"
INTS = ("rounds", "seed", "sim_samples", "real_samples")


def _rows(cfg: ExperimentConfig) -> list[dict]:
    with open(RUN / "results.csv", newline="") as fh:
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


def test_the_docs_show_the_tables_and_plot_the_command_wrote():
    doc = json.loads((RUN / "experiment.json").read_text())
    assert doc["format"] == "simscale-experiment/1" and doc["complete"] and not doc["failed"]
    cfg = ExperimentConfig(**doc["config"])
    rows = _rows(cfg)
    assert [r["cell"] for r in rows] == [c.name for c in cfg.cells()] == doc["cells"]
    assert results_csv(cfg, rows) == (RUN / "results.csv").read_text()  # the rows round-trip exactly
    trows = table_rows(cfg, rows)
    table = table_markdown(cfg, trows)
    assert table == (RUN / "table.md").read_text() and table_csv(cfg, trows) == (RUN / "table.csv").read_text()
    page = (DOCS / "experiments.md").read_text()
    assert table in page and "](experiments/epdms_vs_sim_samples.png)" in page
    assert (RUN / "epdms_vs_sim_samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert doc["command"] in page and doc["command"] in (RUN / "summary.md").read_text()
    # the run fits the budget: two hours on two cores, over every invocation
    assert doc["machine"]["cores"] == 2 and sum(i["seconds"] for i in doc["invocations"]) <= 2 * 3600
