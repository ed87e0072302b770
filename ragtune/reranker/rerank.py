"""Reranking a retrieval run with the cross-encoder: ``rerank_run`` (in memory) and ``rerank`` (a TREC
run file in, a TREC run file out).

Per query, the ``top_n`` best candidates of the run are rescored by the cross-encoder and ordered by
its logit; candidates below ``top_n`` keep their original order underneath them (their scores are
set below the lowest reranked one), so a run stays complete to its original depth. With a
``first_stage_weight`` w > 0 (:func:`mix_first_stage`) the top n are ordered by
``w * first-stage score + (1 - w) * logit``, each min-max normalised over the query's top n.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ragtune.data.io import DataError, atomic_write_text, load_corpus, load_queries, read_run, write_run
from ragtune.data.schema import Passage, Query
from ragtune.precision import hardware
from ragtune.reranker.config import RerankerConfig

log = logging.getLogger(__name__)

THRESHOLD_FILE = "threshold.json"  # beside the model: the pair-classification threshold chosen on validation


def rerank_hits(
    model: Any,
    questions: Sequence[str],
    hits: Sequence[Sequence[tuple[str, float]]],
    passages: Mapping[str, Passage],
    *,
    top_n: int,
    batch_size: int = 64,
    precision: str = "auto",
    show_progress: bool = False,
) -> list[list[tuple[str, float]]]:
    """Each question's hits, best first, with its ``top_n`` best rescored by ``model`` (logits) and
    ordered by them; the hits below ``top_n`` follow in their order, scored below every reranked one.
    Every passage id must be in ``passages`` (a KeyError names it otherwise)."""
    from ragtune.reranker.model import score_pairs

    heads = [sorted(h, key=lambda x: -x[1])[:top_n] for h in hits]
    pairs = [
        (q, passages[pid].full_text()) for q, head in zip(questions, heads, strict=True) for pid, _ in head
    ]
    scores = score_pairs(
        model, pairs, batch_size=batch_size, precision=precision, show_progress=show_progress
    )
    out, k = [], 0
    for h, head in zip(hits, heads, strict=True):
        rescored = sorted(
            ((pid, float(v)) for (pid, _), v in zip(head, scores[k : k + len(head)], strict=True)),
            key=lambda x: -x[1],
        )
        k += len(head)
        floor = min((v for _, v in rescored), default=0.0)
        tail = sorted(h, key=lambda x: -x[1])[top_n:]
        out.append(rescored + [(pid, floor - 1.0 - i) for i, (pid, _) in enumerate(tail)])
    return out


def mix_first_stage(
    first: Mapping[str, Mapping[str, float]],
    reranked: Mapping[str, Mapping[str, float]],
    top_n: int,
    weight: float,
) -> dict[str, dict[str, float]]:
    """Each query's top ``top_n`` of the first-stage run ``first`` ordered by ``weight`` x its
    first-stage score + (1 - ``weight``) x its reranker logit (from ``reranked``), both min-max
    normalised over those candidates (:func:`ragtune.retriever.bm25.weighted_fusion`); the rest keep
    their first-stage order below them. ``weight`` 0 is ``reranked`` itself; 1 is the first stage."""
    from ragtune.retriever.bm25 import weighted_fusion

    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the first-stage weight must be in [0, 1], got {weight}")
    if weight == 0.0:
        return {q: dict(c) for q, c in reranked.items()}
    out = {}
    for q, cands in first.items():
        ranked = sorted(cands.items(), key=lambda x: -x[1])
        head = dict(ranked[:top_n])
        mixed = weighted_fusion([head, {pid: reranked[q][pid] for pid in head}], [weight, 1.0 - weight])
        floor = min((v for _, v in mixed), default=0.0)
        out[q] = dict(mixed + [(pid, floor - 1.0 - i) for i, (pid, _) in enumerate(ranked[top_n:])])
    return out


def check_run_ids(
    run: Mapping[str, Mapping[str, float]],
    queries: Mapping[str, Query],
    corpus: Mapping[str, Passage],
    top_n: int,
    source: str,
) -> None:
    """A :class:`DataError` naming ``source`` for a query of ``run`` missing from ``queries`` or a
    passage of a query's top ``top_n`` missing from ``corpus``."""
    for qid, cands in run.items():
        if qid not in queries:
            raise DataError(Path(source), None, "query_id", f"query {qid!r} is not in the queries file")
        for pid in sorted(cands, key=lambda d: -cands[d])[:top_n]:
            if pid not in corpus:
                raise DataError(
                    Path(source), None, "doc_id", f"passage {pid!r} (query {qid!r}) is not in the corpus"
                )


