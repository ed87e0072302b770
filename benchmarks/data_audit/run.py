"""``ragtune data audit`` on every shared dataset: duplicates, leakage between splits, broken rows.

    python benchmarks/data_audit/run.py

Each dataset of ../shared/datasets is converted as its README section says (SciFact is already a
BEIR folder; PubMedQA, HaluEval QA and COVID-QA through ``ragtune data convert``), then audited
with the default settings (near duplicates: Jaccard >= 0.8 over word shingles; overlong: > 512
words) as a child process (wall time and peak RSS from wait4). The full reports are left in
``benchmarks/data_audit/work/<dataset>/audit.{json,md}``; the counts go to
``benchmarks/results/data_audit.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import SHARED_DATASETS, child, write_result  # noqa: E402

PY = [sys.executable, "-m", "ragtune.cli"]
CONVERT = {
    "pubmedqa": ["pubmedqa", "--src", str(SHARED_DATASETS / "pubmedqa")],
    "halueval": ["halueval", "--src", str(SHARED_DATASETS / "halueval" / "qa_one-turn_data.json")],
    "covidqa": [
        *["squad", "--src", str(SHARED_DATASETS / "covidqa" / "covidqa.json")],
        *["--offset-tolerance", "1"],
    ],
}


def findings(report: dict) -> dict:
    """The counts of one ``audit.json``, flat enough for a table."""
    c = report["corpus"]
    out = {
        "passages": c["passages"],
        "questions": {s: v["questions"] for s, v in report["splits"].items()},
        "empty_passages": c["empty"]["count"],
        "overlong_passages": c["overlong"]["count"],
        "exact_duplicate_passages": c["exact_duplicates"]["passages"],
        "near_duplicate_passage_pairs": c["near_duplicates"]["pairs"],
        "duplicate_questions_within_splits": sum(
            v["exact_duplicate_groups"] + v["near_duplicate_pairs"] for v in report["splits"].values()
        ),
        "leaked_questions_exact": sum(v["exact"] for v in report["leakage"].values()),
        "leaked_questions_near": sum(v["near"] for v in report["leakage"].values()),
        "shared_positive_passages": sum(v["passages"] for v in report["shared_positives"].values()),
        # questions of the later split (test) whose positive passage is a positive of the earlier one
        "questions_with_a_shared_positive": sum(
            n for v in report["shared_positives"].values() for k, n in v.items() if k.endswith("_questions")
        ),
        "answers_not_in_passages": sum(v["answer_not_in_passages"] for v in report["qa"].values()),
        "qa_rows": sum(v["examples"] for v in report["qa"].values()),
        "leakage_found": report["leakage_found"],
        "leak_examples": [e for v in report["leakage"].values() for e in v["examples"][:3]],
    }
    return out


def main() -> None:
    work = HERE / "work"
    work.mkdir(parents=True, exist_ok=True)
    variants: dict[str, dict] = {}
    for name in ("scifact", "pubmedqa", "halueval", "covidqa"):
        folder = SHARED_DATASETS / name if name == "scifact" else work / name / "data"
        if name in CONVERT:
            child(
                [*PY, "data", "convert", *CONVERT[name], "--out", str(folder)], work / f"{name}.convert.log"
            )
        out = work / name
        wall, rss = child([*PY, "data", "audit", str(folder), "--out", str(out)], work / f"{name}.audit.log")
        report = json.loads((out / "audit.json").read_text())
        variants[name] = {**findings(report), "wall_s": round(wall, 1), "peak_rss_mb": round(rss, 1)}
        print(name, variants[name], flush=True)
    path = write_result(
        "data_audit",
        "python benchmarks/data_audit/run.py",
        1,
        variants,
        extra={"settings": report["settings"]},
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
