"""`simscale experiment simscale`: SimScale's experiment as one command (issue 19): real-only vs pseudo-expert sim
co-training, scaling with sim rounds, planner vs recovery experts, every cell trained and benchmarked.

    result = run_experiment(ExperimentConfig(planners=("ltf", "gtrs_dense"), rounds=(0, 1, 3), seeds=3), "runs/exp")

The experiment composes the data engine (`training.engine.run_generation`), the training loop (`training.train`) and
the benchmark (`evaluation.run_evaluation`); it writes nothing of its own but run folders, views and tables.

- **Cells** (`Cell`): (planner, expert, rounds, seed). rounds 0 is real-only and has no expert: one cell per planner
  and seed, shared by every expert's line of the plot. A cell trains `planner` with `TrainConfig.seed = seed` on the
  real split plus, for rounds r > 0, the sim samples of rounds 1..r of its expert's generation run (GTRS-Dense
  rewards-only by default, as SimScale reports its GTRS-Dense co-training), then evaluates the checkpoint on every
  eval mode with `EvalConfig.seed = eval_seed` (0 by default for every cell: the same perturbed starts, as NAVSIM's
  navhard is one fixed set of stage-2 scenes for every planner; `eval_seed=None` takes the cell's seed).
- **Sim data**: one generation run per expert with max(rounds) nested rounds (`DIR/gen/<expert>-<hash>`, the hash
  of its GenConfig and split tokens: a finished run of the same config is reused as it is, an unfinished one
  resumed). `TrainConfig.sim` takes whole run folders, so the rounds 1..r of a run are given to training as a
  **round view** (`round_view`): ``DIR/sim/<expert>-r<r>-<hash>/`` holding a manifest.json in the generation
  manifest's format that lists only the shards of rounds 1..r, and relative symlinks to those shards (hard links,
  else copies, where the file system has no symlinks). Its name hashes the shards' sha256s, so the same bytes give
  the same view (and the same training config) whatever max(rounds) made them.
- **Vocabulary**: GTRS-Dense's reward labels need one. `vocab=None` builds one into ``DIR/vocab/`` once: the logged
  human plans of the real split's logs (`simscale_env.metrics.vocabulary.human_plans`, 0.5 s stride) clustered by
  `kmeans_vocabulary` (K = `vocab_k`). With a vocabulary every cell's real samples carry its labels (one cached
  real-samples build for every planner, `training.datasets.real_samples`, built once here before the cells run).
- **Cell folders** ``DIR/cells/<cell>/``: ``cell.json`` (the cell's identity: its training and evaluation configs
  and the sha256s of its sim shards, written first), ``train/`` (a `simscale train` run folder, resumed after a
  kill), ``eval-<mode>/`` (a `simscale evaluate` run folder, resumed after a kill) and ``result.json`` (written
  last, atomically). A cell with a result.json of the same identity is reused, never recomputed; a cell folder of
  another identity is an error naming it (nothing runs).
- **Executors**: cells are independent tasks: ``workers=1`` runs them in this process, ``workers=K`` in K spawned
  processes (a fresh one per cell, killed with this process on Linux), ``ray=True`` as Ray tasks of one CPU. The
  results do not depend on the executor (training and evaluation are pure functions of their configs and seeds).
- **Outputs** (atomic): ``experiment.json`` (config, command, versions, machine, run times of every invocation, the
  generation runs), ``results.csv`` (one row per cell: planner, expert, rounds, seed, sim and real samples, each
  mode's EPDMS with its 95 % bootstrap interval over the eval scenes and n), ``table.md`` / ``table.csv`` (per
  (planner, expert, rounds) and mode the mean over seeds and its 95 % Student-t interval over seeds; with one seed
  the cell's 95 % bootstrap interval over scenes, marked), ``epdms_vs_sim_samples.png`` (the plot mode's EPDMS,
  navhard two-stage by default, against the number of sim samples, one line per planner and expert, error bars at
  the table's intervals) and ``summary.md`` (the table, the plot, run time, the exact command, the machine).

Cost (docs/experiments.md, the defaults on the large mini dataset, 2 cores, two cells at a time): 74 min in all;
sim data 11.5 min (2 experts x 3 nested rounds from 231 base tokens, ~1 s per sample per core with K = 256 reward
labels), real samples 7.7 min (1,848 frames), 30 cells 55 min (per cell, one process: training 56-112 s, two-stage
on 31 tokens with 2 stage-2 starts 63-119 s, closed loop 44-101 s). A cell in a fresh worker process adds ~9 s of
imports.

Test hook: ``SIMSCALE_TEST_KILL_AT=cell:N`` SIGKILLs this process after the N-th finished cell of an invocation
(`simscale_env.data.atomic.kill_point`).
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
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simscale_env.errors import SimScaleError

log = logging.getLogger(__name__)

EXPERIMENT_FILE = "experiment.json"
FORMAT = "simscale-experiment/1"
CELL_FORMAT = "simscale-experiment-cell/1"
CELL_FILE = "cell.json"
RESULT_FILE = "result.json"
VIEW_FORMAT_NOTE = "simscale-round-view/1"  # the "view" record inside a round view's (generation-format) manifest
FILES = {"experiment": EXPERIMENT_FILE, "results": "results.csv", "table_md": "table.md", "table_csv": "table.csv",
         "plot": "epdms_vs_sim_samples.png", "summary": "summary.md"}
EXPERTS = ("pdm_closed", "recovery")  # training.generate.EXPERTS
MODES = ("closed_loop", "one_stage", "two_stage")  # evaluation.modes.MODE_NAMES
PLOT_MODE = "two_stage"  # SimScale's headline: navhard two-stage EPDMS
CONFIDENCE = 0.95
VOCAB_STRIDE_S = 0.5  # simscale_env.metrics.vocabulary.VocabularyConfig.stride_s
VOCAB_ITERATIONS = 30  # VocabularyConfig.iterations


class ExperimentError(SimScaleError, ValueError):
    """An experiment config or folder that cannot work."""


# ================================================================================================ config
def _positive_int(name, v, low=1):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
        raise ExperimentError(f"{name} must be an integer >= {low}, got {v!r}")


@dataclass(frozen=True)
class ExperimentConfig:
    """What `run_experiment` runs (module docstring). `planner_config`: planner config overrides for every planner;
    a key naming a planner with a dict value overrides that planner only ({"image_size": [256, 64], "gtrs_dense":
    {"num_decoder_layers": 1}}). `workers`, `ray` and `ray_address` choose the executor only: results do not depend
    on them."""

    # the defaults are the mini-size experiment of docs/experiments.md, sized to run in under 2 hours on 2 cores
    planners: tuple[str, ...] = ("ltf", "gtrs_dense")
    experts: tuple[str, ...] = EXPERTS
    rounds: tuple[int, ...] = (0, 1, 3)  # 0: real only (SimScale plots 0, 1, 3, 5)
    seeds: int = 3  # seeds 0 .. seeds - 1 of every cell (TrainConfig.seed)
    real_split: str = "mini-navtrain-frames"
    gen_split: str | None = None  # None: the real split
    eval_split: str = "mini-navhard"
    eval_modes: tuple[str, ...] = ("two_stage", "closed_loop")
    stage2_starts: int = 2  # two_stage: generated stage-2 start pairs per token (EvalConfig.stage2_starts)
    # EvalConfig.seed of every cell: the same perturbed starts for every cell, as NAVSIM's navhard is one fixed set
    # of stage-2 scenes for every planner (a paired comparison: the seeds' intervals are training variation on this
    # evaluation set); None: each cell's training seed (the starts vary with the seed as well)
    eval_seed: int | None = 0
    epochs: int = 2
    batch_size: int = 16
    # every planner's learning rate (TrainConfig.lr); None: each planner's recipe (LTF 1e-4, GTRS-Dense 2e-4, made
    # for NAVSIM-length runs: LTF at 1e-4 for 20 epochs on mini scored 0.095 closed loop, at 1e-3 0.419, README)
    lr: float | None = 1e-3
    max_steps_per_epoch: int | None = None
    planner_config: dict = field(default_factory=dict)
    vocab: str | None = None  # a vocabulary .npy; None: built into DIR/vocab/ when a planner needs one
    vocab_k: int = 256
    gtrs_rewards_only: bool = True  # GTRS-Dense co-training cells without imitation on sim samples (SimScale)
    gen_seed: int = 0
    gen_every: int = 8  # generate from every gen_every-th token of the generation split (`generation_split_file`)
    gen_width: int = 480  # the generated cameras (the real samples are rendered at 480x224)
    gen_height: int = 224
    env_kwargs: dict = field(default_factory=dict)  # data_root, maps_root, ... for generation, training, evaluation
    eval_env_kwargs: dict = field(default_factory=dict)  # more gym.make kwargs of the evaluation env
    workers: int = 2
    ray: bool = False
    ray_address: str | None = None

    def __post_init__(self):
        from agents.planners import PLANNERS, PRESETS

        for name in ("planners", "experts", "eval_modes"):
            v = getattr(self, name)
            if isinstance(v, str):
                v = tuple(s for s in v.split(",") if s)
            object.__setattr__(self, name, tuple(str(s) for s in v))
        r = self.rounds
        if isinstance(r, (int, np.integer)) and not isinstance(r, bool):
            r = (int(r),)
        try:
            rounds = tuple(int(x) for x in r)
        except (TypeError, ValueError):
            raise ExperimentError(f"rounds must be integers >= 0, got {self.rounds!r}") from None
        object.__setattr__(self, "rounds", tuple(sorted(set(rounds))))
        if not self.planners:
            raise ExperimentError("planners: name at least one planner")
        bad = [p for p in self.planners if p not in PLANNERS and p not in PRESETS]
        if bad:
            raise ExperimentError(f"planners: unknown {bad} (known: {', '.join(sorted(PLANNERS))}; presets "
                                  f"{', '.join(sorted(PRESETS))})")
        if len(set(self.planners)) != len(self.planners):
            raise ExperimentError(f"planners: {list(self.planners)} names a planner twice")
        if not self.rounds or min(self.rounds) < 0:
            raise ExperimentError(f"rounds must be integers >= 0 (0: real only), got {list(rounds)}")
        if any(x > 0 for x in self.rounds):
            if not self.experts:
                raise ExperimentError("experts: rounds > 0 need at least one expert (pdm_closed, recovery)")
            bad = [e for e in self.experts if e not in EXPERTS]
            if bad or len(set(self.experts)) != len(self.experts):
                raise ExperimentError(f"experts must be distinct names of {EXPERTS}, got {list(self.experts)}")
        if not self.eval_modes or any(m not in MODES for m in self.eval_modes) \
                or len(set(self.eval_modes)) != len(self.eval_modes):
            raise ExperimentError(f"eval_modes must be distinct names of {MODES}, got {list(self.eval_modes)}")
        for name in ("seeds", "stage2_starts", "epochs", "batch_size", "vocab_k", "gen_every", "gen_width",
                     "gen_height", "workers"):
            _positive_int(name, getattr(self, name))
        _positive_int("gen_seed", self.gen_seed, 0)
        if self.eval_seed is not None:
            _positive_int("eval_seed", self.eval_seed, 0)
        if self.max_steps_per_epoch is not None:
            _positive_int("max_steps_per_epoch", self.max_steps_per_epoch)
        if self.lr is not None and (isinstance(self.lr, bool) or not isinstance(self.lr, (int, float))
                                    or not math.isfinite(self.lr) or self.lr <= 0):
            raise ExperimentError(f"lr must be a positive number or None (the recipes), got {self.lr!r}")
        for name in ("planner_config", "env_kwargs", "eval_env_kwargs"):
            if not isinstance(getattr(self, name), dict):
                raise ExperimentError(f"{name} must be a dict, got {type(getattr(self, name)).__name__}")
        for name in ("real_split", "eval_split"):
            if not isinstance(getattr(self, name), (str, Path)) or not str(getattr(self, name)):
                raise ExperimentError(f"{name} must be a split name or a scene_filter YAML path")
            object.__setattr__(self, name, str(getattr(self, name)))
        if self.gen_split is not None:
            object.__setattr__(self, "gen_split", str(self.gen_split))
        if self.vocab is not None:
            object.__setattr__(self, "vocab", str(self.vocab))
        if self.ray_address and not self.ray:
            raise ExperimentError("ray_address is given without ray=True")

    @property
    def seed_list(self) -> tuple[int, ...]:
        return tuple(range(int(self.seeds)))

    @property
    def sim_rounds(self) -> tuple[int, ...]:
        return tuple(r for r in self.rounds if r > 0)

    @property
    def generation_split(self) -> str:
        return self.gen_split if self.gen_split is not None else self.real_split

    def needs_vocab(self) -> bool:
        from agents.planners import PRESETS

        return any((PRESETS[p][0] if p in PRESETS else p) == "gtrs_dense" for p in self.planners)

    def planner_overrides(self, planner: str) -> dict:
        """The planner config of `planner`: the shared overrides, then its own (`planner_config[planner]`)."""
        from agents.planners import PLANNERS, PRESETS

        names = set(PLANNERS) | set(PRESETS)
        over = {k: v for k, v in self.planner_config.items() if k not in names}
        own = self.planner_config.get(planner) or {}
        if not isinstance(own, dict):
            raise ExperimentError(f"planner_config[{planner!r}] must be a dict of config fields, got {own!r}")
        return {**over, **own}

    def cells(self) -> list["Cell"]:
        """Every cell, in table order: per planner the real-only cells, then per expert its rounds; seeds last."""
        out = []
        for p in self.planners:
            if 0 in self.rounds:
                out += [Cell(p, None, 0, s) for s in self.seed_list]
            for e in self.experts if self.sim_rounds else ():
                for r in self.sim_rounds:
                    out += [Cell(p, e, r, s) for s in self.seed_list]
        return out


@dataclass(frozen=True, order=True)
class Cell:
    planner: str
    expert: str | None  # None: real only (rounds 0)
    rounds: int
    seed: int

    @property
    def name(self) -> str:
        data = "real" if self.rounds == 0 else f"{self.expert}-r{self.rounds}"
        return f"{self.planner}-{data}-s{self.seed}"


def config_dict(cfg) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _split_tokens_sha(split: str, env_kwargs: dict) -> str:
    from simscale_env.envs import split_tokens

    return hashlib.sha256("\n".join(str(t) for t in split_tokens(split, env_kwargs)).encode()).hexdigest()


# ================================================================================================ vocabulary
def split_log_paths(split: str, env_kwargs: dict | None = None) -> list[Path]:
    """The nuPlan .db logs of a split (`DataConfig.split_logs`), for the experiment's vocabulary (or pass --vocab)."""
    from simscale_env.data.paths import DataConfig

    e = dict(env_kwargs or {})
    data = DataConfig.resolve(e.get("data_root"), e.get("maps_root"), e.get("openscene_root"))
    return data.split_logs(split, "the experiment's vocabulary (or pass --vocab)")[1]


