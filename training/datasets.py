"""Training datasets for the learned planners (issue 18, deliverable 2): real samples from the logs, sim samples from
the data engine's shards, and a loader that pools or mixes them.

- **Real samples** (`build_real_samples`, cached by `real_samples`): for every token of a split the env is reset at
  the logged (unperturbed) start and one row is written with the columns of a sim row (`training.generate`) where
  they overlap: "token" (the scene token) = "base_token", "round" 0, "log_name", "map_location", "timestamp_us",
  "expert" ("human"), the zero "perturbation_*", NAVSIM's 4 history frames from `info["ego_history"]` ("ego_pose",
  "ego_velocity", "ego_acceleration", "driving_command"), per camera channel a list of ONE JPEG (the current frame,
  `obs["cameras"]`: rendered by the env's renderer, encoded as `training.generate` encodes, so that a real and a sim
  image of the same state are the same bytes), "camera_meta", "label_poses" = `info["logged_plan"]` (the logged
  human's next 8 poses at 0.5 s) and, with labels, "vocab_scores" (float16 [K, 9] bytes, `SUB_METRICS` order, EC
  NaN) and "vocab_epdms" (float16 [K]). Labels come from a label folder of `simscale vocab label` (`vocab_labels`:
  DIR/<token>.npz of LABEL_KEYS; one clear error naming the folder and the first token it lacks) or are computed at
  the sample's own state with a vocabulary `.npy` (`vocab`: `metrics.vocabulary.label_scene`, non-reactive, EP
  pairwise against PDM-Closed: the very call `training.generate` makes for a sim sample).
  The folder: ``build.json`` (the build's identity), ``samples-NNNNN.parquet`` (`shard_rows` tokens each, in the
  split's order, each written atomically: a killed build resumes at the first missing shard) and ``manifest.json``
  (written last, atomically: format REAL_FORMAT, the shards with their sizes and sha256). A folder that already holds
  the same build is returned as it is. The data folder is never written into.
- **Reading** (`SampleTable`, `PlannerDataset`): a run folder's manifest lists its shards; they are read
  column-projected (pyarrow) and only what a planner reads is kept in memory: the current frame's JPEGs of CAM_L0,
  CAM_F0, CAM_R0 (the last element of each list) as Arrow binary arrays, the status (the current frame's command,
  velocity and acceleration, `features.status_vector`), the target "trajectory" (label_poses) and, if asked, the
  vocab label bytes. `PlannerDataset` yields one sample in the planner contract's format (unbatched): the stitched
  image (`features.stitch_front_cameras` at the planner's image_size, `features.image_tensor`), "status",
  "trajectory", "vocab_scores" [K, 9] float32 (NaN where unknown, `has_vocab_scores` False for a sample without
  labels), "is_sim" (round > 0), "imitation_mask" (0 for a sim sample in rewards-only mode) and "token". Stitched
  images are kept in memory per dataset object when all of them fit `cache_bytes` (default 2 GiB), so each JPEG is
  decoded once per process; otherwise they are decoded at every access.
- **Loading** (`make_loader`, `collate`): the default pools the union of the real and sim sets, sampled uniformly
  without replacement per epoch (SimScale's co-training: the union of the real and pseudo-expert data); with
  `sim_ratio` r every batch holds round(r * B) sim samples (drawn without replacement from the sim union, cycling)
  and B - round(r * B) real ones, and an epoch is one pass over the real set. `rewards_only=True` zeroes the
  imitation term of sim samples (their reward losses stay). The batch order is a pure function of (seed, epoch), the
  same for any number of worker processes (torch DataLoader, one thread each, non-persistent), and `start_batch`
  resumes an epoch mid-way with the same batches.

    real = PlannerDataset(real_samples("navtrain", vocab_labels="labels/"), (1024, 256), vocab_scores=True)
    sim = [PlannerDataset("runs/gen", (1024, 256), vocab_scores=True)]
    for batch in make_loader(real, sim, batch_size=64, seed=0, epoch=e, rewards_only=True, workers=4): ...
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from agents.planners.features import FRONT_CHANNELS, image_tensor, stitch_front_cameras
from simscale_env.errors import CorruptFileError, MissingFileError, OutputFolderError, SchemaError, SimScaleError
from simscale_env.metrics import SUB_METRICS

log = logging.getLogger(__name__)

REAL_FORMAT = "simscale-real-samples/1"  # manifest.json "format" of a real-samples folder
SIM_FORMAT = "simscale-gen-manifest/1"  # training.engine.MANIFEST_FORMAT (a `simscale generate` run)
REAL_BUILD_VERSION = 1  # bump when real rows change: part of the real-samples cache key
BUILD_FILE = "build.json"
MANIFEST_FILE = "manifest.json"
NUM_HISTORY = 4  # NAVSIM's history frames (navsim/common/dataclasses.py SceneFilter.num_history_frames)
NUM_POSES = 8  # the plan: 8 poses at 0.5 s (NAVSIM's TrajectorySampling(time_horizon=4, interval_length=0.5))
NUM_SUB = len(SUB_METRICS)
IMAGE_CACHE_BYTES = 2 << 30  # stitched uint8 images kept per dataset object up to this total
# what a real build may not change in the env (it renders the logged start, observed as a planner observes it)
_REQUIRED_ENV = {"perturb": False, "pseudo_experts": False, "plan_scoring": None,
                 "observation_keys": ("cameras", "ego_status")}
_DATA_KEYS = ("data_root", "maps_root", "openscene_root")


class DatasetError(SimScaleError, ValueError):
    """A dataset input that cannot work: vocabularies of different sizes, cameras a planner needs missing, a bad
    loader argument."""


# ================================================================================================ real samples
@dataclass(frozen=True)
class RealConfig:
    """What a real-samples build renders and labels (`build_real_samples`'s arguments)."""

    split: str = "mini-navtrain"  # env split name or scene_filter YAML path
    channels: tuple[str, ...] = FRONT_CHANNELS
    width: int = 480
    height: int = 224
    jpeg_quality: int = 90
    vocab_labels: str | None = None  # a label folder of `simscale vocab label` (DIR/<token>.npz)
    vocab: str | None = None  # or a vocabulary .npy: labels computed at each sample's state
    env_kwargs: dict = field(default_factory=dict)  # data_root, maps_root, data_source, scene_seed, ...
    shard_rows: int = 256

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(str(c) for c in self.channels))
        object.__setattr__(self, "split", str(self.split))
        for name in ("vocab_labels", "vocab"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, str(v))
        for name in ("width", "height", "shard_rows"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise DatasetError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.jpeg_quality, bool) or not isinstance(self.jpeg_quality, (int, np.integer)) \
                or not 1 <= self.jpeg_quality <= 100:
            raise DatasetError(f"jpeg_quality must be an integer in [1, 100], got {self.jpeg_quality!r}")
        if not self.channels:
            raise DatasetError("channels must name at least one camera channel")
        if self.vocab_labels is not None and self.vocab is not None:
            raise DatasetError("give either vocab_labels (a label folder) or vocab (a vocabulary .npy), not both")
        if not isinstance(self.env_kwargs, dict):
            raise DatasetError(f"env_kwargs must be a dict, got {type(self.env_kwargs).__name__}")
        for k, v in _REQUIRED_ENV.items():
            if k in self.env_kwargs and self.env_kwargs[k] != v:
                raise DatasetError(f"real samples need env {k}={v!r}; env_kwargs has {k}={self.env_kwargs[k]!r}")
        for k in ("cameras", "width", "height"):
            if k in self.env_kwargs:
                raise DatasetError(f"env_kwargs may not set {k!r}: pass channels / width / height")


