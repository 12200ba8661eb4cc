"""`SimScaleEnv`: the Gymnasium environment.

A split token is NAVSIM's current frame (`scene_window="navsim"`, default): iteration 0 is the token's frame, the
ego's past is NAVSIM's 1.5 s (4 history frames at 2 Hz), and the episode runs to 12 s after the token where the log
has it; `scene_window="nuplan"` gives nuPlan's challenge window (15 s from 3 s before the token). HC always prepends
a past (`envs.history`): the logged one at a logged start, the perturbed past the ego drove in at a perturbed start,
then the realised states. `info["epdms"]` at a logged start is NAVSIM's stage-1 score (human false-positive filter
against the logged human, `human_filter=`); at a perturbed start and later states stage-2 semantics (no filter);
`info["epdms_stage"]` says which. Plans are scored on the route PDM-Closed repairs at the episode's start
(`experts.route_correction`, NAVSIM's metric-cache route: on-route lanes for DDC, centreline for EP and LK; red
lights stay the scenario route's), and EP is normalised by PDM-Closed's dense trajectory; at a logged start that
trajectory is planned on the log's objects, as NAVSIM's metric cache plans it (`route_correction=False`: the
scenario's route as logged).

The reset option `start_offset_s` moves the start within the token's scenario to the logged frame that many seconds
after (negative: before) the token's, a multiple of 0.1 s: e.g. -0.5 for NAVSIM's previous frame (the EC partner of a
one-stage score, `evaluation.modes`), +4.0 for where a two-stage plan ends. The start is that frame's logged state
(perturbed as usual unless `perturbation=None`), the world and the past are the log's at that frame, and a logged
start there scores as stage 1 like the token's own frame (the same numbers as a reset to a split token at that frame,
tested). It must leave NAVSIM's 1.5 s past before it (the earliest is -0.5 s with the 2 s history) and one decision
step after it.

One decision step = `replan_interval` seconds (default 0.5 s, 5 simulation steps at 10 Hz). The default action is a
NAVSIM plan: 8 poses (x, y, heading) 0.5 s apart in the current rear-axle frame, tracked by the LQR + bicycle for one
decision step; `action_type="control"` takes (acceleration [m/s^2], steering rate [rad/s]) held for the step.

Reward of a decision step t (documented, EPDMS-derived):

    r_t = (ds_t / L) * NC_t * DAC_t * DDC_t * TLC_t
          - (1 / N) * [1.0 * (1 - TTC_t) + 0.4 * (1 - LK_t) + 0.4 * (1 - HC_t)]
          - terminal_penalty * [terminated at t]

- ds_t: the ego's progress along the route centreline during the step; L = max(5 m, the logged ego's progress over
  the episode's horizon), so the progress terms sum to about EPDMS's EP;
- NC, DAC, DDC, TLC: the EPDMS sub-metrics of the realised step (the executed 0.5 s against the simulated agents;
  tracks already touching the ego at the step's start are ignored, as NAVSIM does at t0);
- TTC, LK, HC: the EPDMS sub-metrics of the submitted plan by pseudo-simulation (`info["epdms"]`; for control
  actions, the control held for 4 s), weighted as EPDMS weighs them against EP (5 : 2 : 2 over 5), spread over the N
  decision steps of the episode; 0 when plan scoring is off;
- termination on an at-fault collision (NC_t < 1) or leaving the drivable area (DAC_t = 0); truncation at the episode
  length or the scenario's end. `info["epdms_episode"]` then holds the closed-loop episode summary
  (`episode_summary`, with NAVSIM's human filter against the logged drive) plus the return "r" and length "l"; no
  wrapper writes that key, so it survives SB3's Monitor (`PPO(..., env)` and `make_vec_env` add one), its vec envs
  and gymnasium's RecordEpisodeStatistics. A copy goes under `info["episode"]`, which SB3 vec envs without a Monitor
  read "r" and "l" from; SB3's Monitor replaces that key, and gymnasium's RecordEpisodeStatistics refuses it unless
  given another `stats_key` (e.g. `RecordEpisodeStatistics(env, stats_key="stats")`). `step()` after termination or
  truncation raises until `reset()`.

`info["pseudo_expert"] = {"pdm_closed": poses [8, 3], "recovery": poses [8, 3]}` for the state just observed (the
same action format), unless `pseudo_experts=False`. PDM-Closed is NAVSIM's; `expert_emergency_brake=True` adds
tuplan's emergency brake. `info["logged_plan"]`: the logged human's plan, the logged ego's next 8 poses (0.5 s apart,
at the same times in the log) in the current rear-axle frame.

`reward_vocabulary=V.npy` (a trajectory vocabulary [K, P, 3], P poses over 4 s, loaded once at construction) adds
`info["vocab_scores"]` (float16 [K, 9], `metrics.SUB_METRICS` order, EC NaN) and `info["vocab_epdms"]` (float16 [K])
at every decision step (reset and step): the EPDMS labels of every vocabulary plan from the current state, the same
as the data engine writes (`vocabulary_scores`: `metrics.vocabulary.label_scene`, non-reactive, EP against
PDM-Closed as SimScale's gen_gt), e.g. for reward learning from GTRS-style labels online.

What agents other than the env's own read (`agents.navsim_bridge`, `agents.nuplan_bridge`; plain arrays, built in
`envs.agent_inputs`): `info["driving_command"]` [4] int64, NAVSIM's one-hot (left, straight, right, unknown) of the
current state (as `obs["ego_status"][4:8]`); `info["ego_history"]`, NAVSIM's `AgentInput.ego_statuses` as arrays
over its 4 history frames at 2 Hz, oldest first, the current frame last: "time_us" [4], "ego_pose" [4, 3] in the
current rear-axle frame (the current pose (0, 0, 0)), "ego_velocity" and "ego_acceleration" [4, 2] in each frame's
own vehicle frame, "driving_command" [4, 4]; with "cameras" observed, `info["camera_calibration"]`: {channel: NAVSIM
`Camera` fields of the delivered image, in the order of `obs["cameras"]`: "intrinsics" [3, 3] after the resize and
crop, "distortion" [5] (zeros for rendered images), "sensor2lidar_rotation" [3, 3], "sensor2lidar_translation" [3],
"cam_to_ego" [4, 4], "width", "height"}; with `planner_inputs=True`, `info["planner_input"]`, what nuplan-devkit's
`PlannerInitialization` and `PlannerInput` hold: the route roadblock ids and mission goal, the map (`map_location`,
`maps_root`), the ego states and tracked objects 0.1 s apart over the last 1.5 s (global frame) and the traffic
lights (`envs.agent_inputs.planner_input`).
"""

from __future__ import annotations

import copy
import os
from collections import deque
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ..cache import CacheSizes, LRUCache, Prefetcher
from ..data.openscene import load_split
from ..data.paths import DataConfig
from ..data.scenario import NAVSIM_SCENE_DURATION_S
from ..errors import UnknownTokenError
from ..geometry import global_to_local
from ..map import load_map
from ..metrics import ScorerConfig, episode_summary, pseudo_simulate
from ..metrics.constants import NAVSIM_HORIZON_S
from ..metrics.epdms import score_states
from ..metrics.geometry import polyline_project
from ..metrics.pseudo_sim import logged_hc_past, scene_from_frames
from ..render.camera import DEFAULT_CHANNELS, DEFAULT_SIZE
from ..sim import SimConfig, Simulation
from ..sim.bicycle import propagate
from ..sim.perturb import (PERTURBATION_DEFAULTS, Perturbation, PerturbationConfig, PerturbationError,
                           apply_perturbation, check_start, lane_frame_heading, logged_travel,
                           sample_perturbation)
from ..sim.plans import plan_to_reference
from ..sim.state import ACCELERATION_X, ACCELERATION_Y, HEADING, STATE_SIZE, VELOCITY_X, VELOCITY_Y, X, Y
from ..sim.world import PlanTracker, ego_box
from .history import PAST_S, hc_past, past_is_comfortable, start_past_states

OBSERVATION_KEYS = ("cameras", "ego_status", "bev", "agents", "route")
MAX_AGENTS = 64
ROUTE_POINTS = 32
EGO_STATUS_SIZE = 20  # vx, vy, ax, ay, command one-hot (4), past poses 4 x (x, y, heading)
PLAN_LOW = np.array([-20.0, -80.0, -np.pi], np.float32)
PLAN_HIGH = np.array([160.0, 80.0, np.pi], np.float32)
CONTROL_LOW = np.array([-8.0, -1.0], np.float32)  # m/s^2, rad/s
CONTROL_HIGH = np.array([4.0, 1.0], np.float32)
PREFETCH_PENDING = 4  # scenarios a single env keeps prefetched at most (a vector env of N: N + this)
NAVSIM_FRAME_STEPS = 5  # NAVSIM's frames are 0.5 s apart (dataclasses.py NAVSIM_INTERVAL_LENGTH): 5 steps of 0.1 s


