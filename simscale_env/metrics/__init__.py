"""EPDMS (NAVSIM v2) sub-metrics and aggregation, batched over candidate plans."""

from .aggregate import TwoStageGroup, one_stage_score, two_stage_score, two_stage_weights
from .constants import SUB_METRICS, ScorerConfig
from .epdms import PlanScores, ScoringScene, human_filter, score_states, two_frame_extended_comfort
from .navsim_cache import NavsimReactiveTraffic, metric_cache_scene, pdm_path_start_pose
from .pseudo_sim import (episode_summary, navsim_plan_scores, navsim_reactive_traffic, plan_states, pseudo_simulate,
                         scene_from_frames, scoring_scene)

__all__ = ["NavsimReactiveTraffic", "PlanScores", "SUB_METRICS", "ScorerConfig", "ScoringScene", "episode_summary", "human_filter",
           "metric_cache_scene", "navsim_plan_scores", "navsim_reactive_traffic", "one_stage_score",
           "pdm_path_start_pose", "plan_states", "pseudo_simulate", "scene_from_frames", "score_states",
           "scoring_scene", "two_frame_extended_comfort", "TwoStageGroup", "two_stage_score", "two_stage_weights"]
