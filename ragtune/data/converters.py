"""Converters from public QA datasets to ragtune's formats (BEIR corpus + QA JSONL).

- PubMedQA PQA-L (``ori_pqal.json`` + ``test_ground_truth.json``): every ``CONTEXTS`` paragraph is a
  passage with the stable id ``<pmid>-<index>`` and its section label as title; each question becomes
  a QA example whose answer is ``LONG_ANSWER``, whose contexts and positives are its own paragraphs,
  and whose ``final_decision`` (yes/no/maybe) is kept. The official test ids form the test split.
- HaluEval QA (``qa_one-turn_data.json``): each row's ``knowledge`` is a passage (id ``h<row>``), the
  answer is ``right_answer`` and the ``hallucinated_answer`` is kept for faithfulness checks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ragtune.data.io import DataError, atomic_write_text, qa_to_dict, read_jsonl, write_jsonl
from ragtune.data.schema import Passage, QAExample


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(path, None, None, "file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(path, exc.lineno, None, f"malformed JSON: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise DataError(path, None, None, f"not UTF-8 ({exc.reason})") from None


def pubmedqa(folder: str | Path) -> tuple[dict[str, Passage], list[QAExample], list[QAExample]]:
    """Read PubMedQA PQA-L from ``folder``; return ``(corpus, train, test)``.

    ``train`` holds the 500 questions outside the official test ids, ``test`` the 500 test ones,
    both in file order.
    """
    folder = Path(folder)
    src = folder / "ori_pqal.json"
    data = _load_json(src)
    gt_path = folder / "test_ground_truth.json"
    test_ids = _load_json(gt_path)
    if not isinstance(data, dict) or not data:
        raise DataError(src, None, None, "expected a non-empty JSON object of id -> record")
    if not isinstance(test_ids, dict):
        raise DataError(gt_path, None, None, "expected a JSON object of id -> decision")
    unknown = [i for i in test_ids if i not in data]
    if unknown:
        raise DataError(gt_path, None, None, f"test id {unknown[0]!r} is not in {src.name}")
    corpus: dict[str, Passage] = {}
    train: list[QAExample] = []
    test: list[QAExample] = []
    for pmid, rec in data.items():
        for key in ("QUESTION", "CONTEXTS", "LONG_ANSWER"):
            if key not in rec:
                raise DataError(src, None, f"{pmid}.{key}", "missing")
        contexts = rec["CONTEXTS"]
        if not isinstance(contexts, list) or not contexts or not all(isinstance(c, str) for c in contexts):
            raise DataError(src, None, f"{pmid}.CONTEXTS", "expected a non-empty list of strings")
        labels = rec.get("LABELS") or [""] * len(contexts)
        passages = []
        for i, text in enumerate(contexts):
            pid = f"{pmid}-{i}"
            label = labels[i] if i < len(labels) and isinstance(labels[i], str) else ""
            corpus[pid] = Passage(pid, text, label.title())
            passages.append(corpus[pid])
        example = QAExample(
            id=str(pmid),
            question=rec["QUESTION"],
            answer=rec["LONG_ANSWER"],
            contexts=tuple(passages),
            positive_ids=tuple(p.id for p in passages),
            meta={"final_decision": rec.get("final_decision"), "year": rec.get("YEAR")},
        )
        (test if pmid in test_ids else train).append(example)
    return corpus, train, test


def halueval(path: str | Path) -> tuple[dict[str, Passage], list[QAExample]]:
    """Read HaluEval QA JSON lines; return ``(corpus, examples)`` with the hallucinated answer in meta."""
    path = Path(path)
    corpus: dict[str, Passage] = {}
    examples: list[QAExample] = []
    for line, obj in read_jsonl(path):
        for key in ("knowledge", "question", "right_answer", "hallucinated_answer"):
            if not isinstance(obj.get(key), str):
                raise DataError(path, line, key, "missing or not a string")
        pid = f"h{line}"
        corpus[pid] = Passage(pid, obj["knowledge"])
        examples.append(
            QAExample(
                id=f"halueval-{line}",
                question=obj["question"],
                answer=obj["right_answer"],
                contexts=(corpus[pid],),
                positive_ids=(pid,),
                meta={"hallucinated_answer": obj["hallucinated_answer"]},
            )
        )
    if not examples:
        raise DataError(path, None, None, "no rows")
    return corpus, examples


def write_dataset(out: str | Path, corpus: dict[str, Passage], splits: dict[str, list[QAExample]]) -> Path:
    """Write ``corpus.jsonl``, ``qa_<split>.jsonl`` (contexts by id), ``queries.jsonl`` and
    ``qrels/<split>.tsv`` (the positives, grade 1) into ``out``: a BEIR folder plus QA files."""
    out = Path(out)
    write_jsonl(
        out / "corpus.jsonl", ({"_id": p.id, "title": p.title, "text": p.text} for p in corpus.values())
    )
    queries = []
    for split, examples in splits.items():
        write_jsonl(out / f"qa_{split}.jsonl", (qa_to_dict(e, contexts_by_id=True) for e in examples))
        queries.extend({"_id": e.id, "text": e.question} for e in examples)
        rows = ["query-id\tcorpus-id\tscore"] + [
            f"{e.id}\t{pid}\t1" for e in examples for pid in e.positive_ids
        ]

        atomic_write_text(out / "qrels" / f"{split}.tsv", "\n".join(rows) + "\n")
    write_jsonl(out / "queries.jsonl", queries)
    return out
