"""Joint RAG tuning in rounds: ``train(cfg) -> output folder``.

Round 0 evaluates the starting retriever and generator. Every round r >= 1 then runs these stages:

1. ``retrieve``: the current retriever and index give each training question its top passages.
2. ``generator``: LoRA (any peft method) SFT on question + RAFT contexts -> answer; the distractors
   are the current retriever's top non-gold passages, minus those the generator flagged as likely
   unlabelled positives in earlier rounds (the negatives cache).
3. ``retriever``: LM-supervised retrieval (REPLUG LSR, Shi et al. 2023; RA-DIT, Lin et al. 2023) or
   perplexity distillation (Atlas, Izacard et al. 2022): the updated generator scores
   ``log p(answer | question, passage)`` for each of the K candidates, and the retriever learns
   ``softmax(score / gamma)`` towards ``softmax(log p / tau)`` (:mod:`ragtune.e2e.feedback`). The
   same scores, with the gold passage's and the no-passage ones, flag retrieved non-gold passages
   that help the generator nearly as much as the gold one (generator-checked negatives).
4. ``refresh`` (``retriever.mode=both``): a probe sample measures drift; the index is re-encoded on
   the schedule or past a threshold, and its version goes up (:mod:`ragtune.e2e.refresh`).
5. ``eval``: Recall@k / MRR / nDCG of the held-out questions, then answers generated from the top-k
   passages: ROUGE-1/2/L, EM/F1, faithfulness, and each wrong answer's cause ("gold passage not
   retrieved" or "retrieved but answered wrong").

After every stage the whole state (retriever, adapter, index and its version, negatives cache,
metrics so far) is written atomically to ``checkpoint/``. Every stage seeds its RNGs from
``(seed, round, stage)`` and builds its optimiser afresh, so running the same command after a kill
redoes the interrupted stage exactly and ends with the metrics of an unbroken run.

Outputs in ``cfg.output_dir``: ``query_encoder/`` and ``passage_encoder/`` (sentence-transformers
folders), ``adapter/`` (peft), ``index/`` (FAISS + ids), ``report.json``, ``report.md``,
``plots/*.png``, ``rounds/round_<r>/predictions.jsonl``, ``checkpoint/`` and ``config.yaml``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import resource
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ragtune import distributed as dist
from ragtune.data.io import atomic_write_text, load_qa, save_dir_atomically, write_jsonl
from ragtune.data.schema import Passage, QAExample
from ragtune.e2e.config import E2EConfig
from ragtune.e2e.feedback import likely_false_negatives, lsr_loss, pdist_loss
from ragtune.e2e.refresh import embedding_drift, recall_overlap, should_refresh
from ragtune.eval.faithfulness import lexical_faithfulness
from ragtune.eval.generation import evaluate_generation
from ragtune.eval.ir import evaluate_run
from ragtune.eval.report import write_run_report
from ragtune.generator.collator import gold_passages, load_corpus_arg, pad_batch, raft_contexts
from ragtune.generator.prompt import PromptEncoder
from ragtune.generator.train import answer_logprobs, micro_batches, optimizer_step, step_shard
from ragtune.precision import autocast
from ragtune.training import linear_schedule, start_run

log = logging.getLogger(__name__)

STAGES = ("retrieve", "generator", "retriever", "refresh", "eval")
SEARCH_EXTRA = 8  # hits beyond top_k kept per training question, for distractors past the gold ones


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def seed_stage(seed: int, round_: int, stage: str) -> None:
    """Seed Python, NumPy and torch from ``(seed, round, stage)``: a resumed stage repeats itself."""
    value = (seed * 1_000_003 + round_ * 101 + STAGES.index(stage)) % (2**31)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


# ---------------------------------------------------------------------------------------- data


class Data:
    """The corpus, training and evaluation questions, and each question's gold passage ids."""

    def __init__(self, cfg: E2EConfig):
        d = cfg.data
        if d.train is None or d.eval is None:
            raise ValueError("data.train and data.eval must both be set (QA JSONL files, see data/README.md)")
        corpus = load_corpus_arg(d.corpus)
        self.train = load_qa(d.train, corpus)
        self.eval = load_qa(d.eval, corpus)
        if d.max_train:
            self.train = self.train[: d.max_train]
        if d.max_eval:
            self.eval = self.eval[: d.max_eval]
        if corpus is None:  # the pool: every context of the data
            corpus = {}
            for e in [*self.train, *self.eval]:
                for p in e.contexts:
                    corpus.setdefault(p.id, p)
        if not corpus:
            raise ValueError("the corpus is empty: set data.corpus or give contexts in the QA files")
        self.corpus: dict[str, Passage] = corpus
        self.ids = list(corpus)
        for name, examples in (("data.train", self.train), ("data.eval", self.eval)):
            if not examples:
                raise ValueError(f"{name} holds no questions")
            for e in examples:
                if not self.gold_ids(e):
                    path = d.train if name == "data.train" else d.eval
                    raise ValueError(
                        f"{path}: example {e.id!r} names no gold passage in the corpus "
                        "(positive_ids or contexts): joint tuning needs them for the retrieval metrics"
                    )

    def gold_ids(self, e: QAExample) -> list[str]:
        ids = [p.id for p in gold_passages(e, self.corpus)] + list(e.positive_ids)
        return [i for i in dict.fromkeys(ids) if i in self.corpus]

    def gold(self, e: QAExample) -> list[Passage]:
        return [self.corpus[i] for i in self.gold_ids(e)]


