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

import sys
from pathlib import Path

import torch
from datasets import Dataset
from sentence_transformers.multi_vector_encoder import (
    MultiVectorEncoderTrainer,
    MultiVectorEncoderTrainingArguments,
)
from sentence_transformers.multi_vector_encoder.losses import MultiVectorMultipleNegativesRankingLoss

from ragtune.retriever.colbert import load_colbert
from ragtune.retriever.train import build_examples

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.common import peer_parser, peer_training_args, peer_triplets, run_peer


def main() -> None:
    ap = peer_parser(negatives=3, batch_size=32, lr=5e-5)
    ap.add_argument("--query-length", type=int, default=32)
    ap.add_argument("--passage-length", type=int, default=256)
    ap.add_argument("--dim", type=int, default=128)
    args = ap.parse_args()
    examples = build_examples(peer_triplets(args), args.negatives)
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
    trainer = MultiVectorEncoderTrainer(
        model=model,
        args=peer_training_args(MultiVectorEncoderTrainingArguments, args, logging_steps=5),
        train_dataset=Dataset.from_dict(columns),
        loss=MultiVectorMultipleNegativesRankingLoss(model),
    )
    run_peer(
        trainer,
        model,
        args,
        len(full) * args.epochs,
        examples=len(full),
        examples_dropped_short_of_negatives=len(examples) - len(full),
    )


if __name__ == "__main__":
    main()
