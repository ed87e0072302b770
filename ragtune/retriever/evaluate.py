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

    if methods & {"bm25", "hybrid"}:
        t0 = time.perf_counter()
        bm25 = BM25(pids, ptexts)
        hits = bm25.search(qtexts, depth)
        runs["bm25"] = {q: dict(h) for q, h in zip(qids, hits, strict=True)}
        timings["bm25"] = time.perf_counter() - t0
    if methods & {"dense", "hybrid"}:
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

    summary = {}
    for name in cfg.eval.methods:
        result = evaluate_run(runs[name], data.qrels, ks=ks)
        write_run(out / f"run_{name}.trec", runs[name], tag=f"ragtune-{name}")
        write_metrics(
            out / f"metrics_{name}.json", result.metrics, result.per_query, n_queries=result.n_queries
        )
        summary[name] = result.metrics
    columns = [c for c in TABLE_COLUMNS if any(c in s for s in summary.values())]
    table = markdown_table(summary, columns, label="method")
    atomic_write_text(
        out / "summary.json",
        json.dumps({"metrics": summary, "seconds": timings, "hardware": info}, indent=2) + "\n",
    )
    header = f"Retrieval on {cfg.data.beir_dir} ({cfg.data.split}, {len(qids)} queries, {len(pids)} passages)"
    atomic_write_text(out / "report.md", f"# {header}\n\n{table}\n")
    print(f"\n{header}\n\n{table}\n\nwritten to {out}")
    return out
