"""`simscale train-bc`: online imitation of the env's pseudo-experts with DAgger (Ross, Gordon & Bagnell 2011).

    from training.bc import BCConfig, train_bc
    result = train_bc(BCConfig(split="mini-navtrain-frames", rounds=4, episodes=48, epochs=30), "runs/bc")
    policy = agents.load_policy("runs/bc/bc.pt")           # after agents.bc_policy.register()

Round r (0-based) runs `episodes` episodes of the collection split with the DAgger mixture: at every decision step
the expert's plan (`info["pseudo_expert"][expert]`) is executed with probability beta_r, else the learner's
(the network after round r - 1); the stored label is always the expert's plan of the state the mixture visited
(navsim-agents-and-planners.md §7: imitation's DAgger saves the expert action, the choice is made per step).
The learner is then trained for `epochs` epochs on everything collected so far (rounds 0..r, the aggregate D_r).
beta schedules (`BETA_SCHEDULES`): "linear" (imitation's LinearBetaSchedule: beta_r = clip((R - r) / R, 0, 1),
R = `beta_rounds`, default rounds - 1, so the last round is the learner alone), "exponential" (the paper's
beta_i = p^(i-1): beta_r = `beta_decay` ** r) and "first_round" (the paper's 1[i = 1]: the expert in round 0 only).
Round 0 is always the expert alone (beta_0 = 1), i.e. behaviour cloning on the expert's own states.

Held out: the default collection split, mini-navtrain-frames (every 2 Hz frame of the 8 training logs), shares no
log with mini-navhard or mini-navtest (their 4 test logs); `perturbation="navhard"` draws the training starts from
navhard's wider perturbation ranges (the same distribution of starts, on other logs).

The documented budget is BCConfig's defaults: 4 rounds x 48 episodes (about 4,100 samples) x 30 epochs per round,
`simscale train-bc --rounds 4 --episodes 48 --epochs 30 --seed S --workers 2 --out DIR`: 3.7-6.7 min wall on the
2-core machine while other jobs loaded it (load average ~5). mini-navhard closed loop (`simscale evaluate --policy
DIR/bc.pt --split mini-navhard --mode closed_loop --workers 2`, eval seeds 0, 1, 2 averaged) for training seeds
0, 1, 2: 0.841, 0.829, 0.844, mean 0.838 (95 % t interval over the training seeds [0.820, 0.856]), no collision or
off-road episode; standing still 0.595 and PDM-Closed 0.868 on the same eval seeds. The one token it loses, dee6...,
PDM-Closed loses too (TLC): no privileged observation carries the traffic lights.

Run directory ``out``:
- ``config.json``: the run's identity (the BCConfig without `workers`, which changes nothing); a rerun into the
  folder must have the same config and `resume=True` (`--resume`);
- ``data/round-RR.npz``: the samples collected in round r (the observation arrays of the kind, `label` the expert
  plans [n, 8, 3], `expert_action` whether the mixture executed the expert's plan, `episode`, `step`); the aggregate
  D_r is rounds 0..r;
- ``checkpoints/round-RR.pt`` and ``bc.pt`` (the latest round; after the last one the final policy):
  "simscale-bc/1" checkpoints (`agents.bc_policy`) with the optimizer, the config and the metrics so far, written
  atomically after every round;
- ``metrics.csv``: one row per round (beta, samples, the share of expert actions, the mixture's closed-loop EPDMS on
  the collection split, the loss on the round's new samples before training (the on-policy error of the previous
  learner) and after, the seconds); ``tb/``: the same for TensorBoard, plus the loss per epoch.

Resume: a killed run continues after its last finished round (the round's checkpoint is what finishes it; the data
of a round whose training did not finish is reused). Every round is a function of (config, round, the network and
optimizer at its start): episode e of round r resets with a seed from (seed, r, e) and mixes with its own generator,
the batches of round r are drawn from (seed, r). So a resumed run ends with bit-identical weights to an uninterrupted
one (tested), and the same seed gives the same weights (with the same number of torch threads). Collection with
`workers` > 1 runs episodes in spawned worker processes, each with its own env; episodes are sorted by index, and the
learner runs single-threaded in collection everywhere, so the data do not depend on the number of workers.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from simscale_env.errors import OutputFolderError, SimScaleError

log = logging.getLogger(__name__)

RUN_FORMAT = "simscale-bc-run/1"
CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "bc.pt"
METRICS_FILE = "metrics.csv"
EXPERTS = ("pdm_closed", "recovery")  # info["pseudo_expert"] keys
PERTURBATIONS = ("navtrain", "navtest", "navhard")  # simscale_env.sim.PERTURBATION_DEFAULTS
METRIC_COLUMNS = ("round", "beta", "episodes", "samples_new", "samples_total", "expert_action_fraction",
                  "mixture_epdms", "mixture_collision_rate", "mixture_offroad_rate", "onpolicy_loss", "train_loss",
                  "collect_s", "train_s")


class BCError(SimScaleError, ValueError):
    """A BC config or run folder that cannot work."""


# ------------------------------------------------------------------------------------------------ beta schedules
def _linear(r: int, cfg: "BCConfig") -> float:
    # imitation's LinearBetaSchedule(R): beta = min(1, max(0, (R - round) / R))
    big_r = cfg.beta_rounds if cfg.beta_rounds is not None else max(1, cfg.rounds - 1)
    return float(min(1.0, max(0.0, (big_r - r) / big_r)))


def _exponential(r: int, cfg: "BCConfig") -> float:
    return float(cfg.beta_decay ** r)  # Ross et al. 2011: beta_i = p^(i-1), i = r + 1


def _first_round(r: int, cfg: "BCConfig") -> float:
    return 1.0 if r == 0 else 0.0  # Ross et al. 2011: beta_i = 1[i = 1]


BETA_SCHEDULES: dict[str, Callable[[int, "BCConfig"], float]] = {
    "linear": _linear, "exponential": _exponential, "first_round": _first_round}


# ------------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class BCConfig:
    """One `train_bc` run (module docstring)."""

    split: str = "mini-navtrain-frames"  # collection split (a name or a scene_filter YAML); no mini-navhard log
    expert: str = "pdm_closed"  # the pseudo-expert imitated: info["pseudo_expert"][expert]
    observation: str = "privileged"  # agents.bc_policy.OBSERVATIONS: privileged, privileged_bev, cameras
    rounds: int = 4  # DAgger rounds
    episodes: int = 48  # episodes collected per round
    epochs: int = 30  # epochs over the aggregate per round
    beta_schedule: str = "linear"  # BETA_SCHEDULES
    beta_rounds: int | None = None  # linear: rounds until beta = 0 (default rounds - 1)
    beta_decay: float = 0.5  # exponential: beta_r = beta_decay ** r
    lr: float = 1e-3
    batch_size: int = 256
    weight_decay: float = 0.0
    hidden: int = 256  # the network's trunk width
    seed: int = 0
    perturbation: str | None = "navhard"  # the base split whose perturbation ranges the starts use; None: the split's
    episode_steps: int | None = None  # decision steps per episode (default: to the scenario's end)
    workers: int = 1  # collection worker processes (not part of the run's identity: the data do not depend on it)

    def __post_init__(self):
        from agents.bc_policy import OBSERVATIONS

        if self.expert not in EXPERTS:
            raise BCError(f"expert must be one of {EXPERTS}, got {self.expert!r}")
        if self.observation not in OBSERVATIONS:
            raise BCError(f"observation must be one of {tuple(OBSERVATIONS)}, got {self.observation!r}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise BCError(f"beta_schedule must be one of {tuple(BETA_SCHEDULES)}, got {self.beta_schedule!r}")
        if self.perturbation is not None and self.perturbation not in PERTURBATIONS:
            raise BCError(f"perturbation must be None or one of {PERTURBATIONS}, got {self.perturbation!r}")
        for name, lo in (("rounds", 1), ("episodes", 1), ("epochs", 0), ("batch_size", 1), ("hidden", 1),
                         ("seed", 0), ("workers", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise BCError(f"{name} must be an integer >= {lo}, got {v!r}")
        for name in ("beta_rounds", "episode_steps"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
                raise BCError(f"{name} must be None or an integer >= 1, got {v!r}")
        for name, lo, hi in (("lr", 0.0, np.inf), ("weight_decay", -1e-300, np.inf), ("beta_decay", -1e-300, 1.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not (lo < v <= hi) \
                    or not np.isfinite(v):
                raise BCError(f"{name} must be a finite number in ({max(lo, 0)}, {hi}], got {v!r}")
        if not isinstance(self.split, (str, Path)) or not str(self.split):
            raise BCError(f"split must be a split name or a scene_filter YAML path, got {self.split!r}")

    def identity(self) -> dict:
        """The run's identity (config.json): every field but `workers`."""
        d = json.loads(json.dumps(dataclasses.asdict(self), default=str))
        d.pop("workers")
        return d


