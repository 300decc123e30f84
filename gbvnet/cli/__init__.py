"""Command-line vocabulary shared by every command (``gbvnet.prepare``, ``gbvnet.train``, ``gbvnet.predict``,
``gbvnet.data.synthetic``, ``gbvnet.models``, ``evaluation.*``, ``tune/search.py``): one definition per flag, so
the same flag means the same thing everywhere (tests/test_cli.py compares what each shared flag does).

* what is trained (:func:`add_model_arguments`): ``--model``, ``--modality``, ``--fusion``, ``--channels``,
  ``--target``, ``--seed``, ``--rows``; from where (:func:`add_preset_argument`, :func:`add_config_argument`);
  for how long (:func:`add_training_arguments`): ``--epochs``, ``--patience``, ``--batch-size``, ``--lr``;
* data (:func:`add_source_arguments` and its parts): ``--dataset``, ``--root`` | ``--synthetic``, ``--cache``,
  ``--on-error``, ``--rebuild``, ``--subjects`` (ids);
* tracking (:func:`add_tracking_arguments`): ``--tracking-uri``, ``--experiment`` (MLflow), ``--storage`` (Ray);
* compute (:func:`add_compute_arguments`): ``--workers`` per training run, CPUs and GPUs per worker, compile,
  ``--max-failures``;
* concurrency (:func:`add_concurrency_arguments`): ``--concurrent`` training runs (folds or trials) at once;
* face weights (:func:`add_face_weight_arguments`): ``--pretrained`` | ``--face-checkpoint``;
* a search (:func:`add_search_arguments`): ``--search-trials``, ``--space``, ``--search-epochs``, ASHA's;
* results (:func:`add_result_arguments` and its parts): ``--name``, ``--resume``, ``--output``, ``--quiet``,
  ``--log-models``.

Compute settings are not hyper-parameters: they always come from the command line (a ``--config`` file's
values for them are replaced), so a config searched on one machine runs as told on another. Old spellings are
hidden aliases (:func:`hidden_alias`), kept for one release: ``--workers-per-fold``, ``--workers-per-trial``,
``--folds-in-parallel``, ``--max-epochs``, prepare's ``--workers``, the evaluations' ``--test-subjects`` (now
``--only-test-subjects``), ``--search`` and ``--num-samples`` (now ``--search-trials``), the search's
``--epochs`` (now ``--search-epochs``), the synthetic writer's ``--format`` and ``--subjects`` (now ``--dataset``
and ``--n-subjects``) and the predict command's ``--model`` (now ``--model-uri``).

Every command ends the same way (:func:`one_line_errors`, :func:`exit_on_interrupt`): a user error in one line
(exit 1), a bad flag in one line (exit 2, :class:`CommandParser`), Ctrl-C or SIGTERM in one line (exit 130 / 143).
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from gbvnet.config import (
    FUSIONS,
    MODALITIES,
    MODELS,
    PRESETS,
    TARGETS,
    ModelConfig,
    TrainConfig,
    from_dict,
    fusion_help,
    get_model,
    model_help,
    to_dict,
)
from gbvnet.data.records import ON_ERROR
from gbvnet.data.registry import DATASETS
from gbvnet.folds.protocols import ROW_RULES

COMPUTE_FIELDS = ("num_workers", "cpus_per_worker", "gpus_per_worker", "compile", "max_failures")
EVALUATION_FIELDS = ("target", "seed", "epochs", "patience", *COMPUTE_FIELDS)
"""The :class:`~gbvnet.config.TrainConfig` fields an evaluation decides for itself, whatever a searched config
says: what it predicts, its seed, how long it trains and stops early, and the compute settings."""

Parser = argparse.ArgumentParser | argparse._ArgumentGroup
"""Where a flag is added: a parser or one of its argument groups."""


def without_evaluation_fields(train: dict) -> dict:
    """A ``train`` section (dict) without :data:`EVALUATION_FIELDS`: what a searched config may set."""
    return {k: v for k, v in train.items() if k not in EVALUATION_FIELDS}


def apply_config_file(config: dict, model: ModelConfig, train: TrainConfig, searched: bool
                      ) -> tuple[ModelConfig, TrainConfig]:
    """``model`` and ``train`` with a ``--config`` file's sections (``config``, read) in their place: its ``model``
    section whole, its ``train`` section written over ``train``; of a ``searched`` config only what a search
    decides (:func:`without_evaluation_fields`)."""
    if "model" in config:
        model = from_dict(ModelConfig, config["model"])
    if "train" in config:
        fields = without_evaluation_fields(config["train"]) if searched else config["train"]
        train = from_dict(TrainConfig, {**to_dict(train), **fields})
    return model, train


def hidden_alias(p: Parser, flag: str, dest: str, **kw) -> None:
    """``flag``: an old spelling of the flag whose destination is ``dest``, accepted but not shown in ``--help``."""
    p.add_argument(flag, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kw)


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a count)."""
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