def dataset_info(env_kwargs: dict | None = None) -> dict:
    """The data the experiment reads: its root and, for a mini dataset, the preset, logs and split sizes of its
    manifest (what the summary states)."""
    from simscale_env.data.paths import DataConfig

    e = dict(env_kwargs or {})
    data = DataConfig.resolve(e.get("data_root"), e.get("maps_root"), e.get("openscene_root"),
                              build_mini_if_missing=False)
    root = data.nuplan_data_root or data.openscene_root
    info = {"root": str(root)}
    try:
        m = json.loads((Path(root) / "manifest.json").read_text())
    except (OSError, ValueError):
        return info
    if isinstance(m, dict):
        info.update(preset=m.get("preset", "mini"), logs=m.get("num_logs"), test_logs=m.get("test_logs"),
                    splits=m.get("splits"))
    return info


def experiment_vocab(cfg: ExperimentConfig, out) -> str | None:
    """The vocabulary .npy of the experiment: `cfg.vocab` (checked), or, when a planner needs one, the k-means
    vocabulary of the real split's human plans built once into out/vocab/k<K>-<hash>.npy (module docstring); None
    when no planner needs one."""
    from training.engine import check_vocab

    if cfg.vocab is not None:
        check_vocab(cfg.vocab)
        return str(Path(cfg.vocab).resolve())
    if not cfg.needs_vocab():
        return None
    from simscale_env.metrics.vocabulary import human_plans, kmeans_vocabulary, save_vocabulary

    logs = split_log_paths(cfg.real_split, cfg.env_kwargs)
    key = _sha({"logs": [p.name for p in logs], "k": cfg.vocab_k, "stride_s": VOCAB_STRIDE_S,
                "iterations": VOCAB_ITERATIONS, "seed": 0})[:12]
    path = Path(out) / "vocab" / f"k{cfg.vocab_k}-{key}.npy"
    if path.is_file():
        return str(path.resolve())
    plans = human_plans(logs, stride_s=VOCAB_STRIDE_S)
    if len(plans) < cfg.vocab_k:
        raise ExperimentError(f"vocab_k={cfg.vocab_k} clusters need at least {cfg.vocab_k} human plans; the logs of "
                              f"{cfg.real_split!r} give {len(plans)}: lower vocab_k or pass a vocabulary")
    vocab = kmeans_vocabulary(plans, cfg.vocab_k, iterations=VOCAB_ITERATIONS, seed=0)
    save_vocabulary(path, vocab)
    log.info("vocabulary: %d human plans of %d logs -> %s (K=%d)", len(plans), len(logs), path, cfg.vocab_k)
    return str(path.resolve())


