"""The generator's configuration: model, prompt, RAFT-style contexts and the fine-tuning method."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(LLAMA_TARGETS))
    num_virtual_tokens: int = 20  # prefix and prompt tuning

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha < 1:
            raise ValueError("peft.r and peft.alpha must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("peft.dropout must be in [0, 1)")
        if self.num_virtual_tokens < 1:
            raise ValueError("peft.num_virtual_tokens must be >= 1")
