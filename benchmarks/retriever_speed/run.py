"""Which levers speed up a contrastive training step and corpus encoding on the CPU at hand.

    python benchmarks/retriever_speed/run.py [--steps 4] [--triplets FILE]

Times ragtune's training step (forward + backward, batch 32, one BM25 hard negative, SciFact
train pairs, all-MiniLM-L6-v2) under each setting, on the same batches, in one process, and
writes ``benchmarks/results/retriever_speed_<cpu kind>.json`` (``avx2``, ``avx512_bf16``, ``amx``:
see ``benchmarks.common.cpu_kind``; the first AMX run is ``retriever_speed.json``). The first step
of each setting is a warm-up and is not counted. Settings (``precision=auto`` unless named):

- ``peer_like``: dropout 0.1, eager attention, random batches (what sentence-transformers'
  trainer does);
- ``+sdpa``: SDPA attention; ``ragtune_default``: then no dropout too (the shipped defaults: SDPA,
  no dropout, random batches); ``+length_grouping`` adds length-grouped batches;
- ``fp32`` and ``bf16_autocast``: precision forced each way; ``bf16_weights``: weights cast to bf16
  instead of autocast (timing only: training bf16 weights without fp32 master weights loses
  updates). The bf16 settings run only where bf16 is native: without it they are 10-80x slower
  and the run would take hours (``--force-bf16`` runs them anyway);
- ``threads_1``: the default on one thread (``torch.set_num_threads(1)``);
- ``compile``: the default with ``torch.compile``; ``passage_len_128``: passages cut to 128 tokens
  (faster, but changes what the model learns from).

Then corpus encoding (``--encode-docs`` passages, batch 32): fp32, bf16 autocast and bf16 weights
(native bf16 only), fp32 under ``torch.compile``, and fp32 with dynamic int8 quantisation of the
linear layers (``torch.ao.quantization.quantize_dynamic``), each with its mean cosine to the fp32
vectors (how much the vectors move).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.common import SHARED_DATASETS, cpu_kind, scifact_bm25_negatives, write_result  # noqa: E402
from ragtune.config import load_config  # noqa: E402
from ragtune.data.io import load_beir, load_triplets  # noqa: E402
from ragtune.precision import native_bf16, resolve_precision  # noqa: E402
from ragtune.retriever.config import RetrieverConfig  # noqa: E402
from ragtune.retriever.train import batch_order, build_examples, load_for_training, step_loss  # noqa: E402

SETTINGS: dict[str, list[str]] = {
    "peer_like": ["train.dropout=null", "train.attn_implementation=eager"],
    "+sdpa": ["train.dropout=null"],
    "ragtune_default": [],  # = peer_like + sdpa + no dropout
    "+length_grouping": ["train.group_by_length=true"],
    "fp32": ["precision=fp32"],
    "bf16_autocast": ["precision=bf16"],
    "bf16_weights": ["precision=fp32"],
    "threads_1": [],
    "compile": ["train.compile=true"],
    "passage_len_128": ["model.max_passage_length=128"],
}
BF16_ONLY = {"bf16_autocast", "bf16_weights"}


def scifact_test_quality(model, precision: str) -> dict[str, float]:
    """nDCG@10 / Recall@100 of ``model`` on SciFact test (exact search over the 5,183 abstracts)."""
    from ragtune.eval.ir import evaluate_run
    from ragtune.retriever.index import DenseIndex
    from ragtune.retriever.model import encode

    test = load_beir(SHARED_DATASETS / "scifact", "test")
    queries = test.split_queries()
    texts = [p.full_text() for p in test.corpus.values()]
    pvec = encode(model, texts, max_length=256, batch_size=128, precision=precision, show_progress=False)
    qvec = encode(
        model, [q.text for q in queries.values()], max_length=64, precision=precision, show_progress=False
    )
    hits = DenseIndex.flat(pvec, list(test.corpus)).search(qvec, 100)
    run = {q: dict(h) for q, h in zip(queries, hits, strict=True)}
    metrics = evaluate_run(run, test.qrels, ks=(10, 100), metrics=("nDCG", "Recall")).metrics
    return {k: round(metrics[k], 4) for k in ("nDCG@10", "Recall@100")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per setting (after one warm-up)")
    ap.add_argument(
        "--triplets",
        type=Path,
        default=ROOT / "benchmarks/retriever_scifact/work/bm25_top1.jsonl",
        help="triplets with one BM25 negative (written by benchmarks/retriever_scifact/run.py)",
    )
    ap.add_argument("--encode-docs", type=int, default=1000, help="passages encoded per precision setting")
    ap.add_argument("--force-bf16", action="store_true", help="run the bf16 settings without native bf16")
    ap.add_argument(
        "--quality",
        action="store_true",
        help="also score fp32, bf16-weight and int8 encoders on SciFact test (encodes the whole corpus each)",
    )
    args = ap.parse_args()
    native = native_bf16("cpu")
    threads = torch.get_num_threads()
    data = load_beir(SHARED_DATASETS / "scifact", "train")
    scifact_bm25_negatives(args.triplets)
    examples = build_examples(load_triplets(args.triplets, data.corpus, data.queries), 1)
    variants = {}
    for name, overrides in SETTINGS.items():
        if name in BF16_ONLY and not (native or args.force_bf16):
            variants[name] = {"skipped": "no native bf16 on this CPU (10-80x slower than fp32)"}
            print(name, variants[name], flush=True)
            continue
        torch.set_num_threads(1 if name == "threads_1" else threads)
        cfg = load_config(
            None, ["train.hard_negatives=1", "train.batch_size=32", *overrides], RetrieverConfig
        )
        torch.manual_seed(0)
        model = load_for_training(cfg)
        model.train(cfg.train.dropout is None or cfg.train.dropout > 0)
        if name == "bf16_weights":
            model.to(torch.bfloat16)
        if cfg.train.compile:
            model[0].auto_model.forward = torch.compile(model[0].auto_model.forward, dynamic=True)
        batches = batch_order(examples, 32, seed=0, epoch=0, group_by_length=cfg.train.group_by_length)
        times = []
        for i, idx in enumerate(batches[: args.steps + 1]):
            start = time.perf_counter()
            model.zero_grad(set_to_none=True)
            step_loss(model, cfg, [examples[j] for j in idx])
            if i:
                times.append(time.perf_counter() - start)
        median = statistics.median(times)
        variants[name] = {
            "step_s_median": round(median, 3),
            "step_s": [round(t, 3) for t in times],
            "pairs_per_s": round(32 / median, 2),
            "overrides": overrides,
            "precision": resolve_precision(cfg.precision),
            "threads": torch.get_num_threads(),
        }
        print(name, variants[name], flush=True)
    torch.set_num_threads(threads)
    # Corpus encoding: the same 1,000 SciFact passages under each precision setting.
    from ragtune.retriever.model import encode, load_encoder

    passages = [p.full_text() for p in list(data.corpus.values())[: args.encode_docs]]
    reference = None
    for name, precision, bf16_weights, compiled, int8 in [
        ("encode_fp32", "fp32", False, False, False),
        ("encode_bf16_autocast", "bf16", False, False, False),
        ("encode_bf16_weights", "bf16", True, False, False),
        ("encode_fp32_compiled", "fp32", False, True, False),
        ("encode_int8_dynamic", "fp32", False, False, True),
    ]:
        if precision == "bf16" and not (native or args.force_bf16):
            variants[name] = {"skipped": "no native bf16 on this CPU (10-80x slower than fp32)"}
            continue
        model = load_encoder(
            "sentence-transformers/all-MiniLM-L6-v2", precision="bf16" if bf16_weights else "fp32"
        )
        if int8:
            from torch.ao.quantization import quantize_dynamic

            # In place: ``auto_model`` is a read-only property of the sentence-transformers module.
            quantize_dynamic(model[0].auto_model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
            assert not any(type(m) is torch.nn.Linear for m in model.modules()), "not quantised"
        if compiled:
            model[0].auto_model.forward = torch.compile(model[0].auto_model.forward, dynamic=True)
        start = time.perf_counter()
        encode(model, passages[:64], batch_size=32, precision=precision, show_progress=False)  # warm-up
        warm = time.perf_counter() - start
        start = time.perf_counter()
        vectors = encode(model, passages, batch_size=32, precision=precision, show_progress=False)
        docs_per_s = len(passages) / (time.perf_counter() - start)
        if reference is None:
            reference = vectors
        variants[name] = {
            "docs_per_s": round(docs_per_s, 1),
            "warmup_s": round(warm, 1),
            "docs": len(passages),
            "mean_cosine_to_fp32": round(float((vectors * reference).sum(axis=1).mean()), 5),
        }
        if args.quality and name in ("encode_fp32", "encode_int8_dynamic", "encode_bf16_weights"):
            variants[name]["metrics"] = scifact_test_quality(model, precision)
        print(name, variants[name], flush=True)
    for name, v in variants.items():
        if name.startswith("encode_") and "docs_per_s" in v:
            v["speedup_vs_fp32"] = round(v["docs_per_s"] / variants["encode_fp32"]["docs_per_s"], 2)

    base = variants["peer_like"]["pairs_per_s"]
    for v in variants.values():
        if "pairs_per_s" in v:
            v["speedup_vs_peer_like"] = round(v["pairs_per_s"] / base, 2)
    command = "python benchmarks/retriever_speed/run.py" + " --force-bf16" * args.force_bf16
    command += " --quality" * args.quality
    path = write_result(f"retriever_speed_{cpu_kind()}", command, 0, variants)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
