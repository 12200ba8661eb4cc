"""Gaussian scenes synthesised from a nuPlan map (for maps without a reconstruction, e.g. the mini dataset).

The static background is generated per 50 m chunk of the map, deterministically from the map and a seed (each
chunk draws from its own generator seeded by (seed, chunk index)), so any region renders the same whatever path led
there. Contents, bottom to top:

- ground: the drivable area (roadblocks, intersections, car parks) as asphalt, walkways as pavement, the rest as
  grass/soil; flat Gaussians on a jittered grid;
- markings: lane boundaries (yellow solid on the leftmost lane's left side, white solid on the rightmost lane's
  right side, white dashes 3 m on / 6 m off between lanes), stop lines, crosswalk stripes (0.5 m bands across the
  walking direction);
- curbs along the drivable area's edge;
- beyond the road: building facades (flat, vertical, one colour per block with darker window rows) set back 7-14 m
  from the road edge, and trees (trunk + canopy) in between.

Coordinates are local to `origin` (a 1 km-aligned corner of the map) so float32 keeps millimetres.
Actors (vehicles, pedestrians, cyclists, cones, barriers, generic objects) are templates in their box frame, scaled
to each box and coloured per track (`actor_gaussians`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import shapely
from numba import njit

from ..data.schema import BARRIER, BICYCLE, CZONE_SIGN, GENERIC_OBJECT, PEDESTRIAN, TRAFFIC_CONE, VEHICLE
from .gaussians import Gaussians, quat_multiply, rgb_to_sh_dc
from .raster import covariances

CHUNK = 50.0

ASPHALT = (0.30, 0.30, 0.32)
PAVEMENT = (0.62, 0.60, 0.57)
GRASS = (0.33, 0.45, 0.24)
WHITE = (0.92, 0.92, 0.90)
YELLOW = (0.90, 0.72, 0.15)
CURB = (0.75, 0.74, 0.72)
BUILDING_COLOURS = ((0.76, 0.70, 0.60), (0.62, 0.36, 0.30), (0.55, 0.57, 0.60), (0.83, 0.80, 0.74),
                    (0.45, 0.50, 0.58), (0.70, 0.62, 0.48))
SKY_TOP = np.array([0.38, 0.58, 0.86], np.float32)
SKY_HORIZON = np.array([0.78, 0.86, 0.95], np.float32)
GROUND_FILL = np.array([0.34, 0.36, 0.32], np.float32)


@dataclass
class _Parts:
    means: list = field(default_factory=list)
    quats: list = field(default_factory=list)
    scales: list = field(default_factory=list)
    opac: list = field(default_factory=list)
    rgb: list = field(default_factory=list)

    def add(self, means, scales, rgb, opacity=0.95, quats=None, rng=None, jitter=0.0):
        n = len(means)
        if n == 0:
            return
        means = np.asarray(means, np.float32)
        self.means.append(means)
        sc = np.broadcast_to(np.asarray(scales, np.float32), (n, 3))
        self.scales.append(sc)
        if quats is None:
            quats = np.tile(np.array([1.0, 0, 0, 0], np.float32), (n, 1))
        self.quats.append(np.broadcast_to(np.asarray(quats, np.float32), (n, 4)))
        self.opac.append(np.broadcast_to(np.asarray(opacity, np.float32), (n,)))
        col = np.broadcast_to(np.asarray(rgb, np.float32), (n, 3)).copy()
        if rng is not None and jitter:
            col = col * (1.0 + rng.normal(0, jitter, (n, 1))).astype(np.float32)
        self.rgb.append(np.clip(col, 0.0, 1.0))

    def build(self) -> Gaussians:
        if not self.means:
            return Gaussians.empty()
        rgb = np.concatenate(self.rgb)
        return Gaussians.create(np.concatenate(self.means), np.concatenate(self.quats), np.concatenate(self.scales),
                                np.concatenate(self.opac), rgb_to_sh_dc(rgb)[:, None, :])


def _z_quats(angles):
    a = np.asarray(angles, np.float64) / 2
    return np.stack([np.cos(a), np.zeros_like(a), np.zeros_like(a), np.sin(a)], -1).astype(np.float32)


def _grid_in(poly, spacing, rng, jitter=0.35):
    """Jittered grid points inside a polygon."""
    if poly.is_empty:
        return np.zeros((0, 2))
    x0, y0, x1, y1 = poly.bounds
    xs = np.arange(x0 + spacing / 2, x1, spacing)
    ys = np.arange(y0 + spacing / 2, y1, spacing)
    if not len(xs) or not len(ys):
        return np.zeros((0, 2))
    gx, gy = np.meshgrid(xs, ys)
    p = np.stack([gx.ravel(), gy.ravel()], -1)
    p = p + rng.uniform(-jitter, jitter, p.shape) * spacing
    return p[shapely.contains_xy(poly, p[:, 0], p[:, 1])]


def _along(line_xy, spacing):
    """Points every `spacing` along a polyline and the local direction."""
    xy = np.asarray(line_xy, np.float64)
    if len(xy) < 2:
        return np.zeros((0, 2)), np.zeros(0), np.zeros(0)
    seg = np.hypot(*np.diff(xy, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= 0:
        return np.zeros((0, 2)), np.zeros(0), np.zeros(0)
    q = np.arange(spacing / 2, s[-1], spacing)
    x = np.interp(q, s, xy[:, 0])
    y = np.interp(q, s, xy[:, 1])
    k = np.clip(np.searchsorted(s, q) - 1, 0, len(seg) - 1)
    d = np.diff(xy, axis=0)[k]
    return np.stack([x, y], -1), np.arctan2(d[:, 1], d[:, 0]), q


class StaticScene:
    """The synthesised static background of one map, generated per chunk on demand and cached."""

    def __init__(self, map_api, seed: int = 0, *, ground_spacing: float = 0.6, offroad_spacing: float = 1.0):
        self.map = map_api
        self.seed = int(seed)
        self.ground_spacing = ground_spacing
        self.offroad_spacing = offroad_spacing
        b = map_api.bounds
        self.origin = (float(np.floor(b[0] / 1000.0) * 1000.0), float(np.floor(b[1] / 1000.0) * 1000.0))
        self._chunks: dict = {}
        self._sets: dict = {}
        self._walk = shapely.union_all(np.array([a.polygon for a in map_api.walkways.values()], dtype=object)) \
            if map_api.walkways else shapely.Polygon()
        self._drivable = map_api.drivable_area
        shapely.prepare(self._walk)

    # ------------------------------------------------------------------ chunks
    def chunk_ids(self, x: float, y: float, radius: float) -> list[tuple[int, int]]:
        i0, i1 = int(np.floor((x - radius) / CHUNK)), int(np.floor((x + radius) / CHUNK))
        j0, j1 = int(np.floor((y - radius) / CHUNK)), int(np.floor((y + radius) / CHUNK))
        out = []
        for i in range(i0, i1 + 1):
            for j in range(j0, j1 + 1):
                cx = min(max(x, i * CHUNK), (i + 1) * CHUNK)
                cy = min(max(y, j * CHUNK), (j + 1) * CHUNK)
                if np.hypot(cx - x, cy - y) <= radius:
                    out.append((i, j))
        return out

    def near(self, x: float, y: float, radius: float = 90.0, lod_distance: float | None = 40.0
             ) -> tuple[Gaussians, np.ndarray]:
        """Gaussians (local coordinates) of the chunks within `radius` of the global point (x, y), and their
        covariances [N, 6] (computed once per chunk set). Chunks farther than `lod_distance` use their
        level-of-detail version: a quarter of the ground Gaussians at twice the size (the far ground covers few
        pixels, where many small Gaussians each add a little alpha)."""
        ids = tuple(self.chunk_ids(x, y, radius))
        lod = tuple(lod_distance is not None and self._chunk_distance(i, j, x, y) > lod_distance for i, j in ids)
        key = (ids, lod)
        if key not in self._sets:
            gs = [self.chunk_lod(i, j) if far else self.chunk(i, j) for (i, j), far in zip(ids, lod)]
            g = Gaussians.concat([c[0] for c in gs])
            cov = np.concatenate([c[1] for c in gs]) if gs else np.zeros((0, 6), np.float32)
            if len(self._sets) > 8:
                self._sets.pop(next(iter(self._sets)))
            self._sets[key] = (g, cov)
        return self._sets[key]

    @staticmethod
    def _chunk_distance(i, j, x, y) -> float:
        cx = min(max(x, i * CHUNK), (i + 1) * CHUNK)
        cy = min(max(y, j * CHUNK), (j + 1) * CHUNK)
        return float(np.hypot(cx - x, cy - y))

    def chunk(self, i: int, j: int) -> tuple[Gaussians, np.ndarray]:
        key = (i, j)
        if key not in self._chunks:
            g, n_ground = self._generate(i, j)
            self._chunks[key] = (g, covariances(g.quats, g.scales), n_ground)
        return self._chunks[key][:2]

    def chunk_lod(self, i: int, j: int) -> tuple[Gaussians, np.ndarray]:
        key = ("lod", i, j)
        if key not in self._chunks:
            self.chunk(i, j)
            g, _, n_ground = self._chunks[(i, j)]
            m = g.means[:n_ground]
            cell = 2.0 * self.ground_spacing
            keep = ((np.floor(m[:, 0] / self.ground_spacing) % 2 == 0)
                    & (np.floor(m[:, 1] / self.ground_spacing) % 2 == 0))
            idx = np.concatenate([np.nonzero(keep)[0], np.arange(n_ground, len(g))])
            sub = g.subset(idx)
            scales = sub.scales.copy()
            scales[:int(keep.sum()), :2] *= 2.0
            sub = Gaussians(sub.means, sub.quats, scales, sub.opacities, sub.sh)
            self._chunks[key] = (sub, covariances(sub.quats, sub.scales))
            del cell
        return self._chunks[key]

    def _generate(self, i: int, j: int) -> Gaussians:
        rng = np.random.default_rng([self.seed, zlib.crc32(f"{self.map.location}:{i}:{j}".encode())])
        x0, y0 = i * CHUNK, j * CHUNK
        box = shapely.box(x0, y0, x0 + CHUNK, y0 + CHUNK)
        P = _Parts()
        m = self.map
        ox, oy = self.origin
        drv = shapely.intersection(self._drivable, box)
        walk = shapely.difference(shapely.intersection(self._walk, box), drv)
        rest = shapely.difference(shapely.difference(box, drv), walk)
        # ground (first: the level-of-detail version thins these)
        for poly, spacing, col, jit in ((drv, self.ground_spacing, ASPHALT, 0.06),
                                        (walk, self.ground_spacing * 1.2, PAVEMENT, 0.04),
                                        (rest, self.offroad_spacing, GRASS, 0.12)):
            p = _grid_in(poly, spacing, rng)
            if len(p):
                s = spacing * 0.45
                P.add(np.c_[p - (ox, oy), np.zeros(len(p))], (s, s, 0.02), col, 0.995,
                      _z_quats(rng.uniform(0, np.pi, len(p))), rng, jit)
        n_ground = sum(len(a) for a in P.means)
        # lane markings
        for rb in m.roadblocks.values():
            if rb.is_connector or not rb.polygon.intersects(box):
                continue
            lanes = [m.lanes[lid] for lid in rb.lane_ids]
            for k, ln in enumerate(lanes):
                if k == 0:
                    self._marking(P, ln.left_boundary, box, YELLOW, dashed=False, rng=rng)
                if k == len(lanes) - 1:
                    self._marking(P, ln.right_boundary, box, WHITE, dashed=False, rng=rng)
                else:
                    self._marking(P, ln.right_boundary, box, WHITE, dashed=True, rng=rng)
        # stop lines and crosswalks
        for sl in m.stop_lines.values():
            if sl.polygon.intersects(box):
                p = _grid_in(shapely.intersection(sl.polygon, box), 0.2, rng, 0.1)
                P.add(np.c_[p - (ox, oy), np.full(len(p), 0.02)], (0.15, 0.15, 0.01), WHITE, 0.95)
        for cw in m.crosswalks.values():
            if cw.polygon.intersects(box):
                self._crosswalk(P, cw.polygon, box, rng)
        # curbs along the drivable edge
        edge = shapely.intersection(self._drivable.boundary, box)
        for line in getattr(edge, "geoms", [edge]):
            if line.is_empty or line.geom_type not in ("LineString", "LinearRing"):
                continue
            p, ang, _ = _along(np.asarray(line.coords), 0.4)
            P.add(np.c_[p - (ox, oy), np.full(len(p), 0.08)], (0.25, 0.08, 0.08), CURB, 0.95, _z_quats(ang))
        # buildings and trees beyond the road, from the drivable edge
        self._roadside(P, box, rng)
        return P.build(), n_ground

    def _marking(self, P, xy, box, col, dashed, rng):
        line = shapely.intersection(shapely.LineString(xy), box) if len(xy) >= 2 else None
        if line is None or line.is_empty:
            return
        ox, oy = self.origin
        for part in getattr(line, "geoms", [line]):
            if part.geom_type != "LineString":
                continue
            p, ang, s = _along(np.asarray(part.coords), 0.3)
            if dashed:
                # 3 m dashes every 9 m, phased on the global position along the line (continuous across chunks)
                t = p[:, 0] * np.cos(ang) + p[:, 1] * np.sin(ang)
                keep = np.mod(t, 9.0) < 3.0
                p, ang = p[keep], ang[keep]
            P.add(np.c_[p - (ox, oy), np.full(len(p), 0.025)], (0.2, 0.06, 0.01), col, 0.97, _z_quats(ang))

    def _crosswalk(self, P, poly, box, rng):
        ox, oy = self.origin
        rect = poly.minimum_rotated_rectangle
        c = np.asarray(rect.exterior.coords)[:4]
        e1, e2 = c[1] - c[0], c[2] - c[1]
        long_ax = e1 if np.hypot(*e1) >= np.hypot(*e2) else e2
        u = long_ax / max(np.hypot(*long_ax), 1e-9)
        clip = shapely.intersection(poly, box)
        p = _grid_in(clip, 0.18, rng, 0.1)
        if not len(p):
            return
        t = (p - c[0]) @ u
        keep = np.mod(t, 1.0) < 0.5  # 0.5 m stripes every 1 m along the crossing
        p = p[keep]
        P.add(np.c_[p - (ox, oy), np.full(len(p), 0.025)], (0.12, 0.12, 0.01), WHITE, 0.95)

    def _roadside(self, P, box, rng):
        ox, oy = self.origin
        edge = shapely.intersection(self._drivable.boundary, box.buffer(20.0))
        for line in getattr(edge, "geoms", [edge]):
            if line.is_empty or line.geom_type not in ("LineString", "LinearRing"):
                continue
            xy = np.asarray(line.coords)
            p, ang, s = _along(xy, 1.0)
            if not len(p):
                continue
            # outward normal: the side not in the drivable area
            nrm = np.stack([-np.sin(ang), np.cos(ang)], -1)
            probe = p + nrm * 2.0
            out = ~shapely.contains_xy(self._drivable, probe[:, 0], probe[:, 1])
            nrm = np.where(out[:, None], nrm, -nrm)
            # buildings: blocks of 12-30 m keyed by the global arc position, setback 7-14 m
            gid = np.floor((p[:, 0] * 0.7071 + p[:, 1] * 0.7071) / 18.0).astype(np.int64)
            setback = 7.0 + 7.0 * _hash01(gid, 1)
            height = 6.0 + 16.0 * _hash01(gid, 2)
            colour_i = (_hash01(gid, 3) * len(BUILDING_COLOURS)).astype(int) % len(BUILDING_COLOURS)
            base = p + nrm * setback[:, None]
            ok = (~shapely.contains_xy(self._drivable, base[:, 0], base[:, 1])
                  & ~shapely.contains_xy(self._walk, base[:, 0], base[:, 1])
                  & shapely.contains_xy(box, base[:, 0], base[:, 1]))
            for k in np.nonzero(ok)[0]:
                zs = np.arange(0.5, height[k], 1.0)
                col = np.array(BUILDING_COLOURS[colour_i[k]], np.float32)
                cols = np.where((np.mod(zs, 3.0) > 1.2)[:, None] & (np.mod(s[k], 4.0) < 2.2), col * 0.35, col)
                n = len(zs)
                pos = np.c_[np.repeat(base[k:k + 1] - (ox, oy), n, 0), zs]
                # a vertical plate facing the road: thin along the normal
                yaw = np.arctan2(nrm[k, 1], nrm[k, 0])
                P.means.append(pos.astype(np.float32))
                P.scales.append(np.tile(np.array([0.06, 0.5, 0.5], np.float32), (n, 1)))
                P.quats.append(np.tile(_z_quats([yaw])[0], (n, 1)))
                P.opac.append(np.full(n, 0.97, np.float32))
                P.rgb.append(cols.astype(np.float32))
            # trees every ~11 m between road and buildings
            tree = (np.mod(np.floor(s), 11.0) == 0) & (_hash01(gid * 31 + np.floor(s).astype(np.int64), 4) < 0.7)
            tpos = p + nrm * 3.2
            ok_t = tree & ~shapely.contains_xy(self._drivable, tpos[:, 0], tpos[:, 1]) & shapely.contains_xy(
                box, tpos[:, 0], tpos[:, 1])
            for k in np.nonzero(ok_t)[0]:
                c = tpos[k] - (ox, oy)
                P.add(np.array([[c[0], c[1], 0.8], [c[0], c[1], 2.0]]), (0.15, 0.15, 0.7), (0.35, 0.25, 0.15))
                canopy = rng.normal(0, 1, (18, 3)) * np.array([1.0, 1.0, 0.85]) + np.array([c[0], c[1], 4.2])
                P.add(canopy, (0.6, 0.6, 0.55), (0.20, 0.40, 0.17), 0.97, None, rng, 0.15)


def _hash01(k, salt):
    """Deterministic pseudo-random numbers in [0, 1) from integers."""
    h = (np.asarray(k, np.int64) * 2654435761 + salt * 40503) & 0xFFFFFFFF
    h = (h ^ (h >> 15)) * 2246822519 & 0xFFFFFFFF
    h = h ^ (h >> 13)
    return (h & 0xFFFFFF) / float(0x1000000)


# ---------------------------------------------------------------------------------------------- actors
def _box_surface(rng, lo, hi, spacing):
    """Points on the surface of an axis-aligned box (unit template coordinates)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    pts = []
    for ax in range(3):
        for side in (lo[ax], hi[ax]):
            o = [a for a in range(3) if a != ax]
            n0 = max(2, int(np.ceil((hi[o[0]] - lo[o[0]]) / spacing)))
            n1 = max(2, int(np.ceil((hi[o[1]] - lo[o[1]]) / spacing)))
            u, v = np.meshgrid(np.linspace(lo[o[0]], hi[o[0]], n0), np.linspace(lo[o[1]], hi[o[1]], n1))
            p = np.zeros((u.size, 3))
            p[:, ax] = side
            p[:, o[0]] = u.ravel()
            p[:, o[1]] = v.ravel()
            pts.append(p)
    return np.concatenate(pts)


