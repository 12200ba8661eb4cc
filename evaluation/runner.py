"""The evaluation runner: map one work item per split token over worker processes or Ray, collect one row per item.

    result = run_evaluation(EvalConfig(policy="pdm_closed", split="mini-navhard", mode="closed_loop"), workers=2,
                            out="runs/pdm")

The runner only knows the interface of `evaluation.modes` (`split_tokens`, `make_env`, `run_item`, `aggregate`) and
of `agents.load_policy`: an item is (index k, the k-th token of the split), and its row is a pure function of
(config, token, index), so the rows do not depend on the executor. They are sorted by index before anything is
written.

- Executors: ``workers=1`` runs in this process; ``workers=K`` runs K local worker processes (multiprocessing's
  "spawn" context); ``ray=True`` runs K Ray actors (`ray.init(address=ray_address)`, or a local Ray with K CPUs).
  Every worker builds its env and policy once (`make_env`, `load_policy`) and then runs many items. A worker's numba
  and torch threads are the machine's cores divided among the workers.
- Failures: an item that raises is a row with ``valid=False``, NaN scores and its error (``error_type``, ``error``);
  the run goes on and `RunResult.failed` counts them. A worker process that dies (a crash in native code) fails the
  item it was running: the items in flight with it are run again one at a time in a fresh pool, so only the culprit
  is recorded (``error_type="WorkerCrash"``). A worker whose env or policy cannot be built stops the run with an
  `EvaluationError` (a configuration error, not an item's).
- Run directory (``out``): `config.json` (the config and the items) is written first; each finished item is
  appended to `rows.partial.jsonl` (one JSON object per line, flushed and fsynced), so an interrupted run loses at
  most the items in flight. A rerun into the same directory with the same config and items reads the finished rows
  back and runs only the rest (failed items are run again); a different config is an `EvaluationError` naming the
  fields that differ. The final files (`evaluation.report.write_run`) are written atomically.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from simscale_env.errors import SimScaleError
from simscale_env.parallel import RAY_INSTALL, import_ray, set_worker_threads, threads_per_worker  # noqa: F401

log = logging.getLogger(__name__)

API = "evaluation.modes"  # the module with EvalConfig, split_tokens, make_env, run_item, aggregate
CONFIG_FILE = "config.json"
PARTIAL_FILE = "rows.partial.jsonl"
RUN_FORMAT = "simscale-eval-run/1"
# the row columns NAVSIM's CSVs hold (navsim-agents-and-planners.md §2.1), in order; a failed item has them NaN
from .modes import SCORE_COLUMNS, SUBSCORES  # noqa: E402


class EvaluationError(SimScaleError):
    """A run that cannot start or go on: a run directory of another config, a worker that cannot build its env or
    policy, Ray missing."""


@dataclass(frozen=True)
class RunResult:
    """What `run_evaluation` returns. `rows` are sorted by item index; each has the mode's columns plus ``index``,
    ``error_type`` and ``error`` (None for a finished item)."""

    cfg: object
    rows: list
    summary: dict  # evaluation.report.summarize: headline numbers with 95 % bootstrap intervals, run time, versions
    failed: int
    resumed: int  # rows read back from an earlier run in the same run directory
    seconds: float  # wall time of this call
    timing: dict = field(default_factory=dict)  # executor, workers, per-worker setup seconds, per-item seconds
    run_dir: Path | None = None
    files: dict = field(default_factory=dict)  # name -> path of what was written into run_dir


# ------------------------------------------------------------------------------------------------ plain values
def _plain(obj):
    """JSON `default`: numpy scalars and arrays, paths, dataclasses, tuples as plain values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    return str(obj)


def to_json(obj, sort_keys: bool = True) -> str:
    """JSON of plain values (NaN written as NaN, which `json.loads` reads back bit-exactly; floats round-trip
    exactly); `sort_keys` for a canonical form."""
    return json.dumps(obj, default=_plain, sort_keys=sort_keys, allow_nan=True)


def config_dict(cfg) -> dict:
    """The config as plain JSON values (what config.json holds)."""
    return json.loads(to_json(dataclasses.asdict(cfg)))


# ------------------------------------------------------------------------------------------------ the worker side
_STATE: dict = {}


