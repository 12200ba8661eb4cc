"""`simscale compare RUN_DIR... [--out DIR]`: evaluation runs side by side.

Each run directory's aggregate.json (`evaluation.report.summarize`) gives one row: the run (its folder name), policy,
split, mode, seed, rows, failed rows, EPDMS and every sub-score as mean and 95 % bootstrap interval (plus the stage
scores of two_stage runs and the rates of closed_loop runs where present). Written into `out`: compare.md (the
Markdown table), compare.csv (one column per mean, lower and upper bound) and compare.png (grouped bars with the
intervals), atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from simscale_env.errors import CorruptFileError, MissingFileError

from .report import SHORT, _ci, _figure, _strict, make_readable, save_figure
from .runner import SUBSCORES

METRICS = ("epdms", *SUBSCORES, "stage_one", "stage_two", "collision_rate", "offroad_rate")
LABELS = {"epdms": "EPDMS", "stage_one": "stage one", "stage_two": "stage two", "collision_rate": "collisions",
          "offroad_rate": "off-road", **SHORT}


def load_run(run_dir) -> dict:
    """A run directory's aggregate.json (the summary of a finished `simscale evaluate`)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MissingFileError(run_dir, "run directory not found")
    path = run_dir / "aggregate.json"
    if not path.exists():
        raise MissingFileError(path, "no aggregate.json: not a finished `simscale evaluate --out` run directory")
    try:
        s = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(path, f"not valid JSON ({exc})") from None
    if not isinstance(s, dict) or not isinstance(s.get("metrics"), dict) or "epdms" not in s["metrics"]:
        raise CorruptFileError(path, "field 'metrics.epdms' missing: not an evaluation summary")
    return s


def _metric(s: dict, name: str) -> dict | None:
    m = s["metrics"].get(name)
    if not isinstance(m, dict) or m.get("mean") is None:
        return None
    ci = m.get("ci95") or [None, None]
    return {"mean": float(m["mean"]), "ci95": [float("nan") if v is None else float(v) for v in ci],
            "n": int(m.get("n") or 0)}


def compare_table(summaries: dict) -> tuple[list[dict], list[str]]:
    """(one row per run: name, policy, split, mode, seed, rows, failed and each metric's mean/lo/hi; the metrics
    present in any run, in METRICS order)."""
    present = [k for k in METRICS if any(_metric(s, k) is not None and math.isfinite(_metric(s, k)["mean"])
                                         for s in summaries.values())]
    rows = []
    for name, s in summaries.items():
        row = {"run": name, "policy": s.get("policy"), "split": s.get("split"), "mode": s.get("mode"),
               "seed": s.get("seed"), "rows": s.get("rows"), "failed": s.get("failed_rows")}
        for k in present:
            m = _metric(s, k)
            row[k], row[f"{k}_lo"], row[f"{k}_hi"] = (m["mean"], *m["ci95"]) if m else (None, None, None)
        rows.append(row)
    return rows, present


def compare_markdown(rows: list[dict], metrics: list[str]) -> str:
    head = ["run", "policy", "split", "mode", "seed", "rows", "failed", *(LABELS.get(k, k) for k in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = [str(r[k]) for k in ("run", "policy", "split", "mode", "seed", "rows", "failed")]
        for k in metrics:
            m = None if r[k] is None else {"mean": r[k], "ci95": [r[f"{k}_lo"], r[f"{k}_hi"]], "n": 1}
            vals.append(_ci(m, k.endswith("rate")) if m else "n/a")
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def compare_csv(rows: list[dict], metrics: list[str]) -> str:
    cols = ["run", "policy", "split", "mode", "seed", "rows", "failed"]
    for k in metrics:
        cols += [k, f"{k}_lo", f"{k}_hi"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow(["" if r.get(c) is None or (isinstance(r.get(c), float) and math.isnan(r[c])) else r[c]
                    for c in cols])
    return buf.getvalue()


def fig_compare(rows: list[dict], metrics: list[str]):
    """Grouped bars: one group per metric, one bar per run, whiskers at the 95 % interval."""
    n = max(1, len(rows))
    fig = _figure(max(7.0, 0.55 * len(metrics) * n + 2.0), 4.0)
    ax = fig.add_subplot()
    x = np.arange(len(metrics), dtype=np.float64)
    width = 0.8 / n
    for j, r in enumerate(rows):
        mean = np.array([np.nan if r[k] is None else r[k] for k in metrics], dtype=np.float64)
        lo = np.array([np.nan if r[f"{k}_lo"] is None else r[f"{k}_lo"] for k in metrics], dtype=np.float64)
        hi = np.array([np.nan if r[f"{k}_hi"] is None else r[f"{k}_hi"] for k in metrics], dtype=np.float64)
        ok = np.isfinite(mean)
        xs = x[ok] - 0.4 + width * (j + 0.5)
        ax.bar(xs, mean[ok], width, label=f"{r['run']} ({r['policy']}, {r['mode']})")
        err = np.stack([np.nan_to_num(mean[ok] - lo[ok]), np.nan_to_num(hi[ok] - mean[ok])])
        ax.errorbar(xs, mean[ok], yerr=err, fmt="none", ecolor="black", capsize=2, lw=0.8)
    ax.set_xticks(x, [LABELS.get(k, k) for k in metrics], rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean, 95 % bootstrap interval")
    ax.set_title("evaluation runs side by side")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def _names(run_dirs) -> list[str]:
    """Distinct names for the runs: the folder names, with enough parent folders to tell them apart."""
    paths = [Path(p).resolve() for p in run_dirs]
    for depth in range(1, 8):
        names = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


def compare_runs(run_dirs, out=None) -> dict:
    """Compare run directories; with `out` write compare.md, compare.csv and compare.png there. Returns {"rows",
    "metrics", "markdown", "csv", "files"}."""
    from simscale_env.data.atomic import atomic_write_text

    if not run_dirs:
        raise MissingFileError(None, "no run directory to compare")
    summaries = dict(zip(_names(run_dirs), (load_run(p) for p in run_dirs)))
    rows, metrics = compare_table(summaries)
    md, text = compare_markdown(rows, metrics), compare_csv(rows, metrics)
    files = {}
    if out is not None:
        out = Path(out)
        atomic_write_text(out / "compare.md", md)
        atomic_write_text(out / "compare.csv", text)
        save_figure(fig_compare(rows, metrics), out / "compare.png")
        atomic_write_text(out / "compare.json", json.dumps(_strict({"rows": rows, "metrics": metrics}), indent=1))
        files = {k: str(out / f"compare.{k}") for k in ("md", "csv", "png", "json")}
        make_readable(files.values())
    return {"rows": rows, "metrics": metrics, "markdown": md, "csv": text, "files": files}
