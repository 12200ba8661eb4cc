"""Polylines with arc length: baselines, route centrelines, agent paths. Vectorized projection and sampling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import wrap_angle


@dataclass(frozen=True, eq=False)
class Polyline:
    """A directed polyline: vertices `xy` [N, 2], vertex headings [N], cumulative arc length `s` [N]."""

    xy: np.ndarray
    heading: np.ndarray
    s: np.ndarray
    heading_unwrapped: np.ndarray = None

    def __post_init__(self):
        if self.heading_unwrapped is None:
            object.__setattr__(self, "heading_unwrapped", np.unwrap(self.heading))

    @staticmethod
    def from_xy(xy, heading=None) -> "Polyline":
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        if len(xy) > 1:
            keep = np.concatenate([[True], np.hypot(*np.diff(xy, axis=0).T) > 1e-9])
            xy = xy[keep]
            heading = None if heading is None else np.asarray(heading, dtype=np.float64)[keep]
        if len(xy) < 2:
            raise ValueError("a polyline needs at least two distinct vertices")
        seg = np.diff(xy, axis=0)
        s = np.concatenate([[0.0], np.cumsum(np.hypot(seg[:, 0], seg[:, 1]))])
        if heading is None:
            hs = np.arctan2(seg[:, 1], seg[:, 0])
            # vertex heading: segment heading, the mean of both neighbours at interior vertices
            h = np.empty(len(xy))
            h[0], h[-1] = hs[0], hs[-1]
            if len(hs) > 1:
                h[1:-1] = hs[:-1] + 0.5 * wrap_angle(hs[1:] - hs[:-1])
            heading = wrap_angle(h)
        for a in (xy, heading, s):
            a.flags.writeable = False
        return Polyline(xy, np.asarray(heading, dtype=np.float64), s)

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def __len__(self) -> int:
        return len(self.xy)

    def interpolate(self, s) -> np.ndarray:
        """Poses (x, y, heading) at arc lengths `s` (clipped to [0, length]); shape [..., 3]."""
        s = np.clip(np.asarray(s, dtype=np.float64), 0.0, self.length)
        x = np.interp(s, self.s, self.xy[:, 0])
        y = np.interp(s, self.s, self.xy[:, 1])
        h = np.interp(s, self.s, self.heading_unwrapped)
        return np.stack([x, y, wrap_angle(h)], axis=-1)

    def project(self, points, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nearest-point projection of `points` [P, 2].

        Returns (s, lateral, distance): arc length of the nearest point, signed lateral offset (left of the
        direction of travel positive) and the unsigned distance.
        """
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        a = self.xy[:-1]
        d = np.diff(self.xy, axis=0)
        l2 = np.einsum("ij,ij->i", d, d)
        s_out = np.empty(len(p))
        lat_out = np.empty(len(p))
        dist_out = np.empty(len(p))
        for k in range(0, len(p), chunk):
            q = p[k:k + chunk]
            rel = q[:, None, :] - a[None, :, :]  # [P, N-1, 2]
            t = np.clip(np.einsum("pnj,nj->pn", rel, d) / l2[None, :], 0.0, 1.0)
            proj = a[None] + t[..., None] * d[None]
            diff = q[:, None, :] - proj
            d2 = np.einsum("pnj,pnj->pn", diff, diff)
            j = np.argmin(d2, axis=1)
            rows = np.arange(len(q))
            tj = t[rows, j]
            s_out[k:k + chunk] = self.s[j] + tj * np.sqrt(l2[j])
            dist = np.sqrt(d2[rows, j])
            cross = d[j, 0] * rel[rows, j, 1] - d[j, 1] * rel[rows, j, 0]
            lat_out[k:k + chunk] = np.where(cross >= 0, dist, -dist)
            dist_out[k:k + chunk] = dist
        return s_out, lat_out, dist_out

    def resample(self, step: float) -> "Polyline":
        n = max(2, int(np.ceil(self.length / step)) + 1)
        poses = self.interpolate(np.linspace(0.0, self.length, n))
        return Polyline.from_xy(poses[:, :2], poses[:, 2])

    def curvature(self) -> np.ndarray:
        """Signed curvature at the vertices (heading change per metre)."""
        if len(self.xy) < 3:
            return np.zeros(len(self.xy))
        dh = wrap_angle(np.diff(self.heading))
        ds = np.maximum(np.diff(self.s), 1e-9)
        k = dh / ds
        return np.concatenate([k[:1], 0.5 * (k[:-1] + k[1:]), k[-1:]])


def concatenate(polylines) -> Polyline:
    """Join polylines end to start (a shared junction vertex is kept once)."""
    xy = [polylines[0].xy]
    hd = [polylines[0].heading]
    for p in polylines[1:]:
        if np.hypot(*(p.xy[0] - xy[-1][-1])) < 1e-6:
            xy.append(p.xy[1:])
            hd.append(p.heading[1:])
        else:
            xy.append(p.xy)
            hd.append(p.heading)
    return Polyline.from_xy(np.concatenate(xy), np.concatenate(hd))
