"""Batched LQR trajectory tracker and the tracking simulation of plans.

Follows navsim/planning/simulation/planner/pdm_planner/simulation/batch_lqr.py and batch_lqr_utils.py (the batch form
of nuplan/planning/simulation/controller/tracker/lqr.py and tracker_utils.py):

- reference velocity and curvature profiles from the reference poses by regularised least squares (jerk penalty
  1e-4, curvature-rate penalty 1e-2, 1e-10 on the initial curvature);
- longitudinal: one-step LQR on v_N = v_0 + N dt a with Q = 10, R = 1, v_ref = the profile N steps ahead;
- lateral: [lateral error, heading error, steering angle] over an N = 10 step LTV Euler model, Q = diag(1, 10, 0),
  R = 1, angles wrapped;
- stopping rule: v_ref <= 0.2 and v <= 0.2 -> a = -0.5 (v - v_ref), steering rate 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from numba import get_num_threads, njit, prange

from .bicycle import BicycleConfig, propagate
from .state import CMD_ACCELERATION, CMD_STEERING_RATE, HEADING, STATE_SIZE, STEERING_ANGLE, VELOCITY_X, X, Y, \
    check_states, normalize_angle
from .vehicle import PACIFICA, VehicleParameters

INITIAL_CURVATURE_PENALTY = 1e-10


@dataclass(frozen=True)
class LQRConfig:
    q_longitudinal: float = 10.0
    r_longitudinal: float = 1.0
    q_lateral: tuple[float, float, float] = (1.0, 10.0, 0.0)
    r_lateral: float = 1.0
    discretization_time: float = 0.1
    tracking_horizon: int = 10
    jerk_penalty: float = 1e-4
    curvature_rate_penalty: float = 1e-2
    stopping_proportional_gain: float = 0.5
    stopping_velocity: float = 0.2
    vehicle: VehicleParameters = field(default=PACIFICA)
    # Which jerk regulariser the velocity fit uses. "navsim": NAVSIM's batch_lqr_utils._make_banded_difference_matrix
    # overwrites its +1 band with the -1 diagonal (`banded[:, :-1] = -eye` after `banded[:, 1:] = eye`), so the
    # "jerk" penalty is really a penalty on the accelerations a_1..a_{M-2} (plus one last difference). NAVSIM's
    # scores come from that; "nuplan" is nuplan-devkit's tracker_utils with the true first differences.
    jerk_regularizer: str = "navsim"


def _profile(initial, derivatives, dt):
    """Integrate derivatives [B, M] from initial [B] -> [B, M+1]."""
    c = np.cumsum(derivatives * dt, axis=-1)
    return initial[..., None] + np.concatenate([np.zeros(c.shape[:-1] + (1,)), c], axis=-1)


def _solve_spd(M, b):
    """x = M^-1 b for a batch. The reference uses pinv(M) @ b; both regularised normal matrices are well conditioned
    (condition ~1e4), so a solve agrees with it to ~1e-12 on the golden cases and is ~30x faster. A singular batch
    element falls back to pinv."""
    try:
        return np.linalg.solve(M, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return np.einsum("bij,bj->bi", np.linalg.pinv(M), b)


def jerk_difference_matrix(n: int, variant: str = "navsim") -> np.ndarray:
    """The (n, n+1) difference matrix of the jerk penalty (see LQRConfig.jerk_regularizer)."""
    band = np.zeros((n, n + 1))
    if variant == "navsim":
        band[:, 1:] = np.eye(n)
        band[:, :-1] = -np.eye(n)  # overwrites the +1 entries of all but the last row, as NAVSIM does
    elif variant == "nuplan":
        band[:, 1:] += np.eye(n)
        band[:, :-1] -= np.eye(n)
    else:
        raise ValueError(f"jerk_regularizer must be 'navsim' or 'nuplan', got {variant!r}")
    return band


def fit_velocity_curvature(poses: np.ndarray, dt: float, jerk_penalty: float = 1e-4,
                           curvature_rate_penalty: float = 1e-2,
                           jerk_regularizer: str = "navsim") -> tuple[np.ndarray, np.ndarray]:
    """Velocity [B, T-1] and curvature [B, T-1] profiles of pose sequences [B, T, 3] sampled at `dt`
    (`get_velocity_curvature_profiles_with_derivatives_from_poses`).

    Same least squares as the reference, using its structure: the rows of the velocity fit for displacement k are
    (cos h_k, sin h_k) r_k with r_k = [dt, dt^2 (j <= k)], so A^T A = sum_k r_k r_k^T does not depend on the poses
    (cos^2 + sin^2 = 1): its solution operator (A^T A + jerk penalty)^-1 R^T is computed once per shape and applied
    to (displacement_k . heading_k). The curvature fit's normal matrix is l_i l_j * (suffix sum of (v dt)^2)
    [max(i, j)], solved by Cholesky. Agrees with the dense form to ~1e-12. Each row's profiles are computed on their
    own (`_fit_rows`), so a row's result does not depend on the batch it comes in.
    """
    poses = np.asarray(poses, dtype=np.float64)
    B, T, _ = poses.shape
    if T < 4:
        raise ValueError(f"poses must have at least 4 samples along axis 1, got {T}")
    d = np.diff(poses, axis=1)
    dh = normalize_angle(d[..., 2])
    h = poses[:, :-1, 2]
    proj = d[..., 0] * np.cos(h) + d[..., 1] * np.sin(h)  # [B, M]
    G, l, q = _fit_operators(T - 1, float(dt), float(jerk_penalty), float(curvature_rate_penalty), jerk_regularizer)
    # many rows (e.g. every sub-env's proposals of a vector env at once) on numba's threads; the same bits
    fit = _fit_rows_threaded if B >= THREADED_MIN_ROWS and get_num_threads() > 1 else _fit_rows
    return fit(np.ascontiguousarray(proj), np.ascontiguousarray(dh), G, float(dt), l, q)


@lru_cache(maxsize=16)
def _fit_operators(M: int, dt: float, jerk_penalty: float, curvature_rate_penalty: float, jerk_regularizer: str):
    """(G = (Rk^T Rk + jerk_penalty R^T R)^-1 Rk^T [M, M], the curvature fit's l [M] and q [M]) for M displacements
    (read-only, kept per shape and penalties)."""
    Rk = np.zeros((M, M))  # row k = r_k
    Rk[:, 0] = dt
    Rk[:, 1:] = dt ** 2 * np.tril(np.ones((M, M)))[:, 1:]
    n_j = M - 2
    R = np.concatenate([np.zeros((n_j, 1)), jerk_difference_matrix(n_j, jerk_regularizer)], axis=1)
    G = np.ascontiguousarray(np.linalg.solve(Rk.T @ Rk + jerk_penalty * (R.T @ R), Rk.T))
    l = np.full(M, dt)
    l[0] = 1.0
    q = np.full(M, curvature_rate_penalty)
    q[0] = INITIAL_CURVATURE_PENALTY
    for a in (G, l, q):
        a.flags.writeable = False
    return G, l, q


@njit(cache=True)
def _fit_rows(proj, dh, G, dt, l, q):
    """Per row b: x = G proj_b (the velocity fit), velocity = x_0 + cumsum(x_1: dt) (`_profile`), then the curvature
    fit (`_solve_curvature_row` on suffix sums, as `fit_velocity_curvature` describes) and its profile."""
    B, M = proj.shape
    velocity = np.empty((B, M))
    curvature = np.empty((B, M))
    _fit_range(0, B, proj, dh, G, dt, l, q, velocity, curvature)
    return velocity, curvature


# rows per task of the threaded fit and rollout (`_fit_rows_threaded`, `_rollout_threaded`), and the fewest rows
# worth threads at all
THREADED_CHUNK = 16
THREADED_MIN_ROWS = 64


@njit(cache=True, parallel=True)
def _fit_rows_threaded(proj, dh, G, dt, l, q):
    """`_fit_rows` with chunks of THREADED_CHUNK rows on numba's threads (each row's arithmetic unchanged)."""
    B, M = proj.shape
    velocity = np.empty((B, M))
    curvature = np.empty((B, M))
    for c in prange((B + THREADED_CHUNK - 1) // THREADED_CHUNK):
        lo = c * THREADED_CHUNK
        _fit_range(lo, min(lo + THREADED_CHUNK, B), proj, dh, G, dt, l, q, velocity, curvature)
    return velocity, curvature


@njit(cache=True)
def _fit_range(lo, hi, proj, dh, G, dt, l, q, velocity, curvature):
    """`_fit_rows` of rows lo..hi-1 into velocity and curvature (their own scratch arrays)."""
    M = proj.shape[1]
    x = np.empty(M)
    S = np.empty(M)
    rhs = np.empty(M)
    K = np.empty((M, M))
    y = np.empty(M)
    x2 = np.empty(M)
    for b in range(lo, hi):
        for i in range(M):
            acc = 0.0
            for k in range(M):
                acc += G[i, k] * proj[b, k]
            x[i] = acc
        velocity[b, 0] = x[0] + 0.0
        c = 0.0
        for j in range(1, M):
            c += x[j] * dt
            velocity[b, j] = x[0] + c
        sw = 0.0
        sr = 0.0
        for m in range(M - 1, -1, -1):
            vd = velocity[b, m] * dt
            sw += vd * vd
            S[m] = sw
            sr += vd * dh[b, m]
            rhs[m] = sr * l[m]
        _solve_curvature_row(S, rhs, l, q, K, y, x2)
        curvature[b, 0] = x2[0] + 0.0
        c = 0.0
        for j in range(1, M):
            c += x2[j] * dt
            curvature[b, j] = x2[0] + c


@njit(cache=True, inline="always")
def _solve_curvature_row(S, rhs, l, q, K, y, out):
    """Solve (l_i l_j S[max(i, j)] + diag(q)) x = rhs for one row by Cholesky (SPD: q > 0), into out [M]
    (scratch K [M, M], y [M])."""
    M = S.shape[0]
    for i in range(M):
        for j in range(i + 1):
            v = l[i] * l[j] * S[i]  # max(i, j) = i for j <= i
            K[i, j] = v
            K[j, i] = v
        K[i, i] += q[i]
    # Cholesky in place (lower)
    for j in range(M):
        s = K[j, j]
        for k in range(j):
            s -= K[j, k] * K[j, k]
        d = np.sqrt(s)
        K[j, j] = d
        for i in range(j + 1, M):
            s = K[i, j]
            for k in range(j):
                s -= K[i, k] * K[j, k]
            K[i, j] = s / d
    for i in range(M):
        s = rhs[i]
        for k in range(i):
            s -= K[i, k] * y[k]
        y[i] = s / K[i, i]
    for i in range(M - 1, -1, -1):
        s = y[i]
        for k in range(i + 1, M):
            s -= K[k, i] * out[k]
        out[i] = s / K[i, i]


class BatchLQRTracker:
    """Tracks a batch of reference pose sequences sampled at the discretization time."""

    def __init__(self, config: LQRConfig = LQRConfig()):
        self.config = config
        self._poses = None
        self._velocity = None
        self._curvature = None

    def update(self, reference_poses: np.ndarray) -> None:
        """Load references [B, T, 3] (x, y, heading of the rear axle, global), one per batch element, starting at the
        current iteration and sampled every `discretization_time`."""
        ref = np.asarray(reference_poses, dtype=np.float64)
        if ref.ndim != 3 or ref.shape[-1] != 3:
            raise ValueError(f"reference_poses must have shape [B, T, 3], got {ref.shape}")
        if not np.all(np.isfinite(ref)):
            raise ValueError("reference_poses contains NaN or infinite values")
        c = self.config
        self._poses = ref
        self._velocity, self._curvature = fit_velocity_curvature(ref, c.discretization_time, c.jerk_penalty,
                                                                 c.curvature_rate_penalty, c.jerk_regularizer)

    @classmethod
    def stacked(cls, trackers) -> "BatchLQRTracker":
        """One tracker holding the loaded references of `trackers` (equal configs and reference lengths), in order:
        its `track` of stacked states gives, row by row, what each tracker's own `track` gives (every operation of
        `track` is row-wise), in one call. The profiles are each tracker's own fit."""
        trackers = list(trackers)
        if not trackers or any(t._poses is None for t in trackers):
            raise ValueError("BatchLQRTracker.stacked needs trackers with loaded references (update)")
        config = trackers[0].config
        if any(t.config != config for t in trackers):
            raise ValueError("BatchLQRTracker.stacked needs trackers with equal configs")
        out = cls(config)
        out._poses = np.concatenate([t._poses for t in trackers])
        out._velocity = np.concatenate([t._velocity for t in trackers])
        out._curvature = np.concatenate([t._curvature for t in trackers])
        return out

    def track(self, index: int, states: np.ndarray) -> np.ndarray:
        """Commands [B, 2] (acceleration, steering rate) at reference index `index` for current states [B, 11]."""
        c = self.config
        N, dt = c.tracking_horizon, c.discretization_time
        ref = self._poses[:, index]
        dx, dy = states[:, X] - ref[:, 0], states[:, Y] - ref[:, 1]
        lat = -dx * np.sin(ref[:, 2]) + dy * np.cos(ref[:, 2])
        herr = normalize_angle(states[:, HEADING] - ref[:, 2])
        v0 = states[:, VELOCITY_X]
        B, n_prof = self._velocity.shape
        ridx = min(index + N, n_prof - 1)
        v_ref = self._velocity[:, ridx]
        curv = np.zeros((B, N))
        L = ridx - index
        curv[:, :L] = self._curvature[:, index:ridx]
        if L < N:
            curv[:, L:] = self._curvature[:, ridx, None]
        cmds = np.zeros((B, 2))
        stop = (v_ref <= c.stopping_velocity) & (v0 <= c.stopping_velocity)
        cmds[stop, CMD_ACCELERATION] = -c.stopping_proportional_gain * (v0[stop] - v_ref[stop])
        go = ~stop
        if go.any():
            Bl = N * dt
            accel = -1.0 / (Bl * c.q_longitudinal * Bl + c.r_longitudinal) * Bl * c.q_longitudinal * (v0[go] - v_ref[go])
            cmds[go, CMD_ACCELERATION] = accel
            vprof = _profile(v0[go], np.repeat(accel[:, None], N, axis=1), dt)[:, :N]
            x0 = np.stack([lat[go], herr[go], states[go, STEERING_ANGLE]], axis=-1)
            cmds[go, CMD_STEERING_RATE] = self._lateral(x0, vprof, curv[go])
        return cmds

    def _lateral(self, x0, vprof, curv):
        c = self.config
        q = np.asarray(c.q_lateral, dtype=np.float64)
        return _lateral_lqr(np.ascontiguousarray(x0, dtype=np.float64), np.ascontiguousarray(vprof, dtype=np.float64),
                            np.ascontiguousarray(curv, dtype=np.float64), float(c.discretization_time),
                            float(c.vehicle.wheel_base), q, float(c.r_lateral))


