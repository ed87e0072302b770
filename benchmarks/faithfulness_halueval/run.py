"""Faithfulness scorers on HaluEval QA: does a score rank the right answer above the hallucinated one?

Every one of the 500 rows gives a passage (``knowledge``), a question, a right answer (label 1) and a
hallucinated answer (label 0). Each scorer scores both answers against the same passage and question;
the metric is the AUROC over the 1,000 answers, overall and on two harder slices:

- ``AUROC_lexically_supported``: rows whose hallucinated answer uses only words of the passage
  (:func:`ragtune.eval.faithfulness.lexically_supported`), where unigram overlap cannot help;
- ``AUROC_not_longer``: rows whose hallucinated answer has no more words than the right one, where
  the length shortcut (right answers are short spans, hallucinated ones long sentences) fails.

Variants: ``length_baseline`` (score = -characters), ``lexical``, ``model`` (the shipped default of
:func:`~ragtune.eval.faithfulness.likelihood_faithfulness`: per-token PMI with SmolLM2-135M-Instruct
under ``--precision`` (default auto: bf16 autocast where native, else fp32)), two likelihood ablations computed from the same forward passes
(``model_conditional``: per-token likelihood with the passage; ``model_pmi_sum``: PMI without length
normalisation), and ``lexical+model`` (mean of the two scores). ``AUROC_first100`` is the AUROC on the
first 100 rows, the only rows looked at when choosing among variants.

Run from the repository root::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/faithfulness_halueval/run.py
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import SHARED_DATASETS, peak_rss_mb, write_result  # noqa: E402
from ragtune.eval.faithfulness import (  # noqa: E402
    auroc,
    faithfulness_prompt,
    lexical_faithfulness,
    lexically_supported,
    likelihood_faithfulness,
)

DATA = SHARED_DATASETS / "halueval" / "qa_one-turn_data.json"
FIELDS = ("knowledge", "question", "right_answer", "hallucinated_answer")
MODEL = "SmolLM2-135M-Instruct"
DEV_ROWS = 100


def load_rows(path: Path) -> list[dict[str, str]]:
    """HaluEval QA rows (JSON lines); a bad line raises an error naming the file, line and field."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not JSON ({err})") from err
            for field in FIELDS:
                if not isinstance(row.get(field), str):
                    raise ValueError(f"{path}:{number}: field {field!r} missing or not a string")
            rows.append({field: row[field] for field in FIELDS})
    return rows


class TimedCache:
    """Memoise a ``loglik`` callable and remember what each computed pair cost, in seconds.

    The likelihood variants share forward passes; a variant's ``wall_s`` is the cost of the pairs it
    needs, as if it ran alone.
    """

    def __init__(self, loglik: Callable[[list[tuple[str, str]]], list[tuple[float, int]]]) -> None:
        self.loglik = loglik
        self.results: dict[tuple[str, str], tuple[float, int]] = {}
        self.seconds: dict[tuple[str, str], float] = {}

    def __call__(self, pairs: list[tuple[str, str]]) -> list[tuple[float, int]]:
        new = list(dict.fromkeys(p for p in pairs if p not in self.results))
        if new:
            start = time.perf_counter()
            computed = self.loglik(new)
            each = (time.perf_counter() - start) / len(new)
            for pair, result in zip(new, computed):
                self.results[pair] = result
                self.seconds[pair] = each
        return [self.results[p] for p in pairs]

    def cost(self, pairs: Sequence[tuple[str, str]]) -> float:
        return sum(self.seconds[p] for p in set(pairs))


