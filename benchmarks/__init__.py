"""Benchmarks, run as `simscale bench NAME [args]`. Each prints progress to stderr and ends with one JSON line of
figures on stdout. Speed targets live here, never in unit tests."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {"data": "benchmarks.bench_data", "sim": "benchmarks.bench_sim", "score": "benchmarks.bench_score",
              "experts": "benchmarks.bench_experts", "render": "benchmarks.bench_render", "env": "benchmarks.bench_env",
              "gsplat": "benchmarks.bench_gsplat"}


def run_benchmark(name: str, argv=None) -> int:
    if name not in BENCHMARKS:
        print(f"simscale: error: unknown benchmark '{name}'; known: {', '.join(sorted(BENCHMARKS))}",
              file=sys.stderr)
        return 2
    return int(importlib.import_module(BENCHMARKS[name]).main(argv or []) or 0)