# ================================================================================================ sim data
def generation_split_file(cfg: ExperimentConfig, out) -> str:
    """The split the sim data is generated from: `cfg.generation_split`, or with `gen_every` N > 1 every N-th of its
    tokens (in the split's order, the first one included), written once as a NAVSIM scene_filter YAML
    ``DIR/splits/<split>-every<N>.yaml`` with the source split's frames and logs (its name keeps the base split's
    env and perturbation ranges: `simscale_env.envs.split_env_spec`)."""
    split = cfg.generation_split
    if cfg.gen_every == 1:
        return split
    from simscale_env.data.atomic import atomic_write_text
    from simscale_env.data.openscene import load_split
    from simscale_env.data.paths import DataConfig
    from simscale_env.envs import split_tokens

    e = dict(cfg.env_kwargs)
    src = Path(split) if Path(split).suffix in (".yaml", ".yml") else \
        DataConfig.resolve(e.get("data_root"), e.get("maps_root"), e.get("openscene_root")).split_file(split)
    spec = load_split(src)
    tokens = split_tokens(split, e)[::cfg.gen_every]
    import yaml

    data = {"_target_": "navsim.common.dataclasses.SceneFilter", "_convert_": "all",
            "num_history_frames": spec.num_history_frames, "num_future_frames": spec.num_future_frames,
            "frame_interval": spec.frame_interval, "has_route": spec.has_route, "max_scenes": None,
            "log_names": list(spec.log_names) if spec.log_names is not None else None, "tokens": tokens}
    path = Path(out).resolve() / "splits" / f"{Path(split).stem}-every{cfg.gen_every}.yaml"
    text = f"# every {cfg.gen_every}-th token of {split} ({len(tokens)} tokens): the experiment's generation split\n" \
        + yaml.safe_dump(data, sort_keys=False)
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    return str(path)


def gen_config(cfg: ExperimentConfig, expert: str, vocab: str | None, split: str | None = None):
    """The generation run of `expert`: max(rounds) nested rounds of `split` (default the generation split)."""
    from training.generate import GenConfig

    return GenConfig(split=split or cfg.generation_split, rounds=max(cfg.sim_rounds), expert=expert, seed=cfg.gen_seed,
                     width=cfg.gen_width, height=cfg.gen_height, vocab=vocab, env_kwargs=dict(cfg.env_kwargs))


def _finished_generation(folder: Path, gcfg) -> dict | None:
    """The manifest of a finished generation run of `gcfg` in `folder` (every shard present), else None."""
    from training.engine import MANIFEST_FILE

    from .runner import config_dict as run_config_dict  # what the engine records (training.engine._config_dict)

    path = folder / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        m = json.loads(path.read_text())
    except ValueError:
        return None
    if not m.get("complete") or m.get("config") != run_config_dict(gcfg):
        return None
    if any(not (folder / s["file"]).is_file() for s in m.get("shards", [])):
        return None
    return m


def ensure_generation(cfg: ExperimentConfig, out, expert: str, vocab: str | None, *, progress: bool = True,
                      command: str | None = None, split: str | None = None) -> tuple[Path, dict]:
    """(run folder, manifest) of `expert`'s generation run under out/gen/: a finished run of the same config is
    reused without starting a worker; anything else runs or resumes `run_generation` (module docstring)."""
    from training.engine import run_generation

    gcfg = gen_config(cfg, expert, vocab, split)
    key = _sha({"config": config_dict(gcfg), "tokens": _split_tokens_sha(gcfg.split, gcfg.env_kwargs)})[:12]
    folder = Path(out) / "gen" / f"{expert}-{key}"
    m = _finished_generation(folder, gcfg)
    if m is not None:
        log.info("generation %s: reusing the finished run %s (%d samples)", expert, folder, m["samples"])
        return folder, m
    m = run_generation(gcfg, folder, workers=cfg.workers, ray=cfg.ray, ray_address=cfg.ray_address, resume=True,
                       progress=progress, command=command)
    return folder, m


def _link(src: Path, dst: Path) -> None:
    """dst -> src: a relative symlink, else a hard link, else a copy (file systems without links)."""
    import shutil

    if dst.is_symlink() or dst.exists():
        if dst.resolve() == src.resolve() or (dst.is_file() and dst.stat().st_size == src.stat().st_size
                                              and not dst.is_symlink()):
            return
        dst.unlink()
    try:
        os.symlink(os.path.relpath(src, dst.parent), dst)
    except OSError:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)


def round_view(gen_dir, rounds: int, views_root) -> tuple[Path, dict]:
    """(folder, manifest) of the view of rounds 1..`rounds` of a generation run (module docstring): a folder
    `PlannerDataset` and `TrainConfig.sim` read like a generation run, listing only those rounds' shards. Written
    once (manifest last, atomically); the same shards give the same folder."""
    from simscale_env.data.atomic import atomic_write_text
    from simscale_env.errors import MissingFileError
    from training.engine import MANIFEST_FILE

    gen_dir = Path(gen_dir)
    try:
        m = json.loads((gen_dir / MANIFEST_FILE).read_text())
    except FileNotFoundError:
        raise MissingFileError(gen_dir / MANIFEST_FILE, "not a generation run (no manifest.json)") from None
    shards = [s for s in m["shards"] if int(s["round"]) <= int(rounds)]
    per_round = [r for r in m["rounds"] if int(r["round"]) <= int(rounds)]
    key = _sha({"expert": m["expert"], "shards": [s["sha256"] for s in shards]})[:12]
    folder = Path(views_root) / f"{m['expert']}-r{int(rounds)}-{key}"
    view = {**{k: v for k, v in m.items() if k not in ("shards", "rounds", "samples", "failures")},
            "rounds": per_round, "shards": shards, "samples": sum(int(r["valid"]) for r in per_round),
            "failures": [f for f in m.get("failures", []) if int(f["round"]) <= int(rounds)],
            "view": {"format": VIEW_FORMAT_NOTE, "of": str(gen_dir.resolve()), "rounds": int(rounds)}}
    path = folder / MANIFEST_FILE
    if path.is_file():
        try:
            if json.loads(path.read_text()).get("shards") == shards:
                return folder, view
        except ValueError:
            pass
    folder.mkdir(parents=True, exist_ok=True)
    for s in shards:
        _link(gen_dir / s["file"], folder / s["file"])
    atomic_write_text(path, json.dumps(view, indent=1))
    return folder, view


