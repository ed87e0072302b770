"""Interaction-model benchmark on SciFact: a cross-encoder trained by ragtune and by the peer
(sentence-transformers' CrossEncoderTrainer) on the same groups, reranking the top 100 of BM25, of
the dense retriever and of their hybrid; with ``--distill`` the cross-encoder distilled into the
bi-encoder; with ``--colbert`` ColBERT late interaction trained by ragtune and by the peer
(sentence-transformers' MultiVectorEncoderTrainer).

    python benchmarks/rerank_scifact/run.py [--epochs 2] [--resume] [--skip-peer] [--name NAME]
        [--distill] [--colbert]

Training data: SciFact's train qrels, 7 negatives per query drawn at random from the zero-shot
dense model's top 100 (configs/retriever/scifact.yaml's miner with RERANKER_MINING); 10% of the
training queries are held out for ragtune's validation (model choice, the pair-classification
threshold and the weight of the reranker mixed with the hybrid's score) and left out of both
trainers' data. ColBERT and the distilled bi-encoder train on the bi-encoder recipe's negatives. Evaluation: the 300 SciFact test queries, trec_eval-identical metrics. The hybrid is the
weighted BM25 + dense fusion whose weight is chosen on the train queries (as in
benchmarks/retriever_scifact). Training runs are child processes (peak RSS from wait4); reranking
runs here, in the precision ``auto`` resolves to (bf16 weights where bf16 is native, else fp32).
Writes benchmarks/results/rerank_scifact.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import SHARED_DATASETS, child, child_status, write_result  # noqa: E402
from benchmarks.retriever_scifact.run import choose_fusion, dense_run, rrf, weighted  # noqa: E402
from ragtune.config import load_config  # noqa: E402
from ragtune.data.io import load_beir, load_triplets, triplet_to_dict, write_jsonl  # noqa: E402
from ragtune.eval.classification import classification_metrics  # noqa: E402
from ragtune.eval.ir import evaluate_run  # noqa: E402
from ragtune.reranker.config import RerankerConfig  # noqa: E402
from ragtune.reranker.rerank import mix_first_stage  # noqa: E402
from ragtune.retriever.bm25 import BM25  # noqa: E402
from ragtune.retriever.train import split_validation  # noqa: E402

METRICS = ("nDCG@10", "Recall@10", "Recall@100", "MRR@10")
SEED = 0
TOP_N = 100
# The reranker's negatives: 7 drawn at random from the zero-shot dense model's top 100 (no
# false-negative filter), the candidates it will rerank. The bi-encoder recipe's negatives (the top
# ranks whose score is under 95% of the positive's) taught a reranker that reranked the top 100
# worse than the first stage (nDCG@10 0.2446 on the hybrid; rerank_scifact.json, 2026-12-02).
RERANKER_MINING = ("mining.rank_end=100", "mining.sampling=random", "mining.fn_ratio=null")
FUSION_WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))


def pick(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(metrics[k], 4) for k in METRICS}


def top(run: dict[str, dict[str, float]], n: int) -> dict[str, list[str]]:
    return {q: sorted(c, key=lambda d: -c[d])[:n] for q, c in run.items()}


def score_union(
    model_dir: Path, runs: list[dict], queries, corpus, precision: str, cache: Path
) -> tuple[dict, float, int]:
    """Cross-encoder logits of every (query, passage) pair in the top ``TOP_N`` of any of ``runs``,
    each pair scored once; returns (scores by (qid, pid), seconds, pairs). ``cache`` keeps them for
    ``--resume``."""
    from ragtune.reranker.model import load_cross_encoder, score_pairs

    keys = sorted({(q, p) for run in runs for q, ps in top(run, TOP_N).items() for p in ps})
    if cache.exists():
        saved = json.loads(cache.read_text())
        if len(saved["scores"]) == len(keys):
            return {tuple(k.split("\t")): v for k, v in saved["scores"].items()}, saved["seconds"], len(keys)
    model = load_cross_encoder(str(model_dir), precision=precision)
    texts = [(queries[q].text, corpus[p].full_text()) for q, p in keys]
    start = time.perf_counter()
    logits = score_pairs(model, texts, batch_size=64, precision=precision)
    seconds = time.perf_counter() - start
    scores = dict(zip(keys, (float(x) for x in logits), strict=True))
    cache.write_text(
        json.dumps({"seconds": seconds, "scores": {f"{q}\t{p}": v for (q, p), v in scores.items()}})
    )
    return scores, seconds, len(keys)


def reranked(run: dict, scores: dict) -> dict:
    """``run``'s top ``TOP_N`` ordered by the cross-encoder's cached logits."""
    return {q: {p: scores[(q, p)] for p in ps} for q, ps in top(run, TOP_N).items()}


def mix(run: dict, ce: dict, a: float) -> dict:
    """``run``'s top ``TOP_N`` rescored by ``(1 - a) * first stage + a * cross-encoder``, both min-max
    normalised per query: ragtune's ``rerank.first_stage_weight = 1 - a``."""
    head = {q: {p: run[q][p] for p in ps} for q, ps in top(run, TOP_N).items()}
    return mix_first_stage(head, reranked(run, ce), TOP_N, round(1.0 - a, 10))


