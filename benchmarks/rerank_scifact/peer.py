"""The peer: sentence-transformers' own ``CrossEncoderTrainer`` with ``ListNetLoss`` (softmax
cross-entropy of the one-hot labels against the group's scores: ragtune's ``listwise`` loss), on
the same training groups (1 positive + N mined negatives per query), at its own best precision for
the CPU at hand (``--precision auto``: bf16 mixed precision where bf16 is native, else fp32).

    python peer.py TRIPLETS.jsonl BEIR_DIR OUT_DIR --negatives 7 --epochs 1 --batch-size 16

Writes the model to OUT_DIR/model and {"train_s", "pairs_per_s", ...} to OUT_DIR/peer_stats.json.
Run as its own process so that its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from datasets import Dataset
from sentence_transformers.cross_encoder import (
    CrossEncoder,
    CrossEncoderTrainer,
    CrossEncoderTrainingArguments,
)
from sentence_transformers.cross_encoder.losses import ListNetLoss

from ragtune.data.io import load_corpus, load_queries, load_triplets
from ragtune.models import resolve_model
from ragtune.precision import resolve_precision
from ragtune.reranker.train import build_groups


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("triplets", type=Path)
    ap.add_argument("beir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--negatives", type=int, default=7)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--mini-batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=320)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    args = ap.parse_args()
    bf16 = resolve_precision(args.precision, "cpu") == "bf16"
    corpus, queries = load_corpus(args.beir / "corpus.jsonl"), load_queries(args.beir / "queries.jsonl")
    groups = build_groups(load_triplets(args.triplets, corpus, queries), args.negatives, False)
    dataset = Dataset.from_dict(
        {
            "query": [g.query.text for g in groups],
            "docs": [[p.full_text() for p in g.passages] for g in groups],
            "labels": [[1] + [0] * (len(g.passages) - 1) for g in groups],
        }
    )
    model = CrossEncoder(
        resolve_model("sentence-transformers/all-MiniLM-L6-v2"),
        num_labels=1,
        max_length=args.max_length,
        device="cpu",
    )
    training_args = CrossEncoderTrainingArguments(
        output_dir=str(args.out / "trainer"),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_steps=0.1,  # a float is a ratio in transformers 5
        bf16=bf16,
        seed=args.seed,
        save_strategy="no",
        report_to=[],
        logging_steps=10,
        use_cpu=True,
    )
    loss = ListNetLoss(model, mini_batch_size=args.mini_batch_size)
    trainer = CrossEncoderTrainer(model=model, args=training_args, train_dataset=dataset, loss=loss)
    start = time.perf_counter()
    result = trainer.train()
    train_s = time.perf_counter() - start
    model.save(str(args.out / "model"))
    pairs = sum(len(g.passages) for g in groups) * args.epochs
    stats = {
        "train_s": train_s,
        "pairs": pairs,
        "pairs_per_s": pairs / train_s,
        "groups": len(groups),
        "steps": result.global_step,
        "train_loss": result.training_loss,
        "precision": "bf16" if bf16 else "fp32",
    }
    (args.out / "peer_stats.json").write_text(json.dumps(stats, indent=2))
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
