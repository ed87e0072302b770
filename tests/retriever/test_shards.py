"""Passage embeddings streamed to on-disk shards: equality with in-memory encoding, resume after an
interruption, refusal to mix runs, and FAISS indexes built shard by shard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ragtune.retriever.config import IndexConfig
from ragtune.retriever.index import DenseIndex
from ragtune.retriever.shards import EmbeddingShards, encode_to_shards

TEXTS = [f"passage number {i} about topic {i % 7}" for i in range(300)]
SETTINGS = {"model": "fake", "max_length": 32}


def all_vectors(store: EmbeddingShards) -> np.ndarray:
    return np.concatenate(list(store.chunks()))


def fake_encode(texts) -> np.ndarray:
    """Deterministic unit vectors [n, 16] from each text's characters."""
    out = np.zeros((len(texts), 16), dtype=np.float32)
    for i, t in enumerate(texts):
        rng = np.random.default_rng([ord(c) for c in t])
        out[i] = rng.standard_normal(16)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_shards_equal_in_memory_encoding(tmp_path: Path) -> None:
    store = encode_to_shards(fake_encode, TEXTS, tmp_path, settings=SETTINGS, shard_size=64, progress=False)
    assert len(store) == 300 and store.dim == 16 and store.sizes == [64, 64, 64, 64, 44]
    np.testing.assert_array_equal(all_vectors(store), fake_encode(TEXTS))
    idx = np.array([0, 63, 64, 200, 299])
    np.testing.assert_array_equal(store.rows(idx), fake_encode(TEXTS)[idx])
    # Shards are plain .npy files: NumPy memory-maps them without ragtune (and without pickle).
    first = np.load(tmp_path / "shard_00000.npy", mmap_mode="r", allow_pickle=False)
    assert isinstance(first, np.memmap) and first.shape == (64, 16)
    half = encode_to_shards(
        fake_encode,
        TEXTS,
        tmp_path / "half",
        settings=SETTINGS,
        shard_size=64,
        dtype="float16",
        progress=False,
    )
    assert np.load(tmp_path / "half" / "shard_00000.npy", mmap_mode="r").dtype == np.float16
    np.testing.assert_allclose(all_vectors(half), fake_encode(TEXTS), atol=1e-3)


def test_an_interrupted_encoding_resumes_at_the_first_missing_shard(tmp_path: Path) -> None:
    calls: list[int] = []

    def dies_on_third(texts):
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated kill")
        calls.append(len(texts))
        return fake_encode(texts)

    with pytest.raises(KeyboardInterrupt):
        encode_to_shards(dies_on_third, TEXTS, tmp_path, settings=SETTINGS, shard_size=64, progress=False)
    assert sorted(p.name for p in tmp_path.glob("shard_*.npy")) == ["shard_00000.npy", "shard_00001.npy"]
    assert not (tmp_path / "embeddings.json").exists()  # incomplete: no manifest
    with pytest.raises(FileNotFoundError, match="incomplete"):
        EmbeddingShards(tmp_path)
    resumed: list[int] = []

    def counting(texts):
        resumed.append(len(texts))
        return fake_encode(texts)

    store = encode_to_shards(counting, TEXTS, tmp_path, settings=SETTINGS, shard_size=64, progress=False)
    assert resumed == [64, 64, 44]  # only the three missing shards
    np.testing.assert_array_equal(all_vectors(store), fake_encode(TEXTS))
    assert json.loads((tmp_path / "embeddings.json").read_text())["n"] == 300


def test_other_texts_or_settings_are_refused(tmp_path: Path) -> None:
    encode_to_shards(fake_encode, TEXTS, tmp_path, settings=SETTINGS, shard_size=64, progress=False)
    with pytest.raises(ValueError, match="other texts or settings"):
        encode_to_shards(fake_encode, TEXTS[:-1], tmp_path, settings=SETTINGS, shard_size=64, progress=False)
    with pytest.raises(ValueError, match="other texts or settings"):
        encode_to_shards(
            fake_encode, TEXTS, tmp_path, settings={"model": "other"}, shard_size=64, progress=False
        )
    with pytest.raises(ValueError, match="empty corpus"):
        encode_to_shards(fake_encode, [], tmp_path / "e", settings=SETTINGS, progress=False)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "ivfpq"])
def test_an_index_built_from_shards_equals_one_built_from_the_array(tmp_path: Path, kind: str) -> None:
    store = encode_to_shards(fake_encode, TEXTS, tmp_path, settings=SETTINGS, shard_size=64, progress=False)
    cfg = IndexConfig(kind=kind, nlist=4, pq_m=4, pq_nbits=4, recall_queries=50)
    ids = [f"d{i}" for i in range(300)]
    a = DenseIndex.build(store, ids, cfg)
    b = DenseIndex.build(fake_encode(TEXTS), ids, cfg)
    queries = fake_encode(TEXTS[:20])
    hits_a, hits_b = a.search(queries, 5), b.search(queries, 5)
    # The same documents in the same order; scores equal to float32 rounding (HNSW's distance
    # kernels sum in a CPU-dependent order: on an AVX2 CPU they differ in the 7th digit).
    assert [[d for d, _ in row] for row in hits_a] == [[d for d, _ in row] for row in hits_b]
    np.testing.assert_allclose(
        [[s for _, s in row] for row in hits_a], [[s for _, s in row] for row in hits_b], rtol=1e-5, atol=1e-6
    )
    assert a.report["recall@10_vs_exact"] == b.report["recall@10_vs_exact"]
