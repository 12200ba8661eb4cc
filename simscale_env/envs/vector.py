"""`SimScaleVectorEnv`: N scenarios behind gymnasium's `VectorEnv` API, in one process or in k worker processes
(issue 20).

    envs = gym.make_vec("SimScale-navhard-v0", num_envs=8, vectorization_mode="vector_entry_point",
                        observation_keys=("ego_status",), pseudo_experts=False)          # workers=2: two processes
    obs, info = envs.reset(seed=0)              # sub-env i seeded with 0 + i, as SyncVectorEnv seeds
    obs, reward, terminated, truncated, info = envs.step(plans)   # plans [N, 8, 3]

- **Shared caches.** The N sub-envs of a process are siblings (`SimScaleEnv.sibling`): one dataset resolution, one
  split, one reward vocabulary and one set of caches (maps, scenarios, their simulations, camera renderers, the
  logged drive's worlds and scores), where N separate envs (`SyncVectorEnv`, `AsyncVectorEnv`) hold N copies. The
  caches hold only episode-independent values, so a sibling gives what it would alone (tested: bit-identical
  observations, rewards and infos per sub-env against single envs with the same seeds). The renderer cache grows to
  N entries so that N sub-envs in N logs do not evict each other's renderers at every step.
- **Stepping.** Within a process the sub-envs' plans are tracked together: first the plans of every sub-env stepping
  now, as their `SimScaleEnv` receives them (through pure action wrappers: `_unwrapped_action`), are stepped in
  phases (`prepare_plan_steps` -> `sim.world.advance_tracked`: per simulated iteration one LQR call and one bicycle
  call for all sub-envs, then each scene's IDM agents), then each sub-env's step (gymnasium's `SyncVectorEnv` loop,
  wrappers and autoreset included) reads the worlds prepared for its action and state and does the rest (scoring,
  observation, info, episode summary) in turn. With pseudo-experts, the worlds the prepared steps end in are planned
  for together before that (`prepare_expert_plans`): PDM-Closed's proposals of every sub-env unrolled as one batch
  and tracked in one LQR call (`experts.pdm_closed_plans`), the recovery expert's tracking rounds one call each
  (`experts.recovery_plans`); each sub-env's info serves its plans. Bit-identical to stepping each sub-env alone
  (tested, the pseudo-experts' plans included). The IDM update, the scoring (of the segment, the submitted plan
  and each expert's proposals) and the observation are not batched across scenes (each scene has its own map,
  objects and lights; `simscale bench vector` measures what a sub-env step costs).
  `workers=k` (k > 1, `ShardedSimScaleVectorEnv`): consecutive shards of the sub-envs in k worker processes, all
  stepping at once, one numba thread each; the observations, rewards, flags and infos come back in sub-env order,
  identical to one process (tested).
- **Autoreset**: gymnasium's modes. NEXT_STEP (default): the step after a sub-env's episode ends resets it (its action
  ignored, reward 0, not terminated or truncated) and returns the reset observation and info. SAME_STEP: the ending
  step resets it at once, with the last observation and info under ``info["final_obs"]`` / ``info["final_info"]``
  (SB3's semantics: `SB3VecEnv`). Partial resets (``options={"reset_mask": ...}``) as gymnasium's.
- `SB3VecEnv.make(vector_env)`: the stable-baselines3 `VecEnv` interface over a SAME_STEP vector env (``dones``, a
  list of per-env infos with ``terminal_observation`` and ``TimeLimit.truncated``), so PPO runs on it directly
  (`simscale train-rl --n-envs N`, optionally `--env-workers k`).
"""

from __future__ import annotations

import dataclasses
from functools import partial

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv


