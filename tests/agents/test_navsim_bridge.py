"""NAVSIM agents in the loop: a NAVSIM-shaped stub agent (written here, against the look-alike dataclasses) runs a
full episode through `NavsimAgentPolicy`; what it receives is NAVSIM's AgentInput built from the env."""

from __future__ import annotations

import numpy as np
import pytest

from agents import NavsimAgentPolicy, load_policy, policy_env_kwargs
from agents.navsim_bridge import resample_poses
from agents.navsim_types import Camera, SensorConfig, Trajectory, TrajectorySampling
from simscale_env.errors import PolicyError

W, H = 64, 32


class RecordingAgent:
    """NAVSIM's AbstractAgent contract: the current CAM_F0 and the two before it, the current L0 and R0; drives
    straight at the current speed and records every AgentInput."""

    requires_scene = False

    def __init__(self, as_array: bool = False):
        self.as_array = as_array
        self.inputs = []
        self.initialized = 0

    def name(self) -> str:
        return "recording_agent"

    def initialize(self) -> None:
        self.initialized += 1

    def get_sensor_config(self) -> SensorConfig:
        return SensorConfig(cam_f0=[1, 2, 3], cam_l0=[3], cam_l1=False, cam_l2=False, cam_r0=[3], cam_r1=False,
                            cam_r2=False, cam_b0=False, lidar_pc=False)

    def compute_trajectory(self, agent_input):
        self.inputs.append(agent_input)
        v = float(np.hypot(*agent_input.ego_statuses[-1].ego_velocity))
        t = 0.5 * np.arange(1, 9)
        poses = np.stack([v * t, np.zeros(8), np.zeros(8)], -1).astype(np.float32)
        return poses if self.as_array else Trajectory(poses)


def test_stub_agent_runs_a_full_episode_with_navsim_inputs(mini):
    import gymnasium as gym

    import simscale_env  # noqa: F401

    agent = RecordingAgent()
    policy = NavsimAgentPolicy(agent, width=W, height=H)
    kw = policy_env_kwargs(policy)
    assert kw == {"width": W, "height": H, "observation_keys": ("cameras", "ego_status"),
                  "cameras": ("CAM_F0", "CAM_L0", "CAM_R0")}
    env = gym.make("SimScale-navhard-v0", pseudo_experts=False, **kw)
    u = env.unwrapped
    obs, info = env.reset(seed=0, options={"scenario_token": u.tokens[0]})
    policy.reset(info)
    seen = []
    while True:
        seen.append((obs, info))
        obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
        if terminated or truncated:
            break
    assert "epdms_episode" in info and len(agent.inputs) == len(seen) == info["step"] > 3
    assert agent.initialized == 1  # once, at construction

    order = list(seen[0][1]["camera_calibration"])
    by = {c.channel: c for c in u.sim.scenario.cameras}
    src = by["CAM_F0"]
    s = W / src.width
    K = np.array([[src.intrinsic[0][0] * s, 0, src.intrinsic[0][2] * s],
                  [0, src.intrinsic[1][1] * s, src.intrinsic[1][2] * s - (src.height * s - H) / 2], [0, 0, 1]])
    for k, (ai, (o, inf)) in enumerate(zip(agent.inputs, seen)):
        assert len(ai.ego_statuses) == len(ai.cameras) == len(ai.lidars) == 4
        cur = ai.ego_statuses[-1]
        np.testing.assert_array_equal(cur.ego_pose, np.zeros(3))
        for st in ai.ego_statuses:
            assert st.ego_pose.shape == (3,) and st.ego_velocity.shape == st.ego_acceleration.shape == (2,)
            assert st.ego_velocity.dtype == np.float32 and st.driving_command.shape == (4,)
            assert not st.in_global_frame
        hist = np.stack([st.ego_pose for st in ai.ego_statuses])
        np.testing.assert_allclose(hist.ravel(), o["ego_status"][8:], atol=1e-5)  # the obs' past poses, m and rad
        assert hist[0, 0] < hist[1, 0] < hist[2, 0] <= 0.0 or k == 0  # driving forward: older poses behind
        np.testing.assert_allclose(cur.ego_velocity, o["ego_status"][0:2], atol=1e-6)
        np.testing.assert_allclose(cur.ego_acceleration, o["ego_status"][2:4], atol=1e-6)
        np.testing.assert_array_equal(cur.driving_command, o["ego_status"][4:8])
        assert all(lid.lidar_pc is None for lid in ai.lidars)
        # cameras: requested ones of frames this bridge saw, empty otherwise
        cams = ai.cameras
        f0 = cams[3].cam_f0
        assert f0.image.shape == (H, W, 3) and f0.image.dtype == np.uint8
        np.testing.assert_array_equal(f0.image, o["cameras"][order.index("CAM_F0")])
        np.testing.assert_array_equal(cams[3].cam_r0.image, o["cameras"][order.index("CAM_R0")])
        np.testing.assert_allclose(f0.intrinsics, K)
        assert f0.distortion.shape == (5,) and f0.sensor2lidar_rotation.shape == (3, 3)
        assert cams[3].cam_b0 == Camera() and cams[2].cam_l0 == Camera() and cams[0].cam_f0 == Camera()
        for idx, back in ((2, 1), (1, 2)):  # CAM_F0 0.5 s and 1.0 s ago: the frames seen `back` steps earlier
            img = cams[idx].cam_f0.image
            if k >= back:
                np.testing.assert_array_equal(img, seen[k - back][0]["cameras"][order.index("CAM_F0")])
            else:
                assert img is None  # before the episode's start: never rendered
    env.close()