@dataclass(frozen=True, eq=False)
class _Template:
    """Points in box units (x in [-0.5, 0.5] along the length, y across, z in [0, 1] of the height), per-point
    Gaussian scale in box units, and a per-point colour role (0: body colour, 1: dark glass, 2: tyre, 3: fixed)."""

    pts: np.ndarray
    scale: np.ndarray
    role: np.ndarray
    fixed: np.ndarray  # [P, 3] colours for role 3


def _make_templates(seed: int = 0) -> dict[int, _Template]:
    rng = np.random.default_rng(seed)
    t = {}
    body = _box_surface(rng, (-0.5, -0.5, 0.12), (0.5, 0.5, 0.55), 0.12)
    cabin = _box_surface(rng, (-0.32, -0.45, 0.55), (0.22, 0.45, 0.98), 0.12)
    wheels = np.array([[sx, sy, 0.12] for sx in (-0.32, 0.32) for sy in (-0.5, 0.5)])
    pts = np.concatenate([body, cabin, wheels])
    role = np.concatenate([np.zeros(len(body)), np.ones(len(cabin)), np.full(len(wheels), 2)]).astype(int)
    scale = np.concatenate([np.full((len(body), 3), 0.09), np.full((len(cabin), 3), 0.09),
                            np.tile([0.08, 0.05, 0.12], (len(wheels), 1))])
    t[VEHICLE] = _Template(pts, scale, role, np.zeros((len(pts), 3)))
    # pedestrian: legs, torso, head
    legs = np.array([[0, sy, z] for sy in (-0.2, 0.2) for z in np.linspace(0.05, 0.45, 5)])
    torso = np.array([[x, y, z] for x in (-0.15, 0.15) for y in (-0.3, 0, 0.3) for z in np.linspace(0.5, 0.8, 4)])
    head = np.array([[0, 0, 0.9]])
    pts = np.concatenate([legs, torso, head])
    role = np.concatenate([np.full(len(legs), 3), np.zeros(len(torso)), np.full(len(head), 3)]).astype(int)
    fixed = np.concatenate([np.tile([0.2, 0.2, 0.3], (len(legs), 1)), np.zeros((len(torso), 3)),
                            np.tile([0.85, 0.65, 0.5], (len(head), 1))])
    scale = np.concatenate([np.tile([0.25, 0.18, 0.07], (len(legs), 1)), np.tile([0.25, 0.22, 0.07], (len(torso), 1)),
                            np.tile([0.35, 0.35, 0.07], (len(head), 1))])
    t[PEDESTRIAN] = _Template(pts, scale, role, fixed)
    # cyclist: frame + wheels (dark) and rider (colour)
    bike = np.array([[x, 0, z] for x in np.linspace(-0.45, 0.45, 7) for z in (0.15, 0.35)])
    rider = np.array([[x, y, z] for x in (-0.1, 0.1) for y in (-0.2, 0.2) for z in np.linspace(0.5, 0.9, 4)])
    pts = np.concatenate([bike, rider])
    role = np.concatenate([np.full(len(bike), 3), np.zeros(len(rider))]).astype(int)
    fixed = np.concatenate([np.tile([0.1, 0.1, 0.1], (len(bike), 1)), np.zeros((len(rider), 3))])
    scale = np.concatenate([np.tile([0.09, 0.3, 0.08], (len(bike), 1)), np.tile([0.2, 0.25, 0.08], (len(rider), 1))])
    t[BICYCLE] = _Template(pts, scale, role, fixed)
    cone = np.array([[0, 0, z] for z in np.linspace(0.1, 0.9, 6)])
    stripes = np.array([[0.95, 0.45, 0.05] if k % 3 else [0.95, 0.95, 0.95] for k in range(len(cone))])
    t[TRAFFIC_CONE] = _Template(cone, np.tile([0.35, 0.35, 0.1], (len(cone), 1)), np.full(len(cone), 3), stripes)
    bar = _box_surface(rng, (-0.5, -0.5, 0.0), (0.5, 0.5, 1.0), 0.2)
    t[BARRIER] = _Template(bar, np.full((len(bar), 3), 0.15), np.full(len(bar), 3),
                           np.where((np.mod(np.floor((bar[:, 0] + 0.5) * 5), 2) == 0)[:, None], [0.9, 0.2, 0.15],
                                    [0.95, 0.95, 0.95]))
    gen = _box_surface(rng, (-0.5, -0.5, 0.0), (0.5, 0.5, 1.0), 0.2)
    t[GENERIC_OBJECT] = _Template(gen, np.full((len(gen), 3), 0.15), np.zeros(len(gen), int), np.zeros((len(gen), 3)))
    t[CZONE_SIGN] = t[TRAFFIC_CONE]
    return t