class SimScaleVectorEnv(SyncVectorEnv):
    """N SimScale scenarios in one process (module docstring). `wrappers`: single-env wrapper classes or callables
    applied to every sub-env, in order (e.g. `ResidualExpertAction`); the other keyword arguments are
    `SimScaleEnv`'s. `workers` > 1: the sub-envs in that many processes instead, consecutive shards of siblings
    (`ShardedSimScaleVectorEnv`; the wrappers must pickle)."""

    def __new__(cls, num_envs: int = 1, *args, workers: int = 1, **kwargs):
        if cls is SimScaleVectorEnv and _check_workers(workers) > 1:
            return super().__new__(ShardedSimScaleVectorEnv)
        return super().__new__(cls)

    def __init__(self, num_envs: int = 1, split: str = "navhard", *, autoreset_mode=AutoresetMode.NEXT_STEP,
                 wrappers=(), copy: bool = True, render_mode: str | None = None, workers: int = 1, **kwargs):
        from ..cache import CacheSizes
        from .simscale_env import PREFETCH_PENDING, SimScaleEnv

        _check_num_envs(num_envs)
        kwargs.pop("max_episode_steps", None)  # gym.make_vec's (the env ends episodes itself: episode_steps)
        if "cache_sizes" not in kwargs and num_envs > 1:
            sizes = CacheSizes()
            if sizes.renderers is not None and sizes.renderers < num_envs:
                kwargs["cache_sizes"] = dataclasses.replace(sizes, renderers=int(num_envs))
        first = SimScaleEnv(split=split, render_mode=render_mode, **kwargs)
        subs = [first] + [first.sibling() for _ in range(int(num_envs) - 1)]
        if first._prefetch is not None:  # shared by the siblings: each one's next scenario may be pending at once
            first._prefetch.max_pending = PREFETCH_PENDING + int(num_envs)
        fns = [partial(_wrapped, env, tuple(wrappers)) for env in subs]
        super().__init__(fns, copy=copy, autoreset_mode=autoreset_mode)

    @property
    def sub_envs(self) -> list:
        """The unwrapped sub-envs (`SimScaleEnv`), in order."""
        return [e.unwrapped for e in self.envs]

    def step(self, actions):
        if self.num_envs > 1:
            from gymnasium.vector.utils import iterate

            from .simscale_env import prepare_expert_plans, prepare_plan_steps

            # the plans of the sub-envs stepping now (not those NEXT_STEP resets), as their SimScaleEnv receives
            # them, tracked together first (`prepare_plan_steps`); each sub-env's step then reads its worlds
            stepping = [not (self.autoreset_mode == AutoresetMode.NEXT_STEP and self._autoreset_envs[i])
                        for i in range(self.num_envs)]
            try:
                plans = [_unwrapped_action(env, a) if go else None
                         for env, a, go in zip(self.envs, iterate(self.action_space, actions), stepping)]
            except Exception:  # noqa: BLE001  (a malformed batch: SyncVectorEnv.step says what is wrong)
                plans = None
            if plans is not None:
                prepare_plan_steps(self.sub_envs, plans)
                prepare_expert_plans(self.sub_envs)
        return super().step(actions)

    def apply(self, fn, indices=None) -> list:
        """[fn(env) for each (wrapped) sub-env], in order, or for the sub-envs at `indices` (with `workers` > 1 this
        runs in the workers: `fn` must pickle)."""
        return [fn(self.envs[i]) for i in _indices(indices, self.num_envs)]


def _check_num_envs(num_envs) -> int:
    if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
    return int(num_envs)


def _check_workers(workers) -> int:
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    return int(workers)


def _unwrapped_action(env, action):
    """The action `env.step(action)` hands its unwrapped env through its wrappers: action wrappers whose `action()`
    is pure (`pure_action = True`, or gymnasium's ClipAction / RescaleAction) transform it, other wrappers pass it
    on; None where another action wrapper (e.g. one drawing noise) stands in the way. A guess that is wrong costs
    only time: the env steps an action it was not prepared for itself."""
    from gymnasium.wrappers import ClipAction, RescaleAction

    while env is not env.unwrapped:
        if isinstance(env, gym.ActionWrapper):
            if not (getattr(type(env), "pure_action", False) or type(env) in (ClipAction, RescaleAction)):
                return None
            try:
                action = env.action(action)
            except Exception:  # noqa: BLE001  (the sub-env's own step raises it)
                return None
        env = env.env
    return action


