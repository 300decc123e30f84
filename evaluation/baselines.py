"""Trivial and simple baselines, scored on exactly the same folds (same test rows) as the model.

* ``majority``: always predicts the majority class of the fold's training rows.
* ``stratified``: predicts 1 with the training rows' positive rate (seeded draws).
* ``bandpower_logreg``: log band power (theta 4-8, alpha 8-13, beta 13-30, gamma 30-45 Hz) plus mean and
  standard deviation of every physiological channel, standardised and fed to a logistic regression; scaler and
  model are fitted on the fold's training rows only.

A model that does not clearly beat these has learned nothing that generalises. :data:`BASELINES` is the one list:
a new baseline is one function here, decorated with :func:`register_baseline`; every evaluation then scores it
and the report shows it.

Example:
    >>> import numpy as np
    >>> from gbvnet.splits import Fold
    >>> y = np.array([1, 1, 1, 0, 1, 0])
    >>> fold = Fold("f", "window", train=[0, 1, 2, 3], val=[], test=[4, 5])
    >>> majority(fold, y).tolist()  # test rows 4 (label 1) and 5 (label 0), both predicted 1
    [[0, 1], [0, 1]]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from gbvnet.data.dataset import WindowDataset
from gbvnet.metrics import confusion
from gbvnet.splits import Fold

BANDS = ((4, 8), (8, 13), (13, 30), (30, 45))


@dataclass(frozen=True)
class Baseline:
    """One baseline: ``score(fold, y, features, seed)`` is its test confusion matrix on ``fold`` (``y``: the
    labels of every cache row; ``features``: :func:`bio_features` rows, or None when not computed)."""

    name: str
    score: Callable[[Fold, np.ndarray, np.ndarray | None, int], np.ndarray]
    needs_features: bool = False  # skipped when the caller computes no features


BASELINES: dict[str, Baseline] = {}
"""The baselines, by name: the one list (what every evaluation scores, the report's columns and tests)."""


def register_baseline(name: str, needs_features: bool = False):
    """Decorator: add ``score(fold, y, features, seed)`` to :data:`BASELINES` as ``name``."""
    def register(score):
        if name in BASELINES:
            raise ValueError(f"baseline {name!r} is registered already")
        BASELINES[name] = Baseline(name, score, needs_features)
        return score
    return register


@register_baseline("majority")
def majority(fold: Fold, y: np.ndarray, features: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    guess = int(np.mean(y[fold.train]) >= 0.5)
    return confusion(y[fold.test], np.full(len(fold.test), guess))


@register_baseline("stratified")
def stratified(fold: Fold, y: np.ndarray, features: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return confusion(y[fold.test], (rng.random(len(fold.test)) < np.mean(y[fold.train])).astype(np.int64))


def bandpower_features(bio: np.ndarray, rate: float) -> np.ndarray:
    """``(N, C, T)`` windows -> ``(N, C * 6)`` features: 4 log band powers, mean and std per channel."""
    bio = np.asarray(bio, dtype=np.float32)
    spectrum = np.abs(np.fft.rfft(bio - bio.mean(-1, keepdims=True), axis=-1)) ** 2
    freqs = np.fft.rfftfreq(bio.shape[-1], 1.0 / rate)
    powers = [np.log(spectrum[..., (freqs >= lo) & (freqs < hi)].mean(-1) + 1e-12) for lo, hi in BANDS
              if ((freqs >= lo) & (freqs < hi)).any()]
    return np.concatenate([*powers, bio.mean(-1), bio.std(-1)], axis=1)


def bio_features(cache, chunk: int = 2048) -> np.ndarray:
    """:func:`bandpower_features` of every window of ``cache`` (read in chunks)."""
    ds = WindowDataset(cache, modality="bio")
    rate = float(cache.manifest.rate)
    return np.concatenate([bandpower_features(ds.bio_array(np.arange(i, min(i + chunk, len(ds)))), rate)
                           for i in range(0, len(ds), chunk)])


@register_baseline("bandpower_logreg", needs_features=True)
def bandpower_logreg(fold: Fold, y: np.ndarray, features: np.ndarray, seed: int = 0) -> np.ndarray:
    train_y = y[fold.train]
    if len(np.unique(train_y)) < 2:  # one class only: logistic regression degenerates to the majority guess
        return majority(fold, y)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    model.fit(features[fold.train], train_y)
    return confusion(y[fold.test], model.predict(features[fold.test]))


def baseline_confusions(folds: list[Fold], y: np.ndarray, features: np.ndarray | None,
                        seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Per registered baseline, one test confusion matrix per fold (fold ``i`` seeded ``seed + i``).
    ``features=None`` skips the baselines that need features."""
    return {b.name: [b.score(f, y, features, seed + i) for i, f in enumerate(folds)]
            for b in BASELINES.values() if features is not None or not b.needs_features}
