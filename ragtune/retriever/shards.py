"""Passage embeddings streamed to disk: memory-mapped ``.npy`` shards that a rerun resumes.

``encode_to_shards`` cuts the corpus into shards of ``shard_size`` passages; each shard is encoded,
written to a temporary file and renamed into place, so a shard file on disk is always complete and
a killed run resumes at the first missing shard (work lost: at most one shard). Nothing but the
shard being encoded is held in memory. ``plan.json`` fingerprints the texts, the model and the
encoding settings: a rerun with anything else refuses to mix old shards with new ones. With several
processes (``torchrun``) process r encodes shards r, r + N, r + 2N, ... and the main process writes
``embeddings.json`` once every shard exists; that file marks the store complete.

Shards are plain NumPy files (``np.load(path, mmap_mode="r")``, no pickle), float16 (half the disk
and page cache, ~1e-3 relative error on unit vectors) or float32.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from ragtune import distributed as dist
from ragtune.data.io import atomic_write_text
from ragtune.errors import UserError

FORMAT = "ragtune-embedding-shards"
MANIFEST = "embeddings.json"
PLAN = "plan.json"


def fingerprint(texts: Sequence[str], settings: dict) -> str:
    """SHA-256 over the encoding settings and every text (order included)."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for t in texts:
        h.update(hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest())
    return h.hexdigest()


def _shard_name(k: int) -> str:
    return f"shard_{k:05d}.npy"


class EmbeddingShards:
    """A complete store written by :func:`encode_to_shards`: ``len(store)`` vectors of ``dim``."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found (the store is incomplete or not a shard folder)")
        meta = json.loads(path.read_text())
        if meta.get("format") != FORMAT:
            raise UserError(f"{path}: not a {FORMAT} manifest")
        self.meta = meta
        self.n, self.dim, self.dtype = int(meta["n"]), int(meta["dim"]), str(meta["dtype"])
        self.files = [self.folder / s["file"] for s in meta["shards"]]
        self.sizes = [int(s["rows"]) for s in meta["shards"]]
        if sum(self.sizes) != self.n:
            raise UserError(f"{path}: shard sizes add up to {sum(self.sizes)}, not n={self.n}")

    def __len__(self) -> int:
        return self.n

    def shard(self, k: int) -> np.ndarray:
        """Shard ``k`` as a read-only memory map ``[rows, dim]``."""
        array = np.load(self.files[k], mmap_mode="r", allow_pickle=False)
        if array.shape != (self.sizes[k], self.dim):
            raise UserError(f"{self.files[k]}: shape {array.shape}, expected {(self.sizes[k], self.dim)}")
        return array

    def chunks(self) -> Iterator[np.ndarray]:
        """Every shard in order, as float32 arrays (one shard in memory at a time)."""
        for k in range(len(self.files)):
            yield np.ascontiguousarray(self.shard(k), dtype=np.float32)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """The float32 vectors at sorted global row indices ``idx`` ``[len(idx), dim]``."""
        idx = np.asarray(idx, dtype=np.int64)
        bounds = np.cumsum([0, *self.sizes])
        out = np.empty((len(idx), self.dim), dtype=np.float32)
        for k in range(len(self.files)):
            lo, hi = np.searchsorted(idx, bounds[k]), np.searchsorted(idx, bounds[k + 1])
            if hi > lo:
                out[lo:hi] = self.shard(k)[idx[lo:hi] - bounds[k]]
        return out


def encode_to_shards(
    encode: Callable[[Sequence[str]], np.ndarray],
    texts: Sequence[str],
    folder: str | Path,
    *,
    settings: dict,
    shard_size: int = 100_000,
    dtype: Literal["float16", "float32"] = "float32",
    progress: bool = True,
) -> EmbeddingShards:
    """Encode ``texts`` with ``encode`` (texts -> float32 ``[n, dim]``) into shards under ``folder``
    and return the store, resuming from the shards a killed run left. ``settings`` (model, prefix,
    lengths, precision ...) enter the fingerprint together with the texts."""
    if not texts:
        raise ValueError("cannot encode an empty corpus")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    folder = Path(folder)
    n_shards = -(-len(texts) // shard_size)
    plan = {
        "format": FORMAT,
        "n": len(texts),
        "shard_size": shard_size,
        "dtype": dtype,
        "fingerprint": fingerprint(texts, settings),
    }

    def prepare() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for partial in folder.glob(".shard_*.tmp"):
            partial.unlink()  # a shard a killed run was writing: never read, encoded again
        if (folder / PLAN).exists():
            old = json.loads((folder / PLAN).read_text())
            if old != plan:
                raise UserError(
                    f"{folder} holds embeddings of other texts or settings ({PLAN} differs); "
                    "use another folder or delete it"
                )
        else:
            for stale in [*folder.glob("shard_*.npy"), *folder.glob(MANIFEST)]:
                stale.unlink()  # no plan: files of unknown origin
            atomic_write_text(folder / PLAN, json.dumps(plan, indent=1) + "\n")

    dist.from_main(prepare)
    mine = [k for k in range(n_shards) if k % dist.world_size() == dist.rank()]
    todo = [k for k in mine if not (folder / _shard_name(k)).is_file()]
    if len(todo) < len(mine) and dist.is_main():
        tqdm.write(f"resuming: {len(mine) - len(todo)} of {n_shards} shards already in {folder}")
    bar = tqdm(
        total=len(texts), desc="encoding to shards", unit="passage", disable=not (progress and dist.is_main())
    )
    bar.update(sum(min(shard_size, len(texts) - k * shard_size) for k in mine if k not in todo))
    for k in todo:
        chunk = texts[k * shard_size : (k + 1) * shard_size]
        vectors = np.asarray(encode(chunk), dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(chunk):
            raise ValueError(f"encode returned shape {vectors.shape} for {len(chunk)} texts")
        tmp = folder / f".{_shard_name(k)}.{os.getpid()}.tmp"
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=vectors.shape)
        out[:] = vectors
        out.flush()
        del out
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, folder / _shard_name(k))
        bar.update(len(chunk))
    bar.close()

    def finish() -> None:
        shards, dim = [], None
        for k in range(n_shards):
            array = np.load(folder / _shard_name(k), mmap_mode="r", allow_pickle=False)
            dim = array.shape[1] if dim is None else dim
            shards.append({"file": _shard_name(k), "rows": int(array.shape[0])})
        manifest = {**plan, "dim": dim, "shards": shards}
        atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1) + "\n")

    dist.barrier()
    dist.from_main(finish)
    return EmbeddingShards(folder)