@dataclass(frozen=True)
class EnvConfig:
    split: str = "navhard"
    split_file: str | None = None  # a NAVSIM scene_filter YAML (required for your own data)
    data_root: str | None = None  # NUPLAN_DATA_ROOT (default: env var, else the mini dataset)
    maps_root: str | None = None
    # OpenScene data (NAVSIM's navsim_logs/<split>/*.pkl; OPENSCENE_DATA_ROOT): scenarios from the 2 Hz frames alone,
    # interpolated to 10 Hz as NAVSIM does (`data.openscene_scenario`)
    openscene_root: str | None = None
    # where scenarios come from: "nuplan" (.db logs), "openscene" (navsim_logs pickles) or "auto" (the .db logs where
    # the data has them, else OpenScene)
    data_source: str = "auto"
    cameras: tuple[str, ...] = DEFAULT_CHANNELS
    width: int = DEFAULT_SIZE[0]
    height: int = DEFAULT_SIZE[1]
    render_backend: str = "auto"
    # obs["cameras"] at a logged, unperturbed frame (a reset to the logged start, i.e. `perturb=False` or the reset
    # option perturbation=None, at iteration 0: the scene token's frame): "render" (default) renders it; "auto" uses
    # the logged JPEGs (OpenScene `sensor_blobs/<split>/`, framed like the rendered cameras: `render.logged`) where
    # they exist and renders silently otherwise; "log" requires them there (a DataError naming what is missing).
    # Every other state (perturbed starts, states the ego drove into) is rendered: no logged camera saw it
    camera_source: str = "render"
    observation_keys: tuple[str, ...] = ("cameras", "ego_status")
    agent_mode: str = "reactive"
    action_type: str = "plan"  # or "control"
    invalid_action: str = "raise"  # or "clip" (NaN always raises)
    replan_interval: float = 0.5
    episode_steps: int | None = None  # decision steps (default: to the scenario's end)
    pseudo_experts: bool = True
    # the PDM-Closed pseudo-expert with tuplan's emergency brake (opt-in; NAVSIM's copy never calls it). Not the
    # default: replanned at 2 Hz it stops for collisions the reactive agents then avoid (mini-navhard
    # `simscale evaluate`: PDM-Closed 0.880 without, 0.862 with; under the teleport sampler 0.843 and 0.838)
    expert_emergency_brake: bool = False
    plan_scoring: str | None = "non_reactive"  # pseudo-simulation of the submitted plan; None turns it off
    perturbation: PerturbationConfig | None = None  # default: the split's (PERTURBATION_DEFAULTS)
    perturb: bool = True
    valid_start: bool = True  # redraw starts where PDM-Closed finds no safe proposal (SimScale keeps valid ones)
    max_start_draws: int = 10
    # redraw perturbed starts whose perturbed past (the 1.5 s the ego drove in, which HC prepends) breaks EPDMS's
    # comfort bounds: a lateral offset blended over too short a past is a swerve no driver made, and HC would charge
    # it to every agent (mini-navhard seed 0: 4 of 8 perturbed PDM-Closed episodes had HC 0 from their past alone)
    comfortable_past: bool = True
    terminal_penalty: float = 1.0
    terminate_on_collision: bool = True
    terminate_off_road: bool = True
    scene_seed: int = 0  # the synthesised Gaussian scene
    # 3DGS reconstructions (`<log name>.ply` or `<map location>.ply` in map coordinates); scenes without one use the
    # scene synthesised from the map
    reconstructions: str | None = None
    bev_size: int = 256
    # what a split token denotes. "navsim" (default; every split here is a NAVSIM scene filter): NAVSIM's current
    # frame: iteration 0 is the token's frame, the past the ego status and HC read is its 1.5 s before (NAVSIM's 4
    # history frames), the episode runs `navsim_duration_s` (default to the end of the nuPlan challenge window,
    # t + 12 s, where the log has it). "nuplan": the nuPlan challenge window (15 s from 3 s before the token)
    scene_window: str = "navsim"
    navsim_duration_s: float = NAVSIM_SCENE_DURATION_S
    # info["epdms"] of the plan submitted at a logged start is NAVSIM's stage-1 score: the human false-positive
    # filter against the logged human's 4 s ("fixed": NAVSIM since 2025-09-29; "pre_fix": the earlier code, whose
    # final score stays unfiltered; None: off). Perturbed starts and later states are stage-2 semantics: no filter
    human_filter: str | None = "fixed"
    # the route plans are scored on (info["epdms"], the reward's plan terms): True (default) NAVSIM's, the scenario's
    # route as PDM-Closed repairs it at the episode's start (navsim/planning/simulation/planner/pdm_planner/utils/
    # route_utils.py route_roadblock_correction, kept by the metric cache as route_lane_ids and the centreline;
    # `experts.route_correction`); False: the scenario's route as logged
    route_correction: bool = True
    # bounds of the env's LRU caches (scenarios, renderers, maps, open logs, ...): a CacheSizes or a dict of some of
    # its fields, e.g. {"scenarios": 16}; None entries are unbounded (`simscale_env.cache.CacheSizes`)
    cache_sizes: CacheSizes = CacheSizes()
    # info["planner_input"]: what a nuPlan planner reads (route, goal, map, 1.5 s of ego states and tracked objects at
    # 0.1 s, traffic lights; `envs.agent_inputs.planner_input`); `agents.nuplan_bridge` asks for it
    planner_inputs: bool = False
    # a trajectory vocabulary `.npy` [K, P, 3] (P poses over 4 s, e.g. `simscale vocab build`): info["vocab_scores"]
    # (float16 [K, 9], metrics.SUB_METRICS order, EC NaN) and info["vocab_epdms"] (float16 [K]) at every decision
    # step, the labels the data engine writes (`vocabulary_scores`); None: off
    reward_vocabulary: str | None = None
    # load the scenario the next reset will draw on a background thread while the current episode runs (issue 20:
    # resets prepared ahead): the token an unseeded reset draws is peeked from a copy of the env's generator at the
    # end of each reset and, unless cached, loaded from its log (`cache.Prefetcher`; the builder is locked for it).
    # A pure cache fill: episodes are the same either way. Opt-in: it can only hide a load that waits on storage
    # (logs on a slow or network disk); a load from logs the OS has cached is Python and numpy work that the thread
    # contends for the GIL and the cores with (on 2 cores it was slower in every regime measured, see the README)
    prefetch_scenarios: bool = False

    def __post_init__(self):
        object.__setattr__(self, "cache_sizes", CacheSizes.coerce(self.cache_sizes))
        if self.reward_vocabulary is not None:
            if not isinstance(self.reward_vocabulary, (str, os.PathLike)):
                raise ValueError(f"reward_vocabulary must be the path of a .npy vocabulary [K, P, 3], got "
                                 f"{type(self.reward_vocabulary).__name__}")
            object.__setattr__(self, "reward_vocabulary", os.fspath(self.reward_vocabulary))
        if self.data_source not in ("auto", "nuplan", "openscene"):
            raise ValueError(f"data_source must be 'auto', 'nuplan' or 'openscene', got {self.data_source!r}")
        if self.camera_source not in ("render", "log", "auto"):
            raise ValueError(f"camera_source must be 'render', 'log' or 'auto', got {self.camera_source!r}")
        if self.scene_window not in ("navsim", "nuplan"):
            raise ValueError(f"scene_window must be 'navsim' or 'nuplan', got {self.scene_window!r}")
        if not (np.isfinite(self.navsim_duration_s) and self.navsim_duration_s >= 0.5):
            raise ValueError(f"navsim_duration_s must be >= 0.5 s, got {self.navsim_duration_s!r}")
        if self.human_filter not in (None, "fixed", "pre_fix"):
            raise ValueError(f"human_filter must be None, 'fixed' or 'pre_fix', got {self.human_filter!r}")
        if self.action_type not in ("plan", "control"):
            raise ValueError(f"action_type must be 'plan' or 'control', got {self.action_type!r}")
        if self.invalid_action not in ("raise", "clip"):
            raise ValueError(f"invalid_action must be 'raise' or 'clip', got {self.invalid_action!r}")
        unknown = [k for k in self.observation_keys if k not in OBSERVATION_KEYS]
        if unknown:
            raise ValueError(f"unknown observation keys {unknown}; known: {OBSERVATION_KEYS}")
        if self.plan_scoring not in (None, "non_reactive", "reactive", "constant_velocity"):
            raise ValueError(f"plan_scoring must be None, 'non_reactive', 'reactive' or 'constant_velocity', "
                             f"got {self.plan_scoring!r}")
        for name in ("width", "height", "bev_size", "max_start_draws"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.replan_interval, bool) or not isinstance(self.replan_interval, (int, float, np.number)) \
                or not np.isfinite(self.replan_interval):
            raise ValueError(f"replan_interval must be a positive multiple of 0.1 s, got {self.replan_interval!r}")
        if isinstance(self.terminal_penalty, bool) or not isinstance(self.terminal_penalty, (int, float, np.number)) \
                or not np.isfinite(self.terminal_penalty):
            raise ValueError(f"terminal_penalty must be a finite number, got {self.terminal_penalty!r}")
        if "cameras" in self.observation_keys and not self.cameras:
            raise ValueError("cameras must name at least one camera channel when observation_keys has 'cameras'")
        if not self.observation_keys:
            raise ValueError(f"observation_keys must name at least one of {OBSERVATION_KEYS}")
        steps = self.replan_interval / 0.1
        if abs(steps - round(steps)) > 1e-9 or round(steps) < 1:
            raise ValueError(f"replan_interval must be a positive multiple of 0.1 s, got {self.replan_interval}")
        if self.replan_interval > 4.0 + 1e-9:
            raise ValueError(f"replan_interval must be <= 4.0 s (a plan covers 4 s), got {self.replan_interval}")
        if self.episode_steps is not None and (int(self.episode_steps) != self.episode_steps or self.episode_steps < 1):
            raise ValueError(f"episode_steps must be a positive integer or None, got {self.episode_steps!r}")


