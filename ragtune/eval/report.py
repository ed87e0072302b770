"""Metric tables and metric files: what every command prints and writes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ragtune.data.io import atomic_write_text


def markdown_table(
    rows: Mapping[str, Mapping[str, float]],
    columns: Sequence[str] | None = None,
    digits: int = 4,
    label: str = "",
) -> str:
    """A Markdown table: one row per key of ``rows``, one column per metric (``columns`` or all)."""
    if columns is None:
        columns = list(dict.fromkeys(c for r in rows.values() for c in r))
    head = f"| {label} | " + " | ".join(columns) + " |"
    sep = "| --- " * (len(columns) + 1) + "|"
    body = []
    for name, values in rows.items():
        cells = [
            f"{values[c]:.{digits}f}" if isinstance(values.get(c), (int, float)) else "" for c in columns
        ]
        body.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *body])


def write_metrics(
    path: str | Path, metrics: Mapping[str, float], per_item: Mapping[str, Any] | None = None, **extra: Any
) -> Path:
    """Write ``{"metrics": ..., "per_query": ..., ...extra}`` as JSON, atomically."""
    doc: dict[str, Any] = {"metrics": dict(metrics)}
    if per_item is not None:
        doc["per_query"] = per_item
    doc.update(extra)
    return atomic_write_text(Path(path), json.dumps(doc, indent=2) + "\n")
