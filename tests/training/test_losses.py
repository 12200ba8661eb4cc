"""The planners' losses (training.losses): rewards-only masking removes exactly the imitation term of a sample (LTF,
DiffusionDrive, GTRS-Dense), GTRS-Dense's BCE targets (NaN and missing labels masked, NC / DDC 0.5 -> 0) and imitation
soft target on known numbers, DiffusionDrive's focal + L1 on known numbers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from agents.planners import build_planner
from agents.planners.diffusiondrive import kmeans_anchors
from simscale_env.metrics import SUB_METRICS
from training.losses import (GTRS_SCORE_WEIGHTS, LOSSES, compute_loss, gtrs_imitation_target, sigmoid_focal_loss,
                             target_modes)

TINY = {"image_size": (64, 32), "backbone_widths": (8, 8, 16, 16), "d_model": 32, "num_heads": 2, "ffn_dim": 64}
B = 4


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _vocab(k=32, seed=0):
    rng = np.random.default_rng(seed)
    steps = np.stack([rng.uniform(0, 1.2, (k, 40)), rng.normal(0, 0.05, (k, 40)), rng.normal(0, 0.01, (k, 40))], -1)
    return np.cumsum(steps, 1).astype(np.float32)


VOCAB = _vocab()


def _model(name):
    arrays = {"diffusiondrive": {"anchors": kmeans_anchors(_vocab(40, 1)[:, 4::5], 5)}, "gtrs_dense": {"vocab": VOCAB}}
    return build_planner(name, TINY, **arrays.get(name, {})).train()


def _batch(mask=None):
    g = torch.Generator().manual_seed(0)
    scores = (torch.rand(B, len(VOCAB), 9, generator=g) > 0.4).float()
    scores[1, :5, 1] = float("nan")
    return {"image": torch.rand(B, 3, 32, 64, generator=g), "status": torch.randn(B, 8, generator=g),
            "trajectory": torch.from_numpy(VOCAB[[3, 7, 11, 2]][:, 4::5].copy()) + 0.2 * torch.randn(B, 8, 3,
                                                                                                     generator=g),
            "vocab_scores": scores, "has_vocab_scores": torch.ones(B, dtype=torch.bool),
            "imitation_mask": torch.ones(B) if mask is None else torch.tensor(mask, dtype=torch.float32)}


def _take(batch: dict, outputs: dict, j: int) -> tuple[dict, dict]:
    """Sample j of a batch and of the model's outputs (DiffusionDrive's reg / cls are [L, B, ...])."""
    b = {k: v[j:j + 1] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    o = {}
    for k, v in outputs.items():
        if k in ("reg", "cls"):
            o[k] = v[:, j:j + 1]
        elif k == "vocab_index":
            o[k] = v
        else:
            o[k] = v[j:j + 1]
    return b, o


@pytest.mark.parametrize("name", ["ltf", "diffusiondrive"])
def test_rewards_only_mask_removes_exactly_the_imitation_term_ltf_diffusiondrive(name):
    model = _model(name)
    if hasattr(model, "seed_generator"):
        model.seed_generator(0)
    batch = _batch()
    with torch.no_grad():
        out = model(batch)
    full, _ = compute_loss(name, model, batch, out)
    j = 2
    single, _ = compute_loss(name, model, *_take(batch, out, j))
    masked, _ = compute_loss(name, model, _batch([1, 1, 0, 1]), out)
    assert float(single) > 0
    assert math.isclose(float(masked), float(full) - float(single) / B, rel_tol=1e-5)
    # no reward heads: a masked sample's loss is 0, an all-masked batch's loss is 0
    alone, terms = compute_loss(name, model, *_take(_batch([1, 1, 0, 1]), out, j))
    assert float(alone) == 0.0 and terms["loss"] == 0.0
    assert float(compute_loss(name, model, _batch([0, 0, 0, 0]), out)[0]) == 0.0


def test_rewards_only_mask_removes_exactly_the_imitation_term_gtrs_dense():
    model = _model("gtrs_dense")
    model.seed_generator(1)
    batch = _batch()
    with torch.no_grad():
        out = model(batch)
    assert len(out["vocab_index"]) == len(VOCAB) // 2
    full, full_terms = compute_loss("gtrs_dense", model, batch, out)
    j = 1
    b_j, o_j = _take(batch, out, j)
    b_j.pop("vocab_scores")  # sample j alone, imitation only
    imi_j, terms_j = compute_loss("gtrs_dense", model, b_j, o_j)
    assert set(terms_j) == {"imitation_ce", "loss"} and float(imi_j) > 0
    masked, masked_terms = compute_loss("gtrs_dense", model, _batch([1, 0, 1, 1]), out)
    assert math.isclose(float(masked), float(full) - float(imi_j) / B, rel_tol=1e-5)
    for k in full_terms:  # every reward BCE term is unchanged
        if k.startswith("bce_"):
            assert masked_terms[k] == full_terms[k], k
    assert math.isclose(masked_terms["imitation_ce"], full_terms["imitation_ce"] - float(imi_j) / B, rel_tol=1e-5)


def _bce(x, t):
    return math.log1p(math.exp(x)) - t * x  # BCE-with-logits


def test_gtrs_bce_targets_known_numbers():
    """Two samples, a 3-trajectory vocabulary of which rows 0 and 2 are scored (vocabulary dropout). Sample 1 has no
    labels (has_vocab_scores False); sample 0: NC 0.5 -> 0, DDC 0.5 -> 0, EP keeps 0.5, a NaN DAC label is masked, TLC
    is all NaN (term 0), row 1's labels are never read."""
    col = {m: i for i, m in enumerate(SUB_METRICS)}
    vs = torch.full((2, 3, 9), float("nan"))
    vs[0, :, col["no_at_fault_collisions"]] = torch.tensor([0.5, 7.0, 1.0])
    vs[0, :, col["driving_direction_compliance"]] = torch.tensor([0.5, 7.0, 0.0])
    vs[0, :, col["ego_progress"]] = torch.tensor([0.5, 7.0, 0.25])
    vs[0, :, col["drivable_area_compliance"]] = torch.tensor([float("nan"), 7.0, 1.0])
    vs[0, :, col["time_to_collision_within_bound"]] = torch.tensor([1.0, 7.0, 0.0])
    vs[0, :, col["lane_keeping"]] = torch.tensor([0.0, 7.0, 1.0])
    vs[1] = 1.0  # labels present but has_vocab_scores is False: all masked
    logits = torch.tensor([[0.3, -1.2], [2.0, 2.0]])
    vocab = torch.from_numpy(VOCAB[:3])
    model = SimpleNamespace(vocab=vocab)
    out = {h: logits.clone() for h in ("nc", "dac", "ddc", "tlc", "ep", "ttc", "lk")}
    out["imi"] = torch.zeros(2, 2)
    out["vocab_index"] = torch.tensor([0, 2])
    batch = {"trajectory": vocab[[0, 2]][:, 4::5], "vocab_scores": vs,
             "has_vocab_scores": torch.tensor([True, False]), "imitation_mask": torch.ones(2)}
    _, terms = compute_loss("gtrs_dense", model, batch, out)
    want = {"nc": (_bce(0.3, 0) + _bce(-1.2, 1)) / 2, "ddc": (_bce(0.3, 0) + _bce(-1.2, 0)) / 2,
            "ep": (_bce(0.3, 0.5) + _bce(-1.2, 0.25)) / 2, "dac": _bce(-1.2, 1.0), "tlc": 0.0,
            "ttc": (_bce(0.3, 1) + _bce(-1.2, 0)) / 2, "lk": (_bce(0.3, 0) + _bce(-1.2, 1)) / 2}
    for h, v in want.items():
        assert math.isclose(terms[f"bce_{h}"], GTRS_SCORE_WEIGHTS[h] * v, rel_tol=1e-5, abs_tol=1e-7), h
    assert math.isclose(terms["imitation_ce"], math.log(2), rel_tol=1e-6)  # uniform logits: CE = log K'
    assert math.isclose(terms["loss"], sum(v for k, v in terms.items() if k != "loss"), rel_tol=1e-6)
    assert GTRS_SCORE_WEIGHTS == {"nc": 3, "dac": 3, "ttc": 4, "ep": 2, "ddc": 1, "lk": 2, "tlc": 3}
    with pytest.raises(ValueError, match=r"vocab_scores'\] must be \[B=2, K=3, 9\].*got \(2, 4, 9\)"):
        compute_loss("gtrs_dense", model, {**batch, "vocab_scores": torch.zeros(2, 4, 9)}, out)


