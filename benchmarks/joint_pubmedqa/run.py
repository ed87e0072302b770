"""Joint RAG tuning on PubMedQA PQA-L: no tuning, retriever alone, generator alone, both tuned
separately, and joint alternating tuning with LSR, at the same budget, in one run.

    python benchmarks/joint_pubmedqa/run.py [--test-limit 100] [--rounds 2] [--questions-per-round 96] [--resume]

Corpus: every context paragraph of PQA-L (3,358); training: the 500 non-test questions, of which each
round draws ``--questions-per-round`` (seeded, the same draw for every variant); evaluation: the first
``--test-limit`` official test questions; target LONG_ANSWER. Every variant is one
``ragtune e2e train`` child process (peak RSS via wait4) with configs/e2e/pubmedqa.yaml:

- ``joint``: each round the generator trains on the current retriever's passages, then the query
  encoder learns from the generator's likelihoods (LSR); evaluated after every round;
- ``retriever_only``: the same LSR steps with the untuned generator as teacher;
- ``generator_only``: the same generator steps with the untuned retriever;
- ``separate``: retriever_only's query encoder with generator_only's adapter (no further training);
- ``no_tuning``: round 0 of ``joint`` (both models as loaded; the same computation as a separate run).

Writes benchmarks/results/joint_pubmedqa.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import SHARED_DATASETS, child, write_result  # noqa: E402
from ragtune.data.converters import pubmedqa, write_dataset  # noqa: E402

SEED = 0
CONFIG = ROOT / "configs/e2e/pubmedqa.yaml"
KEEP = ("Recall@1", "Recall@3", "Recall@5", "Recall@10", "MRR@10", "nDCG@10", "ROUGE-1", "ROUGE-2",
        "ROUGE-L", "EM", "F1", "faithfulness")  # fmt: skip


def pick(metrics: dict) -> dict:
    return {k: round(metrics[k], 4) for k in KEEP if k in metrics}


def prepare(data: Path, test_limit: int, rounds: int, questions_per_round: int) -> list[str]:
    """Convert PQA-L into ``data`` (corpus + QA files) and return the overrides every variant shares."""
    corpus, train, test = pubmedqa(SHARED_DATASETS / "pubmedqa")
    write_dataset(data, corpus, {"train": train, "test": test})
    return [
        f"data.corpus={data}",
        f"data.train={data / 'qa_train.jsonl'}",
        f"data.eval={data / 'qa_test.jsonl'}",
        f"data.max_eval={test_limit}",
        f"rounds={rounds}",
        f"questions_per_round={questions_per_round}",
        f"seed={SEED}",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--test-limit", type=int, default=100, help="evaluate on the first N test questions")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--questions-per-round", type=int, default=96)
    ap.add_argument("--resume", action="store_true", help="reuse variants finished by an earlier invocation")
    ap.add_argument("extra", nargs="*", metavar="KEY=VALUE", help="overrides for every variant")
    args = ap.parse_args()
    work = HERE / "work"
    common = [*prepare(work / "data", args.test_limit, args.rounds, args.questions_per_round), *args.extra]
    py = [sys.executable, "-m", "ragtune.cli", "e2e", "train", "--config", str(CONFIG)]
    runs: dict[str, tuple[Path, float, float]] = {}

    def run(name: str, *overrides: str) -> None:
        out = work / name
        stats = work / f"{name}.child.json"
        if args.resume and stats.exists() and (out / "report.json").exists():
            print("reused", name, flush=True)
        else:
            shutil.rmtree(out, ignore_errors=True)  # a fresh run, not a resumed one
            wall, rss = child([*py, *common, f"output_dir={out}", *overrides], work / f"{name}.log")
            stats.write_text(json.dumps({"wall_s": wall, "peak_rss_mb": rss}))
        child_stats = json.loads(stats.read_text())
        runs[name] = (out, child_stats["wall_s"], child_stats["peak_rss_mb"])
        print(name, json.loads((out / "report.json").read_text())["final"], flush=True)

    run("joint")
    run("retriever_only", "generator.enabled=false", "eval.rounds=last")
    run("generator_only", "retriever.enabled=false", "false_negatives.enabled=false", "eval.rounds=last")
    run(
        "separate",
        "rounds=0",
        f"retriever.query_model={work / 'retriever_only' / 'query_encoder'}",
        f"generator.adapter={work / 'generator_only' / 'adapter'}",
    )

    variants: dict[str, dict] = {}
    joint = json.loads((runs["joint"][0] / "report.json").read_text())
    round0 = joint["rounds"][0]
    variants["no_tuning"] = {
        "metrics": pick(round0["metrics"]),
        "errors": round0["errors"],
        "wall_s": round(round0["wall_s"], 1),
        "source": "round 0 of the joint run (both models as loaded)",
    }
    for name, (out, wall, rss) in runs.items():
        report = json.loads((out / "report.json").read_text())
        last = [r for r in report["rounds"] if "metrics" in r][-1]
        entry = {
            "metrics": pick(report["final"]),
            "errors": last["errors"],
            "wall_s": round(wall, 1),
            "peak_rss_mb": round(rss, 1),
            "wall_s_per_round": {str(r["round"]): round(r["wall_s"], 1) for r in report["rounds"]},
        }
        if name == "joint":
            entry["metrics_per_round"] = {
                str(r["round"]): pick(r["metrics"]) for r in report["rounds"] if "metrics" in r
            }
            entry["retriever_stage"] = {
                str(r["round"]): {
                    k: v for k, v in r["stages"].get("retriever", {}).items() if k not in ("peak_rss_mb",)
                }
                for r in report["rounds"]
                if r["round"] > 0
            }
        variants[name] = entry
    j, s = variants["joint"]["metrics"], variants["separate"]["metrics"]
    summary = {
        "test_questions": args.test_limit,
        "rounds": args.rounds,
        "questions_per_round": args.questions_per_round,
        "overrides": args.extra,
        "targets": {
            "joint_ROUGE-L>separate": j["ROUGE-L"] > s["ROUGE-L"],
            "joint_faithfulness>separate": j["faithfulness"] > s["faithfulness"],
            "joint_Recall@5>=separate": j["Recall@5"] >= s["Recall@5"],
        },
    }
    extra_args = " ".join(args.extra)
    command = (
        f"python benchmarks/joint_pubmedqa/run.py --test-limit {args.test_limit} --rounds {args.rounds} "
        f"--questions-per-round {args.questions_per_round} {extra_args}"
    ).strip()
    path = write_result("joint_pubmedqa", command, SEED, variants, extra={"summary": summary})
    print(json.dumps(summary, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
