"""Trivial and simple baselines, scored on exactly the same folds (same test rows) as the model.

* ``majority``: always predicts the majority class of the fold's training rows.
* ``stratified``: predicts 1 with the training rows' positive rate (seeded draws).
* ``bandpower_logreg``: log band power (theta 4-8, alpha 8-13, beta 13-30, gamma 30-45 Hz) plus mean and
  standard deviation of every physiological channel, standardised and fed to a logistic regression; scaler and
  model are fitted on the fold's training rows only.

A model that does not clearly beat these has learned nothing that generalises. :data:`BASELINES` is the one list:
a new baseline is one function here, decorated with :func:`register_baseline`; every evaluation then scores it
and the report shows it. An evaluation scores them beside its training (:class:`Baselines`: a Ray actor started
with the folds), not after it.

Example:
    >>> import numpy as np
    >>> from gbvnet.folds.protocols import Fold
    >>> y = np.array([1, 1, 1, 0, 1, 0])
    >>> fold = Fold("f", "window", train=[0, 1, 2, 3], val=[], test=[4, 5])
    >>> majority(fold, y).tolist()  # test rows 4 (label 1) and 5 (label 0), both predicted 1
    [[0, 1], [0, 1]]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import ray
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from gbvnet.data.cache import open_cache
from gbvnet.data.storage import absolute
from gbvnet.data.window_arrays import WindowArrays
from gbvnet.folds.protocols import Fold
from gbvnet.train.metrics import confusion

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


def bio_features(dataset: WindowArrays, rate: float, rows: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """:func:`bandpower_features` of the windows ``rows`` of ``dataset`` (read ``chunk`` at a time)."""
    return np.concatenate([bandpower_features(dataset.bio_array(rows[i:i + chunk]), rate)
                           for i in range(0, len(rows), chunk)])


@register_baseline("bandpower_logreg", needs_features=True)
def bandpower_logreg(fold: Fold, y: np.ndarray, features: np.ndarray, seed: int = 0) -> np.ndarray:
    train_y = y[fold.train]
    if len(np.unique(train_y)) < 2:  # one class only: logistic regression degenerates to the majority guess
        return majority(fold, y)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    model.fit(features[fold.train], train_y)
    return confusion(y[fold.test], model.predict(features[fold.test]))


def fold_confusions(i: int, fold: Fold, y: np.ndarray, features: np.ndarray | None,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """Per registered baseline, the test confusion matrix of fold number ``i`` (seeded ``seed + i``).
    ``features=None`` skips the baselines that need features.

    The baselines run with one BLAS thread, so their results do not depend on where they run: a logistic
    regression fitted with two OpenBLAS threads predicted differently from one fitted with one on 13 of the 32
    folds of a 32-subject corpus (sums in another order), and one thread is also faster on small fits."""
    with threadpool_limits(1):
        return {b.name: b.score(fold, y, features, seed + i)
                for b in BASELINES.values() if features is not None or not b.needs_features}


def baseline_confusions(folds: list[Fold], y: np.ndarray, features: np.ndarray | None,
                        seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Per baseline, one test confusion matrix per fold (:func:`fold_confusions`)."""
    per_fold = [fold_confusions(i, f, y, features, seed) for i, f in enumerate(folds)]
    return {name: [cms[name] for cms in per_fold] for name in per_fold[0]}


@ray.remote(num_cpus=0)
class FoldScorer:
    """A Ray actor scoring the baselines of evaluations' folds of one cache and target, one fold after another,
    beside the training (it reserves no CPU, so the folds keep theirs); each call names its fold's evaluation seed.
    The band-power features of a window are computed the first time a fold needs it, reading only those windows,
    and kept (``C * 6`` floats per window) for every later fold. Its process imports no torch
    (:class:`~gbvnet.data.window_arrays.WindowArrays`): it starts in about half the CPU time."""

    def __init__(self, cache: str, y: np.ndarray):
        opened = open_cache(cache)
        self.dataset, self.rate = WindowArrays(opened, modality="bio"), float(opened.manifest.rate)
        self.y = y
        self.features: np.ndarray | None = None  # one row per window; filled where ``known``
        self.known = np.zeros(len(self.dataset), dtype=bool)

    def score(self, i: int, fold: Fold, seed: int) -> dict[str, np.ndarray]:
        """:func:`fold_confusions` of fold number ``i`` of an evaluation seeded ``seed``."""
        rows = np.union1d(fold.train, fold.test)
        missing = rows[~self.known[rows]]
        if missing.size:
            values = bio_features(self.dataset, self.rate, missing)
            if self.features is None:
                self.features = np.zeros((len(self.dataset), values.shape[1]), dtype=values.dtype)
            self.features[missing], self.known[missing] = values, True
        return fold_confusions(i, fold, self.y, self.features, seed)


class Baselines:
    """The baselines of an evaluation's folds, started before the folds train and scored beside them (a
    :class:`FoldScorer` on the Ray cluster), so that the driver has nothing left to compute once the last fold
    ends and never reads the windows itself. ``y``: the labels of the evaluation's target, per cache row.

    Several evaluations of one cache and target (the protocol gap's arms, the seeds of ``--seeds``) share one
    ``scorer`` (a :class:`FoldScorer` handle, :func:`start_scorer`): each window's features are then computed
    once, and Ray ends the scorer once its last handle is dropped."""

    def __init__(self, cache: str, folds: list[Fold], y: np.ndarray, seed: int = 0, scorer=None):
        self.owner = scorer is None
        self.scorer = start_scorer(cache, y) if self.owner else scorer
        self.pending = [self.scorer.score.remote(i, f, seed) for i, f in enumerate(folds)]

    def confusions(self) -> dict[str, list[np.ndarray]]:
        """Per baseline, one test confusion matrix per fold (waits for the folds still being scored)."""
        per_fold = ray.get(self.pending)
        if self.owner:
            ray.kill(self.scorer)
        return {name: [cms[name] for cms in per_fold] for name in per_fold[0]}


def start_scorer(cache: str, y: np.ndarray):
    """A :class:`FoldScorer` of ``cache`` (a path or URI) with the labels ``y``, for one or several
    :class:`Baselines`."""
    return FoldScorer.remote(absolute(cache), y)  # absolute: the actor runs in another folder
