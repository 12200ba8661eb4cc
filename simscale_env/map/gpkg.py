"""GeoPackage I/O for nuPlan maps (nuplan/database/maps_db/gpkg_mapsdb.py semantics).

A map is `maps_root/nuplan-maps-v1.0.json` plus `maps_root/<location>/<version>/map.gpkg`. Each layer is read with
pyogrio (`fid` as the object id, cast to str as the devkit does) and reprojected from the layer's stored CRS
(WGS84 in the shipped maps) to the projected CRS named by the `meta` layer's `projectedCoordSystem` row.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely

from ..errors import CorruptFileError, MapError, MissingFileError, SchemaError

MAPS_JSON = "nuplan-maps-v1.0.json"  # nuPlan maps root layout (nuplan-devkit docs/dataset_setup.md)

# Layers built eagerly by the devkit for every lane/connector/roadblock (nuplan/common/maps/nuplan_map/nuplan_map.py
# _vector_layer_mapping; reference nuplan-format.md §8) and the columns each needs.
REQUIRED_LAYERS: dict[str, tuple[str, ...]] = {
    "lanes_polygons": ("lane_fid", "lane_group_fid", "lane_index", "left_boundary_fid", "right_boundary_fid",
                       "speed_limit_mps"),
    "baseline_paths": ("lane_fid", "lane_connector_fid"),
    "boundaries": (),
    "lane_connectors": ("exit_lane_fid", "entry_lane_fid", "lane_group_connector_fid",
                        "traffic_light_stop_line_fids", "speed_limit_mps"),
    "gen_lane_connectors_scaled_width_polygons": ("lane_connector_fid", "left_boundary_fid", "right_boundary_fid"),
    "lane_groups_polygons": (),
    "lane_group_connectors": ("from_lane_group_fid", "to_lane_group_fid", "intersection_fid"),
    "intersections": (),
    "stop_polygons": ("stop_polygon_type_fid",),
}
# Columns the lane graph and roadblocks are built from (map_api.MapAPI._build): a NULL there would silently drop
# an edge of the graph (a connector without its exit lane, a lane outside every roadblock), so it is a MapError.
# lanes_polygons' fid is the lane id; speed limits, boundaries, intersections, turn types and stop lines may be NULL.
NOT_NULL_COLUMNS: dict[str, tuple[str, ...]] = {
    "lanes_polygons": ("lane_group_fid", "lane_index"),
    "lane_connectors": ("exit_lane_fid", "entry_lane_fid", "lane_group_connector_fid"),
    "gen_lane_connectors_scaled_width_polygons": ("lane_connector_fid",),
    "lane_group_connectors": ("from_lane_group_fid", "to_lane_group_fid"),
}
# Read when present (drivable area, crosswalk and walkway queries); an empty layer stands in when absent.
OPTIONAL_LAYERS = ("crosswalks", "walkways", "road_segments", "generic_drivable_areas", "carpark_areas")


@dataclass(frozen=True)
class Layer:
    """One layer: ids (str of fid), projected shapely geometries, and attribute columns as numpy arrays."""

    name: str
    fids: np.ndarray  # [N] <U ids
    geoms: np.ndarray  # [N] shapely geometries (projected)
    fields: dict

    def __len__(self) -> int:
        return len(self.fids)

    def column(self, name: str) -> np.ndarray:
        return self.fields[name]

    def id_column(self, name: str) -> list[str | None]:
        """An integer-valued *_fid column as str ids (None where null/NaN), as the devkit compares them."""
        return [_fid_str(v) for v in self.fields[name]]


def _fid_str(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = v.strip()
        if v == "":
            return None
        try:
            return str(int(float(v)))
        except (ValueError, OverflowError):  # not a number, or inf
            return v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if np.isnan(f):
        return None
    return str(int(f)) if np.isfinite(f) else str(f)  # an infinite id matches nothing


def read_maps_json(maps_root: str | Path) -> dict:
    root = Path(maps_root)
    p = root / MAPS_JSON
    if not root.exists():
        raise MissingFileError(root, "maps root not found (set NUPLAN_MAPS_ROOT or pass maps_root)")
    if not p.exists():
        raise MissingFileError(p, "maps index not found; a nuPlan maps root holds nuplan-maps-v1.0.json")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(p, f"not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CorruptFileError(p, "expected a JSON object {location: {version, layers}}")
    return data


def resolve_map_file(maps_root: str | Path, location: str, version: str | None = None) -> Path:
    """Path of `<location>/<version>/map.gpkg`; the version defaults to the one in the maps JSON."""
    index = read_maps_json(maps_root)
    if location not in index:
        raise MapError(Path(maps_root) / MAPS_JSON,
                       f"unknown map location '{location}'; known: {', '.join(sorted(index))}")
    listed = index[location].get("version") if isinstance(index[location], dict) else None
    version = version or listed
    if not version:
        raise MapError(Path(maps_root) / MAPS_JSON, f"location '{location}' has no 'version'")
    path = Path(maps_root) / location / version / "map.gpkg"
    if not path.exists():
        have = sorted(p.name for p in (Path(maps_root) / location).glob("*")) if (Path(maps_root) / location).is_dir() else []
        raise MapError(path, f"unknown map version '{version}' of '{location}' (found versions: {have or 'none'})")
    return path


def _check_gpkg(path: Path) -> None:
    if not path.exists():
        raise MissingFileError(path, "GeoPackage not found")
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head != b"SQLite format 3\x00":
        raise CorruptFileError(path, "not a GeoPackage (no SQLite header)")


def list_layers(path: str | Path) -> dict[str, str | None]:
    import pyogrio

    path = Path(path)
    _check_gpkg(path)
    try:
        return {str(n): (None if t is None else str(t)) for n, t in pyogrio.list_layers(path)}
    except Exception as exc:
        raise CorruptFileError(path, f"cannot list GeoPackage layers ({exc})") from exc


def read_meta(path: str | Path) -> dict[str, str]:
    """The key/value `meta` layer."""
    from pyogrio import raw

    path = Path(path)
    layers = list_layers(path)
    if "meta" not in layers:
        raise SchemaError(path, "GeoPackage has no 'meta' layer (expected key/value rows with projectedCoordSystem)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta, _fids, _geom, fields = raw.read(path, layer="meta", read_geometry=False, return_fids=True)
    except Exception as exc:  # pyogrio/GDAL errors on a damaged file
        raise CorruptFileError(path, f"cannot read layer 'meta' ({exc})") from exc
    names = [str(n) for n in meta["fields"]]
    if "key" not in names or "value" not in names:
        raise SchemaError(path, "layer 'meta' lacks the 'key'/'value' columns")
    keys, values = fields[names.index("key")], fields[names.index("value")]
    return {str(k): ("" if v is None else str(v)) for k, v in zip(keys, values)}


def projected_crs(path: str | Path) -> str:
    """The `meta` layer's projectedCoordSystem, checked: a CRS pyproj knows, and a projected one (metres)."""
    import pyproj

    meta = read_meta(path)
    if "projectedCoordSystem" not in meta:
        raise SchemaError(path, "layer 'meta' has no 'projectedCoordSystem' row")
    value = meta["projectedCoordSystem"].strip()
    expected = "expected a projected CRS such as 'epsg:32611' (the map's UTM zone)"
    if not value:
        raise MapError(path, f"meta projectedCoordSystem is empty; {expected}")
    try:
        crs = pyproj.CRS.from_user_input(value)
    except pyproj.exceptions.CRSError as exc:
        raise MapError(path, f"meta projectedCoordSystem '{value[:80]}' is not a known CRS ({exc}); {expected}") \
            from None
    if not crs.is_projected:
        raise MapError(path, f"meta projectedCoordSystem '{value[:80]}' ({crs.name}) is not a projected CRS; "
                             f"{expected}")
    return value


