"""DiffusionDrive-style truncated-diffusion planner (navsim-agents-and-planners.md §4).

Anchors: M trajectories of 8 (x, y) poses (DiffusionDrive: 20 k-means centres of the training plans,
`kmeans_navsim_traj_20.npy`; here `kmeans_anchors` of `simscale_env.metrics.vocabulary.human_plans`), held in a buffer
so that a checkpoint carries them. Training: each anchor is normalised to [-1, 1], noised to a timestep t ~ U{0..49}
of a 1000-step DDIM schedule, clamped, and the decoder regresses every mode (an (8, 3) plan: x, y offsets added to the
noisy points, heading tanh * pi) and classifies it; the loss (`training.losses`) is a focal classification of the mode
whose anchor is closest to the ground truth plus L1 on that mode's regression, over every decoder layer. Inference:
the anchors noised at t = 8, then 2 denoising passes (timesteps 10, 0) whose regressions are fed to DDIM's step as x0
("sample" prediction, clipped); the output is the last pass's regression of the highest-scoring mode. The noise comes
from a torch.Generator seeded with `config.seed` (one draw shared by the batch), so a checkpoint gives identical
outputs run to run and a sample's plan does not depend on the batch it is in.

The decoder (per layer: an embedding of the mode's current points, self-attention among the modes, cross-attention to
the image + status tokens, feed-forward, timestep modulation, classification and regression heads; the next layer
starts from the detached regressed points) stands in for DiffusionDrive's BEV grid-sample / agent / ego attention.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from simscale_env.errors import CorruptFileError, MissingFileError

from .backbone import (NUM_POSES, CameraStatusEncoder, DecoderBlock, PlannerConfig, PlannerModule, mlp, seeded,
                       sinusoidal_embedding)

log = logging.getLogger(__name__)

# DiffusionDrive's odometry normalisation (DD transfuser_model_v2.py norm_odo): x in [-1.2, 55.7] m, y in [-20, 26] m
# -> [-1, 1]
X_OFFSET, X_RANGE = 1.2, 56.9
Y_OFFSET, Y_RANGE = 20.0, 46.0
# diffusers DDIMScheduler as DiffusionDrive builds it (DD; DF scheduling_ddim.py defaults): 1000 train timesteps,
# scaled_linear betas 1e-4 .. 0.02, prediction_type "sample", clip_sample to [-1, 1], set_alpha_to_one
NUM_TRAIN_TIMESTEPS = 1000
BETA_START, BETA_END = 1e-4, 0.02
CLIP_SAMPLE_RANGE = 1.0
# DD forward_test: step_ratio = 20 / step_num; roll timesteps round(arange(step_num) * step_ratio)[::-1] ([10, 0])
ROLL_SPAN = 20
POINT_FREQS = 6  # sine bands of the point embedding (2^k pi, k < 6)


@dataclass(frozen=True)
class DiffusionDriveConfig(PlannerConfig):
    """PlannerConfig + anchors_path (a [M, 8, 2|3] .npy; or pass `anchors=` to the model), num_anchors (M: how many
    k-means anchors a training loop computes, DD: 20 (`ego_fut_mode`); the model records the count of the anchors it
    is given), num_decoder_layers (DD: 2), train_timesteps (t ~ U{0..train_timesteps-1}; DD: 50),
    inference_timestep (truncation; DD: 8), inference_steps (denoising passes; DD: 2)."""

    anchors_path: str | None = None
    num_anchors: int = 20
    num_decoder_layers: int = 2
    train_timesteps: int = 50
    inference_timestep: int = 8
    inference_steps: int = 2

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.train_timesteps <= NUM_TRAIN_TIMESTEPS:
            raise ValueError(f"train_timesteps must be in [1, {NUM_TRAIN_TIMESTEPS}], got {self.train_timesteps}")
        if not 0 <= self.inference_timestep < NUM_TRAIN_TIMESTEPS or self.inference_steps < 1:
            raise ValueError(f"inference_timestep must be in [0, {NUM_TRAIN_TIMESTEPS}) and inference_steps >= 1, got "
                             f"{self.inference_timestep}, {self.inference_steps}")
        if self.num_decoder_layers < 1 or self.num_anchors < 1:
            raise ValueError(f"num_decoder_layers and num_anchors must be >= 1, got {self.num_decoder_layers}, "
                             f"{self.num_anchors}")


# ---------------------------------------------------------------------------------------------- anchors
def kmeans_anchors(plans: np.ndarray, m: int = 20, seed: int = 0, *, iterations: int = 30) -> np.ndarray:
    """DiffusionDrive's anchors: k-means (simscale_env.metrics.vocabulary.kmeans_vocabulary: k-means++ seeding, Lloyd,
    deterministic for a seed, sorted by cluster size) of human plans [N, 8, 3] (or [N, 8, 2]) over their (x, y) ->
    float32 [m, 8, 2]."""
    from simscale_env.metrics.vocabulary import kmeans_vocabulary

    plans = np.asarray(plans, dtype=np.float64)
    if plans.ndim != 3 or plans.shape[1] != NUM_POSES or plans.shape[2] not in (2, 3):
        raise ValueError(f"plans must have shape [N, {NUM_POSES}, 2|3], got {plans.shape}")
    xy0 = np.concatenate([plans[..., :2], np.zeros(plans.shape[:2] + (1,))], -1)  # heading out of the distance
    return kmeans_vocabulary(xy0, int(m), iterations=iterations, seed=seed)[..., :2].astype(np.float32)


def check_anchors(anchors, where: str = "anchors") -> np.ndarray:
    """[M, 8, 2|3] finite -> float32 [M, 8, 2]; a ValueError naming `where` otherwise."""
    a = np.asarray(anchors.detach().cpu() if isinstance(anchors, torch.Tensor) else anchors, dtype=np.float64)
    if a.ndim != 3 or a.shape[1] != NUM_POSES or a.shape[2] not in (2, 3) or len(a) < 1:
        raise ValueError(f"{where}: expected DiffusionDrive anchors [M, {NUM_POSES}, 2|3], got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{where}: the anchors hold NaN or infinite values")
    return a[..., :2].astype(np.float32)


def load_anchors(path: str | Path) -> np.ndarray:
    """A [M, 8, 2|3] .npy anchor file -> float32 [M, 8, 2]."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(path, "DiffusionDrive anchors file not found (config anchors_path)")
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise CorruptFileError(path, f"not a .npy array ({exc})") from exc
    try:
        return check_anchors(a, str(path))
    except ValueError as exc:
        raise CorruptFileError(path, str(exc).split(": ", 1)[-1]) from None


