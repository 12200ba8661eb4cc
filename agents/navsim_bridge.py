"""NAVSIM agents in the loop: `NavsimAgentPolicy(agent)` runs any object that follows NAVSIM's `AbstractAgent`
contract (`navsim/agents/abstract_agent.py`: `initialize()`, `get_sensor_config() -> SensorConfig`,
`compute_trajectory(agent_input) -> Trajectory` with poses [8, 3] 0.5 s apart in the current rear-axle frame) as an
`agents.Policy` of the env.

    from agents import NavsimAgentPolicy, policy_env_kwargs
    policy = NavsimAgentPolicy(MyNavsimAgent(...))                 # calls agent.initialize() once
    env = gym.make("SimScale-navhard-v0", **policy_env_kwargs(policy))   # the cameras its SensorConfig asks for
    obs, info = env.reset(seed=0); policy.reset(info)
    obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))

What the agent gets, at every step, as NAVSIM's `AgentInput` (NAVSIM's own dataclasses when `import navsim` works,
else the look-alikes of `agents.navsim_types`, with the same field names):

- `ego_statuses`: 4 `EgoStatus` at 2 Hz, oldest first, the current one last, as `AgentInput.from_scene_dict_list`
  builds them: `ego_pose` (x, y, heading) relative to the current rear axle (the current one (0, 0, 0); past ones
  x < 0 driving forward), `ego_velocity` and `ego_acceleration` [2] in each frame's own vehicle frame, and the
  `driving_command` one-hot [4] (left, straight, right, unknown), from `info["ego_history"]`; before the episode's
  start the past is the logged one (logged start) or the perturbed past the ego drove in (perturbed start);
- `cameras`: 4 `Cameras`; a camera is filled (`image` uint8 [H, W, 3] RGB, `intrinsics` [3, 3] of that image after
  the env's resize and centre crop, `distortion` [5] (zeros for rendered images), `sensor2lidar_rotation` [3, 3],
  `sensor2lidar_translation` [3], from `info["camera_calibration"]`) where the agent's SensorConfig asks for it at
  that history index and the bridge has the frame: the current frame always; an earlier frame (0.5, 1.0, 1.5 s ago)
  only if this bridge saw it at an earlier step of the same episode (the env renders the current state only; with
  the default `replan_interval` of 0.5 s each step is the next NAVSIM frame). Frames before the episode's start
  were never rendered: their cameras are empty (`Camera()`, every field None, as NAVSIM leaves sensors it did not
  load). Images are the env's size (`width=`, `height=`): NAVSIM's agents crop nuPlan's 1920 x 1080, so pass
  `NavsimAgentPolicy(agent, width=1920, height=1080)` for them (slow to render on a CPU);
- `lidars`: 4 empty `Lidar()` (the env simulates no lidar).

The agent's return: a `Trajectory` (its `poses`, resampled to 0.5 s ... 4.0 s where its `trajectory_sampling`
differs), the SimScale fork's dict with a "trajectory", or a plain [8, 3] array (or tensor). Agents that need the
privileged `Scene` (`requires_scene=True`) are refused.
"""

from __future__ import annotations

import logging

import numpy as np

from simscale_env.errors import PolicyError

from .navsim_types import CAMERA_NAMES, NAVSIM_INTERVAL_LENGTH, channel_of, navsim_classes
from .policy import BasePolicy, check_contract

log = logging.getLogger(__name__)

NUM_HISTORY_FRAMES = 4  # navsim SceneFilter.num_history_frames: t - 1.5 s ... t
# navsim/agents/abstract_agent.py: an agent's trajectory_sampling defaults to TrajectorySampling(time_horizon=4,
# interval_length=0.5): 8 poses 0.5 s apart
PLAN_POSES = 8
PLAN_INTERVAL_S = 0.5


