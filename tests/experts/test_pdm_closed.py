"""PDM-Closed on constructed scenes with known behaviour."""

import numpy as np
import pytest
import shapely

from simscale_env.data.synthetic import ObjectSpec, synthetic_scenario
from simscale_env.experts import PDMClosedConfig, PDMClosedPlanner, drive, pdm_closed_plan, pdm_closed_plans
from simscale_env.sim import SimConfig, Simulation
from simscale_env.sim.world import ego_box

from .conftest import CONNECTOR, LANE, ROUTE


def _sim(m, *, s0, speed, objects=(), red=(), iterations=150):
    lane = m.lanes[LANE]
    sc = synthetic_scenario("us-ma-boston", ROUTE, ego_pose=lane.baseline.interpolate(s0), ego_speed=speed,
                            objects=objects, red_connectors=red, num_iterations=iterations)
    return Simulation(sc, m, SimConfig(agent_mode="non_reactive"))


def _box(pose):
    return shapely.Polygon(ego_box(np.r_[pose, np.zeros(8)]))


def test_empty_straight_road_follows_the_centreline_at_the_speed_limit(arterial):
    limit = arterial.speed_limit(LANE)
    sim = _sim(arterial, s0=40.0, speed=limit)
    plan = pdm_closed_plan(sim, sim.reset())
    assert plan.source == "pdm_closed"
    assert plan.index == 4  # the centreline with the full speed limit
    assert plan.info["target_speeds"][-1] == pytest.approx(limit)
    _, _, dist = arterial.lanes[LANE].baseline.project(plan.trajectory[:, :2])
    assert dist.max() < 0.05
    speed = np.hypot(*np.diff(plan.trajectory[:, :2], axis=0).T) / 0.1
    assert speed[5:].mean() == pytest.approx(limit, rel=0.03)
    assert plan.poses.shape == (8, 3) and plan.trajectory.shape == (41, 3) and plan.states.shape == (41, 11)
    # the plan in the env's action format: 8 poses 0.5 s apart in the rear-axle frame, straight ahead
    assert np.abs(plan.poses[:, 1]).max() < 0.5 and np.all(np.diff(plan.poses[:, 0]) > 7.0)


def test_stops_behind_a_stopped_lead_with_the_minimum_gap(arterial):
    lane = arterial.lanes[LANE]
    lead = ObjectSpec(*lane.baseline.interpolate(48.0))
    sim = _sim(arterial, s0=40.0, speed=0.0, objects=[lead])
    plan = pdm_closed_plan(sim, sim.reset())
    lead_poly = shapely.polygons(sim.objects(sim.reset()).corners())[0]
    gaps = np.array([_box(p).distance(lead_poly) for p in plan.trajectory])
    assert gaps.min() >= PDMClosedConfig().min_gap_to_lead_agent
    assert np.hypot(*(plan.trajectory[-1, :2] - plan.trajectory[-2, :2])) / 0.1 < 0.1  # at rest at the end
    # closed loop from 8 m/s, 30 m behind: brakes to a stop without touching it
    sim = _sim(arterial, s0=40.0, speed=8.0, objects=[ObjectSpec(*lane.baseline.interpolate(70.0))])
    worlds = drive(sim, sim.reset(), PDMClosedPlanner().plan, 90, replan_every=2)
    gaps = np.array([_box(w.ego[:3]).distance(shapely.polygons(sim.objects(w).corners())[0]) for w in worlds])
    assert gaps.min() > 0.5 and abs(worlds[-1].ego[3]) < 0.1


def test_stops_before_a_red_light(arterial):
    lane = arterial.lanes[LANE]
    conn = arterial.lanes[CONNECTOR].polygon
    sim = _sim(arterial, s0=lane.length - 35.0, speed=8.0, red=[CONNECTOR])
    worlds = drive(sim, sim.reset(), PDMClosedPlanner().plan, 90, replan_every=2)
    assert not any(_box(w.ego[:3]).intersects(conn) for w in worlds)
    assert abs(worlds[-1].ego[3]) < 0.1
    assert _box(worlds[-1].ego[:3]).distance(conn) < 3.0  # it drives up to the line, not stopping early
    # with the light green it drives through
    sim = _sim(arterial, s0=lane.length - 35.0, speed=8.0)
    plan = pdm_closed_plan(sim, sim.reset())
    assert any(_box(p).intersects(conn) for p in plan.trajectory)