def test_returns_are_checked_and_resampled():
    policy = NavsimAgentPolicy(RecordingAgent(as_array=True))
    line = np.stack([2.0 * 0.1 * np.arange(1, 41), np.zeros(40), np.zeros(40)], -1)  # 2 m/s, 40 poses at 0.1 s
    plan = policy.plan(Trajectory(line.astype(np.float32), TrajectorySampling(num_poses=40, interval_length=0.1)))
    np.testing.assert_allclose(plan, np.stack([np.arange(1, 9) * 1.0, np.zeros(8), np.zeros(8)], -1), atol=1e-6)
    arr = np.arange(24, dtype=np.float64).reshape(8, 3) / 10
    assert policy.plan(arr).dtype == np.float32
    np.testing.assert_allclose(policy.plan({"trajectory": Trajectory(arr.astype(np.float32))}), arr, atol=1e-7)
    # a 1 s grid: interpolated from the current pose (0, 0, 0) at t = 0
    coarse = resample_poses(np.array([[1.0, 0, 0], [2, 0, 0], [3, 0, 0], [4, 0, 0]]), 1.0)
    np.testing.assert_allclose(coarse[:, 0], 0.5 * np.arange(1, 9))
    with pytest.raises(PolicyError, match="a plan is \\[8, 3\\]"):
        policy.plan(np.zeros((6, 3)))
    with pytest.raises(PolicyError, match="covers 2 s; a plan needs 4 s"):
        policy.plan(Trajectory(np.zeros((4, 3), np.float32), TrajectorySampling(num_poses=4, interval_length=0.5)))
    with pytest.raises(PolicyError, match="non-finite"):
        policy.plan(np.full((8, 3), np.nan))
    with pytest.raises(PolicyError, match="must return a Trajectory"):
        policy.plan("left")


def test_contract_is_checked():
    class SceneAgent(RecordingAgent):
        requires_scene = True

    with pytest.raises(PolicyError, match="requires NAVSIM's privileged Scene"):
        NavsimAgentPolicy(SceneAgent())
    with pytest.raises(PolicyError, match="not a NAVSIM agent: it has no initialize"):
        NavsimAgentPolicy(object())
    no_cams = RecordingAgent()
    no_cams.get_sensor_config = SensorConfig.build_no_sensors
    p = load_policy(no_cams)  # a NAVSIM agent object goes through the bridge
    assert isinstance(p, NavsimAgentPolicy) and p.cameras is None and p.name == "recording_agent"
    assert policy_env_kwargs(p) == {"observation_keys": ("ego_status",)}
    with pytest.raises(PolicyError, match="env observes none"):
        NavsimAgentPolicy(RecordingAgent()).act({"ego_status": np.zeros(20)},
                                                {"time_us": 0, "ego_history": {}})
