"""The mini dataset's humans obey the rules (issue 13): the logged human of every scene of every mini split scores 1
on NC, DAC, DDC, TLC and HC without NAVSIM's human filter; no generated vehicle enters a connector on red or
stands past a stop line on red; generated manoeuvres stay inside EPDMS's comfort bounds."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from simscale_env.data import LogDB
from simscale_env.data.openscene import load_split
from simscale_env.data.scenario import extract_scenario
from simscale_env.data.schema import TL_RED, VEHICLE
from simscale_env.map import load_map
from simscale_env.metrics import constants as C
from simscale_env.metrics.epdms import comfort_checks, score_states
from simscale_env.metrics.pseudo_sim import scoring_scene
from simscale_env.sim import SimConfig, Simulation
from simscale_env.sim.state import make_state

SPLITS = ("mini-navtrain", "mini-navtest", "mini-navhard")
HARD_COLUMNS = ("no_at_fault_collisions", "drivable_area_compliance", "driving_direction_compliance",
                "traffic_light_compliance", "history_comfort")
HISTORY_S = 1.5  # NAVSIM: 4 history frames at 2 Hz before the current one
HORIZON_STEPS = 40  # 4 s at 0.1 s
PACIFICA_REAR_TO_FRONT = 4.049  # rear axle to front bumper (nuPlan's Pacifica)


@pytest.fixture(scope="session")
def human_scores(mini) -> dict[str, dict[str, dict[str, float]]]:
    """{split: {token: {column: score}}}: the logged human of each NAVSIM scene (current frame = the token, 1.5 s of
    logged past for HC), scored non-reactively as a submitted plan with no human filter. Each token is scored once
    (mini-navhard is a subset of mini-navtest)."""
    logs = sorted((mini / "nuplan-v1.1" / "splits" / "mini").glob("*.db"))
    specs = {s: load_split(mini / "splits" / f"{s}.yaml") for s in SPLITS}
    wanted = {t for spec in specs.values() for t in spec.tokens}
    scores: dict[str, dict[str, float]] = {}
    for p in logs:
        with LogDB(p) as db:
            tokens = [t for t in db.lidar_pc_tokens if t in wanted]
            if not tokens:
                continue
            m = load_map(db.map_location, mini / "maps")
            for tok in tokens:
                sc = extract_scenario(db, tok, offset_s=0.0, history_s=HISTORY_S,
                                      duration_s=(HORIZON_STEPS + 5) * 0.1)
                sim = Simulation(sc, m, SimConfig(agent_mode="non_reactive"))
                world = sim.reset()
                scene = scoring_scene(sim, world, agent_mode="non_reactive")
                states = np.stack([sim.logged_ego_state(i) for i in range(HORIZON_STEPS + 1)])[None]
                s = score_states(scene, states)
                scores[tok] = {c: float(getattr(s, c)[0]) for c in HARD_COLUMNS}
    return {name: {t: scores[t] for t in spec.tokens} for name, spec in specs.items()}


@pytest.mark.parametrize("split", SPLITS)
def test_the_logged_human_of_every_scene_scores_1_without_the_human_filter(human_scores, split):
    scenes = human_scores[split]
    assert len(scenes) >= 5, f"{split}: {len(scenes)} scenes"
    failing = {t: {c: v for c, v in s.items() if v < 1.0} for t, s in scenes.items() if min(s.values()) < 1.0}
    assert not failing, f"{split}: {len(failing)} of {len(scenes)} human scenes below 1: {failing}"


def _red_by_frame(db, idx) -> dict[int, set[str]]:
    tl = db.traffic_lights(idx)
    red: dict[int, set[str]] = {}
    for f, c, st in zip(tl["frame"], tl["lane_connector_id"], tl["status"]):
        if st == TL_RED:
            red.setdefault(int(f), set()).add(str(c))
    return red


def _stop_lines(m) -> dict[str, tuple[shapely.LineString, float]]:
    """Signalised connector -> (its stop line: across its start, one lane wide; its start heading)."""
    out = {}
    for lid, lane in m.lanes.items():
        if not (lane.is_connector and lane.has_traffic_light):
            continue
        x, y, h = lane.baseline.interpolate(0.0)
        n = np.array([-np.sin(h), np.cos(h)]) * 1.75
        out[lid] = (shapely.LineString([(x + n[0], y + n[1]), (x - n[0], y - n[1])]), float(h))
    return out


def _front(x, y, h, d):
    return np.stack([x + np.cos(h) * d, y + np.sin(h) * d], -1)


def _violations(fronts, heads, speeds, tracks, frames, red, lines):
    """(entered on red, standing past a stop line on red): front-bumper points [K, 2] of vehicles over 10 Hz frames.
    Entering: the front crosses the stop line of a connector red at either end of the 0.1 s step, heading along it.
    Standing: at < 0.3 m/s, the front 0 to 5 m past the stop line of a red connector, heading along it."""
    entered, standing = [], []
    order = np.lexsort((frames, tracks))
    fr, tr, pts, hd, sp = frames[order], tracks[order], fronts[order], heads[order], speeds[order]
    same = (tr[1:] == tr[:-1]) & (fr[1:] == fr[:-1] + 1)
    for i in np.nonzero(same)[0]:
        reds = red.get(int(fr[i]), set()) | red.get(int(fr[i + 1]), set())
        if not reds:
            continue
        step = shapely.LineString([pts[i], pts[i + 1]]) if np.any(pts[i] != pts[i + 1]) else None
        for cid in reds:
            line, h = lines[cid]
            if abs((hd[i] - h + np.pi) % (2 * np.pi) - np.pi) > 0.6:
                continue
            if step is not None and step.intersects(line):
                entered.append((str(tr[i]), int(fr[i]), cid))
    for i in range(len(fr)):
        if sp[i] >= 0.3:
            continue
        for cid in red.get(int(fr[i]), set()):
            line, h = lines[cid]
            if abs((hd[i] - h + np.pi) % (2 * np.pi) - np.pi) > 0.6:
                continue
            c = np.asarray(line.centroid.coords[0])
            rel = pts[i] - c
            along = rel @ np.array([np.cos(h), np.sin(h)])
            across = rel @ np.array([-np.sin(h), np.cos(h)])
            if 0.0 < along < 5.0 and abs(across) < 1.5:
                standing.append((str(tr[i]), int(fr[i]), cid))
    return entered, standing


def test_no_vehicle_enters_a_connector_on_red_or_stands_past_a_stop_line(mini_logs, mini):
    """Every vehicle of every log (the ego included), at 10 Hz."""
    checked = 0
    for p in mini_logs:
        with LogDB(p) as db:
            m = load_map(db.map_location, mini / "maps")
            lines = _stop_lines(m)
            if not lines:
                continue
            idx = np.arange(0, len(db.lidar_pc_timestamps), 2)
            red = _red_by_frame(db, idx)
            bx = db.boxes(idx)
            veh = bx["category"] == VEHICLE
            fronts = _front(bx["x"][veh], bx["y"][veh], bx["yaw"][veh], bx["length"][veh] / 2)
            speeds = np.hypot(bx["vx"][veh], bx["vy"][veh])
            e = db.ego_arrays(idx)
            ego_front = _front(e["x"], e["y"], e["heading"], PACIFICA_REAR_TO_FRONT)
            fronts = np.concatenate([fronts, ego_front])
            heads = np.concatenate([bx["yaw"][veh], e["heading"]])
            speeds = np.concatenate([speeds, np.hypot(e["vx"], e["vy"])])
            tracks = np.concatenate([bx["track"][veh], np.full(len(idx), "ego")])
            frames = np.concatenate([bx["frame"][veh], np.arange(len(idx))])
            entered, standing = _violations(fronts, heads, speeds, tracks, frames, red, lines)
            assert not entered, f"{p.name}: vehicles entered a connector on red (track, 10 Hz frame, connector): " \
                                f"{entered[:5]}"
            assert not standing, f"{p.name}: vehicles stand past a stop line on red: {standing[:5]}"
            checked += 1
    assert checked >= 4  # the signalised maps' logs


def test_the_detector_sees_a_red_light_runner_and_a_vehicle_standing_over_the_line():
    """The check above is not vacuous: a vehicle crossing a red stop line, and one standing 1 m past it."""
    lines = {"c": (shapely.LineString([(0.0, 1.75), (0.0, -1.75)]), 0.0)}
    red = {0: {"c"}, 1: {"c"}}
    fronts = np.array([[-0.5, 0.0], [0.6, 0.0], [1.0, 0.2], [1.0, 0.2]])
    entered, standing = _violations(fronts, np.zeros(4), np.array([5.0, 5.0, 0.0, 0.0]),
                                    np.array(["a", "a", "b", "b"]), np.array([0, 1, 0, 1]), red, lines)
    assert entered == [("a", 0, "c")]
    assert standing == [("b", 0, "c"), ("b", 1, "c")]


def _ego_states(db) -> np.ndarray:
    """The logged ego at 10 Hz as simulator states (rear axle; ego-frame velocity and acceleration)."""
    idx = np.arange(0, len(db.lidar_pc_timestamps), 2)
    e = db.ego_arrays(idx)
    return np.stack([make_state(e["x"][k], e["y"][k], e["heading"][k], velocity=e["vx"][k], acceleration=e["ax"][k],
                                velocity_y=e["vy"][k], acceleration_y=e["ay"][k], angular_velocity=e["yaw_rate"][k])
                     for k in range(len(idx))])


def test_the_logged_ego_is_comfortable_over_every_window_of_every_log(mini_logs):
    """EPDMS's comfort checks over every 5.5 s window (1.5 s past + 4 s: what HC of a scene sees), every 0.5 s."""
    bad = []
    for p in mini_logs:
        with LogDB(p) as db:
            st = _ego_states(db)
        starts = np.arange(0, len(st) - 56 + 1, 5)
        windows = np.stack([st[s:s + 56] for s in starts])
        ok = comfort_checks(windows).all(axis=-1)
        bad += [(p.name, round(float(s) * 0.1, 1)) for s in starts[~ok]]
    assert not bad, f"uncomfortable ego windows (log, start s): {bad[:10]} ({len(bad)} in all)"