def make_real_env(cfg: RealConfig):
    """The env a real build renders with: the split's env at the logged start (perturb=False), observing the cameras
    and the ego status as a planner does, without pseudo-experts or plan scoring."""
    import gymnasium as gym

    import simscale_env  # noqa: F401  (registration)
    from simscale_env.envs import split_env_spec

    env_id, kw = split_env_spec(cfg.split)
    kw.update(cfg.env_kwargs)
    kw.update(_REQUIRED_ENV)
    kw.update(cameras=cfg.channels, width=int(cfg.width), height=int(cfg.height))
    return gym.make(env_id, disable_env_checker=True, **kw)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _data_config(env_kwargs: dict):
    from simscale_env.data.paths import DataConfig

    return DataConfig.resolve(*(env_kwargs.get(k) for k in _DATA_KEYS))


def _data_identity(env_kwargs: dict) -> dict:
    """Where the scenes come from: the resolved data roots and the dataset's manifest.json (the mini builder records
    its version and seed there)."""
    data = _data_config(env_kwargs)
    roots = {"nuplan_data_root": data.nuplan_data_root, "openscene_root": data.openscene_root,
             "maps_root": data.nuplan_maps_root}
    out = {k: (str(Path(v).resolve()) if v is not None else None) for k, v in roots.items()}
    for v in (data.nuplan_data_root, data.openscene_root):
        if v is not None and (Path(v) / "manifest.json").is_file():
            out["manifest_sha256"] = _sha256_file(Path(v) / "manifest.json")
            break
    return out


def _label_meta(folder: Path) -> dict:
    meta_path = folder / "labels.json"
    if not folder.is_dir():
        raise MissingFileError(folder, "label folder not found (write it with `simscale vocab label`)")
    if not meta_path.is_file():
        raise MissingFileError(meta_path, "no labels.json: not a label folder of `simscale vocab label`")
    try:
        meta = json.loads(meta_path.read_text())
        k = int(meta["vocabulary_shape"][0])
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise CorruptFileError(meta_path, f"not a labels.json of `simscale vocab label` ({exc})") from None
    return {**meta, "k": k}


