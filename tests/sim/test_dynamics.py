"""Bicycle, LQR and bad input, on constructed cases with known answers."""

import numpy as np
import pytest

from simscale_env.sim import PACIFICA, propagate, track_references
from simscale_env.sim.plans import interpolate_poses, plan_to_reference
from simscale_env.sim.state import make_state


def test_constant_steering_gives_the_analytic_circle():
    delta, v, dt = 0.2, 8.0, 0.1
    s = make_state(0.0, 0.0, 0.0, velocity=v, steering=delta)[None]
    R = PACIFICA.wheel_base / np.tan(delta)
    pts = []
    for _ in range(200):
        s = propagate(s, np.zeros((1, 2)), dt)
        pts.append(s[0, :3].copy())
    pts = np.array(pts)
    # explicit Euler with a constant yaw increment dpsi and step ds: the rear axle visits the vertices of a regular
    # polygon inscribed in the circle of radius ds / (2 sin(dpsi / 2)) (-> R = L / tan(delta) as dt -> 0), centred at
    # (ds / 2, R_e cos(dpsi / 2)) when starting at the origin heading +x.
    ds, dpsi = v * dt, v * np.tan(delta) / PACIFICA.wheel_base * dt
    R_e = ds / (2 * np.sin(dpsi / 2))
    center = np.array([ds / 2, R_e * np.cos(dpsi / 2)])
    r = np.hypot(*(pts[:, :2] - center).T)
    assert np.abs(r - R_e).max() < 1e-9
    assert R_e == pytest.approx(R, rel=1e-3)
    yaw_rate = np.diff(np.unwrap(pts[:, 2])) / dt
    assert np.allclose(yaw_rate, v * np.tan(delta) / PACIFICA.wheel_base, atol=1e-9)
    assert np.allclose(s[0, 3], v) and s[0, 7] == pytest.approx(delta)


def _lateral_rms(states, ref_xy):
    from simscale_env.map.polyline import Polyline

    pl = Polyline.from_xy(ref_xy)
    _, lat, _ = pl.project(states[:, :2])
    return float(np.sqrt(np.mean(lat ** 2)))


@pytest.mark.parametrize("radius", [None, 40.0])
def test_lqr_tracks_straight_and_curved_references(radius):
    v, T = 10.0, 151
    t = np.arange(T) * 0.1
    if radius is None:
        ref = np.stack([v * t, np.zeros(T), np.zeros(T)], -1)
    else:
        ang = v * t / radius
        ref = np.stack([radius * np.sin(ang), radius * (1 - np.cos(ang)), ang], -1)
    init = make_state(0.0, 0.0, 0.0, velocity=v)
    states = track_references(init, ref)[0]
    rms = _lateral_rms(states, ref[:, :2])
    assert rms < 0.3, rms
    assert abs(states[-1, 3] - v) < 0.3
    assert np.isfinite(states).all()


def test_degenerate_plans_never_give_nan():
    init = make_state(5.0, 5.0, 1.0, velocity=0.0)
    for plan in (np.zeros((8, 3)), np.tile([[0.0, 0.0, 3.0]], (8, 1)), np.cumsum(np.full((8, 3), 0.01), 0)):
        ref = plan_to_reference(plan, init, 10**12)
        st = track_references(init, ref)
        assert np.isfinite(st).all()
    # standing still: the ego stays put
    st = track_references(init, plan_to_reference(np.zeros((8, 3)), init, 10**12))
    assert np.abs(st[0, -1, :2] - init[:2]).max() < 1e-6


def test_bad_input_names_the_argument():
    init = make_state(velocity=5.0)
    with pytest.raises(ValueError, match="plan contains NaN"):
        plan_to_reference(np.full((8, 3), np.nan), init, 0)
    with pytest.raises(ValueError, match=r"plan must have shape \[N, K, 3\]"):
        plan_to_reference(np.zeros((8, 2)), init, 0)
    with pytest.raises(ValueError, match="initial_state contains NaN"):
        track_references(np.full(11, np.nan), np.zeros((1, 41, 3)))
    with pytest.raises(ValueError, match=r"initial_state must have shape \[..., 11\]"):
        track_references(np.zeros(5), np.zeros((1, 41, 3)))
    with pytest.raises(ValueError, match="reference_poses contains NaN"):
        track_references(init, np.full((1, 41, 3), np.inf))
    with pytest.raises(ValueError, match="times_us must be strictly increasing"):
        interpolate_poses(np.array([0, 5, 5]), np.zeros((3, 3)), np.array([1]))


def _random_references(rng, B, T=41):
    t = np.arange(T) * 0.1
    refs = np.zeros((B, T, 3))
    for b in range(B):
        v, k = rng.uniform(0.0, 15.0), rng.normal(0.0, 0.05)
        h = rng.uniform(-3.0, 3.0) + k * v * t
        refs[b, :, 0] = np.cumsum(v * np.cos(h)) * 0.1
        refs[b, :, 1] = np.cumsum(v * np.sin(h)) * 0.1
        refs[b, :, 2] = h
    return refs


