"""Write a :class:`Network` as a nuPlan GeoPackage: WGS84 geometries, `meta` with the projected CRS.

Column names and SQLite types follow the maps nuplan-devkit v1.2.2 opens (reference §2 and §8); every layer is
written with pyogrio to a hidden temporary beside the target (`data.atomic`), then moved into place atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import shapely

from ...map.gpkg import MAPS_JSON
from ..atomic import atomic_write_text, hidden_temp, kill_point
from .roadnet import Network

# layer -> (geometry type, ((column, numpy dtype), ...))
LAYER_SCHEMA = {
    "baseline_paths": ("LineString", (("lane_fid", "f8"), ("lane_connector_fid", "f8"), ("path_type_fid", "i8"),
                                      ("creator_id", "i8"))),
    "boundaries": ("LineString", (("boundary_type_fid", "i8"), ("boundary_segment_fids", "O"), ("creator_id", "i8"))),
    "lanes_polygons": ("Polygon", (
        ("lane_fid", "i8"), ("lane_group_fid", "i8"), ("lane_index", "i8"), ("left_boundary_fid", "i8"),
        ("right_boundary_fid", "i8"), ("speed_limit_mps", "f8"), ("lane_type_fid", "i8"), ("from_edge_fid", "i8"),
        ("to_edge_fid", "i8"), ("creator_id", "i8"), ("name", "O"))),
    "lane_groups_polygons": ("Polygon", (
        ("left_boundary_fid", "i8"), ("right_boundary_fid", "i8"), ("from_edge_fid", "i8"), ("to_edge_fid", "i8"),
        ("creator_id", "i8"))),
    "lane_connectors": ("LineString", (
        ("exit_lane_fid", "i8"), ("entry_lane_fid", "i8"), ("exit_lane_group_fid", "i8"),
        ("entry_lane_group_fid", "i8"), ("lane_group_connector_fid", "i8"), ("intersection_fid", "i8"),
        ("traffic_light_stop_line_fids", "O"), ("turn_type_fid", "i8"), ("speed_limit_mps", "f8"),
        ("creator_id", "i8"))),
    "gen_lane_connectors_scaled_width_polygons": ("Polygon", (
        ("lane_connector_fid", "i8"), ("baseline_path_fid", "i8"), ("left_boundary_fid", "i8"),
        ("right_boundary_fid", "i8"))),
    "lane_group_connectors": ("Polygon", (
        ("from_lane_group_fid", "i8"), ("to_lane_group_fid", "i8"), ("intersection_fid", "i8"),
        ("left_boundary_fid", "i8"), ("right_boundary_fid", "i8"), ("creator_id", "i8"))),
    "intersections": ("Polygon", (("intersection_type_fid", "i8"), ("is_mini", "i8"), ("creator_id", "i8"))),
    "stop_polygons": ("Polygon", (("stop_polygon_type_fid", "i8"), ("lane_fids", "O"), ("lane_connector_fids", "O"),
                                  ("traffic_light_fids", "O"), ("creator_id", "i8"))),
    "crosswalks": ("Polygon", (("creator_id", "i8"),)),
    "walkways": ("Polygon", (("creator_id", "i8"),)),
    "road_segments": ("Polygon", (("lane_group_fids", "O"), ("creator_id", "i8"))),
    "generic_drivable_areas": ("Polygon", (("creator_id", "i8"),)),
    "carpark_areas": ("Polygon", (("heading", "f8"), ("creator_id", "i8"))),
}

# GeoPackage `last_change` timestamps come from this value, so that the same recipe gives the same bytes
_FIXED_DATE = "2021-05-12T00:00:00.000Z"


def _to_wgs84(geoms: np.ndarray, epsg: int) -> np.ndarray:
    import pyproj

    tr = pyproj.Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)

    def fn(xy):
        lon, lat = tr.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([lon, lat])

    return shapely.transform(geoms, fn)


def _write(path: Path, layers: dict, epsg: int, version: str) -> None:
    import pyogrio
    from pyogrio import raw

    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": _FIXED_DATE})
    first = True
    for name, (gtype, cols) in LAYER_SCHEMA.items():
        if name not in layers:
            continue
        feats = sorted(layers[name], key=lambda f: f.fid)
        geoms = _to_wgs84(np.array([f.geom for f in feats], dtype=object), epsg) if feats else np.array([], object)
        fields = [np.array([f.fid for f in feats], dtype=np.int64)]
        names = ["fid"]
        for col, dt in cols:
            vals = [f.attrs.get(col) for f in feats]
            if dt == "f8":
                arr = np.array([np.nan if v is None else float(v) for v in vals], dtype=np.float64)
            elif dt == "i8":
                arr = np.array([0 if v is None else int(v) for v in vals], dtype=np.int64)
            else:
                arr = np.array(["" if v is None else str(v) for v in vals], dtype=object)
            fields.append(arr)
            names.append(col)
        raw.write(path, shapely.to_wkb(geoms) if len(feats) else np.array([], dtype=object), fields, names,
                  layer=name, driver="GPKG", geometry_type=gtype, crs="EPSG:4326", append=not first)
        first = False
    raw.write(path, None, [np.array([1, 2], dtype=np.int64), np.array(["projectedCoordSystem", "version"], object),
                           np.array([f"epsg:{epsg}", version], dtype=object)], ["fid", "key", "value"],
              layer="meta", driver="GPKG", geometry_type=None, crs=None, append=True)


def write_gpkg(net: Network, path: str | Path, epsg: int, version: str) -> Path:
    """Write the network's layers and `meta` to `path` atomically (a hidden temporary in the same folder, then
    rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = hidden_temp(path, suffix=".gpkg")  # GDAL wants the extension; it creates the file itself
    os.unlink(tmp)
    try:
        _write(tmp, net.layers, epsg, version)
        kill_point("gpkg")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_stub_gpkg(path: str | Path, epsg: int, version: str) -> Path:
    """A stub map (an empty `lane_connectors` layer and `meta`): enough for nuplan-devkit to start (reference §8)."""
    import pyogrio
    from pyogrio import raw

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = hidden_temp(path, suffix=".gpkg")
    os.unlink(tmp)
    try:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": _FIXED_DATE})
        raw.write(tmp, np.array([], dtype=object), [np.array([], dtype=np.int64), np.array([], dtype=np.int64)],
                  ["fid", "exit_lane_fid"], layer="lane_connectors", driver="GPKG", geometry_type="LineString",
                  crs="EPSG:4326")
        raw.write(tmp, None, [np.array([1, 2], dtype=np.int64),
                              np.array(["projectedCoordSystem", "version"], object),
                              np.array([f"epsg:{epsg}", version], dtype=object)], ["fid", "key", "value"],
                  layer="meta", driver="GPKG", geometry_type=None, crs=None, append=True)
        kill_point("gpkg")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


# The four nuPlan locations the devkit insists on (reference §0 and §8)
NUPLAN_LOCATIONS = {
    "sg-one-north": ("9.17.1964", 32648),
    "us-ma-boston": ("9.12.1817", 32619),
    "us-nv-las-vegas-strip": ("9.15.1915", 32611),
    "us-pa-pittsburgh-hazelwood": ("9.17.1937", 32617),
}


def write_maps_json(maps_root: str | Path, locations: dict[str, str]) -> Path:
    """nuplan-maps-v1.0.json listing `locations` ({name: version}) plus the four standard ones."""
    maps_root = Path(maps_root)
    data = {name: {"version": ver, "layers": {}} for name, (ver, _) in NUPLAN_LOCATIONS.items()}
    for name, ver in sorted(locations.items()):
        data[name] = {"version": ver, "layers": {}}
    return atomic_write_text(maps_root / MAPS_JSON, json.dumps(data, indent=1, sort_keys=True))
