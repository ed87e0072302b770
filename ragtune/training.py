"""What the retriever and generator trainers share: atomic folders, resumable-run checks, the
learning-rate schedule, history trimming on resume, and best-checkpoint bookkeeping."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ragtune.config import save_config, to_dict
from ragtune.data.io import atomic_write_text

log = logging.getLogger(__name__)


def save_dir_atomically(target: Path, write: Callable[[Path], Any]) -> None:
    """Write a folder through ``write(tmp_folder)`` and swap it in place of ``target``."""
    tmp = target.with_name(f".{target.name}.tmp")
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def start_run(cfg: Any, out: Path) -> Path:
    """Create ``out``, refuse a checkpoint left there by a run with another config, save the resolved
    config; returns the checkpoint folder ``out / "checkpoint"``."""
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint"
    if (ckpt / "state.json").exists() and (out / "config.yaml").exists():
        import yaml

        if yaml.safe_load((out / "config.yaml").read_text()) != to_dict(cfg):
            raise ValueError(
                f"{out} holds a checkpoint of a run with a different config; "
                "use another output_dir or delete the old run"
            )
    save_config(cfg, out / "config.yaml")
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
