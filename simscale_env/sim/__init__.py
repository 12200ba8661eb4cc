"""The closed loop: kinematic bicycle, LQR tracker, IDM agents, traffic lights, perturbed resets, the pure step."""

from .bicycle import BicycleConfig, propagate
from .idm import IDMAgents, IDMConfig
from .lqr import BatchLQRTracker, LQRConfig, track_references
from .perturb import PERTURBATION_DEFAULTS, PerturbationConfig
from .plans import plan_to_reference
from .vehicle import PACIFICA, VehicleParameters
from .world import Objects, PlanTracker, SimConfig, Simulation, WorldState, ego_box

__all__ = ["BatchLQRTracker", "BicycleConfig", "IDMAgents", "IDMConfig", "LQRConfig", "Objects", "PACIFICA",
           "PERTURBATION_DEFAULTS", "PerturbationConfig", "PlanTracker", "SimConfig", "Simulation", "VehicleParameters", "WorldState", "ego_box", "plan_to_reference",
           "propagate", "track_references"]
