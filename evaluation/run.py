"""Run an evaluation protocol: folds as Ray Tune trials (each one training run, see gbvnet.launch), logged to MLflow.

The CLIs ``evaluation.loso`` and ``evaluation.subject_dependent`` only choose the protocol; everything else is
here. Steps: resolve the window cache (``--synthetic`` writes and prepares a small official-format corpus once;
``--root`` prepares a real download incrementally; ``--cache`` uses a prepared cache), generate folds with the
protocol of :mod:`gbvnet.splits` (each checked once by the leakage guard as it is built, before anything trains;
the audit records the verdicts), run them as a Tune grid over the fold index with a fixed model config (parallel
when resources allow, failed folds retried, ``--resume`` continues an interrupted run), then score test metrics
per fold and per subject against the baselines, log them to the MLflow parent run with plots, print the final
table and write ``--output`` JSON (:func:`evaluate`, one function per stage).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune

from evaluation import aggregate, plots
from evaluation.audit import audit_folds, check_normalizers, check_search_subjects, search_provenance
from evaluation.baselines import baseline_confusions, bio_features
from evaluation.stats import versus_baselines
from gbvnet.cli import (
    add_compute_arguments,
    add_face_weight_arguments,
    apply_compute_arguments,
    apply_face_weight_arguments,
)
from gbvnet.config import (
    FUSIONS,
    MODALITIES,
    PRESETS,
    TARGETS,
    ModelConfig,
    TrainConfig,
    from_dict,
    load_yaml,
    model_preset,
    to_dict,
)
from gbvnet.data.cache import open_cache
from gbvnet.data.records import ON_ERROR
from gbvnet.datasets import DATASETS
from gbvnet.launch import init_ray, run_tuner, storage_path, tune_fold, tune_trial_resources
from gbvnet.loop import Job, make_job
from gbvnet.progress import ProgressTable
from gbvnet.sources import resolve_cache
from gbvnet.splits import (
    PROTOCOLS,
    ROW_RULES,
    Fold,
    folds_digest,
    subjects_with_rows,
    usable_rows,
    warn_few_training_subjects,
)
from gbvnet.storage import write_text
from gbvnet.tracking import Tracker, git_commit, tracking_uri


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
    rows: str = "modality"  # gbvnet.splits.usable_rows: the modality's rows, or "face" rows for any modality
    preset: str = "paper"  # where the model config came from: a preset name or the --config file's stem
    quiet: bool = False  # no progress table while the folds run

    @property
    def leaky(self) -> bool:
        return self.protocol == "segment-random"

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
        """The MLflow parent run's name: protocol, modality, fusion, target, preset and the invocation ``key``'s
        first 6 characters (a hash of the whole config and cache), so that different configurations differ."""
        return (f"{self.protocol}-{self.model.modality}-{self.model.fusion.kind}-{self.train.target}-{self.preset}-"
                f"{key[:6]}")


def run_folds(spec: EvalSpec, jobs: list[Job], names: list[str], key: str) -> list[tune.Result]:
    """Run every fold as a Tune trial; return each fold's Tune result (in fold order)."""
    storage = storage_path(spec.storage)
    experiment = f"eval-{spec.protocol}-{spec.dataset}-{key}"
    trainable = tune.with_parameters(tune_fold, jobs=jobs, names=names, storage=storage, prefix=experiment)
    trainable = tune.with_resources(trainable, tune_trial_resources(spec.train))
    progress = [] if spec.quiet else [ProgressTable(
        total=len(jobs), max_epochs=spec.train.epochs, concurrency=min(spec.folds_in_parallel, len(jobs)),
        kind="fold", title=spec.protocol, name=lambda trial: names[trial.config["fold"]])]
    grid = run_tuner(trainable, experiment, storage, resume=spec.resume,
                     param_space={"fold": tune.grid_search(list(range(len(jobs))))},
                     tune_config=tune.TuneConfig(max_concurrent_trials=spec.folds_in_parallel),
                     callbacks=progress, max_failures=2)
    results: list[tune.Result | None] = [None] * len(jobs)
    for result in grid:
        if result.error:
            raise RuntimeError(f"fold {names[result.config['fold']]} failed: {result.error}")
        results[result.config["fold"]] = result
    missing = [names[i] for i, r in enumerate(results) if r is None]
    if missing:
        raise RuntimeError(f"no result for folds {missing}")
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
            raise ValueError(f"no fold tests only on subjects {spec.test_subjects}")
    warn_few_training_subjects(index, folds)
    return folds