# ------------------------------------------------------------------------------------------------- data
def add_dataset_argument(p: Parser, required: bool = True) -> None:
    """``--dataset``: which dataset of the registry (its official layout, reader and defaults)."""
    p.add_argument("--dataset", choices=DATASETS, required=required,
                   help="which dataset (gbvnet.data.registry): its official layout, reader and defaults")


def add_root_argument(p: Parser, required: bool = False) -> None:
    """``--root``: a folder in the dataset's official layout."""
    p.add_argument("--root", required=required,
                   help="a dataset folder in its official layout (a download or a synthetic corpus)")


def add_cache_argument(p: Parser, required: bool = False) -> None:
    """``--cache``: a window cache (:mod:`gbvnet.data.cache`)."""
    p.add_argument("--cache", required=required, help="the window cache: a folder or URI (s3://...)")


def add_preparation_arguments(p: Parser) -> None:
    """How a ``--root`` is prepared, where a command prepares one: ``--on-error`` and ``--rebuild``."""
    p.add_argument("--on-error", choices=ON_ERROR, default="fail",
                   help="bad input while preparing: fail (default), or skip the smallest unit that has it and "
                        "report it")
    p.add_argument("--rebuild", action="store_true",
                   help="replace a cache prepared with other options, every subject prepared again (refused "
                        "otherwise: a cache is kept as prepared)")


def add_subjects_argument(p: Parser) -> None:
    """``--subjects``: subject ids a command limits itself to."""
    p.add_argument("--subjects", type=int, nargs="+", metavar="ID", help="only these subjects (default: all)")


def add_source_arguments(p: argparse.ArgumentParser) -> None:
    """Where the windows come from: ``--dataset`` and one of ``--root`` (a download, prepared into ``--cache``),
    ``--synthetic`` (a small demo corpus written once) or ``--cache`` alone (prepared already); resolved by
    :func:`gbvnet.data.sources.resolve_cache`."""
    g = p.add_argument_group("source", "--root is prepared into --cache (default data/cache/<dataset>, "
                                       "incrementally); --synthetic writes a small corpus once and prepares it "
                                       "(default data/cache/<dataset>-synthetic); --cache alone: prepared already")
    add_dataset_argument(g)
    src = g.add_mutually_exclusive_group()
    add_root_argument(src)
    src.add_argument("--synthetic", action="store_true",
                     help="write (once) a small synthetic corpus in the official layout and run on it")
    add_cache_argument(g)
    add_preparation_arguments(g)


# ------------------------------------------------------------------------------------------------- results
def add_tracking_uri_argument(p: Parser) -> None:
    """``--tracking-uri``: the MLflow store a command logs to or reads from."""
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite runs/mlflow.db)")


def add_tracking_arguments(p: argparse.ArgumentParser) -> None:
    """Where results go: the MLflow store and experiment and Ray's results storage."""
    g = p.add_argument_group("tracking")
    add_tracking_uri_argument(g)
    g.add_argument("--experiment", default=None,
                   help="MLflow experiment (default gbvnet-<dataset>-<protocol>, -train, -search or -gap)")
    g.add_argument("--storage", default=None, help="Ray results path or URI (default ./runs/ray)")


def add_output_argument(p: Parser, what: str, default: str | None = None) -> None:
    """``--output``: where the command writes its result (``what``: which file or folder, in which format)."""
    p.add_argument("--output", default=default,
                   help=f"where the result goes: {what}" + (f" (default {default})" if default else ""))


def add_result_arguments(p: Parser) -> None:
    """What a Ray Tune command (an evaluation, a search) keeps and shows: ``--resume``, ``--quiet``,
    ``--log-models``."""
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run of the same flags: what finished is kept, not run again")
    p.add_argument("--quiet", action="store_true", help="no progress table while the training runs go")
    p.add_argument("--log-models", action="store_true",
                   help="log the trained models (the best epoch's weights, gbvnet.predict.export; loadable with "
                        "mlflow.pyfunc.load_model): each fold's to its MLflow run, a search's best trial's to the "
                        "search's (one-worker runs; default: no model)")


