"""Contrastive training of the bi-encoder: ``train(cfg) -> output folder``.

One step takes ``batch_size`` (query, positive, hard negatives) examples, encodes queries and
passages with their own length limits, and minimises InfoNCE over in-batch plus hard negatives with
known positives masked (:mod:`ragtune.retriever.losses`). What makes it fast on a CPU (each lever
measured in ``benchmarks/retriever_scifact``):

- bf16 autocast where bf16 is native (``precision: auto``: AMX / AVX512-BF16), fp32 master weights
  and optimiser; fp32 elsewhere (:mod:`ragtune.precision`);
- no dropout by default: the peer spends about a quarter of a step generating dropout masks;
- SDPA attention instead of eager softmax(QK^T)V;
- length-grouped batches, so a batch pads to similar lengths; queries padded separately at 64 tokens.

The cached mode (GradCache, Gao et al. 2021) encodes the batch without a graph, takes the loss
gradient with respect to the embeddings, then re-encodes mini-batches with a graph and
back-propagates those gradients: the same update as a plain step, in memory bounded by the
mini-batch.

Outputs in ``cfg.output_dir``: ``model/`` (the final model: the best validated one when validating;
a standard sentence-transformers folder), ``checkpoint/`` (resumable state, rewritten atomically
every ``save_every`` steps), ``history.jsonl`` (loss, learning rate, throughput, validation), and the
resolved ``config.yaml``. Running the same command again after a kill resumes from ``checkpoint/``
and ends with the same weights as an unbroken run.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer

from ragtune import distributed as dist
from ragtune.data.io import DataError, load_beir, load_triplets
from ragtune.data.schema import Passage, Query, Triplet
from ragtune.errors import UserError
from ragtune.eval.ir import evaluate_run
from ragtune.models import resolve_model, set_dropout
from ragtune.precision import autocast
from ragtune.retriever.config import RetrieverConfig
from ragtune.retriever.losses import (
    false_negative_mask,
    info_nce_from_similarity,
    listwise_kl_loss,
    margin_mse_loss,
)
from ragtune.retriever.model import encode_with_graph
from ragtune.training import Plan, Run, adamw, epoch_batches

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """One training example: a query, one positive, its hard negatives, and every known positive id
    of the query (for false-negative masking)."""

    query: Query
    positive: Passage
    negatives: tuple[Passage, ...]
    positive_ids: frozenset[str]
    teacher: tuple[float, ...] | None = None  # teacher scores of (positive, *negatives), for distillation


# ------------------------------------------------------------------------------------------ data


def build_examples(
    triplets: Sequence[Triplet], hard_negatives: int, need_teacher: bool = False, source: str = "triplets"
) -> list[Example]:
    """One example per (query, positive) pair, with up to ``hard_negatives`` negatives each; with
    ``need_teacher``, the teacher score of each of its passages (a named error when one is missing)."""
    positives: dict[str, set[str]] = {}
    for t in triplets:
        positives.setdefault(t.query.id, set()).update(p.id for p in t.positives)
    out = []
    for n, t in enumerate(triplets, start=1):
        negs = tuple(n.passage for n in t.negatives if n.passage.id not in positives[t.query.id])[
            :hard_negatives
        ]
        for p in t.positives:
            teacher = None
            if need_teacher:
                scores = t.teacher or {}
                missing = [x.id for x in (p, *negs) if x.id not in scores]
                if missing:
                    raise DataError(
                        Path(source),
                        n,
                        "teacher",
                        f"a distillation loss needs a teacher score for every passage; {missing[0]!r} "
                        "has none (run `ragtune retriever score-triplets`)",
                    )
                teacher = tuple(scores[x.id] for x in (p, *negs))
            out.append(Example(t.query, p, negs, frozenset(positives[t.query.id]), teacher))
    return out


def batch_loss(
    cfg: RetrieverConfig,
    q: torch.Tensor,
    p: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    batch: Sequence[Example],
) -> torch.Tensor:
    """The configured loss of one batch from its embeddings: ``q`` ``[B, d]``, ``p`` ``[N, d]`` (the
    B positives, then each example's negatives in order), scored by cosine
    (:func:`similarity_loss`)."""
    sim = F.normalize(q.float(), dim=-1) @ F.normalize(p.float(), dim=-1).T
    return similarity_loss(cfg, sim, targets, mask, batch)


def similarity_loss(
    cfg: RetrieverConfig,
    sim: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    batch: Sequence[Example],
) -> torch.Tensor:
    """The configured loss of one batch from its ``[B, N]`` query-passage similarities (cosine, or
    MaxSim for late interaction); columns: the B positives, then each example's negatives in order.

    ``info_nce``: InfoNCE over in-batch and hard negatives. ``margin_mse`` / ``kl``: each example's
    own group (its positive and hard negatives) scored ``similarity / temperature`` and taught the
    teacher's scores (Margin-MSE, Hofstätter et al. 2020; listwise KL), plus ``in_batch_weight`` x
    InfoNCE."""
    t = cfg.train
    nce = info_nce_from_similarity(sim, targets, t.temperature, mask, t.symmetric)
    if t.loss == "info_nce":
        return nce
    width = 1 + max(len(e.negatives) for e in batch)
    index = torch.zeros(len(batch), width, dtype=torch.long, device=sim.device)
    valid = torch.zeros(len(batch), width, dtype=torch.bool, device=sim.device)
    teacher = torch.zeros(len(batch), width, dtype=torch.float32, device=sim.device)
    offset = len(batch)
    for i, e in enumerate(batch):
        cols = [i, *range(offset, offset + len(e.negatives))]
        offset += len(e.negatives)
        index[i, : len(cols)] = torch.tensor(cols)
        valid[i, : len(cols)] = True
        teacher[i, : len(cols)] = torch.tensor(e.teacher, dtype=torch.float32)
    scores = sim.float().gather(1, index) / t.temperature
    if t.loss == "margin_mse":
        distill = margin_mse_loss(scores, teacher, valid)
    else:
        distill = listwise_kl_loss(scores, teacher, valid, t.teacher_temperature)
    return distill + t.in_batch_weight * nce if t.in_batch_weight else distill


def _training_triplets(cfg: RetrieverConfig) -> tuple[list[Triplet], dict[str, Passage]]:
    data = load_beir(cfg.data.beir_dir, cfg.data.train_split)
    if cfg.data.triplets is not None:
        return load_triplets(cfg.data.triplets, data.corpus, data.queries), data.corpus
    triplets = [
        Triplet(data.queries[qid], tuple(data.corpus[d] for d, r in rels.items() if r >= 1))
        for qid, rels in data.qrels.items()
        if any(r >= 1 for r in rels.values())
    ]
    if cfg.train.hard_negatives:
        log.warning(
            "no data.triplets given: training on in-batch negatives only (run `ragtune retriever mine`)"
        )
    return triplets, data.corpus


def split_validation(
    triplets: list[Triplet], fraction: float, seed: int
) -> tuple[list[Triplet], list[Triplet]]:
    """Hold out a seeded ``fraction`` of the query ids (all their triplets) for validation."""
    qids = sorted({t.query.id for t in triplets})
    n_val = round(len(qids) * fraction)
    val = set(random.Random(seed).sample(qids, n_val)) if n_val else set()
    return [t for t in triplets if t.query.id not in val], [t for t in triplets if t.query.id in val]


def batch_order(
    examples: Sequence[Example], batch_size: int, seed: int, epoch: int, group_by_length: bool
) -> list[list[int]]:
    """The batches of one epoch as lists of example indices (:func:`ragtune.training.epoch_batches`;
    length grouping by positive passage length, in chunks of 50 batches)."""
    lengths = [len(e.positive.full_text()) for e in examples]
    return epoch_batches(lengths, batch_size, seed, epoch, group_by_length, chunk_batches=50)


# ----------------------------------------------------------------------------------------- model


def load_for_training(cfg: RetrieverConfig, path: str | Path | None = None) -> SentenceTransformer:
    """The encoder (``cfg.model.name``, or a checkpoint's ``path``) with the chosen attention kernel
    and dropout set as configured: a ``SentenceTransformer``, or with ``model.kind=colbert`` a
    ``MultiVectorEncoder`` (:mod:`ragtune.retriever.colbert`)."""
    m = cfg.model
    if m.kind == "colbert":
        from ragtune.retriever.colbert import load_colbert

        return load_colbert(
            str(path) if path is not None else m.name,
            dim=m.colbert_dim,
            query_length=m.max_query_length,
            document_length=m.max_passage_length,
            query_expansion=m.query_expansion,
            device=str(dist.device()),
            trust_remote_code=m.trust_remote_code,
            attn_implementation=cfg.train.attn_implementation,
            dropout=cfg.train.dropout,
        )
    model = SentenceTransformer(
        str(path) if path is not None else resolve_model(cfg.model.name),
        device=str(dist.device()),
        trust_remote_code=cfg.model.trust_remote_code,
        model_kwargs={"attn_implementation": cfg.train.attn_implementation, "use_safetensors": True},
    )
    return set_dropout(model, cfg.train.dropout)


def _batch_tensors(cfg: RetrieverConfig, batch: Sequence[Example]):
    """Texts and targets of one batch: queries, passages (positives then negatives), targets, mask."""
    m = cfg.model
    queries = [m.query_prefix + e.query.text for e in batch]
    passages = [e.positive for e in batch] + [n for e in batch for n in e.negatives]
    ptexts = [m.passage_prefix + p.full_text() for p in passages]
    targets = torch.arange(len(batch))
    mask = false_negative_mask([e.positive_ids for e in batch], [p.id for p in passages], targets)
    return queries, ptexts, targets, mask


def step_loss(model: SentenceTransformer, cfg: RetrieverConfig, batch: Sequence[Example]) -> float:
    """Forward and backward of one global batch (plain or cached); returns the loss value.

    With several processes (:mod:`ragtune.distributed`) each one encodes its contiguous shard of the
    batch's queries and of its passages; the embeddings are gathered, so every process computes the
    loss of the whole batch with every in-batch negative. The gradients this process's parameters
    receive are its shard's part of the global gradient; the caller sums them over processes.
    """
    queries, ptexts, targets, mask = _batch_tensors(cfg, batch)
    t, m = cfg.train, cfg.model
    dev = model.device
    targets, mask = targets.to(dev), mask.to(dev)
    if m.kind == "colbert":
        return _colbert_step(model, cfg, batch, queries, ptexts, targets, mask)
    chunks = [(list(dist.shard(queries)), m.max_query_length, len(queries))]
    chunks.append((list(dist.shard(ptexts)), m.max_passage_length, len(ptexts)))
    if not t.cached:
        with autocast(cfg.precision, dev.type):
            q, p = (dist.gather_rows(encode_with_graph(model, x, n), total) for x, n, total in chunks)
        loss = batch_loss(cfg, q, p, targets, mask, batch)
        # Every process computed the same global loss, and the gather's backward sums what all of
        # them send to each shard's rows: divide by the number of processes.
        (loss / dist.world_size()).backward()
        return float(loss.detach())
    # GradCache: 1) embeddings without a graph, 2) loss gradient w.r.t. embeddings, 3) re-encode with
    # a graph chunk by chunk and back-propagate that gradient (RNG replayed so dropout masks match).
    reps, states = [], []
    with torch.no_grad(), autocast(cfg.precision, dev.type):
        for texts, length, total in chunks:
            parts = [torch.zeros(0, model.get_embedding_dimension(), device=dev)]
            for s in range(0, len(texts), t.mini_batch_size):
                states.append(torch.get_rng_state())
                parts.append(encode_with_graph(model, texts[s : s + t.mini_batch_size], length).float())
            reps.append(dist.gather_rows(torch.cat(parts), total))
    q, p = (r.detach().requires_grad_() for r in reps)
    loss = batch_loss(cfg, q, p, targets, mask, batch)
    loss.backward()
    grads = [q.grad, p.grad]
    k = 0
    for (texts, length, total), grad in zip(chunks, grads, strict=True):
        start, _ = dist.shard_bounds(total)
        for s in range(0, len(texts), t.mini_batch_size):
            torch.set_rng_state(states[k])
            k += 1
            with autocast(cfg.precision, dev.type):
                emb = encode_with_graph(model, texts[s : s + t.mini_batch_size], length)
            emb.float().backward(grad[start + s : start + s + len(emb)])
    return float(loss.detach())


def _colbert_step(model, cfg: RetrieverConfig, batch, queries, ptexts, targets, mask) -> float:
    """One late-interaction step: token vectors of the batch's queries and passages, their MaxSim
    matrix (sentence-transformers' ``maxsim``, differentiable), the configured loss of it."""
    from sentence_transformers.util.similarity import maxsim

    from ragtune.retriever.colbert import token_embeddings_with_graph

    if dist.world_size() > 1:
        raise UserError("model.kind=colbert trains in one process (torchrun serves model.kind=dense)")
    with autocast(cfg.precision, model.device.type):
        q, q_mask = token_embeddings_with_graph(model, queries, "query")
        p, p_mask = token_embeddings_with_graph(model, ptexts, "document")
    sim = maxsim(q.float(), p.float(), q_mask, p_mask)
    loss = similarity_loss(cfg, sim, targets, mask, batch)
    loss.backward()
    return float(loss.detach())


# ------------------------------------------------------------------------------------ validation


class Validator:
    """nDCG@10 on held-out queries over their positives plus a seeded sample of the corpus."""

    def __init__(self, cfg: RetrieverConfig, val: Sequence[Triplet], corpus: dict[str, Passage]):
        self.cfg = cfg
        self.queries = {t.query.id: t.query for t in val}
        self.qrels: dict[str, dict[str, int]] = {}
        for t in val:
            self.qrels.setdefault(t.query.id, {}).update({p.id: 1 for p in t.positives})
        keep = {pid for rels in self.qrels.values() for pid in rels}
        others = sorted(set(corpus) - keep)
        n_extra = max(0, min(len(others), cfg.data.val_corpus_size - len(keep)))
        keep |= set(random.Random(cfg.seed).sample(others, n_extra))
        self.passages = [p for pid, p in corpus.items() if pid in keep]

    def __call__(self, model: SentenceTransformer) -> dict[str, float]:
        from ragtune.retriever.index import DenseIndex
        from ragtune.retriever.model import encode_passages, encode_queries

        ids = [p.id for p in self.passages]
        was_training = model.training
        model.eval()
        ptexts = [p.full_text() for p in self.passages]
        qtexts = [q.text for q in self.queries.values()]
        if self.cfg.model.kind == "colbert":
            from ragtune.retriever.colbert import ColbertIndex, encode_passage_tokens, encode_query_tokens

            index = ColbertIndex(encode_passage_tokens(model, ptexts, self.cfg, show_progress=False), ids)
            qtok = encode_query_tokens(model, qtexts, self.cfg, show_progress=False)
            model.train(was_training)
            hits = index.search(qtok, 100)
        else:
            pvec = encode_passages(model, ptexts, self.cfg, show_progress=False)
            qvec = encode_queries(model, qtexts, self.cfg, show_progress=False)
            model.train(was_training)
            hits = DenseIndex.flat(pvec, ids).search(qvec, 100)
        run = {qid: dict(h) for qid, h in zip(self.queries, hits, strict=True)}
        return evaluate_run(run, self.qrels, ks=(10, 100), metrics=("nDCG", "Recall", "MRR")).metrics


# ------------------------------------------------------------------------------------------ train


class ContrastiveTask:
    """The bi-encoder's part of the training loop (:class:`ragtune.training.Task`)."""

    name, unit, metric, higher_is_better = "retriever", "pairs", "nDCG@10", True

    def __init__(
        self,
        cfg: RetrieverConfig,
        model: SentenceTransformer,
        examples: list[Example],
        validator: Validator | None,
    ):
        self.cfg, self.model, self.examples, self.validator = cfg, model, examples, validator
        self.params = [p for p in model.parameters() if p.requires_grad]

    def epoch_steps(self, epoch: int) -> list[list[int]]:
        t = self.cfg.train
        return batch_order(self.examples, t.batch_size, self.cfg.seed, epoch, t.group_by_length)

    def backward(self, batch: list[int]) -> tuple[float, int]:
        return step_loss(self.model, self.cfg, [self.examples[i] for i in batch]), len(batch)

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


def train(cfg: RetrieverConfig) -> Path:
    """Train the bi-encoder as configured; returns ``cfg.output_dir`` (model in ``model/``)."""
    run = Run(cfg)
    t = cfg.train
    triplets, corpus = _training_triplets(cfg)
    train_t, val_t = split_validation(triplets, cfg.data.val_fraction, cfg.seed)
    examples = build_examples(train_t, t.hard_negatives, t.loss != "info_nce", str(cfg.data.triplets))
    if not examples:
        raise UserError("no training examples: the triplets or qrels name no positive passage")
    validator = Validator(cfg, val_t, corpus) if val_t else None
    task = ContrastiveTask(cfg, training_model(cfg, run), examples, validator)
    n_val = len({x.query.id for x in val_t})
    return fit(cfg, run, task, len(examples), {"examples": len(examples), "validation_queries": n_val})


def training_model(cfg: RetrieverConfig, run: Run) -> SentenceTransformer:
    """The encoder a training run starts from (its checkpoint when resuming), compiled and with
    dropout on or off as configured."""
    t = cfg.train
    model = load_for_training(cfg, run.checkpoint / "model" if run.resuming else None)
    if t.compile:
        # Compile the forward only, so the module (and what model.save writes) keeps its type.
        model[0].auto_model.forward = torch.compile(model[0].auto_model.forward, dynamic=True)
    model.train(t.dropout is None or t.dropout > 0)  # without dropout, eval mode skips mask work
    return model


def fit(
    cfg: RetrieverConfig, run: Run, task: ContrastiveTask, n_examples: int, summary: dict[str, Any]
) -> Path:
    """Run ``task`` over ``n_examples`` examples per epoch for ``train.epochs`` (or ``max_steps``)
    with ``train.*``'s optimiser and schedule; write ``model/`` and the summary; returns the folder."""
    t = cfg.train
    per_epoch = math.ceil(n_examples / t.batch_size)
    total = min(per_epoch * t.epochs, t.max_steps or per_epoch * t.epochs)
    optimizer = adamw(task.model, t.lr, t.weight_decay, decay_norms=False)
    run.fit(
        task,
        optimizer,
        Plan(total, per_epoch, t.warmup_ratio, t.max_grad_norm, t.eval_every, t.patience, t.save_every),
    )
    return run.finish(task, "model", summary)
