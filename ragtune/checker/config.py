"""The faithfulness checker's configuration: model, synthetic data and training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ragtune.checker.synth import KINDS
from ragtune.config import LoggingConfig, setting
from ragtune.precision import Precision
from ragtune.retriever.config import DEFAULT_RETRIEVER

# Every field is `setting(default, help=...)`, which returns dataclasses.field(...): not a call in a default.


@dataclass
class ModelConfig:
    """The checker: a cross-encoder (evidence, claim) -> one logit, from any encoder checkpoint."""

    name: str = setting(
        DEFAULT_RETRIEVER,
        help="encoder or CrossEncoder name or local path (the default, the packaged MiniLM, loads offline)",
    )
    max_length: int = setting(
        320, help="tokens of an (evidence, claim) pair; the longer side (the evidence) is cut first"
    )
    trust_remote_code: bool = setting(
        False, help="run Python shipped with a model folder or hub repo: only if you trust it"
    )

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("model.name must not be empty")
        if self.max_length < 16:
            raise ValueError("model.max_length must be >= 16")


@dataclass
class DataConfig:
    """Where the synthetic examples come from: passages of one or more BEIR ``corpus.jsonl`` files.
    No labels are read; every example is made by :mod:`ragtune.checker.synth`."""

    corpus: list[Path] = setting(
        factory=lambda: [Path("data/demo/corpus.jsonl")],
        help="BEIR corpus.jsonl files whose passages the claims are made from",
    )
    max_passages: int = setting(
        0, help="use at most this many passages, sampled with the seed across the files (0: all)"
    )
    per_passage: int = setting(
        2, help="source sentences per passage; each gives one supported + one unsupported claim"
    )
    window: int = setting(3, help="sentences of the passage around the source sentence shown as evidence")
    distractor_share: float = setting(
        0.5, help="share of the evidence windows that also hold one sentence of another passage"
    )
    kinds: list[str] = setting(
        factory=lambda: list(KINDS),
        help="claim kinds to draw from: " + ", ".join(KINDS) + " (ragtune.checker.synth explains each)",
    )
    val_fraction: float = setting(
        0.05, help="share of the passages whose examples are held out for validation and model choice"
    )

    def __post_init__(self) -> None:
        if not self.corpus:
            raise ValueError("data.corpus must name at least one corpus.jsonl file")
        if self.max_passages < 0:
            raise ValueError("data.max_passages must be >= 0")
        if self.per_passage < 1 or self.window < 1:
            raise ValueError("data.per_passage and data.window must be >= 1")
        if not 0.0 <= self.distractor_share <= 1.0:
            raise ValueError("data.distractor_share must be in [0, 1]")
        unknown = sorted(set(self.kinds) - set(KINDS))
        if unknown or not self.kinds:
            raise ValueError(
                f"data.kinds: unknown or empty {unknown or self.kinds}; choose from {list(KINDS)}"
            )
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class TrainConfig:
    """Pointwise binary cross-entropy on the synthetic (evidence, claim, label) pairs."""

    epochs: int = setting(1, help="passes over the training pairs")
    max_steps: int = setting(0, help="stop after this many optimiser steps (0: run all epochs)")
    batch_size: int = setting(32, help="pairs per optimiser step")
    mini_batch_size: int = setting(16, help="pairs per forward/backward chunk of a step (memory only)")
    lr: float = setting(3e-5, help="AdamW peak learning rate")
    warmup_ratio: float = setting(0.1, help="share of the steps with linear warm-up, then linear decay")
    weight_decay: float = setting(0.01, help="AdamW decoupled weight decay")
    max_grad_norm: float = setting(1.0, help="clip the gradient norm to this (0: no clipping)")
    dropout: float | None = setting(
        0.0, help="dropout probability of the encoder (null: keep the model's; 0: no dropout)"
    )
    eval_every: int = setting(0, help="validate every N steps (0: at the end of each epoch)")
    patience: int = setting(0, help="stop after N validations without a better AUROC (0: never)")
    save_every: int = setting(100, help="write a resumable checkpoint every N steps (0: only at the end)")

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "mini_batch_size"):
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
class CheckerConfig:
    """Top-level faithfulness checker config (``configs/checker/*.yaml``)."""

    model: ModelConfig = setting(factory=ModelConfig, help="the cross-encoder: name or path, pair length")
    data: DataConfig = setting(factory=DataConfig, help="the corpora the synthetic claims are made from")
    train: TrainConfig = setting(factory=TrainConfig, help="optimisation")
    logging: LoggingConfig = setting(factory=LoggingConfig, help="where metrics go besides history.jsonl")
    output_dir: Path = setting(Path("runs/checker"), help="folder for everything a command writes")
    seed: int = setting(0, help="seed of every random choice (examples, validation split, batches)")
    precision: Precision = setting(
        "auto", help="auto: bf16 where native (AMX / AVX512-BF16 CPU, bf16 GPU), else fp32"
    )
