"""Look-alikes of the nuplan-devkit classes a planner reads (`nuplan/planning/simulation/planner/abstract_planner.py`
`PlannerInitialization` and `PlannerInput`, and what they hold), for when nuplan-devkit is not importable (it is not
on PyPI). Same class names, field names and the properties planners use (`EgoState.rear_axle`, `.center`,
`.dynamic_car_state`, `.time_point`; `SimulationHistoryBuffer.current_state`, `.ego_states`, `.observations`;
`TrackedObjects.get_agents()`, ...); `nuplan_classes()` returns the devkit's own classes when they import.

Frames and units as nuPlan's: the map's global frame, m, rad, m/s, m/s^2, microseconds; ego poses at the rear axle,
object boxes at their centres.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from types import SimpleNamespace
from typing import Any, List, Optional

import numpy as np


@dataclass(frozen=True)
class TimePoint:
    time_us: int

    @property
    def time_s(self) -> float:
        return self.time_us * 1e-6


@dataclass
class Point2D:
    x: float
    y: float


@dataclass
class StateSE2:
    x: float
    y: float
    heading: float

    @property
    def point(self) -> Point2D:
        return Point2D(self.x, self.y)

    def serialize(self) -> list[float]:
        return [self.x, self.y, self.heading]


@dataclass
class StateVector2D:
    x: float
    y: float

    def magnitude(self) -> float:
        return float(np.hypot(self.x, self.y))


@dataclass
class SimulationIteration:
    time_point: TimePoint
    index: int

    @property
    def time_us(self) -> int:
        return int(self.time_point.time_us)

    @property
    def time_s(self) -> float:
        return float(self.time_point.time_s)


@dataclass
class DynamicCarState:
    rear_axle_velocity_2d: StateVector2D  # ego frame
    rear_axle_acceleration_2d: StateVector2D
    angular_velocity: float = 0.0
    angular_acceleration: float = 0.0
    tire_steering_rate: float = 0.0

    @property
    def speed(self) -> float:
        return self.rear_axle_velocity_2d.magnitude()

    @property
    def acceleration(self) -> float:
        return self.rear_axle_acceleration_2d.magnitude()


@dataclass
class EgoState:
    """The ego at the rear axle. `array` is the env's raw state [11] (`simscale_env.sim.state` order)."""

    rear_axle: StateSE2
    dynamic_car_state: DynamicCarState
    tire_steering_angle: float
    time_point: TimePoint
    center: StateSE2
    array: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(11))
    is_in_auto_mode: bool = True

    @property
    def time_us(self) -> int:
        return int(self.time_point.time_us)

    @property
    def time_seconds(self) -> float:
        return self.time_point.time_s


class TrackedObjectType(Enum):
    """nuplan/common/actor_state/tracked_objects_types.py (value, fullname)."""

    VEHICLE = 0, "vehicle"
    PEDESTRIAN = 1, "pedestrian"
    BICYCLE = 2, "bicycle"
    TRAFFIC_CONE = 3, "traffic_cone"
    BARRIER = 4, "barrier"
    CZONE_SIGN = 5, "czone_sign"
    GENERIC_OBJECT = 6, "generic_object"
    EGO = 7, "ego"

    def __new__(cls, value: int, name: str):
        member = object.__new__(cls)
        member._value_ = value
        member.fullname = name
        return member


# nuplan/common/actor_state/tracked_objects_types.py AGENT_TYPES
AGENT_TYPES = {TrackedObjectType.VEHICLE, TrackedObjectType.PEDESTRIAN, TrackedObjectType.BICYCLE,
               TrackedObjectType.EGO}


@dataclass
class OrientedBox:
    center: StateSE2
    length: float
    width: float
    height: float


@dataclass
class SceneObjectMetadata:
    timestamp_us: int
    token: str
    track_id: Optional[int]
    track_token: Optional[str]
    category_name: Optional[str] = None


@dataclass
class StaticObject:
    tracked_object_type: TrackedObjectType
    box: OrientedBox
    metadata: SceneObjectMetadata

    @property
    def center(self) -> StateSE2:
        return self.box.center

    @property
    def track_token(self) -> Optional[str]:
        return self.metadata.track_token

    @property
    def token(self) -> str:
        return self.metadata.token


@dataclass
class Agent(StaticObject):
    velocity: StateVector2D = field(default_factory=lambda: StateVector2D(0.0, 0.0))  # global frame


class TrackedObjects:
    def __init__(self, tracked_objects: Optional[List[Any]] = None):
        self.tracked_objects = list(tracked_objects or [])

    def __len__(self) -> int:
        return len(self.tracked_objects)

    def __iter__(self):
        return iter(self.tracked_objects)

    def get_agents(self) -> list:
        return [o for o in self.tracked_objects if o.tracked_object_type in AGENT_TYPES]

    def get_static_objects(self) -> list:
        return [o for o in self.tracked_objects if o.tracked_object_type not in AGENT_TYPES]

    def get_tracked_objects_of_type(self, tracked_object_type) -> list:
        return [o for o in self.tracked_objects if o.tracked_object_type == tracked_object_type]

    def get_tracked_objects_of_types(self, tracked_object_types) -> list:
        want = set(tracked_object_types)
        return [o for o in self.tracked_objects if o.tracked_object_type in want]


@dataclass
class DetectionsTracks:
    tracked_objects: TrackedObjects


class TrafficLightStatusType(IntEnum):
    """nuplan/common/maps/maps_datatypes.py TrafficLightStatusType."""

    GREEN = 0
    YELLOW = 1
    RED = 2
    UNKNOWN = 3


@dataclass
class TrafficLightStatusData:
    status: TrafficLightStatusType
    lane_connector_id: int
    timestamp: int