@njit(cache=True)
def _lateral_lqr(x0, vprof, curv, dt, wheel_base, q, r):
    """Steering-rate commands of the lateral LQR: x_{k+1} = M_k x_k + b u + g_k over the horizon,
    M_k = [[1, v dt, 0], [0, 1, v dt / L], [0, 0, 1]], b = (0, 0, dt), g_k = (0, -v kappa dt, 0); then
    u = -(b^T Q A x0 + g wrapped) / (b^T Q b + r)."""
    n, N = vprof.shape
    out = np.empty(n)
    for i in range(n):
        A = np.eye(3)
        B0 = 0.0
        B1 = 0.0
        B2 = 0.0
        g0 = 0.0
        g1 = 0.0
        g2 = 0.0
        for k in range(N):
            a01 = vprof[i, k] * dt
            a12 = vprof[i, k] * dt / wheel_base
            aff = -vprof[i, k] * curv[i, k] * dt
            for j in range(3):
                A[0, j] = A[0, j] + a01 * A[1, j]
                A[1, j] = A[1, j] + a12 * A[2, j]
            B0 = B0 + a01 * B1
            B1 = B1 + a12 * B2
            B2 = B2 + dt
            g0 = g0 + a01 * g1
            g1 = g1 + a12 * g2 + aff
        e0 = A[0, 0] * x0[i, 0] + A[0, 1] * x0[i, 1] + A[0, 2] * x0[i, 2] + g0
        e1 = A[1, 0] * x0[i, 0] + A[1, 1] * x0[i, 1] + A[1, 2] * x0[i, 2] + g1
        e2 = A[2, 0] * x0[i, 0] + A[2, 1] * x0[i, 1] + A[2, 2] * x0[i, 2] + g2
        e1 = np.arctan2(np.sin(e1), np.cos(e1))
        e2 = np.arctan2(np.sin(e2), np.cos(e2))
        bq0 = B0 * q[0]
        bq1 = B1 * q[1]
        bq2 = B2 * q[2]
        inv = -1.0 / (bq0 * B0 + bq1 * B1 + bq2 * B2 + r)
        out[i] = inv * (bq0 * e0 + bq1 * e1 + bq2 * e2)
    return out


