"""The one place that decides the numeric precision of every computation ragtune runs.

Every config has one ``precision: auto | fp32 | bf16`` setting; every component that computes
(retriever training, encoding, mining, index build; generator training, generation, likelihood
scoring; the joint loop) asks :func:`resolve_precision` what it means on the hardware at hand.

``auto`` picks bf16 only where bf16 is native:

- a CUDA device that supports bf16 (``torch.cuda.is_bf16_supported()``);
- a CPU whose bf16 matrix products oneDNN runs on bf16 instructions: AMX tiles or AVX512-BF16.
  torch answers both halves: ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` (oneDNN will run
  bf16 kernels; it honours ``ONEDNN_MAX_CPU_ISA``) and ``torch.cpu._is_amx_tile_supported()`` /
  ``torch.cpu._is_avx512_bf16_supported()`` (the instructions exist).

Everywhere else it picks fp32. Why it matters: on a CPU with AVX2 only, a 1024x1024 bf16 matmul
runs at ~0.9 GFLOP/s against ~78-160 GFLOP/s in fp32 (measured on AMD EPYC, 2026-11-30), so a bf16
default makes training and encoding 10-80x slower there. Forcing ``bf16`` on such a CPU still
works (the numbers are right) but logs a warning that says so.

How bf16 is applied is each component's business, and stays as it was measured: training runs
under ``torch.autocast`` with fp32 master weights and optimiser state (:func:`autocast`);
inference-only models (encoding, generation) have their weights cast to bf16.

:func:`hardware` describes the machine (CPU model, torch's CPU capability, threads, native bf16,
GPU) and is written beside every run and into every benchmark result.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16"]
Resolved = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")

# The slowdown quoted in the warning: bf16 vs fp32 matmul throughput on a CPU without native bf16.
_EMULATED_BF16_SLOWDOWN = "10-80x"


def _device_type(device: str | torch.device | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device).type


def native_bf16(device: str | torch.device | None = None) -> bool:
    """True when bf16 matrix products run on native bf16 hardware on ``device`` (default: the GPU
    when there is one, else the CPU)."""
    import torch

    kind = _device_type(device)
    if kind == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind != "cpu":
        return False
    return _cpu_native_bf16()


@functools.lru_cache(maxsize=1)
def _cpu_native_bf16() -> bool:
    import torch

    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False
    return onednn and (_cpu_flag("_is_amx_tile_supported") or _cpu_flag("_is_avx512_bf16_supported"))


def _cpu_flag(name: str) -> bool:
    import torch

    probe = getattr(torch.cpu, name, None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def resolve_precision(setting: str, device: str | torch.device | None = None) -> Resolved:
    """``auto`` -> ``bf16`` where bf16 is native on ``device``, else ``fp32``; ``fp32``/``bf16``
    as given (bf16 without native support logs a warning, once per process)."""
    if setting not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {setting!r}")
    native = native_bf16(device)
    if setting == "auto":
        return "bf16" if native else "fp32"
    if setting == "bf16" and not native:
        _warn_emulated(_device_type(device))
    return setting  # type: ignore[return-value]


@functools.cache
def _warn_emulated(kind: str) -> None:
    import torch

    where = (
        f"this CPU ({cpu_model()}, torch capability {torch.backends.cpu.get_cpu_capability()})"
        if kind == "cpu"
        else f"this {kind} device"
    )
    log.warning(
        "precision=bf16 was forced on %s, which has no native bf16 (no AMX / AVX512-BF16): bf16 "
        "matrix products are emulated there and are likely %s SLOWER than fp32. "
        "Use precision=auto (or fp32) unless you are measuring exactly that.",
        where,
        _EMULATED_BF16_SLOWDOWN,
    )


def autocast(precision: str, device_type: str = "cpu") -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast when ``precision`` resolves to bf16 on ``device_type`` (fp32 master weights
    stay as they are); a no-op context otherwise."""
    import torch

    if resolve_precision(precision, device_type) == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def inference_dtype(precision: str, device: str | torch.device | None = None) -> torch.dtype:
    """The weight dtype of an inference-only model (encoding, generation): bf16 or float32."""
    import torch

    return torch.bfloat16 if resolve_precision(precision, device) == "bf16" else torch.float32


def cast_for_inference(model: torch.nn.Module, precision: str, device: str | torch.device | None = None):
    """Cast an inference-only model's weights to bf16 when ``precision`` resolves to bf16 on
    ``device``; leave them fp32 otherwise. Returns the model."""
    import torch

    dtype = inference_dtype(precision, device or "cpu")
    if dtype != torch.float32:
        model.to(dtype)
    return model


