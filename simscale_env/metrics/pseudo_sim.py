"""Scoring in the simulator: scenes from a simulation, pseudo-simulation of plans, closed-loop episode summaries.

- :func:`scoring_scene` builds NAVSIM's metric-cache equivalent at a world state: the drivable map within 100 m
  (`PDMDrivableMap.from_simulation`: roadblocks, their lanes, the connectors of roadblock connectors,
  intersections, car parks), the route's lanes, the route centreline, the objects over the next 4 s (log replay,
  constant velocity, or reactive IDM agents reacting to a given ego trajectory), the red lights on the route per
  step, the tracks already touching the ego at t0 (ignored by NC and TTC), and the human past for HC.
  `route_roadblock_ids` gives the route the on-route lanes (DDC) and the centreline (EP, LK) come from: NAVSIM's
  metric cache holds PDM-Closed's route, repaired at its first call (`experts.route_correction`); the red lights
  stay those of the scenario's own route, as the metric cache's (`_load_route_dicts` of the scenario's roadblocks).
  Default: the scenario's route.
- :func:`pseudo_simulate`: plans (poses in the rear-axle frame) -> 41 states by the LQR + bicycle -> scores.
- :func:`episode_summary`: the same sub-metrics over a realised rollout.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import shapely

from ..sim.idm import box_corners
from ..sim.lqr import track_references
from ..sim.plans import plan_to_reference
from ..sim.state import HEADING, STATE_SIZE, X, Y, make_state
from ..sim.world import Simulation, WorldState, ego_box
from .constants import ScorerConfig
from .epdms import PlanScores, ScoringScene, human_filter, human_past_for_hc, score_states
from .geometry import polyline_project

NUM_STEPS = 40  # 4 s at 10 Hz (proposal_sampling num_poses = 40)
_SCENE_CACHE: dict = {}
MAP_RADIUS = 100.0  # navsim/planning/metric_caching/metric_cache_processor.py: self._map_radius = 100
# metric_cache_processor.py: scenario.get_ego_past_trajectory(0, 1.5) (the human past HC prepends)
HISTORY_COMFORT_PAST_S = 1.5


def _map_layers(m) -> dict:
    """The drivable-map objects of a map (cached): (ids, types, polygons) as NAVSIM's PDMDrivableMap holds them."""
    cache = m.__dict__.setdefault("_pdm_drivable", None)
    if cache is not None:
        return cache
    ids, types, polys = [], [], []
    for rb in m.roadblocks.values():
        if not rb.is_connector:
            ids.append(rb.id)
            types.append("ROADBLOCK")
            polys.append(rb.polygon)
    for rb in m.roadblocks.values():
        for lid in rb.lane_ids:
            ids.append(lid)
            types.append("LANE_CONNECTOR" if rb.is_connector else "LANE")
            polys.append(m.lanes[lid].polygon)
    for a in m.intersections.values():
        ids.append(a.id), types.append("INTERSECTION"), polys.append(a.polygon)
    for a in m.carpark_areas.values():
        ids.append(a.id), types.append("CARPARK_AREA"), polys.append(a.polygon)
    arr = np.array(polys, dtype=object)
    out = {"ids": np.array(ids, dtype=object), "types": np.array(types, dtype=object), "polys": arr,
           "tree": shapely.STRtree(arr)}
    m.__dict__["_pdm_drivable"] = out
    return out


NEAR_SNAP = 50.0
# Reactive plan scoring: "navsim" = NAVSIM's NavsimIDMTrafficAgents (navsim/traffic_agents_policies/
# navsim_IDM_traffic_agents.py; fresh agents with idm.NAVSIM_IDM from the vehicles seen now: no open-loop types,
# parked vehicles shown open-loop, snap threshold 3 m, agents stop at the end of their lane, no traffic lights, the
# ego's footprint centred on its rear axle one step late), the default for scoring plans; "world" = the closed-loop
# world's own IDM agents (nuPlan devkit semantics, SimConfig.idm) continued from the current world state.
REACTIVE_MODES = ("navsim", "world")
REACTIVE_SEMANTICS = "navsim"


