"""Perturbed resets never start off the road, in collision or against the lane direction."""

import dataclasses

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


@pytest.mark.parametrize("window_s,want", [(2.0, 1000), (None, 1000)])
def test_property_samples_are_valid(mini_builder, mini, window_s, want):
    from simscale_env.sim.perturb import logged_travel

    rng = np.random.default_rng(0)
    cfg = dataclasses.replace(PERTURBATION_DEFAULTS["navhard"], window_s=window_s)
    refs = mini_builder.refs()
    n = attempts = 0
    while n < want and attempts < 5 * want:  # scenes without any valid start must not loop forever
        ref = refs[(attempts // 20) % len(refs)]
        sc = mini_builder.load(ref)
        m = load_map(sc.map_location, mini / "maps")
        sim = Simulation(sc, m, SimConfig(agent_mode="non_reactive"))
        w = sim.reset()
        travel = logged_travel(sc.ego.x, sc.ego.y, sim.frame(0), 20) if window_s else None
        objs = _objects(sim, w)
        area = m.drivable_area
        obj_polys = shapely.polygons(objs) if len(objs) else np.array([])
        for _ in range(20):
            attempts += 1
            try:
                p, state = sample_perturbation(w.ego, m, objs, rng, cfg, scene=ref.token, travel_m=travel)
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
            if window_s:  # offsets of the driven trajectory: within what the travel builds up, heading of the drift
                assert abs(p.lateral) <= travel * np.tan(np.radians(20.0)) + 1e-9
                assert abs(p.longitudinal) <= 0.5 * travel + 1e-9
                assert p.heading * p.lateral >= 0 and abs(np.tan(p.heading)) <= 2 * abs(p.lateral) / travel + 1e-9
            n += 1
    assert n >= want


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
    cfg = PerturbationConfig(lateral_m=(80.0, 90.0), max_tries=5, window_s=None)
    with pytest.raises(PerturbationError, match=rf"{ref.token}: no valid perturbed start in 5 tries .*off_road 5"):
        sample_perturbation(w.ego, m, _objects(sim, w), np.random.default_rng(0), cfg, scene=ref.token)
    with pytest.raises(ValueError, match="lateral_m must be a finite"):
        PerturbationConfig(lateral_m=(1.0, -1.0))
    with pytest.raises(ValueError, match="unknown perturbation keys"):
        Perturbation.from_dict({"lateral": 1.0})


def test_logged_travel_and_window_ranges():
    from simscale_env.sim.perturb import _ranges, logged_travel

    x = np.array([0.0, 3.0, 3.0, 6.0, 10.0])
    y = np.array([0.0, 4.0, 4.0, 4.0, 7.0])
    assert logged_travel(x, y, 4, 2) == pytest.approx(3.0 + 5.0)
    assert logged_travel(x, y, 2, 10) == pytest.approx(5.0)  # the window is cut at the log's start
    cfg = PerturbationConfig(lateral_m=(-3.0, 3.0), longitudinal_m=(-3.0, 3.0), heading_deg=(-20.0, 20.0),
                             speed_scale=(0.5, 1.5), window_s=2.0)
    assert _ranges(cfg, 0.0) == ((0.0, 0.0), (0.0, 0.0))  # a standing ego cannot have drifted
    lat, lon = _ranges(cfg, 1.0)
    assert lat == pytest.approx((-np.tan(np.radians(20.0)), np.tan(np.radians(20.0))))
    assert lon == pytest.approx((-0.5, 0.5))  # 1 m at 0.5x or 1.5x the speed
    assert _ranges(cfg, 50.0) == ((-3.0, 3.0), (-3.0, 3.0))
    teleport = PerturbationConfig(window_s=None)
    assert _ranges(teleport, None) == (teleport.lateral_m, teleport.longitudinal_m)
    with pytest.raises(ValueError, match="travel_m"):
        _ranges(cfg, None)
    with pytest.raises(ValueError, match="window_s"):
        PerturbationConfig(window_s=0.0)


def test_window_sampler_has_nothing_to_perturb_on_a_standing_ego(mini_builder, mini):
    sc = mini_builder.load(mini_builder.refs()[0])
    m = load_map(sc.map_location, mini / "maps")
    sim = Simulation(sc, m, SimConfig(agent_mode="non_reactive"))
    w = sim.reset()
    with pytest.raises(PerturbationError, match=r"moved 0.05 m over the last 2 s .*standing ego.*window_s=None"):
        sample_perturbation(w.ego, m, _objects(sim, w), np.random.default_rng(0), PerturbationConfig(), scene=sc.token,
                            travel_m=0.05)


def test_window_sampler_heading_is_that_of_the_drift(mini_builder, mini):
    """On a moving ego: lateral offsets within the travel's reach, headings turned the way of the drift (left drift,
    left heading) by at most atan(2 lateral / travel)."""
    sc = mini_builder.load(mini_builder.refs()[0])
    m = load_map(sc.map_location, mini / "maps")
    sim = Simulation(sc, m, SimConfig(agent_mode="non_reactive"))
    w = sim.reset()
    rng = np.random.default_rng(1)
    cfg = dataclasses.replace(PERTURBATION_DEFAULTS["navhard"], clearance_m=0.0, max_tries=1000)
    got = []
    for _ in range(30):
        try:
            p, _ = sample_perturbation(w.ego, m, np.zeros((0, 4, 2)), rng, cfg, travel_m=4.0)
        except PerturbationError:
            continue
        got.append(p)
        assert abs(p.lateral) <= 4.0 * np.tan(np.radians(20.0)) + 1e-9 and abs(p.longitudinal) <= 2.0 + 1e-9
        assert p.heading * p.lateral >= 0
        assert abs(np.tan(p.heading)) <= 2 * abs(p.lateral) / 4.0 + 1e-9
    assert len(got) >= 10
    assert max(abs(p.heading) for p in got) > np.radians(2.0)  # not all parallel


def _fd_heading(poses):
    d = np.diff(poses[:, :2], axis=0)
    return np.arctan2(d[:, 1], d[:, 0])


def test_perturbed_past_without_a_perturbation_is_the_log():
    from simscale_env.sim.perturb import perturbed_past

    t = np.arange(21) * 0.1
    log = np.stack([8.0 * t, 0.5 * t**2, np.arctan(t)], -1)
    np.testing.assert_allclose(perturbed_past(log, log[-1], 1.0, n=15), log[-16:-1], atol=1e-9)
    assert perturbed_past(log, log[-1], 1.0, n=0).shape == (0, 3)


def test_perturbed_past_drives_into_the_start_on_a_straight_road():
    from simscale_env.sim.perturb import perturbed_past

    log = np.stack([10.0 * np.arange(31) * 0.1, np.zeros(31), np.zeros(31)], -1)  # 10 m/s along x
    new = np.array([30.0 - 1.0, 2.0, np.radians(8.0)])  # 1 m behind, 2 m left, turned 8 deg left
    past = perturbed_past(log, new, 1.0, n=15)
    assert past.shape == (15, 3)
    assert past[0, 1] == pytest.approx(0.0, abs=1e-9)  # the oldest pose is still on the log's line
    assert np.all(np.diff(past[:, 1]) > 0)  # drifts left monotonically, no jump
    full = np.vstack([past, new])
    assert np.abs(np.diff(full[:, 0]) - 1.0).max() < 0.05  # still about 10 m/s
    # each heading is the direction of travel (finite differences, within 1 deg), ending on the start's
    mid = 0.5 * (full[1:, 2] + full[:-1, 2])
    assert np.degrees(np.abs(wrap_angle(_fd_heading(full) - mid))).max() < 1.0
    assert abs(np.diff(full[:, 1])[-1] - np.tan(new[2]) * np.diff(full[:, 0])[-1]) < 0.02


def test_perturbed_past_keeps_the_perturbed_speed_and_a_standing_ego_stands():
    from simscale_env.sim.perturb import perturbed_past

    log = np.stack([4.0 * np.arange(11) * 0.1, np.zeros(11), np.zeros(11)], -1)  # 4 m/s, a short log
    past = perturbed_past(log, log[-1], 1.5, n=15)  # 1.5x faster: 0.6 m per step, straight behind the log's start
    np.testing.assert_allclose(np.diff(np.vstack([past, log[-1]])[:, 0]), 0.6, atol=1e-9)
    stand = np.tile([5.0, 1.0, 0.3], (16, 1))
    new = np.array([5.0 + 2.0 * np.cos(0.3), 1.0 + 2.0 * np.sin(0.3), 0.3])  # 2 m ahead, standing
    np.testing.assert_allclose(perturbed_past(stand, new, 0.0, n=15), np.tile(new, (15, 1)), atol=1e-9)
    with pytest.raises(ValueError, match="log_xyh"):
        perturbed_past(np.zeros((4, 2)), new)
    with pytest.raises(ValueError, match="speed_scale"):
        perturbed_past(stand, new, -1.0)
