from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest

from ragtune.config import load_config
from ragtune.data.io import read_run
from ragtune.eval.ir import topk_overlap
from ragtune.retriever.config import IndexConfig, RetrieverConfig
from ragtune.retriever.index import DenseIndex, build_index, search_index
from tests.conftest import DEMO

N, DIM = 2000, 32
KIND_CONFIGS = {
    "flat": IndexConfig(kind="flat", recall_queries=200),
    "ivf": IndexConfig(kind="ivf", nlist=32, nprobe=4, recall_queries=200),
    "hnsw": IndexConfig(kind="hnsw", hnsw_m=16, ef_construction=64, ef_search=32, recall_queries=200),
    "ivfpq": IndexConfig(kind="ivfpq", nlist=16, nprobe=4, pq_m=8, pq_nbits=8, recall_queries=200),
}


@pytest.fixture(autouse=True, scope="module")
def _one_faiss_thread() -> Iterator[None]:
    """OpenMP threads spin against each other on a busy 2-core machine; one thread is faster here."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def unit_vectors(n: int = N, dim: int = DIM, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_ids(n: int = N) -> list[str]:
    return [f"p{i:05d}" for i in range(n)]


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return unit_vectors()


@pytest.fixture(scope="module")
def built(vectors: np.ndarray) -> dict[str, DenseIndex]:
    return {kind: DenseIndex.build(vectors, make_ids(), cfg, seed=0) for kind, cfg in KIND_CONFIGS.items()}


def exact_top(x: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k positions by inner product, computed with numpy."""
    scores = queries.astype(np.float64) @ x.astype(np.float64).T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize(("kind", "min_top1"), [("flat", 1.0), ("ivf", 0.99), ("hnsw", 0.98), ("ivfpq", 0.9)])
def test_each_kind_finds_a_vectors_own_id_first(
    built: dict[str, DenseIndex], vectors: np.ndarray, kind: str, min_top1: float
) -> None:
    index = built[kind]
    assert index.kind == kind and len(index) == N and index.dim == DIM
    assert index.index.metric_type == faiss.METRIC_INNER_PRODUCT
    sample = np.random.default_rng(1).choice(N, size=300, replace=False)
    hits = index.search(vectors[sample], k=5)
    top1 = np.mean([row[0][0] == f"p{i:05d}" for i, row in zip(sample, hits)])
    assert top1 >= min_top1
    for row in hits:
        assert len(row) == 5
        scores = [s for _, s in row]
        assert scores == sorted(scores, reverse=True)
    if kind != "ivfpq":  # exact vectors stored: the own score is the squared norm, 1
        own = [row[0][1] for i, row in zip(sample, hits) if row[0][0] == f"p{i:05d}"]
        np.testing.assert_allclose(own, 1.0, atol=1e-5)


def test_flat_scores_equal_numpy_and_report_is_complete(
    built: dict[str, DenseIndex], vectors: np.ndarray
) -> None:
    index = built["flat"]
    queries = unit_vectors(7, seed=5)
    hits = index.search(queries, k=10)
    expected = exact_top(vectors, queries, 10)
    for q, row in enumerate(hits):
        assert [pid for pid, _ in row] == [f"p{i:05d}" for i in expected[q]]
        np.testing.assert_allclose([s for _, s in row], vectors[expected[q]] @ queries[q], atol=1e-5)
    r = index.report
    assert r["recall@10_vs_exact"] == 1.0
    assert (r["kind"], r["n_vectors"], r["dim"]) == ("flat", N, DIM)
    assert r["params"] == {"batch_size": 4096}
    assert r["bytes"] == faiss.serialize_index(index.index).nbytes
    assert r["bytes"] >= N * DIM * 4
    assert r["build_s"] >= 0.0
    # DenseIndex.flat (used by evaluate.py) gives the same answers with the default batch size.
    flat = DenseIndex.flat(vectors, make_ids())
    assert flat.batch_size == 4096 and flat.report["recall@10_vs_exact"] == 1.0
    assert flat.search(queries, 10) == hits


