"""``python -m gbvnet.train``: one training run on a window cache, as a Ray Train ``TorchTrainer`` (DDP with 2+
workers, CPU or GPU), running the loop of :mod:`gbvnet.train.loop`, logged to MLflow with the model it trained.

CLI::

    python -m gbvnet.train --cache DIR --modality bio --train-subjects 1 2 --val-subjects 3 [--test-subjects 4]
    python -m gbvnet.train --cache DIR --config best.yaml --modality bio --all-subjects --register NAME \\
        --alias champion [--epochs-from RUN]
    [--preset smoke|paper] [--epochs E] [--patience P] [--lr LR] [--batch-size B] [--seed S] [--max-failures K]
    [--workers N] [--gpus-per-worker G] [--cpus-per-worker C] [--compile/--no-compile]
    [--tracking-uri URI] [--experiment NAME] [--storage PATH] [--name NAME]

What trains: the ``--preset``'s model (default paper, as in every command without ``--synthetic``), or
``--config``'s ``model`` and ``train`` sections (``tune/search.py``'s best config; the command line decides the
target, seed, epochs, patience and compute, as in the evaluations).
On which subjects: named ones (``--train-subjects``, ``--val-subjects`` for early stopping and the choice of the
kept epoch, ``--test-subjects`` scored once at the end), or ``--all-subjects``: the final model of a
configuration, trained on every subject of the cache that has rows for the modality, with a seeded 25 % of them
(at least one) held out for early stopping (the search's rule, :func:`gbvnet.folds.protocols.search_fold`), or, with
``--epochs-from RUN`` (an evaluation's MLflow parent run), every subject training for the median of that
evaluation's folds' best epochs with nothing held out, the last epoch's model kept.

MLflow (experiment ``gbvnet-<dataset>-train`` unless ``--experiment``): one run per invocation with the
configs and fold subjects as parameters, the cache as its dataset input, the source tags, the per-epoch curves
(step = epoch; the Ray Train controller writes each epoch's report to ``history.jsonl`` beside Ray's results,
:class:`EpochHistory`, and the driver logs them when the run ends, so only the driver talks to MLflow), the final
metrics and the model (:mod:`gbvnet.predict.export`: the kept epoch's weights with everything needed to prepare a
recording for it), registered as ``--register NAME`` with each ``--alias`` moved to the new version.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import ray.train
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from gbvnet.cli import (
    CommandParser,
    add_cache_argument,
    add_compute_arguments,
    add_config_argument,
    add_model_arguments,
    add_name_argument,
    add_preset_argument,
    add_tracking_arguments,
    add_training_arguments,
    apply_compute_arguments,
    apply_config_file,
    apply_model_arguments,
    apply_training_arguments,
    one_line_errors,
    preset_of,
)
from gbvnet.config import (
    ConfigError,
    ModelConfig,
    TrainConfig,
    load_yaml,
    model_preset,
    to_dict,
)
from gbvnet.data.cache import CacheIndex, open_cache
from gbvnet.data.storage import join, read_text, write_text
from gbvnet.folds.protocols import (
    Fold,
    check_fold,
    search_fold,
    subject_fold,
    subjects_with_rows,
    usable_rows,
)
from gbvnet.predict.export import log_trained
from gbvnet.tracking import Tracker, limit_http_requests, scalar_metrics, tracking_uri
from gbvnet.train.launch import exit_on_interrupt, init_ray, make_trainer, storage_path
from gbvnet.train.loop import Job, load_state, make_job

HISTORY_FILE = "history.jsonl"


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m gbvnet.train``."""
    p = CommandParser(prog="python -m gbvnet.train", description="Train GBV-Net once on a window cache, logged to "
                                                                 "MLflow with the model it trained.")
    add_cache_argument(p, required=True)
    add_model_arguments(p, rows=False)
    add_preset_argument(p)
    add_config_argument(p)
    g = p.add_argument_group("fold (subject ids)")
    g.add_argument("--train-subjects", type=int, nargs="+", help="subjects trained on")
    g.add_argument("--val-subjects", type=int, nargs="+", help="subjects of early stopping and model selection")
    g.add_argument("--test-subjects", type=int, nargs="*", default=[],
                   help="subjects the best epoch's model is tested on (default: none)")
    g.add_argument("--all-subjects", action="store_true",
                   help="the final model: every subject of the cache, a seeded 25%% of them held out for early "
                        "stopping (or none with --epochs-from)")
    g.add_argument("--epochs-from", metavar="RUN",
                   help="with --all-subjects: train every subject for the median best epoch of the folds of this "
                        "evaluation (its MLflow parent run id), nothing held out")
    add_training_arguments(p, f"training (default: the preset's, or --config's; TrainConfig's: {TrainConfig.epochs} "
                              f"epochs, patience {TrainConfig.patience}, batch {TrainConfig.batch_size}, "
                              f"lr {TrainConfig.lr:g})")
    r = p.add_argument_group("results")
    add_name_argument(r)
    r.add_argument("--register", metavar="NAME", help="register the trained model in MLflow's model registry")
    r.add_argument("--alias", action="append", default=[],
                   help="with --register: point this alias (e.g. champion) at the new version (repeatable)")
    add_tracking_arguments(p)
    add_compute_arguments(p)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, with the fold flags checked against each other."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.all_subjects and (args.train_subjects or args.val_subjects or args.test_subjects):
        p.error("--all-subjects trains on every subject: leave out --train-subjects, --val-subjects and "
                "--test-subjects")
    if not args.all_subjects and not (args.train_subjects and args.val_subjects):
        p.error("give --train-subjects and --val-subjects, or --all-subjects")
    if args.epochs_from and not args.all_subjects:
        p.error("--epochs-from goes with --all-subjects (a fixed number of epochs, nothing held out)")
    if args.alias and not args.register:
        p.error("--alias names a version of a registered model: add --register NAME")
    return args