def normalize_xy(xy: torch.Tensor) -> torch.Tensor:
    """Metres -> DiffusionDrive's [-1, 1] odometry range (DD norm_odo)."""
    x = 2.0 * (xy[..., 0] + X_OFFSET) / X_RANGE - 1.0
    y = 2.0 * (xy[..., 1] + Y_OFFSET) / Y_RANGE - 1.0
    return torch.stack([x, y], -1)


def denormalize_xy(xy: torch.Tensor) -> torch.Tensor:
    """DD denorm_odo: the inverse of `normalize_xy`."""
    x = (xy[..., 0] + 1.0) / 2.0 * X_RANGE - X_OFFSET
    y = (xy[..., 1] + 1.0) / 2.0 * Y_RANGE - Y_OFFSET
    return torch.stack([x, y], -1)


# ---------------------------------------------------------------------------------------------- DDIM
class DDIMScheduler(nn.Module):
    """diffusers' DDIMScheduler for DiffusionDrive's settings (scaled_linear betas, prediction_type "sample",
    clip_sample, set_alpha_to_one, eta 0), `set_timesteps(1000)`: a step from t lands on t - 1."""

    def __init__(self, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, beta_start: float = BETA_START,
                 beta_end: float = BETA_END):
        super().__init__()
        betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps, dtype=torch.float32) ** 2
        self.register_buffer("alphas_cumprod", torch.cumprod(1.0 - betas, 0), persistent=False)
        self.num_train_timesteps = num_train_timesteps
        self.final_alpha_cumprod = 1.0  # set_alpha_to_one

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """sqrt(a_t) x0 + sqrt(1 - a_t) noise, t [B] (one timestep per leading index)."""
        a = self.alphas_cumprod.to(x0.device)[t].to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
        return a.sqrt() * x0 + (1.0 - a).sqrt() * noise

    def step(self, x0_pred: torch.Tensor, t: int, sample: torch.Tensor, num_inference_steps: int | None = None):
        """The DDIM update x_t -> x_{t - num_train_timesteps // num_inference_steps} (eta 0) given the predicted x0
        (diffusers: epsilon from the unclipped x0, then x0 clipped to [-1, 1])."""
        n = num_inference_steps or self.num_train_timesteps
        prev = int(t) - self.num_train_timesteps // n
        a_t = self.alphas_cumprod[int(t)]
        a_prev = self.alphas_cumprod[prev] if prev >= 0 else torch.tensor(self.final_alpha_cumprod)
        eps = (sample - a_t.sqrt() * x0_pred) / (1.0 - a_t).sqrt()
        x0 = x0_pred.clamp(-CLIP_SAMPLE_RANGE, CLIP_SAMPLE_RANGE)
        return a_prev.sqrt() * x0 + (1.0 - a_prev).sqrt() * eps


