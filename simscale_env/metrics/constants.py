"""EPDMS constants, each with the NAVSIM source it mirrors (autonomousvision/navsim @ 0a380a9)."""

from __future__ import annotations

from dataclasses import dataclass

# navsim/planning/simulation/planner/pdm_planner/scoring/pdm_scorer.py, PDMScorerConfig
PROGRESS_WEIGHT = 5.0
TTC_WEIGHT = 5.0
LANE_KEEPING_WEIGHT = 2.0
HISTORY_COMFORT_WEIGHT = 2.0
TWO_FRAME_EXTENDED_COMFORT_WEIGHT = 2.0
DRIVING_DIRECTION_HORIZON_S = 1.0
DRIVING_DIRECTION_COMPLIANCE_THRESHOLD = 2.0  # [m]
DRIVING_DIRECTION_VIOLATION_THRESHOLD = 6.0  # [m]
STOPPED_SPEED_THRESHOLD = 5e-3  # [m/s] (ttc)
FUTURE_COLLISION_HORIZON_WINDOW_S = 1.0  # (ttc)
PROGRESS_DISTANCE_THRESHOLD = 5.0  # [m]
LANE_KEEPING_DEVIATION_LIMIT = 0.5  # [m]
LANE_KEEPING_HORIZON_WINDOW_S = 2.0

# pdm_scorer_utils.get_collision_type / nuplan idm utils.is_track_stopped
COLLISION_STOPPED_SPEED_THRESHOLD = 5e-2  # [m/s]
AHEAD_ANGLE_DEG = 30.0  # nuplan idm utils.is_agent_ahead
BEHIND_ANGLE_DEG = 150.0  # nuplan idm utils.is_agent_behind

# scoring/pdm_comfort_metrics.py (nuPlan comfort bounds, strict)
MAX_ABS_MAG_JERK = 8.37
MAX_ABS_LAT_ACCEL = 4.89
MAX_LON_ACCEL = 2.40
MIN_LON_ACCEL = -4.05
MAX_ABS_YAW_ACCEL = 1.93
MAX_ABS_LON_JERK = 4.13
MAX_ABS_YAW_RATE = 0.95
# two-frame extended comfort RMS limits
EC_ACCELERATION_THRESHOLD = 0.7
EC_JERK_THRESHOLD = 0.5
EC_YAW_RATE_THRESHOLD = 0.1
EC_YAW_ACCEL_THRESHOLD = 0.1
EC_MAX_FRAME_GAP_S = 0.55  # scene_aggregator._compute_two_frame_comfort asserts 0 < gap < 0.55

# navhard two-stage weighting (scene_aggregator.calculate_pseudo_closed_loop_weights): sigma^2 = 0.1 m^2
TWO_STAGE_SIGMA_SQ = 0.1

# The sub-score order of NAVSIM's weighted metrics (WeightedMetricIndex)
WEIGHTED_METRICS = ("ego_progress", "time_to_collision_within_bound", "lane_keeping", "history_comfort",
                    "two_frame_extended_comfort")
MULTIPLICATIVE_METRICS = ("no_at_fault_collisions", "drivable_area_compliance", "driving_direction_compliance",
                          "traffic_light_compliance")
SUB_METRICS = MULTIPLICATIVE_METRICS + WEIGHTED_METRICS

# NAVSIM's metric cache (navsim/planning/metric_caching/metric_cache_processor.py, used by metrics/navsim_cache.py)
# navsim_scenario.py: NavSimScenario._database_interval = 0.5 (OpenScene frames at 2 Hz)
NAVSIM_FRAME_INTERVAL_S = 0.5
# metric_cache_processor.py: proposal_sampling TrajectorySampling(num_poses=40, interval_length=0.1)
NAVSIM_HORIZON_S = 4.0
NAVSIM_INTERVAL_S = 0.1
# navsim_scenario.py get_ego_past_trajectory: TrajectorySampling(num_poses=3, interval_length=0.5) over 1.5 s
NAVSIM_PAST_FRAMES = 3
# metric_cache_processor.py: PDMClosedPlanner(lateral_offsets=[-1.0, 1.0]): PDM-Closed plans on the centreline (0)
# and its parallels
PDM_CLOSED_LATERAL_OFFSETS = (0.0, -1.0, 1.0)
# navsim_scenario_utils.tracked_object_types / nuplan tracked_objects_types.AGENT_TYPES
NAVSIM_AGENT_NAMES = ("vehicle", "pedestrian", "bicycle")
NAVSIM_VEHICLE_NAME = "vehicle"


@dataclass(frozen=True)
class ScorerConfig:
    progress_weight: float = PROGRESS_WEIGHT
    ttc_weight: float = TTC_WEIGHT
    lane_keeping_weight: float = LANE_KEEPING_WEIGHT
    history_comfort_weight: float = HISTORY_COMFORT_WEIGHT
    two_frame_extended_comfort_weight: float = TWO_FRAME_EXTENDED_COMFORT_WEIGHT
    driving_direction_horizon: float = DRIVING_DIRECTION_HORIZON_S
    driving_direction_compliance_threshold: float = DRIVING_DIRECTION_COMPLIANCE_THRESHOLD
    driving_direction_violation_threshold: float = DRIVING_DIRECTION_VIOLATION_THRESHOLD
    stopped_speed_threshold: float = STOPPED_SPEED_THRESHOLD
    future_collision_horizon_window: float = FUTURE_COLLISION_HORIZON_WINDOW_S
    progress_distance_threshold: float = PROGRESS_DISTANCE_THRESHOLD
    lane_keeping_deviation_limit: float = LANE_KEEPING_DEVIATION_LIMIT
    lane_keeping_horizon_window: float = LANE_KEEPING_HORIZON_WINDOW_S
    dt: float = 0.1  # proposal_sampling interval_length (NAVSIM default_common.yaml): 10 Hz

    @property
    def weights(self) -> tuple[float, float, float, float, float]:
        return (self.progress_weight, self.ttc_weight, self.lane_keeping_weight, self.history_comfort_weight,
                self.two_frame_extended_comfort_weight)
