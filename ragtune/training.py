"""The one training loop, and what every trainer shares.

A trainer (``retriever/train.py``, ``generator/train.py``, and the ones to come) reads like this::

    run = Run(cfg)                                   # output folder, config.yaml, resume state
    model = load(run.checkpoint / "model" if run.resuming else None)
    task = MyTask(model, data, ...)                  # step batches, backward, validate, save
    run.fit(task, adamw(model, lr, weight_decay), Plan(total=..., ...))
    run.finish(task, "model", {"examples": ...})     # best (or last) model, train_summary.json

:class:`Run` owns what every loop needs: resuming from ``checkpoint/`` (model, optimiser,
scheduler and RNG state; the run then ends with the weights of an unbroken one), the history file
(and TensorBoard events), validation with early stopping and a copy of the best model, periodic
atomic checkpoints, progress bars, throughput, and the summary. A :class:`Task` supplies only what
differs: the batches of an epoch, the forward and backward pass of one optimiser step, the
validation score, and how its model is saved. Under ``torchrun`` every process runs the same loop
on its shard of each batch (:mod:`ragtune.distributed`); only the main process writes.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from ragtune import distributed as dist
from ragtune.config import save_config, to_dict
from ragtune.data.io import atomic_write_text, save_dir_atomically
from ragtune.errors import UserError

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
    from ragtune.allocator import bound_primitive_caches, keep_freed_memory
    from ragtune.precision import describe, hardware

    keep_freed_memory()
    bound_primitive_caches()
    info = hardware(cfg.precision)
    log.info("%s", describe(info))
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint"
    if (ckpt / "state.json").exists() and (out / "config.yaml").exists():
        import yaml

        if yaml.safe_load((out / "config.yaml").read_text()) != to_dict(cfg):
            raise UserError(
                f"{out} holds a checkpoint of a run with a different config; "
                "use another output_dir or delete the old run"
            )
    save_config(cfg, out / "config.yaml", header=f"ragtune run: {describe(info)}")
    atomic_write_text(out / "hardware.json", json.dumps(info, indent=2) + "\n")
    return ckpt


def trim_history(history: Path, resuming: bool, step: int) -> None:
    """Keep only the history lines the checkpoint has seen (resumed steps are logged again)."""
    if history.exists():
        kept = [ln for ln in history.read_text().splitlines() if resuming and json.loads(ln)["step"] <= step]
        atomic_write_text(history, "".join(ln + "\n" for ln in kept))


def linear_schedule(
    optimizer: torch.optim.Optimizer, total: int, warmup: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total``."""

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, group: bool, chunk_batches: int = 32
) -> list[list[int]]:
    """The batches of one epoch as lists of example indices; a pure function of ``(seed, epoch)``,
    so every process of a run, and a resumed run, draws the same ones.

    With ``group`` (length grouping), a shuffled order is cut into chunks of ``chunk_batches``
    batches, each chunk sorted by ``lengths`` (longest first, stable), cut into batches, and the
    batches shuffled again: a batch pads little and the order stays random.
    """
    rng = random.Random(seed * 100_003 + epoch)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    if group:
        chunk = batch_size * chunk_batches
        idx = [
            i
            for s in range(0, len(idx), chunk)
            for i in sorted(idx[s : s + chunk], key=lambda i: -lengths[i])
        ]
    batches = [idx[s : s + batch_size] for s in range(0, len(idx), batch_size)]
    if group:
        rng.shuffle(batches)
    return batches


