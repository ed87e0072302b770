"""The search-time cost of ragtune's wrapper alone: one IVF-PQ index over 1M vectors (as in run.py),
searched through plain FAISS calls and through ``DenseIndex.search_arrays`` on the same FAISS object,
passes interleaved, best of ``--repeats`` each. run.py compares two separately built indexes, whose
search speeds also differ by memory placement; this isolates what the wrapper adds.

    python benchmarks/index_scale/same_index.py [--n 1000000] [--queries 10000] [--repeats 5]

Writes benchmarks/results/index_scale_same_index.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import peak_rss_mb, write_result  # noqa: E402
from benchmarks.index_scale.run import SEED, K, vectors_and_queries  # noqa: E402
from ragtune.retriever.config import IndexConfig  # noqa: E402
from ragtune.retriever.index import DenseIndex  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    x, queries = vectors_and_queries(args.n, args.queries)
    cfg = IndexConfig(kind="ivfpq", nlist=4096, nprobe=32, pq_m=48, pq_nbits=8, recall_queries=0)
    dense = DenseIndex.build(x, [f"p{i}" for i in range(args.n)], cfg, seed=SEED)
    index = dense.index
    ways = {
        "faiss_one_call": lambda: index.search(queries, K),
        "faiss_chunks_4096": lambda: [
            index.search(queries[i : i + 4096], K) for i in range(0, len(queries), 4096)
        ],
        "ragtune_search_arrays": lambda: dense.search_arrays(queries, K),
        "ragtune_search_with_ids": lambda: dense.search(queries, K),
    }
    index.search(queries[:10], K)  # warm-up
    best = dict.fromkeys(ways, 0.0)
    for _ in range(args.repeats):
        for name, fn in ways.items():
            start = time.perf_counter()
            fn()
            best[name] = max(best[name], len(queries) / (time.perf_counter() - start))
    variants = {name: {"qps": round(qps, 1)} for name, qps in best.items()}
    overhead = best["faiss_one_call"] / best["ragtune_search_arrays"] - 1
    summary = {
        "n_vectors": args.n,
        "queries": args.queries,
        "repeats": args.repeats,
        "index": "ivfpq nlist 4096 nprobe 32 pq 48x8, one FAISS object for every way",
        "search_overhead": round(overhead, 4),
        "search_overhead<10%": overhead < 0.10,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    command = f"python benchmarks/index_scale/same_index.py --n {args.n} --queries {args.queries} --repeats {args.repeats}"
    path = write_result("index_scale_same_index", command, SEED, variants, extra={"summary": summary})
    print(variants, summary)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
