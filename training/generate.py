"""SimScale's generation rounds, one sample at a time (issue 17, deliverables 1 and 2).

A sample is a pure function of (config, base token, round): `generate_sample` resets the env at the base token with
a perturbation drawn by the env's own sampler, seeded by `sample_seed(cfg.seed, base_token, round_)` (the env's
start checks: a valid perturbed start, a comfortable perturbed past, PDM-Closed has a safe label), labels the state
with the chosen pseudo-expert (`info["pseudo_expert"]`: 8 poses at 0.5 s; `SimScaleEnv.pseudo_expert_trajectories`:
the same plan 40 x 0.1 s) and keeps it only if it is valid:

- the start is perturbed (the env found a valid perturbed start; else "no_valid_start");
- the expert's own closed-loop rollout over 4 s (8 env steps of 0.5 s, the expert replanning at every step, the env's
  agents reacting) has no at-fault collision ("expert_collision"), stays on the drivable area ("expert_off_road") and
  obeys the traffic lights ("expert_red_light"), judged by the env's step metrics; a scenario ending before the 4 s
  is "scenario_too_short";
- the EPDMS of the label by pseudo-simulation (`info["epdms"]` of the first step: the submitted label, stage-2
  semantics at a perturbed start, non-reactive traffic) is >= `cfg.epdms_threshold` ("expert_epdms_below_threshold").

The row (columns in `generate_sample`'s docstring; Parquet-friendly types) holds the 4 history
frames in NAVSIM's convention, their rendered cameras as JPEG bytes, the label, the current agents and route, the
perturbation and, with a vocabulary, the EPDMS sub-score labels of every vocabulary trajectory
(`simscale_env.metrics.vocabulary.label_scene`: non-reactive, human filter off, EP against PDM-Closed, as
SimScale's `gen_gt`).

    env = make_generator_env(cfg)
    for tok in base_tokens(cfg):
        row, reason = generate_sample(env, cfg, tok, 1)
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simscale_env.errors import SimScaleError
from simscale_env.metrics import SUB_METRICS

log = logging.getLogger(__name__)

ALL_CHANNELS = ("CAM_L0", "CAM_F0", "CAM_R0", "CAM_L1", "CAM_B0", "CAM_R1", "CAM_L2", "CAM_R2")
EXPERTS = ("pdm_closed", "recovery")
REJECTION_REASONS: tuple[str, ...] = ("no_valid_start", "expert_collision", "expert_off_road", "expert_red_light",
                                      "scenario_too_short", "expert_epdms_below_threshold")
ROLLOUT_STEPS = 8  # 4 s of 0.5 s env steps
HORIZON_S = 4.0
# the env kwargs the generator needs (cfg.env_kwargs may not contradict them)
_REQUIRED_ENV = {"action_type": "plan", "replan_interval": 0.5, "pseudo_experts": True, "perturb": True,
                 "agent_mode": "reactive", "plan_scoring": "non_reactive"}


class GenerationError(SimScaleError, ValueError):
    """A generation config or input that cannot work (unknown expert, bad vocabulary, ...)."""


@dataclass(frozen=True)
class GenConfig:
    split: str = "mini-navtrain"  # env split name or scene_filter YAML path
    rounds: int = 1
    expert: str = "pdm_closed"  # or "recovery"
    seed: int = 0
    cameras: tuple[str, ...] = ("CAM_L0", "CAM_F0", "CAM_R0")  # ("all",) -> the 8 channels
    width: int = 480
    height: int = 224
    epdms_threshold: float = 0.8
    vocab: str | None = None  # path of a vocabulary .npy [K, poses, 3]
    jpeg_quality: int = 90
    env_kwargs: dict = field(default_factory=dict)  # data_root, data_source, ...

    def __post_init__(self):
        object.__setattr__(self, "cameras", tuple(self.cameras))
        if self.expert not in EXPERTS:
            raise GenerationError(f"expert must be one of {EXPERTS}, got {self.expert!r}")
        for name in ("rounds", "width", "height"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise GenerationError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise GenerationError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not self.cameras:
            raise GenerationError("cameras must name at least one channel (or 'all')")
        if isinstance(self.jpeg_quality, bool) or not isinstance(self.jpeg_quality, (int, np.integer)) \
                or not 1 <= self.jpeg_quality <= 100:
            raise GenerationError(f"jpeg_quality must be an integer in [1, 100], got {self.jpeg_quality!r}")
        if not isinstance(self.epdms_threshold, (int, float, np.number)) or isinstance(self.epdms_threshold, bool) \
                or not np.isfinite(self.epdms_threshold):
            raise GenerationError(f"epdms_threshold must be a finite number, got {self.epdms_threshold!r}")
        if not isinstance(self.env_kwargs, dict):
            raise GenerationError(f"env_kwargs must be a dict, got {type(self.env_kwargs).__name__}")

    @property
    def channels(self) -> tuple[str, ...]:
        return ALL_CHANNELS if self.cameras == ("all",) else self.cameras


def sample_seed(seed: int, base_token: str, round_: int) -> int:
    """The reset seed of one sample: blake2b of (seed, base token, round), stable across processes and machines
    (no Python `hash()`), in [0, 2**63)."""
    h = hashlib.blake2b(f"simscale-generate/{int(seed)}/{base_token}/{int(round_)}".encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


def _env_spec(cfg: GenConfig) -> tuple[str, dict]:
    from simscale_env.envs import split_env_spec

    env_id, kw = split_env_spec(cfg.split)
    for k, v in _REQUIRED_ENV.items():
        if k in cfg.env_kwargs and cfg.env_kwargs[k] != v:
            raise GenerationError(f"generation needs env {k}={v!r}; env_kwargs has {k}={cfg.env_kwargs[k]!r}")
    kw.update(cfg.env_kwargs)
    kw.update(_REQUIRED_ENV)
    # the cameras are rendered per history frame (`history_camera_images`), not at every rollout step
    kw.update(cameras=cfg.channels, width=int(cfg.width), height=int(cfg.height),
              observation_keys=("ego_status", "agents", "route"))
    return env_id, kw


def make_generator_env(cfg: GenConfig):
    """The env of a generation (built once per worker, reused for every sample)."""
    import gymnasium as gym

    import simscale_env  # noqa: F401  (registration)

    env_id, kw = _env_spec(cfg)
    return gym.make(env_id, disable_env_checker=True, **kw)


def base_tokens(cfg: GenConfig) -> list[str]:
    """The split's tokens in the split's order (round 1 draws from all of them)."""
    from simscale_env.envs import split_tokens

    return split_tokens(cfg.split, cfg.env_kwargs)


_VOCABS: dict = {}


def load_vocab(path) -> np.ndarray:
    """The vocabulary [K, P, 3] of `path` (cached per process; `simscale_env.envs.load_reward_vocabulary`, the env's
    `reward_vocabulary` reader): P poses spread over 4 s (P = 40: 0.1 s, 8: 0.5 s). A file of another shape is a
    CorruptFileError naming it."""
    from simscale_env.envs import load_reward_vocabulary

    key = str(Path(path).resolve())
    if key not in _VOCABS:
        _VOCABS[key] = load_reward_vocabulary(path)
    return _VOCABS[key]


def encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    """uint8 [H, W, 3] -> JPEG bytes (baseline, PIL): the encoding of every image a sample holds, real or sim."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="JPEG", quality=int(quality), optimize=False,
                                                    progressive=False)
    return buf.getvalue()


