"""The three map locations of the mini dataset.

NAVSIM accepts only nuPlan's four location keys (`assert map_name in MAP_LOCATIONS` in navsim/common/dataclasses.py
and navsim_scenario.py), so the synthetic maps are stored under those keys, with their own version string, in the
mini dataset's own maps root, and placed in their UTM zones far from the real maps' extents (a log of the mini
dataset opened against the real maps by mistake lands off every lane, and the readers say so):

- ``us-nv-las-vegas-strip`` (recipe ``grid``): a 3 x 3 grid of signalised 4-way intersections, two lanes each way.
- ``us-ma-boston`` (recipe ``arterial``): a three-lane-each-way arterial with an on-ramp that adds a lane, a lane
  drop that merges it again, and a signalised junction with a side street.
- ``us-pa-pittsburgh-hazelwood`` (recipe ``curve``): a winding two-lane road with a stop-controlled T junction, a
  mid-block crosswalk and a car park.
- ``sg-one-north``: a stub (an empty lane_connectors layer and meta), as the devkit needs all four keys.

Each recipe is deterministic; positions are local metres shifted by the location's UTM origin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from .roadnet import LANE_WIDTH, Network, NodeSpec, RoadSpec, build_network

MAP_VERSION = "simscale-mini-1.0"


@dataclass(frozen=True)
class Location:
    name: str  # the nuPlan location key (log.map_version)
    recipe: str
    epsg: int
    origin: tuple[float, float]  # UTM easting/northing of local (0, 0)
    city: str  # log.location


LOCATIONS = {
    "us-nv-las-vegas-strip": Location("us-nv-las-vegas-strip", "grid", 32611, (601000.0, 4101000.0), "las_vegas"),
    "us-ma-boston": Location("us-ma-boston", "arterial", 32619, (341000.0, 4701000.0), "boston"),
    "us-pa-pittsburgh-hazelwood": Location("us-pa-pittsburgh-hazelwood", "curve", 32617, (571000.0, 4461000.0),
                                           "pittsburgh"),
}
STUB_LOCATIONS = {"sg-one-north": 32648}


def _line(*pts, step=1.0):
    pts = np.asarray(pts, dtype=float)
    out = [pts[0]]
    for a, b in zip(pts[:-1], pts[1:]):
        n = max(1, int(np.ceil(np.hypot(*(b - a)) / step)))
        t = np.linspace(0, 1, n + 1)[1:, None]
        out.append(a + t * (b - a))
    return np.vstack([out[0][None]] + out[1:])


def _catmull_rom(pts, step=1.0):
    """A smooth curve through `pts` (centripetal-free uniform Catmull-Rom), sampled about every `step` metres."""
    p = np.asarray(pts, dtype=float)
    p = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        n = max(2, int(np.ceil(np.hypot(*(p2 - p1)) / step)))
        t = np.linspace(0, 1, n, endpoint=False)[:, None]
        seg = 0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                     + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3)
        out.append(seg)
    out.append(p[-2][None])
    return np.vstack(out)


def _shift(net_nodes, roads, origin, extra=None):
    ox, oy = origin
    for n in net_nodes:
        n.xy = (n.xy[0] + ox, n.xy[1] + oy)
    for r in roads:
        r.ref = np.asarray(r.ref) + np.array([ox, oy])
    if extra:
        for kind, items in extra.items():
            extra[kind] = [(shapely.affinity.translate(g, ox, oy), _shift_meta(a, ox, oy)) for g, a in items]
    return extra


def _shift_meta(attrs, ox, oy):
    attrs = dict(attrs)
    if "_meta" in attrs:
        m = dict(attrs["_meta"])
        for k in ("a", "b"):
            if k in m:
                m[k] = np.asarray(m[k]) + np.array([ox, oy])
        attrs["_meta"] = m
    return attrs


def grid(origin) -> Network:
    sp = 140.0
    ext = 90.0
    speed = 11.18  # 25 mph
    nodes, roads = [], []
    for i in range(3):
        for j in range(3):
            nodes.append(NodeSpec(f"J{i}{j}", (i * sp, j * sp), "signal"))
    for i in range(3):
        for j in range(3):
            if i < 2:
                roads.append(RoadSpec(f"h{i}{j}", f"J{i}{j}", f"J{i + 1}{j}", _line((i * sp, j * sp),
                                                                                   ((i + 1) * sp, j * sp)), 2, 2, speed))
            if j < 2:
                roads.append(RoadSpec(f"v{i}{j}", f"J{i}{j}", f"J{i}{j + 1}", _line((i * sp, j * sp),
                                                                                   (i * sp, (j + 1) * sp)), 2, 2, speed))
    for k in range(3):
        for name, a, b in (
            (f"W{k}", (-ext, k * sp), (0, k * sp)), (f"E{k}", (2 * sp, k * sp), (2 * sp + ext, k * sp)),
            (f"S{k}", (k * sp, -ext), (k * sp, 0)), (f"N{k}", (k * sp, 2 * sp), (k * sp, 2 * sp + ext)),
        ):
            end = f"end_{name}"
            nodes.append(NodeSpec(end, a if name[0] in "WS" else b, "end"))
            if name[0] in "WS":
                junction = f"J{0 if name[0] == 'W' else k}{k if name[0] == 'W' else 0}"
                roads.append(RoadSpec(name, end, junction, _line(a, b), 2, 2, speed))
            else:
                junction = f"J{2 if name[0] == 'E' else k}{k if name[0] == 'E' else 2}"
                roads.append(RoadSpec(name, junction, end, _line(a, b), 2, 2, speed))
    _shift(nodes, roads, origin)
    return build_network(nodes, roads, id_start=10000)


def arterial(origin) -> Network:
    speed = 17.88  # 40 mph
    xs = {"W": 0.0, "M1": 260.0, "S": 500.0, "M2": 760.0, "E": 1040.0}

    def y(x):
        return 14.0 * np.sin(np.pi * x / 1040.0)

    def main(x0, x1):
        x = np.linspace(x0, x1, int(x1 - x0) + 1)
        return np.stack([x, y(x)], axis=-1)

    def at(name):
        return (xs[name], float(y(xs[name])))

    nodes = [
        NodeSpec("W", at("W"), "end"), NodeSpec("E", at("E"), "end"),
        NodeSpec("M1", at("M1"), "merge", setback=16.0, crosswalks=False,
                 mappings=[("A", 0, "B", 0), ("A", 1, "B", 1), ("A", 2, "B", 2), ("ramp", 0, "B", 3),
                           ("B", 0, "A", 0), ("B", 1, "A", 1), ("B", 2, "A", 2)]),
        NodeSpec("S", at("S"), "signal"),
        NodeSpec("M2", at("M2"), "merge", setback=22.0, crosswalks=False,
                 mappings=[("B2", 0, "C", 0), ("B2", 1, "C", 1), ("B2", 2, "C", 2), ("B2", 3, "C", 2),
                           ("C", 0, "B2", 0), ("C", 1, "B2", 1), ("C", 2, "B2", 2)]),
        NodeSpec("R0", (40.0, -95.0), "end"),
        NodeSpec("SN", (xs["S"], float(y(xs["S"])) + 200.0), "end"),
        NodeSpec("SS", (xs["S"], float(y(xs["S"])) - 200.0), "end"),
    ]
    # lane-added sections B/B2 keep the three through lanes where they were and add one on the right:
    # a one-way-free road with n_fwd=4, n_bwd=3 puts the fourth eastbound lane further right.
    m1 = np.array(at("M1"))
    h = np.arctan2(y(xs["M1"] + 1) - y(xs["M1"] - 1), 2.0)
    nrm = np.array([-np.sin(h), np.cos(h)])
    tang = np.array([np.cos(h), np.sin(h)])
    ramp_end = m1 - nrm * (3.5 * LANE_WIDTH) + tang * 0.0
    ramp = _catmull_rom([(40.0, -95.0), (120.0, -62.0), ramp_end - tang * 70 - nrm * 4.0, ramp_end], step=1.0)
    roads = [
        RoadSpec("A", "W", "M1", main(xs["W"], xs["M1"]), 3, 3, speed, walkways=False),
        RoadSpec("B", "M1", "S", main(xs["M1"], xs["S"]), 4, 3, speed),
        RoadSpec("B2", "S", "M2", main(xs["S"], xs["M2"]), 4, 3, speed),
        RoadSpec("C", "M2", "E", main(xs["M2"], xs["E"]), 3, 3, speed, walkways=False),
        RoadSpec("ramp", "R0", "M1", ramp, 1, 0, 15.6, walkways=False),
        RoadSpec("sideN", "S", "SN", _line(at("S"), (xs["S"], float(y(xs["S"])) + 200.0)), 1, 1, 11.18),
        RoadSpec("sideS", "SS", "S", _line((xs["S"], float(y(xs["S"])) - 200.0), at("S")), 1, 1, 11.18),
    ]
    _shift(nodes, roads, origin)
    return build_network(nodes, roads, id_start=20000)


def curve(origin) -> Network:
    speed = 13.41  # 30 mph
    pts = [(0.0, 0.0), (70.0, 8.0), (130.0, 50.0), (190.0, 105.0), (260.0, 120.0), (330.0, 100.0),
           (390.0, 60.0), (450.0, 45.0), (540.0, 70.0), (610.0, 125.0), (680.0, 165.0), (770.0, 160.0),
           (850.0, 120.0), (930.0, 100.0), (1010.0, 115.0)]
    full = _catmull_rom(pts, step=1.0)
    # split the main road at the T node (x = 260)
    k = int(np.argmin(np.hypot(full[:, 0] - 260.0, full[:, 1] - 120.0)))
    t_xy = tuple(full[k])
    nodes = [
        NodeSpec("A", tuple(full[0]), "end"), NodeSpec("B", tuple(full[-1]), "end"),
        NodeSpec("T", t_xy, "stop", major_roads=("west", "east")),
        NodeSpec("C", (t_xy[0] + 10.0, t_xy[1] + 190.0), "end"),
    ]
    minor = _catmull_rom([t_xy, (t_xy[0] + 2.0, t_xy[1] + 60.0), (t_xy[0] + 10.0, t_xy[1] + 190.0)], step=1.0)
    roads = [
        RoadSpec("west", "A", "T", full[: k + 1], 1, 1, speed),
        RoadSpec("east", "T", "B", full[k:], 1, 1, speed),
        RoadSpec("north", "T", "C", minor, 1, 1, 8.94),
    ]
    # a mid-block crosswalk on the west road, 110 m from its start
    from ...map.polyline import Polyline

    wpl = Polyline.from_xy(full[: k + 1])
    p = wpl.interpolate(np.array([108.0, 112.0]))
    hdg = p[0, 2]
    nrm = np.array([-np.sin(hdg), np.cos(hdg)])
    hw = LANE_WIDTH + 1.0
    ring = [p[0, :2] + nrm * hw, p[1, :2] + nrm * hw, p[1, :2] - nrm * hw, p[0, :2] - nrm * hw]
    mid = p[:, :2].mean(axis=0)
    crosswalk = (shapely.Polygon(ring), {"_meta": {"a": mid + nrm * (hw + 1.5), "b": mid - nrm * (hw + 1.5),
                                                     "node": None, "road": "west", "axis_heading": float(hdg)}})
    # a car park south of the east road, reached through a short generic drivable area
    epl = Polyline.from_xy(full[k:])
    q = epl.interpolate(np.array([120.0]))[0]
    hq = q[2]
    nq = np.array([-np.sin(hq), np.cos(hq)])
    tq = np.array([np.cos(hq), np.sin(hq)])
    base = q[:2] - nq * (LANE_WIDTH + 0.2)
    drive = shapely.Polygon([base + tq * 4, base - tq * 4, base - tq * 4 - nq * 8, base + tq * 4 - nq * 8])
    lot_c = base - nq * 26
    lot = shapely.Polygon([lot_c + tq * 30 + nq * 18, lot_c - tq * 30 + nq * 18, lot_c - tq * 30 - nq * 18,
                           lot_c + tq * 30 - nq * 18])
    extra = {"crosswalks": [crosswalk], "generic_drivable_areas": [(drive, {})],
             "carpark_areas": [(lot, {"heading": float(hq)})]}
    extra = _shift(nodes, roads, origin, extra)
    return build_network(nodes, roads, extra_areas=extra, id_start=30000)


RECIPES = {"grid": grid, "arterial": arterial, "curve": curve}


def build_location(name: str) -> Network:
    """The road network of a location, by nuPlan key or recipe name."""
    loc = LOCATIONS.get(name) or next(l for l in LOCATIONS.values() if l.recipe == name)
    return RECIPES[loc.recipe](loc.origin)
