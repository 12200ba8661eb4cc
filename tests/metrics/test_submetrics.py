"""Each sub-metric on a constructed scene with a known answer.

Layout (local metres): our lane y in [0, 3.5] (on route, centreline y = 1.75), the oncoming lane y in [3.5, 7],
both roadblocks drivable from x = -60 to 300; optionally an intersection (x in [100, 130]) covered by an on-route
connector. The ego starts at the rear axle (0, 1.75), heading +x.
"""

import numpy as np
import pytest
import shapely

from simscale_env.metrics import ScoringScene, human_filter, score_states, two_frame_extended_comfort
from simscale_env.metrics.aggregate import two_stage_score, two_stage_weights, TwoStageGroup
from simscale_env.sim import track_references
from simscale_env.sim.idm import box_corners
from simscale_env.sim.plans import plan_to_reference
from simscale_env.sim.state import make_state

T = 41


def rect(x0, y0, x1, y1):
    return shapely.box(x0, y0, x1, y1)


def make_scene(objects=(), red_from=None, intersection=None, past=None):
    """objects: list of (token, is_agent, speed, [T] xs, [T] ys, heading, length, width)."""
    ids = ["rb_ours", "rb_oncoming", "lane_ours", "lane_oncoming"]
    types = ["ROADBLOCK", "ROADBLOCK", "LANE", "LANE"]
    polys = [rect(-60, 0, 300, 3.5), rect(-60, 3.5, 300, 7), rect(-60, 0, 300, 3.5), rect(-60, 3.5, 300, 7)]
    route = {"lane_ours"}
    if intersection is not None:
        x0, x1 = intersection
        ids += ["inter", "conn"]
        types += ["INTERSECTION", "LANE_CONNECTOR"]
        polys += [rect(x0, -5, x1, 12), rect(x0, 0, x1, 3.5)]
        route.add("conn")
    cl = np.stack([np.arange(-60, 300.01, 0.5), np.full(721, 1.75)], -1)
    M = len(objects)
    corners = np.zeros((T, M, 4, 2))
    valid = np.ones((T, M), dtype=bool)
    for j, (_, _, _, xs, ys, h, L, W) in enumerate(objects):
        corners[:, j] = box_corners(np.asarray(xs), np.asarray(ys), np.full(T, h), np.full(T, L), np.full(T, W))
    red = tuple(() if red_from is None or t < red_from else (("conn", polys[ids.index("conn")]),) for t in range(T))
    return ScoringScene(
        map_ids=tuple(ids), map_types=tuple(types), map_polygons=tuple(polys), route_lane_ids=frozenset(route),
        centerline=cl, obj_tokens=tuple(o[0] for o in objects),
        obj_is_agent=np.array([o[1] for o in objects], dtype=bool),
        obj_heading=np.array([o[5] for o in objects], dtype=float), obj_speed=np.array([o[2] for o in objects], float),
        obj_corners=corners, obj_valid=valid, red_light_polygons=red, human_past_states=past)


def states_for(plans, v0=10.0, x0=0.0, y0=1.75):
    init = make_state(x0, y0, 0.0, velocity=v0)
    ref = plan_to_reference(np.asarray(plans, dtype=float), init, 10**15)
    return track_references(init, ref)


def straight(v, n=8, dy=0.0):
    t = 0.5 * np.arange(1, n + 1)
    return np.stack([v * t, np.full(n, dy), np.zeros(n)], -1)


def static(token, x, y=1.75, is_agent=False, L=0.5, W=0.5, h=0.0, speed=0.0):
    return (token, is_agent, speed, np.full(T, x), np.full(T, y), h, L, W)


def test_leaving_the_road_gives_dac_0():
    t = 0.5 * np.arange(1, 9)
    plan = np.stack([10 * t, np.minimum(3 * t, 12.0) * -1.0, -np.full(8, 0.3)], -1)  # veers right off the road
    s = score_states(make_scene(), states_for([plan, straight(10)]))
    assert s.drivable_area_compliance.tolist() == [0.0, 1.0]


def test_into_a_stopped_car_is_at_fault_nc_0():
    car = static("car", 25.0, is_agent=True, L=4.6, W=1.9)
    s = score_states(make_scene([car]), states_for([straight(10)]))
    assert s.no_at_fault_collisions[0] == 0.0
    assert 1.0 <= s.time_to_at_fault_collision_s[0] <= 2.5
    assert s.time_to_collision_within_bound[0] == 0.0


