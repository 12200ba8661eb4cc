import json

import numpy as np

from simscale_env.cli import main


def test_data_info(mini, capsys):
    assert main(["data", "info", str(mini), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["num_logs"] >= 12 and sum(s["scenarios_by_type"].values()) >= 30
    assert {"vehicle", "pedestrian", "bicycle"} <= set(s["tracks_by_category"])
    assert "lanes_polygons" in s["maps"]["us-nv-las-vegas-strip"]["layers"]
    assert main(["data", "info", str(mini)]) == 0
    assert "scenarios by type" in capsys.readouterr().out


def test_unknown_benchmark(capsys):
    assert main(["bench", "nope"]) == 2


def test_demo_drives_a_navhard_episode_and_writes_images_and_a_video(mini, tmp_path, capsys):
    from PIL import Image

    assert main(["demo", "--data", str(mini), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert "EPDMS" in out and 0.0 <= summary["epdms"] <= 1.0
    pngs = sorted(p.name for p in (tmp_path / "start").glob("CAM_*.png"))
    assert pngs == sorted(f"CAM_{c}.png" for c in ("F0", "B0", "L0", "L1", "L2", "R0", "R1", "R2"))
    img = np.asarray(Image.open(tmp_path / "start" / "CAM_F0.png"))
    assert img.shape == (224, 480, 3) and img.std() > 10  # an image, not a blank
    video = tmp_path / "episode.mp4"
    assert video.exists() and video.stat().st_size > 10_000


def test_check_golden_help_documents_every_flag(capsys):
    import argparse

    import pytest

    from simscale_env.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    cg = sub.choices["check-golden"]
    for action in cg._actions:
        assert action.help, action.dest
    with pytest.raises(SystemExit) as exc:
        main(["check-golden", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("DIR", "--cache", "--max-mismatches", "--quiet"):
        assert flag in text


def test_check_golden_on_a_missing_folder_exits_2_with_one_line(tmp_path, capsys):
    assert main(["check-golden", str(tmp_path / "missing"), "--quiet"]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.count("\n") == 1 and "missing" in cap.err
