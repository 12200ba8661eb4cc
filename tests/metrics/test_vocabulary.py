"""Trajectory vocabulary (human plans, k-means, .npy) and per-scene float16 reward labels."""

import json

import numpy as np
import pytest

from simscale_env.cli import main
from simscale_env.errors import CorruptFileError, MissingFileError
from simscale_env.map import load_map
from simscale_env.metrics.pseudo_sim import pseudo_simulate
from simscale_env.metrics.vocabulary import (LABEL_KEYS, human_plans, kmeans_vocabulary, label_scene, label_scenes,
                                             load_vocabulary, save_vocabulary)
from simscale_env.sim import SimConfig, Simulation


def test_human_plans_are_logged_futures_in_the_start_frame(mini_logs):
    plans = human_plans(mini_logs[:2], num_poses=40, interval_s=0.1, stride_s=1.0)
    assert plans.shape[1:] == (40, 3) and len(plans) > 50
    # forward driving: x grows along the plan, the first pose is 0.1 s ahead, headings stay wrapped
    assert np.all(np.abs(plans[:, 0, :2]).max(1) < 2.5)
    assert np.median(plans[:, -1, 0]) > 5.0
    assert np.all(np.abs(plans[..., 2]) <= np.pi)


def test_kmeans_recovers_known_clusters_and_is_deterministic():
    rng = np.random.default_rng(0)
    t = np.arange(1, 41)[:, None] * 0.1
    centres = np.stack([np.concatenate([v * t, c * t ** 2, c * t], 1) for v, c in
                        ((2.0, 0.0), (8.0, 0.0), (8.0, 0.6), (8.0, -0.6), (14.0, 0.0))])
    sizes = [60, 50, 40, 30, 20]
    plans = np.concatenate([c[None] + rng.normal(0, 0.05, (n, 40, 3)) for c, n in zip(centres, sizes)])
    v1 = kmeans_vocabulary(plans, 5, seed=3)
    v2 = kmeans_vocabulary(plans, 5, seed=3)
    assert np.array_equal(v1, v2)
    # sorted by cluster size: the order of `sizes`
    for k in range(5):
        assert np.abs(v1[k] - centres[k]).max() < 0.05
    with pytest.raises(ValueError, match="at least 300 human plans"):
        kmeans_vocabulary(plans[:200], 300)
    with pytest.raises(ValueError, match="NaN"):
        kmeans_vocabulary(np.full((10, 40, 3), np.nan), 2)


def test_vocabulary_file_round_trip_and_errors(tmp_path):
    v = np.random.default_rng(1).normal(size=(16, 40, 3))
    path = save_vocabulary(tmp_path / "sub" / "vocab.npy", v)
    back = load_vocabulary(path)
    assert back.shape == (16, 40, 3) and np.allclose(back, v, atol=1e-6)
    assert not list(path.parent.glob(".*tmp"))  # atomic write leaves no temporaries
    with pytest.raises(MissingFileError):
        load_vocabulary(tmp_path / "missing.npy")
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not numpy")
    with pytest.raises(CorruptFileError, match="bad.npy"):
        load_vocabulary(bad)
    np.save(tmp_path / "flat.npy", np.zeros((4, 3)))
    with pytest.raises(CorruptFileError, match=r"\[K, P, 3\]"):
        load_vocabulary(tmp_path / "flat.npy")


