"""training.datasets (issue 18, deliverable 2): real samples from the logs, sim samples from a `simscale generate` run,
the pooled / mixed loader and rewards-only mode, on 4 tokens of mini-navtrain (3 give a sim sample at seed 0, one has
no valid perturbed start), front cameras at 96x48 and a K=16 vocabulary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import training.datasets as D
from agents.planners.features import FRONT_CHANNELS, status_from_observation, stitch_front_cameras
from simscale_env.errors import MissingFileError, OutputFolderError, SimScaleError
from simscale_env.metrics import SUB_METRICS

W, H = 96, 48
IMAGE_SIZE = (128, 32)
NO_START = "ab039fbab189cedc"  # no valid perturbed start at seed 0 (tests/training/test_generate.py)


def _stacked(labels: dict, k: int) -> np.ndarray:
    """label_scene's {key: float16 [K]} as the row's float16 [K, 9] in SUB_METRICS order (EC NaN), as float32."""
    return np.stack([labels[m] if m in labels else np.full(k, np.nan, np.float16) for m in SUB_METRICS],
                    -1).astype(np.float32)


@pytest.fixture(scope="module")
def data(mini, mini_logs, tmp_path_factory):
    from simscale_env.metrics.vocabulary import human_plans, kmeans_vocabulary, save_vocabulary
    from training.engine import run_generation
    from training.generate import GenConfig

    root = tmp_path_factory.mktemp("datasets")
    head, toks = (mini / "splits" / "mini-navtrain.yaml").read_text().split("tokens:\n")
    split = root / "four.yaml"
    split.write_text(head + "tokens:\n" + "".join(toks.splitlines(keepends=True)[:4]))
    tokens = [t.strip()[2:] for t in toks.splitlines()[:4]]
    assert NO_START in tokens
    vocab = save_vocabulary(root / "vocab.npy", kmeans_vocabulary(human_plans(mini_logs[:2], stride_s=2.0), 16,
                                                                  iterations=10, seed=0))
    gen = root / "gen"
    cfg = GenConfig(split=str(split), rounds=1, width=W, height=H, vocab=str(vocab))
    m = run_generation(cfg, gen, progress=False, command="test")
    assert m["samples"] == 3
    real = D.build_real_samples(split, root / "real", width=W, height=H, vocab=vocab, progress=False)
    return {"root": root, "split": split, "tokens": tokens, "vocab": vocab, "gen": gen, "gen_cfg": cfg,
            "real": real}


@pytest.fixture(scope="module")
def real_ds(data):
    return D.PlannerDataset(data["real"], IMAGE_SIZE, vocab_scores=True)


@pytest.fixture(scope="module")
def sim_ds(data):
    return D.PlannerDataset(data["gen"], IMAGE_SIZE, vocab_scores=True)


def _rows(folder: Path) -> dict:
    rows = []
    for p in sorted(folder.glob("samples-*.parquet")):
        rows += pq.read_table(p).to_pylist()
    return {r["token"]: r for r in rows}


# ------------------------------------------------------------------------------------------ samples and labels
def test_real_sample_is_the_logged_start_with_the_metric_engines_labels(data, real_ds):
    """Every token gives a real sample: trajectory = info["logged_plan"], status = what a planner in the env reads
    (`status_from_observation`), vocab_scores = label_scene at the same state and vocabulary; the row's columns are
    the sim row's columns with the same Arrow types."""
    from simscale_env.metrics.vocabulary import label_scene, load_vocabulary

    assert real_ds.table.tokens == data["tokens"] and real_ds.vocab_size == 16
    vocab = load_vocabulary(data["vocab"])
    env = D.make_real_env(D.RealConfig(split=str(data["split"]), width=W, height=H))
    try:
        for i, tok in enumerate(data["tokens"]):
            obs, info = env.reset(options={"scenario_token": tok})
            u = env.unwrapped
            item = real_ds[i]
            assert item["token"] == tok and not item["is_sim"] and item["imitation_mask"] == 1.0
            np.testing.assert_array_equal(item["trajectory"].numpy(), info["logged_plan"])
            np.testing.assert_allclose(item["status"].numpy(), status_from_observation(obs["ego_status"]),
                                       atol=1e-5)
            want = _stacked(label_scene(u.sim, u.world, vocab, interval_s=0.1), 16)
            assert item["has_vocab_scores"]
            np.testing.assert_array_equal(item["vocab_scores"].numpy(), want)
    finally:
        env.close()
    assert torch.isnan(real_ds[0]["vocab_scores"][:, SUB_METRICS.index("two_frame_extended_comfort")]).all()
    assert np.nanmin(real_ds[0]["vocab_scores"].numpy()) == 0.0  # some vocabulary plan fails a metric
    real_schema = pq.read_schema(next(data["real"].glob("*.parquet")))
    sim_schema = pq.read_schema(next(data["gen"].glob("*.parquet")))
    common = set(real_schema.names) & set(sim_schema.names)
    assert {"token", "round", "ego_velocity", "driving_command", "label_poses", "vocab_scores", *FRONT_CHANNELS,
            "camera_meta"} <= common
    assert all(real_schema.field(c).type == sim_schema.field(c).type for c in common)
    row = _rows(data["real"])[data["tokens"][0]]
    assert row["round"] == 0 and len(row["CAM_F0"]) == 1 and row["CAM_F0"][0][:2] == b"\xff\xd8"


