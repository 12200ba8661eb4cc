"""Driving a scenario closed-loop with a planner: replan every k steps, track the plan with the LQR + bicycle."""

from __future__ import annotations

from typing import Callable

from ..sim.world import PlanTracker, Simulation, WorldState
from .pdm_closed import ExpertPlan

Planner = Callable[[Simulation, WorldState], ExpertPlan]


def drive(sim: Simulation, world: WorldState, planner: Planner, steps: int, *, replan_every: int = 1,
          on_plan: Callable[[WorldState, ExpertPlan], None] | None = None) -> list[WorldState]:
    """Roll the world forward `steps` steps (stopping at the scenario's end). Returns the worlds, the start
    included."""
    if not 1 <= replan_every <= 40:
        raise ValueError(f"replan_every must be in [1, 40] steps (a plan covers 4 s), got {replan_every}")
    worlds = [world]
    tracker = None
    w = world
    for k in range(steps):
        if w.iteration + 1 >= sim.num_iterations:
            break
        if k % replan_every == 0:
            plan = planner(sim, w)
            if on_plan is not None:
                on_plan(w, plan)
            tracker = PlanTracker(plan.trajectory, w.iteration, sim.config.lqr)
        w = sim.step(w, tracker=tracker)
        worlds.append(w)
    return worlds
