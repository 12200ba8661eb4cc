"""Trajectory vocabularies and per-scene reward labels, as GTRS / Hydra-MDP train with.

- :func:`human_plans` collects the logged ego futures (default 40 poses at 0.1 s, x / y / heading in the rear-axle
  frame of the current pose) from the logs of a split.
- :func:`kmeans_vocabulary` clusters them (k-means++ seeding, Lloyd iterations, deterministic for a seed) into a
  [K, 40, 3] vocabulary; :func:`save_vocabulary` writes it as `.npy` atomically.
- :func:`label_scenes` scores the whole vocabulary in every scene of a split with the batched EPDMS engine (one call
  per scene, EP pairwise against PDM-Closed as SimScale's GTRS labels) and writes `<token>.npz` files of float16
  arrays per sub-score (GTRS's label format), resumable.

    simscale vocab build --split navtrain --k 8192 --out vocab.npy
    simscale vocab label --split navtrain --vocab vocab.npy --out labels/
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ..geometry import global_to_local
from ..sim.plans import interpolate_poses

# the sub-scores written per scene (PlanScores fields) plus the aggregate
LABEL_KEYS = ("no_at_fault_collisions", "drivable_area_compliance", "driving_direction_compliance",
              "traffic_light_compliance", "ego_progress", "time_to_collision_within_bound", "lane_keeping",
              "history_comfort", "pdm_score")


@dataclass(frozen=True)
class VocabularyConfig:
    num_poses: int = 40
    interval_s: float = 0.1
    stride_s: float = 0.5  # one human plan every stride along each log
    k: int = 8192
    iterations: int = 30
    seed: int = 0


def human_plans(log_paths: Iterable[str | Path], *, num_poses: int = 40, interval_s: float = 0.1,
                stride_s: float = 0.5, progress: bool = False) -> np.ndarray:
    """Logged ego futures [S, num_poses, 3] in the rear-axle frame of the pose they start from, every `stride_s` along
    each log (frames without the full horizon ahead are skipped)."""
    from ..data.nuplan_db import LogDB

    paths = [Path(p) for p in log_paths]
    if not paths:
        raise ValueError("no logs given")
    out = []
    it = paths
    if progress:
        from tqdm import tqdm

        it = tqdm(paths, desc="human plans", unit="log")
    horizon_us = int(round(num_poses * interval_s * 1e6))
    for path in it:
        with LogDB(path) as db:
            e = db.ego_arrays()
        t = e["timestamp"]
        if len(t) < 2:
            continue
        poses = np.stack([e["x"], e["y"], np.unwrap(e["heading"])], -1)
        starts = np.arange(t[0], t[-1] - horizon_us + 1, int(round(stride_s * 1e6)), dtype=np.int64)
        if len(starts) == 0:
            continue
        q = starts[:, None] + np.round(np.arange(num_poses + 1) * interval_s * 1e6).astype(np.int64)[None]
        glob = interpolate_poses(t, poses, q.reshape(-1)).reshape(len(starts), num_poses + 1, 3)
        for i in range(len(starts)):
            out.append(global_to_local(glob[i, 1:], glob[i, 0]))
    if not out:
        raise ValueError(f"no log holds {num_poses * interval_s:.1f} s of ego poses")
    return np.stack(out)


def _sq_dists(x: np.ndarray, c: np.ndarray, c_norm: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre index and squared distance for each row of x."""
    idx = np.empty(len(x), dtype=np.int64)
    d = np.empty(len(x))
    for a in range(0, len(x), chunk):
        xa = x[a:a + chunk]
        dd = (xa * xa).sum(1)[:, None] - 2.0 * xa @ c.T + c_norm[None]
        j = dd.argmin(1)
        idx[a:a + chunk] = j
        d[a:a + chunk] = np.maximum(dd[np.arange(len(xa)), j], 0.0)
    return idx, d


def kmeans_vocabulary(plans: np.ndarray, k: int, *, iterations: int = 30, seed: int = 0,
                      progress: bool = False) -> np.ndarray:
    """k-means over flattened plans [S, P, 3] -> centres [k, P, 3] sorted by cluster size (largest first).
    k-means++ seeding, Lloyd iterations until no assignment changes; empty clusters are re-seeded at the points
    farthest from their centres. Deterministic for a seed."""
    plans = np.asarray(plans, dtype=np.float64)
    if plans.ndim != 3 or plans.shape[-1] != 3:
        raise ValueError(f"plans must have shape [S, P, 3], got {plans.shape}")
    if not np.all(np.isfinite(plans)):
        raise ValueError("plans contain NaN or infinite values")
    S = len(plans)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if S < k:
        raise ValueError(f"k={k} clusters need at least {k} human plans, the split gives {S} "
                         f"(lower k, add logs, or a smaller stride)")
    x = plans.reshape(S, -1)
    rng = np.random.default_rng(seed)
    # k-means++ seeding
    centres = np.empty((k, x.shape[1]))
    centres[0] = x[rng.integers(S)]
    d = ((x - centres[0]) ** 2).sum(1)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=k + iterations, desc="k-means", unit="step")
    for j in range(1, k):
        tot = d.sum()
        i = rng.choice(S, p=d / tot) if tot > 0 else rng.integers(S)
        centres[j] = x[i]
        d = np.minimum(d, ((x - centres[j]) ** 2).sum(1))
        if bar is not None and j % 256 == 0:
            bar.update(256)
    if bar is not None:
        bar.n = k
        bar.refresh()
    labels = None
    for _ in range(iterations):
        new, dist = _sq_dists(x, centres, (centres * centres).sum(1))
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(centres)
        np.add.at(sums, labels, x)
        nonempty = counts > 0
        centres[nonempty] = sums[nonempty] / counts[nonempty, None]
        empty = np.nonzero(~nonempty)[0]
        if len(empty):
            far = np.argsort(-dist, kind="stable")[:len(empty)]
            centres[empty] = x[far]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    labels, _ = _sq_dists(x, centres, (centres * centres).sum(1))
    order = np.argsort(-np.bincount(labels, minlength=k), kind="stable")
    return centres[order].reshape(k, plans.shape[1], 3)


