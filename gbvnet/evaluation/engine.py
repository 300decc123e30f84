"""The evaluation engine: an evaluation protocol's folds as Ray Tune trials (each one training run, see
:mod:`gbvnet.train.launch`), scored and logged to MLflow. The commands over it are :mod:`gbvnet.evaluation.run`
(any protocol), :mod:`~gbvnet.evaluation.loso` and :mod:`~gbvnet.evaluation.subject_dependent`.
Steps: resolve the window cache (``--synthetic`` writes and prepares a small official-format corpus once;
``--root`` prepares a real download incrementally; ``--cache`` uses a prepared cache), generate folds with the
protocol of :mod:`gbvnet.folds.protocols` (each checked once by the leakage guard as it is built, before anything trains;
the audit records the verdicts), run them as a Tune grid over the fold index with a fixed model config (parallel
when resources allow, failed folds retried, ``--resume`` continues an interrupted run; each fold reaches MLflow
as a nested run as soon as it finishes, with ``--log-models`` its model too, and its checkpoints are then removed
unless ``--keep-checkpoints``), then
score test metrics per fold and per subject against the baselines, print the final table and write ``--output``
JSON, and only then log the scores to the MLflow parent run with plots (:func:`evaluate`, one function per stage).
A failure marks the parent run FAILED and says that ``--resume`` continues; Ctrl-C or SIGTERM prints one line
(how many folds finished) and exits 130 / 143 (:func:`gbvnet.train.launch.exit_on_interrupt`). ``--seeds 0 1 2`` repeats
the whole protocol per seed in one pool of folds, each subject's scores averaged over the seeds before the
statistics (:func:`evaluate_seeds`, :mod:`gbvnet.evaluation.seeds`).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow.fs as pafs
from ray import tune

from gbvnet.cli.progress import ProgressTable
from gbvnet.config import (
    PRESETS,
    ModelConfig,
    TrainConfig,
    to_dict,
)
from gbvnet.data.cache import check_snapshot, open_cache
from gbvnet.data.storage import join
from gbvnet.evaluation import aggregate, plots, seeds
from gbvnet.evaluation.audit import audit_folds, check_normalizers, check_search_subjects
from gbvnet.evaluation.baselines import Baselines, start_scorer
from gbvnet.evaluation.stats import versus_baselines
from gbvnet.folds.protocols import (
    PROTOCOLS,
    Fold,
    folds_digest,
    subjects_with_rows,
    usable_rows,
    warn_few_training_subjects,
)
from gbvnet.predict.export import log_trained
from gbvnet.tracking import Tracker, TrialLogger, git_commit, tracking_uri, trial_history
from gbvnet.train.launch import (
    init_ray,
    remove_checkpoints,
    run_tuner,
    storage_path,
    tune_fold,
    tune_trial_resources,
)
from gbvnet.train.loop import Job, load_state, make_job


@dataclass
class EvalSpec:
    """Everything one evaluation invocation needs (built from the CLI by :func:`spec_from_args`)."""

    protocol: str
    dataset: str
    cache: str
    model: ModelConfig
    train: TrainConfig
    protocol_args: dict[str, Any] = field(default_factory=dict)
    test_subjects: list[int] | None = None  # default: every subject in the cache
    folds_in_parallel: int = 2
    resume: bool = False
    tracking_uri: str | None = None
    experiment: str | None = None
    storage: str | None = None
    search: dict | None = None  # from --config: the search's provenance (dataset, target, cache, subjects)
    allow_searched_test_subjects: bool = False
    rows: str = "modality"  # gbvnet.folds.protocols.usable_rows: the modality's rows, or "face" rows for any modality
    preset: str = "paper"  # where the model config came from: a preset name or the --config file's stem
    quiet: bool = False  # no progress table while the folds run
    keep_checkpoints: bool = False  # else a fold's checkpoints are removed once it is logged
    log_models: bool = False  # --log-models: each fold's model logged to its nested run (log_fold_model)
    seeds: tuple[int, ...] = ()  # --seeds (two or more): the protocol once per seed (gbvnet.evaluation.seeds); else train.seed

    @property
    def leaky(self) -> bool:
        """Whether the protocol is leaky (:attr:`gbvnet.folds.protocols.EvaluationProtocol.leaky`): allowed, and
        labelled so."""
        return PROTOCOLS[self.protocol].leaky

    def invocation_key(self, manifest_hash: str) -> str:
        """Stable id of this evaluation: same spec and cache -> same key (used by --resume)."""
        payload = json.dumps({"protocol": self.protocol, "dataset": self.dataset, "cache": manifest_hash,
                              "model": to_dict(self.model), "train": to_dict(self.train),
                              "protocol_args": self.protocol_args, "test_subjects": self.test_subjects,
                              "rows": self.rows},
                             sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def experiment_name(self) -> str:
        """The MLflow experiment: ``experiment``, else ``gbvnet-<dataset>-<protocol>``."""
        return self.experiment or f"gbvnet-{self.dataset}-{self.protocol}"

    def run_name(self, key: str) -> str:
        """The MLflow parent run's name: protocol, model, modality, fusion, target, preset and the invocation
        ``key``'s first 6 characters (a hash of the whole config and cache), so that different configurations
        differ."""
        return (f"{self.protocol}-{self.model.name}-{self.model.modality}-{self.model.fusion.kind}-"
                f"{self.train.target}-{self.preset}{f'-{len(self.seeds)}seeds' if self.seeds else ''}-{key[:6]}")


def fold_experiment(spec: EvalSpec, key: str) -> str:
    """The Tune experiment of the evaluation ``key`` (a folder of the Ray storage)."""
    return f"eval-{spec.protocol}-{spec.dataset}-{key}"


def remove_fold_checkpoints(spec: EvalSpec, key: str, name: str, trial_path: str, fs: pafs.FileSystem) -> None:
    """Remove the checkpoints of the finished fold ``name``: its trial's (``trial_path`` on the storage filesystem
    ``fs``) and, with several workers, its trainer's (:func:`gbvnet.train.launch.remove_checkpoints`); kept with
    ``--keep-checkpoints``."""
    if not spec.keep_checkpoints:
        remove_checkpoints(trial_path, fs)
        remove_checkpoints(join(storage_path(spec.storage), f"{fold_experiment(spec, key)}-{name}"))


MODEL_TAG = "model_uri"  # the tag of a fold's nested run that --log-models logged the fold's model to


def log_fold_model(tracker: Tracker, name: str, job: Job, checkpoint: tune.Checkpoint | None) -> None:
    """``--log-models``: the model of the fold ``name`` trained by ``job`` (its best validation epoch's weights,
    from the fold trial's last ``checkpoint``) logged to the fold's nested run of ``tracker``
    (:func:`gbvnet.predict.export.log_trained`), once: the run's tag ``model_uri`` then says where it is. Nothing while the
    fold's run is not logged (a lost store); a checkpoint removed already (an earlier attempt without
    ``--log-models``) is one line."""
    run = tracker.children().get(name)
    if run is None or MODEL_TAG in run.data.tags:
        return
    try:
        state = None if checkpoint is None else load_state(checkpoint)["best_model"]
    except FileNotFoundError:
        state = None
    if state is None:
        raise ValueError(f"--log-models: fold {name} has no checkpoint left (removed when it was logged without "
                         "--log-models): run the evaluation again without --resume to log its model")
    logged = log_trained(tracker.uri, run.info.run_id, job, state)
    tracker.set_tags({MODEL_TAG: logged.uri}, run_id=run.info.run_id)


@dataclass
class FoldLog:
    """Where a fold is logged as soon as it finishes: the nested run ``name`` of ``tracker``'s run, with ``params``
    (:meth:`gbvnet.tracking.Tracker.log_child`)."""

    tracker: Tracker
    name: str
    params: dict


def fold_logged(spec: EvalSpec, key: str, name: str, log: FoldLog, job: Job, trial) -> None:
    """The fold ``name`` (Tune ``trial``, trained by ``job``) was logged as it finished (``log``): with
    ``--log-models`` its model logged (:func:`log_fold_model`), then its checkpoints removed
    (:func:`remove_fold_checkpoints`); a model that cannot be logged yet keeps them for :func:`run_folds`' end."""
    if spec.log_models:
        try:
            log_fold_model(log.tracker, log.name, job, trial.checkpoint)
        except Exception as exc:
            print(f"could not log the model of {log.name} yet ({type(exc).__name__}: {str(exc)[:200]}); logged at "
                  "the end", file=sys.stderr, flush=True)
            return
    remove_fold_checkpoints(spec, key, name, trial.path, trial.storage.storage_filesystem)


