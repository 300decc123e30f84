"""Command-line vocabulary shared by the entry points (``gbvnet.prepare``, ``gbvnet.train``, ``evaluation.*``,
``tune/search.py``): one argument group per concern, so the same thing has the same flag everywhere.

* what is trained (:func:`add_model_arguments`): ``--model``, ``--modality``, ``--fusion``, ``--channels``,
  ``--target``, ``--seed``, ``--rows``;
* source (:func:`add_source_arguments`): ``--dataset``, ``--root`` | ``--synthetic``, ``--cache``, ``--on-error``;
* tracking (:func:`add_tracking_arguments`): ``--tracking-uri``, ``--experiment`` (MLflow), ``--storage`` (Ray);
* compute (:func:`add_compute_arguments`): ``--workers`` per training run, CPUs and GPUs per worker, compile;
* concurrency (:func:`add_concurrency_arguments`): ``--concurrent`` training runs (folds or trials) at once;
* face weights (:func:`add_face_weight_arguments`): ``--pretrained`` | ``--face-checkpoint``.

Compute settings are not hyper-parameters: they always come from the command line (a ``--config`` file's
values for them are replaced), so a config searched on one machine runs as told on another. Old spellings
(``--workers-per-fold``, ``--workers-per-trial``, ``--folds-in-parallel``, ``--max-epochs``, prepare's
``--workers``) are hidden aliases, kept for one release.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from gbvnet.config import (
    FUSIONS,
    MODALITIES,
    MODELS,
    TARGETS,
    ModelConfig,
    TrainConfig,
    fusion_help,
    get_model,
    model_help,
)
from gbvnet.data.records import ON_ERROR
from gbvnet.data.registry import DATASETS
from gbvnet.folds.protocols import ROW_RULES

COMPUTE_FIELDS = ("num_workers", "cpus_per_worker", "gpus_per_worker", "compile")
EVALUATION_FIELDS = ("target", "seed", "epochs", "patience", *COMPUTE_FIELDS)
"""The :class:`~gbvnet.config.TrainConfig` fields an evaluation decides for itself, whatever a searched config
says: what it predicts, its seed, how long it trains and stops early, and the compute settings."""


def without_evaluation_fields(train: dict) -> dict:
    """A ``train`` section (dict) without :data:`EVALUATION_FIELDS`: what a searched config may set."""
    return {k: v for k, v in train.items() if k not in EVALUATION_FIELDS}


def hidden_alias(p: argparse.ArgumentParser | argparse._ArgumentGroup, flag: str, dest: str, **kw) -> None:
    """``flag``: an old spelling of the flag whose destination is ``dest``, accepted but not shown in ``--help``."""
    p.add_argument(flag, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kw)


def add_source_arguments(p: argparse.ArgumentParser, what: str = "run") -> None:
    """Where the windows come from: ``--dataset`` and one of ``--root`` (a download, prepared into ``--cache``),
    ``--synthetic`` (a small demo corpus written once) or ``--cache`` alone (prepared already); resolved by
    :func:`gbvnet.data.sources.resolve_cache`."""
    g = p.add_argument_group("source")
    g.add_argument("--dataset", choices=DATASETS, required=True, help="which dataset (gbvnet.data.registry)")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--root", help="official dataset folder (prepared into --cache, incrementally)")
    src.add_argument("--synthetic", action="store_true",
                     help=f"write (once) a small synthetic corpus in the official layout and {what} on it")
    g.add_argument("--cache", help="window cache directory or URI (default data/cache/<dataset>[-synthetic])")
    g.add_argument("--on-error", choices=ON_ERROR, default="fail",
                   help="bad input while preparing --root: fail (default) or skip the smallest unit that has it")
    g.add_argument("--rebuild", action="store_true",
                   help="with --root / --synthetic: replace a --cache prepared with other options (refused "
                        "otherwise: a cache is kept as prepared)")


def add_tracking_arguments(p: argparse.ArgumentParser, experiment: str) -> None:
    """Where results go: the MLflow store and experiment (default ``experiment``) and Ray's results storage."""
    g = p.add_argument_group("tracking")
    g.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite runs/mlflow.db)")
    g.add_argument("--experiment", default=None, help=f"MLflow experiment (default {experiment})")
    g.add_argument("--storage", default=None, help="Ray results path or URI (default ./runs/ray)")


