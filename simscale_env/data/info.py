"""`simscale data info PATH`: a readable summary of a nuPlan/NAVSIM dataset (logs, durations, scenarios by type,
agents by category, map layers)."""

from __future__ import annotations

import collections
import os
from pathlib import Path

from ..errors import MissingFileError
from .nuplan_db import LogDB
from .scenario import find_log_files, scenario_refs_in_log


def _maps_root_for(path: Path) -> Path | None:
    for cand in (path / "maps", path.parent / "maps", path.parent.parent / "maps"):
        if (cand / "nuplan-maps-v1.0.json").exists():
            return cand
    env = os.environ.get("NUPLAN_MAPS_ROOT")
    return Path(env) if env else None


def summarize(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise MissingFileError(path, "dataset path not found")
    root = path if path.is_dir() else path.parent
    files = find_log_files(path, "mini")
    logs = []
    scen = collections.Counter()
    cats = collections.Counter()
    locations = collections.Counter()
    total_s = 0.0
    for f in files:
        with LogDB(f) as db:
            refs = scenario_refs_in_log(db)
            scen.update(r.scenario_type for r in refs)
            cats.update(db.category_counts())
            locations[db.map_location] += 1
            total_s += db.duration_s
            logs.append({"name": db.name, "location": db.map_location, "duration_s": round(db.duration_s, 2),
                         "lidar_pcs": len(db.lidar_pc_timestamps), "scenes": len(db.scenes),
                         "scenarios": len(refs)})
    out = {"path": str(path), "logs": logs, "num_logs": len(logs), "total_duration_s": round(total_s, 1),
           "scenarios_by_type": dict(sorted(scen.items())), "tracks_by_category": dict(sorted(cats.items())),
           "logs_by_location": dict(sorted(locations.items()))}
    maps_root = _maps_root_for(root)
    if maps_root is not None:
        out["maps"] = map_layers(maps_root, sorted(locations))
    splits = root / "splits"
    if splits.is_dir():
        from .openscene import load_split

        out["splits"] = {p.stem: len(load_split(p).tokens or ()) for p in sorted(splits.glob("*.yaml"))}
    return out


def map_layers(maps_root: Path, locations) -> dict:
    import pyogrio

    from ..map.gpkg import list_layers, read_maps_json, resolve_map_file

    index = read_maps_json(maps_root)
    out = {}
    for loc in locations or sorted(index):
        p = resolve_map_file(maps_root, loc)
        layers = {}
        for name in list_layers(p):
            try:
                layers[name] = int(pyogrio.read_info(p, layer=name)["features"])
            except Exception:
                layers[name] = -1
        out[loc] = {"version": index[loc]["version"], "file": str(p), "layers": layers}
    return out


def format_summary(s: dict) -> str:
    lines = [f"dataset: {s['path']}",
             f"logs: {s['num_logs']}  total {s['total_duration_s']:.1f} s  by location {s['logs_by_location']}"]
    w = max([len(l["name"]) for l in s["logs"]] + [3])
    lines.append(f"  {'log':<{w}}  {'location':<27} {'dur_s':>6} {'lidar':>6} {'scenes':>6} {'scen.':>5}")
    for l in s["logs"]:
        lines.append(f"  {l['name']:<{w}}  {l['location']:<27} {l['duration_s']:>6.1f} {l['lidar_pcs']:>6} "
                     f"{l['scenes']:>6} {l['scenarios']:>5}")
    lines.append(f"scenarios by type ({sum(s['scenarios_by_type'].values())}):")
    for t, n in s["scenarios_by_type"].items():
        lines.append(f"  {t:<58} {n:>4}")
    lines.append("tracks by category:")
    for t, n in s["tracks_by_category"].items():
        lines.append(f"  {t:<20} {n:>6}")
    if "splits" in s:
        lines.append("splits: " + ", ".join(f"{k} {v} scenes" for k, v in s["splits"].items()))
    for loc, m in s.get("maps", {}).items():
        lines.append(f"map {loc} (version {m['version']}):")
        lines.append("  " + ", ".join(f"{k} {v}" for k, v in m["layers"].items()))
    return "\n".join(lines)
