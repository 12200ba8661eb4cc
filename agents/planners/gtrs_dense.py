"""GTRS-Dense-style scorer over a trajectory vocabulary (SimScale's GTRS-Dense, navsim-agents-and-planners.md §5).

The vocabulary ([K, 40, 3] at 0.1 s, `simscale vocab build`, `simscale_env.metrics.vocabulary`) is held in a buffer,
so that a checkpoint carries it. Each vocabulary trajectory is normalised, flattened and embedded by an MLP, then
(optionally) self-attention layers over the vocabulary; the status encoding is added to every query, and a transformer
decoder cross-attends the queries to the image + status tokens. One head per EPDMS sub-score (NC, DAC, DDC, TLC, EP,
TTC, LK) gives a logit per trajectory (trained with BCE against the labels, `training.losses`), and an imitation head
a logit per trajectory (cross-entropy against softmax(-L2 to the ground truth / 0.5)).

Training scores a random half of the vocabulary per pass (vocabulary dropout, `randperm` by a seedable
torch.Generator, `seed_generator`); `outputs["vocab_index"]` says which, and the targets index the same rows. Eval
scores every trajectory and returns the argmax of SimScale's inference rule (`gtrs_inference_score`), subsampled to
the env's 8 poses at 0.5 s (rows 4, 9, ..., 39).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .backbone import NUM_POSES, CameraStatusEncoder, DecoderBlock, PlannerConfig, PlannerModule, mlp, seeded
from .diffusiondrive import normalize_xy

# the sub-score heads and the SUB_METRICS column each one learns (GTRS hydra_model.py heads; no history comfort)
SCORE_HEADS = ("nc", "dac", "ddc", "tlc", "ep", "ttc", "lk")
HEAD_SUB_METRIC = {"nc": "no_at_fault_collisions", "dac": "drivable_area_compliance",
                   "ddc": "driving_direction_compliance", "tlc": "traffic_light_compliance", "ep": "ego_progress",
                   "ttc": "time_to_collision_within_bound", "lk": "lane_keeping"}
# SimScale's inference rule (SS gtrs_dense hydra_model.py HydraTrajHead.forward; reference §5, verified):
# 0.03 log softmax(imi) + 0.1 log s(TLC) + 0.1 log s(NC) + 0.9 log s(DAC) + 0.2 log s(DDC)
# + 6 log(7 s(TTC) + 7 s(EP) + 3 s(LK))
INFERENCE_IMI_WEIGHT = 0.03
INFERENCE_LOG_WEIGHTS = {"tlc": 0.1, "nc": 0.1, "dac": 0.9, "ddc": 0.2}
INFERENCE_SUM_WEIGHT = 6.0
INFERENCE_SUM_TERMS = {"ttc": 7.0, "ep": 7.0, "lk": 3.0}


@dataclass(frozen=True)
class GTRSDenseConfig(PlannerConfig):
    """PlannerConfig + vocab_path (a [K, P, 3] .npy, P a multiple of 8; or pass `vocab=` to the model),
    num_decoder_layers (GTRS: 3), vocab_encoder_layers (self-attention layers over the vocabulary; GTRS: 1),
    query_self_attention (the decoder's self-attention among the K queries, as GTRS's nn.TransformerDecoder: off in
    the CPU default, it is K^2 per sample), vocab_keep (the fraction of the vocabulary scored per training pass; GTRS:
    0.5; 1.0 turns vocabulary dropout off), status_noise_std (std of the N(0, s^2) noise added to vx, vy in training;
    GTRS: 1.0, 0.2), head_dim (hidden width of the score heads; GTRS: 1024)."""

    vocab_path: str | None = None
    num_decoder_layers: int = 2
    vocab_encoder_layers: int = 1
    query_self_attention: bool = False
    vocab_keep: float = 0.5
    status_noise_std: tuple[float, float] = (0.0, 0.0)
    head_dim: int = 64

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.vocab_keep <= 1.0:
            raise ValueError(f"vocab_keep must be in (0, 1], got {self.vocab_keep}")
        if len(self.status_noise_std) != 2 or min(self.status_noise_std) < 0:
            raise ValueError(f"status_noise_std must be two stds >= 0 (vx, vy), got {self.status_noise_std}")


def gtrs_inference_score(logits: dict) -> torch.Tensor:
    """SimScale's GTRS-Dense score [B, K] of the head logits ({"imi", "nc", "dac", "ddc", "tlc", "ep", "ttc", "lk"}:
    [B, K] each); the plan is its argmax."""
    s = INFERENCE_IMI_WEIGHT * F.log_softmax(logits["imi"], -1)
    for head, w in INFERENCE_LOG_WEIGHTS.items():
        s = s + w * F.logsigmoid(logits[head])
    weighted = sum(w * torch.sigmoid(logits[head]) for head, w in INFERENCE_SUM_TERMS.items())
    return s + INFERENCE_SUM_WEIGHT * torch.log(weighted)


def plan_rows(num_vocab_poses: int) -> np.ndarray:
    """The vocabulary rows at the env's 0.5 s poses: 4, 9, ..., 39 for 40 poses at 0.1 s."""
    if num_vocab_poses % NUM_POSES:
        raise ValueError(f"the vocabulary's poses ({num_vocab_poses}) must be a multiple of {NUM_POSES}")
    step = num_vocab_poses // NUM_POSES
    return np.arange(step - 1, num_vocab_poses, step)


