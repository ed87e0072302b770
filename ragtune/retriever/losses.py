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
    return info_nce_from_similarity(q @ p.T, targets, temperature, mask, symmetric)


def info_nce_from_similarity(
    similarity: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 0.05,
    mask: torch.Tensor | None = None,
    symmetric: bool = False,
) -> torch.Tensor:
    """InfoNCE of a ``[B, N]`` query-passage similarity matrix (cosine for the bi-encoder, MaxSim for
    late interaction): logits ``similarity / temperature``, ``targets``, ``mask`` and ``symmetric``
    as in :func:`info_nce_loss`; the symmetric term reads the same matrix's positive columns."""
    logits = similarity.float() / temperature
    if mask is not None:
        logits = logits.masked_fill(mask, float("-inf"))
    loss = F.cross_entropy(logits, targets)
    if symmetric:
        # Row b: positive passage of query b against all queries; query c is masked when that
        # passage is also a positive of c (c != b), which is the transposed mask at column targets[b].
        back = similarity.float()[:, targets].T / temperature
        if mask is not None:
            back = back.masked_fill(mask[:, targets].T, float("-inf"))
        loss = (loss + F.cross_entropy(back, torch.arange(len(targets), device=back.device))) / 2
    return loss


# ------------------------------------------------------------------------- group (ranking) losses
#
# A group is one query's candidates: column 0 its positive, columns 1.. its negatives. ``scores``
# and ``teacher`` are ``[B, G]``; ``valid`` (bool ``[B, G]``, optional) marks real entries, so that
# queries with fewer negatives can share a batch (padding columns are ignored).


def _valid(scores: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    return torch.ones_like(scores, dtype=torch.bool) if valid is None else valid


def pointwise_bce_loss(scores: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy on logits, label 1 for the positive and 0 for each negative, averaged
    over the real entries (sentence-transformers' BinaryCrossEntropyLoss on one group)."""
    v = _valid(scores, valid)
    labels = torch.zeros_like(scores)
    labels[:, 0] = 1.0
    losses = F.binary_cross_entropy_with_logits(scores.float(), labels, reduction="none")
    return losses[v].mean()


def listwise_ce_loss(scores: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax cross-entropy of the positive against its group (FlagEmbedding's reranker loss;
    InfoNCE over one query's candidates, temperature folded into the logits)."""
    logits = scores.float().masked_fill(~_valid(scores, valid), float("-inf"))
    return F.cross_entropy(logits, torch.zeros(len(scores), dtype=torch.long, device=scores.device))


def margin_mse_loss(
    scores: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Margin-MSE (Hofstätter et al. 2020): the student's margin ``s_pos - s_neg`` regresses on the
    teacher's ``t_pos - t_neg``, averaged over every real negative of every group."""
    v = _valid(scores, valid)[:, 1:]
    student = scores.float()[:, :1] - scores.float()[:, 1:]
    target = teacher.float()[:, :1] - teacher.float()[:, 1:]
    return F.mse_loss(student[v], target[v])


def listwise_kl_loss(
    scores: torch.Tensor,
    teacher: torch.Tensor,
    valid: torch.Tensor | None = None,
    teacher_temperature: float = 1.0,
) -> torch.Tensor:
    """KL(teacher || student) between the softmax distributions over each group (the listwise
    distillation of RocketQAv2 and of sentence-transformers' DistillKLDivLoss), mean over groups.
    The student's scores are logits as given; the teacher's are divided by ``teacher_temperature``."""
    v = _valid(scores, valid)
    log_student = F.log_softmax(scores.float().masked_fill(~v, float("-inf")), dim=-1)
    log_teacher = F.log_softmax(
        (teacher.float() / teacher_temperature).masked_fill(~v, float("-inf")), dim=-1
    )
    terms = log_teacher.exp() * (log_teacher - log_student)
    return terms.masked_fill(~v, 0.0).sum(-1).mean()