def interpolated(model, work: Path, val_t, train, hybrid_train, test, hybrid, scores, variants) -> None:
    """The cross-encoder's logit interpolated with the hybrid's score, the weight chosen by nDCG@10
    on the held-out training queries ``val_t`` (the reranker's validation share, never test)."""
    val_ids = sorted({x.query.id for x in val_t})
    val_run = {q: hybrid_train[q] for q in val_ids}
    val_qrels = {q: train.qrels[q] for q in val_ids}
    val_scores, _, _ = score_union(
        model, [val_run], train.queries, train.corpus, "auto", work / "scores_val.json"
    )
    by_weight = {
        a: evaluate_run(mix(val_run, val_scores, a), val_qrels).metrics["nDCG@10"] for a in FUSION_WEIGHTS
    }
    best = max(by_weight, key=lambda a: (by_weight[a], -a))  # ties: the lighter reranker weight
    on_test = {a: evaluate_run(mix(hybrid, scores, a), test.qrels).metrics for a in FUSION_WEIGHTS}
    variants["rerank_hybrid_interpolated"] = {
        "metrics": pick(on_test[best]),
        "reranker_weight": best,
        "first_stage_weight": round(1.0 - best, 10),
        "chosen_on": f"nDCG@10 of the {len(val_ids)} held-out training queries' hybrid top {TOP_N}",
        "val_nDCG@10_by_reranker_weight": {str(a): round(v, 4) for a, v in by_weight.items()},
        "test_nDCG@10_by_reranker_weight_not_used_for_choice": {
            str(a): round(m["nDCG@10"], 4) for a, m in on_test.items()
        },
    }
    print("interpolated", variants["rerank_hybrid_interpolated"], flush=True)


def stage(args, cmd: list[str], work: Path, name: str, done: Path) -> dict[str, float]:
    """Run one stage's child process (log ``work/NAME.log``) unless ``--resume`` finds ``done`` and
    its record; the record (``work/NAME_child.json``: wall seconds, peak RSS MB) is returned."""
    record = work / f"{name}_child.json"
    if not (args.resume and done.exists() and record.exists()):
        wall, rss = child(cmd, work / f"{name}.log")
        record.write_text(json.dumps({"wall_s": wall, "peak_rss_mb": rss}))
    return json.loads(record.read_text())


def cost(pairs_per_s: float, train_s: float, measured: dict[str, float]) -> dict[str, float]:
    """A trainer's speed and cost fields: pairs/s, training seconds, wall seconds, peak RSS MB."""
    return {
        "pairs_per_s": round(pairs_per_s, 2),
        "train_s": round(train_s, 1),
        "wall_s": round(measured["wall_s"], 1),
        "peak_rss_mb": round(measured["peak_rss_mb"], 1),
    }


