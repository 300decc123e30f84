"""Aggregate fold results: per-fold test metrics, per-subject metrics and mean +- std over folds.

Per subject, the test confusion matrices of every fold that tested that subject are summed (LOSO: one fold;
subject-dependent: k folds) before metrics are taken, so each window counts once.
"""

from __future__ import annotations

import numpy as np

from gbvnet.metrics import METRIC_NAMES, binary_metrics
from gbvnet.splits import Fold


def summarise(folds: list[Fold], results: list[dict], index) -> dict:
    """``results[i]`` are fold i's final metrics (with ``test_*`` keys and ``test_confusion``)."""
    per_fold, by_subject = [], {}
    for fold, metrics in zip(folds, results, strict=True):
        if "test_confusion" not in metrics:
            raise ValueError(f"fold {fold.name} reported no test metrics")
        cm = np.asarray(metrics["test_confusion"], dtype=np.int64)
        subjects = np.unique(index.subject[fold.test]).tolist()
        per_fold.append({"fold": fold.name, "test_subjects": subjects, "n_test": int(cm.sum()),
                         "best_epoch": int(metrics.get("best_epoch", 0)), "confusion": cm.tolist(),
                         **binary_metrics(cm)})
        if len(subjects) == 1:
            by_subject[subjects[0]] = by_subject.get(subjects[0], 0) + cm
    per_subject = [{"subject": s, "n_test": int(cm.sum()), "confusion": cm.tolist(), **binary_metrics(cm)}
                   for s, cm in sorted(by_subject.items())]
    agg = {}
    for name in METRIC_NAMES:
        values = np.array([f[name] for f in per_fold])
        agg[f"test_{name}_mean"] = float(values.mean())
        agg[f"test_{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    agg["n_folds"] = len(per_fold)
    total = np.sum([f["confusion"] for f in per_fold], axis=0)
    return {"folds": per_fold, "per_subject": per_subject, "aggregate": agg, "confusion": total.tolist()}


def format_table(document: dict) -> str:
    """The final table printed by the evaluation CLIs: one row per subject, then mean +- std over folds."""
    leaky = " [LEAKY: windows of a trial in train and test]" if document.get("leaky") else ""
    lines = [f"{document['protocol']} on {document['dataset']}: {document['modality']} "
             f"({document['fusion']}), target {document['target']}{leaky}",
             f"{'subject':>8} {'n':>6} {'acc':>7} {'prec':>7} {'recall':>7} {'f1':>7} {'bal_acc':>7}"]
    for row in document["per_subject"]:
        lines.append(f"{row['subject']:>8} {row['n_test']:>6} {row['accuracy']:>7.3f} {row['precision']:>7.3f} "
                     f"{row['recall']:>7.3f} {row['f1']:>7.3f} {row['balanced_accuracy']:>7.3f}")
    agg = document["aggregate"]
    cells = " ".join(f"{agg[f'test_{m}_mean']:.3f}+-{agg[f'test_{m}_std']:.3f}"
                     for m in ("accuracy", "precision", "recall", "f1", "balanced_accuracy"))
    lines.append(f"{'mean+-sd':>8} {agg['n_folds']:>4}f  {cells}   (over folds)")
    lines.append(f"MLflow run {document['mlflow_run_id']} in experiment {document['mlflow_experiment']!r}")
    return "\n".join(lines)