def test_sim_sample_is_its_shard_row_with_labels_at_the_perturbed_start(data, sim_ds):
    """The sim sample's trajectory is the shard's label_poses, its status the shard's current frame, its
    vocab_scores label_scene at the generated perturbed start (the generator env reset with the sample's seed)."""
    from simscale_env.metrics.vocabulary import label_scene, load_vocabulary
    from training.generate import make_generator_env, sample_seed

    rows = _rows(data["gen"])
    assert sorted(sim_ds.table.tokens) == sorted(rows) and len(sim_ds) == 3
    vocab = load_vocabulary(data["vocab"])
    env = make_generator_env(data["gen_cfg"])
    try:
        for i, tok in enumerate(sim_ds.table.tokens):
            row, item = rows[tok], sim_ds[i]
            assert item["is_sim"] and item["token"] == f"{row['base_token']}-001"
            np.testing.assert_array_equal(item["trajectory"].numpy(),
                                          np.asarray(row["label_poses"], np.float32).reshape(8, 3))
            np.testing.assert_array_equal(item["status"].numpy(), np.concatenate(
                [row["driving_command"][-4:], row["ego_velocity"][-2:], row["ego_acceleration"][-2:]]).astype(
                np.float32))
            _, info = env.reset(seed=sample_seed(0, row["base_token"], 1),
                                options={"scenario_token": row["base_token"]})
            assert info["perturbed"]
            u = env.unwrapped
            want = _stacked(label_scene(u.sim, u.world, vocab, interval_s=0.1), 16)
            np.testing.assert_array_equal(item["vocab_scores"].numpy(), want)
    finally:
        env.close()


def test_real_and_sim_images_of_the_same_unperturbed_state_are_identical(data, real_ds):
    """The sim path (the generator env's `history_camera_images`, JPEG-encoded as generate encodes) at the logged
    start gives the real sample's JPEG bytes; the dataset's image is those cameras stitched."""
    from training.generate import encode_jpeg, make_generator_env

    tok = data["tokens"][1]
    i = real_ds.table.tokens.index(tok)
    env = make_generator_env(data["gen_cfg"])
    try:
        _, info = env.reset(options={"scenario_token": tok, "perturbation": None})
        assert not info["perturbed"]
        current = env.unwrapped.history_camera_images()[-1]
    finally:
        env.close()
    for j, ch in enumerate(FRONT_CHANNELS):
        assert real_ds.table.jpeg(i, ch) == encode_jpeg(current[j], 90)
    decoded = [D.decode_jpeg(real_ds.table.jpeg(i, ch)) for ch in FRONT_CHANNELS]
    want = stitch_front_cameras(decoded, FRONT_CHANNELS, IMAGE_SIZE)
    img = real_ds[i]["image"]
    assert img.shape == (3, IMAGE_SIZE[1], IMAGE_SIZE[0]) and img.dtype == torch.float32
    np.testing.assert_array_equal((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), want)
    assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0 and float(img.std()) > 0.01


