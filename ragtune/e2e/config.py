"""The joint-tuning configuration (``configs/e2e/*.yaml``): data, rounds, and each part's step."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ragtune.config import LoggingConfig, setting
from ragtune.generator.config import GenerateConfig, ModelConfig, PeftConfig, PromptConfig, RaftMix
from ragtune.precision import Precision

# Every field is `setting(default, help=...)`, which returns dataclasses.field(...): not a call in a default.


@dataclass
class DataConfig:
    """A corpus and QA JSONL files whose examples name their gold passages (``positive_ids`` into the
    corpus, or ``contexts``); ``ragtune data convert`` writes this layout."""

    corpus: Path | None = setting(None, help="corpus.jsonl or a BEIR folder holding one")
    train: Path | None = setting(None, help="QA JSONL: the questions the loop trains on")
    eval: Path | None = setting(None, help="QA JSONL: held-out questions, evaluated after every round")
    max_train: int = setting(0, help="use only the first N training questions (0: all)")
    max_eval: int = setting(0, help="use only the first N evaluation questions (0: all)")

    def __post_init__(self) -> None:
        if self.max_train < 0 or self.max_eval < 0:
            raise ValueError("data.max_train and data.max_eval must be >= 0")


def _check_optimiser(part: str, warmup_ratio: float, weight_decay: float, max_grad_norm: float) -> None:
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"{part}.warmup_ratio must be in [0, 1)")
    if weight_decay < 0 or max_grad_norm < 0:
        raise ValueError(f"{part}.weight_decay and {part}.max_grad_norm must be >= 0")


@dataclass
class RetrieverStep:
    """LM-supervised retrieval (REPLUG LSR / RA-DIT; Atlas PDist with ``loss=pdist``).

    ``mode=query`` trains the query encoder only, so the passage index stays valid; ``mode=both``
    trains one shared encoder for queries and passages, and the index is refreshed (``refresh``).
    """

    model: str = setting(
        "sentence-transformers/all-MiniLM-L6-v2", help="passage encoder (and query encoder): name or path"
    )
    query_model: str | None = setting(
        None,
        help="start the query encoder from here instead (mode=query; null: from model); to start "
        "from a trained bi-encoder set model to it, so that it encodes the passages too",
    )
    enabled: bool = setting(True, help="train the retriever (false: it stays as loaded)")
    mode: Literal["query", "both"] = setting(
        "query", help="train the query encoder only (the index stays valid) or one shared encoder (refreshed)"
    )
    loss: Literal["lsr", "pdist"] = setting(
        "lsr", help="LM-supervised retrieval (REPLUG LSR) or perplexity distillation (Atlas PDist)"
    )
    tau: float = setting(1.0, help="temperature of the generator's target distribution")
    gamma: float = setting(0.05, help="temperature of the retriever's distribution (over cosine scores)")
    include_gold: bool = setting(
        True, help="put a gold passage among the top_k candidates when retrieval missed it"
    )
    candidates: Literal["dense", "bm25", "hybrid"] = setting(
        "dense",
        help="training questions' passages (the LM's candidates and the distractors): the dense retriever's, "
        "BM25's, or their reciprocal-rank fusion (the LM then sees passages the dense model misses)",
    )
    fusion: Literal["rrf", "weighted"] = setting(
        "rrf",
        help="how `hybrid` (candidates, eval.passages) fuses BM25 and dense: reciprocal rank fusion of "
        "the two top-k lists, or a weighted sum of min-max normalised scores over the two top-100 lists",
    )
    dense_weight: float = setting(0.5, help="fusion=weighted: dense x w + BM25 x (1 - w)")
    reranker: str | None = setting(
        None,
        help="CrossEncoder folder or name (`ragtune reranker train`): the top rerank_top_n of candidates "
        "and of eval.passages are rescored by it, so the LM's candidates, the generator's top_k and the "
        "retrieval metrics follow its order (null: no reranking)",
    )
    rerank_top_n: int = setting(20, help="passages per question the reranker rescores (>= top_k)")
    epochs: int = setting(1, help="passes over the round's questions")
    batch_size: int = setting(16, help="questions per optimiser step")
    lr: float = setting(2e-5, help="AdamW learning rate")
    warmup_ratio: float = setting(
        0.0, help="linear warm-up over this share of a round's steps, then linear decay"
    )
    weight_decay: float = setting(0.01, help="AdamW decoupled weight decay")
    max_grad_norm: float = setting(0.0, help="clip the gradient norm to this (0: no clipping)")
    max_query_length: int = setting(64, help="tokens of a query; longer queries are truncated")
    max_passage_length: int = setting(256, help="tokens of a passage; longer ones are truncated")

    def __post_init__(self) -> None:
        if not self.tau > 0 or not self.gamma > 0:
            raise ValueError("retriever.tau and retriever.gamma must be > 0")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("retriever.epochs and retriever.batch_size must be >= 1")
        if self.lr <= 0:
            raise ValueError("retriever.lr must be > 0")
        _check_optimiser("retriever", self.warmup_ratio, self.weight_decay, self.max_grad_norm)
        if not 0.0 <= self.dense_weight <= 1.0:
            raise ValueError(f"retriever.dense_weight must be in [0, 1], got {self.dense_weight}")
        if self.rerank_top_n < 1:
            raise ValueError("retriever.rerank_top_n must be >= 1")
        if self.query_model is not None and self.mode == "both":
            raise ValueError("retriever.query_model needs mode=query (mode=both shares one encoder)")


@dataclass
class JointRaft(RaftMix):
    """RAFT contexts of the joint loop: the generator's mix, with 2 distractors by default."""

    num_distractors: int = setting(
        2, help="distractor passages shown per question (the retriever's top non-gold ones)"
    )


