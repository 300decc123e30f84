"""Folds: every train / validation / test split of the window cache's rows is built here, and checked here.

A :class:`Fold` names rows of the cache's index. Its ``level`` says what must never be shared between its parts:

* ``subject``: no subject in two parts (leave-one-subject-out, cross-subject training);
* ``trial``: no (subject, trial) in two parts, so windows of one trial never straddle train and test
  (subject-dependent protocols);
* ``window``: only rows are disjoint. This is the common *leaky* protocol (windows of one trial in both train and
  test); :func:`check_fold` refuses it unless ``allow_leaky=True``.

The module has four sections:

* **Folds and the leakage guard**: :class:`Fold`, :func:`check_fold`, the row digests.
* **Rows a modality uses**: :func:`usable_rows` is the one rule, shared by the search and the evaluations, for
  which rows of a cache a modality can use: a face model (``face`` / ``facebio``) only the windows that have face
  frames (in DEAP only subjects 1-22 have videos), a bio model every window, or, with ``rows="face"``, the same
  face rows (so a bio ablation is scored on exactly the windows of the face runs). :func:`subjects_with_rows`
  names the subjects that keep rows under it.
* **Folds from subject lists**: :func:`subject_fold` (``gbvnet.train --train-subjects/--val-subjects``),
  :func:`search_fold` (the search subjects of ``tune/search.py``) and :func:`inner_fold` (the search fold of an
  outer fold of the nested evaluation, from that fold's training subjects only).
* **Evaluation protocols**: split generators with validation from training data only; :data:`PROTOCOLS` is the
  one list (:func:`register_protocol`), each declaring its arguments and whether it is leaky (see their base
  class, :class:`EvaluationProtocol`).

Each fold is checked once, by the builder that makes it: :func:`check_fold` returns the fold with the guard's
verdict recorded (:attr:`Fold.check`: what was checked and a digest of the rows and levels it was checked on).
Training does not check again, but :func:`require_checked` (called by ``gbvnet.train.loop.make_job``) refuses a fold
without a verdict or whose rows changed since, so no fold trains unchecked; the evaluation's leakage audit
records the verdicts (``gbvnet.evaluation.audit.audit_folds``).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from gbvnet.config import ConfigError

LEVELS = ("subject", "trial", "window")
ROW_RULES = ("modality", "face")  # rows of --modality's own rule, or the face rows whatever the modality
PARTS = ("train", "val", "test")


# -------------------------------------------------------------------------------------- folds and the guard
class LeakageError(ValueError):
    """A fold shares subjects, trials or windows between its parts, or never passed the check."""


@dataclass
class Fold:
    """One fold: row indices into the cache index for each part, and what it is."""

    name: str
    level: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    val_level: str | None = None  # what train and val must not share; default: ``level``
    check: dict | None = None  # the guard's verdict (set by check_fold); None: never checked

    def __post_init__(self) -> None:
        self.val_level = self.val_level or self.level
        for level in (self.level, self.val_level):
            if level not in LEVELS:
                raise ValueError(f"fold level must be one of {LEVELS}, got {level!r}")
        for part in PARTS:
            setattr(self, part, np.asarray(getattr(self, part), dtype=np.int64))

    @property
    def leaky(self) -> bool:
        return "window" in (self.level, self.val_level)

    @property
    def digest(self) -> str:
        """A short digest of the levels and of which rows are in which part: what a verdict was given on."""
        parts = [self.level, self.val_level] + [rows_digest(getattr(self, part)) for part in PARTS]
        return hashlib.sha256(" ".join(parts).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {"name": self.name, "level": self.level, "val_level": self.val_level,
                **{p: getattr(self, p).tolist() for p in PARTS}, "check": self.check}

    @classmethod
    def from_dict(cls, data: dict) -> Fold:
        return cls(**data)


def rows_digest(rows: np.ndarray) -> str:
    """A short digest of a set of row indices (order-independent), to compare what code actually used."""
    data = np.unique(np.asarray(rows, dtype=np.int64)).tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def folds_digest(folds: list[Fold], manifest_hash: str) -> str:
    """A short digest of a cache (its manifest hash) and the train / val / test rows of every fold: two runs with
    the same digest were trained, validated and tested on exactly the same windows."""
    parts = [manifest_hash] + [rows_digest(getattr(f, part)) for f in folds for part in PARTS]
    return hashlib.sha256(" ".join(parts).encode()).hexdigest()[:16]


def units(subjects: np.ndarray, trials: np.ndarray, rows: np.ndarray, level: str) -> set:
    """The units of ``level`` (subject ids, (subject, trial) pairs, or row ids) that ``rows`` touch."""
    if level == "subject":
        return set(np.unique(subjects[rows]).tolist())
    if level == "trial":
        return set(zip(subjects[rows].tolist(), trials[rows].tolist(), strict=True))
    return set(rows.tolist())


def _refuse_leaky(fold: Fold, allow_leaky: bool) -> None:
    if fold.leaky and not allow_leaky:
        raise LeakageError(f"fold {fold.name}: window-level (leaky) split refused; pass allow_leaky=True "
                           "(--allow-leaky-split) to run it, labelled as leaky")


def check_fold(fold: Fold, subjects: np.ndarray, trials: np.ndarray, allow_leaky: bool = False) -> Fold:
    """Raise :class:`LeakageError` if two parts of ``fold`` share a unit of its level, or a part is bad; else
    return the fold with the verdict recorded (:attr:`Fold.check`).

    Test is checked against train and val at ``fold.level``; train against val at ``fold.val_level``.

    ``subjects`` and ``trials`` are the cache index columns (one entry per row).
    """
    _refuse_leaky(fold, allow_leaky)
    n = len(subjects)
    for part in PARTS:
        rows = getattr(fold, part)
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise LeakageError(f"fold {fold.name}: {part} rows out of range for a cache of {n} rows")
        if len(np.unique(rows)) != rows.size:
            raise LeakageError(f"fold {fold.name}: {part} lists a row twice")
    if fold.train.size == 0:
        raise LeakageError(f"fold {fold.name}: empty training set")
    pairs = (("train", "test", fold.level), ("val", "test", fold.level), ("train", "val", fold.val_level))
    for a, b, level in pairs:
        shared = (units(subjects, trials, getattr(fold, a), level)
                  & units(subjects, trials, getattr(fold, b), level))
        if shared:
            raise LeakageError(f"fold {fold.name}: {len(shared)} {level}(s) in both {a} and {b}, "
                               f"e.g. {sorted(shared)[:3]}")
    kept = (f"no {fold.level} in two of train, val and test" if fold.val_level == fold.level else
            f"no {fold.level} in test and train or val, no {fold.val_level} in both train and val")
    verdict = f"{'LEAKY (allowed by the user)' if fold.leaky else 'passed'}: {kept}"
    return replace(fold, check={"verdict": verdict, "rows": fold.digest})


def require_checked(fold: Fold, allow_leaky: bool = False) -> None:
    """Refuse (:class:`LeakageError`) a fold that has not passed :func:`check_fold` as it is now: no verdict, rows
    or levels changed since, or leaky without ``allow_leaky``. Compares digests; checks nothing again."""
    if fold.check is None:
        raise LeakageError(f"fold {fold.name}: never checked by the leakage guard (build it with gbvnet.folds.protocols)")
    if fold.check["rows"] != fold.digest:
        raise LeakageError(f"fold {fold.name}: rows or levels changed after the leakage guard checked it")
    _refuse_leaky(fold, allow_leaky)


# ------------------------------------------------------------------------------------- rows a modality uses
def usable_rows(index, modality: str, rows: str = "modality") -> np.ndarray:
    """Row numbers of the cache ``index`` that a ``modality`` model uses (see the module docstring)."""
    if rows not in ROW_RULES:
        raise ValueError(f"rows must be one of {ROW_RULES}, got {rows!r}")
    all_rows = np.arange(len(index.subject))
    if modality == "bio" and rows == "modality":
        return all_rows
    return all_rows[index.has_face_rows]


def subjects_with_rows(index, rows: np.ndarray) -> list[int]:
    """The sorted subject ids that have at least one of ``rows``."""
    return sorted(np.unique(index.subject[rows]).tolist())


# -------------------------------------------------------------------------------------- folds from subjects
def subject_fold(index, train: list[int], val: list[int], test: list[int]) -> Fold:
    """A subject-level fold from subject lists (``gbvnet.train``); overlapping or unknown subjects are refused."""
    parts = {"train": set(train), "val": set(val), "test": set(test)}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        if parts[a] & parts[b]:
            raise ConfigError(f"subject(s) {sorted(parts[a] & parts[b])} in both {a} and {b} subjects")
    known = set(np.unique(index.subject).tolist())
    for part, subjects in parts.items():
        if subjects - known:
            raise ConfigError(f"{part} subject(s) {sorted(subjects - known)} not in the cache (has {sorted(known)})")
    rows = np.arange(len(index.subject))
    pick = {p: rows[np.isin(index.subject, sorted(s))] for p, s in parts.items()}
    return check_fold(Fold("subjects", "subject", pick["train"], pick["val"], pick["test"]), index.subject,
                      index.trial)


def search_fold(index, search_subjects: list[int], seed: int, modality: str = "bio",
                rows: str = "modality") -> Fold:
    """Train / validation rows from the search subjects only (validation: a seeded 25 % of them), restricted to
    the rows ``modality`` can use (:func:`usable_rows` with ``rows``); search subjects without any are left out
    (with a warning)."""
    known = set(np.unique(index.subject).tolist())
    if set(search_subjects) - known:
        raise ValueError(f"search subjects {sorted(set(search_subjects) - known)} are not in the cache")
    rows = usable_rows(index, modality, rows)
    have = subjects_with_rows(index, rows)
    without = sorted(set(search_subjects) - set(have))
    kept = sorted(set(search_subjects) & set(have))
    if len(kept) < 2:
        reason = (f": search subjects {without} have no face frames (modality {modality!r}); subjects with faces: "
                  f"{have} (choose --search-subjects among them, or --modality bio)" if without else "")
        raise ValueError(f"the search needs at least 2 subjects (some train, some validate), got {kept}{reason}")
    if without:
        warnings.warn(f"search subjects {without} have no face frames: modality {modality!r} searches on {kept}",
                      stacklevel=2)
    train, val = _hold_out_subjects(kept, seed)
    fold = Fold("search", "subject", rows[np.isin(index.subject[rows], train)],
                rows[np.isin(index.subject[rows], val)])
    return check_fold(fold, index.subject, index.trial)


def _hold_out_subjects(subjects: list[int], seed) -> tuple[list[int], list[int]]:
    """The searches' rule: a seeded 25 % (at least one) of ``subjects`` validate, the rest train."""
    n_val = max(1, math.ceil(0.25 * len(subjects)))
    val = sorted(np.random.default_rng(seed).choice(subjects, n_val, replace=False).tolist())
    return sorted(set(subjects) - set(val)), val


