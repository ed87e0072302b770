"""An answer's log-likelihood under the generator: the one implementation behind the SFT loss,
validation loss, the joint loop's generator feedback and :class:`~ragtune.generator.likelihood.AnswerLikelihood`.

Everything here takes right-padded batches from :func:`ragtune.generator.collator.pad_batch`
(``input_ids``, ``attention_mask`` and ``labels``, each ``[B, T]``; prompt and padding labelled
``IGNORE_INDEX``), so a token counts exactly where :class:`~ragtune.generator.prompt.PromptEncoder`
put a label: the answer and its end-of-turn token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ragtune import distributed as dist
from ragtune.generator.collator import pad_batch
from ragtune.generator.model import n_virtual_tokens
from ragtune.generator.prompt import IGNORE_INDEX, EncodedExample
from ragtune.precision import autocast


def causal_only(attention_mask: torch.Tensor) -> torch.Tensor | None:
    """``None`` when ``attention_mask`` [B, T] is right padding only (each row ones, then zeros).

    Under causal attention a real token never sees a later position, so right padding needs no
    mask: the pads' own outputs are never read (they carry no label and nothing attends to them).
    Without a mask SDPA takes its causal kernel, which skips the masked half of every score matrix
    instead of reading a [B, 1, T, T] mask: attention was a fifth of a CPU training step with it."""
    lengths = attention_mask.sum(dim=1, keepdim=True)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    right_padded = bool(torch.equal(attention_mask.bool(), positions < lengths))
    return None if right_padded else attention_mask


def token_losses(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], precision: str, logits_only_answers: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of every labelled token of ``batch`` and the batch row it belongs to.

    Position ``t`` predicts token ``t + 1``; with ``logits_only_answers`` the model projects to the
    vocabulary only at the positions whose next token is labelled (``logits_to_keep`` as a boolean
    ``[B, T]`` mask, shifted by the soft prompt under prompt tuning), giving ``[N, V]`` logits; the
    135M-parameter SmolLM2 spends a fifth of its forward pass in the 49k-word output projection.
    Returns ``(ce [N] float32, rows [N] int64)`` in row-major order.
    """
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    labels = batch["labels"]
    targets_mask = labels[:, 1:] != IGNORE_INDEX  # [B, T-1]
    targets = labels[:, 1:][targets_mask]  # [N]
    if int(targets.numel()) == 0:
        raise ValueError("a batch without any answer token: every label is masked")
    rows = torch.nonzero(targets_mask)[:, 0]  # [N]
    kwargs = {}
    if logits_only_answers:
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[:, :-1] = targets_mask
        n_virtual = n_virtual_tokens(model)
        if n_virtual:
            keep = torch.cat([keep.new_zeros(len(keep), n_virtual), keep], dim=1)
        kwargs["logits_to_keep"] = keep
    with autocast(precision, labels.device.type):
        logits = model(
            input_ids=batch["input_ids"],
            attention_mask=causal_only(batch["attention_mask"]),
            use_cache=False,
            **kwargs,
        ).logits
    if logits_only_answers:
        picked = logits.reshape(-1, logits.shape[-1])  # [N, V]
    else:
        logits = logits[:, -labels.shape[1] :]  # drop soft-prompt positions
        picked = logits[:, :-1][targets_mask]
    ce = torch.nn.functional.cross_entropy(picked.float(), targets, reduction="none")
    return ce, rows


def answer_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], precision: str, logits_only_answers: bool = True
) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy of the labelled tokens of ``batch`` and their number."""
    ce, _ = token_losses(model, batch, precision, logits_only_answers)
    return ce.sum(), int(ce.numel())


def backward_answer_loss(
    model: torch.nn.Module,
    padded: Sequence[dict[str, torch.Tensor]],
    precision: str,
    logits_only_answers: bool = True,
) -> tuple[float, int]:
    """Back-propagate the SFT loss of one optimiser step's micro-batches ``padded``: the mean over
    every answer token of all of them (over all processes, when ``padded`` is this process's shard:
    see :func:`ragtune.distributed.shard_groups`), so the step does not depend on how the tokens
    were split. Returns ``(that loss, tokens seen over all processes)``."""
    n_answer = dist.sum_value(sum(int((p["labels"][:, 1:] != IGNORE_INDEX).sum()) for p in padded))
    total = 0.0
    for batch in padded:
        loss, _ = answer_loss(model, batch, precision, logits_only_answers)
        (loss / n_answer).backward()
        total += float(loss.detach())
    tokens = dist.sum_value(sum(int(p["attention_mask"].sum()) for p in padded))
    return dist.sum_value(total) / n_answer, int(tokens)


@torch.no_grad()
def answer_logprobs(
    model: torch.nn.Module,
    examples: Sequence[EncodedExample],
    batch_size: int,
    pad_id: int,
    precision: str,
    logits_only_answers: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each example's log-probability of its labelled tokens under ``model`` (eval mode):
    ``(sums [N] float32, counts [N] int64)``. Batches are sorted by length, so they pad little; an
    example without labelled tokens scores ``(0, 0)``."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(examples), dtype=torch.float32)
    counts = torch.zeros(len(examples), dtype=torch.int64)
    scored = [i for i, e in enumerate(examples) if any(x != IGNORE_INDEX for x in e.labels[1:])]
    order = sorted(scored, key=lambda i: len(examples[i].input_ids))
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        batch = pad_batch([examples[i] for i in idx], pad_id)
        ce, rows = token_losses(model, batch, precision, logits_only_answers)
        index = torch.tensor(idx)[rows]
        sums.index_add_(0, index, -ce.float())
        counts.index_add_(0, index, torch.ones_like(index))
    model.train(was_training)
    return sums, counts


def validation_loss(
    model: torch.nn.Module, examples: Sequence[EncodedExample], batch_size: int, pad_id: int, precision: str
) -> float:
    """Mean cross-entropy per answer token over ``examples``."""
    sums, counts = answer_logprobs(model, examples, batch_size, pad_id, precision)
    return float(-sums.double().sum() / counts.sum())
