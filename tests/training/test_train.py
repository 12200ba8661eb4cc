"""`simscale train` (training.train): a run killed after an epoch resumes with the identical loss sequence and
weights, the checkpoint is a policy, co-training pools real and sim samples (rewards-only for GTRS-Dense), the final
evaluation goes through the benchmark, and bad configs or folders are one clear error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from training.train import TrainConfig, TrainingError, read_metrics, train

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"image_size": [128, 32]}


@pytest.fixture(scope="module")
def data(mini, mini_logs, tmp_path_factory):
    """A 4-token slice of mini-navtrain, its generation run (1 round, 3 valid samples, a K=16 vocabulary), and a
    1-token slice of mini-navhard for the final evaluation."""
    from simscale_env.metrics.vocabulary import human_plans, kmeans_vocabulary, save_vocabulary
    from training.engine import run_generation
    from training.generate import GenConfig

    root = tmp_path_factory.mktemp("train")
    head, toks = (mini / "splits" / "mini-navtrain.yaml").read_text().split("tokens:\n")
    split = root / "four.yaml"
    split.write_text(head + "tokens:\n" + "".join(toks.splitlines(keepends=True)[:4]))
    head, toks = (mini / "splits" / "mini-navhard.yaml").read_text().split("tokens:\n")
    hard = root / "hard1.yaml"
    hard.write_text(head + "tokens:\n" + "".join(toks.splitlines(keepends=True)[:1]))
    vocab = save_vocabulary(root / "vocab.npy", kmeans_vocabulary(human_plans(mini_logs[:2], stride_s=2.0), 16,
                                                                  iterations=10, seed=0))
    gen = root / "gen"
    m = run_generation(GenConfig(split=str(split), rounds=1, width=96, height=48, vocab=str(vocab)), gen,
                       progress=False, command="test")
    assert m["samples"] == 3
    return {"root": root, "split": str(split), "hard": str(hard), "vocab": str(vocab), "gen": str(gen)}


def _cfg(data, **kw) -> TrainConfig:
    base = dict(planner="ltf", planner_config=SMALL, real=data["split"], sim=(data["gen"],), epochs=3, batch_size=2,
                eval_split=None, seed=5)
    base.update(kw)
    return TrainConfig(**base)


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_a_killed_run_resumes_with_the_identical_loss_sequence(data, tmp_path):
    """Uninterrupted vs SIGKILLed after epoch 1's checkpoint and resumed: the same per-step losses (bit for bit), the
    same final weights, and no duplicated rows in metrics.csv."""
    cfg = _cfg(data)
    a = train(cfg, tmp_path / "a", progress=False, max_steps_per_epoch=2)
    assert a.samples == {"real": 4, "sim": 3} and a.steps == 6 and len(a.epoch_losses) == 3
    script = (f"from training.train import TrainConfig, train\n"
              f"cfg = TrainConfig(**{json.dumps({**cfg.__dict__, 'sim': list(cfg.sim)})})\n"
              f"train(cfg, {str(tmp_path / 'b')!r}, progress=False, max_steps_per_epoch=2)\n")
    env = {**os.environ, "SIMSCALE_TEST_KILL_AT": "epoch:1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", script.replace("null", "None").replace("true", "True")
                        .replace("false", "False")], env=env, cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == -9, p.stderr[-2000:]
    b_rows = read_metrics(tmp_path / "b")
    assert max(r["epoch"] for r in b_rows) == 0  # killed after the first epoch's checkpoint
    with pytest.raises(TrainingError, match="--resume"):
        train(cfg, tmp_path / "b", progress=False, max_steps_per_epoch=2)
    b = train(cfg, tmp_path / "b", resume=True, progress=False, max_steps_per_epoch=2)
    ra, rb = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [(r["kind"], r["epoch"], r["step"], r["loss"]) for r in ra] == \
        [(r["kind"], r["epoch"], r["step"], r["loss"]) for r in rb]
    assert a.epoch_losses == b.epoch_losses
    wa, wb = _weights(tmp_path / "a" / "checkpoint.pt"), _weights(tmp_path / "b" / "checkpoint.pt")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (tmp_path / "a" / "tb").is_dir() and any((tmp_path / "a" / "tb").iterdir())


def test_the_checkpoint_is_a_policy(data, tmp_path):
    """`simscale evaluate --policy RUN/checkpoint.pt` loads it: load_policy gives the planner with the trained
    weights (its plan is the model's prediction for the same inputs)."""
    from agents import load_policy
    from agents.planners import load_planner

    train(_cfg(data, epochs=1), tmp_path / "r", progress=False, max_steps_per_epoch=1)
    policy = load_policy(str(tmp_path / "r" / "checkpoint.pt"))
    model = load_planner(tmp_path / "r" / "checkpoint.pt")
    cams = np.random.default_rng(0).integers(0, 255, (3, 224, 480, 3), dtype=np.uint8)
    ego = np.zeros(20, np.float32)
    ego[0], ego[5] = 5.0, 1.0  # 5 m/s, command straight
    plan = policy.act({"cameras": cams, "ego_status": ego}, {})
    from agents.planners.features import FRONT_CHANNELS, image_tensor, status_from_observation, stitch_front_cameras

    img = image_tensor(stitch_front_cameras(cams, FRONT_CHANNELS, tuple(SMALL["image_size"])))[None]
    want = model.predict(img, torch.from_numpy(status_from_observation(ego))[None])[0].numpy()
    assert plan.shape == (8, 3) and np.allclose(plan, want, atol=1e-6)


def test_gtrs_dense_rewards_only_co_training_and_the_final_evaluation(data, tmp_path, capsys):
    """`simscale train --planner gtrs_dense --sim DIR --rewards-only`: both sets are pooled (4 real + 3 sim), the
    reward terms are trained, and the final closed-loop evaluation runs through the benchmark into RUN/eval."""
    from simscale_env.cli import main

    out = tmp_path / "g"
    rc = main(["train", "--planner", "gtrs_dense", "--real", data["split"], "--sim", data["gen"], "--rewards-only",
               "--vocab", data["vocab"], "--epochs", "1", "--batch-size", "4", "--max-steps", "2",
               "--set", "image_size=[128,32]", "--eval-split", data["hard"], "--out", str(out), "--quiet"])
    assert rc == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["samples"] == {"real": 4, "sim": 3} and line["steps"] == 2
    assert 0.0 <= line["eval_epdms"] <= 1.0
    agg = json.loads((out / "eval" / "aggregate.json").read_text())
    assert agg["mode"] == "closed_loop" and agg["rows"] == 1 and agg["policy"].endswith("checkpoint.pt")
    terms = read_metrics(out)[0]["terms"]
    assert any("imitation" in k for k in terms) and any(k.startswith(("bce", "score")) or "nc" in k.lower()
                                                        for k in terms), terms
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["rewards_only"] is True and saved["planner_config"] == {"image_size": [128, 32]}


def test_bad_configs_and_folders_are_one_clear_error(data, tmp_path):
    with pytest.raises(TrainingError, match="planner must be one of"):
        TrainConfig(planner="nosuch")
    with pytest.raises(TrainingError, match="rewards_only"):
        TrainConfig(real="mini-navtrain", rewards_only=True)
    with pytest.raises(TrainingError, match="sim_ratio"):
        TrainConfig(real="mini-navtrain", sim_ratio=0.5)
    with pytest.raises(TrainingError, match="nothing to train on"):
        TrainConfig(real=None)
    with pytest.raises(TrainingError, match="gtrs_dense needs a vocabulary"):
        _cfg(data, planner="gtrs_dense")
    train(_cfg(data, epochs=1), tmp_path / "r", progress=False, max_steps_per_epoch=1)
    with pytest.raises(TrainingError, match=r"another config \(batch_size: 2 there, 4 now"):
        train(_cfg(data, epochs=1, batch_size=4), tmp_path / "r", resume=True, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    from simscale_env.errors import OutputFolderError

    with pytest.raises(OutputFolderError, match="not a training run folder"):
        train(_cfg(data), tmp_path / "other", progress=False)
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["notes.txt"]
