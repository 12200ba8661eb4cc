"""Bounded (least-recently-used) caches for what the simulator keeps per scenario, log, map or renderer.

A split of nuPlan's trainval has thousands of scenarios over hundreds of logs: unbounded dicts of loaded scenarios,
open log databases, maps and camera renderers would grow with every reset. Each of them is an :class:`LRUCache`
whose size is configurable (:class:`CacheSizes` for the env, ``ScenarioBuilder(max_open_logs=)``,
``map.map_api.set_map_cache_size``).

>>> c = LRUCache(2)
>>> c["a"], c["b"] = 1, 2
>>> _ = c["a"]          # "a" is now the most recently used
>>> c["c"] = 3          # evicts "b"
>>> list(c)
['a', 'c']
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Callable, Generic, Hashable, Iterator, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_MISSING = object()


class LRUCache(Generic[K, V]):
    """A mapping that keeps at most `maxsize` entries, dropping the least recently used (read or written) one first.

    `maxsize=None`: unbounded; `0`: keeps nothing (every ``get_or_create`` creates). `on_evict(key, value)` is called
    for each entry dropped to make room (not for ``clear`` unless ``clear(evict=True)``), e.g. to close a database.
    Not thread-safe by itself: guard it with a lock where threads share it."""

    def __init__(self, maxsize: int | None, on_evict: Callable[[K, V], None] | None = None):
        self.maxsize = _check_size("maxsize", maxsize)
        self.on_evict = on_evict
        self._data: OrderedDict = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    # ------------------------------------------------------------------ mapping
    def __contains__(self, key) -> bool:  # no recency update: a membership test is not a use
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[K]:  # least recently used first
        return iter(list(self._data))

    def __getitem__(self, key: K) -> V:
        value = self._data[key]
        self._data.move_to_end(key)
        return value

    def get(self, key: K, default=None):
        value = self._data.get(key, _MISSING)
        if value is _MISSING:
            self.misses += 1
            return default
        self.hits += 1
        self._data.move_to_end(key)
        return value

    def __setitem__(self, key: K, value: V) -> None:
        if self.maxsize == 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while self.maxsize is not None and len(self._data) > self.maxsize:
            self._evict()

    def get_or_create(self, key: K, factory: Callable[[], V]) -> V:
        """The cached value of `key`, else `factory()` (stored, evicting the least recently used entry if full)."""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            value = factory()
            self[key] = value
        return value

    def pop(self, key: K, default=None):
        return self._data.pop(key, default)

    def values(self):
        return list(self._data.values())

    def clear(self, evict: bool = False) -> None:
        """Drop every entry (calling `on_evict` on each when `evict`)."""
        while evict and self._data:
            self._evict()
        self._data.clear()

    def resize(self, maxsize: int | None) -> None:
        """Change the bound, evicting the least recently used entries that no longer fit."""
        self.maxsize = _check_size("maxsize", maxsize)
        if self.maxsize == 0:
            self.clear(evict=True)
        while self.maxsize is not None and len(self._data) > self.maxsize:
            self._evict()

    def _evict(self) -> None:
        key, value = self._data.popitem(last=False)
        self.evictions += 1
        if self.on_evict is not None:
            try:
                self.on_evict(key, value)
            except Exception as exc:  # a failing clean-up must not lose the caller's result
                log.warning("evicting %r from a cache: %s", key, exc)

    def __repr__(self) -> str:
        return (f"LRUCache(maxsize={self.maxsize}, size={len(self)}, hits={self.hits}, misses={self.misses}, "
                f"evictions={self.evictions})")


def _check_size(name: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"cache size {name} must be a non-negative integer or None (unbounded), got {value!r}")
    return value


@dataclass(frozen=True)
class CacheSizes:
    """Entries the env keeps per cache (LRU; ``None``: unbounded; at least 1). The defaults hold every scenario of
    the mini splits and bound memory on nuPlan's large ones. Each entry's typical size on the mini dataset:

    - ``scenarios``: extracted scenarios, keyed by token (~1-3 MB each: 151-181 iterations of every agent), and as
      many of their simulations (the IDM agents' spawn inputs and the logged world at iteration 0)
    - ``renderers``: camera renderers per (map location, log) (the rig and reconstruction; the map-synthesised
      background is shared per map)
    - ``maps``: loaded maps, per location (tens of MB for a real nuPlan city)
    - ``open_logs``: open nuPlan log databases (the ScenarioBuilder's ``max_open_logs``; evicted ones are closed)
    - ``human``: closed-loop scores of the logged drive, per (scenario, iteration, agent mode) (small)
    - ``log_tails``: the logged ego's 4 s after a scenario's end, per scenario (small)
    """

    scenarios: int | None = 64
    renderers: int | None = 4
    maps: int | None = 4
    open_logs: int | None = 16
    human: int | None = 256
    log_tails: int | None = 256

    def __post_init__(self):
        for f in fields(self):
            v = _check_size(f"cache_sizes.{f.name}", getattr(self, f.name))
            if v == 0:
                raise ValueError(f"cache size cache_sizes.{f.name} must be at least 1 (or None, unbounded), got 0")

    @classmethod
    def coerce(cls, value) -> "CacheSizes":
        """`value` as CacheSizes: a CacheSizes, a dict of some of its fields, or None (the defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - {f.name for f in fields(cls)})
            if unknown:
                raise ValueError(f"unknown cache_sizes keys {unknown}; known: {[f.name for f in fields(cls)]}")
            return cls(**value)
        raise ValueError(f"cache_sizes must be a CacheSizes or a dict of its fields, got {type(value).__name__}")


class Prefetcher(Generic[K, V]):
    """Values computed on one background thread ahead of their use (issue 20: the next episode's scenario loaded
    while the current episode runs).

    ``request(key)`` queues ``load(key)``; ``take(key)`` returns its value, waiting for it if it is being computed, or
    None when the key was not requested, was dropped, had not started yet (then it is cancelled: the caller computing
    it now is faster than waiting behind other requests) or failed (the caller then computes it itself and meets the
    error itself, in its own thread). At most `max_pending` requests are kept (the oldest dropped first).

    ``lock`` is held around every background load: hold it wherever the caller itself touches what `load` touches (a
    scenario builder's open log databases, say). `load` must be pure (the same key, the same value): a prefetched
    value is then the one the caller would have computed, and results do not depend on the thread's timing.

    The thread starts at the first request; ``close()`` stops it (later requests are ignored). A process forked while
    it ran gets a fresh lock and no pending requests (`os.register_at_fork`).

    >>> p = Prefetcher(lambda k: k * 2)
    >>> p.request(21)
    True
    >>> p.take(21), p.take(21)
    (42, None)
    >>> p.close()
    """

    def __init__(self, load: Callable[[K], V], max_pending: int = 64, name: str = "simscale-prefetch"):
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"max_pending must be a positive integer, got {max_pending!r}")
        self.load = load
        self.max_pending = max_pending
        self.name = name
        self.lock = threading.RLock()
        self._pool = None
        self._pending: OrderedDict = OrderedDict()
        self._closed = False
        self.requested = self.served = self.failed = self.dropped = 0
        _PREFETCHERS.add(self)

    def request(self, key: K) -> bool:
        """Queue `load(key)` unless it is already pending (or the prefetcher is closed). Returns whether it was
        queued."""
        if self._closed or key in self._pending:
            return False
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
        while len(self._pending) >= self.max_pending:
            _, old = self._pending.popitem(last=False)
            old.cancel()
            self.dropped += 1
        self._pending[key] = self._pool.submit(self._locked_load, key)
        self.requested += 1
        return True

    def _locked_load(self, key):
        with self.lock:
            return self.load(key)

    def pending(self, key: K) -> bool:
        return key in self._pending

    def take(self, key: K):
        """The prefetched value of `key` (waiting for a running load), else None (see the class docstring)."""
        fut = self._pending.pop(key, None)
        if fut is None or fut.cancel():
            return None
        try:
            value = fut.result()
        except Exception as exc:  # noqa: BLE001  (the caller loads it again and raises it in its own thread)
            self.failed += 1
            log.debug("prefetching %r failed (%s: %s); the caller loads it itself", key, type(exc).__name__, exc)
            return None
        self.served += 1
        return value

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every pending load has finished (or `timeout` seconds passed); whether they all have."""
        from concurrent.futures import wait

        return not wait(list(self._pending.values()), timeout=timeout).not_done

    def close(self) -> None:
        """Cancel what has not started and stop the thread (waiting for a running load). Idempotent."""
        self._closed = True
        pool, self._pool = self._pool, None
        for fut in self._pending.values():
            fut.cancel()
        self._pending.clear()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _after_fork(self) -> None:
        self.lock = threading.RLock()
        self._pool = None
        self._pending = OrderedDict()

    def __repr__(self) -> str:
        return (f"Prefetcher(pending={len(self._pending)}, requested={self.requested}, served={self.served}, "
                f"failed={self.failed}, dropped={self.dropped})")


def _prefetchers_after_fork() -> None:
    for p in list(_PREFETCHERS):
        p._after_fork()


_PREFETCHERS: "weakref.WeakSet[Prefetcher]" = weakref.WeakSet()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_prefetchers_after_fork)
