"""What every benchmark script shares: the result file's shape, versions, hardware and peak memory.

Each ``benchmarks/results/<name>.json`` has the shape given in ARCHITECTURE.md::

    {"benchmark", "date", "command", "versions", "hardware", "seed", "variants": {name: {...}}}
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import resource
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"

_PACKAGES = (
    "ragtune",
    "torch",
    "transformers",
    "sentence-transformers",
    "faiss-cpu",
    "datasets",
    "peft",
    "rank-bm25",
    "rouge-score",
    "sacrebleu",
    "numpy",
)


def versions() -> dict[str, str]:
    """Installed versions of ragtune and the libraries it builds on."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def hardware(precision: str = "auto") -> dict[str, Any]:
    """CPU model and kind (torch's capability, AMX / AVX512-BF16, native bf16), cores, threads,
    memory, GPU, and what ``precision`` resolves to here (:func:`ragtune.precision.hardware`)."""
    from ragtune.precision import hardware as describe_hardware

    return describe_hardware(precision)


def cpu_kind() -> str:
    """A short name for the kind of CPU the figures come from, for result file names:
    ``amx``, ``avx512_bf16`` (native bf16 without AMX), ``avx512`` or ``avx2`` (no native bf16; as
    torch reports its capability, so ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` gives
    ``avx2`` on any x86 CPU), or ``gpu``."""
    hw = hardware()
    if hw["gpu"]:
        return "gpu"
    if hw["native_bf16"]:
        return "amx" if hw["amx"] else "avx512_bf16"
    return str(hw["cpu_capability"]).lower()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_result(
    name: str,
    command: str,
    seed: int,
    variants: dict[str, dict[str, Any]],
    extra: dict[str, Any] | None = None,
    precision: str = "auto",
) -> Path:
    """Write ``results/<name>.json`` atomically and return its path; ``hardware`` records the
    machine and what ragtune's ``precision`` setting (``auto`` unless the script forced one)
    resolved to on it."""
    doc: dict[str, Any] = {
        "benchmark": name,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "versions": versions(),
        "hardware": hardware(precision),
        "seed": seed,
        "variants": variants,
    }
    if extra:
        doc.update(extra)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def scifact_bm25_negatives(path: Path | None = None) -> Path:
    """SciFact training triplets whose hard negative is the top BM25 document outside the query's
    qrels (what the peer recipe uses), mined once with ``ragtune retriever mine``; returns the path
    (default ``benchmarks/retriever_scifact/work/bm25_top1.jsonl``)."""
    import sys

    path = path or Path(__file__).resolve().parent / "retriever_scifact" / "work" / "bm25_top1.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        child(
            [
                *[sys.executable, "-m", "ragtune.cli", "retriever", "mine"],
                *[f"data.beir_dir={SHARED_DATASETS / 'scifact'}", "mining.fn_ratio=null"],
                *["mining.num_negatives=1", f"mining.out={path}"],
            ],
            path.with_suffix(".log"),
        )
    return path


def child(cmd: list[str], log: Path, cwd: Path | None = None) -> tuple[float, float]:
    """Run ``cmd`` as a child process (output to ``log``, offline); return (wall seconds, peak RSS in
    MB of that child, from wait4). A failed child raises."""
    wall, rss, code = child_status(cmd, log, cwd)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed; see {log}")
    return wall, rss


def child_status(cmd: list[str], log: Path, cwd: Path | None = None) -> tuple[float, float, int]:
    """:func:`child` that does not raise: (wall seconds, peak RSS MB, exit code; -9 when killed,
    e.g. by the kernel's out-of-memory killer)."""
    import subprocess
    import time

    start = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(
            cmd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=cwd or Path(__file__).resolve().parents[1],
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
        )
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    return wall, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def peer_parser(*, negatives: int, batch_size: int, lr: float):
    """The arguments every sentence-transformers peer trainer script takes: TRIPLETS.jsonl, BEIR_DIR
    and OUT_DIR, then ``--negatives``, ``--epochs``, ``--batch-size``, ``--lr``, ``--seed`` and
    ``--precision`` (``auto``: the peer's best precision on the CPU at hand)."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("triplets", type=Path)
    ap.add_argument("beir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--negatives", type=int, default=negatives)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=batch_size)
    ap.add_argument("--lr", type=float, default=lr)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    return ap


def peer_triplets(args) -> list:
    """The peer's training triplets, read with ragtune's own loader (the same rows ragtune trains on)."""
    from ragtune.data.io import load_corpus, load_queries, load_triplets

    corpus, queries = load_corpus(args.beir / "corpus.jsonl"), load_queries(args.beir / "queries.jsonl")
    return load_triplets(args.triplets, corpus, queries)


def peer_bf16(args) -> bool:
    """Whether the peer trains under bf16 mixed precision: ``--precision`` as ragtune resolves it."""
    from ragtune.precision import resolve_precision

    return resolve_precision(args.precision, "cpu") == "bf16"


def peer_training_args(cls, args, logging_steps: int):
    """``cls`` (a sentence-transformers ``*TrainingArguments``) set as every peer run is: CPU, the
    script's epochs / batch size / lr / seed / precision, 10% warm-up, no checkpoints, no reporting."""
    return cls(
        output_dir=str(args.out / "trainer"),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_steps=0.1,  # a float is a ratio in transformers 5
        bf16=peer_bf16(args),
        seed=args.seed,
        save_strategy="no",
        report_to=[],
        logging_steps=logging_steps,
        use_cpu=True,
    )


def run_peer(trainer, model, args, pairs: int, **extra: Any) -> dict[str, Any]:
    """Time ``trainer.train()``, save ``model`` to OUT_DIR/model, and write (and print)
    OUT_DIR/peer_stats.json: train_s, pairs, pairs_per_s, steps, train_loss, precision, ``extra``."""
    import time

    start = time.perf_counter()
    result = trainer.train()
    train_s = time.perf_counter() - start
    model.save(str(args.out / "model"))
    stats = {
        "train_s": train_s,
        "pairs": pairs,
        "pairs_per_s": pairs / train_s,
        **extra,
        "steps": result.global_step,
        "train_loss": result.training_loss,
        "precision": "bf16" if peer_bf16(args) else "fp32",
    }
    (args.out / "peer_stats.json").write_text(json.dumps(stats, indent=2))
    print(json.dumps(stats))
    return stats
