"""nuPlan planners in the loop: `NuplanPlannerPolicy(planner)` runs any object that follows nuplan-devkit's
`AbstractPlanner` contract (`nuplan/planning/simulation/planner/abstract_planner.py`:
`initialize(PlannerInitialization)`, `compute_planner_trajectory(PlannerInput) -> AbstractTrajectory`) as an
`agents.Policy` of the env, so a nuPlan planner (e.g. tuplan_garage's PDM-Closed) gets an EPDMS score closed-loop.

    from agents import NuplanPlannerPolicy, policy_env_kwargs
    policy = NuplanPlannerPolicy(MyPlanner(...))
    env = gym.make("SimScale-navhard-v0", **policy_env_kwargs(policy))   # planner_inputs=True
    obs, info = env.reset(seed=0); policy.reset(info)                    # planner.initialize(...)
    obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))

What the planner gets (nuplan-devkit's classes when they import, else the look-alikes of `agents.nuplan_types`,
with the same names and fields), from the env's `info["planner_input"]` (`simscale_env.envs.agent_inputs`):

- at every reset, `initialize(PlannerInitialization(route_roadblock_ids, mission_goal, map_api))`: the scenario's
  route roadblock ids and goal (a `StateSE2`, or None where the scene has none) and the map as SimScale's
  `simscale_env.map.MapAPI` (the env's own map object; it is not nuPlan's `AbstractMap`: planners that query
  nuPlan's map API need an adapter);
- at every step, `compute_planner_trajectory(PlannerInput(iteration, history, traffic_light_data))`:
  `SimulationIteration(TimePoint(time_us), index)` with the simulation iteration (0.1 s steps); a
  `SimulationHistoryBuffer` of `EgoState`s (rear axle, velocity and acceleration in the ego frame) and
  `DetectionsTracks` observations (`Agent`s for vehicles, pedestrians and bicycles with their global velocity,
  `StaticObject`s for the rest; boxes at their centres) 0.1 s apart over the last 1.5 s (what the env keeps: 16
  samples, the current one last; before the episode's start the ego's logged or perturbed past and the logged
  objects), sample interval 0.1 s; and `TrafficLightStatusData` of every lane connector with a light, now.

The returned trajectory is sampled at 0.5 s, 1.0 s, ..., 4.0 s after now into the env's 8-pose plan in the current
rear-axle frame: x, y linearly and the heading (unwrapped) between the trajectory's states by time (from the current
pose where it starts after now). Accepted: an object with `get_sampled_trajectory()` whose states have `rear_axle`
(x, y, heading; the map's global frame) and `time_point.time_us` (or `time_us`), as nuPlan's
`InterpolatedTrajectory`; or a pair `(time_us [N], poses [N, 3])` of global rear-axle poses at absolute times. It
must reach 4 s ahead. Planners that need the scenario (`requires_scenario=True`, oracles) are refused.
"""

from __future__ import annotations

import logging
from collections import deque

import numpy as np

from simscale_env.errors import PolicyError
from simscale_env.geometry import global_to_local
from simscale_env.sim import PACIFICA

from .nuplan_types import nuplan_classes
from .policy import BasePolicy, check_contract

log = logging.getLogger(__name__)

PLAN_TIMES_US = 500_000 * np.arange(1, 9, dtype=np.int64)  # NAVSIM's plan times 0.5 s ... 4.0 s (the env's action)
# the simulation's step, 0.1 s: the devkit steps a challenge scenario's iterations (20 Hz lidar_pcs, subsample_ratio
# 0.5), and its history buffer holds ego states and observations at that step
SAMPLE_INTERVAL_S = 0.1
AGENT_TYPE_NAMES = ("VEHICLE", "PEDESTRIAN", "BICYCLE")
# sim.state indices (simscale_env.sim.state: NAVSIM's StateIndex order)
_X, _Y, _H, _VX, _VY, _AX, _AY, _STEER, _STEER_RATE, _YAW_RATE, _YAW_ACC = range(11)


def _state_time_us(state) -> int:
    tp = getattr(state, "time_point", None)
    if tp is not None:
        return int(tp.time_us)
    return int(state.time_us)


def trajectory_samples(trajectory) -> tuple[np.ndarray, np.ndarray]:
    """(time_us [N] int64, global rear-axle poses [N, 3]) of a planner's return (module docstring)."""
    if callable(getattr(trajectory, "get_sampled_trajectory", None)):
        states = list(trajectory.get_sampled_trajectory())
        times = np.array([_state_time_us(s) for s in states], dtype=np.int64)
        poses = np.array([[s.rear_axle.x, s.rear_axle.y, s.rear_axle.heading] for s in states], dtype=np.float64)
        return times, poses.reshape(-1, 3)
    if isinstance(trajectory, (tuple, list)) and len(trajectory) == 2:
        times = np.asarray(trajectory[0])
        poses = np.asarray(trajectory[1], dtype=np.float64)
        if times.dtype.kind not in "iuf" or times.ndim != 1 or poses.shape != (len(times), 3):
            raise ValueError(f"a (time_us, poses) pair needs time_us [N] and poses [N, 3], got {times.shape} and "
                             f"{poses.shape}")
        return np.round(times).astype(np.int64), poses
    raise ValueError(f"a {type(trajectory).__name__} is no trajectory: it has no get_sampled_trajectory() and is not "
                     f"a (time_us, poses) pair")