def metrics(rows: list[dict[str, str]], right: list[float], hallucinated: list[float]) -> dict[str, Any]:
    """AUROC overall, on the lexically supported and not-longer slices, and on the first 100 rows."""

    def area(indices: Sequence[int]) -> float:
        labels = [1] * len(indices) + [0] * len(indices)
        return auroc(labels, [right[i] for i in indices] + [hallucinated[i] for i in indices])

    supported = [
        i for i, r in enumerate(rows) if lexically_supported(r["hallucinated_answer"], [r["knowledge"]])
    ]
    not_longer = [
        i
        for i, r in enumerate(rows)
        if len(r["hallucinated_answer"].split()) <= len(r["right_answer"].split())
    ]
    out: dict[str, Any] = {"AUROC": area(range(len(rows)))}
    out["AUROC_lexically_supported"] = area(supported) if supported else math.nan
    out["n_lexically_supported"] = len(supported)
    out["AUROC_not_longer"] = area(not_longer) if not_longer else math.nan
    out["n_not_longer"] = len(not_longer)
    if len(rows) > DEV_ROWS:
        out["AUROC_first100"] = area(range(DEV_ROWS))
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def variant(
    rows: list[dict[str, str]], right: list[float], hallucinated: list[float], wall_s: float, **extra: Any
) -> dict[str, Any]:
    result = {
        "metrics": metrics(rows, right, hallucinated),
        "wall_s": round(wall_s, 3),
        "rows_per_s": round(len(rows) / wall_s, 2) if wall_s > 0 else math.inf,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    result.update(extra)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--limit", type=int, default=None, help="first N rows only (smoke runs; no JSON)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--precision", choices=["auto", "fp32", "bf16"], default="auto", help="see ragtune.precision"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)

    import torch

    from ragtune.generator.likelihood import AnswerLikelihood

    torch.manual_seed(0)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rows = load_rows(args.data)[: args.limit]
    rights = [r["right_answer"] for r in rows]
    halls = [r["hallucinated_answer"] for r in rows]
    contexts = [[r["knowledge"]] for r in rows]
    questions = [r["question"] for r in rows]
    variants: dict[str, dict[str, Any]] = {}

    start = time.perf_counter()
    right = [-float(len(a)) for a in rights]
    hall = [-float(len(a)) for a in halls]
    variants["length_baseline"] = variant(rows, right, hall, time.perf_counter() - start)

    start = time.perf_counter()
    lex_right = [lexical_faithfulness(a, c) for a, c in zip(rights, contexts)]
    lex_hall = [lexical_faithfulness(a, c) for a, c in zip(halls, contexts)]
    lexical_s = time.perf_counter() - start
    variants["lexical"] = variant(rows, lex_right, lex_hall, lexical_s)

    start = time.perf_counter()
    scorer = AnswerLikelihood(MODEL, batch_size=args.batch_size, precision=args.precision, progress=True)
    load_s = time.perf_counter() - start
    cache = TimedCache(scorer)
    answers = rights + halls
    cond_pairs = [(faithfulness_prompt(q, c), a) for a, c, q in zip(answers, contexts * 2, questions * 2)]
    prior_pairs = [(faithfulness_prompt(q, None), a) for a, q in zip(answers, questions * 2)]

    start = time.perf_counter()
    model = likelihood_faithfulness(answers, contexts * 2, questions * 2, cache)
    model_s = load_s + time.perf_counter() - start  # nothing cached yet: every pair is computed here
    n = len(rows)
    pairs_per_s = 2 * len(answers) / cache.cost(cond_pairs + prior_pairs)
    extra = {
        "model": MODEL,
        "precision": args.precision,
        "threads": torch.get_num_threads(),
        "pairs_per_s": round(pairs_per_s, 2),
    }
    variants["model"] = variant(rows, model[:n], model[n:], model_s, **extra)

    conditional = likelihood_faithfulness(answers, contexts * 2, questions * 2, cache, mode="conditional")
    variants["model_conditional"] = variant(
        rows, conditional[:n], conditional[n:], load_s + cache.cost(cond_pairs), **extra
    )
    pmi_sum = [c[0] - p[0] for c, p in zip(cache(cond_pairs), cache(prior_pairs))]
    variants["model_pmi_sum"] = variant(rows, pmi_sum[:n], pmi_sum[n:], model_s, **extra)
    combined = [(x + y) / 2 for x, y in zip(lex_right + lex_hall, model)]
    variants["lexical+model"] = variant(rows, combined[:n], combined[n:], model_s + lexical_s, **extra)

    width = max(len(k) for k in variants)
    print(f"{'variant':{width}s}  AUROC  lex-supported (n)  not-longer (n)  first100  rows/s")
    for name, v in variants.items():
        m = v["metrics"]
        supported = f"{m['AUROC_lexically_supported']:.3f} ({m['n_lexically_supported']})"
        not_longer = f"{m['AUROC_not_longer']:.3f} ({m['n_not_longer']})"
        first = m.get("AUROC_first100", math.nan)
        print(
            f"{name:{width}s}  {m['AUROC']:.3f}  {supported:17s}  {not_longer:14s}  {first:.3f}"
            f"     {v['rows_per_s']:.1f}"
        )
    if args.limit is not None:
        print("--limit given: results not written")
        return
    command = "HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/faithfulness_halueval/run.py"
    command += f" --precision {args.precision}" + (f" --threads {args.threads}" if args.threads else "")
    extra_doc = {
        "data": "../shared/datasets/halueval/qa_one-turn_data.json" if args.data == DATA else str(args.data),
        "n_rows": n,
        "selection": f"variants were compared on the first {DEV_ROWS} rows only (AUROC_first100); "
        "the shipped default (model = per-token PMI) was fixed there before the 500-row numbers were read",
    }
    path = write_result("faithfulness", command, 0, variants, extra=extra_doc, precision=args.precision)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