def roll_timesteps(steps: int) -> list[int]:
    """DD forward_test's denoising timesteps: round(arange(steps) * 20 / steps) reversed ([10, 0] for 2)."""
    return [int(v) for v in np.round(np.arange(steps) * (ROLL_SPAN / steps))[::-1]]


def point_embedding(xy_norm: torch.Tensor) -> torch.Tensor:
    """Sine/cosine bands of normalised points [..., 8, 2] -> [..., 8 * 2 * 2 * POINT_FREQS]."""
    freqs = math.pi * (2.0 ** torch.arange(POINT_FREQS, dtype=xy_norm.dtype, device=xy_norm.device))
    a = xy_norm[..., None] * freqs  # [..., 8, 2, F]
    return torch.cat([a.sin(), a.cos()], -1).flatten(-3)


class DiffusionDecoderLayer(nn.Module):
    def __init__(self, config: DiffusionDriveConfig):
        super().__init__()
        d = config.d_model
        self.point_encoder = mlp([NUM_POSES * 4 * POINT_FREQS, d, d])
        self.block = DecoderBlock(d, config.num_heads, config.ffn_dim, config.dropout, self_attention=True)
        self.time_modulation = nn.Sequential(nn.Mish(), nn.Linear(d, 2 * d))  # DD ModulationLayer: scale, shift
        self.cls_head = mlp([d, d, 1])
        self.reg_head = mlp([d, config.ffn_dim, NUM_POSES * 3])

    def forward(self, q, points, mem, time_emb):
        b, m = q.shape[:2]
        q = q + self.point_encoder(point_embedding(normalize_xy(points)))
        q = self.block(q, mem)
        scale, shift = self.time_modulation(time_emb)[:, None].chunk(2, -1)
        q = q * (1.0 + scale) + shift
        out = self.reg_head(q).view(b, m, NUM_POSES, 3)
        reg = torch.cat([points + out[..., :2], torch.tanh(out[..., 2:]) * math.pi], -1)
        return q, reg, self.cls_head(q)[..., 0]


