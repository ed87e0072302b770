"""Ranking metrics identical to trec_eval: Recall@k, P@k, MRR@k, nDCG@k, MAP@k and Hit@k.

Conventions (the same as trec_eval 9.x, checked against pytrec_eval in the tests):

- **Ranking and ties.** A query's documents are ranked by descending score; equal scores are
  ordered by descending document id (string comparison), which is what trec_eval does. The rank
  column of a run file is ignored.
- **Relevance.** A judged document is relevant when its grade is >= 1. nDCG uses the grade itself
  as the gain (trec_eval's linear gain, not 2^rel - 1) with a log2(rank + 1) discount; the ideal
  ranking orders all judged documents of the query by grade.
- **Cut-offs.** P@k divides by k even when fewer than k documents were retrieved; Recall@k divides
  by the number of relevant documents; MAP@k sums precision at each relevant document within the
  top k and divides by the number of relevant documents; MRR@k is 1/rank of the first relevant
  document within the top k (0 if none); Hit@k is 1 when any relevant document is in the top k.
- **Which queries count.** Averages are over the queries of the qrels that have at least one
  relevant document. Such a query missing from the run scores 0 on every measure (trec_eval's
  ``-c`` option); queries of the run that have no judgements, and judged queries without any
  relevant document, are left out (their recall is undefined).

This module imports neither torch nor any model code.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

DEFAULT_KS: tuple[int, ...] = (1, 3, 5, 10, 20, 100)
METRICS: tuple[str, ...] = ("nDCG", "Recall", "MRR", "MAP", "P", "Hit")


def rank_documents(scores: Mapping[str, float]) -> list[str]:
    """Document ids by descending score, ties by descending id (trec_eval's order)."""
    return [doc for doc, _ in sorted(scores.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)]


def _n_relevant(rels: Mapping[str, int]) -> int:
    return sum(1 for r in rels.values() if r >= 1)


def recall_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    """Fraction of the query's relevant documents found in the top ``k``."""
    n_rel = _n_relevant(rels)
    if n_rel == 0:
        return 0.0
    return sum(1 for d in ranked[:k] if rels.get(d, 0) >= 1) / n_rel


def precision_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    """Relevant documents in the top ``k``, divided by ``k``."""
    return sum(1 for d in ranked[:k] if rels.get(d, 0) >= 1) / k


def mrr_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    """Reciprocal rank of the first relevant document within the top ``k`` (0 if there is none)."""
    for i, d in enumerate(ranked[:k], start=1):
        if rels.get(d, 0) >= 1:
            return 1.0 / i
    return 0.0


def hit_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    """1.0 if any relevant document is in the top ``k``, else 0.0."""
    return 1.0 if any(rels.get(d, 0) >= 1 for d in ranked[:k]) else 0.0


def map_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    """Average precision truncated at ``k`` (trec_eval ``map_cut``)."""
    n_rel = _n_relevant(rels)
    if n_rel == 0:
        return 0.0
    hits, total = 0, 0.0
    for i, d in enumerate(ranked[:k], start=1):
        if rels.get(d, 0) >= 1:
            hits += 1
            total += hits / i
    return total / n_rel


def ndcg_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int) -> float:
    """nDCG at ``k`` with linear gains (the grade) and a log2(rank + 1) discount (trec_eval ``ndcg_cut``)."""
    dcg = sum(max(rels.get(d, 0), 0) / math.log2(i + 1) for i, d in enumerate(ranked[:k], start=1))
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 1) for i, g in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0


_FUNCS = {
    "nDCG": ndcg_at_k,
    "Recall": recall_at_k,
    "MRR": mrr_at_k,
    "MAP": map_at_k,
    "P": precision_at_k,
    "Hit": hit_at_k,
}


@dataclass
class IRResult:
    """Averaged metrics (``{"nDCG@10": ...}``), the same per query, and the query count."""

    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)
    n_queries: int = 0

    def to_dict(self) -> dict:
        return {"metrics": self.metrics, "per_query": self.per_query, "n_queries": self.n_queries}


def evaluate_run(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    ks: Iterable[int] = DEFAULT_KS,
    metrics: Iterable[str] = METRICS,
) -> IRResult:
    """Score a run (query -> document -> score) against qrels (query -> document -> grade).

    Returns averages and per-query values named ``<metric>@<k>``, e.g. ``nDCG@10``.
    """
    ks = sorted(set(ks))
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"cut-offs must be positive integers, got {ks}")
    metrics = list(metrics)
    unknown = [m for m in metrics if m not in _FUNCS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; choose from {list(_FUNCS)}")
    names = [f"{m}@{k}" for m in metrics for k in ks]
    per_query: dict[str, dict[str, float]] = {}
    for qid, rels in qrels.items():
        if _n_relevant(rels) == 0:
            continue
        ranked = rank_documents(run.get(qid, {}))
        per_query[qid] = {f"{m}@{k}": _FUNCS[m](ranked, rels, k) for m in metrics for k in ks}
    n = len(per_query)
    averaged = {name: (sum(q[name] for q in per_query.values()) / n if n else 0.0) for name in names}
    return IRResult(averaged, per_query, n)


def topk_overlap(
    old_hits: Sequence[Sequence[Hashable]], new_hits: Sequence[Sequence[Hashable]], k: int
) -> float:
    """Mean over queries of ``|top-k old ∩ top-k new| / k``: how much of one ranking's top k another
    returns (an approximate index against exact search; a drifted retriever against its old index).

    Args:
        old_hits: per query, the reference ranking (ids or row numbers, best first).
        new_hits: the same queries' other ranking; entries absent from ``old_hits`` (such as FAISS's
            ``-1`` for a missing result) count as misses.
        k: cut-off, > 0.
    Returns:
        a float in [0, 1]. When a list holds fewer than k hits (a corpus smaller than k), the
        denominator is the longer of the two cut lists, so that identical short lists give 1.0
        (two empty lists count as unchanged).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(old_hits) != len(new_hits):
        raise ValueError(
            f"old_hits and new_hits differ in number of queries: {len(old_hits)}, {len(new_hits)}"
        )
    if len(old_hits) == 0:
        raise ValueError("need at least one query to measure top-k overlap")
    total = 0.0
    for old, new in zip(old_hits, new_hits, strict=True):
        a, b = list(old)[:k], list(new)[:k]
        denom = max(len(a), len(b))
        total += 1.0 if denom == 0 else len(set(a) & set(b)) / denom
    return total / len(old_hits)
