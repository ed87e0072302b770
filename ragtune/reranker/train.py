"""Training the cross-encoder reranker: ``train(cfg) -> output folder``.

A training group is one query's positive passage and up to ``train.negatives`` of its mined
negatives (from a triplets file, ``ragtune retriever mine``); the cross-encoder gives each
(query, passage) pair one logit ``[B, 1 + N]`` and one of three losses
(:mod:`ragtune.retriever.losses`) trains it:

- ``bce``: pointwise binary cross-entropy (positive 1, negatives 0; the classic monoBERT recipe);
- ``listwise``: softmax cross-entropy of the positive against its group (FlagEmbedding's reranker);
- ``margin_mse``: the margins ``s_pos - s_neg`` regress on a teacher's (Hofstätter et al. 2020),
  which needs ``teacher`` scores in the triplets file.

Every group's loss stands alone, so a step runs its groups in chunks of ``train.mini_batch_size``
(forward and backward per chunk, gradients accumulated): the same update as one big forward, in
bounded memory. Under ``torchrun`` each process takes its share of the groups. The loop is
:class:`ragtune.training.Run` (resume, validation, best model, checkpoints, history); as in the
bi-encoder's training: bf16 autocast where bf16 is native, no dropout, SDPA attention.

Validation (held-out training queries): each query's positives and mined negatives are reranked
and scored with trec_eval-identical nDCG@10 / MRR@10 (the model kept is the best by nDCG@10).
At the end, the pair-classification threshold with the best F1 on those validation pairs is saved
as ``model/threshold.json`` (to be applied unchanged on test data), with the validation Accuracy,
Precision, Recall and F1 at it.

Outputs in ``cfg.output_dir``: ``model/`` (a standard ``sentence_transformers.CrossEncoder``
folder), ``checkpoint/``, ``history.jsonl``, ``train_summary.json``, the resolved ``config.yaml``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ragtune import distributed as dist
from ragtune.data.io import DataError, atomic_write_text, load_corpus, load_queries, load_triplets
from ragtune.data.schema import Passage, Query, Triplet
from ragtune.errors import UserError
from ragtune.eval.classification import best_f1_threshold, classification_metrics
from ragtune.eval.ir import evaluate_run
from ragtune.precision import autocast
from ragtune.reranker.config import RerankerConfig
from ragtune.reranker.model import (
    cross_encoder_to_train,
    load_cross_encoder,
    pair_logits_with_graph,
    score_pairs,
)
from ragtune.reranker.rerank import THRESHOLD_FILE
from ragtune.retriever.losses import listwise_ce_loss, margin_mse_loss, pointwise_bce_loss
from ragtune.retriever.train import split_validation
from ragtune.training import Plan, Run, adamw, epoch_batches

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Group:
    """One training group: a query, its positive first then its negatives, and the teacher's score
    of each passage (same order) when the loss needs them."""

    query: Query
    passages: tuple[Passage, ...]
    teacher: tuple[float, ...] | None = None


def build_groups(
    triplets: Sequence[Triplet], negatives: int, need_teacher: bool, source: str = "triplets"
) -> list[Group]:
    """One group per (query, positive) pair with up to ``negatives`` negatives (known positives of
    the query are never negatives). With ``need_teacher`` every passage needs a teacher score."""
    positives: dict[str, set[str]] = {}
    for t in triplets:
        positives.setdefault(t.query.id, set()).update(p.id for p in t.positives)
    groups = []
    for n, t in enumerate(triplets, start=1):
        negs = [x.passage for x in t.negatives if x.passage.id not in positives[t.query.id]][:negatives]
        if not negs:
            continue  # nothing to rank against
        for p in t.positives:
            passages = (p, *negs)
            teacher = None
            if need_teacher:
                scores = t.teacher or {}
                missing = [x.id for x in passages if x.id not in scores]
                if missing:
                    raise DataError(
                        Path(source),
                        n,
                        "teacher",
                        f"train.loss=margin_mse needs a teacher score for every passage; "
                        f"{missing[0]!r} has none (run `ragtune retriever score-triplets`)",
                    )
                teacher = tuple(scores[x.id] for x in passages)
            groups.append(Group(t.query, passages, teacher))
    return groups


def group_loss(cfg: RerankerConfig, logits: torch.Tensor, groups: Sequence[Group]) -> torch.Tensor:
    """The configured loss summed over ``groups`` (each group's mean loss), given their flattened
    logits in group order. Groups of different sizes are padded and masked."""
    width = max(len(g.passages) for g in groups)
    scores = logits.new_zeros(len(groups), width, dtype=torch.float32)
    valid = torch.zeros(len(groups), width, dtype=torch.bool, device=logits.device)
    k = 0
    for i, g in enumerate(groups):
        scores[i, : len(g.passages)] = logits[k : k + len(g.passages)].float()
        valid[i, : len(g.passages)] = True
        k += len(g.passages)
    loss = cfg.train.loss
    if loss == "bce":
        per = torch.stack(
            [pointwise_bce_loss(scores[i : i + 1], valid[i : i + 1]) for i in range(len(groups))]
        )
        return per.sum()
    if loss == "listwise":
        return listwise_ce_loss(scores, valid) * len(groups)
    teacher = torch.zeros_like(scores)
    for i, g in enumerate(groups):
        teacher[i, : len(g.passages)] = torch.tensor(g.teacher, dtype=torch.float32)
    per = torch.stack(
        [margin_mse_loss(scores[i : i + 1], teacher[i : i + 1], valid[i : i + 1]) for i in range(len(groups))]
    )
    return per.sum()


class Validator:
    """Held-out queries: their positives and negatives reranked (nDCG@10, MRR@10) and classified."""

    def __init__(self, cfg: RerankerConfig, val: Sequence[Triplet]):
        self.cfg = cfg
        self.queries: dict[str, Query] = {}
        self.candidates: dict[str, dict[str, Passage]] = {}
        self.qrels: dict[str, dict[str, int]] = {}
        for t in val:
            self.queries[t.query.id] = t.query
            cands = self.candidates.setdefault(t.query.id, {})
            for p in t.positives:
                cands[p.id] = p
                self.qrels.setdefault(t.query.id, {})[p.id] = 1
            for n in t.negatives:
                cands.setdefault(n.passage.id, n.passage)
        self.pairs = [(qid, pid) for qid, cands in self.candidates.items() for pid in cands]

    def scores(self, model: Any) -> list[float]:
        was_training = model.training
        model.eval()
        texts = [(self.queries[q].text, self.candidates[q][p].full_text()) for q, p in self.pairs]
        out = score_pairs(
            model,
            texts,
            batch_size=self.cfg.rerank.batch_size,
            precision=self.cfg.precision,
            show_progress=False,
        )
        model.train(was_training)
        return [float(x) for x in out]

    def __call__(self, model: Any) -> dict[str, float]:
        run: dict[str, dict[str, float]] = {}
        for (qid, pid), s in zip(self.pairs, self.scores(model), strict=True):
            run.setdefault(qid, {})[pid] = s
        return evaluate_run(run, self.qrels, ks=(10,), metrics=("nDCG", "MRR")).metrics

    def classification(self, model: Any) -> dict[str, Any]:
        """The best-F1 threshold on these pairs and the metrics at it."""
        probs = [1.0 / (1.0 + math.exp(-s)) for s in self.scores(model)]
        labels = [int(self.qrels[q].get(p, 0) >= 1) for q, p in self.pairs]
        threshold = best_f1_threshold(labels, probs)
        return {
            "threshold": threshold,
            "chosen_on": "F1 of the validation pairs",
            "val": classification_metrics(labels, probs, threshold),
        }


class RerankTask:
    """The cross-encoder's part of the training loop (:class:`ragtune.training.Task`)."""

    name, unit, metric, higher_is_better = "reranker", "pairs", "nDCG@10", True

    def __init__(self, cfg: RerankerConfig, model: Any, groups: list[Group], validator: Validator | None):
        self.cfg, self.model, self.groups, self.validator = cfg, model, groups, validator
        self.params = [p for p in model.parameters() if p.requires_grad]

    def epoch_steps(self, epoch: int) -> list[list[int]]:
        lengths = [len(g.passages) for g in self.groups]
        return epoch_batches(lengths, self.cfg.train.batch_size, self.cfg.seed, epoch, False)

    def backward(self, batch: list[int]) -> tuple[float, int]:
        t = self.cfg.train
        groups = [self.groups[i] for i in batch]
        mine = list(dist.shard(groups))
        dev = self.model.device
        total = 0.0
        for s in range(0, len(mine), t.mini_batch_size):
            chunk = mine[s : s + t.mini_batch_size]
            pairs = [(g.query.text, p.full_text()) for g in chunk for p in g.passages]
            with autocast(self.cfg.precision, dev.type):
                logits = pair_logits_with_graph(self.model, pairs)
            loss = group_loss(self.cfg, logits, chunk) / len(groups)
            loss.backward()
            total += float(loss.detach())
        n_pairs = sum(len(g.passages) for g in groups)
        return dist.sum_value(total), n_pairs

    def validate(self) -> tuple[float, dict[str, Any]] | None:
        if self.validator is None:
            return None
        metrics = self.validator(self.model)
        return metrics["nDCG@10"], {"val": metrics}

    def save_model(self, folder: Path) -> None:
        self.model.save(str(folder))

    def checkpoint(self, folder: Path) -> dict[str, Any]:
        self.model.save(str(folder / "model"))
        return {}


def train(cfg: RerankerConfig) -> Path:
    """Train the cross-encoder as configured; returns ``cfg.output_dir`` (model in ``model/``)."""
    t = cfg.train
    if cfg.data.triplets is None:
        raise UserError(
            "reranker training needs data.triplets: a triplets file with negatives "
            "(`ragtune retriever mine` writes one)"
        )
    folder = Path(cfg.data.beir_dir)
    corpus, queries = load_corpus(folder / "corpus.jsonl"), load_queries(folder / "queries.jsonl")
    triplets = load_triplets(cfg.data.triplets, corpus, queries)
    train_t, val_t = split_validation(triplets, cfg.data.val_fraction, cfg.seed)
    groups = build_groups(train_t, t.negatives, t.loss == "margin_mse", str(cfg.data.triplets))
    if not groups:
        raise UserError(f"{cfg.data.triplets}: no training group (no triplet has a negative)")
    run = Run(cfg)
    start = run.checkpoint / "model" if run.resuming else None
    model = cross_encoder_to_train(start, cfg.model, t.attn_implementation, t.dropout)
    validator = Validator(cfg, val_t) if val_t else None
    task = RerankTask(cfg, model, groups, validator)
    per_epoch = math.ceil(len(groups) / t.batch_size)
    total = min(per_epoch * t.epochs, t.max_steps or per_epoch * t.epochs)
    run.fit(
        task,
        adamw(model, t.lr, t.weight_decay, decay_norms=False),
        Plan(total, per_epoch, t.warmup_ratio, t.max_grad_norm, t.eval_every, t.patience, t.save_every),
    )

    def write_threshold(final: Path) -> None:
        if validator is None:
            info: dict[str, Any] = {"threshold": 0.5, "chosen_on": "default (no validation queries)"}
        else:
            final_model = load_cross_encoder(
                str(final), max_length=cfg.model.max_length, precision=cfg.precision
            )
            info = validator.classification(final_model)
        atomic_write_text(final / THRESHOLD_FILE, json.dumps(info, indent=2) + "\n")

    summary = {
        "groups": len(groups),
        "loss": t.loss,
        "validation_queries": len({x.query.id for x in val_t}),
    }
    return run.finish(task, "model", summary, after=write_threshold)