class DiffusionDrivePlanner(PlannerModule):
    """forward(batch) -> {"trajectory": [B, 8, 3] (the best-scoring mode of the last layer), "reg": [L, B, M, 8, 3],
    "cls": [L, B, M] (per decoder layer; at inference those of the last denoising pass), "timesteps": [B]}."""

    planner_name = "diffusiondrive"
    array_buffers = ("anchors",)

    def __init__(self, config: DiffusionDriveConfig | None = None, *, anchors=None, load_weights: bool = True):
        super().__init__()
        self.config = config = config or DiffusionDriveConfig()
        if anchors is None:
            if not config.anchors_path:
                raise ValueError("DiffusionDrive needs anchors: pass anchors= (a [M, 8, 2|3] array, e.g. "
                                 "kmeans_anchors(human_plans(...), 20)) or set the config field anchors_path")
            anchors = load_anchors(config.anchors_path)
        self.register_buffer("anchors", torch.from_numpy(check_anchors(anchors, config.anchors_path or "anchors")))
        if len(self.anchors) != config.num_anchors:
            log.info("DiffusionDrive: %d anchors given, config.num_anchors %d: recording %d", len(self.anchors),
                     config.num_anchors, len(self.anchors))
            self.config = config = dataclasses.replace(config, num_anchors=len(self.anchors))
        d = config.d_model
        with seeded(config.seed):
            self.encoder = CameraStatusEncoder(config, load_weights=load_weights)
            self.mode_embedding = nn.Parameter(torch.randn(len(self.anchors), d) * 0.02)
            self.time_encoder = nn.Sequential(nn.Linear(d, config.ffn_dim), nn.Mish(), nn.Linear(config.ffn_dim, d))
            self.layers = nn.ModuleList(DiffusionDecoderLayer(config) for _ in range(config.num_decoder_layers))
        self.scheduler = DDIMScheduler()
        self.generator: torch.Generator | None = None  # training noise; None: torch's global RNG

    def seed_generator(self, seed: int | None) -> None:
        """Drive the training noise (timesteps and anchor noise) by a torch.Generator seeded with `seed` (None: torch's
        global RNG, which a training loop seeds and checkpoints)."""
        self.generator = None if seed is None else torch.Generator().manual_seed(int(seed))

    def _decode(self, mem, status, points, t):
        b, m = points.shape[:2]
        q = (self.mode_embedding[None] + status[:, None]).expand(b, m, -1)
        time_emb = self.time_encoder(sinusoidal_embedding(t, self.config.d_model))
        regs, clss = [], []
        for layer in self.layers:
            q, reg, cls = layer(q, points, mem, time_emb)
            regs.append(reg)
            clss.append(cls)
            points = reg[..., :2].detach()  # DD: the next layer starts from the detached regression
        return torch.stack(regs), torch.stack(clss)

    @staticmethod
    def _best(reg: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        idx = cls.argmax(-1)
        return reg[torch.arange(len(idx), device=reg.device), idx]

    def forward(self, batch: dict) -> dict:
        mem, status = self.encoder(batch["image"], batch["status"])
        b, dev = mem.shape[0], mem.device
        x0 = normalize_xy(self.anchors)[None].expand(b, -1, -1, -1)
        if self.training:
            t = torch.randint(0, self.config.train_timesteps, (b,), generator=self.generator).to(dev)
            noise = torch.randn(x0.shape, generator=self.generator).to(dev)
            noisy = self.scheduler.add_noise(x0, noise, t).clamp(-1.0, 1.0)
            reg, cls = self._decode(mem, status, denormalize_xy(noisy), t)
            return {"trajectory": self._best(reg[-1], cls[-1]), "reg": reg, "cls": cls, "timesteps": t}
        g = torch.Generator().manual_seed(int(self.config.seed))
        noise = torch.randn(x0.shape[1:], generator=g).to(dev)[None].expand_as(x0)  # one draw for the whole batch
        img = self.scheduler.add_noise(x0, noise, torch.full((b,), self.config.inference_timestep, device=dev))
        for k in roll_timesteps(self.config.inference_steps):
            points = denormalize_xy(img.clamp(-1.0, 1.0))
            reg, cls = self._decode(mem, status, points, torch.full((b,), k, device=dev))
            img = self.scheduler.step(normalize_xy(reg[-1][..., :2]), k, img)
        return {"trajectory": self._best(reg[-1], cls[-1]), "reg": reg, "cls": cls,
                "timesteps": torch.full((b,), k, device=dev)}
