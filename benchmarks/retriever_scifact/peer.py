"""The peer: sentence-transformers' own trainer with MultipleNegativesRankingLoss, as a user would
run it (NO_DUPLICATES batches, linear warm-up), on the same (query, positive, negative) rows, at its
own best precision for the CPU at hand: ``--precision auto`` gives it bf16 mixed precision where bf16
is native (AMX / AVX512-BF16) and fp32 elsewhere, as ``ragtune.precision`` decides for ragtune.

    python peer.py TRIPLETS.jsonl OUT_DIR --epochs 3 --batch-size 32 [--precision auto]

Writes the model to OUT_DIR/model and {"train_s", "pairs_per_s", "pairs", "train_loss"} to
OUT_DIR/peer_stats.json. Run as its own process so that its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from datasets import Dataset
from sentence_transformers import (
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers.losses import MultipleNegativesRankingLoss
from sentence_transformers.training_args import BatchSamplers

from ragtune.data.io import read_jsonl
from ragtune.models import resolve_model
from ragtune.precision import resolve_precision


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("triplets", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--max-steps", type=int, default=-1)
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    args = ap.parse_args()
    bf16 = resolve_precision(args.precision, "cpu") == "bf16"
    rows = {"anchor": [], "positive": [], "negative": []}
    for _, obj in read_jsonl(args.triplets):
        for pos in obj["positives"]:
            rows["anchor"].append(obj["query"])
            rows["positive"].append(
                f"{pos.get('title', '')}\n{pos['text']}" if pos.get("title") else pos["text"]
            )
            neg = obj["negatives"][0]
            rows["negative"].append(
                f"{neg.get('title', '')}\n{neg['text']}" if neg.get("title") else neg["text"]
            )
    dataset = Dataset.from_dict(rows)
    model = SentenceTransformer(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), device="cpu")
    training_args = SentenceTransformerTrainingArguments(
        output_dir=str(args.out / "trainer"),
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_steps=0.1,  # a float is a ratio in transformers 5 (warmup_ratio is deprecated)
        bf16=bf16,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        seed=args.seed,
        save_strategy="no",
        report_to=[],
        logging_steps=10,
        use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=training_args, train_dataset=dataset, loss=MultipleNegativesRankingLoss(model)
    )
    start = time.perf_counter()
    result = trainer.train()
    train_s = time.perf_counter() - start
    model.save(str(args.out / "model"))
    steps = result.global_step
    pairs = min(len(dataset) * args.epochs, steps * args.batch_size)
    stats = {
        "train_s": train_s,
        "pairs": pairs,
        "pairs_per_s": pairs / train_s,
        "steps": steps,
        "train_loss": result.training_loss,
        "precision": "bf16" if bf16 else "fp32",
    }
    (args.out / "peer_stats.json").write_text(json.dumps(stats, indent=2))
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