def test_into_a_cone_gives_nc_half():
    s = score_states(make_scene([static("cone", 25.0)]), states_for([straight(10)]))
    assert s.no_at_fault_collisions[0] == 0.5


def test_rear_ended_by_a_faster_car_is_not_at_fault():
    # ego keeps its lane at 3 m/s; a car comes from behind at 15 m/s and drives through it
    t = np.arange(T) * 0.1
    car = ("car", True, 15.0, -12.0 + 15.0 * t, np.full(T, 1.75), 0.0, 4.6, 1.9)
    s = score_states(make_scene([car]), states_for([straight(3.0)], v0=3.0))
    assert s.no_at_fault_collisions[0] == 1.0


def test_through_a_red_light_gives_tlc_0():
    scene = make_scene(intersection=(30.0, 60.0), red_from=0)
    s = score_states(scene, states_for([straight(10), straight(0.5, dy=0.0) * np.array([0.2, 1, 1])]))
    assert s.traffic_light_compliance.tolist() == [0.0, 1.0]


def test_oncoming_lane_for_more_than_6m_gives_ddc_0():
    t = 0.5 * np.arange(1, 9)
    into = np.stack([10 * t, np.minimum(3.5 * t, 3.5), np.zeros(8)], -1)  # 3.5 m left: the oncoming lane's centre
    short = np.stack([10 * t, np.where(t <= 0.5, 1.0, 0.0), np.zeros(8)], -1)
    # a brief swerve to 3.5 m left at 6 m/s: between 2 m and 6 m of oncoming progress within the 1 s window
    brief = np.stack([6.0 * t, np.where((t >= 1.0) & (t <= 1.5), 3.5, 0.0), np.zeros(8)], -1)
    s = score_states(make_scene(), states_for([into, short, straight(10), brief]))
    assert s.driving_direction_compliance[0] == 0.0
    assert s.driving_direction_compliance[1] == 1.0  # 1 m left stays in its own lane
    assert s.driving_direction_compliance[2] == 1.0
    assert s.driving_direction_compliance[3] == 0.5
    # the same drift inside an intersection is exempt
    s2 = score_states(make_scene(intersection=(-10.0, 200.0)), states_for([into]))
    assert s2.driving_direction_compliance[0] == 1.0


def test_weaving_off_the_centreline_lane_keeping():
    t = 0.5 * np.arange(1, 9)
    weave = np.stack([10 * t, np.where(t >= 0.5, 1.0, 0.0), np.zeros(8)], -1)  # 1 m off for 3.5 s
    s = score_states(make_scene(), states_for([weave, straight(10)]))
    assert s.lane_keeping.tolist() == [0.0, 1.0]
    # inside an intersection the deviation does not count
    s2 = score_states(make_scene(intersection=(-10.0, 200.0)), states_for([weave]))
    assert s2.lane_keeping[0] == 1.0


def test_harsh_braking_gives_hc_0():
    past = np.array([make_state(-10.0 * (19 - k) * 0.1, 1.75, 0.0, velocity=10.0) for k in range(19)])
    scene = make_scene(past=past)
    stop = np.stack([np.minimum(10 * 0.5 * np.arange(1, 9), 5.0), np.zeros(8), np.zeros(8)], -1)  # stop in 1 s
    s = score_states(scene, states_for([stop, straight(10)]))
    assert s.history_comfort.tolist() == [0.0, 1.0]


def test_two_inconsistent_consecutive_plans_give_ec_0():
    now = states_for([straight(10), straight(10)])
    prev_same = states_for([straight(10)], x0=-5.0)  # the same plan 0.5 s earlier
    prev_brake = states_for([np.stack([np.minimum(10 * 0.5 * np.arange(1, 9), 8.0), np.zeros(8), np.zeros(8)], -1)],
                            x0=-5.0)
    ec = two_frame_extended_comfort(now, np.concatenate([prev_same, prev_brake]))
    assert ec.tolist() == [1.0, 0.0]
    s = score_states(make_scene(), now, previous_states=np.concatenate([prev_same, prev_brake]))
    assert s.two_frame_extended_comfort.tolist() == [1.0, 0.0]
    assert s.epdms()[1] < s.epdms()[0]  # EC back in the weights (/16)