def _wrapped(env, wrappers):
    for w in wrappers:
        env = w(env)
    return env


class ShardedSimScaleVectorEnv(SimScaleVectorEnv):
    """`SimScaleVectorEnv(num_envs, workers=k)` with k > 1: the N sub-envs in k worker processes, worker j stepping
    the consecutive shard of sub-envs [start_j, start_j + n_j) as one `SimScaleVectorEnv` of siblings (one set of
    caches per worker), all workers at once. Per sub-env the same as `workers=1`: sub-env i is seeded seed + i, has
    the same autoreset and wrappers, and the observations, rewards, flags and infos come back in sub-env order with
    gymnasium's info layout (tested bit-identical). Workers use one numba / torch thread each and start with the
    forkserver method (SB3's SubprocVecEnv's default): a script creating one needs the
    ``if __name__ == "__main__":`` guard. `sub_envs` / `envs` live in the workers: use `apply`, `call`, `get_attr`
    and `set_attr`."""

    def __init__(self, num_envs: int = 1, split: str = "navhard", *, autoreset_mode=AutoresetMode.NEXT_STEP,
                 wrappers=(), copy: bool = True, render_mode: str | None = None, workers: int = 2, **kwargs):
        import multiprocessing as mp
        import pickle

        from gymnasium.vector.utils import batch_space

        n = _check_num_envs(num_envs)
        k = min(_check_workers(workers), n)
        autoreset_mode = AutoresetMode(autoreset_mode)
        sizes = [n // k + (1 if j < n % k else 0) for j in range(k)]
        self.shards = [(sum(sizes[:j]), sizes[j]) for j in range(k)]
        self.num_envs = n
        self.workers = k
        self.copy = copy
        self.render_mode = render_mode
        self.autoreset_mode = autoreset_mode
        self.metadata = {"autoreset_mode": autoreset_mode, "render_modes": ["rgb_array"]}
        ctx = mp.get_context("forkserver")
        self._pipes, self._procs = [], []
        self._closed_workers = True  # until every worker has started (close_extras then has nothing to stop)
        spec = dict(split=split, autoreset_mode=autoreset_mode, wrappers=tuple(wrappers), copy=False,
                    render_mode=render_mode, **kwargs)
        for start, count in self.shards:
            here, there = ctx.Pipe()
            proc = ctx.Process(target=_shard_worker, args=(there, spec, count), daemon=True,
                               name=f"SimScaleVectorEnv-{start}")
            try:
                proc.start()
            except (pickle.PicklingError, AttributeError, TypeError) as exc:
                self._closed_workers = False
                self.close_extras()
                raise ValueError(f"SimScaleVectorEnv(workers={k}) sends its wrappers and keyword arguments to its "
                                 f"worker processes, and they must pickle (module-level classes and functions, "
                                 f"functools.partial, no lambdas): {exc}") from None
            there.close()
            self._pipes.append(here)
            self._procs.append(proc)
        self._closed_workers = False
        try:
            spaces = self._gather()  # each worker sends its spaces once its env is built
        except BaseException:
            self.close_extras()  # a worker that could not build its envs: stop the others too
            raise
        self.single_observation_space, self.single_action_space = spaces[0]
        self.observation_space = batch_space(self.single_observation_space, n)
        self.action_space = batch_space(self.single_action_space, n)
        self.closed = False
        self._last_obs = [None] * k

    # -- the VectorEnv API
    def reset(self, *, seed=None, options=None):
        if seed is None or isinstance(seed, (int, np.integer)):
            seeds = [None if seed is None else int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed must be an int, None or {self.num_envs} seeds, got {len(seeds)}")
        options = dict(options or {})
        mask = options.pop("reset_mask", None)  # gymnasium's partial reset: sliced per shard
        if mask is not None and (not isinstance(mask, np.ndarray) or mask.shape != (self.num_envs,)
                                 or mask.dtype != np.bool_ or not mask.any()):
            raise ValueError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},) with at least "
                             f"one True value, got {mask!r}")
        sent = []
        for j, ((start, count), pipe) in enumerate(zip(self.shards, self._pipes)):
            part = None if mask is None else mask[start:start + count]
            if part is not None and not part.any():
                continue  # nothing to reset in this shard: its last observation stands
            opts = dict(options, reset_mask=part) if part is not None and not part.all() else options
            pipe.send(("reset", (seeds[start:start + count], opts or None)))
            sent.append(j)
        res = dict(zip(sent, self._gather([self._pipes[j] for j in sent])))
        for j, r in res.items():
            self._last_obs[j] = r[0]
        infos = [res[j][1] if j in res else {} for j in range(self.workers)]
        return self._merge_obs(self._last_obs), self._merge_infos(infos)

    def step(self, actions):
        actions = np.asarray(actions)
        for (start, count), pipe in zip(self.shards, self._pipes):
            pipe.send(("step", actions[start:start + count]))
        res = self._gather()
        self._last_obs = [r[0] for r in res]
        rew, term, trunc = (np.concatenate([r[i] for r in res]) for i in (1, 2, 3))
        return self._merge_obs(self._last_obs), rew, term, trunc, self._merge_infos([r[4] for r in res])

    def apply(self, fn, indices=None) -> list:
        want = _indices(indices, self.num_envs)
        sent = []
        for j, ((start, count), pipe) in enumerate(zip(self.shards, self._pipes)):
            local = [i - start for i in want if start <= i < start + count]
            if local:
                pipe.send(("apply", (fn, local)))
                sent.append(j)
        res = self._gather([self._pipes[j] for j in sent])
        by_env = {}
        for j, part in zip(sent, res):
            start = self.shards[j][0]
            local = [i - start for i in want if start <= i < start + self.shards[j][1]]
            by_env.update({start + i: x for i, x in zip(local, part)})
        return [by_env[i] for i in want]

    def call(self, name: str, *args, **kwargs) -> tuple:
        return tuple(self.apply(partial(_call, name=name, args=args, kwargs=kwargs)))

    def get_attr(self, name: str) -> tuple:
        return tuple(self.apply(partial(_get_attr, name=name)))

    def set_attr(self, name: str, values) -> None:
        if not isinstance(values, (list, tuple)):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(f"set_attr needs {self.num_envs} values, got {len(values)}")
        for (start, count), pipe in zip(self.shards, self._pipes):
            pipe.send(("set_attr", (name, list(values[start:start + count]))))
        self._gather()

    def render(self):
        return self.call("render")

    @property
    def envs(self):
        raise AttributeError("the sub-envs of SimScaleVectorEnv(workers > 1) live in its worker processes: use "
                             "apply(fn), call, get_attr or set_attr")

    @property
    def sub_envs(self):
        return self.envs

    def close_extras(self, **kwargs):
        if self._closed_workers:
            return
        self._closed_workers = True
        for pipe in self._pipes:
            try:
                pipe.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
        for pipe in self._pipes:
            pipe.close()

    def __del__(self):
        try:
            self.close_extras()
        except Exception:  # noqa: BLE001 (interpreter shutdown)
            pass

    # -- helpers
    def _gather(self, pipes=None) -> list:
        """Every asked worker's reply, in order. A worker's exception is raised here as it was raised there (its
        traceback chained), after every reply is read so that the workers stay in step: the env stays usable after a
        bad action, as with workers=1. A dead worker closes the env."""
        out, failure = [], None
        for pipe in self._pipes if pipes is None else pipes:
            try:
                ok, value = pipe.recv()
            except EOFError:
                self.close_extras()
                raise RuntimeError("a SimScaleVectorEnv worker died (see its output above)") from None
            if not ok and failure is None:
                failure = value
            out.append(value)
        if failure is not None:
            exc, trace = failure
            if exc is None:
                raise RuntimeError(f"a SimScaleVectorEnv worker failed:\n{trace}")
            raise exc from _WorkerTraceback(trace)
        return out

    def _merge_obs(self, parts):
        if isinstance(parts[0], dict):
            return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        return np.concatenate(parts)

    def _merge_infos(self, parts) -> dict:
        return _merge_vector_infos(parts, [count for _, count in self.shards])


