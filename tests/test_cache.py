"""Bounded caches: the LRU helper, the ScenarioBuilder's open logs, the map cache and the env's caches evict, and
tiny caches change no result."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from simscale_env.cache import CacheSizes, LRUCache


def test_lru_evicts_least_recently_used_and_calls_on_evict():
    dropped = []
    c = LRUCache(2, on_evict=lambda k, v: dropped.append((k, v)))
    c["a"], c["b"] = 1, 2
    assert c["a"] == 1  # "a" used: "b" is now the oldest
    c["c"] = 3
    assert list(c) == ["a", "c"] and dropped == [("b", 2)] and "b" not in c
    made = []
    assert c.get_or_create("b", lambda: made.append(1) or 20) == 20 and made == [1]
    assert dropped[-1] == ("a", 1) and list(c) == ["c", "b"]
    assert c.get_or_create("b", lambda: made.append(1) or 99) == 20 and made == [1]  # a hit: no second factory call
    c.resize(1)
    assert list(c) == ["b"] and dropped[-1] == ("c", 3)
    c.clear(evict=True)
    assert len(c) == 0 and dropped[-1] == ("b", 20) and c.evictions == 4
    unbounded = LRUCache(None)
    for i in range(1000):
        unbounded[i] = i
    assert len(unbounded) == 1000


def test_cache_sizes_validation():
    assert CacheSizes.coerce({"scenarios": 3}).scenarios == 3
    assert CacheSizes.coerce(None) == CacheSizes()
    with pytest.raises(ValueError, match="cache_sizes.scenarios must be at least 1"):
        CacheSizes(scenarios=0)
    with pytest.raises(ValueError, match="cache_sizes.maps must be a non-negative integer or None"):
        CacheSizes(maps=-1)
    with pytest.raises(ValueError, match=r"unknown cache_sizes keys \['scenario'\]"):
        CacheSizes.coerce({"scenario": 3})
    with pytest.raises(ValueError, match="cache size maxsize must be"):
        LRUCache(1.5)


def test_builder_bounds_open_logs_and_closes_evicted(mini):
    from simscale_env.data import ScenarioBuilder

    b = ScenarioBuilder(mini / "nuplan-v1.1" / "splits" / "mini", max_open_logs=2)
    names = sorted(b.log_files)[:3]
    dbs = [b.db(n) for n in names]
    assert list(b._dbs) == names[1:]  # at most 2 open, the least recently used dropped
    with pytest.raises(sqlite3.ProgrammingError):  # and its connection closed
        dbs[0]._conn.execute("SELECT 1")
    assert dbs[0].execute("SELECT 1") == [(1,)]  # a holder's query reopens it
    dbs[0].close()
    assert dbs[2]._conn.execute("SELECT 1").fetchall() == [(1,)]
    again = b.db(names[0])
    assert again is not dbs[0] and list(b._dbs) == [names[2], names[0]]
    # loading over every log keeps the bound and gives the scenarios an unbounded builder gives
    refs = b.all_refs()
    assert len(b._dbs) == 2 and len({r.log_name for r in refs}) > 2
    wide = ScenarioBuilder(mini / "nuplan-v1.1" / "splits" / "mini", max_open_logs=None)
    pick = [refs[0], refs[-1], refs[0]]
    for r in pick:
        x, y = b.load(r), wide.load(r)
        assert x.token == y.token and np.array_equal(x.ego.x, y.ego.x) and np.array_equal(x.ego.heading, y.ego.heading)
    assert len(b._dbs) == 2 and len(wide._dbs) == len({r.log_name for r in pick})
    b.close()
    assert len(b._dbs) == 0
    with pytest.raises(ValueError, match="max_open_logs must be a positive integer or None"):
        ScenarioBuilder(mini / "nuplan-v1.1" / "splits" / "mini", max_open_logs=0)


def test_map_cache_is_bounded(mini):
    from simscale_env.map import map_api

    old = map_api._CACHE.maxsize
    try:
        map_api.set_map_cache_size(1)
        a = map_api.load_map("us-ma-boston", mini / "maps")
        assert map_api.load_map("us-ma-boston", mini / "maps") is a  # cached
        map_api.load_map("us-pa-pittsburgh-hazelwood", mini / "maps")
        assert len(map_api._CACHE) == 1
        assert map_api.load_map("us-ma-boston", mini / "maps") is not a  # evicted, loaded again
    finally:
        map_api.set_map_cache_size(old)


def test_prefetcher_serves_what_was_requested_once_and_nothing_else():
    import threading

    from simscale_env.cache import Prefetcher

    started, release = threading.Event(), threading.Event()
    held = []

    def load(key):
        held.append(p.lock._is_owned())  # the load runs under the prefetcher's lock
        if key == "slow":
            started.set()
            release.wait(5)
        if key == "bad":
            raise ValueError("corrupt log")
        return key.upper()

    p = Prefetcher(load, max_pending=2)
    assert p.take("a") is None  # never requested
    assert p.request("slow") and not p.request("slow")  # pending once
    assert started.wait(5)
    assert p.request("queued")  # behind "slow": not started when taken -> cancelled, the caller loads it itself
    assert p.take("queued") is None and not p.pending("queued")
    assert p.request("x") and p.request("y")  # over max_pending: the oldest ("slow", running) is dropped
    assert p.dropped == 1 and not p.pending("slow") and p.pending("x") and p.pending("y")
    release.set()
    assert p.wait(5)
    assert p.take("x") == "X" and p.take("y") == "Y" and p.take("x") is None
    assert p.request("bad") and p.wait(5) and p.take("bad") is None and p.failed == 1  # the caller meets it itself
    assert all(held) and p.served == 2
    p.close()
    assert not p.request("z") and p.take("z") is None  # closed: requests are ignored
    with pytest.raises(ValueError, match="max_pending must be a positive integer"):
        Prefetcher(load, max_pending=0)
