"""Paired comparison of two runs across subjects: per-subject differences, Wilcoxon signed-rank, effect size.

:func:`paired_comparison` runs scipy's ``wilcoxon`` with the ``alternative`` it is given: two-sided by default
(``evaluation.report --compare``: is there a difference?), one-sided ``"greater"`` where the evaluation asks
whether the model beats a baseline (:func:`versus_baselines`). Subjects whose score is undefined (NaN) in
either run are left out. Zero differences are dropped (``zero_method="wilcox"``), so the test runs on the ``n``
non-zero pairs, and ``n`` is what is reported (``n_subjects`` counts the pairs before dropping). With ``n``
pairs the smallest p the exact test can give is ``1 / 2**n`` one-sided and ``2 / 2**n`` two-sided
(``min_p``); when that is not below 0.05, ``warning`` says so: such a test cannot show anything at p < 0.05.
The effect size is the matched-pairs rank-biserial correlation ``r = (W+ - W-) / (W+ + W-)`` over the non-zero
differences (-1..1: the share of rank mass in favour of A minus that in favour of B).

Every family of tests a command prints is corrected together with Holm's step-down method
(:func:`correct_family`): each test gets its adjusted ``p_holm`` beside its raw ``p_value`` and the family's name
(``family``: "Holm over 6 tests: 2 pairs x 3 metrics"), which the outputs print. :func:`versus_baselines`
compares the model with every baseline, one family; ``better`` needs ``p_holm < 0.05`` and a positive mean
difference.

Example:
    >>> out = paired_comparison({1: 0.9, 2: 0.8, 3: 0.85, 4: 0.7}, {1: 0.5, 2: 0.55, 3: 0.6, 4: 0.7})
    >>> out["n_subjects"], out["n"], round(out["mean_difference"], 4), out["effect_size"], out["min_p"]
    (4, 3, 0.225, 1.0, 0.25)
    >>> holm({"a": 0.01, "b": 0.04, "c": 0.03})
    {'a': 0.03, 'b': 0.06, 'c': 0.06}
    >>> tests = {"x": {"p_value": 0.03125}, "y": {"p_value": 0.03125}, "z": {"error": "fewer than 2 subjects"}}
    >>> correct_family(tests, "tuned vs untuned x 2 metrics")
    'Holm over 2 tests: tuned vs untuned x 2 metrics'
    >>> tests["x"]["p_holm"], "p_holm" in tests["z"]
    (0.0625, False)
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata, wilcoxon

ALPHA = 0.05


def min_p_value(n: int, alternative: str) -> float:
    """The smallest p-value an exact Wilcoxon signed-rank test on ``n`` non-zero pairs can give."""
    if n == 0:
        return 1.0
    return min(1.0, (1.0 if alternative != "two-sided" else 2.0) / 2**n)


def paired_comparison(a: dict, b: dict, alternative: str = "two-sided") -> dict:
    """Compare per-subject scores ``a`` and ``b`` (dicts subject -> score) on their common defined subjects."""
    subjects = sorted(s for s in set(a) & set(b) if not (math.isnan(a[s]) or math.isnan(b[s])))
    if len(subjects) < 2:
        raise ValueError(f"a paired test needs at least 2 common subjects with defined scores, got {len(subjects)}")
    diffs = np.array([a[s] - b[s] for s in subjects], dtype=np.float64)
    nonzero = diffs[diffs != 0]
    if nonzero.size:
        ranks = rankdata(np.abs(nonzero))
        w_plus, w_minus = ranks[nonzero > 0].sum(), ranks[nonzero < 0].sum()
        effect = float((w_plus - w_minus) / (w_plus + w_minus))
        test = wilcoxon(diffs, alternative=alternative, zero_method="wilcox")
        statistic, p = float(test.statistic), float(test.pvalue)
    else:  # identical scores: no evidence of a difference
        effect, statistic, p = 0.0, 0.0, 1.0
    n, min_p = int(nonzero.size), min_p_value(int(nonzero.size), alternative)
    warning = (f"only {n} non-zero pair(s): the smallest possible p is {min_p:.3g}, so p < {ALPHA} is out of reach"
               if min_p >= ALPHA else None)
    return {"n": n, "n_subjects": len(subjects), "subjects": subjects, "differences": diffs.tolist(),
            "mean_difference": float(diffs.mean()), "wilcoxon_statistic": statistic, "p_value": p,
            "alternative": alternative, "min_p": min_p, "warning": warning, "effect_size": effect,
            "effect_size_kind": "matched-pairs rank-biserial"}


def holm(p_values: dict) -> dict:
    """Holm step-down adjusted p-values (same keys): the i-th smallest p times (m - i + 1), made monotone."""
    order = sorted(p_values, key=lambda k: p_values[k])
    adjusted, running = {}, 0.0
    for i, key in enumerate(order):
        running = max(running, min(1.0, (len(order) - i) * p_values[key]))
        adjusted[key] = round(running, 12)
    return {k: adjusted[k] for k in p_values}


def correct_family(tests: dict, what: str) -> str:
    """Holm-correct the family ``tests`` (name -> :func:`paired_comparison` result) in place: each test that ran
    gets ``p_holm`` and ``family``, the family's name ("Holm over N tests: ``what``"), which is returned; a test
    that could not run (an ``error`` entry, no ``p_value``) is not in the family."""
    ran = {name: test for name, test in tests.items() if "p_value" in test}
    family = f"Holm over {len(ran)} test{'s' if len(ran) != 1 else ''}: {what}"
    for name, p in holm({name: test["p_value"] for name, test in ran.items()}).items():
        ran[name].update(p_holm=p, family=family)
    return family


def versus_baselines(model: dict, baselines: dict[str, dict]) -> dict[str, dict]:
    """One-sided "is the model better?" test of the per-subject accuracy against every baseline: one family,
    Holm-corrected across the baselines."""
    out = {name: paired_comparison(model, scores, alternative="greater") for name, scores in baselines.items()}
    correct_family(out, f"model vs {len(out)} baseline{'s' if len(out) != 1 else ''}, one-sided, per-subject "
                        "accuracy")
    for cmp in out.values():
        cmp["better"] = bool(cmp["p_holm"] < ALPHA and cmp["mean_difference"] > 0)
    return out