def adamw(
    model: torch.nn.Module, lr: float, weight_decay: float, decay_norms: bool = True
) -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters; with ``decay_norms=False`` biases and norm
    weights are not decayed (the BERT recipe)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if decay_norms:
        return torch.optim.AdamW([p for _, p in named], lr=lr, weight_decay=weight_decay)
    exempt = [any(k in n for k in ("bias", "LayerNorm", "norm")) for n, _ in named]
    groups = [
        {"params": [p for (_, p), e in zip(named, exempt) if not e], "weight_decay": weight_decay},
        {"params": [p for (_, p), e in zip(named, exempt) if e], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)


def optimizer_step(
    params: Sequence[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    max_grad_norm: float,
) -> None:
    """After the backward pass: sum the gradients over processes, clip their norm to
    ``max_grad_norm`` (0: no clipping), step the optimiser and the learning-rate schedule."""
    dist.sum_gradients(params)
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    scheduler.step()


@dataclass
class TrainState:
    """How far a run has got; ``checkpoint/state.json``."""

    step: int = 0  # optimiser steps taken
    seen: int = 0  # training units seen (pairs or tokens, see Task.unit)
    best: dict[str, float] | None = None  # the best validation score so far and its step
    bad_evals: int = 0  # validations since the best one
    stopped: bool = False  # early-stopped


@dataclass
class Plan:
    """The length and rhythm of a run."""

    total: int  # optimiser steps
    steps_per_epoch: int
    warmup_ratio: float = 0.0  # linear warm-up over this share of the steps, then linear decay
    max_grad_norm: float = 0.0  # 0: no clipping
    eval_every: int = 0  # validate every N steps (0: at the end of each epoch)
    patience: int = 0  # stop after N validations without improvement (0: never)
    save_every: int = 0  # checkpoint every N steps (0: only at the end)


class Task(Protocol):
    """What a trainer plugs into :meth:`Run.fit`."""

    name: str  # progress-bar label
    unit: str  # what a step's size counts ("pairs", "tokens"): history and summary say <unit>_per_s
    metric: str  # the validation score's name, e.g. "nDCG@10" or "val_loss"
    higher_is_better: bool
    params: list[torch.nn.Parameter]  # the trainable parameters (gradients summed, clipped)
    # Optional: ``step_log``, a dict of the last step's own figures, merged into its history record.

    def epoch_steps(self, epoch: int) -> Sequence[Any]:
        """The step batches of an epoch (a pure function of seed and epoch)."""

    def backward(self, batch: Any) -> tuple[float, int]:
        """Forward and backward of one optimiser step: ``(loss, units over all processes)``."""

    def validate(self) -> tuple[float, dict[str, Any]] | None:
        """``(score, fields for the history record)``, or None without validation data."""

    def save_model(self, folder: Path) -> None:
        """Write the model (a standard folder) into ``folder``."""

    def checkpoint(self, folder: Path) -> dict[str, Any]:
        """Write what a resumed run needs of the model into ``folder`` (folders), and return the
        tensors to store beside the optimiser state (``state.safetensors``)."""


class Run:
    """One training run in ``cfg.output_dir``: see the module docstring."""

    def __init__(self, cfg: Any, out: Path | None = None):
        dist.setup()
        self.cfg = cfg
        self.out = Path(out if out is not None else cfg.output_dir)
        self.checkpoint = dist.from_main(lambda: start_run(cfg, self.out))
        self.main = dist.is_main()
        self.resuming = (self.checkpoint / "state.json").exists()
        self.state = TrainState()
        self.saved: dict[str, Any] = {}
        if self.resuming:
            self.state = TrainState(**json.loads((self.checkpoint / "state.json").read_text()))
            self.saved = load_state(self.checkpoint / "state.safetensors")
            log.info("resuming from %s at step %d", self.checkpoint, self.state.step)
        self.step_seconds = 0.0  # time in optimisation steps only (no validation, no checkpoints)
        self.step_units = 0
        seed_everything(cfg.seed)

    # ------------------------------------------------------------------------------------ loop

    def fit(self, task: Task, optimizer: torch.optim.Optimizer, plan: Plan) -> TrainState:
        """Train until ``plan.total`` steps or early stopping; returns the final state."""
        state, out = self.state, self.out
        scheduler = linear_schedule(optimizer, plan.total, int(plan.total * plan.warmup_ratio))
        if self.resuming:
            optimizer.load_state_dict(self.saved["optimizer"])
            scheduler.load_state_dict(self.saved["scheduler"])
            torch.set_rng_state(self.saved["torch_rng"])
        history = out / "history.jsonl"
        if self.main:
            trim_history(history, self.resuming, state.step)
        writer = tensorboard_writer(self.cfg, self.out, self.state.step + 1 if self.resuming else None)
        eval_every = plan.eval_every or plan.steps_per_epoch
        bar = tqdm(total=plan.total, initial=state.step, desc=task.name, unit="step", disable=not self.main)
        while state.step < plan.total and not state.stopped:
            epoch, offset = divmod(state.step, plan.steps_per_epoch)
            for batch in task.epoch_steps(epoch)[offset:]:
                started = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                loss, units = task.backward(batch)
                optimizer_step(task.params, optimizer, scheduler, plan.max_grad_norm)
                seconds = time.perf_counter() - started
                self.step_seconds += seconds
                self.step_units += units
                state.step += 1
                state.seen += units
                record = {
                    "step": state.step,
                    "epoch": epoch,
                    "loss": loss,
                    "lr": scheduler.get_last_lr()[0],
                    f"{task.unit}_per_s": units / seconds if seconds > 0 else 0.0,
                    "seconds": round(seconds, 4),
                    "processes": dist.world_size(),
                    **getattr(task, "step_log", {}),  # a task's own per-step figures (DPO's reward margin)
                }
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", speed=f"{record[f'{task.unit}_per_s']:.1f} {task.unit}/s")
                if state.step % eval_every == 0 or state.step == plan.total:
                    result = dist.from_main(task.validate)
                    if result is not None:
                        record.update(result[1])
                        self._record_validation(task, result[0], plan.patience)
                if self.main:
                    with history.open("a") as fh:
                        fh.write(json.dumps(record) + "\n")
                    if writer is not None:
                        log_scalars(writer, record, state.step)
                done = state.stopped or state.step >= plan.total
                if done or (plan.save_every and state.step % plan.save_every == 0):
                    if self.main:
                        self._save_checkpoint(task, optimizer, scheduler)
                    dist.barrier()
                if done:
                    break
        bar.close()
        if writer is not None:
            writer.close()
        return state

    def _record_validation(self, task: Task, score: float, patience: int) -> None:
        state = self.state
        log.info("step %d: validation %s %.4f", state.step, task.metric, score)
        best = state.best
        better = best is None or (
            score > best[task.metric] if task.higher_is_better else score < best[task.metric]
        )
        if better:
            state.best = {task.metric: score, "step": state.step}
            state.bad_evals = 0
            if self.main:
                save_dir_atomically(self.out / "best", task.save_model)
        else:
            state.bad_evals += 1
            if patience and state.bad_evals >= patience:
                log.info("early stopping: %d validations without improvement", state.bad_evals)
                state.stopped = True

    def _save_checkpoint(self, task: Task, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        def write(tmp: Path) -> None:
            tensors = task.checkpoint(tmp)
            save_state(
                {
                    **tensors,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                },
                tmp / "state.safetensors",
            )
            (tmp / "state.json").write_text(json.dumps(asdict(self.state)))

        save_dir_atomically(self.checkpoint, write)

    # ---------------------------------------------------------------------------------- finish

    def finish(
        self, task: Task, final: str, summary: dict[str, Any], after: Callable[[Path], None] | None = None
    ) -> Path:
        """Write ``final/`` (the best validated model, else the last one), call ``after(final)``
        and write ``train_summary.json`` (``summary`` plus the run's counts, speed and hardware);
        the main process writes, the others wait. Returns the output folder."""
        from ragtune.precision import hardware

        if not self.main:
            dist.barrier()  # the main process writes the outputs
            return self.out
        folder, best = self.out / final, self.out / "best"
        if best.exists():
            save_dir_atomically(folder, lambda tmp: shutil.copytree(best, tmp, dirs_exist_ok=True))
        else:
            save_dir_atomically(folder, task.save_model)
        if after is not None:
            after(folder)
        state, unit = self.state, task.unit
        summary = {
            "steps": state.step,
            **summary,
            "step_seconds_this_process": self.step_seconds,
            f"{unit}_per_s": self.step_units / self.step_seconds if self.step_seconds else None,
            f"{unit}_seen": state.seen,
            "processes": dist.world_size(),
            "best": state.best,
            "early_stopped": state.stopped,
            "hardware": hardware(self.cfg.precision),
        }
        atomic_write_text(self.out / "train_summary.json", json.dumps(summary, indent=2) + "\n")
        log.info("training done: %s", summary)
        dist.barrier()
        return self.out


def tensorboard_writer(cfg: Any, out: Path, purge_step: int | None = None) -> Any:
    """A TensorBoard writer in ``out/tensorboard`` for the main process when ``cfg.logging.tensorboard``
    is on and the package is installed, else None. ``purge_step``: a resumed run drops the events
    from there on (they are logged again)."""
    if not dist.is_main() or not cfg.logging.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("tensorboard is not installed: metrics go to history.jsonl only")
        return None
    return SummaryWriter(str(out / "tensorboard"), purge_step=purge_step)


def log_scalars(writer: Any, record: dict[str, Any], step: int) -> None:
    """A history record as TensorBoard scalars: ``train/<key>``, and ``val/<name>`` for validation
    (``val_loss`` -> ``val/loss``; a ``val`` mapping -> ``val/<metric>``)."""
    for key, value in record.items():
        if key in ("step", "epoch", "processes"):
            continue
        if isinstance(value, dict):
            for name, v in value.items():
                if isinstance(v, int | float):
                    writer.add_scalar(f"{key}/{name}", v, step)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            tag = "val/" + key[4:] if key.startswith("val_") else f"train/{key}"
            writer.add_scalar(tag, value, step)
