"""``python -m evaluation.benchmark``: several models on one protocol, side by side, fold for fold.

    python -m evaluation.benchmark --dataset deap --cache data/cache/deap --protocol loso \\
        --models gbvnet:bio eegnet shallow eegconformer dgcnn

GBV-Net's comparison table done on one protocol: every model (``NAME`` or ``NAME:MODALITY``, names from the model
registry :data:`gbvnet.config.MODELS`) is trained and tested on the same folds, test windows, seed and training
rules (epochs, batch size, learning rate, early stopping), with the same majority and band-power baselines. When a
model reads the face video, every model uses only the windows with face frames, so all rows are the same
(``rows`` in the output). The folds are planned once per model and must come out identical (their digest is
checked, and recorded in each model's audit).

Every fold of every model is one pool of Ray Tune trials (one experiment; fold names prefixed with the model:
``--concurrent`` / GPU shares as everywhere; ``--resume`` continues it), then each model is scored exactly as
:mod:`gbvnet.evaluation.engine` scores an evaluation. The reference model (``--reference``, default the first) is tested
against each other model: per-subject ``--metric`` (balanced accuracy by default), one-sided paired Wilcoxon
signed-rank ("is the reference better?"), Holm-corrected across the models, with the rank-biserial effect size.

MLflow: a parent run (experiment ``gbvnet-<dataset>-benchmark``, tag ``kind=benchmark``, ``benchmark.json``
and the per-subject plot ``benchmark.png``) with one evaluation per model as its child run, each logged like an
evaluation's parent run (its folds nested under it, each as soon as it finishes), so ``evaluation.report`` lists
them, and ``evaluation.report --benchmark`` lays the finished benchmarks out as this command prints them. As in an
evaluation, the tables are printed and ``--output`` written before the final MLflow logging; a failure marks the
runs FAILED (``--resume`` continues).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from gbvnet.cli import CommandParser, add_leaky_argument, one_line_errors
from gbvnet.config import MODALITIES, MODELS, ConfigError, ModelConfig, get_model, to_dict
from gbvnet.data.cache import open_cache
from gbvnet.evaluation import aggregate, plots
from gbvnet.evaluation.audit import audit_folds, check_normalizers
from gbvnet.evaluation.baselines import Baselines
from gbvnet.evaluation.engine import (
    EvalSpec,
    log_results,
    plan_folds,
    remove_fold_checkpoints,
    score,
    start_run,
)
from gbvnet.evaluation.gap import run_pooled
from gbvnet.evaluation.nested import NestedSpec, evaluate_nested, nested_spec
from gbvnet.evaluation.nested import add_arguments as add_nested_arguments
from gbvnet.evaluation.report import METRIC_LABELS, METRICS, format_benchmark
from gbvnet.evaluation.run import (
    add_arguments,
    add_protocol_argument,
    add_protocol_arguments,
    protocol_arguments,
    run_cli,
)
from gbvnet.evaluation.stats import correct_family, paired_comparison
from gbvnet.folds.protocols import PROTOCOLS, Fold, folds_digest, subjects_with_rows
from gbvnet.tracking import Tracker, git_commit, tracking_uri
from gbvnet.train.launch import exit_on_interrupt, init_ray
from gbvnet.train.loop import Job, make_job

DEFAULT_MODELS = ("gbvnet", "eegnet", "shallow", "eegconformer", "dgcnn")


def model_choice(text: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME:MODALITY`` (``--models``): a registered model and, optionally, its modality."""
    name, _, modality = text.partition(":")
    if name not in MODELS:
        raise argparse.ArgumentTypeError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    if modality and modality not in MODALITIES:
        raise argparse.ArgumentTypeError(f"{text}: modality must be one of {', '.join(MODALITIES)}")
    return name, modality or None


@dataclass
class Arm:
    """One model of the benchmark: its evaluation spec, folds (checked), jobs and leakage audit."""

    label: str  # "eegnet", "gbvnet:bio": unique in the benchmark
    spec: EvalSpec
    folds: list[Fold]
    jobs: list[Job]
    audit: dict

    @property
    def names(self) -> list[str]:
        """The folds' names in the pooled Tune experiment: prefixed with the model."""
        return [f"{self.label}-{f.name}" for f in self.folds]

    @property
    def title(self) -> str:
        """Its row in the tables: the model's label, with the modality and the channels it reads."""
        model = self.jobs[0].model
        reads = {"face": "face"}.get(model.modality) or (
            f"{model.modality}, {len(model.channels)} channels" if model.modality == "bio" else
            f"face + {len(model.channels)} channels")
        return f"{model.kind.label} ({reads})"


