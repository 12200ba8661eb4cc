"""Perturbed resets: move the logged ego off its track to states worth recovering from.

A perturbation (lateral, longitudinal, heading, speed scale) is applied to the logged ego at an iteration in the
frame of the lane it drives on: the rear axle moves `longitudinal` metres along the lane direction and `lateral`
metres along the lane normal (left +), the heading turns by `heading` (radians, left +) and the speed is scaled.

Two samplers:

- **window** (`window_s` set, 2 s by default): SimScale's model, lateral offsets and speed changes applied to the
  driven trajectory over a window (../shared/reference/epdms-navsim-simscale.md, SimScale section), so the start is
  a state the ego drove into. With d the logged travel over the last `window_s` seconds: |lateral| <= d tan(max
  |heading| of the range) and |longitudinal| <= d max |speed_scale - 1| (what a lateral drift or a speed change over
  d builds up), each also within its range; the heading is that of the lateral drift, atan(r lateral / d) with r
  drawn in [0, 2] (0: the drift is complete and the ego runs parallel to the log, 1: a linear drift, 2: a drift
  still growing), clipped to the heading range. A standing ego (d < 0.1 m) cannot have drifted: no valid start
  (SimScale too has scenes without a valid perturbed state). The ego's past poses are blended into the start the
  same way (`perturbed_past`).
- **teleport** (`window_s=None`): the four offsets drawn independently from their ranges. Independent headings up
  to 20 deg at 13 m/s put the ego on courses that the nuPlan vehicle and LQR cannot bring back onto the log within
  4 s, and offsets beside a standing log cannot be rejoined driving forward.

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
    # the window sampler (SimScale's: offsets of the driven trajectory over the last `window_s` seconds); None: the
    # teleport sampler (independent offsets)
    window_s: float | None = 2.0

    def __post_init__(self):
        for name in ("lateral_m", "longitudinal_m", "heading_deg", "speed_scale"):
            lo, hi = getattr(self, name)
            if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
                raise ValueError(f"{name} must be a finite (low, high) range, got {(lo, hi)}")
        if self.speed_scale[0] < 0:
            raise ValueError(f"speed_scale must be >= 0, got {self.speed_scale}")
        if self.max_tries < 1:
            raise ValueError("max_tries must be >= 1")
        if self.window_s is not None and not (np.isfinite(self.window_s) and self.window_s > 0):
            raise ValueError(f"window_s must be > 0 or None, got {self.window_s}")


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


def apply_perturbation(state: np.ndarray, p: Perturbation, m: MapAPI, lane_heading: float | None = None) -> np.ndarray:
    """`state` moved by `p` in the frame of its lane (`lane_frame_heading` of `state`; `lane_heading`: that value
    when the caller has it, e.g. for many perturbations of one state)."""
    s = np.asarray(state, dtype=np.float64).copy()
    lh = lane_frame_heading(m, s[X], s[Y], s[HEADING]) if lane_heading is None else lane_heading
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


MIN_WINDOW_TRAVEL_M = 0.1  # below this logged travel over the window the ego stands: nothing to perturb


def _ranges(config: PerturbationConfig, travel_m: float | None):
    """(lateral, longitudinal) sampling ranges, narrowed by the logged travel for the window sampler."""
    lat, lon = config.lateral_m, config.longitudinal_m
    if config.window_s is None:
        return lat, lon
    if travel_m is None or not np.isfinite(travel_m) or travel_m < 0:
        raise ValueError(f"the window sampler needs the logged travel over the window (travel_m >= 0), got {travel_m}")
    l_lim = travel_m * np.tan(np.radians(max(abs(config.heading_deg[0]), abs(config.heading_deg[1]))))
    s_lim = travel_m * max(abs(config.speed_scale[0] - 1.0), abs(config.speed_scale[1] - 1.0))

    def narrow(r, lim):
        lo, hi = max(r[0], -lim), min(r[1], lim)
        return (lo, hi) if lo <= hi else ((lo, lo) if r[0] > lim else (hi, hi))

    return narrow(lat, l_lim), narrow(lon, s_lim)


def sample_perturbation(state: np.ndarray, m: MapAPI, object_corners: np.ndarray, rng: np.random.Generator,
                        config: PerturbationConfig = PerturbationConfig(), *, scene: str = "scene",
                        vehicle: VehicleParameters = PACIFICA, red_polygons=(),
                        travel_m: float | None = None,
                        lane_heading: float | None = None) -> tuple[Perturbation, np.ndarray]:
    """Draw a valid perturbation of the rear-axle `state` (rejection sampling). Returns it and the new state.
    `travel_m`: the logged ego's travel over `config.window_s` (`logged_travel`), needed by the window sampler;
    `lane_heading`: `lane_frame_heading` of `state` when the caller has it (computed here otherwise)."""
    lat_r, lon_r = _ranges(config, travel_m)
    if config.window_s is not None and travel_m < MIN_WINDOW_TRAVEL_M:
        raise PerturbationError(f"{scene}: the logged ego moved {travel_m:.2f} m over the last {config.window_s:g} s "
                                f"(< {MIN_WINDOW_TRAVEL_M} m): a standing ego has no driven trajectory to perturb "
                                f"(pass window_s=None for the teleport sampler)")
    h_lo, h_hi = np.radians(config.heading_deg[0]), np.radians(config.heading_deg[1])
    if lane_heading is None:  # the same for every draw: the frame the perturbations are applied in
        s = np.asarray(state, dtype=np.float64)
        lane_heading = lane_frame_heading(m, s[X], s[Y], s[HEADING])
    reasons: dict[str, int] = {}
    for _ in range(config.max_tries):
        lat, lon = float(rng.uniform(*lat_r)), float(rng.uniform(*lon_r))
        if config.window_s is None:
            head = float(np.radians(rng.uniform(*config.heading_deg)))
        else:  # the heading of a lateral drift over the window: atan(r * lateral / travel), r in [0, 2]
            head = float(np.clip(np.arctan2(float(rng.uniform(0.0, 2.0)) * lat, travel_m), h_lo, h_hi))
        p = Perturbation(lat, lon, head, float(rng.uniform(*config.speed_scale)))
        new = apply_perturbation(state, p, m, lane_heading)
        why = check_start(new, m, object_corners, config, vehicle, red_polygons)
        if why is None:
            return p, new
        reasons[why] = reasons.get(why, 0) + 1
    raise PerturbationError(f"{scene}: no valid perturbed start in {config.max_tries} tries "
                                  f"(rejected: {', '.join(f'{k} {v}' for k, v in sorted(reasons.items()))}); "
                                  f"narrow the ranges or pick another scene")


def perturbed_past(log_xyh: np.ndarray, new_now: np.ndarray, speed_scale: float = 1.0,
                   n: int | None = None) -> np.ndarray:
    """The ego's past poses as if it had driven into the perturbed start (SimScale perturbs the driven trajectory
    over a window, so the history the planner sees leads continuously into the start).

    `log_xyh`: the logged poses (x, y, heading) 0.1 s apart, oldest first, the last one at the start's iteration;
    `new_now`: the perturbed start pose. Returns the `n` (default: all before the last) poses before the start,
    oldest first. Construction: the logged path is walked back at `speed_scale` times the logged speed (continued
    straight behind its first pose where the log is too short), so past speeds match the start's speed. The start's
    offset from the logged pose, (longitudinal, lateral) in the logged heading's frame plus a heading offset dtheta,
    is blended in along the window's arc length D by u in [0, 1] (0 at the oldest pose): the longitudinal offset is a
    constant shift, the lateral offset is the cubic h(u) = lat (3u^2 - 2u^3) + m (u^3 - u^2) with m = D tan(dtheta)
    (zero offset and slope at u = 0, the start's offset and heading at u = 1), and each heading turns by
    atan(h'(u) / D). On a window with under 0.1 m of travel (a standing ego) u runs with time and the heading offset
    is blended linearly."""
    log = np.asarray(log_xyh, dtype=np.float64)
    new = np.asarray(new_now, dtype=np.float64)[:3]
    if log.ndim != 2 or log.shape[1] != 3 or len(log) < 1 or not np.isfinite(log).all():
        raise ValueError(f"log_xyh must be finite logged poses [M >= 1, 3], got shape {log.shape}")
    if not np.isfinite(new).all() or not (np.isfinite(speed_scale) and speed_scale >= 0):
        raise ValueError(f"new_now must be a finite pose and speed_scale >= 0, got {new_now}, {speed_scale}")
    n = len(log) - 1 if n is None else int(n)
    if n <= 0:
        return np.zeros((0, 3))
    seg = np.hypot(*np.diff(log[:, :2], axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(seg)])  # along the log, oldest first
    j = np.arange(n, 0, -1)  # steps before now, oldest first
    back = speed_scale * (arc[-1] - arc[np.maximum(len(log) - 1 - j, 0)])
    # beyond the log's start: keep the logged speed of its first step (or stand), continued straight behind it
    short = np.maximum(j - (len(log) - 1), 0)
    v0 = seg[0] if len(seg) else 0.0
    back = back + speed_scale * v0 * short
    s = arc[-1] - back
    heading = np.unwrap(log[:, 2])
    bx = np.interp(s, arc, log[:, 0])
    by = np.interp(s, arc, log[:, 1])
    bh = np.interp(s, arc, heading)
    before = s < 0  # straight behind the first logged pose
    bx[before] = log[0, 0] + s[before] * np.cos(log[0, 2])
    by[before] = log[0, 1] + s[before] * np.sin(log[0, 2])
    bh[before] = heading[0]
    # the start's offset in the frame of the logged pose now
    c, si = np.cos(log[-1, 2]), np.sin(log[-1, 2])
    dx, dy = new[0] - log[-1, 0], new[1] - log[-1, 1]
    lon, lat = c * dx + si * dy, -si * dx + c * dy
    dth = float(wrap_angle(new[2] - log[-1, 2]))
    span = back[0]
    if span >= 0.1:
        u = 1.0 - back / span
        m = span * np.tan(np.clip(dth, -1.4, 1.4))  # (80 deg: a finite end slope for any heading offset)
        h = lat * (3 * u**2 - 2 * u**3) + m * (u**3 - u**2)
        dh = lat * (6 * u - 6 * u**2) + m * (3 * u**2 - 2 * u)
        turn = np.arctan(dh / span)
    else:
        u = 1.0 - j / n
        h = lat * (3 * u**2 - 2 * u**3)
        turn = dth * u
    ch, sh = np.cos(bh), np.sin(bh)
    out = np.stack([bx + ch * lon - sh * h, by + sh * lon + ch * h, wrap_angle(bh + turn)], -1)
    return out