def run_folds(spec: EvalSpec, jobs: list[Job], names: list[str], key: str,
              logs: list[FoldLog] | None = None) -> list[tune.Result]:
    """Run every fold as a Tune trial (``names``: unique in the Tune run); return each fold's Tune result (in fold
    order). With ``logs`` (one per fold), each fold is logged as it finishes (with ``--log-models`` its model too,
    :func:`fold_logged`; at the end, those a lost store kept back), then its checkpoints removed."""
    storage = storage_path(spec.storage)
    experiment = fold_experiment(spec, key)
    trainable = tune.with_parameters(tune_fold, jobs=jobs, names=names, storage=storage, prefix=experiment)
    trainable = tune.with_resources(trainable, tune_trial_resources(spec.train))
    callbacks: list[tune.Callback] = [] if spec.quiet else [ProgressTable(
        total=len(jobs), max_epochs=spec.train.epochs, concurrency=min(spec.folds_in_parallel, len(jobs)),
        kind="fold", title=spec.protocol, name=lambda trial: names[trial.config["fold"]])]
    if logs is not None:  # a fold ended without test metrics was stopped (a cache prepared again): not FINISHED
        callbacks.append(TrialLogger(
            lambda trial: logs[trial.config["fold"]].tracker, name=lambda trial: logs[trial.config["fold"]].name,
            params=lambda trial: logs[trial.config["fold"]].params,
            then=lambda trial: fold_logged(spec, key, names[trial.config["fold"]], logs[trial.config["fold"]],
                                           jobs[trial.config["fold"]], trial),
            finished=lambda trial: "test_confusion" in (trial.last_result or {})))
    grid = run_tuner(trainable, experiment, storage, resume=spec.resume,
                     param_space={"fold": tune.grid_search(list(range(len(jobs))))},
                     tune_config=tune.TuneConfig(max_concurrent_trials=spec.folds_in_parallel),
                     callbacks=callbacks, max_failures=2, total=len(jobs), kind="fold")
    # the folds ended on the planned snapshot, which scoring reads too; a cache prepared again ended them: stop
    check_snapshot(spec.cache, jobs[0].manifest_hash)
    results: list[tune.Result | None] = [None] * len(jobs)
    for result in grid:
        if result.error:
            raise RuntimeError(f"fold {names[result.config['fold']]} failed: {result.error}")
        results[result.config["fold"]] = result
    missing = [names[i] for i, r in enumerate(results) if r is None]
    if missing:
        raise RuntimeError(f"no result for folds {missing}")
    if spec.log_models and logs is not None:  # the folds whose model was not logged as they finished
        for log, job, result in zip(logs, jobs, results, strict=True):
            log.tracker.log_child(log.name, trial_history(result.path, result.filesystem), log.params)
            log_fold_model(log.tracker, log.name, job, result.checkpoint)
    return results  # type: ignore[return-value]