def arm_model(base: ModelConfig, name: str, modality: str | None) -> ModelConfig:
    """The model config of one benchmark entry: ``base`` (the preset's or ``--config``'s sizes, face weights and
    ``--channels``) for ``name`` with ``modality`` (default: the model's first)."""
    model = copy.deepcopy(base)
    if name != model.name:
        model.name, model.net = name, {}
    model.modality = modality or get_model(name).modalities[0]
    return model.validate()


def plan(spec: EvalSpec, protocol: str, protocol_args: dict, models: list[tuple[str, str | None]],
         index) -> dict[str, Arm]:
    """Each model's spec, folds (checked by the leakage guard as they are built), jobs and audit, before Ray starts;
    the folds must be the same for every model (same rows: the face windows when any model reads faces)."""
    labels = [name if modality is None else f"{name}:{modality}" for name, modality in models]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--models names a model twice: {' '.join(labels)}")
    configs = {label: arm_model(spec.model, *m) for label, m in zip(labels, models, strict=True)}
    rows = "face" if any(m.modality != "bio" for m in configs.values()) else spec.rows
    arms, digests = {}, {}
    for label, model in configs.items():
        arm_spec = replace(spec, protocol=protocol, protocol_args=protocol_args, model=model, rows=rows,
                           experiment=spec.experiment_name)
        folds = plan_folds(arm_spec, index)
        jobs = [make_job(spec.cache, model, spec.train, f, allow_leaky=arm_spec.leaky,
                         manifest_hash=index.manifest_hash) for f in folds]
        digests[label] = folds_digest(folds, index.manifest_hash)
        audit = {**audit_folds(folds), "folds_digest": digests[label], "same_folds_as_every_model": "checked"}
        arms[label] = Arm(label, arm_spec, folds, jobs, audit)
    if len(set(digests.values())) != 1:
        raise ConfigError(f"the models' folds differ ({digests}): a benchmark compares models on the same folds")
    return arms


def benchmark_key(arms: dict[str, Arm], manifest_hash: str, search: NestedSpec | None = None) -> str:
    """Stable id of the benchmark: its models' invocation keys and the search (used by --resume)."""
    keys = {label: a.spec.invocation_key(manifest_hash) for label, a in arms.items()}
    if search is not None:
        keys["search"] = dataclasses.asdict(search)
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def versus_reference(documents: dict[str, dict], reference: str, metric: str) -> dict[str, dict]:
    """The reference model against each other model: per-subject ``metric``, one-sided paired Wilcoxon ("is the
    reference better?"), one Holm family over the models; empty with fewer than 2 subjects."""
    if len(documents[reference]["per_subject"]) < 2:
        return {}
    ref = aggregate.per_subject_scores(documents[reference], metric)
    tests = {label: paired_comparison(ref, aggregate.per_subject_scores(doc, metric), alternative="greater")
             for label, doc in documents.items() if label != reference}
    correct_family(tests, f"{reference} vs {len(tests)} model{'s' if len(tests) != 1 else ''}, one-sided, "
                          f"per-subject {METRIC_LABELS[metric]}")
    return tests


def flat_metrics(document: dict) -> dict[str, float]:
    """The benchmark run's MLflow metrics: each model's means and sds, and the tests against the reference."""
    metrics = {}
    for label, doc in document["models"].items():
        for m in METRICS:
            for stat in ("mean", "std"):
                metrics[f"{label}_test_{m}_{stat}"] = doc["aggregate"][f"test_{m}_{stat}"]
        metrics[f"{label}_n_one_class_folds"] = doc["aggregate"]["n_one_class_folds"]
    for label, test in document["comparisons"].items():
        for field in ("mean_difference", "p_value", "p_holm", "effect_size", "n"):
            metrics[f"vs_{label}_{field}"] = test[field]
    return {k.replace(":", "_"): v for k, v in metrics.items()}