def store_frozen_linears(model: torch.nn.Module, precision: str) -> int:
    """Keep the frozen weights of ``model``'s linear layers in bf16 when ``precision`` resolves to
    bf16 on the model's device; returns how many layers were cast (0 under fp32).

    Under bf16 autocast every ``nn.Linear`` casts its weight to bf16 before the product, and a
    frozen weight (``requires_grad=False``: the base model under LoRA, IA3, prefix, prompt or
    bottleneck training) is not in autocast's cast cache, so it is re-cast in every forward pass.
    Casting it once gives the same products (the same round-to-nearest of the same fp32 value),
    halves its memory and removes that copy: on an AMX CPU, where bf16 products are ~5x faster than
    fp32, the copies were a sixth of a SmolLM2 LoRA step. Trainable weights, norms and embeddings
    stay fp32 (the residual stream keeps its precision); a linear layer whose weight is shared with
    the input embeddings (a tied LM head) is left alone."""
    import torch

    param = next(model.parameters())
    if resolve_precision(precision, param.device) != "bf16":
        return 0
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    tied = getattr(embeddings, "weight", None)
    cast = 0
    for module in model.modules():
        if not isinstance(module, torch.nn.Linear) or module.weight.requires_grad or module.weight is tied:
            continue
        if module.bias is not None and module.bias.requires_grad:
            continue
        module.weight.data = module.weight.data.to(torch.bfloat16)
        if module.bias is not None:
            module.bias.data = module.bias.data.to(torch.bfloat16)
        cast += 1
    return cast


def inference_context(model: torch.nn.Module, precision: str) -> contextlib.AbstractContextManager[Any]:
    """No-grad inference for ``model``: under bf16 autocast when ``precision`` resolves to bf16 on
    the model's device and its weights are still fp32 (bf16 weights compute in bf16 already)."""
    import torch

    param = next(model.parameters())
    stack = contextlib.ExitStack()
    if param.dtype == torch.float32:
        stack.enter_context(autocast(precision, param.device.type))
    stack.enter_context(torch.inference_mode())
    return stack


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(precision: str | None = None, device: str | torch.device | None = None) -> dict[str, Any]:
    """What a result depends on: CPU model, torch's CPU capability (the widest vector ISA its
    kernels use: ``AVX2``, ``AVX512``, ...), AMX and AVX512-BF16 presence, native bf16 (as
    :func:`native_bf16`), cores, torch threads, memory, GPU; with ``precision``, also the precision
    that setting resolves to here (``precision_setting`` keeps what was asked)."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        mem_gb = None
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": torch.get_num_threads(),
        "memory_gb": mem_gb,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "amx": _cpu_flag("_is_amx_tile_supported"),
        "avx512_bf16": _cpu_flag("_is_avx512_bf16_supported"),
        "native_bf16": native_bf16(device),
        "gpu": gpu,
    }
    for var in (
        "ONEDNN_MAX_CPU_ISA",
        "ATEN_CPU_CAPABILITY",
        "MKL_ENABLE_INSTRUCTIONS",
        "LRU_CACHE_CAPACITY",
        "ONEDNN_PRIMITIVE_CACHE_CAPACITY",
    ):
        if os.environ.get(var):
            info[var] = os.environ[var]  # a capped ISA or cache changes what the figures mean: record it
    if precision is not None:
        info["precision_setting"] = precision
        info["precision"] = resolve_precision(precision, device)
    return info


def describe(info: dict[str, Any]) -> str:
    """One line for logs and file headers, e.g. ``precision bf16 (auto) on AMD EPYC, AVX512, native
    bf16: yes, 2 threads``."""
    asked = info.get("precision_setting")
    head = f"precision {info['precision']}" + (f" ({asked})" if asked and asked != info["precision"] else "")
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    native = "yes" if info["native_bf16"] else "no"
    return (
        f"{head} on {info['cpu']}, {info['cpu_capability']}, native bf16: {native}, "
        f"{info['threads']} threads{gpu}"
    )


__all__ = [
    "PRECISIONS",
    "Precision",
    "Resolved",
    "autocast",
    "cast_for_inference",
    "cpu_model",
    "describe",
    "hardware",
    "inference_context",
    "inference_dtype",
    "native_bf16",
    "resolve_precision",
]
