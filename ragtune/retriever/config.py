"""The retriever's configuration: model, data, training, hard-negative mining, index and evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ragtune.precision import Precision

DEFAULT_RETRIEVER = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class ModelConfig:
    """The bi-encoder: any sentence-transformers model name or path (resolved offline for the default)."""

    name: str = DEFAULT_RETRIEVER
    query_prefix: str = ""  # e.g. "query: " for e5-style models
    passage_prefix: str = ""  # e.g. "passage: "
    max_query_length: int = 64
    max_passage_length: int = 256
    trust_remote_code: bool = False  # run Python shipped with a model folder/hub repo: only if you trust it

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("model.name must not be empty")
        if self.max_query_length < 1 or self.max_passage_length < 1:
            raise ValueError("model.max_query_length and model.max_passage_length must be >= 1")


@dataclass
class DataConfig:
    """A BEIR-layout folder: the qrels split to evaluate on and the one to train on.

    Training pairs come from ``triplets`` (JSONL, see data/README.md) when given, otherwise from the
    ``train_split`` qrels (one pair per relevant document), with negatives from ``mining``.
    """

    beir_dir: Path = Path("data/demo")
    split: str = "test"
    train_split: str = "train"
    triplets: Path | None = None
    val_fraction: float = 0.1  # training queries held out for validation and early stopping
    val_corpus_size: int = 2000  # validation searches the val positives plus a seeded corpus sample

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.val_corpus_size < 1:
            raise ValueError("data.val_corpus_size must be >= 1")


@dataclass
class TrainConfig:
    """Contrastive training (InfoNCE over in-batch and hard negatives; DPR, Karpukhin et al. 2020)."""

    epochs: int = 3
    max_steps: int = 0  # stop after this many optimiser steps (0: run all epochs)
    batch_size: int = 32  # queries per step
    hard_negatives: int = 1  # hard negatives per query taken from the triplets / mined file
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    temperature: float = 0.05  # logits = cos / temperature (0.05 = sentence-transformers' scale 20)
    symmetric: bool = False  # add the passage -> query InfoNCE term
    dropout: float | None = 0.0  # None keeps the model's; 0 removes dropout mask generation
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    group_by_length: bool = False  # similar-length batches: ~1% faster, -0.018 nDCG@10 on SciFact
    cached: bool = False  # GradCache: large batches in small memory (Gao et al. 2021)
    mini_batch_size: int = 8  # chunk size of the cached mode
    eval_every: int = 0  # validate every N steps (0: at the end of each epoch)
    patience: int = 0  # stop after N validations without a better nDCG@10 (0: never)
    save_every: int = 20  # write a resumable checkpoint every N steps
    compile: bool = False  # torch.compile the encoder

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "mini_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1")
        for name in ("max_steps", "hard_negatives", "eval_every", "patience", "save_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0")
        if self.lr <= 0 or self.temperature <= 0:
            raise ValueError("train.lr and train.temperature must be > 0")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError("train.warmup_ratio must be in [0, 1)")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError("train.dropout must be in [0, 1) or null")


@dataclass
class MiningConfig:
    """Hard-negative mining: candidates from BM25 or the dense model, a rank window, and
    false-negative filtering (positives excluded; candidates scoring within ``fn_ratio`` of the
    positive's score dropped, the "TopK-PercPos" rule of NV-Retriever, Moreira et al. 2024)."""

    method: Literal["bm25", "dense"] = "bm25"
    rank_start: int = 1  # first rank (1-based) of the window candidates are drawn from
    rank_end: int = 100  # last rank of the window
    num_negatives: int = 4  # negatives kept per query
    sampling: Literal["top", "random"] = "top"  # best-ranked in the window, or a seeded sample
    fn_ratio: float | None = 0.95  # drop candidates with score >= fn_ratio * positive score; null: off
    out: Path = Path("runs/mined/triplets.jsonl")

    def __post_init__(self) -> None:
        if self.rank_start < 1 or self.rank_end < self.rank_start:
            raise ValueError(
                f"mining window must satisfy 1 <= rank_start <= rank_end, got {self.rank_start}..{self.rank_end}"
            )
        if self.num_negatives < 1:
            raise ValueError("mining.num_negatives must be >= 1")
        if self.fn_ratio is not None and not 0.0 < self.fn_ratio <= 1.0:
            raise ValueError("mining.fn_ratio must be in (0, 1] or null")


@dataclass
class IndexConfig:
    """A FAISS index over normalised passage vectors (inner product = cosine)."""

    kind: Literal["flat", "ivf", "hnsw", "ivfpq"] = "flat"
    nlist: int = 1024  # IVF cells (capped at n_vectors / 39 so that training has enough points)
    nprobe: int = 16  # IVF cells visited per query
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 64
    pq_m: int = 48  # IVF-PQ sub-quantisers (must divide the dimension)
    pq_nbits: int = 8
    recall_queries: int = 1000  # sample of vectors used to report recall@10 against exact search
    batch_size: int = 4096  # query vectors per FAISS call
    shard_size: int = 100_000  # passages per on-disk embedding shard (the unit of resumed encoding)
    embedding_dtype: Literal["float16", "float32"] = "float32"  # shard precision on disk
    embeddings_dir: str | None = None  # where the shards go (default: output_dir/embeddings)

    def __post_init__(self) -> None:
        for name in (
            "nlist",
            "nprobe",
            "hnsw_m",
            "ef_construction",
            "ef_search",
            "pq_m",
            "pq_nbits",
            "batch_size",
            "shard_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"index.{name} must be >= 1")
        if self.recall_queries < 0:
            raise ValueError("index.recall_queries must be >= 0")


@dataclass
class EvalConfig:
    """Which retrievers to score and how deep."""

    methods: list[Literal["bm25", "dense", "hybrid"]] = field(
        default_factory=lambda: ["bm25", "dense", "hybrid"]
    )
    ks: list[int] = field(default_factory=lambda: [1, 3, 5, 10, 20, 100])
    depth: int = 100  # documents retrieved per query
    fusion: Literal["rrf", "weighted"] = "rrf"  # how hybrid merges BM25 and dense
    rrf_k: int = 60  # reciprocal rank fusion constant (fusion=rrf)
    dense_weight: float = 0.5  # fusion=weighted: dense x w + BM25 x (1 - w), min-max normalised
    index_dir: Path | None = (
        None  # score this saved index (ragtune index build) instead of encoding the corpus
    )
    batch_size: int = 128

    def __post_init__(self) -> None:
        if not self.methods:
            raise ValueError("eval.methods must name at least one method")
        if any(k < 1 for k in self.ks) or not self.ks:
            raise ValueError("eval.ks must be positive integers")
        if self.depth < max(self.ks):
            raise ValueError(f"eval.depth ({self.depth}) must be >= the largest k ({max(self.ks)})")
        if self.batch_size < 1:
            raise ValueError("eval.batch_size must be >= 1")
        if not 0.0 <= self.dense_weight <= 1.0:
            raise ValueError(f"eval.dense_weight must be in [0, 1], got {self.dense_weight}")


@dataclass
class RetrieverConfig:
    """Top-level retriever config (``configs/retriever/*.yaml``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: Path = Path("runs/retriever")
    seed: int = 0
    # auto: bf16 where it is native (AMX / AVX512-BF16 CPU, bf16 GPU), else fp32 (ragtune.precision).
    # Training: bf16 autocast with fp32 master weights; encoding (eval, mining, index): bf16 weights.
    precision: Precision = "auto"