def _load_policy(api, cfg):
    """`agents.load_policy(spec, kwargs)`; before agents has one, the mode module's fallback (`load_policy(cfg)`)."""
    try:
        from agents import load_policy
    except ImportError:
        return api.load_policy(cfg)
    return load_policy(cfg.policy, dict(cfg.policy_kwargs)) if cfg.policy_kwargs else load_policy(cfg.policy)


def _setup(api_name: str, cfg, threads: int | None, warmup: bool = False) -> dict:
    """Build one worker's env and policy (once). A failure is kept and reported with every item. `warmup`: the
    worker's first item is run twice, the first time untimed (per-process first uses out of the item times)."""
    import importlib

    set_worker_threads(threads)
    t = time.perf_counter()
    state = {"pid": os.getpid(), "cfg": cfg, "warmup": warmup}
    try:
        api = importlib.import_module(api_name)
        policy = _load_policy(api, cfg)
        state.update(api=api, policy=policy, env=api.make_env(cfg, policy))
    except Exception as exc:  # noqa: BLE001 (reported to the parent, which stops the run)
        state["setup_error"] = ("" if isinstance(exc, SimScaleError) else f"{type(exc).__name__}: ",
                                " ".join(str(exc).split()))
    state["setup_s"] = time.perf_counter() - t
    return state


