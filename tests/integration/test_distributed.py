"""Multi-process training under ``torchrun`` (2 CPU processes, gloo) against one-process runs of the
same global batch: the same loss curve, the same weights, in-batch negatives gathered across
processes, rank 0 alone writing, and a checkpoint of a killed 2-process run resumed by 1 process."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ragtune.config import save_config
from ragtune.generator.config import GeneratorConfig
from ragtune.retriever.config import RetrieverConfig
from tests.conftest import ROOT
from tests.e2e.test_train import tiny_config, tiny_lm
from tests.generator.test_dpo import dpo_cfg, pairs_file
from tests.generator.test_train import make_cfg, tiny_lm_folder
from tests.reranker.test_reranker import _cfg as reranker_cfg
from tests.reranker.test_reranker import demo_triplets
from tests.retriever.test_train import _cfg as retriever_cfg

pytestmark = pytest.mark.slow
# module-scoped fixtures: tests/e2e's tiny Llama over the demo words, tests/generator's preference pairs
# and tests/reranker's mined demo triplets
__all__ = ["demo_triplets", "pairs_file", "tiny_lm"]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    env.pop("WORLD_SIZE", None)
    return env


def _torchrun(kind: str, cfg, nproc: int, log: Path, command: str = "train") -> subprocess.Popen:
    """Start ``torchrun --nproc_per_node nproc -m ragtune.cli <kind> <command> --config <cfg>``."""
    path = Path(cfg.output_dir).with_suffix(".yaml")
    save_config(cfg, path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd += ["-m", "ragtune.cli", kind, command, "--config", str(path)]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=_env(), stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a process and every descendant (torchrun's workers live in their own sessions)."""
    for pid in [*_descendants(proc.pid), proc.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def _run(kind: str, cfg, nproc: int, log: Path, command: str = "train") -> Path:
    proc = _torchrun(kind, cfg, nproc, log, command)
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    return Path(cfg.output_dir)


def _history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(next(p for p in sorted(folder.rglob("*.safetensors"))))


def _retriever_cfg(out: Path, encoder: Path, *extra: str) -> RetrieverConfig:
    """The retriever unit tests' tiny config, checkpointing every 2 steps, validating every 6,
    with the symmetric term (its gather is exercised too)."""
    return retriever_cfg(
        out, encoder, "train.save_every=2", "train.eval_every=6", "train.symmetric=true", *extra
    )


@pytest.mark.parametrize("cached", [False, True])
def test_two_process_retriever_matches_one_process(tmp_path: Path, tiny_encoder: Path, cached: bool) -> None:
    extra = [f"train.cached={str(cached).lower()}", "train.mini_batch_size=3"]
    one = _run("retriever", _retriever_cfg(tmp_path / "one", tiny_encoder, *extra), 1, tmp_path / "one.log")
    two = _run("retriever", _retriever_cfg(tmp_path / "two", tiny_encoder, *extra), 2, tmp_path / "two.log")
    h1, h2 = _history(one), _history(two)
    # 101 training pairs in batches of 8: 13 steps, the last one of 5 pairs (shards of 3 and 2).
    assert [h["step"] for h in h1] == [h["step"] for h in h2] == list(range(1, 14))
    assert {h["processes"] for h in h2} == {2} and {h["processes"] for h in h1} == {1}
    losses1, losses2 = [h["loss"] for h in h1], [h["loss"] for h in h2]
    assert losses1 == pytest.approx(losses2, rel=1e-4)
    assert losses1[0] != pytest.approx(losses1[-1], rel=1e-2)  # the curve moves: the check has teeth
    val1 = [h["val"]["nDCG@10"] for h in h1 if "val" in h]
    val2 = [h["val"]["nDCG@10"] for h in h2 if "val" in h]
    assert len(val1) == 3 and val1 == pytest.approx(val2, abs=1e-4)
    w1, w2 = _weights(one / "model"), _weights(two / "model")
    assert set(w1) == set(w2)
    for name in w1:
        torch.testing.assert_close(w1[name], w2[name], rtol=1e-3, atol=1e-5)
    # Only rank 0 wrote: one history line per step, no stray temporary folders.
    assert not list(two.glob(".*.tmp")) and len(h2) == 13


def test_gathered_negatives_change_the_loss(tmp_path: Path, tiny_encoder: Path) -> None:
    """Without the gather each process would see only its own 4 pairs: the global loss over 8 pairs
    (log 8 ~ 2.08 at random init) differs from a 4-pair loss (log 4 ~ 1.39); the 2-process run's
    first loss is the 8-pair one."""
    from ragtune.retriever.train import build_examples, load_for_training, step_loss

    cfg = _retriever_cfg(tmp_path / "x", tiny_encoder, "train.symmetric=false")
    from ragtune.retriever.train import _training_triplets, batch_order, split_validation

    triplets, _ = _training_triplets(cfg)
    examples = build_examples(split_validation(triplets, 0.2, cfg.seed)[0], 0)
    first = [examples[i] for i in batch_order(examples, 8, cfg.seed, 0, False)[0]]
    torch.manual_seed(cfg.seed)
    model = load_for_training(cfg)
    full, half = step_loss(model, cfg, first), step_loss(model, cfg, first[:4])
    assert full > half + 0.3
    two = _run(
        "retriever",
        _retriever_cfg(tmp_path / "two", tiny_encoder, "train.symmetric=false"),
        2,
        tmp_path / "l",
    )
    assert _history(two)[0]["loss"] == pytest.approx(full, rel=1e-4)


def test_killed_two_process_run_resumes_with_one_process(tmp_path: Path, tiny_encoder: Path) -> None:
    from ragtune.retriever.train import train

    extra = ("train.epochs=2", "train.save_every=2")
    reference = train(_retriever_cfg(tmp_path / "ref", tiny_encoder, *extra))
    cfg = _retriever_cfg(tmp_path / "run", tiny_encoder, *extra)
    proc = _torchrun("retriever", cfg, 2, tmp_path / "killed.log")
    state = tmp_path / "run" / "checkpoint" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads(state.read_text())["step"] >= 6:
                break
        except (FileNotFoundError, json.JSONDecodeError):
            pass  # no checkpoint yet, or one being swapped in
        time.sleep(0.01)
    kill_tree(proc)  # kill -9 the launcher and both workers
    killed_at = json.loads(state.read_text())["step"]
    assert 6 <= killed_at < 26, "the run was meant to be killed mid-way"
    resumed = train(cfg)  # the same command, now one process
    hist = _history(resumed)
    assert [h["step"] for h in hist] == list(range(1, 27))
    assert {h["processes"] for h in hist[:killed_at]} == {2} and {h["processes"] for h in hist[-1:]} == {1}
    a, b = _weights(reference / "model"), _weights(resumed / "model")
    for name in a:  # 26 Adam steps, some summed in another order: float32 noise, far below an lr step
        torch.testing.assert_close(a[name], b[name], rtol=1e-3, atol=1e-4)


def test_two_process_generator_matches_one_process(tmp_path: Path, tmp_path_factory) -> None:
    lm = tiny_lm_folder(tmp_path_factory)

    def cfg(name: str) -> GeneratorConfig:
        return make_cfg(
            tmp_path / name, lm, "train.grad_accum=2", "train.max_steps=4", "train.lr=5e-3", "peft.dropout=0",
            "train.eval_every=2", "train.save_every=2",
        )  # fmt: skip

    one = _run("generator", cfg("one"), 1, tmp_path / "one.log")
    two = _run("generator", cfg("two"), 2, tmp_path / "two.log")
    h1, h2 = _history(one), _history(two)
    assert [h["step"] for h in h1] == [h["step"] for h in h2] == [1, 2, 3, 4]
    assert [h["loss"] for h in h1] == pytest.approx([h["loss"] for h in h2], rel=1e-4)
    assert [h["val_loss"] for h in h1 if "val_loss" in h] == pytest.approx(
        [h["val_loss"] for h in h2 if "val_loss" in h], rel=1e-4
    )
    assert h1[0]["loss"] > h1[-1]["loss"]
    s1 = json.loads((one / "train_summary.json").read_text())
    s2 = json.loads((two / "train_summary.json").read_text())
    assert s1["tokens_seen"] == s2["tokens_seen"] and s2["processes"] == 2
    w1, w2 = _weights(one / "adapter"), _weights(two / "adapter")
    for name in w1:
        torch.testing.assert_close(w1[name], w2[name], rtol=1e-3, atol=1e-5)


def test_two_process_dpo_matches_one_process(tmp_path: Path, tmp_path_factory, pairs_file: Path) -> None:
    """``generator dpo`` under torchrun: each process scores its shard of the pairs, the loss and the
    logged rewards are global means, and the adapter equals the one-process run's."""
    lm = tiny_lm_folder(tmp_path_factory)

    def cfg(name: str) -> GeneratorConfig:
        return dpo_cfg(
            tmp_path / name, lm, pairs_file, "train.grad_accum=2", "train.max_steps=3", "train.lr=2e-2",
            "peft.dropout=0", "data.val_fraction=0.25", "train.eval_every=2", "train.save_every=2",
        )  # fmt: skip

    one = _run("generator", cfg("one"), 1, tmp_path / "one.log", "dpo")
    two = _run("generator", cfg("two"), 2, tmp_path / "two.log", "dpo")
    h1, h2 = _history(one), _history(two)
    assert [h["step"] for h in h1] == [h["step"] for h in h2] == [1, 2, 3]
    for key in ("loss", "reward_margin", "logp_chosen", "logp_rejected"):
        assert [h[key] for h in h1] == pytest.approx([h[key] for h in h2], rel=1e-4, abs=1e-6), key
    assert [h["val_loss"] for h in h1 if "val_loss" in h] == pytest.approx(
        [h["val_loss"] for h in h2 if "val_loss" in h], rel=1e-4
    )
    assert h1[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # the policy starts as its reference
    s1 = json.loads((one / "train_summary.json").read_text())
    s2 = json.loads((two / "train_summary.json").read_text())
    assert s1["pairs"] == s2["pairs"] and s2["processes"] == 2
    w1, w2 = _weights(one / "adapter"), _weights(two / "adapter")
    assert set(w1) == set(w2)
    # the LoRA's B matrices start at 0: they moved far beyond the tolerance, so the check has teeth
    assert max(float(w1[name].abs().max()) for name in w1 if "lora_B" in name) > 1e-3
    for name in w1:
        torch.testing.assert_close(w1[name], w2[name], rtol=1e-3, atol=1e-5)


def test_two_process_reranker_matches_one_process(
    tmp_path: Path, tiny_encoder: Path, demo_triplets: Path
) -> None:
    """``reranker train`` under torchrun: each process scores its share of a batch's query groups, and
    the losses, validation and weights equal the one-process run's."""
    small = demo_triplets.with_name("small.jsonl")  # 16 training groups + 4 validation, 4 negatives each
    extra = ("train.epochs=6", "data.val_fraction=0.2", "train.lr=1e-2", "train.mini_batch_size=3")
    one = _run(
        "reranker", reranker_cfg(tmp_path / "one", tiny_encoder, small, *extra), 1, tmp_path / "one.log"
    )
    two = _run(
        "reranker", reranker_cfg(tmp_path / "two", tiny_encoder, small, *extra), 2, tmp_path / "two.log"
    )
    h1, h2 = _history(one), _history(two)
    assert [h["step"] for h in h1] == [h["step"] for h in h2] == list(range(1, 7))
    assert {h["processes"] for h in h2} == {2}
    assert [h["loss"] for h in h1] == pytest.approx([h["loss"] for h in h2], rel=1e-4)
    assert h1[-1]["loss"] < 0.95 * h1[0]["loss"]  # it learned: the weights moved, the check has teeth
    assert [h["val"]["nDCG@10"] for h in h1] == pytest.approx([h["val"]["nDCG@10"] for h in h2], abs=1e-4)
    w1 = load_file(one / "model" / "model.safetensors")
    w2 = load_file(two / "model" / "model.safetensors")
    assert set(w1) == set(w2)
    # Adam turns float32 noise in a near-zero gradient into a step of its own, so single elements can
    # differ by ~1e-4; the weights as a whole agree (5e-5 apart, relative, when measured), where the
    # same run batched 8 groups instead of 16, as unsummed gradients would be, lands 0.19 away
    diff = torch.cat([(w1[n] - w2[n]).flatten() for n in w1]).norm()
    assert float(diff / torch.cat([w1[n].flatten() for n in w1]).norm()) < 1e-3


def test_two_process_joint_run_matches_one_process(tmp_path: Path, tiny_encoder: Path, tiny_lm: Path) -> None:
    extra = ("retriever.mode=both", "rounds=1", "generator.batch_size=4", "generator.grad_accum=2")
    one = _run("e2e", tiny_config(tmp_path / "one", tiny_encoder, tiny_lm, *extra), 1, tmp_path / "one.log")
    two = _run("e2e", tiny_config(tmp_path / "two", tiny_encoder, tiny_lm, *extra), 2, tmp_path / "two.log")
    r1, r2 = (json.loads((o / "report.json").read_text())["rounds"] for o in (one, two))
    for stage, keys in (
        ("generator", ("loss_first", "loss_last", "loss_mean")),
        ("retriever", ("loss_first", "loss_last")),
    ):
        for key in keys:
            assert r1[1]["stages"][stage][key] == pytest.approx(r2[1]["stages"][stage][key], rel=1e-4), (
                stage,
                key,
            )
    assert (
        r1[1]["stages"]["retriever"]["false_negatives_dropped"]
        == r2[1]["stages"]["retriever"]["false_negatives_dropped"]
    )
    for r in (0, 1):
        m1, m2 = r1[r]["metrics"], r2[r]["metrics"]
        for key in ("Recall@5", "MRR@10", "nDCG@10"):
            assert m1[key] == pytest.approx(m2[key], abs=1e-6), (r, key)
        assert m1["ROUGE-L"] == pytest.approx(m2["ROUGE-L"], abs=0.05)
    preds = (two / "rounds" / "round_1" / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == 12  # every evaluation question, written once by rank 0
    assert (two / "query_encoder").exists() and (two / "adapter").exists()