def near_map_indices(m, point, radius: float = MAP_RADIUS) -> np.ndarray:
    """Sorted indices (into `_map_layers(m)`) of the drivable-map objects within `radius` of `point` - a superset:
    the query is centred on `point` snapped to a 50 m grid with the radius grown by the snap distance, so consecutive
    steps share one set (and one cached area index). Extra far polygons change no sub-score: every point the scorer
    tests lies within `radius` of `point`."""
    layers = _map_layers(m)
    key = (int(np.floor(point[0] / NEAR_SNAP)), int(np.floor(point[1] / NEAR_SNAP)), float(radius))
    cache = layers.setdefault("near_cache", {})
    if key not in cache:
        cx, cy = (key[0] + 0.5) * NEAR_SNAP, (key[1] + 0.5) * NEAR_SNAP
        idx = layers["tree"].query(shapely.Point(cx, cy), predicate="dwithin",
                                   distance=radius + NEAR_SNAP * np.sqrt(0.5))
        if len(cache) > 256:
            cache.clear()
        cache[key] = np.sort(idx)
    return cache[key]


def _route(sim: Simulation, route_roadblock_ids=None) -> list[str]:
    """The route's roadblock ids on the map (`route_roadblock_ids`, default the scenario's), in order, once each."""
    ids = sim.scenario.route_roadblock_ids if route_roadblock_ids is None else route_roadblock_ids
    return [r for r in dict.fromkeys(str(r) for r in ids) if r in sim.map.roadblocks]


def route_lane_set(sim: Simulation, route_roadblock_ids=None) -> frozenset:
    """The on-route lanes and connectors of `route_roadblock_ids` (default the scenario's route)."""
    return frozenset(sim.map.route_lane_ids(_route(sim, route_roadblock_ids)))


def route_centerline_xy(sim: Simulation, ego: np.ndarray, route_roadblock_ids=None) -> np.ndarray:
    """The centreline [P, 2] of `route_roadblock_ids` (default the scenario's route) from the ego's lane."""
    ids = sim.scenario.route_roadblock_ids if route_roadblock_ids is None else route_roadblock_ids
    line = sim.map.route_centerline(ids, (ego[X], ego[Y], ego[HEADING]))
    return np.asarray(line.xy)


def navsim_reactive_traffic(sim: Simulation, world: WorldState, *, num_steps: int = NUM_STEPS,
                            radius: float = MAP_RADIUS, centerline: np.ndarray | None = None,
                            past_states: np.ndarray | None = None, route_roadblock_ids=None):
    """NAVSIM's reactive traffic (`navsim_cache.NavsimReactiveTraffic`) at `world`: fresh IDM agents with
    `idm.NAVSIM_IDM` spawned from the vehicles the world shows now, the other objects replaying the log; its
    `.scene(ego_states)` is the scoring scene of one plan."""
    from .navsim_cache import NavsimReactiveTraffic

    base = scoring_scene(sim, world, agent_mode="non_reactive", num_steps=num_steps, radius=radius,
                         centerline=centerline, past_states=past_states, route_roadblock_ids=route_roadblock_ids)
    return NavsimReactiveTraffic.from_world(sim, world, base, num_steps=num_steps + 1)


