"""The pure step: determinism, no mutation, agent modes, traffic lights."""

import numpy as np
import pytest

from simscale_env.data.schema import TL_RED
from simscale_env.map import load_map
from simscale_env.sim import PlanTracker, SimConfig, Simulation


@pytest.fixture(scope="module")
def scene(mini_builder, mini):
    sc = mini_builder.load(mini_builder.refs()[0])
    return sc, load_map(sc.map_location, mini / "maps")


def _roll(sim, steps=30):
    w = sim.reset()
    sc = sim.scenario
    t0 = sc.start_index
    tr = PlanTracker(np.stack([sc.ego.x[t0:], sc.ego.y[t0:], sc.ego.heading[t0:]], -1), 0, sim.config.lqr)
    out = [w]
    for _ in range(steps):
        w = sim.step(w, tracker=tr)
        out.append(w)
    return out


@pytest.mark.parametrize("mode", ["reactive", "non_reactive", "constant_velocity"])
def test_same_inputs_same_outputs(scene, mode):
    sc, m = scene
    sim = Simulation(sc, m, SimConfig(agent_mode=mode))
    a, b = _roll(sim), _roll(sim)
    for wa, wb in zip(a, b):
        assert np.array_equal(wa.ego, wb.ego)
        oa, ob = sim.objects(wa), sim.objects(wb)
        for k in ("track", "x", "y", "heading", "vx", "vy"):
            assert np.array_equal(getattr(oa, k), getattr(ob, k))
    # step never mutates its input
    w0 = a[5]
    ego0 = w0.ego.copy()
    idm0 = None if w0.idm is None else w0.idm.copy()
    sim.step(w0, control=[1.0, 0.1])
    assert np.array_equal(w0.ego, ego0)
    if idm0 is not None:
        for k in idm0.__dataclass_fields__:
            assert np.array_equal(getattr(w0.idm, k), getattr(idm0, k)), k


@pytest.fixture(scope="module")
def stopping_scene(mini_builder, mini):
    """A scene with a lead that stops (the first `stopping_with_lead`): the logged humans brake and queue as humans do,
    the IDM agents by their model. (Since builder version 3 the logged humans obey traffic lights and comfort bounds,
    and in the first scene of the mini set, a free-flowing one, the IDM agents stay within 0.48 m of their logs.)"""
    sc = mini_builder.load(mini_builder.refs(scenario_types=["stopping_with_lead"])[0])
    return sc, load_map(sc.map_location, mini / "maps")


def test_ego_tracks_its_log_and_modes_differ(stopping_scene):
    sc, m = stopping_scene
    sims = {mode: Simulation(sc, m, SimConfig(agent_mode=mode)) for mode in ("reactive", "non_reactive")}
    roll = {k: _roll(s, 40) for k, s in sims.items()}
    t0 = sc.start_index
    w = roll["non_reactive"][-1]
    assert np.hypot(w.ego[0] - sc.ego.x[t0 + 40], w.ego[1] - sc.ego.y[t0 + 40]) < 1.0
    o = sims["non_reactive"].objects(w)
    f = t0 + 40
    assert set(o.track) == set(np.nonzero(sc.agents.valid[f])[0])
    r = sims["reactive"].objects(roll["reactive"][-1])
    assert r.reactive.any()
    # the IDM agents drive their own way: after 4 s some are off their logged boxes
    tr = r.track[r.reactive]
    ok = sc.agents.valid[f, tr]
    dev = np.hypot(r.x[r.reactive][ok] - sc.agents.x[f, tr[ok]], r.y[r.reactive][ok] - sc.agents.y[f, tr[ok]])
    assert dev.max() > 0.5


def test_red_light_polygons_follow_the_log(mini_builder, mini):
    for ref in mini_builder.refs():
        sc = mini_builder.load(ref)
        tl = sc.traffic_lights
        its = np.nonzero((tl.status[sc.start_index:] == TL_RED).any(1))[0]
        if len(its):
            m = load_map(sc.map_location, mini / "maps")
            sim = Simulation(sc, m, SimConfig(agent_mode="non_reactive"))
            it = int(its[0])
            polys = sim.red_light_polygons(it)
            red = [str(c) for c in tl.connector_ids[tl.status[sc.start_index + it] == TL_RED] if str(c) in m.lanes]
            assert list(polys) == red and all(m.lanes[k].is_connector for k in polys)  # in the log's order
            assert all(polys[k] is m.lanes[k].polygon for k in polys)
            assert sim.red_light_polygons(it, frozenset(red[:1])) == {red[0]: polys[red[0]]}  # restricted to lanes
            return
    pytest.fail("no red light in the mini scenarios")