class SimScaleEnv(gym.Env):
    """Closed-loop driving on nuPlan/NAVSIM scenarios from perturbed starts (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(self, split: str = "navhard", render_mode: str | None = None, **kwargs):
        cfg_fields = set(EnvConfig.__dataclass_fields__)
        unknown = sorted(set(kwargs) - cfg_fields)
        if unknown:
            raise TypeError(f"unknown SimScaleEnv arguments: {unknown}")
        if "cameras" in kwargs:
            kwargs["cameras"] = tuple(kwargs["cameras"])
        if "observation_keys" in kwargs:
            kwargs["observation_keys"] = tuple(kwargs["observation_keys"])
        self.config = EnvConfig(split=split, **kwargs)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        cfg = self.config
        self._data = DataConfig.resolve(cfg.data_root, cfg.maps_root, cfg.openscene_root)
        split_file = Path(cfg.split_file) if cfg.split_file else self._data.split_file(cfg.split)
        self.split = load_split(split_file)
        # the nuPlan .db logs, or the OpenScene pickles (`data_source`; "auto": whichever the data holds, .db first)
        self.data_source = self._data.source(cfg.data_source)
        self._builder = self._data.scenario_builder(self.data_source, max_open_logs=cfg.cache_sizes.open_logs,
                                                    log_names=self.split.log_names)
        log_root = self._data.nuplan_data_root if self.data_source == "nuplan" else self._data.openscene_root
        self.tokens = list(self.split.tokens) if self.split.tokens is not None else [r.token for r in
                                                                                     self._builder.refs()]
        if not self.tokens:
            raise UnknownTokenError(split_file, "the split lists no scenario tokens")
        if self.split.tokens is not None:  # here, not at the first reset() that draws a missing one
            # navsim window: any lidar_pc of the split's logs (`_scenario`); nuplan window: a tagged scenario
            missing = self._builder.missing_tokens(self.tokens, tagged=cfg.scene_window == "nuplan")
            if missing:
                kind = "tagged scenarios" if cfg.scene_window == "nuplan" else "lidar_pc tokens"
                absent = [n for n in self.split.log_names or () if n not in self._builder.log_files]
                raise UnknownTokenError(split_file, (
                    f"{len(missing)} of the split's {len(self.tokens)} tokens are not {kind} of its "
                    f"{len(self._builder.log_files)} {self.data_source} logs under {log_root}: "
                    f"{', '.join(map(str, missing[:5]))}{', ...' if len(missing) > 5 else ''}"
                    + (f" ({len(absent)} of its log_names are not in the data, e.g. {absent[0]})" if absent else "")))
        self._pert_cfg = cfg.perturbation or PERTURBATION_DEFAULTS.get(cfg.split, PerturbationConfig())
        self._k = int(round(cfg.replan_interval / 0.1))
        n_cam = len(cfg.cameras)
        obs = {}
        if "cameras" in cfg.observation_keys:
            obs["cameras"] = spaces.Box(0, 255, (n_cam, cfg.height, cfg.width, 3), np.uint8)
        if "ego_status" in cfg.observation_keys:
            # velocity (2) [m/s], acceleration (2) [m/s^2], driving command one-hot (4), 4 past poses (x, y, heading)
            lo = np.array([-50, -50, -30, -30] + [0] * 4 + [-200, -200, -np.pi] * 4, np.float32)
            hi = np.array([50, 50, 30, 30] + [1] * 4 + [200, 200, np.pi] * 4, np.float32)
            obs["ego_status"] = spaces.Box(lo, hi, (EGO_STATUS_SIZE,), np.float32)
        if "bev" in cfg.observation_keys:
            obs["bev"] = spaces.Box(0, 255, (cfg.bev_size, cfg.bev_size, 5), np.uint8)
        if "agents" in cfg.observation_keys:
            lo = np.tile(np.array([-200, -200, -np.pi, -50, -50, 0, 0, 0], np.float32), (MAX_AGENTS, 1))
            hi = np.tile(np.array([200, 200, np.pi, 50, 50, 30, 10, 7], np.float32), (MAX_AGENTS, 1))
            obs["agents"] = spaces.Box(lo, hi, (MAX_AGENTS, 8), np.float32)
        if "route" in cfg.observation_keys:
            obs["route"] = spaces.Box(-500.0, 500.0, (ROUTE_POINTS, 2), np.float32)
        self.observation_space = spaces.Dict(obs)
        if cfg.action_type == "plan":
            self.action_space = spaces.Box(np.tile(PLAN_LOW, (8, 1)), np.tile(PLAN_HIGH, (8, 1)), (8, 3), np.float32)
        else:
            self.action_space = spaces.Box(CONTROL_LOW, CONTROL_HIGH, (2,), np.float32)
        sizes = cfg.cache_sizes  # LRU-bounded: a large split must not keep every scenario, map or renderer it met
        self._maps = LRUCache(sizes.maps)
        self._human_cache = LRUCache(sizes.human)
        self._human_worlds = LRUCache(sizes.scenarios)  # scenario -> (its Simulation, the logged drive's worlds)
        self._log_tails = LRUCache(sizes.log_tails)  # scenario -> the logged ego's poses after its end (`_log_tail`)
        self._renderers = LRUCache(sizes.renderers)
        self._scenarios = LRUCache(sizes.scenarios)
        self._sims = LRUCache(sizes.scenarios)  # token -> (Simulation, its logged world at iteration 0): `_simulation`
        self._openscene_frames = LRUCache(2)  # OpenScene log -> {token: frame}, for the logged camera images
        # the next episode's scenario, loaded ahead on a background thread (`_prefetch_next`); it holds the builder's
        # lock while it loads, and so does every other use of the builder here (`_builder_lock`)
        self._prefetch = (Prefetcher(partial(_load_scenario, self._builder, cfg),
                                     max_pending=PREFETCH_PENDING, name="simscale-scenarios")
                          if cfg.prefetch_scenarios else None)
        # loaded once; a bad file fails here, at gym.make, naming it
        self._vocab = load_reward_vocabulary(cfg.reward_vocabulary) if cfg.reward_vocabulary else None
        self.sim = None
        self.world = None
        self._ahead = None  # (action, world, the worlds it leads to): `prepare_plan_steps`
        self._ahead_pdm = None  # (world, its PDM-Closed and recovery plans): `prepare_expert_plans`

    # what a sibling shares with its env: everything __init__ sets but the episode state (`sim`, `world`)
    _SHARED = ("config", "render_mode", "_data", "split", "data_source", "_builder", "tokens", "_pert_cfg", "_k",
               "observation_space", "action_space", "_maps", "_human_cache", "_human_worlds", "_log_tails",
               "_renderers", "_scenarios", "_sims", "_openscene_frames", "_vocab", "_prefetch")

    def sibling(self) -> "SimScaleEnv":
        """Another env of this config sharing this one's data, split, reward vocabulary and caches (maps, scenarios,
        their simulations, renderers, the logged drive's scores, log tails): `SimScaleVectorEnv`'s sub-envs, without
        N copies of each. The caches hold only episode-independent values (a Simulation is pure), so an env and its
        siblings each give what they would alone (tested); they are not for use from several threads at once."""
        new = object.__new__(type(self))
        new.__dict__.update({k: self.__dict__[k] for k in self._SHARED})
        new.sim = None
        new.world = None
        new._ahead = None
        new._ahead_pdm = None
        return new

    # ------------------------------------------------------------------ helpers
    def _map(self, location):
        if location not in self._maps:
            self._maps[location] = load_map(location, self._data.nuplan_maps_root)
        return self._maps[location]

    def _scenario(self, token):
        if token not in self._scenarios:
            sc = self._prefetch.take(token) if self._prefetch is not None else None
            if sc is None:  # not prefetched (or its load failed: loaded here, so that its error is raised here)
                with self._builder_lock():
                    sc = _load_scenario(self._builder, self.config, token)
            self._scenarios[token] = sc
        return self._scenarios[token]

    def _builder_lock(self):
        """The lock a prefetching thread holds while it loads (hold it around any use of the builder), or a no-op."""
        return self._prefetch.lock if self._prefetch is not None else nullcontext()

    def _prefetch_next(self) -> None:
        """Queue the scenario the next unseeded reset will draw (its token draw peeked on a copy of the env's
        generator: the reset draws nothing else before it, and steps draw nothing), unless it is cached. A reset
        with a seed or a scenario_token draws another one: the prefetched scenario is then just not used."""
        if self._prefetch is None or len(self.tokens) < 2:
            return
        token = self.tokens[int(copy.deepcopy(self.np_random).integers(len(self.tokens)))]
        if token not in self._scenarios:
            self._prefetch.request(token)

    def close(self):
        """Stop the scenario prefetching thread (shared by the env's siblings). The env still works after it,
        without prefetching."""
        if self._prefetch is not None:
            self._prefetch.close()
        super().close()

    def _offset_scenario(self, token, offset_s):
        """(scenario, its simulation cache key) for the reset option `start_offset_s`: the token's scenario whose
        iteration 0 is the logged frame `offset_s` seconds after (negative: before) the token's, a multiple of the
        scenario's step (0.1 s; NAVSIM's frames are 0.5 s apart). The log is the same: only the start moves, within
        the scenario's history (NAVSIM's 1.5 s past must stay before the start: -0.5 s with the 2 s history) and its
        future (at least one decision step after the start). 0: the token's own scenario."""
        if isinstance(offset_s, bool) or not isinstance(offset_s, (int, float, np.integer, np.floating)) \
                or not np.isfinite(offset_s):
            raise ValueError(f"start_offset_s must be a finite number of seconds, got {offset_s!r}")
        sc = self._scenario(token)
        steps = float(offset_s) / sc.dt_s
        if abs(steps - round(steps)) > 1e-6:
            raise ValueError(f"start_offset_s must be a multiple of the scenario step {sc.dt_s:g} s, got {offset_s!r}")
        n = int(round(steps))
        if n == 0:
            return sc, token
        start = sc.start_index + n
        need = int(round(PAST_S / sc.dt_s))
        if start < need:
            raise ValueError(f"start_offset_s={offset_s:g}: scenario {token} has {sc.start_index * sc.dt_s:g} s of "
                             f"history before its token, and the start needs {PAST_S:g} s of past before it "
                             f"(the ego status and HC read it): the earliest offset is "
                             f"{(need - sc.start_index) * sc.dt_s:g} s")
        if start + self._k > len(sc.timestamps_us) - 1:
            raise ValueError(f"start_offset_s={offset_s:g}: scenario {token} ends "
                             f"{(sc.num_iterations - 1) * sc.dt_s:g} s after its token; the start needs one decision "
                             f"step ({self.config.replan_interval:g} s) after it")
        from dataclasses import replace

        key = (token, n)
        return self._scenarios.get_or_create(key, lambda: replace(sc, start_index=start)), key

    def _simulation(self, token, sc, m):
        """(Simulation, its logged world at iteration 0) of a scenario, kept (LRU) as long as scenarios are
        (`CacheSizes.scenarios`):
        a Simulation holds no episode state (`Simulation.reset` and `step` are pure), and it keeps the ego-independent
        work of spawning the IDM agents, which every perturbed reset repeats for its candidate starts."""
        hit = self._sims.get(token)
        if hit is not None and hit[0].scenario is sc and hit[0].map is m:
            return hit
        sim = Simulation(sc, m, SimConfig(agent_mode=self.config.agent_mode))
        hit = (sim, sim.reset())
        self._sims[token] = hit
        return hit

    def _renderer(self):
        from ..render.renderer import CameraRenderer, load_reconstruction

        sc = self.sim.scenario
        key = (sc.map_location, sc.log_name)
        if key not in self._renderers:
            recon = (load_reconstruction(self.config.reconstructions, [sc.log_name, sc.map_location])
                     if self.config.reconstructions else None)
            self._renderers[key] = CameraRenderer(self.sim.map, sc.cameras, self.config.cameras, self.config.width,
                                                  self.config.height, seed=self.config.scene_seed,
                                                  backend=self.config.render_backend, reconstruction=recon)
        return self._renderers[key]

    def _render_cameras(self, objs):
        """The rendered cameras of the current state, actors coloured per track token (the same car has the same
        colour in every scenario of its log, as in the mini dataset's rendered sensor blobs)."""
        if objs is not None and len(objs):
            from dataclasses import replace

            objs = replace(objs, track=np.asarray(self.sim.scenario.agents.track_tokens)[objs.track])
        return self._renderer().render(self.world.ego, objs, with_depth=False)

    def _camera_observation(self, objs):
        """obs["cameras"] as a RenderOutput: the logged camera images where `camera_source` takes them, else
        rendered."""
        logged = self._logged_camera_images()
        self._cameras_logged = logged is not None  # info["camera_calibration"]: the log's distortion, not zeros
        if logged is not None:
            from ..render.renderer import RenderOutput

            return RenderOutput(logged, None, tuple(self.config.cameras), 0)
        return self._render_cameras(objs)

    def _logged_camera_images(self):
        """The logged camera images [n, H, W, 3] of the current state, or None where the cameras are rendered
        (`camera_source`): only a logged, unperturbed frame (`_logged_state`) has them. Its frame is the iteration's
        lidar_pc token in the OpenScene log `navsim_logs/<split>/<log>.pkl` (a few logs cached), its images
        `sensor_blobs/<split>/<cams[channel].data_path>` under the OpenScene root. Missing data: "log" raises a
        DataError naming it, "auto" renders (logged at debug level); a corrupt JPEG raises in both."""
        import logging

        from ..data.openscene import load_log
        from ..errors import DataError, MissingFileError
        from ..render.logged import LoggedCameras

        cfg = self.config
        if cfg.camera_source == "render" or not self._logged_state():
            return None
        sc = self.sim.scenario
        token = sc.lidar_pc_tokens[sc.start_index + self.world.iteration]
        root, split = self._data.openscene_root, self._data.split
        images, why = None, None
        if root is None:
            why = DataError(None, "no OpenScene data root (openscene_root= or OPENSCENE_DATA_ROOT) for the logged "
                                  "camera images")
        else:
            pkl = Path(root) / "navsim_logs" / split / f"{sc.log_name}.pkl"
            if not pkl.is_file():
                why = MissingFileError(pkl, "OpenScene log not found (needed for the logged camera images)")
            else:
                frames = self._openscene_frames.get_or_create(pkl, lambda: {f["token"]: f for f in load_log(pkl)})
                frame = frames.get(token)
                blobs = LoggedCameras(Path(root) / "sensor_blobs" / split)
                if frame is None:
                    why = DataError(pkl, f"no frame {token} (the logged frame of scenario {sc.token})")
                else:
                    images = blobs.images(frame, cfg.cameras, cfg.width, cfg.height, calibrations=sc.cameras)
                    if images is None:
                        paths = blobs.paths(frame, cfg.cameras)
                        absent = [ch for ch, q in zip(cfg.cameras, paths) if q is None]
                        missing = [q for q in paths if q is not None and not q.is_file()]
                        why = (DataError(pkl, f"frame {token} has no camera {absent[0]} in its cams") if absent else
                               MissingFileError(missing[0], f"logged camera image not found (frame {token}; "
                                                            f"{len(missing)} of {len(cfg.cameras)} images missing)"))
        if images is None:
            if cfg.camera_source == "log":
                raise why
            logging.getLogger(__name__).debug("camera_source='auto': rendering the logged frame %s (%s)", token, why)
        return images

    # ------------------------------------------------------------------ reset
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._ahead = None
        self._ahead_pdm = None
        options = dict(options or {})
        unknown = sorted(set(options) - {"scenario_token", "perturbation", "start_offset_s"})
        if unknown:
            raise ValueError(f"unknown reset options {unknown}; known: scenario_token, perturbation, start_offset_s")
        cfg = self.config
        token = options.get("scenario_token")
        if token is None:
            token = self.tokens[int(self.np_random.integers(len(self.tokens)))]
        elif token not in self.tokens:
            raise UnknownTokenError(None, f"scenario token '{token}' is not in split '{self.split.name}' "
                                          f"({len(self.tokens)} tokens)")
        sc, sim_key = self._offset_scenario(token, options.get("start_offset_s", 0.0))
        m = self._map(sc.map_location)
        self.sim, w0 = self._simulation(sim_key, sc, m)
        self._route_lanes = m.route_lane_ids([r for r in sc.route_roadblock_ids if r in m.roadblocks])
        self._pert_error = None
        self._start_plan = None
        self._start_world = None
        self._start_past = None
        pert, start = self._start(w0, options.get("perturbation", "sample"))
        # the world valid_start judged (Simulation.reset is pure: resetting again to `start` gives the same world)
        self.world = self._start_world if self._start_world is not None else self.sim.reset(start)
        self._start_world = None
        self.perturbation = pert
        self._steps = 0
        self._done = False  # set by step() at termination or truncation
        self._return = 0.0
        left = (self.sim.num_iterations - 1) // self._k
        self._n_steps = min(cfg.episode_steps or left, left)
        self._worlds = [self.world]
        self._frames = [None]  # Simulation.objects of each world, as the steps compute them (pure: computed once)
        # the ego's past before iteration 0 (`envs.history`): its states over the last 1.5 s (0.1 s apart), which the
        # ego status's past poses and HC read; the log's at a logged start, else the perturbed past the ego drove in
        # (`perturbed_past`: the log's path at the perturbed speed with the offset blended in), then the realised ones
        past = start_past_states(sc, start, pert) if self._start_past is None else self._start_past
        self._start_past = None
        self._past = deque(past, maxlen=int(round(PAST_S / sc.dt_s)))
        # the past HC prepends to the whole episode in its summary: the one info["epdms"] prepends to the first plan
        # (the logged human past at a logged start, the perturbed past the ego drove in at a perturbed start)
        self._start_hc_past = (logged_hc_past(self.sim, self.world.iteration) if self._logged_state()
                               else self._realised_past())
        line = self.sim.map.route_centerline(self.sim.scenario.route_roadblock_ids,
                                             tuple(self.world.ego[[X, Y, HEADING]]))
        self._cl_poly = line
        self._commands = {}  # `_driving_command` per position on this centreline
        self._centerline = np.asarray(line.xy)
        self._cl_s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(self._centerline, axis=0).T))])
        self._progress_norm = self._human_progress()
        self._pdm = None
        self._stage1_ref = None
        self._last_plan = None
        obs = self._observe()
        info = self._info()
        self._score_route = self._scoring_route()
        self._prefetch_next()
        return obs, info

    @property
    def scoring_route_roadblock_ids(self) -> list[str]:
        """The route this episode's plans are scored on (roadblock ids): the scenario's route repaired from the start
        state (`route_correction`)."""
        if self.sim is None:
            raise RuntimeError("call reset() first")
        return list(self._score_route)

    def _scoring_route(self) -> list[str]:
        """The route plans are scored on this episode: the scenario's route repaired from the start state as
        PDM-Closed repairs it at its first call (NAVSIM's metric cache keeps that route): the label's own route when
        PDM-Closed has just planned from this state, else the same repair computed here."""
        sc, m = self.sim.scenario, self.sim.map
        route = [r for r in dict.fromkeys(sc.route_roadblock_ids) if r in m.roadblocks]
        if not self.config.route_correction:
            return route
        if self._pdm is not None and "route_roadblock_ids" in self._pdm.info:
            return list(self._pdm.info["route_roadblock_ids"])
        from ..experts.route_correction import route_roadblock_correction

        return route_roadblock_correction(m, self.world.ego[[X, Y, HEADING]], route)

    def _start(self, w0, spec):
        cfg = self.config
        if spec is None or spec is False or not cfg.perturb and spec == "sample":
            return None, w0.ego.copy()
        red = list(self.sim.red_light_polygons(0, self._route_lanes).values())
        objs = self.sim.objects(w0).corners()
        if isinstance(spec, dict):
            unknown = sorted(set(spec) - {"lateral", "longitudinal", "heading", "speed_scale"})
            if unknown:
                raise ValueError(f"unknown perturbation fields {unknown}; known: lateral [m], longitudinal [m], "
                                 f"heading [rad], speed_scale")
            vals = {k: spec.get(k, 1.0 if k == "speed_scale" else 0.0)
                    for k in ("lateral", "longitudinal", "heading", "speed_scale")}
            for k, v in vals.items():
                if not isinstance(v, (int, float, np.floating, np.integer)) or not np.isfinite(v):
                    raise ValueError(f"perturbation field {k!r} must be a finite number, got {v!r}")
            if vals["speed_scale"] < 0:
                raise ValueError(f"perturbation field 'speed_scale' must be >= 0, got {vals['speed_scale']!r}")
            p = Perturbation(float(vals["lateral"]), float(vals["longitudinal"]), float(vals["heading"]),
                             float(vals["speed_scale"]))
            new = apply_perturbation(w0.ego, p, self.sim.map)
            why = check_start(new, self.sim.map, objs, self._pert_cfg, red_polygons=red)
            if why is not None:
                raise PerturbationError(f"{self.sim.scenario.token}: the requested perturbation {asdict(p)} gives an "
                                        f"invalid start ({why})")
            return p, new
        if spec != "sample":
            raise ValueError(f"perturbation must be a dict, None or 'sample', got {spec!r}")
        travel = None
        if self._pert_cfg.window_s is not None:
            sc = self.sim.scenario
            travel = logged_travel(sc.ego.x, sc.ego.y, self.sim.frame(0),
                                   int(round(self._pert_cfg.window_s / sc.dt_s)))
        from ..experts import PDMClosedConfig, PDMClosedPlanner, valid_start

        why = "PDM-Closed has no safe label (valid_start)"
        lane_heading = lane_frame_heading(self.sim.map, w0.ego[X], w0.ego[Y], w0.ego[HEADING])  # of every draw
        for _ in range(cfg.max_start_draws if (cfg.valid_start or cfg.comfortable_past) else 1):
            try:
                p, new = sample_perturbation(w0.ego, self.sim.map, objs, self.np_random, self._pert_cfg,
                                             scene=self.sim.scenario.token, red_polygons=red, travel_m=travel,
                                             lane_heading=lane_heading)
            except PerturbationError as exc:
                self._pert_error = str(exc)
                return None, w0.ego.copy()  # no valid perturbation: the logged start (reported in info)
            past = None
            if cfg.comfortable_past:
                past = start_past_states(self.sim.scenario, new, p)
                if not past_is_comfortable(self.sim.scenario, new, p, past):
                    why = "the perturbed past breaks the comfort bounds (comfortable_past)"
                    continue
            if not cfg.valid_start:
                self._start_past = past  # the accepted start's past: reset keeps it (None: reset computes it)
                return p, new
            w = self.sim.reset(new)
            plan = PDMClosedPlanner(PDMClosedConfig(emergency_brake=cfg.expert_emergency_brake)).plan(self.sim, w)
            if valid_start(self.sim, w, plan):
                self._start_plan = plan  # the label info serves at reset: judged here, not planned twice
                self._start_world = w
                self._start_past = past
                return p, new
        self._pert_error = (f"{self.sim.scenario.token}: {why} in the last of {cfg.max_start_draws} perturbed "
                            f"starts")
        return None, w0.ego.copy()

    def _human_progress(self) -> float:
        sc = self.sim.scenario
        c = self.sim.config.vehicle.rear_axle_to_center
        f0 = sc.start_index
        f1 = min(sc.start_index + self._n_steps * self._k, len(sc.ego.x) - 1)
        pts = np.array([[sc.ego.x[f] + c * np.cos(sc.ego.heading[f]), sc.ego.y[f] + c * np.sin(sc.ego.heading[f])]
                        for f in (f0, f1)])
        arc, _ = polyline_project(pts, np.ascontiguousarray(self._centerline), self._cl_s)
        return max(5.0, float(arc[1] - arc[0]))

    # ------------------------------------------------------------------ step
    def step(self, action):
        if self.sim is None:
            raise RuntimeError("call reset() before step()")
        if self._done or self._steps >= self._n_steps:
            raise RuntimeError("the episode is over (terminated or truncated); call reset()")
        cfg = self.config
        a = self._check_action(action)
        w = self.world
        k = min(self._k, self.sim.num_iterations - 1 - w.iteration)
        # the worlds this action leads to, when `prepare_plan_steps` stepped them with other envs' (for this action
        # from this world: anything else steps here)
        ahead, self._ahead = self._ahead, None
        if ahead is not None and not (ahead[1] is w and np.array_equal(ahead[0], a)):
            ahead = None
        plan_scores = None
        if cfg.action_type == "plan":
            steps = [None] * k if ahead is not None else [self._plan_tracker(a)] * k
            if cfg.plan_scoring:
                plan_scores = self._score_plan(a.astype(np.float64))
        else:
            if cfg.plan_scoring:
                plan_scores = self._score_control(a.astype(np.float64))
            steps = [None] * k
        stage = 1 if self._logged_state() else 2
        final = None
        if plan_scores is not None and stage == 1 and cfg.human_filter:
            plan_scores, final = self._human_filtered(plan_scores)
        if self._frames[-1] is None:
            self._frames[-1] = self.sim.objects(w)
        frames = [self._frames[-1]]
        seg = [w.ego.copy()]
        for i in range(k):
            if ahead is not None:
                w = ahead[2][i]
            elif steps[i] is not None:
                w = self.sim.step(w, tracker=steps[i])
            else:
                w = self.sim.step(w, control=a)
            self._worlds.append(w)
            frames.append(self.sim.objects(w))
            self._frames.append(frames[-1])
            seg.append(w.ego.copy())
            self._past.append(self._worlds[-2].ego.copy())
            # past worlds are observed and scored, never stepped again: kept without the agents' paths (MBs each)
            self._worlds[-2] = self._worlds[-2].observed()
        self.world = w
        self._steps += 1
        step_scores = self._score_segment(np.stack(seg), frames)
        ds = self._progress(np.stack(seg))
        mult = (step_scores.no_at_fault_collisions[0] * step_scores.drivable_area_compliance[0]
                * step_scores.driving_direction_compliance[0] * step_scores.traffic_light_compliance[0])
        terms = {"progress": ds / self._progress_norm * mult, "ttc": 0.0, "lane_keeping": 0.0, "comfort": 0.0,
                 "terminal": 0.0}
        if plan_scores is not None:
            n = max(self._n_steps, 1)
            terms["ttc"] = -1.0 * (1 - plan_scores.time_to_collision_within_bound[0]) / n
            terms["lane_keeping"] = -0.4 * (1 - plan_scores.lane_keeping[0]) / n
            terms["comfort"] = -0.4 * (1 - plan_scores.history_comfort[0]) / n
        collided = step_scores.no_at_fault_collisions[0] < 1.0
        off_road = step_scores.drivable_area_compliance[0] == 0.0
        terminated = bool((cfg.terminate_on_collision and collided) or (cfg.terminate_off_road and off_road))
        if terminated:
            terms["terminal"] = -cfg.terminal_penalty
        truncated = bool(not terminated and (self._steps >= self._n_steps
                                              or w.iteration + 1 >= self.sim.num_iterations))
        reward = float(sum(terms.values()))
        self._return += reward
        obs = self._observe()
        info = self._info()
        info["reward_terms"] = terms
        info["step_metrics"] = {"no_at_fault_collisions": float(step_scores.no_at_fault_collisions[0]),
                                "drivable_area_compliance": float(step_scores.drivable_area_compliance[0]),
                                "driving_direction_compliance": float(step_scores.driving_direction_compliance[0]),
                                "traffic_light_compliance": float(step_scores.traffic_light_compliance[0]),
                                "progress_m": float(ds)}
        if plan_scores is not None:
            # EC needs the previous frame's plan: absent (None) rather than NaN, which compares unequal to itself
            row = plan_scores.row(0)
            if final is not None:
                row["epdms"] = final
            info["epdms"] = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
            # 1: NAVSIM's stage 1 (the logged start, human filter on); 2: stage-2 semantics (a state the ego drove
            # into: a perturbed start or any later state; no filter)
            info["epdms_stage"] = stage
        if terminated or truncated:
            # the closed-loop summary, with the return and length under gymnasium's / SB3's episode keys
            self._done = True
            summary = {**self.episode_summary(), "r": self._return, "l": self._steps}
            # "epdms_episode": the key no wrapper writes (SB3's Monitor replaces info["episode"], gymnasium's
            # RecordEpisodeStatistics refuses it unless given another stats_key); "episode" for SB3 vec envs without
            # a Monitor, which read "r" and "l" from it
            info["epdms_episode"] = summary
            info["episode"] = dict(summary)
        return obs, reward, terminated, truncated, info

    def _plan_tracker(self, plan: np.ndarray) -> PlanTracker:
        """The LQR tracker of a (checked) plan from the current state: NAVSIM's interpolated reference."""
        w = self.world
        return PlanTracker(plan_to_reference(plan.astype(np.float64), w.ego, w.time_us), w.iteration,
                           self.sim.config.lqr)

    def _check_action(self, action) -> np.ndarray:
        sp = self.action_space
        what = "8 poses (x, y, heading)" if self.config.action_type == "plan" else "(acceleration, steering rate)"
        expected = f"a real-valued (float or integer) array of shape {sp.shape} ({what})"
        try:
            raw = np.asarray(action)
        except (ValueError, TypeError) as exc:  # ragged nested sequences
            raise ValueError(f"action must be {expected}, got {type(action).__name__} ({exc})") from None
        if action is None or raw.dtype.kind not in "iuf":  # complex, bool, strings, objects, dates
            raise TypeError(f"action must be {expected}, got {type(action).__name__} of dtype {raw.dtype}")
        a = raw.astype(np.float64)
        if a.shape != sp.shape:
            raise ValueError(f"action must have shape {sp.shape} ({what}), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action contains NaN or infinite values: {a.tolist()}")
        if np.any(a < sp.low) or np.any(a > sp.high):
            if self.config.invalid_action == "raise":
                bad = np.argwhere((a < sp.low) | (a > sp.high))[:3].tolist()
                low = sp.low.min(0).tolist() if a.ndim > 1 else sp.low.tolist()
                high = sp.high.max(0).tolist() if a.ndim > 1 else sp.high.tolist()
                raise ValueError(f"action out of bounds at {bad} (low {low}, high {high}); "
                                 f"pass invalid_action='clip' to clip instead")
            a = np.clip(a, sp.low, sp.high)
        return a.astype(np.float32)

    # ------------------------------------------------------------------ scoring
    def _logged_state(self) -> bool:
        """Whether the current state is the logged start (NAVSIM's stage-1 scene): no perturbation, no step yet."""
        return self.perturbation is None and self._steps == 0

    def _realised_past(self):
        """The past HC prepends to the submitted plan: at a logged start None, i.e. the logged human past exactly as
        pseudo-simulation builds it for NAVSIM's metric cache; otherwise the ego's past 1.5 s (the perturbed past it
        drove in, then the realised states), sampled as NAVSIM samples the human past (`history.hc_past`)."""
        if self._logged_state():
            return None
        return hc_past(np.array(list(self._past)).reshape(-1, STATE_SIZE), self.world.ego, self.world.time_us,
                       self.sim.scenario.dt_s)

    def _reference(self):
        """The PDM-Closed plan EP is normalised by: at a logged start NAVSIM's metric-cache trajectory, PDM-Closed
        planned from the logged state on the log's objects (`navsim/planning/metric_caching/
        metric_cache_processor.py`; the world's reactive agents, spawned on their lanes, differ slightly from the
        log at t0) without tuplan's emergency brake, computed once per episode (the label when it is that plan);
        elsewhere the label (None without pseudo-experts: EP is then the plan's own progress check)."""
        if not self._logged_state():
            return self._pdm
        if self._stage1_ref is None:
            if self._pdm is not None and self.sim.config.agent_mode == "non_reactive" and \
                    not self.config.expert_emergency_brake:
                self._stage1_ref = self._pdm
            else:
                from dataclasses import replace

                from ..experts import PDMClosedConfig, PDMClosedPlanner

                log_sim = Simulation(self.sim.scenario, self.sim.map,
                                     replace(self.sim.config, agent_mode="non_reactive"))
                self._stage1_ref = PDMClosedPlanner(PDMClosedConfig()).plan(log_sim, log_sim.reset(self.world.ego))
        return self._stage1_ref

    def _score_plan(self, plan):
        kw = {}
        p = self._reference()
        if p is not None:
            # EP against PDM-Closed's dense trajectory (40 poses 0.1 s apart from its start pose), as NAVSIM
            # normalises against metric_cache.trajectory (navsim/evaluate/pdm_score.py)
            kw = dict(reference_plan=global_to_local(p.trajectory[1:], self.world.ego[[X, Y, HEADING]]),
                      reference_interval_s=0.1, reference_start_pose=p.trajectory[0])
        scores, _ = pseudo_simulate(self.sim, self.world, plan[None], agent_mode=self.config.plan_scoring,
                                    past_states=self._realised_past(), route_roadblock_ids=self._score_route, **kw)
        return scores

    def _score_control(self, control):
        from ..metrics.pseudo_sim import scoring_scene

        st = [self.world.ego.copy()]
        for _ in range(40):
            st.append(propagate(st[-1][None], control[None], 0.1, self.sim.config.bicycle)[0])
        states = np.stack(st)[None]
        mode = self.config.plan_scoring
        scene = scoring_scene(self.sim, self.world, ego_states=states[0], agent_mode=mode,
                              past_states=self._realised_past(), route_roadblock_ids=self._score_route)
        return score_states(scene, states)

    def _human_filtered(self, scores):
        """NAVSIM's human false-positive filter at a logged start (navsim/evaluate/pdm_score.py, stage 1): the
        logged human's next 4 s as NAVSIM's metric cache holds it (8 poses 0.5 s apart), interpolated and tracked by
        the LQR + bicycle, scored alone in the same traffic mode without a past (HC then judges its 4 s alone); each
        column the human scores exactly 0 becomes 1 for the plan (`metrics.human_filter`, `human_filter` variant).
        Returns (filtered scores, the final EPDMS)."""
        from ..metrics import human_filter

        sim, w = self.sim, self.world
        poses = self._logged_plan()
        human, _ = pseudo_simulate(sim, w, poses[None], agent_mode=self.config.plan_scoring,
                                   past_states=np.zeros((0, STATE_SIZE)), route_roadblock_ids=self._score_route)
        f = human_filter(scores, human, variant=self.config.human_filter)
        return f.scores, float(f.final[0])

    def _logged_plan(self) -> np.ndarray:
        """The logged human's next 4 s as a plan [8, 3]: the logged ego's poses 0.5 s, 1.0 s, ... 4.0 s after the
        current iteration (NAVSIM's metric-cache human trajectory), in the current rear-axle frame (the action
        format): `info["logged_plan"]`, and the human NAVSIM's filter scores at a logged start. Past the scenario's
        end the poses come from the log itself (as NAVSIM's scene reads its future frames from the log); past the
        log's end its last pose is repeated."""
        sim, w = self.sim, self.world
        sc = sim.scenario
        its = w.iteration + NAVSIM_FRAME_STEPS * np.arange(1, 9)
        f = sc.start_index + np.minimum(its, sim.num_iterations - 1)
        poses = np.stack([sc.ego.x[f], sc.ego.y[f], sc.ego.heading[f]], -1)
        beyond = its > sim.num_iterations - 1
        if beyond.any():
            poses[beyond] = self._log_tail()[its[beyond] - sim.num_iterations]
        return global_to_local(poses, w.ego[[X, Y, HEADING]])

    def _log_tail(self) -> np.ndarray:
        """The logged ego's poses [40, 3] at the 40 iterations (4 s) after the scenario's last, from its log (cached
        per scenario; the log's last pose where it ends)."""
        sc = self.sim.scenario
        key = (sc.log_name, sc.token, len(sc.timestamps_us))
        if key not in self._log_tails:
            with self._builder_lock():
                self._log_tails[key] = self._builder.log_tail(sc, 8 * NAVSIM_FRAME_STEPS)
        return self._log_tails[key]

    def _score_segment(self, states, frames):
        """EPDMS sub-metrics of the executed step against the simulated objects (no HC: the step is too short)."""
        scene = scene_from_frames(self.sim, self._worlds[-len(frames)], frames, route_ids=self._route_lanes,
                                  centerline=self._centerline, past_states=np.zeros((0, 11)))
        return score_states(scene, states[None], ScorerConfig(), progress_reference=(1.0, 1.0),
                            multiplicative_only=True)  # the reward reads NC, DAC, DDC and TLC of the segment

    def _progress(self, states) -> float:
        c = self.sim.config.vehicle.rear_axle_to_center
        pts = np.stack([states[[0, -1], X] + c * np.cos(states[[0, -1], HEADING]),
                        states[[0, -1], Y] + c * np.sin(states[[0, -1], HEADING])], -1)
        arc, _ = polyline_project(np.ascontiguousarray(pts), np.ascontiguousarray(self._centerline), self._cl_s)
        return float(arc[1] - arc[0])

    def episode_summary(self) -> dict:
        """Closed-loop EPDMS of the episode so far (NAVSIM's human filter against the logged drive). HC prepends the
        past before the start to the realised trajectory: the logged human past at a logged start, the perturbed past
        at a perturbed start (the pasts `info["epdms"]` reads at the first step)."""
        # the start frame too: a `start_offset_s` reset moves iteration 0 within the same token's log
        key = (self.sim.scenario.token, self.sim.scenario.start_index, self._worlds[-1].iteration,
               self.config.agent_mode)
        if key not in self._human_cache:  # the logged drive in the same world (independent of the perturbation)
            # its worlds are kept per scenario and extended as far as an episode needs (a world depends only on the
            # ones before it): episodes ending at different iterations step the logged drive once
            wkey = key[:2] + key[3:]
            wh = self._human_worlds.get(wkey)
            if wh is None or wh[0] is not self.sim:
                wh = (self.sim, [self.sim.reset()])
                self._human_worlds[wkey] = wh
            sim, worlds = wh
            for i in range(len(worlds), self._worlds[-1].iteration + 1):
                worlds.append(sim.step(worlds[-1], ego_state=sim.logged_ego_state(i)))
                worlds[-2] = worlds[-2].observed()  # only the last one is stepped again
            # the logged drive judged alone, without a past, as NAVSIM's human filter scores the human
            self._human_cache[key] = episode_summary(self.sim, worlds[:self._worlds[-1].iteration + 1])["scores"]
        if self._frames[0] is None:
            self._frames[0] = self.sim.objects(self._worlds[0])
        s = episode_summary(self.sim, self._worlds, human=self._human_cache[key], past_states=self._start_hc_past,
                            frames=self._frames)
        s.pop("scores")
        return s

    # ------------------------------------------------------------------ observation / info
    def _observe(self):
        cfg = self.config
        w = self.world
        obs = {}
        objs = None
        if "cameras" in cfg.observation_keys or "bev" in cfg.observation_keys or "agents" in cfg.observation_keys:
            if self._frames[-1] is None:  # the current world's objects (the step computed them)
                self._frames[-1] = self.sim.objects(w)
            objs = self._frames[-1]
        self._last_objects = objs
        if "cameras" in cfg.observation_keys:
            self._last_render = self._camera_observation(objs)
            obs["cameras"] = self._last_render.rgb
        if "ego_status" in cfg.observation_keys:
            obs["ego_status"] = self._ego_status()
        if "bev" in cfg.observation_keys:
            obs["bev"] = self._bev().raster(w.ego, objs)
        if "agents" in cfg.observation_keys:
            obs["agents"] = self._agents(objs)
        if "route" in cfg.observation_keys:
            obs["route"] = self._route()
        return obs

    def _ego_status(self) -> np.ndarray:
        w = self.world
        e = w.ego
        cmd = self._driving_command(e)
        # the poses 1.5, 1.0, 0.5 s ago and now, in the current frame (NAVSIM's 4 history frames at 2 Hz)
        hist = [p[[X, Y, HEADING]] for p in self._past] + [e[[X, Y, HEADING]]]
        picks = [hist[max(0, len(hist) - 1 - 5 * j)] for j in (3, 2, 1, 0)]
        local = global_to_local(np.stack(picks), e[[X, Y, HEADING]])
        local = np.clip(local, [-200, -200, -np.pi], [200, 200, np.pi])
        out = np.concatenate([[e[VELOCITY_X], e[VELOCITY_Y], e[ACCELERATION_X], e[ACCELERATION_Y]], cmd,
                              local.ravel()]).astype(np.float32)
        lo, hi = self.observation_space["ego_status"].low, self.observation_space["ego_status"].high
        return np.clip(out, lo, hi)

    def _driving_command(self, e) -> np.ndarray:
        """NAVSIM's driving command (map/commands.py) on the episode's route centreline: the lateral offset of the
        point 20 m ahead along the route, in the frame of the projected pose."""
        from ..map.commands import DRIVING_COMMAND_DISTANCE, DRIVING_COMMAND_LATERAL, FORWARD, LEFT, RIGHT

        key = e[:2].tobytes()  # a pure function of the position on this episode's centreline: memoised per episode
        hit = self._commands.get(key)
        if hit is not None:
            return hit.copy()
        out = np.zeros(4, dtype=np.float32)
        s, _ = polyline_project(np.ascontiguousarray(e[None, :2]), np.ascontiguousarray(self._centerline), self._cl_s)
        q = np.array([s[0], s[0] + DRIVING_COMMAND_DISTANCE])
        pts = self._cl_poly.interpolate(q)
        y = global_to_local(pts[1:2], pts[0])[0, 1]
        out[LEFT if y >= DRIVING_COMMAND_LATERAL else RIGHT if y <= -DRIVING_COMMAND_LATERAL else FORWARD] = 1
        self._commands[key] = out.copy()
        return out

    def _bev(self):
        from ..render.bev import BEVRenderer

        if getattr(self, "_bev_r", None) is None or self._bev_r[0] is not self.sim:
            self._bev_r = (self.sim, BEVRenderer(self.sim.map, self._route_lanes, size=self.config.bev_size))
        return self._bev_r[1]

    def _agents(self, objs) -> np.ndarray:
        out = np.zeros((MAX_AGENTS, 8), np.float32)
        if objs is None or not len(objs):
            return out
        e = self.world.ego
        loc = global_to_local(np.stack([objs.x, objs.y, objs.heading], -1), e[[X, Y, HEADING]])
        d = np.hypot(loc[:, 0], loc[:, 1])
        order = np.argsort(d, kind="stable")[:MAX_AGENTS]
        c, s = np.cos(-e[HEADING]), np.sin(-e[HEADING])
        vx = c * objs.vx - s * objs.vy
        vy = s * objs.vx + c * objs.vy
        rows = np.stack([loc[:, 0], loc[:, 1], loc[:, 2], vx, vy, objs.length, objs.width,
                         objs.category.astype(np.float32)], -1)[order]
        space = self.observation_space["agents"]
        out[:len(rows)] = np.clip(rows, space.low[0], space.high[0])
        return out

    def _route(self) -> np.ndarray:
        e = self.world.ego
        s, _ = polyline_project(np.ascontiguousarray(e[None, :2] + 0.0), np.ascontiguousarray(self._centerline),
                                self._cl_s)
        q = s[0] + np.linspace(0.0, 62.0, ROUTE_POINTS)
        xy = np.stack([np.interp(q, self._cl_s, self._centerline[:, 0]), np.interp(q, self._cl_s,
                                                                                   self._centerline[:, 1])], -1)
        loc = global_to_local(np.c_[xy, np.zeros(len(xy))], e[[X, Y, HEADING]])[:, :2]
        return np.clip(loc, -500, 500).astype(np.float32)

    def _info(self) -> dict:
        w = self.world
        sc = self.sim.scenario
        info = {"scenario_token": sc.token, "log_name": sc.log_name, "map_location": sc.map_location,
                "iteration": int(w.iteration), "time_us": int(w.time_us), "step": self._steps,
                "episode_steps": self._n_steps,
                # the applied perturbation (all offsets 0, speed scale 1 for the logged start: one structure for
                # every episode, as gymnasium's vector envs merge infos key by key)
                "perturbation": asdict(self.perturbation if self.perturbation is not None else Perturbation()),
                "perturbed": self.perturbation is not None,
                # why a sampled start is the logged one (no valid perturbed start), else None
                "perturbation_error": self._pert_error,
                # the log's own drive from here: the logged ego's next 8 poses 0.5 s apart, in the current rear-axle
                # frame (the action format; `agents.baselines.LogReplayAgent` submits it)
                "logged_plan": self._logged_plan().astype(np.float32)}
        if self.config.pseudo_experts:
            from ..experts import PDMClosedConfig, PDMClosedPlanner, recovery_plan

            planner = PDMClosedPlanner(PDMClosedConfig(emergency_brake=self.config.expert_emergency_brake))
            # at reset, the label `valid_start` judged (the same fresh planner on the same world); after a step
            # `prepare_expert_plans` planned with other envs, the plan it made for this world
            ahead, self._ahead_pdm = self._ahead_pdm, None
            if self._start_plan is not None:
                self._pdm = self._start_plan
            elif ahead is not None and ahead[0] is w:
                self._pdm = ahead[1]
            else:
                self._pdm = planner.plan(self.sim, w)
            self._start_plan = None
            if ahead is not None and ahead[0] is w and self._pdm is ahead[1]:
                rec = ahead[2]  # planned with the other envs' from the same PDM-Closed fallback
            else:
                rec = recovery_plan(self.sim, w, fallback_plan=self._pdm)
            info["pseudo_expert"] = {"pdm_closed": self._pdm.poses.astype(np.float32),
                                     "recovery": rec.poses.astype(np.float32)}
            info["pseudo_expert_source"] = {"pdm_closed": self._pdm.source, "recovery": rec.source}
            self._last_plans = {"pdm_closed": self._pdm.trajectory, "recovery": rec.trajectory}
        else:
            self._pdm = None
            self._last_plans = {}
        self._agent_inputs(info)
        if self._vocab is not None:
            info["vocab_scores"], info["vocab_epdms"] = vocabulary_scores(self.sim, w, self._vocab)
        return info

    def _agent_inputs(self, info: dict) -> None:
        """The info keys agent bridges read (module docstring; `envs.agent_inputs`)."""
        from .agent_inputs import camera_calibration, navsim_ego_history, planner_input

        info["driving_command"] = self._driving_command(self.world.ego).astype(np.int64)
        info["ego_history"] = navsim_ego_history(self)
        if "cameras" in self.config.observation_keys:
            info["camera_calibration"] = camera_calibration(self, getattr(self, "_cameras_logged", False))
        if self.config.planner_inputs:
            info["planner_input"] = planner_input(self)

    # ------------------------------------------------------------------ data generation (`training.generate`)
    @property
    def pseudo_expert_trajectories(self) -> dict:
        """The pseudo-experts' dense plans of the state just observed: {name: float32 [40, 3]}, (x, y, heading) of
        the rear axle 0.1 s apart (t = 0.1 ... 4.0 s) in the current rear-axle frame; `info["pseudo_expert"][name]`
        is rows 4, 9, ..., 39 of it. Empty without pseudo-experts."""
        if self.sim is None:
            raise RuntimeError("call reset() first")
        e = self.world.ego[[X, Y, HEADING]]
        return {k: global_to_local(np.asarray(t, dtype=np.float64)[1:41, :3], e).astype(np.float32)
                for k, t in self._last_plans.items()}

    def history_camera_images(self) -> np.ndarray:
        """The rendered cameras (`cameras`, `width` x `height`) of NAVSIM's 4 history frames of the current state:
        uint8 [4, n, H, W, 3], oldest first, the current frame last (the frames of `info["ego_history"]`, 1.5, 1.0,
        0.5 and 0 s ago). Each frame is rendered from the ego's pose then (the logged or perturbed past it drove
        in, then the realised states) with the objects then: the simulated ones for the episode's iterations, the
        log's before the start. Always rendered (`camera_source` aside): no logged camera saw a perturbed past."""
        from dataclasses import replace

        from .agent_inputs import _history_picks, ego_past

        if self.sim is None:
            raise RuntimeError("call reset() before history_camera_images()")
        sim, w = self.sim, self.world
        sc, ag = sim.scenario, sim.scenario.agents
        hist = ego_past(self)
        picks = _history_picks(len(hist))
        tracks = np.asarray(ag.track_tokens)
        renderer = self._renderer()
        out = []
        for p in picks:
            it = int(w.iteration) - (len(hist) - 1 - int(p))
            if it >= 0:
                objs = sim.objects(self._worlds[it] if it < int(w.iteration) else w)
            else:  # before the start: the logged objects at that frame (the log's first frame where it starts later)
                f = max(0, sc.start_index + it)
                sel = np.nonzero(ag.valid[f])[0]
                objs = sim._from_log(f, sel, np.zeros(len(sel), bool))
            if len(objs):
                objs = replace(objs, track=tracks[objs.track])
            out.append(renderer.render(hist[p], objs, with_depth=False).rgb)
        return np.stack(out)

    # ------------------------------------------------------------------ render
    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self.sim is None:
            raise RuntimeError("call reset() before render()")
        from ..render.bev import BEVRenderer, mosaic

        w = self.world
        objs = self._last_objects if self._last_objects is not None else self.sim.objects(w)
        if "cameras" in self.config.observation_keys:
            cams = self._last_render.rgb
        else:
            cams = self._render_cameras(objs).rgb
        size = max(256, self.config.height * 2)
        key = (id(self.sim), size)
        if getattr(self, "_render_bev", None) is None or self._render_bev[0] != key:  # one per scenario, not per frame
            self._render_bev = (key, self.sim, BEVRenderer(self.sim.map, self._route_lanes, size=size))
        bev = self._render_bev[2].rgb(w.ego, objs, ego_box=ego_box(w.ego), plans=self._last_plans)
        return mosaic(cams, bev)