def test_standing_still_when_pdm_progresses_gives_ep_0():
    st = states_for([np.zeros((8, 3))], v0=0.0)
    s = score_states(make_scene(), st, progress_reference=(40.0, 1.0))
    assert s.ego_progress[0] == 0.0
    # below the 5 m threshold every proposal gets EP 1
    s2 = score_states(make_scene(), st, progress_reference=(4.0, 1.0))
    assert s2.ego_progress[0] == 1.0


def test_batched_and_single_plan_scores_are_identical():
    car = static("car", 40.0, is_agent=True, L=4.6, W=1.9)
    scene = make_scene([car, static("cone", 60.0, y=5.0)], intersection=(80.0, 100.0))
    t = 0.5 * np.arange(1, 9)
    plans = [straight(v) for v in (0.0, 4.0, 8.0, 12.0)] + [np.stack([10 * t, np.minimum(2 * t, 4.0), np.zeros(8)], -1)]
    st = states_for(plans)
    ref = (35.0, 1.0)
    batch = score_states(scene, st, progress_reference=ref)
    for i in range(len(plans)):
        one = score_states(scene, st[i:i + 1], progress_reference=ref)
        a, b = one.row(0), batch.row(i)
        assert a.keys() == b.keys()
        assert all(np.array_equal(a[k], b[k], equal_nan=True) for k in a), (a, b)
    assert len(set(batch.epdms().round(6))) > 2  # the plans really differ


def test_human_filter_turns_a_shared_penalty_into_1():
    car = static("car", 25.0, is_agent=True, L=4.6, W=1.9)
    scene = make_scene([car])
    agent = score_states(scene, states_for([straight(10)]))
    human = score_states(scene, states_for([straight(9.5)]))
    assert agent.no_at_fault_collisions[0] == 0.0 and human.no_at_fault_collisions[0] == 0.0
    fixed = human_filter(agent, human, "fixed")
    assert fixed.scores.no_at_fault_collisions[0] == 1.0 and fixed.final[0] > 0.0
    pre = human_filter(agent, human, "pre_fix")
    assert pre.scores.no_at_fault_collisions[0] == 1.0 and pre.final[0] == 0.0  # score left unfiltered
    # a 0.5 (static object) is not filtered
    cone_scene = make_scene([static("cone", 25.0)])
    a2 = score_states(cone_scene, states_for([straight(10)]))
    h2 = score_states(cone_scene, states_for([straight(10)]))
    assert human_filter(a2, h2).scores.no_at_fault_collisions[0] == 0.5
    # a subset of the columns: the shared collision stays when only TLC is filtered
    only_tlc = human_filter(agent, human, "fixed", columns=("traffic_light_compliance",))
    assert only_tlc.scores.no_at_fault_collisions[0] == 0.0 and only_tlc.final[0] == 0.0
    with pytest.raises(ValueError, match="columns must be among"):
        human_filter(agent, human, columns=("epdms",))


def test_two_stage_weights_for_known_distances():
    w = two_stage_weights([0.0, 0.0], [[0.5, 0.0], [1.0, 0.0], [0.0, 0.0]])
    raw = np.array([np.exp(-0.25 / 0.2), np.exp(-1.0 / 0.2), 1.0])
    assert np.allclose(w, raw / raw.sum())
    assert raw[0] == pytest.approx(0.2865, abs=1e-4) and raw[1] == pytest.approx(0.0067, abs=1e-4)
    # vanishing weights become uniform
    assert np.allclose(two_stage_weights([0, 0], [[100, 0], [0, 200]]), [0.5, 0.5])
    g = TwoStageGroup(0.8, 0.6, (0, 0), (0, 0), np.array([1.0, 0.0]), np.array([0.5, 0.5]),
                      np.array([[0, 0], [50, 0]]), np.array([[0, 0], [0.5, 0]]))
    score, per = two_stage_score([g])
    wp = two_stage_weights((0, 0), [[0, 0], [0.5, 0]])
    assert per[0] == pytest.approx(0.5 * (0.8 * 1.0 + 0.6 * float(wp @ [0.5, 0.5])))
    assert score == pytest.approx(per[0])


