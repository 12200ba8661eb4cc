"""A stand-in for training.generate (the engine's tests): the same interface, no simulation. Splits are named
``fake-N`` (N base tokens); a sample is a pure function of (seed, token, round) with the column kinds of the real
rows (str, int, float, NaN, bool, bytes, lists of floats, ints and bytes). ``fail`` tokens always raise; ``flaky``
tokens raise on their first attempt in each process (the engine's retry makes them succeed)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from simscale_env.errors import SimScaleError

REJECTION_REASONS = ("no_valid_start", "expert_collision", "expert_epdms_below_threshold")


@dataclass(frozen=True)
class FakeConfig:
    split: str = "fake-4"
    rounds: int = 2
    expert: str = "pdm_closed"
    seed: int = 0
    cameras: tuple = ("CAM_F0",)
    width: int = 64
    height: int = 32
    vocab: str | None = None
    fail: tuple = ()
    flaky: tuple = ()
    valid_p: float = 0.75
    env_kwargs: dict = field(default_factory=dict)


_CALLS: dict = {}


def base_tokens(cfg):
    if not cfg.split.startswith("fake-"):
        raise SimScaleError(f"unknown split {cfg.split!r}")
    return [f"{k:016x}" for k in range(int(cfg.split[5:]))]


def make_generator_env(cfg):
    class Env:
        def close(self):
            pass

    return Env()


def generate_sample(env, cfg, base_token, round_, timings=None):
    if base_token in cfg.fail:
        raise RuntimeError(f"boom at {base_token}")
    if base_token in cfg.flaky:
        _CALLS[base_token, round_] = _CALLS.get((base_token, round_), 0) + 1
        if _CALLS[base_token, round_] == 1:
            raise RuntimeError("transient")
    h = hashlib.blake2b(f"{cfg.seed}/{base_token}/{round_}".encode(), digest_size=8).digest()
    rng = np.random.default_rng(int.from_bytes(h, "little"))
    if timings is not None:
        timings["render"] = 0.001
    if rng.random() > cfg.valid_p:
        return None, REJECTION_REASONS[int(rng.integers(len(REJECTION_REASONS)))]
    return {"token": f"{base_token}-{round_:03d}", "base_token": base_token, "round": int(round_),
            "timestamp_us": int(rng.integers(1 << 40)), "perturbation_lateral": float(rng.normal()),
            "ego_pose": rng.normal(size=12).tolist(), "driving_command": rng.integers(0, 2, 16).tolist(),
            "CAM_F0": [rng.bytes(int(rng.integers(100, 3000))) for _ in range(4)],
            "agents": rng.normal(size=8 * int(rng.integers(0, 3))).tolist(), "label_ec": float("nan"),
            "flag": bool(rng.random() > 0.5), "vocab_epdms": np.float16(rng.random(5)).tobytes(),
            "label_epdms": np.float64(rng.random())}, None
