"""The Gymnasium API: `SimScale-navhard-v0`, `SimScale-navtest-v0`, `SimScale-navtrain-v0` (registered on import of
`simscale_env`)."""

from gymnasium.envs.registration import register, registry

ENV_IDS = {"SimScale-navhard-v0": "navhard", "SimScale-navtest-v0": "navtest", "SimScale-navtrain-v0": "navtrain"}

for _id, _split in ENV_IDS.items():
    if _id not in registry:
        register(id=_id, entry_point="simscale_env.envs.simscale_env:SimScaleEnv", kwargs={"split": _split},
                 vector_entry_point="simscale_env.envs.vector:SimScaleVectorEnv")


from .splits import split_env_spec, split_tokens  # noqa: E402


def __getattr__(name):  # lazy: importing simscale_env stays light
    if name in ("SimScaleEnv", "EnvConfig", "save_video", "load_reward_vocabulary", "vocabulary_scores", "PLAN_LOW",
                "PLAN_HIGH"):
        from . import simscale_env

        return getattr(simscale_env, name)
    if name in ("SimScaleVectorEnv", "SB3VecEnv"):
        from . import vector

        return getattr(vector, name)
    if name in _WRAPPERS:
        from . import wrappers

        return getattr(wrappers, name)
    raise AttributeError(name)


_WRAPPERS = ("ACTION_WRAPPERS", "NormalizedPlanAction", "ResidualExpertAction", "SB3ObservationWrapper",
             "normalized_to_plan", "plan_bounds", "plan_to_normalized", "residual_scale", "residual_to_plan",
             "sb3_observation")

__all__ = ["ENV_IDS", "EnvConfig", "PLAN_HIGH", "PLAN_LOW", "SB3VecEnv", "SimScaleEnv", "SimScaleVectorEnv",
           "load_reward_vocabulary", "save_video",
           "split_env_spec", "split_tokens", "vocabulary_scores", *_WRAPPERS]