def plan_folds(spec: EvalSpec, index) -> list[Fold]:
    """The protocol's folds over the rows the model uses (face models: windows with face frames), each checked
    by the leakage guard as it is built; only those testing ``spec.test_subjects`` when given."""
    rows = usable_rows(index, spec.model.modality, spec.rows)
    if not rows.size:
        raise ValueError(f"cache {spec.cache} has no rows for modality {spec.model.modality!r} (rows {spec.rows!r})")
    folds = PROTOCOLS[spec.protocol](**spec.protocol_args).cache_folds(index, rows, spec.train.target)
    if spec.test_subjects is not None:
        folds = [f for f in folds if set(np.unique(index.subject[f.test]).tolist()) <= set(spec.test_subjects)]
        if not folds:
            raise ValueError(f"--only-test-subjects: no fold tests only on subjects {spec.test_subjects}")
    warn_few_training_subjects(index, folds)
    return folds


def configuration(spec: EvalSpec) -> str:
    """How the evaluated model was configured (MLflow tag ``configuration``; ``evaluation.report`` never letters
    differently configured runs alike): a ``--config`` written by ``tune/search.py``, a hand-written one, or a
    preset, untuned; the nested evaluation replaces it with its search's."""
    if spec.search is not None:
        return f"searched config {spec.preset} (tune/search.py on {spec.search['dataset']})"
    return f"preset {spec.preset} (untuned)" if spec.preset in PRESETS else f"hand-written config {spec.preset}"