def sample_plan(times_us, poses, now_us: int, origin) -> np.ndarray:
    """The env's plan [8, 3] float32: the global rear-axle `poses` [N, 3] at `times_us` [N] sampled at now + 0.5 s,
    ..., now + 4.0 s (x, y linear, heading unwrapped; from `origin` at now where they start later) and expressed in
    the frame of `origin` (the current rear axle). Raises ValueError if they do not reach 4 s ahead, are not in time
    order or not finite."""
    t = np.asarray(times_us, dtype=np.int64)
    p = np.asarray(poses, dtype=np.float64).reshape(-1, 3)
    if len(t) != len(p) or len(t) == 0:
        raise ValueError(f"{len(t)} times for {len(p)} poses")
    if not np.all(np.isfinite(p)):
        raise ValueError("the trajectory has non-finite poses")
    if np.any(np.diff(t) <= 0):
        raise ValueError("the trajectory's states are not in strictly increasing time order")
    if t[0] > now_us:
        t = np.concatenate([[now_us], t])
        p = np.vstack([np.asarray(origin, dtype=np.float64)[None, :3], p])
    want = int(now_us) + PLAN_TIMES_US
    if t[-1] < want[-1]:
        raise ValueError(f"the trajectory ends {(t[-1] - now_us) * 1e-6:.2f} s after now; a plan needs 4.0 s")
    h = np.unwrap(p[:, 2])
    ts = (t - t[0]).astype(np.float64)
    q = (want - t[0]).astype(np.float64)
    out = np.stack([np.interp(q, ts, p[:, 0]), np.interp(q, ts, p[:, 1]), np.interp(q, ts, h)], -1)
    return global_to_local(out, np.asarray(origin, dtype=np.float64)[:3]).astype(np.float32)


