"""Pseudo-experts: PDM-Closed (planner-based) and the recovery expert."""

from .pdm_closed import ExpertPlan, PDMClosedConfig, PDMClosedPlanner, pdm_closed_plan, pdm_closed_plans

__all__ = ["ExpertPlan", "PDMClosedConfig", "PDMClosedPlanner", "pdm_closed_plan", "pdm_closed_plans"]
from .recovery import RecoveryConfig, human_filtered, logged_reference, recovery_plan, valid_start  # noqa: E402

__all__ += ["RecoveryConfig", "human_filtered", "logged_reference", "recovery_plan", "valid_start"]
from .rollout import drive  # noqa: E402

__all__ += ["drive"]
