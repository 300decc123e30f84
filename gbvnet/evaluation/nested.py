"""Nested leave-one-subject-out evaluation: ``python -m evaluation.loso ... --search-trials N``.

For every outer LOSO fold, a search of ``N`` trials (Optuna + ASHA, with the flags of ``tune/search.py``:
``--space``, ``--search-epochs``, ``--grace-epochs``, ``--reduction-factor``) on that fold's training subjects
only, validating on held-out training subjects (:func:`gbvnet.folds.protocols.inner_fold`, checked by the leakage guard and
recorded in the audit); then the outer fold trains with its own best configuration (the evaluation's
``--epochs`` / ``--patience``) and is tested once on its left-out subject. Every subject is tested; no
configuration ever saw its test subject.

All folds share the cluster at once in one Tune run (Ray Tune cannot start a Tuner inside a trial):
:class:`gbvnet.search.fold_search.FoldSearcher` interleaves the folds' search trials, gives each fold its own
sampler (:func:`gbvnet.search.space.sampler`: TPE after a third of the budget at random, or random search, named so in
every output, when ``N`` does not pass TPE's start-up), and hands out a fold's final training as soon as its own search has finished;
:class:`gbvnet.search.fold_search.FoldScheduler` gives each fold its own ASHA. ``--concurrent`` trials run at a time
(resources per trial as for every fold: ``--cpus-per-worker``, ``--gpus-per-worker``). ``--compare-untuned`` also
trains every outer fold with the untuned configuration (the ``--preset``) in the same pool and tests, per subject
(Wilcoxon, Holm over its two metrics), whether tuning helped.

Reported like every evaluation (per-subject table, baselines on the same test windows, Wilcoxon + Holm, audit)
plus, per fold, the chosen configuration and the search's best validation score beside the outer test score,
a stability table (how often each value of each searched hyper-parameter was chosen), the budget spent
(trial-epochs) and the untuned comparison. MLflow: the parent run; per outer fold a nested run (its final
training) holding its search trials and its untuned training as nested runs. Folds whose search or training
failed are listed (``failed_folds``) and scored without; a fold whose final training fails is first retried
with its search's next-best configurations (at most :data:`gbvnet.search.fold_search.RETRIES`), listed as retried
(``retried_folds``). The parent run's tags (tested subjects, their number, the folds' digest: what
``evaluation.report`` groups by), its metrics and its audit count only the folds that were tested
(``untested_folds`` names the others). ``--resume`` restores the Tune run: finished trials and
folds are not trained again, MLflow runs already logged are kept.

Stages (:func:`evaluate_nested`): plan (outer and inner folds, jobs, audit: every refusal before Ray starts),
run (:func:`run_trials`), collect (:func:`collect`), score and report (:func:`summarise`), log
(:func:`log_nested`).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import optuna
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from gbvnet.cli import add_search_arguments, add_search_trials_argument
from gbvnet.cli.progress import ProgressTable
from gbvnet.config import ModelConfig
from gbvnet.data.cache import check_snapshot, open_cache
from gbvnet.data.storage import join
from gbvnet.evaluation import aggregate
from gbvnet.evaluation.audit import audit_folds, check_normalizers
from gbvnet.evaluation.baselines import Baselines
from gbvnet.evaluation.engine import (
    EvalSpec,
    evaluate,
    log_fold_model,
    log_results,
    output_document,
    plan_folds,
    score,
    start_run,
)
from gbvnet.evaluation.stats import correct_family, paired_comparison
from gbvnet.folds.protocols import Fold, folds_digest, inner_fold, subjects_with_rows
from gbvnet.search.fold_search import RETRIES, SCORE, FoldScheduler, FoldSearcher
from gbvnet.search.space import SPACES, apply, model_space, sampler, search_space
from gbvnet.train.launch import (
    init_ray,
    nested_trial,
    remove_checkpoints,
    run_tuner,
    storage_path,
    tune_trial_resources,
)
from gbvnet.train.loop import Job, make_job

JOBS = ("inner", "tuned", "untuned")
UNTUNED_METRICS = ("balanced_accuracy", "macro_f1")  # tuned vs untuned, per subject: one Holm family


@dataclass
class NestedSpec:
    """The search of each outer fold (``--search-trials`` and its flags)."""

    trials: int  # per outer fold
    space: str = "paper"
    max_epochs: int = 20  # the most a search trial trains
    grace_epochs: int = 1  # ASHA
    reduction_factor: int = 2  # ASHA
    concurrent: int = 2  # trials at a time, all folds together
    compare_untuned: bool = False

    def key(self, evaluation_key: str) -> str:
        payload = json.dumps({"evaluation": evaluation_key, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The nested run's flags, in their own group: ``--search-trials`` (old spelling ``--search``), the shared
    search flags (:func:`gbvnet.cli.add_search_arguments`) and ``--compare-untuned``."""
    g = p.add_argument_group("nested search (--search-trials N: tune every outer fold on its own training subjects)")
    add_search_trials_argument(g, None, "search N configurations per outer fold (TPE + ASHA; random search + ASHA "
                                        "when N is below TPE's start-up), then train each fold with its own best "
                                        "(default: no search)", old_flag="--search")
    add_search_arguments(g, SPACES)
    g.add_argument("--compare-untuned", action="store_true",
                   help="also train every outer fold with the untuned --preset configuration; paired Wilcoxon test")


