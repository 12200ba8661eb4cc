"""Frames, units and the small vectorized transforms every module shares.

Conventions (see the README, "Conventions"):
- Global frame: the map's projected (UTM) coordinates in metres. Headings in radians, counter-clockwise from +x,
  wrapped to (-pi, pi].
- Local frame: the current ego rear axle, x forward, y left.
- Quaternions are (w, x, y, z), as nuPlan stores them.
- Time: integer microseconds in data.
"""

from __future__ import annotations

import numpy as np

US_PER_S = 1_000_000


def wrap_angle(a):
    """Wrap angles to (-pi, pi]."""
    a = np.asarray(a, dtype=np.float64)
    w = np.mod(a + np.pi, 2.0 * np.pi) - np.pi
    # np.mod maps +pi to -pi; keep +pi (the interval is half-open on the left)
    return np.where(w == -np.pi, np.pi, w)


def yaw_from_quaternion(qw, qx, qy, qz):
    """Heading (rotation about +z) of a (w, x, y, z) quaternion; vectorized."""
    qw, qx, qy, qz = (np.asarray(v, dtype=np.float64) for v in (qw, qx, qy, qz))
    return np.arctan2(2.0 * (qw * qz + qx * qy), 1.0 - 2.0 * (qy * qy + qz * qz))


def quaternion_from_yaw(yaw):
    """(w, x, y, z) quaternion of a pure rotation about +z; shape [..., 4]."""
    yaw = np.asarray(yaw, dtype=np.float64)
    out = np.zeros(yaw.shape + (4,))
    out[..., 0] = np.cos(yaw / 2.0)
    out[..., 3] = np.sin(yaw / 2.0)
    return out


def quaternion_to_matrix(q):
    """3x3 rotation matrices of (w, x, y, z) quaternions; q shape [..., 4] -> [..., 3, 3]."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    m = np.empty(q.shape[:-1] + (3, 3))
    m[..., 0, 0] = 1 - 2 * (y * y + z * z)
    m[..., 0, 1] = 2 * (x * y - w * z)
    m[..., 0, 2] = 2 * (x * z + w * y)
    m[..., 1, 0] = 2 * (x * y + w * z)
    m[..., 1, 1] = 1 - 2 * (x * x + z * z)
    m[..., 1, 2] = 2 * (y * z - w * x)
    m[..., 2, 0] = 2 * (x * z - w * y)
    m[..., 2, 1] = 2 * (y * z + w * x)
    m[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return m


def matrix_to_quaternion(m):
    """(w, x, y, z) quaternion of a single 3x3 rotation matrix (w >= 0)."""
    m = np.asarray(m, dtype=np.float64)
    t = np.trace(m)
    if t > 0:
        s = np.sqrt(t + 1.0) * 2
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.asarray(q)
    return q if q[0] >= 0 else -q


def global_to_local(poses, origin):
    """Express global poses [..., 3] (x, y, heading) in the frame of `origin` (x, y, heading)."""
    poses = np.asarray(poses, dtype=np.float64)
    ox, oy, oh = float(origin[0]), float(origin[1]), float(origin[2])
    c, s = np.cos(oh), np.sin(oh)
    dx, dy = poses[..., 0] - ox, poses[..., 1] - oy
    out = np.empty_like(poses)
    out[..., 0] = c * dx + s * dy
    out[..., 1] = -s * dx + c * dy
    if poses.shape[-1] > 2:
        out[..., 2] = wrap_angle(poses[..., 2] - oh)
    return out


def local_to_global(poses, origin):
    """Inverse of :func:`global_to_local`."""
    poses = np.asarray(poses, dtype=np.float64)
    ox, oy, oh = float(origin[0]), float(origin[1]), float(origin[2])
    c, s = np.cos(oh), np.sin(oh)
    out = np.empty_like(poses)
    out[..., 0] = ox + c * poses[..., 0] - s * poses[..., 1]
    out[..., 1] = oy + s * poses[..., 0] + c * poses[..., 1]
    if poses.shape[-1] > 2:
        out[..., 2] = wrap_angle(poses[..., 2] + oh)
    return out


def polyline_headings(xy):
    """Heading of each vertex of a polyline [N, 2] (forward differences; the last repeats the previous)."""
    xy = np.asarray(xy, dtype=np.float64)
    d = np.diff(xy, axis=0)
    h = np.arctan2(d[:, 1], d[:, 0])
    return np.concatenate([h, h[-1:]]) if len(h) else np.zeros(len(xy))


def polyline_arclength(xy):
    """Cumulative arc length at each vertex of a polyline [N, 2]."""
    xy = np.asarray(xy, dtype=np.float64)
    seg = np.hypot(*np.diff(xy, axis=0).T)
    return np.concatenate([[0.0], np.cumsum(seg)])