@pytest.mark.parametrize(
    "cfg",
    [
        IndexConfig(kind="ivf", nlist=32, nprobe=1),
        IndexConfig(kind="hnsw", hnsw_m=4, ef_construction=16, ef_search=4),
        IndexConfig(kind="ivfpq", nlist=16, nprobe=2, pq_m=4, pq_nbits=8),
    ],
    ids=["ivf", "hnsw", "ivfpq"],
)
def test_approximate_recall_equals_an_independent_computation(cfg: IndexConfig) -> None:
    x = unit_vectors(800, 16, seed=3)
    ids = make_ids(800)
    cfg.recall_queries = 10_000  # >= n: every vector is a query, so the sample is known
    index = DenseIndex.build(x, ids, cfg, seed=0)
    recall = index.report["recall@10_vs_exact"]
    exact = exact_top(x, x, 10)
    hits = index.search(x, 10)
    position = {pid: i for i, pid in enumerate(ids)}
    overlap = [len({position[p] for p, _ in row} & set(exact[q].tolist())) for q, row in enumerate(hits)]
    independent = sum(overlap) / (len(x) * 10)
    assert 0.0 <= recall <= 1.0
    assert recall == pytest.approx(independent, abs=1e-12)
    assert recall < 1.0  # these settings are deliberately weak, so the number is informative
    # A seeded sample of 200 queries: reproducible, and close to the full figure.
    cfg.recall_queries = 200
    a = DenseIndex.build(x, ids, cfg, seed=4).report["recall@10_vs_exact"]
    b = DenseIndex.build(x, ids, cfg, seed=4).report["recall@10_vs_exact"]
    assert 0.0 <= a <= 1.0 and a == b
    assert abs(a - independent) < 0.15


def test_recall_report_skipped_when_recall_queries_is_zero(vectors: np.ndarray) -> None:
    ivf = DenseIndex.build(vectors, make_ids(), IndexConfig(kind="ivf", nlist=8, recall_queries=0))
    assert ivf.report["recall@10_vs_exact"] is None
    flat = DenseIndex.build(vectors, make_ids(), IndexConfig(kind="flat", recall_queries=0))
    assert flat.report["recall@10_vs_exact"] == 1.0


def test_topk_overlap_counts_overlap_and_misses() -> None:
    approx = np.array([[0, 1, 2], [5, -1, -1]])
    exact = np.array([[2, 1, 9], [5, 6, 7]])
    assert topk_overlap(exact, approx, 3) == pytest.approx((2 + 1) / 6)


def test_nlist_is_capped_and_search_params_are_set(vectors: np.ndarray) -> None:
    index = DenseIndex.build(vectors[:200], make_ids(200), IndexConfig(kind="ivf", nlist=1024, nprobe=16))
    assert index.params["nlist"] == 200 // 39 == 5
    assert index.params["nprobe"] == 5  # capped at nlist
    index.set_search_params(nprobe=2, batch_size=3)
    assert index.index.nprobe == 2 and index.params == {"nlist": 5, "nprobe": 2, "batch_size": 3}
    hnsw = DenseIndex.build(vectors[:300], make_ids(300), IndexConfig(kind="hnsw", hnsw_m=8, ef_search=11))
    assert hnsw.index.hnsw.efSearch == 11
    assert hnsw.params == {"hnsw_m": 8, "ef_construction": 200, "ef_search": 11, "batch_size": 4096}


def test_batched_search_equals_one_call_caps_k_and_drops_missing(
    built: dict[str, DenseIndex], vectors: np.ndarray
) -> None:
    index = built["flat"]
    queries = unit_vectors(23, seed=9)
    whole = index.search(queries, 10)
    index.set_search_params(batch_size=4)
    try:
        assert index.search(queries, 10) == whole
    finally:
        index.set_search_params(batch_size=4096)
    small = DenseIndex.flat(vectors[:12], make_ids(12))
    assert [len(row) for row in small.search(queries[:3], 1000)] == [12, 12, 12]
    # IVF with one probed cell of 64 cells cannot fill k = n: the -1 padding is dropped.
    ivf = DenseIndex.build(vectors, make_ids(), IndexConfig(kind="ivf", nlist=64, nprobe=1, recall_queries=0))
    rows = ivf.search(queries[:5], N)
    assert all(0 < len(row) < N for row in rows)
    assert all(pid.startswith("p") for row in rows for pid, _ in row)
    assert index.search(np.zeros((0, DIM), np.float32), 3) == []


@pytest.mark.parametrize("kind", list(KIND_CONFIGS))
def test_save_load_round_trip(built: dict[str, DenseIndex], kind: str, tmp_path: Path) -> None:
    shared = built[kind]  # a copy, so that the module's indexes keep their settings
    index = DenseIndex(faiss.clone_index(shared.index), shared.ids, report=shared.report)
    index.set_search_params(nprobe=3, ef_search=17, batch_size=50)
    queries = unit_vectors(120, seed=11)
    before = index.search(queries, 10)
    folder = index.save(tmp_path / "idx", version=7)
    assert sorted(p.name for p in folder.iterdir()) == ["ids.json", "index.faiss", "index.json"]
    loaded = DenseIndex.load(folder)
    after = loaded.search(queries, 10)
    assert after == before  # identical ids and scores
    assert loaded.kind == kind and loaded.version == 7 and loaded.batch_size == 50
    assert loaded.params == index.params and loaded.report == index.report
    if kind in ("ivf", "ivfpq"):
        assert loaded.index.nprobe == 3
    if kind == "hnsw":
        assert loaded.index.hnsw.efSearch == 17
    meta = json.loads((folder / "index.json").read_text())
    assert (meta["kind"], meta["dim"], meta["n"], meta["version"]) == (kind, DIM, N, 7)
    assert meta["report"]["n_vectors"] == N and meta["params"]["batch_size"] == 50
    # Readable without ragtune: plain FAISS and a JSON list.
    raw = faiss.read_index(str(folder / "index.faiss"))
    ids = json.loads((folder / "ids.json").read_text())
    assert raw.ntotal == len(ids) == N and ids[:2] == ["p00000", "p00001"]
    assert raw.metric_type == faiss.METRIC_INNER_PRODUCT