def _label_fingerprint(folder: Path, tokens: list[str]) -> dict:
    """The identity of a label folder's labels for `tokens`: labels.json's bytes and every <token>.npz's size and
    modification time (a stat per file, not its bytes: the second call stays cheap). A token without a file is one
    error naming the folder and the token."""
    _label_meta(folder)
    h = hashlib.sha256((folder / "labels.json").read_bytes())
    for tok in tokens:
        p = folder / f"{tok}.npz"
        try:
            st = p.stat()
        except FileNotFoundError:
            raise MissingFileError(folder, f"the label folder has no labels of token {tok} ({p.name}); label the "
                                           f"split with `simscale vocab label`") from None
        h.update(f"{tok}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return {"folder": str(folder.resolve()), "sha256": h.hexdigest()}


def _identity(cfg: RealConfig, tokens: list[str]) -> dict:
    from simscale_env.envs import split_env_spec

    env_id, _ = split_env_spec(cfg.split)
    env_kw = {k: v for k, v in cfg.env_kwargs.items() if k not in _DATA_KEYS}
    labels = None
    if cfg.vocab_labels is not None:
        labels = _label_fingerprint(Path(cfg.vocab_labels), tokens)
    elif cfg.vocab is not None:
        if not Path(cfg.vocab).is_file():
            raise MissingFileError(cfg.vocab, "vocabulary file not found")
        labels = {"vocab_sha256": _sha256_file(Path(cfg.vocab))}
    return {"format": REAL_FORMAT, "builder": REAL_BUILD_VERSION, "env_id": env_id, "tokens": len(tokens),
            "tokens_sha256": hashlib.sha256("\n".join(tokens).encode()).hexdigest(),
            "channels": list(cfg.channels), "width": int(cfg.width), "height": int(cfg.height),
            "jpeg_quality": int(cfg.jpeg_quality), "shard_rows": int(cfg.shard_rows), "labels": labels,
            "env_kwargs": json.loads(json.dumps(env_kw, sort_keys=True, default=str)),
            "data": _data_identity(cfg.env_kwargs)}


def _load_label_file(folder: Path, token: str, k: int) -> dict:
    """The row columns of <folder>/<token>.npz: float16 [K, 9] sub-scores in SUB_METRICS order (EC NaN: a label
    folder has no previous frame) and the float16 [K] EPDMS."""
    p = folder / f"{token}.npz"
    if not p.is_file():
        raise MissingFileError(folder, f"the label folder has no labels of token {token} ({p.name})")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {name: np.asarray(z[name]) for name in z.files}
    except (ValueError, OSError) as exc:
        raise CorruptFileError(p, f"not a label .npz ({exc})") from None
    cols = []
    for name in SUB_METRICS:
        a = arrays.get(name)
        if a is None:
            a = np.full(k, np.nan, np.float16)
        if a.shape != (k,):
            raise CorruptFileError(p, f"'{name}' has shape {a.shape}; labels.json says the vocabulary has {k} "
                                      f"trajectories")
        cols.append(a.astype(np.float16))
    pdm = arrays.get("pdm_score")
    if pdm is None or pdm.shape != (k,):
        raise CorruptFileError(p, f"'pdm_score' missing or not of shape ({k},)")
    return {"vocab_scores": np.stack(cols, -1).astype("<f2").tobytes(),
            "vocab_epdms": pdm.astype("<f2").tobytes()}


def real_sample_row(env, cfg: RealConfig, token: str, *, vocab: np.ndarray | None = None,
                    label_meta: dict | None = None) -> dict:
    """One real sample: `env` (`make_real_env(cfg)`) reset at the logged start of `token`; the row (module
    docstring)."""
    from .generate import camera_meta_json, encode_jpeg, vocab_label_columns

    u = env.unwrapped
    obs, info = env.reset(options={"scenario_token": token})
    if info["perturbed"]:
        raise DatasetError(f"{token}: the env perturbed the start; real samples need perturb=False")
    hist = info["ego_history"]
    row = {"token": str(token), "base_token": str(token), "round": 0, "log_name": str(info["log_name"]),
           "map_location": str(info["map_location"]), "timestamp_us": int(info["time_us"]), "expert": "human",
           "perturbation_lateral": 0.0, "perturbation_longitudinal": 0.0, "perturbation_heading": 0.0,
           "perturbation_speed_scale": 1.0,
           "ego_pose": np.asarray(hist["ego_pose"], np.float64).ravel().tolist(),
           "ego_velocity": np.asarray(hist["ego_velocity"], np.float64).ravel().tolist(),
           "ego_acceleration": np.asarray(hist["ego_acceleration"], np.float64).ravel().tolist(),
           "driving_command": [int(c) for c in np.asarray(hist["driving_command"]).ravel()],
           "label_poses": np.asarray(info["logged_plan"], np.float32).astype(np.float64).ravel().tolist()}
    if label_meta is not None:
        row.update(_load_label_file(Path(cfg.vocab_labels), token, label_meta["k"]))
    elif vocab is not None:
        row.update(vocab_label_columns(u.sim, u.world, vocab))
    images = np.asarray(obs["cameras"])  # [n, H, W, 3]: the current frame, as the env observes it
    for j, ch in enumerate(cfg.channels):
        row[ch] = [encode_jpeg(images[j], cfg.jpeg_quality)]
    row["camera_meta"] = camera_meta_json(info["camera_calibration"], cfg.channels)
    return row


def _check_out(out: Path, identity: dict, cfg: RealConfig) -> str:
    """"done" (the folder holds this build, complete), "resume" (this build, unfinished) or "new"; an error for
    anything else. Writes nothing."""
    from .runs import check_run_folder, config_diff

    data = _data_config(cfg.env_kwargs)
    for root in (data.nuplan_data_root, data.openscene_root, data.nuplan_maps_root):
        if root is not None and out.resolve().is_relative_to(Path(root).resolve()):
            raise OutputFolderError(out, f"inside the data folder {root}: real samples are written elsewhere (the "
                                         f"data is only read)")
    rec = check_run_folder(out, BUILD_FILE, "a real-samples")
    if rec is None:
        return "new"
    build = out / BUILD_FILE
    if not isinstance(rec.get("identity"), dict):
        raise CorruptFileError(build, "not a real-samples build record; use another output folder")
    old = rec["identity"]
    if old != identity:
        raise OutputFolderError(out, f"holds real samples of another build ({config_diff(old, identity, 4)}): use "
                                     f"another output folder, or remove this one")
    mpath = out / MANIFEST_FILE
    if mpath.is_file():
        try:
            if json.loads(mpath.read_text()).get("complete"):
                return "done"
        except ValueError:
            pass
    return "resume"


def build_real_samples(split, out_dir, *, channels=FRONT_CHANNELS, width: int = 480, height: int = 224,
                       vocab_labels=None, vocab=None, env_kwargs: dict | None = None, progress: bool = True,
                       jpeg_quality: int = 90, shard_rows: int = 256) -> Path:
    """Real samples of every token of `split` in `out_dir` (module docstring); returns `out_dir`. A folder holding
    this build already is returned as it is (an unfinished one is resumed); one holding anything else is an error
    and nothing is written."""
    from tqdm import tqdm

    from simscale_env.data.atomic import atomic_write_text
    from simscale_env.envs import split_tokens

    from .engine import versions, write_shard

    cfg = RealConfig(split=split, channels=channels, width=width, height=height, jpeg_quality=jpeg_quality,
                     vocab_labels=vocab_labels, vocab=vocab, env_kwargs=dict(env_kwargs or {}),
                     shard_rows=shard_rows)
    tokens = [str(t) for t in split_tokens(cfg.split, cfg.env_kwargs)]
    if not tokens:
        raise DatasetError(f"split {cfg.split!r} has no tokens")
    identity = _identity(cfg, tokens)
    out = Path(out_dir)
    state = _check_out(out, identity, cfg)
    if state == "done":
        log.info("%s: real samples of %s already built", out, cfg.split)
        return out
    label_meta = _label_meta(Path(cfg.vocab_labels)) if cfg.vocab_labels else None
    vocab_arr = None
    if cfg.vocab is not None:
        from .generate import load_vocab

        vocab_arr = load_vocab(cfg.vocab)
    out.mkdir(parents=True, exist_ok=True)
    if state == "new":
        atomic_write_text(out / BUILD_FILE, json.dumps({"identity": identity, "config": asdict(cfg),
                                                        "command": " ".join(sys.argv)}, indent=1, default=str))
    n = cfg.shard_rows
    chunks = [tokens[i:i + n] for i in range(0, len(tokens), n)]
    names = [f"samples-{i:05d}.parquet" for i in range(len(chunks))]
    todo = [i for i, name in enumerate(names) if not (out / name).is_file()]
    log.info("%s: %d tokens in %d shards (%d to build)", cfg.split, len(tokens), len(chunks), len(todo))
    if todo:
        env = make_real_env(cfg)
        bar = tqdm(total=len(tokens), initial=len(tokens) - sum(len(chunks[i]) for i in todo), desc="real samples",
                   unit="sample", disable=not progress, file=sys.stderr, dynamic_ncols=True)
        try:
            for i in todo:
                rows = []
                for tok in chunks[i]:
                    rows.append(real_sample_row(env, cfg, tok, vocab=vocab_arr, label_meta=label_meta))
                    bar.update(1)
                write_shard(out / names[i], rows)
        finally:
            bar.close()
            env.close()
    shards = [{"file": name, "rows": len(chunk), "bytes": (out / name).stat().st_size,
               "sha256": _sha256_file(out / name)} for name, chunk in zip(names, chunks)]
    k = label_meta["k"] if label_meta else (int(vocab_arr.shape[0]) if vocab_arr is not None else None)
    manifest = {"format": REAL_FORMAT, "split": cfg.split, "identity": identity, "samples": len(tokens),
                "vocab_size": k, "labels": ({k2: v for k2, v in label_meta.items() if k2 != "k"} if label_meta else
                                            ({"vocab": cfg.vocab} if cfg.vocab else None)),
                "versions": versions(), "shards": shards, "complete": True}
    atomic_write_text(out / MANIFEST_FILE, json.dumps(manifest, indent=1, default=str))
    return out


def real_samples_dir(split, *, channels=FRONT_CHANNELS, width: int = 480, height: int = 224, vocab_labels=None,
                     vocab=None, env_kwargs: dict | None = None, jpeg_quality: int = 90, shard_rows: int = 256,
                     cache_root=None) -> Path:
    """The cache folder of a real build: <cache_root or $SIMSCALE_CACHE/training>/real-<key>, the key a hash of the
    build's identity (the split's tokens, channels, size, label folder fingerprint or vocabulary hash, the data roots
    and the dataset's manifest, the builder version)."""
    from simscale_env.data.paths import cache_dir
    from simscale_env.envs import split_tokens

    cfg = RealConfig(split=split, channels=channels, width=width, height=height, jpeg_quality=jpeg_quality,
                     vocab_labels=vocab_labels, vocab=vocab, env_kwargs=dict(env_kwargs or {}),
                     shard_rows=shard_rows)
    identity = _identity(cfg, [str(t) for t in split_tokens(cfg.split, cfg.env_kwargs)])
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache_root) if cache_root is not None else cache_dir() / "training"
    return root / f"real-{key}"