@dataclass
class JointGenerate(GenerateConfig):
    """Decoding of the joint loop's evaluation answers: short answers, 64 new tokens by default."""

    max_new_tokens: int = setting(64, help="most tokens generated per answer")


@dataclass
class GeneratorStep:
    """LoRA (or any peft method) SFT on (question + the current retriever's passages -> answer)."""

    model: ModelConfig = setting(factory=ModelConfig, help="the causal LM, as the generator's model section")
    prompt: PromptConfig = setting(factory=PromptConfig, help="the prompt, as the generator's prompt section")
    peft: PeftConfig = setting(
        factory=PeftConfig, help="the fine-tuning method, as the generator's peft section"
    )
    # always on here: the distractors are the current retriever's top non-gold passages, minus the
    # generator-flagged false negatives
    raft: JointRaft = setting(
        factory=JointRaft,
        help="RAFT contexts, always on: distractors are the current retriever's top non-gold passages",
    )
    generate: JointGenerate = setting(factory=JointGenerate, help="decoding of the evaluation answers")
    enabled: bool = setting(True, help="train the generator (false: it stays as loaded)")
    adapter: Path | None = setting(
        None, help="start from this trained adapter, e.g. of another run (null: a fresh one)"
    )
    epochs: int = setting(1, help="passes over the round's questions")
    batch_size: int = setting(4, help="examples per forward pass")
    grad_accum: int = setting(1, help="forward passes per optimiser step")
    lr: float = setting(2e-4, help="AdamW learning rate")
    warmup_ratio: float = setting(
        0.0, help="linear warm-up over this share of a round's steps, then linear decay"
    )
    weight_decay: float = setting(0.0, help="AdamW decoupled weight decay")
    max_grad_norm: float = setting(1.0, help="clip the gradient norm to this (0: no clipping)")
    score_batch_size: int = setting(
        16, help="examples per forward pass when scoring passages for the retriever"
    )
    compile: bool = setting(
        False,
        help="torch.compile each transformer block for the SFT stage (as generator train.compile; "
        "compiled once, reused every round)",
    )

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "score_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"generator.{name} must be >= 1")
        if self.lr <= 0:
            raise ValueError("generator.lr must be > 0")
        _check_optimiser("generator", self.warmup_ratio, self.weight_decay, self.max_grad_norm)


@dataclass
class RefreshConfig:
    """When the passage index is re-encoded (``retriever.mode=both`` only).

    After each retriever step a probe sample of passages is re-encoded and compared with its index
    vectors (mean cosine), and probe queries' top-k with the old and fresh index (overlap); the
    index is rebuilt when ``every`` rounds have passed or a measurement crosses its threshold.
    """

    every: int = setting(1, help="rebuild every N rounds (0: only on drift)")
    min_cosine: float | None = setting(
        0.99, help="rebuild when the probe passages' mean cosine falls below this (null: not checked)"
    )
    min_overlap: float | None = setting(
        None, help="rebuild when the probe queries' top-k overlap falls below this (null: not checked)"
    )
    probe_passages: int = setting(256, help="passages re-encoded to measure drift")
    probe_queries: int = setting(64, help="queries whose top-k is compared between old and fresh index")

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ValueError("refresh.every must be >= 0")
        if self.probe_passages < 1 or self.probe_queries < 1:
            raise ValueError("refresh.probe_passages and refresh.probe_queries must be >= 1")


