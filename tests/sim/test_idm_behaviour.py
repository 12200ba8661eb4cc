"""IDM agents on the mini maps: queues, red lights, replayed cyclists."""

import numpy as np
import pytest

from simscale_env.data.schema import BICYCLE
from simscale_env.map import load_map
from simscale_env.sim import SimConfig, Simulation
from simscale_env.sim.idm import IDMConfig, box_corners, spawn_agents, step_agents


def _boxes_on_lane(lane, arcs, speed, length=4.6, width=1.9):
    poses = lane.baseline.interpolate(np.asarray(arcs, dtype=float))
    n = len(arcs)
    return {"x": poses[:, 0], "y": poses[:, 1], "heading": poses[:, 2], "vx": np.full(n, speed) * np.cos(poses[:, 2]),
            "vy": np.full(n, speed) * np.sin(poses[:, 2]), "length": np.full(n, length), "width": np.full(n, width),
            "height": np.full(n, 1.6), "track": np.arange(n)}


def _run(m, agents, ego_xyh, steps, green=(), red=(), cfg=IDMConfig()):
    ego = box_corners(*ego_xyh, 5.176, 2.297)[0]
    hist = [agents]
    for _ in range(steps):
        agents = step_agents(m, agents, ego_corners=ego, ego_center=np.array(ego_xyh[:2]), ego_speed=0.0,
                             ego_heading=ego_xyh[2], object_corners=np.zeros((0, 4, 2)), green_ids=green, red_ids=red,
                             config=cfg)
        hist.append(agents)
    return hist


def test_queue_behind_a_stopping_leader_keeps_the_gap(mini):
    m = load_map("us-ma-boston", mini / "maps")
    lane = m.lane("20082")  # eastbound lane ending at the map edge: the leader stops at the end of its path
    arcs = [200.0, 175.0, 150.0, 125.0, 100.0]
    agents = spawn_agents(m, _boxes_on_lane(lane, arcs, 12.0), np.zeros((0, 4, 2)), np.zeros((0, 4, 2)), 0.0)
    assert agents.num_alive == 5
    ego = tuple(lane.baseline.interpolate(60.0))
    hist = _run(m, agents, ego, 600, cfg=IDMConfig(radius=500.0))
    min_gap = np.inf
    for a in hist[1:]:
        order = np.argsort(-a.s)
        front = a.s[order] - a.length[order] / 2
        rear_of_next = a.s[order[1:]] + a.length[order[1:]] / 2
        min_gap = min(min_gap, float(np.min(front[:-1] - rear_of_next)))
    final = hist[-1]
    assert np.all(final.v < 0.05), final.v  # everyone stopped
    assert min_gap >= 1.0 - 1e-6, min_gap  # never closer than the IDM minimum gap, never overlapping
    assert final.s.max() <= m.lane("20082").length


def test_red_light_stop_then_go(mini):
    m = load_map("us-nv-las-vegas-strip", mini / "maps")
    lane = m.lane("10005")
    conns = list(lane.outgoing_ids)
    agents = spawn_agents(m, _boxes_on_lane(lane, [40.0], 10.0), np.zeros((0, 4, 2)), np.zeros((0, 4, 2)), 0.0)
    ego = tuple(lane.baseline.interpolate(5.0))
    hist = _run(m, agents, ego, 400, red=conns, cfg=IDMConfig(radius=500.0))
    stopped = hist[-1]
    assert stopped.v[0] < 0.05
    # stopped before the stop line (which starts 1.5 m before the lane end), still on its lane (no route extension
    # through a red connector: its path is the lane, its progress the arc along it)
    front = stopped.s[0] + stopped.length[0] / 2
    assert lane.length - 1.5 - 3.0 <= front <= lane.length - 1.5
    go = _run(m, stopped, ego, 100, green=conns, cfg=IDMConfig(radius=500.0))[-1]
    assert go.v[0] > 3.0
    from simscale_env.map import MapLayer
    from simscale_env.sim.lanegraph import lane_graph

    g = lane_graph(m)
    route = [g.ids[k] for k in go.route[0, :go.n_route[0]]]
    assert route[0] == "10005" and route[1] in conns  # it went through the junction
    assert "10005" not in m.objects_at(go.pose[0, 0], go.pose[0, 1], MapLayer.LANE)


