"""Pseudo-experts: PDM-Closed (planner-based) and the recovery expert."""

from .pdm_closed import ExpertPlan, PDMClosedConfig, PDMClosedPlanner, pdm_closed_plan

__all__ = ["ExpertPlan", "PDMClosedConfig", "PDMClosedPlanner", "pdm_closed_plan"]
from .recovery import RecoveryConfig, logged_reference, recovery_plan  # noqa: E402

__all__ += ["RecoveryConfig", "logged_reference", "recovery_plan"]
from .rollout import drive  # noqa: E402

__all__ += ["drive"]
