"""A FAISS index over passage vectors with its id map (inner product on normalised vectors)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np

from ragtune.data.io import atomic_write_text, atomic_writer


class DenseIndex:
    """Exact inner-product search (FAISS ``IndexFlatIP``) with passage ids kept beside the vectors."""

    def __init__(self, index: faiss.Index, ids: Sequence[str]):
        if index.ntotal != len(ids):
            raise ValueError(f"index holds {index.ntotal} vectors but {len(ids)} ids were given")
        self.index, self.ids = index, list(ids)

    @classmethod
    def flat(cls, vectors: np.ndarray, ids: Sequence[str]) -> DenseIndex:
        """Build an exact index from ``[n, dim]`` float32 vectors."""
        if len(vectors) == 0:
            raise ValueError("cannot index an empty corpus")
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return cls(index, ids)

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """Top ``k`` (id, score) per query vector, best first."""
        k = min(k, len(self.ids))
        scores, idx = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return [
            [(self.ids[i], float(s)) for i, s in zip(row_i, row_s, strict=True) if i >= 0]
            for row_i, row_s in zip(idx, scores, strict=True)
        ]

    def save(self, folder: str | Path) -> Path:
        """Write ``index.faiss`` and ``ids.json`` into ``folder`` (each atomically)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_writer(folder / "index.faiss", "wb") as fh:
            fh.write(faiss.serialize_index(self.index).tobytes())
        atomic_write_text(folder / "ids.json", json.dumps(self.ids))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> DenseIndex:
        """Read an index written by :meth:`save` (plain FAISS file + JSON list of ids)."""
        folder = Path(folder)
        index = faiss.read_index(str(folder / "index.faiss"))
        ids = json.loads((folder / "ids.json").read_text(encoding="utf-8"))
        return cls(index, ids)