# ------------------------------------------------------------------------------------ retriever


class Retriever:
    """The query encoder, the passage encoder (the same model with ``mode=both``) and the index
    (an exact inner-product FAISS index over normalised passage vectors, with its version)."""

    def __init__(self, cfg: E2EConfig, data: Data, query_path: str | Path | None = None):
        from ragtune.retriever.model import load_encoder

        self.cfg, self.data = cfg, data
        r = cfg.retriever
        device = str(dist.device())
        self.query = load_encoder(str(query_path) if query_path else (r.query_model or r.model), device)
        self._no_dropout(self.query)
        self.passage = self.query if r.mode == "both" else load_encoder(r.model, device)
        if r.mode == "query":
            self.passage.requires_grad_(False)
        self.vectors = np.zeros((0, 0), dtype=np.float32)
        self.row = {pid: i for i, pid in enumerate(data.ids)}
        self.version = 0
        self.index = None

    @staticmethod
    def _no_dropout(model) -> None:
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        model.eval()  # no dropout: eval mode also skips its mask work

    def _encode(self, model, texts: Sequence[str], max_length: int, progress: bool) -> np.ndarray:
        from ragtune.retriever.model import encode

        return encode(
            model, texts, max_length=max_length, precision=self.cfg.precision, show_progress=progress
        )

    def encode_passages(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        return self._encode(self.passage, texts, self.cfg.retriever.max_passage_length, progress)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(self.query, texts, self.cfg.retriever.max_query_length, False)

    def build_index(self, vectors: np.ndarray | None = None) -> None:
        from ragtune.retriever.index import DenseIndex

        if vectors is None:
            texts = [p.full_text() for p in self.data.corpus.values()]
            vectors = self.encode_passages(texts, progress=True)
        self.vectors = vectors
        self.index = DenseIndex.flat(vectors, self.data.ids)
        self.index.version = self.version

    def search(self, questions: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
        return self.index.search(self.encode_queries(questions), k)


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


# ------------------------------------------------------------------------------------ generator


class GeneratorState:
    """The causal LM with its adapter, the tokenizer and the prompt encoder."""

    def __init__(self, cfg: E2EConfig, adapter: str | Path | None = None):
        from ragtune.generator.model import apply_peft, load_base, load_tokenizer

        g = cfg.generator
        self.cfg = cfg
        self.tokenizer = load_tokenizer(g.model.name, g.model.trust_remote_code)
        self.enc = PromptEncoder(self.tokenizer, g.prompt, g.model.max_length)
        start = adapter or g.adapter
        if start is not None:
            from peft import PeftModel

            base = load_base(g.model).to(dist.device())
            from ragtune.generator.model import require_safetensors

            self.model = PeftModel.from_pretrained(base, str(require_safetensors(start)), is_trainable=True)
        else:
            self.model = apply_peft(load_base(g.model).to(dist.device()), g.peft)
        self.pad_id = self.tokenizer.pad_token_id

    def save(self, folder: Path) -> None:
        self.model.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))

    def score(self, questions: Sequence[str], passages: Sequence[Passage | None], answers: Sequence[str]):
        """``log p(answer | question, passage)`` per triple (``None``: no passage), summed over the
        answer's tokens and end of turn: ``(sums [N], counts [N])``. With several processes each
        scores its shard and every process gets all N."""
        triples = list(dist.shard(list(zip(questions, passages, answers, strict=True))))
        encoded = [self.enc.encode(q, [] if p is None else [p], a) for q, p, a in triples]
        g = self.cfg.generator
        sums, counts = [], []
        chunk = g.score_batch_size * 8
        bar = tqdm(
            range(0, len(encoded), chunk),
            desc="generator feedback",
            unit="chunk",
            leave=False,
            disable=not dist.is_main(),
        )
        for s in bar:
            a, b = answer_logprobs(
                self.model, encoded[s : s + chunk], g.score_batch_size, self.pad_id, self.cfg.precision
            )
            sums += a.cpu().tolist()
            counts += b.cpu().tolist()
        pairs = dist.gather_objects(list(zip(sums, counts, strict=True)))
        return torch.tensor([a for a, _ in pairs]), torch.tensor([b for _, b in pairs])

    def answer(self, questions: Sequence[str], passages: Sequence[Sequence[Passage]]):
        """Generated answers and the passages each prompt kept (a merged copy in the inference
        precision: bf16 where native, see :mod:`ragtune.precision`); with
        several processes each answers its shard and every process gets all of them (the speed
        statistics are the main process's)."""
        pairs = list(dist.shard(list(zip(questions, passages, strict=True))))
        answers, kept, stats = self._answer([q for q, _ in pairs], [p for _, p in pairs])
        gathered = dist.gather_objects(list(zip(answers, kept, strict=True)))
        return [a for a, _ in gathered], [k for _, k in gathered], stats

    def _answer(self, questions: Sequence[str], passages: Sequence[Sequence[Passage]]):
        if not questions:
            return [], [], {}
        from ragtune.generator.config import GeneratorConfig
        from ragtune.generator.generate import Generator

        g = self.cfg.generator
        model = copy.deepcopy(self.model)
        if g.peft.method in ("lora", "ia3"):
            model = model.merge_and_unload()
        gcfg = GeneratorConfig(
            model=g.model, prompt=g.prompt, generate=g.generate, precision=self.cfg.precision
        )
        gen = Generator(gcfg, model=model, tokenizer=self.tokenizer)
        prompts, kept = gen.build(questions, passages)
        answers = gen.answer(prompts)
        return answers, kept, gen.stats


