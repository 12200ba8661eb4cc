"""Pseudo-simulation of plans (reactive vs non-reactive agents) and closed-loop episode summaries on the mini data."""

import numpy as np
import pytest

from simscale_env.map import load_map
from simscale_env.metrics.epdms import ego_coords
from simscale_env.metrics.geometry import boxes_overlap
from simscale_env.metrics.pseudo_sim import episode_summary, plan_states, pseudo_simulate, scoring_scene
from simscale_env.sim import SimConfig, Simulation

# the ego waits at a red light (mini "waiting_for_pedestrian_to_cross"); the mini dataset's generated traffic leaves
# nobody behind it, so a vehicle is added to its log 13 m behind the rear axle in the ego's lane at 3.8 m/s
FOLLOWER_SCENE = "908f77e47ad844ad"
FOLLOWER_GAP_M, FOLLOWER_SPEED = 13.0, 3.8


def _with_follower(sc):
    """`sc` with a logged vehicle (category 0) driving straight along the ego's heading at FOLLOWER_SPEED, its centre
    FOLLOWER_GAP_M behind the ego's rear axle at iteration 0, valid at every frame."""
    import dataclasses

    ag, e, f0 = sc.agents, sc.ego, sc.start_index
    T = ag.valid.shape[0]
    h = float(e.heading[f0])
    t = (np.asarray(sc.timestamps_us, dtype=np.float64) - float(sc.timestamps_us[f0])) * 1e-6
    d = -FOLLOWER_GAP_M + FOLLOWER_SPEED * t
    col = {"x": float(e.x[f0]) + d * np.cos(h), "y": float(e.y[f0]) + d * np.sin(h), "z": np.zeros(T),
           "heading": np.full(T, h), "vx": np.full(T, FOLLOWER_SPEED * np.cos(h)),
           "vy": np.full(T, FOLLOWER_SPEED * np.sin(h)), "length": np.full(T, 4.6), "width": np.full(T, 1.9),
           "height": np.full(T, 1.6)}
    kw = {f: getattr(ag, f) for f in ag.__dataclass_fields__}
    for f, v in col.items():
        kw[f] = np.concatenate([getattr(ag, f), np.asarray(v, dtype=getattr(ag, f).dtype)[:, None]], axis=1)
    kw["valid"] = np.concatenate([ag.valid, np.ones((T, 1), dtype=bool)], axis=1)
    kw["category"] = np.append(ag.category, np.array([0], dtype=ag.category.dtype))
    kw["track_tokens"] = tuple(ag.track_tokens) + ("follower0000000",)
    if ag.log_order is not None:
        kw["log_order"] = np.concatenate([ag.log_order, np.full((T, 1), -1, dtype=ag.log_order.dtype)], axis=1)
    return dataclasses.replace(sc, agents=type(ag)(**kw))


@pytest.fixture(scope="module")
def follower_sim(mini, mini_builder):
    sc = _with_follower(mini_builder.load(FOLLOWER_SCENE))
    return Simulation(sc, load_map(sc.map_location, mini / "maps"), SimConfig(agent_mode="reactive"))


def _straight(speed, n=8, dt=0.5):
    s = speed * dt * np.arange(1, n + 1)
    return np.stack([s, 0 * s, 0 * s], -1)


def _follower_token(scene, sim):
    ag = sim.scenario.agents
    ego = sim.reset().ego
    for m, tok in enumerate(scene.obj_tokens):
        c = scene.obj_corners[0, m].mean(0)
        dx, dy = c[0] - ego[0], c[1] - ego[1]
        lon = np.cos(ego[2]) * dx + np.sin(ego[2]) * dy
        lat = -np.sin(ego[2]) * dx + np.cos(ego[2]) * dy
        if -25 < lon < -4 and abs(lat) < 1 and ag.category[list(ag.track_tokens).index(tok)] == 0:
            return tok
    raise AssertionError("no follower")