def sensors_at(sensor_config, index: int) -> list[str]:
    """The sensor names (`cam_f0`, ..., `lidar_pc`) a NAVSIM SensorConfig includes at history index `index`
    (`get_sensors_at_iteration`, or its rule on the fields: True, or a list holding the index)."""
    fn = getattr(sensor_config, "get_sensors_at_iteration", None)
    if callable(fn):
        return [str(s) for s in fn(index)]
    out = []
    for name in (*CAMERA_NAMES, "lidar_pc"):
        include = getattr(sensor_config, name, False)
        if (isinstance(include, bool) and include) or (isinstance(include, (list, tuple)) and index in include):
            out.append(name)
    return out


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, possibly on a GPU
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def resample_poses(poses: np.ndarray, interval_s: float) -> np.ndarray:
    """Poses [N, 3] (x, y, heading; the first one `interval_s` after now, the rear-axle frame) at 0.5 s, ..., 4.0 s:
    x and y linearly, the heading unwrapped, from the current pose (0, 0, 0) at t = 0. Raises ValueError if they
    end before 4.0 s."""
    poses = np.asarray(poses, dtype=np.float64)
    t = interval_s * np.arange(1, len(poses) + 1)
    want = PLAN_INTERVAL_S * np.arange(1, PLAN_POSES + 1)
    if len(poses) == 0 or t[-1] < want[-1] - 1e-6:
        raise ValueError(f"the trajectory covers {t[-1] if len(t) else 0:g} s; a plan needs {want[-1]:g} s")
    t = np.concatenate([[0.0], t])
    seq = np.vstack([np.zeros((1, 3)), poses])
    h = np.unwrap(seq[:, 2])
    out = np.stack([np.interp(want, t, seq[:, 0]), np.interp(want, t, seq[:, 1]), np.interp(want, t, h)], -1)
    out[:, 2] = np.arctan2(np.sin(out[:, 2]), np.cos(out[:, 2]))
    return out