def real_samples(split, *, channels=FRONT_CHANNELS, width: int = 480, height: int = 224, vocab_labels=None,
                 vocab=None, env_kwargs: dict | None = None, progress: bool = True, jpeg_quality: int = 90,
                 shard_rows: int = 256, cache_root=None) -> Path:
    """The folder of the real samples of `split` (`build_real_samples`), built once into the cache
    (`real_samples_dir`) and reused: a second call only recomputes the key."""
    kw = dict(channels=channels, width=width, height=height, vocab_labels=vocab_labels, vocab=vocab,
              env_kwargs=env_kwargs, jpeg_quality=jpeg_quality, shard_rows=shard_rows)
    out = real_samples_dir(split, cache_root=cache_root, **kw)
    return build_real_samples(split, out, progress=progress, **kw)


# ================================================================================================ reading
def shard_paths(folder) -> tuple[dict, list[Path]]:
    """(manifest, shard paths) of a `simscale generate` run folder or a real-samples folder; a folder without a
    manifest, a manifest of something else, or a listed shard that is missing or of another size is one error."""
    folder = Path(folder)
    mpath = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise MissingFileError(folder, "sample folder not found")
    if not mpath.is_file():
        raise MissingFileError(mpath, "no manifest.json: not a run folder of `simscale generate` nor a real-samples "
                                      "folder (`training.datasets.build_real_samples`)")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as exc:
        raise CorruptFileError(mpath, f"not readable JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") not in (SIM_FORMAT, REAL_FORMAT):
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        raise SchemaError(mpath, f"format {fmt!r}: expected {SIM_FORMAT!r} (simscale generate) or {REAL_FORMAT!r} "
                                 f"(real samples)")
    if manifest.get("complete") is False:
        log.warning("%s: the run is not complete; reading the shards written so far", mpath)
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        raise SchemaError(mpath, "field 'shards' is missing or not a list")
    paths = []
    for i, s in enumerate(shards):
        name = s.get("file") if isinstance(s, dict) else None
        if not isinstance(name, str):
            raise SchemaError(mpath, f"shard entry {i} names no 'file'")
        p = folder / name
        if not p.is_file():
            raise MissingFileError(p, f"shard {i} listed in {mpath} not found")
        if isinstance(s.get("bytes"), int) and p.stat().st_size != s["bytes"]:
            raise CorruptFileError(p, f"{p.stat().st_size} bytes; {mpath} says {s['bytes']}")
        paths.append(p)
    return manifest, paths


