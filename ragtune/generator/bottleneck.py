"""Bottleneck adapters (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP"):
``peft.method=bottleneck``.

After each adapted projection (by default every layer's attention output ``o_proj`` and MLP output
``down_proj``, the two places Houlsby et al. insert them) a small residual MLP is added::

    y = W x            ->   y + W_up gelu(W_down y)      W_down: [size, d], W_up: [d, size]

``W_up`` starts at zero, so training starts from the base model exactly. The base weights stay
frozen; only the adapters train.

Why ragtune's own module: the ``adapters`` library (AdapterHub) has these, but its current release
(1.3.0) requires ``transformers~=4.57`` and ragtune runs on transformers 5; peft has no bottleneck
adapter. The saved folder is therefore ragtune's own small format, not a peft one:
``bottleneck_config.json`` (base model, size, modules) + ``bottleneck_adapter.safetensors`` (the
adapter weights, keyed by module path) + the tokenizer. Loading it needs these 40 lines (or
ragtune); unlike LoRA it cannot be merged into the weights (the adapter is non-linear).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

CONFIG_FILE = "bottleneck_config.json"
WEIGHTS_FILE = "bottleneck_adapter.safetensors"


class Bottleneck(nn.Module):
    """A frozen linear layer followed by a residual bottleneck adapter (output ``[..., d]``)."""

    def __init__(self, inner: nn.Linear, size: int):
        super().__init__()
        self.inner = inner
        d = inner.out_features
        self.down = nn.Linear(d, size, dtype=inner.weight.dtype, device=inner.weight.device)
        self.up = nn.Linear(size, d, dtype=inner.weight.dtype, device=inner.weight.device)
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)  # the adapter starts as the identity
        nn.init.zeros_(self.up.bias)

    @property
    def weight(self) -> torch.Tensor:  # what code that inspects a projection's weight expects
        return self.inner.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        return y + self.up(F.gelu(self.down(y)))


def add_bottlenecks(model: nn.Module, size: int, modules: Sequence[str]) -> nn.Module:
    """Freeze ``model`` and put a bottleneck adapter of ``size`` after every ``nn.Linear`` whose name
    ends with one of ``modules``; returns ``model`` (changed in place)."""
    if size < 1:
        raise ValueError("peft.bottleneck_size must be >= 1")
    model.requires_grad_(False)
    targets = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in set(modules)
    ]
    if not targets:
        raise ValueError(f"no nn.Linear module named {list(modules)} in the model: nothing to adapt")
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Bottleneck(linear, size))
    model.bottleneck_config = {"method": "bottleneck", "size": size, "modules": list(modules)}
    return model


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' weights by parameter name."""
    return {
        n: p.detach().contiguous()
        for n, p in model.named_parameters()
        if n.rsplit(".", 2)[-2] in ("down", "up") and ".inner." not in n
    }


def is_bottleneck(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def save_bottlenecks(model: nn.Module, folder: str | Path, base: str) -> None:
    """Write the adapter weights and ``bottleneck_config.json`` (with the base model's name) into ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.float() for k, v in adapter_state(model).items()}, str(folder / WEIGHTS_FILE))
    config: dict[str, Any] = {**model.bottleneck_config, "base_model_name_or_path": base}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


def load_bottlenecks(model: nn.Module, folder: str | Path, trainable: bool = False) -> nn.Module:
    """``model`` (the base) with the adapters saved in ``folder``; their weights trainable on request."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = json.loads((folder / CONFIG_FILE).read_text())
    add_bottlenecks(model, int(config["size"]), config["modules"])
    saved = load_file(str(folder / WEIGHTS_FILE))
    expected = set(adapter_state(model))
    if set(saved) != expected:
        missing = sorted(expected - set(saved)) or sorted(set(saved) - expected)
        raise ValueError(
            f"{folder / WEIGHTS_FILE}: adapter weights do not match the model (e.g. {missing[0]})"
        )
    model.load_state_dict(saved, strict=False)
    for name, p in model.named_parameters():
        p.requires_grad_(trainable and name in expected)
    return model
