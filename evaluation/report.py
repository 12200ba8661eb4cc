"""What a run directory holds once a run is finished (`write_run`), all written atomically:

- ``results.parquet``: the per-item rows (pyarrow), sorted by item index;
- ``navsim.csv``: the same rows in NAVSIM's CSV layout (navsim-agents-and-planners.md §2: an unnamed index, ``token``,
  ``valid``, the sub-scores, ``score``; NaN as an empty field, booleans as True/False). closed_loop and one_stage end
  with NAVSIM's one-stage ``average_all_frames`` row; two_stage has NAVSIM's ``<sub-score>_stage_one`` and
  ``_stage_two`` columns and its three summary rows (``extended_pdm_score_stage_one``, ``_stage_two``,
  ``_combined``). A two_stage row here is one token (its frame t and the weighted stage-2 frames at t + 4 s) where
  NAVSIM writes one row per frame;
- ``aggregate.json`` (`summarize`): EPDMS and every sub-score as mean and 95 % percentile-bootstrap interval (1000
  resamples of the valid rows, seed 0), the mode's NAVSIM summary (`evaluation.modes.aggregate`), collision and
  off-road rates (closed_loop), the failures, run time, the exact command, the config and the versions;
- ``config.json`` (the runner's, written first), ``report.md`` and ``report.html`` (static, with PNG plots under
  ``plots/``: sub-score bars with their intervals, the per-scenario-type breakdown, the EPDMS histogram) and MP4
  videos of the best and worst episodes under ``videos/`` (cameras and bird's-eye view, `env.render()`).
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import math
import os
import platform
from pathlib import Path

import numpy as np

from .runner import SCORE_COLUMNS, SUBSCORES, config_dict, to_json

log = logging.getLogger(__name__)

BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
SHORT = {"no_at_fault_collisions": "NC", "drivable_area_compliance": "DAC", "driving_direction_compliance": "DDC",
         "traffic_light_compliance": "TLC", "ego_progress": "EP", "time_to_collision_within_bound": "TTC",
         "lane_keeping": "LK", "history_comfort": "HC", "two_frame_extended_comfort": "EC", "score": "EPDMS"}
PLOTS = {"subscores": "plots/subscores.png", "scenario_types": "plots/scenario_types.png",
         "histogram": "plots/epdms_histogram.png"}
VIDEO_STEPS = 8  # one_stage / two_stage videos: the policy driving 4 s (8 decisions) from the token's logged start


# ------------------------------------------------------------------------------------------------ numbers
def _f(v) -> float:
    if v is None or isinstance(v, str):
        return float("nan")
    return float(v)


def bootstrap(values, *, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED,
              confidence: float = CONFIDENCE) -> dict:
    """Mean of the finite `values` and its percentile-bootstrap interval: {"mean", "ci95": [lo, hi], "n"} (NaN
    where there is nothing; the interval of one value is that value)."""
    a = np.asarray([_f(v) for v in values], dtype=np.float64)
    a = a[np.isfinite(a)]
    n = int(a.size)
    if n == 0:
        return {"mean": float("nan"), "ci95": [float("nan"), float("nan")], "n": 0}
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, n, size=(samples, n))].mean(axis=1)
    q = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [q, 1.0 - q])
    return {"mean": float(a.mean()), "ci95": [float(lo), float(hi)], "n": n}


def _versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("numpy", "torch", "gymnasium", "simscale", "pyarrow", "matplotlib", "ray"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def metric_values(rows, cfg) -> dict:
    """name -> one value per valid row: EPDMS, every score column, and the mode's extras (closed_loop collision and
    off-road rates and return; two_stage the stage-one and stage-two scores, each the mean of its t and t - 0.5 s
    (t + 4 s and t + 3.5 s) groups as NAVSIM's stage summaries)."""
    ok = [r for r in rows if r.get("valid")]
    out = {"epdms": [_f(r.get("score")) for r in ok]}
    out.update({c: [_f(r.get(c)) for r in ok] for c in SCORE_COLUMNS})
    if cfg.mode == "closed_loop":
        out["collision_rate"] = [_f(r.get("at_fault_collision")) for r in ok]
        out["offroad_rate"] = [_f(r.get("off_road")) for r in ok]
        out["return"] = [_f(r.get("return")) for r in ok]
    elif cfg.mode == "two_stage":
        out["stage_one"] = [float(np.nanmean([_f(r.get("stage1_score")), _f(r.get("stage1_prev_score"))]))
                            if not all(math.isnan(_f(r.get(k))) for k in ("stage1_score", "stage1_prev_score"))
                            else float("nan") for r in ok]
        out["stage_two"] = [float(np.nanmean([_f(r.get("stage2_score")), _f(r.get("stage2_prev_score"))]))
                            if not all(math.isnan(_f(r.get(k))) for k in ("stage2_score", "stage2_prev_score"))
                            else float("nan") for r in ok]
    return out


