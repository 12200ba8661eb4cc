"""Perturbed resets: move the logged ego off its track to states worth recovering from.

A perturbation (lateral, longitudinal, heading, speed scale) is applied to the logged ego at an iteration in the
frame of the lane it drives on: the rear axle moves `longitudinal` metres along the lane direction and `lateral`
metres along the lane normal (left +), the heading turns by `heading` (radians, left +) and the speed is scaled.
With `reachable_window_s` set (opt-in, SimScale-style perturbations of the driven trajectory over a window), the
lateral and heading offsets are bounded by what the ego could have built up while driving the logged path of the
last `reachable_window_s` seconds (travel d): |heading| <= d * `max_curvature` and |lateral| <= d * tan(max |heading|
of the range); a standing ego then gets only longitudinal and speed offsets.
A sample is rejected, and another drawn, when the ego box then leaves the drivable area, overlaps any object of the
scene (with `clearance` metres to spare), or heads against the direction of every lane its centre lies in (or lies
in no lane at all). After `max_tries` rejected samples a :class:`PerturbationError` says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from ..errors import SimScaleError
from ..geometry import wrap_angle
from ..map.map_api import MapAPI
from .state import HEADING, VELOCITY_X, X, Y
from .vehicle import PACIFICA, VehicleParameters


class PerturbationError(SimScaleError, ValueError):
    """No valid perturbed start could be drawn for a scene."""


@dataclass(frozen=True)
class PerturbationConfig:
    """Uniform ranges of the perturbation. Defaults are those of navtrain/navtest (`PERTURBATION_DEFAULTS`)."""

    lateral_m: tuple[float, float] = (-1.5, 1.5)
    longitudinal_m: tuple[float, float] = (-2.0, 2.0)
    heading_deg: tuple[float, float] = (-10.0, 10.0)
    speed_scale: tuple[float, float] = (0.7, 1.3)
    clearance_m: float = 0.3
    max_heading_to_lane_deg: float = 90.0
    # a start whose box, driven straight at its speed for this long (a driver's reaction time), leaves the road is
    # doomed, not merely perturbed: rejected as "leaves_road"
    reaction_s: float = 0.3
    max_tries: int = 100
    reachable_window_s: float | None = None  # opt-in: offsets bounded by the logged travel over this window
    max_curvature: float = 0.2  # 1/m, for the heading bound of `reachable_window_s`

    def __post_init__(self):
        for name in ("lateral_m", "longitudinal_m", "heading_deg", "speed_scale"):
            lo, hi = getattr(self, name)
            if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
                raise ValueError(f"{name} must be a finite (low, high) range, got {(lo, hi)}")
        if self.speed_scale[0] < 0:
            raise ValueError(f"speed_scale must be >= 0, got {self.speed_scale}")
        if self.max_tries < 1:
            raise ValueError("max_tries must be >= 1")
        if self.reachable_window_s is not None and not self.reachable_window_s > 0:
            raise ValueError(f"reachable_window_s must be > 0 or None, got {self.reachable_window_s}")


# Documented defaults per split: navhard is wider, covering recovery-worthy states (SimScale-style).
PERTURBATION_DEFAULTS = {
    "navtrain": PerturbationConfig(),
    "navtest": PerturbationConfig(),
    "navhard": PerturbationConfig(lateral_m=(-3.0, 3.0), longitudinal_m=(-3.0, 3.0), heading_deg=(-20.0, 20.0),
                                  speed_scale=(0.5, 1.5)),
}


@dataclass(frozen=True)
class Perturbation:
    lateral: float = 0.0  # m, left +
    longitudinal: float = 0.0  # m, forward +
    heading: float = 0.0  # rad, left +
    speed_scale: float = 1.0

    def as_dict(self) -> dict:
        return {"lateral_m": self.lateral, "longitudinal_m": self.longitudinal,
                "heading_deg": float(np.degrees(self.heading)), "speed_scale": self.speed_scale}

    @staticmethod
    def from_dict(d: dict) -> "Perturbation":
        allowed = {"lateral_m", "longitudinal_m", "heading_deg", "speed_scale"}
        bad = set(d) - allowed
        if bad:
            raise ValueError(f"unknown perturbation keys {sorted(bad)}; expected {sorted(allowed)}")
        vals = {k: float(d.get(k, 0.0 if k != "speed_scale" else 1.0)) for k in allowed}
        if not all(np.isfinite(v) for v in vals.values()) or vals["speed_scale"] < 0:
            raise ValueError(f"perturbation values must be finite (speed_scale >= 0), got {d}")
        return Perturbation(vals["lateral_m"], vals["longitudinal_m"], float(np.radians(vals["heading_deg"])),
                            vals["speed_scale"])


def lane_frame_heading(m: MapAPI, x: float, y: float, heading: float) -> float:
    """Direction of the lane the ego drives on: the baseline nearest the rear axle with the closest heading."""
    near = m.proximal_lanes(x, y, 3.0)
    if near:
        lid, s, _, _ = m.nearest_baseline(x, y, heading, lane_ids=near)
    else:
        lid, s, _, _ = m.nearest_baseline(x, y)
    return float(m.lanes[lid].baseline.interpolate(s)[2])


def apply_perturbation(state: np.ndarray, p: Perturbation, m: MapAPI) -> np.ndarray:
    s = np.asarray(state, dtype=np.float64).copy()
    lh = lane_frame_heading(m, s[X], s[Y], s[HEADING])
    c, si = np.cos(lh), np.sin(lh)
    s[X] += c * p.longitudinal - si * p.lateral
    s[Y] += si * p.longitudinal + c * p.lateral
    s[HEADING] = float(wrap_angle(s[HEADING] + p.heading))
    s[VELOCITY_X] *= p.speed_scale
    s[VELOCITY_X + 1] = 0.0
    return s


def check_start(state: np.ndarray, m: MapAPI, object_corners: np.ndarray, config: PerturbationConfig,
                vehicle: VehicleParameters = PACIFICA, red_polygons=()) -> str | None:
    """Why a start state is invalid ('off_road', 'collision', 'red_light', 'leaves_road', 'reversed'), or None if it
    is valid.
    `red_polygons`: connectors whose light is red; a box touching one without being inside it starts with a
    traffic-light infraction (EPDMS TLC) no plan can avoid."""
    from .world import ego_box

    box = ego_box(state, vehicle)
    poly = shapely.Polygon(box)
    # the whole box, not only its corners (stricter than NAVSIM's corner-based DAC at concave road corners)
    if not m.is_in_drivable_area(box).all() or not m.drivable_area.covers(poly):
        return "off_road"
    if len(object_corners):
        objs = shapely.polygons(np.asarray(object_corners))
        if np.any(shapely.dwithin(objs, poly, config.clearance_m)):
            return "collision"
    for rp in red_polygons:
        if poly.intersects(rp) and not poly.within(rp):
            return "red_light"
    v = float(np.hypot(state[VELOCITY_X], state[VELOCITY_X + 1]))
    if config.reaction_s > 0 and v > 0:
        d = v * np.arange(1, int(np.ceil(config.reaction_s / 0.1)) + 1) * 0.1
        shift = np.stack([np.cos(state[HEADING]) * d, np.sin(state[HEADING]) * d], -1)  # [K, 2]
        ahead = (box[None] + shift[:, None]).reshape(-1, 2)
        if not m.is_in_drivable_area(ahead).all():
            return "leaves_road"
    c = vehicle.rear_axle_to_center
    cx, cy = state[X] + c * np.cos(state[HEADING]), state[Y] + c * np.sin(state[HEADING])
    lanes = m.lanes_at(cx, cy)
    if not lanes:
        return "reversed"
    limit = np.radians(config.max_heading_to_lane_deg)
    for lid in lanes:
        bl = m.lanes[lid].baseline
        s, _, _ = bl.project([[cx, cy]])
        if abs(float(wrap_angle(state[HEADING] - bl.interpolate(s[0])[2]))) < limit:
            return None
    return "reversed"


def logged_travel(x: np.ndarray, y: np.ndarray, frame: int, window_frames: int) -> float:
    """Length of the logged path over the `window_frames` frames up to `frame` (m)."""
    a = max(0, int(frame) - int(window_frames))
    return float(np.sum(np.hypot(np.diff(x[a:frame + 1]), np.diff(y[a:frame + 1]))))


def _ranges(config: PerturbationConfig, travel_m: float | None):
    """(lateral, heading in degrees) sampling ranges, narrowed by the travel for `reachable_window_s`."""
    lat, head = config.lateral_m, config.heading_deg
    if config.reachable_window_s is None:
        return lat, head
    if travel_m is None or not np.isfinite(travel_m) or travel_m < 0:
        raise ValueError(f"reachable_window_s needs the logged travel over the window (travel_m >= 0), got {travel_m}")
    h_lim = min(max(abs(head[0]), abs(head[1])), np.degrees(travel_m * config.max_curvature))
    l_lim = travel_m * np.tan(np.radians(max(abs(head[0]), abs(head[1]))))

    def narrow(r, lim):
        lo, hi = max(r[0], -lim), min(r[1], lim)
        return (lo, hi) if lo <= hi else ((lo, lo) if r[0] > lim else (hi, hi))

    return narrow(lat, l_lim), narrow(head, h_lim)


def sample_perturbation(state: np.ndarray, m: MapAPI, object_corners: np.ndarray, rng: np.random.Generator,
                        config: PerturbationConfig = PerturbationConfig(), *, scene: str = "scene",
                        vehicle: VehicleParameters = PACIFICA, red_polygons=(),
                        travel_m: float | None = None) -> tuple[Perturbation, np.ndarray]:
    """Draw a valid perturbation of the rear-axle `state` (rejection sampling). Returns it and the new state.
    `travel_m`: the logged ego's travel over `config.reachable_window_s` (`logged_travel`), needed only then."""
    lat_r, head_r = _ranges(config, travel_m)
    reasons: dict[str, int] = {}
    for _ in range(config.max_tries):
        p = Perturbation(float(rng.uniform(*lat_r)), float(rng.uniform(*config.longitudinal_m)),
                         float(np.radians(rng.uniform(*head_r))), float(rng.uniform(*config.speed_scale)))
        new = apply_perturbation(state, p, m)
        why = check_start(new, m, object_corners, config, vehicle, red_polygons)
        if why is None:
            return p, new
        reasons[why] = reasons.get(why, 0) + 1
    raise PerturbationError(f"{scene}: no valid perturbed start in {config.max_tries} tries "
                                  f"(rejected: {', '.join(f'{k} {v}' for k, v in sorted(reasons.items()))}); "
                                  f"narrow the ranges or pick another scene")
