"""Index refresh decisions (ragtune.e2e.refresh) on small hand-checked arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ragtune.e2e.refresh import embedding_drift, row_cosine, should_refresh
from ragtune.eval.ir import topk_overlap as recall_overlap


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_embedding_drift_identical_orthogonal_and_scaled() -> None:
    old = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    assert embedding_drift(old, old) == pytest.approx(1.0)
    assert embedding_drift(old, old * 7.5) == pytest.approx(1.0)  # normalised inside
    assert embedding_drift(old[:2], np.array([[0.0, 5.0], [-1.0, 0.0]])) == pytest.approx(0.0)
    assert embedding_drift(old[:1], -old[:1]) == pytest.approx(-1.0)
    # rows: cos 1, cos 0, cos(45°): mean = (1 + 0 + 1/sqrt 2) / 3
    new = np.array([[2.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    old = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert embedding_drift(old, new) == pytest.approx((1 + 0 + 1 / math.sqrt(2)) / 3)


def test_embedding_drift_accepts_torch_and_handles_zero_rows() -> None:
    old = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    new = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    assert embedding_drift(old, new) == pytest.approx((1 / math.sqrt(2) + 1) / 2, abs=1e-6)
    cos = row_cosine(np.array([[0.0, 0.0], [0.0, 0.0]]), np.array([[0.0, 0.0], [1.0, 0.0]]))
    assert cos.tolist() == [1.0, 0.0]


def test_embedding_drift_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        embedding_drift(np.ones((2, 3)), np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        embedding_drift(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="at least one probe"):
        embedding_drift(np.ones((0, 3)), np.ones((0, 3)))


def test_recall_overlap() -> None:
    old = [["a", "b", "c", "d"], ["x", "y", "z", "w"]]
    new = [["c", "a", "q", "b"], ["x", "y", "z", "w"]]
    # k=3: {a,b,c} ∩ {c,a,q} = 2 -> 2/3; second query 3/3
    assert recall_overlap(old, new, k=3) == pytest.approx((2 / 3 + 1) / 2)
    assert recall_overlap(old, new, k=1) == pytest.approx((0 + 1) / 2)
    assert recall_overlap(old, new, k=4) == pytest.approx((3 / 4 + 1) / 2)
    assert recall_overlap(np.array([[0, 1], [2, 3]]), np.array([[1, 0], [4, 5]]), k=2) == pytest.approx(0.5)
    # a corpus smaller than k: identical short lists are unchanged
    assert recall_overlap([[1, 2]], [[2, 1]], k=10) == pytest.approx(1.0)
    assert recall_overlap([[1, 2]], [[2]], k=10) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="k must be"):
        recall_overlap(old, new, k=0)
    with pytest.raises(ValueError, match="number of queries"):
        recall_overlap(old, new[:1], k=2)


def test_should_refresh_schedule_and_drift() -> None:
    assert should_refresh(step=10, every=5, drift_cos=0.99, cos_threshold=0.9) == (True, "schedule")
    assert should_refresh(step=10, every=5, drift_cos=0.5, cos_threshold=0.9) == (True, "schedule")  # first
    assert should_refresh(step=7, every=5, drift_cos=0.5, cos_threshold=0.9) == (True, "drift")
    assert should_refresh(step=7, every=5, drift_cos=0.95, cos_threshold=0.9) == (False, "")
    assert should_refresh(step=7, every=5, drift_cos=0.9, cos_threshold=0.9) == (False, "")  # strict <
    assert should_refresh(step=0, every=5) == (False, "")  # nothing has moved before the first step
    assert should_refresh(step=10, every=0, drift_cos=0.1) == (False, "")  # no schedule, no threshold
    assert should_refresh(step=3, every=0, overlap=0.6, overlap_threshold=0.8) == (True, "drift")
    assert should_refresh(step=3, every=0, overlap=0.8, overlap_threshold=0.8) == (False, "")
    with pytest.raises(ValueError, match="every must be"):
        should_refresh(step=1, every=-1)
    with pytest.raises(ValueError, match="cos_threshold"):
        should_refresh(step=1, every=1, cos_threshold=1.5)
    with pytest.raises(ValueError, match="overlap_threshold"):
        should_refresh(step=1, every=1, overlap_threshold=-0.1)
