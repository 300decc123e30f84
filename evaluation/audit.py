"""Leakage audit: checks run on every evaluation and recorded in MLflow (``audit.json``, tag ``leakage_audit``).

1. Folds: no subject (LOSO) or trial (subject-dependent) in two parts (:func:`gbvnet.splits.check_fold`);
   a window-level (leaky) protocol is allowed only when the user asked for it, and is then labelled leaky.
2. Normalisation: every fold's worker reports a digest of the rows its normaliser was fitted on; it must equal
   the digest of the fold's training rows (checked from what training actually did, not assumed).
3. Search: a config from ``tune/search.py`` records the subjects the search saw; none may be a test subject
   unless the user allowed it.

Example:
    >>> import numpy as np
    >>> from gbvnet.splits import Fold
    >>> fold = Fold("f", "subject", train=[0, 1], val=[2], test=[3])
    >>> check_normalizers([fold], [rows_digest(np.array([3]))])
    Traceback (most recent call last):
    ...
    gbvnet.splits.LeakageError: fold f: the bio normaliser was not fitted on exactly the training rows
"""

from __future__ import annotations

import numpy as np

from gbvnet.splits import Fold, LeakageError, check_fold, rows_digest

__all__ = ["audit_folds", "check_normalizers", "check_search_subjects", "rows_digest"]


def audit_folds(folds: list[Fold], subjects: np.ndarray, trials: np.ndarray, allow_leaky: bool) -> dict:
    for fold in folds:
        check_fold(fold, subjects, trials, allow_leaky=allow_leaky)
    levels = sorted({f.level for f in folds})
    return {"folds": "passed" if not any(f.leaky for f in folds) else "LEAKY (allowed by the user)",
            "fold_levels": levels, "n_folds": len(folds)}


def check_normalizers(folds: list[Fold], digests: list[str | None]) -> dict:
    for fold, digest in zip(folds, digests, strict=True):
        if digest is not None and digest != rows_digest(fold.train):
            raise LeakageError(f"fold {fold.name}: the bio normaliser was not fitted on exactly the training rows")
    return {"normalizer": "passed (fitted on training rows only)" if any(d is not None for d in digests)
            else "not used (face-only model)"}


def check_search_subjects(searched: list[int], tested: list[int], allowed: bool) -> dict:
    overlap = sorted(set(searched) & set(tested))
    if overlap and not allowed:
        raise LeakageError(f"the config was searched on subjects {overlap}, which this evaluation tests on; "
                           "choose --test-subjects without them (or --allow-searched-test-subjects)")
    status = "passed" if not overlap else f"ALLOWED BY USER: searched on test subjects {overlap}"
    return {"search": status if searched else "no searched config", "searched_subjects": sorted(searched)}
