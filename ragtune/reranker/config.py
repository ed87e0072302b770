"""The cross-encoder reranker's configuration: model, data, training and reranking."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ragtune.config import LoggingConfig, setting
from ragtune.precision import Precision
from ragtune.retriever.config import DEFAULT_RETRIEVER

# Every field is `setting(default, help=...)`, which returns dataclasses.field(...): not a call in a default.

RerankLoss = Literal["bce", "listwise", "margin_mse"]


@dataclass
class ModelConfig:
    """The cross-encoder: any encoder checkpoint (a fresh one-logit head is added) or a trained
    CrossEncoder folder."""

    name: str = setting(
        DEFAULT_RETRIEVER,
        help="encoder or CrossEncoder name or local path (the default, the packaged MiniLM, loads offline)",
    )
    max_length: int = setting(320, help="tokens of a (query, passage) pair; the passage is truncated first")
    trust_remote_code: bool = setting(
        False, help="run Python shipped with a model folder or hub repo: only if you trust it"
    )

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("model.name must not be empty")
        if self.max_length < 8:
            raise ValueError("model.max_length must be >= 8")


@dataclass
class DataConfig:
    """Training groups come from a triplets file (``ragtune retriever mine`` writes one: each
    positive with its mined negatives); queries and passages of runs to rerank from ``beir_dir``."""

    beir_dir: Path = setting(
        Path("data/demo"), help="BEIR-layout folder: corpus.jsonl, queries.jsonl and qrels/<split>.tsv"
    )
    triplets: Path | None = setting(
        None, help="training triplets JSONL with negatives (and teacher scores for margin_mse)"
    )
    val_fraction: float = setting(
        0.1, help="share of the training queries held out for validation, model choice and the threshold"
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class TrainConfig:
    """Training on groups of one positive and ``negatives`` mined negatives per query."""

    loss: RerankLoss = setting(
        "listwise",
        help="bce: pointwise binary cross-entropy; listwise: softmax cross-entropy over the group "
        "(FlagEmbedding's reranker); margin_mse: (pos - neg) margins against teacher scores",
    )
    negatives: int = setting(7, help="negatives per group (a group is 1 positive + this many)")
    epochs: int = setting(1, help="passes over the training pairs")
    max_steps: int = setting(0, help="stop after this many optimiser steps (0: run all epochs)")
    batch_size: int = setting(16, help="groups (queries) per optimiser step")
    mini_batch_size: int = setting(
        4, help="groups per forward/backward chunk of a step (memory; the update is the same)"
    )
    lr: float = setting(2e-5, help="AdamW peak learning rate")
    warmup_ratio: float = setting(0.1, help="share of the steps with linear warm-up, then linear decay")
    weight_decay: float = setting(0.01, help="AdamW decoupled weight decay")
    max_grad_norm: float = setting(1.0, help="clip the gradient norm to this (0: no clipping)")
    dropout: float | None = setting(
        0.0, help="dropout probability of the encoder (null: keep the model's; 0: no dropout)"
    )
    attn_implementation: Literal["sdpa", "eager"] = setting(
        "sdpa", help="attention kernel: PyTorch's scaled_dot_product_attention or the eager one"
    )
    eval_every: int = setting(0, help="validate every N steps (0: at the end of each epoch)")
    patience: int = setting(0, help="stop after N validations without a better score (0: never)")
    save_every: int = setting(50, help="write a resumable checkpoint every N steps (0: only at the end)")

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "mini_batch_size", "negatives"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1")
        for name in ("max_steps", "eval_every", "patience", "save_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0")
        if self.lr <= 0:
            raise ValueError("train.lr must be > 0")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError("train.warmup_ratio must be in [0, 1)")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError("train.dropout must be in [0, 1) or null")


@dataclass
class RerankConfig:
    """How a run is reranked (``reranker rerank``, ``eval.methods: [rerank]``)."""

    top_n: int = setting(100, help="candidates per query rescored; the rest keep their order below them")
    batch_size: int = setting(64, help="(query, passage) pairs per forward pass")
    first_stage_weight: float = setting(
        0.0,
        help="w in w * first-stage score + (1 - w) * reranker logit, both min-max normalised per query "
        "(0: the reranker's order alone); choose it on validation queries",
    )

    def __post_init__(self) -> None:
        if self.top_n < 1 or self.batch_size < 1:
            raise ValueError("rerank.top_n and rerank.batch_size must be >= 1")
        if not 0.0 <= self.first_stage_weight <= 1.0:
            raise ValueError("rerank.first_stage_weight must be in [0, 1]")


@dataclass
class RerankerConfig:
    """Top-level reranker config (``configs/reranker/*.yaml``)."""

    model: ModelConfig = setting(factory=ModelConfig, help="the cross-encoder: name or path, pair length")
    data: DataConfig = setting(factory=DataConfig, help="BEIR folder and training triplets")
    train: TrainConfig = setting(factory=TrainConfig, help="loss, group size and optimisation")
    rerank: RerankConfig = setting(factory=RerankConfig, help="reranking depth and batch size")
    logging: LoggingConfig = setting(factory=LoggingConfig, help="where metrics go besides history.jsonl")
    output_dir: Path = setting(Path("runs/reranker"), help="folder for everything a command writes")
    seed: int = setting(0, help="seed of every random choice (validation split, batches)")
    precision: Precision = setting(
        "auto", help="auto: bf16 where native (AMX / AVX512-BF16 CPU, bf16 GPU), else fp32"
    )