def test_gtrs_imitation_soft_target_known_numbers():
    """The target uses vocabulary rows 4, 9, ..., 39 only, sums the squared x, y and heading differences, sigma 0.5."""
    gt = torch.from_numpy(VOCAB[5][4::5].copy())[None]  # [1, 8, 3]
    v = np.repeat(VOCAB[5][None], 4, 0).copy()
    v[:, [0, 1, 2, 3, 10, 20, 38]] = 1e3  # rows between the 0.5 s poses do not count
    v[1, 4::5, 0] += 0.5  # x off by 0.5 at all 8 poses: sum of squares 2 -> logit -2 / 0.5 = -4
    v[2, 4::5, 2] -= 0.5  # heading off by 0.5: the same
    v[3, 4::5, :2] += 0.5  # x and y: sum 4 -> -8
    got = gtrs_imitation_target(torch.from_numpy(v), gt)
    want = np.exp([0.0, -4.0, -4.0, -8.0])
    assert np.allclose(got.numpy()[0], want / want.sum(), atol=1e-6)
    model = SimpleNamespace(vocab=torch.from_numpy(v))
    imi = torch.tensor([[1.0, 0.0, 0.0, -1.0]])
    out = {"imi": imi, "vocab_index": torch.arange(4)}
    loss, terms = compute_loss("gtrs_dense", model, {"trajectory": gt}, out)
    ce = -(torch.from_numpy(want / want.sum()).float() * torch.log_softmax(imi, -1)).sum()
    assert math.isclose(float(loss), float(ce), rel_tol=1e-6) and set(terms) == {"imitation_ce", "loss"}


