"""The recovery-based pseudo-expert: from a perturbed ego state back onto the logged human trajectory.

SimScale's recovery expert (paper; not released) drives from the deviated state back to the logged trajectory, as
DAgger-style corrections. Construction here:

1. The logged ego poses around the current iteration form a path (arc length `s`, signed lateral offset `d`); the
   logged arc position, speed and acceleration are known per time.
2. The ego's rear axle is projected on that path: (s0, d0), heading error psi0, speed v0, acceleration a0.
3. Candidates, for each rejoin time T_j (2, 2.5, 3, 3.5, 4 s by default):
   - longitudinal, "exact": the quintic s(t) from (s0, v0 cos psi0, a0 cos psi0) to the logged (s, v, a) at T_j,
     so position, heading and speed equal the log's from T_j on;
   - longitudinal, "time-shifted": the quartic s(t) reaching the logged speed and acceleration at T_j with a free
     end position (velocity keeping), for starts too far ahead or behind to catch up comfortably; afterwards the
     plan follows the logged path and speed profile shifted in arc length;
   - longitudinal, "gap-keeping": the quintic to the logged (s, v, a) at T_j shifted by the ego's current
     along-track offset from the log, when the log changes speed by 0.5 m/s or more over the horizon: an ego behind
     a log that pulls away pulls away with it (a time-shifted candidate would hold, as it rejoins a standing log at
     once, and start too late);
   - longitudinal, "follow" (one per fraction, rejoin time the earliest T_j): the logged poses themselves from now
     on, shifted by the ego's along-track offset; the LQR closes the speed difference;
   - lateral: a quintic d(sigma) in the distance travelled sigma = s - s0, from (d0, tan psi0, 0) to (0, 0, 0) where
     the longitudinal profile reaches T_j (a heading or lateral offset cannot be removed without moving: candidates
     travelling less than 1 m are dropped, unless the ego is already within the rejoin tolerances of the log, when
     they hold its offset and heading);
   - profiles that would reverse (along-track speed below -0.05 m/s before T_j, e.g. onto a standing log just
     behind the ego) are dropped: the expert only drives forward;
   after T_j the plan is the (shifted) log. Poses: path(s) + d * normal(s), heading = path heading + atan(d').
4. Every candidate is tracked by the LQR + bicycle, as any plan the env executes. The LQR tracks a velocity profile,
   so a speed change leaves an along-track lag it never makes up: exact candidates are re-aimed ahead by their
   tracked lag at the horizon and tracked again (twice). The target each candidate must rejoin is the log as the
   controller drives it: the logged poses tracked by the same LQR + bicycle from the logged state, whose along-track
   position (shifted for the shifted modes) and speed are the target, with the logged path's pose there. (Against
   the raw log, a log that stops and goes within a second is followed by no tracked plan, the log itself included,
   and holding time-shifted candidates won at every replan: an ego standing on a log that pulls away stood.)
5. Checks on the tracked states: the six EPDMS comfort bounds over the recovery (0..T_j; the log after it is the
   human's own driving), safety by the EPDMS engine (NC, DAC, DDC and TLC all 1 against log-replay agents, after
   NAVSIM's human false-positive filter on TLC: a red light the logged human itself touches over the same horizon,
   as a car waiting over the stop line when its light turns red does, does not veto rejoining it; collisions and
   leaving the road always do), and the rejoin itself: within 0.5 m, 3 deg and 0.5 m/s of the (shifted) target from
   some time up to the horizon (`measured_rejoin`).
6. Of the candidates passing all checks, the one with the earliest measured rejoin (ties: the earlier T_j) is
   returned with source "recovery"; an exact one (the log's own timing) is preferred unless it rejoins more than
   `exact_preference_s` (0.5 s) later. (A fixed preference for exact candidates made later replans of a time-shifted
   recovery flip back to the log's timing and brake or speed up to catch it, leaving the log again.)
   When the comfortable, safe candidates all fall short of the log at the horizon, the one ending closest to it is
   returned (`info["rejoins_within_horizon"]` False; the next replan carries on), unless the log stands still over
   the horizon: nothing short of a standing pose rejoins it later. If no candidate is comfortable and safe (or the
   log stands still and none reaches it), PDM-Closed's plan is returned with source "recovery->pdm_closed" and the
   reason in `info["fallback_reason"]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..geometry import wrap_angle
from ..map.polyline import Polyline
from ..metrics.epdms import comfort_checks, human_filter, score_states
from ..metrics.pseudo_sim import scoring_scene
from ..sim.lqr import LQRConfig, track_references
from ..sim.state import ACCELERATION_X, HEADING, STATE_SIZE, VELOCITY_X, VELOCITY_Y, X, Y
from ..sim.world import Simulation, WorldState
from .pdm_closed import ExpertPlan, PDMClosedPlanner, plan_from_trajectory


@dataclass(frozen=True)
class RecoveryConfig:
    rejoin_times_s: tuple[float, ...] = (2.0, 2.5, 3.0, 3.5, 4.0)
    # the lateral offset is removed over these fractions of the travel to T_j (steeper references make up for the
    # LQR's lateral lag; the comfort check rejects the harsh ones)
    lateral_fractions: tuple[float, ...] = (0.5, 0.75, 1.0)
    time_shifted: bool = True  # also try velocity-keeping candidates (free along-track position)
    gap_keeping: bool = True  # also try the log's speed profile at the current along-track offset
    follow: bool = True  # also try the logged poses themselves at the current along-track offset
    horizon_s: float = 4.0
    dt: float = 0.1
    min_rejoin_length_m: float = 1.0  # a lateral or heading offset cannot be removed over less travel
    # candidates whose along-track speed would go below this before T_j (reversing onto a log behind the ego) are
    # left out: the expert drives forward, as PDM-Closed does
    min_speed_mps: float = -0.05
    # "rejoined" (measured on the tracked states): within these of the (shifted) log from then to the horizon
    rejoin_position_m: float = 0.5
    rejoin_heading_rad: float = 0.0524  # 3 deg
    rejoin_speed_mps: float = 0.5
    # an exact candidate (the log's own timing) is preferred to a time-shifted one rejoining up to this much earlier
    exact_preference_s: float = 0.5
    aim_iterations: int = 2  # shooting corrections of the exact candidates for the tracking lag
    safety_agent_mode: str = "non_reactive"  # agents the safety check scores against
    # NAVSIM's human false-positive filter in the safety check, on these metrics (the logged human scored over the
    # same horizon and scene): a metric the human's own drive fails cannot veto rejoining it. TLC only by default:
    # NAVSIM's TLC has no exemption for a car already over the stop line when its light turns red, while a
    # collision or leaving the road in the log must still veto following it there
    human_filtered_metrics: tuple[str, ...] = ("traffic_light_compliance",)
    require_comfort: bool = True
    lqr: LQRConfig = field(default_factory=LQRConfig)

    def __post_init__(self):
        if not self.rejoin_times_s or not all(0.0 < t <= self.horizon_s for t in self.rejoin_times_s):
            raise ValueError(f"rejoin_times_s must be non-empty and in (0, horizon_s={self.horizon_s}], "
                             f"got {self.rejoin_times_s}")
        if not self.lateral_fractions or not all(0.0 < f <= 1.0 for f in self.lateral_fractions):
            raise ValueError(f"lateral_fractions must be non-empty and in (0, 1], got {self.lateral_fractions}")
        if not self.exact_preference_s >= 0.0:
            raise ValueError(f"exact_preference_s must be >= 0, got {self.exact_preference_s}")
        allowed = ("no_at_fault_collisions", "drivable_area_compliance", "driving_direction_compliance",
                   "traffic_light_compliance")
        if not set(self.human_filtered_metrics) <= set(allowed):
            raise ValueError(f"human_filtered_metrics must be among {allowed}, got {self.human_filtered_metrics}")
        if self.safety_agent_mode not in ("non_reactive", "constant_velocity"):
            raise ValueError(f"safety_agent_mode must be 'non_reactive' or 'constant_velocity', "
                             f"got {self.safety_agent_mode!r}")


def _quintic(x0, v0, a0, x1, v1, a1, T):
    """Coefficients c[0..5] of x(t) = sum c_k t^k matching position, velocity, acceleration at 0 and T
    (closed form of the 3x3 boundary system)."""
    c0, c1, c2 = x0, v0, a0 / 2.0
    h = x1 - (c0 + c1 * T + c2 * T ** 2)
    g = v1 - (c1 + 2 * c2 * T)
    k = a1 - 2 * c2
    c3 = (10.0 * h - 4.0 * g * T + 0.5 * k * T ** 2) / T ** 3
    c4 = (-15.0 * h + 7.0 * g * T - k * T ** 2) / T ** 4
    c5 = (6.0 * h - 3.0 * g * T + 0.5 * k * T ** 2) / T ** 5
    return np.array([c0, c1, c2, c3, c4, c5])


def _quartic(x0, v0, a0, v1, a1, T):
    """Coefficients of x(t) (degree 4) matching x0, v0, a0 at 0 and velocity, acceleration at T (end free)."""
    c0, c1, c2 = x0, v0, a0 / 2.0
    g = v1 - (c1 + 2 * c2 * T)
    k = a1 - 2 * c2
    c3 = g / T ** 2 - k / (3.0 * T)
    c4 = k / (4.0 * T ** 2) - g / (2.0 * T ** 3)
    return np.array([c0, c1, c2, c3, c4, 0.0])


def _poly_rows(c, x, deriv=0):
    """Row-wise `_poly`: coefficients c [M, K], arguments x broadcastable to [M, N] -> [M, N] (same operations)."""
    c = np.asarray(c, dtype=np.float64)
    for _ in range(deriv):
        c = c[:, 1:] * np.arange(1, c.shape[1])
    x = np.asarray(x, dtype=np.float64)
    out = c[:, -1:] * x + c[:, -2:-1]
    for k in range(c.shape[1] - 3, -1, -1):
        out = out * x + c[:, k:k + 1]
    return out


@dataclass(frozen=True, eq=False)
class LoggedReference:
    """The logged ego around an iteration: its path and, per time from now, arc position, speed, acceleration."""

    path: Polyline
    times: np.ndarray  # [K] seconds from now (negative: history)
    s: np.ndarray
    v: np.ndarray
    a: np.ndarray

    def at(self, t):
        return (np.interp(t, self.times, self.s), np.interp(t, self.times, self.v), np.interp(t, self.times, self.a))


def logged_reference(sim: Simulation, iteration: int, horizon_s: float = 4.0, margin_s: float = 4.0) -> LoggedReference:
    """The logged ego poses from `margin_s` before to `horizon_s + margin_s` after `iteration`, extended straight at
    the last logged speed where the log ends."""
    sc = sim.scenario
    e = sc.ego
    f = sim.frame(iteration)
    dt = sc.dt_s
    k0 = max(0, f - int(round(margin_s / dt)))
    k1 = min(len(e.x) - 1, f + int(round((horizon_s + margin_s) / dt)))
    times = (np.arange(k0, k1 + 1) - f) * dt
    poses = np.stack([e.x[k0:k1 + 1], e.y[k0:k1 + 1], np.unwrap(e.heading[k0:k1 + 1])], -1)
    speed = np.asarray(e.vx[k0:k1 + 1], dtype=np.float64)
    need = horizon_s + margin_s
    if times[-1] < need:  # extend straight
        extra = np.arange(1, int(np.ceil((need - times[-1]) / dt)) + 1) * dt
        v_end = max(float(speed[-1]), 0.0)
        h = poses[-1, 2]
        ext = np.stack([poses[-1, 0] + np.cos(h) * v_end * extra, poses[-1, 1] + np.sin(h) * v_end * extra,
                        np.full_like(extra, h)], -1)
        poses = np.concatenate([poses, ext])
        times = np.concatenate([times, times[-1] + extra])
        speed = np.concatenate([speed, np.full_like(extra, v_end)])
    seg = np.hypot(*np.diff(poses[:, :2], axis=0).T)
    # the path starts `back_m` behind the first logged pose, straight along its heading, so that an ego behind a log
    # that stood still until now projects onto it (not onto its clamped end, which reads as a lateral offset)
    back_m = 30.0
    s = back_m + np.concatenate([[0.0], np.cumsum(seg)])
    h0 = poses[0, 2]
    u0 = np.array([np.cos(h0), np.sin(h0)])
    if s[-1] - back_m > 1e-6:
        # vertices closer than 1e-9 m are dropped, so the path's arc length equals the log's cumulative distance
        path = Polyline.from_xy(np.concatenate([[poses[0, :2] - back_m * u0], poses[:, :2]]),
                                wrap_angle(np.concatenate([[h0], poses[:, 2]])))
    else:  # a log standing still: a straight line along its heading
        path = Polyline.from_xy(np.stack([poses[0, :2] - back_m * u0, poses[0, :2], poses[0, :2] + 50.0 * u0]))
    acc = np.gradient(speed, dt) if len(speed) > 1 else np.zeros_like(speed)
    return LoggedReference(path, times, s, speed, acc)


def _candidate_trajectories(ref: LoggedReference, ego: np.ndarray, cfg: RecoveryConfig, aims: dict | None = None):
    """Global pose trajectories [C, T + 1, 3], the (shifted) log they rejoin as poses + speed [C, T + 1, 4], and
    their labels (rejoin time, mode, along-track shift of the target). Candidates that cannot rejoin (moving less
    than `min_rejoin_length_m` with a lateral offset to remove) are left out. `aims`: along-track leads per
    (T, "exact") that compensate the tracking lag (the reference runs ahead of the target by that much)."""
    s_arr, lat, _ = ref.path.project(ego[None, :2])
    s0, d0 = float(s_arr[0]), float(lat[0])
    psi0 = float(wrap_angle(ego[HEADING] - ref.path.interpolate(s0)[2]))
    v0 = float(ego[VELOCITY_X])
    a0 = float(ego[ACCELERATION_X])
    t = np.arange(int(round(cfg.horizon_s / cfg.dt)) + 1) * cfg.dt
    s_log = np.interp(t, ref.times, ref.s)
    v_log = np.interp(t, ref.times, ref.v)
    # gap-keeping candidates: the log's own speed profile at the current along-track offset, while the log changes
    # speed (e.g. starts moving); otherwise they repeat the time-shifted ones
    gap = s0 - float(s_log[0])
    keep_gap = bool(cfg.gap_keeping and np.ptp(v_log) >= cfg.rejoin_speed_mps)
    # longitudinal profiles, one per (T_j, mode)
    coef, rows = [], []
    for T in cfg.rejoin_times_s:
        sT, vT, aT = ref.at(T)
        aim = (aims or {}).get((float(T), "exact"), 0.0)
        coef.append(_quintic(s0, v0 * np.cos(psi0), a0 * np.cos(psi0), sT + aim, vT, aT, T))
        rows.append((float(T), "exact", float(sT)))
        if cfg.time_shifted:
            coef.append(_quartic(s0, v0 * np.cos(psi0), a0 * np.cos(psi0), vT, aT, T))
            rows.append((float(T), "time_shifted", float(sT)))
        if keep_gap:
            coef.append(_quintic(s0, v0 * np.cos(psi0), a0 * np.cos(psi0), sT + gap, vT, aT, T))
            rows.append((float(T), "gap_keeping", float(sT)))
    if cfg.follow:
        # the logged poses themselves from now on, at the current along-track offset (geometric rejoin time 0: the
        # LQR closes any speed difference, the lateral quintic any offset); what the controller makes of the log
        coef.append(np.array([s0, 0.0, 0.0, 0.0, 0.0, 0.0]))
        rows.append((0.0, "follow", float(s_log[0])))
    follow = np.array([r[1] == "follow" for r in rows])
    Tj = np.array([r[0] for r in rows])
    s_poly = _poly_rows(np.array(coef), t[None, :])  # [M, K]
    s_end = _poly_rows(np.array(coef), Tj[:, None])[:, 0]
    ref_shift = s_end - np.array([r[2] for r in rows])  # the reference after T_j: the log shifted by this
    L = np.where(follow, s_log[-1] - s_log[0], s_end - s0)
    before = t[None, :] <= Tj[:, None]
    s_t = np.where(before, s_poly, s_log[None, :] + ref_shift[:, None])
    # a lateral or heading offset cannot be removed over too little travel; no reversing
    within = abs(d0) <= cfg.rejoin_position_m and abs(psi0) <= cfg.rejoin_heading_rad
    keep = ~((L < cfg.min_rejoin_length_m) & (not within))
    s_dot = _poly_rows(np.array(coef), t[None, :], 1)
    keep &= ~np.any(before & (s_dot < cfg.min_speed_mps), axis=1)
    fr = np.asarray(cfg.lateral_fractions, dtype=np.float64)
    m_idx = np.repeat(np.nonzero(keep)[0], len(fr))  # candidates: (T_j, mode) outer, lateral fraction inner
    f_idx = np.tile(np.arange(len(fr)), int(keep.sum()))
    # a follow candidate's rejoin time (its comfort window and tie-break) is the earliest T_j
    labels = [(min(cfg.rejoin_times_s) if rows[m][1] == "follow" else rows[m][0], rows[m][1],
               0.0 if rows[m][1] == "exact" else float(ref_shift[m]), float(fr[f]))
              for m, f in zip(m_idx.tolist(), f_idx.tolist())]
    tshift = [lab[2] for lab in labels]
    if not labels:
        return np.zeros((0, len(t), 3)), np.zeros((0, len(t), 4)), labels
    # lateral offset as a quintic in the distance travelled: d(0) = d0, d' = tan(psi0), d'' = 0 -> 0 at L * frac
    Ld = np.maximum(L[m_idx] * fr[f_idx], 1e-6)
    slope0 = np.tan(np.clip(psi0, -1.2, 1.2))
    cd = np.stack([_quintic(d0, slope0, 0.0, 0.0, 0.0, 0.0, x) for x in Ld])
    S = s_t[m_idx]
    sigma = np.clip(S - s0, 0.0, Ld[:, None])
    b = before[m_idx] | follow[m_idx, None]  # the lateral quintic ends at 0 over its own travel
    D = np.where(b, _poly_rows(cd, sigma), 0.0)
    DD = np.where(b, _poly_rows(cd, sigma, 1), 0.0)
    # too little travel to steer (kept only when the offset is already within tolerance): hold the offset and the
    # heading error instead of a lateral quintic over a vanishing length
    short = (L[m_idx] < cfg.min_rejoin_length_m)[:, None]
    D = np.where(short, d0, D)
    DD = np.where(short, slope0, DD)
    C = len(labels)
    pose = ref.path.interpolate(S.reshape(-1)).reshape(C, len(t), 3)
    nrm = pose[..., 2] + np.pi / 2
    xy = pose[..., :2] + D[..., None] * np.stack([np.cos(nrm), np.sin(nrm)], -1)
    h = pose[..., 2] + np.arctan(DD)
    trajs = np.concatenate([xy, wrap_angle(h)[..., None]], -1)
    trajs[:, 0] = ego[[X, Y, HEADING]]
    tgt = ref.path.interpolate((s_log[None] + np.asarray(tshift)[:, None]).reshape(-1)).reshape(C, len(t), 3)
    targets = np.concatenate([tgt, np.broadcast_to(v_log[None, :, None], (C, len(t), 1))], -1)
    return trajs, targets, labels


def measured_rejoin(states: np.ndarray, targets: np.ndarray, config: RecoveryConfig = RecoveryConfig()) -> np.ndarray:
    """[C] the first time (s) from which the tracked states stay within the rejoin tolerances of their targets up
    to the horizon (position, heading, speed); inf if never."""
    pos = np.hypot(states[..., X] - targets[..., 0], states[..., Y] - targets[..., 1]) <= config.rejoin_position_m
    hd = np.abs(wrap_angle(states[..., HEADING] - targets[..., 2])) <= config.rejoin_heading_rad
    sp = np.abs(np.hypot(states[..., VELOCITY_X], states[..., VELOCITY_Y]) - targets[..., 3]) <= config.rejoin_speed_mps
    ok = pos & hd & sp
    # within from k on: reversed cumulative AND
    tail = np.flip(np.logical_and.accumulate(np.flip(ok, axis=1), axis=1), axis=1)
    first = np.where(tail.any(axis=1), tail.argmax(axis=1), -1)
    return np.where(first >= 0, first * config.dt, np.inf)


def human_filtered(sim: Simulation, world: WorldState, scores, metrics=("traffic_light_compliance",),
                   scene=None):
    """`scores` of plans from `world` after NAVSIM's human false-positive filter (`metrics.human_filter`) on
    `metrics`: each one the logged human fails over the same horizon (its logged states from this iteration, scored in `scene`, by default the
    log-replay scoring scene of `world`) is set to 1. The human is scored only when some plan fails one of them."""
    metrics = tuple(metrics)
    if not metrics or not any(np.any(getattr(scores, k) == 0.0) for k in metrics):
        return scores
    scene = scene if scene is not None else scoring_scene(sim, world, agent_mode="non_reactive")
    steps = scene.num_steps - 1
    it = np.minimum(world.iteration + np.arange(steps + 1), sim.num_iterations - 1)
    human = score_states(scene, np.stack([sim.logged_ego_state(int(i)) for i in it])[None])
    return human_filter(scores, human, columns=metrics).scores


def valid_start(sim: Simulation, world: WorldState, plan: ExpertPlan | None = None,
                metrics=("traffic_light_compliance",)) -> bool:
    """SimScale keeps only states with a valid pseudo-expert (SimScale issue #10): PDM-Closed's label (`plan`,
    computed if None), its 8 poses as the env's action and NAVSIM's scorer take them (interpolated, tracked by the
    LQR + bicycle, against log-replay agents: `pseudo_simulate`), has NC, DAC, DDC and TLC all 1, after NAVSIM's human
    false-positive filter on `metrics` (`human_filtered`: a red light the logged human itself crosses over the
    horizon, as a car waiting over the stop line when its light turns red does, cannot make every start near it
    invalid). (PDM-Closed's own dense trajectory can be safe where its 8 poses are not: 2.9 m beside the lane at
    16 m/s heading 11 deg for the edge, the 0.5 s poses miss the first turn and leave the road within 0.5 s.)"""
    from ..metrics.pseudo_sim import pseudo_simulate

    plan = plan if plan is not None else PDMClosedPlanner().plan(sim, world)
    scores, _ = pseudo_simulate(sim, world, plan.poses[None], agent_mode="non_reactive")
    return bool(human_filtered(sim, world, scores, metrics).multiplicative_metrics_prod[0] == 1.0)


def recovery_plan(sim: Simulation, world: WorldState, config: RecoveryConfig = RecoveryConfig(), *,
                  fallback: PDMClosedPlanner | None = None, fallback_plan: ExpertPlan | None = None) -> ExpertPlan:
    """The recovery expert's plan from `world` (see the module docstring). When no candidate is comfortable and
    safe: `fallback_plan` (PDM-Closed's plan for this state, if already computed), else `fallback.plan(...)` (a
    fresh PDM-Closed planner if None)."""
    return _run_tracked([_recovery(sim, world, config, fallback, fallback_plan)], config.lqr)[0]


def recovery_plans(sims, worlds, config: RecoveryConfig = RecoveryConfig(), *,
                   fallback_plans=None) -> list[ExpertPlan]:
    """`recovery_plan(sims[i], worlds[i], config, fallback_plan=fallback_plans[i])` for every i, computed together
    (issue 20): each round of LQR + bicycle tracking (the log, the candidates, their re-aimed versions) is one call
    over every scene's rows. Bit-identical to planning each scene alone (the tracking is row-wise; tested)."""
    fallback_plans = [None] * len(sims) if fallback_plans is None else list(fallback_plans)
    if not (len(sims) == len(worlds) == len(fallback_plans)):
        raise ValueError(f"recovery_plans needs as many worlds and fallback plans as simulations ({len(sims)}), got "
                         f"{len(worlds)} and {len(fallback_plans)}")
    return _run_tracked([_recovery(s, w, config, None, f) for s, w, f in zip(sims, worlds, fallback_plans)],
                        config.lqr)


