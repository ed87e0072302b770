"""When to refresh the passage index during joint tuning, and what to re-encode.

Training both encoders moves the passage embeddings, and an index built with the old passage
encoder goes stale (the query encoder drifts away from it). RA-DIT and REALM (Guu et al., 2020,
"REALM: Retrieval-Augmented Language Model Pre-Training") rebuild the index asynchronously every
few hundred steps; Atlas (Izacard et al., 2022) re-indexes on a schedule as well. Here the index is
rebuilt on a schedule or when a probe sample says the retriever has drifted: the mean cosine between
old and new embeddings of the same probe passages (:func:`embedding_drift`), or the overlap of the
old and new top-k results of probe queries (:func:`ragtune.eval.ir.topk_overlap`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["embedding_drift", "row_cosine", "should_refresh"]


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
      ``cos_threshold``, or the probe queries' ``overlap`` (:func:`ragtune.eval.ir.topk_overlap`) is below
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
