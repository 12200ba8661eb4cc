"""Write generated traffic as a genuine nuPlan log database (every table and column of the published schema).

- `lidar_pc` at 20 Hz is the master clock; the 10 Hz generator frames are interpolated in between.
- `ego_pose` is the rear axle of a Pacifica (1.461 m behind the box centre), velocities and accelerations in the
  ego frame, one row per lidar_pc.
- `scene` rows every 5 s with route roadblock ids (space-separated, as the devkit splits them) and a goal ego pose.
- `scenario_tag` rows from simple miners over the ego trajectory, on 2 Hz keyframes (every 10th lidar_pc), so a
  tag token is also a NAVSIM/OpenScene keyframe token.
- `traffic_light_status` per signalised connector and lidar_pc; `camera` rows for the 8-camera rig; `image` rows
  at 10 Hz (the JPEGs themselves are not part of the mini dataset: cameras are rendered from Gaussians).

The file is written to a hidden temporary beside the target (`data.atomic`: no finder reads it) and renamed into
place.
"""

from __future__ import annotations

import os
import pickle
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely

from ...geometry import quaternion_from_yaw, wrap_angle
from ...map.map_api import MapAPI
from ..atomic import hidden_temp, kill_point
from ..schema import CAMERA_CHANNELS, CATEGORIES, LIDAR_CHANNEL, NUPLAN_SCHEMA, PEDESTRIAN, TRAFFIC_LIGHT_NAMES, \
    VEHICLE, create_table_sql
from .roadnet import TURN_LEFT, TURN_RIGHT, TURN_STRAIGHT
from .traffic import EGO_REAR_TO_CENTER, Frame

LIDAR_HZ = 20
SCENE_S = 5.0

# The camera rig of the mini logs: (channel, yaw deg, pitch deg (down +), translation in the rear-axle frame)
CAMERA_RIG = (
    ("CAM_F0", 0.0, 2.0, (1.75, 0.0, 1.62)),
    ("CAM_B0", 180.0, 2.0, (-0.95, 0.0, 1.70)),
    ("CAM_L0", 55.0, 2.0, (1.60, 0.50, 1.62)),
    ("CAM_L1", 100.0, 2.0, (0.85, 0.95, 1.65)),
    ("CAM_L2", 145.0, 2.0, (0.05, 0.85, 1.65)),
    ("CAM_R0", -55.0, 2.0, (1.60, -0.50, 1.62)),
    ("CAM_R1", -100.0, 2.0, (0.85, -0.95, 1.65)),
    ("CAM_R2", -145.0, 2.0, (0.05, -0.85, 1.65)),
)
CAMERA_SIZE = (1920, 1080)
CAMERA_FOCAL = 1545.0  # px, about 64 degrees of horizontal field of view at 1920 px