def distill(
    args,
    scifact: Path,
    work: Path,
    triplets: Path,
    teacher: Path,
    test,
    train,
    bm25_run,
    bm25_train,
    variants,
) -> None:
    """The cross-encoder taught to the bi-encoder: it scores the mined triplets (negatives it
    scores above the positive dropped), then configs/retriever/scifact.yaml's recipe (3 hard
    negatives, 3 epochs, batch 32) trains with Margin-MSE + InfoNCE; evaluated dense and as the
    weighted hybrid (weight chosen on train queries). The hard-label recipe's 0.7286 is
    benchmarks/results/retriever_scifact.json's ``ragtune_finetuned``."""
    from benchmarks.retriever_scifact.run import fused_variant

    py = sys.executable
    recipe = ROOT / "configs/retriever/scifact.yaml"
    scored = work / "distill_triplets.jsonl"
    stage(
        args,
        [
            *[py, "-m", "ragtune.cli", "retriever", "score-triplets", "--config", str(recipe)],
            *[f"data.beir_dir={scifact}", f"data.triplets={triplets}", f"distill.teacher={teacher}"],
            f"distill.out={scored}",
        ],
        work,
        "score_triplets",
        scored,
    )
    stats = json.loads(Path(str(scored) + ".stats.json").read_text())
    variants["teacher_scoring"] = {
        k: stats[k]
        for k in (
            "pairs_scored",
            "pairs_per_s",
            "negatives_dropped_as_likely_positives",
            "negatives_kept",
            "seconds",
        )
    }
    out = work / "distilled"
    measured = stage(
        args,
        [
            *[py, "-m", "ragtune.cli", "retriever", "train", "--config", str(recipe)],
            *[f"data.beir_dir={scifact}", f"data.triplets={scored}", "train.loss=margin_mse"],
            *["train.save_every=0", f"output_dir={out}"],
        ],
        work,
        "distilled",
        out / "train_summary.json",
    )
    summary = json.loads((out / "train_summary.json").read_text())
    run, _, train_run = dense_run(str(out / "model"), test, "auto", train=train)
    variants["distilled_dense"] = {
        "metrics": pick(evaluate_run(run, test.qrels).metrics),
        **cost(summary["pairs_per_s"], summary["step_seconds_this_process"], measured),
        "recipe": "configs/retriever/scifact.yaml + train.loss=margin_mse (in_batch_weight 1), teacher-denoised negatives",
        "hard_label_baseline_nDCG@10": 0.7286,
        "baseline_source": "benchmarks/results/retriever_scifact.json ragtune_finetuned (same recipe, hard labels)",
    }
    variants["distilled_hybrid"] = fused_variant(
        bm25_run, run, bm25_train, train_run, train.qrels, test.qrels
    )
    print("distilled", variants["distilled_dense"], variants["distilled_hybrid"]["metrics"], flush=True)


