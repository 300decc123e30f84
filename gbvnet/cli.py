"""Command-line options shared by the training entry points (``gbvnet.train``, ``evaluation.*``,
``tune/search.py``): how many workers, CPUs and GPUs each run gets, and whether the model is compiled; and (for
the evaluations and the search) where the face backbone's weights come from.

These are compute settings, not hyper-parameters: they always come from the command line (a ``--config`` file's
values for them are replaced), so a config searched on one machine runs as told on another.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gbvnet.config import ModelConfig, TrainConfig

COMPUTE_FIELDS = ("num_workers", "cpus_per_worker", "gpus_per_worker", "compile")


def add_compute_arguments(p: argparse.ArgumentParser, workers_flag: str = "--workers") -> None:
    g = p.add_argument_group("compute")
    g.add_argument(workers_flag, dest="num_workers", type=int, default=1,
                   help="Ray Train workers per training run (DDP when > 1; default 1)")
    g.add_argument("--cpus-per-worker", type=float, default=1.0,
                   help="CPUs reserved per worker; torch uses that many threads (default 1)")
    g.add_argument("--gpus-per-worker", type=float, default=None,
                   help="GPUs per worker: 1 (default when the cluster has GPUs or can autoscale GPU nodes), 0 for "
                        "CPU, or a share such as 0.25 that packs four one-worker runs onto one GPU")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (default: on with CUDA, off on CPU); falls back to eager with "
                        "a warning where compilation fails")


def apply_compute_arguments(args: argparse.Namespace, train: TrainConfig) -> TrainConfig:
    """``train`` with the compute settings of ``args`` written in, validated."""
    for name in COMPUTE_FIELDS:
        setattr(train, name, getattr(args, name))
    return train.validate()


def add_face_weight_arguments(p: argparse.ArgumentParser) -> None:
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--pretrained", action="store_true",
                         help="start the face backbone from timm's pretrained weights (downloads them)")
    weights.add_argument("--face-checkpoint", metavar="PATH", help="start the face backbone from this weights file")


def apply_face_weight_arguments(args: argparse.Namespace, model: ModelConfig) -> ModelConfig:
    """``model`` with its face backbone starting from ``--pretrained`` or ``--face-checkpoint`` (a file that must
    exist); without either flag ``model``'s own setting stands (a ``--config`` file's, or random init)."""
    if args.face_checkpoint and not Path(args.face_checkpoint).is_file():
        raise ValueError(f"--face-checkpoint {args.face_checkpoint}: no such file")
    if args.pretrained or args.face_checkpoint:
        model.face.pretrained = bool(args.pretrained)
        model.face.checkpoint = str(Path(args.face_checkpoint).resolve()) if args.face_checkpoint else None
    return model