def test_cyclists_replay_in_reactive_mode(mini_builder, mini):
    for ref in mini_builder.refs():
        sc = mini_builder.load(ref)
        f0 = sc.start_index
        bikes = np.nonzero((sc.agents.category == BICYCLE) & sc.agents.valid[f0])[0]
        if len(bikes) == 0:
            continue
        sim = Simulation(sc, load_map(sc.map_location, mini / "maps"), SimConfig(agent_mode="reactive"))
        w = sim.reset()
        for _ in range(20):
            objs = sim.objects(w)
            present = set(objs.track[objs.category == BICYCLE].tolist())
            logged = set(np.nonzero((sc.agents.category == BICYCLE) & sc.agents.valid[sim.frame(w.iteration)])[0])
            assert present == logged
            w = sim.step(w, control=[0.0, 0.0])
        return
    pytest.fail("no mini scenario has a cyclist")


def test_navsim_agents_stop_at_the_end_of_their_lane_and_ignore_lights(mini):
    """NAVSIM's reactive agents (NAVSIM_IDM: no traffic-light status, so no route extension and no stop lines): on a
    green junction they stop at the end of their first lane; nuPlan's drive through."""
    from simscale_env.sim.idm import NAVSIM_IDM

    m = load_map("us-nv-las-vegas-strip", mini / "maps")
    lane = m.lane("10005")
    conns = list(lane.outgoing_ids)
    agents = spawn_agents(m, _boxes_on_lane(lane, [40.0], 10.0), np.zeros((0, 4, 2)), np.zeros((0, 4, 2)), 0.0,
                          NAVSIM_IDM)
    ego = tuple(lane.baseline.interpolate(5.0))
    cfg = IDMConfig(**{**NAVSIM_IDM.__dict__, "radius": 500.0})
    navsim = _run(m, agents, ego, 400, green=conns, cfg=cfg)[-1]
    assert navsim.n_route[0] == 1 and navsim.v[0] < 0.05
    # the devkit's path ends at the lane's second-to-last vertex; IDM stops the box centre before it
    assert navsim.s[0] + navsim.length[0] / 2 <= navsim.path[0, navsim.n_path[0] - 1, 3] + 1e-9
    nuplan = _run(m, agents, ego, 100, green=conns, cfg=IDMConfig(radius=500.0))[-1]
    assert nuplan.n_route[0] > 1 and nuplan.v[0] > 3.0


def test_navsim_parked_vehicles_rule(mini):
    """NAVSIM's add_open_loop_parked_vehicles: a vehicle that is not an IDM agent is shown open-loop when it stands
    still off the lanes and intersections (or sits beyond the snap threshold from its baseline), unless an active
    agent's box overlaps it."""
    from simscale_env.map import MapLayer
    from simscale_env.sim.idm import NAVSIM_IDM, navsim_parked_vehicles, parked_overlaps

    m = load_map("us-nv-las-vegas-strip", mini / "maps")
    lane = m.lane("10005")
    on_lane = _boxes_on_lane(lane, [40.0], 10.0)
    agents = spawn_agents(m, on_lane, np.zeros((0, 4, 2)), np.zeros((0, 4, 2)), 0.0, NAVSIM_IDM)
    assert agents.num_alive == 1
    # two vehicles far off the map (no lane, no intersection): one parked, one moving
    x0, y0 = lane.baseline.xy[0] + np.array([500.0, 500.0])
    assert not m.objects_at(x0, y0, MapLayer.LANE) and not m.objects_at(x0, y0, MapLayer.INTERSECTION)
    boxes = {k: np.concatenate([on_lane[k], np.asarray(v, dtype=float)]) for k, v in {
        "x": [x0, x0 + 10], "y": [y0, y0], "heading": [0.0, 0.0], "vx": [0.05, 3.0], "vy": [0.0, 0.0],
        "length": [4.6, 4.6], "width": [1.9, 1.9], "height": [1.6, 1.6], "track": [1, 2]}.items()}
    parked = navsim_parked_vehicles(m, boxes, agents, NAVSIM_IDM.snap_threshold)
    assert parked.tolist() == [False, True, False]  # the IDM agent itself is never a parked vehicle
    over = box_corners(agents.pose[0, 0], agents.pose[0, 1], agents.pose[0, 2], 4.6, 1.9)
    far = box_corners(x0, y0, 0.0, 4.6, 1.9)
    assert parked_overlaps(np.concatenate([over, far]), agents).tolist() == [True, False]


