"""Evaluation protocols: split generators over the window cache's rows, with validation from training data only.

Each protocol follows scikit-learn's cross-validator interface (``split(X, y)`` yields ``(train, test)`` row
index arrays; ``get_n_splits``), where ``X`` is an ``(n_rows, 2)`` array of ``(subject, trial)`` per window and
``y`` the binary labels. ``folds(X, y)`` gives the richer :class:`gbvnet.splits.Fold` objects (train / val / test)
that the evaluation runs; every fold passes :func:`gbvnet.splits.check_fold` before it is returned.

* :class:`LeaveOneSubjectOut`: each subject is the test set once. Validation (early stopping, model selection)
  is, by default, a seeded share of the *other subjects*, held out from training, so it rewards what LOSO
  measures: generalisation to people the model has not seen (``validation="subjects"``). ``validation="trials"``
  uses a seeded, label-stratified share of the training subjects' *trials* instead (no window of a validation
  trial is trained on), which rewards within-subject fit. The test subject is unseen either way.
* :class:`SubjectDependentKFold`: per subject, k folds over its *trials* (stratified by label); validation is a
  share of that subject's remaining trials. Windows of a trial never straddle train, val and test.
* :class:`SegmentRandomKFold`: the common *leaky* protocol: per subject, k folds over shuffled *windows*, so
  windows of one trial fall in both train and test. Refused unless ``allow_leaky=True``; labelled leaky.

Example:
    >>> import numpy as np
    >>> X = np.array([(s, t) for s in (1, 2, 3) for t in (1, 2, 3, 4) for _ in range(5)])  # 5 windows/trial
    >>> y = (X[:, 1] % 2).astype(int)
    >>> cv = LeaveOneSubjectOut(seed=0)
    >>> [np.unique(X[test, 0]).tolist() for _, test in cv.split(X, y)]
    [[1], [2], [3]]
    >>> fold = cv.folds(X, y)[0]
    >>> np.unique(X[np.concatenate([fold.train, fold.val]), 0]).tolist()  # validation: training subjects
    [2, 3]
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from sklearn.model_selection import BaseCrossValidator

from gbvnet.splits import Fold, check_fold


def _as_index(X, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"X must be an (n_rows, 2) array of (subject, trial); got shape {X.shape}")
    y = np.zeros(len(X), dtype=np.int64) if y is None else np.asarray(y, dtype=np.int64)
    if len(y) != len(X):
        raise ValueError(f"y has {len(y)} labels for {len(X)} rows")
    return X[:, 0].astype(np.int64), X[:, 1].astype(np.int64), y


def _trial_table(subjects: np.ndarray, trials: np.ndarray, y: np.ndarray, rows: np.ndarray):
    """Distinct (subject, trial) among ``rows`` with each trial's majority label, sorted."""
    keys = np.stack([subjects[rows], trials[rows]], 1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    label = np.bincount(inverse.ravel(), weights=y[rows], minlength=len(uniq)) / np.bincount(inverse.ravel())
    return uniq, (label >= 0.5).astype(np.int64)


def _stratified_assign(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Assign items to ``k`` groups, shuffled, balancing labels across groups (round-robin per label)."""
    groups = np.empty(len(labels), dtype=np.int64)
    offset = int(rng.integers(k))
    for value in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == value))
        groups[idx] = (np.arange(len(idx)) + offset) % k
        offset = (offset + len(idx)) % k
    return groups


def _rows_of_trials(subjects, trials, rows, chosen: np.ndarray) -> np.ndarray:
    """The rows among ``rows`` whose (subject, trial) is in ``chosen`` (an (m, 2) array)."""
    wanted = set(map(tuple, chosen.tolist()))
    mask = np.fromiter(((s, t) in wanted for s, t in zip(subjects[rows], trials[rows], strict=True)),
                       dtype=bool, count=len(rows))
    return rows[mask]


class _Protocol(BaseCrossValidator):
    allow_leaky = False

    def folds(self, X, y=None) -> list[Fold]:
        subjects, trials, labels = _as_index(X, y)
        out = list(self._folds(subjects, trials, labels))
        for fold in out:
            check_fold(fold, subjects, trials, allow_leaky=self.allow_leaky)
        return out

    def split(self, X, y=None, groups=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for fold in self.folds(X, y):
            yield np.sort(np.concatenate([fold.train, fold.val])), fold.test

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        if X is None:
            raise ValueError("get_n_splits needs X")
        return len(self.folds(X, y))

    def _folds(self, subjects, trials, labels) -> Iterator[Fold]:
        raise NotImplementedError


class LeaveOneSubjectOut(_Protocol):
    """Each subject is the test set once; validation: ``val_fraction`` of the other subjects (at least one, at
    most all but one), or with ``validation="trials"`` of each training subject's trials."""

    VALIDATION = ("subjects", "trials")

    def __init__(self, val_fraction: float = 0.2, seed: int = 0, validation: str = "subjects"):
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if validation not in self.VALIDATION:
            raise ValueError(f"validation must be one of {self.VALIDATION}, got {validation!r}")
        self.val_fraction, self.seed, self.validation = val_fraction, seed, validation

    def _folds(self, subjects, trials, labels):
        all_rows = np.arange(len(subjects))
        uniq = np.unique(subjects)
        if len(uniq) < 2:
            raise ValueError(f"leave-one-subject-out needs at least 2 subjects, got {len(uniq)}")
        if self.validation == "subjects" and len(uniq) < 3:
            raise ValueError(f"leave-one-subject-out with validation on held-out subjects needs at least 3 subjects "
                             f"(test, validation, training), got {len(uniq)}: use validation on trials "
                             "(--validation trials)")
        for s in uniq:
            test = all_rows[subjects == s]
            rest = all_rows[subjects != s]
            if self.validation == "subjects":
                others = uniq[uniq != s]
                n_val = min(len(others) - 1, max(1, round(self.val_fraction * len(others))))
                held_out = np.random.default_rng([self.seed, int(s)]).choice(others, n_val, replace=False)
                val = rest[np.isin(subjects[rest], held_out)]
                yield Fold(f"subject-{s}", "subject", np.setdiff1d(rest, val), val, test)
                continue
            table, trial_labels = _trial_table(subjects, trials, labels, rest)
            rng = np.random.default_rng([self.seed, int(s)])
            n_groups = max(2, round(1 / self.val_fraction))
            val_trials = table[_stratified_assign(trial_labels, n_groups, rng) == 0]
            val = _rows_of_trials(subjects, trials, rest, val_trials)
            train = np.setdiff1d(rest, val)
            yield Fold(f"subject-{s}", "subject", train, val, test, val_level="trial")


class SubjectDependentKFold(_Protocol):
    """Per subject, ``k`` folds over its trials; validation: ``val_fraction`` of the remaining trials."""

    def __init__(self, k: int = 5, val_fraction: float = 0.2, seed: int = 0):
        if k < 2:
            raise ValueError(f"k must be >= 2, got {k}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.k, self.val_fraction, self.seed = k, val_fraction, seed

    def _folds(self, subjects, trials, labels):
        all_rows = np.arange(len(subjects))
        for s in np.unique(subjects):
            rows = all_rows[subjects == s]
            table, trial_labels = _trial_table(subjects, trials, labels, rows)
            if len(table) < self.k + 1:
                raise ValueError(f"subject {s} has {len(table)} trials; {self.k}-fold subject-dependent "
                                 f"evaluation needs at least {self.k + 1} (k folds plus validation)")
            rng = np.random.default_rng([self.seed, int(s)])
            groups = _stratified_assign(trial_labels, self.k, rng)
            for i in range(self.k):
                test = _rows_of_trials(subjects, trials, rows, table[groups == i])
                rest_table, rest_labels = table[groups != i], trial_labels[groups != i]
                n_val = max(1, round(self.val_fraction * len(rest_table)))
                val_groups = _stratified_assign(rest_labels, max(2, len(rest_table) // n_val), rng)
                val = _rows_of_trials(subjects, trials, rows, rest_table[val_groups == 0])
                train = np.setdiff1d(np.setdiff1d(rows, test), val)
                yield Fold(f"subject-{s}-fold-{i}", "trial", train, val, test)


class SegmentRandomKFold(_Protocol):
    """LEAKY: per subject, ``k`` folds over shuffled windows (windows of one trial in train and test)."""

    def __init__(self, k: int = 5, val_fraction: float = 0.2, seed: int = 0, allow_leaky: bool = False):
        if not allow_leaky:
            raise ValueError("segment-random splits put windows of the same trial in train and test (leaky); "
                             "refused unless allow_leaky=True (--allow-leaky-split)")
        self.k, self.val_fraction, self.seed, self.allow_leaky = k, val_fraction, seed, allow_leaky

    def _folds(self, subjects, trials, labels):
        all_rows = np.arange(len(subjects))
        for s in np.unique(subjects):
            rows = all_rows[subjects == s]
            rng = np.random.default_rng([self.seed, int(s)])
            groups = _stratified_assign(labels[rows], self.k, rng)
            for i in range(self.k):
                test, rest = rows[groups == i], rows[groups != i]
                val = rest[_stratified_assign(labels[rest], max(2, round(1 / self.val_fraction)), rng) == 0]
                yield Fold(f"subject-{s}-fold-{i}", "window", np.setdiff1d(rest, val), val, test)


PROTOCOLS = {"loso": LeaveOneSubjectOut, "subject-dependent": SubjectDependentKFold,
             "segment-random": SegmentRandomKFold}
