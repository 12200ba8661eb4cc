"""nuplan-devkit's own closed loop (IDM agents + LQR tracking the logged future), reproduced step by step.

tests/fixtures/golden/devkit_tiny/closed_loop_log_future_idm_agents.json is the devkit's trace of its tagged scenario
(settings in the README beside it): the same agents per step and every ego and agent state within 1e-6. The loop and
the comparison are `simscale_env.golden.traces` (shared with `simscale check-golden` and tests/sim/test_idm_golden.py).
"""

import json

from simscale_env.data import LogDB
from simscale_env.golden.traces import compare_trace
from tests.conftest import DEVKIT_TINY, TINY_TAG


def test_reproduces_devkit_trace(tiny_log, tiny_maps):
    trace = json.loads((DEVKIT_TINY / "closed_loop_log_future_idm_agents.json").read_text())
    assert len(trace) == 150
    mismatches, row = compare_trace("devkit_tiny", trace, LogDB(tiny_log), TINY_TAG, tiny_maps)
    assert not mismatches, "\n".join(str(m) for m in mismatches[:20])
    assert row["matched"] == row["records"] and row["max_abs_error"] < 1e-6, row
