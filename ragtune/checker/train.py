"""Training the faithfulness checker: ``train(cfg) -> output folder``.

The checker is a cross-encoder (:func:`ragtune.reranker.model.load_cross_encoder`) that reads an
(evidence, claim) pair and gives one logit, ``sigmoid(logit)`` the probability that the evidence
supports the claim (the MiniCheck / AlignScore recipe, at MiniLM size so it runs on a CPU). It is
trained only on synthetic examples made from the configured corpora
(:func:`ragtune.checker.synth.make_examples`): each source sentence gives a matched pair, one
supported and one unsupported claim over the same evidence, and the loss is pointwise binary
cross-entropy on both (:func:`ragtune.retriever.losses.pointwise_bce_loss`, one group per pair).

The loop is :class:`ragtune.training.Run` (resume, validation, best model, checkpoints, history),
as for the other trainers: bf16 autocast where bf16 is native, no dropout, SDPA attention, pairs
batched by length; under ``torchrun`` each process takes its share of a step's pairs. Validation is
the AUROC of held-out passages' claims (the model kept is the best by it).

Outputs in ``cfg.output_dir``: ``model/`` (a standard ``sentence_transformers.CrossEncoder``
folder plus ``checker.json``, the claim format it was trained on), ``examples.jsonl`` (every
synthetic example with its kind, source passage and split), ``examples.stats.json``,
``checkpoint/``, ``history.jsonl``, ``train_summary.json`` and the resolved ``config.yaml``.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ragtune import distributed as dist
from ragtune.checker.config import CheckerConfig
from ragtune.checker.score import CHECKER_FILE, claim_scores
from ragtune.checker.synth import Example, make_examples
from ragtune.data.io import atomic_write_text, load_corpus, write_jsonl
from ragtune.errors import UserError
from ragtune.eval.faithfulness import auroc
from ragtune.precision import autocast
from ragtune.reranker.model import cross_encoder_to_train, pair_logits_with_graph
from ragtune.retriever.losses import pointwise_bce_loss
from ragtune.training import Plan, Run, adamw, epoch_batches

log = logging.getLogger(__name__)


def load_passages(cfg: CheckerConfig) -> list[tuple[str, str]]:
    """``(id, text)`` of every passage of the configured corpora (ids prefixed by the file when
    there are several), sampled down to ``data.max_passages`` with the seed."""
    passages: list[tuple[str, str]] = []
    many = len(cfg.data.corpus) > 1
    for n, path in enumerate(cfg.data.corpus):
        if not Path(path).exists():
            raise UserError(f"data.corpus: {path} does not exist (a BEIR corpus.jsonl is expected)")
        for pid, p in load_corpus(path).items():
            passages.append((f"{n}:{pid}" if many else pid, p.text))
    if cfg.data.max_passages and len(passages) > cfg.data.max_passages:
        passages = random.Random(cfg.seed).sample(passages, cfg.data.max_passages)
    return passages


def build_examples(cfg: CheckerConfig) -> tuple[list[Example], list[Example]]:
    """``(train, validation)`` synthetic examples; validation holds every example of a seeded
    ``data.val_fraction`` of the passages. Examples come in (supported, unsupported) pairs."""
    d = cfg.data
    passages = load_passages(cfg)
    try:
        examples = make_examples(
            passages,
            per_passage=d.per_passage,
            window=d.window,
            distractor_share=d.distractor_share,
            kinds=d.kinds,
            seed=cfg.seed,
        )
    except ValueError as err:
        raise UserError(f"data.corpus: {err}") from err
    if not examples:
        raise UserError(
            f"data.corpus: no synthetic example could be made from {len(passages)} passages "
            "(they need sentences of 6-60 words holding a name or a number)"
        )
    ids = sorted({e.passage_id for e in examples})
    n_val = round(len(ids) * d.val_fraction)
    val_ids = set(random.Random(cfg.seed + 1).sample(ids, n_val)) if n_val else set()
    train = [e for e in examples if e.passage_id not in val_ids]
    val = [e for e in examples if e.passage_id in val_ids]
    if not train:
        raise UserError("data.val_fraction leaves no training examples")
    return train, val


class CheckerTask:
    """The checker's part of the training loop (:class:`ragtune.training.Task`)."""

    name, unit, metric, higher_is_better = "checker", "pairs", "AUROC", True

    def __init__(self, cfg: CheckerConfig, model: Any, train: list[Example], val: list[Example]):
        self.cfg, self.model, self.val = cfg, model, val
        self.groups = [(train[i], train[i + 1]) for i in range(0, len(train) - 1, 2)]
        self.params = [p for p in model.parameters() if p.requires_grad]

    def epoch_steps(self, epoch: int) -> list[list[int]]:
        lengths = [len(g[0].evidence) + len(g[0].claim) for g in self.groups]
        per_step = max(1, self.cfg.train.batch_size // 2)
        return epoch_batches(lengths, per_step, self.cfg.seed, epoch, True)

    def backward(self, batch: list[int]) -> tuple[float, int]:
        t = self.cfg.train
        groups = [self.groups[i] for i in batch]
        mine = list(dist.shard(groups))
        dev = self.model.device
        chunk_groups = max(1, t.mini_batch_size // 2)
        total = 0.0
        for s in range(0, len(mine), chunk_groups):
            chunk = mine[s : s + chunk_groups]
            pairs = [(e.evidence, e.claim) for g in chunk for e in g]
            with autocast(self.cfg.precision, dev.type):
                logits = pair_logits_with_graph(self.model, pairs)
            loss = pointwise_bce_loss(logits.view(len(chunk), 2)) * len(chunk) / len(groups)
            loss.backward()
            total += float(loss.detach())
        return dist.sum_value(total), 2 * len(groups)

    def validate(self) -> tuple[float, dict[str, Any]] | None:
        if not self.val:
            return None
        was_training = self.model.training
        self.model.eval()
        scores = claim_scores(
            self.model,
            [(e.evidence, e.claim) for e in self.val],
            precision=self.cfg.precision,
            show_progress=False,
        )
        self.model.train(was_training)
        labels = [e.label for e in self.val]
        per_kind = {}
        for kind in sorted({e.kind for e in self.val}):
            idx = [i for i, e in enumerate(self.val) if e.kind == kind]
            if len({labels[i] for i in idx}) == 2:
                per_kind[kind] = round(auroc([labels[i] for i in idx], [scores[i] for i in idx]), 4)
        score = auroc(labels, scores)
        return score, {"val": {"AUROC": score, "AUROC_by_kind": per_kind}}

    def save_model(self, folder: Path) -> None:
        self.model.save(str(folder))
        info = {"format": "ragtune faithfulness checker", "claim": "Question: <q> Answer: <a>, or <a>"}
        atomic_write_text(folder / CHECKER_FILE, json.dumps(info, indent=2) + "\n")

    def checkpoint(self, folder: Path) -> dict[str, Any]:
        self.model.save(str(folder / "model"))
        return {}


def _write_examples(out: Path, train: Sequence[Example], val: Sequence[Example]) -> None:
    rows = [{**asdict(e), "split": split} for split, xs in (("train", train), ("val", val)) for e in xs]
    write_jsonl(out / "examples.jsonl", rows)
    stats = {
        "examples": len(rows),
        "train": len(train),
        "val": len(val),
        "passages": len({e.passage_id for e in (*train, *val)}),
        "by_kind": dict(sorted(Counter(e.kind for e in (*train, *val)).items())),
        "supported_share": sum(e.label for e in (*train, *val)) / max(1, len(rows)),
    }
    atomic_write_text(out / "examples.stats.json", json.dumps(stats, indent=2) + "\n")


def train(cfg: CheckerConfig) -> Path:
    """Train the checker as configured; returns ``cfg.output_dir`` (model in ``model/``)."""
    t = cfg.train
    train_ex, val_ex = build_examples(cfg)
    run = Run(cfg)
    if dist.is_main():
        _write_examples(run.out, train_ex, val_ex)
    start = run.checkpoint / "model" if run.resuming else None
    model = cross_encoder_to_train(start, cfg.model, "sdpa", t.dropout)
    task = CheckerTask(cfg, model, train_ex, val_ex)
    per_epoch = math.ceil(len(task.groups) / max(1, t.batch_size // 2))
    total = min(per_epoch * t.epochs, t.max_steps or per_epoch * t.epochs)
    torch.manual_seed(cfg.seed)
    run.fit(
        task,
        adamw(model, t.lr, t.weight_decay, decay_norms=False),
        Plan(total, per_epoch, t.warmup_ratio, t.max_grad_norm, t.eval_every, t.patience, t.save_every),
    )
    summary = {
        "train_examples": len(train_ex),
        "val_examples": len(val_ex),
        "corpus": [str(p) for p in cfg.data.corpus],
    }
    return run.finish(task, "model", summary)
