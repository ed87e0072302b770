"""A FAISS index over passage vectors with its id map (inner product on normalised vectors).

Four kinds, all with ``faiss.METRIC_INNER_PRODUCT`` (cosine on L2-normalised vectors):

- ``flat``: exact search (``IndexFlatIP``).
- ``ivf``: an inverted file over k-means cells (``IndexIVFFlat``; Jégou et al. 2011), ``nprobe``
  cells visited per query.
- ``hnsw``: a hierarchical navigable small-world graph (``IndexHNSWFlat``; Malkov & Yashunin 2018).
- ``ivfpq``: an inverted file with product-quantised residuals (``IndexIVFPQ``; Jégou et al. 2011).

On disk an index is a folder that any FAISS user can read without ragtune: ``index.faiss`` (FAISS's
own format), ``ids.json`` (a JSON list: FAISS position -> passage id) and ``index.json`` (kind,
parameters, dimension, size, the build report, the encoder that made the vectors and a version).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ragtune.data.io import DataError, atomic_write_text, atomic_writer, save_dir_atomically
from ragtune.errors import UserError
from ragtune.eval.ir import topk_overlap
from ragtune.retriever.config import IndexConfig, RetrieverConfig

log = logging.getLogger(__name__)

FORMAT = "ragtune-faiss-index"
FILES = ("index.faiss", "ids.json", "index.json")
RECALL_K = 10
RECALL_KEY = f"recall@{RECALL_K}_vs_exact"
DEFAULT_BATCH_SIZE = IndexConfig().batch_size
KINDS = ("flat", "ivf", "hnsw", "ivfpq")


def _kind_of(index: faiss.Index) -> str:
    """The ragtune kind of a FAISS index object."""
    if isinstance(index, faiss.IndexHNSWFlat):
        return "hnsw"
    if isinstance(index, faiss.IndexIVFPQ):
        return "ivfpq"
    if isinstance(index, faiss.IndexIVFFlat):
        return "ivf"
    if isinstance(index, faiss.IndexFlat):
        return "flat"
    raise ValueError(f"unsupported FAISS index type {type(index).__name__} (expected one of {KINDS})")


def _serialized_bytes(index: faiss.Index) -> int:
    """The size of ``index`` in FAISS's file format, counted without holding a copy in memory."""
    total = 0

    def count(chunk: bytes) -> int:
        nonlocal total
        total += len(chunk)
        return len(chunk)

    writer = faiss.PyCallbackIOWriter(count)
    faiss.write_index(index, writer)
    del writer  # flushes the last chunk
    return total


