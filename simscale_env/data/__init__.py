"""Reading nuPlan logs and OpenScene/NAVSIM logs, scenario extraction, splits and the mini-dataset builder."""

from .nuplan_db import CameraCalibration, LogDB, SceneRecord, ScenarioTagRecord, split_roadblock_ids
from .scenario import (
    AgentTracks,
    EgoTrack,
    Scenario,
    ScenarioBuilder,
    ScenarioRef,
    TrafficLights,
    extract_scenario,
    iterate_log,
)

__all__ = [
    "AgentTracks", "CameraCalibration", "EgoTrack", "LogDB", "Scenario", "ScenarioBuilder", "ScenarioRef",
    "SceneRecord", "ScenarioTagRecord", "TrafficLights", "extract_scenario", "iterate_log", "split_roadblock_ids",
]
