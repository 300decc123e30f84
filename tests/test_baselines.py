"""The baselines give the same numbers wherever they are scored (the driver, a Ray actor, a machine with more
cores)."""

from __future__ import annotations

import sys

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from gbvnet.evaluation import baselines
from gbvnet.folds.protocols import Fold


def test_baselines_fit_with_one_blas_thread_whatever_the_caller_allows(monkeypatch):
    """A logistic regression's sums depend on the BLAS thread count (two OpenBLAS threads changed the predictions of
    13 of 32 folds of a 32-subject corpus), so every baseline is scored with one thread."""
    seen = []

    def probe(fold, y, features, seed):
        seen.append({pool["internal_api"]: pool["num_threads"] for pool in threadpool_info()})
        return baselines.majority(fold, y)

    monkeypatch.setitem(baselines.BASELINES, "probe", baselines.Baseline("probe", probe, needs_features=True))
    rng = np.random.default_rng(0)
    features, y = rng.standard_normal((40, 6)), np.tile([0, 1], 20)
    fold = Fold("f", "window", train=np.arange(30), val=[], test=np.arange(30, 40))
    with threadpool_limits(2):
        scored = baselines.fold_confusions(0, fold, y, features)
    assert seen and all(threads == 1 for pools in seen for threads in pools.values()), seen
    assert set(scored) == {"majority", "stratified", "bandpower_logreg", "probe"}
    assert scored["bandpower_logreg"].sum() == 10


def test_evaluations_sharing_a_scorer_get_the_numbers_of_their_own(ray_session, prepared_cache):
    """The protocol gap's arms and the seeds of ``--seeds`` share one scorer (each window's features computed
    once): each evaluation gets the confusion matrices of its own folds and seed scored on their own, here in
    this process (the stratified baseline's draws differ by seed)."""
    from gbvnet.data.cache import open_cache
    from gbvnet.data.window_dataset import WindowDataset
    from gbvnet.folds.protocols import PROTOCOLS, usable_rows
    from tests.test_gap import SIGNATURE

    cache = str(prepared_cache("deap", SIGNATURE, face=False, baseline_norm=True))  # the gap tests' cache
    opened = open_cache(cache)
    index = opened.index()
    rows, y = usable_rows(index, "bio"), index.labels("valence")
    plans = [PROTOCOLS["loso"](seed=0).cache_folds(index, rows, "valence"),
             PROTOCOLS["subject-dependent"](k=2, seed=0).cache_folds(index, rows, "valence")]
    scorer = baselines.start_scorer(cache, y)
    seeds = [1, 2]
    shared = [baselines.Baselines(cache, folds, y, seed=s, scorer=scorer)
              for folds, s in zip(plans, seeds, strict=True)]
    dataset = WindowDataset(opened, modality="bio")
    features = baselines.bio_features(dataset, float(opened.manifest.rate), np.arange(len(dataset)))
    for folds, seed, scored in zip(plans, seeds, [b.confusions() for b in shared], strict=True):
        own = baselines.baseline_confusions(folds, y, features, seed=seed)
        assert list(scored) == list(own) == list(baselines.BASELINES)
        for name in own:
            assert [m.tolist() for m in scored[name]] == [m.tolist() for m in own[name]], name
    # the scorer's process read and scored every window without importing torch (half its start-up CPU time)
    loaded = ray_session.get(scorer.__ray_call__.remote(lambda _: sorted({"torch", "sklearn"} & sys.modules.keys())))
    assert loaded == ["sklearn"]