def colbert(
    args, scifact: Path, work: Path, triplets: Path, test, train, bm25_run, bm25_train, variants
) -> None:
    """ColBERT late interaction from MiniLM (configs/retriever/colbert_scifact.yaml, on the same
    mined triplets, 3 hard negatives) trained by ragtune and by the peer (sentence-transformers'
    MultiVectorEncoderTrainer) for the same epochs, batch, lr and lengths; each indexed and
    evaluated by ragtune (exact MaxSim), ragtune's also as the weighted hybrid with BM25."""
    from benchmarks.retriever_scifact.run import fused_variant
    from ragtune.data.io import read_run
    from ragtune.retriever.config import RetrieverConfig

    py = sys.executable
    recipe = ROOT / "configs/retriever/colbert_scifact.yaml"
    ccfg = load_config(recipe, [f"data.beir_dir={scifact}"], RetrieverConfig)
    cli = [py, "-m", "ragtune.cli"]
    base = ["--config", str(recipe), f"data.beir_dir={scifact}"]

    def evaluate(model: Path, name: str, splits=("test", "train")) -> tuple[dict, dict | None, dict]:
        """Index the corpus with ``model``, search the ``splits`` queries: runs and timings."""
        index = work / f"{name}_index"
        if not (args.resume and (index / "index" / "encoder.json").exists()):
            child(
                [*cli, "index", "build", *base, f"model.name={model}", f"output_dir={index}"],
                work / f"{name}_index.log",
            )
        out = {}
        for split in splits:
            folder = work / f"{name}_eval_{split}"
            if not (args.resume and (folder / "summary.json").exists()):
                child(
                    [
                        *cli,
                        "retriever",
                        "eval",
                        *base,
                        f"model.name={model}",
                        f"data.split={split}",
                        f"eval.index_dir={index / 'index'}",
                        "eval.methods=[dense]",
                        "eval.depth=100",
                        f"output_dir={folder}",
                    ],
                    work / f"{name}_eval_{split}.log",
                )
            out[split] = folder
        encoder = json.loads((index / "index" / "encoder.json").read_text())
        timing = {
            "corpus_encode_s": encoder["encode_s"],
            "test_queries_encode_and_search_s": round(
                json.loads((out["test"] / "summary.json").read_text())["seconds"]["dense"], 2
            ),
        }
        train_run = read_run(out["train"] / "run_dense.trec") if "train" in out else None
        return read_run(out["test"] / "run_dense.trec"), train_run, timing

    out = work / "colbert"
    measured = stage(
        args,
        [
            *cli,
            "retriever",
            "train",
            *base,
            f"data.triplets={triplets}",
            "train.save_every=0",
            f"output_dir={out}",
        ],
        work,
        "colbert",
        out / "train_summary.json",
    )
    summary = json.loads((out / "train_summary.json").read_text())
    run, train_run, timing = evaluate(out / "model", "colbert")
    t = ccfg.train
    variants["colbert"] = {
        "metrics": pick(evaluate_run(run, test.qrels).metrics),
        **cost(summary["pairs_per_s"], summary["step_seconds_this_process"], measured),
        "precision": summary["hardware"]["precision"],
        **timing,
        "recipe": f"configs/retriever/colbert_scifact.yaml: MiniLM-L6 + fresh 128-d projection, MaxSim InfoNCE "
        f"(temperature 1), {t.hard_negatives} hard negatives, batch {t.batch_size}, lr {t.lr}, {t.epochs} epoch(s), "
        "queries 32 tokens with [MASK] expansion, passages 256; exact MaxSim search",
    }
    variants["colbert_hybrid"] = fused_variant(bm25_run, run, bm25_train, train_run, train.qrels, test.qrels)
    peer = work / "colbert_peer"
    measured = stage(
        args,
        [
            py,
            str(HERE / "peer_colbert.py"),
            str(triplets),
            str(scifact),
            str(peer),
            "--negatives",
            str(t.hard_negatives),
            "--epochs",
            str(t.epochs),
            "--batch-size",
            str(t.batch_size),
            "--lr",
            str(t.lr),
            "--query-length",
            str(ccfg.model.max_query_length),
            "--passage-length",
            str(ccfg.model.max_passage_length),
            "--seed",
            str(SEED),
        ],
        work,
        "colbert_peer",
        peer / "peer_stats.json",
    )
    stats = json.loads((peer / "peer_stats.json").read_text())
    peer_run, _, _ = evaluate(peer / "model", "colbert_peer", splits=("test",))
    variants["colbert_peer_sentence_transformers"] = {
        "metrics": pick(evaluate_run(peer_run, test.qrels).metrics),
        **cost(stats["pairs_per_s"], stats["train_s"], measured),
        "examples": stats["examples"],
        "precision": stats["precision"],
        "recipe": "MultiVectorEncoderTrainer + MultiVectorMultipleNegativesRankingLoss (scale 1), same examples, "
        "epochs, batch, lr, lengths and initial weights; its default dropout; bf16 where native",
    }
    print(
        "colbert",
        variants["colbert"]["metrics"],
        variants["colbert_peer_sentence_transformers"]["metrics"],
        flush=True,
    )


def progress(log: Path) -> tuple[int, int, float]:
    """The last tqdm progress a trainer's log shows: (steps done, steps in all, seconds elapsed)."""
    import re

    last = re.findall(r"(\d+)/(\d+) \[(?:(\d+):)?(\d+):(\d+)<", log.read_text(errors="replace"))
    if not last:
        return 0, 0, 0.0
    done, total, h, m, sec = last[-1]
    return int(done), int(total), 3600 * int(h or 0) + 60 * int(m) + int(sec)


