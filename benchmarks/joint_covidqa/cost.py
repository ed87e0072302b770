"""What one joint round costs on COVID-QA: wall time per stage and peak RSS of a round over N
training questions (the issue's target: 500 questions in <= 15 minutes, <= 6 GB, on 2 cores).

    python benchmarks/joint_covidqa/cost.py [--questions 500] [--eval-questions 100]
        [--variant NAME KEY=VALUE ...] ... [--result joint_covidqa_cost]

Each variant is one child ``ragtune e2e train --config configs/e2e/covidqa.yaml rounds=1
questions_per_round=N eval.rounds=last`` (the packaged encoder: the cost does not depend on the
starting weights), with its overrides; the evaluation of the first ``--eval-questions`` held-out
questions is timed apart from the training stages (retrieve, generator, retriever, refresh).
Peak RSS is the child's, from wait4 (start-up, index build and evaluation included). Writes
benchmarks/results/<--result>.json (default joint_covidqa_cost.json).
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

from benchmarks.common import child, write_result  # noqa: E402
from benchmarks.joint_covidqa.run import E2E, PY, prepare  # noqa: E402

TRAINING_STAGES = ("retrieve", "generator", "retriever", "refresh")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--questions", type=int, default=500, help="training questions in the round")
    ap.add_argument("--eval-questions", type=int, default=100, help="held-out questions evaluated after it")
    ap.add_argument(
        "--variant",
        nargs="+",
        action="append",
        metavar="NAME KEY=VALUE",
        help="a variant: its name, then config overrides (default: one variant, 'config', with none)",
    )
    ap.add_argument("--result", default="joint_covidqa_cost", help="name of the results JSON")
    args = ap.parse_args()
    variants = args.variant or [["config"]]
    work = HERE / "work" / "cost"
    data = prepare(work / "data", "test")
    results = {}
    for name, *overrides in variants:
        out = work / name
        shutil.rmtree(out, ignore_errors=True)
        cmd = [
            *PY,
            "e2e",
            "train",
            "--config",
            str(E2E),
            f"data.corpus={data}",
            f"data.train={data / 'qa_train.jsonl'}",
            f"data.eval={data / 'qa_test.jsonl'}",
            f"data.max_eval={args.eval_questions}",
            "rounds=1",
            f"questions_per_round={args.questions}",
            "eval.rounds=last",
            f"output_dir={out}",
            *overrides,
        ]
        wall, rss = child(cmd, work / f"{name}.log")
        stages = json.loads((out / "state.json").read_text())["rounds"]["1"]["stages"]
        seconds = {s: round(v["seconds"], 1) for s, v in stages.items()}
        results[name] = {
            "overrides": overrides,
            "questions": stages["retriever"]["questions"],
            "round_training_s": round(sum(seconds[s] for s in TRAINING_STAGES), 1),
            "eval_s": seconds["eval"],
            "stage_seconds": seconds,
            "generator_tokens_per_s": round(stages["generator"]["tokens_per_s"], 1),
            "wall_s": round(wall, 1),
            "peak_rss_mb": round(rss, 1),
            "meets_15_min": sum(seconds[s] for s in TRAINING_STAGES) <= 900,
            "meets_6_gb": rss <= 6 * 1024,
        }
        print(name, json.dumps(results[name]), flush=True)
    command = "python benchmarks/joint_covidqa/cost.py " + " ".join(sys.argv[1:])
    path = write_result(
        args.result,
        command.strip(),
        0,
        results,
        {"config": str(E2E.relative_to(ROOT)), "eval_questions": args.eval_questions},
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