def start_run(spec: EvalSpec, index, folds: list[Fold], tested: list[int], key: str) -> Tracker:
    """The MLflow parent run of the evaluation, with its parameters, tags and folds logged."""
    tracker = Tracker(tracking_uri(spec.tracking_uri), spec.experiment_name, key,
                      run_name=spec.run_name(key), resume=spec.resume)
    tracker.log_cache(spec.cache, index, context="evaluation")
    tracker.log_params({"protocol": spec.protocol, "dataset": spec.dataset, "cache": spec.cache,
                        "cache_manifest_hash": index.manifest_hash, "git_commit": git_commit(),
                        "seed": seeds.label(spec.seeds) if spec.seeds else spec.train.seed,
                        "model": to_dict(spec.model), "train": to_dict(spec.train),
                        "protocol_args": spec.protocol_args, "leaky": spec.leaky, "folds": len(folds),
                        "label_threshold": index.manifest.config.threshold, "rows": spec.rows,
                        "face_weights": spec.model.face.weights if spec.model.modality != "bio" else "none"})
    tracker.set_tags({"protocol": spec.protocol, "dataset": spec.dataset, "model": spec.model.name,
                      "modality": spec.model.modality,
                      "fusion": spec.model.fusion.kind, "target": spec.train.target, "leaky": spec.leaky,
                      "configuration": configuration(spec), **({"seeds": seeds.label(spec.seeds)} if spec.seeds else {})})
    tracker.set_tags({"tested_subjects": " ".join(map(str, tested)), "n_subjects": len(tested), "rows": spec.rows,
                      "folds_digest": folds_digest(folds, index.manifest_hash)})  # the ablation table's keys
    tracker.log_json([f.to_dict() for f in folds], "folds.json")
    return tracker


def score(index, folds: list[Fold], results: list[tune.Result], scorer: Baselines) -> dict:
    """Test metrics per fold and per subject, the baselines on the same folds (scored beside the training) and
    the model-vs-baseline tests: the ``folds``, ``per_subject``, ``aggregate``, ``confusion``, ``baselines`` and
    ``comparisons`` of the output document."""
    summary = aggregate.summarise(folds, [r.metrics["test_confusion"] for r in results], index)
    for row, result in zip(summary["folds"], results, strict=True):
        row["best_epoch"] = int(result.metrics["best_epoch"])
    confusions = scorer.confusions()
    baselines = {name: aggregate.summarise(folds, cms, index) for name, cms in confusions.items()}
    comparisons = {}
    if len(summary["per_subject"]) >= 2:
        comparisons = versus_baselines(aggregate.per_subject_scores(summary),
                                       {name: aggregate.per_subject_scores(b) for name, b in baselines.items()})
    return {**summary, "baselines": baselines, "comparisons": comparisons}


def fold_params(index, fold: Fold) -> dict:
    """The parameters of a fold's nested run."""
    return {"fold": fold.name, "test_subjects": np.unique(index.subject[fold.test]).tolist()}


def log_results(tracker: Tracker, spec: EvalSpec, index, folds: list[Fold], results: list[tune.Result],
                scores: dict, audit: dict) -> None:
    """Log the folds not logged yet (child runs), the scores, the audit and the plots to the parent run."""
    histories = {}
    for fold, result in zip(folds, results, strict=True):
        histories[fold.name] = trial_history(result.path, result.filesystem)
        tracker.log_child(fold.name, histories[fold.name], params=fold_params(index, fold))
    log_scores(tracker, spec, scores, audit)
    with tempfile.TemporaryDirectory(prefix="gbvnet-plots-") as folder:
        for path in plots.make_all(scores, histories, scores["baselines"], folder=folder):
            tracker.log_file(path)