def start_run(spec: EvalSpec, index, folds: list[Fold], tested: list[int], key: str) -> Tracker:
    """The MLflow parent run of the evaluation, with its parameters, tags and folds logged."""
    tracker = Tracker(tracking_uri(spec.tracking_uri), spec.experiment_name, key,
                      run_name=spec.run_name(key), resume=spec.resume)
    tracker.log_cache(spec.cache, index, context="evaluation")
    tracker.log_params({"protocol": spec.protocol, "dataset": spec.dataset, "cache": spec.cache,
                        "cache_manifest_hash": index.manifest_hash, "git_commit": git_commit(),
                        "seed": spec.train.seed, "model": to_dict(spec.model), "train": to_dict(spec.train),
                        "protocol_args": spec.protocol_args, "leaky": spec.leaky, "folds": len(folds),
                        "label_threshold": index.manifest.config.threshold, "rows": spec.rows,
                        "face_weights": spec.model.face.weights if spec.model.modality != "bio" else "none"})
    tracker.set_tags({"protocol": spec.protocol, "dataset": spec.dataset, "modality": spec.model.modality,
                      "fusion": spec.model.fusion.kind, "target": spec.train.target, "leaky": spec.leaky})
    tracker.set_tags({"tested_subjects": " ".join(map(str, tested)), "n_subjects": len(tested), "rows": spec.rows,
                      "folds_digest": folds_digest(folds, index.manifest_hash)})  # the ablation table's keys
    tracker.log_json([f.to_dict() for f in folds], "folds.json")
    return tracker


def score(spec: EvalSpec, cache, index, folds: list[Fold], results: list[tune.Result]) -> dict:
    """Test metrics per fold and per subject, the baselines on the same folds and the model-vs-baseline tests:
    the ``folds``, ``per_subject``, ``aggregate``, ``confusion``, ``baselines`` and ``comparisons`` of the
    output document."""
    summary = aggregate.summarise(folds, [r.metrics["test_confusion"] for r in results], index)
    for row, result in zip(summary["folds"], results, strict=True):
        row["best_epoch"] = int(result.metrics["best_epoch"])
    confusions = baseline_confusions(folds, index.labels(spec.train.target), bio_features(cache), spec.train.seed)
    baselines = {name: aggregate.summarise(folds, cms, index) for name, cms in confusions.items()}
    comparisons = {}
    if len(summary["per_subject"]) >= 2:
        comparisons = versus_baselines(aggregate.per_subject_scores(summary),
                                       {name: aggregate.per_subject_scores(b) for name, b in baselines.items()})
    return {**summary, "baselines": baselines, "comparisons": comparisons}


def log_results(tracker: Tracker, spec: EvalSpec, index, folds: list[Fold], results: list[tune.Result],
                scores: dict, audit: dict) -> None:
    """Log each fold's history (child runs), the scores, the audit and the plots to the parent run."""
    histories = {}
    for fold, result in zip(folds, results, strict=True):
        history = result.metrics_dataframe.to_dict("records")
        histories[fold.name] = history
        tracker.log_child(fold.name, history, params={"fold": fold.name, "test_subjects":
                                                      np.unique(index.subject[fold.test]).tolist()})
    tracker.log_metrics(scores["aggregate"])
    for name, b in scores["baselines"].items():
        tracker.log_metrics({f"baseline_{name}_{k}": v for k, v in b["aggregate"].items() if k != "n_folds"})
    for name, cmp in scores["comparisons"].items():
        tracker.log_metrics({f"vs_{name}_p_value": cmp["p_value"], f"vs_{name}_effect_size": cmp["effect_size"],
                             f"vs_{name}_mean_difference": cmp["mean_difference"], f"vs_{name}_p_holm": cmp["p_holm"],
                             f"vs_{name}_n": cmp["n"], f"vs_{name}_min_p": cmp["min_p"]})
    tracker.set_tags({"leakage_audit": "passed" if not spec.leaky else "LEAKY protocol (allowed)"})
    tracker.log_json(audit, "audit.json")
    tracker.log_json(scores["per_subject"], "per_subject.json")
    tracker.log_json(scores["folds"], "folds_metrics.json")
    tracker.log_json({"baselines": scores["baselines"], "comparisons": scores["comparisons"]}, "baselines.json")
    for path in plots.make_all(scores, histories, scores["baselines"]):
        tracker.log_file(path)


