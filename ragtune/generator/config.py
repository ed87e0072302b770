"""The generator's configuration: model, prompt, RAFT-style contexts and the fine-tuning method."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ragtune.precision import Precision

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

    name: str = DEFAULT_GENERATOR
    max_length: int = 1024  # prompt + answer tokens of one training example
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("model.name must not be empty")
        if self.max_length < 16:
            raise ValueError("model.max_length must be >= 16")


@dataclass
class PromptConfig:
    """How the question and the numbered passages are shown to the model."""

    system: str = DEFAULT_SYSTEM
    max_passages: int = 5
    no_answer: str = DEFAULT_NO_ANSWER  # the target when no passage holds the answer (RAFT)

    def __post_init__(self) -> None:
        if self.max_passages < 0:
            raise ValueError("prompt.max_passages must be >= 0")


@dataclass
class RaftConfig:
    """RAFT-style contexts (Zhang et al. 2024): with probability ``p_gold`` the gold passages are
    mixed among ``num_distractors`` distractors, otherwise only distractors are shown and the target
    becomes ``prompt.no_answer``."""

    enabled: bool = False
    p_gold: float = 0.8
    num_distractors: int = 3
    distractors: Literal["bm25", "dense"] = "bm25"  # mined by BM25 or by data.retriever

    def __post_init__(self) -> None:
        if not 0.0 <= self.p_gold <= 1.0:
            raise ValueError(f"raft.p_gold must be in [0, 1], got {self.p_gold}")
        if self.num_distractors < 0:
            raise ValueError("raft.num_distractors must be >= 0")


@dataclass
class PeftConfig:
    """The fine-tuning method, all through peft except ``full``."""

    method: Literal["lora", "ia3", "prefix", "prompt", "full"] = "lora"
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0  # LoRA dropout: 0.05 costs ~40% of a CPU step (mask sampling), see benchmarks
    target_modules: list[str] = field(default_factory=lambda: list(LLAMA_TARGETS))
    num_virtual_tokens: int = 20  # prefix and prompt tuning

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha < 1:
            raise ValueError("peft.r and peft.alpha must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("peft.dropout must be in [0, 1)")
        if self.num_virtual_tokens < 1:
            raise ValueError("peft.num_virtual_tokens must be >= 1")


@dataclass
class DataConfig:
    """QA JSONL files (see data/README.md) and where each example's passages come from.

    ``passages``: ``given`` shows each example's own ``contexts``; ``bm25`` or ``dense`` retrieves
    the top ``top_k`` passages of ``corpus`` for the question (``dense``: with the bi-encoder
    ``retriever``, exact search); ``none`` shows no passage (closed book). RAFT distractors are the
    top hits (``raft.distractors``) that are not gold passages; without a corpus, the pool is every
    context of the training file.
    """

    train: Path | None = None
    val: Path | None = None  # default: hold out ``val_fraction`` of ``train``
    val_fraction: float = 0.1
    test: Path | None = None  # what ``ragtune generator generate`` answers when no --input is given
    corpus: Path | None = None  # corpus.jsonl or a BEIR folder: resolves context ids; retrieval pool
    passages: Literal["given", "bm25", "dense", "none"] = "given"
    top_k: int = 3
    retriever: str = "sentence-transformers/all-MiniLM-L6-v2"  # bi-encoder for dense passages / distractors
    max_examples: int = 0  # use only the first N training examples (0: all)

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.top_k < 1:
            raise ValueError("data.top_k must be >= 1")
        if self.max_examples < 0:
            raise ValueError("data.max_examples must be >= 0")


@dataclass
class TrainConfig:
    """Supervised fine-tuning: cross-entropy on answer tokens only."""

    epochs: int = 1
    max_steps: int = 0  # stop after this many optimiser steps (0: run all epochs)
    batch_size: int = 4  # examples per forward pass
    grad_accum: int = 1  # forward passes per optimiser step
    lr: float = 2e-4
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    group_by_length: bool = True  # batches of similar lengths pad less
    answer_logits_only: bool = True  # project to the vocabulary only where a label is predicted
    eval_every: int = 0  # validation loss every N optimiser steps (0: once per epoch)
    eval_batch_size: int = 8
    patience: int = 0  # stop after N validations without improvement (0: never)
    save_every: int = 20  # resumable checkpoint every N optimiser steps (0: only at the end)

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

    max_new_tokens: int = 128
    batch_size: int = 16
    num_beams: int = 1
    do_sample: bool = False  # greedy (or beam search) unless True
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.num_beams < 1:
            raise ValueError("generate.max_new_tokens, batch_size and num_beams must be >= 1")
        if self.temperature <= 0 or not 0.0 < self.top_p <= 1.0:
            raise ValueError("generate.temperature must be > 0 and generate.top_p in (0, 1]")


@dataclass
class GeneratorConfig:
    """Top-level generator config (``configs/generator/*.yaml``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    raft: RaftConfig = field(default_factory=RaftConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    output_dir: Path = Path("runs/generator")
    save_merged: bool = False  # also write merged/ (LoRA / IA3 folded into the weights)
    seed: int = 0
    # auto: bf16 where it is native (AMX / AVX512-BF16 CPU, bf16 GPU), else fp32 (ragtune.precision).
    # Training and scoring: bf16 autocast with fp32 master weights; generation: bf16 weights.
    precision: Precision = "auto"