def log_scores(tracker: Tracker, spec: EvalSpec, scores: dict, audit: dict) -> None:
    """Log an evaluation's scores (metrics, per-subject and per-fold JSON, baselines and tests), its audit and the
    tags ``evaluation.report`` reads to its run."""
    tracker.log_metrics(scores["aggregate"])
    for name, b in scores["baselines"].items():
        tracker.log_metrics({f"baseline_{name}_{k}": v for k, v in b["aggregate"].items() if k != "n_folds"})
    for name, cmp in scores["comparisons"].items():
        tracker.log_metrics({f"vs_{name}_p_value": cmp["p_value"], f"vs_{name}_effect_size": cmp["effect_size"],
                             f"vs_{name}_mean_difference": cmp["mean_difference"], f"vs_{name}_p_holm": cmp["p_holm"],
                             f"vs_{name}_n": cmp["n"], f"vs_{name}_min_p": cmp["min_p"]})
    tracker.set_tags({"leakage_audit": "passed" if not spec.leaky else "LEAKY protocol (allowed)",
                      "one_class_folds": f"{scores['aggregate']['n_one_class_folds']} of {scores['aggregate']['n_folds']}"})
    tracker.log_json(audit, "audit.json")
    tracker.log_json(scores["per_subject"], "per_subject.json")
    tracker.log_json(scores["folds"], "folds_metrics.json")
    tracker.log_json({"baselines": scores["baselines"], "comparisons": scores["comparisons"]}, "baselines.json")


def output_document(spec: EvalSpec, tracker: Tracker, scores: dict, audit: dict) -> dict:
    """The ``--output`` document of an evaluation: what ran, where MLflow has it, the scores and the audit."""
    return {"protocol": spec.protocol, "leaky": spec.leaky, "dataset": spec.dataset, "target": spec.train.target,
            "model": spec.model.name, "modality": spec.model.modality, "fusion": spec.model.fusion.kind,
            "mlflow_run_id": tracker.run_id,
            "mlflow_experiment": spec.experiment_name, "cache": spec.cache, **scores, "audit": audit}


@dataclass
class Planned:
    """An evaluation before Ray starts: its folds (checked), their jobs, the subjects they test and the audit."""

    folds: list[Fold]
    jobs: list[Job]
    tested: list[int]
    audit: dict


def plan_evaluation(spec: EvalSpec, index) -> Planned:
    """:func:`plan_folds`, the folds' jobs and the leakage audit: every refusal, before Ray starts."""
    folds = plan_folds(spec, index)
    tested = subjects_with_rows(index, np.concatenate([f.test for f in folds]))
    jobs = [make_job(spec.cache, spec.model, spec.train, f, allow_leaky=spec.leaky, manifest_hash=index.manifest_hash)
            for f in folds]
    audit = {**audit_folds(folds),
             **check_search_subjects(spec.search, spec.dataset, spec.train.target, index.manifest_hash, tested,
                                     spec.allow_searched_test_subjects)}
    return Planned(folds, jobs, tested, audit)


def evaluate(spec: EvalSpec, publish: Callable[[dict], None] | None = None) -> dict:
    """Run the evaluation described by ``spec``; returns the ``--output`` document, handed to ``publish`` (the
    CLI: print the table, write ``--output``) before the final MLflow logging, so no bookkeeping failure loses it.

    Stages: folds (:func:`plan_evaluation`; jobs and the audit before Ray starts, so every refusal is cheap), run
    (:func:`run_folds`, each fold logged as it finishes, the baselines scored beside them:
    :class:`~gbvnet.evaluation.baselines.Baselines`), score (:func:`score`), publish, log
    (:func:`log_results`), then the folds' checkpoints removed (unless ``--keep-checkpoints``). A failure or
    interruption ends the parent run (:meth:`gbvnet.tracking.Tracker.fail`). With ``--seeds``:
    :func:`evaluate_seeds`.
    """
    if spec.seeds:
        return evaluate_seeds(spec, publish)
    index = open_cache(spec.cache).index()
    planned = plan_evaluation(spec, index)
    folds, jobs, tested, audit = planned.folds, planned.jobs, planned.tested, planned.audit
    init_ray(log_to_driver=False)  # only now: every refusal above costs no cluster start

    key = spec.invocation_key(index.manifest_hash)
    tracker = start_run(spec, index, folds, tested, key)
    try:
        baselines = Baselines(spec.cache, folds, index.labels(spec.train.target), spec.train.seed)
        results = run_folds(spec, jobs, [f.name for f in folds], key,
                            [FoldLog(tracker, f.name, fold_params(index, f)) for f in folds])
        audit.update(check_normalizers(folds, [r.metrics.get("normalizer_digest") for r in results]))
        scores = score(index, folds, results, baselines)
        document = output_document(spec, tracker, scores, audit)
        if publish is not None:
            publish(document)
        log_results(tracker, spec, index, folds, results, scores, audit)
    except BaseException as exc:
        tracker.fail(exc)
        raise
    tracker.finish()
    for fold, result in zip(folds, results, strict=True):
        remove_fold_checkpoints(spec, key, fold.name, result.path, result.filesystem)
    return document