def track_references(initial_state: np.ndarray, reference_poses: np.ndarray, num_steps: int | None = None,
                     lqr: LQRConfig = LQRConfig(), bicycle: BicycleConfig = BicycleConfig()) -> np.ndarray:
    """Simulate the LQR + bicycle tracking each reference [B, T, 3] from the same initial state [11] (or [B, 11]).

    Returns states [B, num_steps + 1, 11] at the discretization time; state 0 is the initial state
    (navsim PDMSimulator.simulate_proposals). The whole rollout runs in one kernel (`_rollout`; from
    THREADED_MIN_ROWS rows on numba's threads, `_rollout_threaded`), step for step the
    same operations as `BatchLQRTracker.track` + `bicycle.propagate`.
    """
    ref = np.asarray(reference_poses, dtype=np.float64)
    if ref.ndim == 2:
        ref = ref[None]
    init = check_states(initial_state, "initial_state")
    B, T, _ = ref.shape
    steps = T - 1 if num_steps is None else int(num_steps)
    tracker = BatchLQRTracker(lqr)
    tracker.update(ref)
    init_b = np.ascontiguousarray(np.broadcast_to(init, (B, init.shape[-1])), dtype=np.float64)
    # many rows (e.g. every sub-env's proposals of a vector env at once) on numba's threads; the same bits
    kernel = _rollout_threaded if B >= THREADED_MIN_ROWS and get_num_threads() > 1 else _rollout
    return kernel(init_b, np.ascontiguousarray(tracker._poses), np.ascontiguousarray(tracker._velocity),
                  np.ascontiguousarray(tracker._curvature), steps, float(lqr.discretization_time),
                  int(lqr.tracking_horizon), float(lqr.q_longitudinal), float(lqr.r_longitudinal),
                  np.asarray(lqr.q_lateral, dtype=np.float64), float(lqr.r_lateral), float(lqr.stopping_velocity),
                  float(lqr.stopping_proportional_gain), float(lqr.vehicle.wheel_base),
                  float(bicycle.vehicle.wheel_base), float(bicycle.max_steering_angle),
                  float(bicycle.accel_time_constant), float(bicycle.steering_angle_time_constant))


