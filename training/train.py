"""`simscale train`: supervised training of a learned camera planner on real samples, sim samples or both, as SimScale
co-trains (imitation + reward losses), into a run directory that resumes exactly.

    from training.train import TrainConfig, train
    result = train(TrainConfig(planner="ltf", real="mini-navtrain", sim=("runs/gen",), epochs=4), "runs/ltf")

The pieces (small and separate, as torchvision's references): the planner and its checkpoint format
(`agents.planners`), the datasets and the loader (`training.datasets`), the losses (`training.losses`), and this loop.

Run directory ``out``:
- ``config.json``: the TrainConfig (written first; a rerun must have the same config, `--resume` continues it);
- ``checkpoint.pt``: the planner (`agents.planners.save_planner` format, so `simscale evaluate --policy
  out/checkpoint.pt` loads it) plus, under "train", the optimizer, the scheduler, the finished epoch, the step and the
  RNG states; written atomically after every epoch;
- ``metrics.csv``: one row per optimisation step (epoch, step, loss, every loss term, lr) and one per epoch (the
  epoch's mean loss, samples/s); ``tb/``: the same scalars for TensorBoard;
- ``eval/``: the closed-loop evaluation of the final checkpoint through the benchmark (`evaluation.run_evaluation`)
  when `eval_split` is set.

Determinism and resume: every epoch's randomness is a function of (seed, epoch) (the loader's order; torch's RNG,
which dropout, noise and vocabulary dropout draw from, is seeded at the start of each epoch), so a run resumed from
its epoch-k checkpoint continues with the identical loss sequence of an uninterrupted run (tested). A run killed
mid-epoch resumes at that epoch's start; the rows it had logged past its checkpoint are dropped from metrics.csv and
TensorBoard (``purge_step``).

Test hook: ``SIMSCALE_TEST_KILL_AT=epoch:N`` SIGKILLs the process after the N-th epoch's checkpoint.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simscale_env.errors import SimScaleError

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.csv"
RUN_FORMAT = "simscale-train-run/1"


class TrainingError(SimScaleError, ValueError):
    """A training config or run folder that cannot work."""


@dataclass(frozen=True)
class Recipe:
    """A planner's optimiser and schedule (navsim-agents-and-planners.md §3-5)."""

    optimizer: str  # "adam" | "adamw"
    lr: float
    weight_decay: float = 0.0
    schedule: str = "constant"  # "constant" | "warmup_cosine" (WarmupCosLR: linear warm-up, cosine to final_lr)
    warmup_epochs: int = 0
    final_lr: float = 0.0
    backbone_lr_scale: float = 1.0  # the image backbone's learning rate, relative


# LTF: Adam lr 1e-4, no scheduler (transfuser_agent.py); DiffusionDrive: AdamW 6e-4, wd 1e-4, WarmupCosLR 3 epochs to
# 1e-6 (diffusiondrive transfuser_agent.py); GTRS-Dense: AdamW wd 0, WarmupCosLR 3 epochs to 1e-8 (gtrs_agent.py) at
# GTRS's own lr 2e-4 (GT docs/gtrs_training.md, bs 22 x 24 GPUs; SimScale trains at 4e-4 with bs 11 x 32 GPUs). On
# CPU runs of a few epochs the warm-up is capped at a quarter of the epochs.
RECIPES: dict[str, Recipe] = {
    "ltf": Recipe("adam", 1e-4),
    "diffusiondrive": Recipe("adamw", 6e-4, 1e-4, "warmup_cosine", 3, 1e-6, backbone_lr_scale=0.5),
    "gtrs_dense": Recipe("adamw", 2e-4, 0.0, "warmup_cosine", 3, 1e-8),
}