def _run_one(state: dict, index: int, token: str) -> dict:
    """One item in a worker: the row as canonical JSON, or the error. Timestamps for the bench."""
    out = {"index": int(index), "token": str(token), "pid": state["pid"], "setup_s": state["setup_s"]}
    if "setup_error" in state:
        out["setup_error"] = state["setup_error"]
        return out
    if state.pop("warmup", False):  # untimed; the item is a pure function, so its second run gives the same row
        t0 = time.perf_counter()
        try:
            state["api"].run_item(state["env"], state["policy"], state["cfg"], token, index)
        except Exception:  # noqa: BLE001 (the timed run records it)
            pass
        out["warmup_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out["start"] = time.time()
    try:
        row = state["api"].run_item(state["env"], state["policy"], state["cfg"], token, index)
        out["row"] = to_json(dict(row), sort_keys=False)  # the mode's column order
    except Exception as exc:  # noqa: BLE001 (the item fails; the run goes on)
        out["error"] = (type(exc).__name__, " ".join(str(exc).split()) or repr(exc))
        log.debug("item %d (%s) failed", index, token, exc_info=True)
    out["seconds"] = time.perf_counter() - t0
    out["end"] = time.time()
    return out


def _pool_init(api_name: str, cfg, threads: int | None, warmup: bool, started) -> None:
    _STATE.clear()
    _STATE.update(_setup(api_name, cfg, threads, warmup))
    with started.get_lock():  # this worker came up (the parent tells a crash from a failed start by it)
        started.value += 1


def _pool_work(index: int, token: str) -> dict:
    return _run_one(_STATE, index, token)


class _RayWorker:
    """A Ray actor (wrapped by `ray.remote` at run time): one env and policy, many items."""

    def __init__(self, api_name: str, cfg, threads: int | None, warmup: bool = False):
        self.state = _setup(api_name, cfg, threads, warmup)

    def run(self, index: int, token: str) -> dict:
        return _run_one(self.state, index, token)


# ------------------------------------------------------------------------------------------------ rows
def failed_row(index: int, token: str, error_type: str, message: str) -> dict:
    """The row of a failed item: valid False, NaN scores, the error."""
    row = {"index": int(index), "token": str(token), "log_name": None, "scenario_type": None, "valid": False}
    row.update({c: float("nan") for c in SCORE_COLUMNS})
    row.update(error_type=str(error_type), error=str(message))
    return row


def _row_of(res: dict) -> dict:
    if "row" in res:
        row = {"index": res["index"], **json.loads(res["row"])}
        row["index"] = res["index"]
        row.update(error_type=None, error=None)
        return row
    return failed_row(res["index"], res["token"], *res["error"])


# ------------------------------------------------------------------------------------------------ run directory
class _RunDir:
    """config.json (the run's identity) and the append-only journal of finished items."""

    def __init__(self, path: Path, identity: dict):
        self.path = Path(path)
        self.identity = identity
        self.partial = self.path / PARTIAL_FILE
        self._fh = None

    def open(self) -> dict:
        """Check or write the identity; the rows already finished (index -> row; failed ones are run again)."""
        from simscale_env.data.atomic import atomic_write_text, is_temporary
        from simscale_env.errors import OutputFolderError

        p = self.path
        if p.exists() and not p.is_dir():
            raise OutputFolderError(p, "the run directory is a file")
        p.mkdir(parents=True, exist_ok=True)
        cfg_file = p / CONFIG_FILE
        if cfg_file.exists():
            try:
                old = json.loads(cfg_file.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise EvaluationError(f"{cfg_file}: not a run config ({exc}); use another run directory") from None
            if not isinstance(old, dict) or old.get("format") != RUN_FORMAT:
                raise EvaluationError(f"{cfg_file}: not a SimScale evaluation run (format "
                                      f"{old.get('format') if isinstance(old, dict) else None!r}); use another "
                                      f"run directory")
            diff = _differences(old, self.identity)
            if diff and not self._read_partial():  # nothing finished there (e.g. a mistyped policy): start anew
                log.info("%s: replacing the config of a run that finished no item", p)
                atomic_write_text(cfg_file, json.dumps(self.identity, indent=1, sort_keys=True))
            elif diff:
                raise EvaluationError(f"{p}: holds a run of another config ({'; '.join(diff[:6])}): use another "
                                      f"run directory, or remove this one")
            elif old.get("selected") != self.identity["selected"]:  # another subset of the same items
                atomic_write_text(cfg_file, json.dumps(self.identity, indent=1, sort_keys=True))
        else:
            others = [f.name for f in p.iterdir() if not is_temporary(f.name)]
            if others:
                raise OutputFolderError(p, f"not an evaluation run directory (holds {', '.join(sorted(others)[:5])}"
                                           f"{', ...' if len(others) > 5 else ''} and no {CONFIG_FILE}): use an "
                                           f"empty or new folder")
            atomic_write_text(cfg_file, json.dumps(self.identity, indent=1, sort_keys=True))
        return self._read_partial()

    def _read_partial(self) -> dict:
        done = {}
        if not self.partial.exists():
            return done
        data = self.partial.read_bytes()
        if data and not data.endswith(b"\n"):  # an interrupted append: drop the torn last line
            keep = data[:data.rfind(b"\n") + 1]
            log.warning("%s: dropping a torn last line (%d bytes)", self.partial, len(data) - len(keep))
            with open(self.partial, "r+b") as fh:
                fh.truncate(len(keep))
            data = keep
        tokens = self.identity["items"]
        for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            try:
                e = json.loads(line)
                k, row = int(e["index"]), e["row"]
            except (ValueError, KeyError, TypeError):
                raise EvaluationError(f"{self.partial}: line {n} is not a row record; remove the run directory "
                                      f"to start over") from None
            if not (0 <= k < len(tokens)) or row.get("token") != tokens[k]:
                raise EvaluationError(f"{self.partial}: line {n} is item {k} ({row.get('token')!r}), not an item "
                                      f"of this run")
            if row.get("error") is None:
                done[k] = row
            else:
                done.pop(k, None)
        return done

    def append(self, row: dict, res: dict) -> None:
        if self._fh is None:
            self._fh = open(self.partial, "a", encoding="utf-8")
        rec = {"index": row["index"], "row": row, "seconds": res.get("seconds"), "pid": res.get("pid")}
        self._fh.write(to_json(rec, sort_keys=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _differences(old: dict, new: dict) -> list[str]:
    out = []
    oc, nc = old.get("config", {}), new.get("config", {})
    for k in sorted(set(oc) | set(nc)):
        if oc.get(k) != nc.get(k):
            out.append(f"{k}: {oc.get(k)!r} there, {nc.get(k)!r} now")
    if old.get("items") != new.get("items"):
        a, b = old.get("items") or [], new.get("items") or []
        out.append(f"items: {len(a)} tokens there, {len(b)} now" if len(a) != len(b) else "items: other tokens")
    return out


# ------------------------------------------------------------------------------------------------ executors
def _setup_failed(res: dict):
    kind, msg = res["setup_error"]
    return EvaluationError(f"could not build the env or the policy: {kind}{msg}")


def _run_inline(api_name, cfg, items, on_result, timing, warmup):
    state = _setup(api_name, cfg, None, warmup)
    timing["setup_s"] = [state["setup_s"]]
    try:
        for index, token in items:
            res = _run_one(state, index, token)
            if "setup_error" in res:
                raise _setup_failed(res)
            on_result(res)
    finally:
        env = state.get("env")
        if env is not None:
            env.close()


def _run_local(api_name, cfg, items, workers, on_result, timing, warmup):
    """K spawned worker processes; at most K items in flight. A dead worker breaks the pool: its in-flight items
    become suspects, run again one at a time in a fresh pool (the one that dies alone is the culprit)."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    pending, suspects = deque(items), deque()
    setups = {}
    ctx = mp.get_context("spawn")
    while pending or suspects:
        started = ctx.Value("i", 0)
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_pool_init,
                                   initargs=(api_name, cfg, threads_per_worker(workers), warmup, started))
        inflight = {}  # future -> (index, token, alone)

        def submit(it, alone):
            inflight[pool.submit(_pool_work, *it)] = (*it, alone)

        try:
            while pending or suspects or inflight:
                if suspects:
                    if not inflight:
                        submit(suspects[0], True)
                        suspects.popleft()
                else:
                    while pending and len(inflight) < workers:
                        submit(pending[0], False)
                        pending.popleft()
                done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                for fut in done:
                    res = fut.result()  # BrokenProcessPool when a worker died
                    inflight.pop(fut)
                    if "setup_error" in res:
                        raise _setup_failed(res)
                    setups[res["pid"]] = res["setup_s"]
                    on_result(res)
        except BrokenProcessPool as exc:
            if started.value == 0 or not inflight:
                raise EvaluationError(f"the worker processes died while starting or building the env and policy "
                                      f"({exc}); a script that calls run_evaluation with workers > 1 needs an "
                                      f"`if __name__ == '__main__':` guard (multiprocessing's spawn start "
                                      f"method)") from None
            for index, token, alone in inflight.values():
                if alone:
                    log.warning("item %d (%s): its worker process died", index, token)
                    on_result({"index": index, "token": token, "error": (
                        "WorkerCrash", "the worker process running this item died (a crash in native code or "
                                       "out of memory)")})
                else:
                    suspects.append((index, token))
            log.warning("a worker process died; the %d items in flight with it are run again one at a time",
                        len(suspects))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    timing["setup_s"] = list(setups.values())


def _import_ray():
    return import_ray(EvaluationError)


def _run_ray(api_name, cfg, items, workers, ray_address, on_result, timing, warmup):
    """K Ray actors, one item in flight each; an actor that dies fails its item and is replaced."""
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        kw = {"address": ray_address} if ray_address else {"num_cpus": workers}
        if not ray_address:  # a local Ray: its workers import what this process imports
            path = os.pathsep.join(p for p in sys.path if p)
            kw["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
        ray.init(include_dashboard=False, log_to_driver=False, **kw)
        started = True
    try:
        workers = min(workers, len(items))
        cpus = int(ray.cluster_resources().get("CPU", workers))
        if workers > cpus:  # an actor that can never be placed would wait forever
            log.warning("%d Ray actors asked for, the cluster has %d CPUs: running %d", workers, cpus, max(1, cpus))
            workers = max(1, cpus)
        Actor = ray.remote(num_cpus=1, max_restarts=0)(_RayWorker)
        threads = max(1, int(ray.available_resources().get("CPU", workers)) // max(1, workers)) \
            if not ray_address else None
        pending = deque(items)
        actors = [Actor.remote(api_name, cfg, threads, warmup) for _ in range(workers)]
        idle = deque(actors)
        inflight = {}  # ref -> (actor, index, token)
        setups = {}
        while pending or inflight:
            while pending and idle:
                a = idle.popleft()
                index, token = pending.popleft()
                inflight[a.run.remote(index, token)] = (a, index, token)
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                a, index, token = inflight.pop(ref)
                try:
                    res = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                    log.warning("item %d (%s): its Ray actor died: %s", index, token, exc)
                    on_result({"index": index, "token": token, "error": (
                        "WorkerCrash", f"the Ray actor running this item died: {' '.join(str(exc).split())[:300]}")})
                    idle.append(Actor.remote(api_name, cfg, threads, warmup))
                    continue
                if "setup_error" in res:
                    raise _setup_failed(res)
                setups[res["pid"]] = res["setup_s"]
                on_result(res)
                idle.append(a)
        timing["setup_s"] = list(setups.values())
        for a in actors:
            ray.kill(a)
    finally:
        if started:
            ray.shutdown()


# ------------------------------------------------------------------------------------------------ the entry point
def run_evaluation(cfg, *, tokens=None, workers: int = 1, ray: bool = False, ray_address: str | None = None,
                   out=None, progress: bool = True, videos: bool = True, command: str | None = None,
                   warmup: bool = False, api: str = API) -> RunResult:
    """Score `cfg.policy` on the items of `cfg` (the split's tokens; `tokens`: a subset of them, each keeping its
    index in the split) with `workers` local processes or Ray actors, and write the run directory `out` (None: write
    nothing). `videos`: the report's best/worst episode videos. `command`: the command line recorded in
    aggregate.json (default: this process's argv). `warmup` (benchmarks): each worker runs its first item once
    untimed before the timed run. `api`: the module with the mode functions (tests)."""
    import importlib

    from tqdm import tqdm

    from . import report

    t_start = time.perf_counter()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise EvaluationError(f"workers must be an integer >= 1, got {workers!r}")
    if ray_address and not ray:
        raise EvaluationError("ray_address is given without ray=True")
    if ray:
        _import_ray()  # the one-line error before any work
    mod = importlib.import_module(api)
    split = [str(t) for t in mod.split_tokens(cfg)]
    index_of = {}
    for k, t in enumerate(split):
        index_of.setdefault(t, k)
    if tokens is None:
        items = [(index_of[t], t) for t in dict.fromkeys(split)]
    else:
        want = [str(t) for t in tokens]
        missing = [t for t in want if t not in index_of]
        if missing:
            raise EvaluationError(f"split {cfg.split!r}: {len(missing)} of the requested tokens are not in it: "
                                  f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}")
        items = sorted({index_of[t]: t for t in want}.items())
    identity = {"format": RUN_FORMAT, "config": config_dict(cfg), "items": split,
                "selected": [k for k, _ in items]}
    if command is None:
        command = shlex.join(sys.argv)

    run_dir = _RunDir(Path(out), identity) if out is not None else None
    done = run_dir.open() if run_dir is not None else {}
    selected = {k for k, _ in items}
    done = {k: r for k, r in done.items() if k in selected}
    todo = [(k, t) for k, t in items if k not in done]
    rows = dict(done)
    failed_now = [0]
    executor = "ray" if ray else ("inline" if workers == 1 else "processes")
    log.info("%s on %s (%s): %d items, %d done before, %d to run, %s x %d", cfg.policy, cfg.split, cfg.mode,
             len(items), len(done), len(todo), executor, workers)
    bar = tqdm(total=len(items), initial=len(done), desc=f"{cfg.policy} {cfg.mode}", unit="item",
               disable=not progress, file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
    timing = {"executor": executor, "workers": workers, "items": {}}

    def on_result(res: dict) -> None:
        row = _row_of(res)
        rows[row["index"]] = row
        timing["items"][row["index"]] = {k: res.get(k) for k in ("seconds", "start", "end", "pid", "warmup_s")}
        if row["error"] is not None:
            failed_now[0] += 1
            log.warning("item %d (%s) failed: %s: %s", row["index"], row["token"], row["error_type"], row["error"])
        if run_dir is not None:
            run_dir.append(row, res)
        bar.update(1)
        if failed_now[0]:
            bar.set_postfix(failed=failed_now[0], refresh=False)

    try:
        if not todo:
            pass
        elif ray:
            _run_ray(api, cfg, todo, workers, ray_address, on_result, timing, warmup)
        elif workers == 1:
            _run_inline(api, cfg, todo, on_result, timing, warmup)
        else:
            _run_local(api, cfg, todo, min(workers, len(todo)), on_result, timing, warmup)
    finally:
        bar.close()
        if run_dir is not None:
            run_dir.close()
    ordered = [rows[k] for k in sorted(rows)]
    failed = sum(r.get("error") is not None for r in ordered)
    seconds = time.perf_counter() - t_start
    summary = report.summarize(ordered, cfg, api=mod, seconds=seconds, command=command, workers=workers,
                               executor=executor, resumed=len(done))
    files = {}
    if run_dir is not None:
        files = report.write_run(run_dir.path, ordered, cfg, summary, api=mod, videos=videos)
    return RunResult(cfg=cfg, rows=ordered, summary=summary, failed=failed, resumed=len(done), seconds=seconds,
                     timing=timing, run_dir=run_dir.path if run_dir is not None else None, files=files)

