"""What the joint loop holds between stages: the data, the retriever (encoders and index), the
generator (LM and adapter), and the checkpoint that saves all of them with the loop's progress."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ragtune import distributed as dist
from ragtune.data.io import load_qa, save_dir_atomically
from ragtune.data.schema import Passage, QAExample
from ragtune.e2e.config import E2EConfig
from ragtune.errors import UserError
from ragtune.generator.collator import gold_passages, load_corpus_arg
from ragtune.generator.prompt import PromptEncoder
from ragtune.generator.scoring import answer_logprobs
from ragtune.models import set_dropout

log = logging.getLogger(__name__)


class Data:
    """The corpus, training and evaluation questions, and each question's gold passage ids."""

    def __init__(self, cfg: E2EConfig):
        d = cfg.data
        if d.train is None or d.eval is None:
            raise UserError("data.train and data.eval must both be set (QA JSONL files, see data/README.md)")
        corpus = load_corpus_arg(d.corpus)
        self.train = load_qa(d.train, corpus)
        self.eval = load_qa(d.eval, corpus)
        if d.max_train:
            self.train = self.train[: d.max_train]
        if d.max_eval:
            self.eval = self.eval[: d.max_eval]
        if corpus is None:  # the pool: every context of the data
            corpus = {}
            for e in [*self.train, *self.eval]:
                for p in e.contexts:
                    corpus.setdefault(p.id, p)
        if not corpus:
            raise UserError("the corpus is empty: set data.corpus or give contexts in the QA files")
        self.corpus: dict[str, Passage] = corpus
        self.ids = list(corpus)
        for path, examples in ((d.train, self.train), (d.eval, self.eval)):
            if not examples:
                raise UserError(f"{path} holds no questions")
            for e in examples:
                if not self.gold_ids(e):
                    raise UserError(
                        f"{path}: example {e.id!r} names no gold passage in the corpus "
                        "(positive_ids or contexts): joint tuning needs them for the retrieval metrics"
                    )

    def gold_ids(self, e: QAExample) -> list[str]:
        ids = [p.id for p in gold_passages(e, self.corpus)] + list(e.positive_ids)
        return [i for i in dict.fromkeys(ids) if i in self.corpus]

    def gold(self, e: QAExample) -> list[Passage]:
        return [self.corpus[i] for i in self.gold_ids(e)]