_TEMPLATES = _make_templates()
VEHICLE_PALETTE = np.array([(0.85, 0.85, 0.85), (0.10, 0.10, 0.12), (0.60, 0.62, 0.65), (0.70, 0.10, 0.10),
                            (0.10, 0.22, 0.55), (0.90, 0.90, 0.92), (0.25, 0.40, 0.25), (0.80, 0.55, 0.15)], np.float32)
PERSON_PALETTE = np.array([(0.8, 0.2, 0.2), (0.2, 0.4, 0.8), (0.9, 0.8, 0.2), (0.3, 0.6, 0.3), (0.5, 0.3, 0.6),
                           (0.95, 0.95, 0.95), (0.15, 0.15, 0.15)], np.float32)
# the templates as flat tables for `_pose_templates`: category -> first row and point count
_TEMPLATE_IDS = np.array(sorted(_TEMPLATES), np.int64)
_TPL_START = np.zeros(int(_TEMPLATE_IDS.max()) + 1, np.int64)
_TPL_SIZE = np.zeros(int(_TEMPLATE_IDS.max()) + 1, np.int64)
_rows = 0
for _k in _TEMPLATE_IDS:
    _TPL_START[_k], _TPL_SIZE[_k] = _rows, len(_TEMPLATES[int(_k)].pts)
    _rows += _TPL_SIZE[_k]