def _load_scenario(builder, config: EnvConfig, token: str):
    """The scenario of a split token as the env loads it (`SimScaleEnv._scenario`, and its prefetching thread)."""
    if config.scene_window == "navsim":
        return builder.navsim_scenario(token, duration_s=config.navsim_duration_s)
    return builder.load(token)


def prepare_plan_steps(envs, actions) -> int:
    """Step several envs' plan actions together, ahead of their `step` calls (`SimScaleVectorEnv`): for each
    `SimScaleEnv` in `envs` whose `step(actions[i])` would track a plan, the worlds of its next
    `replan_interval` are computed now, the LQR and bicycle of all envs batched per iteration
    (`sim.world.advance_tracked`), and its next `step` of that same action from that same state uses them instead
    of stepping (any other call steps as usual). Bit-identical to stepping each env alone. An env whose step would
    raise (no reset, episode over, a bad action) is left to raise in its own `step`; None actions are skipped.
    Returns how many envs were prepared."""
    from ..sim.world import advance_tracked

    todo, groups = [], {}
    for env, action in zip(envs, actions):
        env._ahead = None
        if action is None or env.sim is None or env._done or env._steps >= env._n_steps \
                or env.config.action_type != "plan":
            continue
        try:
            a = env._check_action(action)
            w = env.world
            ref = plan_to_reference(a.astype(np.float64), w.ego, w.time_us)
        except (ValueError, TypeError):
            continue  # `step` raises it
        groups.setdefault((env.sim.config.lqr, ref.shape), []).append(len(todo))
        todo.append([env, a, ref, min(env._k, env.sim.num_iterations - 1 - w.iteration)])
    if not todo:
        return 0
    for (lqr, _), rows in groups.items():  # the trackers' fits in one call per LQR config (`PlanTracker.many`)
        trackers = PlanTracker.many(np.stack([todo[r][2] for r in rows]), [todo[r][0].world.iteration for r in rows],
                                    lqr)
        for r, tr in zip(rows, trackers):
            todo[r][2] = tr
    ahead = advance_tracked([t[0].sim for t in todo], [t[0].world for t in todo], [t[2] for t in todo],
                            [t[3] for t in todo])
    for (env, a, _, _), worlds in zip(todo, ahead):
        env._ahead = (a, env.world, worlds)
    return len(todo)


