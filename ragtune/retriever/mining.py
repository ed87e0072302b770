"""Hard-negative mining for contrastive retriever training (DPR, Karpukhin et al. 2020).

For every training query with a relevant document, a retriever (BM25 or the dense model) ranks the
corpus; negatives are drawn from a rank window of that list after two filters:

1. known positives (qrels grade >= 1) are never negatives;
2. false-negative filtering, the "TopK-PercPos" rule of NV-Retriever (Moreira et al. 2024): a
   candidate whose score is at least ``fn_ratio`` times the positive's score is probably an
   unlabelled positive and is dropped. With several positives the lowest positive score is used
   (the conservative choice: it drops the most candidates).

:func:`select_negatives` is the pure per-query rule; :func:`mine` runs it over a BEIR folder and
writes triplets JSONL (one line per (query, positive) pair, negatives with their provenance), a
``<out>.stats.json`` with the counts, and the resolved config.
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

from tqdm.auto import tqdm

from ragtune.config import save_config, to_dict
from ragtune.data.io import DataError, atomic_write_text, load_beir, triplet_to_dict, write_jsonl
from ragtune.data.schema import Negative, Triplet
from ragtune.precision import hardware
from ragtune.retriever.bm25 import BM25
from ragtune.retriever.config import MiningConfig, RetrieverConfig

log = logging.getLogger(__name__)

DROP_REASONS = ("positive", "false_negative", "outside_window")
_BM25_BATCH = 256  # queries scored per sparse product


def select_negatives(
    candidates: list[tuple[str, float]],
    positive_ids: set[str],
    positive_score: float | None,
    cfg: MiningConfig,
    rng: random.Random,
) -> tuple[list[tuple[str, int, float]], dict[str, int]]:
    """Choose the hard negatives of one query from a retriever's ranked list.

    ``candidates`` are (id, score) pairs best first, as a retriever returns them. A candidate's rank
    is its 1-based position in that list, positives included, so the recorded rank is the one the
    retriever gave it. Each candidate is dropped for the first reason that applies, in this order:

    - ``positive``: its id is in ``positive_ids``;
    - ``false_negative``: ``cfg.fn_ratio`` is set, ``positive_score`` is known and > 0, and
      ``score >= cfg.fn_ratio * positive_score``. When the positive score is unknown (None) or
      <= 0 no ratio filtering is done: a ratio of a non-positive score is no meaningful threshold
      (with a score of 0 it would drop every candidate, with a negative one it would sit above the
      positive);
    - ``outside_window``: its rank is outside ``[cfg.rank_start, cfg.rank_end]``.

    Of the remaining candidates, ``cfg.num_negatives`` are kept: the best-ranked (``sampling=top``)
    or a sample drawn with ``rng`` (``sampling=random``). Fewer are returned when fewer remain.

    Returns the chosen ``(id, rank, score)`` sorted by rank, and the number of candidates dropped
    for each reason (keys ``positive``, ``false_negative``, ``outside_window``).
    """
    threshold = None
    if cfg.fn_ratio is not None and positive_score is not None and positive_score > 0:
        threshold = cfg.fn_ratio * positive_score
    dropped = dict.fromkeys(DROP_REASONS, 0)
    eligible: list[tuple[str, int, float]] = []
    for rank, (pid, score) in enumerate(candidates, start=1):
        if pid in positive_ids:
            dropped["positive"] += 1
        elif threshold is not None and score >= threshold:
            dropped["false_negative"] += 1
        elif not cfg.rank_start <= rank <= cfg.rank_end:
            dropped["outside_window"] += 1
        else:
            eligible.append((pid, rank, float(score)))
    k = min(cfg.num_negatives, len(eligible))
    if cfg.sampling == "top":
        chosen = eligible[:k]
    elif cfg.sampling == "random":
        chosen = sorted(rng.sample(eligible, k), key=lambda c: c[1])
    else:  # pragma: no cover - MiningConfig's Literal rules this out
        raise ValueError(f"unknown mining.sampling {cfg.sampling!r}")
    return chosen, dropped


def _bm25_candidates(
    pids: list[str],
    ptexts: list[str],
    qtexts: list[str],
    positives: list[list[str]],
    depth: int,
) -> tuple[list[list[tuple[str, float]]], list[float]]:
    """BM25 ranked lists (``depth`` deep) and the lowest positive BM25 score of each query."""
    bm25 = BM25(pids, ptexts)
    column = {pid: i for i, pid in enumerate(pids)}
    hits: list[list[tuple[str, float]]] = []
    pos_scores: list[float] = []
    for start in tqdm(range(0, len(qtexts), _BM25_BATCH), desc="bm25", unit="batch"):
        batch = qtexts[start : start + _BM25_BATCH]
        block = bm25.scores(batch)  # scored once: ranked lists and positive scores both come from it
        hits.extend(bm25.top_k(block, depth))
        for row, pos in zip(block, positives[start : start + _BM25_BATCH], strict=True):
            pos_scores.append(float(min(row[column[p]] for p in pos)))
    return hits, pos_scores


def _dense_candidates(
    cfg: RetrieverConfig,
    pids: list[str],
    ptexts: list[str],
    qtexts: list[str],
    positives: list[list[str]],
    depth: int,
) -> tuple[list[list[tuple[str, float]]], list[float]]:
    """Dense ranked lists (exact inner product on normalised vectors, ``depth`` deep) and the lowest
    positive cosine score of each query; with ``model.kind=colbert``, exact MaxSim lists and the
    lowest positive MaxSim score."""
    from ragtune.retriever.index import DenseIndex
    from ragtune.retriever.model import encode_passages, encode_queries, load_encoder

    m = cfg.model
    if m.kind == "colbert":
        return _colbert_candidates(cfg, pids, ptexts, qtexts, positives, depth)
    model = load_encoder(m.name, precision=cfg.precision, trust_remote_code=m.trust_remote_code)
    pvec = encode_passages(model, ptexts, cfg)  # [n_passages, dim]
    qvec = encode_queries(model, qtexts, cfg)  # [n_queries, dim]
    hits = DenseIndex.flat(pvec, pids).search(qvec, depth)
    row = {pid: i for i, pid in enumerate(pids)}
    pos_scores = [float(min(float(pvec[row[p]] @ qvec[i]) for p in pos)) for i, pos in enumerate(positives)]
    return hits, pos_scores


def _colbert_candidates(
    cfg: RetrieverConfig,
    pids: list[str],
    ptexts: list[str],
    qtexts: list[str],
    positives: list[list[str]],
    depth: int,
) -> tuple[list[list[tuple[str, float]]], list[float]]:
    from ragtune.retriever.colbert import (
        ColbertIndex,
        encode_passage_tokens,
        encode_query_tokens,
        load_trained_colbert,
        maxsim_scores,
    )

    model = load_trained_colbert(cfg)
    index = ColbertIndex(encode_passage_tokens(model, ptexts, cfg), pids)
    queries = encode_query_tokens(model, qtexts, cfg)
    hits = index.search(queries, depth)
    row = {pid: i for i, pid in enumerate(pids)}
    pos_scores = [
        float(maxsim_scores([q], [index.passages[row[p]] for p in pos]).min())
        for q, pos in zip(queries, positives, strict=True)
    ]
    return hits, pos_scores


def stats_path(out: str | Path) -> Path:
    """Where :func:`mine` writes the counts for the triplets file ``out``: ``<out>.stats.json``."""
    out = Path(out)
    return out.with_name(out.name + ".stats.json")


def mine(cfg: RetrieverConfig) -> Path:
    """Mine hard negatives for the ``cfg.data.train_split`` queries of ``cfg.data.beir_dir``.

    Each judged query with a relevant document (grade >= 1) is searched ``rank_end + n_positives``
    deep by ``cfg.mining.method`` (BM25 over ``title + text``, or the dense model ``cfg.model.name``
    with its prefixes and lengths); :func:`select_negatives` picks its negatives, using the lowest
    positive score of the same scorer for false-negative filtering. One triplet is written per
    (query, positive) pair, all with the query's negatives (source, rank, score recorded), to
    ``cfg.mining.out`` atomically; ``<out>.stats.json`` and ``mine_config.yaml`` go beside it.
    Random sampling is seeded by ``cfg.seed``. Returns the path of the triplets file.
    """
    mc = cfg.mining
    out = Path(mc.out)
    t0 = time.perf_counter()
    data = load_beir(cfg.data.beir_dir, cfg.data.train_split)
    qids: list[str] = []
    positives: list[list[str]] = []
    for qid, judged in data.qrels.items():
        pos = [did for did, grade in judged.items() if grade >= 1]
        if pos:
            qids.append(qid)
            positives.append(pos)
    if not qids:
        qrels_file = Path(cfg.data.beir_dir) / "qrels" / f"{cfg.data.train_split}.tsv"
        raise DataError(
            qrels_file, None, "score", "no query has a relevant document (grade >= 1) to mine for"
        )
    qtexts = [data.queries[q].text for q in qids]
    pids = list(data.corpus)
    ptexts = [p.full_text() for p in data.corpus.values()]
    depth = mc.rank_end + max(len(p) for p in positives)
    log.info(
        "mining %s negatives for %d queries over %d passages (ranks %d..%d, %s %d, fn_ratio %s)",
        mc.method,
        len(qids),
        len(pids),
        mc.rank_start,
        mc.rank_end,
        mc.sampling,
        mc.num_negatives,
        mc.fn_ratio,
    )
    if mc.method == "bm25":
        hits, pos_scores = _bm25_candidates(pids, ptexts, qtexts, positives, depth)
    elif mc.method == "dense":
        hits, pos_scores = _dense_candidates(cfg, pids, ptexts, qtexts, positives, depth)
    else:  # pragma: no cover - MiningConfig's Literal rules this out
        raise ValueError(f"unknown mining.method {mc.method!r}")

    rng = random.Random(cfg.seed)
    rows: list[dict] = []
    dropped = dict.fromkeys(DROP_REASONS, 0)
    n_negatives = n_short = n_short_triplets = 0
    for qid, pos, cands, pos_score in zip(qids, positives, hits, pos_scores, strict=True):
        cands = cands[: mc.rank_end + len(pos)]
        chosen, why = select_negatives(cands, set(pos), pos_score, mc, rng)
        for reason, count in why.items():
            dropped[reason] += count
        negatives = tuple(Negative(data.corpus[pid], mc.method, rank, score) for pid, rank, score in chosen)
        short = len(chosen) < mc.num_negatives
        n_short += short
        for p in pos:
            rows.append(triplet_to_dict(Triplet(data.queries[qid], (data.corpus[p],), negatives)))
            n_negatives += len(negatives)
            n_short_triplets += short
    write_jsonl(out, rows)
    seconds = time.perf_counter() - t0
    stats = {
        "beir_dir": str(cfg.data.beir_dir),
        "split": cfg.data.train_split,
        "queries": len(qids),  # judged queries with a relevant document
        "queries_without_positive": len(data.qrels) - len(qids),
        "triplets": len(rows),  # one per (query, positive) pair
        "negatives": n_negatives,  # negatives written, summed over triplets
        "negatives_per_triplet": n_negatives / len(rows),
        # candidates dropped, counted once per query (each for its first reason)
        "dropped_positives": dropped["positive"],
        "dropped_false_negatives": dropped["false_negative"],
        "dropped_outside_window": dropped["outside_window"],
        "queries_short": n_short,  # queries with fewer than num_negatives negatives
        "triplets_short": n_short_triplets,
        "seed": cfg.seed,
        "seconds": round(seconds, 3),
        "mining": to_dict(mc),
        "hardware": hardware(cfg.precision) if mc.method == "dense" else None,
    }
    atomic_write_text(stats_path(out), json.dumps(stats, indent=2) + "\n")
    save_config(cfg, out.parent / "mine_config.yaml")
    log.info(
        "mined %d triplets for %d queries (%d negatives; dropped %d positives, %d false negatives, "
        "%d outside the window; %d queries short of %d) in %.1fs -> %s",
        stats["triplets"],
        stats["queries"],
        n_negatives,
        dropped["positive"],
        dropped["false_negative"],
        dropped["outside_window"],
        n_short,
        mc.num_negatives,
        seconds,
        out,
    )
    return out


__all__ = ["DROP_REASONS", "mine", "select_negatives", "stats_path"]