def beta(cfg: BCConfig, round_: int) -> float:
    """beta of round `round_` (0-based): the probability that a step executes the expert's plan."""
    return BETA_SCHEDULES[cfg.beta_schedule](int(round_), cfg)


def _seed(*path) -> int:
    """A seed derived from integers (numpy's SeedSequence: independent streams per path)."""
    return int(np.random.SeedSequence([int(p) for p in path]).generate_state(1, np.uint32)[0])


# the third element of the seed path of training batches / network init
_TRAIN_STREAM, _INIT_STREAM = 1, 2
LR_FLOOR = 0.05  # a round's learning rate ends at this fraction of BCConfig.lr (cosine; `lr_at`)
GRAD_CLIP = 1.0  # the gradient's global norm is clipped to this


# ------------------------------------------------------------------------------------------------ the env
def env_spec(cfg: BCConfig) -> tuple[str, dict]:
    """(env id, gym.make kwargs) of the collection env: the split's, the observation kind's keys and kwargs, the
    pseudo-experts on, plan scoring off (the reward's plan terms are not used), `perturbation`'s ranges."""
    from agents.bc_policy import observation_kind
    from simscale_env.envs import split_env_spec

    kind = observation_kind(cfg.observation)
    env_id, kw = split_env_spec(cfg.split)
    if cfg.perturbation is not None:
        from simscale_env.sim import PERTURBATION_DEFAULTS

        kw["perturbation"] = PERTURBATION_DEFAULTS[cfg.perturbation]
    kw.update(kind.env_kwargs)
    kw.update(observation_keys=kind.observation_keys, pseudo_experts=True, plan_scoring=None)
    if kind.cameras is not None:
        kw["cameras"] = kind.cameras
    if cfg.episode_steps is not None:
        kw["episode_steps"] = int(cfg.episode_steps)
    return env_id, kw