def evaluate(spec: EvalSpec) -> dict:
    """Run the evaluation described by ``spec``; returns the ``--output`` document.

    Stages: folds (:func:`plan_folds`; jobs and the audit before Ray starts, so every refusal is cheap), run
    (:func:`run_folds`), score (:func:`score`), log (:func:`log_results`).
    """
    cache = open_cache(spec.cache)
    index = cache.index()
    folds = plan_folds(spec, index)
    tested = subjects_with_rows(index, np.concatenate([f.test for f in folds]))
    jobs = [make_job(spec.cache, spec.model, spec.train, f, allow_leaky=spec.leaky) for f in folds]
    audit = {**audit_folds(folds),
             **check_search_subjects(spec.search, spec.dataset, spec.train.target, index.manifest_hash, tested,
                                     spec.allow_searched_test_subjects)}
    init_ray(log_to_driver=False)  # only now: every refusal above costs no cluster start

    key = spec.invocation_key(index.manifest_hash)
    tracker = start_run(spec, index, folds, tested, key)
    try:
        results = run_folds(spec, jobs, [f.name for f in folds], key)
        audit.update(check_normalizers(folds, [r.metrics.get("normalizer_digest") for r in results]))
    except BaseException:
        tracker.finish("FAILED")
        raise
    scores = score(spec, cache, index, folds, results)
    log_results(tracker, spec, index, folds, results, scores, audit)
    tracker.finish()
    return {"protocol": spec.protocol, "leaky": spec.leaky, "dataset": spec.dataset, "target": spec.train.target,
            "modality": spec.model.modality, "fusion": spec.model.fusion.kind, "mlflow_run_id": tracker.run_id,
            "mlflow_experiment": spec.experiment_name, "cache": spec.cache, **scores, "audit": audit}


# ------------------------------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=DATASETS, required=True)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--root", help="official dataset folder (prepared into --cache, incrementally)")
    src.add_argument("--synthetic", action="store_true",
                     help="write (once) a small synthetic corpus in the official layout and evaluate on it")
    p.add_argument("--cache", help="window cache directory or URI (default data/cache/<dataset>[-synthetic])")
    p.add_argument("--modality", choices=MODALITIES, default="facebio")
    p.add_argument("--fusion", choices=FUSIONS, default="gated",
                   help="gated (the model); attn-concat: same cross-attention, concat instead of the gate; "
                        "concat: no cross-attention")
    p.add_argument("--target", choices=TARGETS, default="valence")
    p.add_argument("--preset", choices=PRESETS, default=None,
                   help="model size preset (default: smoke with --synthetic, paper otherwise)")
    p.add_argument("--config", help="YAML with 'model' / 'train' / 'search' sections (the best config of "
                                    "tune/search.py; a hand-written one says 'search: none')")
    add_face_weight_arguments(p)
    p.add_argument("--rows", choices=ROW_RULES, default="modality",
                   help="modality: the rows the modality can use (bio: all); face: only windows with face frames, "
                        "whatever the modality (a bio ablation on exactly the face runs' windows)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (AdamW, cosine decay)")
    p.add_argument("--patience", type=int, default=None, help="early stopping: epochs without a better val F1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-subjects", type=int, nargs="+", default=None)
    p.add_argument("--folds-in-parallel", type=int, default=2)
    p.add_argument("--resume", action="store_true", help="continue an interrupted evaluation")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite runs/mlflow.db)")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default gbvnet-<dataset>-<protocol>)")
    p.add_argument("--storage", default=None, help="Ray results path or URI (default ./runs/ray)")
    p.add_argument("--output", default=None, help="write per-fold and aggregate metrics as JSON here")
    p.add_argument("--allow-searched-test-subjects", action="store_true")
    p.add_argument("--on-error", choices=ON_ERROR, default="fail", help="bad input while preparing")
    p.add_argument("--quiet", action="store_true", help="no progress table while the folds run")
    add_compute_arguments(p, workers_flag="--workers-per-fold")


