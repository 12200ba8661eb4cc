"""Vehicle parameters (nuplan/common/actor_state/vehicle_parameters.py `get_pacifica_parameters`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VehicleParameters:
    width: float = 2.297  # 1.1485 * 2
    front_length: float = 4.049  # rear axle to front bumper
    rear_length: float = 1.127  # rear axle to rear bumper
    wheel_base: float = 3.089
    cog_position_from_rear_axle: float = 1.67
    height: float = 1.777
    name: str = "pacifica"

    @property
    def length(self) -> float:
        return self.front_length + self.rear_length  # 5.176

    @property
    def rear_axle_to_center(self) -> float:
        """Distance from the rear axle to the box centre (1.461 m for the Pacifica)."""
        return (self.front_length - self.rear_length) / 2.0


PACIFICA = VehicleParameters()