def test_reactive_agents_react_to_the_plan_and_replayed_ones_do_not(follower_sim):
    sim = follower_sim
    w = sim.reset()
    stop = plan_states(w, np.zeros((1, 8, 3)))[0]
    go = plan_states(w, _straight(6.0)[None])[0]
    scenes = {(mode, name): scoring_scene(sim, w, ego_states=st, agent_mode=mode)
              for mode in ("reactive", "non_reactive") for name, st in (("stop", stop), ("go", go))}
    tok = _follower_token(scenes["non_reactive", "stop"], sim)
    col = {k: sc.obj_tokens.index(tok) for k, sc in scenes.items()}
    # replayed traffic ignores the ego plan
    a, b = scenes["non_reactive", "stop"], scenes["non_reactive", "go"]
    assert np.array_equal(a.obj_corners, b.obj_corners)
    # the IDM follower behind a stopped ego brakes and keeps a gap; behind a departing ego it travels further
    travel = {}
    for k in ("stop", "go"):
        sc, m = scenes["reactive", k], col["reactive", k]
        assert sc.obj_valid[:, m].all()
        travel[k] = np.linalg.norm(sc.obj_corners[-1, m].mean(0) - sc.obj_corners[0, m].mean(0))
    assert travel["stop"] < travel["go"] - 3.0
    ego_q = np.ascontiguousarray(ego_coords(stop[None])[..., :4, :])
    rs, m = scenes["reactive", "stop"], col["reactive", "stop"]
    hits = boxes_overlap(ego_q, rs.obj_corners[:, m:m + 1], rs.obj_valid[:, m:m + 1])
    assert len(hits[0]) == 0
    gap = np.min(np.linalg.norm(rs.obj_corners[-1, m][:, None] - ego_q[0, -1][None], axis=-1))
    assert gap > 1.0


def test_pseudo_simulate_scores_both_modes_and_checks_input(follower_sim):
    sim = follower_sim
    w = sim.reset()
    plans = np.stack([np.zeros((8, 3)), _straight(6.0)])
    for mode in ("non_reactive", "reactive"):
        scores, states = pseudo_simulate(sim, w, plans, agent_mode=mode)
        assert states.shape == (2, 41, 11) and len(scores) == 2
        assert scores.no_at_fault_collisions[0] == 1.0  # stopped ego is never at fault
        assert scores.progress_raw[1] > scores.progress_raw[0] + 10
        # the ego waits at a red light: going runs it (TLC 0), so no compliant plan progresses 5 m and EP is 1
        # for both (NAVSIM's normalisation rule)
        assert scores.traffic_light_compliance.tolist() == [1.0, 0.0]
        assert scores.ego_progress.tolist() == [1.0, 1.0]
        assert scores.pdm_score()[1] == 0.0
    with pytest.raises(ValueError, match="NaN"):
        pseudo_simulate(sim, w, np.full((8, 3), np.nan))
    with pytest.raises(ValueError, match="shape"):
        pseudo_simulate(sim, w, np.zeros((8, 2)))


def _rollout(sim, ego_states):
    w = sim.reset(ego_states[0])
    worlds = [w]
    for st in ego_states[1:]:
        w = sim.step(w, ego_state=st)
        worlds.append(w)
    return worlds


def test_episode_summary_of_the_logged_drive_and_of_leaving_the_road(mini, mini_builder):
    sc = mini_builder.load("b40fd3ef802da69b")  # ego driving at 4.7 m/s along its lane
    sim = Simulation(sc, load_map(sc.map_location, mini / "maps"), SimConfig(agent_mode="non_reactive"))
    n = 41
    logged = np.stack([sim.logged_ego_state(i) for i in range(n)])
    s = episode_summary(sim, _rollout(sim, logged))
    assert s["steps"] == n
    assert s["no_at_fault_collisions"] == 1.0 and s["drivable_area_compliance"] == 1.0
    assert s["ego_progress"] == pytest.approx(1.0, abs=1e-6) and s["human_progress_m"] > 6.0
    assert s["epdms"] > 0.8
    # the same drive sliding 12 m sideways off the road
    off = logged.copy()
    lat = np.linspace(0.0, 12.0, n)
    off[:, 0] += -np.sin(logged[:, 2]) * lat
    off[:, 1] += np.cos(logged[:, 2]) * lat
    s2 = episode_summary(sim, _rollout(sim, off))
    assert s2["drivable_area_compliance"] == 0.0 and s2["off_road"] and s2["epdms"] == 0.0
    with pytest.raises(ValueError, match="at least two"):
        episode_summary(sim, [sim.reset()])