def start_benchmark_run(spec: EvalSpec, index, arms: dict[str, Arm], key: str, tested: list[int],
                        search: NestedSpec | None = None) -> tuple[Tracker, dict[str, Tracker]]:
    """The benchmark's MLflow parent run and, nested under it, each model's evaluation run (started as an
    evaluation's parent run is: :func:`gbvnet.evaluation.engine.start_run`; with ``search``, each nested evaluation starts
    its own). Found again by their keys with ``--resume``."""
    first = next(iter(arms.values())).spec
    tracker = Tracker(tracking_uri(spec.tracking_uri), spec.experiment_name, key, resume=spec.resume,
                      run_name=f"benchmark-{first.protocol}-{spec.train.target}-{len(arms)}models-{key[:6]}")
    tracker.log_cache(spec.cache, index, context="evaluation")
    tracker.log_params({"protocol": first.protocol, "protocol_args": first.protocol_args, "dataset": spec.dataset,
                        "cache": spec.cache, "cache_manifest_hash": index.manifest_hash, "git_commit": git_commit(),
                        "seed": spec.train.seed, "train": to_dict(spec.train), "rows": first.rows,
                        "models": " ".join(arms), "search": dataclasses.asdict(search) if search else "none"})
    tracker.set_tags({"kind": "benchmark", "protocol": first.protocol, "dataset": spec.dataset,
                      "target": spec.train.target, "leaky": first.leaky, "models": " ".join(arms),
                      "tested_subjects": " ".join(map(str, tested)), "n_subjects": len(tested)})
    children = {}
    for label, arm in arms.items() if search is None else ():
        children[label] = start_run(arm.spec, index, arm.folds, tested, arm.spec.invocation_key(index.manifest_hash))
        children[label].set_tags({"mlflow.parentRunId": tracker.run_id, "benchmark_run": tracker.run_id})
    return tracker, children


def log_benchmark(tracker: Tracker, children: dict[str, Tracker], index, arms: dict[str, Arm],
                  results: dict[str, list] | None, document: dict) -> None:
    """The final MLflow logging: each model's run as an evaluation's parent run (``results``: a nested evaluation
    logged its own), then the benchmark's metrics, ``benchmark.json`` and plot; every run ends FINISHED."""
    for label, arm in arms.items() if results is not None else ():
        log_results(children[label], arm.spec, index, arm.folds, results[label], document["models"][label],
                    arm.audit)
    tracker.log_metrics(flat_metrics(document))
    tracker.log_json(document, "benchmark.json")
    with tempfile.TemporaryDirectory(prefix="gbvnet-plots-") as folder:
        figure = plots.gap_figure({document["titles"][k]: d for k, d in document["models"].items()},
                                  title="Test accuracy per subject and model",
                                  colours=[f"C{i}" for i in range(len(arms))])
        tracker.log_file(plots.save_figures({"benchmark.png": figure}, folder)[0])
    for run in (*children.values(), tracker):
        run.finish()


def benchmark(spec: EvalSpec, protocol: str, protocol_args: dict, models: list[tuple[str, str | None]],
              reference: str | None = None, metric: str = "balanced_accuracy",
              publish: Callable[[dict], None] | None = None, search: NestedSpec | None = None) -> dict:
    """Evaluate ``models`` on ``protocol``'s folds of ``spec``'s cache as one pool of folds (with ``search``: each
    model's nested LOSO evaluation in turn, the same search budget for every model); returns the ``--output``
    document, handed to ``publish`` before the final MLflow logging (every refusal comes before Ray starts). A
    failure marks the benchmark's runs FAILED and says that ``--resume`` continues."""
    index = open_cache(spec.cache).index()
    if search is not None and protocol != "loso":
        raise ConfigError(f"--search-trials nests a search in every LOSO fold; protocol {protocol!r} has none: use "
                          "--protocol loso")
    arms = plan(spec, protocol, protocol_args, models, index)
    reference = reference or next(iter(arms))
    if reference not in arms:
        raise ConfigError(f"--reference {reference!r} is not among --models ({' '.join(arms)})")
    first = next(iter(arms.values()))
    tested = subjects_with_rows(index, np.concatenate([f.test for f in first.folds]))
    init_ray(log_to_driver=False)
    key = benchmark_key(arms, index.manifest_hash, search)
    tracker, children = start_benchmark_run(spec, index, arms, key, tested, search)
    try:
        if search is None:
            baselines = Baselines(spec.cache, first.folds, index.labels(spec.train.target), spec.train.seed)
            results = run_pooled(spec, arms, key, index, children)
            documents = {label: arm_document(arm, index, results[label], baselines, children[label])
                         for label, arm in arms.items()}
        else:
            documents = {label: searched_document(arm, search, tracker) for label, arm in arms.items()}
        document = {"kind": "benchmark", "dataset": spec.dataset, "protocol": first.spec.protocol,
                    "protocol_args": first.spec.protocol_args, "leaky": first.spec.leaky,
                    "target": spec.train.target, "seed": spec.train.seed, "rows": _rows_label(first.spec.rows),
                    "train": to_dict(spec.train), "subjects": tested, "reference": reference, "metric": metric,
                    "search": None if search is None else dataclasses.asdict(search),
                    "titles": {label: arm.title for label, arm in arms.items()}, "models": documents,
                    "comparisons": versus_reference(documents, reference, metric),
                    "mlflow_run_id": tracker.run_id, "mlflow_experiment": spec.experiment_name}
        if publish is not None:
            publish(document)
        log_benchmark(tracker, children, index, arms, None if search else results, document)
    except BaseException as exc:
        tracker.fail(exc)
        for child in children.values():
            child.fail(exc, quiet=True)
        raise
    if search is None:
        for arm in arms.values():
            for name, result in zip(arm.names, results[arm.label], strict=True):
                remove_fold_checkpoints(spec, key, name, result.path, result.filesystem)
    return document