def check_vocab(vocab, where: str = "vocab") -> np.ndarray:
    v = np.asarray(vocab.detach().cpu() if isinstance(vocab, torch.Tensor) else vocab, dtype=np.float64)
    if v.ndim != 3 or v.shape[-1] != 3 or len(v) < 2 or v.shape[1] % NUM_POSES:
        raise ValueError(f"{where}: expected a trajectory vocabulary [K >= 2, P, 3] with P a multiple of {NUM_POSES} "
                         f"(simscale vocab build: [K, 40, 3]), got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{where}: the vocabulary holds NaN or infinite values")
    return v.astype(np.float32)


class ScoreHeads(nn.Module):
    """n independent MLPs d -> hidden -> 1 evaluated as one grouped op: [..., d] -> [..., n]."""

    def __init__(self, d: int, hidden: int, n: int):
        super().__init__()
        self.n, self.hidden = n, hidden
        self.fc1 = nn.Linear(d, n * hidden)
        bound = hidden ** -0.5  # nn.Linear's init
        self.fc2_weight = nn.Parameter(torch.empty(n, hidden).uniform_(-bound, bound))
        self.fc2_bias = nn.Parameter(torch.empty(n).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(x)).unflatten(-1, (self.n, self.hidden))
        return torch.einsum("...nh,nh->...n", h, self.fc2_weight) + self.fc2_bias