def configs(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig]:
    """The model and training configs: the preset's or ``--config``'s, with the command line's settings."""
    model, train = model_preset(preset_of(args)), TrainConfig()
    if args.config:
        model, train = apply_config_file(load_yaml(args.config), model, train, searched=True)
    model = apply_model_arguments(args, model)
    train.target, train.seed = args.target, args.seed
    return model, apply_compute_arguments(args, apply_training_arguments(args, train))


def epochs_from(uri: str, run_id: str) -> int:
    """The median (rounded up) of the best epochs of the folds (nested runs) of the evaluation run ``run_id``."""
    limit_http_requests()
    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ConfigError(f"--epochs-from {run_id}: no such run in MLflow at {uri} (give an evaluation's run id "
                          "and its --tracking-uri)") from None
    folds = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'",
                               max_results=10_000)
    best = [r.data.metrics["best_epoch"] for r in folds if "best_epoch" in r.data.metrics]
    if not best:
        raise ConfigError(f"--epochs-from {run_id}: run {run.info.run_name!r} has no folds with a best_epoch (give "
                          "the parent run of an evaluation: python -m evaluation.loso prints its id)")
    return max(1, int(np.ceil(np.median(best))))


def plan_fold(args: argparse.Namespace, index: CacheIndex, model: ModelConfig, train: TrainConfig) -> Fold:
    """The fold the flags name (see the module docstring), checked by the leakage guard."""
    if not args.all_subjects:
        return subject_fold(index, args.train_subjects, args.val_subjects, args.test_subjects)
    rows = usable_rows(index, model.modality)
    if args.epochs_from:
        return check_fold(Fold("all-subjects", "subject", rows, []), index.subject, index.trial)
    return replace(search_fold(index, subjects_with_rows(index, rows), train.seed, model.modality),
                   name="all-subjects")


