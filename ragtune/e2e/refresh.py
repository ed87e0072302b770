"""When to refresh the passage index during joint tuning, and what to re-encode.

Training both encoders moves the passage embeddings, and an index built with the old passage
encoder goes stale (the query encoder drifts away from it). RA-DIT and REALM (Guu et al., 2020,
"REALM: Retrieval-Augmented Language Model Pre-Training") rebuild the index asynchronously every
few hundred steps; Atlas (Izacard et al., 2022) re-indexes on a schedule as well. Here the index is
rebuilt on a schedule or when a probe sample says the retriever has drifted: the mean cosine between
old and new embeddings of the same probe passages (:func:`embedding_drift`), or the overlap of the
old and new top-k results of probe queries (:func:`recall_overlap`). :func:`moved_passages` lists
the passages whose embedding moved past a threshold, for replacing only those rows of the index.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

__all__ = ["embedding_drift", "moved_passages", "recall_overlap", "row_cosine", "should_refresh"]


def _as_matrix(x: Any, name: str) -> np.ndarray:
    """A float64 ``[N, D]`` numpy array from numpy or torch (detached, moved to the CPU)."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().float().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be [N, D], got shape {arr.shape}")
    return arr


def row_cosine(old: Any, new: Any) -> np.ndarray:
    """Cosine similarity of each row of ``old [N, D]`` with the same row of ``new [N, D]``: ``[N]``.

    Numpy arrays or torch tensors; rows are L2-normalised here. A zero row has cosine 0 with
    anything (it carries no direction), except two zero rows, which count as unchanged (1).
    """
    a, b = _as_matrix(old, "old"), _as_matrix(new, "new")
    if a.shape != b.shape:
        raise ValueError(f"old and new embeddings differ in shape: {a.shape} and {b.shape}")
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dots = np.einsum("nd,nd->n", a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where((na > 0) & (nb > 0), dots / (na * nb), 0.0)
    cos = np.where((na == 0) & (nb == 0), 1.0, cos)
    return np.clip(cos, -1.0, 1.0)


def embedding_drift(old: Any, new: Any) -> float:
    """Mean cosine similarity between old and new embeddings of the same N probe passages.

    Args:
        old: ``[N, D]`` embeddings from the encoder the index was built with (numpy or torch).
        new: ``[N, D]`` embeddings of the same passages from the current encoder.
    Returns:
        a float in [-1, 1]: 1.0 when nothing moved, lower the more the encoder drifted.
    """
    cos = row_cosine(old, new)
    if cos.size == 0:
        raise ValueError("need at least one probe passage to measure drift")
    return float(cos.mean())


def recall_overlap(
    old_hits: Sequence[Sequence[Hashable]], new_hits: Sequence[Sequence[Hashable]], k: int
) -> float:
    """Mean over probe queries of ``|top-k old ∩ top-k new| / k``: how much of the old index's
    results the current retriever still returns.

    Args:
        old_hits: per probe query, the ranked passage ids (or row numbers) from the old index.
        new_hits: the same queries' ranked ids from the current retriever and a fresh encoding.
        k: cut-off, > 0.
    Returns:
        a float in [0, 1]; 1.0 when every query's top-k set is unchanged. When a list holds fewer
        than k hits (a corpus smaller than k), the denominator is the longer of the two cut lists,
        so that identical short lists still give 1.0 (two empty lists count as unchanged).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(old_hits) != len(new_hits):
        raise ValueError(
            f"old_hits and new_hits differ in number of queries: {len(old_hits)}, {len(new_hits)}"
        )
    if len(old_hits) == 0:
        raise ValueError("need at least one probe query to measure recall overlap")
    total = 0.0
    for old, new in zip(old_hits, new_hits):
        a, b = list(old)[:k], list(new)[:k]
        denom = max(len(a), len(b))
        total += 1.0 if denom == 0 else len(set(a) & set(b)) / denom
    return total / len(old_hits)


def should_refresh(
    step: int,
    every: int,
    drift_cos: float | None = None,
    cos_threshold: float | None = None,
    overlap: float | None = None,
    overlap_threshold: float | None = None,
) -> tuple[bool, str]:
    """Whether to rebuild the index now, and why.

    Rules, in this order:

    - ``"schedule"``: ``every > 0`` and ``step > 0`` and ``step % every == 0`` (step 0, before any
      update, never refreshes on the schedule; ``every = 0`` turns the schedule off);
    - ``"drift"``: the probe passages' mean cosine ``drift_cos`` (:func:`embedding_drift`) is below
      ``cos_threshold``, or the probe queries' ``overlap`` (:func:`recall_overlap`) is below
      ``overlap_threshold``. A measurement or threshold left ``None`` is not checked.

    Returns:
        ``(True, "schedule")``, ``(True, "drift")`` or ``(False, "")``.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if every < 0:
        raise ValueError(f"every must be >= 0 (0 = no schedule), got {every}")
    if cos_threshold is not None and not -1.0 <= cos_threshold <= 1.0:
        raise ValueError(f"cos_threshold must be in [-1, 1], got {cos_threshold}")
    if overlap_threshold is not None and not 0.0 <= overlap_threshold <= 1.0:
        raise ValueError(f"overlap_threshold must be in [0, 1], got {overlap_threshold}")
    if every > 0 and step > 0 and step % every == 0:
        return True, "schedule"
    if drift_cos is not None and cos_threshold is not None and drift_cos < cos_threshold:
        return True, "drift"
    if overlap is not None and overlap_threshold is not None and overlap < overlap_threshold:
        return True, "drift"
    return False, ""


def moved_passages(old: Any, new: Any, threshold: float) -> np.ndarray:
    """Indices (int64, ascending) of the rows whose cosine between ``old [N, D]`` and ``new [N, D]``
    is below ``threshold``: the passages whose index vectors to replace in a partial refresh.

    Finding them needs ``new`` embeddings of the passages, so the saving is in the index update
    (replace only these rows of the FAISS index) and in what a resumable run must write, not in
    encoding. Keeping the old vectors of the other rows leaves an index that mixes two encoder
    versions, each kept row within cosine ``threshold`` of its fresh embedding.
    """
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [-1, 1], got {threshold}")
    return np.flatnonzero(row_cosine(old, new) < threshold).astype(np.int64)
