"""PDM-Closed's route repair at its first call: `route_roadblock_correction` of
navsim/planning/simulation/planner/pdm_planner/utils/route_utils.py (NAVSIM @ 0a380a9), with the roadblock BFS of
utils/graph_search/bfs_roadblock.py.

1. the ego's roadblock: roadblocks, then roadblock connectors, whose polygon meets the 2 x 2 m box around the rear
   axle (the devkit's `get_proximal_map_objects` with radius 1; the nearest of each layer if none), kept when one of
   their lanes has a baseline vertex within 3 m of the axle and a heading error below pi / 4 there (on-route ones
   preferred, then the smallest displacement);
2. an ego off the route: a backward BFS (depth 15) from the route's first roadblock to the candidates prepends the
   roadblocks between them, else a forward BFS (depth 30) from the ego's roadblock to one of the first three route
   roadblocks replaces the route up to it;
3. consecutive route roadblocks that are not linked get the roadblocks of a forward BFS (depth 30) between them;
4. the route is cut at the first roadblock connector overlapping (> 1 m^2) an earlier one (a loop).

A stopped ego whose rear axle still sits in the lane before the route's first roadblock (a vehicle waiting at a stop
line) thus plans from its own lane rather than from the first route lane ahead of it. NAVSIM's metric cache keeps
the corrected route (`metric_cache.route_lane_ids`) for scoring as well.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import shapely

from ..geometry import wrap_angle

# route_utils.py get_current_roadblock_candidates / route_roadblock_correction defaults
CANDIDATE_RADIUS = 1.0  # [m] half side of the query box (get_proximal_map_objects radius)
HEADING_ERROR_THRESH = np.pi / 4  # [rad]
DISPLACEMENT_ERROR_THRESH = 3.0  # [m]
SEARCH_DEPTH_BACKWARD = 15
SEARCH_DEPTH_FORWARD = 30
LOOP_AREA_THRESH = 1.0  # [m^2] remove_route_loops


def discrete_path(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A baseline's discrete path as the devkit gives it (nuplan_map/utils.py extract_discrete_polyline): the vertices,
    each with the heading towards its successor (the last one repeats the previous heading)."""
    seg = np.diff(xy, axis=0)
    h = np.arctan2(seg[:, 1], seg[:, 0])
    return xy, np.append(h, h[-1])


def _roadblock_candidates(m, pose, route_set) -> tuple[str, list[str]]:
    """get_current_roadblock_candidates: (most promising roadblock id, candidate ids)."""
    x, y, h = float(pose[0]), float(pose[1]), float(pose[2])
    r = CANDIDATE_RADIUS
    box = shapely.box(x - r, y - r, x + r, y + r)
    # the devkit lists the ROADBLOCK layer, then ROADBLOCK_CONNECTOR, each in layer order (as `m.roadblocks`)
    rbs = list(m.roadblocks.values())
    layers = ([rb for rb in rbs if not rb.is_connector], [rb for rb in rbs if rb.is_connector])
    cands = [rb for layer in layers for rb in layer if rb.polygon.intersects(box)]
    if not cands:
        p = shapely.Point(x, y)
        for layer in layers:
            if layer:
                d = [rb.polygon.distance(p) for rb in layer]
                cands.append(layer[int(np.argmin(d))])
    on_route, on_route_err, other, other_err = [], [], [], []
    rb_disp = []
    for rb in cands:
        best_disp = np.inf
        for lid in rb.lane_ids:
            bl = m.lanes[lid].baseline
            dist = np.hypot(bl.xy[:, 0] - x, bl.xy[:, 1] - y)
            k = int(np.argmin(dist))
            herr = abs(float(wrap_angle(discrete_path(bl.xy)[1][k] - h)))  # the devkit's discrete_path heading
            disp = float(dist[k])
            best_disp = min(best_disp, disp)
            if herr < HEADING_ERROR_THRESH and disp < DISPLACEMENT_ERROR_THRESH:
                if rb.id in route_set:
                    on_route.append(rb.id)
                    on_route_err.append(disp)
                else:
                    other.append(rb.id)
                    other_err.append(disp)
        rb_disp.append(best_disp)
    if on_route:
        return on_route[int(np.argmin(on_route_err))], on_route
    if other:
        return other[int(np.argmin(other_err))], other
    ids = [rb.id for rb in cands]
    return (ids[int(np.argmin(rb_disp))] if ids else None), ids


def _bfs(m, start: str, targets, max_depth: int, forward: bool = True) -> tuple[list[str], bool]:
    """BreadthFirstSearchRoadBlock.search: (roadblock ids of the path, found). A backward path runs from the found
    roadblock to `start`, a forward one from `start` to the found roadblock (as there)."""
    targets = set(targets)
    queue = deque([start, None])
    parent: dict[tuple[str, int], str | None] = {(start, 1): None}
    end, end_depth, depth = start, 1, 1
    found = False
    while queue:
        cur = queue.popleft()
        if depth > max_depth:
            break
        if cur is None:
            depth += 1
            queue.append(None)
            if queue[0] is None:
                break
            continue
        if cur in targets and depth <= max_depth:
            end, end_depth, found = cur, depth, True
            break
        rb = m.roadblocks[cur]
        for nxt in (rb.outgoing_ids if forward else rb.incoming_ids):
            if nxt not in m.roadblocks:
                continue
            queue.append(nxt)
            parent[(nxt, depth + 1)] = cur
            end, end_depth = nxt, depth + 1
    path = [end]
    d = end_depth
    while parent.get((end, d)) is not None:
        end = parent[(end, d)]
        path.append(end)
        d -= 1
    if forward:
        path.reverse()
    return path, found


