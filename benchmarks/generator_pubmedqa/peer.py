"""The peer: transformers' ``Trainer`` + peft LoRA with default settings, on ragtune's own tokenised
examples (same prompts, same answer-only labels), as a user of those libraries would run it.

    python peer.py CONFIG.yaml OUT_DIR --max-steps 30 [--precision auto] [KEY=VALUE ...]

Only what must match for a fair comparison is set: the LoRA rank/alpha/targets, batch size, learning
rate, number of steps and seed, and the peer's best precision on the CPU at hand (``--precision
auto``: ``bf16=True`` where bf16 is native, fp32 elsewhere, as ``ragtune.precision`` decides).
Everything else is ``TrainingArguments``' default (no length grouping, LoRA dropout as configured,
full-vocabulary logits). Writes the adapter to
OUT_DIR/adapter and ``{"train_s", "tokens", "tokens_per_s", "steps"}`` to OUT_DIR/peer_stats.json.
Run as its own process so that its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from datasets import Dataset  # noqa: E402
from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from ragtune.config import load_config  # noqa: E402
from ragtune.generator.config import GeneratorConfig  # noqa: E402
from ragtune.generator.model import apply_peft, load_base, load_tokenizer  # noqa: E402
from ragtune.generator.prompt import PromptEncoder  # noqa: E402
from ragtune.generator.train import load_data  # noqa: E402
from ragtune.precision import resolve_precision  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--max-steps", type=int, default=30)
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    ap.add_argument("--torch-compile", action="store_true", help="TrainingArguments(torch_compile=True)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides, GeneratorConfig)
    bf16 = resolve_precision(args.precision, "cpu") == "bf16"
    tokenizer = load_tokenizer(cfg.model.name)
    enc = PromptEncoder(tokenizer, cfg.prompt, cfg.model.max_length)
    train_ex, _, source = load_data(cfg)
    rows = {"input_ids": [], "labels": []}
    for e, passages in zip(train_ex, source.shown(train_ex), strict=True):
        x = enc.encode(e.question, passages, e.answer)
        rows["input_ids"].append(x.input_ids)
        rows["labels"].append(x.labels)
    dataset = Dataset.from_dict(rows)
    model = apply_peft(load_base(cfg.model), cfg.peft)
    # Under torchrun (Trainer's own DDP, gloo on CPU) each of the WORLD_SIZE processes takes its
    # share of the batch, so the global batch stays train.batch_size.
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.train.batch_size % world:
        raise SystemExit(f"train.batch_size {cfg.train.batch_size} does not split over {world} processes")
    targs = TrainingArguments(
        output_dir=str(args.out / "trainer"),
        per_device_train_batch_size=cfg.train.batch_size // world,
        learning_rate=cfg.train.lr,
        max_steps=args.max_steps,
        seed=cfg.seed,
        save_strategy="no",
        report_to=[],
        logging_steps=5,
        bf16=bf16,
        use_cpu=True,
        torch_compile=args.torch_compile,
    )
    pad = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    counted = {"tokens": 0}

    def collate(features):  # the default collator, counting the real (non-pad) tokens it batches
        batch = pad(features)
        counted["tokens"] += int(batch["attention_mask"].sum())
        return batch

    marks: list[tuple[float, int]] = []  # (time, tokens collated) at each step's end

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.append((time.perf_counter(), counted["tokens"]))

    trainer = Trainer(
        model=model, args=targs, train_dataset=dataset, data_collator=collate, callbacks=[StepClock()]
    )
    start = time.perf_counter()
    result = trainer.train()
    train_s = time.perf_counter() - start
    tokens, between = counted["tokens"], marks[-1][1] - marks[0][1] if len(marks) > 1 else 0
    if world > 1:  # every process counted its own share
        import torch
        import torch.distributed as tdist

        both = torch.tensor([tokens, between], dtype=torch.float64)
        tdist.all_reduce(both)
        tokens, between = int(both[0]), float(both[1])
        if tdist.get_rank() != 0:
            return
    model.save_pretrained(str(args.out / "adapter"))
    tokenizer.save_pretrained(str(args.out / "adapter"))
    stats = {
        "train_s": train_s,
        "trainer_runtime_s": result.metrics.get("train_runtime"),
        "steps": args.max_steps,
        "tokens": tokens,
        "tokens_per_s": tokens / train_s,
        # after the first step (which pays torch.compile's compilation): tokens collated meanwhile
        "tokens_per_s_after_step_1": between / (marks[-1][0] - marks[0][0]) if len(marks) > 1 else None,
        "processes": world,
        "train_loss": result.training_loss,
        "precision": "bf16" if bf16 else "fp32",
        "torch_compile": args.torch_compile,
    }
    (args.out / "peer_stats.json").write_text(json.dumps(stats, indent=2))
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
