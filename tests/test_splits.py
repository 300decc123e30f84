"""Folds (gbvnet.folds.protocols): the protocols, the folds from subject lists, the leakage guard and its recorded verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from gbvnet.folds.protocols import (
    Fold,
    LeakageError,
    LeaveOneSubjectOut,
    SegmentRandomKFold,
    SubjectDependentKFold,
    check_fold,
    require_checked,
    search_fold,
)


def index(n_subjects=4, n_trials=8, windows=6):
    X = np.array([(s, t) for s in range(1, n_subjects + 1) for t in range(1, n_trials + 1) for _ in range(windows)])
    y = ((X[:, 1] + X[:, 0]) % 2).astype(int)
    return X, y


def pairs(X, rows):
    return set(map(tuple, X[rows].tolist()))


def test_loso_holds_out_each_subject_once_and_validates_on_training_subjects():
    X, y = index()
    folds = LeaveOneSubjectOut(seed=0).folds(X, y)
    assert [np.unique(X[f.test, 0]).tolist() for f in folds] == [[1], [2], [3], [4]]
    for f in folds:
        held_out = X[f.test[0], 0]
        assert held_out not in X[np.concatenate([f.train, f.val]), 0]
        assert not pairs(X, f.train) & pairs(X, f.val)  # validation trials are not trained on
        assert len(f.train) + len(f.val) + len(f.test) == len(X)
        assert set(y[f.val]) == {0, 1}  # stratified


def test_subject_dependent_never_splits_a_trial():
    X, y = index(n_subjects=2, n_trials=10)
    folds = SubjectDependentKFold(k=5, seed=1).folds(X, y)
    assert len(folds) == 10
    for f in folds:
        assert len(np.unique(X[np.concatenate([f.train, f.val, f.test]), 0])) == 1
        assert not pairs(X, f.test) & (pairs(X, f.train) | pairs(X, f.val))
        assert not pairs(X, f.train) & pairs(X, f.val)
    # every trial is tested exactly once per subject
    tested = [p for f in folds for p in pairs(X, f.test)]
    assert len(tested) == len(set(tested)) == 20


def test_same_seed_same_folds_and_different_seed_differs():
    X, y = index()
    a = [f.to_dict() for f in SubjectDependentKFold(k=3, seed=4).folds(X, y)]
    b = [f.to_dict() for f in SubjectDependentKFold(k=3, seed=4).folds(X, y)]
    c = [f.to_dict() for f in SubjectDependentKFold(k=3, seed=5).folds(X, y)]
    assert a == b and a != c


def test_sklearn_interface():
    from sklearn.dummy import DummyClassifier
    from sklearn.model_selection import cross_val_score

    X, y = index(n_subjects=3)
    cv = LeaveOneSubjectOut()
    assert cv.get_n_splits(X, y) == 3
    for train, test in cv.split(X, y):
        assert len(np.intersect1d(train, test)) == 0
    assert len(cross_val_score(DummyClassifier(), X, y, cv=cv)) == 3  # scikit-learn takes it as a splitter


def test_splits_does_not_import_sklearn():
    """Training processes import gbvnet.folds.protocols (for Fold): scikit-learn would cost each of them its import time."""
    import subprocess
    import sys

    code = "import sys, gbvnet.folds.protocols; print('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_the_guard_records_its_verdict_and_training_needs_it():
    X, y = index(n_subjects=3)
    s, t = X[:, 0], X[:, 1]
    rows = np.arange(len(X))
    unchecked = Fold("f", "subject", rows[s == 1], rows[s == 2], rows[s == 3], val_level="trial")
    with pytest.raises(LeakageError, match="never checked"):
        require_checked(unchecked)
    fold = check_fold(unchecked, s, t)
    assert unchecked.check is None  # the checked fold is a new one
    assert fold.check == {"verdict": "passed: no subject in test and train or val, no trial in both train and val",
                          "rows": fold.digest}
    require_checked(Fold.from_dict(fold.to_dict()))  # the verdict travels with the fold (jobs, trials)
    moved = Fold.from_dict({**fold.to_dict(), "train": rows[s != 2].tolist()})
    with pytest.raises(LeakageError, match="changed after"):
        require_checked(moved)
    leaky = check_fold(Fold("w", "window", rows[:10], rows[10:20], rows[20:30]), s, t, allow_leaky=True)
    assert leaky.check["verdict"] == "LEAKY (allowed by the user): no window in two of train, val and test"
    with pytest.raises(LeakageError, match="leaky"):
        require_checked(leaky)
    require_checked(leaky, allow_leaky=True)


def test_search_fold_validates_on_a_seeded_quarter_of_the_search_subjects():
    from types import SimpleNamespace

    idx = SimpleNamespace(subject=np.repeat([1, 2, 3, 4, 5], 4), trial=np.tile([1, 2, 3, 4], 5),
                          has_face_rows=np.ones(20, dtype=bool))
    fold = search_fold(idx, [1, 2, 3, 4], seed=0)
    train_s, val_s = set(idx.subject[fold.train].tolist()), set(idx.subject[fold.val].tolist())
    assert len(val_s) == 1 and train_s | val_s == {1, 2, 3, 4} and fold.test.size == 0  # subject 5 unseen
    assert fold.check["verdict"] == "passed: no subject in two of train, val and test"


def test_cache_folds_name_cache_rows_and_match_the_protocol_on_those_rows():
    """The evaluation's folds over a subset of a cache's rows are the protocol's folds on that subset."""
    from types import SimpleNamespace

    X, y = index(n_subjects=4)
    cache = SimpleNamespace(subject=X[:, 0], trial=X[:, 1], labels=lambda target: y)
    rows = np.flatnonzero(X[:, 1] != 2)  # e.g. the windows with face frames
    protocol = SubjectDependentKFold(k=3, seed=2)
    expected = protocol.folds(X[rows], y[rows])
    got = protocol.cache_folds(cache, rows, "valence")
    assert [f.name for f in got] == [f.name for f in expected]
    for a, b in zip(got, expected, strict=True):
        for part in ("train", "val", "test"):
            assert getattr(a, part).tolist() == rows[getattr(b, part)].tolist()
        require_checked(a)


