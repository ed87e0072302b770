"""How long ``make demo`` takes on the CPU at hand, and what it prints.

    python benchmarks/demo_time/run.py

Runs the command ``make demo`` runs (``ragtune e2e train --config configs/e2e/demo.yaml``, into a
fresh output folder under ``benchmarks/demo_time/work``) as a child process from an installed
``.venv``, and writes its wall time, peak RSS, the time of each stage and the held-out metrics of
every round to ``benchmarks/results/demo_time_<cpu kind>.json`` (``avx2``, ``avx512_bf16``, ``amx``;
see ``benchmarks.common.cpu_kind``). For the AVX2 kind on a newer x86 CPU run it under
``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``; the cap is recorded in ``hardware``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import child, cpu_kind, write_result  # noqa: E402

METRICS = ("MRR@10", "Recall@3", "ROUGE-L", "EM", "F1", "faithfulness")


def main() -> None:
    out = HERE / "work" / "demo-e2e"
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "ragtune.cli", "e2e", "train", "--config", "configs/e2e/demo.yaml"]
    wall, rss = child([*cmd, f"output_dir={out}"], out.parent / "demo.log")
    report = json.loads((out / "report.json").read_text())
    rounds = {
        f"round_{r['round']}": {k: round(r["metrics"][k], 4) for k in METRICS if k in r["metrics"]}
        for r in report["rounds"]
        if "metrics" in r
    }
    stages = {
        f"{r['round']}/{name}": round(s["seconds"], 1)
        for r in report["rounds"]
        for name, s in r["stages"].items()
    }
    variant = {
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(rss, 1),
        "metrics": rounds[f"round_{report['final_round']}"],
        "rounds": rounds,
        "stage_s": stages,
        "precision": (report.get("hardware") or {}).get("precision"),
    }
    path = write_result(
        f"demo_time_{cpu_kind()}", "python benchmarks/demo_time/run.py", 0, {"make_demo": variant}
    )
    print(json.dumps(variant, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