def test_labels_from_a_label_folder_and_the_cache(data, real_ds, mini, mini_builder, tmp_path):
    """`vocab_labels`: the label folder's float16 labels, in SUB_METRICS order (written by `label_scenes`, which
    labels NAVSIM's frame of each token, so they equal the labels computed in the env); `real_samples` builds once into its cache and
    the second call rebuilds nothing; a token the folder lacks is one error naming the folder and the token."""
    from simscale_env.metrics.vocabulary import label_scenes, load_vocabulary

    labels = tmp_path / "labels"
    label_scenes(mini_builder, data["tokens"], mini / "maps", load_vocabulary(data["vocab"]), labels,
                 progress=False)
    kw = dict(width=W, height=H, vocab_labels=labels, progress=False, cache_root=tmp_path / "cache")
    out = D.real_samples(data["split"], **kw)
    assert out.parent == tmp_path / "cache" and out.name.startswith("real-")
    ds = D.PlannerDataset(out, IMAGE_SIZE, vocab_scores=True)
    assert ds.table.tokens == real_ds.table.tokens
    for i in range(len(ds)):
        np.testing.assert_array_equal(ds[i]["vocab_scores"].numpy(), real_ds[i]["vocab_scores"].numpy())
    z = np.load(labels / f"{data['tokens'][0]}.npz")
    np.testing.assert_array_equal(ds[0]["vocab_scores"][:, 0].numpy(), z[SUB_METRICS[0]].astype(np.float32))
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert D.real_samples(data["split"], **kw) == out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamp  # nothing rebuilt
    (labels / f"{data['tokens'][2]}.npz").unlink()
    with pytest.raises(MissingFileError, match=f"{labels}.*{data['tokens'][2]}"):
        D.real_samples(data["split"], **kw)


def test_an_interrupted_build_resumes_to_the_same_shards(data, tmp_path):
    """Shards are written one by one (atomically) and the manifest last: a build that stopped after its first shard
    resumes with the missing ones and ends with the bytes of an uninterrupted build."""
    kw = dict(width=W, height=H, shard_rows=3, progress=False)
    ref = D.build_real_samples(data["split"], tmp_path / "ref", **kw)
    shards = {p.name: p.read_bytes() for p in sorted(ref.glob("*.parquet"))}
    assert list(shards) == ["samples-00000.parquet", "samples-00001.parquet"]
    cut = tmp_path / "cut"
    shutil.copytree(ref, cut)
    (cut / "manifest.json").unlink()
    (cut / "samples-00001.parquet").unlink()
    D.build_real_samples(data["split"], cut, **kw)
    assert {p.name: p.read_bytes() for p in sorted(cut.glob("*.parquet"))} == shards
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (ref, cut))
    assert a["shards"] == b["shards"] and b["complete"] and b["samples"] == 4 and b["vocab_size"] is None
    assert not [p for p in cut.iterdir() if p.name.startswith(".")]  # no temporaries left


# ------------------------------------------------------------------------------------------ the loader
def test_pooled_epochs_cover_the_union_once_and_rewards_only_masks_exactly_the_sim_samples(real_ds, sim_ds):
    union = set(real_ds.table.tokens) | set(sim_ds.table.tokens)
    seen = []
    for epoch in (0, 1):
        loader = D.make_loader(real_ds, [sim_ds], batch_size=3, seed=7, epoch=epoch, rewards_only=True)
        batches = list(loader)
        assert len(loader) == len(batches) == 3 and [len(b["token"]) for b in batches] == [3, 3, 1]
        toks = [t for b in batches for t in b["token"]]
        assert sorted(toks) == sorted(union)  # each sample once
        seen.append(toks)
        for b in batches:
            assert torch.equal(b["is_sim"], torch.tensor(["-" in t for t in b["token"]]))
            assert torch.equal(b["imitation_mask"], (~b["is_sim"]).float())
            assert b["vocab_scores"].shape == (len(b["token"]), 16, 9) and b["has_vocab_scores"].all()
            assert b["image"].shape == (len(b["token"]), 3, 32, 128) and b["status"].shape == (len(b["token"]), 8)
            assert b["trajectory"].shape == (len(b["token"]), 8, 3)
    assert seen[0] != seen[1]  # another epoch, another order
    b = next(iter(D.make_loader(real_ds, [sim_ds], batch_size=7, seed=7, epoch=0)))
    assert b["is_sim"].sum() == 3 and (b["imitation_mask"] == 1).all()  # imitation on every sample by default