def summarize(rows, cfg, *, api=None, seconds: float | None = None, command: str = "", workers: int = 1,
              executor: str = "inline", resumed: int = 0) -> dict:
    """aggregate.json: the headline numbers with intervals, NAVSIM's summary rows (`api.aggregate`), failures, run
    time, command, config, seed and versions."""
    metrics = {k: bootstrap(v) for k, v in metric_values(rows, cfg).items()}
    failures = [{"index": r["index"], "token": r["token"], "error_type": r.get("error_type"), "error": r.get("error")}
                for r in rows if r.get("error") is not None]
    navsim = None
    if api is not None and hasattr(api, "aggregate"):
        try:
            navsim = json.loads(to_json(api.aggregate(rows, cfg)))
        except Exception as exc:  # noqa: BLE001 (e.g. every row failed): the report says so
            log.warning("the mode's aggregate failed: %s", exc)
            navsim = {"error": f"{type(exc).__name__}: {exc}"}
    n_valid = sum(bool(r.get("valid")) for r in rows)
    return {"policy": cfg.policy, "split": str(cfg.split), "mode": cfg.mode, "seed": cfg.seed,
            "epdms": metrics["epdms"], "metrics": metrics, "navsim": navsim,
            "rows": len(rows), "valid_rows": n_valid, "failed_rows": len(failures), "failures": failures,
            "bootstrap": {"samples": BOOTSTRAP_SAMPLES, "seed": BOOTSTRAP_SEED, "confidence": CONFIDENCE,
                          "method": "percentile, over the valid rows"},
            "run_time_s": None if seconds is None else round(float(seconds), 3), "workers": workers,
            "executor": executor, "resumed_rows": resumed, "command": command, "config": config_dict(cfg),
            "versions": _versions()}


# ------------------------------------------------------------------------------------------------ tables
def _columns(rows) -> list[str]:
    head = ["index", "token", "log_name", "scenario_type", "valid", *SCORE_COLUMNS]
    tail = ["error_type", "error"]
    seen = dict.fromkeys(head)
    for r in rows:
        for k in r:
            if k not in seen and k not in tail:
                seen[k] = None
    return [*seen, *tail]


def results_table(rows):
    """The rows as a pyarrow Table (columns: index, token, log_name, scenario_type, valid, the score columns, the
    mode's extras, error_type, error; a value a row lacks is null)."""
    import pyarrow as pa

    cols = _columns(rows)
    data = {}
    for c in cols:
        vals = [r.get(c) for r in rows]
        if c in SCORE_COLUMNS:
            data[c] = pa.array([_f(v) for v in vals], pa.float64())
        elif c in ("token", "log_name", "scenario_type", "error_type", "error"):
            data[c] = pa.array([None if v is None else str(v) for v in vals], pa.string())
        else:
            try:
                data[c] = pa.array(vals)
            except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed kinds: keep them readable as JSON text
                data[c] = pa.array([None if v is None else to_json(v) for v in vals], pa.string())
    return pa.table(data)


