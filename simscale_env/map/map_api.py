"""The map API over a nuPlan GeoPackage: lane graph, roadblocks, areas and spatial queries.

Semantics follow nuplan/common/maps/nuplan_map/*.py (v1.2.2):
- ids are `str(fid)`;
- a lane connector leaves its `exit_lane_fid` lane and enters its `entry_lane_fid` lane, so
  `lane.outgoing_edges` = connectors whose exit lane is the lane, `lane.incoming_edges` = connectors whose entry
  lane is the lane, and a connector has incoming = [exit lane], outgoing = [entry lane];
- a roadblock is a lane group (`lane_groups_polygons`), its interior lanes those with `lane_group_fid == id`
  ordered by `lane_index` (0 = leftmost); roadblock connectors are `lane_group_connectors` (outgoing: from == id);
- a connector's stop lines are its `traffic_light_stop_line_fids` polygons that intersect its baseline, or else the
  nearest one; it has a traffic light when that list is non-empty;
- the drivable area is the union of road_segments, intersections, generic_drivable_areas and carpark_areas
  (nuplan_map.py `_initialize_drivable_area`).
"""

from __future__ import annotations

import heapq
import os
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import shapely
from shapely import STRtree

from ..cache import LRUCache
from ..errors import MapError, SchemaError, UnknownMapObjectError
from ..geometry import wrap_angle
from .gpkg import (
    NOT_NULL_COLUMNS,
    OPTIONAL_LAYERS,
    REQUIRED_LAYERS,
    Layer,
    _fid_str,
    check_ids,
    check_not_null,
    empty_layer,
    list_layers,
    projected_crs,
    read_layer,
    resolve_map_file,
)
from .polyline import Polyline, concatenate


class MapLayer:
    """Names of nuPlan's SemanticMapLayer members used by the queries."""

    LANE = "LANE"
    LANE_CONNECTOR = "LANE_CONNECTOR"
    ROADBLOCK = "ROADBLOCK"
    ROADBLOCK_CONNECTOR = "ROADBLOCK_CONNECTOR"
    INTERSECTION = "INTERSECTION"
    STOP_LINE = "STOP_LINE"
    CROSSWALK = "CROSSWALK"
    WALKWAYS = "WALKWAYS"
    CARPARK_AREA = "CARPARK_AREA"
    GENERIC_DRIVABLE_AREA = "DRIVABLE_AREA"
    ROAD_SEGMENT = "ROAD_SEGMENT"


@dataclass(frozen=True, eq=False)
class Lane:
    """A lane or a lane connector (``is_connector``)."""

    id: str
    is_connector: bool
    roadblock_id: str  # lane: lane_group_fid; connector: lane_group_connector_fid (its roadblock connector)
    baseline: Polyline
    polygon: object  # shapely Polygon
    left_boundary: np.ndarray  # [K, 2]
    right_boundary: np.ndarray
    speed_limit_mps: float | None
    incoming_ids: tuple[str, ...]
    outgoing_ids: tuple[str, ...]
    index: int = 0  # lane_index in its lane group (0 = leftmost); 0 for connectors
    intersection_id: str | None = None
    stop_line_ids: tuple[str, ...] = ()
    has_traffic_light: bool = False
    turn_type: int | None = None
    left_neighbor_id: str | None = None
    right_neighbor_id: str | None = None

    @property
    def length(self) -> float:
        return self.baseline.length


@dataclass(frozen=True, eq=False)
class Roadblock:
    id: str
    is_connector: bool
    polygon: object
    lane_ids: tuple[str, ...]  # interior lanes (or connectors), lanes ordered left to right
    incoming_ids: tuple[str, ...]
    outgoing_ids: tuple[str, ...]
    intersection_id: str | None = None


@dataclass(frozen=True, eq=False)
class Area:
    id: str
    layer: str
    polygon: object
    attributes: dict = field(default_factory=dict)


