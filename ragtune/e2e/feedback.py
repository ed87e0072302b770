"""The generator's feedback on retrieved passages, and the losses that teach it to the retriever.

LM-supervised retrieval (LSR) trains the retriever to rank the top-K passages of a question the way
the generator values them: the target is the distribution ``softmax(log p_gen(answer | question,
passage) / tau)`` over the K passages, and the loss is the KL divergence from it to the retriever's
``softmax(score / gamma)`` (REPLUG LSR, Shi et al., 2023, "REPLUG: Retrieval-Augmented Black-Box
Language Models"; RA-DIT, Lin et al., 2023, "RA-DIT: Retrieval-Augmented Dual Instruction
Tuning"). Atlas's perplexity distillation (Izacard et al., 2022, "Atlas: Few-shot Learning with
Retrieval Augmented Language Models") is the same loss on the per-token mean log-likelihood.

:func:`likely_false_negatives` uses the generator's scores (:mod:`ragtune.generator.scoring`) to
spot retrieved negatives that help the generator as much as the gold passage.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["likely_false_negatives", "lsr_loss", "pdist_loss"]


def lsr_loss(
    retriever_scores: torch.Tensor,
    lm_scores: torch.Tensor,
    tau: float = 1.0,
    gamma: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """LM-supervised retrieval loss (REPLUG LSR, Shi et al. 2023; RA-DIT, Lin et al. 2023).

    For each question b over its K passages::

        target[b] = softmax(lm_scores[b] / tau)             (no gradient)
        pred[b]   = log_softmax(retriever_scores[b] / gamma)
        loss      = mean_b KL(target[b] || exp(pred[b]))
                  = mean_b sum_k target[b, k] * (log target[b, k] - pred[b, k])

    Entries with ``mask`` False (padding) are left out of both softmaxes and of the sum. An unmasked
    ``lm_scores`` entry of ``-inf`` (the generator gives the answer probability 0) gets target 0 and
    adds nothing (``0 * log 0 = 0``). Equal to ``F.kl_div(pred, target, reduction="batchmean")``.

    Args:
        retriever_scores: ``[B, K]`` the retriever's scores (e.g. query-passage dot products) of
            the top-K passages of each question; gradients flow into these only.
        lm_scores: ``[B, K]`` the generator's ``log p(answer | question, passage_k)``; detached.
        tau: temperature of the target (smaller: sharper, tending to one-hot on the best passage).
        gamma: temperature of the retriever's distribution.
        mask: optional bool ``[B, K]``, True = a real passage, False = padding.
    Returns:
        scalar loss, the KL averaged over the B questions.
    Raises:
        ValueError: on shapes that are not the same ``[B, K]``, ``tau`` or ``gamma`` not > 0, a NaN
            generator score, or a question without any unmasked passage of finite generator score.
    """
    if retriever_scores.dim() != 2 or retriever_scores.shape != lm_scores.shape:
        raise ValueError(
            "retriever_scores and lm_scores must both be [B, K], got "
            f"{tuple(retriever_scores.shape)} and {tuple(lm_scores.shape)}"
        )
    if mask is not None and mask.shape != retriever_scores.shape:
        raise ValueError(f"mask must be [B, K] = {tuple(retriever_scores.shape)}, got {tuple(mask.shape)}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    if retriever_scores.shape[0] == 0 or retriever_scores.shape[1] == 0:
        raise ValueError(f"need at least one question and one passage, got {tuple(retriever_scores.shape)}")

    valid = (
        torch.ones_like(retriever_scores, dtype=torch.bool)
        if mask is None
        else mask.to(device=retriever_scores.device, dtype=torch.bool)
    )
    lm = lm_scores.detach().to(device=retriever_scores.device, dtype=torch.float32) / tau
    lm = lm.masked_fill(~valid, float("-inf"))
    if bool(torch.isnan(lm).any()):
        rows = torch.nonzero(torch.isnan(lm).any(dim=-1)).flatten().tolist()
        raise ValueError(f"lm_scores are NaN for unmasked passages of question(s) {rows}")
    empty = lm.amax(dim=-1) == float("-inf")
    if bool(empty.any()):
        rows = torch.nonzero(empty).flatten().tolist()
        raise ValueError(
            f"question(s) {rows} have no passage with a finite generator score (all masked or -inf)"
        )
    log_target = torch.log_softmax(lm, dim=-1)  # -inf where masked or lm_scores = -inf
    target = log_target.exp()
    pred = torch.log_softmax(
        (retriever_scores.float() / gamma).masked_fill(~valid, float("-inf")), dim=-1
    )  # [B, K]
    keep = target > 0
    # Zero the terms with target 0 before multiplying, so that -inf - (-inf) never makes a NaN.
    diff = torch.where(keep, log_target - pred, torch.zeros_like(pred))
    return (target * diff).sum(dim=-1).mean()


def pdist_loss(
    retriever_scores: torch.Tensor,
    lm_logprob_sum: torch.Tensor,
    n_tokens: torch.Tensor,
    tau: float = 1.0,
    gamma: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Perplexity distillation (Atlas PDist, Izacard et al. 2022): :func:`lsr_loss` on the per-token
    mean log-likelihood of the answer, ``lm_logprob_sum / n_tokens``, as Atlas's code computes it.

    With the same answer (hence the same token count n) for every passage of a question, this is
    LSR with ``tau * n``: a flatter target for longer answers.

    Args:
        retriever_scores: ``[B, K]`` the retriever's scores.
        lm_logprob_sum: ``[B, K]`` sum over the answer's tokens of ``log p(token | ...)``.
        n_tokens: ``[B, K]`` number of scored answer tokens; must be > 0 where ``mask`` is True.
        tau, gamma, mask: as in :func:`lsr_loss`.
    Returns:
        scalar loss.
    """
    if n_tokens.shape != lm_logprob_sum.shape:
        raise ValueError(
            f"n_tokens must be the shape of lm_logprob_sum {tuple(lm_logprob_sum.shape)}, "
            f"got {tuple(n_tokens.shape)}"
        )
    counts = n_tokens.to(device=lm_logprob_sum.device, dtype=torch.float32)
    valid = torch.ones_like(counts, dtype=torch.bool) if mask is None else mask.to(counts.device).bool()
    if bool((valid & (counts <= 0)).any()):
        raise ValueError("n_tokens must be > 0 for every unmasked passage (the answer has no scored token)")
    normalised = lm_logprob_sum.float() / counts.masked_fill(~valid, 1.0)
    return lsr_loss(retriever_scores, normalised, tau=tau, gamma=gamma, mask=mask)