# ---------------------------------------------------------------------------------------- state


def _save_checkpoint(folder: Path, state: dict, retriever: Retriever, generator: GeneratorState) -> None:
    """The whole run state, written atomically: ``state.json``, ``query_encoder/`` (and
    ``passage_encoder/`` in ``mode=both``, where it is the same model), ``adapter/``, ``index/``."""

    def write(tmp: Path) -> None:
        retriever.query.save(str(tmp / "query_encoder"))
        retriever.index.save(tmp / "index", version=retriever.version)
        generator.save(tmp / "adapter")
        (tmp / "state.json").write_text(json.dumps(state, indent=1))

    save_dir_atomically(folder, write)


# --------------------------------------------------------------------------------------- stages


def round_questions(cfg: E2EConfig, data: Data, round_: int) -> list[QAExample]:
    """The training questions of a round: all, or a seeded sample of ``questions_per_round``."""
    n = cfg.questions_per_round
    if not n or n >= len(data.train):
        return list(data.train)
    picked = sorted(random.Random(f"{cfg.seed}/questions/{round_}").sample(range(len(data.train)), n))
    return [data.train[i] for i in picked]


def retrieve_stage(
    cfg: E2EConfig, questions: Sequence[QAExample], retriever: Retriever
) -> dict[str, list[str]]:
    """Training question id -> its top ``top_k + SEARCH_EXTRA`` passage ids under the current index."""
    hits = retriever.search([e.question for e in questions], cfg.top_k + SEARCH_EXTRA)
    return {e.id: [pid for pid, _ in h] for e, h in zip(questions, hits, strict=True)}