@dataclass(frozen=True)
class TrainConfig:
    planner: str = "ltf"
    planner_config: dict = field(default_factory=dict)  # overrides of the planner's config (agents.planners)
    real: str | None = "mini-navtrain"  # split name or scene_filter YAML of the real samples; None: sim only
    sim: tuple[str, ...] = ()  # `simscale generate` run folders
    rewards_only: bool = False  # no imitation loss on sim samples (SimScale's `_rewards_only`)
    sim_ratio: float | None = None  # None: the union sampled uniformly (SimScale's default); r: r of every batch is sim
    # the vocabulary .npy of the reward labels: gtrs_dense needs it (the sim runs must have been generated with it);
    # with another planner it only adds the labels to the real samples (one cached build for every planner)
    vocab: str | None = None
    vocab_labels: str | None = None  # the real split's `simscale vocab label` folder (None: labelled into the cache)
    epochs: int = 4
    batch_size: int = 16
    lr: float | None = None  # None: the planner's recipe (RECIPES)
    weight_decay: float | None = None
    grad_clip: float | None = None
    seed: int = 0
    workers: int = 0  # data-loading worker processes
    # torch's intra-op threads of the loop. 1 by default: the loss sequence depends on it (reductions split across
    # threads add in another order), and on 2 shared cores two OpenMP threads beside numba's pool and the loader
    # ran 20x slower than one (`simscale train --planner ltf`: 1.9 vs 36 samples/s under load)
    threads: int = 1
    eval_split: str | None = "mini-navhard"  # the final closed-loop evaluation (None: none)
    eval_mode: str = "closed_loop"
    eval_workers: int = 1
    env_kwargs: dict = field(default_factory=dict)  # data_root, data_source, ... for the real samples and evaluation

    def __post_init__(self):
        object.__setattr__(self, "sim", tuple(str(s) for s in self.sim))
        from agents.planners import PLANNERS, PRESETS

        if self.planner not in PLANNERS and self.planner not in PRESETS:
            raise TrainingError(f"planner must be one of {sorted(PLANNERS)} or a preset ({', '.join(sorted(PRESETS))}), "
                                f"got {self.planner!r}")
        if self.real is None and not self.sim:
            raise TrainingError("nothing to train on: give real (a split) and/or sim (generation run folders)")
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise TrainingError(f"{name} must be a positive integer, got {v!r}")
        for name in ("seed", "workers", "eval_workers", "threads"):
            v = getattr(self, name)
            low = 1 if name in ("eval_workers", "threads") else 0
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise TrainingError(f"{name} must be an integer >= {low}, got {v!r}")
        if self.sim_ratio is not None and not (0.0 <= float(self.sim_ratio) <= 1.0):
            raise TrainingError(f"sim_ratio must be in [0, 1], got {self.sim_ratio!r}")
        if self.sim_ratio is not None and (self.real is None or not self.sim):
            raise TrainingError("sim_ratio mixes real and sim samples: give both real and sim")
        if self.rewards_only and not self.sim:
            raise TrainingError("rewards_only changes the loss of sim samples: give sim run folders")
        for name in ("lr", "weight_decay", "grad_clip"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                                  or v < 0 or (name != "weight_decay" and v == 0)):
                raise TrainingError(f"{name} must be a positive number, got {v!r}")
        if self.eval_mode not in ("closed_loop", "one_stage", "two_stage"):
            raise TrainingError(f"eval_mode must be closed_loop, one_stage or two_stage, got {self.eval_mode!r}")
        if not isinstance(self.planner_config, dict) or not isinstance(self.env_kwargs, dict):
            raise TrainingError("planner_config and env_kwargs must be dicts")
        if self.base_planner == "gtrs_dense" and not self.vocab:
            raise TrainingError("gtrs_dense needs a vocabulary: --vocab V.npy (`simscale vocab build`); the real "
                                "samples' reward labels and the sim runs' (`simscale generate --vocab`) are of it")
        if self.vocab and not Path(self.vocab).is_file():
            from simscale_env.errors import MissingFileError

            raise MissingFileError(self.vocab, "vocabulary file not found (build one with `simscale vocab build`)")

    @property
    def base_planner(self) -> str:
        """The planner of a preset name (ltf_navsim -> ltf)."""
        from agents.planners import PRESETS

        return PRESETS[self.planner][0] if self.planner in PRESETS else self.planner

    @property
    def recipe(self) -> Recipe:
        r = RECIPES.get(self.base_planner, Recipe("adamw", 1e-4))
        return dataclasses.replace(r, lr=self.lr if self.lr is not None else r.lr,
                                   weight_decay=self.weight_decay if self.weight_decay is not None else r.weight_decay)


