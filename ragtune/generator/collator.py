"""From QA examples to training batches: RAFT-style context sampling and padding.

RAFT (Zhang et al., 2024, "RAFT: Adapting Language Model to Domain Specific RAG"): with probability
``p_gold`` the gold passages are shown among distractors, otherwise only distractors are, and the
target is the configured "the passages do not say" answer, so that the model learns both to use the
right passage and to refuse when none holds the answer.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from ragtune.data.schema import Passage
from ragtune.generator.config import RaftConfig
from ragtune.generator.prompt import IGNORE_INDEX, EncodedExample


def raft_contexts(
    gold: Sequence[Passage],
    distractors: Sequence[Passage],
    answer: str,
    no_answer: str,
    cfg: RaftConfig,
    rng: random.Random,
) -> tuple[list[Passage], str, bool]:
    """The passages to show and the target for one example: ``(passages, target, gold_shown)``.

    Distractors that are gold passages are ignored; the shown passages are shuffled with ``rng``.
    """
    gold_ids = {p.id for p in gold}
    pool = [d for d in distractors if d.id not in gold_ids][: cfg.num_distractors]
    with_gold = rng.random() < cfg.p_gold
    passages = list(gold) + pool if with_gold else list(pool)
    rng.shuffle(passages)
    return passages, (answer if with_gold else no_answer), with_gold


def pad_batch(examples: Sequence[EncodedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (padding labelled IGNORE_INDEX),
    each ``[batch, longest]``. A batch whose labels are all IGNORE_INDEX is an error."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[row, :n] = torch.tensor(e.input_ids)
        attention[row, :n] = 1
        labels[row, :n] = torch.tensor(e.labels)
    if bool((labels == IGNORE_INDEX).all()):
        raise ValueError("a batch without any answer token: every label is masked")
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
