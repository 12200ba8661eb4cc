"""nuPlan GeoPackage maps: loading and reprojection, the lane graph, route centrelines and spatial queries."""

from .map_api import Area, Lane, MapAPI, MapLayer, Roadblock, clear_map_cache, load_map
from .polyline import Polyline

__all__ = ["Area", "Lane", "MapAPI", "MapLayer", "Polyline", "Roadblock", "clear_map_cache", "load_map"]
