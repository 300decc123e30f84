"""Hyper-parameter search for GBV-Net: Ray Tune + Optuna (TPE) + ASHA, each trial one training run.

    ray job submit --working-dir . -- python tune/search.py --dataset mahnob --synthetic --search-trials 8
    python tune/search.py --dataset deap --root ~/data/deap --search-trials 64 --workers 2 --gpus-per-worker 1
    python tune/search.py --dataset deap --cache data/cache/deap --modality bio --gpus-per-worker 0.25 --concurrent 4

Honesty: the search only ever sees its *search subjects* (``--search-subjects``; default: the first half of the
cache's subjects that have rows for ``--modality``, sorted). Which rows a modality can use is the rule the
evaluations use (:func:`gbvnet.folds.protocols.usable_rows`: face modalities only windows with face frames, so in DEAP
subjects 1-22); search subjects without such rows are left out with a warning, and a search left with fewer than
2 subjects stops before Ray starts, naming them. Among them, a seeded 25 % (at least one) are *validation
subjects*; the rest train (:func:`gbvnet.folds.protocols.search_fold`, which checks the fold once; every trial trains on
it as checked). The objective is validation macro-F1 on those held-out subjects, so it measures cross-subject
generalisation and never touches the subjects an evaluation tests on. Both lists are recorded in MLflow and in
the best config, and ``evaluation.loso --config`` refuses to test on a searched subject unless told otherwise.

Each trial trains one sampled configuration (:func:`gbvnet.train.launch.search_trial`: with one worker inside the
trial's own process, with several as a ``TorchTrainer``) and reports every epoch to Tune; ASHA stops poor trials
early on ``val_macro_f1`` per epoch; Optuna's TPE (seeded) proposes configurations, at most ``--concurrent`` at a
time, after a third of ``--search-trials`` (at least 5) at random: a budget that does not pass that start-up is
random search, and the outputs say so (:func:`gbvnet.search.space.sampler`). ``--resume`` restores the interrupted
search of the same flags (:attr:`SearchSpec.key`, or the same ``--name``) from its storage without re-running
finished trials. The best configuration is written to ``--output``
(YAML with ``model``, ``train`` and ``search`` sections), the format ``evaluation.loso --config`` reads. The
``search`` section is its provenance (dataset, target, modality, cache manifest hash, subjects, label threshold,
face weights); ``train`` leaves out what the evaluation decides for itself (epochs, early-stopping patience, target,
seed). ``--pretrained`` / ``--face-checkpoint PATH`` start the face backbone from timm's or local weights.
While it runs, a table of the trials (epoch, validation macro-F1, elapsed and remaining time) is printed every
30 s (:mod:`gbvnet.cli.progress`; ``--quiet`` turns it off). Each trial reaches MLflow as a nested run as soon as it
finishes; the best config is written before the final MLflow logging; a failure marks the parent run FAILED and
says that ``--resume`` continues; Ctrl-C or SIGTERM prints one line (how many trials finished) and exits 130 / 143.

``main`` only parses the flags into a :class:`SearchSpec`; :func:`search` runs it, one function per stage.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass, fields

import numpy as np
import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from gbvnet.cli import (
    CommandParser,
    add_compute_arguments,
    add_concurrency_arguments,
    add_face_weight_arguments,
    add_model_arguments,
    add_name_argument,
    add_output_argument,
    add_result_arguments,
    add_search_arguments,
    add_search_trials_argument,
    add_source_arguments,
    add_tracking_arguments,
    apply_compute_arguments,
    apply_face_weight_arguments,
    apply_model_arguments,
    hidden_alias,
    one_line_errors,
    positive_int,
    preset_of,
    without_evaluation_fields,
)
from gbvnet.cli.progress import ProgressTable
from gbvnet.config import (
    ModelConfig,
    TrainConfig,
    model_preset,
    to_dict,
)
from gbvnet.data.cache import check_snapshot, open_cache
from gbvnet.data.sources import resolve_cache
from gbvnet.data.storage import write_text
from gbvnet.folds.protocols import Fold, search_fold, subjects_with_rows, usable_rows
from gbvnet.predict.export import log_trained
from gbvnet.search.space import SPACES, apply, get_space, model_space, sampler
from gbvnet.tracking import Tracker, TrialLogger, tracking_uri, trial_history
from gbvnet.train.launch import (
    exit_on_interrupt,
    init_ray,
    run_tuner,
    search_trial,
    storage_path,
    tune_trial_resources,
)
from gbvnet.train.loop import fit_model_to_cache, load_state, make_job
from gbvnet.train.metrics import SELECTION_METRIC

METRIC = SELECTION_METRIC  # the objective: what early stopping selects on in every trial


def make_search_alg(seed: int, concurrent: int, budget: int, algo: str = "optuna"):
    """Optuna's sampler for ``budget`` trials (:func:`gbvnet.search.space.sampler`: TPE, or random search when the budget
    does not pass TPE's start-up; seeded: the same seed proposes the same configurations) behind a concurrency
    limit, or plain seeded random search (``algo="random"``, the baseline of ``bench/search_efficiency.py``)."""
    if algo == "random":
        return BasicVariantGenerator(random_state=seed, max_concurrent=concurrent)
    searcher = OptunaSearch(metric=METRIC, mode="max", sampler=sampler(budget, seed)[0])
    return ConcurrencyLimiter(searcher, max_concurrent=concurrent)


def sampler_name(spec: SearchSpec) -> str:
    """What proposes the search's configurations, as every output names it."""
    if spec.algo == "random":
        return "random search, no early stopping"
    return f"{sampler(spec.num_samples, spec.train.seed)[1]} + ASHA"


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``tune/search.py``."""
    p = CommandParser(prog="python tune/search.py", description=__doc__.splitlines()[0])
    add_source_arguments(p)
    add_model_arguments(p)
    g = p.add_argument_group("search")
    add_search_trials_argument(g, 16, "trials: configurations sampled (default 16)", old_flag="--num-samples")
    add_search_arguments(g, SPACES)
    hidden_alias(g, "--epochs", "search_epochs", type=positive_int)  # the old spelling here
    add_face_weight_arguments(g)
    g.add_argument("--search-subjects", type=int, nargs="+", default=None,
                   help="the only subjects the search sees (default: the first half of the subjects with rows "
                        "for --modality / --rows)")
    g.add_argument("--algo", choices=("optuna", "random"), default="optuna",
                   help="optuna: TPE + ASHA early stopping (default; random search + ASHA when --search-trials is "
                        "below TPE's start-up); random: random search, no early stopping")
    r = p.add_argument_group("results")
    add_name_argument(r)
    add_result_arguments(r)
    add_output_argument(r, "the best config (YAML: model, train and search sections)", default="best.yaml")
    add_tracking_arguments(p)
    add_concurrency_arguments(p)
    add_compute_arguments(p)
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


@dataclass
class SearchSpec:
    """Everything one search needs (built from the CLI by :func:`spec_from_args`)."""

    dataset: str
    cache: str
    model: ModelConfig  # the configuration a sampled point changes: the space's preset, the face weights
    train: TrainConfig  # target, seed, compute; epochs (= patience): the most a trial trains
    space: str = "paper"
    num_samples: int = 16
    grace_epochs: int = 1  # ASHA
    reduction_factor: int = 2  # ASHA
    concurrent: int = 2
    search_subjects: list[int] | None = None  # default: the first half of the subjects with rows for the modality
    rows: str = "modality"  # gbvnet.folds.protocols.usable_rows: the modality's rows, or "face" rows for any modality
    experiment: str | None = None  # MLflow experiment; default gbvnet-<dataset>-search
    algo: str = "optuna"
    resume: bool = False
    storage: str | None = None
    name: str | None = None
    tracking_uri: str | None = None
    output: str = "best.yaml"
    quiet: bool = False  # no progress table while the trials run
    log_models: bool = False  # log the best trial's model to the search's run

    @property
    def key(self) -> str:
        """What the search is (data, configs, space, budget, subjects), hashed: the same flags give the same key,
        so ``--resume`` finds the search of the same flags (as an evaluation's invocation key does)."""
        what = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in NOT_THE_SEARCH}
        return hashlib.sha256(json.dumps({**what, "model": to_dict(self.model), "train": to_dict(self.train)},
                                         sort_keys=True).encode()).hexdigest()[:16]

    @property
    def run_name(self) -> str:
        """The Tune experiment's and MLflow run's name: ``name``, else
        ``search-<dataset>-<modality>-<target>-<algo>-seed<S>-<key>`` (the first 6 characters of :attr:`key`)."""
        return self.name or (f"search-{self.dataset}-{self.model.modality}-{self.train.target}-{self.algo}-"
                             f"seed{self.train.seed}-{self.key[:6]}")