@njit(cache=True, inline="always")
def _lqr_command(s, poses, velocity, curvature, b, t, dt, N, q_lon, r_lon, q_lat, r_lat, stop_v, stop_k, lqr_wb,
                 vprof, curv, x0):
    """`BatchLQRTracker.track` of state s [11] for row b at reference index t: (acceleration, steering rate). The
    heading error is wrapped by libm's atan2 (numpy's own arctan2 differs from it by an ulp now and then)."""
    n_prof = velocity.shape[1]
    r0 = poses[b, t, 0]
    r1 = poses[b, t, 1]
    r2 = poses[b, t, 2]
    dx = s[0] - r0
    dy = s[1] - r1
    lat = -dx * np.sin(r2) + dy * np.cos(r2)
    d = s[2] - r2
    herr = np.arctan2(np.sin(d), np.cos(d))
    v0 = s[3]
    ridx = min(t + N, n_prof - 1)
    v_ref = velocity[b, ridx]
    L = ridx - t
    for k in range(N):
        curv[0, k] = curvature[b, t + k] if k < L else curvature[b, ridx]
    if v_ref <= stop_v and v0 <= stop_v:
        return -stop_k * (v0 - v_ref), 0.0
    Bl = N * dt
    acc_cmd = -1.0 / (Bl * q_lon * Bl + r_lon) * Bl * q_lon * (v0 - v_ref)
    run = 0.0
    for k in range(N):
        vprof[0, k] = v0 + run
        run = run + acc_cmd * dt
    x0[0, 0] = lat
    x0[0, 1] = herr
    x0[0, 2] = s[7]
    return acc_cmd, _lateral_lqr(x0, vprof, curv, dt, lqr_wb, q_lat, r_lat)[0]