def make_env(cfg: BCConfig):
    import gymnasium as gym

    import simscale_env  # noqa: F401  (registration)

    env_id, kw = env_spec(cfg)
    return gym.make(env_id, disable_env_checker=True, **kw)


# ------------------------------------------------------------------------------------------------ collection
def collect_episode(env, cfg: BCConfig, policy, round_: int, episode: int, beta_: float) -> dict:
    """One episode of the DAgger mixture: at every step the expert's plan with probability `beta_`, else
    `policy.predict` (the learner; never called when beta_ = 1). Returns {"arrays": {name: [n, ...]} (the kind's
    recorded observation, `label` the expert's plans, `expert_action`, `step`), "stats": {...}}. A pure function of
    (cfg, round_, episode, beta_, the policy's network)."""
    from agents.bc_policy import observation_kind

    kind = observation_kind(cfg.observation)
    reset_seed = _seed(cfg.seed, round_, episode, 0)
    rng = np.random.default_rng(_seed(cfg.seed, round_, episode, 1))
    obs, info = env.reset(seed=reset_seed)
    rows: dict[str, list] = {}
    n_expert = 0
    steps = 0
    while True:
        rec = kind.record(obs, kind)
        label = np.asarray(info["pseudo_expert"][cfg.expert], np.float32)
        use_expert = bool(rng.random() < beta_)
        if use_expert:
            action = label
        else:
            action = policy.predict({k: v[None] for k, v in rec.items()})[0]
        for k, v in rec.items():
            rows.setdefault(k, []).append(v)
        rows.setdefault("label", []).append(label)
        rows.setdefault("expert_action", []).append(use_expert)
        rows.setdefault("step", []).append(steps)
        n_expert += use_expert
        steps += 1
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    arrays = {k: np.stack(v) for k, v in rows.items()}
    arrays["expert_action"] = arrays["expert_action"].astype(bool)
    arrays["step"] = arrays["step"].astype(np.int32)
    ep = info["epdms_episode"]
    stats = {"round": int(round_), "episode": int(episode), "token": str(info["scenario_token"]), "steps": steps,
             "expert_actions": int(n_expert), "epdms": float(ep["epdms"]),
             "collision": float(ep.get("at_fault_collision", 0.0)), "off_road": float(ep.get("off_road", 0.0)),
             "terminated": bool(terminated)}
    return {"arrays": arrays, "stats": stats}