def likely_false_negatives(
    gold_gain: float, candidate_gain: Sequence[float] | np.ndarray, ratio: float = 0.9
) -> list[bool]:
    """Generator-checked negatives: which candidate negatives of one question are likely positives.

    A passage's *gain* is how much it raises the generator's log-likelihood of the gold answer over
    no passage: ``gain(p) = log p(answer | question, p) - log p(answer | question)`` (both from
    the joint loop's generator scores, in the same units: sums, or both per-token means). Candidate i is
    flagged when

        ``gold_gain > 0  and  candidate_gain[i] >= ratio * gold_gain``

    i.e. it helps the generator at least ``ratio`` times as much as the gold passage does (the same
    shape of rule as the score-ratio filter of :mod:`ragtune.retriever.mining`). When the gold
    passage does not help (``gold_gain <= 0``, or NaN) the generator offers no evidence about what a
    useful passage looks like, and nothing is flagged: the check only ever drops negatives on
    positive evidence. A NaN candidate gain is never flagged.

    Args:
        gold_gain: the gold passage's gain (with several gold passages, the caller picks one, e.g.
            the smallest, which flags the most).
        candidate_gain: ``[N]`` the gains of the N candidate negatives.
        ratio: > 0; e.g. 0.9 flags candidates within 10% of the gold gain, 1.0 only those at least
            as helpful as the gold passage.
    Returns:
        N booleans, True = likely false negative (drop it).
    """
    if not ratio > 0:
        raise ValueError(f"ratio must be > 0, got {ratio}")
    gains = np.asarray(candidate_gain, dtype=np.float64).reshape(-1)
    gold = float(gold_gain)
    if not gold > 0:
        return [False] * len(gains)
    return [bool(g >= ratio * gold) for g in gains]