def prepare_expert_plans(envs) -> int:
    """The pseudo-experts' plans (PDM-Closed, then recovery with it as fallback) of the worlds the steps
    `prepare_plan_steps` prepared will end in, for every env in `envs` with pseudo-experts, computed together
    (`experts.pdm_closed_plans`: one batched unrolling and LQR tracking of every scene's proposals, per group of equal
    planner configs; `experts.recovery_plans`: each round of tracking in one call); that env's `info` after its step
    serves them when its step does end in that world (else it plans itself). Each plan is the one planning alone
    makes (bit-identical, tested). Returns how many envs were planned for."""
    from ..experts import PDMClosedConfig, pdm_closed_plans, recovery_plans

    groups: dict = {}
    for env in envs:
        env._ahead_pdm = None
        if env._ahead is None or not env._ahead[2] or not env.config.pseudo_experts:
            continue
        groups.setdefault(bool(env.config.expert_emergency_brake), []).append(env)
    for brake, members in groups.items():
        worlds = [env._ahead[2][-1] for env in members]
        sims = [env.sim for env in members]
        plans = pdm_closed_plans(sims, worlds, PDMClosedConfig(emergency_brake=brake))
        recs = recovery_plans(sims, worlds, fallback_plans=plans)
        for env, w, plan, rec in zip(members, worlds, plans, recs):
            env._ahead_pdm = (w, plan, rec)
    return sum(len(m) for m in groups.values())


