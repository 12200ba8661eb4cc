"""NAVSIM's own PDMSimulator outputs: every golden proposal tracked from its plan reproduces all 41 states."""

import json

import numpy as np
import pytest

from simscale_env.sim.lqr import track_references
from simscale_env.sim.plans import plan_to_reference
from tests.conftest import GOLDEN


@pytest.fixture(scope="module")
def cases():
    return json.loads((GOLDEN / "epdms_navsim_cases.json").read_text())


def test_golden_tracking_reproduces_navsim_states(cases):
    n = 0
    worst = 0.0
    for scene in cases["scenes"]:
        init = np.array(scene["ego_initial_state"]["state"])
        plans = np.array([p["plan_poses_local"] for p in scene["proposals"]])
        expected = np.array([p["states"] for p in scene["proposals"]])
        ref = plan_to_reference(plans, init, scene["time"]["t0_us"])
        assert ref.shape == (len(plans), 41, 3)
        states = track_references(init, ref)
        err = np.abs(states - expected).max()
        worst = max(worst, err)
        assert err < 1e-6, (scene["name"], err)
        n += len(plans)
    assert n == 44
