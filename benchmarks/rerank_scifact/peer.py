"""The peer: sentence-transformers' own ``CrossEncoderTrainer`` with ``ListNetLoss`` (softmax
cross-entropy of the one-hot labels against the group's scores: ragtune's ``listwise`` loss), on
the same training groups (1 positive + N mined negatives per query), at its own best precision for
the CPU at hand (``--precision auto``: bf16 mixed precision where bf16 is native, else fp32).

    python peer.py TRIPLETS.jsonl BEIR_DIR OUT_DIR --negatives 7 --epochs 1 --batch-size 16

Writes the model to OUT_DIR/model and {"train_s", "pairs_per_s", ...} to OUT_DIR/peer_stats.json.
Run as its own process so that its peak RSS is its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

from datasets import Dataset
from sentence_transformers.cross_encoder import (
    CrossEncoder,
    CrossEncoderTrainer,
    CrossEncoderTrainingArguments,
)
from sentence_transformers.cross_encoder.losses import ListNetLoss

from ragtune.models import resolve_model
from ragtune.reranker.train import build_groups

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.common import peer_parser, peer_training_args, peer_triplets, run_peer


def main() -> None:
    ap = peer_parser(negatives=7, batch_size=16, lr=2e-5)
    ap.add_argument("--mini-batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=320)
    args = ap.parse_args()
    groups = build_groups(peer_triplets(args), args.negatives, False)
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
    trainer = CrossEncoderTrainer(
        model=model,
        args=peer_training_args(CrossEncoderTrainingArguments, args, logging_steps=10),
        train_dataset=dataset,
        loss=ListNetLoss(model, mini_batch_size=args.mini_batch_size),
    )
    pairs = sum(len(g.passages) for g in groups) * args.epochs
    run_peer(trainer, model, args, pairs, groups=len(groups))


if __name__ == "__main__":
    main()
