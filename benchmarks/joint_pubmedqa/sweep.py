"""Sweep of the joint variant's settings on PubMedQA PQA-L: LSR temperature (tau), retriever
temperature (gamma), loss (LSR vs PDist), mode (query encoder only vs both encoders with index
refresh) and top k, one setting changed at a time from configs/e2e/pubmedqa.yaml.

    python benchmarks/joint_pubmedqa/sweep.py [--test-limit 100] [--rounds 2] [--questions-per-round 96]
        [--only NAME ...] [--resume]

Same data, draws, seed and evaluation questions as run.py; each setting is one ``ragtune e2e train``
child process evaluated after its last round only (round 0 is run.py's ``no_tuning``). Compare each
setting with run.py's ``separate`` and ``joint`` (benchmarks/results/joint_pubmedqa.json).
Writes benchmarks/results/joint_pubmedqa_sweep.json.
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
from benchmarks.joint_pubmedqa.run import CONFIG, SEED, pick, prepare  # noqa: E402

SETTINGS: dict[str, tuple[str, ...]] = {
    "top_k_5": ("top_k=5",),
    "mode_both": ("retriever.mode=both",),
    "tau_0.1": ("retriever.tau=0.1",),
    "pdist": ("retriever.loss=pdist",),
    "gamma_0.02": ("retriever.gamma=0.02",),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--test-limit", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--questions-per-round", type=int, default=96)
    ap.add_argument("--only", nargs="*", choices=sorted(SETTINGS), help="run only these settings")
    ap.add_argument("--resume", action="store_true", help="reuse settings finished by an earlier invocation")
    args = ap.parse_args()
    work = HERE / "work_sweep"
    common = [
        *prepare(work / "data", args.test_limit, args.rounds, args.questions_per_round),
        "eval.rounds=last",
    ]
    py = [sys.executable, "-m", "ragtune.cli", "e2e", "train", "--config", str(CONFIG)]
    variants: dict[str, dict] = {}
    for name in args.only or SETTINGS:
        out = work / name
        stats = work / f"{name}.child.json"
        if not (args.resume and stats.exists() and (out / "report.json").exists()):
            shutil.rmtree(out, ignore_errors=True)
            wall, rss = child([*py, *common, f"output_dir={out}", *SETTINGS[name]], work / f"{name}.log")
            stats.write_text(json.dumps({"wall_s": wall, "peak_rss_mb": rss}))
        child_stats = json.loads(stats.read_text())
        report = json.loads((out / "report.json").read_text())
        last = [r for r in report["rounds"] if "metrics" in r][-1]
        variants[f"joint_{name}"] = {
            "overrides": list(SETTINGS[name]),
            "metrics": pick(report["final"]),
            "errors": last["errors"],
            "wall_s": round(child_stats["wall_s"], 1),
            "peak_rss_mb": round(child_stats["peak_rss_mb"], 1),
            "wall_s_per_round": {str(r["round"]): round(r["wall_s"], 1) for r in report["rounds"]},
            "retriever_stage": {
                str(r["round"]): {
                    k: v for k, v in r["stages"].get("retriever", {}).items() if k != "peak_rss_mb"
                }
                for r in report["rounds"]
                if r["round"] > 0
            },
            "refresh_stage": {
                str(r["round"]): r["stages"]["refresh"] for r in report["rounds"] if "refresh" in r["stages"]
            },
        }
        print(name, variants[f"joint_{name}"]["metrics"], flush=True)
    reference = ROOT / "benchmarks/results/joint_pubmedqa.json"
    summary: dict = {"test_questions": args.test_limit, "rounds": args.rounds}
    if reference.exists():
        ref = json.loads(reference.read_text())["variants"]
        s = ref["separate"]["metrics"]
        summary["separate_reference"] = {k: s[k] for k in ("ROUGE-L", "faithfulness", "Recall@5")}
        summary["beats_separate"] = {
            name: {
                "ROUGE-L": v["metrics"]["ROUGE-L"] > s["ROUGE-L"],
                "faithfulness": v["metrics"]["faithfulness"] > s["faithfulness"],
                "Recall@5_not_lower": v["metrics"]["Recall@5"] >= s["Recall@5"],
            }
            for name, v in variants.items()
        }
    only = f" --only {' '.join(args.only)}" if args.only else ""
    command = (
        f"python benchmarks/joint_pubmedqa/sweep.py --test-limit {args.test_limit} --rounds {args.rounds} "
        f"--questions-per-round {args.questions_per_round}{only}"
    )
    path = write_result("joint_pubmedqa_sweep", command, SEED, variants, extra={"summary": summary})
    print(json.dumps(summary, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