def evaluate_seeds(spec: EvalSpec, publish: Callable[[dict], None] | None = None) -> dict:
    """``spec``'s evaluation once per seed of ``spec.seeds`` (:mod:`gbvnet.evaluation.seeds`), every fold of every seed in
    one pool (:func:`run_folds`; fold names ``seed<S>-<fold>``); returns the ``--output`` document: each subject's
    scores averaged over the seeds, the baselines and tests on those, the spread over seeds, and each seed's own
    document (``per_seed``), handed to ``publish`` before the final MLflow logging. MLflow: a parent run (tag
    ``seeds``: the seed-averaged scores) with one child evaluation per seed, each logged as :func:`evaluate` logs
    one (its folds under it as they finish); ``--resume`` finds all of them again."""
    index = open_cache(spec.cache).index()
    specs = {s: seeds.seed_spec(spec, s) for s in spec.seeds}
    plans = {s: plan_evaluation(seed_spec, index) for s, seed_spec in specs.items()}
    tested = plans[spec.seeds[0]].tested
    init_ray(log_to_driver=False)

    keys = {s: seeds.key(seed_spec.invocation_key(index.manifest_hash), spec.seeds) for s, seed_spec in specs.items()}
    key = hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]
    pooled = [(s, f, replace(f, name=f"seed{s}-{f.name}")) for s, p in plans.items() for f in p.folds]
    parent = replace(spec, protocol_args={k: v for k, v in spec.protocol_args.items() if k != "seed"})
    tracker = start_run(parent, index, [named for _, _, named in pooled], tested, key)
    children = {}
    try:
        for s, seed_spec in specs.items():
            children[s] = start_run(seed_spec, index, plans[s].folds, tested, keys[s])
            children[s].set_tags({"mlflow.parentRunId": tracker.run_id, "seeds_run": tracker.run_id,
                                  **seeds.child_tags(s, spec.seeds)})
        y = index.labels(spec.train.target)
        scorer = start_scorer(spec.cache, y)  # one for every seed: each window's features computed once
        baselines = {s: Baselines(spec.cache, p.folds, y, s, scorer=scorer) for s, p in plans.items()}
        results = run_folds(spec, [j for p in plans.values() for j in p.jobs], [named.name for _, _, named in pooled],
                            key, [FoldLog(children[s], f.name, fold_params(index, f)) for s, f, _ in pooled])
        by_seed = {s: [r for (seed, _, _), r in zip(pooled, results, strict=True) if seed == s] for s in spec.seeds}
        documents = {}
        for s, p in plans.items():
            p.audit.update(check_normalizers(p.folds, [r.metrics.get("normalizer_digest") for r in by_seed[s]]))
            documents[s] = output_document(specs[s], children[s], score(index, p.folds, by_seed[s], baselines[s]),
                                           p.audit)
        audit = seeds.merge_audits({s: p.audit for s, p in plans.items()})
        document = {**output_document(spec, tracker, seeds.seed_scores(documents), audit),
                    "per_seed": {str(s): d for s, d in documents.items()}}
        if publish is not None:
            publish(document)
        for s, p in plans.items():
            log_results(children[s], specs[s], index, p.folds, by_seed[s], documents[s], p.audit)
            children[s].finish()
        log_scores(tracker, parent, document, audit)
    except BaseException as exc:
        tracker.fail(exc)
        for child in children.values():
            child.fail(exc, quiet=True)
        raise
    tracker.finish()
    for (_, _, named), result in zip(pooled, results, strict=True):
        remove_fold_checkpoints(spec, key, named.name, result.path, result.filesystem)
    return document
