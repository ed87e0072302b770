"""What the retriever and generator trainers share: resumable-run checks, pickle-free training
state files, the learning-rate schedule, history trimming on resume, and best-checkpoint
bookkeeping."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ragtune.config import save_config, to_dict
from ragtune.data.io import atomic_write_text

log = logging.getLogger(__name__)

_TENSOR = "__tensor__"


def save_state(obj: Any, path: str | Path) -> None:
    """Write nested dicts/lists/tuples of tensors and JSON values (an optimiser's or scheduler's
    ``state_dict``, an RNG state) as one safetensors file: the tensors as its tensors, the structure
    as JSON in its metadata (dict keys keep their int/str type). No pickle: :func:`load_state`
    reads it back with ``safetensors`` and ``json`` only."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}

    def encode(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            key = str(len(tensors))
            tensors[key] = x.detach().cpu().contiguous()
            return {_TENSOR: key}
        if isinstance(x, dict):
            return {"dict": [[k, encode(v)] for k, v in x.items()]}
        if isinstance(x, tuple):
            return {"tuple": [encode(v) for v in x]}
        if isinstance(x, list):
            return [encode(v) for v in x]
        if x is None or isinstance(x, bool | int | float | str):
            return x
        raise TypeError(f"cannot store a {type(x).__name__} in a training state file")

    structure = json.dumps(encode(obj))
    save_file(tensors, str(path), metadata={"structure": structure})


def load_state(path: str | Path, device: torch.device | str = "cpu") -> Any:
    """Read a file written by :func:`save_state` (tensors onto ``device``)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device=str(device)) as fh:
        meta = fh.metadata() or {}
        if "structure" not in meta:
            raise ValueError(f"{path}: not a ragtune training state file (no structure metadata)")
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is not iterable)

    def decode(x: Any) -> Any:
        if isinstance(x, dict):
            if _TENSOR in x:
                return tensors[x[_TENSOR]]
            if "dict" in x:
                return {k: decode(v) for k, v in x["dict"]}
            return tuple(decode(v) for v in x["tuple"])
        if isinstance(x, list):
            return [decode(v) for v in x]
        return x

    return decode(json.loads(meta["structure"]))


def start_run(cfg: Any, out: Path) -> Path:
    """Create ``out``, refuse a checkpoint left there by a run with another config, save the resolved
    config (headed by the hardware and the precision ``cfg.precision`` resolves to here) and
    ``hardware.json``; returns the checkpoint folder ``out / "checkpoint"``."""
    from ragtune.allocator import keep_freed_memory
    from ragtune.precision import describe, hardware

    keep_freed_memory()
    info = hardware(cfg.precision)
    log.info("%s", describe(info))
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint"
    if (ckpt / "state.json").exists() and (out / "config.yaml").exists():
        import yaml

        if yaml.safe_load((out / "config.yaml").read_text()) != to_dict(cfg):
            raise ValueError(
                f"{out} holds a checkpoint of a run with a different config; "
                "use another output_dir or delete the old run"
            )
    save_config(cfg, out / "config.yaml", header=f"ragtune run: {describe(info)}")
    atomic_write_text(out / "hardware.json", json.dumps(info, indent=2) + "\n")
    return ckpt


def linear_schedule(
    optimizer: torch.optim.Optimizer, total: int, warmup: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total``."""

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)


def trim_history(history: Path, resuming: bool, step: int) -> None:
    """Keep only the history lines the checkpoint has seen (resumed steps are logged again)."""
    if history.exists():
        kept = [ln for ln in history.read_text().splitlines() if resuming and json.loads(ln)["step"] <= step]
        atomic_write_text(history, "".join(ln + "\n" for ln in kept))


def record_validation(
    state: dict, key: str, value: float, higher_is_better: bool, patience: int, save_best: Callable[[], None]
) -> None:
    """Update ``state["best"]`` / ``state["bad_evals"]`` / ``state["stopped"]`` with one validation
    score, calling ``save_best()`` when it is the best so far."""
    best = state["best"]
    improved = best is None or (value > best[key] if higher_is_better else value < best[key])
    if improved:
        state["best"] = {key: value, "step": state["step"]}
        state["bad_evals"] = 0
        save_best()
    else:
        state["bad_evals"] += 1
        if patience and state["bad_evals"] >= patience:
            log.info("early stopping: %d validations without improvement", state["bad_evals"])
            state["stopped"] = True


def finish_step(
    history: Path, record: dict, state: dict, total: int, save_every: int, save: Callable[[], None]
) -> bool:
    """After one optimiser step: append ``record`` to ``history`` and, when due (stopped, last step,
    or every ``save_every`` steps), call ``save()`` to write the checkpoint. Only the main process
    writes; under ``torchrun`` the others wait for the checkpoint. Returns True when training ends."""
    from ragtune import distributed as dist

    main = dist.is_main()
    if main:
        with history.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
    if state["stopped"] or state["step"] == total or (save_every and state["step"] % save_every == 0):
        if main:
            save()
        dist.barrier()
    return state["stopped"] or state["step"] >= total
