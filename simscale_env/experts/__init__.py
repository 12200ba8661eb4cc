"""Pseudo-experts: PDM-Closed (planner-based) and the recovery expert."""

from .pdm_closed import ExpertPlan, PDMClosedConfig, PDMClosedPlanner, pdm_closed_plan, pdm_closed_plans

__all__ = ["ExpertPlan", "PDMClosedConfig", "PDMClosedPlanner", "pdm_closed_plan", "pdm_closed_plans"]
from .recovery import (RecoveryConfig, human_filtered, logged_reference, recovery_plan, recovery_plans,  # noqa: E402
                       valid_start)

__all__ += ["RecoveryConfig", "human_filtered", "logged_reference", "recovery_plan", "recovery_plans", "valid_start"]
from .rollout import drive  # noqa: E402

__all__ += ["drive"]