def inner_fold(index, outer: Fold, seed: int) -> Fold:
    """The search fold of the outer fold ``outer`` (nested evaluation): built from ``outer``'s training and
    validation rows only, its subjects split by the rule of :func:`search_fold` (seeded per fold), checked by the
    guard, and refused (:class:`LeakageError`) if it holds any of ``outer``'s test subjects. Fewer than 2 subjects
    to split is a ``ValueError`` naming the fold and its subjects."""
    rows = np.sort(np.concatenate([outer.train, outer.val]))
    subjects, tested = subjects_with_rows(index, rows), subjects_with_rows(index, outer.test)
    if len(subjects) < 2:
        raise ValueError(f"fold {outer.name} (test subjects {tested}): its search needs at least 2 training subjects "
                         f"(some train, some validate), got {subjects}")
    train, val = _hold_out_subjects(subjects, [seed, *tested])
    fold = check_fold(Fold(f"{outer.name}/search", "subject", rows[np.isin(index.subject[rows], train)],
                           rows[np.isin(index.subject[rows], val)]), index.subject, index.trial)
    if set(subjects) & set(tested):
        raise LeakageError(f"fold {fold.name}: outer test subject(s) {sorted(set(subjects) & set(tested))} in the "
                           "search fold")
    fold.check["verdict"] += f"; none of the outer test subjects {tested}"
    return fold


