"""The closed loop: typed world state and a pure `step`.

One iteration (nuplan/planning/simulation/simulation.py `propagate`): the ego command is computed at iteration i
(the LQR tracking a reference, or a direct control), the bicycle propagates the ego to i + 1, then the agents move to
i + 1 seeing the ego of iteration i and the log's traffic lights and replayed objects of iteration i + 1.

Agent modes:
- ``reactive``: vehicles present at iteration 0 become IDM agents (simscale_env.sim.idm); pedestrians, cyclists and
  static objects replay the log. Vehicles that cannot be put on a lane at iteration 0 (parked, off the map) replay
  the log too (`IDMConfig`-independent switch `replay_unspawned_vehicles`; nuPlan drops them).
- ``non_reactive``: everything replays the log.
- ``constant_velocity``: the agents present at iteration 0 keep their iteration-0 velocity; static objects replay.

`step` never mutates its inputs: the same inputs always give the same output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data.scenario import Scenario
from ..data.schema import AGENT_CATEGORIES, TL_GREEN, TL_RED, VEHICLE
from ..map.map_api import MapAPI
from .bicycle import BicycleConfig, propagate
from .idm import (IDMAgents, IDMConfig, box_corners, light_masks, navsim_parked_vehicles, one_box_corners,
                  parked_overlaps, prepare_spawn, spawn_agents, step_agents)
from .lqr import BatchLQRTracker, LQRConfig, track_step
from .state import (ACCELERATION_X, ANGULAR_ACCELERATION, ANGULAR_VELOCITY, STATE_SIZE, VELOCITY_X, check_states,
                    make_state)
from .vehicle import PACIFICA, VehicleParameters

AGENT_MODES = ("reactive", "non_reactive", "constant_velocity")


@dataclass(frozen=True)
class SimConfig:
    dt: float = 0.1
    agent_mode: str = "reactive"
    idm: IDMConfig = field(default_factory=IDMConfig)
    lqr: LQRConfig = field(default_factory=LQRConfig)
    bicycle: BicycleConfig = field(default_factory=BicycleConfig)
    vehicle: VehicleParameters = PACIFICA
    replay_unspawned_vehicles: bool = True
    # nuPlan's IDM step is SimulationIteration.time_s differences (float seconds of 1.6e9-scale timestamps), which
    # differ from 0.1 by ~1e-7; True reproduces the devkit to 1e-10, False uses the exact step.
    devkit_time_step: bool = True
    # a tracked or controlled ego that would pass from forward motion into reversing within a step stops there
    # (speed and acceleration 0), as a car in drive holds at standstill. nuPlan's bicycle integrates through zero:
    # the LQR's least-squares speed profile of an abrupt stop dips below zero, and the ego then backs up (into the
    # car behind: an at-fault collision). False integrates through zero as the devkit does.
    hold_at_standstill: bool = True

    def __post_init__(self):
        if self.agent_mode not in AGENT_MODES:
            raise ValueError(f"agent_mode must be one of {AGENT_MODES}, got {self.agent_mode!r}")


@dataclass(frozen=True, eq=False)
class WorldState:
    iteration: int  # scenario iteration (0 = the scenario's first iteration)
    time_us: int
    ego: np.ndarray  # [11] rear-axle state (StateIndex order)
    idm: IDMAgents | None = None
    replay_mask: np.ndarray | None = None  # [M] tracks replayed from the log (reactive mode)
    # NAVSIM's open-loop parked vehicles (IDMConfig.add_open_loop_parked_vehicles): tracks shown static at their
    # iteration-0 pose while no agent overlaps them
    parked: np.ndarray | None = None

    def observed(self) -> "WorldState":
        """This state without what only stepping it needs (the IDM agents' paths and footprints, `IDMAgents.slim`):
        what an episode keeps of its past states, which are observed and scored (`Simulation.objects`) but never
        stepped again. Stepping it raises."""
        if self.idm is None or self.idm.path.shape[1] == 0:
            return self
        return WorldState(self.iteration, self.time_us, self.ego, self.idm.slim(), self.replay_mask, self.parked)


@dataclass(frozen=True, eq=False)
class Objects:
    """Every object of the world at one iteration (struct of arrays). Positions are box centres."""

    track: np.ndarray  # [N] column of the scenario's AgentTracks
    category: np.ndarray
    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray
    vx: np.ndarray
    vy: np.ndarray
    length: np.ndarray
    width: np.ndarray
    height: np.ndarray
    reactive: np.ndarray  # bool: simulated (IDM / constant velocity) rather than replayed

    def __len__(self) -> int:
        return len(self.track)

    def corners(self) -> np.ndarray:
        """Box corners [N, 4, 2], computed once per Objects (a frame is scored by the step and again by the episode
        summary): read-only."""
        c = self.__dict__.get("_corners")
        if c is None:
            c = box_corners(self.x, self.y, self.heading, self.length, self.width)
            c.flags.writeable = False
            self.__dict__["_corners"] = c
        return c


class PlanTracker:
    """The LQR tracking one reference pose sequence [T, 3] sampled every dt from `start_iteration`."""

    def __init__(self, reference_poses, start_iteration: int, config: LQRConfig = LQRConfig()):
        self.reference = np.asarray(reference_poses, dtype=np.float64)
        if self.reference.ndim != 2 or self.reference.shape[1] != 3 or len(self.reference) < 4:
            raise ValueError(f"reference_poses must have shape [T >= 4, 3], got {self.reference.shape}")
        self.start_iteration = int(start_iteration)
        self._tracker = BatchLQRTracker(config)
        self._tracker.update(self.reference[None])

    @classmethod
    def many(cls, references, start_iterations, config: LQRConfig = LQRConfig()) -> list["PlanTracker"]:
        """Trackers of several references [T, 3] (equal lengths) with one batched fit of their profiles: each
        the same as `PlanTracker(reference, start, config)` (a reference's fit does not depend on its batch)."""
        refs = np.asarray(references, dtype=np.float64)
        if refs.ndim != 3 or refs.shape[2] != 3 or refs.shape[1] < 4:
            raise ValueError(f"references must have shape [B, T >= 4, 3], got {refs.shape}")
        batch = BatchLQRTracker(config)
        batch.update(refs)
        out = []
        for b, start in enumerate(start_iterations):
            t = object.__new__(cls)
            t.reference = refs[b]
            t.start_iteration = int(start)
            t._tracker = BatchLQRTracker(config)
            t._tracker._poses = batch._poses[b:b + 1]
            t._tracker._velocity = batch._velocity[b:b + 1]
            t._tracker._curvature = batch._curvature[b:b + 1]
            out.append(t)
        return out

    def index(self, world: WorldState) -> int:
        """The reference index of `world`'s iteration (a ValueError outside the reference)."""
        k = world.iteration - self.start_iteration
        if k < 0 or k >= len(self.reference) - 1:
            raise ValueError(f"iteration {world.iteration} is outside the reference (starts at {self.start_iteration}, "
                             f"{len(self.reference)} poses)")
        return k

    def command(self, world: WorldState) -> np.ndarray:
        """The LQR command (acceleration, steering rate) at `world` (`BatchLQRTracker.track`)."""
        return self._tracker.track(self.index(world), world.ego[None])[0]


def ego_box(state: np.ndarray, vehicle: VehicleParameters = PACIFICA) -> np.ndarray:
    """Corners [4, 2] of the ego box of a rear-axle state."""
    c = vehicle.rear_axle_to_center
    return one_box_corners(state[0] + c * np.cos(state[2]), state[1] + c * np.sin(state[2]), state[2],
                           vehicle.length, vehicle.width)


def ego_center(state: np.ndarray, vehicle: VehicleParameters = PACIFICA) -> np.ndarray:
    c = vehicle.rear_axle_to_center
    return np.array([state[0] + c * np.cos(state[2]), state[1] + c * np.sin(state[2])])


class Simulation:
    """Closed-loop simulation of one scenario on its map."""

    def __init__(self, scenario: Scenario, map_api: MapAPI, config: SimConfig = SimConfig()):
        self.scenario = scenario
        self.map = map_api
        self.config = config
        self._t0 = scenario.start_index
        ag = scenario.agents
        self._open_loop = np.isin(ag.category, np.asarray(config.idm.open_loop_types, dtype=np.int8))
        self._agent_cat = np.isin(ag.category, np.asarray(AGENT_CATEGORIES, dtype=np.int8))
        self._vx = np.nan_to_num(ag.vx)  # unknown log velocities read as 0 (once, not per step)
        self._vy = np.nan_to_num(ag.vy)
        self._spawn = None  # iteration 0's vehicles and their ego-independent spawn work (`_spawn_inputs`)
        # per-iteration values that depend on the iteration alone (the lights, the lane graph's light masks, the
        # replayed open-loop boxes), computed once per simulation: every step from any state reads them
        self._lights: dict = {}
        self._light_masks: dict = {}
        self._open_loop_boxes: dict = {}
        # the replayed objects per iteration for one replay mask (a world's, kept by identity: an episode's worlds
        # share their reset's mask) and the parked vehicles' boxes per parked set
        self._replayed: dict = {}
        self._red_polygons: dict = {}  # iteration -> {connector id: polygon} of the red connectors
        self._light_lanes: dict | None = None  # connector id (int) -> (lane key, polygon) of the lights' connectors
        self._want: dict = {}  # lane-id collections (hashable ones) -> their ids as strings (`red_light_polygons`)
        self._parked_boxes: tuple | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def num_iterations(self) -> int:
        return self.scenario.num_iterations

    def frame(self, iteration: int) -> int:
        if not 0 <= iteration < self.num_iterations:
            raise ValueError(f"iteration must be in [0, {self.num_iterations}), got {iteration}")
        return self._t0 + iteration

    def logged_ego_state(self, iteration: int = 0) -> np.ndarray:
        e = self.scenario.ego
        f = self.frame(iteration)
        return make_state(e.x[f], e.y[f], e.heading[f], velocity=e.vx[f], acceleration=e.ax[f], velocity_y=e.vy[f],
                          acceleration_y=e.ay[f])

    def lights(self, iteration: int) -> tuple[np.ndarray, np.ndarray]:
        """(green connector ids, red connector ids) at an iteration."""
        hit = self._lights.get(iteration)
        if hit is None:
            tl = self.scenario.traffic_lights
            st = tl.status[self.frame(iteration)]
            hit = self._lights[iteration] = (tl.connector_ids[st == TL_GREEN], tl.connector_ids[st == TL_RED])
        return hit

    def red_light_polygons(self, iteration: int, lane_ids=None) -> dict:
        """{connector id: polygon} of the connectors whose light is red at an iteration (restricted to `lane_ids`,
        e.g. the route's lanes, as NAVSIM's observation does)."""
        red = self._red_polygons.get(iteration)
        if red is None:  # {connector id: polygon} of every red connector on the map at this iteration, kept
            if self._light_lanes is None:  # the map's lanes of the log's light connectors, looked up once
                lanes = self.map.lanes
                keys = {int(c): str(int(c)) for c in self.scenario.traffic_lights.connector_ids.tolist()}
                self._light_lanes = {c: (k, lanes[k].polygon) for c, k in keys.items() if k in lanes}
            ll = self._light_lanes
            red = dict(ll[c] for c in self.lights(iteration)[1].tolist() if c in ll)
            self._red_polygons[iteration] = red
        if not red or lane_ids is None:
            return dict(red)
        want = self._want.get(lane_ids) if isinstance(lane_ids, (frozenset, tuple)) else None
        if want is None:
            want = {str(x) for x in lane_ids}
            if isinstance(lane_ids, (frozenset, tuple)):
                if len(self._want) > 64:
                    self._want.clear()
                self._want[lane_ids] = want
        return {key: poly for key, poly in red.items() if key in want}

    def _log_boxes(self, iteration: int, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ag = self.scenario.agents
        f = self.frame(iteration)
        sel = np.nonzero(ag.valid[f] & mask)[0]
        return box_corners(ag.x[f, sel], ag.y[f, sel], ag.heading[f, sel], ag.length[f, sel], ag.width[f, sel]), sel

    # ------------------------------------------------------------------ reset / step
    def reset(self, ego_state=None) -> WorldState:
        """World at iteration 0; the ego at its logged state or at `ego_state` (e.g. a perturbed start)."""
        ego = self.logged_ego_state(0) if ego_state is None else check_states(ego_state, "ego_state").copy()
        if ego.shape != (STATE_SIZE,):
            raise ValueError(f"ego_state must have shape [{STATE_SIZE}], got {ego.shape}")
        idm = None
        replay = None
        parked = None
        if self.config.agent_mode == "reactive":
            veh, boxes, ol, prep = self._spawn_inputs()
            idm = spawn_agents(self.map, boxes, ego_box(ego, self.config.vehicle)[None], ol, float(ego[3]),
                               self.config.idm, prepared=prep)
            replay = self._open_loop.copy()
            if self.config.replay_unspawned_vehicles:
                unspawned = np.setdiff1d(veh, idm.track)
                replay[unspawned] = True
            if self.config.idm.add_open_loop_parked_vehicles:
                cand = veh[navsim_parked_vehicles(self.map, boxes, idm, self.config.idm.snap_threshold, prep)]
                parked = cand[~replay[cand]]
        return WorldState(0, int(self.scenario.timestamps_us[self.frame(0)]), ego, idm, replay, parked)

    def _spawn_inputs(self):
        """(vehicle columns, their boxes, the replayed objects' corners, `idm.prepare_spawn`) at iteration 0: what
        spawning the IDM agents needs that does not depend on the ego, computed once per simulation (a perturbed
        reset spawns the agents for several candidate starts)."""
        if self._spawn is None:
            ag = self.scenario.agents
            f = self.frame(0)
            veh = np.nonzero(ag.valid[f] & (ag.category == VEHICLE))[0]
            veh = veh[np.argsort(ag.log_order[f, veh], kind="stable")] if ag.log_order is not None else veh
            boxes = {k: getattr(ag, k)[f, veh] for k in ("x", "y", "heading", "vx", "vy", "length", "width",
                                                          "height")}
            boxes["track"] = veh
            ol, _ = self._log_boxes(0, self._open_loop)
            self._spawn = (veh, boxes, ol, prepare_spawn(self.map, boxes, ol, self.config.idm))
        return self._spawn

    def step(self, world: WorldState, *, tracker: PlanTracker | None = None, control=None,
             ego_state=None) -> WorldState:
        """Advance one iteration. The ego follows `tracker` (LQR), a direct `control` (acceleration [m/s^2],
        steering rate [rad/s]), or is placed at `ego_state` (a precomputed trajectory, e.g. for pseudo-simulation)."""
        it = world.iteration
        if it + 1 >= self.num_iterations:
            raise ValueError(f"the scenario ends at iteration {self.num_iterations - 1}; cannot step from {it}")
        if sum(x is not None for x in (tracker, control, ego_state)) != 1:
            raise ValueError("step needs exactly one of tracker=, control= or ego_state=")
        if tracker is not None:  # the LQR and the bicycle in one compiled call (`lqr.track_step`)
            k = tracker.index(world)
            t1, dt = self._step_time(it)
            c = self.config
            new_ego = track_step(tracker._tracker, k, world.ego[None], dt, c.bicycle, c.hold_at_standstill)[0]
            return self._advance(world, new_ego, t1)
        cmd = None
        if control is not None:
            cmd = np.asarray(control, dtype=np.float64).reshape(-1)
            if cmd.shape != (2,) or not np.all(np.isfinite(cmd)):
                raise ValueError(f"control must be 2 finite values (acceleration, steering rate), got {control!r}")
        t1, dt = self._step_time(it)
        if cmd is None:
            new_ego = check_states(ego_state, "ego_state").copy()
        else:
            new_ego = _propagate_held(world.ego[None], cmd[None], np.array([dt]), self.config)[0]
        return self._advance(world, new_ego, t1)

    def _step_time(self, it: int) -> tuple[int, float]:
        """(the timestamp of iteration it + 1 [us], the step's length [s])."""
        t0 = int(self.scenario.timestamps_us[self.frame(it)])
        t1 = int(self.scenario.timestamps_us[self.frame(it + 1)])
        return t1, (t1 - t0) * 1e-6

    def _advance(self, world: WorldState, new_ego: np.ndarray, t1: int) -> WorldState:
        """The world at iteration + 1 with the ego at `new_ego` (timestamp t1): the agents step seeing the ego of
        `world`."""
        it = world.iteration
        idm = world.idm
        if self.config.agent_mode == "reactive" and idm is not None:
            t0 = int(self.scenario.timestamps_us[self.frame(it)])
            ol = self._open_loop_boxes.get(it + 1)
            if ol is None:
                ol = self._open_loop_boxes[it + 1] = self._log_boxes(it + 1, self._open_loop)[0]
            masks = self._light_masks.get(it + 1)
            if masks is None:
                masks = self._light_masks[it + 1] = light_masks(self.map, *self.lights(it + 1))
            idm_dt = t1 * 1e-6 - t0 * 1e-6 if self.config.devkit_time_step else (t1 - t0) * 1e-6
            idm = step_agents(self.map, idm, ego_corners=ego_box(world.ego, self.config.vehicle),
                              ego_center=ego_center(world.ego, self.config.vehicle),
                              ego_speed=float(np.hypot(world.ego[3], world.ego[4])), ego_heading=float(world.ego[2]),
                              object_corners=ol, green_ids=(), red_ids=(), masks=masks, dt=idm_dt,
                              config=self.config.idm)
        return WorldState(it + 1, t1, new_ego, idm, world.replay_mask, world.parked)

    # ------------------------------------------------------------------ observation
    def objects(self, world: WorldState) -> Objects:
        ag = self.scenario.agents
        f = self.frame(world.iteration)
        mode = self.config.agent_mode
        cols = []
        if mode == "non_reactive":
            sel = np.nonzero(ag.valid[f])[0]
            return self._from_log(f, sel, np.zeros(len(sel), bool))
        if mode == "constant_velocity":
            f0 = self.frame(0)
            moving = np.nonzero(ag.valid[f0] & self._agent_cat)[0]
            static = np.nonzero(ag.valid[f] & ~self._agent_cat)[0]
            dt = (self.scenario.timestamps_us[f] - self.scenario.timestamps_us[f0]) * 1e-6
            log = self._from_log(f, static, np.zeros(len(static), bool))
            cv = self._from_log(f0, moving, np.ones(len(moving), bool))
            cv = Objects(**{**{k: getattr(cv, k) for k in cv.__dataclass_fields__}, "x": cv.x + cv.vx * dt,
                            "y": cv.y + cv.vy * dt})
            return _concat(cv, log)
        # reactive
        idm = world.idm
        alive = np.nonzero(idm.alive)[0]
        tr = idm.track[alive]
        v = idm.v[alive]
        h = idm.pose[alive, 2]
        sim = Objects(track=tr, category=ag.category[tr], x=idm.pose[alive, 0], y=idm.pose[alive, 1], heading=h,
                      vx=v * np.cos(h), vy=v * np.sin(h), length=idm.length[alive], width=idm.width[alive],
                      height=idm.height[alive], reactive=np.ones(len(alive), bool))
        del cols
        hit = self._replayed.get(world.iteration)
        if hit is None or hit[0] is not world.replay_mask:
            sel = np.nonzero(ag.valid[f] & world.replay_mask)[0]
            hit = (world.replay_mask, self._from_log(f, sel, np.zeros(len(sel), bool)))
            self._replayed[world.iteration] = hit
        parts = [sim, hit[1]]
        if world.parked is not None and len(world.parked):
            # NAVSIM NavsimIDMAgents.get_observation: parked vehicles at their current-frame pose, unless an active
            # agent's box overlaps theirs at this step
            f0 = self.frame(0)
            p = world.parked
            if self._parked_boxes is None or self._parked_boxes[0] is not p:
                self._parked_boxes = (p, box_corners(ag.x[f0, p], ag.y[f0, p], ag.heading[f0, p], ag.length[f0, p],
                                                     ag.width[f0, p]))
            keep = ~parked_overlaps(self._parked_boxes[1], idm)
            parts.append(self._from_log(f0, p[keep], np.zeros(int(keep.sum()), bool)))
        return _concat(*parts)

    def _from_log(self, f: int, sel: np.ndarray, reactive: np.ndarray) -> Objects:
        ag = self.scenario.agents
        return Objects(track=sel, category=ag.category[sel], x=ag.x[f, sel], y=ag.y[f, sel],
                       heading=ag.heading[f, sel], vx=self._vx[f, sel], vy=self._vy[f, sel],
                       length=ag.length[f, sel], width=ag.width[f, sel], height=ag.height[f, sel], reactive=reactive)


def _propagate_held(egos: np.ndarray, cmds: np.ndarray, dt: np.ndarray, config: SimConfig) -> np.ndarray:
    """The bicycle step of egos [B, 11] under commands [B, 2] over steps dt [B] (row by row the same arithmetic
    whatever B), then `SimConfig.hold_at_standstill`: a row that would pass from forward motion into reversing
    stops (speed, acceleration and yaw rate 0)."""
    new = propagate(egos, cmds, dt, config.bicycle)
    if config.hold_at_standstill:
        held = (egos[:, VELOCITY_X] >= 0.0) & (new[:, VELOCITY_X] < 0.0)
        if held.any():
            new[np.ix_(held, [VELOCITY_X, ACCELERATION_X, ANGULAR_VELOCITY])] = 0.0
            new[held, ANGULAR_ACCELERATION] = -egos[held, ANGULAR_VELOCITY] / dt[held]
    return new


def advance_tracked(sims, worlds, trackers, steps) -> list[list[WorldState]]:
    """Several simulations stepped together, each ego following its `PlanTracker`: simulation i advances `steps[i]`
    iterations from `worlds[i]`. Per iteration the LQR and the bicycle step all egos in one compiled call
    (`lqr.track_step`, per group of simulations with equal LQR / bicycle / standstill settings);
    the agents step per simulation. Returns the worlds each simulation passed through (without its start),
    bit-identical to calling `sims[i].step(w, tracker=trackers[i])` steps[i] times (every operation is row-wise)."""
    n = len(sims)
    if not (len(worlds) == len(trackers) == len(steps) == n):
        raise ValueError(f"advance_tracked needs as many worlds, trackers and step counts as simulations ({n}), got "
                         f"{len(worlds)}, {len(trackers)} and {len(steps)}")
    out: list[list[WorldState]] = [[] for _ in range(n)]
    groups: dict = {}
    for i, (sim, w, tr) in enumerate(zip(sims, worlds, trackers)):
        k = int(steps[i])
        if k < 0 or w.iteration + k >= sim.num_iterations:
            raise ValueError(f"simulation {i} cannot advance {k} iterations from iteration {w.iteration} (it ends at "
                             f"{sim.num_iterations - 1})")
        start = w.iteration - tr.start_iteration
        if start < 0 or start + k > len(tr.reference) - 1:
            raise ValueError(f"simulation {i}: iterations {w.iteration}..{w.iteration + k} are outside its tracker's "
                             f"reference (starts at {tr.start_iteration}, {len(tr.reference)} poses)")
        c = sim.config
        key = (c.lqr, c.bicycle, c.hold_at_standstill, tr.reference.shape, start)
        groups.setdefault(key, []).append(i)
    for (lqr, _, _, _, start), rows in groups.items():
        batch = BatchLQRTracker.stacked([trackers[i]._tracker for i in rows])
        cur = [worlds[i] for i in rows]
        left = np.array([int(steps[i]) for i in rows])
        for j in range(int(left.max(initial=0))):
            egos = np.stack([w.ego for w in cur])
            times = [sims[i]._step_time(w.iteration) for i, w in zip(rows, cur)]
            dt = np.array([t[1] for t in times])
            c = sims[rows[0]].config
            new = track_step(batch, start + j, egos, dt, c.bicycle, c.hold_at_standstill)
            for r, i in enumerate(rows):
                if j < left[r]:
                    cur[r] = sims[i]._advance(cur[r], new[r], times[r][0])
                    out[i].append(cur[r])
    return out


def _concat(*parts: Objects) -> Objects:
    return Objects(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in Objects.__dataclass_fields__})
