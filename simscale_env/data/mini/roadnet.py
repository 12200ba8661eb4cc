"""Procedural road networks in nuPlan's map model, for the embedded mini dataset.

A network is described by junction nodes and roads between them (a reference polyline, lanes per direction, a
speed limit). :func:`build_network` turns it into every object nuPlan's GeoPackage holds: lanes with left/right
boundaries and baselines, lane groups (roadblocks), lane connectors with their polygons and boundaries, lane group
connectors (roadblock connectors), intersections, stop polygons, crosswalks, walkways, road segments, carpark and
generic drivable areas. Coordinates are projected (UTM) metres; the writer stores them in WGS84.

Conventions (nuPlan): right-hand traffic; `lane_index` 0 is the leftmost lane of a group; a connector leaves its
exit lane and enters its entry lane; ids are unique across all layers so that route roadblock ids and lane ids are
never ambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely

from ...geometry import wrap_angle
from ...map.polyline import Polyline

LANE_WIDTH = 3.5

# boundary_type_fid: 0 dashed white, 2 solid white, 3 unknown (virtual, inside intersections) [reference §2]
BOUNDARY_DASHED, BOUNDARY_SOLID, BOUNDARY_VIRTUAL = 0, 2, 3
# intersection_type_fid: 0 default, 1 traffic light, 2 stop sign, 3 branch, 4 merge, 5 pass-through
INTERSECTION_TYPE = {"signal": 1, "stop": 2, "branch": 3, "merge": 4, "pass": 5, "uncontrolled": 0}
# stop_polygon_type_fid: 0 ped crossing, 1 stop sign, 2 traffic light, 3 turn stop, 4 yield, 5 unknown
STOP_SIGN, STOP_TRAFFIC_LIGHT = 1, 2
# turn_type_fid as in the devkit-checked tiny map: 0 straight, 2 right; 1 left
TURN_STRAIGHT, TURN_LEFT, TURN_RIGHT = 0, 1, 2


@dataclass
class NodeSpec:
    name: str
    xy: tuple[float, float]
    kind: str = "signal"  # signal | stop | merge | branch | pass | uncontrolled | end
    setback: float | None = None  # distance from the node centre where lanes end (None: from road widths)
    crosswalks: bool = True
    # explicit lane mappings (in_road, in_lane_index, out_road, out_lane_index) for merge/branch nodes
    mappings: list = field(default_factory=list)
    # which attached roads are the major road (stop-controlled approaches are the others)
    major_roads: tuple[str, ...] = ()


@dataclass
class RoadSpec:
    name: str
    a: str
    b: str
    ref: np.ndarray  # [N, 2] reference line from node a to node b (untrimmed)
    n_fwd: int  # lanes a -> b (right of the reference)
    n_bwd: int  # lanes b -> a
    speed: float  # m/s
    walkways: bool = True
    lateral_shift: float = 0.0  # moves the lanes left (+) of the reference


@dataclass
class Feature:
    fid: int
    geom: object
    attrs: dict


@dataclass
class LaneInfo:
    fid: int
    group: int
    index: int
    road: str
    direction: str  # "fwd" | "bwd"
    baseline: np.ndarray
    speed: float


@dataclass
class ConnectorInfo:
    fid: int
    exit_lane: int
    entry_lane: int
    group_connector: int
    node: str
    turn: int
    baseline: np.ndarray
    in_heading: float  # heading at the exit lane's end
    approach: str  # road the connector comes from
    has_light: bool
    stop_polygon: int | None


@dataclass
class Network:
    """Everything the GeoPackage holds, plus metadata the log generator uses (signal groups, ped paths)."""

    layers: dict[str, list[Feature]]
    lanes: dict[int, LaneInfo]
    connectors: dict[int, ConnectorInfo]
    group_lanes: dict[int, list[int]]  # lane group -> lanes left to right
    nodes: dict[str, NodeSpec]
    node_intersection: dict[str, int]
    crosswalks: list[dict]  # {fid, polygon, a, b (walk endpoints), node, road}
    walkway_polys: list
    entry_groups: list[int]  # lane groups with no incoming connectors (traffic enters the map here)
    signal_nodes: list[str]
    stop_node_approaches: dict[str, set]  # node -> roads that must stop (stop-controlled approaches)


class _Ids:
    def __init__(self, start: int = 1000):
        self.n = start

    def __call__(self) -> int:
        self.n += 1
        return self.n


def _offset(pl: Polyline, d: float) -> np.ndarray:
    n = np.stack([-np.sin(pl.heading), np.cos(pl.heading)], axis=-1)
    return pl.xy + d * n


def _bezier(p0, h0, p1, h1, n=None) -> np.ndarray:
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    dist = float(np.hypot(*(p1 - p0)))
    k = 0.42 * dist
    c0 = p0 + k * np.array([np.cos(h0), np.sin(h0)])
    c1 = p1 - k * np.array([np.cos(h1), np.sin(h1)])
    n = n or max(8, int(dist / 0.5) + 1)
    t = np.linspace(0, 1, n)[:, None]
    return ((1 - t) ** 3) * p0 + 3 * ((1 - t) ** 2) * t * c0 + 3 * (1 - t) * t * t * c1 + (t ** 3) * p1


def _poly(left: np.ndarray, right: np.ndarray):
    ring = np.concatenate([left, right[::-1], left[:1]])
    p = shapely.Polygon(ring)
    if not p.is_valid:
        p = shapely.make_valid(p)
        if p.geom_type != "Polygon":
            p = max(shapely.get_parts(p), key=lambda g: g.area if g.geom_type == "Polygon" else 0)
    return p


def _as_polygon(g):
    g = shapely.make_valid(g)
    if g.geom_type == "Polygon":
        return g
    g2 = shapely.buffer(shapely.buffer(g, 0.05), -0.05)
    if g2.geom_type == "Polygon":
        return g2
    return shapely.convex_hull(g)


def build_network(nodes: list[NodeSpec], roads: list[RoadSpec], *, extra_areas: dict | None = None,
                  id_start: int = 1000) -> Network:
    ids = _Ids(id_start)
    node_by = {n.name: n for n in nodes}
    attached: dict[str, list[RoadSpec]] = {n.name: [] for n in nodes}
    for r in roads:
        attached[r.a].append(r)
        attached[r.b].append(r)

    def half_width(r: RoadSpec) -> float:
        return (r.n_fwd + r.n_bwd) * LANE_WIDTH / 2 + abs(r.lateral_shift)

    setback = {}
    for n in nodes:
        if n.setback is not None:
            setback[n.name] = n.setback
        elif n.kind == "end":
            setback[n.name] = 0.0
        else:
            hw = max(half_width(r) for r in attached[n.name])
            setback[n.name] = hw + 2.0 + (5.0 if n.crosswalks else 1.0)

    layers: dict[str, list[Feature]] = {k: [] for k in (
        "baseline_paths", "boundaries", "lanes_polygons", "lane_groups_polygons", "lane_connectors",
        "gen_lane_connectors_scaled_width_polygons", "lane_group_connectors", "intersections", "stop_polygons",
        "crosswalks", "walkways", "road_segments", "generic_drivable_areas", "carpark_areas")}
    lanes: dict[int, LaneInfo] = {}
    group_lanes: dict[int, list[int]] = {}
    group_info: dict[int, dict] = {}
    road_groups: dict[str, dict] = {}
    walkway_polys = []

    def add_boundary(xy, btype) -> int:
        fid = ids()
        layers["boundaries"].append(Feature(fid, shapely.LineString(xy), {
            "boundary_type_fid": btype, "boundary_segment_fids": "", "creator_id": 0}))
        return fid

    for r in roads:
        full = Polyline.from_xy(r.ref)
        s0, s1 = setback[r.a], full.length - setback[r.b]
        if s1 - s0 < 5.0:
            raise ValueError(f"road {r.name} is too short for its junction setbacks")
        n = max(2, int(np.ceil((s1 - s0) / 1.0)) + 1)
        poses = full.interpolate(np.linspace(s0, s1, n))
        ref = Polyline.from_xy(poses[:, :2], poses[:, 2])
        w = LANE_WIDTH
        one_way = r.n_bwd == 0 or r.n_fwd == 0
        groups = {}
        for direction, count in (("fwd", r.n_fwd), ("bwd", r.n_bwd)):
            if count == 0:
                continue
            # lateral centre offsets of the lanes, leftmost first, in the a->b frame of the reference
            if one_way:
                offs = [((count - 1) / 2 - i) * w for i in range(count)]
            else:
                offs = [-(i + 0.5) * w for i in range(count)] if direction == "fwd" else [(i + 0.5) * w for i in
                                                                                          range(count)]
            offs = [o + r.lateral_shift for o in offs]
            # boundaries left to right (in the direction of travel)
            sign = 1.0 if direction == "fwd" else -1.0
            edges = [offs[0] + sign * w / 2] + [o - sign * w / 2 for o in offs]
            bxy = []
            for e in edges:
                xy = _offset(ref, e)
                bxy.append(xy if direction == "fwd" else xy[::-1])
            btypes = []
            for k in range(len(edges)):
                if k == 0:
                    btypes.append(BOUNDARY_SOLID)  # centre line (or left edge of a one-way road)
                elif k == len(edges) - 1:
                    btypes.append(BOUNDARY_SOLID)
                else:
                    btypes.append(BOUNDARY_DASHED)
            gid = ids()
            groups[direction] = gid
            group_lanes[gid] = []
            bfids = []
            for k, xy in enumerate(bxy):
                # the centre line between the two directions is shared: the bwd group reuses the fwd one
                if k == 0 and direction == "bwd" and not one_way and "fwd" in groups:
                    bfids.append(group_info[groups["fwd"]]["left_boundary"])
                else:
                    bfids.append(add_boundary(xy, btypes[k]))
            for i, o in enumerate(offs):
                c = _offset(ref, o)
                c = c if direction == "fwd" else c[::-1]
                lfid = ids()
                left, right = bxy[i], bxy[i + 1]
                lanes[lfid] = LaneInfo(lfid, gid, i, r.name, direction, c, r.speed)
                group_lanes[gid].append(lfid)
                layers["lanes_polygons"].append(Feature(lfid, _poly(left, right), {
                    "lane_fid": lfid, "lane_group_fid": gid, "lane_index": i, "left_boundary_fid": bfids[i],
                    "right_boundary_fid": bfids[i + 1], "speed_limit_mps": float(r.speed), "lane_type_fid": 0,
                    "from_edge_fid": 0, "to_edge_fid": 0, "creator_id": 0, "name": f"lane_{lfid}"}))
                layers["baseline_paths"].append(Feature(ids(), shapely.LineString(c), {
                    "lane_fid": float(lfid), "lane_connector_fid": None, "path_type_fid": 0, "creator_id": 0}))
            gpoly = _poly(bxy[0], bxy[-1])
            group_info[gid] = {"road": r.name, "direction": direction, "left_boundary": bfids[0],
                               "right_boundary": bfids[-1], "polygon": gpoly,
                               "start": (direction == "fwd") and r.a or r.b,
                               "end": (direction == "fwd") and r.b or r.a}
            layers["lane_groups_polygons"].append(Feature(gid, gpoly, {
                "left_boundary_fid": bfids[0], "right_boundary_fid": bfids[-1], "from_edge_fid": 0,
                "to_edge_fid": 0, "creator_id": 0}))
        road_groups[r.name] = groups
        seg = _as_polygon(shapely.union_all([group_info[g]["polygon"] for g in groups.values()]))
        layers["road_segments"].append(Feature(ids(), seg, {
            "lane_group_fids": ",".join(str(g) for g in groups.values()), "creator_id": 0}))
        if r.walkways:
            hw = half_width(r)
            ext0 = max(0.0, s0 - 5.0)
            ext1 = min(full.length, s1 + 5.0)
            m = max(2, int(np.ceil(ext1 - ext0)) + 1)
            wp = full.interpolate(np.linspace(ext0, ext1, m))
            wref = Polyline.from_xy(wp[:, :2], wp[:, 2])
            if r.n_bwd == 0 or r.n_fwd == 0:
                edges = {1.0: hw, -1.0: hw}
            else:
                edges = {1.0: r.n_bwd * LANE_WIDTH + r.lateral_shift, -1.0: r.n_fwd * LANE_WIDTH - r.lateral_shift}
            for side in (1.0, -1.0):
                inner = _offset(wref, side * (edges[side] + 0.5))
                outer = _offset(wref, side * (edges[side] + 3.5))
                poly = _poly(inner, outer)
                walkway_polys.append(poly)
                layers["walkways"].append(Feature(ids(), poly, {"creator_id": 0}))

    # ------------------------------------------------------------------ junctions
    connectors: dict[int, ConnectorInfo] = {}
    node_intersection: dict[str, int] = {}
    crosswalks: list[dict] = []
    signal_nodes: list[str] = []
    stop_node_approaches: dict[str, set] = {}

    def group_end(gid, at_node):
        """(lane baselines ends) for an incoming group at a node."""
        return [lanes[l] for l in group_lanes[gid]]

    for node in nodes:
        if node.kind == "end":
            continue
        ends = []  # (road, in_group or None, out_group or None)
        for r in attached[node.name]:
            g = road_groups[r.name]
            if r.b == node.name:
                ends.append((r, g.get("fwd"), g.get("bwd")))
            if r.a == node.name:
                ends.append((r, g.get("bwd"), g.get("fwd")))
        pairs = []  # (in_lane fid, out_lane fid, turn)
        if node.mappings:
            for in_road, in_idx, out_road, out_idx in node.mappings:
                ing = next(e[1] for e in ends if e[0].name == in_road and e[1] is not None)
                outg = next(e[2] for e in ends if e[0].name == out_road and e[2] is not None)
                pairs.append((group_lanes[ing][in_idx], group_lanes[outg][out_idx], TURN_STRAIGHT))
        else:
            for r_in, ing, _ in ends:
                if ing is None:
                    continue
                lin = [lanes[l] for l in group_lanes[ing]]
                h_in = Polyline.from_xy(lin[0].baseline[-3:]).heading[-1]
                for r_out, _, outg in ends:
                    if outg is None or r_out is r_in:
                        continue
                    lout = [lanes[l] for l in group_lanes[outg]]
                    h_out = Polyline.from_xy(lout[0].baseline[:3]).heading[0]
                    d = float(wrap_angle(h_out - h_in))
                    if abs(d) < np.radians(35):
                        k = min(len(lin), len(lout))
                        for j in range(k):
                            pairs.append((lin[len(lin) - 1 - j].fid, lout[len(lout) - 1 - j].fid, TURN_STRAIGHT))
                    elif abs(d) > np.radians(150):
                        continue  # no U-turns
                    elif d > 0:
                        pairs.append((lin[0].fid, lout[0].fid, TURN_LEFT))
                    else:
                        pairs.append((lin[-1].fid, lout[-1].fid, TURN_RIGHT))
        if not pairs:
            continue
        # stop polygons (one per incoming lane with a light or a stop sign)
        stop_for_lane: dict[int, int] = {}
        major = set(node.major_roads)
        stop_roads = set()
        if node.kind in ("signal", "stop"):
            for in_lane in sorted({p[0] for p in pairs}):
                li = lanes[in_lane]
                if node.kind == "stop" and li.road in major:
                    continue
                bl = Polyline.from_xy(li.baseline)
                poses = bl.interpolate(np.array([bl.length - 1.5, bl.length]))
                h = poses[-1, 2]
                fwd = np.array([np.cos(h), np.sin(h)])
                nrm = np.array([-np.sin(h), np.cos(h)])
                c0 = poses[0, :2]
                c1 = poses[-1, :2] + 0.5 * fwd
                ring = [c0 + nrm * LANE_WIDTH / 2, c1 + nrm * LANE_WIDTH / 2, c1 - nrm * LANE_WIDTH / 2,
                        c0 - nrm * LANE_WIDTH / 2]
                sfid = ids()
                stop_for_lane[in_lane] = sfid
                stop_roads.add(li.road)
                layers["stop_polygons"].append(Feature(sfid, shapely.Polygon(ring), {
                    "stop_polygon_type_fid": STOP_TRAFFIC_LIGHT if node.kind == "signal" else STOP_SIGN,
                    "lane_fids": str(in_lane), "lane_connector_fids": "", "traffic_light_fids": "",
                    "creator_id": 0}))
        if node.kind == "signal":
            signal_nodes.append(node.name)
        if node.kind == "stop":
            stop_node_approaches[node.name] = stop_roads

        iid = ids()
        node_intersection[node.name] = iid
        conn_polys = []
        group_conns: dict[tuple[int, int], list[int]] = {}
        conn_geo = {}
        for in_lane, out_lane, turn in pairs:
            li, lo = lanes[in_lane], lanes[out_lane]
            bin_, bout = Polyline.from_xy(li.baseline), Polyline.from_xy(lo.baseline)
            p0, h0 = li.baseline[-1], bin_.heading[-1]
            p1, h1 = lo.baseline[0], bout.heading[0]
            c = _bezier(p0, h0, p1, h1)
            cpl = Polyline.from_xy(c)
            left = _offset(cpl, LANE_WIDTH / 2)
            right = _offset(cpl, -LANE_WIDTH / 2)
            cfid = ids()
            poly = _poly(left, right)
            conn_polys.append(poly)
            conn_geo[cfid] = (c, left, right, poly)
            group_conns.setdefault((li.group, lo.group), []).append(cfid)
            has_light = node.kind == "signal"
            connectors[cfid] = ConnectorInfo(cfid, in_lane, out_lane, 0, node.name, turn, c, float(h0), li.road,
                                             has_light, stop_for_lane.get(in_lane))
        # lane group connectors
        for (gin, gout), cfids in group_conns.items():
            gcid = ids()
            cfids.sort(key=lambda c: (lanes[connectors[c].exit_lane].index, lanes[connectors[c].entry_lane].index))
            gpoly = _as_polygon(shapely.union_all([conn_geo[c][3] for c in cfids]))
            lb = add_boundary(conn_geo[cfids[0]][1], BOUNDARY_VIRTUAL)
            rb = add_boundary(conn_geo[cfids[-1]][2], BOUNDARY_VIRTUAL)
            layers["lane_group_connectors"].append(Feature(gcid, gpoly, {
                "from_lane_group_fid": gin, "to_lane_group_fid": gout, "intersection_fid": iid,
                "left_boundary_fid": lb, "right_boundary_fid": rb, "creator_id": 0}))
            for c in cfids:
                connectors[c].group_connector = gcid
                base, left, right, poly = conn_geo[c]
                li, lo = lanes[connectors[c].exit_lane], lanes[connectors[c].entry_lane]
                sp = min(li.speed, lo.speed) * (0.8 if connectors[c].turn != TURN_STRAIGHT else 1.0)
                stop = connectors[c].stop_polygon
                layers["lane_connectors"].append(Feature(c, shapely.LineString(base), {
                    "exit_lane_fid": li.fid, "entry_lane_fid": lo.fid, "exit_lane_group_fid": li.group,
                    "entry_lane_group_fid": lo.group, "lane_group_connector_fid": gcid, "intersection_fid": iid,
                    "traffic_light_stop_line_fids": str(stop) if (stop is not None and connectors[c].has_light) else "",
                    "turn_type_fid": connectors[c].turn, "speed_limit_mps": float(round(sp, 2)), "creator_id": 0}))
                bfid = ids()
                layers["baseline_paths"].append(Feature(bfid, shapely.LineString(base), {
                    "lane_fid": None, "lane_connector_fid": float(c), "path_type_fid": 0, "creator_id": 0}))
                clb = add_boundary(left, BOUNDARY_VIRTUAL)
                crb = add_boundary(right, BOUNDARY_VIRTUAL)
                layers["gen_lane_connectors_scaled_width_polygons"].append(Feature(ids(), poly, {
                    "lane_connector_fid": c, "baseline_path_fid": bfid, "left_boundary_fid": clb,
                    "right_boundary_fid": crb}))
        # stop polygons reference their connectors
        for f in layers["stop_polygons"]:
            lane_fid = int(f.attrs["lane_fids"]) if f.attrs["lane_fids"] else None
            if lane_fid in stop_for_lane and stop_for_lane[lane_fid] == f.fid:
                f.attrs["lane_connector_fids"] = ",".join(
                    str(c) for c, ci in connectors.items() if ci.exit_lane == lane_fid and ci.node == node.name)
        # intersection polygon: hull of the connectors and the road ends
        caps = []
        for r, ing, outg in ends:
            for g in (ing, outg):
                if g is None:
                    continue
                ls = [lanes[l] for l in group_lanes[g]]
                pts = [l.baseline[-1] if g == ing else l.baseline[0] for l in ls]
                caps.extend(pts)
        hull = shapely.convex_hull(shapely.union_all(conn_polys + [shapely.MultiPoint(caps).buffer(LANE_WIDTH / 2)]))
        layers["intersections"].append(Feature(iid, hull, {
            "intersection_type_fid": INTERSECTION_TYPE.get(node.kind, 0), "is_mini": 0, "creator_id": 0}))
        # crosswalks across every attached road, between the lane ends and the junction core
        if node.crosswalks and node.kind in ("signal", "stop", "uncontrolled"):
            for r in attached[node.name]:
                full = Polyline.from_xy(r.ref)
                at_b = r.b == node.name
                sb = setback[node.name]
                s_far = full.length - (sb - 0.8) if at_b else sb - 0.8
                s_near = full.length - (sb - 4.8) if at_b else sb - 4.8
                pa = full.interpolate(np.array([s_far, s_near]))
                hw = half_width(r) + 1.0
                h = pa[0, 2]
                nrm = np.array([-np.sin(h), np.cos(h)])
                ring = [pa[0, :2] + nrm * hw, pa[1, :2] + nrm * hw, pa[1, :2] - nrm * hw, pa[0, :2] - nrm * hw]
                cw = shapely.Polygon(ring)
                cfid = ids()
                layers["crosswalks"].append(Feature(cfid, cw, {"creator_id": 0}))
                mid = pa[:, :2].mean(axis=0)
                crosswalks.append({"fid": cfid, "polygon": cw, "a": mid + nrm * (hw + 1.5),
                                   "b": mid - nrm * (hw + 1.5), "node": node.name, "road": r.name,
                                   "axis_heading": float(h)})

    for kind, items in (extra_areas or {}).items():
        for geom, attrs in items:
            fid = ids()
            layers[kind].append(Feature(fid, geom, dict(attrs, creator_id=0)))
            if kind == "crosswalks":
                crosswalks.append(dict(attrs.get("_meta", {}), fid=fid, polygon=geom))
                layers[kind][-1].attrs.pop("_meta", None)

    entry_groups = []
    incoming_groups = {lanes[c.entry_lane].group for c in connectors.values()}
    for gid in group_lanes:
        if gid not in incoming_groups:
            entry_groups.append(gid)
    return Network(layers, lanes, connectors, group_lanes, node_by, node_intersection, crosswalks, walkway_polys,
                   entry_groups, signal_nodes, stop_node_approaches)
