"""The env's info keys for agent bridges (`simscale_env.envs.agent_inputs`): NAVSIM's ego history, the driving
command, the delivered cameras' calibration and nuPlan's planner input, against the log and known answers."""

from __future__ import annotations

import numpy as np
import pytest

from simscale_env.geometry import global_to_local, local_to_global, quaternion_to_matrix

W, H = 64, 32


@pytest.fixture(scope="module")
def env(mini):
    import gymnasium as gym

    import simscale_env  # noqa: F401

    e = gym.make("SimScale-navhard-v0", width=W, height=H, pseudo_experts=False, planner_inputs=True,
                 cameras=("CAM_F0", "CAM_R0"))
    yield e
    e.close()


def test_logged_start_history_matches_the_log(env):
    u = env.unwrapped
    obs, info = env.reset(seed=0, options={"scenario_token": u.tokens[0], "perturbation": None})
    sc, w = u.sim.scenario, u.world
    f0 = sc.start_index
    frames = f0 - np.array([15, 10, 5, 0])
    eh = info["ego_history"]
    assert {k: v.shape for k, v in eh.items()} == {"time_us": (4,), "ego_pose": (4, 3), "ego_velocity": (4, 2),
                                                   "ego_acceleration": (4, 2), "driving_command": (4, 4)}
    np.testing.assert_array_equal(eh["time_us"], sc.timestamps_us[frames])
    logged = np.stack([sc.ego.x[frames], sc.ego.y[frames], sc.ego.heading[frames]], -1)
    np.testing.assert_allclose(eh["ego_pose"], global_to_local(logged, logged[-1]), atol=1e-5)
    np.testing.assert_array_equal(eh["ego_pose"][-1], 0.0)
    np.testing.assert_allclose(eh["ego_velocity"], np.stack([sc.ego.vx[frames], sc.ego.vy[frames]], -1), atol=1e-6)
    np.testing.assert_allclose(eh["ego_acceleration"], np.stack([sc.ego.ax[frames], sc.ego.ay[frames]], -1),
                               atol=1e-6)
    np.testing.assert_allclose(eh["ego_pose"].ravel(), obs["ego_status"][8:], atol=1e-6)  # the obs' past poses
    np.testing.assert_array_equal(info["driving_command"], obs["ego_status"][4:8])
    np.testing.assert_array_equal(eh["driving_command"][-1], info["driving_command"])
    assert eh["driving_command"].sum(1).tolist() == [1, 1, 1, 1]

    pi = info["planner_input"]
    assert pi["route_roadblock_ids"] == list(sc.route_roadblock_ids) and pi["map_location"] == sc.map_location
    np.testing.assert_array_equal(pi["mission_goal"], sc.goal)
    assert pi["iteration"] == 0 and pi["time_us"] == info["time_us"] == w.time_us
    np.testing.assert_array_equal(pi["ego_time_us"], sc.timestamps_us[f0 - 15:f0 + 1])
    np.testing.assert_array_equal(pi["ego_states"][-1], w.ego)
    np.testing.assert_allclose(pi["ego_states"][:-1, :3], np.stack([sc.ego.x[f0 - 15:f0], sc.ego.y[f0 - 15:f0],
                                                                    sc.ego.heading[f0 - 15:f0]], -1))
    first = pi["objects"][0]  # before the start: the log's boxes
    valid = np.nonzero(sc.agents.valid[f0 - 15])[0]
    assert sorted(first["track_token"]) == sorted(np.asarray(sc.agents.track_tokens)[valid])
    now = u.sim.objects(w)
    np.testing.assert_allclose(np.sort(pi["objects"][-1]["x"]), np.sort(now.x))
    np.testing.assert_array_equal(pi["traffic_lights"]["status"], sc.traffic_lights.status[f0])


def test_history_after_a_step_is_the_driven_past(env):
    u = env.unwrapped
    obs, info = env.reset(seed=1, options={"scenario_token": u.tokens[1]})
    start = u.world.ego.copy()
    t0 = info["time_us"]
    obs, _, _, _, info = env.step(np.stack([2.0 * 0.5 * np.arange(1, 9), np.zeros(8), np.zeros(8)], -1))
    eh, now = info["ego_history"], u.world.ego
    np.testing.assert_array_equal(eh["time_us"], info["time_us"] - np.array([1_500_000, 1_000_000, 500_000, 0]))
    assert eh["time_us"][2] == t0
    # the frame 0.5 s ago is the start state, expressed in the current frame (a round trip through the global frame)
    np.testing.assert_allclose(local_to_global(eh["ego_pose"][2].astype(np.float64), now[:3]), start[:3], atol=1e-3)
    np.testing.assert_allclose(eh["ego_velocity"][2], start[3:5], atol=1e-5)
    pi = info["planner_input"]
    assert pi["iteration"] == 5 and len(pi["ego_states"]) == len(pi["objects"]) == 16
    np.testing.assert_array_equal(pi["ego_states"][10], start)  # 0.5 s ago
    assert np.all(np.diff(pi["ego_time_us"]) > 0) and pi["ego_time_us"][-1] == info["time_us"]


def test_camera_calibration_is_the_delivered_images(env):
    u = env.unwrapped
    obs, info = env.reset(seed=0, options={"scenario_token": u.tokens[0]})
    cal = info["camera_calibration"]
    assert list(cal) == ["CAM_F0", "CAM_R0"] and obs["cameras"].shape == (2, H, W, 3)
    by = {c.channel: c for c in u.sim.scenario.cameras}
    lidar_t, lidar_q = u._builder.db(u.sim.scenario.log_name).lidar_extrinsic
    for ch, c in cal.items():
        src = by[ch]
        s = W / src.width  # scaled to the width, then centre-cropped to H rows
        top = (src.height * s - H) / 2
        K = np.array(src.intrinsic, dtype=np.float64)
        want = np.array([[K[0, 0] * s, 0, K[0, 2] * s], [0, K[1, 1] * s, K[1, 2] * s - top], [0, 0, 1]])
        np.testing.assert_allclose(c["intrinsics"], want)
        assert (c["width"], c["height"]) == (W, H)
        np.testing.assert_array_equal(c["distortion"], np.zeros(5))  # rendered: pinhole
        # camera -> lidar composed with lidar -> ego is the camera table's camera -> ego
        Rl = quaternion_to_matrix(np.asarray(lidar_q))
        np.testing.assert_allclose(Rl @ c["sensor2lidar_rotation"], quaternion_to_matrix(np.asarray(src.rotation)),
                                   atol=1e-12)
        np.testing.assert_allclose(Rl @ c["sensor2lidar_translation"] + lidar_t, src.translation, atol=1e-12)
    # the mini rig: lidar 1.5 m ahead of the rear axle at 1.8 m, CAM_F0 at (1.75, 0, 1.62)
    np.testing.assert_allclose(cal["CAM_F0"]["sensor2lidar_translation"], [0.25, 0.0, -0.18], atol=1e-12)
    # every info gets its own arrays (users keep infos)
    _, info2 = env.reset(seed=0, options={"scenario_token": u.tokens[0]})
    assert info2["camera_calibration"]["CAM_F0"]["intrinsics"] is not cal["CAM_F0"]["intrinsics"]