def load_reward_vocabulary(path: str | Path) -> np.ndarray:
    """The trajectory vocabulary [K, P, 3] (float64) of a `.npy` file: K plans of P poses (x, y, heading) in the
    rear-axle frame spread evenly over NAVSIM's 4 s (P = 40: 0.1 s apart, 8: 0.5 s; 0.1 s multiples), as
    `training.generate.load_vocab` accepts. A missing file is a MissingFileError, any other bad file a
    CorruptFileError, both naming the file and the expected shape."""
    from ..errors import CorruptFileError, MissingFileError
    from ..metrics.vocabulary import load_vocabulary

    expected = ("expected a finite trajectory vocabulary [K, P, 3]: K >= 1 plans of P poses (x, y, heading) spread "
                f"over {NAVSIM_HORIZON_S:g} s in multiples of 0.1 s (e.g. [K, 40, 3] or [K, 8, 3])")
    try:
        v = load_vocabulary(path)
    except MissingFileError as exc:
        raise MissingFileError(path, f"reward_vocabulary not found ({expected})") from exc
    except CorruptFileError as exc:
        raise CorruptFileError(path, f"not a reward vocabulary ({exc.detail}); {expected}") from exc
    poses = v.shape[1]
    step = NAVSIM_HORIZON_S / poses if poses else 0.0
    if v.shape[0] < 1 or poses < 1 or abs(step / 0.1 - round(step / 0.1)) > 1e-9:
        raise CorruptFileError(path, f"not a reward vocabulary: shape {v.shape}; {expected}")
    return v