def config_dict(cfg: TrainConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def epoch_seed(seed: int, epoch: int) -> int:
    """The torch seed of an epoch: blake2b of (seed, epoch), stable across processes and machines."""
    h = hashlib.blake2b(f"simscale-train/{int(seed)}/{int(epoch)}".encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


# ------------------------------------------------------------------------------------------------ optimisation
def make_optimizer(model, recipe: Recipe):
    """The recipe's optimiser over the trainable parameters; the image backbone's group carries `lr_scale`
    (`recipe.backbone_lr_scale`: DiffusionDrive trains its image encoder at 0.5 x lr)."""
    import torch

    backbone = getattr(getattr(model, "encoder", None), "backbone", None)
    bb_ids = {id(p) for p in backbone.parameters()} if backbone is not None else set()
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in bb_ids]
    bb = [p for p in model.parameters() if p.requires_grad and id(p) in bb_ids]
    groups = [{"params": rest, "lr_scale": 1.0}]
    if bb:
        groups.append({"params": bb, "lr_scale": recipe.backbone_lr_scale})
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(recipe.optimizer)
    if cls is None:
        raise TrainingError(f"unknown optimizer {recipe.optimizer!r}")
    return cls(groups, lr=recipe.lr, weight_decay=recipe.weight_decay)


def lr_factor(recipe: Recipe, step: int, steps_per_epoch: int, epochs: int) -> float:
    """The learning-rate multiplier at optimisation step `step` (WarmupCosLR per step: linear warm-up over
    min(warmup_epochs, epochs // 4) epochs, then cosine from lr to final_lr)."""
    if recipe.schedule == "constant":
        return 1.0
    total = max(1, steps_per_epoch * epochs)
    warm = min(recipe.warmup_epochs, epochs // 4) * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    floor = recipe.final_lr / recipe.lr if recipe.lr > 0 else 0.0
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


# ------------------------------------------------------------------------------------------------ data
def build_datasets(cfg: TrainConfig, image_size, *, progress: bool = True):
    """(real dataset or None, [sim datasets]) for a planner reading `image_size` images. The real samples are
    rendered once into the cache (`training.datasets.real_samples`); GTRS-Dense's reward labels of the real samples
    come from `cfg.vocab_labels` (`simscale vocab label`) or are computed with `cfg.vocab` while they are built."""
    from training import datasets as ds

    want_vocab = cfg.base_planner == "gtrs_dense"
    real = None
    if cfg.real is not None:
        kw = {}  # with a vocabulary the real samples carry its labels, whichever planner reads them (one cache)
        if cfg.vocab_labels or cfg.vocab:
            kw = {"vocab_labels": cfg.vocab_labels} if cfg.vocab_labels else {"vocab": cfg.vocab}
        folder = ds.real_samples(cfg.real, env_kwargs=dict(cfg.env_kwargs), progress=progress, **kw)
        real = ds.PlannerDataset(folder, image_size, vocab_scores=want_vocab)
    sims = [ds.PlannerDataset(d, image_size, vocab_scores=want_vocab, rewards_only=cfg.rewards_only)
            for d in cfg.sim]
    return real, sims


def _planner_inputs(cfg: TrainConfig, real, sims) -> dict:
    """Planner config overrides the data decides: the vocabulary (GTRS-Dense), the anchors (DiffusionDrive: k-means
    of the training set's human plans)."""
    over = dict(cfg.planner_config)
    if cfg.base_planner == "gtrs_dense":
        over.setdefault("vocab_path", str(Path(cfg.vocab).resolve()))
    return over


# ------------------------------------------------------------------------------------------------ run directory
def _check_out(out: Path, cfg: TrainConfig, resume: bool) -> bool:
    """Whether `out` holds this run (resume); an error for anything else. Writes nothing."""
    from .runs import check_run_folder, config_diff

    old = check_run_folder(out, CONFIG_FILE, "a training run")
    if old is None:
        return False
    if old.get("format") != RUN_FORMAT:
        raise TrainingError(f"{out / CONFIG_FILE}: not a SimScale training run; use another output folder")
    diff = config_diff(old.get("config", {}), config_dict(cfg))
    if diff:
        raise TrainingError(f"{out}: holds a training run of another config ({diff}): use another output folder")
    if not resume:
        raise TrainingError(f"{out}: holds this run already; pass --resume (resume=True) to continue it, or use "
                            f"another output folder")
    return True


def _rng_state() -> dict:
    import random

    import torch

    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1].copy(), "python": repr(random.getstate())}


def _save_checkpoint(out: Path, model, optimizer, epoch: int, step: int, history: list) -> None:
    from agents.planners import save_planner

    save_planner(out / CHECKPOINT_FILE, model, extra={"train": {
        "optimizer": optimizer.state_dict(), "epoch": int(epoch), "step": int(step), "rng": _rng_state(),
        "epoch_losses": [float(x) for x in history]}})


def _load_train_state(path: Path) -> dict:
    import torch

    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 (a torn or foreign file)
        raise TrainingError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {exc}); remove the run "
                            f"folder to start over") from None
    if not isinstance(ck, dict) or "train" not in ck:
        raise TrainingError(f"{path}: not a training checkpoint (no 'train' state)")
    return ck


