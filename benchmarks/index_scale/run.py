"""FAISS at scale through ragtune's index wrapper and through plain FAISS calls, in one run.

    python benchmarks/index_scale/run.py [--n 1000000] [--queries 10000]

Vectors: ``--n`` random 384-d vectors drawn around 20,000 random centres (a Gaussian mixture, the
centres and the spread seeded), L2-normalised: random rather than real MiniLM embeddings, because
encoding a million passages would take this 2-core machine about 5 hours; clustered rather than
uniform, because uniform points on a sphere have no near neighbours for an index to find. Queries:
``--queries`` fresh vectors from the same mixture. Ground truth: exact inner-product search
(``exact``). For IVF-PQ and HNSW, ragtune's ``DenseIndex.build`` + ``search`` and the same FAISS
calls written by hand (same training sample, same parameters) are timed; recall@10 against exact,
build seconds, queries/s (best of 3 passes, the two sides' passes interleaved), index bytes and
the process's peak RSS go to benchmarks/results/index_scale.json. The ragtune build time includes
what its wrapper adds: input checks, the id map and measuring the index's serialised size.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import faiss
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import peak_rss_mb, write_result  # noqa: E402
from ragtune.eval.ir import topk_overlap  # noqa: E402
from ragtune.retriever.config import IndexConfig  # noqa: E402
from ragtune.retriever.index import DenseIndex  # noqa: E402

SEED = 0
DIM = 384
K = 10


def mixture(n: int, centres: np.ndarray, rng: np.random.Generator, spread: float = 0.35) -> np.ndarray:
    out = np.empty((n, centres.shape[1]), dtype=np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        x = centres[rng.integers(0, len(centres), m)] + spread * rng.standard_normal(
            (m, DIM), dtype=np.float32
        ) / np.sqrt(DIM)
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def vectors_and_queries(n: int, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` corpus vectors and ``n_queries`` query vectors from the same seeded mixture."""
    rng = np.random.default_rng(SEED)
    centres = rng.standard_normal((20_000, DIM), dtype=np.float32) / np.sqrt(DIM)
    return mixture(n, centres, rng), mixture(n_queries, centres, rng)


