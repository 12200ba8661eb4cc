"""Planner checkpoints and the policy that runs a planner in the env.

A checkpoint is a torch.save'd dict {"format": "simscale-planner/1", "planner": name, "config":
dataclasses.asdict(config), "model": state_dict, ...extra (the training loop's "train": optimizer / scheduler / epoch /
RNG state)}, written atomically (`save_planner`) and read with torch.load(weights_only=True) (`load_planner`): a
checkpoint never runs code. The model's array inputs (DiffusionDrive's anchors, GTRS-Dense's vocabulary) are buffers of
the state dict, so the checkpoint alone rebuilds the model; `backbone_weights` is not read again.

`register_planner_checkpoint_loader()` (called by `import agents.planners`) lets `agents.load_policy(path)` and
`simscale evaluate --policy RUN/checkpoint.pt` load such a file as a `PlannerPolicy`. This module imports torch only
when a checkpoint is read or written.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from simscale_env.errors import CorruptFileError, MissingFileError

from ..policy import BasePolicy, register_checkpoint_loader, unregister_checkpoint_loader
from .features import FRONT_CHANNELS, image_tensor, stitch_front_cameras, status_from_observation

log = logging.getLogger(__name__)

FORMAT = "simscale-planner/1"
RESERVED_KEYS = ("format", "planner", "config", "model")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def _planner_name(model) -> str:
    from .registry import PLANNERS

    name = getattr(model, "planner_name", None)
    if name not in PLANNERS or not isinstance(model, PLANNERS[name].model_cls):
        raise TypeError(f"{type(model).__name__} is not a registered planner model ({', '.join(PLANNERS)})")
    return name


def save_planner(path: str | Path, model, extra: dict | None = None) -> Path:
    """Write `model` (a registered planner) and `extra` (more JSON-able / tensor entries, e.g. {"train": {...}}) to
    `path` atomically (a temp file in the same folder, then rename). Returns the path."""
    import torch

    path = Path(path)
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(RESERVED_KEYS))
    if clash:
        raise ValueError(f"extra may not set the checkpoint's own keys {clash} (reserved: {RESERVED_KEYS})")
    ckpt = {"format": FORMAT, "planner": _planner_name(model), "config": dataclasses.asdict(model.config),
            "model": model.state_dict(), **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def is_planner_checkpoint(path: str | Path) -> bool:
    """True when `path` is a torch zip checkpoint whose pickle names the format "simscale-planner/1" (a peek at
    data.pkl: no torch import, no tensor read)."""
    path = Path(path)
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES or not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            return name is not None and FORMAT.encode() in z.read(name)
    except (zipfile.BadZipFile, OSError):
        return False


def _numpy_safe_globals() -> list:
    """What numpy arrays and scalars of plain (bool, int, float, complex) dtypes need to unpickle under
    weights_only=True (a training loop's numpy RNG state): no code runs, no object arrays."""
    import numpy.dtypes as dtypes

    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    kinds = [f"{p}{b}DType" for p in ("Int", "UInt") for b in (8, 16, 32, 64)] + \
        [f"{k}DType" for k in ("Bool", "Float16", "Float32", "Float64", "LongDouble", "Complex64", "Complex128",
                               "Long", "ULong", "LongLong", "ULongLong", "Short", "UShort", "Byte", "UByte")]
    return [_reconstruct, scalar, np.ndarray, np.dtype, *{getattr(dtypes, k) for k in kinds if hasattr(dtypes, k)}]


def read_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """The checkpoint dict of `path` (torch.load weights_only=True, plain numpy arrays allowed), checked to be a
    "simscale-planner/1" one."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "planner checkpoint not found")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001  (torch raises many kinds for a bad or unsafe file)
        raise CorruptFileError(path, f"not a checkpoint that torch.load(weights_only=True) reads "
                                     f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CorruptFileError(path, f"not a planner checkpoint: expected a dict with format {FORMAT!r}, got {got!r}")
    missing = [k for k in RESERVED_KEYS if k not in ckpt]
    if missing:
        raise CorruptFileError(path, f"planner checkpoint without {missing}")
    return ckpt


def planner_from_checkpoint(ckpt: dict, path: str | Path | None = None):
    """The model of a checkpoint dict (`read_checkpoint`), its state loaded, in eval mode."""
    from .registry import PLANNERS, make_config

    name = ckpt["planner"]
    if name not in PLANNERS:
        raise CorruptFileError(path, f"unknown planner {name!r} (known: {', '.join(PLANNERS)})")
    spec = PLANNERS[name]
    try:
        config = make_config(name, dict(ckpt["config"]))
    except (TypeError, ValueError) as exc:
        raise CorruptFileError(path, f"bad {spec.config_cls.__name__} in the checkpoint: {exc}") from exc
    state = ckpt["model"]
    arrays = {k: state[k] for k in spec.model_cls.array_buffers if k in state}
    absent = [k for k in spec.model_cls.array_buffers if k not in state]
    if absent:
        raise CorruptFileError(path, f"the {name} state dict has no {absent} buffer(s)")
    model = spec.model_cls(config, load_weights=False, **arrays)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CorruptFileError(path, f"the {name} state dict does not fit its config: {exc}") from exc
    return model.eval()


def load_planner(path: str | Path, map_location="cpu"):
    """The planner saved at `path` (`save_planner`), in eval mode."""
    return planner_from_checkpoint(read_checkpoint(path, map_location), path)


class PlannerPolicy(BasePolicy):
    """Runs a planner model in the env: reads the front cameras (CAM_L0, CAM_F0, CAM_R0) and the ego status, stitches
    and resizes the cameras to the model's image_size (`features.py`), and returns the predicted [8, 3] float32 plan
    (headings wrapped to (-pi, pi]).

    `threads`: torch's intra-op threads while it acts on the CPU (set for the duration of each `act`, then the
    process's setting is restored: code run after it, e.g. a training loop, keeps its own; default 1). In the env's
    process numba's render threads share the cores: with torch's default (all cores) one LTF step took 1.78 s against
    0.039 s with one thread on 2 loaded cores (0.13 s with OMP_WAIT_POLICY=PASSIVE). None keeps torch's setting."""

    observation_keys = ("cameras", "ego_status")
    cameras = FRONT_CHANNELS

    def __init__(self, model, name: str | None = None, device: str = "cpu", threads: int | None = 1):
        self.model = model.to(device).eval()
        self.device = device
        self.threads = threads
        self.name = name or getattr(model, "planner_name", type(model).__name__)
        self.image_size = tuple(int(v) for v in model.config.image_size)

    def features(self, observation: dict, info: dict | None = None):
        """(image [1, 3, H, W], status [1, 8]) tensors of an observation (the cameras' order: info's
        camera_calibration where present, else `cameras`)."""
        import torch

        channels = tuple((info or {}).get("camera_calibration") or self.cameras)
        img = stitch_front_cameras(observation["cameras"], channels, self.image_size)
        status = status_from_observation(observation["ego_status"])
        return image_tensor(img)[None].to(self.device), torch.from_numpy(status)[None].to(self.device)

    def act(self, observation: dict, info: dict) -> np.ndarray:
        from simscale_env.geometry import wrap_angle

        prev = None
        if self.threads and str(self.device) == "cpu":
            import torch

            prev = torch.get_num_threads()
            if prev != self.threads:
                torch.set_num_threads(int(self.threads))
        try:
            image, status = self.features(observation, info)
            plan = self.model.predict(image, status)[0].detach().cpu().numpy().astype(np.float64)
        finally:
            if prev is not None and prev != self.threads:
                torch.set_num_threads(prev)
        plan[:, 2] = wrap_angle(plan[:, 2])
        return plan.astype(np.float32)


def _policy_name(path: Path, planner: str) -> str:
    run = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.resolve().parent.name)
    return f"{planner}-{run}" if run else planner


def load_planner_policy(path: str | Path, name: str | None = None, device: str = "cpu",
                        threads: int | None = 1) -> PlannerPolicy:
    """`load_policy`'s loader of planner checkpoints: a PlannerPolicy named "<planner>-<run folder>" by default."""
    path = Path(path)
    model = load_planner(path, map_location=device)
    return PlannerPolicy(model, name=name or _policy_name(path, model.planner_name), device=device, threads=threads)


def register_planner_checkpoint_loader() -> None:
    """Let `agents.load_policy(path)` load planner checkpoints (idempotent; `import agents.planners` calls it)."""
    unregister_checkpoint_loader(load_planner_policy)
    register_checkpoint_loader(is_planner_checkpoint, load_planner_policy, name=f"{FORMAT} (.pt)")
