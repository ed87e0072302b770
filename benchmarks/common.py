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


def hardware() -> dict[str, Any]:
    """CPU model, usable cores and memory of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "memory_gb": round(mem_gb, 1)}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_result(
    name: str,
    command: str,
    seed: int,
    variants: dict[str, dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``results/<name>.json`` atomically and return its path."""
    doc: dict[str, Any] = {
        "benchmark": name,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "versions": versions(),
        "hardware": hardware(),
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


def child(cmd: list[str], log: Path, cwd: Path | None = None) -> tuple[float, float]:
    """Run ``cmd`` as a child process (output to ``log``, offline); return (wall seconds, peak RSS in
    MB of that child, from wait4)."""
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
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed; see {log}")
    return wall, usage.ru_maxrss / 1024