class EpochHistory(ray.train.UserCallback):
    """Each epoch's report (the first worker's metrics) written to ``uri`` as JSON lines, by the Ray Train
    controller as the run goes (Ray Train's result keeps only the checkpoints' metrics); an epoch reported again
    after a restart replaces the earlier report."""

    def __init__(self, uri: str):
        self.uri, self.rows = uri, {}

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        self.rows[int(metrics[0]["epoch"])] = metrics[0]
        write_text(self.uri, "".join(json.dumps(row, default=float) + "\n" for _, row in sorted(self.rows.items())))


def start_run(args: argparse.Namespace, job: Job, index: CacheIndex, name: str, uri: str) -> Tracker:
    """The run's MLflow run, with its parameters, tags and the cache."""
    dataset = index.manifest.dataset
    tracker = Tracker(uri, args.experiment or f"gbvnet-{dataset}-train", f"{name}-{time.time_ns()}", name,
                      resume=False)
    tracker.log_cache(job.cache, index, context="training")
    fold = {part: subjects_with_rows(index, getattr(job.fold, part)) for part in ("train", "val", "test")}
    tracker.log_params({"dataset": dataset, "cache": job.cache, "cache_manifest_hash": job.manifest_hash,
                        "model": to_dict(job.model), "train": to_dict(job.train), "fold": job.fold.name,
                        "train_subjects": fold["train"], "val_subjects": fold["val"], "test_subjects": fold["test"],
                        "epochs_from": args.epochs_from, "config": args.config,
                        "label_threshold": index.manifest.config.threshold})
    tracker.set_tags({"dataset": dataset, "model": job.model.name, "modality": job.model.modality,
                      "target": job.train.target, "fold": job.fold.name})
    return tracker


def fit(job: Job, name: str, storage: str | None) -> tuple[ray.train.Result, list[dict]]:
    """Train ``job`` as the Ray Train run ``name``; its result and each epoch's report."""
    history = join(join(storage_path(storage), name), HISTORY_FILE)
    result = make_trainer(job, name, storage=storage, callbacks=[EpochHistory(history)]).fit()
    return result, [json.loads(line) for line in read_text(history).splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> dict:
    """Train as the flags say; returns the last epoch's metrics, with ``mlflow_run_id`` and ``model_uri``."""
    with one_line_errors(), exit_on_interrupt(note="the run is marked FAILED in MLflow; run the command again"):
        return run(parse_args(argv))


def run(args: argparse.Namespace) -> dict:
    """The training run ``args`` ask for (see :func:`main`)."""
    model, train = configs(args)
    index = open_cache(args.cache).index()
    uri = tracking_uri(args.tracking_uri)
    if args.epochs_from:
        train.epochs = train.patience = epochs_from(uri, args.epochs_from)
        print(f"epochs: {train.epochs} (the median best epoch of the folds of run {args.epochs_from})")
    job = make_job(args.cache, model, train, plan_fold(args, index, model, train), manifest_hash=index.manifest_hash)
    name = args.name or f"train-{model.name}-{model.modality}-{train.target}-{int(time.time())}"
    init_ray()
    tracker = start_run(args, job, index, name, uri)
    try:
        result, history = fit(job, name, args.storage)
        for row in history:
            tracker.log_metrics(scalar_metrics(row), step=int(row["epoch"]))
        logged = log_trained(uri, tracker.run_id, job, load_state(result.checkpoint)["best_model"],
                             register=args.register, aliases=tuple(args.alias))
    except BaseException as exc:
        tracker.fail(exc, quiet=True)  # a single run has no --resume: run it again
        raise
    tracker.finish()
    metrics = {k: v for k, v in result.metrics.items() if not isinstance(v, (dict, list))}
    print("final:", ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
    aliases = f", alias {', '.join(args.alias)}" if args.alias else ""
    print(f"model: {logged}{aliases}; MLflow run {tracker.run_id} in experiment "
          f"'{args.experiment or f'gbvnet-{index.manifest.dataset}-train'}'")
    return {**result.metrics, "mlflow_run_id": tracker.run_id, "model_uri": logged.uri}


if __name__ == "__main__":
    main()