def test_sim_ratio_gives_the_asked_count_per_batch():
    for r, s in ((0.0, 0), (0.25, 2), (0.5, 4), (0.3, 2), (1.0, 8)):  # round(r * 8); 0.3 * 8 = 2.4 -> 2
        batches = D.epoch_batches(20, 7, batch_size=8, seed=1, epoch=3, sim_ratio=r)
        assert all((b >= 20).sum() == s for b in batches)
        real = np.concatenate([b[b < 20] for b in batches])
        if s < 8:
            assert sorted(real.tolist()) == list(range(20))  # one pass over the real set
            assert len(batches) == -(-20 // (8 - s))
        else:
            assert len(real) == 0 and len(batches) == 3
        sim = np.concatenate([b[b >= 20] for b in batches]) - 20
        for a in range(0, len(sim), 7):  # without replacement, cycling through the sim set
            chunk = sim[a:a + 7]
            assert len(set(chunk.tolist())) == len(chunk)
    assert D.epoch_batches(20, 7, batch_size=8, seed=1, epoch=3, sim_ratio=0.5, drop_last=True)[-1].size == 8
    half = D.epoch_batches(20, 7, batch_size=8, seed=1, epoch=3, sim_ratio=0.5)
    assert all(np.array_equal(a, b) for a, b in zip(
        half, D.epoch_batches(20, 7, batch_size=8, seed=1, epoch=3, sim_ratio=0.5)))
    pooled = D.epoch_batches(20, 7, batch_size=8, seed=1, epoch=3)
    assert sorted(np.concatenate(pooled).tolist()) == list(range(27)) and len(pooled) == 4
    assert len(D.epoch_batches(20, 7, batch_size=8, seed=1, epoch=3, drop_last=True)) == 3


def test_sim_ratio_in_the_loader(real_ds, sim_ds):
    batches = list(D.make_loader(real_ds, [sim_ds], batch_size=4, seed=0, epoch=0, sim_ratio=0.5))
    assert len(batches) == 2  # 4 real samples, 2 per batch
    assert [int(b["is_sim"].sum()) for b in batches] == [2, 2]
    assert sorted(t for b in batches for t in b["token"] if "-" not in t) == sorted(real_ds.table.tokens)


def test_batches_are_identical_for_0_and_2_workers_and_for_a_resumed_epoch(real_ds, sim_ds):
    kw = dict(batch_size=3, seed=3, epoch=2, rewards_only=True)
    a = list(D.make_loader(real_ds, [sim_ds], workers=0, **kw))
    b = list(D.make_loader(real_ds, [sim_ds], workers=2, **kw))
    resumed = list(D.make_loader(real_ds, [sim_ds], workers=0, start_batch=1, **kw))
    assert len(a) == len(b) == 3 and len(resumed) == 2
    for x, y in zip(a, b):
        assert x["token"] == y["token"]
        for k in ("image", "status", "trajectory", "imitation_mask", "is_sim", "has_vocab_scores"):
            assert torch.equal(x[k], y[k]), k
        assert torch.equal(x["vocab_scores"].nan_to_num(-1), y["vocab_scores"].nan_to_num(-1))
    for x, y in zip(a[1:], resumed):
        assert x["token"] == y["token"] and torch.equal(x["image"], y["image"])


def test_each_jpeg_is_decoded_once_when_the_images_fit(data, monkeypatch):
    calls = []
    decode = D.decode_jpeg
    monkeypatch.setattr(D, "decode_jpeg", lambda b: calls.append(1) or decode(b))
    ds = D.PlannerDataset(data["real"], IMAGE_SIZE)
    assert ds.caches_images
    first = ds[2]["image"]
    assert torch.equal(ds[2]["image"], first) and len(calls) == 3  # 3 cameras, decoded once
    tight = D.PlannerDataset(data["real"], IMAGE_SIZE, cache_bytes=0)
    assert not tight.caches_images
    tight[2]
    tight[2]
    assert len(calls) == 9
    assert "vocab_scores" not in ds[0] and not ds[0]["has_vocab_scores"]


def test_a_set_without_labels_in_a_batch_gets_nan_rows(data, sim_ds):
    plain = D.PlannerDataset(data["real"], IMAGE_SIZE)  # not asked for labels
    b = next(iter(D.make_loader(plain, [sim_ds], batch_size=9, seed=0, epoch=0)))
    assert torch.equal(b["has_vocab_scores"], b["is_sim"])
    assert torch.isnan(b["vocab_scores"][~b["is_sim"]]).all()
    assert not torch.isnan(b["vocab_scores"][b["is_sim"]][..., 0]).any()
    b = D.collate([plain[0], plain[1]])
    assert "vocab_scores" not in b and not b["has_vocab_scores"].any() and b["token"] == data["tokens"][:2]


# ------------------------------------------------------------------------------------------ bad input
def _copy_run(src: Path, dst: Path, edit) -> Path:
    """A copy of a sample folder whose shards are rewritten by `edit(table) -> table` (manifest sizes updated)."""
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    for s in m["shards"]:
        p = dst / s["file"]
        pq.write_table(edit(pq.read_table(p)), p)
        s["bytes"] = p.stat().st_size
        s.pop("sha256", None)
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_bad_inputs_are_one_clear_error_each(data, real_ds, sim_ds, tmp_path, mini):
    import pyarrow as pa

    not_a_run = tmp_path / "plain"
    not_a_run.mkdir()
    with pytest.raises(MissingFileError, match="no manifest.json: not a run folder"):
        D.PlannerDataset(not_a_run, IMAGE_SIZE)
    gone = tmp_path / "gone"
    shutil.copytree(data["gen"], gone)
    shard = next(gone.glob("*.parquet"))
    shard.unlink()
    with pytest.raises(MissingFileError, match=f"{shard.name}.*not found"):
        D.PlannerDataset(gone, IMAGE_SIZE)
    # a sim run labelled with another vocabulary size
    k8 = _copy_run(data["gen"], tmp_path / "k8", lambda t: t.set_column(
        t.schema.get_field_index("vocab_scores"), "vocab_scores",
        pa.array([b[: 8 * 9 * 2] for b in t.column("vocab_scores").to_pylist()], pa.binary())))
    other = D.PlannerDataset(k8, IMAGE_SIZE, vocab_scores=True)
    assert other.vocab_size == 8
    with pytest.raises(D.DatasetError, match=r"different sizes \(K=8: .*k8; K=16: .*real"):
        D.make_loader(real_ds, [other], batch_size=2, seed=0, epoch=0)
    # a sim run without the side cameras the planners read
    front = _copy_run(data["gen"], tmp_path / "front", lambda t: t.drop_columns(["CAM_L0", "CAM_R0"]))
    with pytest.raises(D.DatasetError, match="front: no images of CAM_L0, CAM_R0 .*cameras: CAM_F0"):
        D.PlannerDataset(front, IMAGE_SIZE)
    # labels asked of a folder without them
    unlabelled = _copy_run(data["gen"], tmp_path / "unlab", lambda t: t.drop_columns(["vocab_scores"]))
    with pytest.raises(D.DatasetError, match="unlab: no vocab_scores"):
        D.PlannerDataset(unlabelled, IMAGE_SIZE, vocab_scores=True)
    for kw, msg in ((dict(sim_ratio=1.5), "sim_ratio"), (dict(batch_size=0), "batch_size"),
                    (dict(sim_ratio=0.5, real=None), "no real samples")):
        args = dict(real=real_ds, sim=[sim_ds], batch_size=2, seed=0, epoch=0) | kw
        with pytest.raises(D.DatasetError, match=msg):
            D.make_loader(**args)
    # output folders: someone else's files, another build, the data folder
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "precious.txt").write_text("a user's file")
    with pytest.raises(OutputFolderError, match="not a real-samples folder"):
        D.build_real_samples(data["split"], busy, width=W, height=H, progress=False)
    with pytest.raises(OutputFolderError, match="another build.*width: 96 there, 64 now"):
        D.build_real_samples(data["split"], data["real"], width=64, height=H, vocab=data["vocab"], progress=False)
    with pytest.raises(OutputFolderError, match="inside the data folder"):
        D.build_real_samples(data["split"], mini / "training-out", width=W, height=H, progress=False)
    assert not (mini / "training-out").exists() and [p.name for p in busy.iterdir()] == ["precious.txt"]
    with pytest.raises(SimScaleError, match="either vocab_labels"):
        D.RealConfig(vocab_labels="a", vocab="b")