def run(args: argparse.Namespace, spec: EvalSpec, publish: Callable[[dict], None]) -> dict:
    """``evaluation.loso``'s evaluation (:data:`gbvnet.evaluation.run.Runner`): the nested one with
    ``--search-trials``, else the plain one; ``publish`` shows the document before the final MLflow logging."""
    if args.search_trials is None and args.compare_untuned:
        raise ValueError("--compare-untuned compares a nested search with the untuned configuration: add "
                         "--search-trials N")
    if args.search_trials is None:
        return evaluate(spec, publish)
    nested = nested_spec(args, spec)

    def show(document: dict) -> None:
        warning = aggregate.degenerate_line(document["aggregate"])
        print("\n".join(([warning] if warning else []) + [format_nested(document["nested"])]))
        publish(document)

    return evaluate_nested(dataclasses.replace(spec, preset=f"{spec.preset}-nested{nested.trials}"), nested, show)


def nested_spec(args: argparse.Namespace, spec: EvalSpec) -> NestedSpec:
    """The search of every outer fold that ``--search-trials N`` and its flags ask for (:func:`add_arguments`)."""
    if args.config:
        raise ValueError(f"--search-trials {args.search_trials} searches every outer fold itself; it cannot also take "
                         f"--config {args.config} (a configuration already chosen): drop one of them")
    return NestedSpec(trials=args.search_trials, space=args.space or ("smoke" if spec.preset == "smoke" else "paper"),
                      max_epochs=args.search_epochs, grace_epochs=args.grace_epochs,
                      reduction_factor=args.reduction_factor, concurrent=args.concurrent,
                      compare_untuned=args.compare_untuned)


# ------------------------------------------------------------------------------------------------- plan
@dataclass
class Plan:
    folds: list[Fold]  # outer
    inner: list[Fold]  # inner[k]: the search fold of folds[k]
    jobs: dict  # "outer" / "inner": one job per fold
    audit: dict