def scoring_scene(sim: Simulation, world: WorldState, *, ego_states: np.ndarray | None = None,
                  agent_mode: str | None = None, num_steps: int = NUM_STEPS, radius: float = MAP_RADIUS,
                  centerline: np.ndarray | None = None, past_states: np.ndarray | None = None,
                  reactive: str = REACTIVE_SEMANTICS, route_roadblock_ids=None) -> ScoringScene:
    """The scene seen from `world` over `num_steps` steps. `agent_mode` defaults to the simulation's; "reactive"
    needs `ego_states` [num_steps + 1, 11] (the agents react to that ego trajectory), with `reactive` semantics:
    "navsim" (default) NAVSIM's reactive traffic of plan scoring (`navsim_reactive_traffic`), "world" the
    simulation's own IDM agents continued from `world` (the closed-loop world's devkit semantics, `SimConfig.idm`).
    `past_states` [H, 11] (0.1 s apart, ending before the current state) replace the logged human past for HC, e.g.
    the realised past of a closed-loop ego. `route_roadblock_ids`: the route of the on-route lanes and the
    centreline (PDM-Closed's repaired route, as NAVSIM's metric cache; default the scenario's); the red lights are
    the scenario route's."""
    mode = agent_mode or sim.config.agent_mode
    if reactive not in REACTIVE_MODES:
        raise ValueError(f"reactive must be one of {REACTIVE_MODES}, got {reactive!r}")
    if mode == "reactive" and reactive == "navsim":
        if ego_states is None:
            raise ValueError("a reactive scoring scene needs ego_states (the trajectory the agents react to)")
        return navsim_reactive_traffic(sim, world, num_steps=num_steps, radius=radius, centerline=centerline,
                                       past_states=past_states,
                                       route_roadblock_ids=route_roadblock_ids).scene(ego_states)
    m = sim.map
    ego = world.ego
    c = ego_box(ego).mean(axis=0)
    layers = _map_layers(m)
    near = near_map_indices(m, c, radius)
    route_key = None if route_roadblock_ids is None else tuple(_route(sim, route_roadblock_ids))
    light_ids = route_lane_set(sim)
    route_ids = light_ids if route_key is None else route_lane_set(sim, route_key)

    def _centerline():
        if centerline is None and route_key is not None:
            return route_centerline_xy(sim, ego, route_key)
        return centerline

    # objects per step
    T = num_steps + 1
    last = sim.num_iterations - 1
    frames: list = []
    if mode == "reactive":
        if ego_states is None:
            raise ValueError("a reactive scoring scene needs ego_states (the trajectory the agents react to)")
        rsim = sim if sim.config.agent_mode == "reactive" else Simulation(
            sim.scenario, m, replace(sim.config, agent_mode="reactive"))
        w = world if world.idm is not None else rsim.reset(ego)
        for t in range(T):
            frames.append(rsim.objects(w))
            if w.iteration + 1 <= last and t + 1 < T:
                w = rsim.step(w, ego_state=np.asarray(ego_states[t + 1]))
    elif mode == "non_reactive":
        # the same world is often scored several times in a row (the submitted plan, the experts' checks)
        key = (id(sim), id(world), world.iteration, world.ego.tobytes(), T, float(radius),
               None if centerline is None else np.asarray(centerline).tobytes(), route_key)
        hit = _SCENE_CACHE.get("key") == key
        if not hit:
            _SCENE_CACHE["key"] = key
            _SCENE_CACHE["scene"] = _log_replay_scene(sim, world, T, near, route_ids, radius, _centerline(), None,
                                                      light_ids)
            _SCENE_CACHE["sim"] = sim  # keep the ids alive
            _SCENE_CACHE["world"] = world
        scene = _SCENE_CACHE["scene"]
        if past_states is not None:
            past = np.asarray(past_states, dtype=np.float64)
            scene = replace(scene, human_past_states=past if len(past) else None, _cache=scene._cache)
        return scene
    else:
        osim = sim if sim.config.agent_mode == mode else Simulation(sim.scenario, m,
                                                                    replace(sim.config, agent_mode=mode))
        for t in range(T):
            it = min(world.iteration + t, last)
            frames.append(osim.objects(WorldState(it, 0, ego, None, None)))
    return scene_from_frames(sim, world, frames, near=near, route_ids=route_ids, centerline=_centerline(),
                             past_states=past_states, light_ids=light_ids)


def scene_from_frames(sim: Simulation, world: WorldState, frames, *, near=None, route_ids=None, centerline=None,
                      past_states=None, radius: float = MAP_RADIUS, light_ids=None) -> ScoringScene:
    """A scoring scene from per-step `Objects` (e.g. the agents as simulated over an executed step), starting at
    `world`: tracks by first appearance, each typed, headed and timed by its first sighting (NAVSIM's
    unique_objects). `past_states` [H, 11] replace the logged human past for HC (an empty array: no HC).
    `route_ids`: the on-route lanes (default the scenario route's); `light_ids`: the lanes whose red lights count
    (default `route_ids`)."""
    from ..data.schema import AGENT_CATEGORIES

    m = sim.map
    if near is None:
        near = near_map_indices(m, ego_box(world.ego).mean(axis=0), radius)
    if route_ids is None:
        route_ids = route_lane_set(sim)
    tracks, corners, valid, heading, speed = _sightings(frames)
    is_agent = np.isin(sim.scenario.agents.category[tracks], AGENT_CATEGORIES)
    return _assemble_scene(sim, world, tracks, corners, valid, heading, speed, is_agent, near, frozenset(route_ids),
                           centerline, past_states, light_ids)