def peer_training(args, cfg, work: Path, out: Path, triplets: Path, scifact: Path, variants) -> bool:
    """The peer's cross-encoder training (its own process). A peer that fails (it was killed by the
    out-of-memory killer at 24 GB on a 24 GB machine) is recorded as such, with the speed of the
    steps it finished (from its progress bar) and its peak RSS; returns whether it finished."""
    t = cfg.train
    record = work / "peer_child.json"
    if not (args.resume and record.exists()):
        wall, rss, code = child_status(
            [
                sys.executable,
                str(HERE / "peer.py"),
                *[str(triplets), str(scifact), str(out)],
                *["--negatives", str(t.negatives), "--epochs", str(args.epochs)],
                *["--batch-size", str(t.batch_size), "--mini-batch-size", str(t.mini_batch_size)],
                *["--max-length", str(cfg.model.max_length), "--lr", str(t.lr), "--seed", str(SEED)],
            ],
            work / "peer.log",
        )
        record.write_text(json.dumps({"wall_s": wall, "peak_rss_mb": rss, "exit_code": code}))
    measured = json.loads(record.read_text())
    recipe = (
        "CrossEncoderTrainer + ListNetLoss (one-hot labels = listwise CE), same groups, batch, "
        "mini-batch, lr, epochs and length; bf16 where native"
    )
    if measured.get("exit_code", 0) != 0:
        done, total, elapsed = progress(work / "peer.log")
        pairs_per_step = t.batch_size * (1 + t.negatives)  # groups are full: 7 negatives each
        variants["train_peer_sentence_transformers"] = {
            "status": f"failed: exit code {measured['exit_code']}"
            + (" (killed by the kernel's out-of-memory killer)" if measured["exit_code"] == -9 else ""),
            "steps_done": done,
            "steps_total": total,
            "pairs_per_s": round(done * pairs_per_step / elapsed, 2) if elapsed else None,
            "pairs_per_s_from": f"its progress bar: {done} steps of {pairs_per_step} pairs in {elapsed:.0f} s",
            "wall_s": round(measured["wall_s"], 1) if measured.get("wall_s") is not None else None,
            "peak_rss_mb": round(measured["peak_rss_mb"], 1),
            **({"peak_rss_from": measured["peak_rss_from"]} if "peak_rss_from" in measured else {}),
            "precision": "bf16",
            "recipe": recipe,
        }
        return False
    stats = json.loads((out / "peer_stats.json").read_text())
    variants["train_peer_sentence_transformers"] = {
        **cost(stats["pairs_per_s"], stats["train_s"], measured),
        "groups": stats["groups"],
        "train_loss": round(stats["train_loss"], 4),
        "precision": stats["precision"],
        "recipe": recipe,
    }
    return True


