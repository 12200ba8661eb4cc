"""Closed-loop evaluation: every scenario of a split, one perturbed episode each, episode EPDMS (NAVSIM's human
filter against the logged drive), collision and off-road rates.

    simscale evaluate --agents pdm_closed constant_velocity stand_still human --split navhard

The logged human (`human`) starts at the logged state (its `env_kwargs`), the others at perturbed starts.
"""

from __future__ import annotations

import numpy as np


def evaluate(agent, env_id: str = "SimScale-navhard-v0", *, seed: int = 0, tokens=None, progress: bool = False,
             **env_kwargs) -> dict:
    """Run `agent` (an object with `act(obs, info)`) once per scenario token (default: all of the split) from the
    perturbed start drawn with `seed + k`. An agent's own `env_kwargs` attribute (a dict; e.g. the logged human's
    `{"perturb": False}`: it starts at the logged state) is applied first, then `env_kwargs`. Returns means and the
    per-episode summaries."""
    import gymnasium as gym

    import simscale_env  # noqa: F401  (registration)

    kw = dict(observation_keys=("ego_status",))
    own = getattr(agent, "env_kwargs", None) or {}
    if not isinstance(own, dict):
        raise TypeError(f"agent '{getattr(agent, 'name', type(agent).__name__)}': env_kwargs must be a dict, "
                        f"got {type(own).__name__}")
    kw.update(own)
    kw.update(env_kwargs)
    if getattr(agent, "name", "") in ("pdm_closed", "recovery"):
        if kw.get("pseudo_experts") is False:
            raise ValueError(f"agent '{agent.name}' drives by info['pseudo_expert']: it needs pseudo_experts=True")
        kw["pseudo_experts"] = True
    env = gym.make(env_id, **kw)
    toks = list(tokens) if tokens is not None else list(env.unwrapped.tokens)
    it = toks
    if progress:
        from tqdm import tqdm

        it = tqdm(toks, desc=f"{getattr(agent, 'name', 'agent')}", unit="episode")
    episodes = []
    for k, tok in enumerate(it):
        obs, info = env.reset(seed=seed + k, options={"scenario_token": tok})
        while True:
            obs, r, term, trunc, info = env.step(agent.act(obs, info))
            if term or trunc:
                break
        ep = dict(info["epdms_episode"])  # the env's closed-loop summary, with the return "r" and length "l"
        ep.update(token=tok, return_=ep["r"], terminated=bool(term), perturbed=bool(info["perturbed"]))
        episodes.append(ep)
    env.close()
    return {"agent": getattr(agent, "name", type(agent).__name__), "episodes": episodes, "env_kwargs": own,
            "epdms": float(np.mean([e["epdms"] for e in episodes])),
            "collision_rate": float(np.mean([e["at_fault_collision"] for e in episodes])),
            "offroad_rate": float(np.mean([e["off_road"] for e in episodes])),
            "return": float(np.mean([e["return_"] for e in episodes]))}


def format_table(results) -> str:
    cols = ["no_at_fault_collisions", "drivable_area_compliance", "driving_direction_compliance",
            "traffic_light_compliance", "ego_progress", "time_to_collision_within_bound", "lane_keeping",
            "history_comfort"]
    short = ["NC", "DAC", "DDC", "TLC", "EP", "TTC", "LK", "HC"]
    head = f"| agent | EPDMS | {' | '.join(short)} | collisions | off-road | return |"
    lines = [head, "|" + "---|" * (len(short) + 5)]
    for r in results:
        means = [np.mean([e[c] for e in r["episodes"]]) for c in cols]
        lines.append(f"| {r['agent']} | {r['epdms']:.3f} | " + " | ".join(f"{m:.2f}" for m in means)
                     + f" | {100 * r['collision_rate']:.0f} % | {100 * r['offroad_rate']:.0f} % | {r['return']:.2f} |")
    return "\n".join(lines)