class SimulationHistoryBuffer:
    """The ego states and observations of the last seconds, oldest first (`current_state`: the newest pair)."""

    def __init__(self, ego_state_buffer: deque, observations_buffer: deque, sample_interval: Optional[float] = None):
        self._ego_state_buffer = ego_state_buffer
        self._observations_buffer = observations_buffer
        self._sample_interval = sample_interval

    @property
    def ego_state_buffer(self) -> deque:
        return self._ego_state_buffer

    @property
    def observation_buffer(self) -> deque:
        return self._observations_buffer

    @property
    def ego_states(self) -> list:
        return list(self._ego_state_buffer)

    @property
    def observations(self) -> list:
        return list(self._observations_buffer)

    @property
    def current_state(self):
        return self._ego_state_buffer[-1], self._observations_buffer[-1]

    @property
    def sample_interval(self) -> Optional[float]:
        return self._sample_interval

    @property
    def size(self) -> int:
        return len(self._ego_state_buffer)

    @property
    def duration(self) -> Optional[float]:
        return None if self._sample_interval is None else self.size * self._sample_interval

    def __len__(self) -> int:
        return len(self._ego_state_buffer)


@dataclass(frozen=True)
class PlannerInitialization:
    route_roadblock_ids: List[str]
    mission_goal: Optional[StateSE2]
    map_api: Any  # here: simscale_env.map.MapAPI (not nuPlan's AbstractMap)


@dataclass(frozen=True)
class PlannerInput:
    iteration: SimulationIteration
    history: SimulationHistoryBuffer
    traffic_light_data: Optional[List[TrafficLightStatusData]] = None


class InterpolatedTrajectory:
    """A planner's output: states with `time_point` (or `time_us`) and `rear_axle`, in time order."""

    def __init__(self, trajectory: list):
        if len(trajectory) < 2:
            raise ValueError("a trajectory needs at least 2 states")
        self._trajectory = list(trajectory)

    def get_sampled_trajectory(self) -> list:
        return list(self._trajectory)

    @property
    def start_time(self) -> TimePoint:
        return self._trajectory[0].time_point

    @property
    def end_time(self) -> TimePoint:
        return self._trajectory[-1].time_point


LOOKALIKES = SimpleNamespace(
    TimePoint=TimePoint, StateSE2=StateSE2, StateVector2D=StateVector2D, SimulationIteration=SimulationIteration,
    DynamicCarState=DynamicCarState, EgoState=EgoState, TrackedObjectType=TrackedObjectType, OrientedBox=OrientedBox,
    SceneObjectMetadata=SceneObjectMetadata, StaticObject=StaticObject, Agent=Agent, TrackedObjects=TrackedObjects,
    DetectionsTracks=DetectionsTracks, TrafficLightStatusType=TrafficLightStatusType,
    TrafficLightStatusData=TrafficLightStatusData, SimulationHistoryBuffer=SimulationHistoryBuffer,
    PlannerInitialization=PlannerInitialization, PlannerInput=PlannerInput,
    InterpolatedTrajectory=InterpolatedTrajectory, real=False)


def nuplan_classes(prefer_real: bool = True) -> SimpleNamespace:
    """nuplan-devkit's own classes when importable and `prefer_real`, else the look-alikes; `.real` says which."""
    if not prefer_real:
        return LOOKALIKES
    try:
        from nuplan.common.actor_state.agent import Agent as _Agent
        from nuplan.common.actor_state.ego_state import EgoState as _EgoState
        from nuplan.common.actor_state.oriented_box import OrientedBox as _OrientedBox
        from nuplan.common.actor_state.scene_object import SceneObjectMetadata as _Meta
        from nuplan.common.actor_state.state_representation import StateSE2 as _SE2
        from nuplan.common.actor_state.state_representation import StateVector2D as _V2
        from nuplan.common.actor_state.state_representation import TimePoint as _TimePoint
        from nuplan.common.actor_state.static_object import StaticObject as _Static
        from nuplan.common.actor_state.tracked_objects import TrackedObjects as _Tracked
        from nuplan.common.actor_state.tracked_objects_types import TrackedObjectType as _Type
        from nuplan.common.actor_state.vehicle_parameters import get_pacifica_parameters
        from nuplan.common.maps.maps_datatypes import TrafficLightStatusData as _TLData
        from nuplan.common.maps.maps_datatypes import TrafficLightStatusType as _TLType
        from nuplan.planning.simulation.history.simulation_history_buffer import SimulationHistoryBuffer as _Buffer
        from nuplan.planning.simulation.observation.observation_type import DetectionsTracks as _Detections
        from nuplan.planning.simulation.planner.abstract_planner import PlannerInitialization as _Init
        from nuplan.planning.simulation.planner.abstract_planner import PlannerInput as _Input
        from nuplan.planning.simulation.simulation_time_controller.simulation_iteration import \
            SimulationIteration as _Iteration
        from nuplan.planning.simulation.trajectory.interpolated_trajectory import InterpolatedTrajectory as _Interp
    except Exception:  # noqa: BLE001  (not installed, or broken)
        return LOOKALIKES
    return SimpleNamespace(
        TimePoint=_TimePoint, StateSE2=_SE2, StateVector2D=_V2, SimulationIteration=_Iteration, EgoState=_EgoState,
        TrackedObjectType=_Type, OrientedBox=_OrientedBox, SceneObjectMetadata=_Meta, StaticObject=_Static,
        Agent=_Agent, TrackedObjects=_Tracked, DetectionsTracks=_Detections, TrafficLightStatusType=_TLType,
        TrafficLightStatusData=_TLData, SimulationHistoryBuffer=_Buffer, PlannerInitialization=_Init,
        PlannerInput=_Input, InterpolatedTrajectory=_Interp, get_pacifica_parameters=get_pacifica_parameters,
        real=True)
