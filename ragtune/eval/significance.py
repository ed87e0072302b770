"""Is B better than A on the same questions? A paired bootstrap confidence interval and a paired
randomisation test of the mean difference, both from scipy.

For per-question scores ``a[i]`` and ``b[i]`` of two systems on the same n questions:

- ``delta`` = mean(b - a);
- ``ci95``: the 95% paired-bootstrap interval of that mean (questions resampled with replacement,
  the pair kept together; Koehn 2004), ``scipy.stats.bootstrap`` with the percentile method;
- ``p_value``: two-sided paired randomisation test (each question's pair swapped at random, i.e.
  the sign of its difference flipped; exact when 2^n <= ``n_resamples``),
  ``scipy.stats.permutation_test`` with ``permutation_type="samples"``.

This module imports no model code.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np


def paired_test(
    a: Sequence[float], b: Sequence[float], n_resamples: int = 10_000, seed: int = 0
) -> dict[str, float | int | list[float]]:
    """``{"delta", "ci95": [lo, hi], "p_value", "n"}`` of B - A over paired per-question scores."""
    from scipy import stats

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"a and b must be two lists of the same length, got shapes {x.shape} and {y.shape}")
    if len(x) < 2:
        raise ValueError(f"a paired test needs at least 2 questions, got {len(x)}")
    diff = y - x
    delta = float(diff.mean())
    with warnings.catch_warnings():  # identical differences give a zero-width interval, as they should
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        boot = stats.bootstrap(
            (diff,),
            np.mean,
            n_resamples=n_resamples,
            confidence_level=0.95,
            method="percentile",
            random_state=seed,
        )
    perm = stats.permutation_test(
        (x, y),
        lambda u, v, axis: np.mean(v - u, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_resamples,
        alternative="two-sided",
        random_state=seed,
    )
    ci = boot.confidence_interval
    return {
        "delta": delta,
        "ci95": [float(ci.low), float(ci.high)],
        "p_value": float(perm.pvalue),
        "n": len(x),
    }


def paired_tests(
    per_a: Mapping[str, Mapping[str, float]],
    per_b: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str],
    n_resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, dict[str, float | int | list[float]]]:
    """:func:`paired_test` per metric over the questions (ids) both ``per_a`` and ``per_b`` score
    on it: ``{metric: result}`` (metrics with fewer than 2 shared questions are left out)."""
    out = {}
    for m in metrics:
        ids = [q for q in per_a if q in per_b and m in per_a[q] and m in per_b[q]]
        if len(ids) >= 2:
            out[m] = paired_test([per_a[q][m] for q in ids], [per_b[q][m] for q in ids], n_resamples, seed)
    return out