def _merge_vector_infos(parts: list[dict], counts: list[int]) -> dict:
    """Consecutive shards' gymnasium vector infos as the one `SyncVectorEnv` builds over all their envs: a key's
    array takes the dtype of the first shard that has it (gymnasium types it by the first env that has it, which is
    in that shard), the other shards' values cast into it, and False in its ``_key`` mask (zeros, or None for
    objects) where a shard lacks it; nested dicts alike."""
    n = sum(counts)
    out: dict = {}
    keys = list(dict.fromkeys(k for p in parts for k in p if not k.startswith("_") or k[1:] not in p))
    for key in keys:
        have = [key in p for p in parts]
        first = parts[have.index(True)][key]
        if isinstance(first, dict):
            out[key] = _merge_vector_infos([p.get(key, {}) for p in parts], counts)
        else:
            arr = (np.full(n, None, dtype=object) if first.dtype == object else
                   np.zeros((n, *first.shape[1:]), dtype=first.dtype))
            start = 0
            for p, c in zip(parts, counts):
                if key in p:
                    arr[start:start + c] = p[key]
                start += c
            out[key] = arr
        out[f"_{key}"] = np.concatenate([p[f"_{key}"] if key in p else np.zeros(c, dtype=np.bool_)
                                         for p, c in zip(parts, counts)])
    return out


