"""``python -m evaluation.gap``: the same configuration, seed and rows under the three protocols, side by side.

    python -m evaluation.gap --dataset deap --cache data/cache/deap --config best.yaml --modality bio --target valence

How much of an accuracy is the split? The configuration is evaluated with

* ``segment-random`` (LEAKY): per subject, k folds over shuffled windows, so windows of one trial sit in training
  and test (the split most emotion-recognition papers report); ``--allow-leaky-split`` is implied for this arm
  only, and its audit says so;
* ``subject-dependent``: per subject, k folds over trials (windows of a trial never straddle training and test);
* ``loso``: leave one subject out (the model never sees the test person).

Every fold of the three is one pool of Ray Tune trials (one experiment, fold names prefixed with their protocol:
the cluster runs them side by side rather than three evaluations one after another; ``--resume`` continues it),
then the results are split back per protocol and scored exactly as :mod:`gbvnet.evaluation.engine` scores an evaluation
(per subject, the baselines on the same folds). The *inflation* is the per-subject difference between
neighbouring protocols (leaky minus trial-level, trial-level minus LOSO) with a two-sided paired Wilcoxon
signed-rank test and the rank-biserial effect size over the subjects (:func:`gbvnet.evaluation.stats.paired_comparison`),
Holm-corrected over the 2 pairs x 3 metrics it prints (raw p beside).

MLflow: a parent run (experiment ``gbvnet-<dataset>-gap``; metrics named as :data:`gbvnet.evaluation.report.GAP_ARMS`
says, the plot ``protocol_gap.png`` and ``gap.json``) with the three evaluations as child runs, each logged like
an evaluation's parent run (its folds nested under it, each as soon as it finishes), so ``evaluation.report``
lists them and its gap table. As in an evaluation, the tables are printed and ``--output`` written before the
final MLflow logging, and a failure marks the runs FAILED (``--resume`` continues).

Each arm's training size (windows, optimiser steps and subjects in its normaliser per fold, :func:`training_size`)
is in its audit, the tables and MLflow: at the same ``--epochs`` a LOSO fold trains on the windows of every other
subject, a within-subject fold on part of one subject's, so ``trial - loso`` mixes what knowing the person adds
with 10-40x less data and fewer steps. ``--equal-budget`` removes that difference: every fold of every arm
trains on the same number of windows (the smallest training set of any fold; each fold's training rows
subsampled, seeded, and checked by the leakage guard again) for all ``--epochs`` (no early stop: the best
validation epoch is still the one tested), so the arms' optimiser steps are equal too; what still differs is who
the windows come from (and whom the normaliser was fitted on).

``--seeds 0 1 2`` repeats the whole gap per seed (:mod:`gbvnet.evaluation.seeds`; each seed's folds, subsampling and
initial weights), every fold of every seed and protocol in the same pool (fold names ``seed<S>-<protocol>-...``):
per protocol, each subject's scores are averaged over the seeds before the tables and the inflation tests (one
score per subject), and each arm's spread over seeds is printed. In MLflow each seed's three evaluations are child
runs of the gap's run (tag ``seeds``).

The gap measures this configuration on this data. It is not a claim about any paper's code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from gbvnet.cli import CommandParser, one_line_errors
from gbvnet.config import to_dict
from gbvnet.data.cache import open_cache
from gbvnet.evaluation import aggregate, plots, report
from gbvnet.evaluation.audit import audit_folds, check_normalizers, check_search_subjects
from gbvnet.evaluation.baselines import Baselines, start_scorer
from gbvnet.evaluation.engine import (
    EvalSpec,
    FoldLog,
    fold_params,
    log_results,
    plan_folds,
    remove_fold_checkpoints,
    run_folds,
    score,
    start_run,
)
from gbvnet.evaluation.run import (
    add_arguments,
    add_protocol_arguments,
    add_seeds_argument,
    argument_value,
    publish,
    spec_from_args,
)
from gbvnet.evaluation.seeds import child_tags, merge_audits, seed_scores, seed_spec, spread_line
from gbvnet.evaluation.seeds import key as seeds_key
from gbvnet.evaluation.seeds import label as seeds_label
from gbvnet.evaluation.stats import correct_family, paired_comparison
from gbvnet.folds.protocols import (
    PROTOCOLS,
    Fold,
    check_fold,
    folds_digest,
    subjects_with_rows,
    usable_rows,
)
from gbvnet.tracking import Tracker, git_commit, tracking_uri
from gbvnet.train.launch import exit_on_interrupt, init_ray
from gbvnet.train.loop import Job, make_job

ARMS = tuple(report.GAP_ARMS)  # leakiest first
METRICS = ("accuracy", "balanced_accuracy", "macro_f1")  # shown per protocol, and their inflation
LEAKY_AUDIT = "implied by evaluation.gap for this arm only (windows of one trial in training and test)"


class GapInputError(ValueError):
    """The cache cannot be evaluated under one of the protocols (too few subjects or trials)."""


@dataclass
class Arm:
    """One protocol of the gap: its evaluation spec, folds (checked), jobs and leakage audit."""

    spec: EvalSpec
    folds: list[Fold]
    jobs: list[Job]
    audit: dict
    tested: list[int]  # the subjects its folds test
    seeds: tuple[int, ...] = ()  # the seeds of a --seeds gap (this arm: spec.train.seed); empty for one seed

    @property
    def label(self) -> str:
        """The arm in the pool: its protocol, after ``seed<S>-`` in a ``--seeds`` gap."""
        return f"seed{self.spec.train.seed}-{self.spec.protocol}" if self.seeds else self.spec.protocol

    @property
    def names(self) -> list[str]:
        """The folds' names in the pooled Tune experiment: prefixed with the arm's label."""
        return [f"{self.label}-{f.name}" for f in self.folds]

    def key(self, manifest_hash: str) -> str:
        """Stable id of this arm's evaluation: its invocation key and its folds' rows (``--equal-budget``
        subsamples them), and the seeds of a ``--seeds`` gap; used by --resume."""
        payload = f"{self.spec.invocation_key(manifest_hash)} {folds_digest(self.folds, manifest_hash)}"
        return seeds_key(hashlib.sha256(payload.encode()).hexdigest()[:16], self.seeds)


def arm_specs(spec: EvalSpec, k: int, validation: str, equal: bool = False) -> dict[str, EvalSpec]:
    """The three protocols' specs: ``spec`` (model, training, seed, rows, cache) with each protocol's folds, all
    logged to the gap's experiment; with ``equal`` (``--equal-budget``) every fold trains all its epochs."""
    if equal:
        spec = replace(spec, train=replace(spec.train, patience=spec.train.epochs))
    seed = spec.train.seed
    protocol_args = {"segment-random": {"k": k, "seed": seed, "allow_leaky": True},
                     "subject-dependent": {"k": k, "seed": seed},
                     "loso": {"seed": seed, "validation": validation}}
    return {p: replace(spec, protocol=p, protocol_args=protocol_args[p], experiment=spec.experiment_name)
            for p in ARMS}


