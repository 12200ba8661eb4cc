"""Checking the project against golden outputs of the real nuplan-devkit and NAVSIM (`simscale check-golden`)."""

from .oracle import GoldenFolder

__all__ = ["GoldenFolder"]