def add_name_argument(p: Parser) -> None:
    """``--name``: the run's name in Ray and MLflow."""
    p.add_argument("--name", default=None,
                   help="the run's name, Ray's and MLflow's (default: one made of the command and its flags)")


# ------------------------------------------------------------------------------------------------- model
def add_modality_arguments(p: Parser) -> None:
    """``--modality`` and ``--fusion``: what a model reads and how it joins face and bio."""
    p.add_argument("--modality", choices=MODALITIES, default=None,
                   help="face, bio or both (default: the model's first: facebio for gbvnet)")
    p.add_argument("--fusion", choices=FUSIONS, default="gated", help=f"with facebio: {fusion_help()}")


def add_model_arguments(p: argparse.ArgumentParser, rows: bool = True) -> None:
    """What is trained: ``--model``, ``--modality``, ``--fusion``, ``--channels``, ``--target``, ``--seed`` and
    (with ``rows``) ``--rows``; written into a model config by :func:`apply_model_arguments`."""
    g = p.add_argument_group("what is trained")
    g.add_argument("--model", choices=MODELS, default=None,
                   help=f"the network (default gbvnet, or --config's): {model_help()}")
    add_modality_arguments(g)
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


def add_preset_argument(p: Parser) -> None:
    """``--preset``: the model's size, by one rule everywhere (:func:`preset_of`)."""
    p.add_argument("--preset", choices=PRESETS, default=None,
                   help="model size preset (default: smoke on a --synthetic corpus, paper otherwise)")


def preset_of(args: argparse.Namespace) -> str:
    """The ``--preset`` asked for, else the default: ``smoke`` on a ``--synthetic`` corpus (the demo's small
    data), ``paper`` otherwise (a command without ``--synthetic`` included). A command without ``--preset`` (the
    search's ``--space``) gets the default."""
    return getattr(args, "preset", None) or ("smoke" if getattr(args, "synthetic", False) else "paper")


def add_config_argument(p: Parser) -> None:
    """``--config``: a config file (``tune/search.py``'s best config) instead of ``--preset``."""
    p.add_argument("--config", help="YAML with 'model' / 'train' sections instead of --preset: tune/search.py's "
                                    "best config, whose 'search' section the evaluations audit (a hand-written "
                                    "one says 'search: none')")


def add_training_arguments(p: argparse.ArgumentParser, title: str) -> None:
    """How long and how fast a training run trains, each flag unset by default (``title``: where the defaults
    come from); given, it wins over the preset's and ``--config``'s (:func:`apply_training_arguments`)."""
    t = p.add_argument_group(title)
    t.add_argument("--epochs", type=int, default=None, help="most epochs of a training run")
    t.add_argument("--patience", type=int, default=None, help="early stopping: epochs without a better val F1")
    t.add_argument("--batch-size", type=int, default=None, help="windows per batch")
    t.add_argument("--lr", type=float, default=None, help="peak learning rate (AdamW, cosine decay)")


def apply_training_arguments(args: argparse.Namespace, train: TrainConfig) -> TrainConfig:
    """``train`` with the training flags given (:func:`add_training_arguments`) written in."""
    for name in ("epochs", "patience", "batch_size", "lr"):
        if getattr(args, name) is not None:
            setattr(train, name, getattr(args, name))
    return train


# ------------------------------------------------------------------------------------------------- compute
def add_concurrency_arguments(p: argparse.ArgumentParser, old_flag: str | None = None) -> None:
    """``--concurrent``: how many training runs (folds or trials) Ray Tune runs at once."""
    g = p.add_argument_group("concurrency")
    g.add_argument("--concurrent", type=int, default=2,
                   help="training runs (folds or trials) at once (default 2; each takes --workers x "
                        "--cpus-per-worker CPUs)")
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
    g.add_argument("--max-failures", type=int, default=0,
                   help="worker failures a Ray Train run recovers from, restarting from its last checkpoint (-1: "
                        "always; default 0; a failed fold or trial is also retried by Ray Tune)")


def apply_compute_arguments(args: argparse.Namespace, train: TrainConfig) -> TrainConfig:
    """``train`` with the compute settings of ``args`` written in, validated."""
    for name in COMPUTE_FIELDS:
        setattr(train, name, getattr(args, name))
    return train.validate()


def add_face_weight_arguments(p: Parser) -> None:
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


