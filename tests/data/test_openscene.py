"""NAVSIM/OpenScene logs of the mini dataset: restricted loading, scenes of 4 + 10 frames at 2 Hz, splits."""

import pickle

import numpy as np
import pytest

from simscale_env.data import LogDB
from simscale_env.data.openscene import NavsimSceneLoader, SplitSpec, load_log, load_split, write_split
from simscale_env.errors import SchemaError, UnsafePickleError
from simscale_env.geometry import global_to_local


def test_scenes_of_the_test_split(mini):
    split = load_split(mini / "splits" / "mini-navtest.yaml")
    loader = NavsimSceneLoader(mini / "navsim_logs" / "mini", split)
    assert set(loader.tokens) == set(split.tokens)
    sc = loader.scene(loader.tokens[0])
    assert len(sc.frames) == 14 and sc.token == sc.frames[3]["token"]
    ts = np.array([f["timestamp"] for f in sc.frames])
    assert np.all(np.diff(ts) == 500_000)
    fut = sc.future_trajectory()
    assert fut.shape == (10, 3)
    # the future trajectory is the logged rear axle 0.5 .. 5 s ahead, in the current rear-axle frame
    with LogDB(next((mini / "nuplan-v1.1" / "splits" / "mini").glob(f"{sc.log_name}.db"))) as db:
        i = db.lidar_pc_index(sc.token)
        e = db.ego_arrays(np.arange(i, i + 101, 10))
        poses = np.stack([e["x"], e["y"], e["heading"]], -1)
        assert np.abs(fut - global_to_local(poses[1:], poses[0])).max() < 1e-6
    cmd = sc.ego_status()["driving_command"]
    assert cmd.sum() == 1 and cmd.shape == (4,)
    assert sc.roadblock_ids and sc.map_location.startswith(("us-", "sg-"))
    assert set(sc.current["cams"]) == {"CAM_F0", "CAM_B0", "CAM_L0", "CAM_L1", "CAM_L2", "CAM_R0", "CAM_R1",
                                       "CAM_R2"}


def test_windows_without_split(mini):
    loader = NavsimSceneLoader(mini / "navsim_logs" / "mini")
    # 45 s at 2 Hz = 90 keyframes per log, cut into non-overlapping windows of 14
    assert len(loader) == 6 * len(list((mini / "navsim_logs" / "mini").glob("*.pkl")))


def test_split_round_trip(tmp_path):
    p = write_split(tmp_path / "s.yaml", log_names=["a", "b"], tokens=["00000000000000aa"], num_future_frames=8)
    s = load_split(p)
    assert s == SplitSpec("s", 4, 8, 1, True, None, ("a", "b"), ("00000000000000aa",))


def test_openscene_log_rejects_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (eval, ("1+1",))

    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps([{"token": Evil()}]))
    with pytest.raises(UnsafePickleError, match="evil.pkl"):
        load_log(p)
    q = tmp_path / "notalist.pkl"
    q.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(SchemaError, match="list of frame dicts"):
        load_log(q)


@pytest.mark.parametrize("k", [1, 7])
def test_max_scenes_caps_the_whole_split_not_each_log(mini, k):
    """NAVSIM's filter_scenes stops loading once max_scenes scenes are found, across logs."""
    loader = NavsimSceneLoader(mini / "navsim_logs" / "mini", SplitSpec("capped", has_route=False, max_scenes=k))
    assert len(loader.tokens) == k


def test_db_to_openscene_fields_follow_openscene(mini_logs, mini):
    """frame_idx counts within each scene, lidar_path is lidar_pc.filename, the ego keeps its z."""
    from simscale_env.data.openscene import db_to_openscene

    with LogDB(mini_logs[0]) as db:
        frames = db_to_openscene(db)
        fn = {t: f for t, f in zip(db.lidar_pc_tokens, db._lidar_pc["filename"])}
        z = db.ego_arrays(np.arange(0, len(db.lidar_pc_timestamps), 10))["z"]
    by_scene: dict = {}
    for f in frames:
        by_scene.setdefault(f["scene_token"], []).append(f["frame_idx"])
    assert len(by_scene) > 1 and all(v == list(range(len(v))) for v in by_scene.values())
    assert all(f["lidar_path"] == fn[f["token"]] for f in frames)
    np.testing.assert_array_equal([f["ego2global_translation"][2] for f in frames], z)
    np.testing.assert_array_equal([f["can_bus"][2] for f in frames], z)
