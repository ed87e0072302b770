"""ragtune against the peers' own trainers on the CPU at hand, each at its best precision there.

    python benchmarks/peer_speed/run.py [--epochs 1] [--gen-steps 30] [--skip retriever|generator]
        [--gen-processes 1 2] [--compile [both|ragtune]] [--result NAME] [--reuse-peers]

Retriever: sentence-transformers' ``SentenceTransformerTrainer`` + MultipleNegativesRankingLoss
(``benchmarks/retriever_scifact/peer.py``) against ``ragtune retriever train`` on the same SciFact
training pairs with the same top-BM25 hard negative, batch 32, lr 2e-5, ``--epochs`` epochs; both
models are then scored on SciFact test (300 queries) with the same encoding code, so speed is
compared at measured quality. Generator: transformers' ``Trainer`` + peft LoRA
(``benchmarks/generator_pubmedqa/peer.py``) against ``ragtune generator train`` on PubMedQA with the
same examples, LoRA, batch 4, lr 3e-4 and ``--gen-steps`` steps; quality is the validation loss both
adapters reach (same held-out examples, same scoring function, fp32).

Each peer runs at its own best precision for this CPU: ``--precision auto`` resolves, as for
ragtune, to bf16 mixed precision where bf16 is native (AMX / AVX512-BF16) and to fp32 elsewhere.
Every training run is a child process (peak RSS via wait4). Writes
``benchmarks/results/peer_speed_<cpu kind>.json`` (``avx2``, ``avx512_bf16``, ``amx``; see
``benchmarks.common.cpu_kind``). To measure the AVX2 kind on a newer x86 CPU, cap both torch's
kernels and oneDNN: ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` (bf16 then runs emulated,
~0.9 GFLOP/s, as on a real AVX2-only CPU); the cap is recorded in the result's ``hardware``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import SHARED_DATASETS, child, cpu_kind, scifact_bm25_negatives, write_result  # noqa: E402
from ragtune.data.io import load_beir  # noqa: E402
from ragtune.eval.ir import evaluate_run  # noqa: E402
from ragtune.precision import resolve_precision  # noqa: E402

SEED = 0
GEN_CONFIG = ROOT / "configs/generator/pubmedqa.yaml"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fresh(folder: Path) -> Path:
    """An empty output folder: a checkpoint left by an earlier invocation would be resumed."""
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def run_peer(
    peer_dir: Path, script: str, args: list[str], reuse: bool, launcher: list[str] | None = None
) -> tuple[float, float, dict]:
    """Run ``script ARGS[0] PEER_DIR ARGS[1:]`` as a child process (or, with ``reuse``, take the
    run left in ``peer_dir``); returns (wall seconds, peak RSS MB, the peer's ``peer_stats.json``)."""
    if not (reuse and (peer_dir / "peer_rss.json").exists()):
        cmd = [*(launcher or [sys.executable]), str(ROOT / script), args[0], str(fresh(peer_dir)), *args[1:]]
        wall, rss = child(cmd, peer_dir.parent / f"{peer_dir.name}.log")
        (peer_dir / "peer_rss.json").write_text(json.dumps({"wall_s": wall, "peak_rss_mb": rss}))
    wall, rss = json.loads((peer_dir / "peer_rss.json").read_text()).values()
    return wall, rss, json.loads((peer_dir / "peer_stats.json").read_text())


def retriever(work: Path, epochs: int, reuse_peer: bool) -> dict[str, dict]:
    scifact_run = _load(ROOT / "benchmarks/retriever_scifact/run.py", "retriever_scifact_run")
    scifact = SHARED_DATASETS / "scifact"
    test = load_beir(scifact, "test")
    negatives = scifact_bm25_negatives()
    py = sys.executable
    out: dict[str, dict] = {}
    peer_dir = work / "retriever_peer"
    wall, rss, stats = run_peer(
        peer_dir,
        "benchmarks/retriever_scifact/peer.py",
        [str(negatives), "--epochs", str(epochs), "--batch-size", "32", "--precision", "auto"],
        reuse_peer,
    )
    scored = peer_dir / "test_metrics.json"  # the peer model's SciFact test metrics, once per model
    if not (reuse_peer and scored.exists()):
        run, _, _ = scifact_run.dense_run(str(peer_dir / "model"), test, "auto")
        scored.write_text(json.dumps(scifact_run.pick(evaluate_run(run, test.qrels).metrics)))
    out["retriever_peer_sentence_transformers"] = {
        "metrics": json.loads(scored.read_text()),
        "pairs_per_s": round(stats["pairs_per_s"], 2),
        "train_s": round(stats["train_s"], 1),
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(rss, 1),
        "precision": stats["precision"],
        "recipe": f"SentenceTransformerTrainer + MNRL, NO_DUPLICATES, batch 32, lr 2e-5, {epochs} epoch(s), "
        "1 BM25 negative",
    }
    print(out, flush=True)
    ours = work / "retriever_ragtune"
    wall, rss = child(
        [
            *[py, "-m", "ragtune.cli", "retriever", "train", f"data.beir_dir={scifact}"],
            *[f"data.triplets={negatives}", "data.val_fraction=0", "train.hard_negatives=1"],
            *[f"train.epochs={epochs}", "train.batch_size=32", "train.lr=2e-5", "train.save_every=0"],
            *[f"seed={SEED}", "precision=auto", f"output_dir={fresh(ours)}"],
        ],
        work / "retriever_ragtune.log",
    )
    summary = json.loads((ours / "train_summary.json").read_text())
    run, _, _ = scifact_run.dense_run(str(ours / "model"), test, "auto")
    out["retriever_ragtune"] = {
        "metrics": scifact_run.pick(evaluate_run(run, test.qrels).metrics),
        "pairs_per_s": round(summary["pairs_per_s"], 2),
        "train_s": round(summary["step_seconds_this_process"], 1),
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(rss, 1),
        "precision": summary["hardware"]["precision"],
        "recipe": "ragtune retriever train, same data, negatives, batch, lr and epochs (defaults otherwise)",
    }
    print(out, flush=True)
    return out


def pubmedqa_overrides(work: Path) -> list[str]:
    """PubMedQA converted into ``work/pubmedqa``, as config overrides for the generator comparison."""
    from ragtune.data.converters import pubmedqa, write_dataset

    data = work / "pubmedqa"
    corpus, train, test = pubmedqa(SHARED_DATASETS / "pubmedqa")
    write_dataset(data, corpus, {"train": train, "test": test})
    return [
        *[f"data.train={data / 'qa_train.jsonl'}", f"data.test={data / 'qa_test.jsonl'}"],
        *[f"data.corpus={data}", f"seed={SEED}"],
    ]


def torchrun(processes: int) -> list[str]:
    """The command prefix that starts a script under ``processes`` processes (plain python for 1)."""
    if processes == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]


