"""nuPlan planners in the loop: the trajectory sampling on known answers, and a nuPlan-shaped stub planner (constant
velocity along its heading, written against the look-alike classes) that runs a full episode through
`NuplanPlannerPolicy`."""

from __future__ import annotations

import numpy as np
import pytest

from agents import NuplanPlannerPolicy, load_policy, policy_env_kwargs
from agents.nuplan_bridge import sample_plan, trajectory_samples
from agents.nuplan_types import InterpolatedTrajectory, StateSE2, TimePoint
from simscale_env.errors import PolicyError

T0 = 1_000_000_000


class _State:
    def __init__(self, x, y, h, t_us):
        self.rear_axle = StateSE2(x, y, h)
        self.time_point = TimePoint(int(t_us))


def test_sampling_on_known_answers():
    # a circle of radius 20 m driven at 4 m/s from (100, 50) heading +y (turning left), states every 0.1 s
    R, v, x0, y0 = 20.0, 4.0, 100.0, 50.0
    t = 0.1 * np.arange(0, 61)
    th = v * t / R
    states = [_State(x0 - R + R * np.cos(a), y0 + R * np.sin(a), np.pi / 2 + a, T0 + 1e6 * s) for a, s in zip(th, t)]
    plan = sample_plan(*trajectory_samples(InterpolatedTrajectory(states)), T0, (x0, y0, np.pi / 2))
    a = v * 0.5 * np.arange(1, 9) / R
    want = np.stack([R * np.sin(a), R * (1 - np.cos(a)), a], -1)  # rear-axle frame: x ahead, y left
    np.testing.assert_allclose(plan, want, atol=1e-5)
    assert plan.dtype == np.float32 and plan.shape == (8, 3)
    # a straight line sampled every 0.3 s from 0.2 s after now: linear interpolation is exact, and before its
    # first state the plan starts from the current pose
    ts = 0.2 + 0.3 * np.arange(15)
    pair = (T0 + np.round(ts * 1e6), np.stack([10 + 3 * ts, np.full(15, -2.0), np.zeros(15)], -1))
    plan = sample_plan(*trajectory_samples(pair), T0, (10.0, -2.0, 0.0))
    np.testing.assert_allclose(plan, np.stack([1.5 * np.arange(1, 9), np.zeros(8), np.zeros(8)], -1), atol=1e-5)
    # heading across the +-pi seam is unwrapped, not averaged through 0
    seam = (T0 + 500_000 * np.arange(0, 10), np.stack([-np.arange(10.0), np.zeros(10),
                                                       np.where(np.arange(10) % 2, -np.pi + 0.01, np.pi - 0.01)], -1))
    assert np.all(np.abs(sample_plan(*seam, T0, (0.0, 0.0, np.pi))[:, 2]) < 0.02)
    with pytest.raises(ValueError, match="ends 2.00 s after now; a plan needs 4.0 s"):
        sample_plan(T0 + 500_000 * np.arange(5), np.zeros((5, 3)), T0, (0, 0, 0))
    with pytest.raises(ValueError, match="strictly increasing"):
        sample_plan(T0 + np.array([0, 2, 1, 9]) * 1_000_000, np.zeros((4, 3)), T0, (0, 0, 0))
    with pytest.raises(ValueError, match="no get_sampled_trajectory"):
        trajectory_samples(np.zeros((8, 3)))


class ConstantVelocityPlanner:
    """nuplan-devkit's AbstractPlanner contract: 8 s straight ahead at the current speed, 0.1 s apart."""

    requires_scenario = False

    def __init__(self):
        self.initializations = []
        self.inputs = []

    def name(self) -> str:
        return "cv_planner"

    def observation_type(self):
        from agents.nuplan_types import DetectionsTracks

        return DetectionsTracks

    def initialize(self, initialization) -> None:
        self.initializations.append(initialization)

    def compute_planner_trajectory(self, current_input):
        self.inputs.append(current_input)
        ego, _ = current_input.history.current_state
        v = ego.dynamic_car_state.rear_axle_velocity_2d.x
        x, y, h = ego.rear_axle.x, ego.rear_axle.y, ego.rear_axle.heading
        now = current_input.iteration.time_us
        return InterpolatedTrajectory([_State(x + v * 0.1 * k * np.cos(h), y + v * 0.1 * k * np.sin(h), h,
                                              now + 100_000 * k) for k in range(81)])


