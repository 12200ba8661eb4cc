"""`simscale bench train`: training samples per second of each learned planner at its default CPU size.

Each planner (ltf, diffusiondrive, gtrs_dense) trains with `training.train.train` on the real samples of
mini-navtrain (rendered once into the cache; 3 front cameras, 480x224, stitched and resized to the planner's
image size) for 2 epochs of at most `--steps` optimisation steps at batch 16, one torch thread, no loader workers,
no final evaluation. The figure is the second epoch's samples/s (forward, loss, backward, optimiser step and batch
assembly; the first epoch also decodes the JPEGs into the image cache). GTRS-Dense scores a k-means vocabulary of
`--vocab-k` human plans of the mini logs (its cost grows with K).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path


def main(argv) -> int:
    ap = argparse.ArgumentParser(prog="simscale bench train")
    ap.add_argument("--data", default=None, help="mini dataset root (default: the cache)")
    ap.add_argument("--split", default="mini-navtrain", help="real samples (default mini-navtrain)")
    ap.add_argument("--planners", default="ltf,diffusiondrive,gtrs_dense", help="comma-separated planners")
    ap.add_argument("--steps", type=int, default=16, help="optimisation steps per epoch (default 16)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--vocab-k", type=int, default=1024, help="GTRS-Dense vocabulary size (default 1024)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args(argv)
    if args.data:
        os.environ["SIMSCALE_MINI"] = args.data
    import shutil

    from agents.planners import PLANNERS, make_config
    from training.train import TrainConfig, read_metrics, train

    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    out = {}
    vocab = None
    try:
        for name in [p.strip() for p in args.planners.split(",") if p.strip()]:
            if name not in PLANNERS:
                print(f"simscale: error: unknown planner {name!r}; known: {', '.join(PLANNERS)}", file=sys.stderr)
                return 2
            kw = {}
            if name == "gtrs_dense":
                vocab = vocab or _vocab(tmp, args.vocab_k)
                kw["vocab"] = str(vocab)
            cfg = TrainConfig(planner=name, real=args.split, epochs=2, batch_size=args.batch_size, eval_split=None,
                              threads=args.threads, **kw)
            r = train(cfg, tmp / name, progress=False, max_steps_per_epoch=args.steps, command="simscale bench train")
            epochs = [row for row in read_metrics(tmp / name) if row["kind"] == "epoch"]
            rate = float(epochs[-1]["samples_per_s"])
            out[f"{name}_samples_per_s"] = round(rate, 2)
            out[f"{name}_image_size"] = list(make_config(name).image_size)
            n_params = sum(v.numel() for v in _model_weights(tmp / name / "checkpoint.pt").values())
            out[f"{name}_parameters"] = n_params
            print(f"{name}: {rate:.1f} samples/s (epoch 2; {r.samples['real']} real samples, {n_params:,} "
                  f"parameters)", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out.update(batch_size=args.batch_size, threads=args.threads, vocab_k=args.vocab_k, split=args.split,
               cpus=os.cpu_count())
    print(json.dumps(out))
    return 0


def _vocab(tmp: Path, k: int) -> Path:
    from simscale_env.data.paths import DataConfig
    from simscale_env.metrics.vocabulary import human_plans, kmeans_vocabulary, save_vocabulary

    logs = sorted(DataConfig.resolve().log_dir.glob("*.db"))
    plans = human_plans(logs, stride_s=0.5)
    return save_vocabulary(tmp / "vocab.npy", kmeans_vocabulary(plans, min(k, len(plans)), iterations=10, seed=0))


def _model_weights(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)["model"]
