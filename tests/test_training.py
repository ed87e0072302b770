"""The one training loop (ragtune.training.Run) with a toy task: validation, best model, early
stopping, resume, history and TensorBoard."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import ragtune.training as training
from ragtune.config import LoggingConfig
from ragtune.training import Plan, Run, adamw, epoch_batches
from tests.conftest import killed_after_checkpoints


@dataclass
class ToyConfig:
    output_dir: Path = Path("runs/toy")
    seed: int = 0
    precision: str = "fp32"
    logging: LoggingConfig = field(default_factory=LoggingConfig)


class ToyTask:
    """Least squares on a fixed random problem; ``scores`` replaces the validation loss."""

    name, unit, metric, higher_is_better = "toy", "pairs", "val_loss", False

    def __init__(self, model: torch.nn.Linear, scores: list[float] | None = None):
        g = torch.Generator().manual_seed(1)
        self.x, self.w = torch.randn(40, 3, generator=g), torch.tensor([[1.0], [-2.0], [0.5]])
        self.y = self.x @ self.w
        self.model, self.params, self.scores = model, list(model.parameters()), scores

    def epoch_steps(self, epoch: int) -> list[list[int]]:
        return epoch_batches([1] * 32, 8, 0, epoch, False)  # 4 steps per epoch, the first 32 rows

    def backward(self, batch: list[int]) -> tuple[float, int]:
        loss = torch.nn.functional.mse_loss(self.model(self.x[batch]), self.y[batch])
        loss.backward()
        return float(loss.detach()), len(batch)

    def validate(self) -> tuple[float, dict]:
        with torch.no_grad():
            loss = float(torch.nn.functional.mse_loss(self.model(self.x[32:]), self.y[32:]))
        if self.scores is not None:
            loss = self.scores.pop(0)
        return loss, {"val_loss": loss}

    def save_model(self, folder: Path) -> None:
        save_file(self.model.state_dict(), str(folder / "model.safetensors"))

    def checkpoint(self, folder: Path) -> dict:
        return {"weights": {k: v.detach().clone() for k, v in self.model.state_dict().items()}}


def run_toy(
    out: Path, scores: list[float] | None = None, patience: int = 0, tensorboard: bool = True
) -> Path:
    run = Run(ToyConfig(output_dir=out, logging=LoggingConfig(tensorboard=tensorboard)))
    model = torch.nn.Linear(3, 1)
    if run.resuming:
        model.load_state_dict(run.saved["weights"])
    task = ToyTask(model, scores)
    run.fit(
        task,
        adamw(model, 0.5, 0.0),
        Plan(total=12, steps_per_epoch=4, eval_every=4, patience=patience, save_every=3),
    )
    return run.finish(task, "model", {"examples": 32})


def history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


def test_the_loop_trains_validates_and_keeps_the_best_model(tmp_path: Path) -> None:
    out = run_toy(tmp_path / "a", scores=[3.0, 1.0, 2.0])
    hist = history(out)
    first, last = sum(h["loss"] for h in hist[:3]), sum(h["loss"] for h in hist[-3:])
    assert [h["step"] for h in hist] == list(range(1, 13)) and last < first / 4
    assert [h["val_loss"] for h in hist if "val_loss" in h] == [3.0, 1.0, 2.0]  # steps 4, 8, 12
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 12 and summary["examples"] == 32 and summary["pairs_seen"] == 12 * 8
    assert summary["best"] == {"val_loss": 1.0, "step": 8} and not summary["early_stopped"]
    assert summary["pairs_per_s"] > 0 and summary["hardware"]["precision"] == "fp32"
    # model/ is the best validated model (step 8), not the last one
    best, final = (
        load_file(str(out / "best" / "model.safetensors")),
        load_file(str(out / "model" / "model.safetensors")),
    )
    assert all(torch.equal(best[k], final[k]) for k in best)
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 12


def test_the_loop_stops_early_after_patience_validations_without_improvement(tmp_path: Path) -> None:
    out = run_toy(tmp_path, scores=[1.0, 2.0, 0.5], patience=1)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["early_stopped"] and summary["steps"] == 8 and len(history(out)) == 8


def test_a_resumed_run_ends_with_the_weights_and_history_of_an_unbroken_one(tmp_path: Path) -> None:
    whole = run_toy(tmp_path / "whole")
    killed_after_checkpoints(training, 2, lambda: run_toy(tmp_path / "part"))  # after step 6
    assert json.loads((tmp_path / "part" / "checkpoint" / "state.json").read_text())["step"] == 6
    part = run_toy(tmp_path / "part")
    a, b = (
        load_file(str(whole / "model" / "model.safetensors")),
        load_file(str(part / "model" / "model.safetensors")),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in history(part)] == [h["loss"] for h in history(whole)]


def test_metrics_go_to_tensorboard_as_well_as_the_history(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = run_toy(tmp_path / "tb", scores=[3.0, 1.0, 2.0])
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == list(range(1, 13))
    assert [e.value for e in losses] == pytest.approx([h["loss"] for h in history(out)], rel=1e-6)
    assert [(e.step, e.value) for e in events.Scalars("val/loss")] == [(4, 3.0), (8, 1.0), (12, 2.0)]
    assert {"train/lr", "train/pairs_per_s"} <= set(events.Tags()["scalars"])
    off = run_toy(tmp_path / "off", tensorboard=False)
    assert (off / "history.jsonl").exists() and not (off / "tensorboard").exists()


def test_epoch_batches_are_a_pure_function_of_seed_and_epoch() -> None:
    lengths = [5, 1, 9, 3, 7, 2, 8, 4, 6, 10] * 3
    a = epoch_batches(lengths, 4, seed=1, epoch=0, group=True)
    assert a == epoch_batches(lengths, 4, seed=1, epoch=0, group=True)
    assert a != epoch_batches(lengths, 4, seed=1, epoch=1, group=True)
    assert sorted(i for b in a for i in b) == list(range(30))
    # grouped: within a chunk each batch holds neighbours in length order
    one_chunk = epoch_batches(lengths, 4, seed=1, epoch=0, group=True, chunk_batches=100)
    spans = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in one_chunk]
    assert max(spans) <= 2
