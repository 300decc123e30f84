"""Folds (train / validation / test row indices of the window cache) and the leakage guard.

A :class:`Fold` names rows of the cache's index. Its ``level`` says what must never be shared between its parts:

* ``subject``: no subject in two parts (leave-one-subject-out, cross-subject training);
* ``trial``: no (subject, trial) in two parts, so windows of one trial never straddle train and test
  (subject-dependent protocols);
* ``window``: only rows are disjoint. This is the common *leaky* protocol (windows of one trial in both train and
  test); :func:`check_fold` refuses it unless ``allow_leaky=True``.

Protocols that generate folds live in :mod:`evaluation.protocols`; training calls :func:`check_fold` too, so a
leaky fold never trains by accident.

:func:`usable_rows` is the one rule, shared by the search and the evaluations, for which rows of a cache a
modality can use: a face model (``face`` / ``facebio``) only the windows that have face frames (in DEAP only
subjects 1-22 have videos), a bio model every window, or, with ``rows="face"``, the same face rows (so a bio
ablation is scored on exactly the windows of the face runs). :func:`subjects_with_rows` names the subjects
that keep rows under it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

LEVELS = ("subject", "trial", "window")
ROW_RULES = ("modality", "face")  # rows of --modality's own rule, or the face rows whatever the modality
PARTS = ("train", "val", "test")


class LeakageError(ValueError):
    """A fold shares subjects, trials or windows between its parts."""


@dataclass
class Fold:
    """One fold: row indices into the cache index for each part, and what it is."""

    name: str
    level: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    val_level: str | None = None  # what train and val must not share; default: ``level``

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

    def to_dict(self) -> dict:
        return {"name": self.name, "level": self.level, "val_level": self.val_level,
                **{p: getattr(self, p).tolist() for p in PARTS}}

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


def check_fold(fold: Fold, subjects: np.ndarray, trials: np.ndarray, allow_leaky: bool = False) -> None:
    """Raise :class:`LeakageError` if two parts of ``fold`` share a unit of its level, or a part is bad.

    Test is checked against train and val at ``fold.level``; train against val at ``fold.val_level``.

    ``subjects`` and ``trials`` are the cache index columns (one entry per row).
    """
    if fold.leaky and not allow_leaky:
        raise LeakageError(f"fold {fold.name}: window-level (leaky) split refused; pass allow_leaky=True "
                           "(--allow-leaky-split) to run it, labelled as leaky")
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
