"""The env's scenario, renderer, map, open-log, human and log-tail caches are LRU-bounded (`cache_sizes=`), evict,
and change no result: the same seed gives the same observation, reward and info with caches of one entry."""

from __future__ import annotations

import numpy as np
import pytest

SMALL = dict(cameras=("CAM_F0",), width=64, height=32, observation_keys=("cameras", "ego_status", "bev"), bev_size=64)


def _episode_start(env, token):
    obs, info = env.reset(seed=3, options={"scenario_token": token})
    obs2, reward, term, trunc, info2 = env.step(info["pseudo_expert"]["pdm_closed"])
    return obs, info, obs2, reward, info2, env.unwrapped.episode_summary(), env.unwrapped._log_tail()


def _same(a, b, path="") -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), path
    else:
        assert a == b or (a != a and b != b), path  # NaN == NaN


def test_env_caches_evict_and_change_nothing(mini):
    from simscale_env.envs.simscale_env import SimScaleEnv

    tiny = SimScaleEnv("navhard", cache_sizes={"scenarios": 2, "renderers": 1, "maps": 1, "open_logs": 1, "human": 1,
                                               "log_tails": 1}, **SMALL)
    logs = {}
    for t in tiny.tokens:  # three scenes of three logs on at least two maps
        logs.setdefault(tiny._builder.ref(t).log_name, t)
    a, b, c = list(logs.values())[:3]
    first = _episode_start(tiny, a)
    sc_a = tiny._scenarios[a]
    _episode_start(tiny, b)
    _episode_start(tiny, c)
    assert list(tiny._scenarios) == [b, c]  # a evicted
    assert len(tiny._renderers) == 1 and len(tiny._maps) == 1 and len(tiny._builder._dbs) == 1
    assert len(tiny._human_cache) == 1 and len(tiny._log_tails) == 1
    assert tiny._renderers.evictions == 2 and tiny._builder._dbs.evictions >= 2
    again = _episode_start(tiny, a)
    assert tiny._scenarios[a] is not sc_a  # reloaded
    _same(again, first)
    wide = SimScaleEnv("navhard", cache_sizes={k: None for k in ("scenarios", "renderers", "maps", "open_logs")},
                       **SMALL)
    _same(_episode_start(wide, a), first)


def test_env_cache_sizes_argument_is_checked(mini):
    from simscale_env.envs.simscale_env import EnvConfig, SimScaleEnv

    assert EnvConfig(cache_sizes={"scenarios": 3}).cache_sizes.scenarios == 3
    with pytest.raises(ValueError, match="unknown cache_sizes keys"):
        SimScaleEnv("navhard", cache_sizes={"scenes": 3}, **SMALL)
    with pytest.raises(ValueError, match="cache_sizes.renderers must be at least 1"):
        EnvConfig(cache_sizes={"renderers": 0})


def test_kept_frames_and_logged_drive_give_what_recomputing_gives(mini):
    """The env keeps each world's objects as its steps compute them and the logged drive's worlds per scenario
    (extended as far as an episode needs): its episode summaries equal those recomputed from scratch (every
    world's objects again, the logged drive stepped anew), for a long episode and then a shorter one of the same
    scene that reuses the logged drive."""
    import gymnasium as gym

    from simscale_env.metrics.pseudo_sim import episode_summary

    env = gym.make("SimScale-navhard-v0", disable_env_checker=True, observation_keys=("ego_status",),
                   pseudo_experts=False, plan_scoring=None, valid_start=False).unwrapped
    token = env.tokens[0]
    for steps in (8, 3):
        obs, info = env.reset(seed=5, options={"scenario_token": token})
        for _ in range(steps):
            obs, r, term, trunc, info = env.step(info["logged_plan"])
            if term or trunc:
                break
        got = env.episode_summary()
        sim = env.sim
        wh = [sim.reset()]
        for i in range(1, env._worlds[-1].iteration + 1):
            wh.append(sim.step(wh[-1], ego_state=sim.logged_ego_state(i)))
        ref = episode_summary(sim, env._worlds, human=episode_summary(sim, wh)["scores"],
                              past_states=env._start_hc_past)
        ref.pop("scores")
        _same(got, ref, f"{steps} steps")
        assert env._worlds[0].idm.path.shape[1] == 0 and env.world.idm.path.shape[1] > 0  # past worlds kept slim


def test_prefetched_scenarios_change_nothing(mini):
    """`prefetch_scenarios`: the next unseeded reset's scenario, loaded on a background thread, is the one that reset
    draws and uses, and every episode is the one loading it at reset gives (a single-entry scenario cache: each
    reset to another scene needs its scenario loaded)."""
    from simscale_env.envs.simscale_env import SimScaleEnv

    runs, served = {}, None
    for prefetch in (False, True):
        env = SimScaleEnv("navhard", observation_keys=("ego_status",), cache_sizes={"scenarios": 1},
                          pseudo_experts=False, valid_start=False, prefetch_scenarios=prefetch)
        out = []
        obs, info = env.reset(seed=11)
        for _ in range(4):
            if prefetch:
                assert env._prefetch.wait(60)  # the next scene is loaded while this episode runs
            obs2, reward, term, trunc, info2 = env.step(info["logged_plan"])
            out.append((env.sim.scenario.token, obs, info, obs2, reward, info2, env.episode_summary()))
            obs, info = env.reset()
        runs[prefetch] = out
        if prefetch:
            served = env._prefetch.served
            env.close()
        else:
            assert env._prefetch is None  # opt-in
    assert len({o[0] for o in runs[True]}) >= 3  # the draws changed scenes
    assert served >= 2  # resets took their scenario from the prefetching thread
    _same(runs[True], runs[False])
