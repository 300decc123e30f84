"""Aggregate fold results: per-fold test metrics, per-subject metrics and mean +- std over subjects.

The model and every baseline go through :func:`summarise` with their per-fold test confusion matrices. Per
subject, the test confusion matrices of every fold that tested that subject are summed (LOSO: one fold;
subject-dependent: k folds) before metrics are taken, so each window counts once and a fold whose test trials
hold one class does not get a metric of its own. The aggregate is the mean and standard deviation over these
per-subject scores (the spread is between subjects, not subject x fold). A metric undefined for a subject (NaN:
for example the F1 of the high class for a subject with no high window, see :mod:`gbvnet.train.metrics`) is left out
of the mean and sd, and ``test_<metric>_n`` counts the subjects that did contribute; the sd of fewer than two
values is NaN.

A fold whose model predicted one class for every test window (:func:`one_class`) learnt nothing that the test
can see, whatever its accuracy: each fold row says so (``one_class``: the class predicted, or None), each
subject row counts its such folds (``one_class_folds``), the aggregate counts them (``n_one_class_folds``, an
MLflow metric), and :func:`degenerate_line` is the warning every output starts with when most folds are such.
"""

from __future__ import annotations

import numpy as np

from gbvnet.folds.protocols import Fold
from gbvnet.train.metrics import METRIC_NAMES, binary_metrics

SHOWN = ("accuracy", "precision", "recall", "f1", "balanced_accuracy")
# column labels: precision, recall and F1 are the "high" (positive) class's; macro-F1 is named so where shown
LABELS = {"accuracy": "acc", "precision": "prec_high", "recall": "recall_high", "f1": "f1_high",
          "balanced_accuracy": "bal_acc"}


def one_class(cm) -> int | None:
    """The one class a test confusion matrix (rows true, columns predicted) shows predicted for every window, or
    None when both were predicted."""
    predicted = np.asarray(cm).sum(axis=0)
    return int(np.argmax(predicted)) if predicted.sum() and np.count_nonzero(predicted) == 1 else None


def degenerate_line(agg: dict, what: str = "the model") -> str | None:
    """The warning that opens an output when most of its folds predicted one class for every test window."""
    n, total = agg.get("n_one_class_folds", 0), agg["n_folds"]
    if not total or 2 * n <= total:
        return None
    return (f"WARNING: {what} predicted a single class for every test window in {n} of {total} folds: it learnt "
            "nothing these tests can see; read the scores below as chance, not as a model")


def summarise(folds: list[Fold], confusions: list, index) -> dict:
    """Per-fold and per-subject metrics, and their aggregate over subjects (NaN-aware, with counts)."""
    per_fold, by_subject = [], {}
    for fold, cm in zip(folds, confusions, strict=True):
        cm = np.asarray(cm, dtype=np.int64)
        subjects = np.unique(index.subject[fold.test]).tolist()
        if len(subjects) != 1:
            raise ValueError(f"fold {fold.name} tests subjects {subjects}: per-subject metrics need exactly one "
                             "test subject per fold")
        per_fold.append({"fold": fold.name, "test_subjects": subjects, "n_test": int(cm.sum()),
                         "confusion": cm.tolist(), "one_class": one_class(cm), **binary_metrics(cm)})
        by_subject[subjects[0]] = by_subject.get(subjects[0], 0) + cm
    degenerate = {s: sum(f["one_class"] is not None for f in per_fold if f["test_subjects"] == [s]) for s in by_subject}
    per_subject = [{"subject": s, "n_test": int(cm.sum()), "confusion": cm.tolist(),
                    "one_class_folds": degenerate[s], **binary_metrics(cm)} for s, cm in sorted(by_subject.items())]
    agg = over_subjects(per_subject)
    agg["n_folds"], agg["n_subjects"] = len(per_fold), len(per_subject)
    agg["n_one_class_folds"] = sum(f["one_class"] is not None for f in per_fold)
    total = np.sum([f["confusion"] for f in per_fold], axis=0)
    return {"folds": per_fold, "per_subject": per_subject, "aggregate": agg, "confusion": total.tolist()}