MIN_TRAIN_SUBJECTS = 3  # below this, a cross-subject model learns from too few people (warned about)


def warn_few_training_subjects(index, folds: list[Fold]) -> None:
    """Warn when a subject-level fold trains on fewer than :data:`MIN_TRAIN_SUBJECTS` subjects, naming how many."""
    few = {f.name: subjects_with_rows(index, f.train) for f in folds if f.level == "subject"}
    few = {name: s for name, s in few.items() if len(s) < MIN_TRAIN_SUBJECTS}
    if few:
        name, subjects = next(iter(few.items()))
        warnings.warn(f"{len(few)} fold(s) train on fewer than {MIN_TRAIN_SUBJECTS} subjects (e.g. {name}: "
                      f"{subjects}): a cross-subject model learned from so few people often scores at chance; with "
                      "a small corpus use --validation trials (every other subject trains) or more subjects",
                      stacklevel=2)


# ------------------------------------------------------------------------------------- evaluation protocols
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


@dataclass(frozen=True)
class ProtocolArgument:
    """One constructor argument of a protocol that its command line offers as ``--<name>`` (dashes for
    underscores); the evaluation CLIs add it and pass its value on by ``name``."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


PROTOCOLS: dict[str, type[EvaluationProtocol]] = {}
"""The evaluation protocols, by name: the one list (the evaluations' ``--protocol`` choices and arguments)."""


def register_protocol(name: str):
    """Class decorator: add a protocol (an :class:`EvaluationProtocol` subclass) to :data:`PROTOCOLS` as
    ``name``."""
    def register(cls):
        if name in PROTOCOLS:
            raise ValueError(f"protocol {name!r} is registered already")
        cls.name = name
        PROTOCOLS[name] = cls
        return cls
    return register


class _Leaky(type):
    """The protocols' metaclass: every protocol takes ``allow_leaky`` (default False) besides its own arguments,
    refuses to be built without it when its class is ``leaky``, and keeps it (its folds pass the leakage guard
    with it); a subclass's ``__init__`` never sees it."""

    def __call__(cls, *args, allow_leaky: bool = False, **kwargs):
        if cls.leaky and not allow_leaky:
            raise ValueError(f"protocol {cls.name or cls.__name__!r} is leaky (windows of one trial in train and "
                             "test): refused unless allow_leaky=True (--allow-leaky-split)")
        protocol = super().__call__(*args, **kwargs)
        protocol.allow_leaky = allow_leaky
        return protocol


class EvaluationProtocol(metaclass=_Leaky):
    """Evaluation protocols: split generators over the cache's rows, with validation from training data only.

    A protocol subclasses this class, takes its own arguments in ``__init__`` (``seed`` and those it declares in
    ``arguments``, which the evaluation CLIs offer as flags), yields :class:`Fold` s from ``_folds(subjects,
    trials, labels)`` and is registered with :func:`register_protocol`. A leaky one says ``leaky = True``: it is
    then built only with ``allow_leaky=True`` (``--allow-leaky-split``), which the base class takes and keeps.

    They follow scikit-learn's cross-validator interface (``split(X, y)`` yields ``(train, test)`` row index
    arrays; ``get_n_splits``), where ``X`` is an ``(n_rows, 2)`` array of ``(subject, trial)`` per window and ``y``
    the binary labels. scikit-learn's ``model_selection`` takes any object with these two methods, so the
    protocols do not subclass its ``BaseCrossValidator``: the training processes import this module (for
    :class:`Fold`) without importing scikit-learn. ``folds(X, y)`` gives the richer :class:`Fold` objects (train /
    val / test), each checked; :meth:`cache_folds` the folds over some rows of a cache, naming the cache's rows,
    each checked against the cache index: what the evaluation runs.

    * :class:`LeaveOneSubjectOut`: each subject is the test set once. Validation (early stopping, model
      selection) is, by default, a seeded share of the *other subjects*, held out from training, so it rewards
      what LOSO measures: generalisation to people the model has not seen (``validation="subjects"``).
      ``validation="trials"`` uses a seeded, label-stratified share of the training subjects' *trials* instead (no
      window of a validation trial is trained on), which rewards within-subject fit. The test subject is unseen
      either way.
    * :class:`SubjectDependentKFold`: per subject, k folds over its *trials* (stratified by label); validation is
      a share of that subject's remaining trials. Windows of a trial never straddle train, val and test.
    * :class:`SegmentRandomKFold`: the common *leaky* protocol: per subject, k folds over shuffled *windows*, so
      windows of one trial fall in both train and test. Refused unless ``allow_leaky=True``; labelled leaky.

    Example:
        >>> X = np.array([(s, t) for s in (1, 2, 3) for t in (1, 2, 3, 4) for _ in range(5)])  # 5 windows/trial
        >>> y = (X[:, 1] % 2).astype(int)
        >>> cv = LeaveOneSubjectOut(seed=0)
        >>> [np.unique(X[test, 0]).tolist() for _, test in cv.split(X, y)]
        [[1], [2], [3]]
        >>> fold = cv.folds(X, y)[0]
        >>> np.unique(X[np.concatenate([fold.train, fold.val]), 0]).tolist()  # validation: training subjects
        [2, 3]
        >>> fold.check["verdict"]
        'passed: no subject in two of train, val and test'
    """

    name = ""  # set by register_protocol
    leaky = False  # windows of one trial may fall in train and test: runs only when the user allows it
    arguments: tuple[ProtocolArgument, ...] = ()  # what the CLI offers besides ``seed`` (every protocol takes it)
    allow_leaky: bool  # given when built (the metaclass keeps it)

    def folds(self, X, y=None) -> list[Fold]:
        subjects, trials, labels = _as_index(X, y)
        return [check_fold(fold, subjects, trials, allow_leaky=self.allow_leaky)
                for fold in self._folds(subjects, trials, labels)]

    def cache_folds(self, index, rows: np.ndarray, target: str) -> list[Fold]:
        """The folds over ``rows`` of the cache ``index`` (labels of ``target``), naming rows of the cache."""
        X = np.stack([index.subject[rows], index.trial[rows]], 1)
        local = self._folds(*_as_index(X, index.labels(target)[rows]))
        return [check_fold(Fold(f.name, f.level, rows[f.train], rows[f.val], rows[f.test], val_level=f.val_level),
                           index.subject, index.trial, allow_leaky=self.allow_leaky) for f in local]

    def split(self, X, y=None, groups=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for fold in self.folds(X, y):
            yield np.sort(np.concatenate([fold.train, fold.val])), fold.test

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        if X is None:
            raise ValueError("get_n_splits needs X")
        return len(self.folds(X, y))

    def _folds(self, subjects, trials, labels) -> Iterator[Fold]:
        raise NotImplementedError


@register_protocol("loso")
class LeaveOneSubjectOut(EvaluationProtocol):
    """Each subject is the test set once; validation: ``val_fraction`` of the other subjects (at least one, at
    most all but one), or with ``validation="trials"`` of each training subject's trials."""

    VALIDATION = ("subjects", "trials")
    arguments = (ProtocolArgument("validation", str, "subjects", choices=VALIDATION,
                                  help="early stopping on held-out training subjects (default) or on held-out "
                                       "trials of the training subjects (rewards within-subject fit)"),)

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


K_FOLDS = ProtocolArgument("k", int, 5, help="folds per subject (default 5)")


@register_protocol("subject-dependent")
class SubjectDependentKFold(EvaluationProtocol):
    """Per subject, ``k`` folds over its trials; validation: ``val_fraction`` of the remaining trials."""

    arguments = (K_FOLDS,)

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


@register_protocol("segment-random")
class SegmentRandomKFold(EvaluationProtocol):
    """LEAKY: per subject, ``k`` folds over shuffled windows (windows of one trial in train and test)."""

    leaky = True
    arguments = (K_FOLDS,)

    def __init__(self, k: int = 5, val_fraction: float = 0.2, seed: int = 0):
        self.k, self.val_fraction, self.seed = k, val_fraction, seed

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