def plan(spec: EvalSpec, nested: NestedSpec, index) -> Plan:
    """Outer folds (:func:`gbvnet.evaluation.engine.plan_folds`), their search folds (:func:`gbvnet.folds.protocols.inner_fold`) and
    jobs, and the audit; refusals (a fold with too few training subjects, bad configs) here cost no Ray start."""
    folds = plan_folds(spec, index)
    inner = [inner_fold(index, fold, spec.train.seed) for fold in folds]
    search_train = dataclasses.replace(spec.train, epochs=nested.max_epochs, patience=nested.max_epochs)
    jobs = {"outer": [make_job(spec.cache, spec.model, spec.train, f, manifest_hash=index.manifest_hash)
                      for f in folds],
            "inner": [make_job(spec.cache, spec.model, search_train, f, manifest_hash=index.manifest_hash)
                      for f in inner]}
    audit = {**audit_folds(folds), "search": "nested: each outer fold searched on its own training subjects only",
             "searched_subjects": [],
             "inner_folds": {outer.name: {"check": f.check, "train_subjects": subjects_with_rows(index, f.train),
                                          "val_subjects": subjects_with_rows(index, f.val),
                                          "outer_test_subjects": subjects_with_rows(index, outer.test)}
                             for outer, f in zip(folds, inner, strict=True)}}
    return Plan(folds, inner, jobs, audit)


# ------------------------------------------------------------------------------------------------- run
def trial_name(names: list[str], config: dict) -> str:
    """``subject-3/search-2``, ``subject-3/tuned``, ``subject-3/untuned``."""
    job = config["job"]
    return f"{names[config['fold']]}/" + (f"search-{config['number']}" if job == "inner" else job)


def nested_experiment(spec: EvalSpec, key: str) -> str:
    """The Tune experiment of the nested evaluation ``key`` (a folder of the Ray storage); a trial with several
    workers trains as the trainer run ``<experiment>-<trial id>`` beside it."""
    return f"nested-{spec.protocol}-{spec.dataset}-{key}"


def remove_trial_checkpoints(spec: EvalSpec, key: str, grid: tune.ResultGrid) -> None:
    """Remove every trial's checkpoints (and those of its trainer run, with several workers); results stay."""
    storage, experiment = storage_path(spec.storage), nested_experiment(spec, key)
    for result in grid:
        remove_checkpoints(result.path, result.filesystem)
        if result.metrics and "trial_id" in result.metrics:
            remove_checkpoints(join(storage, f"{experiment}-{result.metrics['trial_id']}"))


def run_trials(spec: EvalSpec, nested: NestedSpec, jobs: dict, names: list[str], key: str) -> tune.ResultGrid:
    """Every fold's search trials and outer trainings as one Tune run (see :mod:`gbvnet.search.fold_search`)."""
    storage = storage_path(spec.storage)
    experiment = nested_experiment(spec, key)
    trainable = tune.with_resources(
        tune.with_parameters(nested_trial, jobs=jobs, storage=storage, experiment=experiment),
        tune_trial_resources(spec.train))
    total = len(names) * (nested.trials + 1 + nested.compare_untuned)  # planned: without retried trainings
    progress = [] if spec.quiet else [ProgressTable(
        total=total, concurrency=nested.concurrent,
        max_epochs=lambda trial: nested.max_epochs if trial.config["job"] == "inner" else spec.train.epochs,
        title=f"nested {spec.protocol}", name=lambda trial: trial_name(names, trial.config))]
    tune_config = tune.TuneConfig(
        search_alg=FoldSearcher(model_space(nested.space, spec.model), len(names), nested.trials, spec.train.seed,
                                nested.compare_untuned),
        scheduler=FoldScheduler(len(names), max_t=nested.max_epochs, grace_period=nested.grace_epochs,
                                reduction_factor=nested.reduction_factor),
        num_samples=total + len(names) * RETRIES, max_concurrent_trials=nested.concurrent)
    return run_tuner(trainable, experiment, storage, resume=spec.resume, param_space={}, tune_config=tune_config,
                     callbacks=progress, max_failures=1, total=total, kind="trial")


@dataclass
class FoldOutcome:
    """What one outer fold's trials gave: its search trials, its tuned and untuned trainings (None: none ran or
    it failed), the tuned trainings that failed (configuration number, error; the next-best was tried after
    each) and why the fold failed, if it did."""

    inner: list[tune.Result]
    tuned: tune.Result | None = None
    untuned: tune.Result | None = None
    failed_trainings: list[tuple[int, str]] = field(default_factory=list)
    failure: str | None = None

    @property
    def scored(self) -> list[tune.Result]:
        return [r for r in self.inner if r.error is None and r.metrics and SCORE in r.metrics]