class GTRSDensePlanner(PlannerModule):
    """forward(batch) -> {"nc", "dac", "ddc", "tlc", "ep", "ttc", "lk", "imi": logits [B, K'], "vocab_index": [K']
    (the scored vocabulary rows: a random vocab_keep share in training, all in eval), "score": [B, K'] (the inference
    rule), "trajectory": [B, 8, 3] (the best-scoring trajectory at 0.5 s)}."""

    planner_name = "gtrs_dense"
    array_buffers = ("vocab",)

    def __init__(self, config: GTRSDenseConfig | None = None, *, vocab=None, load_weights: bool = True):
        super().__init__()
        self.config = config = config or GTRSDenseConfig()
        if vocab is None:
            if not config.vocab_path:
                raise ValueError("GTRS-Dense needs a trajectory vocabulary: pass vocab= (a [K, 40, 3] array) or set "
                                 "the config field vocab_path (`simscale vocab build --out vocab.npy`)")
            from simscale_env.metrics.vocabulary import load_vocabulary

            vocab = load_vocabulary(config.vocab_path)
        self.register_buffer("vocab", torch.from_numpy(check_vocab(vocab, config.vocab_path or "vocab")))
        self.register_buffer("plan_rows", torch.from_numpy(plan_rows(self.vocab.shape[1])), persistent=False)
        d = config.d_model
        with seeded(config.seed):
            self.encoder = CameraStatusEncoder(config, load_weights=load_weights)
            self.vocab_embedding = mlp([self.vocab.shape[1] * 3, config.ffn_dim, d])
            self.vocab_encoder = nn.ModuleList(DecoderBlock(d, config.num_heads, config.ffn_dim, config.dropout,
                                                            self_attention=False)
                                               for _ in range(config.vocab_encoder_layers))
            self.decoder = nn.ModuleList(DecoderBlock(d, config.num_heads, config.ffn_dim, config.dropout,
                                                      self_attention=config.query_self_attention)
                                         for _ in range(config.num_decoder_layers))
            self.score_heads = ScoreHeads(d, config.head_dim, len(SCORE_HEADS))
            self.imi_head = mlp([d, config.head_dim, config.head_dim, 1])  # GTRS: 256 -> 1024 -> 1024 -> 1
        self.generator: torch.Generator | None = None  # vocabulary dropout, status noise; None: torch's global RNG
        self._vocab_cache: tuple | None = None  # (key, [1, K, d]): the whole vocabulary's encoding at inference

    def seed_generator(self, seed: int | None) -> None:
        """Drive the vocabulary dropout (and status noise) by a torch.Generator seeded with `seed` (None: torch's
        global RNG, which a training loop seeds and checkpoints)."""
        self.generator = None if seed is None else torch.Generator().manual_seed(int(seed))

    def vocab_index(self) -> torch.Tensor:
        """The vocabulary rows scored by this pass: a sorted random `vocab_keep` share in training, all in eval."""
        k = len(self.vocab)
        if self.training and self.config.vocab_keep < 1.0:
            n = max(1, int(round(k * self.config.vocab_keep)))
            return torch.randperm(k, generator=self.generator)[:n].sort().values.to(self.vocab.device)
        return torch.arange(k, device=self.vocab.device)

    def _encode_vocab(self, v: torch.Tensor) -> torch.Tensor:
        norm = torch.cat([normalize_xy(v[..., :2]), v[..., 2:] / np.pi], -1)  # GTRS normalize_vocab_pos
        x = self.vocab_embedding(norm.flatten(-2))[None]
        for layer in self.vocab_encoder:
            x = layer(x, x)
        return x  # [1, K', d]

    def _vocab_features(self, idx: torch.Tensor) -> torch.Tensor:
        """The encoding of the vocabulary rows `idx`. At inference (eval mode, no grad) the whole vocabulary's encoding
        is cached, keyed on the version counters and storage of the vocabulary and of the encoder's parameters (an
        optimizer step, load_state_dict or .to() changes the key)."""
        if self.training or torch.is_grad_enabled() or len(idx) != len(self.vocab):
            return self._encode_vocab(self.vocab[idx])
        tensors = [self.vocab, *self.vocab_embedding.parameters(), *self.vocab_encoder.parameters()]
        key = tuple((t.data_ptr(), t._version) for t in tensors)
        if self._vocab_cache is None or self._vocab_cache[0] != key:
            self._vocab_cache = (key, self._encode_vocab(self.vocab))
        return self._vocab_cache[1]

    def forward(self, batch: dict) -> dict:
        status = batch["status"]
        std = self.config.status_noise_std
        if self.training and max(std) > 0:  # GTRS: N(0, 1) on vx, N(0, 0.2^2) on vy (status columns 4, 5)
            noise = torch.randn((status.shape[0], 2), generator=self.generator) * torch.tensor(std)
            status = torch.cat([status[:, :4], status[:, 4:6] + noise.to(status), status[:, 6:]], 1)
        mem, s = self.encoder(batch["image"], status)
        idx = self.vocab_index()
        v = self.vocab[idx]
        q = self._vocab_features(idx) + s[:, None]
        for layer in self.decoder:
            q = layer(q, mem)
        heads = self.score_heads(q)
        out = {name: heads[..., i] for i, name in enumerate(SCORE_HEADS)}
        out["imi"] = self.imi_head(q)[..., 0]
        out["vocab_index"] = idx
        with torch.no_grad():
            score = gtrs_inference_score(out)
            best = score.argmax(-1)
        out["score"] = score
        out["trajectory"] = v[best][:, self.plan_rows]
        return out
