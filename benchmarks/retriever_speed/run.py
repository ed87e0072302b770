"""Which levers speed up a contrastive training step on this CPU: one lever at a time.

    python benchmarks/retriever_speed/run.py [--steps 4] [--triplets FILE]

Times ragtune's training step (forward + backward, batch 32, one BM25 hard negative, SciFact
train pairs, all-MiniLM-L6-v2) under each setting, on the same batches, in one process, and
writes benchmarks/results/retriever_speed.json. The first step of each setting is a warm-up and
is not counted. Settings:

- ``peer_like``: bf16 autocast, dropout 0.1, eager attention, random batches (what
  sentence-transformers' trainer does);
- ``+sdpa``, ``+no_dropout``, ``+length_grouping``: add one lever at a time, cumulatively;
- ``ragtune_default`` = all three (the shipped defaults);
- ``fp32``: the default without autocast; ``bf16_weights``: weights cast to bf16 instead of
  autocast (timing only: training in bf16 weights without fp32 master weights loses updates);
- ``compile``: the default with ``torch.compile``; ``passage_len_128``: the default with passages
  cut to 128 tokens (faster, but changes what the model learns from).

Then corpus encoding (1,000 passages, batch 32): fp32, bf16 autocast, bf16 weights (the shipped
inference default) and bf16 weights under ``torch.compile``.
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

from benchmarks.common import SHARED_DATASETS, write_result  # noqa: E402
from ragtune.config import load_config  # noqa: E402
from ragtune.data.io import load_beir, load_triplets  # noqa: E402
from ragtune.retriever.config import RetrieverConfig  # noqa: E402
from ragtune.retriever.train import batch_order, build_examples, load_for_training, step_loss  # noqa: E402

SETTINGS: dict[str, list[str]] = {
    "peer_like": ["train.dropout=null", "train.attn_implementation=eager", "train.group_by_length=false"],
    "+sdpa": ["train.dropout=null", "train.group_by_length=false"],
    "+no_dropout": ["train.group_by_length=false"],
    "ragtune_default": [],
    "fp32": ["train.bf16=false"],
    "bf16_weights": ["train.bf16=false"],
    "compile": ["train.compile=true"],
    "passage_len_128": ["model.max_passage_length=128"],
}


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
    args = ap.parse_args()
    data = load_beir(SHARED_DATASETS / "scifact", "train")
    examples = build_examples(load_triplets(args.triplets, data.corpus, data.queries), 1)
    variants = {}
    for name, overrides in SETTINGS.items():
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
        }
        print(name, variants[name], flush=True)
    # Corpus encoding: the same 1,000 SciFact passages under each precision setting.
    from ragtune.retriever.model import encode, load_encoder

    passages = [p.full_text() for p in list(data.corpus.values())[: args.encode_docs]]
    for name, bf16_weights, autocast, compiled in [
        ("encode_fp32", False, False, False),
        ("encode_bf16_autocast", False, True, False),
        ("encode_bf16_weights", True, True, False),
        ("encode_bf16_weights_compiled", True, True, True),
    ]:
        model = load_encoder("sentence-transformers/all-MiniLM-L6-v2", bf16=bf16_weights)
        if compiled:
            model[0].auto_model.forward = torch.compile(model[0].auto_model.forward, dynamic=True)
        start = time.perf_counter()
        encode(model, passages[:64], batch_size=32, bf16=autocast, show_progress=False)  # warm-up / compile
        warm = time.perf_counter() - start
        start = time.perf_counter()
        encode(model, passages, batch_size=32, bf16=autocast, show_progress=False)
        docs_per_s = len(passages) / (time.perf_counter() - start)
        variants[name] = {
            "docs_per_s": round(docs_per_s, 1),
            "warmup_s": round(warm, 1),
            "docs": len(passages),
        }
        print(name, variants[name], flush=True)
    for name, v in variants.items():
        if name.startswith("encode_"):
            v["speedup_vs_fp32"] = round(v["docs_per_s"] / variants["encode_fp32"]["docs_per_s"], 2)

    base = variants["peer_like"]["pairs_per_s"]
    for v in variants.values():
        if "pairs_per_s" in v:
            v["speedup_vs_peer_like"] = round(v["pairs_per_s"] / base, 2)
    path = write_result("retriever_speed", "python benchmarks/retriever_speed/run.py", 0, variants)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
