"""`simscale check-golden DIR`: every comparison against a golden folder in the format of ``oracle_mini/``."""

from __future__ import annotations

import logging
from pathlib import Path

from .oracle import GoldenFolder
from .report import CheckResult

log = logging.getLogger(__name__)


def _checks():
    """(summary key for the count, summary key for the mismatches, function) of every comparison."""
    from .maps import check_maps, check_scenarios
    from .plans import check_plans
    from .scores import check_scores
    from .traces import check_traces

    return (("traces", "trace_mismatches", check_traces),
            ("score_cells", "score_mismatches", check_scores),
            ("plans", "plan_mismatches", check_plans),
            ("map_queries", "map_mismatches", check_maps),
            ("scenarios", "scenario_mismatches", check_scenarios))


def check_golden(root: str | Path, cache: str | Path | None = None) -> tuple[dict, list[CheckResult]]:
    """Run every comparison; (summary dict, results). A kind of golden file that is absent is skipped."""
    folder = GoldenFolder.open(root, cache)
    summary, results = {}, []
    for count_key, mis_key, fn in _checks():
        r = fn(folder)
        results.append(r)
        summary[count_key] = r.compared
        summary[mis_key] = len(r.mismatches)
    return summary, results