def generator_stage(
    cfg: E2EConfig,
    data: Data,
    questions: Sequence[QAExample],
    generator: GeneratorState,
    hits: dict[str, list[str]],
    flagged: dict[str, list[str]],
    round_: int,
) -> dict[str, Any]:
    """One round of SFT; returns the stage's statistics."""
    g = cfg.generator
    examples = []
    n_gold_shown = 0
    for i, e in enumerate(questions):
        gold = data.gold(e)
        skip = set(data.gold_ids(e)) | set(flagged.get(e.id, []))
        distractors = [data.corpus[p] for p in hits[e.id] if p not in skip]
        rng = random.Random(f"{cfg.seed}/{round_}/{i}")
        passages, target, shown = raft_contexts(gold, distractors, e.answer, g.prompt.no_answer, g.raft, rng)
        n_gold_shown += shown
        try:
            examples.append(generator.enc.encode(e.question, passages, target))
        except ValueError as err:
            raise ValueError(f"{cfg.data.train}: example {e.id!r}: {err}") from None
    model = generator.model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=g.lr, weight_decay=0.0)
    lengths = [len(x.input_ids) for x in examples]
    per_epoch = math.ceil(math.ceil(len(examples) / g.batch_size) / g.grad_accum)
    total = per_epoch * g.epochs
    scheduler = linear_schedule(optimizer, total, 0)
    model.train()
    losses, tokens, seconds = [], 0, 0.0
    bar = tqdm(total=total, desc=f"round {round_} generator", unit="step", disable=not dist.is_main())
    for epoch in range(g.epochs):
        batches = micro_batches(lengths, g.batch_size, cfg.seed + round_, epoch, True)
        for s in range(0, len(batches), g.grad_accum):
            started = time.perf_counter()
            group = [
                pad_batch([examples[i] for i in b], generator.pad_id)
                for b in step_shard(batches[s : s + g.grad_accum], g.batch_size)
            ]
            step_loss, step_tokens = optimizer_step(
                model, group, params, optimizer, scheduler, cfg.precision, 1.0
            )
            seconds += time.perf_counter() - started
            tokens += step_tokens
            losses.append(step_loss)
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()
    model.eval()
    return {
        "steps": total,
        "examples": len(examples),
        "gold_shown": n_gold_shown,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "loss_mean": sum(losses) / len(losses),
        "tokens_per_s": tokens / seconds if seconds else 0.0,
    }


def retriever_stage(
    cfg: E2EConfig,
    data: Data,
    questions: Sequence[QAExample],
    retriever: Retriever,
    generator: GeneratorState,
    hits: dict[str, list[str]],
    flagged: dict[str, list[str]],
    round_: int,
) -> dict[str, Any]:
    """Generator feedback on each question's K candidates, false-negative flags, and LSR/PDist
    updates of the retriever (when enabled). Updates ``flagged`` in place."""
    from ragtune.retriever.train import encode_with_graph

    r, k = cfg.retriever, cfg.top_k
    if not r.enabled and not cfg.false_negatives.enabled:
        return {"skipped": True}
    cands, added = [], 0
    for e in questions:
        ids, was_added = lsr_candidates(hits[e.id], data.gold_ids(e), k, r.include_gold)
        cands.append(ids)
        added += was_added
    # One scoring pass: the K candidates, and for the false-negative check the first gold passage
    # and no passage, per question.
    check = cfg.false_negatives.enabled
    q_texts, shown, answers = [], [], []
    for e, ids in zip(questions, cands, strict=True):
        extra = [data.gold(e)[0], None] if check else []
        for p in [*[data.corpus[i] for i in ids], *extra]:
            q_texts.append(e.question)
            shown.append(p)
            answers.append(e.answer)
    sums, counts = generator.score(q_texts, shown, answers)
    width = k + 2 if check else k
    sums, counts = sums.reshape(len(cands), width), counts.reshape(len(cands), width)
    lm_sum, lm_count = sums[:, :k], counts[:, :k]

    # Generator-checked negatives: retrieved non-gold passages that help nearly as much as gold.
    dropped = 0
    if check:
        for row, (e, ids) in enumerate(zip(questions, cands, strict=True)):
            gold = set(data.gold_ids(e))
            gains = (sums[row, :k] - sums[row, k + 1]).tolist()
            negatives = [(i, g) for i, g in zip(ids, gains, strict=True) if i not in gold]
            flags = likely_false_negatives(
                float(sums[row, k] - sums[row, k + 1]), [g for _, g in negatives], cfg.false_negatives.ratio
            )
            new = [
                i for (i, _), f in zip(negatives, flags, strict=True) if f and i not in flagged.get(e.id, [])
            ]
            if new:
                flagged.setdefault(e.id, []).extend(new)
                dropped += len(new)

    stats: dict[str, Any] = {
        "questions": len(cands),
        "gold_added_to_candidates": added,
        "false_negatives_dropped": dropped,
        "false_negatives_total": sum(len(v) for v in flagged.values()),
        "lm_top1_is_gold": float(
            np.mean(
                [
                    ids[int(torch.argmax(lm_sum[i]))] in set(data.gold_ids(e))
                    for i, (e, ids) in enumerate(zip(questions, cands, strict=True))
                ]
            )
        ),
    }
    if not r.enabled:
        return stats

    model = retriever.query
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=r.lr)
    n = len(cands)
    per_epoch = math.ceil(n / r.batch_size)
    scheduler = linear_schedule(optimizer, per_epoch * r.epochs, 0)
    losses = []
    device = model.device
    bar = tqdm(
        total=per_epoch * r.epochs,
        desc=f"round {round_} retriever ({r.loss})",
        unit="step",
        disable=not dist.is_main(),
    )
    for epoch in range(r.epochs):
        order = list(range(n))
        random.Random(f"{cfg.seed}/{round_}/{epoch}").shuffle(order)
        for s in range(0, n, r.batch_size):
            batch = order[s : s + r.batch_size]
            idx = list(dist.shard(batch))  # this process's questions of the batch
            optimizer.zero_grad(set_to_none=True)
            local = 0.0
            if idx:
                with autocast(cfg.precision, device.type):
                    q = encode_with_graph(model, [questions[i].question for i in idx], r.max_query_length)
                    if r.mode == "both":
                        texts = [data.corpus[p].full_text() for i in idx for p in cands[i]]
                        p = encode_with_graph(model, texts, r.max_passage_length)
                q = torch.nn.functional.normalize(q.float(), dim=-1)  # [b, D]
                if r.mode == "both":
                    p = torch.nn.functional.normalize(p.float(), dim=-1).reshape(len(idx), k, -1)  # [b, K, D]
                else:
                    rows = [[retriever.row[p] for p in cands[i]] for i in idx]
                    p = torch.from_numpy(retriever.vectors[np.array(rows)]).to(device)  # [b, K, D], fixed
                scores = torch.einsum("bd,bkd->bk", q, p)
                if r.loss == "pdist":
                    loss = pdist_loss(scores, lm_sum[idx], lm_count[idx], tau=r.tau, gamma=r.gamma)
                else:
                    loss = lsr_loss(scores, lm_sum[idx], tau=r.tau, gamma=r.gamma)
                loss = loss * (len(idx) / len(batch))  # this shard's part of the batch mean
                loss.backward()
                local = float(loss.detach())
            dist.sum_gradients(params)
            optimizer.step()
            scheduler.step()
            losses.append(dist.sum_value(local))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()
    stats.update(
        steps=len(losses), loss_first=losses[0], loss_last=losses[-1], loss_mean=float(np.mean(losses))
    )
    return stats