_tpls = [_TEMPLATES[int(_k)] for _k in _TEMPLATE_IDS]
_TPL_PTS = np.ascontiguousarray(np.concatenate([t.pts for t in _tpls]), np.float64)
_TPL_SCALE = np.ascontiguousarray(np.concatenate([t.scale for t in _tpls]), np.float64)
_TPL_ROLE = np.ascontiguousarray(np.concatenate([t.role for t in _tpls]), np.int64)
_TPL_FIXED = np.ascontiguousarray(np.concatenate([t.fixed for t in _tpls]), np.float64)


@njit(cache=True)
def _pose_templates(keys, offsets, dims, heading, tx, ty, z0, body, tpl_start, pts, scale, role, fixed):
    """Every object's template points posed in its box (see `actor_gaussians`): means, scales, colours [n, 3]
    (float64) and quaternions [n, 4] (float32), object after object."""
    n = offsets[-1]
    means = np.empty((n, 3))
    scales = np.empty((n, 3))
    rgb = np.empty((n, 3))
    quats = np.zeros((n, 4), np.float32)
    for k in range(len(keys)):
        c = np.cos(heading[k])
        s = np.sin(heading[k])
        qw = np.float32(np.cos(heading[k] / 2))
        qz = np.float32(np.sin(heading[k] / 2))
        a = tpl_start[keys[k]]
        for p in range(offsets[k + 1] - offsets[k]):
            j = offsets[k] + p
            t = a + p
            px = pts[t, 0] * dims[k, 0]
            py = pts[t, 1] * dims[k, 1]
            pz = pts[t, 2] * dims[k, 2]
            # R = [[c, -s, 0], [s, c, 0], [0, 0, 1]] applied to the point, then the box centre
            means[j, 0] = px * c + py * -s + pz * 0.0 + tx[k]
            means[j, 1] = px * s + py * c + pz * 0.0 + ty[k]
            means[j, 2] = px * 0.0 + py * 0.0 + pz * 1.0 + z0
            for m in range(3):
                scales[j, m] = max(scale[t, m] * min(max(dims[k, m], 0.3), 20.0) * 0.5, 0.02)
            r = role[t]
            for m in range(3):
                if r == 0:
                    rgb[j, m] = body[k, m]
                elif r == 1:
                    rgb[j, m] = (0.12, 0.15, 0.2)[m]
                elif r == 2:
                    rgb[j, m] = 0.05
                else:
                    rgb[j, m] = fixed[t, m]
            quats[j, 0] = qw
            quats[j, 3] = qz
    return means, scales, rgb, quats