@njit(cache=True, inline="always")
def _bicycle_into(s, acc_cmd, steer_cmd, dt, bike_wb, max_steer, tau_a, tau_s, n):
    """`bicycle.propagate` of state s [11] under one command over dt, into n [11]."""
    accel = s[5]
    steer = s[7]
    ideal_steer = dt * steer_cmd + steer
    new_accel = dt / (dt + tau_a) * (acc_cmd - accel) + accel
    new_steer = dt / (dt + tau_s) * (ideal_steer - steer) + steer
    steer_rate = (new_steer - steer) / dt
    v = s[3]
    n[0] = s[0] + v * np.cos(s[2]) * dt
    n[1] = s[1] + v * np.sin(s[2]) * dt
    n[2] = (s[2] + v * np.tan(steer) / bike_wb * dt - (-np.pi)) % (2 * np.pi) + (-np.pi)
    n[3] = v + new_accel * dt
    n[4] = 0.0
    n[7] = min(max(steer + steer_rate * dt, -max_steer), max_steer)
    n[9] = n[3] * np.tan(n[7]) / bike_wb
    n[5] = new_accel
    n[6] = 0.0
    n[10] = (n[9] - s[9]) / dt
    n[8] = steer_rate


@njit(cache=True)
def _rollout(init, poses, velocity, curvature, steps, dt, N, q_lon, r_lon, q_lat, r_lat, stop_v, stop_k, lqr_wb,
             bike_wb, max_steer, tau_a, tau_s):
    B = init.shape[0]
    out = np.zeros((B, steps + 1, init.shape[1]))
    _rollout_rows(0, B, init, poses, velocity, curvature, steps, dt, N, q_lon, r_lon, q_lat, r_lat, stop_v, stop_k,
                  lqr_wb, bike_wb, max_steer, tau_a, tau_s, out)
    return out