def _remove_route_loops(m, route: list[str]) -> list[str]:
    seen = []
    for idx, rid in enumerate(route):
        rb = m.roadblocks[rid]
        if not rb.is_connector:
            continue
        if not seen:
            seen.append(rb.polygon)
            continue
        if any(shapely.intersection(g, rb.polygon).area > LOOP_AREA_THRESH for g in seen
               if shapely.intersects(shapely.envelope(g), shapely.envelope(rb.polygon))):
            return route[:idx]
        seen.append(rb.polygon)
    return route


def route_roadblock_correction(m, pose, route_roadblock_ids) -> list[str]:
    """The corrected route (roadblock ids) for a rear-axle `pose` (x, y, heading) on map `m`. Ids unknown to the
    map are dropped first (NAVSIM would fail on them)."""
    route = [r for r in dict.fromkeys(str(r) for r in route_roadblock_ids) if r in m.roadblocks]
    if not route:
        return route
    start, cands = _roadblock_candidates(m, pose, set(route))
    # Fix 1: an ego off the route
    if start is not None and start not in route:
        path, found = _bfs(m, route[0], cands, SEARCH_DEPTH_BACKWARD, forward=False)
        if found:
            route = path[:-1] + route
        else:
            path, found = _bfs(m, start, route[:3], SEARCH_DEPTH_FORWARD, forward=True)
            if found:
                end = route.index(path[-1])
                route = path + route[end + 1:]
    # Fix 2: link consecutive roadblocks that are not connected
    inserts = {}
    for i in range(len(route) - 1):
        if route[i] in m.roadblocks[route[i + 1]].incoming_ids:
            continue
        path, found = _bfs(m, route[i], [route[i + 1]], SEARCH_DEPTH_FORWARD, forward=True)
        if found and len(path) >= 3:
            inserts[i] = path[1:-1]
    offset = 1
    for i, path in inserts.items():
        route[i + offset:i + offset] = path
        offset += len(path)
    # Fix 3: cut loops
    return _remove_route_loops(m, route)


# abstract_pdm_planner.py _get_discrete_centerline(search_depth=30)
CENTERLINE_SEARCH_DEPTH = 30


def centerline_lanes(m, route_roadblock_ids, start_lane: str, search_depth: int = CENTERLINE_SEARCH_DEPTH) -> list[str]:
    """The lanes of PDM-Closed's centreline: `_get_discrete_centerline` with utils/graph_search/dijkstra.py.

    The target is the route roadblock `search_depth - 1` after the starting lane's (or the route's last); the search
    runs over every on-route lane and connector, an edge costing the length of the lane it enters. It stops at the
    first lane of the target popped; without one, the path ends at the expanded lane of the greatest depth (lanes
    from the start) with the smallest cost. Ties go to the earlier queue entry, as there."""
    route = list(dict.fromkeys(str(r) for r in route_roadblock_ids))
    candidates = set(m.route_lane_ids(route))
    rb0 = m.lanes[start_lane].roadblock_id
    start_idx = route.index(rb0) if rb0 in route else 0  # np.argmax of an all-False mask is 0
    window = route[start_idx:start_idx + search_depth]
    target = window[-1] if window else None
    queue, frontier, dist, depth = [start_lane], [start_lane], [1.0], [1]
    parent: dict[str, str | None] = {start_lane: None}
    expanded, expanded_set, expanded_dist, expanded_depth = [], set(), [], []
    end = start_lane
    found = False
    while queue:
        k = min(range(len(dist)), key=lambda i: (dist[i], i))
        cur, d, dep = queue[k], dist[k], depth[k]
        del queue[k], frontier[k], dist[k], depth[k]
        if m.lanes[cur].roadblock_id == target:
            end, found = cur, True
            break
        expanded.append(cur)
        expanded_set.add(cur)
        expanded_dist.append(d)
        expanded_depth.append(dep)
        for nxt in m.lanes[cur].outgoing_ids:
            if nxt not in candidates or nxt not in m.lanes:
                continue
            alt = d + m.lanes[nxt].length
            if nxt not in expanded_set and nxt not in frontier:
                parent[nxt] = cur
                queue.append(nxt)
                frontier.append(nxt)
                dist.append(alt)
                depth.append(dep + 1)
            elif nxt in frontier:
                i = frontier.index(nxt)
                if alt < dist[i]:
                    parent[nxt] = cur
                    dist[i] = alt
                    depth[i] = dep + 1
    if not found:
        top = max(expanded_depth)
        best = min((expanded_dist[i], i) for i in range(len(expanded)) if expanded_depth[i] == top)[1]
        end = expanded[best]
    path = [end]
    while parent[path[-1]] is not None:
        path.append(parent[path[-1]])
    return path[::-1]
