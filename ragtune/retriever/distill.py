"""Teacher scores for distillation into the bi-encoder: ``score_triplets(cfg) -> path``.

A trained cross-encoder, or with ``distill.teacher_kind=lm`` a causal LM's query likelihood (UPR,
no labels needed), (``ragtune reranker train``) scores every (query, passage) pair of a
triplets file (each triplet's positives and mined negatives, each pair once); the scores go into
the triplets as each passage's ``teacher`` field, which ``retriever train`` with
``train.loss=margin_mse`` (Margin-MSE, Hofstätter et al. 2020) or ``train.loss=kl`` learns from.

RocketQA's denoising (Qu et al. 2021): a mined negative that the cross-encoder scores above the
query's lowest-scored positive is probably an unlabelled positive; with ``distill.denoise`` it is
dropped. ``<out>.stats.json`` counts the pairs scored, the negatives dropped and kept, and the
teacher's speed; the resolved config goes beside it as ``score_config.yaml``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from ragtune.config import save_config, to_dict
from ragtune.data.io import (
    atomic_write_text,
    load_corpus,
    load_queries,
    load_triplets,
    triplet_to_dict,
    write_jsonl,
)
from ragtune.data.schema import Triplet
from ragtune.errors import UserError
from ragtune.precision import hardware
from ragtune.retriever.config import RetrieverConfig
from ragtune.retriever.mining import stats_path

log = logging.getLogger(__name__)


def upr_scores(
    model: str, pairs: list[tuple[str, str]], batch_size: int, precision: str, passage_tokens: int = 256
) -> list[float]:
    """UPR (Sachan et al. 2022): each (query, passage) pair's mean log-probability of the query's
    tokens under the causal LM ``model``, prompted with the passage (its first ``passage_tokens``
    tokens) and the instruction of ``data synth-queries``; the LM is a zero-shot teacher that needs
    no labels. The end-of-turn token is not scored: the question's own tokens are."""
    from ragtune.data.synth import INSTRUCTION
    from ragtune.generator.likelihood import AnswerLikelihood
    from ragtune.precision import cast_for_inference

    lm = AnswerLikelihood(model, batch_size=batch_size, precision=precision, end_of_turn=False, progress=True)
    cast_for_inference(lm.model, precision)
    tok = lm.tokenizer
    cut: dict[str, str] = {}

    def shown(passage: str) -> str:
        if passage not in cut:
            ids = tok(passage, add_special_tokens=False)["input_ids"][:passage_tokens]
            cut[passage] = tok.decode(ids).strip()
        return cut[passage]

    scored = lm([(INSTRUCTION.format(passage=shown(p)), q) for q, p in pairs])
    return [total / n if n else float("-inf") for total, n in scored]


def score_triplets(cfg: RetrieverConfig) -> Path:
    """Score ``cfg.data.triplets`` with the cross-encoder ``cfg.distill.teacher`` and write the
    triplets with teacher scores (denoised when configured) to ``cfg.distill.out``, atomically.
    Returns the path written."""
    from ragtune.reranker.model import load_cross_encoder, score_pairs

    d = cfg.distill
    if d.teacher is None:
        raise UserError(
            "retriever score-triplets needs distill.teacher: a CrossEncoder folder or name "
            "(teacher_kind=cross-encoder) or a causal LM (teacher_kind=lm)"
        )
    if cfg.data.triplets is None:
        raise UserError("retriever score-triplets needs data.triplets (`ragtune retriever mine` writes one)")
    t0 = time.perf_counter()
    folder = Path(cfg.data.beir_dir)
    corpus, queries = load_corpus(folder / "corpus.jsonl"), load_queries(folder / "queries.jsonl")
    triplets = load_triplets(cfg.data.triplets, corpus, queries)
    texts: dict[tuple[str, str], tuple[str, str]] = {}
    for t in triplets:
        for p in (*t.positives, *(n.passage for n in t.negatives)):
            texts.setdefault((t.query.id, p.id), (t.query.text, p.full_text()))
    keys = list(texts)
    start = time.perf_counter()
    if d.teacher_kind == "lm":
        logits = upr_scores(
            d.teacher, [texts[k] for k in keys], d.batch_size, cfg.precision, d.lm_passage_tokens
        )
    else:
        model = load_cross_encoder(
            d.teacher,
            max_length=d.max_length,
            precision=cfg.precision,
            trust_remote_code=cfg.model.trust_remote_code,
            trained=True,
        )
        logits = score_pairs(
            model, [texts[k] for k in keys], batch_size=d.batch_size, precision=cfg.precision
        )
    score_s = time.perf_counter() - start
    scores = dict(zip(keys, (float(x) for x in logits), strict=True))
    rows, dropped, kept = [], 0, 0
    for t in triplets:
        teacher = {p.id: scores[(t.query.id, p.id)] for p in t.positives}
        teacher.update({n.passage.id: scores[(t.query.id, n.passage.id)] for n in t.negatives})
        negatives = t.negatives
        if d.denoise:
            floor = min(teacher[p.id] for p in t.positives)
            negatives = tuple(n for n in t.negatives if teacher[n.passage.id] <= floor)
            dropped += len(t.negatives) - len(negatives)
        kept += len(negatives)
        rows.append(triplet_to_dict(Triplet(t.query, t.positives, negatives, teacher)))
    out = write_jsonl(d.out, rows)
    stats = {
        "triplets_in": str(cfg.data.triplets),
        "teacher": d.teacher,
        "teacher_kind": d.teacher_kind,
        "triplets": len(rows),
        "pairs_scored": len(keys),
        "pairs_per_s": round(len(keys) / score_s, 2) if score_s > 0 else None,
        "denoise": d.denoise,
        "negatives_dropped_as_likely_positives": dropped,
        "negatives_kept": kept,
        "seconds": round(time.perf_counter() - t0, 3),
        "distill": to_dict(d),
        "hardware": hardware(cfg.precision),
    }
    atomic_write_text(stats_path(out), json.dumps(stats, indent=2) + "\n")
    save_config(cfg, Path(out).parent / "score_config.yaml")
    log.info(
        "scored %d pairs of %d triplets (%.1f pairs/s); dropped %d negatives scored above their positive -> %s",
        len(keys),
        len(rows),
        stats["pairs_per_s"] or 0,
        dropped,
        out,
    )
    return Path(out)
