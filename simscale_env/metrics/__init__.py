"""EPDMS (NAVSIM v2) sub-metrics and aggregation, batched over candidate plans."""

from .constants import ScorerConfig
from .epdms import PlanScores, ScoringScene, human_filter, score_states, two_frame_extended_comfort

__all__ = ["PlanScores", "ScorerConfig", "ScoringScene", "human_filter", "score_states", "two_frame_extended_comfort"]