def test_reactive_reference_plan_is_scored_against_each_plans_traffic(follower_sim):
    """NAVSIM (evaluate/pdm_score.py) simulates the agents once, reacting to the agent's plan, and scores PDM-Closed's
    reference beside it in that traffic: EP of plan i is normalised by the reference scored in plan i's scene."""
    from simscale_env.metrics.epdms import score_states

    sim = follower_sim
    w = sim.reset()
    plans = np.stack([np.zeros((8, 3)), _straight(3.0)])
    ref = _straight(6.0)
    scores, states = pseudo_simulate(sim, w, plans, agent_mode="reactive", reference_plan=ref)
    ref_states = plan_states(w, ref[None], lqr=sim.config.lqr)
    for i in range(2):
        scene = scoring_scene(sim, w, ego_states=states[i], agent_mode="reactive")
        r = score_states(scene, ref_states)
        want = score_states(scene, states[i:i + 1],
                            progress_reference=(float(r.progress_raw[0]), float(r.multiplicative_metrics_prod[0])))
        assert scores.ego_progress[i] == want.ego_progress[0]
        assert scores.pdm_score()[i] == want.pdm_score()[0]
    # batched and one at a time agree
    one, _ = pseudo_simulate(sim, w, plans[1:], agent_mode="reactive", reference_plan=ref)
    assert one.pdm_score()[0] == scores.pdm_score()[1]


def test_scoring_on_pdm_closeds_repaired_route(oracle_mini_dir):
    """`route_roadblock_ids`: the on-route lanes (DDC) and the centreline come from the given route, the red lights
    from the scenario's own (as NAVSIM's metric cache). On the golden scenes the route PDM-Closed repairs gives
    NAVSIM's `metric_cache.route_lane_ids` (the file's `route_lane_ids`); in three of them (the ego waits before
    the logged route's first roadblock) the logged route does not."""
    import json

    from simscale_env.experts.route_correction import route_roadblock_correction
    from simscale_env.golden.oracle import GoldenFolder
    from simscale_env.golden import GoldenScenes
    from simscale_env.metrics.navsim_cache import frame_ego_state, navsim_frames

    folder = oracle_mini_dir
    scenes = json.loads((folder / "navsim_scores_nonreactive.json").read_text())["scenes"]
    opened = GoldenScenes(GoldenFolder.open(folder))
    differs = 0
    for tok, s in scenes.items():
        frames, cur = navsim_frames(opened.frames(s["log"]), tok)
        sim = opened.simulation(s["log"], tok)
        world = sim.reset(ego_state=frame_ego_state(frames[cur]))
        route = route_roadblock_correction(sim.map, world.ego[:3], sim.scenario.route_roadblock_ids)
        logged = scoring_scene(sim, world, agent_mode="non_reactive")
        fixed = scoring_scene(sim, world, agent_mode="non_reactive", route_roadblock_ids=route)
        assert fixed.route_lane_ids == frozenset(s["route_lane_ids"]), tok
        assert fixed.red_light_polygons == logged.red_light_polygons
        np.testing.assert_array_equal(fixed.centerline, sim.map.route_centerline(route, tuple(world.ego[:3])).xy)
        differs += logged.route_lane_ids != frozenset(s["route_lane_ids"])
    assert differs == 3


def test_multiplicative_only_scores_equal_the_full_ones(follower_sim):
    """score_states(multiplicative_only=True) (the env's per-step reward of the driven 0.5 s): NC, DAC, DDC, TLC and
    the collision time as the full scoring gives them, the rest NaN."""
    from simscale_env.metrics.epdms import score_states

    sim = follower_sim
    w = sim.reset()
    plans = np.stack([np.zeros((8, 3)), _straight(6.0), _straight(3.0) + [0.0, 2.5, 0.3]])
    scene = scoring_scene(sim, w, agent_mode="non_reactive")
    states = plan_states(w, plans)
    full = score_states(scene, states)
    part = score_states(scene, states, multiplicative_only=True)
    for k in ("no_at_fault_collisions", "drivable_area_compliance", "driving_direction_compliance",
              "traffic_light_compliance", "time_to_at_fault_collision_s"):
        assert getattr(part, k).tobytes() == getattr(full, k).tobytes(), k
    assert full.traffic_light_compliance.tolist() == [1.0, 0.0, 0.0]  # something to compare
    for k in ("ego_progress", "time_to_collision_within_bound", "lane_keeping", "history_comfort", "progress_raw"):
        assert np.isnan(getattr(part, k)).all(), k


