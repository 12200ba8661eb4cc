"""Checking the project against golden outputs of the real nuplan-devkit and NAVSIM (`simscale check-golden`)."""

from .check import CHECKS, SUMMARY_KEYS, check_golden, total_mismatches
from .oracle import GoldenFolder, GoldenScenes
from .report import CheckResult, Mismatch, format_results

__all__ = ["CHECKS", "SUMMARY_KEYS", "CheckResult", "GoldenFolder", "GoldenScenes", "Mismatch", "check_golden",
           "format_results", "total_mismatches"]