_TRANSFORMERS: dict = {}


def _transformer(src: str, dst: str):
    import pyproj

    key = (src.lower(), dst.lower())
    if key not in _TRANSFORMERS:
        _TRANSFORMERS[key] = pyproj.Transformer.from_crs(src, dst, always_xy=True)
    return _TRANSFORMERS[key]


def reproject(geoms: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Reproject shapely geometries (vectorized over all coordinates)."""
    import pyproj

    if pyproj.CRS.from_user_input(src) == pyproj.CRS.from_user_input(dst):
        return geoms
    tr = _transformer(src, dst)

    def fn(xy):
        x, y = tr.transform(xy[:, 0], xy[:, 1], errcheck=True)
        return np.column_stack([x, y])

    return shapely.transform(geoms, fn)


def null_rows(layer: Layer, column: str) -> np.ndarray:
    """Indices of the rows whose `column` is NULL (NaN in a float column, None/NaN/blank in an object column)."""
    a = layer.fields[column]
    if a.dtype.kind == "f":
        return np.flatnonzero(np.isnan(a))
    if a.dtype.kind == "O":
        return np.flatnonzero([v is None or (isinstance(v, float) and np.isnan(v)) or
                               (isinstance(v, str) and not v.strip()) for v in a])
    return np.zeros(0, dtype=np.int64)  # integer columns hold no NULLs


def check_ids(path: str | Path, layer: Layer) -> None:
    """MapError naming the file, layer, column and rows if a float-typed *_fid column holds a non-integer (1.5, inf):
    ids are integers, stored as REAL in some devkit layers (baseline_paths). NULL (NaN) is left to check_not_null."""
    for col, a in layer.fields.items():
        if not col.endswith("_fid") or a.dtype.kind != "f":
            continue
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(np.isinf(a) | (np.isfinite(a) & (a != np.round(a))))
        if len(bad):
            fids = ", ".join(str(f) for f in layer.fids[bad[:5]]) + (", ..." if len(bad) > 5 else "")
            raise MapError(path, f"layer '{layer.name}', column '{col}' holds {float(a[bad[0]])} in {len(bad)} "
                                 f"row(s) (fid {fids}); expected an integer id")


def check_not_null(path: str | Path, layer: Layer, columns) -> None:
    """MapError naming the file, layer, column and the first offending rows (by fid) if any of `columns` is NULL."""
    for col in columns:
        bad = null_rows(layer, col)
        if len(bad):
            fids = ", ".join(str(f) for f in layer.fids[bad[:5]]) + (", ..." if len(bad) > 5 else "")
            raise MapError(path, f"layer '{layer.name}', column '{col}' is NULL in {len(bad)} row(s) (fid {fids}); "
                                 f"the lane graph needs an id there")


def read_layer(path: str | Path, layer: str, dst_crs: str, *, required: tuple[str, ...] = (),
               layers: dict | None = None) -> Layer:
    """Read one layer, reprojected to `dst_crs`. Missing layer or column -> SchemaError naming both."""
    from pyogrio import raw

    path = Path(path)
    layers = list_layers(path) if layers is None else layers
    if layer not in layers:
        raise SchemaError(path, f"GeoPackage lacks the required layer '{layer}'")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta, fids, geom, fields = raw.read(path, layer=layer, return_fids=True)
    except Exception as exc:
        raise CorruptFileError(path, f"cannot read layer '{layer}' ({exc})") from exc
    names = [str(n) for n in meta["fields"]]
    for col in required:
        if col not in names:
            raise SchemaError(path, f"layer '{layer}' lacks the required column '{col}'")
    if geom is None:
        geoms = np.array([None] * len(fids), dtype=object)
    else:
        import pyproj

        crs = meta.get("crs")
        if not crs:
            raise SchemaError(path, f"layer '{layer}' declares no CRS")
        try:
            geoms = shapely.from_wkb(geom)
        except shapely.errors.GEOSException as exc:
            raise CorruptFileError(path, f"layer '{layer}' holds unreadable geometries ({exc})") from exc
        empty = np.flatnonzero(shapely.is_missing(geoms))
        if len(empty):
            fids_s = ", ".join(str(int(f)) for f in fids[empty[:5]]) + (", ..." if len(empty) > 5 else "")
            raise CorruptFileError(path, f"layer '{layer}' has {len(empty)} NULL or unreadable geometries "
                                         f"(fid {fids_s})")
        try:
            geoms = reproject(geoms, crs, dst_crs)
        except pyproj.exceptions.ProjError as exc:  # CRSError included
            raise CorruptFileError(path, f"layer '{layer}' cannot be reprojected from its CRS '{str(crs)[:80]}' to "
                                         f"'{dst_crs}' ({exc})") from exc
    return Layer(layer, np.array([str(int(f)) for f in fids], dtype=object), geoms,
                 {n: f for n, f in zip(names, fields)})


def empty_layer(name: str) -> Layer:
    return Layer(name, np.array([], dtype=object), np.array([], dtype=object), {})