def _learner(cfg: BCConfig, network):
    from agents.bc_policy import BCPolicy

    return BCPolicy(network, cfg.observation)


class _InferenceThreads:
    """torch single-threaded while the learner drives (collection data independent of the worker count)."""

    def __enter__(self):
        import torch

        self.prev = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.prev)


_WORKER: dict = {}


def _worker_init(cfg_json: str, threads: int) -> None:
    from simscale_env.parallel import set_worker_threads

    set_worker_threads(threads)
    import torch

    torch.set_num_threads(1)
    cfg = BCConfig(**json.loads(cfg_json))
    _WORKER.clear()
    _WORKER.update(cfg=cfg, env=make_env(cfg), network=_new_network(cfg), weights_round=None)


def _worker_episode(round_: int, episode: int, beta_: float, weights: bytes) -> dict:
    import torch

    if _WORKER["weights_round"] != round_:
        _WORKER["network"].load_state_dict(torch.load(io.BytesIO(weights), weights_only=True))
        _WORKER["weights_round"] = round_
    return collect_episode(_WORKER["env"], _WORKER["cfg"], _learner(_WORKER["cfg"], _WORKER["network"]), round_,
                           episode, beta_)


class _Collector:
    """Runs a round's episodes in this process (workers=1) or in spawned worker processes (built once per run)."""

    def __init__(self, cfg: BCConfig):
        self.cfg = cfg
        self.env = None
        self.pool = None

    def run(self, round_: int, beta_: float, network, progress: bool) -> list[dict]:
        from tqdm import tqdm

        cfg = self.cfg
        bar = tqdm(total=cfg.episodes, desc=f"round {round_} collect (beta {beta_:.2f})", unit="episode",
                   disable=not progress, leave=False)
        try:
            if cfg.workers == 1:
                if self.env is None:
                    self.env = make_env(cfg)
                policy = _learner(cfg, network)
                out = []
                with _InferenceThreads():
                    for e in range(cfg.episodes):
                        out.append(collect_episode(self.env, cfg, policy, round_, e, beta_))
                        bar.update()
                return out
            return self._run_pool(round_, beta_, network, bar)
        finally:
            bar.close()

    def _run_pool(self, round_, beta_, network, bar) -> list[dict]:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        import torch

        from simscale_env.parallel import threads_per_worker

        cfg = self.cfg
        if self.pool is None:
            self.pool = ProcessPoolExecutor(max_workers=cfg.workers, mp_context=mp.get_context("spawn"),
                                            initializer=_worker_init,
                                            initargs=(json.dumps(dataclasses.asdict(cfg)),
                                                      threads_per_worker(cfg.workers)))
        buf = io.BytesIO()
        torch.save(network.state_dict(), buf)
        weights = buf.getvalue()
        futures = {self.pool.submit(_worker_episode, round_, e, beta_, weights): e for e in range(cfg.episodes)}
        out = {}
        for f in as_completed(futures):
            out[futures[f]] = f.result()
            bar.update()
        return [out[e] for e in range(cfg.episodes)]

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None
        if self.env is not None:
            self.env.close()
            self.env = None


def merge_episodes(episodes: list[dict]) -> dict:
    """The samples of a round's episodes (in episode order) as one dict of arrays, with an `episode` column."""
    keys = episodes[0]["arrays"].keys()
    out = {k: np.concatenate([e["arrays"][k] for e in episodes]) for k in keys}
    out["episode"] = np.concatenate([np.full(len(e["arrays"]["label"]), e["stats"]["episode"], np.int32)
                                     for e in episodes])
    return out


# ------------------------------------------------------------------------------------------------ training
def _new_network(cfg: BCConfig):
    import torch

    from agents.bc_policy import make_network

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed(cfg.seed, 0, _INIT_STREAM))
        return make_network(cfg.observation, hidden=cfg.hidden)