# ------------------------------------------------------------------------------------------------- search
def add_search_trials_argument(p: Parser, default: int | None, help: str, old_flag: str) -> None:
    """``--search-trials``: how many configurations a search tries (``old_flag``: the command's old spelling)."""
    p.add_argument("--search-trials", type=positive_int, default=default, metavar="N", help=help)
    hidden_alias(p, old_flag, "search_trials", type=positive_int)


def add_search_arguments(p: Parser, spaces) -> None:
    """How a search searches, in ``tune/search.py`` and a nested evaluation alike: ``--space`` (one of
    ``spaces``), ``--search-epochs`` (old spelling ``--max-epochs``) and ASHA's ``--grace-epochs`` and
    ``--reduction-factor``."""
    p.add_argument("--space", choices=spaces, default=None,
                   help="search space around a model preset (default: the preset's: --preset where given, else "
                        "smoke on a --synthetic corpus, paper otherwise)")
    p.add_argument("--search-epochs", type=positive_int, default=20,
                   help="the most a search trial trains (default 20; ASHA stops poor trials earlier)")
    hidden_alias(p, "--max-epochs", "search_epochs", type=positive_int)
    p.add_argument("--grace-epochs", type=positive_int, default=1, help="ASHA grace period (epochs)")
    p.add_argument("--reduction-factor", type=positive_int, default=2,
                   help="ASHA: keeps the best 1/factor of the trials at each rung")


def add_leaky_argument(p: Parser) -> None:
    """``--allow-leaky-split``: permits a leaky protocol, which a command's ``--protocol`` chooses."""
    p.add_argument("--allow-leaky-split", action="store_true",
                   help="permit a LEAKY protocol (--protocol; labelled leaky in every output)")


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


class Interrupted(KeyboardInterrupt):
    """A command stopped by SIGINT (Ctrl-C) or SIGTERM (a scheduler's time limit). A Tune run saves its state
    first, so ``--resume`` continues it; :func:`exit_on_interrupt` turns this into one line naming the signal and
    the exit code ``128 + signum`` (130, 143)."""

    def __init__(self, signum: int, finished: int | None = None, total: int | None = None, kind: str = "trial"):
        super().__init__(signum, finished, total, kind)
        self.signum, self.finished, self.total, self.kind = signum, finished, total, kind

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def by(self) -> str:
        return f"interrupted by {signal.Signals(self.signum).name}"

    def __str__(self) -> str:
        if self.finished is None:
            return f"{self.by}; --resume continues"
        of = f" of {self.total}" if self.total is not None else ""
        return f"{self.by}: {self.finished}{of} {self.kind}s finished; --resume continues"


def signals_default_at_exit() -> None:
    """Registered when an interruption ends a command, run first when its process exits: a further SIGINT or SIGTERM
    (a second Ctrl-C while the interpreter shuts down: thread joins, other exit callbacks) ends the process at once,
    as it ends a program that handles no signal, instead of a ``KeyboardInterrupt`` traceback from whichever exit
    callback it lands in."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


@contextlib.contextmanager
def exit_on_interrupt(note: str | None = None, cleanup: Callable[[], object] | None = None):
    """Around a command's body, the one way every command stops: SIGTERM interrupts like Ctrl-C; an interruption
    prints one line (the signal, then ``note``, by default what finished and that ``--resume`` continues:
    :class:`Interrupted`) instead of a traceback, runs ``cleanup`` (a Ray command shuts Ray down:
    :func:`gbvnet.train.launch.exit_on_interrupt`), both with SIGINT and SIGTERM ignored (a second Ctrl-C must
    not cut them short), and ends the command with exit status 130 (SIGINT) or 143 (SIGTERM), an
    :class:`InterruptExit` that also stops an in-process caller (a test session). The handlers in place before
    are restored; at the process's exit, :func:`signals_default_at_exit` runs first."""
    def terminate(signum, frame):
        raise Interrupted(signum)

    main = threading.current_thread() is threading.main_thread()
    previous = {sig: handler for sig in (signal.SIGINT, signal.SIGTERM)  # None: set outside Python, left as is
                if main and (handler := signal.getsignal(sig)) is not None}
    if main:
        signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except KeyboardInterrupt as exc:
        stop = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        if main:  # exit callbacks run last-registered first: this one before those of the libraries imported
            atexit.unregister(signals_default_at_exit)
            atexit.register(signals_default_at_exit)
        print(str(stop) if note is None else f"{stop.by}: {note}", file=sys.stderr, flush=True)
        if cleanup is not None:
            cleanup()
        raise InterruptExit(stop.exit_code) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
