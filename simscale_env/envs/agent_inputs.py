"""What the env tells the agent bridges (`agents.navsim_bridge`, `agents.nuplan_bridge`) through `info`: plain arrays,
no live objects, so they pickle across vector-env workers.

- `navsim_ego_history`: `info["ego_history"]`, NAVSIM's `AgentInput.ego_statuses` as arrays: the 4 history frames
  at 2 Hz, oldest first, the current frame last (`navsim/common/dataclasses.py` `AgentInput.from_scene_dict_list`:
  poses relative to the last history frame, velocity and acceleration in each frame's own vehicle frame, the
  driving command one-hot);
- `camera_calibration`: `info["camera_calibration"]`, NAVSIM's `Camera` fields of the delivered images (after the
  env's resize and centre crop);
- `planner_input`: `info["planner_input"]`, what nuplan-devkit's `PlannerInitialization` and `PlannerInput` hold
  (route, goal, map, the ego's and the objects' history at 0.1 s, the traffic lights).
"""

from __future__ import annotations

import numpy as np

from ..data.schema import CATEGORIES
from ..geometry import global_to_local, quaternion_to_matrix
from ..sim.state import ACCELERATION_X, ACCELERATION_Y, HEADING, STATE_SIZE, VELOCITY_X, VELOCITY_Y, X, Y

NAVSIM_HISTORY_FRAMES = 4  # navsim/common/dataclasses.py SceneFilter.num_history_frames
NAVSIM_FRAME_STEPS = 5  # 0.5 s (NAVSIM_INTERVAL_LENGTH) at the simulation's 0.1 s
NUM_DISTORTION = 5  # NAVSIM's Camera.distortion: k1, k2, p1, p2, k3


def ego_past(env) -> np.ndarray:
    """The ego's states [H, 11] over the past the env keeps (`envs.history.PAST_S`, 0.1 s apart: the logged or
    perturbed past before the start, then the realised states), oldest first, the current state last."""
    past = np.asarray(list(env._past), dtype=np.float64).reshape(-1, STATE_SIZE)
    return np.vstack([past, env.world.ego[None]])


def _history_picks(n: int) -> np.ndarray:
    """Indices into a history of `n` states 0.1 s apart (current last) of NAVSIM's 4 frames, 1.5, 1.0, 0.5 and 0 s
    ago; the oldest state where the history is shorter (as `obs["ego_status"]` picks them)."""
    return np.maximum(0, n - 1 - NAVSIM_FRAME_STEPS * np.arange(NAVSIM_HISTORY_FRAMES - 1, -1, -1))


def navsim_ego_history(env) -> dict:
    """NAVSIM's 4 ego statuses (oldest first, the current one last) as arrays:

    - "time_us" [4] int64: the frames' times (the current one is `info["time_us"]`);
    - "ego_pose" [4, 3] float32: (x, y, heading) of the rear axle in the current frame's rear-axle frame (the
      current pose is (0, 0, 0); the same poses as `obs["ego_status"][8:]`, unclipped);
    - "ego_velocity", "ego_acceleration" [4, 2] float32: (longitudinal, lateral) in each frame's own vehicle frame,
      m/s and m/s^2 (NAVSIM copies `ego_dynamic_state` without rotating it);
    - "driving_command" [4, 4] int64: NAVSIM's one-hot (left, straight, right, unknown) of each frame, from the
      episode's route as for the current frame (`map.commands`)."""
    hist = ego_past(env)
    picks = _history_picks(len(hist))
    sel = hist[picks]
    dt_us = int(round(env.sim.scenario.dt_s * 1e6))
    times = int(env.world.time_us) - dt_us * (len(hist) - 1 - picks).astype(np.int64)
    cmd = np.stack([env._driving_command(s) for s in sel]).astype(np.int64)
    return {"time_us": times.astype(np.int64),
            "ego_pose": global_to_local(sel[:, [X, Y, HEADING]], env.world.ego[[X, Y, HEADING]]).astype(np.float32),
            "ego_velocity": sel[:, [VELOCITY_X, VELOCITY_Y]].astype(np.float32),
            "ego_acceleration": sel[:, [ACCELERATION_X, ACCELERATION_Y]].astype(np.float32),
            "driving_command": cmd}