def equal_budget(arms: dict[str, list[Fold]], index, seed: int, allow_leaky: dict[str, bool]) -> dict[str, list[Fold]]:
    """Every fold of every arm with its training rows subsampled (seeded per arm and fold) to the smallest
    training set among them, checked by the leakage guard again (a subset of checked rows passes)."""
    windows = min(len(f.train) for folds in arms.values() for f in folds)
    out = {}
    for protocol, folds in arms.items():
        out[protocol] = []
        for fold in folds:
            key = int(hashlib.sha256(f"{seed}/{protocol}/{fold.name}".encode()).hexdigest()[:8], 16)
            rows = np.sort(np.random.default_rng(key).choice(fold.train, windows, replace=False))
            out[protocol].append(check_fold(replace(fold, train=rows, check=None), index.subject, index.trial,
                                            allow_leaky=allow_leaky[protocol]))
    return out


def training_size(index, folds: list[Fold], spec: EvalSpec, epochs_run: list[int] | None = None) -> dict:
    """Per fold of an arm: its training windows, optimiser steps (all ``--epochs``, or the epochs it ran) and the
    subjects its normaliser was fitted on (those of its training rows); and their min / median / max."""
    train = spec.train
    per_epoch = [math.ceil(math.ceil(len(f.train) / train.num_workers) / train.batch_size) for f in folds]
    epochs = epochs_run or [train.epochs] * len(folds)
    per_fold = {f.name: {"windows": int(len(f.train)), "steps": int(n * e),
                         "normalizer_subjects": len(np.unique(index.subject[f.train]))}
                for f, n, e in zip(folds, per_epoch, epochs, strict=True)}
    return size_summary(per_fold, "completed" if epochs_run else "planned (all epochs)")