def _last_of_lists(arr):
    """The last element of every list of a pyarrow ListArray (lists must not be empty)."""
    import pyarrow as pa

    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    offsets = arr.offsets.to_numpy()
    if np.any(offsets[1:] <= offsets[:-1]):
        raise ValueError("an empty list")
    return arr.values.take(pa.array(offsets[1:] - 1))


class SampleTable:
    """What a planner reads of one sample folder (a `simscale generate` run or real samples), column-projected from its
    shards: "token" (list of str), "round" int64 [N], "status" float32 [N, 8], "trajectory" float32 [N, 8, 3],
    "images" {channel: Arrow binary [N]} (the current frame's JPEG), "vocab" Arrow binary [N] (float16 [K, 9] or
    null) if asked and the folder has labels, and `vocab_size` K (None without labels)."""

    def __init__(self, folder, *, channels=FRONT_CHANNELS, vocab_scores: bool = False):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.folder = Path(folder)
        self.channels = tuple(channels)
        self.manifest, paths = shard_paths(self.folder)
        self.kind = "real" if self.manifest["format"] == REAL_FORMAT else "sim"
        need = ["token", "round", "driving_command", "ego_velocity", "ego_acceleration", "label_poses"]
        tokens, rounds, status, traj = [], [], [], []
        images = {ch: [] for ch in self.channels}
        vocab, has_vocab_col = [], False
        for p in paths:
            try:
                names = set(pq.read_schema(p).names)
            except (OSError, pa.ArrowInvalid) as exc:
                raise CorruptFileError(p, f"not a Parquet shard ({exc})") from None
            missing = [c for c in need if c not in names]
            if missing:
                raise SchemaError(p, f"missing columns {missing} (a sample shard has {need})")
            absent = [ch for ch in self.channels if ch not in names]
            if absent:
                have = [c for c in names if c.startswith("CAM_")]
                raise DatasetError(f"{self.folder}: no images of {', '.join(absent)} (the folder's cameras: "
                                   f"{', '.join(sorted(have)) or 'none'}); the planners read "
                                   f"{', '.join(self.channels)}: generate / build it with those cameras")
            cols = need + list(self.channels) + (["vocab_scores"] if vocab_scores and "vocab_scores" in names else [])
            t = pq.read_table(p, columns=cols)
            n = t.num_rows
            if n == 0:
                continue
            tokens += t.column("token").to_pylist()
            rounds.append(t.column("round").to_numpy())

            def mat(name, width, t=t, p=p, n=n):
                col = t.column(name).combine_chunks()
                lens = col.value_lengths().to_numpy(zero_copy_only=False)
                if np.any(lens != width):
                    raise SchemaError(p, f"column '{name}': lists of {sorted(set(lens.tolist()))[:3]} values; "
                                         f"expected {width}")
                return col.values.to_numpy(zero_copy_only=False).reshape(n, width)

            cmd = mat("driving_command", 4 * NUM_HISTORY)[:, -4:]
            vel = mat("ego_velocity", 2 * NUM_HISTORY)[:, -2:]
            acc = mat("ego_acceleration", 2 * NUM_HISTORY)[:, -2:]
            status.append(np.concatenate([cmd, vel, acc], 1).astype(np.float32))  # features.status_vector's order
            traj.append(mat("label_poses", 3 * NUM_POSES).reshape(n, NUM_POSES, 3).astype(np.float32))
            for ch in self.channels:
                try:
                    images[ch].append(_last_of_lists(t.column(ch)))
                except ValueError:
                    raise SchemaError(p, f"column '{ch}': a sample without images") from None
            if "vocab_scores" in cols:
                has_vocab_col = True
                vocab.append(t.column("vocab_scores").combine_chunks())
            elif vocab_scores:
                vocab.append(pa.nulls(n, pa.binary()))
        self.tokens = tokens
        self.round = np.concatenate(rounds) if rounds else np.zeros(0, np.int64)
        self.status = np.concatenate(status) if status else np.zeros((0, 8), np.float32)
        self.trajectory = np.concatenate(traj) if traj else np.zeros((0, NUM_POSES, 3), np.float32)
        self.images = {ch: (pa.concat_arrays(v) if v else pa.array([], pa.binary())) for ch, v in images.items()}
        self.vocab = None
        self.vocab_size = None
        if vocab_scores:
            if not has_vocab_col:
                raise DatasetError(f"{self.folder}: no vocab_scores (reward labels) in its shards: generate with "
                                   f"--vocab / build real samples with vocab_labels or vocab, or read it with "
                                   f"vocab_scores=False")
            self.vocab = pa.concat_arrays(vocab)
            import pyarrow.compute as pc

            lens = pc.binary_length(self.vocab).drop_null().to_numpy(zero_copy_only=False)
            valid = lens.astype(np.int64)
            sizes = set((valid // (2 * NUM_SUB)).tolist())
            if len(sizes) > 1 or np.any(valid % (2 * NUM_SUB)):
                raise CorruptFileError(self.folder, f"vocab_scores of different sizes ({sorted(sizes)[:4]} "
                                                    f"trajectories) in one folder")
            self.vocab_size = sizes.pop() if sizes else None

    def __len__(self) -> int:
        return len(self.tokens)

    def jpeg(self, i: int, channel: str) -> bytes:
        return self.images[channel][i].as_py()

    def vocab_scores(self, i: int) -> np.ndarray | None:
        """float32 [K, 9] of sample i, or None where it has no labels."""
        if self.vocab is None or not self.vocab[i].is_valid:
            return None
        b = self.vocab[i].as_py()
        return np.frombuffer(b, "<f2").reshape(-1, NUM_SUB).astype(np.float32)


def decode_jpeg(data: bytes) -> np.ndarray:
    """uint8 [H, W, 3] of JPEG bytes (PIL)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


class PlannerDataset(Dataset):
    """The samples of one folder (`SampleTable`) as planner inputs and targets, one unbatched dict per sample
    (module docstring); `image_size` is the planner's (W, H). `vocab_scores=True` reads the reward labels (an
    error if the folder has none); `rewards_only=True` sets imitation_mask 0 for its sim samples."""

    def __init__(self, source, image_size: tuple[int, int], *, vocab_scores: bool = False,
                 rewards_only: bool = False, cache_bytes: int = IMAGE_CACHE_BYTES):
        w, h = (int(v) for v in image_size)
        if w < 1 or h < 1:
            raise DatasetError(f"image_size must be two positive integers (W, H), got {image_size!r}")
        self.image_size = (w, h)
        self.table = source if isinstance(source, SampleTable) else SampleTable(source, vocab_scores=vocab_scores)
        if isinstance(source, SampleTable) and vocab_scores and source.vocab is None:
            raise DatasetError(f"{source.folder}: the table was read without vocab_scores")
        self.with_vocab = bool(vocab_scores)
        self.rewards_only = bool(rewards_only)
        self.cache_bytes = int(cache_bytes)
        self._cache: dict[int, np.ndarray] = {}

    @property
    def folder(self) -> Path:
        return self.table.folder

    @property
    def vocab_size(self) -> int | None:
        """K of the reward labels this dataset yields (None: it yields none)."""
        return self.table.vocab_size if self.with_vocab else None

    @property
    def caches_images(self) -> bool:
        w, h = self.image_size
        return len(self) * w * h * 3 <= self.cache_bytes

    def __len__(self) -> int:
        return len(self.table)

    def __getstate__(self):  # worker processes start with an empty image cache
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    def image(self, i: int) -> np.ndarray:
        """uint8 [H, W, 3]: sample i's current front cameras stitched at the planner's image_size."""
        img = self._cache.get(i)
        if img is None:
            t = self.table
            img = stitch_front_cameras([decode_jpeg(t.jpeg(i, ch)) for ch in FRONT_CHANNELS], FRONT_CHANNELS,
                                       self.image_size)
            if self.caches_images:
                self._cache[i] = img
        return img

    def __getitem__(self, i: int) -> dict:
        import torch

        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} of {len(self)}")
        i %= len(self)
        t = self.table
        is_sim = bool(t.round[i] > 0)
        item = {"image": image_tensor(self.image(i)), "status": torch.from_numpy(t.status[i].copy()),
                "trajectory": torch.from_numpy(t.trajectory[i].copy()), "is_sim": is_sim,
                "imitation_mask": 0.0 if (self.rewards_only and is_sim) else 1.0, "token": t.tokens[i]}
        if self.with_vocab:
            v = t.vocab_scores(i)
            item["has_vocab_scores"] = v is not None
            if v is None:
                v = np.full((t.vocab_size or 0, NUM_SUB), np.nan, np.float32)
            item["vocab_scores"] = torch.from_numpy(v.copy())
        else:
            item["has_vocab_scores"] = False
        return item


# ================================================================================================ batches
def collate(samples: list[dict]) -> dict:
    """The contract's batch of per-sample dicts: tensors stacked batch first, "token" a list of str. Samples without
    "vocab_scores" get NaN rows of the others' K (has_vocab_scores False); no sample with them: no "vocab_scores"."""
    import torch

    if not samples:
        raise DatasetError("collate: no samples")
    ks = {int(s["vocab_scores"].shape[0]) for s in samples if "vocab_scores" in s and s["has_vocab_scores"]}
    if len(ks) > 1:
        raise DatasetError(f"collate: reward labels of different vocabulary sizes {sorted(ks)} in one batch")
    batch = {"image": torch.stack([s["image"] for s in samples]),
             "status": torch.stack([torch.as_tensor(s["status"], dtype=torch.float32) for s in samples]),
             "trajectory": torch.stack([torch.as_tensor(s["trajectory"], dtype=torch.float32) for s in samples]),
             "has_vocab_scores": torch.tensor([bool(s.get("has_vocab_scores", False)) for s in samples]),
             "imitation_mask": torch.tensor([float(s["imitation_mask"]) for s in samples], dtype=torch.float32),
             "is_sim": torch.tensor([bool(s["is_sim"]) for s in samples]),
             "token": [str(s["token"]) for s in samples]}
    if ks or any("vocab_scores" in s for s in samples):
        k = ks.pop() if ks else max(int(s["vocab_scores"].shape[0]) for s in samples if "vocab_scores" in s)
        rows = []
        for s in samples:
            v = s.get("vocab_scores")
            rows.append(v if v is not None and s["has_vocab_scores"] else torch.full((k, NUM_SUB), float("nan")))
        batch["vocab_scores"] = torch.stack(rows).to(torch.float32)
    return batch


class _Union(Dataset):
    """The real set then the sim sets, indexed globally; rewards-only zeroes the imitation of sim samples and every
    item carries the union's K of reward labels (NaN rows for a set without them)."""

    def __init__(self, datasets, rewards_only: bool, vocab_size: int | None):
        self.datasets = list(datasets)
        self.offsets = np.cumsum([0] + [len(d) for d in self.datasets])
        self.rewards_only = rewards_only
        self.vocab_size = vocab_size

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, g: int) -> dict:
        import torch

        j = int(np.searchsorted(self.offsets, g, side="right")) - 1
        item = self.datasets[j][int(g - self.offsets[j])]
        if self.rewards_only and item["is_sim"]:
            item["imitation_mask"] = 0.0
        if self.vocab_size is not None and "vocab_scores" not in item:
            item["vocab_scores"] = torch.full((self.vocab_size, NUM_SUB), float("nan"))
            item["has_vocab_scores"] = False
        return item