class _WorkerTraceback(Exception):
    """The traceback of an exception raised in a SimScaleVectorEnv worker (chained to the exception re-raised)."""


def _failure(exc: BaseException) -> tuple:
    """(the exception, if the parent can rebuild it from its pickle, else None; its traceback text): what a worker
    reports."""
    import traceback

    trace = traceback.format_exc()
    return (exc if _rebuilds(exc) else None), trace


def _rebuilds(exc: BaseException) -> bool:
    """Whether `exc` pickles and its class rebuilds from what the pickle stores (the call unpickling makes, here on
    the live objects rather than by unpickling bytes): an exception whose __init__ wants other arguments than it
    stores in `args` pickles but fails to unpickle, which would break the parent's receive."""
    import pickle

    try:
        pickle.dumps(exc)
        rebuild = exc.__reduce_ex__(pickle.DEFAULT_PROTOCOL)
        rebuild[0](*rebuild[1])
    except Exception:  # noqa: BLE001 (an exception that does not travel: its traceback alone)
        return False
    return True


def _shard_worker(pipe, spec: dict, count: int) -> None:
    """A `ShardedSimScaleVectorEnv` worker: one SimScaleVectorEnv of `count` siblings, driven over `pipe`; every
    reply is (ok, value), a failure's value `_failure(exc)`."""
    from ..parallel import set_worker_threads

    set_worker_threads(1)
    try:
        venv = SimScaleVectorEnv(count, **spec)
        pipe.send((True, (venv.single_observation_space, venv.single_action_space)))
    except Exception as exc:  # noqa: BLE001 (reported to the parent, which raises it)
        pipe.send((False, _failure(exc)))
        return
    while True:
        try:
            cmd, arg = pipe.recv()
        except (EOFError, KeyboardInterrupt):
            break
        try:
            if cmd == "close":
                venv.close()
                pipe.send((True, None))
                break
            if cmd == "reset":
                seeds, options = arg
                out = venv.reset(seed=seeds, options=options)
            elif cmd == "step":
                out = venv.step(arg)
            elif cmd == "apply":
                out = venv.apply(*arg)
            elif cmd == "set_attr":
                name, values = arg
                for env, value in zip(venv.envs, values):
                    setattr(env, name, value)
                out = None
            else:
                raise ValueError(f"unknown command {cmd!r}")
            pipe.send((True, out))
        except Exception as exc:  # noqa: BLE001 (reported to the parent, which raises it)
            pipe.send((False, _failure(exc)))
    pipe.close()


def _indices(indices, n: int) -> list[int]:
    if indices is None:
        return list(range(n))
    out = [int(indices)] if isinstance(indices, (int, np.integer)) else [int(i) for i in indices]
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise IndexError(f"sub-env indices {bad} out of range for {n} sub-envs")
    return out


