"""Aggregation: navhard two-stage weighting and scoring, navtest one-stage means.

navsim/planning/simulation/planner/pdm_planner/scoring/scene_aggregator.py (`calculate_pseudo_closed_loop_weights`,
`aggregate_scores`) and navsim/planning/script/run_pdm_score.py (`calculate_individual_mapping_scores`,
`compute_final_scores`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .constants import TWO_STAGE_SIGMA_SQ


def two_stage_weights(endpoint_xy, start_points_xy, sigma_sq: float = TWO_STAGE_SIGMA_SQ) -> np.ndarray:
    """w_i = exp(-d_i^2 / (2 sigma^2)) of the distance from the stage-1 planned endpoint to each stage-2 scene's start,
    normalised to sum 1; uniform when the sum is ~0 or NaN (`np.isclose(sum, 0)`)."""
    e = np.asarray(endpoint_xy, dtype=np.float64).reshape(2)
    p = np.asarray(start_points_xy, dtype=np.float64).reshape(-1, 2)
    if len(p) == 0:
        raise ValueError("start_points_xy is empty: a stage-1 frame needs at least one stage-2 scene")
    d2 = ((p - e) ** 2).sum(axis=1)
    w = np.exp(-d2 / (2.0 * sigma_sq))
    s = w.sum()
    if np.isclose(s, 0.0) or np.isnan(s):
        return np.full(len(p), 1.0 / len(p))
    return w / s


@dataclass(frozen=True)
class TwoStageGroup:
    """One stage-1 frame pair (now, 0.5 s earlier) with its stage-2 scenes."""

    stage1_now: float  # EPDMS of the stage-1 frame at t
    stage1_prev: float  # at t - 0.5 s
    endpoint_now: tuple[float, float]  # the agent's planned endpoint (global) at t
    endpoint_prev: tuple[float, float]
    stage2_now: np.ndarray  # [K] EPDMS of the stage-2 scenes at t + 4 s
    stage2_prev: np.ndarray  # [K] at t + 3.5 s
    start_now: np.ndarray  # [K, 2] start positions of those scenes
    start_prev: np.ndarray


def two_stage_score(groups: list[TwoStageGroup], sigma_sq: float = TWO_STAGE_SIGMA_SQ) -> tuple[float, np.ndarray]:
    """Per group: g_now = S1(now) * sum w S2(now), g_prev likewise, entry = (g_now + g_prev) / 2; the score is the
    mean over groups. Returns (score, per-group values)."""
    vals = []
    for g in groups:
        wn = two_stage_weights(g.endpoint_now, g.start_now, sigma_sq)
        wp = two_stage_weights(g.endpoint_prev, g.start_prev, sigma_sq)
        g_now = g.stage1_now * float(np.dot(wn, g.stage2_now))
        g_prev = g.stage1_prev * float(np.dot(wp, g.stage2_prev))
        vals.append(0.5 * (g_now + g_prev))
    v = np.asarray(vals, dtype=np.float64)
    return (float(v.mean()) if len(v) else float("nan")), v


def one_stage_score(epdms: np.ndarray) -> float:
    """navtest: the mean of the per-frame EPDMS (EC included where a frame has its partner 0.5 s earlier)."""
    e = np.asarray(epdms, dtype=np.float64)
    return float(e.mean()) if len(e) else float("nan")