def add_model_arguments(p: argparse.ArgumentParser, rows: bool = True) -> None:
    """What is trained: ``--model``, ``--modality``, ``--fusion``, ``--channels``, ``--target``, ``--seed`` and
    (with ``rows``) ``--rows``; written into a model config by :func:`apply_model_arguments`."""
    g = p.add_argument_group("what is trained")
    g.add_argument("--model", choices=MODELS, default=None,
                   help=f"the network (default gbvnet, or --config's): {model_help()}")
    g.add_argument("--modality", choices=MODALITIES, default=None,
                   help="face, bio or both (default: the model's first: facebio for gbvnet)")
    g.add_argument("--fusion", choices=FUSIONS, default="gated", help=f"with facebio: {fusion_help()}")
    g.add_argument("--channels", nargs="+", default=None, metavar="NAME",
                   help="the bio channels the model reads: eeg (the cache's EEG electrodes), all, or channel "
                        "names (default: eeg for the EEG networks, all for gbvnet)")
    g.add_argument("--target", choices=TARGETS, default="valence", help="the rating to predict (default valence)")
    g.add_argument("--seed", type=int, default=0, help="seed of the folds, the sampling and the initial weights")
    if rows:
        g.add_argument("--rows", choices=ROW_RULES, default="modality",
                       help="modality: the rows the modality can use (bio: all); face: only windows with face "
                            "frames, whatever the modality (a bio ablation on exactly the face runs' windows)")


def apply_model_arguments(args: argparse.Namespace, model: ModelConfig) -> ModelConfig:
    """``model`` (a preset's or ``--config``'s) with ``--model``, ``--modality`` (default: the model's first),
    ``--fusion`` and ``--channels`` written in, validated."""
    model.name = args.model or model.name
    model.modality = args.modality or get_model(model.name).modalities[0]
    model.fusion.kind = args.fusion
    if args.channels is not None:
        model.channels = tuple(args.channels)
    return model.validate()


def add_concurrency_arguments(p: argparse.ArgumentParser, runs: str, old_flag: str | None = None) -> None:
    """``--concurrent``: how many training runs (``runs``: folds or trials) Ray Tune runs at once."""
    g = p.add_argument_group("concurrency")
    g.add_argument("--concurrent", type=int, default=2,
                   help=f"{runs} trained at once (default 2; each takes --workers x --cpus-per-worker CPUs)")
    if old_flag:
        hidden_alias(g, old_flag, "concurrent", type=int)


def add_compute_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("compute")
    g.add_argument("--workers", dest="num_workers", type=int, default=1,
                   help="Ray Train workers per training run (each fold or trial; DDP when > 1; default 1)")
    for old in ("--workers-per-fold", "--workers-per-trial"):
        hidden_alias(g, old, "num_workers", type=int)
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


class InterruptExit(SystemExit, KeyboardInterrupt):
    """How a command stopped by SIGINT or SIGTERM ends, after its one line: exit status ``code`` (130, 143) and no
    traceback when it runs as a command (a ``SystemExit``), a ``KeyboardInterrupt`` to a caller in the same
    process, which then stops too (pytest stops a test session on it; on a ``SystemExit`` alone it fails the one
    test and runs the rest)."""


class CommandParser(argparse.ArgumentParser):
    """The parser of a command: a bad flag or value is one line, ``PROG: error: ... (see --help)`` (exit 2),
    without argparse's usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


DEBUG = "GBVNET_DEBUG"
"""An environment variable: set (``GBVNET_DEBUG=1``), a user error shows its traceback (:func:`one_line_errors`)."""


@contextlib.contextmanager
def one_line_errors():
    """Around a command's body: an error a user can meet and fix ends the command with one line ``error: ...``
    naming the thing and the way out (exit 1), not a traceback: a bad input or option (``ValueError``: a damaged
    data file, a cache prepared with other options or again while the run used it, subjects the cache lacks, a
    bad config), the filesystem (``OSError``: a cache or root that is not there, a full disk) and a tracking
    store that cannot be reached (:class:`~gbvnet.tracking.TrackingUnavailable`). Notes the error carries (that
    ``--resume`` continues) follow on the same line. :data:`DEBUG` set: the traceback instead."""
    try:
        yield
    except (ValueError, OSError) as exc:
        if os.environ.get(DEBUG):
            raise
        text = "; ".join([str(exc) or type(exc).__name__, *getattr(exc, "__notes__", ())])
        sys.exit(f"error: {text}".replace("\n", " "))
