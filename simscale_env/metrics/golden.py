"""Loading scenes in the format of NAVSIM golden EPDMS cases ("epdms-navsim-golden/1", see
tests/fixtures/golden/README.md) and checking the engine against them (`simscale check-epdms`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import shapely

from ..errors import CorruptFileError, MissingFileError, SchemaError
from ..sim.idm import box_corners
from .constants import SUB_METRICS
from .epdms import ScoringScene, human_past_for_hc, score_states

AGENT_TYPES = ("VEHICLE", "PEDESTRIAN", "BICYCLE")  # nuplan tracked_objects_types.AGENT_TYPES
DISCRETE = ("no_at_fault_collisions", "drivable_area_compliance", "driving_direction_compliance",
            "traffic_light_compliance", "time_to_collision_within_bound", "lane_keeping", "history_comfort")


def load_cases(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise MissingFileError(path, "golden cases file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(path, f"not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or "scenes" not in data:
        raise SchemaError(path, "expected an object with 'scenes' (format epdms-navsim-golden/1)")
    return data


def scene_from_case(case: dict) -> ScoringScene:
    objs = case["map"]["objects"]
    ids = tuple(str(o["id"]) for o in objs)
    types = tuple(o["type"] for o in objs)
    polys = tuple(shapely.Polygon(o["polygon"]) for o in objs)
    route = frozenset(str(i) for i in case["route_lane_ids"])
    by_id = dict(zip(ids, polys))
    steps = case["agents"]
    T = len(steps)
    tokens: list[str] = []
    first: dict[str, dict] = {}
    for k in range(T):
        for a in steps[k]:
            if a["track_id"] not in first:
                first[a["track_id"]] = a
                tokens.append(a["track_id"])
    M = len(tokens)
    col = {t: i for i, t in enumerate(tokens)}
    corners = np.zeros((T, M, 4, 2))
    valid = np.zeros((T, M), dtype=bool)
    for k in range(T):
        for a in steps[k]:
            j = col[a["track_id"]]
            corners[k, j] = box_corners(a["x"], a["y"], a["heading"], a["length"], a["width"])[0]
            valid[k, j] = True
    red = []
    for k in range(T):
        lights = case["traffic_lights"][k] if k < len(case["traffic_lights"]) else []
        red.append(tuple((str(int(l["lane_connector_id"])), by_id[str(int(l["lane_connector_id"]))])
                         for l in lights if l["status"] == "RED" and str(int(l["lane_connector_id"])) in route))
    past = case.get("human_past_trajectory")
    hist = None
    if past:
        hist = human_past_for_hc(np.array(past["states"]), np.array(past["time_us"]))
    return ScoringScene(
        map_ids=ids, map_types=types, map_polygons=polys, route_lane_ids=route,
        centerline=np.array([[p[0], p[1]] for p in case["centerline"]], dtype=np.float64),
        obj_tokens=tuple(tokens), obj_is_agent=np.array([first[t]["type"] in AGENT_TYPES for t in tokens], dtype=bool),
        obj_heading=np.array([first[t]["heading"] for t in tokens], dtype=np.float64),
        obj_speed=np.array([np.hypot(first[t]["vx"], first[t]["vy"]) for t in tokens], dtype=np.float64),
        obj_corners=corners, obj_valid=valid, red_light_polygons=tuple(red), human_past_states=hist,
        name=case.get("name", ""))


def check_cases(path: str | Path) -> dict:
    """Score every case of a golden file with the engine; returns per-metric agreement counts and mismatches."""
    data = load_cases(path)
    fields = list(SUB_METRICS[:-1]) + ["pdm_score"]
    agree = {f: 0 for f in fields}
    mismatches = []
    n_props = 0
    for case in data["scenes"]:
        scene = scene_from_case(case)
        states = np.array([p["states"] for p in case["proposals"]], dtype=np.float64)
        scores = score_states(scene, states)
        pdm = scores.pdm_score()
        for i, out in enumerate(case["navsim_outputs"]):
            n_props += 1
            for f in fields:
                mine = float(pdm[i]) if f == "pdm_score" else float(getattr(scores, f)[i])
                ref = float(out[f])
                ok = mine == ref if f in DISCRETE else abs(mine - ref) <= 1e-6
                if ok:
                    agree[f] += 1
                else:
                    mismatches.append({"scene": case["name"], "proposal": i,
                                       "name": case["proposals"][i].get("name", ""), "metric": f, "engine": mine,
                                       "navsim": ref})
    return {"cases": len(data["scenes"]), "proposals": n_props, "agree": agree, "mismatches": mismatches}