def _sightings_reference(frames):
    """NAVSIM's unique_objects as a loop over every sighting (the reference `_sightings` vectorises)."""
    T, tracks, seen = len(frames), [], {}
    for fr in frames:
        for k, tr in enumerate(fr.track):
            if tr not in seen:
                seen[tr] = (fr, k)
                tracks.append(int(tr))
    col = {t: i for i, t in enumerate(tracks)}
    corners, valid = np.zeros((T, len(tracks), 4, 2)), np.zeros((T, len(tracks)), dtype=bool)
    for t, fr in enumerate(frames):
        if len(fr):
            idx = np.array([col[int(x)] for x in fr.track])
            corners[t, idx] = fr.corners()
            valid[t, idx] = True
    heading = np.array([seen[t][0].heading[seen[t][1]] for t in tracks])
    speed = np.array([np.hypot(seen[t][0].vx[seen[t][1]], seen[t][0].vy[seen[t][1]]) for t in tracks])
    return tracks, corners, valid, heading, speed


@pytest.mark.parametrize("mode", ["reactive", "constant_velocity"])
def test_sightings_equal_the_loop_over_every_sighting(mini, mode):
    import gymnasium as gym

    from simscale_env.metrics.pseudo_sim import _sightings

    env = gym.make("SimScale-navhard-v0", disable_env_checker=True, observation_keys=("ego_status",),
                   pseudo_experts=False, plan_scoring=None, valid_start=False, agent_mode=mode).unwrapped
    obs, info = env.reset(seed=1)
    for _ in range(6):
        obs, r, term, trunc, info = env.step(info["logged_plan"])
        if term or trunc:
            break
    frames = env._frames
    for part in (frames, frames[:6], frames[-4:], []):
        want, got = _sightings_reference(part), _sightings(part)
        assert want[0] == got[0]
        for a, b in zip(want[1:], got[1:]):
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    assert len(_sightings(frames)[0]) > 5


def _threads_vs_one_loop(mini_root: str) -> dict:
    """Every score of 70 proposals around the follower scene scored in one part (one thread) and in parts on two
    threads (PARALLEL_MIN_ROWS lowered to 1, 4 parts): which fields differ, and how many proposals the scores separate
    (so that the comparison compares something)."""
    import dataclasses
    from pathlib import Path

    import numba

    from simscale_env.data import ScenarioBuilder
    from simscale_env.metrics import epdms

    root = Path(mini_root)
    sc = _with_follower(ScenarioBuilder(root / "nuplan-v1.1" / "splits" / "mini").load(FOLLOWER_SCENE))
    sim = Simulation(sc, load_map(sc.map_location, root / "maps"), SimConfig(agent_mode="reactive"))
    w = sim.reset()
    rng = np.random.default_rng(0)
    speeds = rng.uniform(0.0, 12.0, 70)
    plans = np.stack([_straight(v) + [0.0, y, 0.1 * y] for v, y in zip(speeds, rng.normal(0.0, 1.5, 70))])
    scene = scoring_scene(sim, w, agent_mode="non_reactive")
    states = plan_states(w, plans)
    previous = states[::-1]
    before, min_rows, split = numba.get_num_threads(), epdms.PARALLEL_MIN_ROWS, epdms.score_parts
    try:
        numba.set_num_threads(1)
        serial = [epdms.score_states(scene, states, previous_states=previous),
                  epdms.score_states(scene, states, multiplicative_only=True)]
        numba.set_num_threads(2)
        epdms.PARALLEL_MIN_ROWS = 1
        epdms.score_parts = lambda n: split(n) and [(0, 9), (9, 30), (30, 31), (31, n)]
        parts = epdms.score_parts(len(plans))
        par = [epdms.score_states(scene, states, previous_states=previous),
               epdms.score_states(scene, states, multiplicative_only=True)]
    finally:
        numba.set_num_threads(before)
        epdms.PARALLEL_MIN_ROWS = min_rows
        epdms.score_parts = split
    return {"parts": parts, "default_parts": split(16384) if numba.get_num_threads() == 2 else None,
            "differ": [f.name for a, b in zip(serial, par) for f in dataclasses.fields(a)
                       if getattr(a, f.name).tobytes() != getattr(b, f.name).tobytes()],
            "ttc_below_1": int(np.sum(serial[0].time_to_collision_within_bound < 1)),
            "nc_below_1": int(np.sum(serial[0].no_at_fault_collisions < 1)),
            "off_road": int(np.sum(serial[0].drivable_area_compliance < 1)),
            "progress_normalised": bool(np.all(serial[0].ego_progress >= 0) and serial[0].ego_progress.max() == 1.0)}