def actor_gaussians(category, x, y, heading, length, width, height, tokens, origin=(0.0, 0.0),
                    z0: float = 0.0) -> Gaussians:
    """Gaussians of the objects (box centres, global) in local coordinates: each category's template scaled to the
    box, coloured per track token; object after object, each in its template's point order (one kernel call)."""
    if len(category) == 0:
        return Gaussians.empty()
    cat = np.asarray(category).astype(np.int64)
    keys = np.where(np.isin(cat, _TEMPLATE_IDS), cat, GENERIC_OBJECT)
    offsets = np.concatenate([[0], np.cumsum(_TPL_SIZE[keys])])
    dims = np.stack([np.asarray(length, np.float64), np.asarray(width, np.float64), np.asarray(height, np.float64)], -1)
    # the body colour per track token (a hash of its text)
    h = np.array([zlib.crc32(str(t).encode()) for t in tokens], np.int64)
    body = np.where(np.isin(cat, (VEHICLE, GENERIC_OBJECT))[:, None], VEHICLE_PALETTE[h % len(VEHICLE_PALETTE)],
                    PERSON_PALETTE[h % len(PERSON_PALETTE)]).astype(np.float64)
    means, scales, rgb, quats = _pose_templates(keys, offsets, dims, np.asarray(heading, np.float64),
                                                np.asarray(x, np.float64) - origin[0],
                                                np.asarray(y, np.float64) - origin[1], float(z0), body, _TPL_START,
                                                _TPL_PTS, _TPL_SCALE, _TPL_ROLE, _TPL_FIXED)
    return Gaussians.create(means, quats, scales, np.full(len(means), 0.97), rgb_to_sh_dc(rgb)[:, None, :])