def _atomic_write(path: Path, write) -> Path:
    from ..data.atomic import atomic_write_path

    return atomic_write_path(path, write)


def save_vocabulary(path: str | Path, vocab: np.ndarray) -> Path:
    """Write a [K, P, 3] vocabulary as float32 `.npy` (atomically)."""
    vocab = np.asarray(vocab)
    if vocab.ndim != 3 or vocab.shape[-1] != 3:
        raise ValueError(f"vocabulary must have shape [K, P, 3], got {vocab.shape}")

    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, vocab.astype(np.float32))

    return _atomic_write(Path(path), write)


def load_vocabulary(path: str | Path) -> np.ndarray:
    from ..errors import CorruptFileError, MissingFileError

    path = Path(path)
    if not path.exists():
        raise MissingFileError(path, "vocabulary file not found")
    try:
        v = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise CorruptFileError(path, f"not a .npy array ({exc})") from exc
    if v.ndim != 3 or v.shape[-1] != 3 or not np.all(np.isfinite(v)):
        raise CorruptFileError(path, f"expected a finite [K, P, 3] trajectory vocabulary, got shape {v.shape}")
    return v.astype(np.float64)


def label_scene(sim, world, vocab: np.ndarray, *, interval_s: float = 0.1, agent_mode: str = "non_reactive",
                reference: str = "pdm_closed") -> dict[str, np.ndarray]:
    """Sub-scores of every vocabulary plan from `world`: {key: float16 [K]} for LABEL_KEYS.

    EP: `reference="pdm_closed"` (default) normalises each plan pairwise against PDM-Closed's plan, as SimScale's
    GTRS labels (`PROGRESS_MODE=gen_gt`); `"joint"` normalises over the vocabulary (NAVSIM's score_proposals)."""
    from .pseudo_sim import pseudo_simulate

    if reference not in ("pdm_closed", "joint"):
        raise ValueError(f"reference must be 'pdm_closed' or 'joint', got {reference!r}")
    ref_plan = None
    if reference == "pdm_closed":
        from ..experts import pdm_closed_plan
        from ..geometry import global_to_local

        pdm = pdm_closed_plan(sim, world)
        step = max(1, int(round(interval_s / 0.1)))
        ref_plan = global_to_local(pdm.trajectory[step::step], world.ego[:3])[: vocab.shape[1]]
    scores, _ = pseudo_simulate(sim, world, vocab, agent_mode=agent_mode, plan_interval_s=interval_s,
                                reference_plan=ref_plan)
    out = {k: getattr(scores, k) for k in LABEL_KEYS if k != "pdm_score"}
    out["pdm_score"] = scores.pdm_score()
    return {k: np.asarray(v, dtype=np.float16) for k, v in out.items()}


def label_scenes(builder, tokens: Iterable[str], maps_root: str | Path, vocab: np.ndarray, out_dir: str | Path, *,
                 interval_s: float = 0.1, agent_mode: str = "non_reactive", reference: str = "pdm_closed",
                 scene_window: str = "navsim", progress: bool = True) -> dict:
    """Write `<out_dir>/<token>.npz` (float16 per sub-score, LABEL_KEYS) for each scenario token; tokens whose file
    exists are skipped (resume). Also writes `<out_dir>/labels.json` (vocabulary shape, keys, agent mode).

    `scene_window`: the state labelled, as the env's option of that name. "navsim" (default): NAVSIM's current frame
    of the token (`builder.navsim_scenario`), the frame GTRS's `gen_vocab_score.py` labels and the env starts at;
    "nuplan": the first frame of the token's nuPlan challenge window (3 s before the token)."""
    from ..map import load_map
    from ..sim import SimConfig, Simulation

    if scene_window not in ("navsim", "nuplan"):
        raise ValueError(f"scene_window must be 'navsim' or 'nuplan', got {scene_window!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokens = list(tokens)
    meta = {"format": "simscale-vocab-labels/1", "vocabulary_shape": list(vocab.shape), "keys": list(LABEL_KEYS),
            "agent_mode": agent_mode, "interval_s": interval_s, "ep_reference": reference, "dtype": "float16",
            "scene_window": scene_window}
    _atomic_write(out_dir / "labels.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1)))
    done = skipped = 0
    it = tokens
    if progress:
        from tqdm import tqdm

        it = tqdm(tokens, desc="labelling scenes", unit="scene")
    maps: dict = {}
    for tok in it:
        target = out_dir / f"{tok}.npz"
        if target.exists():
            skipped += 1
            continue
        sc = builder.navsim_scenario(tok) if scene_window == "navsim" else builder.load(tok)
        if sc.map_location not in maps:
            maps[sc.map_location] = load_map(sc.map_location, maps_root)
        sim = Simulation(sc, maps[sc.map_location], SimConfig(agent_mode=agent_mode))
        labels = label_scene(sim, sim.reset(), vocab, interval_s=interval_s, agent_mode=agent_mode,
                             reference=reference)

        def write(tmp, labels=labels):
            with open(tmp, "wb") as f:
                np.savez(f, **labels)

        _atomic_write(target, write)
        done += 1
    return {"scenes": len(tokens), "written": done, "skipped": skipped, "out": str(out_dir)}
