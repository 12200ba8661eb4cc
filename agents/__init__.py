"""Policies on top of the env's public API: the pseudo-experts as agents and simple baselines."""

from .baselines import ConstantVelocityAgent, ExpertAgent, StandStillAgent, make_agent

__all__ = ["ConstantVelocityAgent", "ExpertAgent", "StandStillAgent", "make_agent"]