def refresh_stage(cfg: E2EConfig, data: Data, retriever: Retriever, round_: int) -> dict[str, Any]:
    """Measure drift on a probe sample and re-encode the index when due (``mode=both``)."""
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
    overlap = recall_overlap(old_hits, new_hits, depth)
    due, reason = should_refresh(round_, f.every, drift, f.min_cosine, overlap, f.min_overlap)
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


def eval_stage(
    cfg: E2EConfig, data: Data, retriever: Retriever, generator: GeneratorState, out: Path, round_: int
) -> dict[str, Any]:
    """Retrieval and answer metrics on the held-out questions, and the error split."""
    depth = max([*cfg.eval.ks, cfg.top_k])
    hits = retriever.search([e.question for e in data.eval], depth)
    run = {e.id: dict(h) for e, h in zip(data.eval, hits, strict=True)}
    qrels = {e.id: {pid: 1 for pid in data.gold_ids(e)} for e in data.eval}
    ir = evaluate_run(run, qrels, ks=cfg.eval.ks, metrics=("Recall", "MRR", "nDCG")).metrics
    shown = [[data.corpus[pid] for pid, _ in h[: cfg.top_k]] for h in hits]
    answers, kept, speed = generator.answer([e.question for e in data.eval], shown)
    gen, per = evaluate_generation(answers, [e.answer for e in data.eval], [e.id for e in data.eval])
    faith = [lexical_faithfulness(a, [p.text for p in ps]) for a, ps in zip(answers, kept, strict=True)]
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
            }
        )
    if dist.is_main():
        write_jsonl(out / "rounds" / f"round_{round_}" / "predictions.jsonl", rows)
    metrics = {**ir, **gen, "faithfulness": float(np.mean(faith))}
    return {"metrics": metrics, "errors": errors, "generate_tokens_per_s": speed.get("tokens_per_s", 0.0)}


# ------------------------------------------------------------------------------------------ train


def _stage_list(cfg: E2EConfig) -> list[tuple[int, str]]:
    """``(round, stage)`` in order; with ``eval.rounds=last`` only the final round evaluates."""
    last_only = cfg.eval.rounds == "last"
    plan = [] if last_only and cfg.rounds > 0 else [(0, "eval")]
    for r in range(1, cfg.rounds + 1):
        plan += [(r, s) for s in STAGES if s != "eval" or not last_only or r == cfg.rounds]
    return plan