class NavsimAgentPolicy(BasePolicy):
    """A NAVSIM agent as an `agents.Policy` (module docstring). `width`, `height` and `env_kwargs` go to the env
    (`policy_env_kwargs`); `prefer_real_navsim=False` uses the look-alike dataclasses even where navsim imports."""

    def __init__(self, agent, *, width: int | None = None, height: int | None = None, env_kwargs: dict | None = None,
                 name: str | None = None, prefer_real_navsim: bool = True):
        label = name or _agent_name(agent)
        check_contract(agent, label, ("initialize", "get_sensor_config", "compute_trajectory"), "NAVSIM agent",
                       "requires_scene", "the agent requires NAVSIM's privileged Scene (requires_scene=True), which a "
                                         "closed-loop simulation cannot give")
        self.agent = agent
        self.name = label
        self.classes = navsim_classes(prefer_real_navsim)
        agent.initialize()  # once, as NAVSIM's runners do right after building the agent
        self.sensor_config = agent.get_sensor_config()
        self._sensors = [sensors_at(self.sensor_config, i) for i in range(NUM_HISTORY_FRAMES)]
        cams = [n for n in CAMERA_NAMES if any(n in s for s in self._sensors)]
        self.cameras = tuple(channel_of(n) for n in cams) or None
        self.observation_keys = ("cameras", "ego_status") if cams else ("ego_status",)
        kw = dict(env_kwargs or {})
        if width is not None:
            kw["width"] = int(width)
        if height is not None:
            kw["height"] = int(height)
        self.env_kwargs = kw
        if any("lidar_pc" in s for s in self._sensors):
            log.warning("%s asks for lidar_pc, which the env does not simulate: its lidars are empty", label)
        self._frames: dict[int, dict[str, tuple[np.ndarray, dict]]] = {}  # time_us -> {channel: (image, calib)}

    def reset(self, info: dict) -> None:
        self._frames.clear()

    # ------------------------------------------------------------------ inputs
    def agent_input(self, observation: dict, info: dict):
        """NAVSIM's AgentInput for this step (module docstring)."""
        C = self.classes
        hist = info.get("ego_history")
        if hist is None:
            raise PolicyError(self.name, "info has no 'ego_history' (not a SimScale env, or an older one)")
        now = int(info["time_us"])
        self._remember(observation, info, now)
        ego_statuses, cameras = [], []
        for i in range(NUM_HISTORY_FRAMES):
            ego_statuses.append(C.EgoStatus(ego_pose=np.asarray(hist["ego_pose"][i], np.float32),
                                            ego_velocity=np.asarray(hist["ego_velocity"][i], np.float32),
                                            ego_acceleration=np.asarray(hist["ego_acceleration"][i], np.float32),
                                            driving_command=np.asarray(hist["driving_command"][i])))
            frame = self._frames.get(int(hist["time_us"][i]), {})
            cams = {}
            for cam in CAMERA_NAMES:
                hit = frame.get(channel_of(cam)) if cam in self._sensors[i] else None
                cams[cam] = C.Camera() if hit is None else self._camera(*hit)
            cameras.append(C.Cameras(**cams))
        lidars = [C.Lidar() for _ in range(NUM_HISTORY_FRAMES)]
        return C.AgentInput(ego_statuses, cameras, lidars)

    def _camera(self, image, calib):
        return self.classes.Camera(image=image, sensor2lidar_rotation=np.asarray(calib["sensor2lidar_rotation"]),
                                   sensor2lidar_translation=np.asarray(calib["sensor2lidar_translation"]),
                                   intrinsics=np.asarray(calib["intrinsics"]),
                                   distortion=np.asarray(calib["distortion"]))

    def _remember(self, observation: dict, info: dict, now: int) -> None:
        """Keep the current frame's requested cameras; forget frames older than NAVSIM's history (or from another
        episode: a time not before now)."""
        horizon = int(round((NUM_HISTORY_FRAMES - 1) * NAVSIM_INTERVAL_LENGTH * 1e6))
        self._frames = {t: f for t, f in self._frames.items() if now - horizon <= t < now}
        if not self.cameras:
            return
        calib = info.get("camera_calibration")
        if calib is None or "cameras" not in observation:
            raise PolicyError(self.name, f"the agent reads cameras {list(self.cameras)} but the env observes none: "
                                         f"make it with agents.policy_env_kwargs(policy)")
        order = list(calib)
        images = observation["cameras"]
        frame = {}
        for ch in self.cameras:
            if ch not in calib:
                raise PolicyError(self.name, f"the agent reads camera {ch}, which the env does not render (it has "
                                             f"{order}): make it with agents.policy_env_kwargs(policy)")
            frame[ch] = (np.array(images[order.index(ch)], dtype=np.uint8), calib[ch])
        self._frames[now] = frame

    # ------------------------------------------------------------------ output
    def plan(self, result) -> np.ndarray:
        """The env's action [8, 3] float32 from what compute_trajectory returned (module docstring)."""
        if isinstance(result, dict) and "trajectory" in result:  # the SimScale/NAVSIM-v2 fork returns a dict
            result = result["trajectory"]
        sampling = getattr(result, "trajectory_sampling", None)
        poses = _to_numpy(getattr(result, "poses", result))
        if poses.dtype.kind not in "iuf" or poses.ndim != 2 or poses.shape[-1] != 3:
            raise PolicyError(self.name, f"compute_trajectory must return a Trajectory or poses [8, 3] (x, y, "
                                         f"heading), got {type(result).__name__} of shape {poses.shape}")
        interval = float(getattr(sampling, "interval_length", PLAN_INTERVAL_S) or PLAN_INTERVAL_S)
        if poses.shape != (PLAN_POSES, 3) or abs(interval - PLAN_INTERVAL_S) > 1e-9:
            if sampling is None:
                raise PolicyError(self.name, f"poses of shape {poses.shape} without a trajectory_sampling: a plan is "
                                             f"[8, 3], 0.5 s apart")
            try:
                poses = resample_poses(poses, interval)
            except ValueError as exc:
                raise PolicyError(self.name, str(exc)) from None
        if not np.all(np.isfinite(poses)):
            raise PolicyError(self.name, f"compute_trajectory returned non-finite poses: {poses.tolist()}")
        return np.asarray(poses, dtype=np.float32)

    def act(self, observation: dict, info: dict) -> np.ndarray:
        return self.plan(self.agent.compute_trajectory(self.agent_input(observation, info)))


def _agent_name(agent) -> str:
    fn = getattr(agent, "name", None)
    try:
        n = fn() if callable(fn) else fn
    except Exception:  # noqa: BLE001  (a name() that needs more set-up: fall back to the class name)
        n = None
    return n if isinstance(n, str) and n else type(agent).__name__