class Retriever:
    """The query encoder, the passage encoder (the same model with ``mode=both``) and the index
    (an exact inner-product FAISS index over normalised passage vectors, with its version)."""

    def __init__(self, cfg: E2EConfig, data: Data, checkpoint: Path | None = None):
        from ragtune.retriever.model import load_encoder

        self.cfg, self.data = cfg, data
        r = cfg.retriever
        device = str(dist.device())
        start = str(checkpoint / "query_encoder") if checkpoint else (r.query_model or r.model)
        self.query = set_dropout(load_encoder(start, device), 0.0)
        self.query.eval()  # no dropout: eval mode also skips its mask work
        self.passage = self.query if r.mode == "both" else load_encoder(r.model, device)
        if r.mode == "query":
            self.passage.requires_grad_(False)
        self.row = {pid: i for i, pid in enumerate(data.ids)}
        self.bm25 = None  # built on first use by ranked()
        self.reranker = None  # retriever.reranker's cross-encoder, loaded on first use by ranked()
        if checkpoint is None:
            self.version = 0
            self.build_index()
        else:
            from ragtune.retriever.index import DenseIndex

            self.index = DenseIndex.load(checkpoint / "index")
            self.version = self.index.version
            self.vectors = self.index.index.reconstruct_n(0, self.index.index.ntotal)

    def _encode(self, model, texts: Sequence[str], max_length: int, progress: bool) -> np.ndarray:
        from ragtune.retriever.model import encode

        return encode(
            model, texts, max_length=max_length, precision=self.cfg.precision, show_progress=progress
        )

    def encode_passages(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        return self._encode(self.passage, texts, self.cfg.retriever.max_passage_length, progress)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(self.query, texts, self.cfg.retriever.max_query_length, False)

    def build_index(self) -> None:
        """Encode the corpus with the passage encoder and index it (exact search)."""
        from ragtune.retriever.index import DenseIndex

        texts = [p.full_text() for p in self.data.corpus.values()]
        self.vectors = self.encode_passages(texts, progress=True)
        self.index = DenseIndex.flat(self.vectors, self.data.ids)
        self.index.version = self.version

    def search(self, questions: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
        return self.index.search(self.encode_queries(questions), k)

    def ranked(
        self, questions: Sequence[str], k: int, method: str = "dense"
    ) -> list[list[tuple[str, float]]]:
        """The top ``k`` (passage id, score) per question by ``method``: ``dense`` (the index),
        ``bm25`` (built on first use) or ``hybrid``: with ``retriever.fusion=rrf`` the reciprocal-rank
        fusion (k=60) of both methods' top ``k``; with ``weighted`` the weighted sum
        (``retriever.dense_weight``) of their min-max normalised scores over both top-``max(k, 100)``
        lists, as ``retriever eval`` fuses (scores are then the fused ones). With
        ``retriever.reranker``, the top ``rerank_top_n`` by ``method`` are rescored by the
        cross-encoder (its logits) and ordered by it, the rest kept below them."""
        r = self.cfg.retriever
        if r.reranker is None:
            return self._ranked(questions, k, method)
        from ragtune.reranker.model import load_cross_encoder
        from ragtune.reranker.rerank import rerank_hits

        if self.reranker is None:
            self.reranker = load_cross_encoder(
                r.reranker, device=str(dist.device()), precision=self.cfg.precision, trained=True
            )
        hits = self._ranked(questions, max(k, r.rerank_top_n), method)
        reranked = rerank_hits(
            self.reranker,
            questions,
            hits,
            self.data.corpus,
            top_n=r.rerank_top_n,
            precision=self.cfg.precision,
        )
        return [h[:k] for h in reranked]

    def _ranked(self, questions: Sequence[str], k: int, method: str) -> list[list[tuple[str, float]]]:
        from ragtune.retriever.bm25 import BM25, hybrid_fusion

        if method == "dense":
            return self.search(questions, k)
        if method not in ("bm25", "hybrid"):
            raise ValueError(f"unknown retrieval method {method!r} (dense, bm25 or hybrid)")
        if self.bm25 is None:
            self.bm25 = BM25(self.data.ids, [p.full_text() for p in self.data.corpus.values()])
        r = self.cfg.retriever
        pool = max(k, 100) if method == "hybrid" and r.fusion == "weighted" else k
        lexical = self.bm25.search(list(questions), pool)
        if method == "bm25":
            return lexical
        dense = self.search(questions, pool)
        return [
            hybrid_fusion(dict(b), dict(h), r.fusion, r.dense_weight, depth=k)
            for b, h in zip(lexical, dense, strict=True)
        ]


class Generator:
    """The causal LM with its adapter, the tokenizer and the prompt encoder."""

    def __init__(self, cfg: E2EConfig, adapter: str | Path | None = None):
        from ragtune.generator.model import apply_peft, load_base, load_tokenizer, require_safetensors
        from ragtune.precision import store_frozen_linears

        g = cfg.generator
        self.cfg = cfg
        self.tokenizer = load_tokenizer(g.model.name, g.model.trust_remote_code)
        self.enc = PromptEncoder(self.tokenizer, g.prompt, g.model.max_length)
        base = load_base(g.model).to(dist.device())
        start = adapter or g.adapter
        from ragtune.generator import bottleneck

        if start is not None and bottleneck.is_bottleneck(start):
            self.model = bottleneck.load_bottlenecks(base, start, trainable=True)
        elif start is not None:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(base, str(require_safetensors(start)), is_trainable=True)
        else:
            self.model = apply_peft(base, g.peft)
        store_frozen_linears(self.model, cfg.precision)
        if g.compile:
            from ragtune.generator.model import compile_layers

            compile_layers(self.model)
        self.pad_id = self.tokenizer.pad_token_id

    def save(self, folder: Path) -> None:
        from ragtune.generator.model import save_model
        from ragtune.models import resolve_model

        save_model(self.model, self.tokenizer, folder, str(resolve_model(self.cfg.generator.model.name)))

    def inference_copy(self) -> torch.nn.Module:
        """A frozen copy of the model for scoring and answering: a LoRA / IA3 adapter merged into the
        weights (no adapter branch per projection) and the weights cast to bf16 where that is
        native (:func:`ragtune.precision.cast_for_inference`). Scoring the joint loop's candidates
        on COVID-QA ran 1.3x faster from it than through the unmerged adapter under autocast; the
        training model is left untouched."""
        from ragtune.generator.model import merged_for_inference
        from ragtune.precision import cast_for_inference

        # a deep copy drops generator.compile's compiled blocks (nn.Module.__getstate__): it runs eagerly
        model = merged_for_inference(copy.deepcopy(self.model), self.cfg.generator.peft.method)
        model.eval()
        return cast_for_inference(model, self.cfg.precision, next(model.parameters()).device)

    def score(self, questions: Sequence[str], passages: Sequence[Passage | None], answers: Sequence[str]):
        """``log p(answer | question, passage)`` per triple (``None``: no passage), summed over the
        answer's tokens and end of turn (:func:`ragtune.generator.scoring.answer_logprobs`, on
        :meth:`inference_copy`): ``(sums [N], counts [N])``. With several processes each scores its
        shard and every process gets all N."""
        triples = list(dist.shard(list(zip(questions, passages, answers, strict=True))))
        encoded = [self.enc.encode(q, [] if p is None else [p], a) for q, p, a in triples]
        g = self.cfg.generator
        sums, counts = [], []
        chunk = g.score_batch_size * 8
        model = self.inference_copy() if encoded else None
        for s in tqdm(
            range(0, len(encoded), chunk),
            desc="generator feedback",
            unit="chunk",
            leave=False,
            disable=not dist.is_main(),
        ):
            a, b = answer_logprobs(
                model, encoded[s : s + chunk], g.score_batch_size, self.pad_id, self.cfg.precision
            )
            sums += a.cpu().tolist()
            counts += b.cpu().tolist()
        del model
        pairs = dist.gather_objects(list(zip(sums, counts, strict=True)))
        return torch.tensor([a for a, _ in pairs]), torch.tensor([b for _, b in pairs])

    def answer(self, questions: Sequence[str], passages: Sequence[Sequence[Passage]]):
        """Generated answers, the passages each prompt kept, and the speed statistics (the main
        process's), from a merged copy of the model in the inference precision (bf16 where
        native, see :mod:`ragtune.precision`); with several processes each answers its shard and
        every process gets all of them."""
        pairs = list(dist.shard(list(zip(questions, passages, strict=True))))
        answers, kept, stats = [], [], {}
        if pairs:
            from ragtune.generator.config import GeneratorConfig
            from ragtune.generator.generate import Generator as Decoder

            g = self.cfg.generator
            model = self.inference_copy()
            gcfg = GeneratorConfig(
                model=g.model, prompt=g.prompt, generate=g.generate, precision=self.cfg.precision
            )
            decoder = Decoder(gcfg, model=model, tokenizer=self.tokenizer)
            prompts, kept = decoder.build([q for q, _ in pairs], [p for _, p in pairs])
            answers, stats = decoder.answer(prompts), decoder.stats
        gathered = dist.gather_objects(list(zip(answers, kept, strict=True)))
        return [a for a, _ in gathered], [k for _, k in gathered], stats


@dataclass
class LoopState:
    """The loop's progress (``checkpoint/state.json``): the last finished ``(round, stage)``, each
    round's record (stage statistics, metrics), the current round's retrieval hits, and the
    generator-flagged false negatives per question."""

    done: list[Any] | None = None
    rounds: dict[str, dict[str, Any]] = field(default_factory=dict)
    hits: dict[str, list[str]] = field(default_factory=dict)
    flagged: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path) -> LoopState:
        saved = json.loads((folder / "state.json").read_text())
        return cls(**{k: saved[k] for k in ("done", "rounds", "hits", "flagged")})


def save_checkpoint(folder: Path, state: LoopState, retriever: Retriever, generator: Generator) -> None:
    """The whole run state, written atomically: ``state.json``, ``query_encoder/`` (in ``mode=both``
    the passage encoder too: the same model), ``adapter/`` and ``index/``."""

    def write(tmp: Path) -> None:
        retriever.query.save(str(tmp / "query_encoder"))
        retriever.index.save(tmp / "index", version=retriever.version)
        generator.save(tmp / "adapter")
        (tmp / "state.json").write_text(json.dumps(asdict(state), indent=1))

    save_dir_atomically(folder, write)
