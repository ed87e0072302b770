"""Generator benchmark on PubMedQA PQA-L: base model with and without passages, ragtune's LoRA, IA3
and prompt tuning, and the peer (transformers' Trainer + peft), in one run.

    python benchmarks/generator_pubmedqa/run.py [--test-limit 500] [--peer-steps 30] [--resume]

Training: the 500 non-test questions (10% held out for validation), target = LONG_ANSWER, passages =
the question's CONTEXTS. Evaluation: the official test questions (the first ``--test-limit`` of
them), with their CONTEXTS, and with BM25's top 3 from the whole corpus (3,358 paragraphs). Every
training run is a child process (peak RSS via wait4). Writes
benchmarks/results/generator_pubmedqa.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import SHARED_DATASETS, child, write_result  # noqa: E402
from ragtune.config import load_config  # noqa: E402
from ragtune.data.converters import pubmedqa, write_dataset  # noqa: E402
from ragtune.eval.faithfulness import lexical_faithfulness  # noqa: E402
from ragtune.eval.generation import decision_accuracy, evaluate_generation  # noqa: E402
from ragtune.generator.config import GeneratorConfig  # noqa: E402

SEED = 0
CONFIG = ROOT / "configs/generator/pubmedqa.yaml"
METRIC_ROUND = 4
LR = {"lora": 3e-4, "ia3": 3e-3, "prompt": 3e-2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--test-limit", type=int, default=500, help="evaluate on the first N test questions")
    ap.add_argument("--peer-steps", type=int, default=30, help="optimiser steps of the peer comparison")
    ap.add_argument(
        "--train-steps", type=int, default=0, help="cap every training run (0: one epoch; for smoke runs)"
    )
    ap.add_argument(
        "--all-test-check",
        action="store_true",
        help="also score base_with_passages and ragtune_lora on every test question",
    )
    ap.add_argument("--resume", action="store_true", help="reuse variants finished by an earlier invocation")
    args = ap.parse_args()
    work = HERE / "work"
    cache = work / "variants"
    cache.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    corpus, train, test = pubmedqa(SHARED_DATASETS / "pubmedqa")
    write_dataset(data, corpus, {"train": train, "test": test})
    base = [
        f"data.train={data / 'qa_train.jsonl'}",
        f"data.test={data / 'qa_test.jsonl'}",
        f"data.corpus={data}",
        f"seed={SEED}",
    ]
    cfg = load_config(CONFIG, base, GeneratorConfig)
    all_test, test = test, test[: args.test_limit]
    variants: dict[str, dict] = {}

    def done(name: str) -> bool:
        if args.resume and (cache / f"{name}.json").exists():
            variants[name] = json.loads((cache / f"{name}.json").read_text())
            print("reused", name, flush=True)
            return True
        return False

    def keep(name: str) -> None:
        (cache / f"{name}.json").write_text(json.dumps(variants[name], indent=2))
        print(name, json.dumps(variants[name]), flush=True)

    from ragtune.generator.collator import PassageSource
    from ragtune.generator.generate import Generator

    def evaluate(
        name: str, model_path: Path | None, passages: str, extra: dict | None = None, questions=None
    ) -> dict:
        """Answer the test questions (``questions``, default the first --test-limit) and score them."""
        test = questions if questions is not None else all_test[: args.test_limit]
        gold_decisions = [e.meta.get("final_decision") or "" for e in test]
        c = load_config(CONFIG, [*base, f"data.passages={passages}"], GeneratorConfig)
        gen = Generator(c, model_path)
        shown = PassageSource(c.data, corpus, test).shown(test)
        prompts, kept = gen.build([e.question for e in test], shown)
        start = time.perf_counter()
        answers = gen.answer(prompts)
        wall = time.perf_counter() - start
        metrics, _ = evaluate_generation(answers, [e.answer for e in test], [e.id for e in test])
        # Faithfulness against what the model was shown; closed-book answers against the gold abstract.
        support = [k if k else list(e.contexts) for k, e in zip(kept, test, strict=True)]
        metrics["faithfulness"] = sum(
            lexical_faithfulness(a, [p.full_text() for p in s]) for a, s in zip(answers, support, strict=True)
        ) / len(answers)
        metrics.update(decision_accuracy(answers, gold_decisions))
        rows = [
            {"id": e.id, "prediction": a, "reference": e.answer, "contexts": [p.id for p in k]}
            for e, a, k in zip(test, answers, kept, strict=True)
        ]
        (work / f"{name}.predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return {
            "metrics": {k: round(v, METRIC_ROUND) for k, v in metrics.items()},
            "generation_wall_s": round(wall, 1),
            "generation_tokens_per_s": round(gen.stats["tokens_per_s"], 1),
            "mean_answer_tokens": round(gen.stats["tokens"] / len(test), 1),
            "test_questions": len(test),
            "passages": passages,
            **(extra or {}),
        }

    for name, passages in (
        ("base_no_passages", "none"),
        ("base_with_passages", "given"),
        ("base_with_bm25_passages", "bm25"),
    ):
        if not done(name):
            variants[name] = evaluate(name, None, passages)
            keep(name)

    py, ragtune = sys.executable, [sys.executable, "-m", "ragtune.cli"]

    def train_variant(name: str, method: str, overrides: list[str]) -> tuple[Path, dict]:
        out = work / name
        wall, rss = child(
            [
                *ragtune,
                "generator",
                "train",
                "--config",
                str(CONFIG),
                *base,
                f"output_dir={out}",
                f"peft.method={method}",
                "train.save_every=0",
                *([f"train.max_steps={args.train_steps}"] if args.train_steps else []),
                *overrides,
            ],
            work / f"{name}.log",
        )
        summary = json.loads((out / "train_summary.json").read_text())
        return out / "adapter", {
            "train_wall_s": round(wall, 1),
            "train_tokens_per_s": round(summary["tokens_per_s"], 1),
            "tokens_per_s": round(summary["tokens_per_s"], 1),
            "peak_rss_mb": round(rss, 1),
            "steps": summary["steps"],
            "best_val_loss": round(summary["best"]["val_loss"], 4) if summary["best"] else None,
            "trainable_parameters": summary["trainable_parameters"],
            "lr": LR[method],
        }

    for name, method in (
        ("ragtune_lora", "lora"),
        ("ragtune_ia3", "ia3"),
        ("ragtune_prompt_tuning", "prompt"),
    ):
        if done(name):
            continue
        adapter, info = train_variant(name, method, [f"train.lr={LR[method]}"])
        variants[name] = evaluate(name, adapter, "given", info)
        if method == "lora":
            # Generation speed: the same 16 questions one at a time and in one batch of 16.
            c = load_config(CONFIG, base, GeneratorConfig)
            gen = Generator(c, adapter)
            sample = test[:16]
            prompts, _ = gen.build([e.question for e in sample], [list(e.contexts) for e in sample])
            gen.answer(prompts, progress=False)
            batched = gen.stats["tokens_per_s"]
            from dataclasses import replace

            gen.answer(prompts, replace(c.generate, batch_size=1), progress=False)
            single = gen.stats["tokens_per_s"]
            variants[name]["batched_tokens_per_s"] = round(batched, 1)
            variants[name]["single_tokens_per_s"] = round(single, 1)
            variants[name]["batched_speedup"] = round(batched / single, 2)
        keep(name)

    if not done("ragtune_lora_bm25_passages"):
        variants["ragtune_lora_bm25_passages"] = evaluate(
            "ragtune_lora_bm25_passages", work / "ragtune_lora" / "adapter", "bm25"
        )
        keep("ragtune_lora_bm25_passages")

    # The peer and ragtune on the same short recipe: equal steps, batch, lr, LoRA; compare speed and
    # the validation loss both adapters reach (scored by the same function on the same examples).
    steps = args.peer_steps
    recipe = [f"train.lr={LR['lora']}", "train.warmup_ratio=0", f"train.max_steps={steps}"]
    if not done("peer_trainer"):
        peer_dir = work / "peer"
        wall, rss = child(
            [
                py,
                str(HERE / "peer.py"),
                str(CONFIG),
                str(peer_dir),
                *base,
                *recipe,
                "--max-steps",
                str(steps),
            ],
            work / "peer.log",
        )
        stats = json.loads((peer_dir / "peer_stats.json").read_text())
        variants["peer_trainer"] = {
            "tokens_per_s": round(stats["tokens_per_s"], 1),
            "train_wall_s": round(wall, 1),
            "peak_rss_mb": round(rss, 1),
            "steps": steps,
            "recipe": "transformers Trainer defaults (fp32, no grouping) + peft LoRA r16/a32, same examples, batch 4, lr 3e-4",
            "adapter": str(peer_dir / "adapter"),
        }
        keep("peer_trainer")
    if not done("ragtune_lora_peer_recipe"):
        _, info = train_variant("ragtune_lora_peer_recipe", "lora", [*recipe, "train.eval_every=0"])
        info["adapter"] = str(work / "ragtune_lora_peer_recipe" / "adapter")
        variants["ragtune_lora_peer_recipe"] = info
        keep("ragtune_lora_peer_recipe")

    # Validation loss of both short-recipe adapters, fp32, same held-out examples.
    from ragtune.generator.model import load_tokenizer, load_trained
    from ragtune.generator.prompt import PromptEncoder
    from ragtune.generator.scoring import validation_loss
    from ragtune.generator.train import load_data

    tokenizer = load_tokenizer(cfg.model.name)
    enc = PromptEncoder(tokenizer, cfg.prompt, cfg.model.max_length)
    _, val_ex, source = load_data(cfg)
    val = [enc.encode(e.question, p, e.answer) for e, p in zip(val_ex, source.shown(val_ex), strict=True)]
    for name in ("peer_trainer", "ragtune_lora_peer_recipe"):
        if "val_loss" not in variants[name]:
            model = load_trained(variants[name]["adapter"], cfg.model)
            variants[name]["val_loss"] = round(
                validation_loss(model, val, 8, tokenizer.pad_token_id, "fp32"), 4
            )
            keep(name)

    if args.all_test_check:  # the two variants the ROUGE-L target compares, on the whole test set
        for name, adapter in (
            ("base_with_passages", None),
            ("ragtune_lora", work / "ragtune_lora" / "adapter"),
        ):
            full = f"{name}_all_test"
            if not done(full):
                variants[full] = evaluate(full, adapter, "given", questions=all_test)
                keep(full)

    peer, ours = variants["peer_trainer"], variants["ragtune_lora_peer_recipe"]
    lora, base_p = variants["ragtune_lora"], variants["base_with_passages"]
    summary = {
        "rougeL_gain_points": round(100 * (lora["metrics"]["ROUGE-L"] - base_p["metrics"]["ROUGE-L"]), 2),
        **(
            {
                "rougeL_gain_points_all_test": round(
                    100
                    * (
                        variants["ragtune_lora_all_test"]["metrics"]["ROUGE-L"]
                        - variants["base_with_passages_all_test"]["metrics"]["ROUGE-L"]
                    ),
                    2,
                )
            }
            if "ragtune_lora_all_test" in variants
            else {}
        ),
        "train_speedup_vs_peer": round(ours["tokens_per_s"] / peer["tokens_per_s"], 2),
        "batched_vs_single_generation": lora["batched_speedup"],
        "targets": {
            "lora_rougeL>=base+5": lora["metrics"]["ROUGE-L"] >= base_p["metrics"]["ROUGE-L"] + 0.05,
            "lora_faithfulness>=base": lora["metrics"]["faithfulness"] >= base_p["metrics"]["faithfulness"],
            "train_tokens_per_s>=2x_peer": ours["tokens_per_s"] >= 2 * peer["tokens_per_s"],
            "val_loss<=peer": ours["val_loss"] <= peer["val_loss"],
            "batched>=3x_single": lora["batched_speedup"] >= 3,
        },
    }
    path = write_result(
        "generator_pubmedqa",
        f"python benchmarks/generator_pubmedqa/run.py --test-limit {args.test_limit} --peer-steps {steps}"
        + (" --all-test-check" if args.all_test_check else ""),
        SEED,
        variants,
        extra={"summary": summary, "test_questions": len(test)},
    )
    print(json.dumps(summary, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
