"""The planners' training losses: `compute_loss(name, model, batch, outputs) -> (loss, {term: float})`, registry
`LOSSES` (planner name -> loss function of the same signature).

Batches follow the planner contract (agents/planners): "trajectory" [B, 8, 3] targets, "imitation_mask" [B] (0.0: a
sim sample in rewards-only mode; absent: all 1), "vocab_scores" [B, K, 9] in SUB_METRICS order with NaN for unknown
labels and "has_vocab_scores" [B] (GTRS-Dense). Rewards-only mode masks exactly the imitation terms: every per-sample
imitation loss is multiplied by the mask before the batch mean (SimScale gtrs_agent.py `imi_mask`), so a masked
sample contributes nothing to LTF's and DiffusionDrive's loss (they have no reward terms) and only its reward BCE to
GTRS-Dense's.

The terms dict holds each weighted term (they sum to "loss") as floats.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from simscale_env.metrics import SUB_METRICS

# NAVSIM transfuser_config.py trajectory_weight (navsim-agents-and-planners.md §3: 10 * L1 traj)
LTF_TRAJECTORY_WEIGHT = 10.0
# DiffusionDrive (reference §4): per decoder layer 10 * sigmoid focal (alpha 0.25, gamma 2) + 8 * L1 of the target
# mode, summed over the layers (modules/multimodal_loss.py), times the trajectory weight 12 (transfuser_loss.py)
DD_CLS_WEIGHT = 10.0
DD_REG_WEIGHT = 8.0
DD_TRAJECTORY_WEIGHT = 12.0
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0
# GTRS-Dense BCE weights per sub-score head (reference §5, verified) and the imitation CE (weight 1, sigma 0.5)
GTRS_SCORE_WEIGHTS = {"nc": 3.0, "dac": 3.0, "ttc": 4.0, "ep": 2.0, "ddc": 1.0, "lk": 2.0, "tlc": 3.0}
GTRS_IMITATION_WEIGHT = 1.0
GTRS_IMITATION_SIGMA = 0.5
GTRS_THREE2TWO = ("nc", "ddc")  # GTRS three2two: a 0.5 label of NC / DDC becomes 0


def _imitation_mask(batch: dict, ref: torch.Tensor) -> torch.Tensor:
    m = batch.get("imitation_mask")
    if m is None:
        return torch.ones(ref.shape[0], dtype=ref.dtype, device=ref.device)
    m = torch.as_tensor(m, device=ref.device).to(ref.dtype)
    if m.shape != (ref.shape[0],):
        raise ValueError(f"batch['imitation_mask'] must be [B={ref.shape[0]}], got {tuple(m.shape)}")
    return m


def _target(batch: dict, pred: torch.Tensor) -> torch.Tensor:
    t = batch["trajectory"].to(pred)
    if t.shape[0] != pred.shape[0] or t.shape[-2:] != (8, 3):
        raise ValueError(f"batch['trajectory'] must be [B={pred.shape[0]}, 8, 3], got {tuple(t.shape)}")
    return t


def _floats(terms: dict) -> dict:
    return {k: float(v.detach()) for k, v in terms.items()}


def masked_mean(per_sample: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean over the batch of per_sample * mask (masked samples count in the denominator, as GTRS)."""
    return (per_sample * mask).mean()


