"""Run the README's quickstart commands as written (the blocks marked ``<!-- readme-test -->``)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SHARED

README = ROOT / "README.md"
BLOCK = re.compile(r"<!-- readme-test(?P<shared>: shared)? -->\s*```bash\n(?P<body>.*?)```", re.S)


def readme_blocks() -> list[tuple[bool, list[str]]]:
    blocks = []
    for m in BLOCK.finditer(README.read_text()):
        lines = [ln.strip() for ln in m["body"].splitlines() if ln.strip() and not ln.startswith("#")]
        blocks.append((bool(m["shared"]), lines))
    return blocks


def test_readme_has_tested_blocks_and_the_two_commands() -> None:
    text = README.read_text()
    assert text.index("make demo") < text.index("## What ragtune is")
    assert "make test" in text.split("## What ragtune is")[0]
    assert len(readme_blocks()) >= 4
    assert len(README.read_bytes()) <= 15 * 1024  # the rest lives in docs/ and benchmarks/README.md


@pytest.mark.slow
def test_readme_quickstart_commands_run(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    ragtune = [sys.executable, "-m", "ragtune.cli"]
    import shutil

    for name in (
        "demo-retrieval",
        "demo-bm25",
        "demo-train",
        "demo-index",
        "demo-generator",
        "demo-e2e-quick",
        "demo-reranker",
        "demo-colbert",
        "demo-checker",
    ):  # outputs of these commands
        shutil.rmtree(ROOT / "runs" / name, ignore_errors=True)
    ran = 0
    for needs_shared, lines in readme_blocks():
        if needs_shared and not SHARED.exists():
            continue
        for line in lines:
            args = shlex.split(line)
            assert args[0] == "ragtune", line
            proc = subprocess.run(
                ragtune + args[1:], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
            )
            assert proc.returncode == 0, f"{line}\n{proc.stderr[-3000:]}"
            ran += 1
    assert ran >= 3
    # The printed demo table in the README is the one the command produces.
    report = (ROOT / "runs" / "demo-retrieval" / "report.md").read_text()
    table = report.split("\n\n", 1)[1].strip()
    assert table in README.read_text()
