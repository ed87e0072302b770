"""How much arithmetic a generator training token costs, ragtune's step against the peer's, and the
fp32 matrix-product rate of the CPU at hand: the ceiling on tokens/s that no loop can pass.

    python benchmarks/peer_speed/flops.py [--batches 8]

Both steps take the PubMedQA examples of ``benchmarks/peer_speed/run.py``'s generator comparison
(same model, LoRA r16 on all projections, batch 4, fp32). ragtune's step is
:func:`ragtune.generator.scoring.backward_answer_loss` on its length-grouped batches (vocabulary
logits only where an answer token is predicted); the peer's is what ``transformers.Trainer`` runs:
the model's own loss with ``labels`` (logits over the whole vocabulary at every position) on
randomly drawn batches padded by ``DataCollatorForSeq2Seq``. FLOPs are counted by
``torch.utils.flop_counter.FlopCounterMode`` (matrix products and attention, forward and backward)
and divided by the real (non-pad) tokens, the unit both trainers' tokens/s count. The matmul rate
is the median of timed fp32 products of the shapes a step multiplies. Writes
``benchmarks/results/peer_speed_flops.json``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from benchmarks.common import write_result  # noqa: E402
from benchmarks.peer_speed.run import GEN_CONFIG, SEED, pubmedqa_overrides  # noqa: E402

BATCH = 4


def matmul_gflops(shapes: list[tuple[int, int, int]], repeats: int = 5) -> dict[str, float]:
    """Median GFLOP/s of ``[m, k] @ [k, n]`` fp32 products for each ``(m, k, n)``."""
    out = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        out[f"{m}x{k}x{n}"] = round(2 * m * k * n / statistics.median(times) / 1e9, 1)
    return out


def counted(step, *args) -> float:
    """FLOPs of one call of ``step(*args)``."""
    counter = FlopCounterMode(display=False)
    with counter:
        step(*args)
    return float(counter.get_total_flops())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, default=8, help="batches counted on each side")
    args = ap.parse_args()
    from transformers import DataCollatorForSeq2Seq

    from ragtune.config import load_config
    from ragtune.generator.collator import pad_batch
    from ragtune.generator.config import GeneratorConfig
    from ragtune.generator.model import apply_peft, load_base, load_tokenizer
    from ragtune.generator.prompt import PromptEncoder
    from ragtune.generator.scoring import backward_answer_loss
    from ragtune.generator.train import load_data
    from ragtune.training import epoch_batches

    torch.manual_seed(SEED)
    cfg = load_config(GEN_CONFIG, [*pubmedqa_overrides(HERE / "work"), "precision=fp32"], GeneratorConfig)
    tokenizer = load_tokenizer(cfg.model.name)
    enc = PromptEncoder(tokenizer, cfg.prompt, cfg.model.max_length)
    train_ex, _, source = load_data(cfg)
    examples = [
        enc.encode(e.question, p, e.answer) for e, p in zip(train_ex, source.shown(train_ex), strict=True)
    ]
    model = apply_peft(load_base(cfg.model), cfg.peft)
    model.train()
    lengths = [len(e.input_ids) for e in examples]

    ours_batches = epoch_batches(lengths, BATCH, SEED, 0, True)[: args.batches]
    order = list(range(len(examples)))
    random.Random(SEED).shuffle(order)  # the peer's RandomSampler: batches drawn without grouping
    peer_batches = [order[s : s + BATCH] for s in range(0, BATCH * args.batches, BATCH)]
    collate = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)

    def ours_step(batch: list[int]) -> None:
        padded = pad_batch([examples[i] for i in batch], tokenizer.pad_token_id)
        backward_answer_loss(model, [padded], "fp32", cfg.train.answer_logits_only)
        model.zero_grad(set_to_none=True)

    def peer_step(batch: list[int]) -> None:
        features = [{"input_ids": examples[i].input_ids, "labels": examples[i].labels} for i in batch]
        model(**collate(features)).loss.backward()
        model.zero_grad(set_to_none=True)

    variants = {}
    for name, batches, step in (
        ("generator_ragtune", ours_batches, ours_step),
        ("generator_peer_trainer", peer_batches, peer_step),
    ):
        flops = sum(counted(step, b) for b in batches)
        real = sum(lengths[i] for b in batches for i in b)
        padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
        variants[name] = {
            "gflop_per_token": round(flops / real / 1e9, 4),
            "real_tokens": real,
            "padded_tokens": padded,
            "padding_share": round(1 - real / padded, 4),
            "batches": len(batches),
        }
        print(name, variants[name], flush=True)
    width = max(lengths[i] for i in ours_batches[0]) * BATCH
    hidden, inter = model.config.hidden_size, model.config.intermediate_size
    rates = matmul_gflops(
        [(1024, 1024, 1024), (width, hidden, hidden), (width, hidden, inter), (width, inter, hidden)]
    )
    peak = max(rates.values())
    for v in variants.values():
        v["ceiling_tokens_per_s"] = round(peak / v["gflop_per_token"], 1)
    extra = {
        "matmul_gflops_fp32": rates,
        "summary": {
            "flop_ratio_peer_over_ragtune": round(
                variants["generator_peer_trainer"]["gflop_per_token"]
                / variants["generator_ragtune"]["gflop_per_token"],
                3,
            ),
            "matmul_peak_gflops": peak,
        },
    }
    path = write_result(
        "peer_speed_flops",
        f"python benchmarks/peer_speed/flops.py --batches {args.batches}",
        SEED,
        variants,
        extra,
        precision="fp32",
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