def collect(grid: tune.ResultGrid, folds: list[Fold]) -> list[FoldOutcome]:
    """The grid's results by outer fold; a fold without a tuned test result says why (its failed trainings: the
    best configuration and up to :data:`~gbvnet.search.fold_search.RETRIES` next-best ones)."""
    outcomes = [FoldOutcome([]) for _ in folds]
    for result in grid:
        config = result.config
        outcome = outcomes[config["fold"]]
        if config["job"] == "inner":
            outcome.inner.append(result)
        elif result.error is None and "test_confusion" in (result.metrics or {}):
            setattr(outcome, config["job"], result)
        elif config["job"] == "tuned":
            outcome.failed_trainings.append((config["number"], str(result.error).splitlines()[0]))
    for outcome in outcomes:
        outcome.inner.sort(key=lambda r: r.config["number"])
        scores = {r.config["number"]: float(r.metrics[SCORE]) for r in outcome.scored}
        outcome.failed_trainings.sort(key=lambda failed: -scores[failed[0]])  # best first: the order tried
        if outcome.tuned is None and outcome.failed_trainings:
            numbers = [n for n, _ in outcome.failed_trainings]
            outcome.failure = (f"training failed with each of its {len(numbers)} best configurations (trials "
                               f"{numbers}; at most {1 + RETRIES} are tried): {outcome.failed_trainings[-1][1]}")
        if outcome.tuned is None and outcome.failure is None:
            errors = sorted({str(r.error).splitlines()[0] for r in outcome.inner if r.error})
            outcome.failure = f"no search trial finished ({len(outcome.inner)} ran; errors: {errors})"
    return outcomes


# ------------------------------------------------------------------------------------------------- report
def point_of(config: dict) -> dict:
    """The sampled point of a trial's config (without its fold, job and number)."""
    return {k: v for k, v in config.items() if k not in ("fold", "job", "number")}


def tuned_job(outer: Job, config: dict) -> Job:
    """The job an outer fold's training trial of ``config`` ran (:func:`gbvnet.train.launch.nested_trial`): ``outer``
    with the trial's point written in."""
    model, train = apply(point_of(config), outer.model, outer.train)
    return dataclasses.replace(outer, model=model, train=train)


def stability(chosen: list[dict], space: dict) -> dict:
    """How often each value of each searched hyper-parameter (``space``: the distributions searched) was chosen:
    counts for choices, the spread (min, median, max) for continuous ones."""
    out = {}
    for key, distribution in OptunaSearch.convert_search_space(space).items():
        values = [point[key] for point in chosen if key in point]
        if isinstance(distribution, optuna.distributions.CategoricalDistribution):
            out[key] = {"counts": {str(c): sum(v == c for v in values) for c in distribution.choices}}
        elif values:
            out[key] = {"min": float(np.min(values)), "median": float(np.median(values)),
                        "max": float(np.max(values))}
    return out


