"""Baseline agents for `SimScale-*-v0` (plan actions: 8 poses 0.5 s apart in the rear-axle frame)."""

from __future__ import annotations

import numpy as np


class ExpertAgent:
    """Follows a pseudo-expert of `info["pseudo_expert"]` ("pdm_closed" or "recovery")."""

    def __init__(self, kind: str = "pdm_closed"):
        if kind not in ("pdm_closed", "recovery"):
            raise ValueError(f"kind must be 'pdm_closed' or 'recovery', got {kind!r}")
        self.kind = kind
        self.name = kind

    def act(self, obs, info) -> np.ndarray:
        if "pseudo_expert" not in info:
            raise KeyError("the env was made with pseudo_experts=False: info has no 'pseudo_expert'")
        return np.asarray(info["pseudo_expert"][self.kind], np.float32)


class ConstantVelocityAgent:
    """Straight ahead at the current speed (from `ego_status`)."""

    name = "constant_velocity"

    def act(self, obs, info) -> np.ndarray:
        v = float(np.hypot(*obs["ego_status"][:2]))
        t = 0.5 * np.arange(1, 9, dtype=np.float32)
        return np.stack([v * t, np.zeros(8), np.zeros(8)], -1).astype(np.float32)


class StandStillAgent:
    """Asks to stay where it is (the LQR brakes)."""

    name = "stand_still"

    def act(self, obs, info) -> np.ndarray:
        return np.zeros((8, 3), np.float32)


class LogReplayAgent:
    """The logged human: submits the log's own next 4 s (`info["logged_plan"]`, the logged ego's poses 0.5 s apart
    in the current rear-axle frame), tracked by the LQR like any plan. "The logged human" is the log itself, so it
    runs from the logged start: `env_kwargs`, which `evaluation.evaluate` applies, turn perturbation off."""

    name = "human"
    env_kwargs = {"perturb": False}

    def act(self, obs, info) -> np.ndarray:
        if "logged_plan" not in info:
            raise KeyError("info has no 'logged_plan' (not a SimScale env?)")
        return np.asarray(info["logged_plan"], np.float32)


AGENTS = {"pdm_closed": lambda: ExpertAgent("pdm_closed"), "recovery": lambda: ExpertAgent("recovery"),
          "constant_velocity": ConstantVelocityAgent, "stand_still": StandStillAgent, "human": LogReplayAgent}

# one line per agent, for `simscale evaluate --help`
DESCRIPTIONS = {"pdm_closed": "NAVSIM's PDM-Closed pseudo-expert (info['pseudo_expert']['pdm_closed'])",
                "recovery": "the recovery pseudo-expert: back onto the logged trajectory, else PDM-Closed",
                "constant_velocity": "straight ahead at the current speed",
                "stand_still": "asks to stay where it is (the LQR brakes)",
                "human": "the logged human: the log's own next 4 s (info['logged_plan']), from the logged start"}


def make_agent(name: str):
    if name not in AGENTS:
        raise ValueError(f"unknown agent '{name}'; known: {', '.join(AGENTS)}")
    return AGENTS[name]()
