"""benchmarks/README.md's tables and the README's results summary are exactly what
benchmarks/results/*.json render: a number typed by hand that differs from its JSON fails here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import report

ROOT = Path(__file__).resolve().parents[1]
RESULT_FILES = sorted(report.RESULTS.glob("*.json"))


def test_generated_tables_equal_what_the_json_files_render() -> None:
    assert report.stale() == [], "run `.venv/bin/python benchmarks/report.py --write` (make docs)"
    assert report.main(["--check"]) == 0


def test_a_number_typed_by_hand_is_caught(tmp_path: Path) -> None:
    parts = report.blocks()[report.README]
    text = report.README.read_text()
    table = parts["bench:retriever_scifact"]
    assert "| 0.7286 |" in table
    edited = tmp_path / "README.md"
    edited.write_text(text.replace(table, table.replace("| 0.7286 |", "| 0.7296 |", 1)))
    assert report.stale({edited: parts}) == ["README.md: bench:retriever_scifact"]


@pytest.mark.parametrize("path", RESULT_FILES, ids=lambda p: p.stem)
def test_every_result_file_has_the_shape_and_feeds_a_table(path: Path) -> None:
    data = json.loads(path.read_text())
    assert {"benchmark", "date", "command", "versions", "hardware", "seed", "variants"} <= set(data)
    assert data["benchmark"] == path.stem and data["hardware"].get("cpu")
    tables = [t for t in report.TABLES if path.stem in t.sources()]
    assert tables, f"{path.name} is in no table of benchmarks/README.md"
    for t in tables:
        # The line above the table names the file and the machine it ran on.
        first = t.render().splitlines()[0]
        assert f"`results/{path.stem}.json`" in first and data["hardware"]["cpu"] in first
        assert f"precision {data['hardware']['precision']}" in first


def test_table_cells_come_from_the_json() -> None:
    rendered = report.RETRIEVER_SCIFACT.render()
    finetuned = json.loads((report.RESULTS / "retriever_scifact.json").read_text())["variants"][
        "ragtune_finetuned"
    ]
    row = next(line for line in rendered.splitlines() if line.startswith("| ragtune recipe (`configs"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:5] == [
        f"{finetuned['metrics'][m]:.4f}" for m in ("nDCG@10", "Recall@10", "Recall@100", "MRR@10")
    ]
    assert cells[5] == f"{finetuned['pairs_per_s']:.2f}" and cells[7] == "6,746 MB"


def test_numbers_round_half_up_as_written() -> None:
    assert report.fmt(0.5535, 3) == "0.554"
    assert report.fmt(10442.5) == "10,443"
    assert report.fmt(384.5) == "385"
    assert report.fmt(0.95, 4) == "0.9500"
    assert report.duration(262.9) == "4 min 23 s" and report.duration(59.4) == "59 s"


def test_a_missing_variant_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match=r"results/retriever_scifact\.json: no variant 'nope'"):
        report.variant("retriever_scifact", "nope")


def test_report_reads_json_only() -> None:
    code = "import sys, benchmarks.report as r; assert r.stale() == []; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
