"""`simscale export --format openscene` (training/export.py): a generation run's Parquet shards, read back through the
project's NAVSIM reader (issue 17, deliverable 3). The shards here are small fakes with the sample row schema of the
generator (iface: token, ego statuses of 4 history frames, JPEG cameras, camera_meta, label, agents)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from simscale_env.data.openscene import NavsimSceneLoader, load_log, load_split
from simscale_env.errors import CorruptFileError, OutputFolderError, SchemaError
from training.export import export_openscene

CAMS = ("CAM_L0", "CAM_F0", "CAM_R0")


def _jpeg(seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = np.repeat(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], 16, 0).repeat(3, 2)
    img = (img + rng.integers(0, 60, 3, dtype=np.uint8)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _row(base: str, round_: int, seed: int, roadblocks: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    hist = np.zeros((4, 3))
    hist[:, 0] = [-4.5, -3.0, -1.5, 0.0]
    hist[:3, 1] = rng.normal(0, 0.2, 3)
    hist[:3, 2] = rng.normal(0, 0.05, 3)
    t = np.arange(1, 9) * 0.5
    label = np.stack([3.0 * t, 0.1 * t**2 * rng.normal(), 0.05 * t * rng.normal()], -1)
    meta = {ch: {"intrinsics": [[20.0, 0, 16], [0, 20.0, 8], [0, 0, 1]],
                 "sensor2lidar_rotation": np.eye(3).tolist(), "sensor2lidar_translation": [1.0, float(k), 1.5],
                 "distortion": [0.0] * 5, "width": 32, "height": 16} for k, ch in enumerate(CAMS)}
    row = {"token": f"{base}-{round_:03d}", "base_token": base, "round": round_, "log_name": "2021.06.03.log",
           "map_location": "us-ma-boston", "timestamp_us": 1_622_700_000_000_000 + seed * 1_000_000,
           "expert": "pdm_closed", "perturbation_lateral": 0.5, "perturbation_longitudinal": -1.0,
           "perturbation_heading": 0.05, "perturbation_speed_scale": 1.1,
           "ego_pose": hist.ravel().tolist(), "ego_velocity": rng.normal(3, 0.3, 8).tolist(),
           "ego_acceleration": rng.normal(0, 0.3, 8).tolist(),
           "driving_command": np.tile([0, 0, 1, 0], 4).tolist(),
           **{ch: [_jpeg(seed * 100 + 10 * k + f) for f in range(4)] for k, ch in enumerate(CAMS)},
           "camera_meta": json.dumps(meta), "label_poses": label.ravel().tolist(),
           "label_trajectory": np.zeros(120).tolist(), "label_epdms": 0.93,
           "agents": [8.0, 1.0, 0.1, 2.0, 0.0, 4.5, 1.9, 0.0, -6.0, -3.5, 1.5, 0.0, 1.2, 0.6, 0.6, 2.0],
           "route": np.zeros(64).tolist()}
    if roadblocks:
        row["roadblock_ids"] = ["1001", "1002"]
    return row


def _run(tmp: Path, shards: list[list[dict]], *, checksum: bool = True) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    run = tmp / "run"
    (run / "shards").mkdir(parents=True)
    entries = []
    for i, rows in enumerate(shards):
        p = run / "shards" / f"shard-{i:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(rows), p)
        entries.append({"path": str(p.relative_to(run)), "rows": len(rows),
                        **({"sha256": hashlib.sha256(p.read_bytes()).hexdigest()} if checksum else {})})
    (run / "manifest.json").write_text(json.dumps({"shards": entries}))
    return run


def _listing(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_reads_back_through_the_navsim_reader(tmp_path):
    from PIL import Image

    rows = [_row("aa11", 1, 1), _row("bb22", 1, 2), _row("aa11", 2, 3)]
    run = _run(tmp_path, [[rows[2], rows[0]], [rows[1]]])  # out of order: the split lists them sorted
    before = _listing(run)
    out = export_openscene(run, tmp_path / "export", split="sim")
    assert _listing(run) == before  # the run is only read
    spec = load_split(out / "splits" / "sim.yaml")
    assert list(spec.tokens) == sorted(r["token"] for r in rows) == list(spec.log_names)
    assert (spec.num_history_frames, spec.num_future_frames, spec.has_route) == (4, 8, False)
    loader = NavsimSceneLoader(out / "navsim_logs" / "sim", spec, sensor_blobs=out / "sensor_blobs" / "sim")
    assert sorted(loader.tokens) == sorted(spec.tokens)
    for row in rows:
        scene = loader.scene(row["token"])
        assert scene.token == row["token"] and scene.map_location == "us-ma-boston"
        # the label is the scene's future trajectory (NAVSIM reads it from the future frames' ego poses)
        np.testing.assert_allclose(scene.future_trajectory(), np.reshape(row["label_poses"], (8, 3)), atol=1e-6)
        assert np.array_equal(scene.future_trajectory().astype(np.float32),
                              np.asarray(row["label_poses"], np.float32).reshape(8, 3))
        np.testing.assert_allclose(scene.history_trajectory(), np.reshape(row["ego_pose"], (4, 3)), atol=1e-9)
        st = scene.ego_status()
        np.testing.assert_array_equal(st["velocity"], row["ego_velocity"][6:])
        np.testing.assert_array_equal(st["acceleration"], row["ego_acceleration"][6:])
        np.testing.assert_array_equal(st["driving_command"], [0, 0, 1, 0])
        assert [f["timestamp"] for f in scene.frames][3] == row["timestamp_us"]
        assert np.diff([f["timestamp"] for f in scene.frames]).tolist() == [500_000] * 11
        for k, ch in enumerate(CAMS):
            for f in range(4):
                p = scene.camera_path(ch, f)
                assert p.read_bytes() == row[ch][f]  # the generator's JPEG, as it was
                assert np.asarray(Image.open(p)).shape == (16, 32, 3)
            cam = scene.current["cams"][ch]
            np.testing.assert_array_equal(cam["sensor2lidar_translation"], [1.0, k, 1.5])
            assert cam["cam_intrinsic"].shape == (3, 3) and cam["distortion"].shape == (5,)
        assert set(scene.current["cams"]) == {"CAM_F0", "CAM_L0", "CAM_L1", "CAM_L2", "CAM_R0", "CAM_R1", "CAM_R2",
                                              "CAM_B0"}  # NAVSIM indexes all eight
        anns = scene.current["anns"]
        np.testing.assert_array_equal(anns["gt_boxes"][:, [0, 1, 6, 3, 4]], [[8.0, 1.0, 0.1, 4.5, 1.9],
                                                                            [-6.0, -3.5, 1.5, 0.6, 0.6]])
        assert list(anns["gt_names"]) == ["vehicle", "pedestrian"]
        assert len(load_log(out / "navsim_logs" / "sim" / f"{row['token']}.pkl")) == 12


def test_export_is_deterministic_and_keeps_roadblocks(tmp_path):
    rows = [_row("cc33", 1, 4, roadblocks=True), _row("dd44", 1, 5, roadblocks=True)]
    run = _run(tmp_path, [rows])
    a = export_openscene(run, tmp_path / "a")
    b = export_openscene(run, tmp_path / "b")
    assert _listing(a) == _listing(b)
    spec = load_split(a / "splits" / "simscale.yaml")
    assert spec.has_route
    scene = NavsimSceneLoader(a / "navsim_logs" / "simscale", spec).scene(rows[0]["token"])
    assert scene.roadblock_ids == ["1001", "1002"]


def test_bad_input_is_one_error_and_writes_nothing(tmp_path):
    run = _run(tmp_path, [[_row("ee55", 1, 6)]])
    with pytest.raises(OutputFolderError, match="inside the run folder"):
        export_openscene(run, run / "export")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "precious.txt").write_text("x")
    with pytest.raises(OutputFolderError, match="not an empty folder"):
        export_openscene(run, tmp_path / "full")
    assert _listing(tmp_path / "full") == {"precious.txt": b"x"}
    bad = _row("ff66", 1, 7)
    del bad["label_poses"]
    run2 = _run(tmp_path / "r2", [[bad]])
    with pytest.raises(SchemaError, match="label_poses"):
        export_openscene(run2, tmp_path / "out2")
    short = _row("ff66", 1, 7)
    short["CAM_F0"] = short["CAM_F0"][:3]
    run3 = _run(tmp_path / "r3", [[short]])
    with pytest.raises(SchemaError, match="CAM_F0"):
        export_openscene(run3, tmp_path / "out3")
    shard = next((run / "shards").glob("*.parquet"))
    shard.write_bytes(shard.read_bytes()[:-20] + b"\0" * 20)
    with pytest.raises(CorruptFileError, match="sha256"):
        export_openscene(run, tmp_path / "out4")
    assert not any((tmp_path / n).exists() for n in ("out2", "out3", "out4"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_cli_export(tmp_path, capsys):
    from simscale_env.cli import main

    run = _run(tmp_path, [[_row("ab12", 1, 8)]])
    assert main(["export", "--format", "openscene", str(run), "--out", str(tmp_path / "x"), "--split", "s1"]) == 0
    assert "1 samples exported" in capsys.readouterr().out
    assert (tmp_path / "x" / "navsim_logs" / "s1" / "ab12-001.pkl").exists()
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing" in err and not (tmp_path / "y").exists()
