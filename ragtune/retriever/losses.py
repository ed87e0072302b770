"""Contrastive losses for the bi-encoder.

InfoNCE over in-batch and hard negatives is the DPR objective (Karpukhin et al., EMNLP 2020; the
same as sentence-transformers' MultipleNegativesRankingLoss): each query must pick its positive
among all passages of the batch. Two details matter for domain data:

- **False-negative masking.** A passage of the batch that is a known positive of a query (another
  pair of the same query, or the same document as another query's positive) is not a negative for
  that query: its logit is masked out instead of being pushed down.
- **Symmetric term.** Optionally each positive passage must also pick its query among the batch's
  queries (as in CLIP and Tevatron's symmetric option), again with shared positives masked.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def false_negative_mask(
    query_positive_ids: Sequence[set[str]], passage_ids: Sequence[str], targets: torch.Tensor
) -> torch.Tensor:
    """Bool ``[n_queries, n_passages]``: True where passage j is a known positive of query i other
    than the one at ``targets[i]`` (those logits must not count as negatives)."""
    mask = torch.zeros(len(query_positive_ids), len(passage_ids), dtype=torch.bool)
    for i, positives in enumerate(query_positive_ids):
        for j, pid in enumerate(passage_ids):
            if pid in positives and j != int(targets[i]):
                mask[i, j] = True
    return mask


def info_nce_loss(
    queries: torch.Tensor,
    passages: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 0.05,
    mask: torch.Tensor | None = None,
    symmetric: bool = False,
) -> torch.Tensor:
    """InfoNCE with in-batch and hard negatives, on cosine similarities.

    Args:
        queries: ``[B, d]`` query embeddings (normalised here).
        passages: ``[N, d]`` passage embeddings, N >= B: every positive and hard negative of the batch.
        targets: ``[B]`` index into ``passages`` of each query's positive.
        temperature: logits are ``cos / temperature``.
        mask: optional bool ``[B, N]``, True = drop that logit (known false negative).
        symmetric: add the passage -> query term over the B positives, averaged with the first.
    Returns:
        scalar loss (mean cross-entropy).
    """
    q = F.normalize(queries.float(), dim=-1)
    p = F.normalize(passages.float(), dim=-1)
    logits = q @ p.T / temperature
    if mask is not None:
        logits = logits.masked_fill(mask, float("-inf"))
    loss = F.cross_entropy(logits, targets)
    if symmetric:
        # Row b: positive passage of query b against all queries; query c is masked when that
        # passage is also a positive of c (c != b), which is the transposed mask at column targets[b].
        back = p[targets] @ q.T / temperature
        if mask is not None:
            back = back.masked_fill(mask[:, targets].T, float("-inf"))
        loss = (loss + F.cross_entropy(back, torch.arange(len(targets), device=back.device))) / 2
    return loss
