"""Policies on top of the env's public API: the pseudo-experts as agents and simple baselines."""

from .baselines import AGENTS, ConstantVelocityAgent, ExpertAgent, LogReplayAgent, StandStillAgent, make_agent

__all__ = ["AGENTS", "ConstantVelocityAgent", "ExpertAgent", "LogReplayAgent", "StandStillAgent", "make_agent"]