def _f(v) -> float:
    return float("nan") if v is None else float(v)


def _expert_action(info: dict, cfg: GenConfig) -> np.ndarray:
    """The action the validity rollout submits at a step: the expert's plan of that state."""
    return info["pseudo_expert"][cfg.expert]


def camera_meta_json(calibration: dict, channels) -> str:
    """The "camera_meta" column: JSON {channel: intrinsics, sensor2lidar_rotation/translation, distortion, width,
    height} of `calibration` (`info["camera_calibration"]`) for `channels`."""
    keys = ("intrinsics", "sensor2lidar_rotation", "sensor2lidar_translation", "distortion")
    meta = {ch: {**{k: np.asarray(calibration[ch][k]).tolist() for k in keys},
                 "width": int(calibration[ch]["width"]), "height": int(calibration[ch]["height"])}
            for ch in channels}
    return json.dumps(meta, sort_keys=True)


def vocab_label_columns(sim, world, vocab: np.ndarray) -> dict:
    """The reward-label columns of a sample at (sim, world): "vocab_scores" (float16 [K, 9] bytes, SUB_METRICS order,
    EC NaN) and "vocab_epdms" (float16 [K] bytes), the labels of the env's `reward_vocabulary` option
    (`simscale_env.envs.vocabulary_scores`: label_scene non-reactive, EP against PDM-Closed as SimScale's gen_gt)."""
    from simscale_env.envs import vocabulary_scores

    scores, epdms = vocabulary_scores(sim, world, vocab)
    return {"vocab_scores": scores.astype("<f2").tobytes(), "vocab_epdms": epdms.astype("<f2").tobytes()}