def rerank_run(
    model: Any,
    run: Mapping[str, Mapping[str, float]],
    queries: Mapping[str, Query],
    corpus: Mapping[str, Passage],
    *,
    top_n: int,
    batch_size: int = 64,
    precision: str = "auto",
    show_progress: bool = True,
    source: str = "run",
) -> dict[str, dict[str, float]]:
    """The run with each query's ``top_n`` candidates rescored by ``model`` (logits) and the rest
    kept below them in their order (:func:`rerank_hits`). Every query and passage id must exist
    (``source`` names the file in the error)."""
    check_run_ids(run, queries, corpus, top_n, source)
    qids = list(run)
    reranked = rerank_hits(
        model,
        [queries[q].text for q in qids],
        [list(run[q].items()) for q in qids],
        corpus,
        top_n=top_n,
        batch_size=batch_size,
        precision=precision,
        show_progress=show_progress,
    )
    return {q: dict(h) for q, h in zip(qids, reranked, strict=True)}


def load_threshold(model_dir: str | Path) -> tuple[float, str]:
    """The pair-classification threshold saved beside a trained reranker (chosen on its validation
    queries), or 0.5 (``"default"``) when the folder has none."""
    path = Path(model_dir) / THRESHOLD_FILE
    if not path.exists():
        return 0.5, "default"
    info = json.loads(path.read_text())
    return float(info["threshold"]), str(info.get("chosen_on", path))


def pair_labels(
    run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]], top_n: int
) -> tuple[list[int], list[float]]:
    """Labels (qrels grade >= 1) and probabilities (sigmoid of the logit) of each judged query's
    ``top_n`` reranked pairs, for :func:`ragtune.eval.classification.classification_metrics`."""
    labels, probs = [], []
    for qid, cands in run.items():
        if qid not in qrels:
            continue
        for pid in sorted(cands, key=lambda d: -cands[d])[:top_n]:
            labels.append(int(qrels[qid].get(pid, 0) >= 1))
            probs.append(1.0 / (1.0 + math.exp(-cands[pid])))
    return labels, probs


def rerank(cfg: RerankerConfig, run_path: Path, out_path: Path, model_name: str | None = None) -> Path:
    """Rerank the TREC run at ``run_path`` (queries and passages from ``cfg.data.beir_dir``) with the
    cross-encoder ``model_name`` (default: ``cfg.output_dir/model`` when it exists, else
    ``cfg.model.name``); write the reranked run to ``out_path`` atomically and a
    ``<out>.json`` with the settings, timing and hardware. Returns ``out_path``."""
    from ragtune.reranker.model import load_cross_encoder

    if model_name is None:
        trained = Path(cfg.output_dir) / "model"
        model_name = str(trained) if trained.exists() else cfg.model.name
    run = read_run(run_path)
    folder = Path(cfg.data.beir_dir)
    corpus, queries = load_corpus(folder / "corpus.jsonl"), load_queries(folder / "queries.jsonl")
    check_run_ids(run, queries, corpus, cfg.rerank.top_n, str(run_path))  # before loading the model
    model = load_cross_encoder(  # at the pair length the model was trained with (saved in its folder)
        model_name, precision=cfg.precision, trust_remote_code=cfg.model.trust_remote_code, trained=True
    )
    start = time.perf_counter()
    reranked = rerank_run(
        model,
        run,
        queries,
        corpus,
        top_n=cfg.rerank.top_n,
        batch_size=cfg.rerank.batch_size,
        precision=cfg.precision,
        source=str(run_path),
    )
    reranked = mix_first_stage(run, reranked, cfg.rerank.top_n, cfg.rerank.first_stage_weight)
    seconds = time.perf_counter() - start
    write_run(out_path, reranked, tag="ragtune-rerank")
    n_pairs = sum(min(len(c), cfg.rerank.top_n) for c in run.values())
    info = {
        "run": str(run_path),
        "model": model_name,
        "queries": len(run),
        "pairs": n_pairs,
        "top_n": cfg.rerank.top_n,
        "first_stage_weight": cfg.rerank.first_stage_weight,
        "seconds": round(seconds, 3),
        "ms_per_query": round(1000 * seconds / max(1, len(run)), 2),
        "hardware": hardware(cfg.precision),
    }
    atomic_write_text(Path(str(out_path) + ".json"), json.dumps(info, indent=2) + "\n")
    log.info("reranked %d queries (%d pairs) in %.1fs -> %s", len(run), n_pairs, seconds, out_path)
    return out_path
