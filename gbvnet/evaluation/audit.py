"""Leakage audit: checks run on every evaluation and recorded in MLflow (``audit.json``, tag ``leakage_audit``).

1. Folds: no subject (LOSO) or trial (subject-dependent) in two parts; a window-level (leaky) protocol is allowed
   only when the user asked for it, and is then labelled leaky. Each fold is checked once, as
   :mod:`gbvnet.folds.protocols` builds it (:func:`gbvnet.folds.protocols.check_fold`), and training refuses a fold without that
   check; the audit records each fold's verdict (:func:`audit_folds`) rather than checking again.
2. Normalisation: every fold's worker reports a digest of the rows its normaliser was fitted on; it must equal
   the digest of the fold's training rows (checked from what training actually did, not assumed).
3. Search: a config from ``tune/search.py`` carries its provenance (``search:``: dataset, target, cache manifest
   hash, the subjects the search saw). On the same dataset (the same people behind the subject ids, whatever
   the target or the preparation of the cache) none of them may be a test subject unless the user allowed it;
   on another dataset the ids name other people and nothing is refused. Target and cache differences are
   recorded. A config file must say where it came from: ``search: none`` for a hand-written one
   (:func:`search_provenance`).

Example:
    >>> import numpy as np
    >>> from gbvnet.folds.protocols import Fold
    >>> fold = Fold("f", "subject", train=[0, 1], val=[2], test=[3])
    >>> check_normalizers([fold], [rows_digest(np.array([3]))])
    Traceback (most recent call last):
    ...
    gbvnet.folds.protocols.LeakageError: fold f: the bio normaliser was not fitted on exactly the training rows
"""

from __future__ import annotations

from gbvnet.folds.protocols import Fold, LeakageError, rows_digest

__all__ = ["audit_folds", "check_normalizers", "check_search_subjects", "rows_digest", "search_provenance"]

SEARCH_FIELDS = ("dataset", "target", "cache_manifest_hash", "subjects")


def audit_folds(folds: list[Fold]) -> dict:
    """The leakage guard's verdicts on ``folds`` (recorded when they were built, :attr:`gbvnet.folds.protocols.Fold.check`),
    with the digest of the rows each verdict was given on."""
    levels = sorted({f.level for f in folds})
    return {"folds": "passed" if not any(f.leaky for f in folds) else "LEAKY (allowed by the user)",
            "fold_levels": levels, "n_folds": len(folds), "fold_checks": {f.name: f.check for f in folds}}


def check_normalizers(folds: list[Fold], digests: list[str | None]) -> dict:
    for fold, digest in zip(folds, digests, strict=True):
        if digest is not None and digest != rows_digest(fold.train):
            raise LeakageError(f"fold {fold.name}: the bio normaliser was not fitted on exactly the training rows")
    return {"normalizer": "passed (fitted on training rows only)" if any(d is not None for d in digests)
            else "not used (face-only model)"}


def search_provenance(config: dict, path: str) -> dict | None:
    """The ``search:`` section of a ``--config`` file: a dict from ``tune/search.py``, or None for ``search: none``.

    A file without the section is refused: a searched config always carries it, so a missing one means an edited
    file, and its provenance cannot be checked.
    """
    if "search" not in config:
        raise ValueError(f"{path}: no 'search' section; a config written by tune/search.py has one (keep it), a "
                         "hand-written config must say 'search: none'")
    search = config["search"]
    if search in (None, "none"):
        return None
    if not isinstance(search, dict):
        raise ValueError(f"{path}: field 'search' must be a mapping or 'none', got {search!r}")
    for name in SEARCH_FIELDS:
        if name not in search:
            raise ValueError(f"{path}: field 'search.{name}' is missing (written by tune/search.py)")
    if not isinstance(search["subjects"], list) or not all(isinstance(s, int) for s in search["subjects"]):
        raise ValueError(f"{path}: field 'search.subjects' must be a list of subject ids, got {search['subjects']!r}")
    return search


def check_search_subjects(search: dict | None, dataset: str, target: str, manifest_hash: str, tested: list[int],
                          allowed: bool) -> dict:
    """Refuse testing on subjects the search saw (same dataset), unless ``allowed``; record what differs."""
    if search is None:
        return {"search": "no searched config", "searched_subjects": []}
    searched = sorted(search["subjects"])
    if search["dataset"] != dataset:
        return {"search": f"searched on another dataset ({search['dataset']}): its subject ids are other people",
                "searched_subjects": searched, "searched_dataset": search["dataset"]}
    differs = [f"{name} {search[key]} (this evaluation: {value})" for name, key, value in
               (("target", "target", target), ("cache", "cache_manifest_hash", manifest_hash))
               if search[key] != value]
    where = f"on {dataset}" + (f", {', '.join(differs)}" if differs else " (same target and cache)")
    overlap = sorted(set(searched) & set(tested))
    if overlap and not allowed:
        raise LeakageError(f"the config was searched on subjects {overlap} {where}, which this evaluation tests on; "
                           "choose --only-test-subjects without them (or --allow-searched-test-subjects)")
    status = "passed" if not overlap else f"ALLOWED BY USER: searched on test subjects {overlap}"
    return {"search": f"{status}; searched {where}", "searched_subjects": searched,
            "searched_target": search["target"], "searched_cache_manifest_hash": search["cache_manifest_hash"]}
