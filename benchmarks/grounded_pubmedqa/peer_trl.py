"""The peer: TRL's ``DPOTrainer`` on ragtune's preference pairs, as a user of TRL would run it.

    python peer_trl.py CONFIG.yaml OUT_DIR --pairs PAIRS.jsonl --sft-adapter ADAPTER --max-steps 8
        [--precision auto] [KEY=VALUE ...]

The same starting point as ``ragtune generator dpo``: the SFT adapter merged into the base weights and
a fresh LoRA with the config's rank, alpha, dropout and targets (TRL's ``peft_config``, so its
reference is the model with that LoRA disabled, as ragtune's). The prompt is the same system message
and user turn (numbered passages + question) as a conversation, chosen / rejected as assistant turns.
Matched: batch size, learning rate, beta, loss (sigmoid), steps, seed, max_length, and the peer's
best precision on this CPU (``bf16=True`` where bf16 is native, as ``ragtune.precision`` decides).
Everything else is ``DPOConfig``'s default. Writes ``{"train_s", "pairs_per_s", "steps",
"step0_loss", "precision"}`` to OUT_DIR/peer_stats.json. Run as its own process (peak RSS its own).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ragtune.config import load_config  # noqa: E402
from ragtune.data.io import load_pairs  # noqa: E402
from ragtune.generator.collator import load_corpus_arg  # noqa: E402
from ragtune.generator.config import GeneratorConfig  # noqa: E402
from ragtune.generator.model import load_base, load_tokenizer  # noqa: E402
from ragtune.generator.prompt import user_message  # noqa: E402
from ragtune.precision import resolve_precision  # noqa: E402


def conversations(system: str, pairs) -> list[dict]:
    """TRL's conversational preference rows for ragtune's pairs: the same system message and user
    turn (numbered passages + question) as ragtune's prompt, chosen / rejected as assistant turns."""
    return [
        {
            "prompt": [
                {"role": "system", "content": system},
                {"role": "user", "content": user_message(p.question, p.passages)},
            ],
            "chosen": [{"role": "assistant", "content": p.chosen}],
            "rejected": [{"role": "assistant", "content": p.rejected}],
        }
        for p in pairs
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--pairs", type=Path, required=True)
    ap.add_argument("--sft-adapter", type=Path, required=True)
    ap.add_argument("--max-steps", type=int, default=8)
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args()
    cfg = load_config(args.config, args.overrides, GeneratorConfig)
    bf16 = resolve_precision(args.precision, "cpu") == "bf16"

    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from trl import DPOConfig, DPOTrainer

    tokenizer = load_tokenizer(cfg.model.name)
    pairs = load_pairs(args.pairs, load_corpus_arg(cfg.data.corpus))
    rows = conversations(cfg.prompt.system, pairs)
    model = PeftModel.from_pretrained(load_base(cfg.model), str(args.sft_adapter)).merge_and_unload()
    lora = LoraConfig(
        r=cfg.peft.r,
        lora_alpha=cfg.peft.alpha,
        lora_dropout=cfg.peft.dropout,
        target_modules=list(cfg.peft.target_modules),
        task_type="CAUSAL_LM",
    )
    targs = DPOConfig(
        output_dir=str(args.out / "trainer"),
        per_device_train_batch_size=cfg.train.batch_size,
        learning_rate=cfg.train.lr,
        max_steps=args.max_steps,
        beta=cfg.dpo.beta,
        loss_type=["sigmoid"],
        max_length=cfg.model.max_length,
        bf16=bf16,
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=cfg.seed,
    )
    trainer = DPOTrainer(
        model=model,
        args=targs,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora,
    )
    result = trainer.train()
    train_s = float(result.metrics["train_runtime"])
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    stats = {
        "train_s": train_s,
        "steps": args.max_steps,
        "pairs_per_s": args.max_steps * cfg.train.batch_size / train_s,
        "step0_loss": losses[0] if losses else None,
        "precision": "bf16" if bf16 else "fp32",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peer_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(stats)


if __name__ == "__main__":
    main()