def test_bad_inputs_give_clear_errors(vectors: np.ndarray, tmp_path: Path) -> None:
    flat = IndexConfig(kind="flat")
    with pytest.raises(ValueError, match="empty corpus"):
        DenseIndex.build(np.zeros((0, 8), np.float32), [], flat)
    with pytest.raises(ValueError, match="got 10 vectors but 9 ids"):
        DenseIndex.build(vectors[:10], make_ids(9), flat)
    with pytest.raises(ValueError, match="2-D array"):
        DenseIndex.build(vectors[0], ["a"], flat)
    with pytest.raises(ValueError, match=r"duplicate id 'p00001' \(ids\[2\]\)"):
        DenseIndex.build(vectors[:3], ["p00000", "p00001", "p00001"], flat)
    with pytest.raises(ValueError, match="NaN or infinite"):
        DenseIndex.build(np.full((2, 4), np.nan, np.float32), ["a", "b"], flat)
    with pytest.raises(ValueError, match=r"pq_m \(5\) must divide the vector dimension \(32\)"):
        DenseIndex.build(vectors, make_ids(), IndexConfig(kind="ivfpq", pq_m=5))
    with pytest.raises(ValueError, match="needs at least 256 vectors"):
        DenseIndex.build(vectors[:100], make_ids(100), IndexConfig(kind="ivfpq", pq_m=8))
    index = DenseIndex.flat(vectors[:10], make_ids(10))
    with pytest.raises(ValueError, match="queries have dimension 16 but the index has 32"):
        index.search(np.zeros((1, 16), np.float32), 3)
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(vectors[:1], 0)

    folder = index.save(tmp_path / "idx")
    (folder / "ids.json").write_text(json.dumps(make_ids(9)))
    with pytest.raises(ValueError, match=r"idx: ids.json holds 9 ids but index.faiss holds 10 vectors"):
        DenseIndex.load(folder)
    (folder / "ids.json").write_text("[1, 2")
    with pytest.raises(ValueError, match=r"ids.json:1: malformed JSON"):
        DenseIndex.load(folder)
    (folder / "index.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"idx/index.json: file not found"):
        DenseIndex.load(folder)
    with pytest.raises(FileNotFoundError, match="index folder not found"):
        DenseIndex.load(tmp_path / "nowhere")


def test_build_and_search_end_to_end(tiny_encoder: Path, tmp_path: Path) -> None:
    from ragtune.data.io import load_corpus, load_queries
    from ragtune.retriever.model import encode, load_encoder

    cfg = load_config(
        None,
        [
            f"model.name={tiny_encoder}",
            f"data.beir_dir={DEMO}",
            f"output_dir={tmp_path / 'out'}",
            "precision=fp32",
        ],
        RetrieverConfig,
    )
    folder = build_index(cfg)
    assert folder == tmp_path / "out" / "index"
    assert (tmp_path / "out" / "config.yaml").is_file()
    meta = json.loads((folder / "index.json").read_text())
    corpus = load_corpus(DEMO / "corpus.jsonl")
    assert meta["model"] == str(tiny_encoder) and meta["n"] == len(corpus) and meta["dim"] == 32
    assert meta["report"]["recall@10_vs_exact"] == 1.0 and meta["version"] == 1

    run_path = search_index(folder, DEMO / "queries.jsonl", tmp_path / "run.trec", k=7)
    run = read_run(run_path)
    queries = load_queries(DEMO / "queries.jsonl")
    assert list(run) == list(queries)
    assert all(len(docs) == 7 for docs in run.values())

    model = load_encoder(str(tiny_encoder))
    pvec = encode(model, [p.full_text() for p in corpus.values()], max_length=256, precision="fp32")
    qvec = encode(model, [q.text for q in queries.values()], max_length=64, precision="fp32")
    scores = qvec.astype(np.float64) @ pvec.astype(np.float64).T
    pids = list(corpus)
    for q, qid in enumerate(queries):
        top = np.sort(scores[q])[::-1][:7]
        got = sorted(run[qid].values(), reverse=True)
        np.testing.assert_allclose(got, top, atol=1e-5)
        for pid, s in run[qid].items():
            assert s == pytest.approx(scores[q, pids.index(pid)], abs=1e-5)
