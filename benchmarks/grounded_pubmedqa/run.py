"""Grounded answers on PubMedQA PQA-L: base, LoRA SFT, SFT + DPO (sigmoid, IPO, RPO), and the peer
(TRL's ``DPOTrainer`` on the same pairs, LoRA and steps), in one run, through the CLI as a user runs it.

    python benchmarks/grounded_pubmedqa/run.py [--sft-examples 240] [--pair-questions 120]
        [--test-limit 60] [--losses sigmoid,rpo,ipo] [--peer-steps 8] [--adapter-size 70] [--resume]

1. ``ragtune generator train`` (LoRA SFT) on the first ``--sft-examples`` training questions, and
   the same with bottleneck adapters (``--adapter-size``: as many trainable parameters as the LoRA);
2. ``ragtune generator pairs`` with the SFT adapter on the first ``--pair-questions`` training
   questions (closed-book, distractor and unanswerable kinds);
3. ``ragtune generator dpo`` per loss on those pairs, on top of the SFT adapter;
4. per model: ``ragtune generator generate --unanswerable`` on the first ``--test-limit`` test
   questions (their own contexts; then again with BM25 distractors instead) and
   ``ragtune eval generation --meteor --bertscore``: ROUGE-L, F1, decision Accuracy / macro-F1,
   METEOR, BERTScore, lexical faithfulness, abstain and false-abstain rates;
5. the peer: ``peer_trl.py`` runs TRL's DPOTrainer (same pairs, same fresh LoRA over the merged SFT
   model, same batch, learning rate and beta) for ``--peer-steps`` steps, and ragtune's DPO runs the
   same number of steps, each a child process (peak RSS via wait4).

Settings were chosen before any test question was answered (beta 0.1, lr 1e-4, one epoch: the usual
LoRA-DPO defaults); nothing was tuned on test. Writes benchmarks/results/grounded_pubmedqa.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import SHARED_DATASETS, child, write_result  # noqa: E402

SEED = 0
CONFIG = ROOT / "configs/generator/pubmedqa_dpo.yaml"
RAGTUNE = [sys.executable, "-m", "ragtune.cli"]
DPO_LR = 1e-4
KEEP = (
    "ROUGE-L", "F1", "decision_Accuracy", "decision_macro_F1", "METEOR", "BERTScore-F1", "faithfulness",
    "abstain_rate", "false_abstain_rate", "answered_ROUGE-L", "n_answered", "n_answerable",
)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sft-examples", type=int, default=240)
    ap.add_argument("--pair-questions", type=int, default=120)
    ap.add_argument("--test-limit", type=int, default=60)
    ap.add_argument("--losses", default="sigmoid,rpo")
    ap.add_argument("--peer-steps", type=int, default=8)
    ap.add_argument(
        "--adapter-size",
        type=int,
        default=70,
        help="bottleneck adapter SFT of this size (70: SmolLM2's LoRA r16 parameter count; 0: skip)",
    )
    ap.add_argument("--resume", action="store_true", help="reuse stages an earlier invocation finished")
    args = ap.parse_args()
    if not (SHARED_DATASETS / "pubmedqa").is_dir():
        sys.exit(f"{SHARED_DATASETS / 'pubmedqa'} is missing: this benchmark reads the shared PubMedQA")
    work = HERE / "work"
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    stages: dict[str, dict] = {}

    def run(name: str, cmd: list[str], done: Path) -> dict:
        if args.resume and done.exists() and (work / f"{name}.stage.json").exists():
            stages[name] = json.loads((work / f"{name}.stage.json").read_text())
            print("reused", name, flush=True)
            return stages[name]
        wall, rss = child(cmd, work / f"{name}.log", cwd=ROOT)
        stages[name] = {"wall_s": round(wall, 1), "peak_rss_mb": round(rss)}
        (work / f"{name}.stage.json").write_text(json.dumps(stages[name]))
        print(name, stages[name], flush=True)
        return stages[name]

    run(
        "convert",
        [
            *RAGTUNE,
            "data",
            "convert",
            "pubmedqa",
            "--src",
            str(SHARED_DATASETS / "pubmedqa"),
            "--out",
            str(data),
        ],
        data / "qa_test.jsonl",
    )
    base = [
        f"data.train={data / 'qa_train.jsonl'}",
        f"data.test={data / 'qa_test.jsonl'}",
        f"data.corpus={data}",
    ]
    cfg = ["--config", str(CONFIG), *base, f"seed={SEED}"]
    sft = work / "sft"
    run(
        "sft",
        [*RAGTUNE, "generator", "train", *cfg, f"data.max_examples={args.sft_examples}", f"output_dir={sft}"],
        sft / "adapter",
    )
    adapter_sft = work / "sft_bottleneck"
    if args.adapter_size:
        run(
            "sft_bottleneck",
            [*RAGTUNE, "generator", "train", *cfg, f"data.max_examples={args.sft_examples}", "peft.method=bottleneck",
             f"peft.bottleneck_size={args.adapter_size}", f"output_dir={adapter_sft}"],
            adapter_sft / "adapter",
        )  # fmt: skip
    pairs = work / "pairs.jsonl"
    run(
        "pairs",
        [*RAGTUNE, "generator", "pairs", *cfg, "--model", str(sft / "adapter"), "--out", str(pairs),
         "--limit", str(args.pair_questions)],
        pairs,
    )  # fmt: skip
    pair_stats = json.loads((work / "pairs.jsonl.stats.json").read_text())
    dpo_cfg = [*cfg, f"dpo.pairs={pairs}", f"dpo.sft_adapter={sft / 'adapter'}", f"train.lr={DPO_LR}"]
    models: dict[str, Path | None] = {"base": None, "sft": sft / "adapter"}
    if args.adapter_size:
        models["sft_bottleneck"] = adapter_sft / "adapter"
    for loss in args.losses.split(","):
        out = work / f"dpo_{loss}"
        run(
            f"dpo_{loss}",
            [*RAGTUNE, "generator", "dpo", *dpo_cfg, f"dpo.loss={loss}", f"output_dir={out}"],
            out / "adapter",
        )
        models[f"sft_dpo_{loss}"] = out / "adapter"

    variants: dict[str, dict] = {}
    for name, model in models.items():
        pred = work / f"{name}.predictions.jsonl"
        gen = [*RAGTUNE, "generator", "generate", *cfg, "--input", str(data / "qa_test.jsonl"), "--limit",
               str(args.test_limit), "--unanswerable", "--out", str(pred)]  # fmt: skip
        if model is not None:
            gen += ["--model", str(model)]
        run(f"generate_{name}", gen, pred)
        metrics_path = work / f"{name}.metrics.json"
        run(
            f"eval_{name}",
            [*RAGTUNE, "eval", "generation", "--predictions", str(pred), "--out", str(metrics_path), "--meteor",
             "--bertscore"],
            metrics_path,
        )  # fmt: skip
        m = json.loads(metrics_path.read_text())["metrics"]
        variant = {"metrics": {k: round(m[k], 4) for k in KEEP if k in m}}
        gen_stats = json.loads((work / f"{name}.predictions.jsonl.stats.json").read_text())
        variant["generation_tokens_per_s"] = round(gen_stats["tokens_per_s"], 1)
        if name.startswith("sft_dpo_"):
            summary = json.loads((work / name.removeprefix("sft_") / "train_summary.json").read_text())
            history = [
                json.loads(x)
                for x in (work / name.removeprefix("sft_") / "history.jsonl").read_text().splitlines()
            ]
            variant.update(
                pairs_per_s=round(summary["pairs_per_s"], 3),
                train_wall_s=stages[name.removeprefix("sft_")]["wall_s"],
                peak_rss_mb=stages[name.removeprefix("sft_")]["peak_rss_mb"],
                first_step={k: round(history[0][k], 4) for k in ("loss", "logp_chosen", "logp_rejected")},
                last_step={k: round(history[-1][k], 4) for k in ("loss", "reward_margin", "reward_accuracy", "logp_chosen", "logp_rejected")},
                best=summary["best"],
            )  # fmt: skip
        elif name in ("sft", "sft_bottleneck"):
            summary = json.loads((work / name / "train_summary.json").read_text())
            variant.update(
                tokens_per_s=round(summary["tokens_per_s"], 1),
                trainable_parameters=summary["trainable_parameters"],
                train_wall_s=stages[name]["wall_s"],
                peak_rss_mb=stages[name]["peak_rss_mb"],
            )
        variants[name] = variant

    # The peer and ragtune on the same pairs for the same number of steps.
    peer_out = work / "peer_trl"
    run(
        "peer_trl",
        [sys.executable, str(HERE / "peer_trl.py"), str(CONFIG), str(peer_out), "--pairs", str(pairs),
         "--sft-adapter", str(sft / "adapter"), "--max-steps", str(args.peer_steps), *base, f"train.lr={DPO_LR}"],
        peer_out / "peer_stats.json",
    )  # fmt: skip
    peer = json.loads((peer_out / "peer_stats.json").read_text())
    same = work / "dpo_same_steps"
    run(
        "dpo_same_steps",
        [*RAGTUNE, "generator", "dpo", *dpo_cfg, f"train.max_steps={args.peer_steps}", "data.val_fraction=0",
         f"output_dir={same}"],
        same / "adapter",
    )  # fmt: skip
    one_pass = work / "dpo_same_steps_one_pass"
    run(
        "dpo_same_steps_one_pass",
        [*RAGTUNE, "generator", "dpo", *dpo_cfg, f"train.max_steps={args.peer_steps}", "data.val_fraction=0",
         "dpo.grad_chunk=0", f"output_dir={one_pass}"],
        one_pass / "adapter",
    )  # fmt: skip
    one = json.loads((one_pass / "train_summary.json").read_text())
    ours = json.loads((same / "train_summary.json").read_text())
    ours_history = [json.loads(x) for x in (same / "history.jsonl").read_text().splitlines()]
    variants["peer_trl_dpo"] = {
        "pairs_per_s": round(peer["pairs_per_s"], 3),
        "peak_rss_mb": stages["peer_trl"]["peak_rss_mb"],
        "wall_s": stages["peer_trl"]["wall_s"],
        "steps": peer["steps"],
        "step0_loss": peer["step0_loss"],
        "precision": peer["precision"],
    }
    variants["ragtune_dpo_same_steps"] = {
        "pairs_per_s": round(ours["pairs_per_s"], 3),
        "peak_rss_mb": stages["dpo_same_steps"]["peak_rss_mb"],
        "wall_s": stages["dpo_same_steps"]["wall_s"],
        "steps": ours["steps"],
        "step0_loss": round(ours_history[0]["loss"], 6),
    }
    variants["ragtune_dpo_same_steps_one_pass"] = {
        "pairs_per_s": round(one["pairs_per_s"], 3),
        "peak_rss_mb": stages["dpo_same_steps_one_pass"]["peak_rss_mb"],
        "wall_s": stages["dpo_same_steps_one_pass"]["wall_s"],
        "steps": one["steps"],
        "step0_loss": round(json.loads((one_pass / "history.jsonl").read_text().splitlines()[0])["loss"], 6),
    }
    extra = {
        "settings": {
            "sft_examples": args.sft_examples,
            "pair_questions": args.pair_questions,
            "test_questions": args.test_limit,
            "config": str(CONFIG.relative_to(ROOT)),
            "pairs": pair_stats,
        },
        "speed_ratio_vs_trl": round(ours["pairs_per_s"] / peer["pairs_per_s"], 2),
        "rss_ratio_vs_trl": round(
            stages["dpo_same_steps"]["peak_rss_mb"] / stages["peer_trl"]["peak_rss_mb"], 2
        ),
    }
    command = "python benchmarks/grounded_pubmedqa/run.py " + " ".join(sys.argv[1:])
    print(write_result("grounded_pubmedqa", command.strip(), SEED, variants, extra))


if __name__ == "__main__":
    main()