def test_many_proposals_on_threads_score_as_one_part(mini):
    """From epdms.PARALLEL_MIN_ROWS proposals on, `score_states` scores contiguous parts of the proposals on as many
    Python threads as numba has (GIL-free kernels): every score equals the one-part scores (here 4 uneven parts of
    70 proposals, EC against previous states, EP normalised jointly over all parts, and the multiplicative-only
    mode). Where this process's numba has one thread (NUMBA_NUM_THREADS=1), the comparison runs in a child with
    two."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import numba

    if numba.config.NUMBA_NUM_THREADS >= 2:
        got = _threads_vs_one_loop(str(mini))
    else:
        root = Path(__file__).resolve().parents[2]
        code = ("import json, sys; from tests.metrics.test_pseudo_sim import _threads_vs_one_loop; "
                "print(json.dumps(_threads_vs_one_loop(sys.argv[1])))")
        r = subprocess.run([sys.executable, "-c", code, str(mini)], cwd=root, capture_output=True, text=True,
                           env={**os.environ, "NUMBA_NUM_THREADS": "2"}, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        got = json.loads(r.stdout.strip().splitlines()[-1])
    assert [tuple(p) for p in got["parts"]] == [(0, 9), (9, 30), (30, 31), (31, 70)]
    if got["default_parts"] is not None:  # 16,384 proposals on 2 threads: 8 parts of 2,048
        assert [tuple(p) for p in got["default_parts"]] == [(2048 * i, 2048 * (i + 1)) for i in range(8)]
    assert got["differ"] == []
    assert got["progress_normalised"]
    assert 0 < got["ttc_below_1"] + got["nc_below_1"] < 70 and got["off_road"] > 0  # something to compare


def test_tracks_touching_the_ego_at_the_start_are_the_shapely_overlaps(follower_sim):
    """`scene_from_frames` marks the tracks whose box meets the ego box at t0 (ignored by NC and TTC) after a bounds
    prefilter: a box overlapping the ego, one whose bounds meet the ego's but which misses it (a diamond off a
    corner), and one far away; the marked set is what shapely finds over every box."""
    import shapely

    from simscale_env.metrics.pseudo_sim import scene_from_frames
    from simscale_env.sim.world import Objects, ego_box

    sim = follower_sim
    w = sim.reset()
    eb = ego_box(w.ego)
    c, h = eb.mean(axis=0), float(w.ego[2])
    u, v = np.array([np.cos(h), np.sin(h)]), np.array([-np.sin(h), np.cos(h)])
    front_left = eb[np.argmax(eb @ u + eb @ v)]  # the corner furthest forward-left
    centres = np.array([c + 1.0 * u, front_left + 1.6 * (u + v) / np.sqrt(2), c + 60.0 * u])
    n = len(centres)
    heads = np.array([h, h + np.pi / 4, h])
    frame = Objects(track=np.arange(n), category=np.zeros(n, np.int64), x=centres[:, 0], y=centres[:, 1],
                    heading=heads, vx=np.zeros(n), vy=np.zeros(n), length=np.full(n, 2.0), width=np.full(n, 2.0),
                    height=np.full(n, 1.5), reactive=np.zeros(n, bool))
    corners = frame.corners()
    lo, hi = eb.min(0), eb.max(0)
    d_lo, d_hi = corners[1].min(0), corners[1].max(0)
    assert (d_hi >= lo).all() and (d_lo <= hi).all()  # the diamond's bounds meet the ego box's
    scene = scene_from_frames(sim, w, [frame], past_states=np.zeros((0, 11)))
    hit = shapely.intersects(shapely.polygons(corners), shapely.Polygon(eb))
    expected = {sim.scenario.agents.track_tokens[i] for i in np.nonzero(hit)[0]}
    assert hit.tolist() == [True, False, False]
    assert scene.collided_track_ids == frozenset(expected)
