"""Policies on top of the env's public API: one `Policy` interface, a registry of named policies and a loader of
policy specs (`agents.policy`), the pseudo-experts and simple baselines (`agents.baselines`), NAVSIM agents
(`agents.navsim_bridge`) and nuPlan planners (`agents.nuplan_bridge`) in the loop."""

from .baselines import (AGENTS, DESCRIPTIONS, ConstantVelocityAgent, ExpertAgent, LogReplayAgent, StandStillAgent,
                        make_agent)
from .policy import (POLICIES, BasePolicy, Policy, PolicyAdapter, as_policy, checkpoint_formats, load_policy,
                     policy_env_kwargs, register_checkpoint_loader, register_policy, unregister_checkpoint_loader,
                     unregister_policy)


def __getattr__(name):  # the bridges load lazily: importing agents stays light
    if name == "NavsimAgentPolicy":
        from .navsim_bridge import NavsimAgentPolicy

        return NavsimAgentPolicy
    if name == "NuplanPlannerPolicy":
        from .nuplan_bridge import NuplanPlannerPolicy

        return NuplanPlannerPolicy
    raise AttributeError(name)


__all__ = ["AGENTS", "DESCRIPTIONS", "POLICIES", "BasePolicy", "ConstantVelocityAgent", "ExpertAgent",
           "LogReplayAgent", "NavsimAgentPolicy", "NuplanPlannerPolicy", "Policy", "PolicyAdapter", "StandStillAgent",
           "as_policy", "checkpoint_formats", "load_policy", "make_agent", "policy_env_kwargs",
           "register_checkpoint_loader", "register_policy", "unregister_checkpoint_loader", "unregister_policy"]

from . import planners as _planners  # noqa: F401,E402  (registers the planner checkpoint loader; imports no torch)
from . import bc_policy as _bc_policy  # noqa: E402
from . import ppo_policy as _ppo_policy  # noqa: E402

_bc_policy.register()  # "simscale-bc/1" .pt files of `simscale train-bc`
_ppo_policy.register()  # SB3 .zip files of `simscale train-rl`
