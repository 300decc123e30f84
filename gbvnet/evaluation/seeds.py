"""``--seeds 0 1 2``: an evaluation (or the protocol gap) repeated once per seed, its scores averaged per subject.

One seed is one draw of everything random in an evaluation: the protocol's shuffles (subject-dependent trial
folds, LOSO's validation subjects), the initial weights, the batch order and the baselines' draws. ``--seeds``
repeats the whole protocol with each (:func:`seed_spec`); every fold of every seed is one pool of Ray Tune
trials (one experiment, fold names prefixed ``seed<S>-``), run and scored as :mod:`gbvnet.evaluation.engine` runs one
evaluation. Then, per subject, each seed's score (from that seed's pooled test windows of the subject) is
averaged over the seeds (:func:`average`) *before* any statistic: the mean ± sd over subjects, the baselines
(averaged the same way) and the paired tests see one score per subject, so the subjects stay the unit and three
seeds do not triple n. The spread over seeds is reported beside them: per subject the sd of its scores over the
seeds, overall the sd over seeds of each seed's mean over subjects (:func:`spread_lines`).

MLflow: a parent run (tag ``seeds``, its seed-averaged scores under an evaluation's metric names, so
``evaluation.report`` lists it, configuration "..., seeds 0 1 2") with each seed's evaluation as a child run
(tagged ``seeds``: "1 (one of 0 1 2)"), logged like any evaluation's run, its folds nested under it. ``--seeds``
with one value is ``--seed``.

Example:
    >>> def summary(*accs):  # one seed's: subject s scored accs[s - 1] on every metric
    ...     rows = [{"subject": s, "n_test": 10, "confusion": [[5, 0], [0, 5]], "one_class_folds": 0,
    ...              **dict.fromkeys(METRIC_NAMES, a)} for s, a in enumerate(accs, 1)]
    ...     return {"folds": [], "per_subject": rows, "aggregate": aggregate.over_subjects(rows),
    ...             "confusion": [[10, 0], [0, 10]]}
    >>> out = average({0: summary(0.6, 0.8), 1: summary(0.8, 0.8)})
    >>> [(r["subject"], round(r["accuracy"], 3), round(r["accuracy_seed_sd"], 3)) for r in out["per_subject"]]
    [(1, 0.7, 0.141), (2, 0.8, 0.0)]
    >>> agg = out["aggregate"]
    >>> round(agg["test_accuracy_mean"], 3), agg["n_subjects"], round(agg["test_accuracy_seed_sd"], 3)
    (0.75, 2, 0.071)
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np

from gbvnet.evaluation import aggregate
from gbvnet.evaluation.stats import versus_baselines
from gbvnet.train.metrics import METRIC_NAMES

SPREAD = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1"}


def seed_spec(spec, seed: int):
    """``spec`` (an :class:`gbvnet.evaluation.engine.EvalSpec`) run with ``seed`` alone: its training seed and its protocol's."""
    protocol_args = {**spec.protocol_args, "seed": seed} if "seed" in spec.protocol_args else spec.protocol_args
    return replace(spec, train=replace(spec.train, seed=seed), protocol_args=protocol_args, seeds=())


def key(invocation: str, seeds: tuple[int, ...]) -> str:
    """The key of one seed's evaluation within a ``--seeds`` run (``invocation``: its own key): another than a
    ``--seed`` run's of the same seed, or another seed set's, so ``--resume`` never takes one for the other."""
    return hashlib.sha256(f"{invocation} seeds {label(seeds)}".encode()).hexdigest()[:16] if seeds else invocation


def label(seeds) -> str:
    return " ".join(map(str, seeds))


def child_tags(seed: int, seeds: tuple[int, ...]) -> dict[str, str]:
    """The MLflow tags of one seed's evaluation under a ``--seeds`` run (``evaluation.report`` shows ``seeds``
    in its configuration column)."""
    return {"seeds": f"{seed} (one of {label(seeds)})"}


def _sd(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.std(ddof=1)) if values.size > 1 else float("nan")


