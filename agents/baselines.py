"""Baseline agents for `SimScale-*-v0` (plan actions: 8 poses 0.5 s apart in the rear-axle frame): `agents.Policy`s,
registered as the built-in policies of `agents.load_policy`. `AGENTS` and `DESCRIPTIONS` are the policy registry
itself (`agents.policy.POLICIES`, `DESCRIPTIONS`), kept under these names for the `simscale evaluate --agents` CLI."""

from __future__ import annotations

from functools import partial

import numpy as np

from simscale_env.errors import PolicyError

from .policy import DESCRIPTIONS, POLICIES, BasePolicy, register_policy


class ExpertAgent(BasePolicy):
    """Follows a pseudo-expert of `info["pseudo_expert"]` ("pdm_closed" or "recovery")."""

    needs_pseudo_experts = True

    def __init__(self, kind: str = "pdm_closed"):
        if kind not in ("pdm_closed", "recovery"):
            raise ValueError(f"kind must be 'pdm_closed' or 'recovery', got {kind!r}")
        self.kind = kind
        self.name = kind

    def act(self, obs, info) -> np.ndarray:
        if "pseudo_expert" not in info:
            raise KeyError("the env was made with pseudo_experts=False: info has no 'pseudo_expert'")
        return np.asarray(info["pseudo_expert"][self.kind], np.float32)


class ConstantVelocityAgent(BasePolicy):
    """Straight ahead at the current speed (from `ego_status`)."""

    name = "constant_velocity"
    observation_keys = ("ego_status",)

    def act(self, obs, info) -> np.ndarray:
        v = float(np.hypot(*obs["ego_status"][:2]))
        t = 0.5 * np.arange(1, 9, dtype=np.float32)
        return np.stack([v * t, np.zeros(8), np.zeros(8)], -1).astype(np.float32)


class StandStillAgent(BasePolicy):
    """Asks to stay where it is (the LQR brakes)."""

    name = "stand_still"

    def act(self, obs, info) -> np.ndarray:
        return np.zeros((8, 3), np.float32)


class LogReplayAgent(BasePolicy):
    """The logged human: submits the log's own next 4 s (`info["logged_plan"]`, the logged ego's poses 0.5 s apart
    in the current rear-axle frame), tracked by the LQR like any plan. "The logged human" is the log itself, so it
    runs from the logged start: `env_kwargs`, which `evaluation.evaluate` applies, turn perturbation off."""

    name = "human"
    env_kwargs = {"perturb": False}

    def act(self, obs, info) -> np.ndarray:
        if "logged_plan" not in info:
            raise KeyError("info has no 'logged_plan' (not a SimScale env?)")
        return np.asarray(info["logged_plan"], np.float32)


for _name, _factory, _description in (
        ("pdm_closed", partial(ExpertAgent, "pdm_closed"),
         "NAVSIM's PDM-Closed pseudo-expert (info['pseudo_expert']['pdm_closed'])"),
        ("recovery", partial(ExpertAgent, "recovery"),
         "the recovery pseudo-expert: back onto the logged trajectory, else PDM-Closed"),
        ("constant_velocity", ConstantVelocityAgent, "straight ahead at the current speed"),
        ("stand_still", StandStillAgent, "asks to stay where it is (the LQR brakes)"),
        ("human", LogReplayAgent, "the logged human: the log's own next 4 s (info['logged_plan']), from the logged "
                                  "start")):
    register_policy(_name, _factory, _description, replace=True)

AGENTS = POLICIES  # name -> factory: the policy registry (registered policies show up here too)
# DESCRIPTIONS (imported above): one line per agent, for `simscale evaluate --help`


def make_agent(name: str):
    """A registered policy by name, built without arguments (`agents.load_policy` takes specs and kwargs)."""
    if name not in AGENTS:
        raise PolicyError(name, f"unknown agent '{name}'; known: {', '.join(AGENTS)}")
    return AGENTS[name]()
