"""Paired comparison of two runs across subjects: per-subject differences, Wilcoxon signed-rank, effect size.

The test is scipy's ``wilcoxon`` (two-sided; exact for small samples without ties). The effect size is the
matched-pairs rank-biserial correlation ``r = (W+ - W-) / (W+ + W-)`` over the non-zero differences (-1..1:
the share of rank mass in favour of A minus that in favour of B).

Example:
    >>> out = paired_comparison({1: 0.9, 2: 0.8, 3: 0.85, 4: 0.7}, {1: 0.5, 2: 0.55, 3: 0.6, 4: 0.5})
    >>> out["n"], round(out["mean_difference"], 4), out["effect_size"]
    (4, 0.275, 1.0)
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata, wilcoxon


def paired_comparison(a: dict, b: dict, alternative: str = "two-sided") -> dict:
    """Compare per-subject scores ``a`` and ``b`` (dicts subject -> score) on their common subjects."""
    subjects = sorted(set(a) & set(b))
    if len(subjects) < 2:
        raise ValueError(f"a paired test needs at least 2 common subjects, got {len(subjects)}")
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
    return {"n": len(subjects), "subjects": subjects, "differences": diffs.tolist(),
            "mean_difference": float(diffs.mean()), "wilcoxon_statistic": statistic, "p_value": p,
            "alternative": alternative, "effect_size": effect, "effect_size_kind": "matched-pairs rank-biserial"}