def test_emergency_brake_option_brakes_when_a_collision_is_imminent(arterial):
    lane = arterial.lanes[LANE]
    # slow, with a stopped car 6 m ahead (box to box ~1.2 m): every proposal collides within 2 s
    sim = _sim(arterial, s0=40.0, speed=4.5, objects=[ObjectSpec(*lane.baseline.interpolate(49.0))])
    plan = PDMClosedPlanner(PDMClosedConfig(emergency_brake=True)).plan(sim, sim.reset())
    assert plan.source == "emergency_brake"
    # tuplan's brake: straight ahead at 1.1 (v + clip(-10 v, -4.05, 2.4)) = 0.495 m/s, tracked by the LQR
    assert np.linalg.norm(plan.trajectory[-1, :2] - plan.trajectory[0, :2]) == pytest.approx(1.1 * 0.45 * 4.0)
    assert plan.states[-1, 3] < 1.0
    assert PDMClosedPlanner().plan(sim, sim.reset()).source == "pdm_closed"


def test_plans_at_the_very_end_of_its_route(arterial):
    """Near the route's end fewer than two centreline vertices lie ahead: the corridor is cut with shapely's substring
    (shapely.ops is not loaded by `import shapely`)."""
    lane = arterial.lanes[LANE]
    s0 = lane.baseline.length - 0.3
    sc = synthetic_scenario("us-ma-boston", ["20050"], ego_pose=lane.baseline.interpolate(s0), ego_speed=5.0)
    sim = Simulation(sc, arterial, SimConfig(agent_mode="non_reactive"))
    plan = pdm_closed_plan(sim, sim.reset())
    assert plan.poses.shape == (8, 3) and np.all(np.isfinite(plan.poses))


def _same_plan(a, b):
    for name in ("poses", "trajectory", "states"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert (a.source, a.index, a.info) == (b.source, b.index, b.info)
    for name in ("no_at_fault_collisions", "drivable_area_compliance", "ego_progress", "time_to_collision_within_bound",
                 "time_to_at_fault_collision_s"):
        np.testing.assert_array_equal(getattr(a.scores, name), getattr(b.scores, name), err_msg=name)


@pytest.mark.parametrize("brake", [False, True])
def test_plans_of_many_scenes_at_once_are_each_scenes_own(arterial, brake):
    """`pdm_closed_plans` unrolls every scene's proposals as one batch: a stopped lead (a leader for some proposals,
    ahead of none for others as they pass it), a red light (a leader that is not an object), a free road, an
    imminent collision (the brake option) and the route's very end, each bit for bit a fresh planner's plan."""
    lane = arterial.lanes[LANE]
    sims = [_sim(arterial, s0=40.0, speed=8.0, objects=[ObjectSpec(*lane.baseline.interpolate(70.0))]),
            _sim(arterial, s0=lane.length - 35.0, speed=8.0, red=[CONNECTOR]),
            _sim(arterial, s0=40.0, speed=arterial.speed_limit(LANE)),
            _sim(arterial, s0=40.0, speed=4.5, objects=[ObjectSpec(*lane.baseline.interpolate(49.0))])]
    end = synthetic_scenario("us-ma-boston", ["20050"], ego_pose=lane.baseline.interpolate(lane.baseline.length - 0.3),
                             ego_speed=5.0)
    sims.append(Simulation(end, arterial, SimConfig(agent_mode="non_reactive")))
    cfg = PDMClosedConfig(emergency_brake=brake)
    # later states of the first two drives too (the lead nearer, the light closer)
    worlds = [s.reset() for s in sims]
    for s in sims[:2]:
        ws = drive(s, s.reset(), PDMClosedPlanner(cfg).plan, 20, replan_every=2)
        sims.append(s)
        worlds.append(ws[-1])
    many = pdm_closed_plans(sims, worlds, cfg)
    assert len(many) == len(sims)
    for s, w, b in zip(sims, worlds, many):
        _same_plan(PDMClosedPlanner(cfg).plan(s, w), b)
    assert {p.source for p in many} == ({"pdm_closed", "emergency_brake"} if brake else {"pdm_closed"})
    assert pdm_closed_plans([], [], cfg) == []
    with pytest.raises(ValueError, match="as many worlds as simulations"):
        pdm_closed_plans(sims[:2], worlds[:1], cfg)
