"""The sim data engine: SimScale's generation rounds over worker processes or Ray, written as Parquet shards with a
JSON manifest, resumable after a kill.

    manifest = run_generation(GenConfig(split="mini-navtrain", rounds=3, seed=3), "runs/gen", workers=2)

The engine only knows the interface of `training.generate` (`make_generator_env`, `base_tokens`, `generate_sample`,
`REJECTION_REASONS`): a task is (round r, base token index k, base token) and its outcome (a sample row, or a
rejection reason) is a pure function of (config, token, round), so the output does not depend on the executor.

- Rounds are nested: round 1 runs every base token of the split; round r+1 runs only the tokens that gave a valid
  sample in round r. A round's outcomes are sorted by token index before its shards are written.
- Executors: ``workers=1`` runs in this process; ``workers=K`` runs K spawned worker processes; ``ray=True`` runs K
  Ray actors (`ray.init(address=ray_address)`, or a local Ray with K CPUs). Each worker builds its env once.
- A task that raises is run once more in its worker; if it raises again it is a failure (type and message in the
  manifest) and the run goes on. A worker process that dies fails the tasks in flight with it (``WorkerCrash``).
- Run directory ``out``: ``run.json`` (the run's identity: config, split tokens, shard size) first; every finished
  task is appended to ``round-RR.partial.jsonl`` (flushed and fsynced; samples inline, bytes as base64). When a
  round's tasks are all done its samples are read back from that journal in token order and written as Parquet
  shards ``samples-rRR-NNNNN.parquet`` (~`shard_mb` each, through a hidden temporary renamed into place), then
  ``round-RR.json`` (its outcomes and shards) and ``manifest.json`` (atomically); the journal is then removed.
  Shards are always built from the journal, so a resumed run writes the same bytes as an uninterrupted one.
- ``resume=True`` continues a run in ``out`` with the same identity (finished rounds are kept, a partial round runs
  only its unfinished or failed tasks). A folder holding another run, or anything else, is an error; nothing is
  written.

Test hook: ``SIMSCALE_TEST_KILL_AT=task:N`` SIGKILLs the process after the N-th journalled task
(`simscale_env.data.atomic.kill_point`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shlex
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np

from simscale_env.errors import SimScaleError

log = logging.getLogger(__name__)

API = "training.generate"
RUN_FILE = "run.json"
MANIFEST_FILE = "manifest.json"
RUN_FORMAT = "simscale-gen-run/1"
MANIFEST_FORMAT = "simscale-gen-manifest/1"
_MB = 1 << 20


# one error class for generation (training.generate's): a config or input that cannot work, an output folder of
# another run, a Ray address that does not answer, a worker that cannot build its env
from .generate import GenerationError  # noqa: E402


# ------------------------------------------------------------------------------------------------ plain values
def _enc(v):
    """A sample value as JSON (bytes as {"b64": ...}); numpy values as plain Python values."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"b64": base64.b64encode(bytes(v)).decode("ascii")}
    if isinstance(v, np.ndarray):
        return [_enc(x) for x in v.tolist()] if v.dtype != object else [_enc(x) for x in v]
    if isinstance(v, (list, tuple)):
        return [_enc(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, dict):
        return {str(k): _enc(x) for k, x in v.items()}
    return v


def _dec(v):
    if isinstance(v, dict):
        if set(v) == {"b64"}:
            return base64.b64decode(v["b64"])
        return {k: _dec(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_dec(x) for x in v]
    return v


def _dumps(obj) -> str:
    return json.dumps(obj, allow_nan=True, separators=(",", ":"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_MB), b""):
            h.update(chunk)
    return h.hexdigest()


def _nbytes(row: dict) -> int:
    n = 0
    for v in row.values():
        if isinstance(v, bytes):
            n += len(v)
        elif isinstance(v, list):
            n += sum(len(x) if isinstance(x, bytes) else 8 for x in v)
        elif isinstance(v, str):
            n += len(v)
        else:
            n += 8
    return n


# ------------------------------------------------------------------------------------------------ Parquet
def _arrow_type(values):
    """The Arrow type of one column (plain values: str, bool, int, float, bytes, lists of them)."""
    import pyarrow as pa

    kinds = set()
    elem = set()
    for v in values:
        if v is None:
            continue
        if isinstance(v, list):
            kinds.add("list")
            for x in v:
                elem.add("bytes" if isinstance(x, bytes) else "bool" if isinstance(x, bool) else
                         "int" if isinstance(x, int) else "float" if isinstance(x, float) else
                         "str" if isinstance(x, str) else "other")
        else:
            kinds.add("bytes" if isinstance(v, bytes) else "bool" if isinstance(v, bool) else
                      "int" if isinstance(v, int) else "float" if isinstance(v, float) else
                      "str" if isinstance(v, str) else "other")
    scalar = {"bytes": pa.binary(), "bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(),
              "str": pa.string()}

    def one(ks):
        ks = set(ks) - {"other"} if "other" not in ks or len(ks) > 1 else ks
        if not ks:
            return pa.float64()
        if ks <= {"int", "float"}:
            return pa.int64() if ks == {"int"} else pa.float64()
        if len(ks) == 1 and next(iter(ks)) in scalar:
            return scalar[next(iter(ks))]
        return None

    if kinds == {"list"}:
        t = one(elem)
        if t is not None:
            return pa.list_(t)
    elif "list" not in kinds:
        t = one(kinds) if kinds else pa.string()
        if t is not None:
            return t
    raise GenerationError(f"sample column of mixed or unsupported values ({sorted(kinds | elem)})")


def write_shard(path: Path, rows: list[dict]) -> dict:
    """One Parquet shard of `rows` (columns in the first row's key order), written atomically; its record."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from simscale_env.data.atomic import atomic_write

    names = list(rows[0])
    for r in rows[1:]:
        names += [k for k in r if k not in names]
    cols, fields = [], []
    for name in names:
        vals = [r.get(name) for r in rows]
        try:
            t = _arrow_type(vals)
        except GenerationError as exc:
            raise GenerationError(f"{path.name}: column {name!r}: {exc}") from None
        fields.append(pa.field(name, t))
        cols.append(pa.array(vals, type=t))
    table = pa.Table.from_arrays(cols, schema=pa.schema(fields))
    with atomic_write(path) as fh:
        pq.write_table(table, fh, compression="zstd", row_group_size=max(1, min(len(rows), 64)))
    return {"file": path.name, "rows": len(rows), "bytes": path.stat().st_size, "sha256": _sha256(path)}


# ------------------------------------------------------------------------------------------------ worker side
_STATE: dict = {}


def _setup(api_name: str, cfg, threads: int | None, warmup: bool = False) -> dict:
    import importlib

    from simscale_env.parallel import set_worker_threads

    set_worker_threads(threads)
    t = time.perf_counter()
    state = {"pid": os.getpid(), "cfg": cfg, "warmup": warmup}
    try:
        api = importlib.import_module(api_name)
        import inspect

        state.update(api=api, env=api.make_generator_env(cfg),
                     timed="timings" in inspect.signature(api.generate_sample).parameters)
    except Exception as exc:  # noqa: BLE001 (reported to the parent, which stops the run)
        state["setup_error"] = ("" if isinstance(exc, SimScaleError) else f"{type(exc).__name__}: ") + \
            " ".join(str(exc).split())
    state["setup_s"] = time.perf_counter() - t
    return state


def _run_task(state: dict, round_: int, index: int, token: str) -> dict:
    """One task in a worker: its outcome (sample, rejection reason or error after one retry) and its time."""
    out = {"round": int(round_), "index": int(index), "token": str(token), "pid": state["pid"],
           "setup_s": state["setup_s"]}
    if "setup_error" in state:
        out["setup_error"] = state["setup_error"]
        return out
    api, env, cfg = state["api"], state["env"], state["cfg"]
    if state.pop("warmup", False):  # benchmarks: the first task once untimed (a pure function of its inputs)
        t0 = time.perf_counter()
        try:
            api.generate_sample(env, cfg, token, round_)
        except Exception:  # noqa: BLE001 (the timed run records it)
            pass
        out["warmup_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    errors = []
    kw = {}
    for attempt in (1, 2):
        if state.get("timed"):  # per-phase seconds of the last attempt (reset, rollout, render, encode, ...)
            kw["timings"] = {}
        try:
            sample, reason = api.generate_sample(env, cfg, token, round_, **kw)
            out.update(sample=sample, reason=reason, attempts=attempt)
            break
        except Exception as exc:  # noqa: BLE001 (retried once, then recorded; the run goes on)
            errors.append(f"{type(exc).__name__}: {' '.join(str(exc).split()) or repr(exc)}")
            log.debug("task %s round %d attempt %d failed", token, round_, attempt, exc_info=True)
    else:
        out.update(error=errors[-1], attempts=2)
    out["seconds"] = time.perf_counter() - t0
    if kw.get("timings"):
        out["timing"] = {str(k): float(v) for k, v in kw["timings"].items()}
    return out


def _pool_init(api_name, cfg, threads, warmup, started) -> None:
    _STATE.clear()
    _STATE.update(_setup(api_name, cfg, threads, warmup))
    with started.get_lock():
        started.value += 1


def _pool_work(round_, index, token) -> dict:
    return _run_task(_STATE, round_, index, token)


class _RayWorker:
    """A Ray actor (wrapped by `ray.remote` at run time): one env, many tasks."""

    def __init__(self, api_name, cfg, threads, warmup=False):
        self.state = _setup(api_name, cfg, threads, warmup)

    def run(self, round_, index, token) -> dict:
        return _run_task(self.state, round_, index, token)


# ------------------------------------------------------------------------------------------------ executors
def _setup_failed(res):
    return GenerationError(f"could not build the generator env: {res['setup_error']}")


class _Executor:
    """Runs tasks (round, index, token) and hands each outcome to a callback; keeps its workers across rounds."""

    def __init__(self, api_name, cfg, workers, ray, ray_address, warmup):
        self.api_name, self.cfg, self.workers, self.ray, self.ray_address = api_name, cfg, workers, ray, ray_address
        self.warmup, self.setups = warmup, {}
        self.kind = "ray" if ray else ("inline" if workers == 1 else "processes")
        self._state = self._pool = self._actors = self._started = None
        self._ray_started = False

    # inline ----------------------------------------------------------------------------------------------------
    def _inline(self, tasks, on_result):
        if self._state is None:
            self._state = _setup(self.api_name, self.cfg, None, self.warmup)
            if "setup_error" in self._state:
                raise _setup_failed(self._state)
            self.setups[self._state["pid"]] = self._state["setup_s"]
        for t in tasks:
            on_result(_run_task(self._state, *t))

    # processes -------------------------------------------------------------------------------------------------
    def _new_pool(self):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        from simscale_env.parallel import threads_per_worker

        ctx = mp.get_context("spawn")
        self._started = ctx.Value("i", 0)
        self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=_pool_init,
                                         initargs=(self.api_name, self.cfg, threads_per_worker(self.workers), self.warmup,
                                                   self._started))

    def _processes(self, tasks, on_result):
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        pending = deque(tasks)
        while pending:
            if self._pool is None:
                self._new_pool()
            inflight = {}
            try:
                while pending or inflight:
                    while pending and len(inflight) < 2 * self.workers:
                        t = pending.popleft()
                        inflight[self._pool.submit(_pool_work, *t)] = t
                    done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                    for fut in done:
                        res = fut.result()
                        inflight.pop(fut)
                        if "setup_error" in res:
                            raise _setup_failed(res)
                        self.setups[res["pid"]] = res["setup_s"]
                        on_result(res)
            except BrokenProcessPool as exc:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
                if self._started.value == 0:
                    raise GenerationError(f"the worker processes died while starting ({exc}); a script that calls "
                                          f"run_generation with workers > 1 needs an `if __name__ == '__main__':` "
                                          f"guard") from None
                for r, k, tok in inflight.values():
                    log.warning("task %s round %d: its worker process died", tok, r)
                    on_result({"round": r, "index": k, "token": tok, "attempts": 1, "error": (
                        "WorkerCrash: the worker process running this task died (a crash in native code or out of "
                        "memory)")})

    # ray -------------------------------------------------------------------------------------------------------
    def _ray(self, tasks, on_result):
        from simscale_env.parallel import import_ray

        ray = import_ray(GenerationError)
        if self._actors is None:
            if not ray.is_initialized():
                kw = {"address": self.ray_address} if self.ray_address else {"num_cpus": self.workers}
                if not self.ray_address:
                    kw["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}
                try:
                    ray.init(include_dashboard=False, log_to_driver=False, **kw)
                except (ConnectionError, TimeoutError, RuntimeError) as exc:
                    raise GenerationError(f"--ray-address {self.ray_address}: could not join the Ray cluster: "
                                          f"{' '.join(str(exc).split())[:300]}") from None
                self._ray_started = True
            cpus = int(ray.cluster_resources().get("CPU", self.workers))
            n = min(self.workers, max(1, cpus))
            if n < self.workers:
                log.warning("%d Ray actors asked for, the cluster has %d CPUs: running %d", self.workers, cpus, n)
            self._Actor = ray.remote(num_cpus=1, max_restarts=0)(_RayWorker)
            self._threads = None if self.ray_address else max(1, cpus // n)
            self._actors = [self._Actor.remote(self.api_name, self.cfg, self._threads, self.warmup)
                            for _ in range(n)]
        pending, idle, inflight = deque(tasks), deque(self._actors), {}
        while pending or inflight:
            while pending and idle:
                a = idle.popleft()
                t = pending.popleft()
                inflight[a.run.remote(*t)] = (a, t)
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                a, (r, k, tok) = inflight.pop(ref)
                try:
                    res = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                    log.warning("task %s round %d: its Ray actor died: %s", tok, r, exc)
                    on_result({"round": r, "index": k, "token": tok, "attempts": 1,
                               "error": f"WorkerCrash: the Ray actor running this task died: "
                                        f"{' '.join(str(exc).split())[:300]}"})
                    self._actors.remove(a)
                    a = self._Actor.remote(self.api_name, self.cfg, self._threads, self.warmup)
                    self._actors.append(a)
                    idle.append(a)
                    continue
                if "setup_error" in res:
                    raise _setup_failed(res)
                self.setups[res["pid"]] = res["setup_s"]
                on_result(res)
                idle.append(a)

    def start(self):
        """Build what can fail on the config before anything is written: the env (inline), the Ray connection."""
        if self.kind == "inline":
            self._inline([], None)
        elif self.kind == "ray":
            self._ray([], None)

    def run(self, tasks, on_result):
        if not tasks:
            return
        if self.ray:
            self._ray(tasks, on_result)
        elif self.workers == 1:
            self._inline(tasks, on_result)
        else:
            self._processes(tasks, on_result)

    def close(self):
        if self._state is not None and self._state.get("env") is not None:
            self._state["env"].close()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._actors is not None or self._ray_started:
            import ray

            for a in self._actors or []:
                ray.kill(a)
            if self._ray_started:
                ray.shutdown()


# ------------------------------------------------------------------------------------------------ checks
def check_vocab(path) -> tuple:
    """A vocabulary file [K, poses, 3] (float): its shape, or one clear error."""
    from simscale_env.errors import CorruptFileError, MissingFileError, SchemaError

    p = Path(path)
    if not p.is_file():
        raise MissingFileError(p, "vocabulary file not found (build one with `simscale vocab build`)")
    try:
        v = np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CorruptFileError(p, f"not a .npy vocabulary ({' '.join(str(exc).split())[:200]})") from None
    if not isinstance(v, np.ndarray) or v.ndim != 3 or v.shape[2] != 3 or min(v.shape) < 1 \
            or v.dtype.kind not in "fiu":
        raise SchemaError(p, f"vocabulary of shape {list(getattr(v, 'shape', []))} ({getattr(v, 'dtype', '?')}); "
                             f"expected a numeric array [K, poses, 3] (x, y, heading)")
    return tuple(v.shape)


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """One clear error when nothing answers at a Ray address (``host:port`` or ``ray://host:port``; ``auto`` is left
    to Ray)."""
    import socket

    a = address.strip()
    if a in ("auto", "local", ""):
        return
    hostport = a.split("://", 1)[1] if "://" in a else a
    host, sep, port = hostport.rpartition(":")
    if not sep:
        host, port = hostport, "10001" if a.startswith("ray://") else "6379"
    try:
        port_n = int(port)
    except ValueError:
        raise GenerationError(f"--ray-address {address!r}: expected HOST:PORT or ray://HOST:PORT") from None
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", port_n), timeout=timeout):
            pass
    except OSError as exc:
        raise GenerationError(f"--ray-address {address}: no Ray cluster answers there ({exc.strerror or exc}); "
                              f"start one with `ray start --head` and pass the address it prints") from None


# ------------------------------------------------------------------------------------------------ run directory
def _config_dict(cfg) -> dict:
    from evaluation.runner import config_dict

    return config_dict(cfg)


def _identity(cfg, tokens, shard_mb) -> dict:
    h = hashlib.sha256("\n".join(tokens).encode()).hexdigest()
    return {"format": RUN_FORMAT, "config": _config_dict(cfg), "base_tokens": len(tokens), "tokens_sha256": h,
            "shard_mb": shard_mb}


def _partial(out: Path, r: int) -> Path:
    return out / f"round-{r:02d}.partial.jsonl"


def _round_file(out: Path, r: int) -> Path:
    return out / f"round-{r:02d}.json"


def _check_out(out: Path, identity: dict, resume: bool) -> bool:
    """Whether `out` holds this run already (resume); errors for anything else. Writes nothing."""
    from .runs import check_run_folder, config_diff

    old = check_run_folder(out, RUN_FILE, "a generation run")
    if old is None:
        return False
    if old.get("format") != RUN_FORMAT:
        raise GenerationError(f"{out / RUN_FILE}: not a SimScale generation run; use another output folder")
    keys = ("base_tokens", "tokens_sha256", "shard_mb")
    diff = "; ".join(d for d in (config_diff(old.get("config", {}), identity["config"]),
                                 config_diff({k: old.get(k) for k in keys}, {k: identity[k] for k in keys})) if d)
    if diff and not any(out.glob("round-*.json")) and not any(
            p.stat().st_size for p in out.glob("round-*.partial.jsonl")):
        log.info("%s: replacing a run of another config that finished no task", out)
        for p in out.glob("round-*.partial.jsonl"):
            p.unlink()
        return False
    if diff:
        raise GenerationError(f"{out}: holds a generation run of another config ({diff}): use another output folder, "
                              f"or remove this one")
    if not resume:
        raise GenerationError(f"{out}: holds this run already; pass --resume (resume=True) to continue it, or use "
                              f"another output folder")
    return True


def _read_journal(path: Path, tasks: dict) -> dict:
    """(round's tasks: index -> token) -> index -> (offset, length, record without the sample) of the finished
    (not failed) tasks; a torn last line is dropped. Streams the journal a line at a time: only the small records are
    kept in memory, never the samples (a round of a real split journals gigabytes of JPEG bytes)."""
    done = {}
    if not path.exists():
        return done
    pos = n = 0
    torn = None
    with open(path, "rb") as fh:
        for line in fh:
            n += 1
            if not line.endswith(b"\n"):  # only the last line can lack its newline: a write the kill tore
                torn = (pos, len(line))
                break
            body = line[:-1]
            try:
                rec = json.loads(body)
                k = int(rec["index"])
            except (ValueError, KeyError, TypeError):
                raise GenerationError(f"{path}: line {n} is not a task record; remove the run folder to start "
                                      f"over") from None
            if tasks.get(k) != rec.get("token"):
                raise GenerationError(f"{path}: line {n} is task {k} ({rec.get('token')!r}), not a task of this "
                                      f"round")
            if rec.get("error") is None:
                rec.pop("sample", None)
                done[k] = (pos, len(body), rec)
            else:
                done.pop(k, None)
            pos += len(line)
    if torn is not None:
        log.warning("%s: dropping a torn last line (%d bytes)", path, torn[1])
        with open(path, "r+b") as fh:
            fh.truncate(torn[0])
    return done


def _journal_errors(jpath: Path) -> dict:
    """index -> the last error journalled for it (one streaming pass; the lines of failed tasks only are parsed)."""
    errors = {}
    if not jpath.exists():
        return errors
    with open(jpath, "rb") as fh:
        for line in fh:
            if b'"error":"' in line or b'"error": "' in line:
                rec = json.loads(line)
                if rec.get("error"):
                    errors[rec.get("index")] = rec["error"]
    return errors


def versions() -> dict:
    """The versions a generation run records (`training.runs.versions` with pyarrow and Ray)."""
    import pyarrow  # noqa: F401

    from .runs import versions as _v

    return _v("pyarrow", "ray")


# ------------------------------------------------------------------------------------------------ the entry point
def run_generation(cfg, out, *, workers: int = 1, ray: bool = False, ray_address: str | None = None,
                   resume: bool = False, shard_mb: float = 256, progress: bool = True, command: str | None = None,
                   warmup: bool = False, api: str = API, timing: dict | None = None) -> dict:
    """Run `cfg.rounds` generation rounds of `cfg` into the run folder `out` and return its manifest (module
    docstring). `command`: the command recorded in the manifest (default: this process's argv). `warmup`
    (benchmarks): each worker runs its first task once untimed. `api`: the module with the generate functions
    (tests). `timing`: a dict filled with per-task seconds, per-worker setup seconds and the executor (benchmarks)."""
    import importlib

    from tqdm import tqdm

    from simscale_env.data.atomic import atomic_write_text, kill_point

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise GenerationError(f"workers must be an integer >= 1, got {workers!r}")
    if not (isinstance(shard_mb, (int, float)) and shard_mb > 0):
        raise GenerationError(f"shard_mb must be a positive number, got {shard_mb!r}")
    if ray_address and not ray:
        raise GenerationError("ray_address is given without ray=True")
    if int(cfg.rounds) < 1:
        raise GenerationError(f"rounds must be >= 1, got {cfg.rounds!r}")
    # every check before anything is written
    if ray:
        from simscale_env.parallel import import_ray

        import_ray(GenerationError)
        if ray_address:
            check_ray_address(ray_address)
    mod = importlib.import_module(api)
    if getattr(cfg, "vocab", None):
        check_vocab(cfg.vocab)
        if hasattr(mod, "load_vocab"):
            mod.load_vocab(cfg.vocab)
    tokens = [str(t) for t in mod.base_tokens(cfg)]
    if not tokens:
        raise GenerationError(f"split {cfg.split!r} has no base tokens")
    out = Path(out)
    identity = _identity(cfg, tokens, shard_mb)
    resuming = _check_out(out, identity, resume)
    reasons = tuple(getattr(mod, "REJECTION_REASONS", ()))
    if command is None:
        command = shlex.join(sys.argv)
    timing = timing if timing is not None else {}
    timing.setdefault("tasks", [])

    executor = _Executor(api, cfg, workers, ray, ray_address, warmup)
    timing["executor"] = executor.kind
    try:
        executor.start()
    except BaseException:
        executor.close()
        raise
    out.mkdir(parents=True, exist_ok=True)
    if not resuming:
        atomic_write_text(out / RUN_FILE, json.dumps({**identity, "command": command}, indent=1, sort_keys=True))
    log.info("%s: %d base tokens, %d rounds, %s x %d%s", cfg.split, len(tokens), cfg.rounds, executor.kind, workers,
             " (resuming)" if resuming else "")

    rounds, valid_idx = [], list(range(len(tokens)))
    try:
        for r in range(1, int(cfg.rounds) + 1):
            rf = _round_file(out, r)
            if rf.exists():  # a finished round: its outcomes are kept
                rec = json.loads(rf.read_text())
                missing = [s["file"] for s in rec["shards"] if not (out / s["file"]).is_file()]
                if missing:
                    raise GenerationError(f"{out}: round {r} is finished but its shards {', '.join(missing[:3])} are "
                                          f"missing; remove the run folder to start over")
                rounds.append(rec)
                valid_idx = [o["index"] for o in rec["outcomes"] if o["status"] == "valid"]
                continue
            round_tasks = {k: tokens[k] for k in valid_idx}
            jpath = _partial(out, r)
            done = _read_journal(jpath, round_tasks)
            todo = [(r, k, round_tasks[k]) for k in valid_idx if k not in done]
            bar = tqdm(total=len(round_tasks), initial=len(done), desc=f"round {r}", unit="sample",
                       disable=not progress, file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
            nvalid = [sum(1 for v in done.values() if v[2]["status"] == "valid")]
            fh = open(jpath, "ab")

            def on_result(res, fh=fh, done=done, bar=bar, nvalid=nvalid):
                if res.get("error") is not None:
                    status, sample = "failed", None
                    log.warning("task %s round %d failed: %s", res["token"], res["round"], res["error"])
                elif res.get("sample") is not None:
                    status, sample = "valid", res["sample"]
                else:
                    status, sample = "rejected", None
                rec = {"index": res["index"], "token": res["token"], "round": res["round"], "status": status,
                       "reason": res.get("reason") if status == "rejected" else None, "error": res.get("error"),
                       "attempts": res.get("attempts", 1), "sample": None if sample is None else _enc(dict(sample))}
                line = _dumps(rec).encode()
                pos = fh.tell()
                fh.write(line + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
                if status != "failed":
                    rec.pop("sample")
                    done[res["index"]] = (pos, len(line), rec)
                    nvalid[0] += status == "valid"
                timing["tasks"].append({k: res.get(k) for k in ("round", "index", "seconds", "pid", "warmup_s",
                                                                  "timing")} | {"status": status})
                bar.update(1)
                bar.set_postfix(valid=nvalid[0], refresh=False)
                kill_point("task")

            try:
                executor.run(todo, on_result)
            finally:
                fh.close()
                bar.close()
            rec = _finish_round(out, r, round_tasks, valid_idx, jpath, _read_journal(jpath, round_tasks), shard_mb,
                                reasons)
            rounds.append(rec)
            valid_idx = [o["index"] for o in rec["outcomes"] if o["status"] == "valid"]
            manifest = _manifest(cfg, command, tokens, rounds, reasons, complete=r == int(cfg.rounds))
            atomic_write_text(out / MANIFEST_FILE, json.dumps(manifest, indent=1))
            if jpath.exists():
                jpath.unlink()
            log.info("round %d: %d of %d valid (%.1f %%)", r, rec["valid"], rec["tried"], 100 * rec["valid_ratio"])
            if not valid_idx:
                break
    finally:
        timing["setup_s"] = list(executor.setups.values())
        executor.close()
    manifest = _manifest(cfg, command, tokens, rounds, reasons, complete=True)
    atomic_write_text(out / MANIFEST_FILE, json.dumps(manifest, indent=1))
    return manifest


def _finish_round(out, r, round_tasks, order, jpath, done, shard_mb, reasons) -> dict:
    """Shards of a round's samples (from the journal, in token order), then round-RR.json; its record."""
    from simscale_env.data.atomic import atomic_write_text

    outcomes, shards, batch, size = [], [], [], 0
    limit = shard_mb * _MB
    errors = _journal_errors(jpath) if any(k not in done for k in order) else {}

    def flush():
        nonlocal batch, size
        if batch:
            shards.append(write_shard(out / f"samples-r{r:02d}-{len(shards):05d}.parquet", batch))
        batch, size = [], 0

    with open(jpath, "rb") if jpath.exists() else open(os.devnull, "rb") as fh:
        for k in order:
            if k not in done:  # failed twice (recorded) or never finished
                outcomes.append({"index": k, "token": round_tasks[k], "status": "failed",
                                 "error": errors.get(k) or "not run"})
                continue
            pos, length, rec = done[k]
            o = {"index": k, "token": rec["token"], "status": rec["status"]}
            if rec["status"] == "rejected":
                o["reason"] = rec["reason"]
            outcomes.append(o)
            if rec["status"] == "valid":
                fh.seek(pos)
                sample = _dec(json.loads(fh.read(length))["sample"])
                batch.append(sample)
                size += _nbytes(sample)
                if size >= limit:
                    flush()
    flush()
    tried = len(outcomes)
    valid = sum(o["status"] == "valid" for o in outcomes)
    rejected = {x: 0 for x in reasons}
    for o in outcomes:
        if o["status"] == "rejected":
            rejected[o["reason"]] = rejected.get(o["reason"], 0) + 1
    rec = {"round": r, "tried": tried, "valid": valid, "valid_ratio": valid / tried if tried else 0.0,
           "rejected": rejected, "failed": [{"token": o["token"], "error": o["error"]} for o in outcomes
                                             if o["status"] == "failed"],
           "shards": shards, "outcomes": outcomes}
    atomic_write_text(_round_file(out, r), json.dumps(rec, indent=1))
    return rec


def _manifest(cfg, command, tokens, rounds, reasons, complete) -> dict:
    per_round = [{k: v for k, v in rec.items() if k != "outcomes"} for rec in rounds]
    shards = [{"round": rec["round"], **s} for rec in rounds for s in rec["shards"]]
    failures = [{"round": rec["round"], **f} for rec in rounds for f in rec["failed"]]
    return {"format": MANIFEST_FORMAT, "command": command, "seed": cfg.seed, "split": cfg.split,
            "expert": cfg.expert, "config": _config_dict(cfg), "versions": versions(),
            "rejection_reasons": list(reasons), "base_tokens": len(tokens), "rounds_requested": int(cfg.rounds),
            "rounds": per_round, "samples": sum(rec["valid"] for rec in rounds), "shards": shards,
            "failures": failures, "complete": complete}