def _run_tracked(gens: list, lqr: LQRConfig) -> list:
    """Run generators that yield tracking requests (initial state [11], references [B, T, 3], steps) and receive
    `track_references`' states [B, steps + 1, 11], in lock step: each round's requests of equal shape are tracked in
    one call. Returns the generators' return values."""
    out: list = [None] * len(gens)
    req: dict = {}

    def advance(i, value):
        try:
            req[i] = gens[i].send(value)
        except StopIteration as stop:
            out[i] = stop.value
            req.pop(i, None)

    for i in range(len(gens)):
        advance(i, None)
    while req:
        groups: dict = {}
        for i, (_, refs, steps) in req.items():
            groups.setdefault((refs.shape[1:], int(steps)), []).append(i)
        results = {}
        for (_, steps), idx in groups.items():
            refs = [np.asarray(req[i][1], dtype=np.float64) for i in idx]
            init = np.concatenate([np.broadcast_to(np.asarray(req[i][0], dtype=np.float64), (len(r), STATE_SIZE))
                                   for i, r in zip(idx, refs)])
            states = track_references(init, np.concatenate(refs), steps, lqr)
            k = 0
            for i, r in zip(idx, refs):
                results[i] = states[k:k + len(r)]
                k += len(r)
        for i in list(req):
            advance(i, results[i])
    return out