def camera_rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Camera->ego rotation (OpenCV camera: x right, y down, z forward) for a camera looking at `yaw`, pitched
    down by `pitch`."""
    from ...geometry import matrix_to_quaternion

    y, p = np.radians(yaw_deg), np.radians(pitch_deg)
    fwd = np.array([np.cos(y) * np.cos(p), np.sin(y) * np.cos(p), -np.sin(p)])
    right = np.array([np.sin(y), -np.cos(y), 0.0])
    down = np.cross(fwd, right)
    return matrix_to_quaternion(np.stack([right, down, fwd], axis=1))


@dataclass
class TagSpec:
    """Timing constraints of tags: inside the valid scenes, with the full 15 s window in the log."""

    t_min: float
    t_max: float


def _interp_frames(frames: list[Frame], n_lidar: int):
    """Per-lidar_pc object rows (dict of arrays) from 10 Hz frames: even rows copy a frame, odd rows interpolate
    objects present in both neighbours."""
    out = []
    for i in range(n_lidar):
        k = i // 2
        f0 = frames[k]
        if i % 2 == 0 or k + 1 >= len(frames):
            out.append({"track": f0.tracks, "cat": f0.cat, "xy": f0.xy, "heading": f0.heading, "vel": f0.vel,
                        "size": f0.size})
            continue
        f1 = frames[k + 1]
        common, a, b = np.intersect1d(f0.tracks, f1.tracks, return_indices=True)
        h = f0.heading[a] + 0.5 * wrap_angle(f1.heading[b] - f0.heading[a])
        out.append({"track": common, "cat": f0.cat[a], "xy": 0.5 * (f0.xy[a] + f1.xy[b]),
                    "heading": wrap_angle(h), "vel": 0.5 * (f0.vel[a] + f1.vel[b]), "size": f0.size[a]})
    return out


def _ego_series(frames: list[Frame], n_lidar: int) -> dict[str, np.ndarray]:
    t10 = np.arange(len(frames)) * 0.1
    e = np.array([f.ego for f in frames])
    t20 = np.arange(n_lidar) / LIDAR_HZ
    hu = np.unwrap(e[:, 2])
    x = np.interp(t20, t10, e[:, 0])
    y = np.interp(t20, t10, e[:, 1])
    h = np.interp(t20, t10, hu)
    v = np.interp(t20, t10, e[:, 3])
    a = np.gradient(v, t20)
    a = np.convolve(np.pad(a, 2, mode="edge"), np.ones(5) / 5, mode="valid")
    w = np.gradient(h, t20)
    w = np.convolve(np.pad(w, 2, mode="edge"), np.ones(5) / 5, mode="valid")
    # rear axle from the box centre
    rx = x - EGO_REAR_TO_CENTER * np.cos(h)
    ry = y - EGO_REAR_TO_CENTER * np.sin(h)
    return {"x": rx, "y": ry, "heading": wrap_angle(h), "v": v, "ax": a, "ay": v * w, "yaw_rate": w,
            "cx": x, "cy": y}


def mine_tags(frames: list[Frame], map_api: MapAPI, tag_spec: TagSpec, crosswalks) -> list[tuple[int, str, int | None]]:
    """Scenario tags as (10 Hz frame index, type, agent track or None), on keyframes (every 5th frame)."""
    lanes = map_api.lanes
    n = len(frames)
    v = np.array([f.ego[3] for f in frames])
    acc = np.array([f.ego[4] for f in frames])
    hu = np.unwrap(np.array([f.ego[2] for f in frames]))
    yaw_rate = np.gradient(hu, 0.1)
    lat_acc = v * yaw_rate
    feats = []
    for k, f in enumerate(frames):
        ex, ey, eh = f.ego[:3]
        c, s = np.cos(eh), np.sin(eh)
        rel = f.xy - [ex, ey]
        lx = rel[:, 0] * c + rel[:, 1] * s
        ly = -rel[:, 0] * s + rel[:, 1] * c
        dist = np.hypot(lx, ly)
        is_veh = f.cat == VEHICLE
        dh = np.abs(wrap_angle(f.heading - eh))
        not_ego = dist > 0.5
        lead_mask = is_veh & not_ego & (lx > 2.5) & (lx < 40) & (np.abs(ly) < 1.8) & (dh < np.radians(30))
        lead = int(np.argmin(np.where(lead_mask, lx, np.inf))) if lead_mask.any() else -1
        peds = (f.cat == PEDESTRIAN) & (lx > 0) & (lx < 25) & (np.abs(ly) < 12)
        ped_in_cw = False
        for p in np.nonzero(peds)[0]:
            if any(shapely.contains_xy(cw, *f.xy[p]) for cw in crosswalks):
                ped_in_cw = True
                break
        elem = lanes[f.ego_elem]
        feats.append({
            "lead": lead, "lead_dist": lx[lead] if lead >= 0 else np.inf,
            "lead_len": f.size[lead, 0] if lead >= 0 else 0.0,
            "lead_track": int(f.tracks[lead]) if lead >= 0 else None,
            "near8": int((is_veh & not_ego & (dist < 8)).sum()), "near15": int((is_veh & not_ego & (dist < 15)).sum()),
            "ped_cw": ped_in_cw, "conn": elem.is_connector, "turn": elem.turn_type if elem.is_connector else None,
            "light": elem.has_traffic_light, "elem": f.ego_elem, "lc": f.ego_lane_change,
        })
    rules = {
        "following_lane_with_lead": lambda k, F: v[k] > 3 and F["lead_dist"] < 30 and not F["conn"] and not F["lc"],
        "stopping_with_lead": lambda k, F: acc[k] < -0.6 and 0.5 < v[k] < 9 and F["lead_dist"] < 25
        and k + 30 < n and v[k + 30] < 0.5,
        "stationary_in_traffic": lambda k, F: v[k] < 0.1 and F["near15"] >= 3 and F["lead_dist"] < 15,
        "near_multiple_vehicles": lambda k, F: F["near15"] >= 5 and v[k] > 0.3,
        "behind_long_vehicle": lambda k, F: F["lead_len"] > 8.0 and 3 < F["lead_dist"] < 25,
        "changing_lane": lambda k, F: F["lc"] and not feats[max(0, k - 5)]["lc"],
        "starting_left_turn": lambda k, F: F["turn"] == TURN_LEFT and any(
            not feats[j]["conn"] for j in range(max(0, k - 10), k)),
        "starting_right_turn": lambda k, F: F["turn"] == TURN_RIGHT and any(
            not feats[j]["conn"] for j in range(max(0, k - 10), k)),
        "starting_straight_traffic_light_intersection_traversal": lambda k, F: F["turn"] == TURN_STRAIGHT
        and F["light"] and any(not feats[j]["conn"] for j in range(max(0, k - 10), k))
        and np.min(v[max(0, k - 60):k + 1]) < 0.5,
        "high_lateral_acceleration": lambda k, F: abs(lat_acc[k]) > 1.8 and v[k] > 5,
        "high_magnitude_speed": lambda k, F: v[k] > 13.0,
        "low_magnitude_speed": lambda k, F: 0.3 < np.mean(v[max(0, k - 5):k + 6]) < 1.2,
        "waiting_for_pedestrian_to_cross": lambda k, F: v[k] < 0.3 and F["ped_cw"],
    }
    agent_types = {"following_lane_with_lead", "stopping_with_lead", "behind_long_vehicle"}
    tags = []
    for typ, rule in rules.items():
        last = -1e9
        count = 0
        for k in range(0, n, 5):  # keyframes: every 10th lidar_pc = every 5th frame
            t = k * 0.1
            if t < tag_spec.t_min or t > tag_spec.t_max:
                continue
            # a turn counts from the frame before the connector: look 1 s ahead for "starting" types
            kk = k
            if typ.startswith("starting_"):
                hits = [j for j in range(k, min(n, k + 10)) if rule(j, feats[j])]
                if not hits:
                    continue
            elif not rule(kk, feats[kk]):
                continue
            if t - last < 3.0 or count >= 3:
                continue
            last = t
            count += 1
            tags.append((k, typ, feats[k]["lead_track"] if typ in agent_types else None))
    return tags


def _tok(rng, used: set) -> bytes:
    while True:
        b = rng.bytes(8)
        if b not in used:
            used.add(b)
            return b


def write_log_db(path: str | Path, *, log_name: str, location: str, city: str, epsg: int, start_us: int,
                 frames: list[Frame], track_meta: dict, ego_track: int, ego_future_elems: list[str],
                 map_api: MapAPI, crosswalks, seed: int, duration_s: float) -> dict:
    """Write one log; returns a summary (tags, counts)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 7_000_003)
    used: set = set()
    n_lidar = int(round(duration_s * LIDAR_HZ))
    ts = start_us + np.arange(n_lidar, dtype=np.int64) * (1_000_000 // LIDAR_HZ)
    objs = _interp_frames(frames, n_lidar)
    ego = _ego_series(frames, n_lidar)

    tmp = hidden_temp(path)
    os.unlink(tmp)
    conn = sqlite3.connect(tmp)
    try:
        cur = conn.cursor()
        for table in NUPLAN_SCHEMA:
            cur.execute(create_table_sql(table))
        log_tok = _tok(rng, used)
        cur.execute("INSERT INTO log VALUES (?,?,?,?,?,?,?)",
                    (log_tok, "veh-90", log_name[:10].replace(".", "-"), int(start_us), log_name, city, location))
        # categories
        cat_tok = {}
        for name in CATEGORIES:
            cat_tok[name] = _tok(rng, used)
            cur.execute("INSERT INTO category VALUES (?,?,?)", (cat_tok[name], name, f"{name} category"))
        # tracks (not the ego) that appear in the written frames
        present = set()
        for o in objs:
            present.update(int(t) for t in o["track"])
        track_tok = {}
        for t, meta in sorted(track_meta.items()):
            if t == ego_track or t not in present:
                continue
            track_tok[t] = _tok(rng, used)
            cur.execute("INSERT INTO track VALUES (?,?,?,?,?)", (track_tok[t], cat_tok[CATEGORIES[meta["category"]]],
                                                                  float(meta["width"]), float(meta["length"]),
                                                                  float(meta["height"])))
        # sensors
        lidar_tok = _tok(rng, used)
        cur.execute("INSERT INTO lidar VALUES (?,?,?,?,?,?)", (lidar_tok, log_tok, LIDAR_CHANNEL, "merged",
                                                               pickle.dumps([1.5, 0.0, 1.8]),
                                                               pickle.dumps([1.0, 0.0, 0.0, 0.0])))
        cam_tok = {}
        for ch, yaw, pitch, tr in CAMERA_RIG:
            cam_tok[ch] = _tok(rng, used)
            K = [[CAMERA_FOCAL, 0.0, CAMERA_SIZE[0] / 2], [0.0, CAMERA_FOCAL, CAMERA_SIZE[1] / 2], [0.0, 0.0, 1.0]]
            q = [float(v) for v in camera_rotation(yaw, pitch)]
            cur.execute("INSERT INTO camera VALUES (?,?,?,?,?,?,?,?,?,?)", (
                cam_tok[ch], log_tok, ch, "simscale-pinhole", pickle.dumps(list(tr)), pickle.dumps(q),
                pickle.dumps(K), pickle.dumps([0.0, 0.0, 0.0, 0.0, 0.0]), CAMERA_SIZE[0], CAMERA_SIZE[1]))
        # ego poses and lidar_pcs
        ep_tok = [_tok(rng, used) for _ in range(n_lidar)]
        lp_tok = [_tok(rng, used) for _ in range(n_lidar)]
        q = quaternion_from_yaw(ego["heading"])
        cur.executemany("INSERT INTO ego_pose VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", [
            (ep_tok[i], int(ts[i]) + 250, float(ego["x"][i]), float(ego["y"][i]), 0.0, float(q[i, 0]), 0.0, 0.0,
             float(q[i, 3]), float(ego["v"][i]), 0.0, 0.0, float(ego["ax"][i]), float(ego["ay"][i]), 0.0, 0.0, 0.0,
             float(ego["yaw_rate"][i]), int(epsg), log_tok) for i in range(n_lidar)])
        # scenes
        per_scene = int(SCENE_S * LIDAR_HZ)
        n_scenes = int(np.ceil(n_lidar / per_scene))
        scene_tok = [_tok(rng, used) for _ in range(n_scenes)]
        ego_rb = []  # roadblock id per 10 Hz frame
        for f in frames:
            ego_rb.append(map_api.lanes[f.ego_elem].roadblock_id)
        future_rb = [map_api.lanes[e].roadblock_id for e in ego_future_elems]
        for j in range(n_scenes):
            i0 = j * per_scene
            k0 = max(0, (i0 - 5 * LIDAR_HZ) // 2)
            route: list[str] = []
            for rb in ego_rb[k0:] + future_rb:
                if not route or route[-1] != rb:
                    if rb not in route:
                        route.append(rb)
            goal_i = min(n_lidar - 1, i0 + per_scene + 15 * LIDAR_HZ)
            cur.execute("INSERT INTO scene VALUES (?,?,?,?,?)", (scene_tok[j], log_tok, f"scene-{j:04d}",
                                                                 ep_tok[goal_i], " ".join(route)))
        cur.executemany("INSERT INTO lidar_pc VALUES (?,?,?,?,?,?,?,?)", [
            (lp_tok[i], lp_tok[i + 1] if i + 1 < n_lidar else None, lp_tok[i - 1] if i > 0 else None, ep_tok[i],
             lidar_tok, scene_tok[i // per_scene], f"{log_name}/MergedPointCloud/{lp_tok[i].hex()}.pcd", int(ts[i]))
            for i in range(n_lidar)])
        # boxes, chained per track
        box_rows = []
        prev_box: dict[int, tuple[int, bytes]] = {}
        row_index: dict[bytes, int] = {}
        for i, o in enumerate(objs):
            for k in range(len(o["track"])):
                t = int(o["track"][k])
                if t == ego_track:
                    continue
                btok = _tok(rng, used)
                L, W, H = (float(v) for v in o["size"][k])
                prev = prev_box.get(t)
                prev_tok = prev[1] if prev is not None and prev[0] == i - 1 else None
                box_rows.append([btok, lp_tok[i], track_tok[t], None, prev_tok, float(o["xy"][k, 0]),
                                 float(o["xy"][k, 1]), H / 2, W, L, H, float(o["vel"][k, 0]), float(o["vel"][k, 1]),
                                 0.0, float(o["heading"][k]), 1.0])
                row_index[btok] = len(box_rows) - 1
                if prev_tok is not None:
                    box_rows[row_index[prev_tok]][3] = btok
                prev_box[t] = (i, btok)
        cur.executemany("INSERT INTO lidar_box VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", box_rows)
        # traffic lights
        tl_rows = []
        for i in range(n_lidar):
            lights = frames[min(i // 2, len(frames) - 1)].lights
            for cid in sorted(lights):
                tl_rows.append((_tok(rng, used), lp_tok[i], int(cid), TRAFFIC_LIGHT_NAMES[lights[cid]]))
        cur.executemany("INSERT INTO traffic_light_status VALUES (?,?,?,?)", tl_rows)
        # images at 10 Hz
        img_rows = []
        for ch, *_ in CAMERA_RIG:
            toks = [_tok(rng, used) for _ in range(0, n_lidar, 2)]
            for j, i in enumerate(range(0, n_lidar, 2)):
                img_rows.append((toks[j], toks[j + 1] if j + 1 < len(toks) else None, toks[j - 1] if j > 0 else None,
                                 ep_tok[i], cam_tok[ch], f"{log_name}/{ch}/{toks[j].hex()}.jpg", int(ts[i]) + 1000))
        cur.executemany("INSERT INTO image VALUES (?,?,?,?,?,?,?)", img_rows)
        # scenario tags on keyframes of the valid scenes, with the whole 15 s window inside the log
        valid_t0 = 2 * SCENE_S
        valid_t1 = min((n_scenes - 2) * SCENE_S - 0.05, duration_s - 12.0 - 0.05)
        tags = mine_tags(frames[: n_lidar // 2 + 1], map_api, TagSpec(valid_t0, valid_t1), crosswalks)
        tag_rows = []
        for k, typ, agent in tags:
            i = 2 * k
            tag_rows.append((_tok(rng, used), lp_tok[i], typ, track_tok.get(agent) if agent is not None else None))
        cur.executemany("INSERT INTO scenario_tag VALUES (?,?,?,?)", tag_rows)
        for sql in (
            "CREATE INDEX idx_lidar_pc_timestamp ON lidar_pc (timestamp)",
            "CREATE INDEX idx_lidar_box_lidar_pc_token ON lidar_box (lidar_pc_token)",
            "CREATE INDEX idx_lidar_box_track_token ON lidar_box (track_token)",
            "CREATE INDEX idx_traffic_light_status_lidar_pc_token ON traffic_light_status (lidar_pc_token)",
            "CREATE INDEX idx_image_timestamp ON image (timestamp)",
            "CREATE INDEX idx_scenario_tag_lidar_pc_token ON scenario_tag (lidar_pc_token)",
        ):
            cur.execute(sql)
        kill_point("db")  # test hook (data.atomic): interrupted mid-transaction
        conn.commit()
        conn.close()
        os.replace(tmp, path)
    finally:
        try:
            conn.close()
        except Exception:
            pass
        if os.path.exists(tmp):
            os.unlink(tmp)
    counts = {}
    for t, meta in track_meta.items():
        if t in track_tok:
            counts[CATEGORIES[meta["category"]]] = counts.get(CATEGORIES[meta["category"]], 0) + 1
    return {"tags": [(typ, int(2 * k)) for k, typ, _ in tags], "tracks": counts, "lidar_pcs": n_lidar}
