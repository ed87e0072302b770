"""Paired significance of B - A: checked against scipy and a hand enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from ragtune.eval.significance import paired_test, paired_tests

A = [0.1, 0.5, 0.3, 0.9, 0.4, 0.7]
B = [0.3, 0.6, 0.2, 1.0, 0.8, 0.7]  # differences 0.2, 0.1, -0.1, 0.1, 0.4, 0.0


def test_randomisation_p_value_equals_the_exact_sign_flip_enumeration() -> None:
    diffs = np.subtract(B, A)
    observed = abs(diffs.mean())
    flips = [np.mean(np.multiply(signs, diffs)) for signs in itertools.product((1, -1), repeat=len(diffs))]
    expected = sum(abs(m) >= observed - 1e-12 for m in flips) / len(flips)  # 2^6 = 64 relabellings
    result = paired_test(A, B)
    assert result["n"] == 6 and result["delta"] == pytest.approx(diffs.mean())
    assert result["p_value"] == pytest.approx(expected)
    assert 0 < result["p_value"] < 1


def test_bootstrap_interval_equals_scipy_on_the_differences() -> None:
    reference = stats.bootstrap(
        (np.subtract(B, A),),
        np.mean,
        n_resamples=5000,
        confidence_level=0.95,
        method="percentile",
        random_state=3,
    ).confidence_interval
    result = paired_test(A, B, n_resamples=5000, seed=3)
    assert result["ci95"] == pytest.approx([reference.low, reference.high])
    lo, hi = result["ci95"]
    assert lo < result["delta"] < hi and lo > -0.1 and hi < 0.35


def test_a_clear_gain_is_significant_and_no_change_is_not() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(200)
    better = paired_test(a, a + 0.05 + rng.normal(0, 0.02, 200))
    assert better["ci95"][0] > 0 and better["p_value"] < 0.001
    # every question gains the same: only the all-positive and all-negative relabellings are as extreme
    assert paired_test([0.0] * 6, [0.1] * 6)["p_value"] == pytest.approx(2 / 2**6)
    same = paired_test(a, a)
    assert same == {"delta": 0.0, "ci95": [0.0, 0.0], "p_value": 1.0, "n": 200}
    with pytest.raises(ValueError, match="same length"):
        paired_test([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least 2"):
        paired_test([1.0], [2.0])


def test_paired_tests_pair_questions_by_id() -> None:
    per_a = {"q1": {"F1": 0.1, "EM": 0.0}, "q2": {"F1": 0.5}, "q3": {"F1": 0.3}, "only_a": {"F1": 1.0}}
    per_b = {"q3": {"F1": 0.2}, "q1": {"F1": 0.3, "EM": 1.0}, "q2": {"F1": 0.6}, "only_b": {"F1": 0.0}}
    out = paired_tests(per_a, per_b, ["F1", "EM"])
    assert set(out) == {"F1"}  # EM: one shared question, no test
    assert out["F1"] == paired_test([0.1, 0.5, 0.3], [0.3, 0.6, 0.2])
