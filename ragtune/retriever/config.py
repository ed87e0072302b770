"""The retriever's configuration: model, data, evaluation (training and mining join in later)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

DEFAULT_RETRIEVER = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class ModelConfig:
    """The bi-encoder: any sentence-transformers model name or path (resolved offline for the default)."""

    name: str = DEFAULT_RETRIEVER
    query_prefix: str = ""  # e.g. "query: " for e5-style models
    passage_prefix: str = ""  # e.g. "passage: "
    max_query_length: int = 64
    max_passage_length: int = 256

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("model.name must not be empty")
        if self.max_query_length < 1 or self.max_passage_length < 1:
            raise ValueError("model.max_query_length and model.max_passage_length must be >= 1")


@dataclass
class DataConfig:
    """A BEIR-layout folder and the qrels split to use."""

    beir_dir: Path = Path("data/demo")
    split: str = "test"


@dataclass
class EvalConfig:
    """Which retrievers to score and how deep."""

    methods: list[Literal["bm25", "dense", "hybrid"]] = field(
        default_factory=lambda: ["bm25", "dense", "hybrid"]
    )
    ks: list[int] = field(default_factory=lambda: [1, 3, 5, 10, 20, 100])
    depth: int = 100  # documents retrieved per query
    rrf_k: int = 60  # reciprocal rank fusion constant for hybrid
    batch_size: int = 64
    bf16: bool = True  # bf16 autocast while encoding (AMX CPUs and GPUs)

    def __post_init__(self) -> None:
        if not self.methods:
            raise ValueError("eval.methods must name at least one method")
        if any(k < 1 for k in self.ks) or not self.ks:
            raise ValueError("eval.ks must be positive integers")
        if self.depth < max(self.ks):
            raise ValueError(f"eval.depth ({self.depth}) must be >= the largest k ({max(self.ks)})")
        if self.batch_size < 1:
            raise ValueError("eval.batch_size must be >= 1")


@dataclass
class RetrieverConfig:
    """Top-level retriever config (``configs/retriever/*.yaml``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: Path = Path("runs/retriever")
    seed: int = 0