def size_summary(per_fold: dict[str, dict], steps_are: str) -> dict:
    """The training sizes ``per_fold`` with their min / median / max over the folds."""
    summary = {name: {stat: float(fn([row[name] for row in per_fold.values()]))
                      for stat, fn in (("min", np.min), ("median", np.median), ("max", np.max))}
               for name in ("windows", "steps", "normalizer_subjects")}
    return {**summary, "steps_are": steps_are, "per_fold": per_fold}


def check_inputs(spec: EvalSpec, index, k: int, validation: str) -> None:
    """Refuse (:class:`GapInputError`, naming the protocol and subjects) a cache that one of the protocols cannot
    split: fewer than 3 subjects (2 with LOSO validation on trials), or subjects with fewer than k+1 trials."""
    rows = usable_rows(index, spec.model.modality, spec.rows)
    subjects = subjects_with_rows(index, rows)
    fewest = 3 if validation == "subjects" else 2
    if len(subjects) < fewest:
        raise GapInputError(f"loso (validation on held-out {validation}) needs at least {fewest} subjects with rows "
                            f"for modality {spec.model.modality!r}; cache {spec.cache} has {len(subjects)}: "
                            f"subjects {subjects}")
    trials = {s: len(np.unique(index.trial[rows][index.subject[rows] == s])) for s in subjects}
    short = {s: n for s, n in trials.items() if n < k + 1}
    if short:
        raise GapInputError(f"subject-dependent (k={k}) needs at least k+1 = {k + 1} trials per subject (k folds "
                            f"plus validation); subjects {sorted(short)} of cache {spec.cache} have "
                            f"{', '.join(str(short[s]) for s in sorted(short))} (use a smaller --k)")


def plan(specs: dict[str, EvalSpec], index, equal: bool = False, seeds: tuple[int, ...] = ()) -> dict[str, Arm]:
    """Each protocol's folds (checked by the leakage guard as they are built; with ``equal``, subsampled to one
    training size: :func:`equal_budget`), jobs, audit and training size; before Ray starts. The leaky arm's
    audit records that the gap allowed its split. ``seeds``: those of a ``--seeds`` gap (:attr:`Arm.seeds`)."""
    planned = {}
    for protocol, spec in specs.items():
        try:
            planned[protocol] = plan_folds(spec, index)
        except ValueError as exc:
            raise GapInputError(f"{protocol}: {exc}") from exc
    if equal:
        seed = next(iter(specs.values())).train.seed
        planned = equal_budget(planned, index, seed, {p: s.leaky for p, s in specs.items()})
    arms = {}
    for protocol, spec in specs.items():
        folds = planned[protocol]
        try:
            jobs = [make_job(spec.cache, spec.model, spec.train, f, allow_leaky=spec.leaky,
                             manifest_hash=index.manifest_hash) for f in folds]
        except ValueError as exc:
            raise GapInputError(f"{protocol}: {exc}") from exc
        tested = subjects_with_rows(index, np.concatenate([f.test for f in folds]))
        audit = {**audit_folds(folds),
                 **check_search_subjects(spec.search, spec.dataset, spec.train.target, index.manifest_hash, tested,
                                         spec.allow_searched_test_subjects)}
        if spec.leaky:
            audit["leaky_split"] = LEAKY_AUDIT
        audit["training"] = training_size(index, folds, spec)  # planned; the steps completed once trained
        arms[protocol] = Arm(spec, folds, jobs, audit, tested, seeds)
    if len({tuple(a.tested) for a in arms.values()}) != 1:
        raise GapInputError(f"the protocols would test different subjects: "
                            f"{ {p: a.tested for p, a in arms.items()} }")
    return arms