# ================================================================================================ cells
def _cell_identity(cfg: ExperimentConfig, cell: Cell, train_kw: dict, evals: list[dict], sim_shards: list[str],
                   tokens: dict) -> dict:
    """What a cell's result depends on: its training config, its evaluation configs (the checkpoint path left out),
    the sha256s of its sim shards, the real and eval split tokens and the steps cap."""
    return {"format": CELL_FORMAT, "cell": dataclasses.asdict(cell), "train": train_kw,
            "max_steps_per_epoch": cfg.max_steps_per_epoch,
            "eval": [{k: v for k, v in e.items() if k != "policy"} for e in evals],
            "sim_shards_sha256": list(sim_shards), "tokens_sha256": tokens}


def cell_specs(cfg: ExperimentConfig, out, vocab: str | None, views: dict, *, command: str) -> list[dict]:
    """One plain-value task per cell (what `run_cell` runs): its folder, identity, training and evaluation configs.
    `views`: (expert, rounds) -> (view folder, view manifest)."""
    from agents.planners import PRESETS
    from evaluation.modes import EvalConfig
    from training.train import TrainConfig, config_dict as train_dict

    out = Path(out).resolve()
    tokens = {"real": _split_tokens_sha(cfg.real_split, cfg.env_kwargs),
              "eval": _split_tokens_sha(cfg.eval_split, cfg.env_kwargs)}
    specs = []
    for cell in cfg.cells():
        base = PRESETS[cell.planner][0] if cell.planner in PRESETS else cell.planner
        sim, shards, n_sim = (), [], 0
        if cell.rounds > 0:
            folder, view = views[(cell.expert, cell.rounds)]
            sim, shards, n_sim = (str(Path(folder).resolve()),), [s["sha256"] for s in view["shards"]], view["samples"]
        train_kw = {"planner": cell.planner, "planner_config": cfg.planner_overrides(cell.planner),
                    "real": cfg.real_split, "sim": list(sim),
                    "rewards_only": bool(cfg.gtrs_rewards_only and base == "gtrs_dense" and cell.rounds > 0),
                    "vocab": vocab, "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr,
                    "seed": cell.seed,
                    "eval_split": None, "env_kwargs": dict(cfg.env_kwargs)}
        # through TrainConfig and back: the identity holds every field with its default, as config.json does
        train_kw = train_dict(TrainConfig(**{**train_kw, "sim": tuple(train_kw["sim"])}))
        cell_dir = out / "cells" / cell.name
        ckpt = str(cell_dir / "train" / "checkpoint.pt")
        evals = []
        for mode in cfg.eval_modes:
            eval_seed = cell.seed if cfg.eval_seed is None else int(cfg.eval_seed)
            evals.append(config_dict(EvalConfig(policy=ckpt, split=cfg.eval_split, mode=mode, seed=eval_seed,
                                                stage2_starts=cfg.stage2_starts,
                                                env_kwargs={**cfg.env_kwargs, **cfg.eval_env_kwargs})))
        specs.append({"cell": dataclasses.asdict(cell), "name": cell.name, "dir": str(cell_dir),
                      "identity": _cell_identity(cfg, cell, train_kw, evals, shards, tokens), "train": train_kw,
                      "max_steps_per_epoch": cfg.max_steps_per_epoch, "evals": evals, "sim_samples": int(n_sim),
                      "command": command})
    return specs


def read_result(cell_dir) -> dict | None:
    p = Path(cell_dir) / RESULT_FILE
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except ValueError:
        return None


def _check_cell_folders(specs: list[dict]) -> None:
    """One error naming every cell folder that holds another identity (nothing has run)."""
    from training.runs import config_diff

    bad = []
    for spec in specs:
        for name in (CELL_FILE, RESULT_FILE):
            p = Path(spec["dir"]) / name
            if not p.is_file():
                continue
            try:
                old = json.loads(p.read_text())
            except ValueError:
                if name == CELL_FILE:
                    bad.append(f"{p}: not readable JSON")
                continue
            ident = old.get("identity", old) if name == RESULT_FILE else old
            if ident != spec["identity"]:
                diff = config_diff(_flat(ident), _flat(spec["identity"]), 3)
                bad.append(f"{spec['name']} ({diff or 'another format'})")
                break
    if bad:
        raise ExperimentError(f"{len(bad)} cell folder(s) hold a cell of another config: {'; '.join(bad[:4])}"
                              f"{'; ...' if len(bad) > 4 else ''}; use another output folder, or remove those cell "
                              f"folders")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def run_cell(spec: dict, threads: int | None = None) -> dict:
    """Train and evaluate one cell (module docstring) into spec["dir"]; its result (also written to result.json,
    last). A pure function of the spec: the training and evaluation folders resume what a killed run left."""
    from evaluation.modes import EvalConfig
    from evaluation.report import make_readable
    from evaluation.runner import run_evaluation
    from simscale_env.data.atomic import atomic_write_text
    from simscale_env.parallel import set_worker_threads
    from training.train import TrainConfig, train

    set_worker_threads(threads)
    t0 = time.perf_counter()
    cell_dir = Path(spec["dir"])
    cell_dir.mkdir(parents=True, exist_ok=True)
    if not (cell_dir / CELL_FILE).is_file():
        atomic_write_text(cell_dir / CELL_FILE, json.dumps(spec["identity"], indent=1))
    tkw = dict(spec["train"])
    tkw["sim"] = tuple(tkw["sim"])
    tcfg = TrainConfig(**tkw)
    tr = train(tcfg, cell_dir / "train", resume=True, progress=False, evaluate=False,
               max_steps_per_epoch=spec["max_steps_per_epoch"],
               command=f"{spec['command']}  # cell {spec['name']}")
    t_train = time.perf_counter() - t0
    evals = {}
    for ekw in spec["evals"]:
        ecfg = EvalConfig(**ekw)
        t1 = time.perf_counter()
        res = run_evaluation(ecfg, workers=1, out=cell_dir / f"eval-{ecfg.mode}", progress=False, videos=False,
                             command=f"{spec['command']}  # cell {spec['name']}, {ecfg.mode}")
        s = res.summary
        keep = ("epdms", "stage_one", "stage_two", "collision_rate", "offroad_rate")
        evals[ecfg.mode] = {"epdms": s["epdms"], "metrics": {k: s["metrics"][k] for k in keep if k in s["metrics"]},
                            "rows": s["rows"], "failed": s["failed_rows"], "run_dir": f"eval-{ecfg.mode}",
                            "seconds": time.perf_counter() - t1, "items_run": len(res.rows) - res.resumed}
    result = {"format": CELL_FORMAT, "identity": spec["identity"], **spec["cell"], "name": spec["name"],
              "sim_samples": spec["sim_samples"], "real_samples": int(tr.samples["real"]),
              "train": {"run_dir": "train", "steps": tr.steps, "epoch_losses": list(tr.epoch_losses),
                        "samples_per_s": tr.samples_per_s, "seconds": t_train},
              "eval": evals, "seconds": time.perf_counter() - t0, "pid": os.getpid()}
    if int(tr.samples["sim"]) != int(spec["sim_samples"]):
        raise ExperimentError(f"cell {spec['name']}: trained on {tr.samples['sim']} sim samples, its view lists "
                              f"{spec['sim_samples']}")
    atomic_write_text(cell_dir / RESULT_FILE, json.dumps(result, indent=1, allow_nan=True))
    make_readable([cell_dir / CELL_FILE, cell_dir / RESULT_FILE])
    return result


