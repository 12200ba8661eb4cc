"""The `simscale` command.

    simscale data build-mini --out DIR [--seed N]     build the embedded mini dataset (nuPlan + NAVSIM format)
    simscale data info PATH                           summarize logs, scenarios, agents and map layers
    simscale bench NAME                               run a benchmark (ends with one JSON line of figures)
    simscale check-epdms FILE.json                    score NAVSIM golden cases with the engine, list mismatches
    simscale demo                                     the main job of `make demo`
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import SimScaleError


def _cmd_build_mini(args) -> int:
    from .data.mini.build import build_mini, is_complete

    if args.if_missing and is_complete(args.out, args.seed):
        print(f"mini dataset already built in {args.out}", file=sys.stderr)
        return 0
    build_mini(args.out, args.seed, workers=args.workers, progress=not args.quiet)
    return 0


def _cmd_info(args) -> int:
    from .data.info import format_summary, summarize

    s = summarize(args.path)
    print(json.dumps(s, indent=1) if args.json else format_summary(s))
    return 0


def _cmd_bench(args) -> int:
    from benchmarks import run_benchmark

    return run_benchmark(args.name, args.rest)


def _cmd_check_epdms(args) -> int:
    from .metrics.golden import check_cases

    r = check_cases(args.file)
    n = r["proposals"]
    print(f"{r['cases']} cases, {n} proposals: {args.file}")
    print(f"{'metric':<34} {'agree':>7} {'mismatch':>9}")
    for metric, k in r["agree"].items():
        print(f"{metric:<34} {k:>7} {n - k:>9}")
    for m in r["mismatches"][:50]:
        print(f"MISMATCH {m['scene']}[{m['proposal']}] {m['name']}: {m['metric']} engine={m['engine']!r} "
              f"navsim={m['navsim']!r}")
    print(json.dumps({"cases": r["cases"], "proposals": n, "mismatches": len(r["mismatches"])}))
    return 1 if r["mismatches"] else 0


def _cmd_demo(args) -> int:
    from .data.info import format_summary, summarize
    from .data.paths import ensure_mini

    root = ensure_mini(args.data)
    print(format_summary(summarize(root)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="simscale", description="SimScale-Gym: driving simulation over nuPlan/NAVSIM.")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="datasets: build the mini dataset, summarize data")
    dsub = data.add_subparsers(dest="data_command", required=True)
    b = dsub.add_parser("build-mini", help="generate the embedded mini dataset in real nuPlan/NAVSIM format")
    b.add_argument("--out", required=True, type=Path, help="output folder (created)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    b.add_argument("--if-missing", action="store_true", help="do nothing if a complete build is already there")
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=_cmd_build_mini)
    i = dsub.add_parser("info", help="summarize a .db log, a folder of logs or a dataset root")
    i.add_argument("path", type=Path)
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.set_defaults(func=_cmd_info)

    bench = sub.add_parser("bench", help="run a benchmark from benchmarks/ (prints one JSON line at the end)")
    bench.add_argument("name")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    bench.set_defaults(func=_cmd_bench)

    ce = sub.add_parser("check-epdms", help="score golden NAVSIM cases (epdms-navsim-golden/1) and compare")
    ce.add_argument("file", type=Path)
    ce.set_defaults(func=_cmd_check_epdms)

    demo = sub.add_parser("demo", help="the main job of `make demo`")
    demo.add_argument("--data", type=Path, default=None, help="mini dataset folder (default: the cache)")
    demo.set_defaults(func=_cmd_demo)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SimScaleError as exc:
        print(f"simscale: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("simscale: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