def timed_search(search, queries: np.ndarray, k: int, repeats: int = 3) -> tuple[np.ndarray, float]:
    """Positions and queries/s: the best of ``repeats`` timed passes over all queries (after a
    warm-up), so that a busy moment of the machine does not decide a comparison."""
    search(queries[:10], k)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        positions = search(queries, k)
        best = min(best, time.perf_counter() - start)
    return positions, len(queries) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--ef-construction", type=int, default=64)
    args = ap.parse_args()
    start = time.perf_counter()
    x, queries = vectors_and_queries(args.n, args.queries)
    gen_s = time.perf_counter() - start
    ids = [f"p{i}" for i in range(args.n)]
    print(f"{args.n} vectors in {gen_s:.1f} s; rss {peak_rss_mb():.0f} MB", flush=True)

    variants: dict[str, dict] = {}
    exact = faiss.IndexFlatIP(DIM)
    exact.add(x)
    truth, qps = timed_search(lambda q, k, ix=exact: ix.search(q, k)[1], queries, K, repeats=1)
    variants["exact"] = {"metrics": {"Recall@10": 1.0}, "qps": round(qps, 1), "bytes": int(x.nbytes)}
    del exact
    gc.collect()
    print("exact", variants["exact"], flush=True)

    hnsw_cfg = IndexConfig(
        kind="hnsw", hnsw_m=32, ef_construction=args.ef_construction, ef_search=64, recall_queries=0
    )
    ivfpq_cfg = IndexConfig(kind="ivfpq", nlist=4096, nprobe=32, pq_m=48, pq_nbits=8, recall_queries=0)

    def plain_hnsw():
        index = faiss.IndexHNSWFlat(DIM, hnsw_cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = hnsw_cfg.ef_construction
        index.add(x)
        index.hnsw.efSearch = hnsw_cfg.ef_search
        return index

    alive: list = []

    def plain_ivfpq():
        nlist = min(ivfpq_cfg.nlist, max(1, args.n // 39))
        quantizer = faiss.IndexFlatIP(DIM)
        index = faiss.IndexIVFPQ(
            quantizer, DIM, nlist, ivfpq_cfg.pq_m, ivfpq_cfg.pq_nbits, faiss.METRIC_INNER_PRODUCT
        )
        index.pq.cp.seed = SEED
        index.cp.seed = SEED
        sample = max(256 * nlist, 256 * 2**ivfpq_cfg.pq_nbits)
        r = np.random.default_rng((SEED, 0))
        train = x if args.n <= sample else x[np.sort(r.choice(args.n, size=sample, replace=False))]
        index.train(train)
        index.add(x)
        index.nprobe = min(ivfpq_cfg.nprobe, nlist)
        alive.append(quantizer)  # the IVF index points at the quantizer: keep it alive
        return index

    for kind, cfg, plain in (("hnsw", hnsw_cfg, plain_hnsw), ("ivfpq", ivfpq_cfg, plain_ivfpq)):
        built = {}
        for who in ("faiss", "ragtune"):
            gc.collect()
            rss_before = peak_rss_mb()
            start = time.perf_counter()
            index = plain() if who == "faiss" else DenseIndex.build(x, ids, cfg, seed=SEED)
            built[who] = (index, time.perf_counter() - start, rss_before)
        # Searches alternate between the two indexes (best of 3 passes each, 3 rounds), so that a
        # busy moment of the machine cannot favour one side.
        searches = {
            "faiss": lambda q, k, ix=built["faiss"][0]: ix.search(q, k)[1],
            "ragtune": lambda q, k, d=built["ragtune"][0]: d.search_arrays(q, k)[1],
        }
        qps = {"faiss": 0.0, "ragtune": 0.0}
        positions = {}
        for _ in range(3):
            for who, search in searches.items():
                positions[who], speed = timed_search(search, queries, K)
                qps[who] = max(qps[who], speed)
        # the id-mapped answer users get: time it too
        _, qps_ids = timed_search(lambda q, k, d=built["ragtune"][0]: d.search(q, k), queries, K)
        for who in ("faiss", "ragtune"):
            index, build_s, rss_before = built[who]
            size = faiss.serialize_index(index).nbytes if who == "faiss" else index.report["bytes"]
            entry = {
                "metrics": {"Recall@10": round(topk_overlap(positions[who], truth, truth.shape[1]), 4)},
                "build_s": round(build_s, 1),
                "qps": round(qps[who], 1),
                "bytes": int(size),
                "peak_rss_before_build_mb": round(rss_before, 1),
                "params": {k: v for k, v in vars(cfg).items() if k not in ("recall_queries",)},
            }
            if who == "ragtune":
                entry["qps_with_ids"] = round(qps_ids, 1)
            variants[f"{who}_{kind}"] = entry
            print(f"{who}_{kind}", entry, flush=True)
        del built, searches, index
        r, f = variants[f"ragtune_{kind}"], variants[f"faiss_{kind}"]
        r["build_overhead"] = round(r["build_s"] / f["build_s"] - 1, 4)
        r["search_overhead"] = round(f["qps"] / r["qps"] - 1, 4)
        print(
            kind, "build overhead", r["build_overhead"], "search overhead", r["search_overhead"], flush=True
        )

    summary = {
        "n_vectors": args.n,
        "dim": DIM,
        "queries": args.queries,
        "vectors": "Gaussian mixture around 20,000 random centres, L2-normalised (not real embeddings)",
        "targets": {
            f"{kind}_overhead<10%": variants[f"ragtune_{kind}"]["build_overhead"] < 0.10
            and variants[f"ragtune_{kind}"]["search_overhead"] < 0.10
            for kind in ("hnsw", "ivfpq")
        },
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    path = write_result(
        "index_scale",
        f"python benchmarks/index_scale/run.py --n {args.n} --queries {args.queries} --ef-construction {args.ef_construction}",
        SEED,
        variants,
        extra={"summary": summary},
    )
    print(summary)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