def vocabulary_scores(sim, world, vocab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """EPDMS labels of every vocabulary plan from `world`, as the data engine writes them (`training.generate`'s
    "vocab_scores" / "vocab_epdms"): `metrics.vocabulary.label_scene` (non-reactive pseudo-simulation on the
    scenario's route, no human filter, EP pairwise against PDM-Closed as SimScale's gen_gt) with the plans' pose
    interval 4 s / P. Returns (float16 [K, len(SUB_METRICS)] in `metrics.SUB_METRICS` order, EC NaN: a single frame
    has no previous plan; float16 [K] EPDMS)."""
    from ..metrics import SUB_METRICS
    from ..metrics.vocabulary import label_scene

    lab = label_scene(sim, world, vocab, interval_s=NAVSIM_HORIZON_S / vocab.shape[1], agent_mode="non_reactive",
                      reference="pdm_closed")
    k = vocab.shape[0]
    scores = np.stack([lab[m] if m in lab else np.full(k, np.nan, np.float16) for m in SUB_METRICS], -1)
    return scores.astype(np.float16), np.asarray(lab["pdm_score"], np.float16)


def save_video(frames, path: str | Path, fps: int = 2) -> Path:
    """Write RGB frames [T, H, W, 3] as mp4 (imageio-ffmpeg) or, for a .gif path or without ffmpeg, a GIF."""
    path = Path(path)
    frames = [np.asarray(f, np.uint8) for f in frames]
    if not frames:
        raise ValueError("no frames to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() != ".gif":
        try:
            import imageio.v2 as imageio

            with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=16) as wr:
                for f in frames:
                    h, w = f.shape[:2]
                    pad = np.zeros(((h + 15) // 16 * 16, (w + 15) // 16 * 16, 3), np.uint8)
                    pad[:h, :w] = f
                    wr.append_data(pad)
            return path
        except Exception:  # no ffmpeg: fall back to a GIF beside it
            path = path.with_suffix(".gif")
    from PIL import Image

    ims = [Image.fromarray(f) for f in frames]
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=int(1000 / fps), loop=0)
    return path
