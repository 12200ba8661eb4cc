"""Scoring as NAVSIM scores: every cell of the shared NAVSIM score files (../shared/reference/golden/oracle_mini,
`navsim_scores_*.json`: NAVSIM 0a380a9's pdm_score of three plans in 12 mini-navtest scenes, log replay and
NAVSIM's reactive IDM traffic, with and without the human filter), and the pieces of NAVSIM's metric cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simscale_env.golden.oracle import GoldenFolder
from simscale_env.golden.scores import SUB_SCORES, check_scores
from simscale_env.metrics.navsim_cache import FrameObjects, interpolate_detections
from tests.conftest import ORACLE_MINI

ORACLE = ORACLE_MINI

pytestmark = pytest.mark.usefixtures("oracle_mini_dir")


@pytest.fixture(scope="module")
def result():
    return check_scores(GoldenFolder.open(ORACLE))


def test_every_cell_of_both_score_files_matches_navsim(result):
    cells = 0
    for p in sorted(ORACLE.glob("navsim_scores_*.json")):
        for scene in json.loads(p.read_text())["scenes"].values():
            for values in scene["navsim_scores"].values():
                cells += sum(f in values for f in SUB_SCORES)
    assert cells == 2 * 12 * 6 * len(SUB_SCORES)
    assert result.skipped is None
    assert result.compared == cells
    assert [str(m) for m in result.mismatches] == []
    assert set(result.tables) == {"navsim_scores_nonreactive.json", "navsim_scores_reactive.json"}
    for header, rows in result.tables.values():
        assert header == ("sub-score", "agree", "compared")
        assert all(agree == total for _, agree, total in rows)


def test_the_cases_that_pin_navsims_semantics_are_in_the_files():
    """What the agreement above rests on: the human filter's HC (the human plan is scored without the human past, so
    its HC is 1 and the plan's HC 0 stays), reactive cells that differ from log replay, and an EP below 1 that needs
    the dense PDM-Closed reference started on its path (the curved road of 3dd6...)."""
    nr = json.loads((ORACLE / "navsim_scores_nonreactive.json").read_text())["scenes"]
    r = json.loads((ORACLE / "navsim_scores_reactive.json").read_text())["scenes"]
    assert nr["0f439ba253058ec5"]["navsim_scores"]["pdm_closed|nr|filt"]["history_comfort"] == 0.0
    assert any(nr[t]["navsim_scores"][c.replace("|r|", "|nr|")] != v for t in r
               for c, v in r[t]["navsim_scores"].items())
    assert 0.0 < nr["3dd6077c2060ab88"]["navsim_scores"]["constant_velocity|nr|raw"]["ego_progress"] < 1.0


def _frame(tokens, xs, headings, names=None, vx=None):
    n = len(tokens)
    z = np.zeros(n)
    return FrameObjects(tuple(tokens), np.array(names or ["vehicle"] * n), np.array(xs, float), z.copy(),
                        np.array(headings, float), np.full(n, 4.0), np.full(n, 2.0),
                        np.array(vx if vx is not None else z, float), z.copy(), np.full(n, 1.5))


def test_interpolated_detections_follow_navsims_metric_cache():
    """`_interpolate_gt_observation`: linear between sightings (heading unwrapped across +-pi), absent outside its
    first and last sighting, and a track seen in one frame only kept at its sighting at every step."""
    f0 = _frame(["a", "b"], [0.0, 50.0], [3.1, 0.0], vx=[10.0, 0.0])
    f1 = _frame(["a"], [5.0], [-3.1], vx=[10.0])
    f2 = _frame(["a", "c"], [10.0, 70.0], [-3.0, 1.0], names=["vehicle", "barrier"])
    empty = _frame([], [], [])
    det = interpolate_detections([f0, f1, f2] + [empty] * 6)
    assert det.tokens == ("a", "b", "c") and det.num_steps == 41
    a, b, c = 0, 1, 2
    assert det.valid[:11, a].all() and not det.valid[11:, a].any()
    np.testing.assert_allclose(det.x[:11, a], np.arange(11) * 1.0, atol=1e-12)
    # 3.1 -> -3.1 crosses pi: the short way round, not through 0
    mid = det.heading[2, a]
    assert abs(abs(mid) - np.pi) < 0.1
    # seen once: everywhere, unchanged
    assert det.valid[:, b].all() and np.all(det.x[:, b] == 50.0)
    assert det.valid[:, c].all() and np.all(det.x[:, c] == 70.0)
    assert det.first.names.tolist() == ["vehicle", "vehicle", "barrier"]
    assert det.first.vx.tolist() == [10.0, 0.0, 0.0]


def test_reactive_semantics_is_a_checked_option(mini, mini_builder):
    from simscale_env.map import load_map
    from simscale_env.metrics.pseudo_sim import REACTIVE_SEMANTICS, pseudo_simulate
    from simscale_env.sim import SimConfig, Simulation

    sc = mini_builder.load(mini_builder.refs()[0])  # any scene with agents: the check is on the option itself
    sim = Simulation(sc, load_map(sc.map_location, mini / "maps"), SimConfig(agent_mode="reactive"))
    w = sim.reset()
    plan = np.zeros((1, 8, 3))
    assert REACTIVE_SEMANTICS == "navsim"
    a, _ = pseudo_simulate(sim, w, plan, agent_mode="reactive")
    b, _ = pseudo_simulate(sim, w, plan, agent_mode="reactive", reactive="world")
    assert len(a) == len(b) == 1
    with pytest.raises(ValueError, match="reactive"):
        pseudo_simulate(sim, w, plan, agent_mode="reactive", reactive="devkit")