def test_the_compiled_ego_step_is_the_tracker_and_the_bicycle():
    """`track_step` (the closed loop's ego step) against `BatchLQRTracker.track` + `propagate` + the standstill hold
    in numpy, row by row over tracked rollouts: equal to 1e-13 (numpy's own arctan2 and tan differ from libm's by an
    ulp now and then), and the rollout kernel `track_references` is the same step repeated, bit for bit."""
    from simscale_env.sim.lqr import BatchLQRTracker, track_step
    from simscale_env.sim.world import SimConfig, _propagate_held

    rng = np.random.default_rng(1)
    B = 48
    refs = _random_references(rng, B)
    init = np.zeros((B, 11))
    init[:, 3] = rng.uniform(0.0, 15.0, B)
    init[:, 2] = refs[:, 0, 2] + rng.normal(0.0, 0.1, B)
    init[:, 7] = rng.normal(0.0, 0.1, B)
    roll = track_references(init, refs)
    tracker = BatchLQRTracker()
    tracker.update(refs)
    c = SimConfig()
    for k in range(30):
        new = track_step(tracker, k, roll[:, k], 0.1, c.bicycle, hold_at_standstill=False)
        assert np.array_equal(new, roll[:, k + 1])
        ref = _propagate_held(roll[:, k], tracker.track(k, roll[:, k]), np.full(B, 0.1), c)
        held = track_step(tracker, k, roll[:, k], np.full(B, 0.1), c.bicycle, hold_at_standstill=True)
        assert np.abs(held - ref).max() < 1e-13


def test_the_compiled_ego_step_holds_at_standstill():
    """A crawling ego told to brake hard stops (speed, acceleration and yaw rate 0) rather than backing up; without
    the hold it reverses, as nuPlan's bicycle does."""
    from simscale_env.sim.lqr import BatchLQRTracker, track_step

    T = 41
    ref = np.zeros((1, T, 3))  # stand still at the origin
    s = make_state(0.5, 0.0, 0.0, velocity=0.05, acceleration=-3.0)[None]
    s[0, 9] = 0.01
    tracker = BatchLQRTracker()
    tracker.update(ref)
    free = track_step(tracker, 0, s, 0.1, hold_at_standstill=False)[0]
    held = track_step(tracker, 0, s, 0.1, hold_at_standstill=True)[0]
    assert free[3] < 0.0
    assert held[3] == 0.0 and held[5] == 0.0 and held[9] == 0.0
    assert held[10] == pytest.approx(-0.01 / 0.1)
    assert np.array_equal(held[:3], free[:3])
    # the same rule as the numpy path's `_propagate_held` (the closed loop's ego under a direct control)
    from simscale_env.sim.world import SimConfig, _propagate_held

    ref = _propagate_held(s, tracker.track(0, s), np.array([0.1]), SimConfig())[0]
    assert ref[3] == 0.0 and np.abs(held - ref).max() < 1e-13


def test_the_threaded_rollout_is_the_serial_rollout_bit_for_bit():
    """`track_references` of many rows fits its profiles and rolls out on numba's threads in chunks
    (`_fit_rows_threaded`, `_rollout_threaded`): the same profiles and states as the serial kernels for every row,
    at batch sizes around the chunk and threshold sizes, and one row alone is the same as in a batch."""
    from simscale_env.sim import lqr

    rng = np.random.default_rng(7)
    for B in (lqr.THREADED_MIN_ROWS, lqr.THREADED_MIN_ROWS + 1, 97, 160):
        refs = _random_references(rng, B)
        init = np.zeros((B, 11))
        init[:, 3] = rng.uniform(0.0, 15.0, B)
        init[:, 2] = refs[:, 0, 2] + rng.normal(0.0, 0.1, B)
        got = track_references(init, refs)
        tracker = lqr.BatchLQRTracker()
        tracker.update(refs)
        c, bike = lqr.LQRConfig(), lqr.BicycleConfig()
        args = (np.ascontiguousarray(tracker._poses), np.ascontiguousarray(tracker._velocity),
                np.ascontiguousarray(tracker._curvature), refs.shape[1] - 1, float(c.discretization_time),
                int(c.tracking_horizon))
        rest = (float(c.q_longitudinal), float(c.r_longitudinal), np.asarray(c.q_lateral, dtype=np.float64),
                float(c.r_lateral), float(c.stopping_velocity), float(c.stopping_proportional_gain),
                float(c.vehicle.wheel_base), float(bike.vehicle.wheel_base), float(bike.max_steering_angle),
                float(bike.accel_time_constant), float(bike.steering_angle_time_constant))
        serial = lqr._rollout(init, *args, *rest)
        threaded = lqr._rollout_threaded(init, *args, *rest)
        assert np.array_equal(serial, threaded) and np.array_equal(got, serial), B
        # the profiles' fit alike (`_fit_rows_threaded`)
        d = np.diff(refs, axis=1)
        h = refs[:, :-1, 2]
        proj = np.ascontiguousarray(d[..., 0] * np.cos(h) + d[..., 1] * np.sin(h))
        dh = np.ascontiguousarray(lqr.normalize_angle(d[..., 2]))
        ops = lqr._fit_operators(refs.shape[1] - 1, 0.1, float(c.jerk_penalty), float(c.curvature_rate_penalty),
                                 c.jerk_regularizer)
        fit_s = lqr._fit_rows(proj, dh, ops[0], 0.1, ops[1], ops[2])
        fit_t = lqr._fit_rows_threaded(proj, dh, ops[0], 0.1, ops[1], ops[2])
        assert all(np.array_equal(a, b) for a, b in zip(fit_s, fit_t)), B
        assert all(np.array_equal(a, b) for a, b in zip(fit_s, (tracker._velocity, tracker._curvature))), B
        assert np.array_equal(track_references(init[5], refs[5:6])[0], got[5])