def generator(
    work: Path, steps: int, reuse_peer: bool, compiled: str | None, processes: list[int]
) -> dict[str, dict]:
    """Both generator trainers at each process count of ``processes`` (torchrun, one thread per
    process beyond 1; the global batch stays 4), eager and, where ``compiled`` names the side
    (``both`` or ``ragtune``), compiled too. Variant names: ``generator_<side>[_<N>proc][_compiled]``."""
    from ragtune.config import load_config
    from ragtune.generator.config import GeneratorConfig
    from ragtune.generator.model import load_tokenizer, load_trained
    from ragtune.generator.prompt import PromptEncoder
    from ragtune.generator.scoring import validation_loss
    from ragtune.generator.train import load_data

    base = pubmedqa_overrides(work)
    recipe = ["train.lr=3e-4", "train.warmup_ratio=0", f"train.max_steps={steps}"]
    out: dict[str, dict] = {}

    def kinds(side_compiles: bool) -> list[tuple[str, bool, int]]:
        return [
            (("" if n == 1 else f"_{n}proc") + ("_compiled" if c else ""), c, n)
            for n in processes
            for c in ((False, True) if side_compiles else (False,))
        ]

    for suffix, compile_it, n in kinds(compiled == "both"):
        peer_dir = work / f"generator_peer{suffix}"
        wall, rss, stats = run_peer(
            peer_dir,
            "benchmarks/generator_pubmedqa/peer.py",
            [str(GEN_CONFIG), *base, *recipe, "--max-steps", str(steps), "--precision", "auto"]
            + ["--torch-compile"] * compile_it,
            reuse_peer,
            torchrun(n),
        )
        out[f"generator_peer_trainer{suffix}"] = {
            "tokens_per_s": round(stats["tokens_per_s"], 1),
            "tokens_per_s_after_step_1": round(stats.get("tokens_per_s_after_step_1") or 0, 1) or None,
            "train_s": round(stats["train_s"], 1),
            "wall_s": round(wall, 1),
            "peak_rss_mb": round(rss, 1),
            "processes": n,
            "train_loss": round(stats["train_loss"], 4),
            "precision": stats["precision"],
            "torch_compile": compile_it,
            "adapter": peer_dir / "adapter",
            "recipe": f"transformers Trainer + peft LoRA r16/a32, batch 4, lr 3e-4, {steps} steps"
            + (", torch_compile=True" if compile_it else "")
            + (f", torchrun {n} processes (DDP, batch {4 // n} each)" if n > 1 else ""),
        }
        print(out, flush=True)
    for suffix, compile_it, n in kinds(compiled in ("both", "ragtune")):
        ours = work / f"generator_ragtune{suffix}"
        wall, rss = child(
            [
                *torchrun(n),
                *["-m", "ragtune.cli", "generator", "train", "--config", str(GEN_CONFIG), *base],
                *[
                    f"output_dir={fresh(ours)}",
                    "train.save_every=0",
                    "train.eval_every=0",
                    "precision=auto",
                    f"train.compile={str(compile_it).lower()}",
                    *recipe,
                ],
            ],
            work / f"generator_ragtune{suffix}.log",
        )
        summary = json.loads((ours / "train_summary.json").read_text())
        steps_log = [json.loads(x) for x in (ours / "history.jsonl").read_text().splitlines()][1:]
        after_1 = sum(r["tokens_per_s"] * r["seconds"] for r in steps_log) / sum(
            r["seconds"] for r in steps_log
        )
        out[f"generator_ragtune{suffix}"] = {
            "tokens_per_s": round(summary["tokens_per_s"], 1),
            "tokens_per_s_after_step_1": round(after_1, 1),
            "train_s": round(summary["step_seconds_this_process"], 1),
            "wall_s": round(wall, 1),
            "peak_rss_mb": round(rss, 1),
            "processes": n,
            "precision": summary["hardware"]["precision"],
            "torch_compile": compile_it,
            "adapter": ours / "adapter",
            "recipe": "ragtune generator train (configs/generator/pubmedqa.yaml), same examples, LoRA, batch, lr, steps"
            + (", train.compile=true" if compile_it else "")
            + (f", torchrun {n} processes (batch {4 // n} each)" if n > 1 else ""),
        }
    # Quality at equal steps: the validation loss both adapters reach, scored alike in fp32.
    cfg = load_config(GEN_CONFIG, base, GeneratorConfig)
    tokenizer = load_tokenizer(cfg.model.name)
    enc = PromptEncoder(tokenizer, cfg.prompt, cfg.model.max_length)
    _, val_ex, source = load_data(cfg)
    val = [enc.encode(e.question, p, e.answer) for e, p in zip(val_ex, source.shown(val_ex), strict=True)]
    for v in out.values():
        model = load_trained(v.pop("adapter"), cfg.model)
        v["val_loss"] = round(validation_loss(model, val, 8, tokenizer.pad_token_id, "fp32"), 4)
        v["val_examples"] = len(val)
    print(out, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=1, help="retriever epochs (both sides)")
    ap.add_argument("--gen-steps", type=int, default=30, help="generator optimiser steps (both sides)")
    ap.add_argument("--skip", choices=["retriever", "generator"], action="append", default=[])
    ap.add_argument(
        "--compile",
        nargs="?",
        const="both",
        choices=["both", "ragtune"],
        help="also run the generator trainers with torch.compile (Trainer torch_compile=True; "
        "train.compile=true): both sides, or ragtune's only",
    )
    ap.add_argument(
        "--gen-processes",
        type=int,
        nargs="+",
        default=[1],
        help="run both generator trainers at each of these process counts (torchrun; default 1)",
    )
    ap.add_argument("--result", help="result file name (default peer_speed_<cpu kind>)")
    ap.add_argument(
        "--reuse-peers",
        action="store_true",
        help="reuse the peers' training runs (stats, peak RSS, model) left in work/ by an earlier invocation",
    )
    args = ap.parse_args()
    work = HERE / "work"
    work.mkdir(parents=True, exist_ok=True)
    variants: dict[str, dict] = {}
    if "retriever" not in args.skip:
        variants.update(retriever(work, args.epochs, args.reuse_peers))
    if "generator" not in args.skip:
        variants.update(generator(work, args.gen_steps, args.reuse_peers, args.compile, args.gen_processes))
    summary: dict[str, object] = {"precision_auto_resolves_to": resolve_precision("auto")}
    if "retriever_ragtune" in variants:
        peer, ours = variants["retriever_peer_sentence_transformers"], variants["retriever_ragtune"]
        summary["retriever_speedup"] = round(ours["pairs_per_s"] / peer["pairs_per_s"], 2)
        summary["retriever_rss_ratio"] = round(ours["peak_rss_mb"] / peer["peak_rss_mb"], 2)
        summary["retriever_nDCG@10_delta"] = round(ours["metrics"]["nDCG@10"] - peer["metrics"]["nDCG@10"], 4)
    if "generator_ragtune" in variants:
        peer, ours = variants["generator_peer_trainer"], variants["generator_ragtune"]
        summary["generator_speedup"] = round(ours["tokens_per_s"] / peer["tokens_per_s"], 2)
        summary["generator_rss_ratio"] = round(ours["peak_rss_mb"] / peer["peak_rss_mb"], 2)
        summary["generator_val_loss_delta"] = round(ours["val_loss"] - peer["val_loss"], 4)
    ours_all = [n for n in variants if n.startswith("generator_ragtune")]
    peers_all = [n for n in variants if n.startswith("generator_peer_trainer")]
    if len(ours_all) > 1 or len(peers_all) > 1:
        # Each side at its best setting here (process count, compiled or not): whole runs (any
        # compilation included) and after the first step (the compilation excluded).
        for key in ("tokens_per_s", "tokens_per_s_after_step_1"):
            best = {
                side: max(names, key=lambda n: variants[n][key])
                for side, names in (("peer", peers_all), ("ragtune", ours_all))
            }
            summary[f"generator_best_speedup_{key}"] = round(
                variants[best["ragtune"]][key] / variants[best["peer"]][key], 2
            )
            summary[f"generator_best_variants_{key}"] = [best["ragtune"], best["peer"]]
    command = f"python benchmarks/peer_speed/run.py --epochs {args.epochs} --gen-steps {args.gen_steps}"
    command += "".join(f" --skip {s}" for s in args.skip) + " --reuse-peers" * args.reuse_peers
    command += f" --compile {args.compile}" if args.compile else ""
    if args.gen_processes != [1]:
        command += " --gen-processes " + " ".join(map(str, args.gen_processes))
    command += f" --result {args.result}" if args.result else ""
    path = write_result(
        args.result or f"peer_speed_{cpu_kind()}", command, SEED, variants, extra={"summary": summary}
    )
    print(json.dumps(summary, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