def train(cfg: E2EConfig) -> Path:
    """Run the rounds as configured (resuming from ``checkpoint/``); returns ``cfg.output_dir``.

    Under ``torchrun`` each process scores, trains on and answers its shard of every stage's
    questions (gradients summed over processes, see :mod:`ragtune.distributed`); retrieval, index
    refreshes and metrics are computed by every process alike; only the main process writes."""
    dist.setup()
    out = Path(cfg.output_dir)
    ckpt = dist.from_main(lambda: start_run(cfg, out))
    data = Data(cfg)
    resuming = (ckpt / "state.json").exists()
    if resuming:
        state = json.loads((ckpt / "state.json").read_text())
        retriever = Retriever(cfg, data, ckpt / "query_encoder")
        from ragtune.retriever.index import DenseIndex

        saved = DenseIndex.load(ckpt / "index")
        retriever.version = saved.version
        retriever.vectors = saved.index.reconstruct_n(0, saved.index.ntotal)
        retriever.index = saved
        generator = GeneratorState(cfg, ckpt / "adapter")
        log.info("resuming after round %d stage %s", state["done"][0], state["done"][1])
    else:
        torch.manual_seed(cfg.seed)
        state = {"done": None, "rounds": {}, "hits": {}, "flagged": {}, "wall_s": 0.0}
        retriever = Retriever(cfg, data)
        retriever.build_index()
        generator = GeneratorState(cfg)
    plan = _stage_list(cfg)
    start = 0 if state["done"] is None else plan.index(tuple(state["done"])) + 1
    for round_, stage in plan[start:]:
        seed_stage(cfg.seed, round_, stage)
        started = time.perf_counter()
        record = state["rounds"].setdefault(str(round_), {"round": round_, "stages": {}})
        questions = round_questions(cfg, data, round_)
        if stage == "retrieve":
            state["hits"] = retrieve_stage(cfg, questions, retriever)
            stats: dict[str, Any] = {"questions": len(state["hits"]), "index_version": retriever.version}
        elif stage == "generator":
            stats = (
                generator_stage(cfg, data, questions, generator, state["hits"], state["flagged"], round_)
                if cfg.generator.enabled
                else {"skipped": True}
            )
        elif stage == "retriever":
            stats = retriever_stage(
                cfg, data, questions, retriever, generator, state["hits"], state["flagged"], round_
            )
        elif stage == "refresh":
            stats = refresh_stage(cfg, data, retriever, round_)
        else:
            result = eval_stage(cfg, data, retriever, generator, out, round_)
            record["metrics"], record["errors"] = result["metrics"], result["errors"]
            stats = {"generate_tokens_per_s": result["generate_tokens_per_s"]}
            log.info("round %d: %s", round_, {k: round(v, 4) for k, v in result["metrics"].items()})
        seconds = time.perf_counter() - started
        stats.update(seconds=seconds, peak_rss_mb=peak_rss_mb())
        record["stages"][stage] = stats
        record["index_version"] = retriever.version
        record["wall_s"] = sum(s["seconds"] for s in record["stages"].values())
        state["done"] = [round_, stage]
        if dist.is_main():
            _save_checkpoint(ckpt, state, retriever, generator)
        dist.barrier()
    if dist.is_main():
        _finish(cfg, out, ckpt, retriever)
        write_run_report(out)
    dist.barrier()
    return out


def _finish(cfg: E2EConfig, out: Path, ckpt: Path, retriever: Retriever) -> None:
    """Copy the final artifacts out of the checkpoint: encoders, adapter, index."""
    for name in ("query_encoder", "adapter", "index"):
        save_dir_atomically(
            out / name, lambda tmp, n=name: shutil.copytree(ckpt / n, tmp, dirs_exist_ok=True)
        )
    if cfg.retriever.mode == "both":
        save_dir_atomically(
            out / "passage_encoder",
            lambda tmp: shutil.copytree(ckpt / "query_encoder", tmp, dirs_exist_ok=True),
        )
    else:
        save_dir_atomically(out / "passage_encoder", lambda tmp: retriever.passage.save(str(tmp)))
    state = json.loads((ckpt / "state.json").read_text())
    atomic_write_text(out / "state.json", json.dumps({k: state[k] for k in ("done", "rounds")}, indent=1))