def over_subjects(per_subject: list[dict]) -> dict[str, float]:
    """Per metric, the mean, sd and count over the subject rows ``per_subject`` of the subjects where it is
    defined (``test_<metric>_mean`` / ``_std`` / ``_n``)."""
    agg: dict[str, float] = {}
    for name in METRIC_NAMES:
        values = np.array([row[name] for row in per_subject], dtype=np.float64)
        values = values[~np.isnan(values)]
        agg[f"test_{name}_mean"] = float(values.mean()) if values.size else float("nan")
        agg[f"test_{name}_std"] = float(values.std(ddof=1)) if values.size > 1 else float("nan")
        agg[f"test_{name}_n"] = int(values.size)
    return agg


def per_subject_scores(summary: dict, metric: str = "accuracy") -> dict[int, float]:
    return {row["subject"]: row[metric] for row in summary["per_subject"]}


def _mean_sd(agg: dict, metric: str) -> str:
    return f"{agg[f'test_{metric}_mean']:.3f}+-{agg[f'test_{metric}_std']:.3f}"


def format_table(document: dict) -> str:
    """The final table printed by the evaluation CLIs: per subject, mean +- std, baselines, paired tests."""
    leaky = " [LEAKY: windows of a trial in train and test]" if document.get("leaky") else ""
    agg = document["aggregate"]
    lines = [line for line in (degenerate_line(agg),) if line]
    lines += [f"{document['protocol']} on {document['dataset']}: {document['modality']} "
              f"({document['fusion']}), target {document['target']}{leaky}",
              f"{'subject':>8} {'n':>6} " + " ".join(f"{LABELS[m]:>12}" for m in SHOWN)]
    for row in document["per_subject"]:
        flag = f"  [one class predicted in {row['one_class_folds']} fold(s)]" if row["one_class_folds"] else ""
        lines.append(f"{row['subject']:>8} {row['n_test']:>6} " + " ".join(f"{row[m]:>12.3f}" for m in SHOWN)
                     + flag)
    lines.append(f"{'mean+-sd':>8} {'':>6} " + " ".join(f"{_mean_sd(agg, m):>12}" for m in SHOWN)
                 + f"  (over subjects, {agg['n_folds']} folds)")
    lines.append(f"{'subjects':>8} {'':>6} " + " ".join(f"{agg[f'test_{m}_n']:>12}" for m in SHOWN)
                 + "  (with the metric defined; nan = undefined, left out)")
    lines.append(f"one-class folds: {agg['n_one_class_folds']} of {agg['n_folds']} (the model predicted a single "
                 "class for every test window)")
    baselines = document.get("baselines", {})
    if baselines:
        lines.append("baselines on the same folds (accuracy / balanced accuracy, mean+-sd over subjects):")
        for name, summary in baselines.items():
            lines.append(f"  {name:<18} {_mean_sd(summary['aggregate'], 'accuracy')} / "
                         f"{_mean_sd(summary['aggregate'], 'balanced_accuracy')}")
    comparisons = document.get("comparisons", {})
    if comparisons:
        lines.append(f"paired tests over subjects ({next(iter(comparisons.values()))['family']}; raw p beside):")
    for name, cmp in comparisons.items():
        verdict = "better" if cmp["better"] else "not shown better"
        lines.append(f"  model vs {name}: per-subject accuracy difference {cmp['mean_difference']:+.3f} "
                     f"(n={cmp['n']} non-zero pairs of {cmp['n_subjects']} subjects), one-sided Wilcoxon "
                     f"p={cmp['p_value']:.3g}, Holm-corrected p={cmp['p_holm']:.3g}, effect size "
                     f"r={cmp['effect_size']:+.2f} -> {verdict} at p<0.05"
                     + (f" [WARNING: {cmp['warning']}]" if cmp.get("warning") else ""))
    if "audit" in document:
        lines.append("leakage audit: " + "; ".join(f"{k}={v}" for k, v in document["audit"].items()
                                                   if isinstance(v, str)))
    lines.append(f"MLflow run {document['mlflow_run_id']} in experiment {document['mlflow_experiment']!r}")
    return "\n".join(lines)
