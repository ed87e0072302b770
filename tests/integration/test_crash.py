"""kill -9 in the middle of encoding, indexing, mining and training (real SIGKILLs of the CLI
process): rerunning the same command resumes or restarts cleanly and ends with the result of an
unbroken run; no half-written file is ever read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ragtune.config import save_config
from tests.conftest import ROOT
from tests.integration.test_distributed import _retriever_cfg, kill_tree

pytestmark = pytest.mark.slow


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    return subprocess.Popen(
        [sys.executable, "-m", "ragtune.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 300) -> bool:
    """SIGKILL ``proc`` (and its group) as soon as ``ready()``; False when it ended first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        if ready():
            kill_tree(proc)
            return True
        time.sleep(0.005)
    raise TimeoutError("the condition to kill never came")


def _step(state: Path) -> int:
    """The step of a checkpoint's state.json, -1 while there is none (or it is being swapped)."""
    try:
        return json.loads(state.read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError):
        return -1


def _finish(args: list[str], log: Path) -> None:
    proc = _start(args, log)
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]


def _config(tmp_path: Path, name: str, cfg) -> Path:
    path = tmp_path / f"{name}.yaml"
    save_config(cfg, path)
    return path


def test_kill_during_encoding_and_indexing(tmp_path: Path, tiny_encoder: Path) -> None:
    from ragtune.retriever.index import DenseIndex
    from ragtune.retriever.model import encode, load_encoder

    def cfg(name: str):
        return _retriever_cfg(
            tmp_path / name, tiny_encoder, "index.kind=hnsw", "index.shard_size=16", "eval.batch_size=4"
        )

    _finish(["index", "build", "--config", str(_config(tmp_path, "ref", cfg("ref")))], tmp_path / "ref.log")
    args = ["index", "build", "--config", str(_config(tmp_path, "run", cfg("run")))]
    emb = tmp_path / "run" / "embeddings"
    # 1) killed while encoding, after the third of 22 shards.
    assert _kill_when(_start(args, tmp_path / "k1.log"), lambda: (emb / "shard_00002.npy").exists())
    shards = sorted(p.name for p in emb.glob("shard_*.npy"))
    assert 3 <= len(shards) < 22 and not (emb / "embeddings.json").exists()
    # 2) killed once the encoding is complete: while building or writing the index (or just after).
    _kill_when(_start(args, tmp_path / "k2.log"), lambda: (emb / "embeddings.json").exists())
    assert f"resuming: {len(shards)} of 22 shards" in (tmp_path / "k2.log").read_text()
    if (tmp_path / "run" / "index").exists():  # whatever is there is whole
        DenseIndex.load(tmp_path / "run" / "index")
    _finish(args, tmp_path / "final.log")
    assert "resuming: 22 of 22 shards" in (tmp_path / "final.log").read_text()
    ref, run = DenseIndex.load(tmp_path / "ref" / "index"), DenseIndex.load(tmp_path / "run" / "index")
    assert ref.ids == run.ids and len(run) == 337
    model = load_encoder(str(tiny_encoder))
    queries = encode(
        model, ["fishing boats of the harbour", "the old lighthouse"], max_length=64, precision="fp32"
    )
    assert ref.search(queries, 10) == run.search(queries, 10)
    assert not [p for p in (tmp_path / "run").rglob("*") if p.name.endswith((".tmp", ".old"))]


def test_kill_during_mining_restarts_cleanly(tmp_path: Path, tiny_encoder: Path) -> None:
    def cfg(name: str):
        return _retriever_cfg(
            tmp_path / name,
            tiny_encoder,
            "mining.method=dense",
            f"mining.out={tmp_path / name / 'triplets.jsonl'}",
        )

    _finish(
        ["retriever", "mine", "--config", str(_config(tmp_path, "ref", cfg("ref")))], tmp_path / "ref.log"
    )
    args = ["retriever", "mine", "--config", str(_config(tmp_path, "run", cfg("run")))]
    out = tmp_path / "run" / "triplets.jsonl"
    # Killed after it started encoding (its progress bar is in the log), before the output exists.
    proc = _start(args, tmp_path / "k.log")
    assert _kill_when(proc, lambda: "Batches" in (tmp_path / "k.log").read_text() or out.exists())
    assert not out.exists() or out.read_text() == (tmp_path / "ref" / "triplets.jsonl").read_text()
    _finish(args, tmp_path / "final.log")
    assert out.read_text() == (tmp_path / "ref" / "triplets.jsonl").read_text()
    assert len(out.read_text().splitlines()) > 100


def test_kill_during_generator_training_resumes_to_the_same_adapter(tmp_path: Path, tmp_path_factory) -> None:
    from safetensors.torch import load_file

    from tests.generator.test_train import make_cfg, tiny_lm_folder

    lm = tiny_lm_folder(tmp_path_factory)

    def cfg(name: str):
        return make_cfg(
            tmp_path / name,
            lm,
            "train.epochs=2",
            "train.max_steps=12",
            "train.save_every=2",
            "peft.dropout=0",
        )

    _finish(
        ["generator", "train", "--config", str(_config(tmp_path, "ref", cfg("ref")))], tmp_path / "ref.log"
    )
    args = ["generator", "train", "--config", str(_config(tmp_path, "run", cfg("run")))]
    state = tmp_path / "run" / "checkpoint" / "state.json"
    assert _kill_when(_start(args, tmp_path / "k.log"), lambda: _step(state) >= 4)
    assert json.loads(state.read_text())["step"] < 12
    _finish(args, tmp_path / "final.log")
    a = load_file(tmp_path / "ref" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_allclose(a[name].numpy(), b[name].numpy(), rtol=0, atol=1e-6)
    assert len((tmp_path / "run" / "history.jsonl").read_text().splitlines()) == 12
