"""Synthetic questions for a corpus without labels: ``ragtune data synth-queries``.

    ragtune data synth-queries --corpus DIR --out DIR [--per-passage 1] [--max-passages 0]
        [--few-shot FILE] [--filter bm25|dense|both|none] [--filter-k 20] [--answers] ...

The generator (the packaged SmolLM2-135M-Instruct by default, or any causal LM name, full model
folder or peft adapter folder) is asked, in its chat template, for a question that each passage
answers; ``--few-shot`` puts example (passage, question) turns before it. With ``--per-passage N``
above 1 it samples (``--temperature``, ``--top-p``); with 1 and ``--greedy`` it decodes greedily.
Each question is then

1. cleaned: its first line, without a leading "Question:", a preamble before a colon, or
   quotes; fewer than ``min_words`` words, or more than ``max_words``, and it is dropped;
2. deduplicated: questions equal after lower-casing and dropping punctuation are kept once, and
   with ``near`` < 1 so are near duplicates (MinHash over word 1- and 2-grams, as the data audit
   finds them);
3. round-trip filtered (Promptagator, Dai et al. 2022; InPars): kept only if its own passage ranks
   within the top ``filter_k`` of the corpus for it, by BM25, by the dense retriever, or by both;
   ``none`` keeps every question. Each kept question records the ranks the filter computed.

Every kept question keeps its provenance: passage id, model, prompt template, few-shot file,
sampling settings, seed, and the filter ranks. The output folder is a BEIR folder usable by
``retriever mine`` / ``retriever train`` (``corpus.jsonl``, ``queries.jsonl`` with the provenance
under ``metadata``, ``qrels/train.tsv``) and, with ``--answers``, ``qa_train.jsonl``: each
question answered by the same generator from its passage (the RAG prompt of ``generator
train``), usable by ``generator train`` and ``e2e train``. ``synth_stats.json`` counts what each
step dropped and the questions generated per second. The folder is written atomically.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ragtune.data.io import DataError, load_corpus, read_jsonl, save_dir_atomically, write_jsonl
from ragtune.data.schema import Passage
from ragtune.errors import UserError

__all__ = [
    "SynthSettings",
    "clean_question",
    "prompt_messages",
    "round_trip_ranks",
    "synth_queries",
    "write_synth_folder",
]

INSTRUCTION = (
    "Write one question that the passage below answers. Reply with the question only.\n\nPassage:\n{passage}"
)
FILTERS = ("none", "bm25", "dense", "both")
_PREFIX = re.compile(r"^\s*(?:q(?:uestion)?\s*\d*\s*[:.)-]\s*)", re.IGNORECASE)


@dataclass(frozen=True)
class SynthSettings:
    """What ``synth-queries`` generates and keeps (the command's flags)."""

    model: str = "SmolLM2-135M-Instruct"
    per_passage: int = 1
    max_passages: int = 0
    few_shot: Path | None = None
    greedy: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 48
    max_passage_tokens: int = 256
    batch_size: int = 16
    min_words: int = 3
    max_words: int = 48
    near: float = 1.0
    filter: str = "bm25"
    filter_k: int = 20
    retriever: str = "sentence-transformers/all-MiniLM-L6-v2"
    answers: bool = False
    seed: int = 0
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.per_passage < 1:
            raise UserError(f"--per-passage must be >= 1, got {self.per_passage}")
        if self.greedy and self.per_passage > 1:
            raise UserError("--greedy decodes one question per passage: use sampling for --per-passage > 1")
        if self.filter not in FILTERS:
            raise UserError(f"--filter must be one of {', '.join(FILTERS)}, got {self.filter!r}")
        if self.filter_k < 1:
            raise UserError(f"--filter-k must be >= 1, got {self.filter_k}")
        if not 0 < self.near <= 1:
            raise UserError(f"--near must be in (0, 1], got {self.near}")
        if self.max_passages < 0 or self.min_words < 1 or self.max_words < self.min_words:
            raise UserError("--max-passages >= 0 and 1 <= --min-words <= --max-words are required")


def load_few_shot(path: Path) -> list[tuple[str, str]]:
    """(passage, question) examples from JSONL rows with ``passage`` and ``question``."""
    out = []
    for line, obj in read_jsonl(path):
        for key in ("passage", "question"):
            if not isinstance(obj.get(key), str) or not obj[key].strip():
                raise DataError(path, line, key, "expected a non-empty string")
        out.append((obj["passage"].strip(), obj["question"].strip()))
    if not out:
        raise DataError(path, None, None, "no few-shot examples")
    return out


def prompt_messages(passage: str, few_shot: Sequence[tuple[str, str]] = ()) -> list[dict[str, str]]:
    """The chat turns asking for a question about ``passage``, after the few-shot turns."""
    messages = []
    for p, q in few_shot:
        messages += [
            {"role": "user", "content": INSTRUCTION.format(passage=p)},
            {"role": "assistant", "content": q},
        ]
    return [*messages, {"role": "user", "content": INSTRUCTION.format(passage=passage)}]


def clean_question(text: str, min_words: int, max_words: int) -> str | None:
    """The question in a generated reply: its first non-empty line without a "Question:" label, a
    preamble before a colon ("Here is a question: ...?") or surrounding quotes; None when it has
    fewer than ``min_words`` or more than ``max_words`` words."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    q = _PREFIX.sub("", lines[0]).strip()
    head, sep, tail = q.rpartition(": ")
    if (
        sep and "?" in tail and "?" not in head and tail[:1].isupper()
    ):  # "The answer to this question would be: What ...?"
        q = tail
    q = q.strip().strip("\"'“”").strip()
    n = len(q.split())
    return q if min_words <= n <= max_words else None


def round_trip_ranks(
    questions: Sequence[str],
    sources: Sequence[str],
    corpus: Mapping[str, Passage],
    method: str,
    k: int,
    retriever: str = "sentence-transformers/all-MiniLM-L6-v2",
    precision: str = "auto",
) -> list[int | None]:
    """The 1-based rank of each question's source passage among the corpus's top ``k`` for it by
    ``method`` (``bm25`` or ``dense``); None when it is not in the top ``k``."""
    ids = list(corpus)
    texts = [p.full_text() for p in corpus.values()]
    if method == "bm25":
        from ragtune.retriever.bm25 import BM25

        hits = [[pid for pid, _ in h] for h in BM25(ids, texts).search(list(questions), k)]
    elif method == "dense":
        import numpy as np

        from ragtune.retriever.model import encode, load_encoder

        model = load_encoder(retriever, precision=precision)
        p = encode(model, texts, precision=precision, show_progress=False)
        q = encode(model, list(questions), max_length=64, precision=precision, show_progress=False)
        top = np.argsort(-(q @ p.T), axis=1, kind="stable")[:, :k]
        hits = [[ids[j] for j in row] for row in top]
    else:
        raise ValueError(f"unknown round-trip method {method!r}")
    return [h.index(s) + 1 if s in h else None for h, s in zip(hits, sources, strict=True)]


def _near_duplicates(rows: list[dict[str, Any]], near: float, seed: int) -> set[int]:
    """Indices of rows whose question nearly repeats an earlier kept one (MinHash, 1-2-grams)."""
    from ragtune.data.audit import AuditSettings, near_duplicate_pairs, shingles

    sets = {str(i): shingles(r["text"], (1, 2)) for i, r in enumerate(rows)}
    pairs = near_duplicate_pairs(
        sets, None, AuditSettings(near=near, seed=seed), desc="near-duplicate questions"
    )
    dropped: set[int] = set()
    for first, second in sorted(tuple(sorted((int(a), int(b)))) for a, b, _ in pairs):
        if first not in dropped:
            dropped.add(second)
    return dropped


def synth_queries(corpus_path: str | Path, out: str | Path, s: SynthSettings) -> dict[str, Any]:
    """Generate, clean, deduplicate and filter questions for the passages of ``corpus_path`` (a
    corpus.jsonl or a BEIR folder holding one) and write the folder ``out``; returns the stats."""
    import torch

    from ragtune.data.audit import normalise
    from ragtune.generator.config import GenerateConfig, GeneratorConfig, ModelConfig
    from ragtune.generator.generate import Generator, generate_ids
    from ragtune.generator.model import is_adapter
    from ragtune.precision import hardware

    corpus_path = Path(corpus_path)
    corpus = load_corpus(corpus_path / "corpus.jsonl" if corpus_path.is_dir() else corpus_path)
    few_shot = load_few_shot(s.few_shot) if s.few_shot else []
    pids = list(corpus)
    if s.max_passages and s.max_passages < len(pids):
        pids = sorted(random.Random(s.seed).sample(pids, s.max_passages), key=pids.index)

    adapter = Path(s.model) if Path(s.model).is_dir() and is_adapter(s.model) else None
    base = s.model
    if adapter is not None:
        base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    gen = Generator(
        GeneratorConfig(model=ModelConfig(name=base), precision=s.precision),
        path=adapter,  # a full model folder loads as the model name itself
    )
    tok = gen.tokenizer
    if not getattr(tok, "chat_template", None):
        raise UserError(f"{s.model}: synth-queries needs an instruction model with a chat template")

    def passage_text(p: Passage) -> str:
        ids = tok(p.full_text(), add_special_tokens=False)["input_ids"][: s.max_passage_tokens]
        return tok.decode(ids).strip()

    prompts, sources = [], []
    for pid in pids:
        rendered = tok.apply_chat_template(
            prompt_messages(passage_text(corpus[pid]), few_shot), tokenize=False, add_generation_prompt=True
        )
        ids = tok(rendered, add_special_tokens=False)["input_ids"]
        prompts += [ids] * s.per_passage
        sources += [pid] * s.per_passage
    sampling = {
        "do_sample": not s.greedy,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "max_new_tokens": s.max_new_tokens,
    }
    torch.manual_seed(s.seed)
    new, speed = generate_ids(
        gen.model,
        prompts,
        GenerateConfig(batch_size=s.batch_size, **sampling),
        gen.enc.end_ids,
        tok.pad_token_id,
    )
    replies = [tok.decode(r, skip_special_tokens=True) for r in new]

    stats: dict[str, Any] = {
        "passages": len(pids),
        "generated": len(replies),
        "generate_seconds": round(speed["seconds"], 2),
        "questions_per_s": round(len(replies) / speed["seconds"], 3) if speed["seconds"] else 0.0,
    }
    rows, seen, malformed, duplicates = [], set(), 0, 0
    for reply, pid in zip(replies, sources, strict=True):
        q = clean_question(reply, s.min_words, s.max_words)
        if q is None:
            malformed += 1
            continue
        key = normalise(q)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        rows.append({"text": q, "passage_id": pid, "reply": reply})
    near = _near_duplicates(rows, s.near, s.seed) if s.near < 1 and rows else set()
    rows = [r for i, r in enumerate(rows) if i not in near]
    stats.update(malformed=malformed, duplicates=duplicates, near_duplicates=len(near))

    started = time.perf_counter()
    methods = {"none": [], "bm25": ["bm25"], "dense": ["dense"], "both": ["bm25", "dense"]}[s.filter]
    for method in methods:
        ranks = (
            round_trip_ranks(
                [r["text"] for r in rows],
                [r["passage_id"] for r in rows],
                corpus,
                method,
                s.filter_k,
                s.retriever,
                s.precision,
            )
            if rows
            else []
        )
        for r, rank in zip(rows, ranks, strict=True):
            r[f"{method}_rank"] = rank
    kept = [r for r in rows if all(r.get(f"{m}_rank") is not None for m in methods)]
    stats.update(
        filter_seconds=round(time.perf_counter() - started, 2),
        filtered_out=len(rows) - len(kept),
        kept=len(kept),
    )
    if not kept:
        raise UserError(
            f"no synthetic question survived ({json.dumps(stats)}): try --filter none, a larger "
            "--filter-k or more --per-passage samples"
        )

    provenance = {
        "model": s.model,
        "prompt": INSTRUCTION,
        "few_shot": str(s.few_shot) if s.few_shot else None,
        "sampling": {"do_sample": False, "max_new_tokens": s.max_new_tokens} if s.greedy else sampling,
        "seed": s.seed,
        "filter": s.filter,
        "filter_k": s.filter_k,
        "retriever": s.retriever if s.filter in ("dense", "both") else None,
    }
    queries = []
    for i, r in enumerate(kept):
        queries.append(
            {
                "_id": f"synth-{i}",
                "text": r["text"],
                "metadata": {
                    **provenance,
                    "passage_id": r["passage_id"],
                    "reply": r["reply"],
                    "bm25_rank": r.get("bm25_rank"),
                    "dense_rank": r.get("dense_rank"),
                },
            }
        )
    qa = []
    if s.answers:
        started = time.perf_counter()
        answer_cfg = GenerateConfig(batch_size=s.batch_size, max_new_tokens=s.max_new_tokens)
        built, _ = gen.build(
            [q["text"] for q in queries], [[corpus[q["metadata"]["passage_id"]]] for q in queries]
        )
        answers = gen.answer(built, answer_cfg)
        stats["answer_seconds"] = round(time.perf_counter() - started, 2)
        for q, a in zip(queries, answers, strict=True):
            if not a.strip():
                continue
            qa.append(
                {
                    "id": q["_id"],
                    "question": q["text"],
                    "answer": a.strip(),
                    "contexts": [q["metadata"]["passage_id"]],
                    "positive_ids": [q["metadata"]["passage_id"]],
                    "provenance": {**q["metadata"], "answer_model": s.model, "answer_decoding": "greedy"},
                }
            )
        stats["answers"] = len(qa)
    stats["hardware"] = hardware(s.precision)
    stats["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(s).items()}

    write_synth_folder(out, corpus, queries, qa if s.answers else None, stats)
    return stats


def write_synth_folder(
    out: str | Path,
    corpus: Mapping[str, Passage],
    queries: Sequence[Mapping[str, Any]],
    qa: Sequence[Mapping[str, Any]] | None = None,
    stats: Mapping[str, Any] | None = None,
) -> None:
    """Write, atomically, the BEIR folder of synthetic ``queries`` (rows with ``_id``, ``text`` and
    ``metadata.passage_id``): ``corpus.jsonl``, ``queries.jsonl``, ``qrels/train.tsv`` (each query's
    passage, grade 1), and ``qa_train.jsonl`` / ``synth_stats.json`` when given."""

    def write(tmp: Path) -> None:
        write_jsonl(
            tmp / "corpus.jsonl", ({"_id": p.id, "title": p.title, "text": p.text} for p in corpus.values())
        )
        write_jsonl(tmp / "queries.jsonl", queries)
        (tmp / "qrels").mkdir()
        (tmp / "qrels" / "train.tsv").write_text(
            "query-id\tcorpus-id\tscore\n"
            + "".join(f"{q['_id']}\t{q['metadata']['passage_id']}\t1\n" for q in queries)
        )
        if qa is not None:
            write_jsonl(tmp / "qa_train.jsonl", qa)
        if stats is not None:
            (tmp / "synth_stats.json").write_text(json.dumps(stats, indent=1) + "\n")

    save_dir_atomically(Path(out), write)
