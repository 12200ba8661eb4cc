"""Bird's-eye views centred on the ego (heading up): a multi-channel raster for policies and an RGB picture.

Channels of `bev_raster` (uint8 0/255, [H, W, 5]): drivable area, lane boundaries, route lanes, agents (vehicles,
pedestrians, cyclists), static objects; the ego is at the centre, 1/4 of the height below the middle so more of
the road ahead is seen. Default: 64 m x 64 m at 0.25 m per pixel.
"""

from __future__ import annotations

import numpy as np
import shapely
from PIL import Image, ImageDraw

from ..data.schema import AGENT_CATEGORIES, BICYCLE, PEDESTRIAN, VEHICLE

BEV_CHANNELS = ("drivable", "lane_boundaries", "route", "agents", "static_objects")


class BEVRenderer:
    def __init__(self, map_api, route_lane_ids=(), *, size: int = 256, meters: float = 64.0):
        self.map = map_api
        self.size = int(size)
        self.res = meters / self.size
        self.route = set(str(x) for x in route_lane_ids)
        m = map_api
        polys, kinds = [], []
        for rb in m.roadblocks.values():
            polys.append(rb.polygon)
            kinds.append("road")
        for a in list(m.intersections.values()) + list(m.carpark_areas.values()):
            polys.append(a.polygon)
            kinds.append("road")
        for a in m.walkways.values():
            polys.append(a.polygon)
            kinds.append("walk")
        for a in m.crosswalks.values():
            polys.append(a.polygon)
            kinds.append("cross")
        self._polys = np.array(polys, dtype=object)
        self._kinds = np.array(kinds, dtype=object)
        self._tree = shapely.STRtree(self._polys)
        self._lane_ids = list(m.lanes)

    # ------------------------------------------------------------------ frames
    def _to_px(self, xy, ego):
        """Global points [.., 2] -> pixel coordinates (ego heading up)."""
        x, y, h = ego[0], ego[1], ego[2]
        d = np.asarray(xy, np.float64) - (x, y)
        c, s = np.cos(h), np.sin(h)
        fwd = c * d[..., 0] + s * d[..., 1]
        left = -s * d[..., 0] + c * d[..., 1]
        u = self.size / 2 - left / self.res
        v = self.size * 0.75 - fwd / self.res
        return np.stack([u, v], -1)

    def _near(self, ego):
        r = self.size * self.res
        return self._tree.query(shapely.Point(ego[0], ego[1]).buffer(r))

    def raster(self, ego, objects=None) -> np.ndarray:
        """[H, W, 5] uint8 (see BEV_CHANNELS)."""
        ego = np.asarray(ego, np.float64)
        layers = [Image.new("L", (self.size, self.size), 0) for _ in BEV_CHANNELS]
        draws = [ImageDraw.Draw(im) for im in layers]
        for k in self._near(ego):
            if self._kinds[k] == "road":
                self._poly(draws[0], self._polys[k], ego, 255)
        r = self.size * self.res
        for lid in self.map.proximal_lanes(ego[0], ego[1], r):
            ln = self.map.lanes[lid]
            for b in (ln.left_boundary, ln.right_boundary):
                if len(b) >= 2 and not ln.is_connector:
                    draws[1].line([tuple(p) for p in self._to_px(b, ego)], fill=255, width=1)
            if lid in self.route:
                self._poly(draws[2], ln.polygon, ego, 255)
        if objects is not None and len(objects):
            corners = objects.corners()
            for k in range(len(objects)):
                ch = 3 if int(objects.category[k]) in AGENT_CATEGORIES else 4
                draws[ch].polygon([tuple(p) for p in self._to_px(corners[k], ego)], fill=255)
        return np.stack([np.asarray(im) for im in layers], -1)

    def _poly(self, draw, poly, ego, fill):
        for p in getattr(poly, "geoms", [poly]):
            if p.is_empty:
                continue
            draw.polygon([tuple(q) for q in self._to_px(np.asarray(p.exterior.coords), ego)], fill=fill)

    def rgb(self, ego, objects=None, *, ego_box=None, plans: dict | None = None) -> np.ndarray:
        """[H, W, 3] uint8 picture: road, walkways, crosswalks, route, lane lines, objects, the ego and plans
        ({name: global poses [K, 3]})."""
        ego = np.asarray(ego, np.float64)
        im = Image.new("RGB", (self.size, self.size), (30, 60, 30))
        d = ImageDraw.Draw(im)
        colours = {"road": (70, 70, 75), "walk": (120, 118, 110), "cross": (200, 200, 200)}
        near = self._near(ego)
        for kind in ("road", "walk", "cross"):
            for k in near:
                if self._kinds[k] == kind:
                    self._poly(d, self._polys[k], ego, colours[kind])
        r = self.size * self.res
        for lid in self.map.proximal_lanes(ego[0], ego[1], r):
            ln = self.map.lanes[lid]
            if lid in self.route:
                d.line([tuple(p) for p in self._to_px(ln.baseline.xy, ego)], fill=(60, 120, 200), width=3)
            if not ln.is_connector:
                for b in (ln.left_boundary, ln.right_boundary):
                    if len(b) >= 2:
                        d.line([tuple(p) for p in self._to_px(b, ego)], fill=(220, 220, 220), width=1)
        if objects is not None and len(objects):
            corners = objects.corners()
            for k in range(len(objects)):
                cat = int(objects.category[k])
                col = {VEHICLE: (240, 180, 40), PEDESTRIAN: (80, 220, 240), BICYCLE: (220, 80, 220)}.get(
                    cat, (160, 160, 160))
                d.polygon([tuple(p) for p in self._to_px(corners[k], ego)], fill=col, outline=(0, 0, 0))
        for name, poses in (plans or {}).items():
            col = {"pdm_closed": (80, 240, 80), "recovery": (240, 80, 240), "policy": (255, 255, 255)}.get(
                name, (255, 255, 0))
            pts = self._to_px(np.asarray(poses)[:, :2], ego)
            d.line([tuple(p) for p in pts], fill=col, width=2)
        if ego_box is not None:
            d.polygon([tuple(p) for p in self._to_px(ego_box, ego)], fill=(230, 40, 40), outline=(255, 255, 255))
        return np.asarray(im)


def mosaic(images: np.ndarray, bev: np.ndarray | None = None, *, columns: int | None = None) -> np.ndarray:
    """Camera images [C, H, W, 3] in a grid (3 per row by default), with the BEV (scaled to the grid's height) on
    the right."""
    C, H, W, _ = images.shape
    cols = columns or min(3, C)
    rows = int(np.ceil(C / cols))
    grid = np.zeros((rows * H, cols * W, 3), np.uint8)
    for k in range(C):
        r, c = divmod(k, cols)
        grid[r * H:(r + 1) * H, c * W:(c + 1) * W] = images[k]
    if bev is None:
        return grid
    side = grid.shape[0]
    b = np.asarray(Image.fromarray(bev).resize((side, side), Image.NEAREST))
    return np.concatenate([grid, b], axis=1)