def _sightings(frames) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The objects of per-step `Objects` frames as tracks: (track columns in order of first appearance, corners
    [T, M, 4, 2] and valid [T, M] per step, heading [M] and speed [M] at each track's first sighting), NAVSIM's
    unique_objects (one array pass instead of a Python loop over every sighting)."""
    T = len(frames)
    sizes = [len(fr) for fr in frames]
    if not sum(sizes):
        return [], np.zeros((T, 0, 4, 2)), np.zeros((T, 0), dtype=bool), np.zeros(0), np.zeros(0)
    seen = [fr for fr in frames if len(fr)]
    track = np.concatenate([np.asarray(fr.track, dtype=np.int64) for fr in seen])
    uniq, first = np.unique(track, return_index=True)
    order = np.argsort(first, kind="stable")  # first appearance: frame order, then row order within a frame
    col = np.empty(len(uniq), dtype=np.int64)
    col[order] = np.arange(len(uniq))
    cols = col[np.searchsorted(uniq, track)]
    step = np.repeat(np.arange(T), sizes)
    M = len(uniq)
    corners = np.zeros((T, M, 4, 2))
    valid = np.zeros((T, M), dtype=bool)
    corners[step, cols] = np.concatenate([fr.corners() for fr in seen])
    valid[step, cols] = True
    at = first[order]
    heading = np.concatenate([fr.heading for fr in seen])[at]
    speed = np.hypot(np.concatenate([fr.vx for fr in seen])[at], np.concatenate([fr.vy for fr in seen])[at])
    return uniq[order].tolist(), corners, valid, heading, speed


def _assemble_scene(sim, world, tracks, corners, valid, heading, speed, is_agent, near, route_ids, centerline,
                    past_states, light_ids=None) -> ScoringScene:
    """The rest of a scoring scene around its objects: red lights on the route per step, the tracks (and red
    connectors the ego is inside) already touching the ego at t0 (PDMObservation.update; ignored by NC and TTC),
    the human past for HC, the map and the centreline."""
    ag = sim.scenario.agents
    T = corners.shape[0]
    last = sim.num_iterations - 1
    light_ids = route_ids if light_ids is None else light_ids
    red = []
    for t in range(T):
        it = min(world.iteration + t, last)
        red.append(tuple(sorted(sim.red_light_polygons(it, light_ids).items())))
    eb = ego_box(world.ego)
    ego_poly = shapely.Polygon(eb)
    collided = set()
    if len(tracks) and valid[0].any():
        # only boxes whose bounds meet the ego box's can intersect it (touching included): polygons for those only
        rows = np.nonzero(valid[0])[0]
        c0 = corners[0, rows]
        lo, hi = eb.min(axis=0), eb.max(axis=0)
        rows = rows[(c0[:, :, 0].max(axis=1) >= lo[0]) & (c0[:, :, 0].min(axis=1) <= hi[0])
                    & (c0[:, :, 1].max(axis=1) >= lo[1]) & (c0[:, :, 1].min(axis=1) <= hi[1])]
        if len(rows):
            hit = shapely.intersects(shapely.polygons(corners[0, rows]), ego_poly)
            collided = {ag.track_tokens[tracks[i]] for i, h in zip(rows, hit) if h}
    for cid, poly in red[0]:
        if ego_poly.within(poly):
            collided.add(f"red_light_{cid}")
    past = _human_past(sim, world.iteration) if past_states is None else np.asarray(past_states, dtype=np.float64)
    if past is not None and len(past) == 0:
        past = None
    layers = _map_layers(sim.map)
    cl = route_centerline_xy(sim, world.ego) if centerline is None else centerline
    return ScoringScene(
        map_ids=tuple(layers["ids"][near]), map_types=tuple(layers["types"][near]),
        map_polygons=tuple(layers["polys"][near]), route_lane_ids=route_ids, centerline=cl,
        obj_tokens=tuple(ag.track_tokens[t] for t in tracks), obj_is_agent=is_agent, obj_heading=heading,
        obj_speed=speed, obj_corners=corners, obj_valid=valid, red_light_polygons=tuple(red),
        collided_track_ids=frozenset(collided), human_past_states=past, name=sim.scenario.token)


def _log_replay_scene(sim, world, T, near, route_ids, radius, centerline, past_states,
                      light_ids=None) -> ScoringScene:
    """`scoring_scene` for log replay, vectorized over the window's frames (same tracks, order and values as the
    per-frame construction: tracks by first appearance, then column)."""
    from ..data.schema import AGENT_CATEGORIES

    ag = sim.scenario.agents
    last = sim.num_iterations - 1
    frames = sim.frame(0) + np.minimum(world.iteration + np.arange(T), last)
    valid = ag.valid[frames]  # [T, Mtot]
    any_v = valid.any(axis=0)
    cols = np.nonzero(any_v)[0]
    first = np.argmax(valid[:, cols], axis=0)
    order = np.lexsort((cols, first))
    tracks = cols[order]
    first = first[order]
    v = valid[:, tracks]
    M = len(tracks)
    corners = np.zeros((T, M, 4, 2))
    if M:
        ti, mi = np.nonzero(v)
        fr, tr = frames[ti], tracks[mi]
        corners[ti, mi] = box_corners(ag.x[fr, tr], ag.y[fr, tr], ag.heading[fr, tr], ag.length[fr, tr],
                                      ag.width[fr, tr])
    f_first = frames[first]
    heading = ag.heading[f_first, tracks].astype(np.float64)
    speed = np.hypot(np.nan_to_num(ag.vx[f_first, tracks]), np.nan_to_num(ag.vy[f_first, tracks]))
    is_agent = np.isin(ag.category[tracks], np.asarray(AGENT_CATEGORIES))
    return _assemble_scene(sim, world, tracks, corners, v, heading, speed, is_agent, near, route_ids, centerline,
                           past_states, light_ids)


def logged_hc_past(sim: Simulation, iteration: int) -> np.ndarray:
    """The logged human past HC prepends at `iteration` (the last 1.5 s, sampled as NAVSIM samples it: what a
    scoring scene holds by default); empty [0, 11] where the scenario's history is shorter."""
    past = _human_past(sim, iteration)
    return np.zeros((0, STATE_SIZE)) if past is None else past