def _rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(stream)]))


def epoch_batches(n_real: int, n_sim: int, *, batch_size: int, seed: int, epoch: int, sim_ratio: float | None = None,
                  drop_last: bool = False) -> list[np.ndarray]:
    """The epoch's batches as global indices (the real set [0, n_real), then the sim union): a pure function of its
    arguments (module docstring). sim_ratio None: a permutation of the union cut into batches. sim_ratio r: batches of
    B - s real (a permutation of the real set: one pass) and s = round(r * B) sim samples (a stream of permutations of
    the sim union); with r = 1 the epoch has as many batches as the real set fills at full size."""
    B = int(batch_size)
    if sim_ratio is None:
        n = n_real + n_sim
        perm = _rng(seed, epoch, 0).permutation(n)
        stop = n - n % B if drop_last else n
        return [perm[a:a + B] for a in range(0, stop, B)]
    s = int(math.floor(float(sim_ratio) * B + 0.5))  # round half up (Python's round() rounds half to even)
    q = B - s
    if n_real == 0:
        raise DatasetError(f"sim_ratio={sim_ratio} needs real samples (an epoch is one pass over the real set), and "
                           f"there are no real samples")
    if s > 0 and n_sim == 0:
        raise DatasetError(f"sim_ratio={sim_ratio} puts {s} sim samples in every batch, and there are no sim samples")
    if q > 0:
        nb = n_real // q if drop_last else -(-n_real // q)
    else:
        nb = n_real // B if drop_last else -(-n_real // B)
    real = _rng(seed, epoch, 1).permutation(n_real)
    sim = np.zeros(0, np.int64)
    if s > 0 and nb > 0:
        rng = _rng(seed, epoch, 2)
        sim = np.concatenate([rng.permutation(n_sim) for _ in range(-(-(nb * s) // n_sim))]) + n_real
    return [np.concatenate([real[b * q:(b + 1) * q], sim[b * s:(b + 1) * s]]) for b in range(nb)]


class EpochBatchSampler:
    """A torch batch sampler over `epoch_batches`, from batch `start_batch` on (a resumed epoch)."""

    def __init__(self, batches: list[np.ndarray], start_batch: int = 0):
        self.batches = batches
        self.start_batch = int(start_batch)

    def __len__(self) -> int:
        return max(0, len(self.batches) - self.start_batch)

    def __iter__(self):
        for b in self.batches[self.start_batch:]:
            yield [int(i) for i in b]


def _worker_init(_worker_id: int) -> None:
    import torch

    from simscale_env.parallel import set_worker_threads

    set_worker_threads(1)
    torch.set_num_threads(1)


def _check_int(name, v, low):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
        raise DatasetError(f"{name} must be an integer >= {low}, got {v!r}")


def make_loader(real, sim, *, batch_size: int, seed: int, epoch: int, sim_ratio: float | None = None,
                rewards_only: bool = False, workers: int = 0, drop_last: bool = False, start_batch: int = 0,
                mp_context: str | None = None):
    """A torch DataLoader over one epoch of the real set (`PlannerDataset` or None) and the sim sets (a list of
    them): pooled (the union, uniformly, without replacement) or mixed at `sim_ratio` (module docstring). Batches are
    `collate`d in the `workers` processes (0: in this one) and do not depend on their number."""
    from torch.utils.data import DataLoader

    _check_int("batch_size", batch_size, 1)
    _check_int("seed", seed, 0)
    _check_int("epoch", epoch, 0)
    _check_int("workers", workers, 0)
    _check_int("start_batch", start_batch, 0)
    if sim_ratio is not None and (isinstance(sim_ratio, bool) or not isinstance(sim_ratio, (int, float, np.number))
                                  or not 0.0 <= float(sim_ratio) <= 1.0):
        raise DatasetError(f"sim_ratio must be a number in [0, 1] or None, got {sim_ratio!r}")
    sim = list(sim or [])
    datasets = ([real] if real is not None else []) + sim
    if not datasets:
        raise DatasetError("make_loader: no dataset (real is None and sim is empty)")
    ks = {}
    for d in datasets:
        k = getattr(d, "vocab_size", None)
        if k is not None:
            ks.setdefault(int(k), []).append(str(getattr(d, "folder", d)))
    if len(ks) > 1:
        parts = "; ".join(f"K={k}: {', '.join(f)}" for k, f in sorted(ks.items()))
        raise DatasetError(f"the reward labels come from vocabularies of different sizes ({parts}); label the real "
                           f"and the sim samples with the same vocabulary")
    n_real = len(real) if real is not None else 0
    n_sim = sum(len(d) for d in sim)
    batches = epoch_batches(n_real, n_sim, batch_size=batch_size, seed=seed, epoch=epoch, sim_ratio=sim_ratio,
                            drop_last=drop_last)
    union = _Union(datasets, bool(rewards_only), next(iter(ks)) if ks else None)
    return DataLoader(union, batch_sampler=EpochBatchSampler(batches, start_batch), collate_fn=collate,
                      num_workers=int(workers), persistent_workers=False,
                      worker_init_fn=_worker_init if workers else None,
                      multiprocessing_context=mp_context if workers else None)