def spec_from_args(args: argparse.Namespace, protocol: str, protocol_args: dict) -> EvalSpec:
    preset = args.preset or ("smoke" if args.synthetic else "paper")
    model = model_preset(preset, modality=args.modality, fusion=args.fusion)
    train = TrainConfig(target=args.target, seed=args.seed)
    if args.synthetic:  # a small corpus and the smoke model: fewer epochs at a higher rate
        train.epochs, train.patience, train.lr = 10, 5, 1e-3
    search = None
    if args.config:
        config = load_yaml(args.config)
        search = search_provenance(config, args.config)
        if "model" in config:
            model = from_dict(ModelConfig, config["model"])
            preset = Path(args.config).stem
            model.modality, model.fusion.kind = args.modality, args.fusion
        if "train" in config:  # a searched config's epochs and patience were the search's: the evaluation's own
            own = ("epochs", "patience") if search else ()
            train = from_dict(TrainConfig, {**to_dict(train),
                                            **{k: v for k, v in config["train"].items() if k not in own}})
    apply_face_weight_arguments(args, model)
    train.target, train.seed = args.target, args.seed
    apply_compute_arguments(args, train)
    for name in ("epochs", "batch_size", "lr", "patience"):  # command-line values win over the config file
        if getattr(args, name):
            setattr(train, name, getattr(args, name))
    cache = resolve_cache(args.dataset, root=args.root, synthetic=args.synthetic, cache=args.cache,
                          on_error=args.on_error, need_face=args.modality != "bio" or args.rows == "face")
    return EvalSpec(protocol=protocol, dataset=args.dataset, cache=cache, model=model.validate(),
                    train=train.validate(), protocol_args=protocol_args, test_subjects=args.test_subjects,
                    folds_in_parallel=args.folds_in_parallel,
                    resume=args.resume, tracking_uri=args.tracking_uri, experiment=args.experiment,
                    storage=args.storage, search=search,
                    allow_searched_test_subjects=args.allow_searched_test_subjects, rows=args.rows,
                    preset=preset, quiet=args.quiet)


def cli(protocol: str, description: str, extra=None, argv: list[str] | None = None, run=None) -> dict:
    """Shared body of the protocol CLIs: parse, evaluate, print the table, write ``--output``. ``run(args, spec)``
    (default: :func:`evaluate` of ``spec``) returns the document; ``evaluation.loso --search`` runs the nested
    evaluation there."""
    parser = argparse.ArgumentParser(prog=f"python -m evaluation.{protocol.replace('-', '_')}",
                                     description=description)
    add_arguments(parser)
    if extra:
        extra(parser)
    args = parser.parse_args(argv)
    protocol_args = {"seed": args.seed}
    for name in ("k", "validation"):
        if hasattr(args, name):
            protocol_args[name] = getattr(args, name)
    if getattr(args, "allow_leaky_split", False):
        protocol, protocol_args["allow_leaky"] = "segment-random", True
    spec = spec_from_args(args, protocol, protocol_args)
    document = run(args, spec) if run else evaluate(spec)
    print(aggregate.format_table(document))
    if args.output:
        write_text(args.output, json.dumps(document, indent=2))
        print(f"wrote {args.output}")
    sys.stdout.flush()
    return document