def test_bad_step_inputs(scene):
    sc, m = scene
    sim = Simulation(sc, m)
    w = sim.reset()
    with pytest.raises(ValueError, match="exactly one of tracker=, control= or ego_state="):
        sim.step(w)
    with pytest.raises(ValueError, match="control must be 2 finite values"):
        sim.step(w, control=[np.nan, 0.0])
    with pytest.raises(ValueError, match="ego_state contains NaN"):
        sim.reset(np.full(11, np.nan))
    with pytest.raises(ValueError, match="agent_mode must be one of"):
        SimConfig(agent_mode="fancy")


def test_a_braking_ego_holds_at_standstill_instead_of_backing_up(scene):
    """Hard braking from 1 m/s: the lagged acceleration would carry the bicycle through zero into reversing (as
    nuPlan's does, `hold_at_standstill=False`); the simulated ego stops and stays stopped."""
    from simscale_env.sim.state import ACCELERATION_X, VELOCITY_X, make_state

    sc, m = scene
    speeds = {}
    for hold in (True, False):
        sim = Simulation(sc, m, SimConfig(agent_mode="non_reactive", hold_at_standstill=hold))
        ego = sim.logged_ego_state(0)
        w = sim.reset(make_state(ego[0], ego[1], ego[2], velocity=1.0, acceleration=-4.0))
        v = []
        for _ in range(8):
            w = sim.step(w, control=(-4.0, 0.0))
            v.append(w.ego[VELOCITY_X])
        speeds[hold] = np.array(v)
        if hold:
            assert w.ego[ACCELERATION_X] == 0.0
    assert speeds[False].min() < -0.5  # the devkit's integration reverses
    assert speeds[True].min() == 0.0 and np.all(speeds[True][np.argmax(speeds[True] == 0):] == 0.0)
    np.testing.assert_array_equal(speeds[True][speeds[False] > 0], speeds[False][speeds[False] > 0])


def test_branches_share_paths_without_writing_each_others(scene):
    """A step shares its input's path array when no agent extends its route (a copy of MBs otherwise): stepping
    one state twice (two futures) and rolling both on changes no state of the other branch, and the shared
    paths are really shared."""
    sc, m = scene
    sim = Simulation(sc, m, SimConfig(agent_mode="reactive"))
    a = _roll(sim, 60)
    frozen = [w.idm.copy() for w in a]
    shared = sum(x.idm.path is y.idm.path for x, y in zip(a, a[1:]))
    assert 0 < shared < 60  # some steps share, some extend a route (and copy)
    w = a[10]
    for t in range(50):  # another future from the same state: brake and steer
        w = sim.step(w, control=[-2.0, 0.2 * (-1) ** t])
    for i, (wa, f) in enumerate(zip(a, frozen)):
        for k in f.__dataclass_fields__:
            assert np.array_equal(getattr(wa.idm, k), getattr(f, k)), (i, k)


def test_observed_states_score_as_the_full_ones_and_refuse_to_step(scene):
    sc, m = scene
    sim = Simulation(sc, m, SimConfig(agent_mode="reactive"))
    w = _roll(sim, 12)[-1]
    slim = w.observed()
    assert slim.idm.path.shape[1] == 0 and slim.idm.path.nbytes == 0 and slim.observed() is slim
    full, obs = sim.objects(w), sim.objects(slim)
    for k in full.__dataclass_fields__:
        assert np.array_equal(getattr(full, k), getattr(obs, k)), k
    with pytest.raises(ValueError, match="slimmed"):
        sim.step(slim, control=[0.0, 0.0])