# ------------------------------------------------------------------------------------------------ executors
def _die_with_parent() -> None:
    """Linux: this worker gets SIGKILL when the process that started it dies (a killed experiment leaves no cell
    running beside the one that resumes it)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 (best effort)
        pass


_THREADS: list = [None]


def _pool_init(threads: int | None) -> None:
    _die_with_parent()
    _THREADS[0] = threads
    from simscale_env.parallel import set_worker_threads

    set_worker_threads(threads)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split()) or repr(exc)}"


def cell_task(spec: dict, threads: int | None = None) -> dict:
    """`run_cell` as an executor task: {"result": ...} or {"error": "Type: message"} (an error crosses the process
    boundary as text: the package's errors with extra constructor arguments do not unpickle)."""
    try:
        return {"result": run_cell(spec, threads)}
    except Exception as exc:  # noqa: BLE001 (the cell fails; the others go on)
        log.debug("cell %s failed", spec["name"], exc_info=True)
        return {"error": _error_text(exc)}


def _pool_cell(spec: dict) -> dict:
    return cell_task(spec, _THREADS[0])


def _deliver(spec, out, on_result, on_error):
    if "error" in out:
        log.warning("cell %s failed: %s", spec["name"], out["error"])
        on_error(spec, out["error"])
    else:
        on_result(spec, out["result"])


def _run_inline(specs, on_result, on_error):
    for spec in specs:
        _deliver(spec, cell_task(spec), on_result, on_error)


def _run_processes(specs, workers, on_result, on_error):
    """`workers` spawned processes, a fresh one per cell (nothing a cell loads stays for the next); a process that
    dies fails the cells in flight with it and the rest go on in a new pool."""
    import multiprocessing as mp
    from collections import deque
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    from simscale_env.parallel import threads_per_worker

    pending = deque(specs)
    ctx = mp.get_context("spawn")
    kw = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
    threads = threads_per_worker(workers)
    while pending:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_pool_init, initargs=(threads,),
                                   **kw)
        inflight = {}
        try:
            while pending or inflight:
                while pending and len(inflight) < workers:
                    spec = pending.popleft()
                    inflight[pool.submit(_pool_cell, spec)] = spec
                done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                for fut in done:
                    out = fut.result()  # BrokenProcessPool when a worker died
                    _deliver(inflight.pop(fut), out, on_result, on_error)
        except BrokenProcessPool:
            for spec in inflight.values():
                on_error(spec, "WorkerCrash: the worker process running this cell died (a crash in native code or "
                               "out of memory)")
            log.warning("a worker process died: %d cells in flight failed, %d go on in a new pool", len(inflight),
                        len(pending))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _run_ray(specs, workers, ray_address, on_result, on_error):
    from simscale_env.parallel import import_ray

    ray = import_ray(ExperimentError)
    started = False
    if not ray.is_initialized():
        kw = {"address": ray_address} if ray_address else {"num_cpus": workers}
        if not ray_address:  # a local Ray: its workers import what this process imports and read the same data
            env = {k: v for k, v in os.environ.items() if k.startswith(("SIMSCALE_", "NUPLAN_", "OPENSCENE_",
                                                                          "NUMBA_CACHE_DIR"))}
            env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
            kw["runtime_env"] = {"env_vars": env}
        ray.init(include_dashboard=False, log_to_driver=False, **kw)
        started = True
    try:
        cpus = int(ray.cluster_resources().get("CPU", workers))
        threads = None if ray_address else max(1, cpus // max(1, min(workers, cpus)))
        task = ray.remote(num_cpus=1, max_retries=0)(cell_task)
        inflight = {task.remote(spec, threads): spec for spec in specs}
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                spec = inflight.pop(ref)
                try:
                    out = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 (a dead worker: cell_task itself never raises)
                    out = {"error": f"WorkerCrash: the Ray worker running this cell died: {_error_text(exc)[:300]}"}
                _deliver(spec, out, on_result, on_error)
    finally:
        if started:
            ray.shutdown()


# ================================================================================================ tables
def t_interval(values, confidence: float = CONFIDENCE) -> dict:
    """Mean of the finite `values` and its Student-t interval (mean +- t_{(1+c)/2, n-1} s / sqrt(n), s the sample
    standard deviation): {"mean", "ci95", "n"}; NaN bounds for fewer than two values."""
    from scipy import stats

    a = np.asarray([float(v) for v in values if v is not None], np.float64)
    a = a[np.isfinite(a)]
    n = int(a.size)
    if n == 0:
        return {"mean": float("nan"), "ci95": [float("nan"), float("nan")], "n": 0}
    mean = float(a.mean())
    if n < 2:
        return {"mean": mean, "ci95": [float("nan"), float("nan")], "n": n}
    half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1) * a.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": n}


def _num(v) -> str:
    """A CSV number: repr (round-trips exactly), empty for None/NaN."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return repr(float(v)) if isinstance(v, float) else str(v)


def results_rows(cfg: ExperimentConfig, results: list[dict]) -> list[dict]:
    """One row per cell of `cfg` that has a result, in table order (results.csv)."""
    by_name = {r["name"]: r for r in results}
    rows = []
    for cell in cfg.cells():
        r = by_name.get(cell.name)
        if r is None:
            continue
        row = {"cell": cell.name, "planner": cell.planner, "expert": cell.expert or "", "rounds": cell.rounds,
               "seed": cell.seed, "sim_samples": r["sim_samples"], "real_samples": r["real_samples"]}
        for mode in cfg.eval_modes:
            e = r["eval"].get(mode, {}).get("epdms") or {}
            ci = e.get("ci95") or [None, None]
            row[f"{mode}_epdms"] = e.get("mean")
            row[f"{mode}_lo"], row[f"{mode}_hi"] = ci[0], ci[1]
            row[f"{mode}_n"] = e.get("n")
        rows.append(row)
    return rows


def results_csv(cfg: ExperimentConfig, rows: list[dict]) -> str:
    cols = ["cell", "planner", "expert", "rounds", "seed", "sim_samples", "real_samples"]
    for mode in cfg.eval_modes:
        cols += [f"{mode}_epdms", f"{mode}_lo", f"{mode}_hi", f"{mode}_n"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([_num(r.get(c)) if isinstance(r.get(c), float) or r.get(c) is None else r.get(c) for c in cols])
    return buf.getvalue()


def table_rows(cfg: ExperimentConfig, rows: list[dict]) -> list[dict]:
    """Per (planner, expert, rounds) of `rows` and mode: the mean over seeds and its 95 % interval: Student-t over
    the seeds with two or more seeds ("t_seeds"), the cell's bootstrap interval over scenes with one ("scenes")."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["planner"], r["expert"], r["rounds"]), []).append(r)
    out = []
    for (planner, expert, rounds), rs in groups.items():
        t = {"planner": planner, "expert": expert, "rounds": rounds, "sim_samples": rs[0]["sim_samples"],
             "seeds": len(rs)}
        for mode in cfg.eval_modes:
            vals = [r[f"{mode}_epdms"] for r in rs]
            if len(rs) >= 2:
                m, kind = t_interval(vals), "t_seeds"
            else:
                m = {"mean": vals[0], "ci95": [rs[0][f"{mode}_lo"], rs[0][f"{mode}_hi"]], "n": 1}
                kind = "scenes"
            t[mode] = {**m, "interval": kind}
        out.append(t)
    return out


def _fmt(m: dict) -> str:
    if m.get("mean") is None or not math.isfinite(m["mean"]):
        return "n/a"
    lo, hi = m["ci95"]
    mark = " (scenes)" if m.get("interval") == "scenes" else ""
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{m['mean']:.3f}"
    return f"{m['mean']:.3f} [{lo:.3f}, {hi:.3f}]{mark}"


MODE_LABELS = {"two_stage": "navhard two-stage EPDMS", "closed_loop": "closed-loop EPDMS",
               "one_stage": "one-stage EPDMS"}