class NuplanPlannerPolicy(BasePolicy):
    """A nuPlan planner as an `agents.Policy` (module docstring). `prefer_real_nuplan=False` uses the look-alikes
    even where nuplan-devkit imports."""

    observation_keys = ("ego_status",)

    def __init__(self, planner, *, env_kwargs: dict | None = None, name: str | None = None,
                 prefer_real_nuplan: bool = True):
        label = name or _planner_name(planner)
        check_contract(planner, label, ("initialize", "compute_planner_trajectory"), "nuPlan planner",
                       "requires_scenario", "the planner requires the scenario (requires_scenario=True, an oracle), "
                                            "which a closed-loop simulation does not give")
        obs_type = getattr(planner, "observation_type", None)
        if callable(obs_type):
            kind = getattr(obs_type(), "__name__", str(obs_type()))
            if kind != "DetectionsTracks":
                raise PolicyError(label, f"the planner observes {kind}; the env gives DetectionsTracks")
        self.planner = planner
        self.name = label
        self.classes = nuplan_classes(prefer_real_nuplan)
        self.env_kwargs = {**(env_kwargs or {}), "planner_inputs": True}
        self._episode = None  # (scenario token, log name) the planner was initialized for
        self._observations: dict[int, object] = {}  # time_us -> DetectionsTracks (this episode's)

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _planner_input_of(info: dict, label: str) -> dict:
        pi = info.get("planner_input")
        if pi is None:
            raise PolicyError(label, "info has no 'planner_input': make the env with planner_inputs=True "
                                     "(agents.policy_env_kwargs(policy))")
        return pi

    def initialization(self, info: dict):
        """nuPlan's PlannerInitialization of the episode (module docstring)."""
        from simscale_env.map import load_map

        C = self.classes
        pi = self._planner_input_of(info, self.name)
        goal = pi.get("mission_goal")
        goal = None if goal is None else C.StateSE2(*(float(v) for v in np.asarray(goal)[:3]))
        return C.PlannerInitialization(route_roadblock_ids=list(pi["route_roadblock_ids"]), mission_goal=goal,
                                       map_api=load_map(pi["map_location"], pi["maps_root"]))

    def reset(self, info: dict) -> None:
        self._observations.clear()
        self.planner.initialize(self.initialization(info))
        self._episode = (info.get("scenario_token"), info.get("log_name"))

    def ego_state(self, state: np.ndarray, time_us: int):
        C = self.classes
        s = np.asarray(state, dtype=np.float64)
        tp = C.TimePoint(int(time_us))
        pose = C.StateSE2(float(s[_X]), float(s[_Y]), float(s[_H]))
        vel = C.StateVector2D(float(s[_VX]), float(s[_VY]))
        acc = C.StateVector2D(float(s[_AX]), float(s[_AY]))
        if C.real:
            return C.EgoState.build_from_rear_axle(
                rear_axle_pose=pose, rear_axle_velocity_2d=vel, rear_axle_acceleration_2d=acc,
                tire_steering_angle=float(s[_STEER]), time_point=tp, vehicle_parameters=C.get_pacifica_parameters(),
                angular_vel=float(s[_YAW_RATE]), angular_accel=float(s[_YAW_ACC]),
                tire_steering_rate=float(s[_STEER_RATE]))
        from .nuplan_types import DynamicCarState

        c = PACIFICA.rear_axle_to_center
        center = C.StateSE2(float(s[_X] + c * np.cos(s[_H])), float(s[_Y] + c * np.sin(s[_H])), float(s[_H]))
        return C.EgoState(rear_axle=pose, dynamic_car_state=DynamicCarState(vel, acc, float(s[_YAW_RATE]),
                                                                            float(s[_YAW_ACC]), float(s[_STEER_RATE])),
                          tire_steering_angle=float(s[_STEER]), time_point=tp, center=center, array=s.copy())

    def observation(self, frame: dict, time_us: int):
        """DetectionsTracks of one frame of `planner_input["objects"]`."""
        C = self.classes
        objs = []
        for i in range(len(frame["x"])):
            type_name = str(frame["category_name"][i]).upper()
            kind = C.TrackedObjectType[type_name]
            box = C.OrientedBox(C.StateSE2(float(frame["x"][i]), float(frame["y"][i]), float(frame["heading"][i])),
                                float(frame["length"][i]), float(frame["width"][i]), float(frame["height"][i]))
            token = str(frame["track_token"][i])
            meta = C.SceneObjectMetadata(timestamp_us=int(time_us), token=token, track_id=None, track_token=token,
                                         category_name=str(frame["category_name"][i]))
            if type_name in AGENT_TYPE_NAMES:
                vel = C.StateVector2D(float(frame["vx"][i]), float(frame["vy"][i]))
                if C.real:
                    objs.append(C.Agent(tracked_object_type=kind, oriented_box=box, velocity=vel, metadata=meta))
                else:
                    objs.append(C.Agent(tracked_object_type=kind, box=box, metadata=meta, velocity=vel))
            elif C.real:
                objs.append(C.StaticObject(tracked_object_type=kind, oriented_box=box, metadata=meta))
            else:
                objs.append(C.StaticObject(tracked_object_type=kind, box=box, metadata=meta))
        return C.DetectionsTracks(tracked_objects=C.TrackedObjects(objs))

    def planner_input(self, info: dict):
        """nuPlan's PlannerInput of this step (module docstring)."""
        C = self.classes
        pi = self._planner_input_of(info, self.name)
        times = [int(t) for t in pi["ego_time_us"]]
        ego = deque(self.ego_state(s, t) for s, t in zip(pi["ego_states"], times))
        seen = {}
        for t, frame in zip(times, pi["objects"]):  # the past frames are fixed once realised: built once
            seen[t] = self._observations[t] if t in self._observations else self.observation(frame, t)
        self._observations = seen
        buffer = C.SimulationHistoryBuffer(ego, deque(seen[t] for t in times), SAMPLE_INTERVAL_S)
        now = int(pi["time_us"])
        tl = pi["traffic_lights"]
        lights = [C.TrafficLightStatusData(status=C.TrafficLightStatusType(int(s)), lane_connector_id=int(c),
                                           timestamp=now)
                  for c, s in zip(tl["lane_connector_id"], tl["status"])]
        return C.PlannerInput(iteration=C.SimulationIteration(time_point=C.TimePoint(now), index=int(pi["iteration"])),
                              history=buffer, traffic_light_data=lights)

    # ------------------------------------------------------------------ act
    def plan(self, trajectory, info: dict) -> np.ndarray:
        """The env's action [8, 3] from the planner's trajectory (module docstring)."""
        pi = self._planner_input_of(info, self.name)
        try:
            times, poses = trajectory_samples(trajectory)
            return sample_plan(times, poses, int(pi["time_us"]), np.asarray(pi["ego_states"][-1])[:3])
        except ValueError as exc:
            raise PolicyError(self.name, f"compute_planner_trajectory's return: {exc}") from None

    def act(self, observation: dict, info: dict) -> np.ndarray:
        if self._episode != (info.get("scenario_token"), info.get("log_name")):
            self.reset(info)  # a harness that skipped reset(): initialize for this scenario
        return self.plan(self.planner.compute_planner_trajectory(self.planner_input(info)), info)


def _planner_name(planner) -> str:
    fn = getattr(planner, "name", None)
    try:
        n = fn() if callable(fn) else fn
    except Exception:  # noqa: BLE001
        n = None
    return n if isinstance(n, str) and n else type(planner).__name__