def sky_background(Ks: np.ndarray, viewmats: np.ndarray, width: int, height: int) -> np.ndarray:
    """[C, H, W, 3] sky colour per pixel: horizon to zenith by the ray's elevation."""
    out = np.empty((len(Ks), height, width, 3), np.float32)
    v = (np.arange(height) + 0.5)
    u = (np.arange(width) + 0.5)
    for c in range(len(Ks)):
        K = Ks[c]
        Rwc = np.linalg.inv(viewmats[c])[:3, :3]  # camera -> world rotation
        dy = (v - K[1, 2]) / K[1, 1]
        dx = (u - K[0, 2]) / K[0, 0]
        d = np.stack(np.broadcast_arrays(dx[None, :], dy[:, None], np.ones((height, 1))), -1)  # camera rays
        dw = d @ Rwc.T
        elev = dw[..., 2] / np.linalg.norm(dw, axis=-1)
        w = np.clip(elev * 3.0, 0.0, 1.0)[..., None]
        sky = SKY_HORIZON * (1 - w) + SKY_TOP * w
        # below the horizon the "background" is the ground's mean colour: gaps between ground Gaussians stay ground
        g = np.clip(-elev * 20.0, 0.0, 1.0)[..., None]
        out[c] = sky * (1 - g) + GROUND_FILL * g
    return out


def quat_compose_yaw(yaw, quats):
    return quat_multiply(np.array([np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)], np.float32), quats)