def _mean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def average(summaries: dict[int, dict]) -> dict:
    """The seeds' summaries (:func:`gbvnet.evaluation.aggregate.summarise` of each; the same subjects) as one: per subject
    each metric averaged over the seeds where it is defined, with its sd over them (``<metric>_seed_sd``) and the
    seeds' values (``seed_scores``); the aggregate over subjects of the averaged scores, with the spread over
    seeds (``test_<metric>_seed_sd``: of the seeds' means over subjects; ``test_<metric>_subject_seed_sd``: per
    subject, averaged over subjects) and the seeds' means (``seed_means``); every seed's fold rows (with their
    seed); the confusion matrices summed over seeds (``n_test``: windows tested per seed)."""
    seeds = list(summaries)
    rows = {s: {r["subject"]: r for r in summaries[s]["per_subject"]} for s in seeds}
    subjects = sorted(rows[seeds[0]])
    differ = {s: sorted(r) for s, r in rows.items() if sorted(r) != subjects}
    if differ:
        raise ValueError(f"the seeds tested different subjects (seed {seeds[0]}: {subjects}; {differ}): per-subject "
                         "scores cannot be averaged over them")
    per_subject = []
    for subject in subjects:
        each = [rows[s][subject] for s in seeds]
        row = {"subject": subject, "n_test": int(round(np.mean([r["n_test"] for r in each]))),
               "confusion": np.sum([r["confusion"] for r in each], axis=0).tolist(),
               "one_class_folds": sum(r["one_class_folds"] for r in each)}
        for m in METRIC_NAMES:
            row[m] = _mean([r[m] for r in each])
            row[f"{m}_seed_sd"] = _sd([r[m] for r in each])
        row["seed_scores"] = {m: [r[m] for r in each] for m in METRIC_NAMES}
        per_subject.append(row)
    folds = [{**f, "seed": s} for s in seeds for f in summaries[s]["folds"]]
    agg = aggregate.over_subjects(per_subject)
    agg["n_folds"], agg["n_subjects"] = len(folds), len(per_subject)
    agg["n_one_class_folds"] = sum(f["one_class"] is not None for f in folds)
    means = {m: [summaries[s]["aggregate"][f"test_{m}_mean"] for s in seeds] for m in METRIC_NAMES}
    for m in METRIC_NAMES:
        agg[f"test_{m}_seed_sd"] = _sd(means[m])
        agg[f"test_{m}_subject_seed_sd"] = _mean([row[f"{m}_seed_sd"] for row in per_subject])
    return {"folds": folds, "per_subject": per_subject, "aggregate": agg,
            "confusion": np.sum([summaries[s]["confusion"] for s in seeds], axis=0).tolist(),
            "seeds": seeds, "seed_means": means}


def seed_scores(documents: dict[int, dict]) -> dict:
    """The scores of a ``--seeds`` evaluation from each seed's (:func:`gbvnet.evaluation.engine.score` of each): the model's
    and every baseline's per-subject scores averaged over the seeds (:func:`average`), and the model against the
    baselines on those averages (one score per subject: :func:`gbvnet.evaluation.stats.versus_baselines`)."""
    model = average(documents)
    first = next(iter(documents.values()))
    baselines = {name: average({s: d["baselines"][name] for s, d in documents.items()}) for name in first["baselines"]}
    comparisons = {}
    if len(model["per_subject"]) >= 2:
        comparisons = versus_baselines(aggregate.per_subject_scores(model),
                                       {name: aggregate.per_subject_scores(b) for name, b in baselines.items()})
    return {**model, "baselines": baselines, "comparisons": comparisons}


def merge_audits(audits: dict[int, dict]) -> dict:
    """The seeds' leakage audits as one: an entry every seed's audit has alike once, any other per seed."""
    names = list(dict.fromkeys(name for audit in audits.values() for name in audit))
    values = {name: {str(s): a.get(name) for s, a in audits.items()} for name in names}
    return {name: next(iter(v.values())) if len({repr(x) for x in v.values()}) == 1 else v
            for name, v in values.items()}


def spread_line(summary: dict, metric: str = "accuracy") -> str:
    """``metric``'s spread over seeds in one phrase: each seed's mean over subjects, their sd, and the sd over seeds
    of a subject's score (averaged over subjects)."""
    agg = summary["aggregate"]
    return (f"{' / '.join(f'{v:.3f}' for v in summary['seed_means'][metric])} by seed (sd "
            f"{agg[f'test_{metric}_seed_sd']:.3f}; per subject {agg[f'test_{metric}_subject_seed_sd']:.3f})")


def spread_lines(document: dict, metric: str = "accuracy") -> list[str]:
    """The seed spread section of a ``--seeds`` evaluation's output: per subject ``metric`` by seed, its mean and
    sd over the seeds; the seeds' means over subjects; the sd over seeds of the main metrics."""
    seeds = document["seeds"]
    lines = [f"seeds {label(seeds)}: each subject's scores were averaged over the {len(seeds)} seeds before the mean, "
             "sd and tests above (one score per subject); the spread over seeds:",
             f"{'subject':>8} " + " ".join(f"{f'seed {s}':>8}" for s in seeds) + f" {'mean':>8} {'sd':>8}"
             + f"  ({SPREAD[metric]}; sd over seeds)"]
    for row in document["per_subject"]:
        lines.append(f"{row['subject']:>8} " + " ".join(f"{v:>8.3f}" for v in row["seed_scores"][metric])
                     + f" {row[metric]:>8.3f} {row[f'{metric}_seed_sd']:>8.3f}")
    agg = document["aggregate"]
    lines.append(f"{'mean':>8} " + " ".join(f"{v:>8.3f}" for v in document["seed_means"][metric])
                 + f" {agg[f'test_{metric}_mean']:>8.3f} {agg[f'test_{metric}_seed_sd']:>8.3f}"
                 + "  (over subjects; sd over seeds of the seeds' means)")
    lines.append("spread over seeds, " + "; ".join(f"{name}: {spread_line(document, m)}" for m, name in SPREAD.items()))
    return lines


def format_seeds(document: dict) -> str:
    """What a ``--seeds`` evaluation prints: the evaluation's table on the seed-averaged scores
    (:func:`gbvnet.evaluation.aggregate.format_table`), the seed spread, the MLflow parent and its children."""
    table, _, where = aggregate.format_table(document).rpartition("\n")
    children = ", ".join(f"seed {s} {d['mlflow_run_id']}" for s, d in document["per_seed"].items())
    return "\n".join([table, *spread_lines(document), f"{where} (one child evaluation per seed: {children})"])