def lidar_to_ego(env) -> np.ndarray:
    """The [4, 4] lidar -> ego (rear axle) transform of the scenario's log: the nuPlan `lidar` table's extrinsic
    (MergedPointCloud) or OpenScene's `lidar2ego_*`; the identity where the log has none."""
    sc = env.sim.scenario
    builder = env._builder
    t, q = np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0])
    with env._builder_lock():  # a prefetching thread may be loading from the same builder
        if hasattr(builder, "db"):  # nuPlan .db logs
            ext = builder.db(sc.log_name).lidar_extrinsic
            if ext is not None:
                t, q = ext
        elif hasattr(builder, "frames"):  # OpenScene pickles
            frames = builder.frames(sc.log_name)
            if frames:
                t = frames[0].get("lidar2ego_translation", t)
                q = frames[0].get("lidar2ego_rotation", q)
    out = np.eye(4)
    out[:3, :3] = quaternion_to_matrix(np.asarray(q, dtype=np.float64))
    out[:3, 3] = np.asarray(t, dtype=np.float64)
    return out


def camera_calibration(env, logged: bool) -> dict:
    """{channel: NAVSIM Camera fields} of the delivered images, in the order of `obs["cameras"]`:

    - "intrinsics" [3, 3]: of the delivered width x height image (the log's intrinsics after the env's scale and
      centre crop, `render.camera.fit_intrinsics`);
    - "distortion" [5]: zeros for rendered images (a pinhole renderer), the log's for logged JPEGs (`logged`);
    - "sensor2lidar_rotation" [3, 3], "sensor2lidar_translation" [3]: camera -> lidar (OpenCV camera: x right, y
      down, z forward), as OpenScene writes them: lidar2ego^-1 @ camera2ego (`lidar_to_ego`);
    - "cam_to_ego" [4, 4]: camera -> ego rear axle; "width", "height": the image size in pixels.
    Fixed for an episode: computed once per (log, size, logged), copied into every info."""
    from ..render.camera import camera_models

    cfg = env.config
    sc = env.sim.scenario
    key = (sc.log_name, sc.log_path, tuple(cfg.cameras), cfg.width, cfg.height, bool(logged))
    cache = getattr(env, "_camera_calibration_cache", None)
    if cache is not None and cache[0] == key:
        return _copy(cache[1])
    lidar = lidar_to_ego(env)
    inv = np.linalg.inv(lidar)
    by = {c.channel: c for c in sc.cameras}
    out = {}
    for cam in camera_models(sc.cameras, cfg.cameras, cfg.width, cfg.height):
        s2l = inv @ cam.cam_to_ego
        dist = np.zeros(NUM_DISTORTION)
        if logged:
            d = np.asarray(by[cam.channel].distortion, dtype=np.float64).ravel()[:NUM_DISTORTION]
            dist[:len(d)] = d
        out[cam.channel] = {"intrinsics": cam.K.copy(), "distortion": dist,
                            "sensor2lidar_rotation": s2l[:3, :3].copy(), "sensor2lidar_translation": s2l[:3, 3].copy(),
                            "cam_to_ego": cam.cam_to_ego.copy(), "width": int(cam.width), "height": int(cam.height)}
    env._camera_calibration_cache = (key, out)
    return _copy(out)


def _copy(calibration: dict) -> dict:
    """Fresh arrays for every info (users keep infos; gymnasium's checker flags infos that share objects)."""
    return {ch: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in e.items()}
            for ch, e in calibration.items()}


