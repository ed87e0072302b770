"""Converters from public QA datasets to ragtune's formats (BEIR corpus + QA JSONL).

- PubMedQA PQA-L (``ori_pqal.json`` + ``test_ground_truth.json``): every ``CONTEXTS`` paragraph is a
  passage with the stable id ``<pmid>-<index>`` and its section label as title; each question becomes
  a QA example whose answer is ``LONG_ANSWER``, whose contexts and positives are its own paragraphs,
  and whose ``final_decision`` (yes/no/maybe) is kept. The official test ids form the test split.
- HaluEval QA (``qa_one-turn_data.json``): each row's ``knowledge`` is a passage (id ``h<row>``), the
  answer is ``right_answer`` and the ``hallucinated_answer`` is kept for faithfulness checks.
- Any SQuAD-format file (v1.1, or v2 with ``is_impossible``; COVID-QA is one): each context is cut
  into passages of ``passage_words`` words, a question's positives are the passages holding its
  answer span, and the train/test split is by article (:func:`squad`).
"""

from __future__ import annotations

import json
import random
import re
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


def _windows(text: str, words: int, stride: int) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of windows of ``words`` whitespace-separated words, one
    every ``stride`` words, the last one ending with the text."""
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    out = []
    for first in range(0, len(spans), stride):
        last = min(first + words, len(spans)) - 1
        out.append((spans[first][0], spans[last][1]))
        if last == len(spans) - 1:
            break
    return out


def _nearest(text: str, sub: str, start: int, window: int) -> int | None:
    """The start of the occurrence of ``sub`` in ``text`` nearest to ``start``, at most ``window``
    characters from it (None when there is none)."""
    lo = max(0, start - window)
    hits = [
        lo + m.start() for m in re.finditer(f"(?={re.escape(sub)})", text[lo : start + window + len(sub)])
    ]
    return min(hits, key=lambda i: abs(i - start)) if hits else None


def squad(
    path: str | Path,
    passage_words: int = 100,
    stride: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    offset_tolerance: int = 0,
) -> tuple[dict[str, Passage], list[QAExample], list[QAExample], dict[str, int]]:
    """Read a SQuAD-format file; return ``(corpus, train, test, stats)``.

    Each paragraph's ``context`` is cut into passages of ``passage_words`` words, a new one every
    ``stride`` words (default: ``passage_words``, no overlap), with ids ``<article>-<paragraph>-<n>``
    (``<article>``: the article's ``document_id``, else its position) and the article's title (its
    ``title``, else the context's first line) as title. A question's positives are the passages
    whose span overlaps an answer's span (an answer crossing a boundary marks both); its answer is
    the first answer's text. SQuAD v2 questions marked ``is_impossible`` have no gold passage and
    are left out (counted in ``stats``). The split is by article: a seeded ``test_fraction`` of the
    articles that have questions goes to test, so no article answers questions on both sides;
    articles without questions stay in the corpus.

    Raises :class:`DataError` naming the question id on a missing field, an ``answer_start`` out of
    range or not pointing at its answer text, or a duplicate question id. With ``offset_tolerance``
    > 0, an answer whose text starts at most that many characters from its ``answer_start`` is
    re-anchored there instead (counted in ``stats["answers_realigned"]``): 142 of COVID-QA's 1,001
    answers start one character before their ``answer_start``.
    """
    if passage_words < 1:
        raise DataError(path, None, "passage_words", "must be >= 1")
    stride = stride or passage_words
    if not 1 <= stride <= passage_words:
        raise DataError(path, None, "stride", f"must be in [1, passage_words={passage_words}], got {stride}")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(path, None, "test_fraction", f"must be in (0, 1), got {test_fraction}")
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list) or not data["data"]:
        raise DataError(path, None, "data", "expected a SQuAD object with a non-empty list of articles")
    corpus: dict[str, Passage] = {}
    by_article: dict[str, list[QAExample]] = {}
    seen: set[str] = set()
    stats = {"articles": 0, "paragraphs": 0, "questions": 0, "impossible": 0, "boundary_answers": 0}
    stats["answers_realigned"] = 0
    for a, article in enumerate(data["data"]):
        where = f"data[{a}]"
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise DataError(path, None, f"{where}.paragraphs", "missing or not a list")
        key = str(article.get("document_id", paragraphs[0].get("document_id", a) if paragraphs else a))
        stats["articles"] += 1
        examples = by_article.setdefault(key, [])
        for j, para in enumerate(paragraphs):
            context = para.get("context") if isinstance(para, dict) else None
            if not isinstance(context, str) or not context.strip():
                raise DataError(path, None, f"{where}.paragraphs[{j}].context", "missing or empty")
            stats["paragraphs"] += 1
            title = str(article.get("title") or context.strip().splitlines()[0]).strip()[:200]
            spans = _windows(context, passage_words, stride)
            ids = [f"{key}-{j}-{n}" for n in range(len(spans))]
            for pid, (lo, hi) in zip(ids, spans, strict=True):
                if pid in corpus:
                    raise DataError(path, None, f"{where}.document_id", f"duplicate passage id {pid!r}")
                corpus[pid] = Passage(pid, context[lo:hi], title)
            for q in para.get("qas") or []:
                qid = str(q.get("id", "")) if isinstance(q, dict) else ""
                if not qid:
                    raise DataError(path, None, f"{where}.paragraphs[{j}].qas.id", "a question without an id")
                if qid in seen:
                    raise DataError(path, None, f"question {qid}", "duplicate question id")
                seen.add(qid)
                if not isinstance(q.get("question"), str) or not q["question"].strip():
                    raise DataError(path, None, f"question {qid}.question", "missing or empty")
                if q.get("is_impossible"):
                    stats["impossible"] += 1
                    continue
                answers = q.get("answers")
                if not isinstance(answers, list) or not answers:
                    raise DataError(path, None, f"question {qid}.answers", "missing or empty")
                positives: list[str] = []
                for n, ans in enumerate(answers):
                    text, start = (
                        (ans.get("text"), ans.get("answer_start")) if isinstance(ans, dict) else (None, None)
                    )
                    field = f"question {qid}.answers[{n}]"
                    if not isinstance(text, str) or not text.strip():
                        raise DataError(path, None, f"{field}.text", "missing or empty")
                    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < len(context):
                        raise DataError(
                            path, None, f"{field}.answer_start", f"{start!r} is not in the context"
                        )
                    if context[start : start + len(text)] != text:
                        near = _nearest(context, text, start, max(offset_tolerance, 8))
                        if near is None or abs(near - start) > offset_tolerance:
                            found = context[start : start + min(len(text), 40)]
                            hint = (
                                ""
                                if near is None
                                else f" (it starts at {near}: --offset-tolerance {abs(near - start)} re-anchors it)"
                            )
                            raise DataError(
                                path,
                                None,
                                f"{field}.answer_start",
                                f"{start} points at {found!r}, not at the answer text{hint}",
                            )
                        start = near
                        stats["answers_realigned"] += 1
                    hit = [
                        pid
                        for pid, (lo, hi) in zip(ids, spans, strict=True)
                        if lo < start + len(text) and start < hi
                    ]
                    stats["boundary_answers"] += len(hit) > 1 and not any(
                        lo <= start and start + len(text) <= hi for lo, hi in spans
                    )
                    positives += [p for p in hit if p not in positives]
                examples.append(
                    QAExample(
                        id=qid,
                        question=q["question"].strip(),
                        answer=answers[0]["text"].strip(),
                        contexts=tuple(corpus[p] for p in positives),
                        positive_ids=tuple(positives),
                        meta={"article": key},
                    )
                )
                stats["questions"] += 1
    with_questions = sorted(k for k, v in by_article.items() if v)
    if len(with_questions) < 2:
        raise DataError(path, None, "data", "need questions on at least 2 articles to split by article")
    n_test = min(len(with_questions) - 1, max(1, round(len(with_questions) * test_fraction)))
    test_articles = set(random.Random(seed).sample(with_questions, n_test))
    train = [e for k in with_questions if k not in test_articles for e in by_article[k]]
    test = [e for k in with_questions if k in test_articles for e in by_article[k]]
    stats.update(passages=len(corpus), train_articles=len(with_questions) - n_test, test_articles=n_test)
    stats.update(train_questions=len(train), test_questions=len(test))
    return corpus, train, test, stats


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