class MapAPI:
    """A loaded nuPlan map. Build with :func:`load_map` (cached per location) or from a GeoPackage path."""

    def __init__(self, gpkg_path: str | Path, location: str | None = None, version: str | None = None):
        self.path = Path(gpkg_path)
        self.location = location or self.path.parent.parent.name
        self.version = version or self.path.parent.name
        self.crs = projected_crs(self.path)
        layers = list_layers(self.path)
        read = {}
        for name, cols in REQUIRED_LAYERS.items():
            read[name] = read_layer(self.path, name, self.crs, required=cols, layers=layers)
        for name in OPTIONAL_LAYERS:
            read[name] = read_layer(self.path, name, self.crs, layers=layers) if name in layers else empty_layer(name)
        for name, layer in read.items():
            check_ids(self.path, layer)
            check_not_null(self.path, layer, NOT_NULL_COLUMNS.get(name, ()))
        self._layers = read
        self._build()
        # route searches and centrelines already computed (the map never changes): a pure function of the route,
        # the starting lane and the search depth, asked again at every step of an episode
        self._route_info = LRUCache(ROUTE_CACHE_SIZE)
        self._route_seqs = LRUCache(ROUTE_CACHE_SIZE)
        self._centerlines = LRUCache(ROUTE_CACHE_SIZE)

    # ------------------------------------------------------------------ construction
    def _build(self) -> None:
        L = self._layers
        path = self.path
        boundaries = {fid: np.asarray(shapely.get_coordinates(g)) for fid, g in zip(L["boundaries"].fids,
                                                                                   L["boundaries"].geoms)}

        def boundary(fid):
            return boundaries.get(_fid_str(fid), np.zeros((0, 2)))

        # baselines by lane / connector id
        bp = L["baseline_paths"]
        lane_bl: dict[str, Polyline] = {}
        conn_bl: dict[str, Polyline] = {}
        for lane_fid, conn_fid, g in zip(bp.id_column("lane_fid"), bp.id_column("lane_connector_fid"), bp.geoms):
            xy = shapely.get_coordinates(g)
            if len(xy) < 2:
                continue
            pl = Polyline.from_xy(xy)
            if lane_fid is not None and lane_fid != "0":
                lane_bl[lane_fid] = pl
            elif conn_fid is not None and conn_fid != "0":
                conn_bl[conn_fid] = pl

        lc = L["lane_connectors"]
        exit_ids = lc.id_column("exit_lane_fid")
        entry_ids = lc.id_column("entry_lane_fid")
        lgc_ids = lc.id_column("lane_group_connector_fid")
        inter_ids = lc.id_column("intersection_fid") if "intersection_fid" in lc.fields else [None] * len(lc)
        turn = lc.fields.get("turn_type_fid", [None] * len(lc))
        stop_fids = [("" if v is None else str(v)) for v in lc.fields["traffic_light_stop_line_fids"]]
        lc_speed = lc.fields["speed_limit_mps"]

        outgoing: dict[str, list[str]] = {}
        incoming: dict[str, list[str]] = {}
        for cid, ex, en in zip(lc.fids, exit_ids, entry_ids):
            outgoing.setdefault(ex, []).append(cid)
            incoming.setdefault(en, []).append(cid)

        stop = L["stop_polygons"]
        self.stop_lines = {fid: Area(fid, MapLayer.STOP_LINE, g, {"type": None if _fid_str(t) is None else int(t)})
                           for fid, g, t in zip(stop.fids, stop.geoms, stop.fields["stop_polygon_type_fid"])}

        # connector polygons
        gp = L["gen_lane_connectors_scaled_width_polygons"]
        conn_poly = {}
        for cid, g, lb, rb in zip(gp.id_column("lane_connector_fid"), gp.geoms, gp.fields["left_boundary_fid"],
                                  gp.fields["right_boundary_fid"]):
            conn_poly[cid] = (g, boundary(lb), boundary(rb))

        # lanes
        lp = L["lanes_polygons"]
        lanes: dict[str, Lane] = {}
        group_members: dict[str, list[tuple[int, str]]] = {}
        for fid, g, lg, idx, lb, rb, sp in zip(lp.fids, lp.geoms, lp.id_column("lane_group_fid"),
                                               lp.fields["lane_index"], lp.fields["left_boundary_fid"],
                                               lp.fields["right_boundary_fid"], lp.fields["speed_limit_mps"]):
            if fid not in lane_bl:
                raise SchemaError(path, f"lane {fid} has no baseline in layer 'baseline_paths'")
            group_members.setdefault(lg, []).append((int(idx), fid))
            lanes[fid] = Lane(
                id=fid, is_connector=False, roadblock_id=lg, baseline=lane_bl[fid], polygon=g,
                left_boundary=boundary(lb), right_boundary=boundary(rb), speed_limit_mps=_speed(sp),
                incoming_ids=tuple(incoming.get(fid, ())), outgoing_ids=tuple(outgoing.get(fid, ())),
                index=int(idx))
        # neighbours within a lane group (lane_index increases left -> right)
        for lg, members in group_members.items():
            members.sort()
            for k, (_, fid) in enumerate(members):
                left = members[k - 1][1] if k > 0 else None
                right = members[k + 1][1] if k + 1 < len(members) else None
                object.__setattr__(lanes[fid], "left_neighbor_id", left)
                object.__setattr__(lanes[fid], "right_neighbor_id", right)

        for k, cid in enumerate(lc.fids):
            if cid not in conn_bl:
                # fall back to the connector's own linestring (the devkit reads baseline_paths)
                xy = shapely.get_coordinates(lc.geoms[k])
                if len(xy) < 2:
                    raise SchemaError(path, f"lane connector {cid} has no baseline")
                conn_bl[cid] = Polyline.from_xy(xy)
            poly, lb, rb = conn_poly.get(cid, (None, np.zeros((0, 2)), np.zeros((0, 2))))
            if poly is None:
                poly = shapely.buffer(shapely.LineString(conn_bl[cid].xy), 1.75, cap_style="flat")
            stops = tuple(s for s in stop_fids[k].replace(" ", "").split(",") if s)
            stops_present = tuple(s for s in stops if s in self.stop_lines)
            bl_line = shapely.LineString(conn_bl[cid].xy)
            hit = tuple(s for s in stops_present if shapely.intersects(self.stop_lines[s].polygon, bl_line))
            if not hit and stops_present:
                d = [shapely.distance(self.stop_lines[s].polygon, bl_line) for s in stops_present]
                hit = (stops_present[int(np.argmin(d))],)
            lanes[cid] = Lane(
                id=cid, is_connector=True, roadblock_id=lgc_ids[k], baseline=conn_bl[cid], polygon=poly,
                left_boundary=lb, right_boundary=rb, speed_limit_mps=_speed(lc_speed[k]),
                incoming_ids=(exit_ids[k],) if exit_ids[k] else (), outgoing_ids=(entry_ids[k],) if entry_ids[k] else (),
                intersection_id=inter_ids[k], stop_line_ids=hit, has_traffic_light=len(stops) > 0,
                turn_type=None if turn[k] is None or (isinstance(turn[k], float) and np.isnan(turn[k])) else int(turn[k]))
        self.lanes = lanes

        # roadblocks and roadblock connectors
        lg_layer = L["lane_groups_polygons"]
        lgc = L["lane_group_connectors"]
        rb_out: dict[str, list[str]] = {}
        rb_in: dict[str, list[str]] = {}
        for fid, fr, to in zip(lgc.fids, lgc.id_column("from_lane_group_fid"), lgc.id_column("to_lane_group_fid")):
            rb_out.setdefault(fr, []).append(fid)
            rb_in.setdefault(to, []).append(fid)
        roadblocks: dict[str, Roadblock] = {}
        for fid, g in zip(lg_layer.fids, lg_layer.geoms):
            members = [m for _, m in sorted(group_members.get(fid, []))]
            roadblocks[fid] = Roadblock(fid, False, g, tuple(members), tuple(rb_in.get(fid, ())),
                                        tuple(rb_out.get(fid, ())))
        conn_members: dict[str, list[str]] = {}
        for cid in lc.fids:
            conn_members.setdefault(lanes[cid].roadblock_id, []).append(cid)
        for fid, g, fr, to, it in zip(lgc.fids, lgc.geoms, lgc.id_column("from_lane_group_fid"),
                                      lgc.id_column("to_lane_group_fid"), lgc.id_column("intersection_fid")):
            roadblocks[fid] = Roadblock(fid, True, g, tuple(conn_members.get(fid, ())), (fr,) if fr else (),
                                        (to,) if to else (), intersection_id=it)
        self.roadblocks = roadblocks

        def areas(layer_name, kind, attrs=()):
            lay: Layer = L[layer_name]
            out = {}
            for k, (fid, g) in enumerate(zip(lay.fids, lay.geoms)):
                out[fid] = Area(fid, kind, g, {a: lay.fields[a][k] for a in attrs if a in lay.fields})
            return out

        self.intersections = areas("intersections", MapLayer.INTERSECTION, ("intersection_type_fid", "is_mini"))
        self.crosswalks = areas("crosswalks", MapLayer.CROSSWALK)
        self.walkways = areas("walkways", MapLayer.WALKWAYS)
        self.carpark_areas = areas("carpark_areas", MapLayer.CARPARK_AREA, ("heading",))
        self.generic_drivable_areas = areas("generic_drivable_areas", MapLayer.GENERIC_DRIVABLE_AREA)
        self.road_segments = areas("road_segments", MapLayer.ROAD_SEGMENT, ("lane_group_fids",))

        # spatial index over lanes + connectors
        self._lane_ids = np.array(list(lanes), dtype=object)
        self._lane_polys = np.array([lanes[i].polygon for i in self._lane_ids], dtype=object)
        self._lane_tree = STRtree(self._lane_polys)
        self._baseline_geoms = np.array([shapely.LineString(lanes[i].baseline.xy) for i in self._lane_ids],
                                        dtype=object)
        self._baseline_tree = STRtree(self._baseline_geoms)

    # ------------------------------------------------------------------ objects
    def lane(self, lane_id: str) -> Lane:
        """A lane or lane connector by id."""
        try:
            return self.lanes[str(lane_id)]
        except KeyError:
            raise UnknownMapObjectError(self.path, f"no lane or lane connector with id '{lane_id}'") from None

    def roadblock(self, roadblock_id: str) -> Roadblock:
        try:
            return self.roadblocks[str(roadblock_id)]
        except KeyError:
            raise UnknownMapObjectError(self.path, f"no roadblock or roadblock connector with id '{roadblock_id}'") from None

    def outgoing_edges(self, lane_id: str) -> list[Lane]:
        return [self.lanes[i] for i in self.lane(lane_id).outgoing_ids if i in self.lanes]

    def incoming_edges(self, lane_id: str) -> list[Lane]:
        return [self.lanes[i] for i in self.lane(lane_id).incoming_ids if i in self.lanes]

    def speed_limit(self, lane_id: str) -> float | None:
        return self.lane(lane_id).speed_limit_mps

    @cached_property
    def drivable_area(self):
        """Union of road_segments, intersections, generic_drivable_areas and carpark_areas (prepared)."""
        polys = [a.polygon for d in (self.road_segments, self.intersections, self.generic_drivable_areas,
                                     self.carpark_areas) for a in d.values()]
        if not self.road_segments:
            # maps without road segments: lanes, connectors and roadblocks stand in
            polys += list(self._lane_polys) + [r.polygon for r in self.roadblocks.values()]
        u = shapely.union_all(np.array(polys, dtype=object)) if polys else shapely.Polygon()
        shapely.prepare(u)
        return u

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return tuple(shapely.total_bounds(self._lane_polys))

    # ------------------------------------------------------------------ point queries
    def lanes_at(self, x: float, y: float, include_connectors: bool = True) -> list[str]:
        """Ids of lanes (and connectors) whose polygon contains (x, y)."""
        idx = self._lane_tree.query(shapely.Point(x, y), predicate="within")
        ids = [self._lane_ids[i] for i in sorted(idx)]
        return [i for i in ids if include_connectors or not self.lanes[i].is_connector]

    def lanes_at_points(self, points) -> tuple[np.ndarray, np.ndarray]:
        """Vectorized :meth:`lanes_at`: pairs (point index, lane id) for every containing lane polygon."""
        pts = shapely.points(np.asarray(points, dtype=np.float64).reshape(-1, 2))
        pi, li = self._lane_tree.query(pts, predicate="within")
        return pi, self._lane_ids[li]

    def is_in_drivable_area(self, points) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return shapely.contains_xy(self.drivable_area, p[:, 0], p[:, 1])

    def is_in_layer(self, x: float, y: float, layer: str) -> bool:
        return len(self.objects_at(x, y, layer)) > 0

    def _layer_dict(self, layer: str) -> dict:
        return {
            MapLayer.INTERSECTION: self.intersections, MapLayer.CROSSWALK: self.crosswalks,
            MapLayer.WALKWAYS: self.walkways, MapLayer.CARPARK_AREA: self.carpark_areas,
            MapLayer.GENERIC_DRIVABLE_AREA: self.generic_drivable_areas, MapLayer.STOP_LINE: self.stop_lines,
            MapLayer.ROAD_SEGMENT: self.road_segments,
        }[layer]

    def objects_at(self, x: float, y: float, layer: str) -> list[str]:
        """Ids of the objects of `layer` containing (x, y) (the devkit's `get_all_map_objects`)."""
        p = shapely.Point(x, y)
        if layer == MapLayer.LANE:
            return self.lanes_at(x, y, include_connectors=False)
        if layer == MapLayer.LANE_CONNECTOR:
            return [i for i in self.lanes_at(x, y) if self.lanes[i].is_connector]
        if layer in (MapLayer.ROADBLOCK, MapLayer.ROADBLOCK_CONNECTOR):
            want = layer == MapLayer.ROADBLOCK_CONNECTOR
            return [r.id for r in self.roadblocks.values() if r.is_connector == want and r.polygon.contains(p)]
        return [a.id for a in self._layer_dict(layer).values() if a.polygon.contains(p)]

    def proximal_lanes(self, x: float, y: float, radius: float) -> list[str]:
        """Lanes and connectors whose polygon lies within `radius` of (x, y)."""
        idx = self._lane_tree.query(shapely.Point(x, y), predicate="dwithin", distance=radius)
        return [self._lane_ids[i] for i in sorted(idx)]

    def nearest_baseline(self, x: float, y: float, heading: float | None = None, *,
                         max_distance: float = np.inf, lane_ids=None) -> tuple[str, float, float, float]:
        """The lane/connector whose baseline is nearest to (x, y); with `heading`, among the baselines within
        `max_distance` the one whose heading at the projection is closest.

        Returns (lane_id, s along its baseline, signed lateral offset (left +), heading error).
        """
        cands = list(lane_ids) if lane_ids is not None else None
        if cands is None:
            if np.isfinite(max_distance):
                idx = self._baseline_tree.query(shapely.Point(x, y), predicate="dwithin", distance=max_distance)
                cands = [self._lane_ids[i] for i in sorted(idx)]
            else:
                i = self._baseline_tree.nearest(shapely.Point(x, y))
                cands = [self._lane_ids[i]]
        if not cands:
            raise MapError(self.path, f"no lane baseline within {max_distance} m of ({x:.2f}, {y:.2f})")
        best = None
        for lid in cands:
            bl = self.lanes[lid].baseline
            s, lat, dist = bl.project([[x, y]])
            herr = 0.0 if heading is None else float(wrap_angle(heading - bl.interpolate(s[0])[2]))
            key = (abs(herr), float(dist[0])) if heading is not None else (float(dist[0]), 0.0)
            if best is None or key < best[0]:
                best = (key, lid, float(s[0]), float(lat[0]), herr)
        return best[1], best[2], best[3], best[4]

    def project_to_baseline(self, lane_id: str, points) -> tuple[np.ndarray, np.ndarray]:
        """Arc length and signed lateral offset of `points` [P, 2] on a lane's baseline."""
        s, lat, _ = self.lane(lane_id).baseline.project(points)
        return s, lat

    # ------------------------------------------------------------------ routes
    def route_lane_ids(self, roadblock_ids) -> list[str]:
        """Every lane and connector of the route's roadblocks and roadblock connectors."""
        out = []
        for rb in roadblock_ids:
            if rb in self.roadblocks:
                out.extend(self.roadblocks[rb].lane_ids)
        return out

    def route_lanes(self, roadblock_ids, start: tuple[float, float, float] | None = None, *,
                    start_lane: str | None = None, search_depth: int | None = None) -> list[str]:
        """The lane sequence along a route, from a start pose (x, y, heading) or from the first roadblock.

        Starting lane: the on-route lane containing the start point with the closest heading (else the nearest
        on-route baseline). Then a Dijkstra over on-route lanes and connectors (edge cost = baseline length) to the
        furthest reachable roadblock of the route, as PDM-Closed does. `start_lane` overrides the starting lane;
        `search_depth` limits the search to that many roadblocks from the starting lane's (PDM-Closed: 30).
        """
        route = tuple(str(r) for r in roadblock_ids)
        info = self._route_info.get(route)
        if info is None:
            unknown = [r for r in route if r not in self.roadblocks]
            if unknown:
                raise UnknownMapObjectError(self.path, f"route roadblock ids not in the map: {', '.join(unknown)}")
            on_route = [lid for lid in self.route_lane_ids(route)]
            if not on_route:
                raise MapError(self.path, "route has no lanes")
            info = ({rb: k for k, rb in enumerate(route)}, tuple(on_route), frozenset(on_route))
            self._route_info[route] = info
        order, on_route, on_route_set = info
        if start_lane is not None:
            if start_lane not in on_route_set:
                raise MapError(self.path, f"start lane {start_lane} is not on the route")
            lane0 = start_lane
        elif start is not None:
            inside = [lid for lid in self.lanes_at(start[0], start[1]) if lid in on_route_set]
            lane0 = self.nearest_baseline(start[0], start[1], start[2], lane_ids=inside or on_route)[0] if (
                inside) else self.nearest_baseline(start[0], start[1], lane_ids=on_route)[0]
        else:
            lane0 = self.roadblocks[route[0]].lane_ids[0]
        key = (route, lane0, search_depth)
        seq = self._route_seqs.get(key)
        if seq is None:
            seq = tuple(self._route_search(order, on_route, lane0, search_depth))
            self._route_seqs[key] = seq
        return list(seq)

    def _route_search(self, order: dict, on_route, lane0: str, search_depth: int | None) -> list[str]:
        """`route_lanes`' Dijkstra from `lane0` over the on-route lanes (roadblock order `order`)."""
        on_set = set(on_route)
        if search_depth is not None:
            k0 = order[self.lanes[lane0].roadblock_id]
            on_set = {lid for lid in on_set if order[self.lanes[lid].roadblock_id] < k0 + search_depth}
        # Dijkstra: maximise route depth, then minimise length
        dist = {lane0: 0.0}
        prev: dict[str, str | None] = {lane0: None}
        heap = [(0.0, lane0)]
        best = lane0
        while heap:
            d, lid = heapq.heappop(heap)
            if d > dist.get(lid, np.inf):
                continue
            if order[self.lanes[lid].roadblock_id] > order[self.lanes[best].roadblock_id]:
                best = lid
            for nxt in self.lanes[lid].outgoing_ids:
                if nxt not in on_set:
                    continue
                if order[self.lanes[nxt].roadblock_id] < order[self.lanes[lid].roadblock_id]:
                    continue
                nd = d + self.lanes[lid].length
                if nd < dist.get(nxt, np.inf):
                    dist[nxt] = nd
                    prev[nxt] = lid
                    heapq.heappush(heap, (nd, nxt))
        seq = [best]
        while prev[seq[-1]] is not None:
            seq.append(prev[seq[-1]])
        return seq[::-1]

    def route_centerline(self, roadblock_ids, start: tuple[float, float, float] | None = None) -> Polyline:
        """The route centreline: the baselines of :meth:`route_lanes` joined into one polyline (one polyline per
        lane sequence, computed once; its arrays are read-only)."""
        lanes = tuple(self.route_lanes(roadblock_ids, start))
        line = self._centerlines.get(lanes)
        if line is None:
            line = concatenate([self.lanes[lid].baseline for lid in lanes])
            for a in (line.xy, line.heading, line.s, line.heading_unwrapped):
                a.flags.writeable = False
            self._centerlines[lanes] = line
        return line