class _MetricsLog:
    """metrics.csv (rows appended and flushed) + TensorBoard; on resume the rows past the checkpoint are dropped."""

    COLUMNS = ("kind", "epoch", "step", "loss", "lr", "samples_per_s", "terms")

    def __init__(self, out: Path, resume_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        self.path = out / METRICS_FILE
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) < resume_step or
                        (r["kind"] == "epoch" and int(r["step"]) <= resume_step)]
            self._write_all(rows)
        elif not self.path.exists() or resume_step is None:
            self._write_all([])
        self.fh = open(self.path, "a", newline="")
        self.writer = csv.DictWriter(self.fh, fieldnames=self.COLUMNS)
        self.tb = SummaryWriter(str(out / "tb"), purge_step=resume_step)

    def _write_all(self, rows):
        from simscale_env.data.atomic import atomic_write_text

        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow(r)
        atomic_write_text(self.path, buf.getvalue())

    def step(self, epoch: int, step: int, loss: float, lr: float, terms: dict) -> None:
        self.writer.writerow({"kind": "step", "epoch": epoch, "step": step, "loss": repr(float(loss)), "lr": repr(lr),
                              "samples_per_s": "", "terms": json.dumps({k: float(v) for k, v in terms.items()},
                                                                       sort_keys=True)})
        self.tb.add_scalar("train/loss", loss, step)
        self.tb.add_scalar("train/lr", lr, step)
        for k, v in terms.items():
            self.tb.add_scalar(f"train/{k}", float(v), step)

    def epoch(self, epoch: int, step: int, loss: float, rate: float) -> None:
        self.writer.writerow({"kind": "epoch", "epoch": epoch, "step": step, "loss": repr(float(loss)), "lr": "",
                              "samples_per_s": f"{rate:.3f}", "terms": ""})
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.tb.add_scalar("epoch/loss", loss, epoch)
        self.tb.add_scalar("epoch/samples_per_s", rate, epoch)
        self.tb.flush()

    def close(self):
        self.fh.close()
        self.tb.close()


def read_metrics(run_dir) -> list[dict]:
    """The rows of a run's metrics.csv (loss and lr as floats, terms as a dict)."""
    rows = []
    with open(Path(run_dir) / METRICS_FILE, newline="") as fh:
        for r in csv.DictReader(fh):
            r["epoch"], r["step"], r["loss"] = int(r["epoch"]), int(r["step"]), float(r["loss"])
            r["terms"] = json.loads(r["terms"]) if r["terms"] else {}
            rows.append(r)
    return rows


# ------------------------------------------------------------------------------------------------ the loop
@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    epochs: int
    steps: int
    epoch_losses: tuple
    samples: dict  # "real", "sim": dataset sizes
    seconds: float
    samples_per_s: float
    evaluation: dict | None = None  # the final evaluation's summary


def train(cfg: TrainConfig, out, *, resume: bool = False, progress: bool = True, command: str | None = None,
          evaluate: bool = True, max_steps_per_epoch: int | None = None) -> TrainResult:
    """Train `cfg` into the run folder `out` (module docstring). `max_steps_per_epoch`: cap the steps of an epoch
    (benchmarks, tests)."""
    import torch

    t_start = time.perf_counter()
    out = Path(out)
    resuming = _check_out(out, cfg, resume)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg, out, resuming, t_start, progress=progress, command=command, evaluate=evaluate,
                      max_steps_per_epoch=max_steps_per_epoch)
    finally:
        torch.set_num_threads(threads_before)


