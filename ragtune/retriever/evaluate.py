"""Score retrievers (BM25, dense, hybrid) on a BEIR-layout folder with trec_eval-identical metrics."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from ragtune.config import save_config
from ragtune.data.io import atomic_write_text, load_beir, write_run
from ragtune.eval.ir import evaluate_run
from ragtune.eval.report import markdown_table, write_metrics
from ragtune.precision import describe, hardware
from ragtune.retriever.bm25 import BM25, hybrid_fusion
from ragtune.retriever.config import RetrieverConfig

log = logging.getLogger(__name__)
TABLE_COLUMNS = ("nDCG@10", "Recall@10", "Recall@100", "MRR@10", "MAP@100", "P@10")


def fuse(
    bm25_run: dict[str, dict[str, float]],
    dense_run: dict[str, dict[str, float]],
    cfg: RetrieverConfig,
    depth: int,
) -> dict[str, dict[str, float]]:
    """Hybrid run: BM25 and dense fused per query as ``cfg.eval.fusion`` says."""
    e = cfg.eval
    return {
        q: dict(hybrid_fusion(bm25_run[q], dense_run[q], e.fusion, e.dense_weight, depth, e.rrf_k))
        for q in bm25_run
    }


def _rerank(cfg: RetrieverConfig, runs: dict, queries: dict, data) -> tuple[dict, float, dict]:
    """The ``eval.rerank_candidates`` run reranked by ``eval.reranker``; the seconds it took; the
    pair classification of its top-n at the reranker's saved threshold (chosen on its validation
    queries, never on these)."""
    from ragtune.eval.classification import classification_metrics
    from ragtune.reranker.model import load_cross_encoder
    from ragtune.reranker.rerank import load_threshold, mix_first_stage, pair_labels, rerank_run

    e = cfg.eval
    t0 = time.perf_counter()
    model = load_cross_encoder(
        e.reranker, precision=cfg.precision, trust_remote_code=cfg.model.trust_remote_code, trained=True
    )
    first = runs[e.rerank_candidates]
    logits = rerank_run(model, first, queries, data.corpus, top_n=e.rerank_top_n, precision=cfg.precision)
    run = mix_first_stage(first, logits, e.rerank_top_n, e.rerank_first_stage_weight)
    seconds = time.perf_counter() - t0
    threshold, source = load_threshold(e.reranker) if Path(e.reranker).is_dir() else (0.5, "default")
    labels, probs = pair_labels(logits, data.qrels, e.rerank_top_n)  # classified by the logits
    classification = classification_metrics(labels, probs, threshold)
    classification["threshold_source"] = source
    classification["ms_per_query"] = 1000 * seconds / max(1, len(run))
    return run, seconds, classification


def evaluate(cfg: RetrieverConfig) -> Path:
    """Retrieve for the split's queries with each method of ``cfg.eval.methods``; write one TREC run,
    one metrics JSON per method, ``summary.json``, ``report.md`` and the resolved config into
    ``cfg.output_dir``. Returns the output folder."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = hardware(cfg.precision)
    save_config(cfg, out / "config.yaml", header=f"ragtune retriever eval: {describe(info)}")
    data = load_beir(cfg.data.beir_dir, cfg.data.split)
    queries = data.split_queries()
    qids, qtexts = list(queries), [q.text for q in queries.values()]
    pids = list(data.corpus)
    ptexts = [p.full_text() for p in data.corpus.values()]
    depth, ks = cfg.eval.depth, cfg.eval.ks
    runs: dict[str, dict[str, dict[str, float]]] = {}
    timings: dict[str, float] = {}
    methods = set(cfg.eval.methods)

    if "rerank" in methods:
        methods.add(cfg.eval.rerank_candidates)
        if cfg.eval.rerank_candidates == "hybrid":
            methods |= {"bm25", "dense"}
    if methods & {"bm25", "hybrid"}:
        t0 = time.perf_counter()
        bm25 = BM25(pids, ptexts)
        hits = bm25.search(qtexts, depth)
        runs["bm25"] = {q: dict(h) for q, h in zip(qids, hits, strict=True)}
        timings["bm25"] = time.perf_counter() - t0
    if methods & {"dense", "hybrid"} and cfg.model.kind == "colbert":
        from ragtune.retriever.colbert import (
            ColbertIndex,
            encode_passage_tokens,
            encode_query_tokens,
            load_trained_colbert,
        )

        t0 = time.perf_counter()  # late interaction where "dense" is asked for: MaxSim over token vectors
        if cfg.eval.index_dir is not None:
            index = ColbertIndex.load(cfg.eval.index_dir)
            model = load_trained_colbert(cfg, index.encoder.get("model"))
        else:
            model = load_trained_colbert(cfg)
            index = ColbertIndex(encode_passage_tokens(model, ptexts, cfg), pids)
        hits = index.search(encode_query_tokens(model, qtexts, cfg), depth)
        runs["dense"] = {q: dict(h) for q, h in zip(qids, hits, strict=True)}
        timings["dense"] = time.perf_counter() - t0
    elif methods & {"dense", "hybrid"}:
        from ragtune.retriever.index import DenseIndex
        from ragtune.retriever.model import encode_passages, encode_queries, load_encoder

        t0 = time.perf_counter()
        m, e = cfg.model, cfg.eval
        if e.index_dir is not None:
            index = DenseIndex.load(e.index_dir)
            model = load_encoder(
                index.encoder.get("model") or m.name,
                precision=cfg.precision,
                trust_remote_code=m.trust_remote_code,
            )
        else:
            model = load_encoder(m.name, precision=cfg.precision, trust_remote_code=m.trust_remote_code)
            pvec = encode_passages(model, ptexts, cfg)
            index = DenseIndex.flat(pvec, pids)
        qvec = encode_queries(model, qtexts, cfg)
        hits = index.search(qvec, depth)
        runs["dense"] = {q: dict(h) for q, h in zip(qids, hits, strict=True)}
        timings["dense"] = time.perf_counter() - t0
    if "hybrid" in methods:
        runs["hybrid"] = fuse(runs["bm25"], runs["dense"], cfg, depth)
    classification: dict[str, dict] = {}
    if "rerank" in methods:
        runs["rerank"], timings["rerank"], classification["rerank"] = _rerank(cfg, runs, queries, data)

    summary = {}
    for name in cfg.eval.methods:
        result = evaluate_run(runs[name], data.qrels, ks=ks)
        write_run(out / f"run_{name}.trec", runs[name], tag=f"ragtune-{name}")
        extra = {"classification": classification[name]} if name in classification else {}
        write_metrics(
            out / f"metrics_{name}.json",
            result.metrics,
            result.per_query,
            n_queries=result.n_queries,
            **extra,
        )
        summary[name] = result.metrics
    columns = [c for c in TABLE_COLUMNS if any(c in s for s in summary.values())]
    table = markdown_table(summary, columns, label="method")
    record = {"metrics": summary, "seconds": timings, "hardware": info}
    if classification:
        record["classification"] = classification
    atomic_write_text(out / "summary.json", json.dumps(record, indent=2) + "\n")
    header = f"Retrieval on {cfg.data.beir_dir} ({cfg.data.split}, {len(qids)} queries, {len(pids)} passages)"
    notes = ""
    for name, c in classification.items():
        notes += (
            f"\n{name}: pair classification at threshold {c['threshold']:.4f} ({c['threshold_source']}): "
            f"Accuracy {c['Accuracy']:.4f}, Precision {c['Precision']:.4f}, Recall {c['Recall']:.4f}, "
            f"F1 {c['F1']:.4f} over {c['pairs']} pairs ({c['positives']} relevant)\n"
        )
    atomic_write_text(out / "report.md", f"# {header}\n\n{table}\n{notes}")
    print(f"\n{header}\n\n{table}\n{notes}\nwritten to {out}")
    return out