def test_stub_planner_runs_a_full_episode(mini):
    import gymnasium as gym

    import simscale_env  # noqa: F401

    planner = ConstantVelocityPlanner()
    policy = NuplanPlannerPolicy(planner)
    assert policy.name == "cv_planner"
    kw = policy_env_kwargs(policy)
    assert kw == {"planner_inputs": True, "observation_keys": ("ego_status",)}
    env = gym.make("SimScale-navhard-v0", pseudo_experts=False, **kw)
    u = env.unwrapped
    obs, info = env.reset(seed=0, options={"scenario_token": u.tokens[0]})
    policy.reset(info)
    sc = u.sim.scenario
    (init,) = planner.initializations
    assert init.route_roadblock_ids == list(sc.route_roadblock_ids)
    assert (init.mission_goal.x, init.mission_goal.y, init.mission_goal.heading) == tuple(sc.goal)
    assert init.map_api is u.sim.map  # the env's own MapAPI object (load_map caches per process)
    steps = 0
    while True:
        ego = u.world.ego.copy()
        objects = u.sim.objects(u.world)
        action = policy.act(obs, info)
        pi = planner.inputs[-1]
        assert pi.iteration.index == info["iteration"] and pi.iteration.time_us == info["time_us"]
        buf = pi.history
        assert len(buf) == 16 and buf.sample_interval == 0.1
        cur, det = buf.current_state
        assert (cur.rear_axle.x, cur.rear_axle.y, cur.rear_axle.heading) == tuple(ego[:3])
        assert cur.time_us == info["time_us"] and buf.ego_states[0].time_us == info["time_us"] - 1_500_000
        assert len(det.tracked_objects) == len(objects)
        assert len(det.tracked_objects.get_agents()) + len(det.tracked_objects.get_static_objects()) == len(objects)
        assert len(pi.traffic_light_data) == len(sc.traffic_lights.connector_ids)
        # the known answer: straight ahead at the current speed, in the rear-axle frame
        want = np.stack([ego[3] * 0.5 * np.arange(1, 9), np.zeros(8), np.zeros(8)], -1)
        np.testing.assert_allclose(action, want, atol=2e-4)
        obs, _, terminated, truncated, info = env.step(action)
        steps += 1
        if terminated or truncated:
            break
    assert steps == info["step"] > 3 and "epdms_episode" in info and len(planner.initializations) == 1
    obs, info = env.reset(seed=1, options={"scenario_token": u.tokens[3]})
    policy.reset(info)
    assert len(planner.initializations) == 2  # once per episode, as nuPlan initializes per scenario
    env.close()


def test_contract_is_checked():
    class Oracle(ConstantVelocityPlanner):
        requires_scenario = True

    class SensorPlanner(ConstantVelocityPlanner):
        def observation_type(self):
            class Sensors:
                pass

            return Sensors

    with pytest.raises(PolicyError, match="requires the scenario"):
        NuplanPlannerPolicy(Oracle())
    with pytest.raises(PolicyError, match="observes Sensors; the env gives DetectionsTracks"):
        NuplanPlannerPolicy(SensorPlanner())
    p = load_policy(ConstantVelocityPlanner())  # a planner object goes through the bridge
    assert isinstance(p, NuplanPlannerPolicy)
    with pytest.raises(PolicyError, match="make the env with planner_inputs=True"):
        p.act({}, {"scenario_token": "x"})
