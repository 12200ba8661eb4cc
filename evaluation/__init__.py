"""Closed-loop benchmarking of policies on `SimScale-*-v0`."""

from .closed_loop import evaluate, format_table

__all__ = ["evaluate", "format_table"]
