"""Benchmarking policies on `SimScale-*-v0`: the scoring modes (`evaluation.modes`), the runner that maps them over
worker processes or Ray into a run directory (`evaluation.runner`), its report (`evaluation.report`), runs side by
side (`evaluation.compare`), and the older closed-loop table (`evaluation.closed_loop`)."""

from .closed_loop import evaluate, format_table
from .compare import compare_runs
from .runner import EvaluationError, RunResult, run_evaluation

__all__ = ["EvaluationError", "RunResult", "compare_runs", "evaluate", "format_table", "run_evaluation"]