def _as_vectors(vectors: Any, what: str) -> np.ndarray:
    """A C-contiguous float32 ``[n, dim]`` array, or a ValueError saying what is wrong."""
    array = np.asarray(vectors)
    if array.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array [n, dim], got shape {array.shape}")
    if array.shape[1] < 1:
        raise ValueError(f"{what} must have dimension >= 1, got shape {array.shape}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
        raise ValueError(f"{what} row {bad} holds a NaN or infinite value")
    return array


def _vector_source(vectors: Any):
    """``(n, dim, chunks(), rows(sorted_idx))`` of an array or of an on-disk store with ``chunks()``
    and ``rows()`` (:class:`ragtune.retriever.shards.EmbeddingShards`, read one shard at a time)."""
    if hasattr(vectors, "chunks") and hasattr(vectors, "rows"):

        def chunks():
            for i, chunk in enumerate(vectors.chunks()):
                yield _as_vectors(chunk, f"shard {i}")

        return len(vectors), int(vectors.dim), chunks, vectors.rows
    x = _as_vectors(vectors, "vectors")
    return x.shape[0], x.shape[1], lambda: iter([x]), lambda idx: x[idx]


def _check_ids(ids: Sequence[str], n: int) -> list[str]:
    ids = list(ids)
    if len(ids) != n:
        raise ValueError(f"got {n} vectors but {len(ids)} ids")
    for i, pid in enumerate(ids):
        if not isinstance(pid, str):
            raise ValueError(f"ids[{i}] must be a string, got {type(pid).__name__} {pid!r}")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        for i, pid in enumerate(ids):
            if pid in seen:
                raise ValueError(f"duplicate id {pid!r} (ids[{i}])")
            seen.add(pid)
    return ids


class DenseIndex:
    """A FAISS inner-product index with passage ids kept beside the vectors.

    ``ids[i]`` is the passage id of FAISS position ``i``. ``report`` holds the build report (see
    :meth:`build`), ``model``/``encoder`` the encoder that made the vectors (when known) and
    ``version`` an integer written into ``index.json`` (e.g. the refresh round of joint training).
    """

    def __init__(
        self,
        index: faiss.Index,
        ids: Sequence[str],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        report: Mapping[str, Any] | None = None,
        encoder: Mapping[str, Any] | None = None,
        version: int = 1,
    ):
        if index.ntotal != len(ids):
            raise ValueError(f"index holds {index.ntotal} vectors but {len(ids)} ids were given")
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError("the FAISS index must use METRIC_INNER_PRODUCT")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.index, self.ids = index, list(ids)
        self.kind = _kind_of(index)
        self.batch_size = int(batch_size)
        self.report: dict[str, Any] = dict(report or {})
        self.encoder: dict[str, Any] = dict(encoder or {})
        self.version = int(version)

    # ------------------------------------------------------------------------------------ building

    @classmethod
    def flat(cls, vectors: np.ndarray, ids: Sequence[str]) -> DenseIndex:
        """Build an exact index from ``[n, dim]`` float32 vectors (search batch size: the default)."""
        return cls.build(vectors, ids, IndexConfig(kind="flat", recall_queries=0))

    @classmethod
    def build(cls, vectors: np.ndarray, ids: Sequence[str], cfg: IndexConfig, seed: int = 0) -> DenseIndex:
        """Build an index of kind ``cfg.kind`` over ``[n, dim]`` L2-normalised vectors.

        IVF kinds use ``min(cfg.nlist, max(1, n // 39))`` cells (so k-means sees >= 39 points per
        cell) and are trained on a seeded sample of at most ``256 * nlist`` vectors (``256 *
        2**pq_nbits`` for ``ivfpq`` when larger). ``ivfpq`` needs ``cfg.pq_m`` to divide ``dim`` and
        at least ``2**pq_nbits`` vectors. The build report is stored in :attr:`report`: ``build_s``,
        ``n_vectors``, ``dim``, ``kind``, ``params``, ``bytes`` (size in FAISS's file format) and
        ``recall@10_vs_exact`` (see :meth:`recall_vs_exact`; 1.0 for flat, None when
        ``cfg.recall_queries`` is 0).
        """
        n, dim, chunks, rows = _vector_source(vectors)
        if n == 0:
            raise ValueError("cannot index an empty corpus: no vectors given")
        ids = _check_ids(ids, n)
        if cfg.kind not in KINDS:
            raise ValueError(f"index.kind must be one of {KINDS}, got {cfg.kind!r}")
        metric = faiss.METRIC_INNER_PRODUCT
        t0 = time.perf_counter()
        if cfg.kind == "flat":
            index: faiss.Index = faiss.IndexFlatIP(dim)
        elif cfg.kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, metric)
            index.hnsw.efConstruction = cfg.ef_construction
        else:
            nlist = min(cfg.nlist, max(1, n // 39))
            if nlist < cfg.nlist:
                log.info("index.nlist %d capped at %d for %d vectors (>= 39 per cell)", cfg.nlist, nlist, n)
            quantizer = faiss.IndexFlatIP(dim)
            sample_size = 256 * nlist
            if cfg.kind == "ivf":
                index = faiss.IndexIVFFlat(quantizer, dim, nlist, metric)
            else:
                if dim % cfg.pq_m:
                    raise ValueError(
                        f"index.pq_m ({cfg.pq_m}) must divide the vector dimension ({dim}) for ivfpq"
                    )
                if n < 2**cfg.pq_nbits:
                    raise ValueError(
                        f"ivfpq with index.pq_nbits={cfg.pq_nbits} needs at least {2**cfg.pq_nbits} "
                        f"vectors to train its codebooks, got {n}"
                    )
                index = faiss.IndexIVFPQ(quantizer, dim, nlist, cfg.pq_m, cfg.pq_nbits, metric)
                index.pq.cp.seed = seed
                sample_size = max(sample_size, 256 * 2**cfg.pq_nbits)
            index.cp.seed = seed
            rng = np.random.default_rng((seed, 0))
            picked = (
                np.arange(n) if n <= sample_size else np.sort(rng.choice(n, size=sample_size, replace=False))
            )
            train = rows(picked)
            index.train(train)
            del train
        for chunk in chunks():
            index.add(chunk)
        build_s = time.perf_counter() - t0

        dense = cls(index, ids, batch_size=cfg.batch_size)
        dense.set_search_params(nprobe=cfg.nprobe, ef_search=cfg.ef_search)
        if cfg.kind == "flat":
            recall: float | None = 1.0  # exact search, by definition
        elif cfg.recall_queries == 0:
            recall = None
        else:
            recall = dense.recall_vs_exact(vectors, cfg.recall_queries, seed=seed)
        dense.report = {
            "build_s": round(build_s, 4),
            "n_vectors": n,
            "dim": dim,
            "kind": cfg.kind,
            "params": dense.params,
            "bytes": _serialized_bytes(index),
            RECALL_KEY: recall,
        }
        return dense

    def recall_vs_exact(self, vectors: np.ndarray, n_queries: int, seed: int = 0, k: int = RECALL_K) -> float:
        """Recall@k of this index against exact ``IndexFlatIP`` search over the same ``vectors``
        (the ``[ntotal, dim]`` vectors it was built from), with a seeded sample of ``n_queries`` of
        them (all when ``n_queries >= ntotal``) used as queries. ``k`` is capped at ``ntotal``."""
        n, dim, chunks, rows_of = _vector_source(vectors)
        if n != self.index.ntotal or dim != self.index.d:
            raise ValueError(
                f"vectors have shape {(n, dim)}, the index holds [{self.index.ntotal}, {self.index.d}]"
            )
        if n_queries < 1:
            raise ValueError(f"n_queries must be >= 1, got {n_queries}")
        rng = np.random.default_rng((seed, 1))
        rows = np.arange(n) if n_queries >= n else np.sort(rng.choice(n, size=n_queries, replace=False))
        queries = rows_of(rows)
        k = min(k, n)
        exact = faiss.IndexFlatIP(dim)
        for chunk in chunks():
            exact.add(chunk)
        exact_pos = np.concatenate(
            [
                exact.search(queries[i : i + self.batch_size], k)[1]
                for i in range(0, len(rows), self.batch_size)
            ]
        )
        approx_pos = np.concatenate(
            [
                self.index.search(queries[i : i + self.batch_size], k)[1]
                for i in range(0, len(rows), self.batch_size)
            ]
        )
        return topk_overlap(approx_pos, exact_pos, k)  # a missing result (-1) is a miss

    # ------------------------------------------------------------------------------- search params

    @property
    def params(self) -> dict[str, Any]:
        """The build and search-time parameters of the FAISS index, under ``IndexConfig``'s names."""
        params: dict[str, Any] = {}
        if self.kind in ("ivf", "ivfpq"):
            params |= {"nlist": int(self.index.nlist), "nprobe": int(self.index.nprobe)}
        if self.kind == "ivfpq":
            params |= {"pq_m": int(self.index.pq.M), "pq_nbits": int(self.index.pq.nbits)}
        if self.kind == "hnsw":
            hnsw = self.index.hnsw
            params |= {
                "hnsw_m": int(hnsw.nb_neighbors(1)),
                "ef_construction": int(hnsw.efConstruction),
                "ef_search": int(hnsw.efSearch),
            }
        params["batch_size"] = self.batch_size
        return params

    def set_search_params(
        self, nprobe: int | None = None, ef_search: int | None = None, batch_size: int | None = None
    ) -> None:
        """Set the search-time parameters that apply to this kind (others are ignored): IVF cells
        visited per query (capped at ``nlist``), the HNSW search beam, and query vectors per call."""
        if nprobe is not None:
            if nprobe < 1:
                raise ValueError(f"nprobe must be >= 1, got {nprobe}")
            if self.kind in ("ivf", "ivfpq"):
                self.index.nprobe = min(int(nprobe), int(self.index.nlist))
        if ef_search is not None:
            if ef_search < 1:
                raise ValueError(f"ef_search must be >= 1, got {ef_search}")
            if self.kind == "hnsw":
                self.index.hnsw.efSearch = int(ef_search)
        if batch_size is not None:
            if batch_size < 1:
                raise ValueError(f"batch_size must be >= 1, got {batch_size}")
            self.batch_size = int(batch_size)

    # -------------------------------------------------------------------------------------- search

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return len(self.ids)

    def search_arrays(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS's raw answer for ``[nq, dim]`` query vectors, in chunks of :attr:`batch_size`:
        ``scores`` ``[nq, k']`` float32 and ``positions`` ``[nq, k']`` int64 (``-1`` = no result),
        with ``k' = min(k, ntotal)``."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = _as_vectors(queries, "queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {q.shape[1]} but the index has {self.dim}")
        k = min(k, len(self.ids))
        if len(q) == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        parts = [self.index.search(q[i : i + self.batch_size], k) for i in range(0, len(q), self.batch_size)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """Top ``k`` (id, score) per query vector, best first (``k`` capped at the index size;
        missing results, which IVF kinds can give, are dropped)."""
        scores, positions = self.search_arrays(queries, k)
        ids = self.ids
        return [
            [(ids[i], float(s)) for i, s in zip(row_i.tolist(), row_s.tolist()) if i >= 0]
            for row_i, row_s in zip(positions, scores)
        ]

    # ------------------------------------------------------------------------------------- storage

    def metadata(self, version: int | None = None) -> dict[str, Any]:
        """The content of ``index.json``."""
        return {
            "format": FORMAT,
            "version": self.version if version is None else version,
            "kind": self.kind,
            "metric": "inner_product",
            "dim": self.dim,
            "n": len(self.ids),
            "params": self.params,
            "model": self.encoder.get("model"),
            "encoder": self.encoder,
            "report": self.report,
        }

    def save(self, folder: str | Path, version: int | None = None) -> Path:
        """Write ``index.faiss`` (FAISS's format), ``ids.json`` (position -> id) and ``index.json``
        into ``folder``, each atomically; ``version`` (default: :attr:`version`, 1 for a new index)
        is recorded in ``index.json``. Returns the folder."""
        if version is not None:
            if isinstance(version, bool) or not isinstance(version, int):
                raise ValueError(f"version must be an integer, got {version!r}")
            self.version = version
        folder = Path(folder)

        def write(tmp: Path) -> None:
            with atomic_writer(tmp / "index.faiss", "wb") as fh:
                writer = faiss.PyCallbackIOWriter(fh.write)
                faiss.write_index(self.index, writer)
                del writer  # flushes the last chunk into fh
            atomic_write_text(tmp / "ids.json", json.dumps(self.ids, ensure_ascii=False))
            atomic_write_text(tmp / "index.json", json.dumps(self.metadata(), indent=2) + "\n")

        save_dir_atomically(folder, write)  # the three files change together or not at all
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> DenseIndex:
        """Read an index written by :meth:`save`, restoring its search-time parameters; the id
        count must equal the number of vectors in ``index.faiss``."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: index folder not found")
        for name in FILES:
            if not (folder / name).is_file():
                raise FileNotFoundError(
                    f"{folder / name}: file not found (an index folder holds {', '.join(FILES)})"
                )
        meta = _read_json(folder / "index.json")
        if not isinstance(meta, dict):
            raise DataError(folder / "index.json", None, None, "expected a JSON object")
        ids = _read_json(folder / "ids.json")
        if not isinstance(ids, list):
            raise DataError(
                folder / "ids.json", None, None, f"expected a JSON list of ids, got {type(ids).__name__}"
            )
        for i, pid in enumerate(ids):
            if not isinstance(pid, str):
                raise DataError(folder / "ids.json", None, f"[{i}]", f"expected a string id, got {pid!r}")
        try:
            index = faiss.read_index(str(folder / "index.faiss"))
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{folder / 'index.faiss'}: not a readable FAISS index ({first})") from None
        if index.ntotal != len(ids):
            raise UserError(
                f"{folder}: ids.json holds {len(ids)} ids but index.faiss holds {index.ntotal} vectors"
            )
        if meta.get("dim", index.d) != index.d or meta.get("n", index.ntotal) != index.ntotal:
            raise UserError(
                f"{folder}: index.json says dim={meta.get('dim')} n={meta.get('n')} but index.faiss "
                f"holds dim={index.d} n={index.ntotal}"
            )
        params = meta.get("params") or {}
        if not isinstance(params, dict):
            raise DataError(folder / "index.json", None, "params", "expected an object")
        version = meta.get("version", 1)
        if isinstance(version, bool) or not isinstance(version, int):
            raise DataError(folder / "index.json", None, "version", f"expected an integer, got {version!r}")
        try:
            dense = cls(
                index,
                ids,
                batch_size=params.get("batch_size", DEFAULT_BATCH_SIZE),
                report=meta.get("report") or {},
                encoder=meta.get("encoder") or ({"model": meta["model"]} if meta.get("model") else {}),
                version=version,
            )
            dense.set_search_params(nprobe=params.get("nprobe"), ef_search=params.get("ef_search"))
        except (TypeError, ValueError) as exc:
            raise UserError(f"{folder}: {exc}") from None
        if meta.get("kind", dense.kind) != dense.kind:
            raise UserError(
                f"{folder}: index.json says kind {meta.get('kind')!r} but index.faiss is {dense.kind!r}"
            )
        return dense


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(path, None, None, f"not UTF-8 ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, exc.lineno, None, f"malformed JSON: {exc.msg} (column {exc.colno})") from None


# ------------------------------------------------------------------------------------ entry points


def build_index(cfg: RetrieverConfig) -> Path:
    """Encode the corpus of ``cfg.data.beir_dir`` with ``cfg.model`` into on-disk shards
    (``cfg.index.embeddings_dir``, default ``cfg.output_dir / "embeddings"``; a killed run resumes
    there, see :mod:`ragtune.retriever.shards`), build a ``cfg.index`` index from them one shard at
    a time, and save it atomically into ``cfg.output_dir / "index"`` with the resolved config beside
    it (``cfg.output_dir / "config.yaml"``). Logs the build report; returns the index folder.
    Under ``torchrun`` the processes share the encoding; the main process builds and writes."""
    from ragtune import distributed as dist
    from ragtune.config import save_config
    from ragtune.data.io import load_corpus
    from ragtune.precision import describe, hardware
    from ragtune.retriever.model import encode_passages, load_encoder
    from ragtune.retriever.shards import encode_to_shards

    dist.setup()
    out = Path(cfg.output_dir)
    info = hardware(cfg.precision, dist.device())  # the encoding precision and the machine, once
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml", header=f"ragtune index build: {describe(info)}")
    corpus = load_corpus(Path(cfg.data.beir_dir) / "corpus.jsonl")
    m, ix = cfg.model, cfg.index
    log.info("encoding %d passages with %s", len(corpus), m.name)
    if m.kind == "colbert":
        return _build_colbert_index(cfg, corpus, out, info)
    model = load_encoder(
        m.name, device=str(dist.device()), precision=cfg.precision, trust_remote_code=m.trust_remote_code
    )
    settings = {
        "model": m.name,
        "prefix": m.passage_prefix,
        "max_length": m.max_passage_length,
        "precision": info["precision"],
    }
    store = encode_to_shards(
        lambda texts: encode_passages(model, texts, cfg, show_progress=False),
        [p.full_text() for p in corpus.values()],
        Path(ix.embeddings_dir) if ix.embeddings_dir else out / "embeddings",
        settings=settings,
        shard_size=ix.shard_size,
        dtype=ix.embedding_dtype,
    )
    if not dist.is_main():
        dist.barrier()  # the main process builds and writes the index
        return out / "index"
    log.info("building a %s index over %d vectors of dimension %d", ix.kind, len(store), store.dim)
    index = DenseIndex.build(store, list(corpus), ix, seed=cfg.seed)
    index.encoder = {
        "model": m.name,
        "query_prefix": m.query_prefix,
        "passage_prefix": m.passage_prefix,
        "max_query_length": m.max_query_length,
        "max_passage_length": m.max_passage_length,
        "precision": info["precision"],
        "hardware": info,
    }
    folder = index.save(out / "index")
    r = index.report
    recall = r[RECALL_KEY]
    log.info(
        "built %s index: %d vectors, dim %d, %.2f s, %.1f MB, %s %s, params %s -> %s",
        r["kind"],
        r["n_vectors"],
        r["dim"],
        r["build_s"],
        r["bytes"] / 1e6,
        RECALL_KEY,
        "skipped" if recall is None else f"{recall:.4f}",
        r["params"],
        folder,
    )
    dist.barrier()
    return folder


def _build_colbert_index(cfg: RetrieverConfig, corpus, out: Path, info: dict) -> Path:
    """``model.kind=colbert``: every passage's token vectors, saved as a
    :class:`ragtune.retriever.colbert.ColbertIndex` in ``out / "index"`` (searched exactly by
    MaxSim; ``index.kind`` does not apply). One process encodes."""
    from ragtune import distributed as dist
    from ragtune.retriever.colbert import ColbertIndex, encode_passage_tokens, load_trained_colbert

    if not dist.is_main():
        dist.barrier()
        return out / "index"
    m = cfg.model
    model = load_trained_colbert(cfg, device=str(dist.device()))
    t0 = time.perf_counter()
    index = ColbertIndex(
        encode_passage_tokens(model, [p.full_text() for p in corpus.values()], cfg), list(corpus)
    )
    index.encoder = {
        "kind": "colbert",
        "model": m.name,
        "query_prefix": m.query_prefix,
        "passage_prefix": m.passage_prefix,
        "max_query_length": m.max_query_length,
        "max_passage_length": m.max_passage_length,
        "query_expansion": m.query_expansion,
        "precision": info["precision"],
        "encode_s": round(time.perf_counter() - t0, 3),
        "hardware": info,
    }
    folder = index.save(out / "index")
    n_tokens = sum(len(p) for p in index.passages)
    log.info("built a ColBERT index: %d passages, %d token vectors -> %s", len(index), n_tokens, folder)
    dist.barrier()
    return folder


def _search_colbert(index_dir: Path, queries, k: int, model_name: str | None):
    """The top ``k`` per query of a ColBERT index folder, queries encoded as recorded there."""
    from ragtune.config import load_config
    from ragtune.retriever.colbert import ColbertIndex, encode_query_tokens, load_trained_colbert
    from ragtune.retriever.config import RetrieverConfig

    index = ColbertIndex.load(index_dir)
    enc = index.encoder
    name = model_name or enc.get("model")
    if not name:
        raise UserError(f"{Path(index_dir) / 'encoder.json'}: no model recorded; pass model_name")
    precision = "fp32" if enc.get("precision") == "fp32" else "auto"
    overrides = [f"model.name={name}", "model.kind=colbert", f"precision={precision}"]
    for key in ("max_query_length", "max_passage_length", "query_expansion"):
        if key in enc:
            overrides.append(f"model.{key}={enc[key]}")
    cfg = load_config(None, overrides, RetrieverConfig)
    cfg.model.query_prefix = enc.get("query_prefix", "")
    model = load_trained_colbert(cfg)
    return index.search(encode_query_tokens(model, [q.text for q in queries.values()], cfg), k)


def search_index(
    index_dir: Path,
    queries_path: Path,
    out: Path,
    k: int = 100,
    model_name: str | None = None,
    query_prefix: str | None = None,
    max_query_length: int | None = None,
) -> Path:
    """Search the index in ``index_dir`` with the queries of a BEIR ``queries.jsonl`` and write the
    top ``k`` per query as a TREC run to ``out`` (returned).

    Queries are encoded with ``model_name``, else the model recorded in ``index.json``; the prefix
    and maximum length default to those recorded there (else ``""`` and 64).
    """
    from ragtune.data.io import load_queries, write_run
    from ragtune.retriever.model import encode, load_encoder

    if (Path(index_dir) / "tokens.npy").exists():  # a ColBERT index (`index build` with model.kind=colbert)
        queries = load_queries(queries_path)
        hits = _search_colbert(Path(index_dir), queries, k, model_name)
        return write_run(out, {qid: dict(row) for qid, row in zip(queries, hits, strict=True)})
    index = DenseIndex.load(index_dir)
    enc = index.encoder
    name = model_name or enc.get("model")
    if not name:
        raise UserError(f"{Path(index_dir) / 'index.json'}: no model recorded; pass model_name")
    prefix = query_prefix if query_prefix is not None else enc.get("query_prefix", "")
    max_length = max_query_length if max_query_length is not None else enc.get("max_query_length", 64)
    queries = load_queries(queries_path)
    # Queries in the precision the passages were encoded in, unless that is bf16 and bf16 is not
    # native here (then auto: fp32, rather than 10-80x slower emulated bf16).
    precision = "fp32" if enc.get("precision") == "fp32" else "auto"
    model = load_encoder(name, precision=precision)
    vectors = encode(
        model, [q.text for q in queries.values()], prefix=prefix, max_length=max_length, precision=precision
    )
    if vectors.shape[1] != index.dim:
        raise UserError(
            f"model {name!r} gives {vectors.shape[1]}-d vectors but the index in {index_dir} holds {index.dim}-d ones"
        )
    t0 = time.perf_counter()
    hits = index.search(vectors, k)
    elapsed = time.perf_counter() - t0
    log.info(
        "searched %d queries (k=%d) in %.3f s (%.0f qps)",
        len(queries),
        k,
        elapsed,
        len(queries) / elapsed if elapsed > 0 else math.inf,
    )
    run = {qid: dict(row) for qid, row in zip(queries, hits)}
    return write_run(out, run)