def summarise(nested: NestedSpec, model: ModelConfig, folds: list[Fold], outcomes: list[FoldOutcome], scores: dict,
              index) -> dict:
    """The nested section of the document: per fold the chosen configuration, its search's best validation score
    beside the test score, the budget; stability over the keys searched for ``model`` (those that cannot change it
    listed as not searched); failed folds; the untuned comparison."""
    space = model_space(nested.space, model)
    tested = {row["fold"]: row for row in scores["folds"]}
    per_fold = []
    for fold, outcome in zip(folds, outcomes, strict=True):
        row = {"fold": fold.name, "test_subjects": subjects_with_rows(index, fold.test),
               "trials": len(outcome.inner), "finished_trials": len(outcome.scored),
               "trial_epochs": int(sum((r.metrics or {}).get("epoch", 0) for r in outcome.inner))}
        if outcome.tuned is not None:
            row.update(chosen_trial=outcome.tuned.config["number"], chosen=point_of(outcome.tuned.config),
                       inner_best_val_macro_f1=max(float(r.metrics[SCORE]) for r in outcome.scored),
                       test_macro_f1=tested[fold.name]["macro_f1"], test_accuracy=tested[fold.name]["accuracy"],
                       one_class=tested[fold.name]["one_class"],
                       failed_trainings=[{"trial": n, "error": e} for n, e in outcome.failed_trainings],
                       final_epochs=int(outcome.tuned.metrics["epoch"]))
        else:
            row["failure"] = outcome.failure
        per_fold.append(row)
    done = [row for row in per_fold if "chosen" in row]
    section = {"trials_per_fold": nested.trials, "sampler": sampler(nested.trials, seed=0)[1],
               "space": nested.space, "max_epochs": nested.max_epochs,
               "grace_epochs": nested.grace_epochs, "reduction_factor": nested.reduction_factor,
               "searched": list(space), "not_searched": [k for k in search_space(nested.space) if k not in space],
               "folds": per_fold, "stability": stability([row["chosen"] for row in done], space),
               "budget": {"trials": sum(row["trials"] for row in per_fold),
                          "trial_epochs": sum(row["trial_epochs"] for row in per_fold),
                          "outer_epochs": sum(row.get("final_epochs", 0) for row in per_fold)},
               "failed_folds": {row["fold"]: row["failure"] for row in per_fold if "failure" in row},
               "retried_folds": {row["fold"]: [f["trial"] for f in row["failed_trainings"]] for row in per_fold
                                 if row.get("failed_trainings")},
               "retries": RETRIES}
    if nested.compare_untuned:
        section["untuned"] = compare_untuned(folds, outcomes, scores, index)
    return section