def _csv_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    s = str(v)
    return f'"{s}"' if any(ch in s for ch in ',"\n') else s


def navsim_csv(rows, cfg, summary: dict | None = None) -> str:
    """The rows in NAVSIM's CSV layout (module docstring), as pandas' `to_csv` writes it."""
    nav = (summary or {}).get("navsim") or {}
    if cfg.mode == "two_stage":
        cols = ["token", "valid", *(f"{c}_stage_one" for c in SUBSCORES), *(f"{c}_stage_two" for c in SUBSCORES),
                "score"]
        extra = [nav[k] for k in ("extended_pdm_score_stage_one", "extended_pdm_score_stage_two",
                                  "extended_pdm_score_combined") if isinstance(nav.get(k), dict)]
    else:
        cols = ["token", "valid", *SCORE_COLUMNS]
        avg = nav.get("average_all_frames")
        if not isinstance(avg, dict):
            ok = [r for r in rows if r.get("valid")]
            avg = {"token": "average_all_frames", "valid": all(bool(r.get("valid")) for r in rows)}
            for c in SCORE_COLUMNS:
                a = np.asarray([_f(r.get(c)) for r in ok])
                avg[c] = float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")
        extra = [avg]
    lines = ["," + ",".join(cols)]
    for k, r in enumerate([*rows, *extra]):
        vals = []
        for c in cols:
            v = r.get(c)
            if c != "token" and c != "valid" and v is None:
                v = float("nan")
            vals.append(_csv_value(bool(v) if c == "valid" else v))
        lines.append(f"{k}," + ",".join(vals))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ figures
def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)  # headless: the Agg canvas, no pyplot state
    return fig


def fig_subscores(summary: dict):
    """Horizontal bars: EPDMS and each sub-score (mean over the valid rows) with its 95 % interval; the metrics
    without a value (EC in closed_loop) are listed as n/a."""
    m = summary["metrics"]
    names = ["epdms", *SUBSCORES]
    if summary["mode"] == "two_stage":
        names[1:1] = ["stage_one", "stage_two"]
    if summary["mode"] == "closed_loop":
        names += ["collision_rate", "offroad_rate"]
    labels = {"epdms": "EPDMS", "stage_one": "stage one", "stage_two": "stage two", "collision_rate": "collisions",
              "offroad_rate": "off-road", **SHORT}
    fig = _figure(7.0, 0.45 * len(names) + 1.2)
    ax = fig.add_subplot()
    y = np.arange(len(names))[::-1]
    means = np.array([m[n]["mean"] for n in names], dtype=np.float64)
    lo = np.array([m[n]["ci95"][0] for n in names], dtype=np.float64)
    hi = np.array([m[n]["ci95"][1] for n in names], dtype=np.float64)
    ok = np.isfinite(means)
    colors = ["#1f4e79" if n == "epdms" else ("#b03a2e" if n.endswith("rate") else "#5b9bd5") for n in names]
    ax.barh(y[ok], means[ok], color=[c for c, k in zip(colors, ok) if k])
    ax.errorbar(means[ok], y[ok], xerr=np.stack([means[ok] - lo[ok], hi[ok] - means[ok]]), fmt="none",
                ecolor="black", capsize=3, lw=1)
    for yy, v, k in zip(y, means, ok):
        ax.text(1.01 if k else 0.01, yy, f"{v:.3f}" if k else "n/a", va="center", fontsize=8,
                transform=ax.get_yaxis_transform() if k else ax.get_yaxis_transform())
    ax.set_yticks(y, [labels.get(n, n) for n in names])
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"mean over {summary['valid_rows']} valid rows, 95 % bootstrap interval"
                  + ("; sub-scores of the stage-1 frame t" if summary["mode"] == "two_stage" else ""))
    ax.set_title(f"{summary['policy']} on {Path(summary['split']).stem} ({summary['mode']})")
    fig.tight_layout()
    return fig