def generate_sample(env, cfg: GenConfig, base_token: str, round_: int,
                    timings: dict | None = None) -> tuple[dict | None, str | None]:
    """One sample of round `round_` (from 1) at `base_token`: (row, None) if valid, else (None, reason) with the
    reason one of REJECTION_REASONS. A pure function of (cfg, base_token, round_). `timings`, if given, accumulates
    seconds per phase ("reset", "rollout", "vocab", "render", "encode").

    Row columns (Parquet-friendly: str, int, float, bool, bytes, lists of float/int/bytes): "token"
    (`<base_token>-<round:03d>`), "base_token", "round", "log_name", "map_location", "timestamp_us" (the current
    frame), "expert", "perturbation_{lateral,longitudinal,heading,speed_scale}" (m, m, rad, x); NAVSIM's 4 history
    frames oldest first (poses in the current rear-axle frame): "ego_pose" (4 x [x, y, heading]), "ego_velocity"
    (4 x 2), "ego_acceleration" (4 x 2), "driving_command" (4 x 4 ints); per camera channel a list of 4 JPEG bytes
    (oldest first) and "camera_meta" (JSON {channel: intrinsics, sensor2lidar_rotation/translation, distortion,
    width, height}); "label_poses" (8 x 3 at 0.5 s), "label_trajectory" (40 x 3 at 0.1 s), "label_epdms" and
    "label_<sub-metric>" (metrics.SUB_METRICS; EC NaN: no previous frame); "agents" (N x 8 flat: x, y, heading, vx,
    vy, length, width, category of the current frame, nearest first), "route" (32 x 2 flat); with `cfg.vocab`:
    "vocab_scores" (float16 [K, 9] bytes, SUB_METRICS order) and "vocab_epdms" (float16 [K] bytes)."""
    from simscale_env.envs.agent_inputs import camera_calibration

    if isinstance(round_, bool) or not isinstance(round_, (int, np.integer)) or round_ < 1:
        raise GenerationError(f"round_ must be an integer >= 1, got {round_!r}")
    t = timings if timings is not None else {}

    def tick(name, t0):
        now = time.perf_counter()
        t[name] = t.get(name, 0.0) + now - t0
        return now

    vocab = load_vocab(cfg.vocab) if cfg.vocab else None
    u = env.unwrapped
    t0 = time.perf_counter()
    obs, info = env.reset(seed=sample_seed(cfg.seed, base_token, round_), options={"scenario_token": base_token})
    t0 = tick("reset", t0)
    if not info["perturbed"]:
        log.debug("%s round %d: no valid start (%s)", base_token, round_, info.get("perturbation_error"))
        return None, "no_valid_start"
    # what the sample holds of the start state, before the rollout moves the env
    sim, world = u.sim, u.world
    label_poses = np.asarray(info["pseudo_expert"][cfg.expert], dtype=np.float32)
    label_traj = u.pseudo_expert_trajectories[cfg.expert]
    hist = info["ego_history"]
    pert = info["perturbation"]
    start = {"log_name": str(info["log_name"]), "map_location": str(info["map_location"]),
             "timestamp_us": int(info["time_us"])}
    agents = np.asarray(obs["agents"], dtype=np.float32)
    agents = agents[agents[:, 5] > 0]  # the padding rows have no length
    route = np.asarray(obs["route"], dtype=np.float32)

    # validity: the expert's own closed-loop rollout over 4 s
    first_epdms = None
    action = _expert_action(info, cfg)
    steps = 0
    for _ in range(ROLLOUT_STEPS):
        obs_s, _, terminated, truncated, sinfo = env.step(action)
        steps += 1
        if first_epdms is None:
            first_epdms = sinfo["epdms"]
        m = sinfo["step_metrics"]
        reason = ("expert_collision" if m["no_at_fault_collisions"] < 1.0 else
                  "expert_off_road" if m["drivable_area_compliance"] == 0.0 else
                  "expert_red_light" if m["traffic_light_compliance"] < 1.0 else None)
        if reason is not None:
            tick("rollout", t0)
            return None, reason
        if terminated or truncated:
            break
        action = _expert_action(sinfo, cfg)
    t0 = tick("rollout", t0)
    if steps < ROLLOUT_STEPS:
        return None, "scenario_too_short"
    if not first_epdms["epdms"] >= cfg.epdms_threshold:
        return None, "expert_epdms_below_threshold"

    row = {"token": f"{base_token}-{int(round_):03d}", "base_token": str(base_token), "round": int(round_),
           **start, "expert": cfg.expert,
           "perturbation_lateral": float(pert["lateral"]), "perturbation_longitudinal": float(pert["longitudinal"]),
           "perturbation_heading": float(pert["heading"]), "perturbation_speed_scale": float(pert["speed_scale"]),
           "ego_pose": np.asarray(hist["ego_pose"], np.float64).ravel().tolist(),
           "ego_velocity": np.asarray(hist["ego_velocity"], np.float64).ravel().tolist(),
           "ego_acceleration": np.asarray(hist["ego_acceleration"], np.float64).ravel().tolist(),
           "driving_command": [int(c) for c in np.asarray(hist["driving_command"]).ravel()]}
    row["label_poses"] = label_poses.astype(np.float64).ravel().tolist()
    row["label_trajectory"] = label_traj.astype(np.float64).ravel().tolist()
    row["label_epdms"] = float(first_epdms["epdms"])
    for name in SUB_METRICS:
        row[f"label_{name}"] = _f(first_epdms.get(name))
    row["agents"] = agents.astype(np.float64).ravel().tolist()
    row["route"] = route.astype(np.float64).ravel().tolist()
    if vocab is not None:
        row.update(vocab_label_columns(sim, world, vocab))
        t0 = tick("vocab", t0)

    # the cameras of the 4 history frames, at the start state (the rollout moved the env: reset again, the same seed
    # gives the same start; Simulation.reset is pure)
    env.reset(seed=sample_seed(cfg.seed, base_token, round_), options={"scenario_token": base_token})
    if u.world.ego.tobytes() != world.ego.tobytes():
        raise RuntimeError(f"{base_token} round {round_}: a reset with the same seed gave another start")
    t0 = tick("reset", t0)
    images = u.history_camera_images()  # [4, n, H, W, 3]
    t0 = tick("render", t0)
    for j, ch in enumerate(cfg.channels):
        row[ch] = [encode_jpeg(images[i, j], cfg.jpeg_quality) for i in range(images.shape[0])]
    row["camera_meta"] = camera_meta_json(camera_calibration(u, False), cfg.channels)
    tick("encode", t0)
    return row, None
