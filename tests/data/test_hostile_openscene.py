"""OpenScene logs with the right keys but wrong values (issue 14): CorruptFileError naming the file, frame and key;
random byte corruption of a real log raises only SimScaleError subclasses."""

import copy
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simscale_env.data.openscene import NavsimSceneLoader, SplitSpec, load_log
from simscale_env.errors import CorruptFileError, SchemaError, SimScaleError


@pytest.fixture(scope="module")
def frames(mini) -> list:
    """The first 20 frames of the smallest mini OpenScene log (read-only: tests deep-copy what they change)."""
    src = min((mini / "navsim_logs" / "mini").glob("*.pkl"), key=lambda p: p.stat().st_size)
    return load_log(src)[:20]


def _dump(path: Path, frames: list) -> Path:
    path.write_bytes(pickle.dumps(frames, protocol=4))
    return path


def _set(frame: dict, key: str, value):
    if key.startswith("anns."):
        frame["anns"][key[5:]] = value
    else:
        frame[key] = value


@pytest.mark.parametrize("key, value, match", [
    ("ego2global_translation", "571243.4", r"'ego2global_translation' is a str; expected 3 finite numbers"),
    ("ego2global_translation", ["1.0", "2.0", "3.0"], r"'ego2global_translation' is an array of <U3"),
    ("ego2global_translation", [1.0, 2.0], r"'ego2global_translation' is of shape \(2,\); expected 3 finite"),
    ("ego2global_translation", [np.nan, 0.0, 0.0], r"'ego2global_translation' is not finite"),
    ("ego2global_translation", [[1.0], 2.0, 3.0], r"'ego2global_translation' is not an array"),
    ("ego2global_rotation", [1.0, 0.0, 0.0], r"'ego2global_rotation' is of shape \(3,\); expected 4 finite numbers"),
    ("ego2global_rotation", None, r"'ego2global_rotation' is a NoneType"),
    ("ego_dynamic_state", [1.0, 0.0, None, 0.0], r"'ego_dynamic_state' is a list holding non-numbers"),
    ("ego_dynamic_state", {"vx": 1.0}, r"'ego_dynamic_state' is a dict"),
    ("driving_command", np.zeros((2, 2)), r"'driving_command' is of shape \(2, 2\)"),
    ("timestamp", None, r"'timestamp' is a NoneType; expected an integer"),
    ("timestamp", 1.6e15, r"'timestamp' is an array of float64; expected an integer"),
    ("timestamp", "1622728800000000", r"'timestamp' is a str; expected an integer"),
    ("token", 12345, r"'token' is a int; expected a string"),
    ("log_name", None, r"'log_name' is a NoneType; expected a string"),
    ("map_location", b"us-pa-pittsburgh-hazelwood", r"'map_location' is a bytes; expected a string"),
    ("roadblock_ids", "30001", r"'roadblock_ids' is '30001'; expected a list of roadblock id strings"),
    ("roadblock_ids", [30001, 30045], r"'roadblock_ids' is '\[30001, 30045\]'"),
    ("cams", ["CAM_F0"], r"'cams' is not a mapping of channel"),
    ("cams", {"CAM_F0": {"data_path": None}}, r"'cams' is not a mapping of channel"),
    ("anns", [1, 2], r"'anns' is a list; expected a dict"),
    ("anns.gt_boxes", "boxes", r"'anns\.gt_boxes' is not an \[N, 7\] array of numbers"),
    ("anns.gt_boxes", np.zeros((3, 6)), r"'anns\.gt_boxes' is not an \[N, 7\] array of numbers"),
    ("anns.gt_velocity_3d", np.zeros((2, 3, 1)), r"'anns\.gt_velocity_3d' is not an \[N, 3\] array"),
    ("anns.track_tokens", ["only-one"], r"the annotation arrays disagree on the number of boxes"),
    ("anns.gt_names", 7, r"'anns\.gt_names' is a int; expected a list of strings"),
])
def test_a_wrong_value_names_file_frame_and_key(tmp_path, frames, key, value, match):
    bad = copy.deepcopy(frames)
    if key.startswith("anns.") and len(bad[3]["anns"]["gt_boxes"]) < 2:
        pytest.fail("frame 3 of the smallest mini log should have at least 2 boxes")
    _set(bad[3], key, value)
    p = _dump(tmp_path / "log.pkl", bad)
    with pytest.raises(CorruptFileError, match=r"log\.pkl: frame 3: " + match):
        load_log(p)


def test_good_frames_still_load_and_missing_keys_stay_schema_errors(tmp_path, frames):
    assert len(load_log(_dump(tmp_path / "ok.pkl", frames))) == 20
    bad = copy.deepcopy(frames)
    del bad[7]["ego2global_rotation"]
    with pytest.raises(SchemaError, match=r"frame 7 lacks keys \['ego2global_rotation'\]"):
        load_log(_dump(tmp_path / "bad.pkl", bad))


def test_every_mini_log_passes(mini):
    logs = sorted((mini / "navsim_logs" / "mini").glob("*.pkl"))
    assert logs and all(len(load_log(p)) == 90 for p in logs)


# ------------------------------------------------------------------------------------------ random corruption
@pytest.fixture(scope="module")
def log_bytes(frames) -> bytes:
    return pickle.dumps(frames, protocol=4)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile_openscene")


@settings(max_examples=120, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_random_corruption_raises_only_simscale_errors(log_bytes, scratch, data):
    """Flip up to 6 bytes (positions skewed to the structure-dense start half the time) and maybe truncate: the
    log either fails with a SimScaleError or loads into scenes that the loader can use."""
    raw = bytearray(log_bytes)
    hi = data.draw(st.sampled_from([len(raw) - 1, min(len(raw) - 1, 4096)]))
    for pos, byte in data.draw(st.lists(st.tuples(st.integers(0, hi), st.integers(0, 255)), min_size=1,
                                        max_size=6)):
        raw[pos] = byte
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(raw))))
    folder = scratch / "logs"
    folder.mkdir(exist_ok=True)
    p = folder / "corrupt.pkl"
    p.write_bytes(bytes(raw[:cut]))
    try:
        frames = load_log(p)
        loader = NavsimSceneLoader(folder, SplitSpec("all", has_route=False))
        for scene in loader:
            assert scene.future_trajectory().shape == (10, 3) and scene.history_trajectory().shape == (4, 3)
            assert scene.ego_status()["velocity"].shape == (2,)
            assert isinstance(scene.token, str) and isinstance(scene.roadblock_ids, list)
    except SimScaleError:
        return
    assert isinstance(frames, list)