def _train(cfg: TrainConfig, out: Path, resuming: bool, t_start: float, *, progress, command, evaluate,
           max_steps_per_epoch) -> TrainResult:
    import torch
    from tqdm import tqdm

    from agents.planners import build_planner, planner_image_size
    from simscale_env.data.atomic import atomic_write_text, kill_point
    from training.datasets import make_loader
    from training.losses import compute_loss

    image_size = planner_image_size(cfg.planner, cfg.planner_config)
    real, sims = build_datasets(cfg, image_size, progress=progress)
    n_real, n_sim = (len(real) if real is not None else 0), sum(len(s) for s in sims)
    if n_real + n_sim == 0:
        raise TrainingError("the datasets are empty")
    torch.manual_seed(epoch_seed(cfg.seed, -1))  # the initial weights
    over = _planner_inputs(cfg, real, sims)
    if cfg.base_planner == "diffusiondrive" and "anchors" not in over and "anchors_path" not in over:
        from agents.planners import kmeans_anchors

        plans = np.concatenate([d.table.trajectory for d in ([real] if real is not None else []) + sims])
        over["anchors"] = kmeans_anchors(plans, int(over.get("num_anchors", 20)), seed=cfg.seed)
    model = build_planner(cfg.planner, over)
    recipe = cfg.recipe
    optimizer = make_optimizer(model, recipe)
    start_epoch, step, history = 0, 0, []
    if resuming and (out / CHECKPOINT_FILE).exists():
        ck = _load_train_state(out / CHECKPOINT_FILE)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["train"]["optimizer"])
        start_epoch, step = int(ck["train"]["epoch"]) + 1, int(ck["train"]["step"])
        history = list(ck["train"].get("epoch_losses", []))
        log.info("%s: resuming after epoch %d (step %d)", out, start_epoch - 1, step)
    out.mkdir(parents=True, exist_ok=True)
    if not resuming:
        atomic_write_text(out / CONFIG_FILE, json.dumps({"format": RUN_FORMAT, "config": config_dict(cfg),
                                                         "command": command or shlex.join(sys.argv),
                                                         "samples": {"real": n_real, "sim": n_sim}}, indent=1))
    metrics = _MetricsLog(out, step if resuming else None)
    steps_per_epoch = None
    seen = 0
    t_train = 0.0
    try:
        for epoch in range(start_epoch, cfg.epochs):
            torch.manual_seed(epoch_seed(cfg.seed, epoch))
            loader = make_loader(real, sims, batch_size=cfg.batch_size, seed=cfg.seed, epoch=epoch,
                                 sim_ratio=cfg.sim_ratio, rewards_only=cfg.rewards_only, workers=cfg.workers)
            n_batches = len(loader) if max_steps_per_epoch is None else min(len(loader), max_steps_per_epoch)
            steps_per_epoch = steps_per_epoch or n_batches
            model.train()
            losses, n_seen, t0 = [], 0, time.perf_counter()
            bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not progress,
                       file=sys.stderr, dynamic_ncols=True)
            for b, batch in enumerate(loader):
                if b >= n_batches:
                    break
                lr = recipe.lr * lr_factor(recipe, step, steps_per_epoch, cfg.epochs)
                for g in optimizer.param_groups:
                    g["lr"] = lr * g.get("lr_scale", 1.0)
                outputs = model(batch)
                loss, terms = compute_loss(cfg.base_planner, model, batch, outputs)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                lv = float(loss.detach())
                if not math.isfinite(lv):
                    raise TrainingError(f"epoch {epoch + 1} step {step}: the loss is {lv} (terms {terms}); lower the "
                                        f"learning rate (--lr) or clip gradients (--grad-clip)")
                metrics.step(epoch, step, lv, lr, terms)
                losses.append(lv)
                n_seen += len(batch["token"])
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{lv:.4f}", refresh=False)
            bar.close()
            dt = time.perf_counter() - t0
            t_train += dt
            seen += n_seen
            mean = float(np.mean(losses)) if losses else float("nan")
            history.append(mean)
            metrics.epoch(epoch, step, mean, n_seen / dt if dt > 0 else 0.0)
            _save_checkpoint(out, model, optimizer, epoch, step, history)
            log.info("epoch %d/%d: loss %.4f, %.1f samples/s", epoch + 1, cfg.epochs, mean, n_seen / max(dt, 1e-9))
            kill_point("epoch")
    finally:
        metrics.close()
    evaluation = None
    if evaluate and cfg.eval_split:
        evaluation = evaluate_checkpoint(cfg, out, progress=progress)
    return TrainResult(run_dir=out, epochs=cfg.epochs, steps=step, epoch_losses=tuple(history),
                       samples={"real": n_real, "sim": n_sim}, seconds=time.perf_counter() - t_start,
                       samples_per_s=seen / t_train if t_train > 0 else 0.0, evaluation=evaluation)


def evaluate_checkpoint(cfg: TrainConfig, out: Path, *, progress: bool = True) -> dict:
    """The final checkpoint on `cfg.eval_split` through the benchmark (`evaluation.run_evaluation`) into out/eval;
    its summary."""
    from evaluation import run_evaluation
    from evaluation.modes import EvalConfig

    ecfg = EvalConfig(policy=str((out / CHECKPOINT_FILE).resolve()), split=cfg.eval_split, mode=cfg.eval_mode,
                      seed=cfg.seed, env_kwargs=dict(cfg.env_kwargs))
    res = run_evaluation(ecfg, workers=cfg.eval_workers, out=out / "eval", progress=progress, videos=False,
                         command=f"simscale train ... (final evaluation of {out / CHECKPOINT_FILE})")
    return res.summary
