"""From QA examples to training batches: RAFT-style context sampling and padding.

RAFT (Zhang et al., 2024, "RAFT: Adapting Language Model to Domain Specific RAG"): with probability
``p_gold`` the gold passages are shown among distractors, otherwise only distractors are, and the
target is the configured "the passages do not say" answer, so that the model learns both to use the
right passage and to refuse when none holds the answer.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ragtune.data.io import load_corpus, load_qa
from ragtune.data.schema import Passage, QAExample
from ragtune.errors import UserError
from ragtune.generator.config import DataConfig, RaftMix
from ragtune.generator.prompt import IGNORE_INDEX, EncodedExample
from ragtune.retriever.bm25 import BM25


def raft_contexts(
    gold: Sequence[Passage],
    distractors: Sequence[Passage],
    answer: str,
    no_answer: str,
    cfg: RaftMix,
    rng: random.Random,
) -> tuple[list[Passage], str, bool]:
    """The passages to show and the target for one example: ``(passages, target, gold_shown)``.

    Distractors that are gold passages are ignored; the shown passages are shuffled with ``rng``.
    """
    gold_ids = {p.id for p in gold}
    pool = [d for d in distractors if d.id not in gold_ids][: cfg.num_distractors]
    with_gold = rng.random() < cfg.p_gold
    passages = list(gold) + pool if with_gold else list(pool)
    rng.shuffle(passages)
    return passages, (answer if with_gold else no_answer), with_gold


def pad_batch(examples: Sequence[EncodedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (padding labelled IGNORE_INDEX),
    each ``[batch, longest]``. A batch whose labels are all IGNORE_INDEX is an error."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[row, :n] = torch.tensor(e.input_ids)
        attention[row, :n] = 1
        labels[row, :n] = torch.tensor(e.labels)
    if bool((labels == IGNORE_INDEX).all()):
        raise ValueError("a batch without any answer token: every label is masked")
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def load_corpus_arg(path: Path | None) -> dict[str, Passage] | None:
    """``data.corpus``: a corpus.jsonl file or a BEIR folder holding one (None: no corpus)."""
    if path is None:
        return None
    path = Path(path)
    return load_corpus(path / "corpus.jsonl" if path.is_dir() else path)


def load_questions(
    path: str | Path | None, corpus_path: Path | None, default: str, limit: int = 0
) -> tuple[list[QAExample], dict[str, Passage] | None]:
    """The QA examples of ``path`` (the first ``limit`` when set) and the corpus of ``corpus_path``;
    ``default`` names the config key that should have given a path when ``path`` is None."""
    if path is None:
        raise UserError(f"no questions: give --input or set {default}")
    corpus = load_corpus_arg(corpus_path)
    examples = load_qa(path, corpus)
    return (examples[:limit] if limit else examples), corpus


def gold_passages(example: QAExample, corpus: Mapping[str, Passage] | None) -> list[Passage]:
    """The example's own contexts, or its ``positive_ids`` looked up in ``corpus``."""
    if example.contexts:
        return list(example.contexts)
    if corpus is not None:
        return [corpus[p] for p in example.positive_ids if p in corpus]
    return []