def _recovery(sim: Simulation, world: WorldState, config: RecoveryConfig, fallback, fallback_plan):
    """`recovery_plan` as a generator: yields its tracking requests (`_run_tracked`), returns the plan."""
    ego = np.asarray(world.ego, dtype=np.float64)
    ref = logged_reference(sim, world.iteration, config.horizon_s)
    trajs, targets, labels = _candidate_trajectories(ref, ego, config)
    if len(trajs) == 0:
        pdm = fallback_plan or (fallback or PDMClosedPlanner()).plan(sim, world)
        info = dict(pdm.info, candidates=[], fallback_reason="the logged ego does not move far enough to rejoin")
        return ExpertPlan(pdm.poses, pdm.trajectory, pdm.states, "recovery->pdm_closed", pdm.scores, pdm.index, info)
    steps = trajs.shape[1] - 1
    t = np.arange(steps + 1) * config.dt
    # the target is the log as the controller drives it: the logged poses tracked by the same LQR + bicycle from the
    # logged state now (a log that stops and goes within a second is not followed exactly by any tracked plan; the
    # raw log as target rejected the log itself and left time-shifted candidates that put the rejoin off at every
    # replan, e.g. an ego standing on a log that pulls away)
    log_poses = ref.path.interpolate(np.interp(t, ref.times, ref.s))
    log_states = (yield (sim.logged_ego_state(world.iteration), log_poses[None], steps))[0]
    s_trk, _, _ = ref.path.project(log_states[:, :2])
    s_trk = np.maximum.accumulate(s_trk)
    v_trk = np.hypot(log_states[:, VELOCITY_X], log_states[:, VELOCITY_Y])
    states = yield (ego, trajs, steps)
    # the LQR tracks a velocity profile, so a speed change leaves an along-track lag it never recovers: aim the exact
    # candidates ahead by their tracked lag at the horizon and track again (shooting, `aim_iterations` times); the
    # time-shifted candidates rejoin the log shifted to where their tracked plan ends
    s_log_end = float(s_trk[-1])
    aims: dict = {}
    for _ in range(config.aim_iterations):
        s_end, _, _ = ref.path.project(states[:, -1, :2])
        lag: dict = {}
        for k, (T, mode, _, _) in enumerate(labels):
            if mode == "exact":  # one aim per rejoin time: the mean lag over its lateral variants
                lag.setdefault((T, mode), []).append(s_log_end - float(s_end[k]))
        for key, v in lag.items():
            aims[key] = aims.get(key, 0.0) + float(np.mean(v))
        trajs, targets, labels = _candidate_trajectories(ref, ego, config, aims)
        states = yield (ego, trajs, steps)
    s_end, _, _ = ref.path.project(states[:, -1, :2])
    for k, (T, mode, _, frac) in enumerate(labels):
        shift = 0.0
        if mode in ("time_shifted", "gap_keeping", "follow"):
            shift = float(s_end[k]) - s_log_end
            labels[k] = (T, mode, shift, frac)
        # its along-track position (shifted) and speed; the pose on the logged path there (the controller's own
        # cross-track and heading errors on the log are not targets)
        targets[k, :, :3] = ref.path.interpolate(s_trk + shift)
        targets[k, :, 3] = v_trk
    comfy = np.ones(len(trajs), dtype=bool)
    if config.require_comfort:  # over the recovery itself: what follows is the human's own driving
        rejoin = np.array([lab[0] for lab in labels])
        for T in np.unique(rejoin):
            sel = rejoin == T
            n = int(round(T / config.dt)) + 1
            comfy[sel] = comfort_checks(states[sel, :n], config.dt).all(axis=-1)
    scene = scoring_scene(sim, world, agent_mode=config.safety_agent_mode)
    scores = score_states(scene, states)
    # NAVSIM's false-positive filter, on these metrics only: one the logged human itself fails over the horizon
    # (TLC for a car waiting over the stop line when its light turns red) does not veto rejoining that log
    safe = human_filtered(sim, world, scores, config.human_filtered_metrics, scene).multiplicative_metrics_prod == 1.0
    rejoin = measured_rejoin(states, targets, config)
    ok = np.nonzero(comfy & safe & np.isfinite(rejoin))[0]
    info = {"candidates": [{"rejoin_s": T, "mode": m, "shift_m": sh, "lateral_fraction": fr, "comfortable": bool(c),
                            "safe": bool(s), "rejoined_s": float(r)}
                           for (T, m, sh, fr), c, s, r in zip(labels, comfy, safe, rejoin)]}
    partial = np.nonzero(comfy & safe)[0]
    log_travel = float(np.interp(config.horizon_s, ref.times, ref.s) - np.interp(0.0, ref.times, ref.s))
    if not len(ok) and log_travel < config.min_rejoin_length_m:
        # a log standing over the horizon: a plan short of it does not rejoin later either (it would stop short or
        # drive past the standing pose); PDM-Closed drives on from here
        partial = partial[:0]
    if len(ok) or len(partial):
        if len(ok):
            # the earliest measured rejoin (argmin: the earlier T_j on ties), the log itself over its shifted copy
            # unless that rejoins more than `exact_preference_s` later (a fixed preference flips a time-shifted
            # recovery back to the log's own timing at a later replan: braking or speeding up to catch it)
            exact = np.array([labels[i][1] == "exact" for i in ok])
            k = int(ok[np.argmin(rejoin[ok])])
            if exact.any() and rejoin[ok[exact]].min() <= rejoin[k] + config.exact_preference_s:
                k = int(ok[exact][np.argmin(rejoin[ok[exact]])])
        else:
            # safe and comfortable but still short of the log at the horizon: the one ending closest to it (the
            # next replan continues the recovery)
            end = states[partial, -1]
            tgt = targets[partial, -1]
            dev = (np.hypot(end[:, X] - tgt[:, 0], end[:, Y] - tgt[:, 1]) / config.rejoin_position_m
                   + np.abs(wrap_angle(end[:, HEADING] - tgt[:, 2])) / config.rejoin_heading_rad
                   + np.abs(np.hypot(end[:, VELOCITY_X], end[:, VELOCITY_Y]) - tgt[:, 3]) / config.rejoin_speed_mps)
            k = int(partial[np.argmin(dev)])
        T, mode, shift, frac = labels[k]
        info.update(rejoin_s=T, rejoined_s=float(rejoin[k]), mode=mode, shift_m=shift, lateral_fraction=frac,
                    rejoins_within_horizon=bool(np.isfinite(rejoin[k])))
        return ExpertPlan(plan_from_trajectory(trajs[k], ego), trajs[k], states[k], "recovery", scores, k, info)
    reason = "no comfortable candidate" if not comfy.any() else (
        "no safe candidate" if not safe.any() else "no candidate both comfortable and safe")
    if (comfy & safe).any():
        reason = "the logged ego stands still and no candidate reaches it within the horizon"
    pdm = fallback_plan or (fallback or PDMClosedPlanner()).plan(sim, world)
    info.update(pdm.info, fallback_reason=reason)
    return ExpertPlan(pdm.poses, pdm.trajectory, pdm.states, "recovery->pdm_closed", pdm.scores, pdm.index, info)
