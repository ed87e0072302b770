"""Loading the causal LM, wrapping it with a peft method, and loading what training saved.

Every method but ``full`` goes through peft, so what ragtune saves is a standard peft adapter folder
(``adapter_config.json`` + ``adapter_model.safetensors``) that ``PeftModel.from_pretrained`` loads
without ragtune; ``full`` saves a plain transformers folder.

- LoRA (Hu et al. 2021): low-rank updates on the configured projections.
- IA3 (Liu et al. 2022, the T-Few method): learned rescaling of keys, values and the MLP; peft's
  per-architecture default modules.
- Prefix tuning (Li & Liang 2021): trained key/value prefixes in every layer.
- Prompt tuning (Lester et al. 2021): trained soft-prompt embeddings before the input.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ragtune.errors import UserError
from ragtune.generator.config import ModelConfig, PeftConfig
from ragtune.models import resolve_model

ADAPTER_CONFIG = "adapter_config.json"


def load_tokenizer(name: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer of ``name`` (resolved offline for the packaged default), with a pad token."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(name), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base(cfg: ModelConfig, path: str | Path | None = None) -> PreTrainedModel:
    """The causal LM ``cfg.name`` (or ``path``) in float32 with SDPA attention, safetensors only."""
    model = AutoModelForCausalLM.from_pretrained(
        str(path) if path is not None else resolve_model(cfg.name),
        dtype=torch.float32,
        attn_implementation="sdpa",
        trust_remote_code=cfg.trust_remote_code,
        use_safetensors=True,
    )
    return model


# What ragtune knows of each fine-tuning method, in one place.
MERGEABLE = ("lora", "ia3")  # folded into the base weights by merge_and_unload()
PROMPT_LEARNING = ("prefix", "prompt")  # virtual tokens before the input; nothing to merge


def output_folder(method: str) -> str:
    """Where ``generator train`` writes the trained model: ``model/`` (full fine-tuning, a
    transformers folder) or ``adapter/`` (a peft adapter folder)."""
    return "model" if method == "full" else "adapter"


def merged_for_inference(model: torch.nn.Module, method: str) -> torch.nn.Module:
    """``model`` with a LoRA / IA3 adapter folded into its weights (faster to run); other methods'
    models unchanged. Merges in place: pass a copy to keep training the adapter."""
    return model.merge_and_unload() if method in MERGEABLE else model


def n_virtual_tokens(model: torch.nn.Module) -> int:
    """Soft-prompt tokens that prompt tuning puts before the input (0 for other methods)."""
    cfg = getattr(model, "active_peft_config", None)
    if cfg is not None and cfg.peft_type.value == "PROMPT_TUNING":
        return int(cfg.num_virtual_tokens)
    return 0


def apply_peft(model: PreTrainedModel, cfg: PeftConfig) -> torch.nn.Module:
    """Wrap ``model`` with the configured peft method (``full``: every weight trains, no wrapper)."""
    if cfg.method == "full":
        model.requires_grad_(True)
        return model
    if cfg.method == "bottleneck":
        from ragtune.generator.bottleneck import add_bottlenecks

        return add_bottlenecks(model, cfg.bottleneck_size, cfg.bottleneck_modules)
    import peft

    task = peft.TaskType.CAUSAL_LM
    if cfg.method == "lora":
        config = peft.LoraConfig(
            task_type=task,
            r=cfg.r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=list(cfg.target_modules),
        )
    elif cfg.method == "ia3":
        config = peft.IA3Config(task_type=task)
    elif cfg.method == "prefix":
        config = peft.PrefixTuningConfig(task_type=task, num_virtual_tokens=cfg.num_virtual_tokens)
    else:
        config = peft.PromptTuningConfig(task_type=task, num_virtual_tokens=cfg.num_virtual_tokens)
    return peft.get_peft_model(model, config)


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The stack of transformer blocks of a causal LM (peft-wrapped or not): the ``ModuleList``
    holding ``config.num_hidden_layers`` modules of one class."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for module in model.modules():
        if (
            isinstance(module, torch.nn.ModuleList)
            and len(module) == n
            and len({type(m) for m in module}) == 1
        ):
            return module
    raise UserError(f"{type(model).__name__}: found no list of {n} transformer blocks to compile")


def compile_layers(model: torch.nn.Module) -> int:
    """Regional compilation: every transformer block compiled in place (``nn.Module.compile``, so
    parameter names, checkpoints and saved adapters are unchanged), with dynamic shapes so that
    batches of new lengths do not recompile. All blocks share one compiled graph: the cost is one
    block's compilation (about 50 s on 2 CPU cores, less once inductor's cache holds it), paid by the
    first step and again by the first validation (no-grad is another graph). Inductor fuses the
    elementwise work between the matrix products (norms, rotary, activation, LoRA scale and add).
    Returns the number of blocks compiled."""
    compiler = os.environ.get("CXX", "g++")
    if not any(shutil.which(c) for c in (compiler, "c++", "clang++")):
        raise UserError(
            "train.compile: torch.compile on a CPU needs a C++ compiler (g++ or clang++) on PATH; "
            "install one (apt install g++) or set train.compile=false"
        )
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).exists()


def require_safetensors(path: str | Path) -> Path:
    """``path`` (an adapter folder) if its weights are safetensors; a pickled ``adapter_model.bin``
    is refused, since unpickling a file can run code."""
    path = Path(path)
    if not (path / "adapter_model.safetensors").is_file():
        raise UserError(
            f"{path}: no adapter_model.safetensors (ragtune loads adapters from safetensors only, "
            "never a pickled adapter_model.bin; convert it with safetensors first)"
        )
    return path


def load_trained(path: str | Path | None, cfg: ModelConfig) -> PreTrainedModel | torch.nn.Module:
    """A model ready for generation: ``cfg.name`` alone (``path`` None), a peft adapter folder on top
    of ``cfg.name`` (the base the adapter names when that folder exists), or a full model folder."""
    if path is None:
        return load_base(cfg)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model or adapter folder")
    from ragtune.generator import bottleneck

    if bottleneck.is_bottleneck(path):
        return bottleneck.load_bottlenecks(load_base(cfg, _saved_base(path, bottleneck.CONFIG_FILE)), path)
    if not is_adapter(path):
        return load_base(cfg, path)
    from peft import PeftModel

    model = load_base(cfg, _saved_base(path, ADAPTER_CONFIG))
    return PeftModel.from_pretrained(model, str(require_safetensors(path)))


def _saved_base(path: Path, config_file: str) -> str | None:
    """The base model an adapter folder names, when that folder exists here (else None: ``cfg.name``)."""
    saved = json.loads((path / config_file).read_text()).get("base_model_name_or_path")
    return saved if saved and Path(saved).exists() else None


def save_model(model: torch.nn.Module, tokenizer, folder: Path, base: str) -> None:
    """Write a trained generator into ``folder``: a peft adapter folder, a full transformers folder,
    or bottleneck adapters (:mod:`ragtune.generator.bottleneck`), with the tokenizer."""
    if getattr(model, "bottleneck_config", None) is not None:
        from ragtune.generator.bottleneck import save_bottlenecks

        save_bottlenecks(model, folder, base)
    else:
        model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