def _is_wrapped(env, wrapper_class):
    from stable_baselines3.common.env_util import is_wrapped

    return is_wrapped(env, wrapper_class)


def _call(env, name, args, kwargs):
    f = getattr(env, name)
    return f(*args, **kwargs) if callable(f) else f


def _get_attr(env, name):
    return getattr(env, name)



class SB3VecEnv:
    """stable-baselines3's `VecEnv` interface over a gymnasium vector env in SAME_STEP autoreset mode (module
    docstring): `reset() -> obs`, `step_async` / `step_wait -> (obs, rewards, dones, infos)` with SB3's
    ``terminal_observation`` and ``TimeLimit.truncated`` in the info of an env whose episode ended (its returned
    observation is already the next episode's first). Subclasses SB3's `VecEnv` when it is imported (`make`)."""

    @staticmethod
    def make(vector_env, seed: int | None = None):
        from stable_baselines3.common.vec_env.base_vec_env import VecEnv

        if vector_env.metadata.get("autoreset_mode") != AutoresetMode.SAME_STEP:
            raise ValueError("SB3VecEnv needs a vector env with autoreset_mode=AutoresetMode.SAME_STEP (SB3 resets an "
                             "env in the step that ends its episode)")
        cls = type("SB3VecEnv", (_SB3VecEnvImpl, VecEnv), {})
        return cls(vector_env, seed)


class _SB3VecEnvImpl:
    def __init__(self, vector_env, seed=None):
        self.venv = vector_env
        self._actions = None
        self._seed = seed
        super().__init__(vector_env.num_envs, vector_env.single_observation_space, vector_env.single_action_space)

    # -- SB3 VecEnv API
    def reset(self):
        seed = self._seed
        self._seed = None  # a seed is used for the first reset only (SB3's VecEnv.seed semantics)
        obs, info = self.venv.reset(seed=seed)
        self.reset_infos = _split_infos(info, self.num_envs)
        return obs

    def seed(self, seed=None):
        self._seed = seed
        return [None if seed is None else seed + i for i in range(self.num_envs)]

    def step_async(self, actions):
        self._actions = np.asarray(actions)

    def step_wait(self):
        obs, rew, term, trunc, info = self.venv.step(self._actions)
        infos = _split_infos(info, self.num_envs)
        dones = np.logical_or(term, trunc)
        for i in np.nonzero(dones)[0]:
            final = infos[i].pop("final_info", None) or {}
            final_obs = infos[i].pop("final_obs", None)
            infos[i] = {**final, "terminal_observation": final_obs,
                        "TimeLimit.truncated": bool(trunc[i] and not term[i])}
        return obs, np.asarray(rew, dtype=np.float32), dones, infos

    def close(self):
        self.venv.close()

    def get_attr(self, attr_name, indices=None):
        return self.venv.apply(partial(_get_attr, name=attr_name), indices)

    def set_attr(self, attr_name, value, indices=None):
        values = list(self.venv.get_attr(attr_name))
        for i in _indices(indices, self.num_envs):
            values[i] = value
        self.venv.set_attr(attr_name, values)

    def env_method(self, method_name, *args, indices=None, **kwargs):
        return self.venv.apply(partial(_call, name=method_name, args=args, kwargs=kwargs), indices)

    def env_is_wrapped(self, wrapper_class, indices=None):
        return self.venv.apply(partial(_is_wrapped, wrapper_class=wrapper_class), indices)

    def get_images(self):
        return self.venv.apply(partial(_call, name="render", args=(), kwargs={}))


def _split_infos(info: dict, n: int) -> list[dict]:
    """gymnasium's vector info (arrays per key with ``_key`` masks, nested dicts alike) -> one dict per env."""
    out = [{} for _ in range(n)]
    for k, v in info.items():
        if k.startswith("_"):
            continue
        mask = info.get(f"_{k}")
        subs = _split_infos(v, n) if isinstance(v, dict) else None
        for i in range(n):
            if mask is None or mask[i]:
                out[i][k] = subs[i] if subs is not None else v[i]
    return out