def scenario_type_table(rows) -> list[dict]:
    """Per scenario type of the valid rows: count, mean EPDMS and its interval (sorted by type)."""
    groups: dict = {}
    for r in rows:
        if r.get("valid"):
            groups.setdefault(str(r.get("scenario_type") or "unknown"), []).append(_f(r.get("score")))
    return [{"scenario_type": k, **bootstrap(v)} for k, v in sorted(groups.items())]


def fig_by_scenario_type(rows):
    """Mean EPDMS per scenario type (bars, with the rows as dots and the 95 % interval)."""
    table = scenario_type_table(rows)
    fig = _figure(7.0, 0.45 * max(1, len(table)) + 1.2)
    ax = fig.add_subplot()
    if not table:
        ax.text(0.5, 0.5, "no valid rows", ha="center", va="center", transform=ax.transAxes)
        return fig
    y = np.arange(len(table))[::-1]
    means = np.array([t["mean"] for t in table])
    ax.barh(y, means, color="#5b9bd5")
    lo = np.array([t["ci95"][0] for t in table])
    hi = np.array([t["ci95"][1] for t in table])
    ax.errorbar(means, y, xerr=np.stack([means - lo, hi - means]), fmt="none", ecolor="black", capsize=3, lw=1)
    for yy, t in zip(y, table):
        vals = [_f(r.get("score")) for r in rows if r.get("valid") and str(r.get("scenario_type") or "unknown")
                == t["scenario_type"]]
        ax.scatter(vals, np.full(len(vals), yy), s=10, color="black", zorder=3)
    ax.set_yticks(y, [f"{t['scenario_type']} (n={t['n']})" for t in table], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("EPDMS")
    ax.set_title("EPDMS by scenario type")
    fig.tight_layout()
    return fig


def fig_score_hist(rows):
    """Histogram of the valid rows' EPDMS over [0, 1] (20 bins)."""
    vals = np.array([_f(r.get("score")) for r in rows if r.get("valid")], dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    fig = _figure(6.0, 3.2)
    ax = fig.add_subplot()
    ax.hist(vals, bins=np.linspace(0.0, 1.0, 21), color="#1f4e79", edgecolor="white")
    if vals.size:
        ax.axvline(vals.mean(), color="#b03a2e", lw=1.5, label=f"mean {vals.mean():.3f}")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("EPDMS")
    ax.set_ylabel("rows")
    ax.set_title(f"EPDMS distribution ({vals.size} valid rows)")
    fig.tight_layout()
    return fig


def save_figure(fig, path: Path) -> Path:
    from simscale_env.data.atomic import atomic_write

    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", metadata={"Software": None})
    return Path(path)


# ------------------------------------------------------------------------------------------------ videos
def _recorder(env):
    import gymnasium as gym

    class Recorder(gym.Wrapper):
        """Keeps `env.render()` after every reset and step (the env must have render_mode="rgb_array")."""

        def __init__(self, e):
            super().__init__(e)
            self.frames = []

        def reset(self, **kw):
            self.frames = []
            out = self.env.reset(**kw)
            self.frames.append(self.env.render())
            return out

        def step(self, action):
            out = self.env.step(action)
            self.frames.append(self.env.render())
            return out

    return Recorder(env)


def _pick_episodes(rows) -> list[tuple[str, dict]]:
    ok = [r for r in rows if r.get("valid") and math.isfinite(_f(r.get("score")))]
    if not ok:
        return []
    best = max(ok, key=lambda r: (_f(r["score"]), -r["index"]))
    worst = min(ok, key=lambda r: (_f(r["score"]), r["index"]))
    return [("best", best)] if best is worst else [("best", best), ("worst", worst)]


def episode_videos(run_dir: Path, rows, cfg, api) -> tuple[list[dict], str]:
    """MP4 videos (cameras + bird's-eye view) of the best and worst valid rows: closed_loop re-runs the item itself
    with render_mode="rgb_array" (its row is checked against the recorded one); the other modes show the policy
    driving 4 s from the token's logged start (the stage-1 start; NAVSIM scores the single plan made there).
    Returns ([{"label", "token", "index", "score", "path", "note"}], a note for the report)."""
    from simscale_env.data.atomic import hidden_temp
    from simscale_env.envs import save_video

    from .runner import _load_policy, to_json

    picks = _pick_episodes(rows)
    if not picks:
        return [], "no valid row to show"
    rcfg = dataclasses.replace(cfg, env_kwargs={**cfg.env_kwargs, "render_mode": "rgb_array"})
    policy = _load_policy(api, rcfg)
    env = _recorder(api.make_env(rcfg, policy))
    out = []
    try:
        for label, row in picks:
            note = ""
            if cfg.mode == "closed_loop":
                again = api.run_item(env, policy, cfg, row["token"], row["index"])
                same = all(to_json(again.get(k)) == to_json(row.get(k)) for k in again)
                if not same:
                    note = "the re-run with rendering scored differently from the recorded row"
                    log.warning("%s episode %s: %s", label, row["token"], note)
            else:
                seed = api.item_seed(cfg.seed, row["index"]) if hasattr(api, "item_seed") else cfg.seed + row["index"]
                obs, info = env.reset(seed=seed, options={"scenario_token": row["token"], "perturbation": None})
                getattr(policy, "reset", lambda i: None)(info)
                for _ in range(VIDEO_STEPS):
                    obs, _, term, trunc, info = env.step(policy.act(obs, info))
                    if term or trunc:
                        break
                note = f"the policy driving {VIDEO_STEPS / 2:g} s from the token's logged start (re-planning at 2 Hz)"
            frames = [f for f in env.frames if f is not None]
            if not frames:
                out.append({"label": label, "token": row["token"], "index": row["index"], "score": row["score"],
                            "path": None, "note": "no frames"})
                continue
            dest = Path(run_dir) / "videos" / f"{label}_{row['token']}.mp4"
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = hidden_temp(dest, ".mp4")
            try:
                written = save_video(frames, tmp, fps=2)
                dest = dest.with_suffix(written.suffix)
                os.replace(written, dest)
            finally:
                for p in (tmp, tmp.with_suffix(".gif")):
                    if p.exists():
                        p.unlink()
            out.append({"label": label, "token": row["token"], "index": row["index"], "score": row["score"],
                        "path": str(dest.relative_to(run_dir)), "note": note, "frames": len(frames)})
    finally:
        env.close()
    return out, ""


# ------------------------------------------------------------------------------------------------ reports
def _ci(m: dict, pct: bool = False) -> str:
    if not m or m.get("n", 0) == 0 or not math.isfinite(m["mean"]):
        return "n/a"
    if pct:
        return f"{100 * m['mean']:.1f} % [{100 * m['ci95'][0]:.1f}, {100 * m['ci95'][1]:.1f}]"
    return f"{m['mean']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"


def _headline(summary: dict) -> list[tuple[str, str]]:
    m = summary["metrics"]
    out = [("EPDMS", _ci(m["epdms"]))]
    if summary["mode"] == "two_stage":
        out += [("stage one", _ci(m["stage_one"])), ("stage two", _ci(m["stage_two"]))]
    if summary["mode"] == "closed_loop":
        out += [("at-fault collisions", _ci(m["collision_rate"], True)),
                ("off-road", _ci(m["offroad_rate"], True)), ("return", _ci(m["return"]))]
    out += [("rows (valid / failed)", f"{summary['rows']} ({summary['valid_rows']} / {summary['failed_rows']})"),
            ("run time", f"{summary['run_time_s']} s, {summary['executor']} x {summary['workers']}")]
    return out


def report_markdown(summary: dict, rows, files: dict, videos: list, video_note: str) -> str:
    m = summary["metrics"]
    lines = [f"# {summary['policy']} on {summary['split']} ({summary['mode']})", "",
             "| | value (mean [95 % interval]) |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in _headline(summary)]
    lines += ["", "## Sub-scores", "", "| metric | column | mean [95 % interval] | n |", "|---|---|---|---|"]
    lines += [f"| {SHORT[c]} | {c} | {_ci(m[c])} | {m[c]['n']} |" for c in SCORE_COLUMNS]
    nav = summary.get("navsim") or {}
    if summary["mode"] == "two_stage" and "combined" in nav:
        lines += ["", f"NAVSIM's summary rows: stage one {nav['stage_one']:.4f}, stage two {nav['stage_two']:.4f}, "
                      f"combined (EPDMS) {nav['combined']:.4f}."]
    lines += ["", "## Plots", ""]
    lines += [f"![{k}]({files[k]})" for k in PLOTS if k in files]
    lines += ["", "## By scenario type", "", "| scenario type | n | EPDMS [95 % interval] |", "|---|---|---|"]
    lines += [f"| {t['scenario_type']} | {t['n']} | {_ci(t)} |" for t in scenario_type_table(rows)]
    lines += ["", "## Episodes", ""]
    if videos:
        for v in videos:
            link = f"[{v['path']}]({v['path']})" if v.get("path") else "no video"
            lines.append(f"- {v['label']}: `{v['token']}` (EPDMS {v['score']:.3f}): {link}"
                         + (f" ({v['note']})" if v.get("note") else ""))
    else:
        lines.append(f"No videos: {video_note}.")
    if summary["failures"]:
        lines += ["", f"## Failed items ({len(summary['failures'])})", ""]
        lines += [f"- {f['index']} `{f['token']}`: {f['error_type']}: {f['error']}" for f in summary["failures"]]
    lines += ["", "## Run", "", f"- command: `{summary['command']}`", f"- seed: {summary['seed']}",
              f"- versions: {', '.join(f'{k} {v}' for k, v in summary['versions'].items() if v)}",
              f"- intervals: {summary['bootstrap']['samples']} bootstrap resamples, seed "
              f"{summary['bootstrap']['seed']}",
              "- files: " + ", ".join(f"[{Path(p).name}]({p})" for k, p in files.items()
                                      if k in ("results", "navsim_csv", "aggregate", "config", "html"))]
    return "\n".join(lines) + "\n"


def report_html(summary: dict, rows, files: dict, videos: list, video_note: str) -> str:
    e = html.escape
    m = summary["metrics"]
    title = f"{summary['policy']} on {summary['split']} ({summary['mode']})"
    p = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>",
         "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}table{border-collapse:"
         "collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}img,video{max-width:100%}"
         "code{background:#f4f4f4}</style></head><body>", f"<h1>{e(title)}</h1>", "<table>"]
    p += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _headline(summary)]
    p += ["</table>", "<h2>Sub-scores</h2>", "<table><tr><th>metric</th><th>column</th><th>mean [95 % interval]"
          "</th><th>n</th></tr>"]
    p += [f"<tr><td>{SHORT[c]}</td><td>{c}</td><td>{e(_ci(m[c]))}</td><td>{m[c]['n']}</td></tr>"
          for c in SCORE_COLUMNS]
    p += ["</table>", "<h2>Plots</h2>"]
    p += [f"<p><img src='{e(files[k])}' alt='{e(k)}'></p>" for k in PLOTS if k in files]
    p += ["<h2>Episodes</h2>"]
    if videos:
        for v in videos:
            p.append(f"<h3>{e(v['label'])}: <code>{e(v['token'])}</code> (EPDMS {v['score']:.3f})</h3>")
            if v.get("path"):
                p.append(f"<video controls src='{e(v['path'])}'></video>")
            if v.get("note"):
                p.append(f"<p>{e(v['note'])}</p>")
    else:
        p.append(f"<p>No videos: {e(video_note)}.</p>")
    if summary["failures"]:
        p += [f"<h2>Failed items ({len(summary['failures'])})</h2><ul>"]
        p += [f"<li>{f['index']} <code>{e(f['token'])}</code>: {e(str(f['error_type']))}: {e(str(f['error']))}</li>"
              for f in summary["failures"]]
        p.append("</ul>")
    p += ["<h2>Run</h2><ul>", f"<li>command: <code>{e(summary['command'])}</code></li>",
          f"<li>seed: {summary['seed']}</li>",
          f"<li>versions: {e(', '.join(f'{k} {v}' for k, v in summary['versions'].items() if v))}</li>"]
    p += [f"<li><a href='{e(files[k])}'>{e(Path(files[k]).name)}</a></li>"
          for k in ("results", "navsim_csv", "aggregate", "config", "markdown") if k in files]
    p += ["</ul></body></html>"]
    return "\n".join(p) + "\n"


def _strict(obj):
    """NaN -> null, for strict JSON readers (browsers, jq)."""
    if isinstance(obj, float):
        return None if not math.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_strict(v) for v in obj]
    return obj


