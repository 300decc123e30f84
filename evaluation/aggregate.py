"""Aggregate fold results: per-fold test metrics, per-subject metrics and mean +- std over folds.

The model and every baseline go through :func:`summarise` with their per-fold test confusion matrices. Per
subject, the test confusion matrices of every fold that tested that subject are summed (LOSO: one fold;
subject-dependent: k folds) before metrics are taken, so each window counts once.
"""

from __future__ import annotations

import numpy as np

from gbvnet.metrics import METRIC_NAMES, binary_metrics
from gbvnet.splits import Fold

SHOWN = ("accuracy", "precision", "recall", "f1", "balanced_accuracy")
LABELS = {"accuracy": "acc", "precision": "prec", "recall": "recall", "f1": "f1", "balanced_accuracy": "bal_acc"}


def summarise(folds: list[Fold], confusions: list, index) -> dict:
    """Per-fold, per-subject and aggregate (mean, std over folds) metrics from test confusion matrices."""
    per_fold, by_subject = [], {}
    for fold, cm in zip(folds, confusions, strict=True):
        cm = np.asarray(cm, dtype=np.int64)
        subjects = np.unique(index.subject[fold.test]).tolist()
        per_fold.append({"fold": fold.name, "test_subjects": subjects, "n_test": int(cm.sum()),
                         "confusion": cm.tolist(), **binary_metrics(cm)})
        if len(subjects) == 1:
            by_subject[subjects[0]] = by_subject.get(subjects[0], 0) + cm
    per_subject = [{"subject": s, "n_test": int(cm.sum()), "confusion": cm.tolist(), **binary_metrics(cm)}
                   for s, cm in sorted(by_subject.items())]
    agg: dict[str, float] = {}
    for name in METRIC_NAMES:
        values = np.array([f[name] for f in per_fold])
        agg[f"test_{name}_mean"] = float(values.mean())
        agg[f"test_{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    agg["n_folds"] = len(per_fold)
    total = np.sum([f["confusion"] for f in per_fold], axis=0)
    return {"folds": per_fold, "per_subject": per_subject, "aggregate": agg, "confusion": total.tolist()}


def per_subject_scores(summary: dict, metric: str = "accuracy") -> dict[int, float]:
    return {row["subject"]: row[metric] for row in summary["per_subject"]}


def _mean_sd(agg: dict, metric: str) -> str:
    return f"{agg[f'test_{metric}_mean']:.3f}+-{agg[f'test_{metric}_std']:.3f}"


def format_table(document: dict) -> str:
    """The final table printed by the evaluation CLIs: per subject, mean +- std, baselines, paired tests."""
    leaky = " [LEAKY: windows of a trial in train and test]" if document.get("leaky") else ""
    lines = [f"{document['protocol']} on {document['dataset']}: {document['modality']} "
             f"({document['fusion']}), target {document['target']}{leaky}",
             f"{'subject':>8} {'n':>6} " + " ".join(f"{LABELS[m]:>12}" for m in SHOWN)]
    for row in document["per_subject"]:
        lines.append(f"{row['subject']:>8} {row['n_test']:>6} " + " ".join(f"{row[m]:>12.3f}" for m in SHOWN))
    agg = document["aggregate"]
    lines.append(f"{'mean+-sd':>8} {agg['n_folds']:>5}f " + " ".join(f"{_mean_sd(agg, m):>12}" for m in SHOWN)
                 + "  (over folds)")
    baselines = document.get("baselines", {})
    if baselines:
        lines.append("baselines on the same folds (accuracy / balanced accuracy, mean+-sd over folds):")
        for name, summary in baselines.items():
            lines.append(f"  {name:<18} {_mean_sd(summary['aggregate'], 'accuracy')} / "
                         f"{_mean_sd(summary['aggregate'], 'balanced_accuracy')}")
    for name, cmp in document.get("comparisons", {}).items():
        verdict = "better" if cmp["p_value"] < 0.05 and cmp["mean_difference"] > 0 else "not shown better"
        lines.append(f"  model vs {name}: per-subject accuracy difference {cmp['mean_difference']:+.3f} "
                     f"(n={cmp['n']}), one-sided Wilcoxon p={cmp['p_value']:.3g}, effect size r={cmp['effect_size']:+.2f} "
                     f"-> {verdict} at p<0.05")
    if "audit" in document:
        lines.append("leakage audit: " + "; ".join(f"{k}={v}" for k, v in document["audit"].items()
                                                   if isinstance(v, str)))
    lines.append(f"MLflow run {document['mlflow_run_id']} in experiment {document['mlflow_experiment']!r}")
    return "\n".join(lines)