@njit(cache=True, parallel=True)
def _rollout_threaded(init, poses, velocity, curvature, steps, dt, N, q_lon, r_lon, q_lat, r_lat, stop_v, stop_k,
                      lqr_wb, bike_wb, max_steer, tau_a, tau_s):
    """`_rollout` with chunks of THREADED_CHUNK rows on numba's threads (each row's arithmetic unchanged)."""
    B = init.shape[0]
    out = np.zeros((B, steps + 1, init.shape[1]))
    n_chunks = (B + THREADED_CHUNK - 1) // THREADED_CHUNK
    for c in prange(n_chunks):
        lo = c * THREADED_CHUNK
        _rollout_rows(lo, min(lo + THREADED_CHUNK, B), init, poses, velocity, curvature, steps, dt, N, q_lon, r_lon,
                      q_lat, r_lat, stop_v, stop_k, lqr_wb, bike_wb, max_steer, tau_a, tau_s, out)
    return out


@njit(cache=True)
def _rollout_rows(lo, hi, init, poses, velocity, curvature, steps, dt, N, q_lon, r_lon, q_lat, r_lat, stop_v, stop_k,
                  lqr_wb, bike_wb, max_steer, tau_a, tau_s, out):
    """Rows lo..hi-1 of the rollout into out [B, steps + 1, 11] (their own scratch arrays)."""
    vprof = np.empty((1, N))
    curv = np.empty((1, N))
    x0 = np.empty((1, 3))
    for b in range(lo, hi):
        out[b, 0] = init[b]
        for t in range(steps):
            acc_cmd, steer_cmd = _lqr_command(out[b, t], poses, velocity, curvature, b, t, dt, N, q_lon, r_lon,
                                              q_lat, r_lat, stop_v, stop_k, lqr_wb, vprof, curv, x0)
            _bicycle_into(out[b, t], acc_cmd, steer_cmd, dt, bike_wb, max_steer, tau_a, tau_s, out[b, t + 1])