@dataclass
class EvalConfig:
    """Held-out evaluation after round 0 (before any update) and after every round."""

    ks: list[int] = setting(factory=lambda: [1, 3, 5, 10, 20], help="retrieval metric cut-offs k")
    rounds: Literal["all", "last"] = setting(
        "all", help="evaluate after every round, or only after the final one (round 0 always)"
    )
    correct_rouge_l: float = setting(
        0.3, help="an answer counts as right at or above this ROUGE-L (error split)"
    )
    passages: Literal["dense", "bm25", "hybrid"] = setting(
        "dense",
        help="how held-out questions are retrieved (the retrieval metrics and the generator's top_k "
        "passages): the dense retriever, BM25, or their reciprocal-rank fusion",
    )
    unanswerable: bool = setting(
        False,
        help="also ask each held-out question with its gold passages removed (the top_k non-gold hits): "
        "abstain_rate and false_abstain_rate join the metrics",
    )
    faithfulness: str = setting(
        "lexical",
        help="`lexical`: the share of each answer its passages support (no model); or the folder of a "
        "trained faithfulness checker (`ragtune faithfulness train`): its model_faithfulness joins the "
        "lexical faithfulness in every round's metrics",
    )

    def __post_init__(self) -> None:
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError("eval.ks must be positive integers")
        if not self.faithfulness.strip():
            raise ValueError("eval.faithfulness must be `lexical` or a faithfulness checker folder")

    @property
    def checker(self) -> str | None:
        """The faithfulness checker folder, or None for lexical faithfulness only."""
        return None if self.faithfulness == "lexical" else self.faithfulness


@dataclass
class FalseNegativeConfig:
    """Generator-checked negatives: a retrieved non-gold passage that raises the generator's
    likelihood of the gold answer at least ``ratio`` times as much as the gold passage does is a
    likely unlabelled positive, and is dropped from the distractors and negatives."""

    enabled: bool = setting(
        True, help="drop generator-flagged false negatives from distractors and negatives"
    )
    ratio: float = setting(
        0.9, help="flag a passage raising the answer's likelihood >= ratio x the gold passage's gain"
    )

    def __post_init__(self) -> None:
        if not self.ratio > 0:
            raise ValueError("false_negatives.ratio must be > 0")


@dataclass
class E2EConfig:
    """Top-level joint-tuning config."""

    data: DataConfig = setting(factory=DataConfig, help="corpus and QA files with gold passages")
    rounds: int = setting(2, help="rounds after round 0 (0: evaluate the starting models only)")
    questions_per_round: int = setting(0, help="a seeded sample of the training questions per round (0: all)")
    top_k: int = setting(
        3, help="passages retrieved per question: the generator's context and the LSR candidates"
    )
    retriever: RetrieverStep = setting(factory=RetrieverStep, help="the retriever step (LM-supervised)")
    generator: GeneratorStep = setting(
        factory=GeneratorStep, help="the generator step (SFT on RAFT contexts)"
    )
    refresh: RefreshConfig = setting(factory=RefreshConfig, help="when the index is re-encoded (mode=both)")
    false_negatives: FalseNegativeConfig = setting(
        factory=FalseNegativeConfig, help="generator-checked negatives"
    )
    eval: EvalConfig = setting(factory=EvalConfig, help="held-out evaluation after every round")
    logging: LoggingConfig = setting(factory=LoggingConfig, help="where metrics go besides history.jsonl")
    output_dir: Path = setting(
        Path("runs/e2e"), help="folder for the run: checkpoints, rounds, report, models"
    )
    seed: int = setting(0, help="seed of every stage: each reseeds from (seed, round, stage)")
    # one setting for every stage: training and scoring under autocast, encoding and generation in bf16.
    precision: Precision = setting(
        "auto",
        help="auto: bf16 where native (AMX / AVX512-BF16 CPU, bf16 GPU), else fp32",
    )

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ValueError("rounds must be >= 0 (0: evaluate the starting models only)")
        if self.top_k < 1:
            raise ValueError("top_k must be >= 1")
        if self.retriever.reranker is not None and self.retriever.rerank_top_n < self.top_k:
            raise ValueError(
                f"retriever.rerank_top_n ({self.retriever.rerank_top_n}) must be >= top_k ({self.top_k})"
            )
        if self.questions_per_round < 0:
            raise ValueError("questions_per_round must be >= 0 (0: all)")
