"""The joint-tuning configuration (``configs/e2e/*.yaml``): data, rounds, and each part's step."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ragtune.generator.config import GenerateConfig, ModelConfig, PeftConfig, PromptConfig, RaftConfig
from ragtune.precision import Precision


@dataclass
class DataConfig:
    """A corpus and QA JSONL files whose examples name their gold passages (``positive_ids`` into the
    corpus, or ``contexts``); ``ragtune data convert`` writes this layout."""

    corpus: Path | None = None  # corpus.jsonl or a BEIR folder holding one
    train: Path | None = None  # QA JSONL: the questions the loop trains on
    eval: Path | None = None  # QA JSONL: held-out questions, evaluated after every round
    max_train: int = 0  # use only the first N training questions (0: all)
    max_eval: int = 0  # use only the first N evaluation questions (0: all)

    def __post_init__(self) -> None:
        if self.max_train < 0 or self.max_eval < 0:
            raise ValueError("data.max_train and data.max_eval must be >= 0")


@dataclass
class RetrieverStep:
    """LM-supervised retrieval (REPLUG LSR / RA-DIT; Atlas PDist with ``loss=pdist``).

    ``mode=query`` trains the query encoder only, so the passage index stays valid; ``mode=both``
    trains one shared encoder for queries and passages, and the index is refreshed (``refresh``).
    """

    model: str = "sentence-transformers/all-MiniLM-L6-v2"  # passage encoder (and query encoder)
    query_model: str | None = None  # start the query encoder from here instead (mode=query)
    enabled: bool = True  # False: the retriever stays as loaded
    mode: Literal["query", "both"] = "query"
    loss: Literal["lsr", "pdist"] = "lsr"
    tau: float = 1.0  # temperature of the generator's target distribution
    gamma: float = 0.05  # temperature of the retriever's distribution (over cosine scores)
    include_gold: bool = True  # put a gold passage among the K candidates when retrieval missed it
    epochs: int = 1  # passes over the round's questions
    batch_size: int = 16
    lr: float = 2e-5
    max_query_length: int = 64
    max_passage_length: int = 256

    def __post_init__(self) -> None:
        if not self.tau > 0 or not self.gamma > 0:
            raise ValueError("retriever.tau and retriever.gamma must be > 0")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("retriever.epochs and retriever.batch_size must be >= 1")
        if self.lr <= 0:
            raise ValueError("retriever.lr must be > 0")
        if self.query_model is not None and self.mode == "both":
            raise ValueError("retriever.query_model needs mode=query (mode=both shares one encoder)")


@dataclass
class GeneratorStep:
    """LoRA (or any peft method) SFT on (question + the current retriever's passages -> answer)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    # RAFT contexts are always on here (raft.enabled and raft.distractors are not read): the
    # distractors are the current retriever's top non-gold passages.
    raft: RaftConfig = field(default_factory=lambda: RaftConfig(enabled=True, p_gold=0.8, num_distractors=2))
    generate: GenerateConfig = field(default_factory=lambda: GenerateConfig(max_new_tokens=64))
    enabled: bool = True  # False: the generator stays as loaded
    adapter: Path | None = None  # start from this trained adapter (e.g. of another run)
    epochs: int = 1  # passes over the round's questions
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 2e-4
    score_batch_size: int = 16  # examples per forward pass when scoring passages for the retriever

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "score_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"generator.{name} must be >= 1")
        if self.lr <= 0:
            raise ValueError("generator.lr must be > 0")


@dataclass
class RefreshConfig:
    """When the passage index is re-encoded (``retriever.mode=both`` only).

    After each retriever step a probe sample of passages is re-encoded and compared with its index
    vectors (mean cosine), and probe queries' top-k with the old and fresh index (overlap); the
    index is rebuilt when ``every`` rounds have passed or a measurement crosses its threshold.
    """

    every: int = 1  # rebuild every N rounds (0: only on drift)
    min_cosine: float | None = 0.99  # rebuild when the probe passages' mean cosine falls below this
    min_overlap: float | None = None  # rebuild when the probe queries' top-k overlap falls below this
    probe_passages: int = 256
    probe_queries: int = 64

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ValueError("refresh.every must be >= 0")
        if self.probe_passages < 1 or self.probe_queries < 1:
            raise ValueError("refresh.probe_passages and refresh.probe_queries must be >= 1")


@dataclass
class EvalConfig:
    """Held-out evaluation after round 0 (before any update) and after every round."""

    ks: list[int] = field(default_factory=lambda: [1, 3, 5, 10, 20])
    rounds: Literal["all", "last"] = "all"  # last: evaluate only after the final round
    correct_rouge_l: float = 0.3  # an answer counts as right at or above this ROUGE-L (error split)

    def __post_init__(self) -> None:
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError("eval.ks must be positive integers")


@dataclass
class FalseNegativeConfig:
    """Generator-checked negatives: a retrieved non-gold passage that raises the generator's
    likelihood of the gold answer at least ``ratio`` times as much as the gold passage does is a
    likely unlabelled positive, and is dropped from the distractors and negatives."""

    enabled: bool = True
    ratio: float = 0.9

    def __post_init__(self) -> None:
        if not self.ratio > 0:
            raise ValueError("false_negatives.ratio must be > 0")


@dataclass
class E2EConfig:
    """Top-level joint-tuning config."""

    data: DataConfig = field(default_factory=DataConfig)
    rounds: int = 2
    questions_per_round: int = 0  # a seeded sample of the training questions per round (0: all)
    top_k: int = 3  # passages retrieved per question: the generator's context and the LSR candidates
    retriever: RetrieverStep = field(default_factory=RetrieverStep)
    generator: GeneratorStep = field(default_factory=GeneratorStep)
    refresh: RefreshConfig = field(default_factory=RefreshConfig)
    false_negatives: FalseNegativeConfig = field(default_factory=FalseNegativeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: Path = Path("runs/e2e")
    seed: int = 0
    # auto: bf16 where it is native (AMX / AVX512-BF16 CPU, bf16 GPU), else fp32 (ragtune.precision);
    # one setting for every stage: training and scoring under autocast, encoding and generation in bf16.
    precision: Precision = "auto"

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ValueError("rounds must be >= 0 (0: evaluate the starting models only)")
        if self.top_k < 1:
            raise ValueError("top_k must be >= 1")
        if self.questions_per_round < 0:
            raise ValueError("questions_per_round must be >= 0 (0: all)")
