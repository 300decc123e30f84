"""Binary classification metrics, computed one way everywhere (training, evaluation, baselines, reports).

The positive class is 1 = high rating. Everything derives from the 2x2 confusion matrix
``[[tn, fp], [fn, tp]]`` (rows: true class, columns: predicted class), which can be summed across workers or
folds before the metrics are taken.

Undefined is NaN, never 0 or 0.5 (scikit-learn's ``zero_division=np.nan``): precision without a positive
prediction, recall without a positive window, F1 ``2tp / (2tp + fp + fn)`` when neither exists. Macro-F1 and
balanced accuracy average what is defined: the F1 of each class that occurs in the labels or the predictions,
the recall of each class that occurs in the labels. So a perfect classifier scores 1 on a test set of one class
(counting the missing class's undefined F1 as 0 would give 0.5), and an all-negative test set has no positive-class F1.

Example:
    >>> m = binary_metrics(confusion([1, 0, 1, 1], [1, 0, 0, 1]))
    >>> round(m["accuracy"], 2), round(m["recall"], 3)
    (0.75, 0.667)
    >>> m = binary_metrics(confusion([1, 1, 1], [1, 1, 1]))  # one class, all right
    >>> m["balanced_accuracy"], m["macro_f1"], m["f1"]
    (1.0, 1.0, 1.0)
    >>> binary_metrics(confusion([0, 0], [0, 0]))["f1"]  # no positive anywhere: undefined
    nan
"""

from __future__ import annotations

import numpy as np

METRIC_NAMES = ("accuracy", "precision", "recall", "f1", "macro_f1", "balanced_accuracy")
SELECTION_METRIC = "val_macro_f1"
"""What a run maximises: early stopping and the choice of the tested epoch (:mod:`gbvnet.train.loop`), the search's
objective (``tune/search.py``). ``best_<SELECTION_METRIC>`` is the best value so far."""


def confusion(y_true, y_pred) -> np.ndarray:
    """2x2 integer confusion matrix ``[[tn, fp], [fn, tp]]``."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}")
    if y_true.size and (min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) > 1):
        raise ValueError("labels must be 0 or 1")
    return np.bincount(2 * y_true + y_pred, minlength=4).reshape(2, 2)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def _mean_defined(*values: float) -> float:
    defined = [v for v in values if not np.isnan(v)]
    return float(np.mean(defined)) if defined else float("nan")


def binary_metrics(cm: np.ndarray) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (positive class), macro-F1 and balanced accuracy from a confusion matrix.

    Undefined values are NaN (see the module docstring). Macro-F1 averages the F1 of both classes, so a constant
    predictor cannot score well on it.
    """
    (tn, fp), (fn, tp) = np.asarray(cm, dtype=np.float64)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    f1_negative = _ratio(2 * tn, 2 * tn + fn + fp)
    recall = _ratio(tp, tp + fn)
    return {
        "accuracy": _ratio(tp + tn, tn + fp + fn + tp),
        "precision": _ratio(tp, tp + fp),
        "recall": recall,
        "f1": f1,
        "macro_f1": _mean_defined(f1, f1_negative),
        "balanced_accuracy": _mean_defined(recall, _ratio(tn, tn + fp)),
    }


def prefixed(cm: np.ndarray, prefix: str) -> dict[str, float | list]:
    """``binary_metrics`` with keys ``{prefix}_{name}`` plus ``{prefix}_confusion`` (nested list)."""
    out: dict[str, float | list] = {f"{prefix}_{k}": v for k, v in binary_metrics(cm).items()}
    out[f"{prefix}_confusion"] = np.asarray(cm).tolist()
    return out
