"""The learned faithfulness checker on HaluEval QA: trained on synthetic claims only, scored on 500 rows.

The checker (``ragtune faithfulness train``, configs/checker/default.yaml) is trained on claims
made by rule from the passages of the biomedical corpora at hand (SciFact abstracts, PubMedQA
paragraphs, COVID-QA article passages; ragtune.checker.synth), never on HaluEval. It then scores
each HaluEval row's right answer (label 1) and hallucinated answer (label 0) against the row's
``knowledge``, with its question. AUROC over the 1,000 answers, overall and on the slices where
cheap scores fail:

- ``AUROC_lexically_supported``: rows whose hallucinated answer uses only words of the passage;
- ``AUROC_length_matched``: rows whose two answers differ by at most 20% in characters;
- ``AUROC_not_longer``: rows whose hallucinated answer has no more words than the right one;
- ``AUROC_first100``: the first 100 rows, the only ones looked at when choosing settings.

Variants: ``length_baseline`` (score = -characters), ``lexical``, ``checker``, and
``checker*lexical`` (the product of the two scores, fixed before the 500-row figures were read).
Every variant is computed in this run on the same rows. Run from the repository root::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/faithfulness_checker/run.py [--max-passages 4500]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import SHARED_DATASETS, peak_rss_mb, write_result  # noqa: E402
from benchmarks.faithfulness_halueval.run import DATA, DEV_ROWS, load_rows  # noqa: E402
from ragtune.eval.faithfulness import auroc, lexical_faithfulness, lexically_supported  # noqa: E402

WORK = Path(__file__).resolve().parent / "work"
CONFIG = ROOT / "configs" / "checker" / "default.yaml"


def corpora(work: Path) -> list[Path]:
    """corpus.jsonl of SciFact (as shared), PubMedQA and COVID-QA (converted into ``work``)."""
    from ragtune.data.converters import pubmedqa, squad, write_dataset

    out = [SHARED_DATASETS / "scifact" / "corpus.jsonl"]
    pub = work / "pubmedqa"
    if not (pub / "corpus.jsonl").exists():
        corpus, train, test = pubmedqa(SHARED_DATASETS / "pubmedqa")
        write_dataset(pub, corpus, {"train": train, "test": test})
    covid = work / "covidqa"
    if not (covid / "corpus.jsonl").exists():
        corpus, train, test, _ = squad(SHARED_DATASETS / "covidqa" / "covidqa.json", 100, None, 0.2, 0, 1)
        write_dataset(covid, corpus, {"train": train, "test": test})
    return [*out, pub / "corpus.jsonl", covid / "corpus.jsonl"]


def slices(rows: list[dict[str, str]]) -> dict[str, list[int]]:
    """Row indices of each slice (see the module docstring)."""

    def length_matched(r: dict[str, str]) -> bool:
        a, b = len(r["right_answer"]), len(r["hallucinated_answer"])
        return abs(a - b) <= 0.2 * max(a, b)

    return {
        "lexically_supported": [
            i for i, r in enumerate(rows) if lexically_supported(r["hallucinated_answer"], [r["knowledge"]])
        ],
        "length_matched": [i for i, r in enumerate(rows) if length_matched(r)],
        "not_longer": [
            i
            for i, r in enumerate(rows)
            if len(r["hallucinated_answer"].split()) <= len(r["right_answer"].split())
        ],
        "first100": list(range(min(DEV_ROWS, len(rows)))),
    }


def metrics(rows, right: Sequence[float], hallucinated: Sequence[float]) -> dict[str, Any]:
    def area(idx: Sequence[int]) -> float:
        if not idx:
            return math.nan
        return auroc(
            [1] * len(idx) + [0] * len(idx), [right[i] for i in idx] + [hallucinated[i] for i in idx]
        )

    out: dict[str, Any] = {"AUROC": round(area(range(len(rows))), 4)}
    for name, idx in slices(rows).items():
        out[f"AUROC_{name}"] = round(area(idx), 4)
        if name != "first100":
            out[f"n_{name}"] = len(idx)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--max-passages", type=int, default=None, help="data.max_passages (default: the config's)"
    )
    ap.add_argument(
        "--limit", type=int, default=None, help="first N HaluEval rows only (smoke runs; no JSON)"
    )
    ap.add_argument("--resume", action="store_true", help="reuse a checker already trained in work/")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. train.lr=3e-5")
    args = ap.parse_args(argv)

    from ragtune.checker.config import CheckerConfig
    from ragtune.checker.score import FaithfulnessChecker
    from ragtune.checker.train import train
    from ragtune.config import load_config

    WORK.mkdir(parents=True, exist_ok=True)
    files = corpora(WORK)
    overrides = [
        f"data.corpus=[{','.join(str(f) for f in files)}]",
        f"output_dir={WORK / 'checker'}",
        *([f"data.max_passages={args.max_passages}"] if args.max_passages else []),
        *args.overrides,
    ]
    cfg = load_config(CONFIG, overrides, CheckerConfig)
    start = time.perf_counter()
    if not (args.resume and (WORK / "checker" / "model" / "checker.json").exists()):
        train(cfg)
    train_s = time.perf_counter() - start
    summary = json.loads((WORK / "checker" / "train_summary.json").read_text())
    stats = json.loads((WORK / "checker" / "examples.stats.json").read_text())

    rows = load_rows(DATA)[: args.limit]
    n = len(rows)
    variants: dict[str, dict[str, Any]] = {}
    t = time.perf_counter()
    lengths = [-float(len(r["right_answer"])) for r in rows] + [
        -float(len(r["hallucinated_answer"])) for r in rows
    ]
    variants["length_baseline"] = {
        "metrics": metrics(rows, lengths[:n], lengths[n:]),
        "wall_s": time.perf_counter() - t,
    }
    t = time.perf_counter()
    lex = [lexical_faithfulness(r["right_answer"], [r["knowledge"]]) for r in rows]
    lex += [lexical_faithfulness(r["hallucinated_answer"], [r["knowledge"]]) for r in rows]
    variants["lexical"] = {"metrics": metrics(rows, lex[:n], lex[n:]), "wall_s": time.perf_counter() - t}

    checker = FaithfulnessChecker(WORK / "checker", precision=cfg.precision, progress=True)
    answers = [r["right_answer"] for r in rows] + [r["hallucinated_answer"] for r in rows]
    t = time.perf_counter()
    scores = checker(answers, [[r["knowledge"]] for r in rows] * 2, [r["question"] for r in rows] * 2)
    score_s = time.perf_counter() - t
    speed = {"wall_s": round(score_s, 2), "pairs_per_s": round(2 * n / score_s, 1)}
    variants["checker"] = {"metrics": metrics(rows, scores[:n], scores[n:]), **speed}
    both = [a * b for a, b in zip(scores, lex, strict=True)]
    variants["checker*lexical"] = {"metrics": metrics(rows, both[:n], both[n:]), **speed}
    for v in variants.values():
        v["peak_rss_mb"] = round(peak_rss_mb(), 1)

    width = max(len(k) for k in variants)
    print(f"{'variant':{width}s}  AUROC  lex-supp  len-matched  not-longer  first100")
    for name, v in variants.items():
        m = v["metrics"]
        print(
            f"{name:{width}s}  {m['AUROC']:.3f}  {m['AUROC_lexically_supported']:.3f}     "
            f"{m['AUROC_length_matched']:.3f}        {m['AUROC_not_longer']:.3f}       {m['AUROC_first100']:.3f}"
        )
    if args.limit is not None:
        print("--limit given: results not written")
        return
    command = "HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/faithfulness_checker/run.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    extra = {
        "data": "../shared/datasets/halueval/qa_one-turn_data.json (500 rows; never used in training)",
        "training": {
            "corpora": [str(f.relative_to(ROOT)) if f.is_relative_to(ROOT) else str(f) for f in files],
            "examples": stats,
            "steps": summary["steps"],
            "train_pairs_per_s": summary.get("pairs_per_s"),
            "wall_s": round(train_s, 1),
            "best_val": summary.get("best"),
            "config": str(CONFIG.relative_to(ROOT)),
            "overrides": args.overrides,
        },
        "selection": f"settings were compared on synthetic validation claims and the first {DEV_ROWS} "
        "HaluEval rows only (AUROC_first100); the 500-row figures were read after",
    }
    path = write_result(
        "faithfulness_checker", command.strip(), cfg.seed, variants, extra=extra, precision=cfg.precision
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
