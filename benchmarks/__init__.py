"""Benchmarks, run as `simscale bench NAME [args]`. Each prints progress to stderr and ends with one JSON line of
figures on stdout. Speed targets live here, never in unit tests."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {"data": "benchmarks.bench_data", "sim": "benchmarks.bench_sim", "score": "benchmarks.bench_score",
              "experts": "benchmarks.bench_experts", "render": "benchmarks.bench_render", "env": "benchmarks.bench_env",
              "gsplat": "benchmarks.bench_gsplat", "evaluate": "benchmarks.bench_evaluate",
              "generate": "benchmarks.bench_generate", "train": "benchmarks.bench_train",
              "vector": "benchmarks.bench_vector"}


def describe(name: str) -> str:
    """The first sentence of benchmark `name`'s module docstring (read from its source: the modules import heavy
    packages), without its "`simscale bench NAME`:" prefix; `simscale bench --help` lists these."""
    import ast
    import importlib.util
    import re
    from pathlib import Path

    spec = importlib.util.find_spec(BENCHMARKS[name])
    doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text())) or ""
    para = " ".join(doc.split("\n\n")[0].split())
    para = re.sub(r"^`simscale bench [\w-]+`:\s*", "", para)
    return re.split(r"(?<=[.:;])\s", para, maxsplit=1)[0].rstrip(".:;")


def run_benchmark(name: str, argv=None) -> int:
    if name not in BENCHMARKS:
        print(f"simscale: error: unknown benchmark '{name}'; known: {', '.join(sorted(BENCHMARKS))}",
              file=sys.stderr)
        return 2
    return int(importlib.import_module(BENCHMARKS[name]).main(argv or []) or 0)