def compare_untuned(folds: list[Fold], outcomes: list[FoldOutcome], scores: dict, index) -> dict:
    """The untuned trainings' per-subject scores on the same outer folds and a two-sided paired Wilcoxon test of
    tuned against untuned (balanced accuracy and macro-F1 per subject)."""
    pairs = [(f, o.untuned) for f, o in zip(folds, outcomes, strict=True)
             if o.untuned is not None and o.tuned is not None]
    if not pairs:
        return {"error": "no fold has both a tuned and an untuned result"}
    untuned = aggregate.summarise([f for f, _ in pairs], [r.metrics["test_confusion"] for _, r in pairs], index)
    out = {"per_subject": untuned["per_subject"], "aggregate": untuned["aggregate"], "tests": {}}
    for metric in UNTUNED_METRICS:
        try:
            out["tests"][metric] = paired_comparison(aggregate.per_subject_scores(scores, metric),
                                                     aggregate.per_subject_scores(untuned, metric))
        except ValueError as error:  # fewer than 2 subjects with defined scores
            out["tests"][metric] = {"error": str(error)}
    out["family"] = correct_family(out["tests"], f"tuned vs untuned x {len(UNTUNED_METRICS)} metrics, two-sided")
    return out


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def format_nested(section: dict) -> str:
    """The nested run's tables: per fold (chosen configuration, search score beside test score), stability,
    budget, failed folds and the untuned comparison."""
    lines = [f"nested search: {section['trials_per_fold']} trials per fold, {section['sampler']} + ASHA, space "
             f"{section['space']}, up to {section['max_epochs']} epochs per trial",
             f"{'fold':>12} {'trials':>6} {'val macro-F1':>12} {'test macro-F1':>13} {'test acc':>8}  "
             "chosen configuration (val: its search's best)"]
    for row in section["folds"]:
        if "failure" in row:
            lines.append(f"{row['fold']:>12} {row['trials']:>6}  FAILED: {row['failure']}")
            continue
        chosen = ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in row["chosen"].items())
        flag = f"[ONE CLASS: predicted {row['one_class']} for every test window] " if row["one_class"] is not None \
            else ""
        if row["failed_trainings"]:
            flag += (f"[RETRIED: training failed with trial(s) {[f['trial'] for f in row['failed_trainings']]}, "
                     f"trained with its next-best, trial {row['chosen_trial']}] ")
        lines.append(f"{row['fold']:>12} {row['trials']:>6} {row['inner_best_val_macro_f1']:>12.3f} "
                     f"{row['test_macro_f1']:>13.3f} {row['test_accuracy']:>8.3f}  {flag}{chosen}")
    lines.append("stability of the chosen configurations (counts per value; min / median / max):")
    for key, entry in section["stability"].items():
        shown = (", ".join(f"{v}: {n}" for v, n in entry["counts"].items()) if "counts" in entry
                 else f"{entry['min']:.3g} / {entry['median']:.3g} / {entry['max']:.3g}")
        lines.append(f"  {key:<28} {shown}")
    if section["not_searched"]:
        lines.append(f"not searched (cannot change this model): {', '.join(section['not_searched'])}")
    budget = section["budget"]
    lines.append(f"budget: {budget['trials']} search trials, {budget['trial_epochs']} trial-epochs; "
                 f"{budget['outer_epochs']} epochs of final training")
    if "untuned" in section:
        untuned = section["untuned"]
        if "family" in untuned:
            lines.append(f"tuned vs untuned, paired over subjects ({untuned['family']}; raw p beside):")
        for metric, test in untuned.get("tests", {}).items():
            if "error" in test:
                lines.append(f"tuned vs untuned ({metric}): {test['error']}")
                continue
            lines.append(f"tuned vs untuned ({metric}, per subject): mean difference {test['mean_difference']:+.3f}, "
                         f"Wilcoxon p = {test['p_value']:.3g}, Holm p = {test['p_holm']:.3g} (two-sided, "
                         f"n = {test['n']})" + (f"; {test['warning']}" if test["warning"] else ""))
        if "error" in untuned:
            lines.append(f"tuned vs untuned: {untuned['error']}")
    if section["failed_folds"]:
        lines.append(f"FAILED folds (not tested, not scored; a fold whose training fails is retried with up to "
                     f"{section['retries']} next-best configurations): {', '.join(section['failed_folds'])}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- log
def log_nested(tracker, folds: list[Fold], outcomes: list[FoldOutcome], section: dict) -> None:
    """Under each outer fold's nested run: its chosen configuration (params ``chosen.*``), its search's best
    validation score, and its search trials and untuned training as nested runs; the section as
    ``nested.json``."""
    fold_runs = {name: run.info.run_id for name, run in tracker.children().items()}
    for fold, outcome, row in zip(folds, outcomes, section["folds"], strict=True):
        if fold.name not in fold_runs:  # failed: its search is logged all the same
            fold_runs[fold.name] = tracker.log_child(fold.name, [], params={"fold": fold.name,
                                                                            "failure": row["failure"]},
                                                     status="FAILED")
        run_id = fold_runs[fold.name]
        if "chosen" in row:
            tracker.set_tags({"chosen_trial": row["chosen_trial"]}, run_id=run_id)
            tracker.log_params({"chosen": row["chosen"]}, run_id)
            tracker.log_metrics({"inner_best_val_macro_f1": row["inner_best_val_macro_f1"]}, run_id)
        for result in outcome.inner:
            if result.metrics_dataframe is not None:
                tracker.log_child(f"search-{result.config['number']}", result.metrics_dataframe.to_dict("records"),
                                  params=point_of(result.config), parent=run_id)
        if outcome.untuned is not None:
            tracker.log_child("untuned", outcome.untuned.metrics_dataframe.to_dict("records"), parent=run_id)
    tracker.log_json(section, "nested.json")
    tracker.set_tags({"nested": "true", "failed_folds": " ".join(section["failed_folds"]) or "none",
                      "retried_folds": " ".join(section["retried_folds"]) or "none", "sampler": section["sampler"]})


# ------------------------------------------------------------------------------------------------- evaluate
def tested_tags(index, folds: list[Fold], done: list[int]) -> dict:
    """The parent run's tags that ``evaluation.report`` groups runs by, computed from the folds that were tested
    (``done``: their positions in ``folds``), and the folds that were not."""
    tested_folds = [folds[i] for i in done]
    tested = subjects_with_rows(index, np.concatenate([f.test for f in tested_folds]))
    return {"tested_subjects": " ".join(map(str, tested)), "n_subjects": len(tested),
            "folds_digest": folds_digest(tested_folds, index.manifest_hash),
            "untested_folds": " ".join(f.name for i, f in enumerate(folds) if i not in done) or "none"}


def evaluate_nested(spec: EvalSpec, nested: NestedSpec, publish: Callable[[dict], None] | None = None) -> dict:
    """Run the nested evaluation; returns the ``--output`` document (that of :func:`gbvnet.evaluation.engine.evaluate`
    for the scored folds, with a ``nested`` section), handed to ``publish`` before the final MLflow logging."""
    index = open_cache(spec.cache).index()
    planned = plan(spec, nested, index)
    folds, names = planned.folds, [f.name for f in planned.folds]
    tested = subjects_with_rows(index, np.concatenate([f.test for f in folds]))
    init_ray(log_to_driver=False)  # only now: every refusal above costs no cluster start

    key = nested.key(spec.invocation_key(index.manifest_hash))
    tracker = start_run(spec, index, folds, tested, key)
    tracker.log_params({"nested": dataclasses.asdict(nested)})
    tracker.set_tags({"configuration": f"nested search ({nested.trials} trials per fold, space {nested.space}, "
                                       f"{sampler(nested.trials, seed=0)[1]})"})
    try:
        grid = run_trials(spec, nested, planned.jobs, names, key)
        check_snapshot(spec.cache, index.manifest_hash)  # trials ended by a cache prepared again: stop here
        outcomes = collect(grid, folds)
        done = [i for i, o in enumerate(outcomes) if o.tuned is not None]
        if not done:
            raise RuntimeError(f"no outer fold finished: {[(names[i], o.failure) for i, o in enumerate(outcomes)]}")
        audit = planned.audit
        audit.update(check_normalizers([folds[i] for i in done],
                                       [outcomes[i].tuned.metrics.get("normalizer_digest") for i in done]))
        inner_done = [(planned.inner[k], r) for k, o in enumerate(outcomes) for r in o.scored]
        audit["inner_normalizer"] = check_normalizers([f for f, _ in inner_done],
                                                      [r.metrics.get("normalizer_digest") for _, r in inner_done]
                                                      )["normalizer"]
        done_folds, results = [folds[i] for i in done], [outcomes[i].tuned for i in done]
        audit.update(audit_folds(done_folds))  # every count, digest and tag from the folds that were tested
        tracker.set_tags(tested_tags(index, folds, done))
        baselines = Baselines(spec.cache, done_folds, index.labels(spec.train.target), spec.train.seed)
        scores = score(index, done_folds, results, baselines)
        section = summarise(nested, spec.model, folds, outcomes, scores, index)
        document = {**output_document(spec, tracker, scores, audit), "nested": section}
        if publish is not None:
            publish(document)
        log_results(tracker, spec, index, done_folds, results, scores, audit)
        if spec.log_models:  # each tested fold's model, from its training's checkpoint (removed below)
            for i in done:
                log_fold_model(tracker, folds[i].name, tuned_job(planned.jobs["outer"][i], outcomes[i].tuned.config),
                               outcomes[i].tuned.checkpoint)
        log_nested(tracker, folds, outcomes, section)
    except BaseException as exc:
        tracker.fail(exc)
        raise
    tracker.finish()
    if not spec.keep_checkpoints:
        remove_trial_checkpoints(spec, key, grid)
    return document