def test_advance_tracked_equals_stepping_each_simulation_alone(mini_builder, mini):
    """Simulations of two scenes (two maps' worth of agents), from different iterations, with different plans and
    step counts, stepped together (one LQR and one bicycle call per iteration): every world bit-identical to
    `Simulation.step(w, tracker=...)` alone. One plan brakes a moving ego to a stop (the standstill hold fires in the
    batch); configs that differ (hold off) form their own group."""
    from simscale_env.sim.plans import plan_to_reference
    from simscale_env.sim import WorldState
    from simscale_env.sim.state import VELOCITY_X, make_state
    from simscale_env.sim.world import advance_tracked

    refs = mini_builder.refs()
    scs = [mini_builder.load(refs[0]), mini_builder.load(refs[-1])]
    maps = {sc.map_location: load_map(sc.map_location, mini / "maps") for sc in scs}
    sims = [Simulation(scs[0], maps[scs[0].map_location]), Simulation(scs[1], maps[scs[1].map_location]),
            Simulation(scs[0], maps[scs[0].map_location], SimConfig(hold_at_standstill=False)),
            Simulation(scs[1], maps[scs[1].map_location])]
    e = sims[1].logged_ego_state(7)
    starts = [sims[0].reset(), _advanced(sims[1], 7), sims[2].reset(), _advanced(sims[3], 3)]
    # the second: rolling at 1 m/s while braking hard, a zero plan (the lagged deceleration carries it through 0)
    starts[1] = WorldState(7, starts[1].time_us, make_state(e[0], e[1], e[2], velocity=1.0, acceleration=-4.0),
                           starts[1].idm, starts[1].replay_mask, starts[1].parked)
    t = np.arange(1, 9)[:, None] * 0.5
    plans = [np.concatenate([t * 6.0, t * 0.1, t * 0.02], 1), np.zeros((8, 3)),  # the second stops its ego
             np.concatenate([t * 3.0, t * 0.0, t * 0.0], 1), np.concatenate([t * 9.0, -t * 0.2, -t * 0.05], 1)]
    trackers = [PlanTracker(plan_to_reference(p, w.ego, w.time_us), w.iteration, s.config.lqr)
                for p, w, s in zip(plans, starts, sims)]
    steps = [5, 12, 4, 0]
    ahead = advance_tracked(sims, starts, trackers, steps)
    assert [len(a) for a in ahead] == steps
    for i, (sim, w, tr) in enumerate(zip(sims, starts, trackers)):
        for j in range(steps[i]):
            w = sim.step(w, tracker=tr)
            b = ahead[i][j]
            assert b.iteration == w.iteration and b.time_us == w.time_us
            np.testing.assert_array_equal(b.ego, w.ego, err_msg=f"sim {i} step {j}")
            for k in w.idm.__dataclass_fields__:
                np.testing.assert_array_equal(getattr(b.idm, k), getattr(w.idm, k), err_msg=f"{i} {j} {k}")
    assert starts[1].ego[VELOCITY_X] == 1.0 and ahead[1][-1].ego[VELOCITY_X] == 0.0  # braked to a held standstill
    with pytest.raises(ValueError, match="outside its tracker's reference"):
        advance_tracked(sims[:1], starts[:1], trackers[:1], [41])
    with pytest.raises(ValueError, match="as many worlds, trackers and step counts"):
        advance_tracked(sims, starts[:2], trackers, steps)


def _advanced(sim, n):
    w = sim.reset()
    for i in range(n):
        w = sim.step(w, ego_state=sim.logged_ego_state(i + 1))
    return w


def test_the_lqr_fit_of_a_reference_does_not_depend_on_its_batch():
    """Each reference's velocity and curvature profiles are the same alone or among others (what lets
    `advance_tracked` and the vector env batch trackers without changing a bit)."""
    from simscale_env.sim.lqr import fit_velocity_curvature

    rng = np.random.default_rng(3)
    t = np.linspace(0.0, 4.0, 41)
    x = rng.uniform(0, 20, (17, 1)) * t + rng.normal(0, 0.1, (17, 41)) + 4.0e5
    y = rng.normal(0, 0.05, (17, 1)) * (x - 4.0e5) ** 2 + rng.normal(0, 0.1, (17, 41))
    poses = np.stack([x, y, rng.normal(0, 0.5, (17, 41))], -1)
    vb, cb = fit_velocity_curvature(poses, 0.1)
    for i in range(17):
        v1, c1 = fit_velocity_curvature(poses[i:i + 1], 0.1)
        np.testing.assert_array_equal(v1[0], vb[i])
        np.testing.assert_array_equal(c1[0], cb[i])
    many = PlanTracker.many(poses, range(17))
    for i in (0, 9, 16):
        one = PlanTracker(poses[i], i)
        assert many[i].start_iteration == i
        np.testing.assert_array_equal(many[i].reference, one.reference)
        for k in ("_poses", "_velocity", "_curvature"):
            np.testing.assert_array_equal(getattr(many[i]._tracker, k), getattr(one._tracker, k))
    with pytest.raises(ValueError, match=r"references must have shape \[B, T >= 4, 3\]"):
        PlanTracker.many(poses[:, :3], range(17))