def table_markdown(cfg: ExperimentConfig, trows: list[dict]) -> str:
    head = ["planner", "expert", "rounds", "sim samples", "seeds", *(MODE_LABELS[m] for m in cfg.eval_modes)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in trows:
        lines.append("| " + " | ".join([t["planner"], t["expert"] or "real only", str(t["rounds"]),
                                        str(t["sim_samples"]), str(t["seeds"]),
                                        *(_fmt(t[m]) for m in cfg.eval_modes)]) + " |")
    lines.append("")
    lines.append(f"Mean over seeds with its {int(100 * CONFIDENCE)} % Student-t interval over seeds (t quantile with "
                 f"n - 1 degrees of freedom); with one seed, marked (scenes), the cell's {int(100 * CONFIDENCE)} % "
                 f"percentile-bootstrap interval over the evaluation scenes (evaluation.report.bootstrap).")
    return "\n".join(lines) + "\n"


def table_csv(cfg: ExperimentConfig, trows: list[dict]) -> str:
    cols = ["planner", "expert", "rounds", "sim_samples", "seeds"]
    for mode in cfg.eval_modes:
        cols += [f"{mode}_epdms", f"{mode}_lo", f"{mode}_hi", f"{mode}_interval"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for t in trows:
        vals = [t["planner"], t["expert"], t["rounds"], t["sim_samples"], t["seeds"]]
        for mode in cfg.eval_modes:
            m = t[mode]
            vals += [_num(m["mean"]), _num(m["ci95"][0]), _num(m["ci95"][1]), m["interval"]]
        w.writerow(vals)
    return buf.getvalue()


def plot_mode(cfg: ExperimentConfig) -> str:
    return PLOT_MODE if PLOT_MODE in cfg.eval_modes else cfg.eval_modes[0]


def fig_epdms_vs_samples(cfg: ExperimentConfig, trows: list[dict]):
    """The plot mode's EPDMS against the number of sim samples: one line per (planner, expert), the real-only point
    (0 samples) shared by the planner's expert lines; error bars at the table's intervals."""
    from .report import _figure

    mode = plot_mode(cfg)
    fig = _figure(7.5, 4.5)
    ax = fig.add_subplot()
    markers = {e: mk for e, mk in zip(EXPERTS, ("o", "s"))}
    colors = {p: f"C{i}" for i, p in enumerate(cfg.planners)}
    for planner in cfg.planners:
        real = [t for t in trows if t["planner"] == planner and t["rounds"] == 0]
        experts = cfg.experts if cfg.sim_rounds else ()
        lines = [(e, real + sorted((t for t in trows if t["planner"] == planner and t["expert"] == e),
                                   key=lambda t: t["rounds"])) for e in experts] or [(None, real)]
        for expert, pts in lines:
            if not pts:
                continue
            x = np.array([t["sim_samples"] for t in pts], np.float64)
            y = np.array([t[mode]["mean"] for t in pts], np.float64)
            lo = np.array([np.nan if t[mode]["ci95"][0] is None else t[mode]["ci95"][0] for t in pts], np.float64)
            hi = np.array([np.nan if t[mode]["ci95"][1] is None else t[mode]["ci95"][1] for t in pts], np.float64)
            err = np.stack([np.nan_to_num(y - lo), np.nan_to_num(hi - y)])
            label = f"{planner}, {expert or 'real only'}" + (" (rewards-only)" if cfg.gtrs_rewards_only and expert and
                                                            "gtrs_dense" in planner else "")
            ax.errorbar(x, y, yerr=err, color=colors[planner], marker=markers.get(expert, "D"),
                        linestyle="-" if expert != "recovery" else "--", capsize=3, lw=1.2, label=label)
            for t, xi, yi in zip(pts, x, y):
                if t["rounds"] > 0 and math.isfinite(yi):
                    ax.annotate(f"r{t['rounds']}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ys = [v for t in trows for v in (t[mode]["mean"], *t[mode]["ci95"]) if v is not None and math.isfinite(v)]
    if ys and max(ys) - min(ys) > 1e-9:
        pad = 0.1 * (max(ys) - min(ys))
        ax.set_ylim(max(0.0, min(ys) - pad), min(1.0, max(ys) + pad) + 0.02)
    else:
        ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("sim samples in the training set (rounds 1..r of the expert's generation run)")
    ax.set_ylabel(f"{MODE_LABELS[mode]} (mean over seeds, 95 % interval)")
    ax.set_title(f"{MODE_LABELS[mode]} on {Path(cfg.eval_split).stem} vs sim data")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "no finished cell", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig


# ================================================================================================ records
def machine() -> dict:
    """The machine an experiment ran on: platform, CPU model, cores, memory."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem,
            "python": platform.python_version()}


def _versions() -> dict:
    import pyarrow  # noqa: F401
    import torch  # noqa: F401

    from training.runs import versions

    return versions("torch", "pyarrow", "ray")


def summary_markdown(cfg: ExperimentConfig, doc: dict, table_md: str, failed: list) -> str:
    inv = doc["invocations"]
    last = inv[-1]
    cell_s = doc.get("cell_seconds_total") or 0.0
    lines = [f"# SimScale experiment: {', '.join(cfg.planners)} on {Path(cfg.eval_split).stem}", "",
             "```", doc["command"], "```", "",
             f"- machine: {doc['machine']['cpu'] or 'unknown CPU'}, {doc['machine']['cores']} cores, "
             f"{doc['machine']['memory_gib']} GiB, {doc['machine']['platform']}",
             f"- run time: {last['seconds'] / 60:.1f} min this invocation ({last['cells_run']} cells run, "
             f"{last['cells_reused']} reused); {sum(i['seconds'] for i in inv) / 60:.1f} min over "
             f"{len(inv)} invocation(s); cells {cell_s / 60:.1f} min of worker time, generation "
             f"{doc.get('generation_seconds', 0.0) / 60:.1f} min, executor "
             f"{'ray' if cfg.ray else ('inline' if cfg.workers == 1 else 'processes')} x {cfg.workers}",
             f"- cells: {len(cfg.cells())} = {len(cfg.planners)} planners x ({int(0 in cfg.rounds)} real-only + "
             f"{len(cfg.experts) if cfg.sim_rounds else 0} experts x {len(cfg.sim_rounds)} sim rounds) x "
             f"{cfg.seeds} seeds; {cfg.epochs} epochs, batch {cfg.batch_size}"
             + (f", lr {cfg.lr:g} for every planner" if cfg.lr is not None else ", the planners' lr recipes")
             + (f", at most {cfg.max_steps_per_epoch} steps per epoch" if cfg.max_steps_per_epoch else "")
             + f"; real split {cfg.real_split}, generation split {cfg.generation_split}"
             + (f" (one token in {cfg.gen_every})" if cfg.gen_every > 1 else "") + ", evaluation "
             f"{cfg.eval_split} ({', '.join(cfg.eval_modes)}"
             + (f", {cfg.stage2_starts} stage-2 starts per token" if "two_stage" in cfg.eval_modes else "") + ")",
             _data_line(doc.get("data") or {}), ""]
    if cfg.needs_vocab():
        how = "rewards-only (no imitation loss on sim samples)" if cfg.gtrs_rewards_only else "imitation + rewards"
        lines[-1:] = [f"- GTRS-Dense co-training: {how}; vocabulary {doc.get('vocab')}", ""]
    for e, g in doc.get("generation", {}).items():
        per = ", ".join(f"r{r['round']}: {r['valid']}/{r['tried']}" for r in g["rounds"])
        lines.append(f"- generation {e}: {per} valid samples ({g['run']})")
    if failed:
        lines += ["", f"**{len(failed)} cell(s) failed** (rerun the command to retry them):", ""]
        lines += [f"- {f['cell']}: {f['error']}" for f in failed]
    lines += ["", "## Results", "", table_md, f"![{MODE_LABELS[plot_mode(cfg)]} vs sim samples]({FILES['plot']})", "",
              f"Per-cell numbers: [{FILES['results']}]({FILES['results']}); per-cell run folders under `cells/`.", ""]
    return "\n".join(lines)


def _data_line(data: dict) -> str:
    if "preset" not in data:
        return f"- data: {data.get('root', 'unknown')}"
    splits = data.get("splits") or {}
    sizes = ", ".join(f"{k} {v}" for k, v in sorted(splits.items()))
    test = f", {data['test_logs']} of them test logs" if data.get("test_logs") is not None else ""
    return f"- data: the {data['preset']} mini dataset ({data.get('logs')} logs{test}; {sizes} tokens) in {data['root']}"


@dataclass(frozen=True)
class ExperimentResult:
    out: Path
    results: list  # result.json of every finished cell of the config, in table order
    table: list  # table_rows
    ran: tuple  # cells run by this call
    reused: tuple  # cells whose result.json was reused
    failed: tuple  # {"cell", "error"} of the cells that failed in this call
    seconds: float
    files: dict = field(default_factory=dict)


# ================================================================================================ the entry point
def _check_out(out: Path) -> dict | None:
    from training.runs import check_run_folder

    old = check_run_folder(out, EXPERIMENT_FILE, "an experiment")
    if old is not None and old.get("format") != FORMAT:
        raise ExperimentError(f"{out / EXPERIMENT_FILE}: not a SimScale experiment (format {old.get('format')!r}); "
                              f"use another output folder")
    return old


def run_experiment(cfg: ExperimentConfig, out, *, progress: bool = True, command: str | None = None) -> \
        ExperimentResult:
    """Run (or resume, or reuse) the experiment `cfg` in `out` (module docstring) and write its tables, plot and
    summary. A cell that fails is reported (`ExperimentResult.failed`, summary.md) and the others go on."""
    from tqdm import tqdm

    from simscale_env.data.atomic import atomic_write_text, kill_point
    from training.datasets import real_samples, real_samples_dir

    from .report import make_readable, save_figure

    t_start = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    out = Path(out)
    old = _check_out(out)
    from simscale_env.envs import split_tokens

    for split in dict.fromkeys(s for s in (cfg.real_split, cfg.gen_split, cfg.eval_split) if s is not None):
        split_tokens(split, dict(cfg.env_kwargs))  # an unknown split is one error before anything is written
    if command is None:
        command = shlex.join(sys.argv)
    if cfg.ray:
        from simscale_env.parallel import import_ray

        import_ray(ExperimentError)
    out.mkdir(parents=True, exist_ok=True)
    invocations = list((old or {}).get("invocations", []))
    doc = {"format": FORMAT, "config": config_dict(cfg), "command": command, "versions": _versions(),
           "machine": machine(), "started": started, "complete": False, "invocations": invocations}
    if old is None:  # marks the folder as an experiment's before anything else is written (a rerun keeps the
        # record of the last finished invocation until this one ends: a refused config leaves it as it was)
        atomic_write_text(out / EXPERIMENT_FILE, json.dumps(doc, indent=1))

    # shared inputs: vocabulary, generation runs and round views; the real samples are built once below, before
    # the first cell runs (cells running side by side would each build the same cache folder)
    vocab = experiment_vocab(cfg, out)
    real_kw = {"env_kwargs": dict(cfg.env_kwargs), **({"vocab": vocab} if vocab else {})}
    views, generation = {}, {}
    t0 = time.perf_counter()
    gen_split = generation_split_file(cfg, out) if cfg.sim_rounds else None
    for expert in (cfg.experts if cfg.sim_rounds else ()):
        gdir, manifest = ensure_generation(cfg, out, expert, vocab, progress=progress, command=command,
                                           split=gen_split)
        generation[expert] = {"run": str(gdir.relative_to(out)) if gdir.is_relative_to(out) else str(gdir),
                              "samples": manifest["samples"],
                              "rounds": [{k: r[k] for k in ("round", "tried", "valid")} for r in manifest["rounds"]]}
        for r in cfg.sim_rounds:
            views[(expert, r)] = round_view(gdir, r, out / "sim")
    t_gen = time.perf_counter() - t0

    specs = cell_specs(cfg, out, vocab, views, command=command)
    _check_cell_folders(specs)
    results, todo, reused = {}, [], []
    for spec in specs:
        res = read_result(spec["dir"])
        if res is not None and res.get("identity") == spec["identity"]:
            results[spec["name"]] = res
            reused.append(spec["name"])
        else:
            todo.append(spec)
    todo.sort(key=lambda s: -s["sim_samples"])  # the longest cells first: less idle time at the end
    log.info("%d cells: %d finished before, %d to run (%s x %d)", len(specs), len(reused), len(todo),
             "ray" if cfg.ray else ("inline" if cfg.workers == 1 else "processes"), cfg.workers)
    t0 = time.perf_counter()
    real_dir = real_samples(cfg.real_split, progress=progress, **real_kw) if todo else \
        real_samples_dir(cfg.real_split, **real_kw)
    t_real = time.perf_counter() - t0
    ran, failed = [], []
    bar = tqdm(total=len(specs), initial=len(reused), desc="cells", unit="cell", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)

    def on_result(spec, res):
        results[spec["name"]] = res
        ran.append(spec["name"])
        bar.update(1)
        kill_point("cell")

    def on_error(spec, err):
        failed.append({"cell": spec["name"], "error": err})
        bar.update(1)
        bar.set_postfix(failed=len(failed), refresh=False)

    try:
        if not todo:
            pass
        elif cfg.ray:
            _run_ray(todo, cfg.workers, cfg.ray_address, on_result, on_error)
        elif cfg.workers == 1 or len(todo) == 1:
            _run_inline(todo, on_result, on_error)
        else:
            _run_processes(todo, min(cfg.workers, len(todo)), on_result, on_error)
    finally:
        bar.close()

    # outputs
    ordered = [results[s["name"]] for s in specs if s["name"] in results]
    rows = results_rows(cfg, ordered)
    trows = table_rows(cfg, rows)
    table_md = table_markdown(cfg, trows)
    seconds = time.perf_counter() - t_start
    invocations.append({"started": started, "seconds": seconds, "cells_run": len(ran), "cells_reused": len(reused),
                        "cells_failed": len(failed), "real_samples_seconds": t_real, "generation_seconds": t_gen})
    doc.update(complete=not failed and len(ordered) == len(specs), seconds=seconds, invocations=invocations,
               data=dataset_info(cfg.env_kwargs), vocab=vocab, real_samples=str(real_dir), generation=generation, generation_seconds=t_gen,
               cells=[s["name"] for s in specs], failed=failed,
               cell_seconds_total=sum(float(r.get("seconds") or 0.0) for r in ordered))
    files = {k: out / v for k, v in FILES.items()}
    atomic_write_text(files["results"], results_csv(cfg, rows))
    atomic_write_text(files["table_md"], table_md)
    atomic_write_text(files["table_csv"], table_csv(cfg, trows))
    save_figure(fig_epdms_vs_samples(cfg, trows), files["plot"])
    atomic_write_text(files["summary"], summary_markdown(cfg, doc, table_md, failed))
    atomic_write_text(files["experiment"], json.dumps(doc, indent=1, allow_nan=True))
    make_readable(files.values())
    return ExperimentResult(out=out, results=ordered, table=trows, ran=tuple(ran), reused=tuple(reused),
                            failed=tuple(failed), seconds=seconds, files={k: str(v) for k, v in files.items()})


# ================================================================================================ CLI
def _csv_list(kind):
    def parse(text):
        items = [s.strip() for s in str(text).split(",") if s.strip()]
        if not items:
            raise ValueError(f"expected a comma-separated list, got {text!r}")
        return tuple(kind(s) for s in items)

    parse.__name__ = "comma-separated list"
    return parse


def add_arguments(parser) -> None:
    """The options of `simscale experiment simscale` (`simscale_env.cli` runs `run_from_args` and prints its summary)."""
    from training.runs import int_at_least

    d = ExperimentConfig.__dataclass_fields__

    def default(name):
        f = d[name]
        return f.default if f.default is not dataclasses.MISSING else f.default_factory()

    parser.add_argument("--planners", type=_csv_list(str), default=default("planners"), metavar="P,P",
                        help="planners (default ltf,gtrs_dense; also diffusiondrive; presets ltf_navsim, ...)")
    parser.add_argument("--experts", type=_csv_list(str), default=default("experts"), metavar="E,E",
                        help="pseudo-experts of the sim data (default pdm_closed,recovery)")
    parser.add_argument("--rounds", type=_csv_list(int), default=default("rounds"), metavar="R,R",
                        help="sim rounds per cell, 0 = real only (default 0,1,3)")
    parser.add_argument("--seeds", type=int_at_least(1), default=default("seeds"), metavar="N",
                        help="seeds 0..N-1 per cell (default 3)")
    parser.add_argument("--real-split", default=default("real_split"), metavar="SPLIT",
                        help="real training samples (default mini-navtrain-frames)")
    parser.add_argument("--gen-split", default=None, metavar="SPLIT",
                        help="base scenes of the generation rounds (default: the real split)")
    parser.add_argument("--eval-split", default=default("eval_split"), metavar="SPLIT",
                        help="evaluation split (default mini-navhard)")
    parser.add_argument("--eval-modes", type=_csv_list(str), default=default("eval_modes"), metavar="M,M",
                        help="evaluation modes (default two_stage,closed_loop)")
    parser.add_argument("--stage2-starts", type=int_at_least(1), default=default("stage2_starts"), metavar="N",
                        help="two_stage: stage-2 start pairs per token (default 2)")
    parser.add_argument("--epochs", type=int_at_least(1), default=default("epochs"), metavar="N",
                        help="epochs (default 2)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=default("batch_size"), metavar="B",
                        help="batch size (default 16)")
    parser.add_argument("--lr", type=_lr, default=default("lr"), metavar="LR|recipe",
                        help="every planner's learning rate, or 'recipe' for each planner's own "
                             "(training.train.RECIPES) (default 1e-3: short CPU runs)")
    parser.add_argument("--max-steps", type=int_at_least(1), default=None, metavar="N",
                        help="at most N optimisation steps per epoch (quick runs)")
    parser.add_argument("--set", dest="planner_config", action="append", metavar="[PLANNER.]KEY=VALUE",
                        help="a planner config field for every planner (image_size=[256,64]) or one "
                             "(gtrs_dense.num_decoder_layers=1); VALUE is JSON where it parses")
    parser.add_argument("--vocab", type=Path, default=None, metavar="V.npy",
                        help="GTRS-Dense's vocabulary (default: k-means of the real split's human plans, built once)")
    parser.add_argument("--vocab-k", type=int_at_least(1), default=default("vocab_k"), metavar="K",
                        help="size of the built vocabulary (default 256)")
    parser.add_argument("--gtrs-imitation", action="store_true",
                        help="GTRS-Dense co-training with imitation on sim samples too (default: rewards-only)")
    parser.add_argument("--gen-seed", type=int_at_least(0), default=0, metavar="S", help="generation seed (default 0)")
    parser.add_argument("--eval-seed", type=_eval_seed, default=default("eval_seed"), metavar="S|cell",
                        help="the evaluation seed of every cell: the same perturbed starts for all (paired, as "
                             "NAVSIM's fixed navhard), or 'cell' for each cell's training seed (default 0)")
    parser.add_argument("--gen-every", type=int_at_least(1), default=default("gen_every"), metavar="N",
                        help="generate sim data from every N-th token of the generation split (default 8)")
    parser.add_argument("--gen-size", default=None, metavar="WxH",
                        help="generated camera size (default 480x224, the real samples' size)")
    parser.add_argument("--workers", type=int_at_least(1), default=default("workers"), metavar="K",
                        help="cells (and generation tasks) in parallel: K processes or Ray tasks (default 2)")
    parser.add_argument("--ray", action="store_true", help="run cells and generation as Ray tasks")
    parser.add_argument("--ray-address", default=None, metavar="ADDR", help="the Ray cluster to join (implies --ray)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="the experiment folder (created; a rerun continues it and reuses finished cells)")
    parser.add_argument("--dataset", choices=("large", "mini"), default="large",
                        help="the mini dataset preset: large (36 logs, 12 test logs; built on demand into the cache's "
                             "mini-large, about 8 minutes once) or mini (the embedded 12 logs) (default large)")
    parser.add_argument("--data", type=Path, default=None,
                        help="a mini dataset folder to use instead of --dataset's (e.g. a `simscale data build-mini "
                             "--preset large` elsewhere)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or messages")


def _lr(text: str) -> float | None:
    return None if text == "recipe" else float(text)


def _eval_seed(text: str) -> int | None:
    from training.runs import int_at_least

    return None if text == "cell" else int_at_least(0)(text)


def _planner_config(items) -> dict:
    over: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ExperimentError(f"--set needs [PLANNER.]KEY=VALUE, got {item!r}")
        try:
            v = json.loads(value)
        except json.JSONDecodeError:
            v = value
        planner, dot, field_ = key.partition(".")
        if dot:
            over.setdefault(planner, {})[field_] = v
        else:
            over[key] = v
    return over


def config_from_args(args) -> ExperimentConfig:
    size = {}
    if args.gen_size:
        w, x, h = str(args.gen_size).lower().partition("x")
        try:
            size = {"gen_width": int(w), "gen_height": int(h)}
        except ValueError:
            raise ExperimentError(f"--gen-size must be WxH (e.g. 480x224), got {args.gen_size!r}") from None
    return ExperimentConfig(planners=tuple(args.planners), experts=tuple(args.experts), rounds=tuple(args.rounds),
                            seeds=args.seeds, real_split=args.real_split, gen_split=args.gen_split,
                            eval_split=args.eval_split, eval_modes=tuple(args.eval_modes),
                            stage2_starts=args.stage2_starts, epochs=args.epochs, batch_size=args.batch_size,
                            lr=args.lr,
                            max_steps_per_epoch=args.max_steps, planner_config=_planner_config(args.planner_config),
                            vocab=str(args.vocab) if args.vocab else None, vocab_k=args.vocab_k,
                            gtrs_rewards_only=not args.gtrs_imitation, gen_seed=args.gen_seed, gen_every=args.gen_every,
                            eval_seed=args.eval_seed, workers=args.workers,
                            ray=bool(args.ray or args.ray_address), ray_address=args.ray_address, **size)


def run_from_args(args) -> dict:
    """`simscale experiment simscale`: runs `run_experiment` and returns the summary the CLI prints as one JSON line
    (cells run / reused / failed, the table, the summary; the CLI exits with status 1 when a cell failed).
    SimScaleErrors propagate (the CLI prints them as one line, status 2); progress goes through logging."""
    if args.data:
        from simscale_env.errors import MissingFileError

        if not args.data.is_dir():
            raise MissingFileError(args.data, "mini dataset folder not found (build one with `simscale data "
                                              "build-mini --out DIR`)")
        os.environ["SIMSCALE_MINI"] = str(args.data)
    cfg = config_from_args(args)
    _check_out(Path(args.out))  # a folder that is not an experiment's: one error before a dataset build
    if not args.data and not any(os.environ.get(v) for v in ("NUPLAN_DATA_ROOT", "OPENSCENE_DATA_ROOT")):
        # the preset's dataset (built on demand; a mistyped split name is an error before a build), given to the
        # cells (spawned processes, Ray) as the mini dataset
        from simscale_env.data.paths import ensure_mini

        splits = dict.fromkeys(s for s in (cfg.real_split, cfg.gen_split, cfg.eval_split) if s is not None)
        os.environ["SIMSCALE_MINI"] = str(ensure_mini(preset=args.dataset, progress=not args.quiet, splits=splits))
    argv = getattr(args, "argv", None)
    command = shlex.join(["simscale", *argv] if argv else sys.argv)
    r = run_experiment(cfg, args.out, progress=not args.quiet, command=command)
    return {"cells": len(r.results) + len(r.failed), "ran": len(r.ran), "reused": len(r.reused),
            "failed": len(r.failed), "seconds": round(r.seconds, 1), "table": r.files["table_md"],
            "summary": r.files["summary"], "plot": r.files["plot"]}
