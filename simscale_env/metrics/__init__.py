"""EPDMS (NAVSIM v2) sub-metrics and aggregation, batched over candidate plans."""

from .aggregate import one_stage_score, two_stage_score, two_stage_weights
from .constants import ScorerConfig
from .epdms import PlanScores, ScoringScene, human_filter, score_states, two_frame_extended_comfort
from .pseudo_sim import episode_summary, plan_states, pseudo_simulate, scene_from_frames, scoring_scene

__all__ = ["PlanScores", "ScorerConfig", "ScoringScene", "episode_summary", "human_filter", "one_stage_score",
           "plan_states", "pseudo_simulate", "scene_from_frames", "score_states", "scoring_scene",
           "two_frame_extended_comfort", "two_stage_score", "two_stage_weights"]
