"""The records ragtune reads and writes: passages, queries, training triplets and QA examples."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


def text_id(text: str) -> str:
    """A stable id for a passage given only by its text (``txt-`` + 16 hex digits of its SHA-1)."""
    return "txt-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Passage:
    """One retrievable unit of a corpus (BEIR: ``_id``, ``title``, ``text``)."""

    id: str
    text: str
    title: str = ""

    def full_text(self) -> str:
        """Title and text as one string, the form an encoder or BM25 indexes."""
        return f"{self.title}\n{self.text}" if self.title else self.text


@dataclass(frozen=True)
class Query:
    """A search query or question (BEIR ``queries.jsonl``: ``_id``, ``text``)."""

    id: str
    text: str


@dataclass(frozen=True)
class Negative:
    """A negative passage for contrastive training and where it came from (mining provenance)."""

    passage: Passage
    source: str | None = None  # "bm25", "dense", "given", ...
    rank: int | None = None  # 1-based rank in the miner's list
    score: float | None = None  # the miner's score


@dataclass(frozen=True)
class Triplet:
    """A training example for the retriever: a query, its positive passages, its negatives."""

    query: Query
    positives: tuple[Passage, ...]
    negatives: tuple[Negative, ...] = ()
    # A teacher's score of each passage by id (a cross-encoder's or an LM's; `retriever
    # score-triplets` writes them), for distillation losses; None when not scored.
    teacher: dict[str, float] | None = field(default=None, compare=False, hash=False)


@dataclass(frozen=True)
class QAExample:
    """A training or evaluation example for the generator.

    ``contexts`` are the passages shown with the question (gold or retrieved); ``positive_ids`` name
    the passages that contain the answer, when known.
    """

    id: str
    question: str
    answer: str
    contexts: tuple[Passage, ...] = ()
    positive_ids: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PreferencePair:
    """A preference pair for DPO: the same prompt (question + passages), a chosen and a rejected answer.

    ``kind`` says how it was made (``ragtune generator pairs``: ``closed_book``, ``distractors``,
    ``unanswerable``; anything for pairs from elsewhere)."""

    id: str
    question: str
    passages: tuple[Passage, ...]
    chosen: str
    rejected: str
    kind: str = ""


@dataclass(frozen=True)
class Prediction:
    """A generated answer to score: its reference and, optionally, the passage texts it was given."""

    id: str
    prediction: str
    reference: str
    contexts: list[str] | None = None
    decision: str | None = None  # gold yes/no/maybe (PubMedQA's final_decision), when the row has one
    answerable: bool | None = None  # False: asked with its gold passages removed (abstention check)
    question: str | None = None  # the question asked, when the row carries it (the checker reads it)
