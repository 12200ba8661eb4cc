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
