"""Perturbed resets never start off the road, in collision or against the lane direction."""

import numpy as np
import pytest
import shapely

from simscale_env.geometry import wrap_angle
from simscale_env.map import load_map
from simscale_env.sim import SimConfig, Simulation, ego_box
from simscale_env.sim.perturb import (PERTURBATION_DEFAULTS, Perturbation, PerturbationConfig, PerturbationError,
                                      apply_perturbation, sample_perturbation)


def _objects(sim, w):
    return sim.objects(w).corners()


def test_property_1000_samples_are_valid(mini_builder, mini):
    rng = np.random.default_rng(0)
    cfg = PERTURBATION_DEFAULTS["navhard"]
    refs = mini_builder.refs()
    n = attempts = 0
    while n < 1000 and attempts < 5000:  # scenes without any valid start must not loop forever
        ref = refs[(attempts // 20) % len(refs)]
        sc = mini_builder.load(ref)
        m = load_map(sc.map_location, mini / "maps")
        sim = Simulation(sc, m, SimConfig(agent_mode="non_reactive"))
        w = sim.reset()
        objs = _objects(sim, w)
        area = m.drivable_area
        obj_polys = shapely.polygons(objs) if len(objs) else np.array([])
        for _ in range(20):
            attempts += 1
            try:
                p, state = sample_perturbation(w.ego, m, objs, rng, cfg, scene=ref.token)
            except PerturbationError:
                continue
            box = shapely.Polygon(ego_box(state))
            assert area.contains(box), (ref.token, p)
            if len(obj_polys):
                assert not np.any(shapely.intersects(obj_polys, box)), (ref.token, p)
            c = box.centroid
            dirs = []
            for lid in m.lanes_at(c.x, c.y):
                bl = m.lanes[lid].baseline
                s, _, _ = bl.project([[c.x, c.y]])
                dirs.append(abs(float(wrap_angle(state[2] - bl.interpolate(s[0])[2]))))
            assert dirs and min(dirs) < np.pi / 2, (ref.token, p)
            assert cfg.speed_scale[0] - 1e-9 <= p.speed_scale <= cfg.speed_scale[1] + 1e-9
            n += 1
    assert n >= 1000


def test_apply_perturbation_moves_in_the_lane_frame(mini_builder, mini):
    sc = mini_builder.load(mini_builder.refs()[0])
    m = load_map(sc.map_location, mini / "maps")
    sim = Simulation(sc, m, SimConfig(agent_mode="non_reactive"))
    ego = sim.reset().ego
    lid, s, _, _ = m.nearest_baseline(ego[0], ego[1], ego[2], max_distance=3.0)
    lh = m.lanes[lid].baseline.interpolate(s)[2]
    new = apply_perturbation(ego, Perturbation(lateral=2.0, longitudinal=-1.0, heading=0.1, speed_scale=0.5), m)
    d = new[:2] - ego[:2]
    assert d @ [np.cos(lh), np.sin(lh)] == pytest.approx(-1.0, abs=1e-9)
    assert d @ [-np.sin(lh), np.cos(lh)] == pytest.approx(2.0, abs=1e-9)
    assert new[2] == pytest.approx(float(wrap_angle(ego[2] + 0.1)))
    assert new[3] == pytest.approx(0.5 * ego[3])


def test_impossible_perturbation_raises_clear_error(mini_builder, mini):
    ref = mini_builder.refs()[0]
    sc = mini_builder.load(ref)
    m = load_map(sc.map_location, mini / "maps")
    sim = Simulation(sc, m, SimConfig(agent_mode="non_reactive"))
    w = sim.reset()
    cfg = PerturbationConfig(lateral_m=(80.0, 90.0), max_tries=5)
    with pytest.raises(PerturbationError, match=rf"{ref.token}: no valid perturbed start in 5 tries .*off_road 5"):
        sample_perturbation(w.ego, m, _objects(sim, w), np.random.default_rng(0), cfg, scene=ref.token)
    with pytest.raises(ValueError, match="lateral_m must be a finite"):
        PerturbationConfig(lateral_m=(1.0, -1.0))
    with pytest.raises(ValueError, match="unknown perturbation keys"):
        Perturbation.from_dict({"lateral": 1.0})


def test_logged_travel_and_reachable_ranges():
    from simscale_env.sim.perturb import _ranges, logged_travel

    x = np.array([0.0, 3.0, 3.0, 6.0, 10.0])
    y = np.array([0.0, 4.0, 4.0, 4.0, 7.0])
    assert logged_travel(x, y, 4, 2) == pytest.approx(3.0 + 5.0)
    assert logged_travel(x, y, 2, 10) == pytest.approx(5.0)  # the window is cut at the log's start
    cfg = PerturbationConfig(lateral_m=(-3.0, 3.0), heading_deg=(-20.0, 20.0), reachable_window_s=2.0)
    assert _ranges(cfg, 0.0) == ((0.0, 0.0), (0.0, 0.0))  # a standing ego cannot have drifted
    lat, head = _ranges(cfg, 1.0)
    assert lat == pytest.approx((-np.tan(np.radians(20.0)), np.tan(np.radians(20.0))))
    assert head == pytest.approx((-np.degrees(0.2), np.degrees(0.2)))  # 1 m x 0.2 1/m
    assert _ranges(cfg, 2.0)[1] == (-20.0, 20.0)  # 0.4 rad: capped by the range
    assert _ranges(cfg, 50.0) == ((-3.0, 3.0), (-20.0, 20.0))
    assert _ranges(PerturbationConfig(), None) == (PerturbationConfig().lateral_m, PerturbationConfig().heading_deg)
    with pytest.raises(ValueError, match="travel_m"):
        _ranges(cfg, None)
    with pytest.raises(ValueError, match="reachable_window_s"):
        PerturbationConfig(reachable_window_s=0.0)


def test_reachable_sampler_gives_a_standing_ego_only_longitudinal_and_speed_offsets(mini_builder, mini):
    sc = mini_builder.load(mini_builder.refs()[0])
    m = load_map(sc.map_location, mini / "maps")
    sim = Simulation(sc, m, SimConfig(agent_mode="non_reactive"))
    w = sim.reset()
    cfg = PerturbationConfig(reachable_window_s=2.0)
    p, new = sample_perturbation(w.ego, m, _objects(sim, w), np.random.default_rng(0), cfg, travel_m=0.0)
    assert p.lateral == 0.0 and p.heading == 0.0
    assert new[2] == pytest.approx(w.ego[2])