def gap_key(arms: dict[str, Arm], manifest_hash: str) -> str:
    """Stable id of the gap: its evaluations' keys (three, or three per seed; used by --resume)."""
    keys = {p: a.key(manifest_hash) for p, a in arms.items()}
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def run_pooled(spec: EvalSpec, arms: dict[str, Arm], key: str, index, children: dict[str, Tracker]
               ) -> dict[str, list]:
    """Every fold of every arm as one Tune experiment (``eval-gap-<dataset>-<key>``), each fold logged under its
    protocol's run (``children``) as soon as it finishes; each arm's results back."""
    jobs = [j for a in arms.values() for j in a.jobs]
    names = [n for a in arms.values() for n in a.names]
    logs = [FoldLog(children[p], f.name, fold_params(index, f)) for p, a in arms.items() for f in a.folds]
    results = run_folds(spec, jobs, names, key, logs)
    out, start = {}, 0
    for protocol, arm in arms.items():
        out[protocol], start = results[start:start + len(arm.jobs)], start + len(arm.jobs)
    return out


def inflation(documents: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """Per neighbouring pair of protocols (leaky - trial, trial - loso) and metric: the paired comparison of the
    per-subject scores (two-sided Wilcoxon, rank-biserial effect size), the pairs x metrics Holm-corrected as one
    family; empty with fewer than 2 subjects."""
    by_short = {short: documents[p] for p, short in report.GAP_ARMS.items()}
    if len(by_short["loso"]["per_subject"]) < 2:
        return {}
    gaps = {f"{a}_minus_{b}": {m: paired_comparison(aggregate.per_subject_scores(by_short[a], m),
                                                    aggregate.per_subject_scores(by_short[b], m)) for m in METRICS}
            for a, b in report.GAP_PAIRS}
    correct_family({(pair, m): test for pair, tests in gaps.items() for m, test in tests.items()},
                   report.GAP_FAMILY)
    return gaps


def flat_metrics(documents: dict[str, dict], gaps: dict[str, dict[str, dict]]) -> dict[str, float]:
    """The gap run's MLflow metrics (the names :func:`gbvnet.evaluation.report.gap_tables` reads)."""
    metrics = {}
    for protocol, doc in documents.items():
        short = report.GAP_ARMS[protocol]
        for m in METRICS:
            for stat in ("mean", "std", "n"):
                metrics[f"{short}_test_{m}_{stat}"] = doc["aggregate"][f"test_{m}_{stat}"]
        for name in ("n_folds", "n_one_class_folds"):
            metrics[f"{short}_{name}"] = doc["aggregate"][name]
        for name in report.TRAINING_SIZE:
            for stat in ("min", "median", "max"):
                metrics[f"{short}_train_{name}_{stat}"] = doc["audit"]["training"][name][stat]
        for name, b in doc["baselines"].items():
            for stat in ("mean", "std"):
                metrics[f"{short}_baseline_{name}_test_accuracy_{stat}"] = b["aggregate"][f"test_accuracy_{stat}"]
    for pair, by_metric in gaps.items():
        for m, cmp in by_metric.items():
            for field in ("mean_difference", "p_value", "p_holm", "effect_size", "n", "n_subjects", "min_p"):
                metrics[f"{pair}_{m}_{field}"] = cmp[field]
    return metrics


def per_subject_table(documents: dict[str, dict], metric: str = "accuracy") -> tuple[str, list[str], list[list[str]]]:
    """Per subject: each protocol's score and the differences between neighbouring protocols."""
    scores = {report.GAP_ARMS[p]: aggregate.per_subject_scores(doc, metric) for p, doc in documents.items()}
    header = ["subject", *scores, *(f"{a} - {b}" for a, b in report.GAP_PAIRS)]
    body = [[str(s), *(f"{scores[a][s]:.3f}" for a in scores),
             *(f"{scores[a][s] - scores[b][s]:+.3f}" for a, b in report.GAP_PAIRS)]
            for s in sorted(scores["loso"])]
    return f"per-subject {metric}", header, body


def format_gap(document: dict) -> str:
    """What the command prints: the gap tables (as ``evaluation.report`` shows them), the per-subject scores,
    how to read them, each arm's audit and the MLflow run."""
    title = report.gap_title({**document, "subjects": " ".join(map(str, document["subjects"]))})
    lines = [line for line in report.gap_warnings(document["metrics"])]
    lines += [report.render(report.gap_tables(document["metrics"], title)
                           + [per_subject_table(document["protocols"])], "md").rstrip(), "", report.GAP_READING, ""]
    if "seeds" in document:
        lines += [f"seeds {seeds_label(document['seeds'])}: each subject's scores were averaged over the seeds before "
                  "the tables and tests above (one score per subject); spread over seeds (mean over subjects):"]
        lines += [f"  {protocol}: accuracy {spread_line(doc)}" for protocol, doc in document["protocols"].items()]
    for protocol, doc in document["protocols"].items():
        lines.append(f"leakage audit, {protocol}: " + "; ".join(f"{k}={v}" for k, v in doc["audit"].items()
                                                                 if isinstance(v, str)))
    children = "the three evaluations of each seed" if "seeds" in document else "the three evaluations"
    lines.append(f"MLflow run {document['mlflow_run_id']} in experiment {document['mlflow_experiment']!r} "
                 f"({children} are its child runs)")
    return "\n".join(lines)


def start_gap_run(spec: EvalSpec, index, arms: dict[str, Arm], key: str, k: int, validation: str, budget: str
                  ) -> tuple[Tracker, dict[str, Tracker]]:
    """The gap's MLflow parent run (its parameters and tags) and, nested under it, each protocol's run, started as
    an evaluation's parent run is (:func:`gbvnet.evaluation.engine.start_run`; the folds are logged under it as they
    finish); in a ``--seeds`` gap, each seed's (tagged ``seeds``). Found again by their keys with ``--resume``."""
    tracker = Tracker(tracking_uri(spec.tracking_uri), spec.experiment_name, key, resume=spec.resume,
                      run_name=f"gap-{spec.model.name}-{spec.model.modality}-{spec.model.fusion.kind}-"
                               f"{spec.train.target}-{spec.preset}-{key[:6]}")
    tracker.log_cache(spec.cache, index, context="evaluation")
    tracker.log_params({"protocol": "gap", "dataset": spec.dataset, "cache": spec.cache,
                        "cache_manifest_hash": index.manifest_hash, "git_commit": git_commit(),
                        "seed": seeds_label(spec.seeds) if spec.seeds else spec.train.seed,
                        "model": to_dict(spec.model), "train": to_dict(spec.train),
                        "k": k, "validation": validation, "rows": spec.rows, "protocols": " ".join(ARMS),
                        "budget": budget})
    tested = next(iter(arms.values())).tested  # every arm tests the same subjects (:func:`plan`)
    tracker.set_tags({"kind": "gap", "protocol": "gap", "dataset": spec.dataset, "model": spec.model.name,
                      "modality": spec.model.modality, "fusion": spec.model.fusion.kind, "target": spec.train.target, "leaky_arm": "segment-random",
                      "tested_subjects": " ".join(map(str, tested)), "n_subjects": len(tested), "budget": budget,
                      **({"seeds": seeds_label(spec.seeds)} if spec.seeds else {})})
    children = {}
    for label, arm in arms.items():
        children[label] = start_run(arm.spec, index, arm.folds, tested, arm.key(index.manifest_hash))
        children[label].set_tags({"mlflow.parentRunId": tracker.run_id, "gap_run": tracker.run_id, "budget": budget,
                                  **(child_tags(arm.spec.train.seed, spec.seeds) if spec.seeds else {})})
    return tracker, children


def log_gap(tracker: Tracker, children: dict[str, Tracker], index, arms: dict[str, Arm], results: dict[str, list],
            documents: dict[str, dict], document: dict) -> None:
    """The final MLflow logging: each arm's run as an evaluation's parent run (its folds not logged yet, scores
    ``documents``, audit, plots), then the gap's metrics, ``gap.json`` and plot; every run ends FINISHED."""
    for label, arm in arms.items():
        log_results(children[label], arm.spec, index, arm.folds, results[label], documents[label], arm.audit)
    tracker.log_metrics(document["metrics"])
    tracker.log_json({k: v for k, v in document.items() if k not in ("protocols", "per_seed")}, "gap.json")
    with tempfile.TemporaryDirectory(prefix="gbvnet-plots-") as folder:
        figure = plots.gap_figure(document["protocols"])
        tracker.log_file(plots.save_figures({"protocol_gap.png": figure}, folder)[0])
    for run in (*children.values(), tracker):
        run.finish()


def shared_baselines(spec: EvalSpec, index, arms: dict[str, Arm]) -> dict[str, Baselines]:
    """Each arm's baselines, scored beside the folds by one scorer: the arms' windows are the same, so their
    features are computed once, whatever the arms' seeds."""
    y = index.labels(spec.train.target)
    scorer = start_scorer(spec.cache, y)
    return {label: Baselines(spec.cache, arm.folds, y, arm.spec.train.seed, scorer=scorer)
            for label, arm in arms.items()}


def arm_document(spec: EvalSpec, index, arm: Arm, results: list, baselines: Baselines, run: Tracker) -> dict:
    """One protocol's part of the gap's document: scored as :mod:`gbvnet.evaluation.engine` scores an evaluation, with its
    leakage audit (the normalisers' check added) and MLflow run."""
    arm.audit.update(check_normalizers(arm.folds, [r.metrics.get("normalizer_digest") for r in results]))
    arm.audit["training"] = training_size(index, arm.folds, arm.spec, [int(r.metrics["epoch"]) for r in results])
    return {"protocol": arm.spec.protocol, "leaky": arm.spec.leaky, "dataset": spec.dataset,
            "target": spec.train.target, "modality": spec.model.modality, "fusion": spec.model.fusion.kind,
            "cache": spec.cache, "tested_subjects": arm.tested, **score(index, arm.folds, results, baselines),
            "audit": arm.audit, "mlflow_run_id": run.run_id, "mlflow_experiment": spec.experiment_name}


def seeded_documents(arms: dict[str, Arm], documents: dict[str, dict]) -> dict[str, dict]:
    """Per protocol of a ``--seeds`` gap, its seeds' documents as one: each subject's scores and the baselines'
    averaged over the seeds (:func:`gbvnet.evaluation.seeds.seed_scores`), the audits merged, the training sizes those
    of every seed's folds."""
    out = {}
    for protocol in ARMS:
        docs = {a.spec.train.seed: documents[label] for label, a in arms.items() if a.spec.protocol == protocol}
        audit = merge_audits({s: d["audit"] for s, d in docs.items()})
        audit["training"] = size_summary({f"seed{s}-{name}": row for s, d in docs.items()
                                          for name, row in d["audit"]["training"]["per_fold"].items()}, "completed")
        first = next(iter(docs.values()))
        out[protocol] = {**{k: first[k] for k in ("protocol", "leaky", "dataset", "target", "modality", "fusion",
                                                  "cache", "tested_subjects", "mlflow_experiment")},
                         **seed_scores(docs), "audit": audit,
                         "mlflow_run_ids": {str(s): d["mlflow_run_id"] for s, d in docs.items()}}
    return out


def budget_of(arms: dict[str, Arm], equal: bool) -> str:
    """The gap's training budget as its runs' tag ``budget`` says it (``evaluation.report`` shows it); with
    ``--seeds``, each seed's where they differ."""
    if not equal:
        return "as each protocol gives (not equal)"
    budgets = {}
    for arm in arms.values():
        training = arm.audit["training"]
        budgets.setdefault(arm.spec.train.seed, f"{int(training['windows']['min'])} windows and "
                                                f"{int(training['steps']['min'])} optimiser steps")
    if len(set(budgets.values())) == 1:
        return f"equal: {next(iter(budgets.values()))} per fold in every arm"
    return "equal: " + "; ".join(f"seed {s}: {b}" for s, b in budgets.items()) + " per fold in every arm of the seed"


def gap(spec: EvalSpec, k: int = 5, validation: str = "subjects",
        publish: Callable[[dict], None] | None = None, equal: bool = False) -> dict:
    """Evaluate ``spec``'s configuration under the three protocols as one pool of folds (with ``equal``, each
    fold on the same number of windows and steps: ``--equal-budget``); returns the ``--output`` document, handed
    to ``publish`` before the final MLflow logging (every refusal comes before Ray starts). With ``spec.seeds``
    (``--seeds``), the three protocols once per seed in the same pool, each subject's scores averaged over the
    seeds before the tables and tests (:func:`seeded_documents`). A failure marks the gap's runs FAILED and says
    that ``--resume`` continues."""
    index = open_cache(spec.cache).index()
    check_inputs(spec, index, k, validation)
    arms = {arm.label: arm for one in ([seed_spec(spec, s) for s in spec.seeds] or [spec])
            for arm in plan(arm_specs(one, k, validation, equal), index, equal, spec.seeds).values()}
    budget = budget_of(arms, equal)
    init_ray(log_to_driver=False)
    key = gap_key(arms, index.manifest_hash)
    tracker, children = start_gap_run(spec, index, arms, key, k, validation, budget)
    try:
        baselines = shared_baselines(spec, index, arms)
        results = run_pooled(spec, arms, key, index, children)
        documents = {label: arm_document(spec, index, arm, results[label], baselines[label], children[label])
                     for label, arm in arms.items()}
        protocols = seeded_documents(arms, documents) if spec.seeds else documents
        gaps = inflation(protocols)
        document = {"kind": "gap", "dataset": spec.dataset, "target": spec.train.target,
                    "modality": spec.model.modality, "fusion": spec.model.fusion.kind, "preset": spec.preset,
                    "seed": seeds_label(spec.seeds) if spec.seeds else spec.train.seed, "k": k,
                    "validation": validation, "rows": spec.rows, "budget": budget,
                    "subjects": protocols["loso"]["tested_subjects"], "protocols": protocols, "inflation": gaps,
                    "metrics": flat_metrics(protocols, gaps), "mlflow_run_id": tracker.run_id,
                    "mlflow_experiment": spec.experiment_name,
                    **({"seeds": list(spec.seeds), "per_seed": documents} if spec.seeds else {})}
        if publish is not None:
            publish(document)
        log_gap(tracker, children, index, arms, results, documents, document)
    except BaseException as exc:
        tracker.fail(exc)
        for child in children.values():
            child.fail(exc, quiet=True)
        raise
    for label, arm in arms.items():
        for name, result in zip(arm.names, results[label], strict=True):
            remove_fold_checkpoints(spec, key, name, result.path, result.filesystem)
    return document


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m evaluation.gap``: an evaluation's, ``--seeds``, the three protocols' own
    (``--k``, ``--validation``) and ``--equal-budget``."""
    p = CommandParser(prog="python -m evaluation.gap", description=__doc__.splitlines()[0])
    add_arguments(p)
    add_seeds_argument(p)
    add_protocol_arguments(p, ARMS)
    p.add_argument("--equal-budget", action="store_true",
                   help="train every fold of every protocol on the same number of windows (the smallest training "
                        "set; LOSO's subsampled per fold, seeded) for all --epochs: equal optimiser steps")
    return p


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    with one_line_errors(), exit_on_interrupt():
        args = parser.parse_args(argv)
        given = {a.name: argument_value(args, a) for protocol in ARMS for a in PROTOCOLS[protocol].arguments}
        spec = spec_from_args(args, "gap", {})
        return gap(spec, k=given["k"], validation=given["validation"],
                   publish=lambda document: publish(document, args.output, format_gap), equal=args.equal_budget)


if __name__ == "__main__":
    main()