def test_guard_rejects_crafted_leaky_folds():
    X, y = index(n_subjects=3)
    s, t = X[:, 0], X[:, 1]
    rows = np.arange(len(X))
    with pytest.raises(LeakageError, match=r"subject\(s\) in both train and test"):
        check_fold(Fold("bad", "subject", rows[s != 3], [], rows[s >= 2]), s, t)
    same_trial = rows[(s == 1) & (t == 1)]
    with pytest.raises(LeakageError, match=r"trial\(s\) in both train and test"):
        check_fold(Fold("bad", "trial", np.concatenate([rows[s == 2], same_trial[:2]]), [], same_trial[2:]), s, t)
    with pytest.raises(LeakageError, match="leaky"):
        check_fold(Fold("bad", "window", rows[:10], [], rows[10:20]), s, t)
    check_fold(Fold("ok", "window", rows[:10], [], rows[10:20]), s, t, allow_leaky=True)
    with pytest.raises(LeakageError, match="empty training set"):
        check_fold(Fold("bad", "subject", [], [], rows[s == 1]), s, t)


def test_segment_random_is_refused_without_flag_and_is_leaky_with_it():
    X, y = index(n_subjects=2)
    with pytest.raises(ValueError, match="leaky"):
        SegmentRandomKFold(k=3)
    folds = SegmentRandomKFold(k=3, allow_leaky=True).folds(X, y)
    assert all(f.leaky for f in folds)
    assert any(pairs(X, f.train) & pairs(X, f.test) for f in folds)  # it really is the leaky protocol


def test_loso_validates_on_held_out_training_subjects_by_default():
    """Early stopping must reward generalisation to unseen people: validation subjects are not trained on."""
    X, y = index(n_subjects=6)
    for fold in LeaveOneSubjectOut(seed=0).folds(X, y):
        train_s, val_s = set(X[fold.train, 0]), set(X[fold.val, 0])
        assert len(val_s) == 1 and not train_s & val_s and len(train_s) == 4
        assert fold.val_level == "subject"
    trial_folds = LeaveOneSubjectOut(seed=0, validation="trials").folds(X, y)  # the trial-pooled variant
    assert all(set(X[f.val, 0]) <= set(X[f.train, 0]) and f.val_level == "trial" for f in trial_folds)
    with pytest.raises(ValueError, match=r"at least 3 subjects .*\(--validation trials\)"):
        LeaveOneSubjectOut().folds(*index(n_subjects=2))
    assert len(LeaveOneSubjectOut(validation="trials").folds(*index(n_subjects=2))) == 2


def test_rating_exactly_at_the_threshold_is_low():
    from gbvnet.data.windows import binarise

    assert [binarise(r, 5.0) for r in (4.99, 5.0, 5.01)] == [0, 0, 1]


def test_usable_rows_one_rule_for_every_modality():
    from types import SimpleNamespace

    from gbvnet.folds.protocols import subjects_with_rows, usable_rows

    idx = SimpleNamespace(subject=np.array([1, 1, 2, 2, 3, 3]),
                          has_face_rows=np.array([True, False, True, True, False, False]))
    assert usable_rows(idx, "bio").tolist() == [0, 1, 2, 3, 4, 5]
    for modality in ("face", "facebio"):
        assert usable_rows(idx, modality).tolist() == [0, 2, 3]
    assert usable_rows(idx, "bio", rows="face").tolist() == [0, 2, 3]  # bio ablation on the face windows
    assert subjects_with_rows(idx, usable_rows(idx, "facebio")) == [1, 2]