def _human_past(sim: Simulation, iteration: int) -> np.ndarray | None:
    sc = sim.scenario
    f = sc.start_index + iteration
    n = int(round(HISTORY_COMFORT_PAST_S / sc.dt_s))
    f0 = f - n
    if f0 < 0:
        return None
    e = sc.ego
    rows = []
    for k in range(f0, f + 1):
        rows.append(make_state(e.x[k], e.y[k], e.heading[k], velocity=e.vx[k], acceleration=e.ax[k],
                               velocity_y=e.vy[k], acceleration_y=e.ay[k], angular_velocity=e.yaw_rate[k]))
    return human_past_for_hc(np.array(rows), sc.timestamps_us[f0:f + 1])


def plan_states(world: WorldState, plans: np.ndarray, *, plan_interval_s: float = 0.5,
                num_steps: int = NUM_STEPS, lqr=None, start_pose: np.ndarray | None = None) -> np.ndarray:
    """Plans [N, K, 3] in the current rear-axle frame -> simulated states [N, num_steps + 1, 11] (LQR + bicycle).

    The reference starts at the ego's pose (navsim transform_trajectory prepends the initial ego state), or at
    `start_pose` (global x, y, heading) where the plan's own t0 state is elsewhere: PDM-Closed's trajectory starts at
    the ego's projection on its path (pdm_generator.py `_initialize_states`), and NAVSIM tracks it from there."""
    from ..sim.lqr import LQRConfig
    from ..sim.plans import interpolate_poses, local_to_global_poses, plan_times_us, sample_times_us

    plans = np.asarray(plans, dtype=np.float64).reshape(-1, np.shape(plans)[-2], 3)
    if start_pose is None:
        ref = plan_to_reference(plans, world.ego, world.time_us, plan_interval_s=plan_interval_s,
                                horizon_s=num_steps * 0.1)
    else:
        if not np.all(np.isfinite(plans)):
            raise ValueError("plan contains NaN or infinite values")
        K = plans.shape[1]
        t0 = int(world.time_us)
        glob = local_to_global_poses(plans, (world.ego[X], world.ego[Y], world.ego[HEADING]))
        start = np.broadcast_to(np.asarray(start_pose, dtype=np.float64).reshape(1, 1, 3), (len(plans), 1, 3))
        poses = np.concatenate([start, glob], axis=1)
        times = np.concatenate([[t0], plan_times_us(t0, K * plan_interval_s, plan_interval_s)])
        q = np.clip(sample_times_us(t0, num_steps * 0.1, 0.1), times[0], times[-1])
        ref = interpolate_poses(times, poses, q)
    return track_references(world.ego, ref, num_steps, lqr or LQRConfig())