class PassageSource:
    """The passages each question is shown (``data.passages``) and its RAFT distractors.

    BM25 (:class:`ragtune.retriever.bm25.BM25`) or the dense bi-encoder ``cfg.retriever`` (exact
    inner-product search, :class:`ragtune.retriever.index.DenseIndex`) runs over ``corpus``, or over
    every gold passage of ``examples`` when there is no corpus; each index is built once and serves
    both retrieval and distractor mining.
    """

    def __init__(
        self,
        cfg: DataConfig,
        corpus: Mapping[str, Passage] | None,
        pool: Sequence[QAExample],
        precision: str = "auto",
    ):
        self.cfg = cfg
        self.precision = precision  # of the dense encoder (ragtune.precision)
        self.corpus = dict(corpus) if corpus is not None else None
        self._bm25: BM25 | None = None
        self._dense = None
        self._reranker = None
        self._pool = pool

    @property
    def passages_by_id(self) -> dict[str, Passage]:
        if self.corpus is not None:
            return self.corpus
        out: dict[str, Passage] = {}
        for e in self._pool:
            for p in gold_passages(e, None):
                out.setdefault(p.id, p)
        return out

    def bm25(self) -> BM25:
        if self._bm25 is None:
            passages = self.passages_by_id
            if not passages:
                raise UserError("BM25 passages or RAFT distractors need data.corpus or contexts in the data")
            self._bm25 = BM25(list(passages), [p.full_text() for p in passages.values()])
        return self._bm25

    def dense(self):
        """``(encoder, index)`` over the passages, built on first use: a ``DenseIndex`` of the
        bi-encoder ``cfg.retriever``, or a ``ColbertIndex`` (exact MaxSim) when that names a saved
        late-interaction model (``retriever train model.kind=colbert`` writes one)."""
        if self._dense is None:
            from ragtune.retriever import colbert
            from ragtune.retriever.index import DenseIndex
            from ragtune.retriever.model import encode, load_encoder

            passages = self.passages_by_id
            if not passages:
                raise UserError("dense passages or distractors need data.corpus or contexts in the data")
            texts = [p.full_text() for p in passages.values()]
            if colbert.is_multi_vector(self.cfg.retriever):
                model = colbert.load_saved_colbert(self.cfg.retriever, precision=self.precision)
                vectors = colbert.encode_tokens(
                    model, texts, task="document", precision=self.precision, show_progress=False
                )
                self._dense = (model, colbert.ColbertIndex(vectors, list(passages)))
                return self._dense
            model = load_encoder(self.cfg.retriever, precision=self.precision)
            vectors = encode(model, texts, precision=self.precision, show_progress=False)
            self._dense = (model, DenseIndex.flat(vectors, list(passages)))
        return self._dense

    def reranker(self):
        """The cross-encoder ``cfg.reranker``, loaded on first use (a trained one: see
        :func:`ragtune.reranker.model.load_cross_encoder`)."""
        if self._reranker is None:
            from ragtune.reranker.model import load_cross_encoder

            self._reranker = load_cross_encoder(self.cfg.reranker, precision=self.precision, trained=True)
        return self._reranker

    def reranked(self, questions: Sequence[str], k: int, method: str) -> list[list[Passage]]:
        """The top ``cfg.rerank_top_n`` passages per question by ``method``, rescored by the
        cross-encoder; its top ``k``."""
        from ragtune.reranker.rerank import rerank_hits

        by_id = self.passages_by_id
        hits = self._hits(questions, max(k, self.cfg.rerank_top_n), method)
        ranked = rerank_hits(
            self.reranker(), questions, hits, by_id, top_n=self.cfg.rerank_top_n, precision=self.precision
        )
        return [[by_id[pid] for pid, _ in h[:k]] for h in ranked]

    def _hits(self, questions: Sequence[str], k: int, method: str) -> list[list[tuple[str, float]]]:
        if method == "dense":
            from ragtune.retriever.colbert import ColbertIndex, encode_tokens
            from ragtune.retriever.model import encode

            model, index = self.dense()
            if isinstance(index, ColbertIndex):
                queries = encode_tokens(
                    model, list(questions), task="query", precision=self.precision, show_progress=False
                )
                return index.search(queries, k)
            qvec = encode(
                model, list(questions), max_length=64, precision=self.precision, show_progress=False
            )
            return index.search(qvec, k)
        return self.bm25().search(list(questions), k)

    def retrieve(self, questions: Sequence[str], k: int, method: str = "bm25") -> list[list[Passage]]:
        """The top ``k`` passages per question by ``method`` (``bm25`` or ``dense``)."""
        by_id = self.passages_by_id
        return [[by_id[pid] for pid, _ in h] for h in self._hits(questions, k, method)]

    def shown(self, examples: Sequence[QAExample]) -> list[list[Passage]]:
        """The passages shown with each example at evaluation and generation time."""
        if self.cfg.passages == "none":
            return [[] for _ in examples]
        if self.cfg.passages in ("bm25", "dense") and self.cfg.reranker:
            return self.reranked([e.question for e in examples], self.cfg.top_k, self.cfg.passages)
        if self.cfg.passages in ("bm25", "dense"):
            return self.retrieve([e.question for e in examples], self.cfg.top_k, self.cfg.passages)
        out = [gold_passages(e, self.corpus) for e in examples]
        missing = [e.id for e, p in zip(examples, out) if not p]
        if missing:
            raise UserError(
                f"data.passages=given but example {missing[0]!r} has no contexts "
                "(give contexts or positive_ids with data.corpus, or use data.passages=bm25)"
            )
        return out

    def distractors(self, examples: Sequence[QAExample], n: int, method: str = "bm25") -> list[list[Passage]]:
        """Up to ``n`` top hits (``bm25`` or ``dense``) per question that are not gold passages."""
        if n == 0:
            return [[] for _ in examples]
        golds = [{p.id for p in gold_passages(e, self.corpus)} | set(e.positive_ids) for e in examples]
        width = n + max((len(g) for g in golds), default=0)
        hits = self.retrieve([e.question for e in examples], width, method)
        return [[p for p in h if p.id not in g][:n] for h, g in zip(hits, golds)]