def _speed(v) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(f) or f <= 0 else f


# loaded maps, per process, least recently used dropped first (a real nuPlan city is tens of MB in memory):
# `set_map_cache_size` changes the bound
ROUTE_CACHE_SIZE = 512  # route searches / centrelines kept per map (LRU; a few kB each)
MAP_CACHE_SIZE = 8
_CACHE: LRUCache = LRUCache(MAP_CACHE_SIZE)
_LOCK = threading.Lock()


def default_maps_root() -> Path | None:
    env = os.environ.get("NUPLAN_MAPS_ROOT")
    return Path(env) if env else None


def load_map(location: str, maps_root: str | Path | None = None, version: str | None = None) -> MapAPI:
    """The map of `location` (a key of nuplan-maps-v1.0.json), loaded once per process and cached."""
    root = Path(maps_root) if maps_root is not None else default_maps_root()
    if root is None:
        raise MapError(None, "no maps root: pass maps_root or set NUPLAN_MAPS_ROOT")
    path = resolve_map_file(root, location, version)
    key = (str(path.resolve()), path.stat().st_mtime_ns)
    with _LOCK:
        return _CACHE.get_or_create(key, lambda: MapAPI(path, location, path.parent.name))


def clear_map_cache() -> None:
    with _LOCK:
        _CACHE.clear()


def set_map_cache_size(maxsize: int | None) -> None:
    """Keep at most `maxsize` loaded maps per process (None: unbounded; default MAP_CACHE_SIZE)."""
    with _LOCK:
        _CACHE.resize(maxsize)
