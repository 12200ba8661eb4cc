"""The map API and the scenario builder against the devkit's (``devkit_maps.json``, ``devkit_scenarios.json``).

``devkit_maps.json`` holds, per map location, the devkit's ``NuPlanMap`` answers (nuplan/common/maps/nuplan_map/
nuplan_map.py, lane.py, lane_connector.py, roadblock.py, roadblock_connector.py):

- ``objects[loc].lanes[id]``: every lane and lane connector: roadblock id, incoming/outgoing edge ids, speed limit,
  baseline length, first/last baseline point, baseline vertex count, traffic-light flag, stop-line ids, left/right
  neighbour ids, lane index, left/right boundary lengths, polygon area (connectors also hold ``turn_type``, which the
  dump wrote as the repr of a bound method: it carries no value and is not compared);
- ``objects[loc].roadblocks[id]``: every roadblock and roadblock connector: interior lane ids in order,
  incoming/outgoing ids, intersection id;
- ``objects[loc].proximal``: ``get_proximal_map_objects(P, R, [LANE, LANE_CONNECTOR, STOP_LINE, CROSSWALK,
  INTERSECTION])`` and ``objects[loc].nearest_lane``: ``get_distance_to_nearest_map_object(P, LANE)``;
- ``objects[loc].available``: ``get_available_map_objects()`` (each must be a layer our ``objects_at`` answers);
- ``objects[loc].errors``: what the devkit could not answer (the ``sg-one-north`` stub: we must fail to load it);
- ``point_queries[loc]``: ``get_all_map_objects(p, layer)`` ids for 9 layers and ``is_in_layer(p, DRIVABLE_AREA)``.

The query point P and radius R of the proximal / nearest queries are not recorded in the file: P is the centre of
the lanes layer's bounding box (the nearest-lane distances of all three maps agree with it to 1e-9), and every R in
[39.5, 61] m reproduces the three maps' proximal sets; we use 50 m (:data:`PROXIMAL_RADIUS_M`).

``devkit_scenarios.json`` holds ``NuPlanScenarioBuilder``'s scenarios with the challenge mapping on the golden logs
(``tagged``) and the ORM row counts per table (``orm_counts``).

Floats are compared to :data:`FLOAT_ABS_TOL`, ids exactly; one :class:`Mismatch` per differing field, naming the
map (or scenario / log), the object and the field.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import shapely

from ..errors import SimScaleError
from .report import CheckResult, Mismatch

log = logging.getLogger(__name__)

# Absolute tolerance of every float comparison (UTM metres, radians, m/s, m^2): the devkit and we run the same
# double-precision arithmetic on the same GeoPackage and logs; on oracle_mini everything agrees to 1e-12 (baseline
# and boundary lengths differ in the last bits: summation order), so 1e-9 is strict and still deterministic.
FLOAT_ABS_TOL = 1e-9
# Half-width of the square patch of the golden get_proximal_map_objects queries (nuplan_map.py builds a box
# [x - R, x + R] x [y - R, y + R] and keeps the objects whose geometry intersects it). Not recorded in the golden
# file: any R in [39.5, 61] m reproduces it.
PROXIMAL_RADIUS_M = 50.0
# Distance ties of get_distance_to_nearest_map_object: the devkit sorts with pandas' unstable quicksort, so among
# lanes at the same distance (to this tolerance) any may be named.
NEAREST_TIE_TOL = 1e-9

# SemanticMapLayer values (nuplan/common/maps/maps_datatypes.py) -> our MapLayer names
_SEMANTIC_LAYER = {0: "LANE", 1: "INTERSECTION", 2: "STOP_LINE", 4: "CROSSWALK", 11: "LANE_CONNECTOR",
                   14: "WALKWAYS", 15: "CARPARK_AREA", 17: "ROADBLOCK", 18: "ROADBLOCK_CONNECTOR"}
# keys of a golden point query -> our MapLayer names
_POINT_LAYERS = {"lane": "LANE", "conn": "LANE_CONNECTOR", "rb": "ROADBLOCK", "rbc": "ROADBLOCK_CONNECTOR",
                 "inter": "INTERSECTION", "cw": "CROSSWALK", "walk": "WALKWAYS", "stop": "STOP_LINE",
                 "carpark": "CARPARK_AREA"}
# golden lane fields not compared, with the reason
_LANE_FIELDS_SKIPPED = {"turn_type": "the dump wrote the repr of a bound method, not a value"}

_TABLE_HEADER = ("map", "part", "compared", "agree", "mismatch")
_SCENARIO_HEADER = ("log", "part", "compared", "agree", "mismatch")


# ---------------------------------------------------------------------------------------------------- comparisons
class _Comparer:
    """Accumulates compared values and mismatches per (group, part) for one golden file."""

    def __init__(self, result: CheckResult, file: Path):
        self.r = result
        self.file = file
        self.counts: dict[tuple[str, str], list[int]] = {}

    def _tally(self, group: str, part: str, ok: bool) -> bool:
        c = self.counts.setdefault((group, part), [0, 0])
        c[0] += 1
        c[1] += int(not ok)
        self.r.compared += 1
        return ok

    def fail(self, group: str, part: str, where: str, what: str, ours, golden) -> None:
        self._tally(group, part, False)
        self.r.mismatches.append(Mismatch(f"{self.file.name} {where}", what, ours, golden))

    def ok(self, group: str, part: str) -> None:
        self._tally(group, part, True)

    def value(self, group: str, part: str, where: str, what: str, ours, golden) -> bool:
        """Compare two values: numbers to FLOAT_ABS_TOL, sequences element-wise, everything else with ==."""
        good = _equal(ours, golden)
        if good:
            self.ok(group, part)
        else:
            self.fail(group, part, where, what, ours, golden)
        return good

    def table(self) -> None:
        rows = [(g, p, n, n - bad, bad) for (g, p), (n, bad) in self.counts.items()]
        header = _SCENARIO_HEADER if self.r.kind == "scenarios" else _TABLE_HEADER
        self.r.tables[self.file.name] = (header, rows)


def _equal(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (bool, np.bool_)) or isinstance(b, bool):
        return isinstance(b, (bool, np.bool_)) and isinstance(a, (bool, np.bool_)) and bool(a) == bool(b)
    if isinstance(a, (int, np.integer)) and isinstance(b, int):  # counts, ids, timestamps: exact
        return int(a) == b
    if isinstance(a, (int, float, np.integer, np.floating)) and isinstance(b, (int, float)):
        fa, fb = float(a), float(b)
        if math.isnan(fa) or math.isnan(fb):
            return math.isnan(fa) and math.isnan(fb)
        return abs(fa - fb) <= FLOAT_ABS_TOL
    if isinstance(a, (list, tuple, np.ndarray)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def _polyline_length(xy) -> float:
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    return float(np.hypot(*np.diff(xy, axis=0).T).sum()) if len(xy) > 1 else 0.0


def _opt_id(v) -> str | None:
    return None if v is None else str(v)


# ---------------------------------------------------------------------------------------------------- maps
def _lane_values(m, lane) -> dict:
    """Our answers to the golden lane fields, by field name (the devkit's Lane / LaneConnector API)."""
    bl = lane.baseline
    return {
        "rb": lane.roadblock_id,
        "inc": [e.id for e in m.incoming_edges(lane.id)],
        "out": [e.id for e in m.outgoing_edges(lane.id)],
        "speed": lane.speed_limit_mps,
        "length": bl.length,
        "tl": bool(lane.has_traffic_light),
        "stop": list(lane.stop_line_ids),
        "left": lane.left_neighbor_id,
        "right": lane.right_neighbor_id,
        "base0": [float(bl.xy[0, 0]), float(bl.xy[0, 1])],
        "base1": [float(bl.xy[-1, 0]), float(bl.xy[-1, 1])],
        "nbase": len(bl.xy),
        "index": int(lane.index),
        "lb_len": _polyline_length(lane.left_boundary),
        "rb_len": _polyline_length(lane.right_boundary),
        "area": float(lane.polygon.area),
    }


def _roadblock_values(rb) -> dict:
    return {"lanes": list(rb.lane_ids), "inc": list(rb.incoming_ids), "out": list(rb.outgoing_ids),
            "inter": _opt_id(rb.intersection_id)}


def _query_point(m) -> tuple[float, float]:
    """Centre of the bounding box of the lanes layer (the golden proximal / nearest queries' point)."""
    polys = np.array([ln.polygon for ln in m.lanes.values() if not ln.is_connector], dtype=object)
    b = shapely.total_bounds(polys)
    return (b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0


def proximal_map_objects(m, x: float, y: float, radius: float) -> dict[str, list[str]]:
    """The devkit's ``get_proximal_map_objects`` on our map: per layer, the ids (in layer order) whose geometry
    intersects the square [x - radius, x + radius] x [y - radius, y + radius]. Lanes and intersections, stop lines
    and crosswalks by their polygons; lane connectors by their baselines (the devkit's ``lane_connectors`` layer
    geometry)."""
    box = shapely.box(x - radius, y - radius, x + radius, y + radius)
    lanes = [ln for ln in m.lanes.values() if not ln.is_connector]
    conns = [ln for ln in m.lanes.values() if ln.is_connector]
    geoms = {
        "LANE": ([ln.id for ln in lanes], [ln.polygon for ln in lanes]),
        "LANE_CONNECTOR": ([ln.id for ln in conns], [shapely.LineString(ln.baseline.xy) for ln in conns]),
        "STOP_LINE": (list(m.stop_lines), [a.polygon for a in m.stop_lines.values()]),
        "CROSSWALK": (list(m.crosswalks), [a.polygon for a in m.crosswalks.values()]),
        "INTERSECTION": (list(m.intersections), [a.polygon for a in m.intersections.values()]),
    }
    out = {}
    for layer, (ids, gs) in geoms.items():
        hit = shapely.intersects(np.array(gs, dtype=object), box) if gs else np.zeros(0, bool)
        out[layer] = [i for i, h in zip(ids, hit) if h]
    return out


def _nearest_lane(m, x: float, y: float) -> tuple[list[str], float]:
    """(ids of the lanes at the minimum distance, that distance) from (x, y) to the lane polygons."""
    ids = [ln.id for ln in m.lanes.values() if not ln.is_connector]
    d = shapely.distance(np.array([m.lanes[i].polygon for i in ids], dtype=object), shapely.Point(x, y))
    dmin = float(d.min())
    return [i for i, di in zip(ids, d) if di <= dmin + NEAREST_TIE_TOL], dmin


def _check_map(cmp: _Comparer, loc: str, m, golden: dict, queries: list) -> None:
    # lanes and lane connectors
    g_lanes = golden.get("lanes", {})
    ours_ids = set(m.lanes)
    for lid in sorted(set(g_lanes) - ours_ids):
        cmp.fail(loc, "lanes", f"{loc} lane {lid}", "lane missing from our map", None, "present")
    for lid in sorted(ours_ids - set(g_lanes)):
        cmp.fail(loc, "lanes", f"{loc} lane {lid}", "lane not in the devkit's map", "present", None)
    for lid in sorted(set(g_lanes) & ours_ids):
        ours = _lane_values(m, m.lanes[lid])
        for f, gv in g_lanes[lid].items():
            if f in _LANE_FIELDS_SKIPPED:
                continue
            if f not in ours:
                cmp.fail(loc, "lanes", f"{loc} lane {lid}", f"{f}: field unknown to the check", None, gv)
                continue
            cmp.value(loc, "lanes", f"{loc} lane {lid}", f, ours[f], gv)
    # roadblocks and roadblock connectors
    g_rbs = golden.get("roadblocks", {})
    ours_rb = set(m.roadblocks)
    for rid in sorted(set(g_rbs) - ours_rb):
        cmp.fail(loc, "roadblocks", f"{loc} roadblock {rid}", "roadblock missing from our map", None, "present")
    for rid in sorted(ours_rb - set(g_rbs)):
        cmp.fail(loc, "roadblocks", f"{loc} roadblock {rid}", "roadblock not in the devkit's map", "present", None)
    for rid in sorted(set(g_rbs) & ours_rb):
        ours = _roadblock_values(m.roadblocks[rid])
        for f, gv in g_rbs[rid].items():
            if f not in ours:
                cmp.fail(loc, "roadblocks", f"{loc} roadblock {rid}", f"{f}: field unknown to the check", None, gv)
                continue
            cmp.value(loc, "roadblocks", f"{loc} roadblock {rid}", f, ours[f], gv)
    # the object layers the devkit's get_available_map_objects lists: each must be one our objects_at answers
    x, y = _query_point(m)
    for layer_value in golden.get("available", []):
        layer = _SEMANTIC_LAYER.get(int(layer_value))
        try:
            m.objects_at(x, y, layer)
            cmp.ok(loc, "layers")
        except (KeyError, SimScaleError):
            cmp.fail(loc, "layers", f"{loc} layer {layer_value}", "object layer our map API cannot query", layer,
                     "available")
    # proximal objects and the nearest lane around the query point
    if "proximal" in golden:
        prox = proximal_map_objects(m, x, y, PROXIMAL_RADIUS_M)
        for layer_value, gids in golden["proximal"].items():
            layer = _SEMANTIC_LAYER.get(int(layer_value))
            if layer not in prox:
                cmp.fail(loc, "proximal", f"{loc} proximal layer {layer_value}", "layer unknown to the check", None,
                         gids)
                continue
            cmp.value(loc, "proximal", f"{loc} proximal ({x:.3f}, {y:.3f}) r={PROXIMAL_RADIUS_M}", layer,
                      prox[layer], gids)
    if golden.get("nearest_lane"):
        gid, gdist = golden["nearest_lane"]
        ids, dist = _nearest_lane(m, x, y)
        where = f"{loc} nearest lane to ({x:.3f}, {y:.3f})"
        cmp.value(loc, "nearest", where, "distance", dist, gdist)
        if str(gid) in ids:
            cmp.ok(loc, "nearest")
        else:
            cmp.fail(loc, "nearest", where, "lane id", ids, gid)
    # point queries, one layer at a time
    if queries:
        pts = np.array([q["p"] for q in queries], dtype=np.float64)
        for key, layer in _POINT_LAYERS.items():
            for q, (px, py) in zip(queries, pts):
                if key not in q:
                    continue
                ours = sorted(m.objects_at(px, py, layer))
                cmp.value(loc, "points", f"{loc} point ({px:.6f}, {py:.6f})", layer, ours, sorted(q[key]))
        drivable = m.is_in_drivable_area(pts)
        for q, (px, py), d in zip(queries, pts, drivable):
            if "drivable" in q:
                cmp.value(loc, "points", f"{loc} point ({px:.6f}, {py:.6f})", "in DRIVABLE_AREA", bool(d),
                          bool(q["drivable"]))


def check_maps(folder) -> CheckResult:
    """``devkit_maps.json`` against :func:`simscale_env.map.load_map` on the golden folder's maps root.

    ``compared`` counts the values compared (each field of each lane / roadblock, each layer of each point query,
    ...); the table has one row per (map, part)."""
    from ..map import load_map

    r = CheckResult("maps")
    path, data = folder.devkit_maps()
    if data is None:
        r.skipped = f"no {path.name}"
        return r
    if folder.maps_root is None:
        r.skipped = f"{path.name} is there but maps.tar.xz is not"
        return r
    if not isinstance(data, dict) or not isinstance(data.get("objects"), dict):
        from ..errors import CorruptFileError

        raise CorruptFileError(path, "expected an object with 'objects' per map location")
    cmp = _Comparer(r, path)
    queries = data.get("point_queries", {})
    for loc, golden in data["objects"].items():
        try:
            m = load_map(loc, folder.maps_root)
        except SimScaleError as exc:
            if golden.get("errors") and "lanes" not in golden:
                cmp.ok(loc, "load")  # the devkit could not use this map either (a stub)
                log.info("map %s: neither we nor the devkit can query it (%s)", loc, exc)
            else:
                cmp.fail(loc, "load", loc, "our map API cannot load the map", str(exc), "loaded")
            continue
        if golden.get("errors") and "lanes" not in golden:
            cmp.fail(loc, "load", loc, "the devkit could not query the map, ours loads it", "loaded",
                     golden["errors"])
            continue
        cmp.ok(loc, "load")
        log.info("map %s: comparing %d lanes, %d roadblocks, %d point queries", loc, len(golden.get("lanes", {})),
                 len(golden.get("roadblocks", {})), len(queries.get(loc, [])))
        _check_map(cmp, loc, m, golden, queries.get(loc, []))
    for loc in sorted(set(queries) - set(data["objects"])):
        cmp.fail(loc, "points", loc, "point queries of a map the file has no objects for", None, len(queries[loc]))
    cmp.table()
    return r


# ---------------------------------------------------------------------------------------------------- scenarios
# traffic_light_status.status names as the devkit's TrafficLightStatusType prints them
_TL_NAMES = {0: "GREEN", 1: "YELLOW", 2: "RED"}
# orm_counts keys -> nuPlan tables (the golden 'log' entry is log.map_version)
_ORM_TABLES = {"lidar_pc": "lidar_pc", "ego_pose": "ego_pose", "scene": "scene", "track": "track",
               "lidar_box": "lidar_box", "scenario_tag": "scenario_tag", "tls": "traffic_light_status",
               "camera": "camera", "image": "image"}


def _scenario_values(s) -> dict:
    """Our answers to the golden scenario fields (the devkit's NuPlanScenario API at iteration 0)."""
    t0 = s.start_index
    present = s.agents.at(t0)
    lights = s.traffic_lights.at(t0)
    return {
        "type": s.scenario_type,
        "map": s.map_location,
        "n_iter": s.num_iterations,
        "t0": int(s.timestamps_us[t0]),
        "dt": float(s.dt_s),
        "ego0": [float(s.ego.x[t0]), float(s.ego.y[t0]), float(s.ego.heading[t0]), float(s.ego.vx[t0])],
        "route": [str(r) for r in s.route_roadblock_ids],
        "goal": None if s.goal is None else [float(v) for v in s.goal],
        "n_obj0": len(present["track_token"]),
        "obj_tokens0": sorted(str(t) for t in present["track_token"]),
        "lights0": sorted([int(c), _TL_NAMES[v]] for c, v in lights.items() if v in _TL_NAMES),
        "ego_last": [float(s.ego.x[-1]), float(s.ego.y[-1])],
    }


def check_scenarios(folder, source: str = "nuplan") -> CheckResult:
    """``devkit_scenarios.json`` against :class:`simscale_env.data.ScenarioBuilder` on the golden folder's logs.

    ``compared`` counts the values compared (each field of each scenario, each row count); the table has one row
    per (log, part). The comparison is about the ``.db`` extraction: with `source` "openscene" it is skipped."""
    from ..data import LogDB, ScenarioBuilder
    from ..data.scenario import EXTRACTION_OFFSET_S, SCENARIO_DURATION_S, SUBSAMPLE_RATIO
    from .oracle import check_source

    r = CheckResult("scenarios")
    path, data = folder.devkit_scenarios()
    if data is None:
        r.skipped = f"no {path.name}"
        return r
    if check_source(source) == "openscene":
        r.skipped = (f"source openscene: {path.name} checks the scenario extraction from the nuPlan .db logs "
                     f"against the devkit's (run it with --source nuplan)")
        return r
    if folder.log_dir is None:
        r.skipped = f"{path.name} is there but logs/ is not"
        return r
    if not isinstance(data, dict) or not isinstance(data.get("tagged"), list):
        from ..errors import CorruptFileError

        raise CorruptFileError(path, "expected an object with a 'tagged' list of scenarios")
    cmp = _Comparer(r, path)
    builder = ScenarioBuilder(sorted(folder.log_dir.glob("*.db")))
    ours = {ref.token: ref for ref in builder.refs()}
    golden = {g["token"]: g for g in data["tagged"]}
    for tok in sorted(set(golden) - set(ours)):
        cmp.fail(golden[tok].get("log", "?"), "scenarios", f"scenario {tok}", "scenario missing from ours", None,
                 golden[tok].get("type"))
    for tok in sorted(set(ours) - set(golden)):
        cmp.fail(ours[tok].log_name, "scenarios", f"scenario {tok}", "scenario the devkit does not build",
                 ours[tok].scenario_type, None)
    for tok in sorted(set(golden) & set(ours)):
        g = golden[tok]
        where = f"scenario {tok}"
        group = g.get("log", ours[tok].log_name)
        if not cmp.value(group, "scenarios", where, "log", ours[tok].log_name, g.get("log")):
            continue
        # the devkit's challenge mapping (15 s from 3 s before the tag, every 2nd lidar_pc), as the golden builder
        vals = _scenario_values(builder.load(ours[tok], duration_s=SCENARIO_DURATION_S, offset_s=EXTRACTION_OFFSET_S,
                                             subsample_ratio=SUBSAMPLE_RATIO))
        for f, gv in g.items():
            if f in ("token", "log"):
                continue
            if f not in vals:
                cmp.fail(group, "scenarios", where, f"{f}: field unknown to the check", None, gv)
                continue
            if f == "obj_tokens0" and not _equal(vals[f], sorted(gv)):
                extra, missing = sorted(set(vals[f]) - set(gv)), sorted(set(gv) - set(vals[f]))
                cmp.fail(group, "scenarios", where, f"{f} (ours extra / missing)", extra, missing)
                continue
            cmp.value(group, "scenarios", where, f, vals[f], sorted(gv) if f in ("obj_tokens0", "lights0") else gv)
    # ORM row counts
    by_name = {p.name: p for p in folder.log_dir.glob("*.db")}
    for db_name, counts in data.get("orm_counts", {}).items():
        group = Path(db_name).stem
        if db_name not in by_name:
            cmp.fail(group, "row counts", f"log {db_name}", "log missing from logs/", None, "present")
            continue
        with LogDB(by_name[db_name]) as db:
            for key, gv in counts.items():
                if key == "log":
                    cmp.value(group, "row counts", f"log {db_name}", "log.map_version", db.map_location, gv)
                elif key in _ORM_TABLES:
                    cmp.value(group, "row counts", f"log {db_name}", f"rows in {_ORM_TABLES[key]}",
                              db.count(_ORM_TABLES[key]), gv)
                else:
                    cmp.fail(group, "row counts", f"log {db_name}", f"{key}: table unknown to the check", None, gv)
    cmp.table()
    return r