def test_a_step_that_outgrows_the_arrays_grows_them_and_gives_the_same_result(mini):
    """Paths and footprints live in fixed-size arrays; a step that needs more room is redone with larger ones."""
    from dataclasses import replace

    m = load_map("us-nv-las-vegas-strip", mini / "maps")
    lane = m.lane("10005")
    arcs = [lane.length - 25.0, lane.length - 40.0]
    agents = spawn_agents(m, _boxes_on_lane(lane, arcs, 10.0), np.zeros((0, 4, 2)), np.zeros((0, 4, 2)), 0.0)
    tight = replace(agents, path=agents.path[:, :int(agents.n_path.max())].copy(), foot=agents.foot[:, :2].copy())
    ego = tuple(lane.baseline.interpolate(5.0))
    conns = list(lane.outgoing_ids)
    big = _run(m, agents, ego, 30, green=conns, cfg=IDMConfig(radius=500.0))[-1]
    small = _run(m, tight, ego, 30, green=conns, cfg=IDMConfig(radius=500.0))[-1]
    assert small.capacity > tight.capacity and small.foot.shape[1] > 2
    assert big.n_route.max() > 1  # the route grew through the junction
    for k in ("s", "v", "pose", "box", "n_path", "n_route", "route", "lead_gap"):
        assert np.array_equal(getattr(big, k), getattr(small, k)), k
    # the inputs were not touched (growing copies every array)
    assert tight.capacity == int(agents.n_path.max()) and np.array_equal(tight.s, agents.s)
    assert not tight.lead_gap.any() and np.array_equal(agents.s, arcs)


def _scan_trim_up_to(path, p):
    """The devkit's trim_path_up_to_progress as a linear scan (the reference the kernel's bisection must match)."""
    from simscale_env.sim.idm import _state_at

    n = len(path)
    k = 0
    while k < n and path[k, 3] <= p:
        k += 1
    if k == n:
        return path[n - 2:, :3]
    return np.vstack([np.array(_state_at(path, n, p))[None], path[k:, :3]])


def _scan_trim(path, start, end):
    """The devkit's trim_path (x, y) as linear scans from both ends."""
    from simscale_env.sim.idm import _state_at

    n = len(path)
    front = 0
    while front < n and not path[front, 3] > start:
        front += 1
    if front == n:
        return path[n - 2:, :2]
    tail = n - 1
    while tail >= 0 and not path[tail, 3] < end:
        tail -= 1
    if tail < 0:
        return path[:2, :2]
    return np.vstack([np.array(_state_at(path, n, start)[:2])[None], path[front:tail + 1, :2],
                      np.array(_state_at(path, n, end)[:2])[None]])


def test_path_trims_find_the_linear_scans_points():
    """The IDM kernel's path trims find their points by bisection: the same points as the devkit's linear scans, at
    progress values on, between, before and beyond the path's vertices (ties included)."""
    from simscale_env.sim.idm import _trim, _trim_up_to

    rng = np.random.default_rng(3)
    n = 23
    prog = np.concatenate([[0.0], np.cumsum(rng.uniform(0.2, 2.0, n - 1))])
    path = np.stack([np.cos(prog / 7) * 30, np.sin(prog / 7) * 30, prog / 7 + np.pi / 2, prog], -1)
    queries = np.concatenate([prog, (prog[1:] + prog[:-1]) / 2, [-1.0, prog[-1] + 1.0]])
    out = np.zeros((n + 3, 4))
    xy = np.zeros((n + 3, 2))
    for p in queries:
        m = _trim_up_to(path, n, p, out)
        assert np.array_equal(out[:m, :3], _scan_trim_up_to(path, p)), p
        m = _trim_up_to(path, n, p, xy, 2)
        assert np.array_equal(xy[:m], _scan_trim_up_to(path, p)[:, :2]), p
        for e in queries[::3]:
            m = _trim(path, n, p, e, xy)
            assert np.array_equal(xy[:m], _scan_trim(path, p, e)), (p, e)
