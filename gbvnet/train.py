"""``python -m gbvnet.train``: one training run on a window cache, as a Ray Train ``TorchTrainer`` (DDP with 2+
workers, CPU or GPU), running the loop of :mod:`gbvnet.loop` on a fold of named subjects.

CLI: ``python -m gbvnet.train --cache DIR --modality facebio --target valence --train-subjects 1 2
--val-subjects 3 [--test-subjects 4] [--workers N] [--gpus-per-worker G] [--cpus-per-worker C]
[--compile/--no-compile] [--epochs E] [--seed S] [--max-failures K]``.
"""

from __future__ import annotations

import argparse
import time

from gbvnet.cli import add_compute_arguments, apply_compute_arguments
from gbvnet.config import FUSIONS, MODALITIES, PRESETS, TARGETS, TrainConfig, model_preset
from gbvnet.data.cache import open_cache
from gbvnet.launch import init_ray, make_trainer
from gbvnet.loop import make_job
from gbvnet.splits import subject_fold


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m gbvnet.train", description="Train GBV-Net once on a window cache.")
    p.add_argument("--cache", required=True, help="window cache directory or URI (python -m gbvnet.prepare)")
    p.add_argument("--modality", choices=MODALITIES, default="facebio")
    p.add_argument("--fusion", choices=FUSIONS, default="gated")
    p.add_argument("--target", choices=TARGETS, default="valence")
    p.add_argument("--preset", choices=PRESETS, default="smoke")
    p.add_argument("--train-subjects", type=int, nargs="+", required=True)
    p.add_argument("--val-subjects", type=int, nargs="+", required=True)
    p.add_argument("--test-subjects", type=int, nargs="*", default=[])
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-failures", type=int, default=0, help="worker failures to recover from (-1: always)")
    p.add_argument("--storage", default=None, help="Ray results/checkpoints path or URI (default ./runs/ray)")
    p.add_argument("--name", default=None)
    add_compute_arguments(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    model = model_preset(args.preset, modality=args.modality, fusion=args.fusion)
    train = apply_compute_arguments(args, TrainConfig(target=args.target, epochs=args.epochs,
                                                      batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                                      max_failures=args.max_failures))
    index = open_cache(args.cache).index()
    fold = subject_fold(index, args.train_subjects, args.val_subjects, args.test_subjects)
    job = make_job(args.cache, model, train, fold)
    init_ray()
    trainer = make_trainer(job, args.name or f"train-{args.modality}-{args.target}-{int(time.time())}",
                           storage=args.storage)
    result = trainer.fit()
    metrics = {k: v for k, v in result.metrics.items() if not isinstance(v, (dict, list))}
    print("final:", ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
    return result.metrics


if __name__ == "__main__":
    main()