def pseudo_simulate(sim: Simulation, world: WorldState, plans: np.ndarray, *, agent_mode: str = "non_reactive",
                    reference_plan: np.ndarray | None = None, previous_states: np.ndarray | None = None,
                    plan_interval_s: float = 0.5, config: ScorerConfig = ScorerConfig(),
                    past_states: np.ndarray | None = None, reference_interval_s: float | None = None,
                    reference_start_pose: np.ndarray | None = None, scene: ScoringScene | None = None,
                    reactive: str = REACTIVE_SEMANTICS, route_roadblock_ids=None) -> tuple[PlanScores, np.ndarray]:
    """Score plans [N, K, 3] from `world`: interpolate to 4 s at 10 Hz, track with the LQR + bicycle, score against
    the agents in `agent_mode` ("non_reactive": log replay, "reactive": IDM agents reacting to each plan's ego,
    "constant_velocity"). Reactive agents follow NAVSIM's reactive traffic by default (`reactive="navsim"`; "world"
    continues the simulation's own IDM agents: see `scoring_scene`).

    EP: with `reference_plan` (e.g. PDM-Closed's), each plan is normalised against the reference and itself, as
    NAVSIM scores an agent beside PDM-Closed (batched and one-at-a-time results are then identical); without, the
    plans are normalised jointly as in `score_proposals`. `reference_interval_s` is the reference's pose spacing
    (default `plan_interval_s`): NAVSIM normalises against PDM-Closed's dense trajectory, 40 poses 0.1 s apart
    (`metric_cache.trajectory`), e.g. the `pdm_closed_40x0p1s` of a golden score file; that trajectory starts at
    the ego's projection on PDM-Closed's path, not at the ego (`reference_start_pose`, global x, y, heading;
    default the ego's pose). `scene`: a prebuilt
    non-reactive scene to score in (e.g. NAVSIM's metric cache, `navsim_cache.metric_cache_scene`) instead of the
    simulation's log. `route_roadblock_ids`: the route of the on-route lanes and the centreline (NAVSIM scores on
    PDM-Closed's repaired route, `experts.route_correction`; default the scenario's: see `scoring_scene`).
    Returns (scores, states [N, 41, 11])."""
    plans = np.asarray(plans, dtype=np.float64)
    if plans.ndim == 2:
        plans = plans[None]
    states = plan_states(world, plans, plan_interval_s=plan_interval_s, lqr=sim.config.lqr)
    # the default route's centreline is left to a log-replay or constant-velocity scene, which computes the same one
    # (`scoring_scene`): every scoring of one world then shares the cached log-replay scene (valid_start, recovery)
    own = scene is None and route_roadblock_ids is None and agent_mode != "reactive"
    cl = None if own else (route_centerline_xy(sim, world.ego, route_roadblock_ids) if scene is None
                           else scene.centerline)
    reference = ref_states = None
    if reference_plan is not None:
        ref_states = plan_states(world, np.asarray(reference_plan)[None],
                                 plan_interval_s=plan_interval_s if reference_interval_s is None
                                 else reference_interval_s, lqr=sim.config.lqr, start_pose=reference_start_pose)

    def _reference(scene):
        r = score_states(scene, ref_states, config)
        return float(r.progress_raw[0]), float(r.multiplicative_metrics_prod[0])

    if agent_mode == "reactive":
        # NAVSIM (evaluate/pdm_score.py) simulates the agents once, reacting to the agent's trajectory, and scores
        # the PDM-Closed reference and the agent's plan together against that traffic: so the reference is scored
        # in each plan's own reactive scene
        if reactive not in REACTIVE_MODES:
            raise ValueError(f"reactive must be one of {REACTIVE_MODES}, got {reactive!r}")
        if reactive == "navsim":
            scene_of = navsim_reactive_traffic(sim, world, centerline=cl, past_states=past_states,
                                               route_roadblock_ids=route_roadblock_ids).scene
        else:
            def scene_of(st):
                return scoring_scene(sim, world, ego_states=st, agent_mode="reactive", centerline=cl,
                                     past_states=past_states, reactive="world",
                                     route_roadblock_ids=route_roadblock_ids)
        parts = []
        for i in range(len(plans)):
            scene = scene_of(states[i])
            prev = None if previous_states is None else previous_states[i:i + 1]
            ref_i = _reference(scene) if ref_states is not None else None
            parts.append(score_states(scene, states[i:i + 1], config, progress_reference=ref_i,
                                      previous_states=prev))
        scores = PlanScores(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in
                               PlanScores.__dataclass_fields__})
        if ref_states is None:  # joint normalisation over the batch, as score_proposals
            from .epdms import _normalise_progress

            scores = scores.replace(ego_progress=_normalise_progress(scores.progress_raw,
                                                                     scores.multiplicative_metrics_prod, config, None))
    else:
        if scene is None:
            scene = scoring_scene(sim, world, agent_mode=agent_mode, centerline=cl, past_states=past_states,
                                  route_roadblock_ids=route_roadblock_ids)
        elif past_states is not None:
            past = np.asarray(past_states, dtype=np.float64)
            scene = replace(scene, human_past_states=past if len(past) else None, _cache=scene._cache)
        if ref_states is not None:
            reference = _reference(scene)
        scores = score_states(scene, states, config, progress_reference=reference, previous_states=previous_states)
    return scores, states