def test_generated_vehicles_accelerate_and_turn_within_the_comfort_bounds(mini_logs):
    """Every agent vehicle's speed changes within EPDMS's longitudinal acceleration bounds and its heading within
    the yaw-rate bound (finite differences of its 10 Hz track, smoothed over 0.5 s as the comfort filters do)."""
    worst_acc, worst_dec, worst_yaw = 0.0, 0.0, 0.0
    for p in mini_logs:
        with LogDB(p) as db:
            idx = np.arange(0, len(db.lidar_pc_timestamps), 2)
            bx = db.boxes(idx)
        veh = bx["category"] == VEHICLE
        for t in np.unique(bx["track"][veh]):
            sel = veh & (bx["track"] == t)
            f = bx["frame"][sel]
            if len(f) < 8 or np.any(np.diff(f) != 1):
                continue
            v = np.hypot(bx["vx"][sel], bx["vy"][sel])
            h = np.unwrap(bx["yaw"][sel])
            k = np.ones(5) / 5
            a = np.convolve(np.gradient(v, 0.1), k, mode="valid")
            w = np.convolve(np.gradient(h, 0.1), k, mode="valid")
            worst_acc = max(worst_acc, float(a.max()))
            worst_dec = min(worst_dec, float(a.min()))
            worst_yaw = max(worst_yaw, float(np.abs(w).max()))
    assert C.MIN_LON_ACCEL < worst_dec and worst_acc < C.MAX_LON_ACCEL, (worst_dec, worst_acc)
    assert worst_yaw < C.MAX_ABS_YAW_RATE, worst_yaw