def test_diffusiondrive_focal_and_l1_known_numbers():
    assert math.isclose(float(sigmoid_focal_loss(torch.tensor(0.0), torch.tensor(1.0))), 0.25 * 0.25 * math.log(2),
                        rel_tol=1e-6)
    assert math.isclose(float(sigmoid_focal_loss(torch.tensor(0.0), torch.tensor(0.0))), 0.75 * 0.25 * math.log(2),
                        rel_tol=1e-6)
    anchors = torch.tensor([[[x, 0.0] for x in range(1, 9)], [[x, 3.0] for x in range(1, 9)]], dtype=torch.float32)
    gt = torch.cat([anchors[1], torch.zeros(8, 1)], -1)[None] + 0.1  # nearest anchor: 1
    assert target_modes(anchors, gt).tolist() == [1]
    reg = torch.stack([gt[0] + 5.0, gt[0] + torch.tensor([0.2, 0.0, -0.4])])[None, None]  # [L=1, B=1, M=2, 8, 3]
    reg = torch.cat([reg, reg], 0)  # two decoder layers, the same outputs
    out = {"reg": reg, "cls": torch.zeros(2, 1, 2)}
    loss, terms = compute_loss("diffusiondrive", SimpleNamespace(anchors=anchors), {"trajectory": gt}, out)
    focal = 0.5 * (0.0625 + 0.1875) * math.log(2)  # mean over the 2 modes
    l1 = (0.2 + 0.0 + 0.4) / 3
    assert math.isclose(terms["imitation_cls"], 12 * 10 * 2 * focal, rel_tol=1e-5)
    assert math.isclose(terms["imitation_reg"], 12 * 8 * 2 * l1, rel_tol=1e-5)
    assert math.isclose(float(loss), terms["imitation_cls"] + terms["imitation_reg"], rel_tol=1e-6)


def test_ltf_loss_known_numbers_and_registry():
    gt = torch.zeros(2, 8, 3)
    pred = torch.zeros(2, 8, 3)
    pred[0, :, 0] = 1.0  # L1 mean 1/3
    loss, terms = compute_loss("ltf", None, {"trajectory": gt, "imitation_mask": torch.tensor([1.0, 1.0])},
                               {"trajectory": pred})
    assert math.isclose(float(loss), 10 * (1 / 3) / 2, rel_tol=1e-6) and terms == {"imitation_l1": terms["loss"],
                                                                                    "loss": terms["loss"]}
    assert list(LOSSES) == ["ltf", "diffusiondrive", "gtrs_dense"]
    assert float(compute_loss("ltf_navsim", None, {"trajectory": gt}, {"trajectory": pred})[0]) == float(loss)
    with pytest.raises(ValueError, match="no loss for planner 'nope'"):
        compute_loss("nope", None, {}, {})
    with pytest.raises(ValueError, match=r"imitation_mask'\] must be \[B=2\]"):
        compute_loss("ltf", None, {"trajectory": gt, "imitation_mask": torch.ones(3)}, {"trajectory": pred})
