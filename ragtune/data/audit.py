"""Audit a dataset folder before training on it: duplicates, leakage between splits, broken rows.

    ragtune data audit DIR [--out DIR] [--near 0.8] [--max-words 512] [--strict]

``DIR`` is a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``), optionally
with ``qa_<split>.jsonl`` files beside it (what ``ragtune data convert`` writes). The audit reports:

- passages: empty ones, overlong ones (more than ``max_words`` words), exact duplicates (the same
  text after lower-casing and collapsing everything but letters and digits) and near duplicates;
- questions: duplicates inside a split, and questions of one split that repeat (exactly or nearly)
  a question of another split: **leakage**, the finding ``--strict`` fails on;
- a question's positive passage that is also a positive of another split's question (legitimate in
  some datasets, such as SciFact, where two claims cite one abstract; impossible when the split is
  by document);
- QA rows whose answer is not found in their positive passages (or given contexts), one by one or
  joined in order (an answer that crosses a passage boundary).

Near duplicates are found with MinHash locality-sensitive hashing (Broder 1997; the ``datasketch``
library): each text becomes a set of word shingles (3-grams for passages, 1- and 2-grams for the
short questions), LSH proposes the pairs whose estimated Jaccard similarity may reach ``near``, and
each proposed pair is kept only if its exact Jaccard similarity does. MinHash rather than embedding
cosine: it needs no model and no encoding pass, is deterministic, runs in near-linear time, and it
flags copied text, the kind that leaks answers, instead of paraphrases or passages on one topic.

Writes ``audit.json`` (counts and up to ``examples`` examples of each finding) and ``audit.md`` (the
same as tables) into the output folder, atomically.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ragtune.data.io import DataError, atomic_write_text, load_corpus, load_qa, load_qrels, load_queries

__all__ = ["AuditSettings", "audit", "near_duplicate_pairs", "normalise", "shingles"]

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


@dataclass(frozen=True)
class AuditSettings:
    """How strict the audit is. ``near``: the Jaccard similarity of word shingles from which two
    texts count as near duplicates; ``max_words``: longer passages are reported as overlong;
    ``num_perm``: MinHash permutations; ``examples``: how many examples each finding keeps."""

    near: float = 0.8
    max_words: int = 512
    num_perm: int = 128
    examples: int = 10
    seed: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.near <= 1.0:
            raise ValueError(f"near must be in (0, 1], got {self.near}")
        if self.max_words < 1 or self.num_perm < 16 or self.examples < 0:
            raise ValueError("max_words must be >= 1, num_perm >= 16 and examples >= 0")


def normalise(text: str) -> str:
    """Lower-cased words (letters and digits) joined by single spaces: the form compared for exact
    duplicates and answer matching."""
    return " ".join(_WORD.findall(text.lower()))


def shingles(text: str, sizes: Sequence[int]) -> set[str]:
    """The set of word n-grams of ``text`` (normalised) for each n in ``sizes``; a text shorter than
    every n gives its whole normalised text as its one shingle (an empty text, no shingle)."""
    words = normalise(text).split()
    out = {" ".join(words[i : i + n]) for n in sizes for i in range(len(words) - n + 1)}
    return out or ({" ".join(words)} if words else set())


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def near_duplicate_pairs(
    left: Mapping[str, set[str]],
    right: Mapping[str, set[str]] | None,
    settings: AuditSettings,
    desc: str = "near duplicates",
) -> list[tuple[str, str, float]]:
    """Pairs ``(left id, right id, Jaccard)`` with Jaccard >= ``settings.near`` over the shingle sets,
    best first. With ``right=None`` the pairs are within ``left`` (each pair once, ids in order);
    exact duplicates (Jaccard 1) are included. Candidates come from MinHash LSH; each is confirmed
    with its exact Jaccard, so a pair is never reported above its true similarity."""
    from datasketch import MinHash, MinHashLSH

    def hashes(sets: Mapping[str, set[str]]) -> dict[str, Any]:
        keys = [k for k, s in sets.items() if s]
        data = ([t.encode("utf-8") for t in sets[k]] for k in keys)
        return dict(
            zip(keys, MinHash.bulk(data, num_perm=settings.num_perm, seed=settings.seed), strict=True)
        )

    index_sets = left if right is None else right
    indexed = hashes(index_sets)
    lsh = MinHashLSH(threshold=settings.near, num_perm=settings.num_perm)
    for key, mh in indexed.items():
        lsh.insert(key, mh)
    probes = indexed if right is None else hashes(left)
    pairs: dict[tuple[str, str], float] = {}
    for key, mh in tqdm(probes.items(), desc=desc, unit="text", leave=False, disable=len(probes) < 5000):
        for other in lsh.query(mh):
            if right is None:
                if other == key:
                    continue
                pair = (key, other) if key < other else (other, key)
            else:
                pair = (key, other)
            if pair in pairs:
                continue
            sim = jaccard(left[pair[0]], index_sets[pair[1]])
            if sim >= settings.near:
                pairs[pair] = sim
    return sorted(((a, b, s) for (a, b), s in pairs.items()), key=lambda t: (-t[2], t[0], t[1]))


def _groups(keys: Mapping[str, str]) -> list[list[str]]:
    """Ids sharing one value (of two or more), largest groups first."""
    by: dict[str, list[str]] = defaultdict(list)
    for k, v in keys.items():
        if v:
            by[v].append(k)
    return sorted((g for g in by.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))


def _splits(folder: Path) -> list[str]:
    names = {p.stem for p in (folder / "qrels").glob("*.tsv")}
    names |= {p.stem[3:] for p in folder.glob("qa_*.jsonl")}
    # training splits first and test last, so that a pair reads "train/test"
    return sorted(names, key=lambda n: (0 if n.startswith("train") else 2 if n.startswith("test") else 1, n))


def audit(folder: str | Path, out: str | Path | None = None, settings: AuditSettings | None = None) -> dict:
    """Audit ``folder`` (see the module docstring); write ``audit.json`` and ``audit.md`` into
    ``out`` (default: ``folder``) and return the report. Raises :class:`DataError` on unreadable input."""
    folder, settings = Path(folder), settings or AuditSettings()
    if not folder.is_dir():
        raise DataError(folder, None, None, "dataset folder not found")
    corpus = load_corpus(folder / "corpus.jsonl", allow_empty_text=True)
    queries = load_queries(folder / "queries.jsonl") if (folder / "queries.jsonl").exists() else {}
    splits = _splits(folder)
    if not splits:
        raise DataError(folder, None, None, "no split found: expected qrels/<split>.tsv or qa_<split>.jsonl")
    n_ex = settings.examples

    # ---- passages
    words = {pid: len(normalise(p.full_text()).split()) for pid, p in corpus.items()}
    normalised = {pid: normalise(p.text) for pid, p in corpus.items()}
    empty = [pid for pid, t in normalised.items() if not t]  # blank or no word at all
    overlong = [pid for pid, n in words.items() if n > settings.max_words]
    exact = _groups(normalised)
    passage_sets = {pid: shingles(t, (3,)) for pid, t in normalised.items()}  # normalise() is idempotent
    near = [t for t in near_duplicate_pairs(passage_sets, None, settings, "passages") if t[2] < 1.0]

    # ---- questions per split: qrels (texts from queries.jsonl) and QA rows
    questions: dict[str, dict[str, str]] = {}
    positives: dict[str, dict[str, set[str]]] = {}
    qa_checks: dict[str, dict[str, Any]] = {}
    for split in splits:
        texts: dict[str, str] = {}
        pos: dict[str, set[str]] = defaultdict(set)
        qrels_path = folder / "qrels" / f"{split}.tsv"
        if qrels_path.exists():
            for qid, rels in load_qrels(qrels_path, queries or None, corpus).items():
                if qid in queries:
                    texts[qid] = queries[qid].text
                pos[qid] |= {d for d, g in rels.items() if g > 0}
        qa_path = folder / f"qa_{split}.jsonl"
        if qa_path.exists():
            rows = load_qa(qa_path, corpus)
            for e in rows:
                texts.setdefault(e.id, e.question)
                pos[e.id] |= set(e.positive_ids)
            qa_checks[split] = _answers_found(rows, corpus, n_ex)
        questions[split], positives[split] = texts, dict(pos)

    question_sets = {s: {q: shingles(t, (1, 2)) for q, t in qs.items()} for s, qs in questions.items()}
    within = {}
    for split, qs in questions.items():
        dup = _groups({q: normalise(t) for q, t in qs.items()})
        nd = [t for t in near_duplicate_pairs(question_sets[split], None, settings, split) if t[2] < 1.0]
        within[split] = {
            "questions": len(qs),
            "exact_duplicate_groups": len(dup),
            "near_duplicate_pairs": len(nd),
            "examples": [{"ids": g, "text": qs[g[0]]} for g in dup[:n_ex]]
            + [{"ids": [a, b], "jaccard": round(s, 3), "texts": [qs[a], qs[b]]} for a, b, s in nd[:n_ex]],
        }

    leakage, shared = {}, {}
    for a, b in combinations(splits, 2):
        qa, qb = questions[a], questions[b]
        by_text = defaultdict(list)
        for q, t in qa.items():
            by_text[normalise(t)].append(q)
        by_text.pop("", None)  # a question with no word matches nothing
        exact_pairs = [(x, y) for y, t in qb.items() for x in by_text.get(normalise(t), [])]
        near_pairs = [
            t
            for t in near_duplicate_pairs(question_sets[b], question_sets[a], settings, f"{a}/{b}")
            if t[2] < 1.0
        ]
        leakage[f"{a}/{b}"] = {
            "exact": len(exact_pairs),
            "near": len(near_pairs),
            "examples": [{a: x, b: y, "text": qa[x]} for x, y in exact_pairs[:n_ex]]
            + [
                {a: x, b: y, "jaccard": round(s, 3), "texts": [qa[x], qb[y]]} for y, x, s in near_pairs[:n_ex]
            ],
        }
        pa = set().union(*positives[a].values()) if positives[a] else set()
        both = {d for ds in positives[b].values() for d in ds} & pa
        shared[f"{a}/{b}"] = {
            "passages": len(both),
            f"{b}_questions": sum(1 for ds in positives[b].values() if ds & pa),
            "examples": sorted(both)[:n_ex],
        }

    report = {
        "folder": str(folder),
        "settings": {
            "near_jaccard": settings.near,
            "passage_shingles": "word 3-grams",
            "question_shingles": "word 1- and 2-grams",
            "num_perm": settings.num_perm,
            "max_words": settings.max_words,
            "seed": settings.seed,
        },
        "corpus": {
            "passages": len(corpus),
            "words_median": sorted(words.values())[len(words) // 2],
            "words_max": max(words.values()),
            "empty": {"count": len(empty), "examples": empty[:n_ex]},
            "overlong": {"count": len(overlong), "examples": overlong[:n_ex]},
            "exact_duplicates": {
                "groups": len(exact),
                "passages": sum(len(g) for g in exact),
                "examples": exact[:n_ex],
            },
            "near_duplicates": {
                "pairs": len(near),
                "examples": [{"ids": [x, y], "jaccard": round(s, 3)} for x, y, s in near[:n_ex]],
            },
        },
        "splits": within,
        "leakage": leakage,
        "shared_positives": shared,
        "qa": qa_checks,
        "leakage_found": any(v["exact"] or v["near"] for v in leakage.values()),
    }
    out = Path(out) if out is not None else folder
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "audit.json", json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    atomic_write_text(out / "audit.md", markdown(report))
    return report


def _answers_found(rows: Iterable, corpus: Mapping, n_ex: int) -> dict[str, Any]:
    """QA rows whose normalised answer is inside none of their positive passages (or, without
    positives, their given contexts), nor inside those passages joined in order."""
    checked, missing, without = 0, [], []
    for e in rows:
        texts = [corpus[p].text for p in e.positive_ids if p in corpus] or [c.text for c in e.contexts]
        if not texts:
            without.append(e.id)
            continue
        checked += 1
        answer = normalise(e.answer)
        # one passage, or the positives joined in order (an answer across a passage boundary)
        if not answer or not any(answer in normalise(t) for t in [*texts, " ".join(texts)]):
            missing.append({"id": e.id, "answer": e.answer[:200]})
    return {
        "examples": checked + len(without),
        "checked": checked,
        "answer_not_in_passages": len(missing),
        "without_passages": len(without),
        "missing_examples": missing[:n_ex],
    }


def markdown(report: Mapping[str, Any]) -> str:
    """``audit.md``: the report's counts as tables."""
    c = report["corpus"]
    lines = [
        f"# Data audit: {report['folder']}",
        "",
        f"Near duplicates: Jaccard >= {report['settings']['near_jaccard']} over word shingles (MinHash LSH, "
        "each pair confirmed exactly).",
        "",
        "| passages | median words | max words | empty | overlong | exact-duplicate groups | near-duplicate pairs |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {c['passages']} | {c['words_median']} | {c['words_max']} | {c['empty']['count']} | "
        f"{c['overlong']['count']} | {c['exact_duplicates']['groups']} ({c['exact_duplicates']['passages']} passages) "
        f"| {c['near_duplicates']['pairs']} |",
        "",
        "| split | questions | duplicate groups | near-duplicate pairs |",
        "| --- | --- | --- | --- |",
    ]
    for split, s in report["splits"].items():
        lines.append(
            f"| {split} | {s['questions']} | {s['exact_duplicate_groups']} | {s['near_duplicate_pairs']} |"
        )
    if report["leakage"]:
        lines += [
            "",
            "| splits | leaked questions: exact | near | shared positive passages | questions with one |",
            "| --- | --- | --- | --- | --- |",
        ]
        for pair, v in report["leakage"].items():
            sh = report["shared_positives"][pair]
            n_q = next(v2 for k2, v2 in sh.items() if k2.endswith("_questions"))
            lines.append(f"| {pair} | {v['exact']} | {v['near']} | {sh['passages']} | {n_q} |")
    if report["qa"]:
        lines += [
            "",
            "| QA file | rows | answer not in its passages | without passages |",
            "| --- | --- | --- | --- |",
        ]
        for split, q in report["qa"].items():
            lines.append(
                f"| qa_{split}.jsonl | {q['examples']} | {q['answer_not_in_passages']} | {q['without_passages']} |"
            )
    verdict = "LEAKAGE: questions repeat across splits" if report["leakage_found"] else "no leakage found"
    lines += ["", f"**{verdict}.**", ""]
    return "\n".join(lines)