# ---------------------------------------------------------------------------------------------- LTF
def ltf_imitation_per_sample(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 of [B, 8, 3] plans, mean over poses and (x, y, heading) -> [B] (NAVSIM transfuser_loss.py F.l1_loss)."""
    return (pred - target).abs().mean((-2, -1))


def ltf_loss(model, batch: dict, outputs: dict) -> tuple[torch.Tensor, dict]:
    pred = outputs["trajectory"]
    per = ltf_imitation_per_sample(pred, _target(batch, pred))
    loss = LTF_TRAJECTORY_WEIGHT * masked_mean(per, _imitation_mask(batch, pred))
    return loss, _floats({"imitation_l1": loss, "loss": loss})


# ---------------------------------------------------------------------------------------------- DiffusionDrive
def sigmoid_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = FOCAL_ALPHA,
                       gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Elementwise sigmoid focal loss (mmdet py_sigmoid_focal_loss, reduction none)."""
    p = torch.sigmoid(logits)
    pt = (1 - p) * target + p * (1 - target)
    weight = (alpha * target + (1 - alpha) * (1 - target)) * pt.pow(gamma)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight


def target_modes(anchors: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The anchor closest to each target: argmin over M of the mean over poses of the xy L2 -> [B] (DD LossComputer)."""
    d = torch.linalg.norm(target[:, None, :, :2] - anchors[None, :, :, :2].to(target), dim=-1).mean(-1)
    return d.argmin(-1)


def diffusiondrive_per_sample(model, batch: dict, outputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(focal classification [B], L1 of the target mode [B]), each summed over the decoder layers, unweighted."""
    reg, cls = outputs["reg"], outputs["cls"]  # [L, B, M, 8, 3], [L, B, M]
    target = _target(batch, reg[0, :, 0])
    mode = target_modes(model.anchors, target)
    onehot = F.one_hot(mode, cls.shape[-1]).to(cls)
    focal = sigmoid_focal_loss(cls, onehot[None].expand_as(cls)).mean(-1).sum(0)
    best = reg[:, torch.arange(len(mode), device=reg.device), mode]  # [L, B, 8, 3]
    l1 = (best - target[None]).abs().mean((-2, -1)).sum(0)
    return focal, l1


def diffusiondrive_loss(model, batch: dict, outputs: dict) -> tuple[torch.Tensor, dict]:
    focal, l1 = diffusiondrive_per_sample(model, batch, outputs)
    mask = _imitation_mask(batch, focal)
    cls = DD_TRAJECTORY_WEIGHT * DD_CLS_WEIGHT * masked_mean(focal, mask)
    reg = DD_TRAJECTORY_WEIGHT * DD_REG_WEIGHT * masked_mean(l1, mask)
    loss = cls + reg
    return loss, _floats({"imitation_cls": cls, "imitation_reg": reg, "loss": loss})


# ---------------------------------------------------------------------------------------------- GTRS-Dense
def gtrs_score_targets(vocab_scores: torch.Tensor, index: torch.Tensor, has_scores: torch.Tensor | None = None
                       ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{head: (target [B, K'], valid [B, K'] bool)} of the labels [B, K, 9] (SUB_METRICS order) at the scored
    vocabulary rows `index`: NC and DDC 0.5 -> 0 (GTRS three2two); valid = finite label and has_scores."""
    from agents.planners.gtrs_dense import HEAD_SUB_METRIC

    vs = vocab_scores[:, index.to(vocab_scores.device)]
    out = {}
    for head, metric in HEAD_SUB_METRIC.items():
        t = vs[..., SUB_METRICS.index(metric)]
        valid = torch.isfinite(t)
        if has_scores is not None:
            valid = valid & torch.as_tensor(has_scores, device=t.device).bool()[:, None]
        t = torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0)
        if head in GTRS_THREE2TWO:
            t = torch.where(t == 0.5, torch.zeros_like(t), t)
        out[head] = (t, valid)
    return out


def gtrs_imitation_target(vocab: torch.Tensor, target: torch.Tensor, sigma: float = GTRS_IMITATION_SIGMA
                          ) -> torch.Tensor:
    """softmax over the vocabulary of -sum over the 8 poses and (x, y, heading) of (vocab pose - target pose)^2 / sigma,
    the vocabulary at 0.1 s subsampled at rows 4, 9, ..., 39 -> [B, K] (GTRS; heading differences not wrapped, as
    GTRS computes them)."""
    from agents.planners.gtrs_dense import plan_rows

    rows = torch.as_tensor(plan_rows(vocab.shape[1]), device=vocab.device)
    v = vocab[:, rows].to(target)  # [K, 8, 3]
    d2 = ((v[None] - target[:, None]) ** 2).sum((-2, -1))
    return torch.softmax(-d2 / sigma, -1)


def gtrs_imitation_per_sample(model, batch: dict, outputs: dict) -> torch.Tensor:
    """Cross-entropy of the imitation logits against the soft target -> [B]."""
    imi = outputs["imi"]
    soft = gtrs_imitation_target(model.vocab[outputs["vocab_index"]], _target(batch, imi))
    return -(soft * F.log_softmax(imi, -1)).sum(-1)


def gtrs_dense_loss(model, batch: dict, outputs: dict) -> tuple[torch.Tensor, dict]:
    imi = outputs["imi"]
    per = gtrs_imitation_per_sample(model, batch, outputs)
    imitation = GTRS_IMITATION_WEIGHT * masked_mean(per, _imitation_mask(batch, imi))
    terms = {"imitation_ce": imitation}
    if batch.get("vocab_scores") is not None:
        vs = torch.as_tensor(batch["vocab_scores"]).to(imi)
        if vs.ndim != 3 or vs.shape[0] != imi.shape[0] or vs.shape[1] != len(model.vocab) or \
                vs.shape[2] != len(SUB_METRICS):
            raise ValueError(f"batch['vocab_scores'] must be [B={imi.shape[0]}, K={len(model.vocab)}, "
                             f"{len(SUB_METRICS)}] (labels of the model's own vocabulary, SUB_METRICS order), got "
                             f"{tuple(vs.shape)}")
        targets = gtrs_score_targets(vs, outputs["vocab_index"], batch.get("has_vocab_scores"))
        for head, (t, valid) in targets.items():
            bce = F.binary_cross_entropy_with_logits(outputs[head], t, reduction="none")
            v = valid.to(bce.dtype)
            terms[f"bce_{head}"] = GTRS_SCORE_WEIGHTS[head] * (bce * v).sum() / v.sum().clamp(min=1.0)
    loss = sum(terms.values())
    return loss, _floats({**terms, "loss": loss})


LOSSES: dict[str, Callable] = {"ltf": ltf_loss, "diffusiondrive": diffusiondrive_loss, "gtrs_dense": gtrs_dense_loss}


def compute_loss(name: str, model, batch: dict, outputs: dict) -> tuple[torch.Tensor, dict]:
    """(scalar loss, {term: float}) of planner `name` (a LOSSES key or a preset of one) on a batch and the model's
    train-mode outputs."""
    fn = LOSSES.get(name)
    if fn is None:
        planner = getattr(model, "planner_name", None)
        from agents.planners.registry import PRESETS

        fn = LOSSES.get(PRESETS[name][0]) if name in PRESETS else None
        if fn is None:
            raise ValueError(f"no loss for planner {name!r} (model {planner!r}); known: {', '.join(LOSSES)}")
    return fn(model, batch, outputs)
