"""``python -m gbvnet.train``: one training run on a window cache, as a Ray Train ``TorchTrainer`` (DDP with 2+
workers, CPU or GPU), running the loop of :mod:`gbvnet.loop` on a fold of named subjects.

CLI: ``python -m gbvnet.train --cache DIR --modality facebio --target valence --train-subjects 1 2
--val-subjects 3 [--test-subjects 4] [--workers N] [--gpus-per-worker G] [--cpus-per-worker C]
[--compile/--no-compile] [--epochs E] [--seed S] [--max-failures K]``.
"""

from __future__ import annotations

import argparse
import time

from gbvnet.cli import (
    CommandParser,
    add_compute_arguments,
    add_model_arguments,
    apply_compute_arguments,
    apply_model_arguments,
    one_line_errors,
)
from gbvnet.config import PRESETS, TrainConfig, model_preset
from gbvnet.data.cache import open_cache
from gbvnet.launch import init_ray, make_trainer
from gbvnet.loop import make_job
from gbvnet.splits import subject_fold


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m gbvnet.train``."""
    p = CommandParser(prog="python -m gbvnet.train", description="Train GBV-Net once on a window cache.")
    p.add_argument("--cache", required=True, help="window cache directory or URI (python -m gbvnet.prepare)")
    add_model_arguments(p, rows=False)
    p.add_argument("--preset", choices=PRESETS, default="smoke",
                   help="model size preset (default smoke: a single run here is a quick check; the evaluations "
                        "and the search default to paper on real data)")
    g = p.add_argument_group("fold (subject ids)")
    g.add_argument("--train-subjects", type=int, nargs="+", required=True, help="subjects trained on")
    g.add_argument("--val-subjects", type=int, nargs="+", required=True,
                   help="subjects of early stopping and model selection")
    g.add_argument("--test-subjects", type=int, nargs="*", default=[],
                   help="subjects the best epoch's model is tested on (default: none)")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=TrainConfig.epochs, help=f"most epochs ({TrainConfig.epochs})")
    t.add_argument("--batch-size", type=int, default=TrainConfig.batch_size,
                   help=f"windows per batch ({TrainConfig.batch_size})")
    t.add_argument("--lr", type=float, default=TrainConfig.lr,
                   help=f"peak learning rate, AdamW with cosine decay ({TrainConfig.lr:g})")
    t.add_argument("--max-failures", type=int, default=0, help="worker failures to recover from (-1: always)")
    r = p.add_argument_group("results")
    r.add_argument("--storage", default=None, help="Ray results/checkpoints path or URI (default ./runs/ray)")
    r.add_argument("--name", default=None, help="the run's name (default train-<modality>-<target>-<time>)")
    add_compute_arguments(p)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


@one_line_errors()
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    model = apply_model_arguments(args, model_preset(args.preset))
    train = apply_compute_arguments(args, TrainConfig(target=args.target, epochs=args.epochs,
                                                      batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                                      max_failures=args.max_failures))
    index = open_cache(args.cache).index()
    fold = subject_fold(index, args.train_subjects, args.val_subjects, args.test_subjects)
    job = make_job(args.cache, model, train, fold)
    init_ray()
    trainer = make_trainer(job, args.name or f"train-{model.name}-{model.modality}-{args.target}-{int(time.time())}",
                           storage=args.storage)
    result = trainer.fit()
    metrics = {k: v for k, v in result.metrics.items() if not isinstance(v, (dict, list))}
    print("final:", ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
    return result.metrics


if __name__ == "__main__":
    main()