def episode_summary(sim: Simulation, worlds: list[WorldState], config: ScorerConfig = ScorerConfig(),
                    human: "PlanScores | None" = None, filter_variant: str = "fixed",
                    past_states: np.ndarray | None = None, frames: list | None = None) -> dict:
    """The EPDMS sub-metrics over a realised closed-loop rollout (`worlds` at consecutive iterations).

    The scene holds what actually happened (the agents as simulated, the lights of the log); EP is the ego's
    progress along the route centreline normalised by the logged human's over the same iterations (the 5 m rule
    applies). HC is the comfort of the realised trajectory with `past_states` prepended, as NAVSIM prepends the
    human past to a plan (`PDMScorer._calculate_history_comfort`): the ego's past [H, 11] before worlds[0],
    sampled as NAVSIM samples the human past (`epdms.human_past_for_hc`; `logged_hc_past` gives the logged one,
    `envs.history.hc_past` a perturbed one). None or an empty array: no past, and HC is 1 (`_history_comfort`). EC
    compares the realised trajectory with itself and is left out. With `human` (the `scores` of the logged
    drive's own summary) NAVSIM's human false-positive filter is applied (`filter_variant`), and `epdms` is the
    filtered score. `frames`: `sim.objects(w)` of each world where the caller has them (the env keeps them).
    Returns sub-scores, `epdms` (multiplicative product x weighted / 14), and diagnostics."""
    if len(worlds) < 2:
        raise ValueError("an episode summary needs at least two world states")
    past = None
    if past_states is not None:
        past = np.asarray(past_states, dtype=np.float64)
        if past.ndim != 2 or past.shape[1] != STATE_SIZE:
            raise ValueError(f"past_states must be [H, {STATE_SIZE}] ego states, got shape {past.shape}")
        if len(past) == 0:
            past = None
    states = np.stack([w.ego for w in worlds])[None]
    w0 = worlds[0]
    T = len(worlds)
    if frames is None:
        frames = [sim.objects(w) for w in worlds]
    elif len(frames) != len(worlds):
        raise ValueError(f"frames must hold one Objects per world: {len(frames)} for {len(worlds)} worlds")
    m = sim.map
    tracks, corners, valid, heading, speed = _sightings(frames)
    base = scoring_scene(sim, w0, agent_mode="non_reactive", num_steps=1)
    route_ids = base.route_lane_ids
    red = tuple(tuple(sorted(sim.red_light_polygons(w.iteration, route_ids).items())) for w in worlds)
    # the map must cover the whole episode: union of the maps around its start and end
    end = scoring_scene(sim, worlds[-1], agent_mode="non_reactive", num_steps=1)
    ids = list(base.map_ids)
    types, polys = list(base.map_types), list(base.map_polygons)
    for i, t, p in zip(end.map_ids, end.map_types, end.map_polygons):
        if i not in ids:
            ids.append(i), types.append(t), polys.append(p)
    from ..data.schema import AGENT_CATEGORIES

    ag = sim.scenario.agents
    scene = ScoringScene(
        map_ids=tuple(ids), map_types=tuple(types), map_polygons=tuple(polys), route_lane_ids=route_ids,
        centerline=base.centerline, obj_tokens=tuple(ag.track_tokens[t] for t in tracks),
        obj_is_agent=np.isin(ag.category[tracks], AGENT_CATEGORIES), obj_heading=heading, obj_speed=speed,
        obj_corners=corners, obj_valid=valid, red_light_polygons=red, collided_track_ids=base.collided_track_ids,
        human_past_states=past, name=sim.scenario.token)
    # human progress over the same iterations, on the same centreline
    sc = sim.scenario
    f0, f1 = sc.start_index + w0.iteration, sc.start_index + worlds[-1].iteration
    c = sim.config.vehicle.rear_axle_to_center
    hx = sc.ego.x[[f0, f1]] + c * np.cos(sc.ego.heading[[f0, f1]])
    hy = sc.ego.y[[f0, f1]] + c * np.sin(sc.ego.heading[[f0, f1]])
    arc, _ = polyline_project(np.ascontiguousarray(np.stack([hx, hy], -1)),
                              np.ascontiguousarray(scene.centerline), scene.centerline_s())
    human_progress = max(0.0, float(arc[1] - arc[0]))
    scores = score_states(scene, states, config, progress_reference=(human_progress, 1.0))
    row = scores.row(0)
    row.pop("two_frame_extended_comfort")
    row["epdms"] = row["pdm_score"]
    if human is not None:
        from .epdms import human_filter

        f = human_filter(scores.replace(two_frame_extended_comfort=np.full(1, np.nan)), human, filter_variant, config)
        row["epdms_unfiltered"] = row["epdms"]
        row["epdms"] = float(f.final[0])
    row.update(human_progress_m=human_progress, steps=T, at_fault_collision=bool(scores.no_at_fault_collisions[0] < 1),
               off_road=bool(scores.drivable_area_compliance[0] < 1), scores=scores)
    return row