@njit(cache=True)
def _track_step(states, poses, velocity, curvature, index, dts, dt, N, q_lon, r_lon, q_lat, r_lat, stop_v, stop_k,
                lqr_wb, bike_wb, max_steer, tau_a, tau_s, hold):
    """One closed-loop ego step of each row b: the LQR command at reference index `index` (discretization dt), the
    bicycle over dts[b], then the standstill hold (`SimConfig.hold_at_standstill`)."""
    B = states.shape[0]
    out = np.empty_like(states)
    vprof = np.empty((1, N))
    curv = np.empty((1, N))
    x0 = np.empty((1, 3))
    for b in range(B):
        s = states[b]
        acc_cmd, steer_cmd = _lqr_command(s, poses, velocity, curvature, b, index, dt, N, q_lon, r_lon, q_lat, r_lat,
                                          stop_v, stop_k, lqr_wb, vprof, curv, x0)
        n = out[b]
        _bicycle_into(s, acc_cmd, steer_cmd, dts[b], bike_wb, max_steer, tau_a, tau_s, n)
        if hold and s[3] >= 0.0 and n[3] < 0.0:  # forward motion would turn into reversing: stop
            n[3] = 0.0
            n[5] = 0.0
            n[9] = 0.0
            n[10] = -s[9] / dts[b]
    return out


def track_step(tracker: BatchLQRTracker, index: int, states: np.ndarray, dt, bicycle: BicycleConfig = BicycleConfig(),
               hold_at_standstill: bool = True) -> np.ndarray:
    """States [B, 11] one step on: each row's LQR command at reference index `index` of `tracker` (loaded with B
    references), the bicycle over dt ([B] or a scalar, seconds) and, with `hold_at_standstill`, a row that would pass
    from forward motion into reversing stopped there (speed, acceleration and yaw rate 0). The same arithmetic as
    `tracker.track` + `bicycle.propagate` in one compiled call, except libm's atan2 and tan where numpy has its own
    (they differ by an ulp now and then)."""
    lqr = tracker.config
    states = np.ascontiguousarray(states, dtype=np.float64)
    dts = np.ascontiguousarray(np.broadcast_to(np.asarray(dt, dtype=np.float64), (states.shape[0],)))
    return _track_step(states, np.ascontiguousarray(tracker._poses), np.ascontiguousarray(tracker._velocity),
                       np.ascontiguousarray(tracker._curvature), int(index), dts,
                       float(lqr.discretization_time), int(lqr.tracking_horizon), float(lqr.q_longitudinal),
                       float(lqr.r_longitudinal), np.asarray(lqr.q_lateral, dtype=np.float64), float(lqr.r_lateral),
                       float(lqr.stopping_velocity), float(lqr.stopping_proportional_gain),
                       float(lqr.vehicle.wheel_base), float(bicycle.vehicle.wheel_base),
                       float(bicycle.max_steering_angle), float(bicycle.accel_time_constant),
                       float(bicycle.steering_angle_time_constant), bool(hold_at_standstill))