NOT_THE_SEARCH = ("concurrent", "experiment", "resume", "storage", "name", "tracking_uri", "output", "quiet",
                  "log_models")
"""The :class:`SearchSpec` fields that say how a search runs and where it goes, not which search it is."""


@dataclass
class Provenance:
    """Who the search saw (subjects) and what it searched on, as recorded in MLflow and the best config."""

    subjects: list[int]  # the search subjects that have rows for the modality
    excluded_subjects: list[int]  # requested ones that have none
    train_subjects: list[int]
    val_subjects: list[int]
    label_threshold: float
    face_weights: str


def plan(spec: SearchSpec, index) -> tuple[Fold, Provenance]:
    """The search's fold (:func:`gbvnet.folds.protocols.search_fold`) and provenance; refusals here cost no Ray start."""
    subjects = subjects_with_rows(index, usable_rows(index, spec.model.modality, spec.rows))
    requested = spec.search_subjects or subjects[: max(2, len(subjects) // 2)]
    fold = search_fold(index, requested, spec.train.seed, spec.model.modality, spec.rows)
    train_subjects = np.unique(index.subject[fold.train]).tolist()
    val_subjects = np.unique(index.subject[fold.val]).tolist()
    searched = sorted(train_subjects + val_subjects)
    return fold, Provenance(searched, sorted(set(requested) - set(searched)), train_subjects, val_subjects,
                            index.manifest.config.threshold,
                            spec.model.face.weights if spec.model.modality != "bio" else "none")


def start_run(spec: SearchSpec, index, provenance: Provenance) -> Tracker:
    """The MLflow parent run of the search, with the cache and the search's parameters logged."""
    experiment = spec.experiment or f"gbvnet-{spec.dataset}-search"
    tracker = Tracker(tracking_uri(spec.tracking_uri), experiment, spec.run_name,
                      run_name=spec.run_name, resume=spec.resume)
    tracker.log_cache(spec.cache, index, context="search")
    tracker.log_params({"dataset": spec.dataset, "target": spec.train.target, "modality": spec.model.modality,
                        "space": spec.space, "rows": spec.rows, "num_samples": spec.num_samples,
                        "sampler": sampler_name(spec),
                        "max_epochs": spec.train.epochs,
                        "seed": spec.train.seed, "search_subjects": provenance.subjects,
                        "train_subjects": provenance.train_subjects, "val_subjects": provenance.val_subjects,
                        "cache_manifest_hash": index.manifest_hash,
                        "excluded_subjects": provenance.excluded_subjects,
                        "label_threshold": provenance.label_threshold, "face_weights": provenance.face_weights})
    return tracker


def trial_name(trial_id: str) -> str:
    """A search trial's nested run name."""
    return f"trial-{trial_id}"


def run_trials(spec: SearchSpec, fold: Fold, tracker: Tracker, manifest_hash: str | None = None) -> tune.ResultGrid:
    """Run the trials (proposed by :func:`make_search_alg`, stopped early by ASHA with ``algo="optuna"``), each on
    the cache snapshot ``manifest_hash`` that ``fold`` was planned on and logged to ``tracker`` as a nested run as
    soon as it finishes."""
    storage = storage_path(spec.storage)
    base = {"model": spec.model, "train": spec.train, "cache": spec.cache, "fold": fold,
            "manifest_hash": manifest_hash}
    trainable = tune.with_resources(
        tune.with_parameters(search_trial, base=base, storage=storage, experiment=spec.run_name),
        tune_trial_resources(spec.train))
    progress = [] if spec.quiet else [ProgressTable(total=spec.num_samples, max_epochs=spec.train.epochs,
                                                    concurrency=spec.concurrent, title="search")]
    logger = TrialLogger(lambda trial: tracker, name=lambda trial: trial_name(trial.trial_id),
                         params=lambda trial: trial.config)
    tune_config = tune.TuneConfig(
        search_alg=make_search_alg(spec.train.seed, spec.concurrent, spec.num_samples, spec.algo),
        scheduler=ASHAScheduler(time_attr="epoch", metric=METRIC, mode="max", max_t=spec.train.epochs,
                                grace_period=spec.grace_epochs, reduction_factor=spec.reduction_factor)
        if spec.algo == "optuna" else None,
        num_samples=spec.num_samples)
    return run_tuner(trainable, spec.run_name, storage, resume=spec.resume,
                     param_space=model_space(spec.space, spec.model), tune_config=tune_config,
                     callbacks=[*progress, logger], max_failures=1, total=spec.num_samples, kind="trial")


def rank_trials(grid: tune.ResultGrid) -> list[tuple[float, tune.Result]]:
    """The finished trials with their best epoch's score, best first."""
    finished = [r for r in grid if r.error is None and r.metrics and METRIC in r.metrics]
    if not finished:
        raise RuntimeError(f"no search trial finished; errors: {[str(r.error) for r in grid if r.error]}")
    ranked = [(max(row[METRIC] for row in trial_history(r.path, r.filesystem) if METRIC in row), r) for r in finished]
    ranked.sort(key=lambda item: -item[0])
    return ranked


def best_config(spec: SearchSpec, index, provenance: Provenance, ranked: list[tuple[float, tune.Result]],
                grid: tune.ResultGrid, run_id: str) -> dict:
    """The best trial's configuration as the ``--output`` document: ``model``, ``train`` (without what the
    evaluation decides for itself) and ``search`` (the provenance the evaluation's audit checks)."""
    best_score, best = ranked[0]
    best_model, best_train = apply(best.config, fit_model_to_cache(spec.model, index.manifest), spec.train)
    return {
        "model": to_dict(best_model),
        "train": without_evaluation_fields(to_dict(best_train)),
        "search": {"dataset": spec.dataset, "target": spec.train.target, "modality": spec.model.modality,
                   "subjects": provenance.subjects, "excluded_subjects": provenance.excluded_subjects,
                   "label_threshold": provenance.label_threshold, "face_weights": provenance.face_weights,
                   "train_subjects": provenance.train_subjects, "val_subjects": provenance.val_subjects,
                   "metric": METRIC,
                   f"best_{METRIC}": float(best_score), "trial_id": best.metrics["trial_id"],
                   "trials": len(grid), "trial_epochs": int(sum(r.metrics.get("epoch", 0) for r in grid)),
                   "algo": spec.algo, "sampler": sampler_name(spec), "cache_manifest_hash": index.manifest_hash,
                   "mlflow_run_id": run_id},
    }


def print_ranking(ranked: list[tuple[float, tune.Result]], provenance: Provenance, output: str, how: str) -> None:
    """The five best trials of the search (proposed by ``how``), the subjects searched on and where the best
    config went."""
    print(f"{len(ranked)} trials finished ({how})")
    print(f"{'rank':>4} {'trial':>10} {'best val macro-F1':>17} {'epochs':>6}  config")
    for rank, (f1, r) in enumerate(ranked[:5], 1):
        shown = ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                          for k, v in r.config.items())
        print(f"{rank:>4} {r.metrics['trial_id']:>10} {f1:>17.3f} {int(r.metrics['epoch']):>6}  {shown}")
    print(f"searched on subjects {provenance.subjects} (validation {provenance.val_subjects}); "
          f"best config -> {output}")
    sys.stdout.flush()


def search(spec: SearchSpec) -> dict:
    """Run the search ``spec`` describes; returns the best-config document, also written to ``spec.output``.

    Stages: plan (:func:`plan`, and the job validated: cache, configs, fold) before Ray starts, run
    (:func:`run_trials`), rank (:func:`rank_trials`), then the best config written and printed, then logged.
    """
    index = open_cache(spec.cache).index()
    fold, provenance = plan(spec, index)
    make_job(spec.cache, spec.model, spec.train, fold)  # validate cache and configs before anything is scheduled
    init_ray(log_to_driver=False)  # the progress table reports the trials
    tracker = start_run(spec, index, provenance)
    try:
        grid = run_trials(spec, fold, tracker, index.manifest_hash)
        check_snapshot(spec.cache, index.manifest_hash)  # trials ended by a cache prepared again: stop here
        ranked = rank_trials(grid)
        document = best_config(spec, index, provenance, ranked, grid, tracker.run_id)
        write_text(spec.output, yaml.safe_dump(document, sort_keys=False))  # first: no bookkeeping failure loses it
        print_ranking(ranked, provenance, spec.output, sampler_name(spec))
        for _, r in ranked:  # the trials not logged yet
            tracker.log_child(trial_name(r.metrics["trial_id"]), trial_history(r.path, r.filesystem), params=r.config)
        tracker.log_metrics({f"best_{METRIC}": document["search"][f"best_{METRIC}"], "trials": len(grid)})
        tracker.log_json(document, "best_config.json")
        if spec.log_models:
            log_best_model(spec, index, fold, ranked[0][1], tracker)
    except BaseException as exc:
        tracker.fail(exc)
        raise
    tracker.finish()
    return document


def log_best_model(spec: SearchSpec, index, fold: Fold, best: tune.Result, tracker: Tracker) -> None:
    """``--log-models``: the best trial's model (its best epoch's weights, from the trial's last checkpoint) logged
    to the search's run (:func:`gbvnet.predict.export.log_trained`)."""
    if best.checkpoint is None:
        raise ValueError(f"--log-models: trial {best.metrics['trial_id']} trained with {spec.train.num_workers} "
                         "workers keeps its checkpoints in its trainer's run, not the trial: train the best config "
                         f"with python -m gbvnet.train --config {spec.output} --all-subjects instead")
    model, train = apply(best.config, spec.model, spec.train)
    job = make_job(spec.cache, model, train, fold, manifest_hash=index.manifest_hash)
    logged = log_trained(tracker.uri, tracker.run_id, job, load_state(best.checkpoint)["best_model"])
    print(f"best trial's model: {logged}")


def spec_from_args(args: argparse.Namespace) -> SearchSpec:
    """The search the flags ask for: the cache resolved (``--synthetic`` / ``--root`` prepare it) and the base
    model of the space's preset with the face weights, whose file must exist."""
    space = args.space or preset_of(args)
    model = apply_face_weight_arguments(args, apply_model_arguments(args, model_preset(get_space(space).preset)))
    cache = resolve_cache(args.dataset, root=args.root, synthetic=args.synthetic, cache=args.cache,
                          on_error=args.on_error, need_face=model.modality != "bio" or args.rows == "face",
                          rebuild=args.rebuild)
    train = apply_compute_arguments(args, TrainConfig(target=args.target, epochs=args.search_epochs,
                                                      patience=args.search_epochs, seed=args.seed))
    return SearchSpec(dataset=args.dataset, cache=cache, model=model, train=train, space=space,
                      num_samples=args.search_trials, grace_epochs=args.grace_epochs,
                      reduction_factor=args.reduction_factor, concurrent=args.concurrent,
                      search_subjects=args.search_subjects, rows=args.rows, experiment=args.experiment,
                      algo=args.algo, resume=args.resume,
                      storage=args.storage, name=args.name, tracking_uri=args.tracking_uri, output=args.output,
                      quiet=args.quiet, log_models=args.log_models)


def main(argv: list[str] | None = None) -> dict:
    with one_line_errors(), exit_on_interrupt():
        return search(spec_from_args(parse_args(argv)))


if __name__ == "__main__":
    main()