def rerank_candidates(
    args,
    cfg,
    work,
    runs_dir,
    candidates,
    test,
    train,
    val_t,
    hybrid_train,
    hybrid,
    peer_ok,
    variants,
) -> None:
    """Every candidate run's top 100 reranked by ragtune's model (each pair scored once), the
    pair classification at the validation threshold, latency, the reranker + hybrid mix, and the
    hybrid's top 100 reranked by the peer's model when it trained."""
    scores, seconds, n_pairs = score_union(
        runs_dir["ragtune"] / "model",
        list(candidates.values()),
        test.queries,
        test.corpus,
        "auto",
        work / "scores_ragtune.json",
    )
    from ragtune.reranker.rerank import load_threshold

    threshold, source = load_threshold(runs_dir["ragtune"] / "model")
    for name, run in candidates.items():
        rr = reranked(run, scores)
        variants[f"rerank_{name}"] = {
            "metrics": pick(evaluate_run(rr, test.qrels).metrics),
            "model": "ragtune",
        }
    rr = reranked(hybrid, scores)
    labels = [int(test.qrels[q].get(p, 0) >= 1) for q, ps in top(rr, TOP_N).items() for p in ps]
    probs = [1 / (1 + __import__("math").exp(-rr[q][p])) for q, ps in top(rr, TOP_N).items() for p in ps]
    variants["rerank_hybrid"]["classification"] = {
        k: round(v, 4) if isinstance(v, float) else v
        for k, v in classification_metrics(labels, probs, threshold).items()
    }
    variants["rerank_hybrid"]["classification"]["threshold_chosen_on"] = source
    variants["rerank_latency"] = {
        "pairs": n_pairs,
        "seconds": round(seconds, 1),
        "pairs_per_s": round(n_pairs / seconds, 1),
        "ms_per_query_100_candidates": round(1000 * seconds / n_pairs * TOP_N, 1),
        "batch_size": 64,
        "max_length": cfg.model.max_length,
    }
    interpolated(
        runs_dir["ragtune"] / "model", work, val_t, train, hybrid_train, test, hybrid, scores, variants
    )
    if peer_ok:
        peer_scores, peer_s, peer_pairs = score_union(
            runs_dir["peer"] / "model", [hybrid], test.queries, test.corpus, "auto", work / "scores_peer.json"
        )
        variants["rerank_hybrid_peer_model"] = {
            "metrics": pick(evaluate_run(reranked(hybrid, peer_scores), test.qrels).metrics),
            "model": "peer (CrossEncoderTrainer)",
            "pairs_per_s": round(peer_pairs / peer_s, 1),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--resume", action="store_true", help="reuse finished training runs in work/")
    ap.add_argument("--config", type=Path, default=ROOT / "configs/reranker/scifact.yaml")
    ap.add_argument(
        "--mining",
        nargs="*",
        default=list(RERANKER_MINING),
        help="overrides of configs/retriever/scifact.yaml's miner for the reranker's negatives",
    )
    ap.add_argument("--name", default="rerank_scifact", help="the result file: benchmarks/results/NAME.json")
    ap.add_argument(
        "--skip-peer",
        action="store_true",
        help="do not train the peer cross-encoder (its last run is in benchmarks/results/rerank_scifact.json)",
    )
    ap.add_argument(
        "--distill",
        action="store_true",
        help="also distil the cross-encoder into the bi-encoder (score-triplets + train.loss=margin_mse)",
    )
    ap.add_argument(
        "--skip-rerank",
        action="store_true",
        help="train the reranker but do not rerank the test candidates (with --distill: the teacher only)",
    )
    ap.add_argument(
        "--colbert",
        action="store_true",
        help="also train ColBERT (configs/retriever/colbert_scifact.yaml) and the peer's, and evaluate both",
    )
    args = ap.parse_args()
    scifact = SHARED_DATASETS / "scifact"
    work = HERE / "work"
    work.mkdir(exist_ok=True)
    cfg = load_config(
        args.config, [f"data.beir_dir={scifact}", f"train.epochs={args.epochs}"], RerankerConfig
    )
    t = cfg.train
    py = sys.executable
    ragtune = [py, "-m", "ragtune.cli"]
    variants: dict[str, dict] = {}

    # 1. Negatives: the zero-shot dense miner, 7 per query (the reranker's recipe: RERANKER_MINING).
    def mined(path: Path, overrides: Sequence[str]) -> Path:
        if not (args.resume and path.exists()):
            wall, _ = child(
                [
                    *ragtune,
                    *["retriever", "mine", "--config", str(ROOT / "configs/retriever/scifact.yaml")],
                    *[f"data.beir_dir={scifact}", f"mining.num_negatives={t.negatives}", *overrides],
                    f"mining.out={path}",
                ],
                path.with_suffix(".log"),
            )
            print(f"mined {path.name} in {wall:.0f}s", flush=True)
        return path

    triplets = mined(work / "triplets.jsonl", args.mining)
    # ColBERT's and the distilled bi-encoder's: configs/retriever/scifact.yaml's miner as it is
    # (the top ranks scoring under 95% of the positive's), mined when those stages run.
    bi_encoder_triplets = work / "bi_encoder_triplets.jsonl"
    test = load_beir(scifact, "test")
    train = load_beir(scifact, "train")
    all_t = load_triplets(triplets, test.corpus, test.queries)
    train_t, val_t = split_validation(all_t, cfg.data.val_fraction, cfg.seed)
    peer_triplets = work / "train_triplets.jsonl"  # the peer trains on ragtune's training share
    write_jsonl(peer_triplets, [triplet_to_dict(x) for x in train_t])

    # 2. ragtune's reranker and the peer's, same groups, batch, lr, epochs, length.
    runs_dir = {"ragtune": work / "ragtune", "peer": work / "peer"}
    measured = stage(
        args,
        [
            *ragtune,
            *["reranker", "train", "--config", str(args.config)],
            *[f"data.beir_dir={scifact}", f"data.triplets={triplets}", f"train.epochs={args.epochs}"],
            f"output_dir={runs_dir['ragtune']}",
        ],
        work,
        "ragtune",
        runs_dir["ragtune"] / "train_summary.json",
    )
    summary = json.loads((runs_dir["ragtune"] / "train_summary.json").read_text())
    variants["train_ragtune"] = {
        **cost(summary["pairs_per_s"], summary["step_seconds_this_process"], measured),
        "groups": summary["groups"],
        "loss": summary["loss"],
        "best_validation": summary["best"],
        "precision": summary["hardware"]["precision"],
        "recipe": f"ragtune reranker train ({args.config.name}): listwise CE, 1 positive + {t.negatives} "
        f"negatives, batch {t.batch_size} (chunks of {t.mini_batch_size}), lr {t.lr}, {args.epochs} epoch(s), "
        "no dropout, SDPA, validation at each epoch end",
    }
    peer_ok = not args.skip_peer and peer_training(
        args, cfg, work, runs_dir["peer"], peer_triplets, scifact, variants
    )
    print(json.dumps(variants, indent=1), flush=True)

    # 3. Candidates: BM25, zero-shot dense, their weighted hybrid (weight chosen on train queries).
    bm25 = BM25(list(test.corpus), [p.full_text() for p in test.corpus.values()])
    queries = test.split_queries()
    bm25_run = {
        q: dict(h) for q, h in zip(queries, bm25.search([x.text for x in queries.values()], 100), strict=True)
    }
    train_queries = train.split_queries()
    bm25_train = {
        q: dict(h)
        for q, h in zip(
            train_queries, bm25.search([x.text for x in train_queries.values()], 100), strict=True
        )
    }
    dense, _, dense_train = dense_run("sentence-transformers/all-MiniLM-L6-v2", test, "auto", train=train)
    fusion, weight, _ = choose_fusion(bm25_train, dense_train, train.qrels)
    hybrid = weighted(bm25_run, dense, weight) if weight is not None else None
    if hybrid is None:  # RRF chosen
        hybrid = rrf(bm25_run, dense)
    candidates = {"bm25": bm25_run, "dense": dense, "hybrid": hybrid}
    for name, run in candidates.items():
        variants[name] = {"metrics": pick(evaluate_run(run, test.qrels).metrics)}
    variants["hybrid"]["fusion"] = fusion

    # 4. Rerank the top 100 of each with ragtune's model (each pair scored once), and the hybrid's
    # with the peer's model.
    if not args.skip_rerank:
        hybrid_train = (
            weighted(bm25_train, dense_train, weight) if weight is not None else rrf(bm25_train, dense_train)
        )
        rerank_candidates(
            args,
            cfg,
            work,
            runs_dir,
            candidates,
            test,
            train,
            val_t,
            hybrid_train,
            hybrid,
            peer_ok,
            variants,
        )

    def write(stages: str) -> Path:
        """The results so far (written after every stage, so an interrupted run leaves them)."""
        rt, peer = variants["train_ragtune"], variants.get("train_peer_sentence_transformers")
        summary = {
            "training_speedup_vs_peer": round(rt["pairs_per_s"] / peer["pairs_per_s"], 2) if peer else None,
            "training_rss_ratio_vs_peer": round(rt["peak_rss_mb"] / peer["peak_rss_mb"], 2) if peer else None,
            "peer_training_finished": peer_ok,
            "peer": "not run (--skip-peer): see benchmarks/results/rerank_scifact.json"
            if not peer
            else "run",
            "negatives": " ".join(args.mining),
            "stages": stages,
            "targets": {
                "reranked_hybrid_nDCG@10": 0.77,
                "training_speedup": 2.0,
                "rss_ratio": 0.5,
                "distilled_dense_nDCG@10": 0.74,
                "colbert_nDCG@10": 0.74,
            },
        }
        if peer_ok:
            summary["reranked_hybrid_nDCG@10_ragtune_minus_peer"] = round(
                variants["rerank_hybrid"]["metrics"]["nDCG@10"]
                - variants["rerank_hybrid_peer_model"]["metrics"]["nDCG@10"],
                4,
            )
        return write_result(
            args.name,
            f"python benchmarks/rerank_scifact/run.py --epochs {args.epochs}"
            + (f" --name {args.name}" if args.name != "rerank_scifact" else "")
            + (" --skip-peer" if args.skip_peer else "")
            + (f" --mining {' '.join(args.mining)}" if tuple(args.mining) != RERANKER_MINING else "")
            + (" --skip-rerank" if args.skip_rerank else "")
            + (" --distill" if args.distill else "")
            + (" --colbert" if args.colbert else ""),
            SEED,
            variants,
            extra={"summary": summary},
        )

    stages = [] if args.skip_rerank else ["rerank"]
    out = write(", ".join(stages))
    if args.colbert:
        colbert(
            args, scifact, work, mined(bi_encoder_triplets, ()), test, train, bm25_run, bm25_train, variants
        )
        stages.append("colbert")
        out = write(", ".join(stages))
    if args.distill:
        distill(
            args,
            scifact,
            work,
            mined(bi_encoder_triplets, ()),
            runs_dir["ragtune"] / "model",
            test,
            train,
            bm25_run,
            bm25_train,
            variants,
        )
        stages.append("distill")
        out = write(", ".join(stages))
    print(json.dumps(json.loads(out.read_text())["summary"], indent=1))
    print("written to", out)


if __name__ == "__main__":
    main()
