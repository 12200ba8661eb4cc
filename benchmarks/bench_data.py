"""`simscale bench data`: map load time for one location and scenario extraction time from an open log.

Targets (issue 2): map load for one location < 2 s, scenario extraction from an open log < 50 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def main(argv) -> int:
    ap = argparse.ArgumentParser(prog="simscale bench data")
    ap.add_argument("--data", type=Path, default=None, help="mini dataset root (default: the cache, built if missing)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    from simscale_env.data import LogDB, ScenarioBuilder, extract_scenario
    from simscale_env.data.paths import ensure_mini
    from simscale_env.map import MapAPI
    from simscale_env.map.gpkg import resolve_map_file

    root = ensure_mini(args.data)
    builder = ScenarioBuilder(root / "nuplan-v1.1" / "splits" / "mini")
    refs = builder.all_refs()
    loc = refs[0].map_location
    path = resolve_map_file(root / "maps", loc)
    MapAPI(path, loc)  # imports and GDAL warm-up, not counted
    loads = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        MapAPI(path, loc)  # uncached: a fresh parse and reprojection every time
        loads.append(time.perf_counter() - t)
    print(f"map load ({loc}): median {statistics.median(loads):.3f} s over {args.repeats}", file=sys.stderr)
    # cold: the first scenario of a freshly opened log (reads the log's blocks of boxes and lights);
    # warm: further scenarios of an open log (the target: extraction from an open log)
    cold, warm = [], []
    by_log: dict = {}
    for r in refs:
        by_log.setdefault(r.log_name, []).append(r)
    for name, rs in by_log.items():
        db = LogDB(builder.log_files[name])
        t = time.perf_counter()
        extract_scenario(db, rs[0].token)
        cold.append(time.perf_counter() - t)
        for r in rs:
            t = time.perf_counter()
            extract_scenario(db, r.token)
            warm.append(time.perf_counter() - t)
        db.close()
    print(f"scenario extraction from an open log: median {1000 * statistics.median(warm):.1f} ms, "
          f"max {1000 * max(warm):.1f} ms over {len(warm)}; first scenario of a fresh log: median "
          f"{1000 * statistics.median(cold):.0f} ms", file=sys.stderr)
    print(json.dumps({"map_load_s": round(statistics.median(loads), 4),
                      "scenario_extract_s": round(statistics.median(warm), 4),
                      "scenario_extract_max_s": round(max(warm), 4),
                      "scenario_extract_cold_s": round(statistics.median(cold), 4)}))
    return 0