@pytest.mark.parametrize("n", [41, 61, 12, 6])
def test_comfort_filters_equal_scipys_savgol_and_do_not_depend_on_the_batch(n):
    """The comfort metrics' Savitzky-Golay filters (a banded kernel over each output's window) equal
    scipy.signal.savgol_filter(mode="interp") up to summation order, for every (window, order, derivative) EPDMS
    uses and for signals shorter than the window; a row alone gives the same bits as in a batch."""
    from scipy.signal import savgol_filter

    from simscale_env.metrics.epdms import _savgol

    rng = np.random.default_rng(n)
    y = rng.normal(0.0, 3.0, (50, n)) + np.cumsum(rng.normal(0.0, 1.0, (50, n)), axis=1)
    for window, poly, deriv in ((8, 2, 0), (15, 2, 1), (5, 2, 1), (5, 3, 2)):
        w = min(window, n)
        if not poly < w:
            continue
        got = _savgol(y, window, poly, deriv, 0.1)
        want = savgol_filter(y, window_length=w, polyorder=poly, deriv=deriv, delta=0.1, axis=-1)
        assert np.allclose(got, want, rtol=1e-12, atol=1e-9 * np.abs(want).max()), (window, poly, deriv)
        assert np.array_equal(_savgol(y[7:8], window, poly, deriv, 0.1), got[7:8])
        assert np.array_equal(_savgol(y.reshape(5, 10, n), window, poly, deriv, 0.1).reshape(50, n), got)


def _oscillating_states(rng, n, T):
    """States [n, T, 11] whose comfort metrics fall either side of EPDMS's bounds (sinusoidal accelerations and yaw
    rates of random amplitude and frequency, the heading wrapped as the simulator keeps it)."""
    from simscale_env.sim.state import (ACCELERATION_X, ACCELERATION_Y, ANGULAR_ACCELERATION, ANGULAR_VELOCITY,
                                        HEADING)

    t = np.arange(T) * 0.1
    st = np.zeros((n, T, 11))
    for k, amp in ((ACCELERATION_X, 3.0), (ACCELERATION_Y, 4.0), (ANGULAR_VELOCITY, 0.9), (ANGULAR_ACCELERATION, 1.0)):
        f, ph = rng.uniform(0.05, 1.2, (n, 1)), rng.uniform(0.0, 6.0, (n, 1))
        st[..., k] = rng.uniform(0.0, amp, (n, 1)) * np.sin(2 * np.pi * f * t + ph)
    h = np.cumsum(st[..., ANGULAR_VELOCITY] * 0.1 * rng.uniform(0.5, 1.5, (n, 1)), axis=1) + rng.uniform(-3.2, 3.2,
                                                                                                          (n, 1))
    st[..., HEADING] = (h + np.pi) % (2 * np.pi) - np.pi
    return st


def test_comfort_kernel_is_the_numpy_reference_bit_for_bit():
    """`comfort_checks` runs one kernel (`_comfort_rows`); it gives numpy's `_comfort_of_numpy` booleans on states
    either side of every bound (each column both True and False), on any leading shape, for short signals (the same
    error for too short a one) and for a row alone as in a batch."""
    from simscale_env.metrics.epdms import _comfort_of_numpy, comfort_checks
    from simscale_env.sim.state import (ACCELERATION_X, ACCELERATION_Y, ANGULAR_ACCELERATION, ANGULAR_VELOCITY,
                                        HEADING)
    from simscale_env.sim.vehicle import PACIFICA

    def numpy_checks(st):
        return _comfort_of_numpy(*(st[..., c] for c in (ACCELERATION_X, ACCELERATION_Y, ANGULAR_VELOCITY,
                                                        ANGULAR_ACCELERATION, HEADING)), 0.1, PACIFICA)

    rng = np.random.default_rng(5)
    seen = np.zeros((2, 6), dtype=bool)
    for T in (41, 61, 21, 12, 6, 4):
        st = _oscillating_states(rng, 200, T)
        got = comfort_checks(st)
        np.testing.assert_array_equal(got, numpy_checks(st), err_msg=f"T={T}")
        seen[0] |= got.any(axis=0)
        seen[1] |= (~got).any(axis=0)
        np.testing.assert_array_equal(comfort_checks(st.reshape(20, 10, T, 11)).reshape(200, 6), got)
        np.testing.assert_array_equal(comfort_checks(st[17]), got[17])
    assert seen.all()  # every bound was met and missed
    for T in (3, 2):  # too short for a filter: numpy's message
        st = _oscillating_states(rng, 2, T)
        with pytest.raises(ValueError) as want:
            numpy_checks(st)
        with pytest.raises(ValueError, match=str(want.value)):
            comfort_checks(st)