def _frame_objects(env, iteration: int) -> dict:
    """The tracked objects at a scenario iteration (global frame, box centres): the simulated world's for the
    episode's iterations, the log's for iterations before the start (nuPlan fills its buffer from the log)."""
    sc = env.sim.scenario
    ag = sc.agents
    tokens = np.asarray(ag.track_tokens)
    if iteration >= 0:
        world = env._worlds[iteration]  # the episode's worlds, one per iteration from 0
        if world.iteration != iteration:
            raise RuntimeError(f"the env's worlds are out of step: index {iteration} holds iteration {world.iteration}")
        o = env.sim.objects(world)
        track, cat = o.track, o.category
        cols = {k: getattr(o, k) for k in ("x", "y", "heading", "vx", "vy", "length", "width", "height")}
    else:
        f = sc.start_index + iteration
        track = np.nonzero(ag.valid[f])[0]
        cat = ag.category[track]
        cols = {k: getattr(ag, k)[f, track] for k in ("x", "y", "heading", "vx", "vy", "length", "width", "height")}
    out = {"track_token": tokens[track].astype(str), "category": np.asarray(cat, dtype=np.int64),
           "category_name": np.asarray([CATEGORIES[int(c)] for c in cat], dtype=str)}
    out.update({k: np.nan_to_num(np.asarray(v, dtype=np.float64)) for k, v in cols.items()})
    return out


def planner_input(env) -> dict:
    """What a nuPlan planner reads (`agents.nuplan_bridge` builds nuplan-devkit's `PlannerInitialization` and
    `PlannerInput` from it), all in the map's global frame:

    - "route_roadblock_ids" [str], "mission_goal" (x, y, heading) or None: the scenario's, as nuPlan gives them;
    - "map_location", "maps_root": `simscale_env.map.load_map(map_location, maps_root)` is the map (cached per
      process: the env's own MapAPI object);
    - "iteration", "time_us": the simulation iteration (0.1 s steps) and its time;
    - "ego_states" [H, 11] float64: the rear-axle states (`sim.state` order: x, y, heading, velocity_x,
      velocity_y, acceleration_x, acceleration_y, steering angle, steering rate, yaw rate, yaw acceleration; velocity
      and acceleration in the ego frame) 0.1 s apart over the past the env keeps (1.5 s: H = 16 unless the log
      starts later), oldest first, the current state last; "ego_time_us" [H] their times;
    - "objects": per ego state, {"track_token", "category" (`data.schema.CATEGORIES` code), "category_name", "x",
      "y", "heading", "vx", "vy", "length", "width", "height"} arrays of the tracked objects (box centres; global
      velocities) at that time: the simulated ones during the episode, the logged ones before its start;
    - "traffic_lights": {"lane_connector_id" [K] int64, "status" [K] int64 (0 green, 1 yellow, 2 red, 3 unknown)}
      at the current iteration."""
    sim, w = env.sim, env.world
    sc = sim.scenario
    states = ego_past(env)
    its = int(w.iteration) - np.arange(len(states) - 1, -1, -1)
    frames = sc.start_index + its
    times = np.where(frames >= 0, sc.timestamps_us[np.maximum(frames, 0)],
                     int(w.time_us) - int(round(sc.dt_s * 1e6)) * (its[-1] - its)).astype(np.int64)
    times[-1] = int(w.time_us)
    tl = sc.traffic_lights
    return {"route_roadblock_ids": [str(r) for r in sc.route_roadblock_ids],
            "mission_goal": None if sc.goal is None else np.asarray(sc.goal, dtype=np.float64),
            "map_location": sc.map_location, "maps_root": str(env._data.nuplan_maps_root),
            "iteration": int(w.iteration), "time_us": int(w.time_us),
            "ego_states": states, "ego_time_us": times,
            "objects": [_frame_objects(env, int(i)) if sc.start_index + i >= 0 else _empty_objects() for i in its],
            "traffic_lights": {"lane_connector_id": np.array(tl.connector_ids, dtype=np.int64),
                               "status": np.array(tl.status[sim.frame(w.iteration)], dtype=np.int64)}}


def _empty_objects() -> dict:
    out = {"track_token": np.zeros(0, dtype=str), "category": np.zeros(0, np.int64),
           "category_name": np.zeros(0, dtype=str)}
    out.update({k: np.zeros(0) for k in ("x", "y", "heading", "vx", "vy", "length", "width", "height")})
    return out