def test_labels_are_the_engine_scores_in_float16(mini, mini_builder, tmp_path):
    # a straight road where the logged ego brakes from 4.5 m/s to a stop within ~8 m (mini
    # low_magnitude_speed, builder version 3): the 4.4 m/s straight plan stays on the road, PDM-Closed's own plan
    # progresses no further than 2 m/s for 4 s, and the standing plan still rolls while the LQR brakes
    tok = "05643bd9def6aa52"
    sc = mini_builder.load(tok)
    sim = Simulation(sc, load_map(sc.map_location, mini / "maps"), SimConfig(agent_mode="non_reactive"))
    t = np.arange(1, 41)[:, None] * 0.1
    vocab = np.stack([np.concatenate([v * t, 0 * t, 0 * t], 1) for v in (0.0, 2.0, 4.4, 8.0, 30.0)])
    vocab[4, :, 1] = 0.5 * vocab[4, :, 0]  # fast and off to the left: leaves the road
    labels = label_scene(sim, sim.reset(), vocab, reference="joint")
    assert set(labels) == set(LABEL_KEYS) and all(v.dtype == np.float16 and v.shape == (5,) for v in labels.values())
    scores, _ = pseudo_simulate(sim, sim.reset(), vocab, plan_interval_s=0.1)
    for k in LABEL_KEYS:
        want = scores.pdm_score() if k == "pdm_score" else getattr(scores, k)
        assert np.array_equal(labels[k], want.astype(np.float16))
    assert labels["drivable_area_compliance"][4] == 0 and labels["pdm_score"][4] == 0
    assert labels["drivable_area_compliance"][2] == 1
    # EP pairwise against PDM-Closed (SimScale's GTRS labels) instead of the vocabulary's best: a braking plan
    # still progresses while the LQR brakes, less than PDM-Closed's plan
    gen = label_scene(sim, sim.reset(), vocab)
    assert 0.2 < gen["ego_progress"][0] < 0.9 and gen["ego_progress"][0] != labels["ego_progress"][0]
    assert gen["ego_progress"][1] == 1.0
    with pytest.raises(ValueError, match="reference"):
        label_scene(sim, sim.reset(), vocab, reference="best")
    # files: one per scene, resumable
    r = label_scenes(mini_builder, [tok], mini / "maps", vocab, tmp_path / "labels", progress=False,
                     reference="joint", scene_window="nuplan")
    assert r["written"] == 1
    z = np.load(tmp_path / "labels" / f"{tok}.npz")
    assert np.array_equal(z["pdm_score"], labels["pdm_score"])
    meta = json.loads((tmp_path / "labels" / "labels.json").read_text())
    assert meta["vocabulary_shape"] == [5, 40, 3] and meta["scene_window"] == "nuplan"
    r = label_scenes(mini_builder, [tok], mini / "maps", vocab, tmp_path / "labels", progress=False,
                     reference="joint", scene_window="nuplan")
    assert r["written"] == 0 and r["skipped"] == 1
    # the default labels NAVSIM's frame of the token (GTRS's gen_vocab_score; where the env starts), 3 s later
    label_scenes(mini_builder, [tok], mini / "maps", vocab, tmp_path / "navsim", progress=False, reference="joint")
    nsc = mini_builder.navsim_scenario(tok)
    assert nsc.timestamps_us[0] - sc.timestamps_us[0] == 3_000_000
    nsim = Simulation(nsc, sim.map, SimConfig(agent_mode="non_reactive"))
    want = label_scene(nsim, nsim.reset(), vocab, reference="joint")
    z = np.load(tmp_path / "navsim" / f"{tok}.npz")
    assert all(np.array_equal(z[k], want[k]) for k in LABEL_KEYS)


def test_vocab_cli_builds_and_labels_a_split(mini, tmp_path, capsys):
    out = tmp_path / "vocab.npy"
    assert main(["vocab", "build", "--split", "navtrain", "--data", str(mini), "--maps", str(mini / "maps"),
                 "--k", "32", "--iterations", "5", "--out", str(out), "--quiet"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["vocabulary"] == [32, 40, 3] and np.load(out).shape == (32, 40, 3)
    assert main(["vocab", "label", "--split", "navtrain", "--data", str(mini), "--maps", str(mini / "maps"),
                 "--vocab", str(out), "--out", str(tmp_path / "labels"), "--limit", "2", "--quiet"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["written"] == 2 and len(list((tmp_path / "labels").glob("*.npz"))) == 2
    assert main(["vocab", "build", "--split", "nosuchsplit", "--data", str(mini), "--maps", str(mini / "maps"),
                 "--out", str(out)]) == 2

    assert "no split named 'nosuchsplit'" in capsys.readouterr().err
    assert main(["vocab", "build", "--split", "navtrain", "--data", str(mini), "--maps", str(mini / "maps"),
                 "--k", "100000", "--out", str(tmp_path / "big.npy"), "--quiet"]) == 2
    assert "--k 100000 clusters need at least 100000 human plans" in capsys.readouterr().err
    assert not (tmp_path / "big.npy").exists()


def test_vocab_on_openscene_only_data_is_one_clear_error(mini_openscene, tmp_path, capsys, monkeypatch):
    """`simscale vocab build` reads 0.1 s human plans from .db logs: NAVSIM users' OpenScene-only data gets one line
    saying so (before: an UnboundLocalError traceback), and nothing is written."""
    for v in ("NUPLAN_DATA_ROOT", "SIMSCALE_MINI"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("OPENSCENE_DATA_ROOT", str(mini_openscene))
    monkeypatch.setenv("NUPLAN_MAPS_ROOT", str(mini_openscene / "maps"))
    assert main(["vocab", "build", "--split", "navhard", "--k", "8", "--out", str(tmp_path / "v.npy"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "`simscale vocab` reads human plans at 0.1 s from the nuPlan .db logs; set NUPLAN_DATA_ROOT" in err
    assert "Traceback" not in err and not (tmp_path / "v.npy").exists()