def arm_document(arm: Arm, index, results: list, baselines: Baselines, run: Tracker) -> dict:
    """One model's part of the benchmark's document: scored as :mod:`gbvnet.evaluation.engine` scores an evaluation, with
    what it read and its leakage audit (the normalisers' check added) and MLflow run."""
    arm.audit.update(check_normalizers(arm.folds, [r.metrics.get("normalizer_digest") for r in results]))
    return {**model_fields(arm), **score(index, arm.folds, results, baselines), "audit": arm.audit,
            "mlflow_run_id": run.run_id}


def model_fields(arm: Arm) -> dict:
    """What a model of the benchmark is: its network, modality, the channels it read, its own arguments."""
    model = arm.jobs[0].model
    return {"model": model.name, "modality": model.modality, "channels": list(model.channels),
            "net": model.network_arguments if model.name != "gbvnet" else {}}


def searched_document(arm: Arm, search: NestedSpec, parent: Tracker) -> dict:
    """One model's nested LOSO evaluation (:func:`gbvnet.evaluation.nested.evaluate_nested`: every outer fold searched on
    its own training subjects with ``search``'s budget, in its own pool), logged as a child of the benchmark's
    run."""
    spec = dataclasses.replace(arm.spec, preset=f"{arm.spec.preset}-nested{search.trials}")
    document = evaluate_nested(spec, search)
    parent.set_tags({"mlflow.parentRunId": parent.run_id, "benchmark_run": parent.run_id},
                    run_id=document["mlflow_run_id"])
    return {**model_fields(arm), **{k: document[k] for k in ("folds", "per_subject", "aggregate", "confusion",
                                                             "baselines", "comparisons", "audit", "nested",
                                                             "mlflow_run_id")}}


def _rows_label(rows: str) -> str:
    return "windows with face frames (a model reads faces)" if rows == "face" else "every window"


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m evaluation.benchmark``: an evaluation's, the protocol's and the models'."""
    p = CommandParser(prog="python -m evaluation.benchmark", description=__doc__.splitlines()[0])
    add_arguments(p)
    b = p.add_argument_group("benchmark")
    b.add_argument("--models", type=model_choice, nargs="+", default=[model_choice(m) for m in DEFAULT_MODELS],
                   metavar="NAME[:MODALITY]",
                   help=f"the models compared (default {' '.join(DEFAULT_MODELS)}); known: {', '.join(MODELS)}")
    b.add_argument("--reference", default=None,
                   help="the model tested against each other one (default: the first of --models)")
    b.add_argument("--metric", choices=METRICS, default="balanced_accuracy",
                   help="the per-subject score of the paired tests (default balanced_accuracy)")
    add_protocol_argument(b, PROTOCOLS, default="loso")
    add_leaky_argument(b)
    add_protocol_arguments(p, PROTOCOLS)
    add_nested_arguments(p)
    return p


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    with one_line_errors(), exit_on_interrupt():
        args = parser.parse_args(argv)
        if args.model is not None or args.modality is not None:
            parser.error("--model / --modality name one model; a benchmark takes --models NAME[:MODALITY] ...")
        # the base model of every entry: GBV-Net, reading faces where any entry does (what --root / --synthetic
        # prepare)
        faces = any((modality or get_model(name).modalities[0]) != "bio" for name, modality in args.models)
        args.modality = "facebio" if faces else "bio"
        try:
            protocol_args = protocol_arguments(args, args.protocol)
        except ValueError as exc:
            parser.error(str(exc))

        def run(args: argparse.Namespace, spec: EvalSpec, publish_document: Callable[[dict], None]) -> dict:
            search = nested_spec(args, spec) if args.search_trials else None
            return benchmark(spec, args.protocol, protocol_args, args.models, args.reference, args.metric,
                             publish_document, search)

        return run_cli(args, "benchmark", protocol_args, run, format_benchmark)


if __name__ == "__main__":
    main()
