"""NAVSIM's driving command from the route, as OpenScene computes it for NAVSIM's logs (OpenScene
DriveEngine/process_data/helpers/driving_command.py; reference nuplan-format.md §6): the route centreline from the
ego's lane, the centreline pose at
the ego's projection and the one `distance` metres further; left if the latter lies >= `lateral_offset` to the
left, right if <= -`lateral_offset`, else forward; unknown without a usable route.

NAVSIM first repairs broken routes (`route_roadblock_correction`); here a route whose roadblocks are unknown to
the map gives `unknown`. Differences from OpenScene: the starting lane is the one under the ego with the closest
heading (OpenScene takes the first containing lane, else the nearest), and the centreline search is not capped at
OpenScene's search_depth of 30 roadblocks.
"""

from __future__ import annotations

import numpy as np

from ..errors import MapError
from ..geometry import global_to_local

DRIVING_COMMAND_DISTANCE = 20.0
DRIVING_COMMAND_LATERAL = 2.0
LEFT, FORWARD, RIGHT, UNKNOWN = range(4)


def driving_command(map_api, route_roadblock_ids, pose, distance: float = DRIVING_COMMAND_DISTANCE,
                    lateral_offset: float = DRIVING_COMMAND_LATERAL) -> np.ndarray:
    """One-hot (left, forward, right, unknown) int array."""
    out = np.zeros(4, dtype=int)
    ids = list(dict.fromkeys(str(r) for r in route_roadblock_ids))
    try:
        if not ids:
            raise MapError(None, "empty route")
        line = map_api.route_centerline(ids, tuple(pose))
    except MapError:
        out[UNKNOWN] = 1
        return out
    s, _, _ = line.project([pose[:2]])
    cur, tgt = line.interpolate(np.array([s[0], s[0] + distance]))
    y = global_to_local(tgt[None], cur)[0, 1]
    out[LEFT if y >= lateral_offset else RIGHT if y <= -lateral_offset else FORWARD] = 1
    return out