def navsim_plan_scores(sim: Simulation, world: WorldState, plans: np.ndarray, scene: ScoringScene, *,
                       agent_mode: str = "non_reactive", reference_plan: np.ndarray | None = None,
                       reference_interval_s: float | None = 0.1, reference_start_pose: np.ndarray | None = None,
                       human_plan: np.ndarray | None = None,
                       filter_variant: str = "fixed", plan_interval_s: float = 0.5,
                       reactive_scene=None, config: ScorerConfig = ScorerConfig()
                       ) -> tuple[PlanScores, PlanScores | None]:
    """NAVSIM's `pdm_score` (navsim/evaluate/pdm_score.py) of plans [N, K, 3] in a NAVSIM scene `scene` (log replay,
    e.g. `navsim_cache.metric_cache_scene`): each plan is scored beside `reference_plan` (PDM-Closed's dense
    trajectory, poses `reference_interval_s` apart, starting at `reference_start_pose`: see `pseudo_simulate`) for
    EP. `agent_mode="reactive"`: `reactive_scene(ego_states)`
    gives the scene whose traffic reacts to a simulated ego trajectory [41, 11] (NAVSIM simulates the agents once
    per plan and scores the reference in that same traffic).

    With `human_plan` [K, 3] (the logged human's 4 s, 0.5 s apart), NAVSIM's human filter is applied: the human plan
    is scored alone, in the same traffic mode, **without** the human past (so its HC is 1 and never filters the
    plan's HC), and each column it scores exactly 0 becomes 1 for the plans. Returns (raw scores, filtered scores or
    None)."""
    plans = np.asarray(plans, dtype=np.float64)
    if plans.ndim == 2:
        plans = plans[None]
    no_past = np.zeros((0, STATE_SIZE))
    if agent_mode == "non_reactive":
        raw, _ = pseudo_simulate(sim, world, plans, reference_plan=reference_plan, scene=scene, config=config,
                                 reference_interval_s=reference_interval_s, plan_interval_s=plan_interval_s,
                                 reference_start_pose=reference_start_pose)
        human = None
        if human_plan is not None:
            human, _ = pseudo_simulate(sim, world, np.asarray(human_plan, dtype=np.float64)[None], scene=scene,
                                       past_states=no_past, config=config, plan_interval_s=plan_interval_s)
    elif agent_mode == "reactive":
        if reactive_scene is None:
            raise ValueError("agent_mode='reactive' needs reactive_scene (ego states -> ScoringScene)")
        lqr = sim.config.lqr
        states = plan_states(world, plans, plan_interval_s=plan_interval_s, lqr=lqr)
        ref_states = None if reference_plan is None else plan_states(
            world, np.asarray(reference_plan, dtype=np.float64)[None],
            plan_interval_s=plan_interval_s if reference_interval_s is None else reference_interval_s, lqr=lqr,
            start_pose=reference_start_pose)
        parts = []
        for i in range(len(plans)):
            sc = reactive_scene(states[i])
            ref = None
            if ref_states is not None:
                r = score_states(sc, ref_states, config)
                ref = (float(r.progress_raw[0]), float(r.multiplicative_metrics_prod[0]))
            parts.append(score_states(sc, states[i:i + 1], config, progress_reference=ref))
        raw = PlanScores(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in PlanScores.__dataclass_fields__})
        human = None
        if human_plan is not None:
            hs = plan_states(world, np.asarray(human_plan, dtype=np.float64)[None], plan_interval_s=plan_interval_s,
                             lqr=lqr)
            sc = replace(reactive_scene(hs[0]), human_past_states=None)
            human = score_states(sc, hs, config)
    else:
        raise ValueError(f"agent_mode must be 'non_reactive' or 'reactive', got {agent_mode!r}")
    filt = None if human is None else human_filter(raw, human, filter_variant, config).scores
    return raw, filt