def _optimizer(cfg: BCConfig, network):
    import torch

    return torch.optim.Adam(network.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def features_and_targets(cfg: BCConfig, data: dict, chunk: int = 1024) -> tuple[dict, np.ndarray]:
    """The network inputs and the targets (labels in the kind's target space) of recorded samples, in chunks."""
    from agents.bc_policy import observation_kind

    kind = observation_kind(cfg.observation)
    n = len(data["label"])
    feats, targets = {}, []
    for i in range(0, n, chunk):
        sl = {k: v[i:i + chunk] for k, v in data.items()}
        for k, v in kind.features(sl).items():
            feats.setdefault(k, []).append(v)
        targets.append(kind.targets(sl, sl["label"]))
    return {k: np.concatenate(v) for k, v in feats.items()}, np.concatenate(targets)


def _loss(out, target):
    import torch

    return torch.nn.functional.smooth_l1_loss(out, target)


def evaluate_loss(network, feats: dict, targets: np.ndarray, batch: int = 1024) -> float:
    """The mean loss of `network` on samples (no gradient)."""
    import torch

    from agents.bc_policy import to_tensors

    n = len(targets)
    if n == 0:
        return float("nan")
    tot = 0.0
    network.eval()
    with torch.no_grad():
        for i in range(0, n, batch):
            idx = slice(i, i + batch)
            out = network(to_tensors(feats, idx))
            tot += float(_loss(out, torch.from_numpy(targets[idx]))) * len(targets[idx])
    return tot / n


def lr_at(cfg: BCConfig, step: int, total: int) -> float:
    """The learning rate of optimisation step `step` of a round of `total` steps: cosine from `cfg.lr` down to
    `LR_FLOOR` x `cfg.lr` (every round ends converged rather than on a noisy step: without it, one seed's last round
    ended on a loss spike, 0.32 -> 0.56, and its policy collided in 3 of 9 mini-navhard episodes)."""
    return float(cfg.lr * (LR_FLOOR + (1.0 - LR_FLOOR) * 0.5 * (1.0 + np.cos(np.pi * step / total))))


def train_round(cfg: BCConfig, network, optimizer, feats: dict, targets: np.ndarray, round_: int,
                on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """`cfg.epochs` epochs of minibatch Adam on (feats, targets), batches drawn from (seed, round_), the learning
    rate by `lr_at`, gradients clipped to `GRAD_CLIP`. The mean loss of every epoch."""
    import torch

    from agents.bc_policy import to_tensors

    g = torch.Generator().manual_seed(_seed(cfg.seed, round_, _TRAIN_STREAM))
    x = to_tensors(feats)
    y = torch.from_numpy(np.ascontiguousarray(targets))
    n = len(y)
    per_epoch = -(-n // cfg.batch_size)
    total = max(1, cfg.epochs * per_epoch)
    losses = []
    network.train()
    step = 0
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=g)
        tot = 0.0
        for i in range(0, n, cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            for group in optimizer.param_groups:
                group["lr"] = lr_at(cfg, step, total)
            loss = _loss(network({k: v[idx] for k, v in x.items()}), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), GRAD_CLIP)
            optimizer.step()
            step += 1
            tot += float(loss.detach()) * len(idx)
        losses.append(tot / max(n, 1))
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    network.eval()
    return losses


# ------------------------------------------------------------------------------------------------ run folder
def _round_data(out: Path, r: int) -> Path:
    return out / "data" / f"round-{r:02d}.npz"


def _round_ckpt(out: Path, r: int) -> Path:
    return out / "checkpoints" / f"round-{r:02d}.pt"


def _check_out(out: Path, cfg: BCConfig, resume: bool) -> bool:
    """Whether `out` holds this run already (to resume); an error for anything else. Writes nothing."""
    from .runs import check_run_folder, config_diff

    old = check_run_folder(out, CONFIG_FILE, "a train-bc run")
    if old is None:
        return False
    if old.get("format") != RUN_FORMAT:
        raise BCError(f"{out / CONFIG_FILE}: not a train-bc run (format {RUN_FORMAT!r} expected); use another output "
                      f"folder")
    diff = config_diff(old.get("config", {}), cfg.identity())
    if diff:
        raise BCError(f"{out}: holds a train-bc run of another config ({diff}): use another output folder, or remove "
                      f"this one")
    if not resume:
        raise BCError(f"{out}: holds this run already; pass --resume (resume=True) to continue it, or use another "
                      f"output folder")
    return True


def _save_npz(path: Path, arrays: dict) -> None:
    from simscale_env.data.atomic import atomic_write

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with atomic_write(path, "wb") as fh:
        fh.write(buf.getvalue())


def _load_round(path: Path) -> tuple[dict, list]:
    """(samples, episode stats) of a round's npz."""
    from simscale_env.errors import CorruptFileError

    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        stats = json.loads(str(data.pop("stats_json")))
    except (OSError, ValueError, KeyError) as exc:
        raise CorruptFileError(path, f"not a readable round of samples ({type(exc).__name__}: {exc}); remove it to "
                                     f"collect the round again") from None
    return data, stats


def _write_metrics(out: Path, rows: list[dict]) -> None:
    from simscale_env.data.atomic import atomic_write

    with atomic_write(out / METRICS_FILE, "w") as fh:
        w = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS, lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow({k: row.get(k) for k in METRIC_COLUMNS})


def _versions() -> dict:
    from .runs import versions

    return versions("torch")


def _remove_temporaries(out: Path) -> None:
    """The hidden temporaries a killed run left (`simscale_env.data.atomic`'s, and the copy behind bc.pt)."""
    from simscale_env.data.atomic import is_temporary

    for folder in (out, out / "data", out / "checkpoints"):
        if folder.is_dir():
            for f in folder.iterdir():
                if f.is_file() and f.name.startswith(".") and (is_temporary(f.name) or f.name.endswith(".copy")):
                    f.unlink()


def _finished_rounds(out: Path, cfg: BCConfig) -> int:
    """How many rounds of the run in `out` are finished (their checkpoint written), counted from round 0."""
    r = 0
    while r < cfg.rounds and _round_ckpt(out, r).is_file():
        r += 1
    return r


def _publish(out: Path, r: int) -> None:
    """bc.pt := round r's checkpoint (copied to a hidden temporary, renamed into place)."""
    import shutil

    tmp = out / f".{CHECKPOINT_FILE}.copy"
    shutil.copyfile(_round_ckpt(out, r), tmp)
    tmp.replace(out / CHECKPOINT_FILE)


class _TensorBoard:
    """TensorBoard scalars, one step unit: the epoch counter (round r's epochs are r * E + 1 ... (r + 1) * E, its
    round scalars at (r + 1) * E); a resumed run purges what a killed one logged past its last finished round."""

    def __init__(self, out: Path, cfg: BCConfig, start_round: int, enabled: bool):
        self.w = None
        self.epochs = max(cfg.epochs, 1)
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: metrics.csv only
                log.warning("tensorboard is not installed: writing metrics.csv only")
                return
            self.w = SummaryWriter(str(out / "tb"), purge_step=start_round * self.epochs + 1 if start_round else None)

    def epoch(self, r: int, e: int, loss: float) -> None:
        if self.w is not None:
            self.w.add_scalar("train/epoch_loss", loss, r * self.epochs + e + 1)

    def round(self, r: int, row: dict) -> None:
        if self.w is None:
            return
        for k in METRIC_COLUMNS[1:]:
            v = row.get(k)
            if v is not None and np.isfinite(v):
                self.w.add_scalar(f"round/{k}", float(v), (r + 1) * self.epochs)
        self.w.flush()

    def close(self) -> None:
        if self.w is not None:
            self.w.close()


# ------------------------------------------------------------------------------------------------ the loop
def train_bc(cfg: BCConfig, out_dir, progress: bool = True, *, resume: bool = False, command: str | None = None,
             tensorboard: bool = True) -> dict:
    """DAgger rounds of collection and training into `out_dir` (module docstring). Returns {"checkpoint": the final
    policy's path (out/bc.pt), "rounds", "samples", "metrics" (one dict per round), "resumed_rounds", "seconds"}."""
    from agents.bc_policy import checkpoint_dict, read_checkpoint, save_checkpoint
    from simscale_env.data.atomic import atomic_write_text

    from simscale_env.envs import split_tokens

    t_start = time.perf_counter()
    out = Path(out_dir)
    resuming = _check_out(out, cfg, resume)
    split_tokens(cfg.split)  # an unknown split is one error before anything is written
    out.mkdir(parents=True, exist_ok=True)
    if not resuming:
        atomic_write_text(out / CONFIG_FILE, json.dumps(
            {"format": RUN_FORMAT, "config": cfg.identity(), "command": command or shlex.join(sys.argv),
             "versions": _versions()}, indent=2, sort_keys=True))
    if resuming:
        _remove_temporaries(out)
    network = _new_network(cfg)
    optimizer = _optimizer(cfg, network)
    start = _finished_rounds(out, cfg) if resuming else 0
    metrics: list[dict] = []
    if start:
        ckpt = read_checkpoint(_round_ckpt(out, start - 1))
        network.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        metrics = [dict(m) for m in ckpt.get("metrics", [])][:start]
        _publish(out, start - 1)  # a kill between a round's checkpoint and bc.pt left bc.pt a round behind
        _write_metrics(out, metrics)
        log.info("%s: resuming after round %d of %d", out, start - 1, cfg.rounds)
    data_rounds = [_load_round(_round_data(out, r))[0] for r in range(start)]
    # features of the aggregate so far (recomputed from the stored observations: a pure function of them)
    feats_rounds = [features_and_targets(cfg, d) for d in data_rounds]
    tb = _TensorBoard(out, cfg, start, tensorboard)
    collector = _Collector(cfg)
    network_kwargs = {"hidden": cfg.hidden}
    try:
        for r in range(start, cfg.rounds):
            b = beta(cfg, r)
            t0 = time.perf_counter()
            dpath = _round_data(out, r)
            if dpath.is_file():  # collected before a kill, not yet trained on: the same data (a pure function)
                data, stats = _load_round(dpath)
            else:
                episodes = collector.run(r, b, network, progress)
                data = merge_episodes(episodes)
                stats = [e["stats"] for e in episodes]
                _save_npz(dpath, {**data, "stats_json": np.array(json.dumps(stats))})
            collect_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            data_rounds.append(data)
            feats_rounds.append(features_and_targets(cfg, data))
            new_feats, new_targets = feats_rounds[-1]
            onpolicy = evaluate_loss(network, new_feats, new_targets) if r > 0 else float("nan")
            agg_feats = {k: np.concatenate([f[k] for f, _ in feats_rounds]) for k in new_feats}
            agg_targets = np.concatenate([t for _, t in feats_rounds])
            losses = train_round(cfg, network, optimizer, agg_feats, agg_targets, r,
                                 on_epoch=lambda e, loss, _r=r: tb.epoch(_r, e, loss))
            train_s = time.perf_counter() - t1
            row = {"round": r, "beta": b, "episodes": len(stats), "samples_new": int(len(new_targets)),
                   "samples_total": int(len(agg_targets)),
                   "expert_action_fraction": float(np.mean(data["expert_action"])),
                   "mixture_epdms": float(np.mean([s["epdms"] for s in stats])),
                   "mixture_collision_rate": float(np.mean([s["collision"] for s in stats])),
                   "mixture_offroad_rate": float(np.mean([s["off_road"] for s in stats])),
                   "onpolicy_loss": onpolicy, "train_loss": losses[-1] if losses else float("nan"),
                   "collect_s": round(collect_s, 3), "train_s": round(train_s, 3)}
            metrics.append(row)
            ckpt = checkpoint_dict(network, cfg.observation, network_kwargs, config=cfg.identity(), round=r,
                                   rounds_done=r + 1, optimizer=optimizer.state_dict(), metrics=metrics,
                                   versions=_versions())
            save_checkpoint(_round_ckpt(out, r), ckpt)  # this finishes the round
            _publish(out, r)
            _write_metrics(out, metrics)
            tb.round(r, row)
            log.info("round %d: beta %.2f, %d new samples (%d in all), mixture EPDMS %.3f, on-policy loss %.4f, "
                     "train loss %.4f, %.1f s collect, %.1f s train", r, b, row["samples_new"], row["samples_total"],
                     row["mixture_epdms"], onpolicy, row["train_loss"], collect_s, train_s)
    finally:
        collector.close()
        tb.close()
    return {"checkpoint": out / CHECKPOINT_FILE, "rounds": cfg.rounds,
            "samples": int(sum(len(d["label"]) for d in data_rounds)), "metrics": metrics, "resumed_rounds": start,
            "seconds": time.perf_counter() - t_start}


# ------------------------------------------------------------------------------------------------ CLI
def add_arguments(parser) -> None:
    """The options of `simscale train-bc` (`simscale_env.cli` runs `run_from_args` and prints its summary)."""
    from agents.bc_policy import OBSERVATIONS

    d = BCConfig()

    from .runs import int_at_least as at_least

    parser.add_argument("--split", default=d.split, metavar="NAME|FILE.yaml",
                        help=f"collection split (default {d.split}: the training logs, none of mini-navhard's)")
    parser.add_argument("--rounds", type=at_least(1), default=d.rounds, help=f"DAgger rounds (default {d.rounds})")
    parser.add_argument("--episodes", type=at_least(1), default=d.episodes,
                        help=f"episodes collected per round (default {d.episodes})")
    parser.add_argument("--epochs", type=at_least(0), default=d.epochs,
                        help=f"epochs over the aggregated data per round (default {d.epochs})")
    parser.add_argument("--seed", type=at_least(0), default=d.seed, help="seed (default 0)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="the run folder")
    parser.add_argument("--observation", choices=tuple(OBSERVATIONS), default=d.observation,
                        help="what the policy observes: " + "; ".join(f"{k}: {v.description}"
                                                                  for k, v in OBSERVATIONS.items()))
    parser.add_argument("--expert", choices=EXPERTS, default=d.expert, help=f"the pseudo-expert (default {d.expert})")
    parser.add_argument("--beta-schedule", choices=tuple(BETA_SCHEDULES), default=d.beta_schedule,
                        help="linear: beta = clip((R - r) / R) (R = --beta-rounds, default rounds - 1); exponential: "
                             "beta = decay^r; first_round: the expert in round 0 only (default linear)")
    parser.add_argument("--beta-rounds", type=at_least(1), default=None, help="R of the linear schedule")
    parser.add_argument("--beta-decay", type=float, default=d.beta_decay, help="p of the exponential schedule")
    parser.add_argument("--perturbation", choices=PERTURBATIONS + ("split",), default=d.perturbation,
                        help=f"the perturbation ranges of the starts: a base split's, or 'split' for the collection "
                             f"split's own (default {d.perturbation})")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"Adam's learning rate (default {d.lr})")
    parser.add_argument("--batch-size", type=at_least(1), default=d.batch_size,
                        help=f"minibatch size (default {d.batch_size})")
    parser.add_argument("--hidden", type=at_least(1), default=d.hidden, help="the network's width")
    parser.add_argument("--episode-steps", type=at_least(1), default=None,
                        help="decision steps per episode (default: to the scenario's end)")
    parser.add_argument("--workers", type=at_least(1), default=1, help="collection worker processes (default 1)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out after its last round")
    parser.add_argument("--no-tensorboard", action="store_true", help="metrics.csv only")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def config_from_args(args) -> BCConfig:
    pert = None if args.perturbation == "split" else args.perturbation
    return BCConfig(split=str(args.split), expert=args.expert, observation=args.observation, rounds=args.rounds,
                    episodes=args.episodes, epochs=args.epochs, beta_schedule=args.beta_schedule,
                    beta_rounds=args.beta_rounds, beta_decay=args.beta_decay, lr=args.lr, batch_size=args.batch_size,
                    hidden=args.hidden, seed=args.seed, perturbation=pert, episode_steps=args.episode_steps,
                    workers=args.workers)


def run_from_args(args) -> dict:
    """`simscale train-bc`: runs `train_bc` and returns the summary the CLI prints as one JSON line (rounds, samples,
    the mixture's EPDMS per round, the last round's loss, the checkpoint). SimScaleErrors propagate (the CLI prints
    them as one line, status 2); progress goes through logging (the CLI shows it on stderr)."""
    cfg = config_from_args(args)
    argv = getattr(args, "argv", None)
    command = shlex.join(["simscale", *argv] if argv else ["simscale", "train-bc", *sys.argv[1:]])
    r = train_bc(cfg, args.out, progress=not args.quiet, resume=args.resume, command=command,
                 tensorboard=not args.no_tensorboard)
    last = r["metrics"][-1] if r["metrics"] else {}
    return {"rounds": r["rounds"], "samples": r["samples"], "resumed_rounds": r["resumed_rounds"],
            "mixture_epdms": [round(m["mixture_epdms"], 4) for m in r["metrics"]],
            "train_loss": last.get("train_loss"), "seconds": round(r["seconds"], 1),
            "checkpoint": str(r["checkpoint"])}