def write_run(run_dir, rows, cfg, summary: dict, *, api=None, videos: bool = True) -> dict:
    """Write every final file of a run directory (module docstring); returns name -> path relative to it."""
    import pyarrow.parquet as pq

    from simscale_env.data.atomic import atomic_write, atomic_write_text

    run_dir = Path(run_dir)
    files = {"config": "config.json", "results": "results.parquet", "navsim_csv": "navsim.csv",
             "aggregate": "aggregate.json", "markdown": "report.md", "html": "report.html"}
    if not (run_dir / files["config"]).exists():  # the runner writes it first; here for a standalone call
        atomic_write_text(run_dir / files["config"], json.dumps({"config": config_dict(cfg)}, indent=1))
    with atomic_write(run_dir / files["results"], "wb") as fh:
        pq.write_table(results_table(rows), fh)
    atomic_write_text(run_dir / files["navsim_csv"], navsim_csv(rows, cfg, summary))
    for key, make in (("subscores", lambda: fig_subscores(summary)), ("scenario_types", lambda: fig_by_scenario_type(
            rows)), ("histogram", lambda: fig_score_hist(rows))):
        save_figure(make(), run_dir / PLOTS[key])
        files[key] = PLOTS[key]
    vids, note = [], "not asked for (videos=False)"
    if videos and api is not None:
        try:
            vids, note = episode_videos(run_dir, rows, cfg, api)
        except Exception as exc:  # noqa: BLE001 (the run's numbers stand without the videos)
            log.warning("videos failed: %s: %s", type(exc).__name__, exc)
            note = f"rendering failed ({type(exc).__name__}: {' '.join(str(exc).split())})"
    summary = {**summary, "videos": vids, "video_note": note}
    atomic_write_text(run_dir / files["aggregate"], json.dumps(_strict(json.loads(to_json(summary))), indent=1,
                                                               allow_nan=False))
    atomic_write_text(run_dir / files["markdown"], report_markdown(summary, rows, files, vids, note))
    atomic_write_text(run_dir / files["html"], report_html(summary, rows, files, vids, note))
    for v in vids:
        if v.get("path"):
            files[f"video_{v['label']}"] = v["path"]
    make_readable(run_dir / rel for rel in files.values())
    return files


def make_readable(paths) -> None:
    """The atomic writer's temporaries are private (0600); results are for reading: 0666 less the umask."""
    m = os.umask(0)
    os.umask(m)
    for p in paths:
        os.chmod(p, 0o666 & ~m)
