"""The five stages of a joint round, each a function of one :class:`Round`.

``retrieve`` -> ``generator`` -> ``retriever`` -> ``refresh`` -> ``eval`` (see :mod:`ragtune.e2e.train`).
Each stage returns its statistics (a JSON-ready dict) and changes only what its name says: the
round's hits, the adapter, the query (and passage) encoder, the index, the metrics.
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ragtune import distributed as dist
from ragtune.data.io import write_jsonl
from ragtune.data.schema import QAExample
from ragtune.e2e.config import E2EConfig
from ragtune.e2e.feedback import likely_false_negatives, lsr_loss, pdist_loss
from ragtune.e2e.refresh import embedding_drift, should_refresh
from ragtune.e2e.state import Data, Generator, Retriever
from ragtune.errors import UserError
from ragtune.eval.faithfulness import lexical_faithfulness
from ragtune.eval.generation import evaluate_generation
from ragtune.eval.ir import evaluate_run, topk_overlap
from ragtune.generator.collator import pad_batch, raft_contexts
from ragtune.generator.scoring import backward_answer_loss
from ragtune.precision import autocast
from ragtune.retriever.model import encode_with_graph
from ragtune.training import adamw, epoch_batches, linear_schedule, optimizer_step

STAGES = ("retrieve", "generator", "retriever", "refresh", "eval")
SEARCH_EXTRA = 8  # hits beyond top_k kept per training question, for distractors past the gold ones


@dataclass
class Round:
    """One round's view of the run: its number and questions, the models, and the state its stages
    share (the training questions' hits, the flagged false negatives)."""

    number: int
    cfg: E2EConfig
    data: Data
    retriever: Retriever
    generator: Generator
    hits: dict[str, list[str]]  # training question id -> passage ids (the retrieve stage's output)
    flagged: dict[str, list[str]]  # question id -> generator-flagged false negatives (grows)
    out: Path

    @property
    def questions(self) -> list[QAExample]:
        return round_questions(self.cfg, self.data, self.number)


def stage_plan(rounds: int, eval_rounds: str) -> list[tuple[int, str]]:
    """``(round, stage)`` in order: round 0 evaluates the starting models, every later round runs
    all stages; with ``eval_rounds="last"`` only the final round evaluates."""
    last_only = eval_rounds == "last"
    plan = [] if last_only and rounds > 0 else [(0, "eval")]
    for r in range(1, rounds + 1):
        plan += [(r, s) for s in STAGES if s != "eval" or not last_only or r == rounds]
    return plan


def round_questions(cfg: E2EConfig, data: Data, round_: int) -> list[QAExample]:
    """The training questions of a round: all, or a seeded sample of ``questions_per_round``."""
    n = cfg.questions_per_round
    if not n or n >= len(data.train):
        return list(data.train)
    picked = sorted(random.Random(f"{cfg.seed}/questions/{round_}").sample(range(len(data.train)), n))
    return [data.train[i] for i in picked]


# ---------------------------------------------------------------------------------- retrieve


def retrieve(r: Round) -> dict[str, Any]:
    """Each training question's top ``top_k + SEARCH_EXTRA`` passage ids by ``retriever.candidates``
    (the current index, BM25, or both fused)."""
    questions, depth = r.questions, r.cfg.top_k + SEARCH_EXTRA
    ranked = r.retriever.ranked([e.question for e in questions], depth, r.cfg.retriever.candidates)
    r.hits.clear()
    r.hits.update({e.id: [pid for pid, _ in h] for e, h in zip(questions, ranked, strict=True)})
    return {"questions": len(r.hits), "index_version": r.retriever.version}


# --------------------------------------------------------------------------------- generator


def tune_generator(r: Round) -> dict[str, Any]:
    """One round of SFT on question + RAFT contexts -> answer; the distractors are the question's
    hits that are neither gold nor flagged."""
    cfg, g, data = r.cfg, r.cfg.generator, r.data
    if not g.enabled:
        return {"skipped": True}
    examples, n_gold_shown = [], 0
    for i, e in enumerate(r.questions):
        skip = set(data.gold_ids(e)) | set(r.flagged.get(e.id, []))
        distractors = [data.corpus[p] for p in r.hits[e.id] if p not in skip]
        rng = random.Random(f"{cfg.seed}/{r.number}/{i}")
        passages, target, shown = raft_contexts(
            data.gold(e), distractors, e.answer, g.prompt.no_answer, g.raft, rng
        )
        n_gold_shown += shown
        try:
            examples.append(r.generator.enc.encode(e.question, passages, target))
        except ValueError as err:
            raise UserError(f"{cfg.data.train}: example {e.id!r}: {err}") from None
    model, pad_id = r.generator.model, r.generator.pad_id
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(model, g.lr, g.weight_decay)
    total = math.ceil(math.ceil(len(examples) / g.batch_size) / g.grad_accum) * g.epochs
    scheduler = linear_schedule(optimizer, total, int(total * g.warmup_ratio))
    lengths = [len(x.input_ids) for x in examples]
    model.train()
    losses, tokens, seconds = [], 0, 0.0
    bar = tqdm(total=total, desc=f"round {r.number} generator", unit="step", disable=not dist.is_main())
    for epoch in range(g.epochs):
        batches = epoch_batches(lengths, g.batch_size, cfg.seed + r.number, epoch, True)
        for s in range(0, len(batches), g.grad_accum):
            started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            shard = dist.shard_groups(batches[s : s + g.grad_accum], g.batch_size)
            loss, step_tokens = backward_answer_loss(
                model, [pad_batch([examples[i] for i in b], pad_id) for b in shard], cfg.precision
            )
            optimizer_step(params, optimizer, scheduler, g.max_grad_norm)
            seconds += time.perf_counter() - started
            tokens += step_tokens
            losses.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
    bar.close()
    model.eval()
    return {
        "steps": total,
        "examples": len(examples),
        "gold_shown": n_gold_shown,
        **loss_stats(losses),
        "tokens_per_s": tokens / seconds if seconds else 0.0,
    }


# --------------------------------------------------------------------------------- retriever


def lsr_candidates(
    hits: Sequence[str], gold: Sequence[str], k: int, include_gold: bool
) -> tuple[list[str], bool]:
    """The K passage ids the generator scores for one question: its top-``k`` hits, the last one
    replaced by the first gold passage when ``include_gold`` and no gold passage was retrieved.
    Returns ``(ids, gold_was_added)``."""
    top = list(hits[:k])
    if include_gold and gold and not set(top) & set(gold):
        return [*top[: k - 1], gold[0]], True
    return top, False


def flag_false_negatives(
    candidates: Sequence[str],
    gold: set[str],
    gains: Sequence[float],
    gold_gain: float,
    ratio: float,
    already: Sequence[str] = (),
) -> list[str]:
    """Generator-checked negatives of one question: the non-gold candidates, not flagged
    ``already``, whose gain (the generator's log-likelihood of the answer with the passage minus
    without any) is at least ``ratio`` times the gold passage's ``gold_gain``
    (:func:`ragtune.e2e.feedback.likely_false_negatives`)."""
    negatives = [(pid, gain) for pid, gain in zip(candidates, gains, strict=True) if pid not in gold]
    flags = likely_false_negatives(gold_gain, [gain for _, gain in negatives], ratio)
    return [pid for (pid, _), f in zip(negatives, flags, strict=True) if f and pid not in already]


def score_unique(
    r: Round, questions: Sequence[QAExample], rows: Sequence[Sequence[str | None]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The generator's ``log p(answer | question, passage)`` for each question's row of passage ids
    (``None``: no passage), each distinct (question, passage) scored once: ``(sums, counts)``,
    both ``[len(rows), width]``."""
    unique: dict[tuple[int, str | None], int] = {}
    for q, row in enumerate(rows):
        for pid in row:
            unique.setdefault((q, pid), len(unique))
    keys = list(unique)
    sums, counts = r.generator.score(
        [questions[q].question for q, _ in keys],
        [None if pid is None else r.data.corpus[pid] for _, pid in keys],
        [questions[q].answer for q, _ in keys],
    )
    index = torch.tensor([[unique[(q, pid)] for pid in row] for q, row in enumerate(rows)])
    return sums[index], counts[index]


def tune_retriever(r: Round) -> dict[str, Any]:
    """Generator feedback on each question's K candidates, false-negative flags, and LSR/PDist
    updates of the retriever (when enabled). Adds to ``r.flagged``."""
    cfg, data, k, check = r.cfg, r.data, r.cfg.top_k, r.cfg.false_negatives.enabled
    if not cfg.retriever.enabled and not check:
        return {"skipped": True}
    questions = r.questions
    picked = [
        lsr_candidates(r.hits[e.id], data.gold_ids(e), k, cfg.retriever.include_gold) for e in questions
    ]
    cands = [ids for ids, _ in picked]
    # One scoring pass: the K candidates and, for the false-negative check, the first gold passage
    # and no passage, per question; a gold passage among the candidates is scored once.
    rows = [
        [*ids, *([data.gold_ids(e)[0], None] if check else [])]
        for e, ids in zip(questions, cands, strict=True)
    ]
    sums, counts = score_unique(r, questions, rows)
    dropped = 0
    if check:
        for row, (e, ids) in enumerate(zip(questions, cands, strict=True)):
            gains = (sums[row, :k] - sums[row, k + 1]).tolist()  # over no passage
            gold_gain = float(sums[row, k] - sums[row, k + 1])
            ratio, already = cfg.false_negatives.ratio, r.flagged.get(e.id, [])
            new = flag_false_negatives(ids, set(data.gold_ids(e)), gains, gold_gain, ratio, already)
            if new:
                r.flagged.setdefault(e.id, []).extend(new)
                dropped += len(new)
    top1 = [
        ids[int(torch.argmax(sums[i, :k]))] in set(data.gold_ids(e))
        for i, (e, ids) in enumerate(zip(questions, cands, strict=True))
    ]
    stats: dict[str, Any] = {
        "questions": len(cands),
        "gold_added_to_candidates": sum(added for _, added in picked),
        "false_negatives_dropped": dropped,
        "false_negatives_total": sum(len(v) for v in r.flagged.values()),
        "lm_top1_is_gold": float(np.mean(top1)),
    }
    if cfg.retriever.enabled:
        stats.update(lsr_update(r, questions, cands, sums[:, :k], counts[:, :k]))
    return stats


def lsr_update(
    r: Round,
    questions: Sequence[QAExample],
    cands: list[list[str]],
    lm_sum: torch.Tensor,
    lm_count: torch.Tensor,
) -> dict[str, Any]:
    """Train the query encoder (and, with ``mode=both``, the shared passage encoder) towards the
    generator's distribution over each question's K candidates (``[B, K]`` scores)."""
    rs, data, k = r.cfg.retriever, r.data, r.cfg.top_k
    model = r.retriever.query
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(model, rs.lr, rs.weight_decay)
    n, per_epoch = len(cands), math.ceil(len(cands) / rs.batch_size)
    scheduler = linear_schedule(
        optimizer, per_epoch * rs.epochs, int(per_epoch * rs.epochs * rs.warmup_ratio)
    )
    device, losses = model.device, []
    bar = tqdm(
        total=per_epoch * rs.epochs,
        desc=f"round {r.number} retriever ({rs.loss})",
        unit="step",
        disable=not dist.is_main(),
    )
    for epoch in range(rs.epochs):
        order = list(range(n))
        random.Random(f"{r.cfg.seed}/{r.number}/{epoch}").shuffle(order)
        for s in range(0, n, rs.batch_size):
            batch = order[s : s + rs.batch_size]
            idx = list(dist.shard(batch))  # this process's questions of the batch
            optimizer.zero_grad(set_to_none=True)
            local = 0.0
            if idx:
                with autocast(r.cfg.precision, device.type):
                    q = encode_with_graph(model, [questions[i].question for i in idx], rs.max_query_length)
                    if rs.mode == "both":
                        texts = [data.corpus[p].full_text() for i in idx for p in cands[i]]
                        p = encode_with_graph(model, texts, rs.max_passage_length)
                q = torch.nn.functional.normalize(q.float(), dim=-1)  # [b, D]
                if rs.mode == "both":
                    p = torch.nn.functional.normalize(p.float(), dim=-1).reshape(len(idx), k, -1)  # [b, K, D]
                else:
                    rows = [[r.retriever.row[p] for p in cands[i]] for i in idx]
                    p = torch.from_numpy(r.retriever.vectors[np.array(rows)]).to(device)  # [b, K, D], fixed
                scores = torch.einsum("bd,bkd->bk", q, p)
                if rs.loss == "pdist":
                    loss = pdist_loss(scores, lm_sum[idx], lm_count[idx], tau=rs.tau, gamma=rs.gamma)
                else:
                    loss = lsr_loss(scores, lm_sum[idx], tau=rs.tau, gamma=rs.gamma)
                loss = loss * (len(idx) / len(batch))  # this shard's part of the batch mean
                loss.backward()
                local = float(loss.detach())
            optimizer_step(params, optimizer, scheduler, rs.max_grad_norm)
            losses.append(dist.sum_value(local))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()
    return {"steps": len(losses), **loss_stats(losses)}


# ----------------------------------------------------------------------------------- refresh


def refresh(r: Round) -> dict[str, Any]:
    """Measure drift on a probe sample and re-encode the index when due (``mode=both``)."""
    cfg, data, retriever = r.cfg, r.data, r.retriever
    if cfg.retriever.mode == "query" or not cfg.retriever.enabled:
        return {"refreshed": False, "reason": "passage encoder unchanged: the index stays valid"}
    f = cfg.refresh
    rng = random.Random(f"{cfg.seed}/probe")
    probe = sorted(rng.sample(range(len(data.ids)), min(f.probe_passages, len(data.ids))))
    fresh = retriever.encode_passages([data.corpus[data.ids[i]].full_text() for i in probe])
    old = retriever.vectors[probe]
    drift = embedding_drift(old, fresh)
    queries = [e.question for e in rng.sample(data.train, min(f.probe_queries, len(data.train)))]
    qvec = retriever.encode_queries(queries)
    depth = min(10, len(probe))
    old_hits = np.argsort(-qvec @ old.T, axis=1)[:, :depth].tolist()
    new_hits = np.argsort(-qvec @ fresh.T, axis=1)[:, :depth].tolist()
    overlap = topk_overlap(old_hits, new_hits, depth)
    due, reason = should_refresh(r.number, f.every, drift, f.min_cosine, overlap, f.min_overlap)
    if due:
        retriever.version += 1
        retriever.build_index()
    return {
        "refreshed": due,
        "reason": reason,
        "probe_mean_cosine": drift,
        "probe_top10_overlap": overlap,
        "index_version": retriever.version,
    }


# -------------------------------------------------------------------------------------- eval


def evaluate(r: Round) -> dict[str, Any]:
    """Retrieval and answer metrics on the held-out questions (retrieved by ``eval.passages``: the
    dense index, BM25 or both fused), and the error split; writes
    ``rounds/round_<r>/predictions.jsonl``. Returns ``{"metrics", "errors", "generate_tokens_per_s"}``."""
    cfg, data = r.cfg, r.data
    depth = max([*cfg.eval.ks, cfg.top_k])
    hits = r.retriever.ranked([e.question for e in data.eval], depth, cfg.eval.passages)
    run = {e.id: dict(h) for e, h in zip(data.eval, hits, strict=True)}
    qrels = {e.id: {pid: 1 for pid in data.gold_ids(e)} for e in data.eval}
    ranking = evaluate_run(run, qrels, ks=cfg.eval.ks, metrics=("Recall", "MRR", "nDCG"))
    ir = ranking.metrics
    shown = [[data.corpus[pid] for pid, _ in h[: cfg.top_k]] for h in hits]
    answers, kept, speed = r.generator.answer([e.question for e in data.eval], shown)
    gen, per = evaluate_generation(answers, [e.answer for e in data.eval], [e.id for e in data.eval])
    faith = [lexical_faithfulness(a, [p.text for p in ps]) for a, ps in zip(answers, kept, strict=True)]
    checked = None
    if cfg.eval.checker:
        checker = _checker(cfg.eval.checker, cfg.precision)
        checked = checker(answers, [[p.text for p in ps] for ps in kept], [e.question for e in data.eval])
    errors = {"correct": 0, "gold_not_retrieved": 0, "retrieved_but_wrong": 0, "correct_without_gold": 0}
    rows = []
    for e, ps, a, f in zip(data.eval, shown, answers, faith, strict=True):
        found = bool(set(data.gold_ids(e)) & {p.id for p in ps})
        right = per[e.id]["ROUGE-L"] >= cfg.eval.correct_rouge_l
        kind = "correct" if right else ("retrieved_but_wrong" if found else "gold_not_retrieved")
        errors[kind] += 1
        errors["correct_without_gold"] += right and not found
        rows.append(
            {
                "id": e.id,
                "question": e.question,
                "contexts": [{"id": p.id, "title": p.title, "text": p.text} for p in ps],
                "gold_retrieved": found,
                "prediction": a,
                "reference": e.answer,
                "ROUGE-L": per[e.id]["ROUGE-L"],
                "faithfulness": f,
                "outcome": kind,
                # every metric of this question, for paired comparisons of runs (ragtune report A B)
                "metrics": {**ranking.per_query.get(e.id, {}), **per[e.id], "faithfulness": f},
            }
        )
    metrics = {**ir, **gen, "faithfulness": float(np.mean(faith))}
    if checked is not None:
        for row, score in zip(rows, checked, strict=True):
            row["model_faithfulness"] = row["metrics"]["model_faithfulness"] = score
        metrics["model_faithfulness"] = float(np.mean(checked))
    if cfg.eval.unanswerable:
        metrics.update(abstention(r, hits, answers))
    if dist.is_main():
        write_jsonl(r.out / "rounds" / f"round_{r.number}" / "predictions.jsonl", rows)
    return {"metrics": metrics, "errors": errors, "generate_tokens_per_s": speed.get("tokens_per_s", 0.0)}


@functools.lru_cache(maxsize=2)
def _checker(path: str, precision: str) -> Any:
    """The faithfulness checker at ``path``, loaded once per process."""
    from ragtune.checker.score import FaithfulnessChecker

    return FaithfulnessChecker(path, precision=precision)


def abstention(
    r: Round, hits: Sequence[Sequence[tuple[str, float]]], answers: Sequence[str]
) -> dict[str, float]:
    """Ask each held-out question again with the ``top_k`` best non-gold hits (its gold passages
    removed) and count abstentions (:mod:`ragtune.eval.abstention`): ``abstain_rate`` there,
    ``false_abstain_rate`` on ``answers`` (the questions asked with their retrieved passages).
    Writes ``rounds/round_<r>/predictions_unanswerable.jsonl``."""
    from ragtune.data.schema import Prediction
    from ragtune.eval.abstention import abstention_metrics

    cfg, data = r.cfg, r.data
    shown = []
    for e, h in zip(data.eval, hits, strict=True):
        gold = set(data.gold_ids(e))
        shown.append([data.corpus[pid] for pid, _ in h if pid not in gold][: cfg.top_k])
    refused, _, _ = r.generator.answer([e.question for e in data.eval], shown)
    rows = [Prediction(e.id, a, e.answer, answerable=True) for e, a in zip(data.eval, answers, strict=True)]
    rows += [
        Prediction(f"{e.id}#unanswerable", a, e.answer, answerable=False)
        for e, a in zip(data.eval, refused, strict=True)
    ]
    if dist.is_main():
        write_jsonl(
            r.out / "rounds" / f"round_{r.number}" / "predictions_unanswerable.jsonl",
            [
                {
                    "id": f"{e.id}#unanswerable",
                    "question": e.question,
                    "contexts": [p.id for p in ps],
                    "prediction": a,
                    "reference": e.answer,
                    "answerable": False,
                }
                for e, ps, a in zip(data.eval, shown, refused, strict=True)
            ],
        )
    m = abstention_metrics(rows)
    return {"abstain_rate": m["abstain_rate"], "false_abstain_rate": m["false_abstain_rate"]}


# ----------------------------------------------------------------------------------- helpers


def loss_stats(losses: Sequence[float]) -> dict[str, float]:
    return {"loss_first": losses[0], "loss_last": losses[-1], "loss_mean": float(np.mean(losses))}
