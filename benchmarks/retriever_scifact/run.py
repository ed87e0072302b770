"""Retriever benchmark on SciFact: zero-shot, BM25, hybrid, ragtune fine-tuned, and the peer.

    python benchmarks/retriever_scifact/run.py [--epochs 3] [--resume]

Everything runs on this machine in one run, so the ratios are comparable. Training runs are child
processes (their peak RSS is measured with wait4); evaluation encodes the corpus with the same code
for every model, in the precision ``auto`` resolves to on this CPU (bf16 weights where bf16 is native,
fp32 elsewhere; ``zero_shot_fp32`` is always fp32). The peer trains at its own best precision here
(``peer.py --precision auto``). Writes benchmarks/results/retriever_scifact.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import SHARED_DATASETS, child, write_result  # noqa: E402
from ragtune.data.io import load_beir  # noqa: E402
from ragtune.eval.ir import evaluate_run  # noqa: E402
from ragtune.precision import resolve_precision  # noqa: E402
from ragtune.retriever.bm25 import BM25, reciprocal_rank_fusion, tokenize, weighted_fusion  # noqa: E402

METRICS = ("nDCG@10", "Recall@10", "Recall@100", "MRR@10")
SEED = 0


def pick(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(metrics[k], 4) for k in METRICS}


ENCODE_BATCH = 128  # same for fp32 and bf16 (fp32 speed is flat from 32 to 128; bf16 gains)
WEIGHTS = [round(0.1 * i, 1) for i in range(1, 10)]


def dense_run(model_name: str, data, precision: str, train=None) -> tuple[dict, float, dict | None]:
    """Exact dense retrieval of the test queries (and of ``train``'s queries, for choosing the fusion).

    Returns (test run, corpus docs/s, train run or None)."""
    from ragtune.retriever.index import DenseIndex
    from ragtune.retriever.model import encode, load_encoder

    model = load_encoder(model_name, precision=precision)
    texts = [p.full_text() for p in data.corpus.values()]
    start = time.perf_counter()
    pvec = encode(
        model, texts, max_length=256, batch_size=ENCODE_BATCH, precision=precision, show_progress=False
    )
    docs_per_s = len(texts) / (time.perf_counter() - start)
    index = DenseIndex.flat(pvec, list(data.corpus))

    def search(split) -> dict:
        queries = split.split_queries()
        texts = [q.text for q in queries.values()]
        qvec = encode(model, texts, max_length=64, batch_size=64, precision=precision, show_progress=False)
        return {q: dict(h) for q, h in zip(queries, index.search(qvec, 100), strict=True)}

    return search(data), docs_per_s, (search(train) if train is not None else None)


def rrf(run_a: dict, run_b: dict) -> dict:
    out = {}
    for q in run_a:
        rankings = [sorted(r[q], key=r[q].get, reverse=True) for r in (run_a, run_b)]
        out[q] = dict(reciprocal_rank_fusion(rankings, k=60, depth=100))
    return out


def weighted(bm25_run: dict, dense: dict, w: float) -> dict:
    return {q: dict(weighted_fusion([bm25_run[q], dense[q]], [1 - w, w], 100)) for q in bm25_run}


def choose_fusion(bm25_train: dict, dense_train: dict, train_qrels) -> tuple[str, float | None, dict]:
    """Pick RRF or a dense weight by nDCG@10 on the TRAIN queries (the test queries play no part)."""
    scores = {"rrf": evaluate_run(rrf(bm25_train, dense_train), train_qrels).metrics["nDCG@10"]}
    for w in WEIGHTS:
        fused = weighted(bm25_train, dense_train, w)
        scores[f"weighted_{w}"] = evaluate_run(fused, train_qrels).metrics["nDCG@10"]
    best = max(scores, key=scores.get)
    weight = None if best == "rrf" else float(best.split("_")[1])
    return best, weight, {k: round(v, 4) for k, v in scores.items()}


def fused_variant(bm25_run, dense, bm25_train, dense_train, train_qrels, qrels) -> dict:
    """The hybrid with the fusion chosen on train queries, plus the RRF and every weight on test
    (reported for transparency, not used for the choice)."""
    best, weight, train_scores = choose_fusion(bm25_train, dense_train, train_qrels)
    chosen = rrf(bm25_run, dense) if weight is None else weighted(bm25_run, dense, weight)
    test_sweep = {
        f"weighted_{w}": round(evaluate_run(weighted(bm25_run, dense, w), qrels).metrics["nDCG@10"], 4)
        for w in WEIGHTS
    }
    return {
        "metrics": pick(evaluate_run(chosen, qrels).metrics),
        "fusion": best,
        "chosen_on": "nDCG@10 of the 809 SciFact train queries",
        "train_nDCG@10_by_fusion": train_scores,
        "test_nDCG@10_by_weight_not_used_for_choice": test_sweep,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument(
        "--resume", action="store_true", help="reuse variants finished by an interrupted run (work/variants/)"
    )
    ap.add_argument(
        "--config", type=Path, default=ROOT / "configs/retriever/scifact.yaml", help="ragtune recipe"
    )
    args = ap.parse_args()
    scifact = SHARED_DATASETS / "scifact"
    work = HERE / "work"
    work.mkdir(exist_ok=True)
    test = load_beir(scifact, "test")
    qrels = test.qrels
    cache = work / "variants"
    cache.mkdir(exist_ok=True)
    variants: dict[str, dict] = {}

    def done(name: str) -> bool:
        """Reuse a variant finished by an earlier, interrupted invocation (--resume)."""
        if args.resume and (cache / f"{name}.json").exists():
            variants[name] = json.loads((cache / f"{name}.json").read_text())
            print("reused", name, variants[name], flush=True)
            return True
        return False

    def keep(name: str) -> None:
        (cache / f"{name}.json").write_text(json.dumps(variants[name], indent=2))

    py = sys.executable
    ragtune = [py, "-m", "ragtune.cli"]

    # BM25: ragtune's sparse-product BM25 against rank-bm25 (the reference scores).
    ids, texts = list(test.corpus), [p.full_text() for p in test.corpus.values()]
    queries = test.split_queries()
    qtexts = [q.text for q in queries.values()]
    start = time.perf_counter()
    bm25 = BM25(ids, texts)
    index_s = time.perf_counter() - start
    start = time.perf_counter()
    hits = bm25.search(qtexts, 100)
    search_s = time.perf_counter() - start
    bm25_run = {q: dict(h) for q, h in zip(queries, hits, strict=True)}
    train = load_beir(scifact, "train")
    train_queries = train.split_queries()
    bm25_train = {
        q: dict(h)
        for q, h in zip(
            train_queries, bm25.search([q.text for q in train_queries.values()], 100), strict=True
        )
    }
    from rank_bm25 import BM25Okapi

    reference = BM25Okapi([tokenize(t) for t in texts])
    start = time.perf_counter()
    ref_scores = np.stack([reference.get_scores(tokenize(q)) for q in qtexts])
    ref_s = time.perf_counter() - start
    variants["bm25"] = {
        "metrics": pick(evaluate_run(bm25_run, qrels).metrics),
        "index_s": round(index_s, 3),
        "search_s": round(search_s, 3),
        "qps": round(len(qtexts) / search_s, 1),
        "rank_bm25_search_s": round(ref_s, 3),
        "max_abs_diff_vs_rank_bm25": float(np.abs(bm25.scores(qtexts) - ref_scores).max()),
    }
    print("bm25", variants["bm25"], flush=True)

    # Zero-shot dense: fp32, and the precision auto resolves to here (bf16 weights where native).
    base = "sentence-transformers/all-MiniLM-L6-v2"
    if not (
        done("zero_shot_fp32")
        and done("zero_shot")
        and done("hybrid_zero_shot")
        and done("hybrid_zero_shot_weighted")
    ):
        fp32_run, fp32_dps, _ = dense_run(base, test, "fp32")
        zs_run, bf16_dps, zs_train = dense_run(base, test, "auto", train=train)
        variants["zero_shot_fp32"] = {
            "metrics": pick(evaluate_run(fp32_run, qrels).metrics),
            "docs_per_s": round(fp32_dps, 1),
            "encode_batch_size": ENCODE_BATCH,
        }
        variants["zero_shot"] = {
            "metrics": pick(evaluate_run(zs_run, qrels).metrics),
            "docs_per_s": round(bf16_dps, 1),
            "encoding_speedup_vs_fp32": round(bf16_dps / fp32_dps, 2),
            "precision": "bf16 weights" if resolve_precision("auto") == "bf16" else "fp32",
            "encode_batch_size": ENCODE_BATCH,
        }
        variants["hybrid_zero_shot"] = {
            "metrics": pick(evaluate_run(rrf(bm25_run, zs_run), qrels).metrics),
            "fusion": "rrf (k=60)",
        }
        variants["hybrid_zero_shot_weighted"] = fused_variant(
            bm25_run, zs_run, bm25_train, zs_train, train.qrels, qrels
        )
        keep("hybrid_zero_shot_weighted")
        keep("zero_shot_fp32")
        keep("zero_shot")
        keep("hybrid_zero_shot")
    names = ("zero_shot_fp32", "zero_shot", "hybrid_zero_shot", "hybrid_zero_shot_weighted")
    print({k: variants[k] for k in names}, flush=True)

    # Training data: the top BM25 document outside the query's qrels as its hard negative.
    negatives = work / "bm25_top1.jsonl"
    child(
        [
            *ragtune,
            "retriever",
            "mine",
            f"data.beir_dir={scifact}",
            "mining.fn_ratio=null",
            "mining.num_negatives=1",
            f"mining.out={negatives}",
        ],
        work / "mine_bm25.log",
    )

    # The peer.
    peer_dir = work / "peer"
    if not (args.resume and (peer_dir / "peer_stats.json").exists()):
        wall, rss = child(
            [
                *[py, str(HERE / "peer.py"), str(negatives), str(peer_dir)],
                *["--epochs", str(args.epochs), "--precision", "auto"],
            ],
            work / "peer.log",
        )
        (peer_dir / "peer_rss.json").write_text(json.dumps({"wall_s": wall, "peak_rss_mb": rss}))
    if not (done("peer_sentence_transformers")):
        stats = json.loads((peer_dir / "peer_stats.json").read_text())
        rss = json.loads((peer_dir / "peer_rss.json").read_text())
        peer_run, _, _ = dense_run(str(peer_dir / "model"), test, "auto")
        variants["peer_sentence_transformers"] = {
            "metrics": pick(evaluate_run(peer_run, qrels).metrics),
            "wall_s": round(rss["wall_s"], 1),
            "train_s": round(stats["train_s"], 1),
            "pairs_per_s": round(stats["pairs_per_s"], 2),
            "peak_rss_mb": round(rss["peak_rss_mb"], 1),
            "batch_size": 32,
            "epochs": args.epochs,
            "hard_negatives": 1,
            "recipe": "SentenceTransformerTrainer + MultipleNegativesRankingLoss, NO_DUPLICATES, lr 2e-5",
            "precision": stats.get("precision", "bf16"),
        }
        keep("peer_sentence_transformers")
    print("peer", variants["peer_sentence_transformers"], flush=True)

    # ragtune, same recipe as the peer (speed and memory at equal data, batch and epochs).
    def ragtune_variant(name: str, out: Path, extra: list[str]) -> dict:
        flags = [a for i, a in enumerate(extra) if a == "--config" or (i and extra[i - 1] == "--config")]
        rest = [a for a in extra if a not in flags]
        wall, rss = child(
            [*ragtune, "retriever", "train", *flags, f"data.beir_dir={scifact}", f"output_dir={out}", *rest],
            work / f"{name}.log",
        )
        summary = json.loads((out / "train_summary.json").read_text())
        run, _, train_run = dense_run(str(out / "model"), test, "auto", train=train)
        return {
            "run": run,
            "train_run": train_run,
            "metrics": pick(evaluate_run(run, qrels).metrics),
            "wall_s": round(wall, 1),
            "train_s": round(summary["step_seconds_this_process"], 1),
            "pairs_per_s": round(summary["pairs_per_s"], 2),
            "peak_rss_mb": round(rss, 1),
        }

    if not (done("ragtune_same_recipe")):
        same = ragtune_variant(
            "ragtune_same_recipe",
            work / "ragtune_same",
            [
                f"data.triplets={negatives}",
                "data.val_fraction=0",
                "train.hard_negatives=1",
                f"train.epochs={args.epochs}",
                "train.batch_size=32",
                "train.lr=2e-5",
                "train.save_every=0",
                f"seed={SEED}",
            ],
        )
        same.pop("run")
        same.pop("train_run")
        variants["ragtune_same_recipe"] = {
            **same,
            "batch_size": 32,
            "epochs": args.epochs,
            "hard_negatives": 1,
        }
        keep("ragtune_same_recipe")
    print("ragtune_same_recipe", variants["ragtune_same_recipe"], flush=True)

    # ragtune's recipe (configs in ragtune.yaml): its own mining and training settings.
    from ragtune.config import load_config
    from ragtune.retriever.config import RetrieverConfig

    recipe = load_config(args.config, [f"data.beir_dir={scifact}"], RetrieverConfig)
    mined = work / "recipe_negatives.jsonl"
    child(
        [
            *ragtune,
            "retriever",
            "mine",
            "--config",
            str(args.config),
            f"data.beir_dir={scifact}",
            f"mining.out={mined}",
        ],
        work / "mine_recipe.log",
    )
    best = ragtune_variant(
        "ragtune_finetuned",
        work / "ragtune_recipe",
        [
            "--config",
            str(args.config),
            f"data.triplets={mined}",
            "train.save_every=0",
        ],
    )
    run, train_run = best.pop("run"), best.pop("train_run")
    variants["ragtune_finetuned"] = {
        **best,
        "batch_size": recipe.train.batch_size,
        "epochs": recipe.train.epochs,
        "hard_negatives": recipe.train.hard_negatives,
        "mining": recipe.mining.method,
        "recipe": str(args.config.relative_to(ROOT)),
    }
    variants["ragtune_finetuned_hybrid"] = fused_variant(
        bm25_run, run, bm25_train, train_run, train.qrels, qrels
    )
    variants["ragtune_finetuned_hybrid_rrf"] = {
        "metrics": pick(evaluate_run(rrf(bm25_run, run), qrels).metrics),
        "fusion": "rrf (k=60)",
    }
    print(
        "ragtune_finetuned", variants["ragtune_finetuned"], variants["ragtune_finetuned_hybrid"], flush=True
    )

    peer, ours = variants["peer_sentence_transformers"], variants["ragtune_same_recipe"]
    summary = {
        "speedup_same_recipe": round(ours["pairs_per_s"] / peer["pairs_per_s"], 2),
        "rss_ratio_same_recipe": round(ours["peak_rss_mb"] / peer["peak_rss_mb"], 2),
        "encoding_speedup_bf16_vs_fp32": variants["zero_shot"]["encoding_speedup_vs_fp32"],
        "targets": {
            "finetuned_dense_nDCG@10>=0.72": variants["ragtune_finetuned"]["metrics"]["nDCG@10"] >= 0.72,
            "finetuned_hybrid_nDCG@10>=0.74": variants["ragtune_finetuned_hybrid"]["metrics"]["nDCG@10"]
            >= 0.74,
            "pairs_per_s>=2x_peer": ours["pairs_per_s"] >= 2 * peer["pairs_per_s"],
            "same_recipe_nDCG@10>=peer": ours["metrics"]["nDCG@10"] >= peer["metrics"]["nDCG@10"],
            "peak_rss<=half_peer": ours["peak_rss_mb"] <= peer["peak_rss_mb"] / 2,
            "encoding>=2.5x_fp32": variants["zero_shot"]["encoding_speedup_vs_fp32"] >= 2.5,
            "bf16_nDCG@10_within_0.005": abs(
                variants["zero_shot"]["metrics"]["nDCG@10"] - variants["zero_shot_fp32"]["metrics"]["nDCG@10"]
            )
            <= 0.005,
        },
    }
    path = write_result(
        "retriever_scifact",
        "python benchmarks/retriever_scifact/run.py",
        SEED,
        variants,
        extra={"summary": summary},
    )
    print(json.dumps(summary, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
