"""The ColBERT peer: sentence-transformers' own ``MultiVectorEncoderTrainer`` with
``MultiVectorMultipleNegativesRankingLoss`` (MaxSim InfoNCE over in-batch and hard negatives, scale
1: ragtune's loss at temperature 1), on the same (query, positive, 3 hard negatives) examples, from
the same freshly projected MiniLM (built with the same seed), at its own best precision for the CPU
at hand (bf16 mixed precision where bf16 is native, else fp32) and its default dropout.

PyLate, the library this trainer was upstreamed from, does not install beside sentence-transformers
6 (pylate 1.6.0 pins sentence-transformers 5.3.0), so this is the maintained form of its trainer.

    python peer_colbert.py TRIPLETS.jsonl BEIR_DIR OUT_DIR --epochs 1 --batch-size 32 --lr 5e-5

Writes the model to OUT_DIR/model and {"train_s", "pairs_per_s", ...} to OUT_DIR/peer_stats.json.
Run as its own process so that its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from datasets import Dataset
from sentence_transformers.multi_vector_encoder import (
    MultiVectorEncoderTrainer,
    MultiVectorEncoderTrainingArguments,
)
from sentence_transformers.multi_vector_encoder.losses import MultiVectorMultipleNegativesRankingLoss

from ragtune.data.io import load_corpus, load_queries, load_triplets
from ragtune.precision import resolve_precision
from ragtune.retriever.colbert import load_colbert
from ragtune.retriever.train import build_examples


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("triplets", type=Path)
    ap.add_argument("beir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--negatives", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--query-length", type=int, default=32)
    ap.add_argument("--passage-length", type=int, default=256)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    args = ap.parse_args()
    bf16 = resolve_precision(args.precision, "cpu") == "bf16"
    corpus, queries = load_corpus(args.beir / "corpus.jsonl"), load_queries(args.beir / "queries.jsonl")
    examples = build_examples(load_triplets(args.triplets, corpus, queries), args.negatives)
    full = [e for e in examples if len(e.negatives) == args.negatives]  # one column per negative
    columns = {"query": [e.query.text for e in full], "positive": [e.positive.full_text() for e in full]}
    for i in range(args.negatives):
        columns[f"negative_{i + 1}"] = [e.negatives[i].full_text() for e in full]
    torch.manual_seed(args.seed)  # the same fresh projection as ragtune's run
    model = load_colbert(
        "sentence-transformers/all-MiniLM-L6-v2",
        dim=args.dim,
        query_length=args.query_length,
        document_length=args.passage_length,
    )
    training_args = MultiVectorEncoderTrainingArguments(
        output_dir=str(args.out / "trainer"),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_steps=0.1,  # a float is a ratio in transformers 5 (ragtune's warmup_ratio 0.1)
        bf16=bf16,
        seed=args.seed,
        save_strategy="no",
        report_to=[],
        logging_steps=5,
        use_cpu=True,
    )
    loss = MultiVectorMultipleNegativesRankingLoss(model)
    trainer = MultiVectorEncoderTrainer(
        model=model, args=training_args, train_dataset=Dataset.from_dict(columns), loss=loss
    )
    start = time.perf_counter()
    result = trainer.train()
    train_s = time.perf_counter() - start
    model.save(str(args.out / "model"))
    pairs = len(full) * args.epochs
    stats = {
        "train_s": train_s,
        "pairs": pairs,
        "pairs_per_s": pairs / train_s,
        "examples": len(full),
        "examples_dropped_short_of_negatives": len(examples) - len(full),
        "steps": result.global_step,
        "train_loss": result.training_loss,
        "precision": "bf16" if bf16 else "fp32",
    }
    (args.out / "peer_stats.json").write_text(json.dumps(stats, indent=2))
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
