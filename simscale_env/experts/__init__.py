"""Pseudo-experts: PDM-Closed (planner-based) and the recovery expert."""

from .pdm_closed import ExpertPlan, PDMClosedConfig, PDMClosedPlanner, pdm_closed_plan

__all__ = ["ExpertPlan", "PDMClosedConfig", "PDMClosedPlanner", "pdm_closed_plan"]
