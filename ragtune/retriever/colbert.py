"""Late interaction (ColBERT; Khattab & Zaharia, SIGIR 2020): every token of a query and of a
passage gets its own vector (the encoder's token states through a linear projection to
``model.colbert_dim``, L2-normalised); a passage's score is MaxSim, the sum over the query's tokens
of each one's best cosine with any passage token.

The model is sentence-transformers' ``MultiVectorEncoder`` (Transformer -> Dense projection ->
MultiVectorMask -> Normalize), so a trained folder loads with
``sentence_transformers.MultiVectorEncoder(path)`` alone, and MaxSim is its ``maxsim``. PyLate,
the library this layout comes from, cannot serve here: pylate 1.6.0 (the newest on PyPI) pins
sentence-transformers 5.3.0 and transformers <= 5.3.0, and installed beside ragtune's
sentence-transformers 6 without its pins it fails while building a model (its ``Dense`` reads a
config key sentence-transformers 6 no longer writes). Its PLAID / Voyager indexes come with it, so
the index here is ragtune's own: every passage's token vectors in one float16 matrix with offsets
(``tokens.npy``, ``offsets.npy``, ``ids.json``: plain NumPy and JSON, readable without ragtune),
searched exactly by MaxSim against every passage in bounded chunks.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ragtune.data.io import atomic_write_text
from ragtune.models import resolve_model, set_dropout
from ragtune.precision import cast_for_inference, inference_context

log = logging.getLogger(__name__)

INDEX_FILES = ("tokens.npy", "offsets.npy", "ids.json")


def is_multi_vector(name: str | Path) -> bool:
    """Whether ``name`` is a local sentence-transformers ``MultiVectorEncoder`` folder."""
    info = Path(resolve_model(str(name))) / "config_sentence_transformers.json"
    return info.exists() and json.loads(info.read_text()).get("model_type") == "MultiVectorEncoder"


def _transformer_folder(name: str) -> str:
    """The Hugging Face model inside a sentence-transformers folder (its Transformer module's
    path), the folder itself otherwise, or a hub name unchanged."""
    folder = Path(resolve_model(name))
    modules = folder / "modules.json"
    if not modules.exists():
        return str(folder) if folder.exists() else name
    for module in json.loads(modules.read_text()):
        if module["type"].rsplit(".", 1)[-1] == "Transformer":
            return str(folder / module["path"])
    return str(folder)


def load_colbert(
    name: str,
    *,
    dim: int = 128,
    query_length: int = 32,
    document_length: int = 256,
    query_expansion: bool = True,
    device: str | None = None,
    precision: str = "fp32",
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    dropout: float | None = None,
):
    """A ``MultiVectorEncoder``: a saved one from ``name``, or built from any encoder checkpoint
    (a sentence-transformers folder's transformer, or a Hugging Face model) with a fresh
    ``dim``-wide projection (seed torch first for a reproducible one). Queries are cut (and, with
    ``query_expansion``, padded with [MASK] tokens) to ``query_length`` tokens, passages cut to
    ``document_length``. ``precision`` resolving to bf16 casts the weights for inference; train fp32
    weights under autocast."""
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    kwargs = {"use_safetensors": True}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    expansion = {"strategy": "fixed", "length": query_length} if query_expansion else None
    if is_multi_vector(name):
        model = MultiVectorEncoder(
            resolve_model(name),
            device=device or "cpu",
            trust_remote_code=trust_remote_code,
            model_kwargs=kwargs,
        )
    else:
        word = Transformer(
            _transformer_folder(name),
            model_kwargs={**kwargs, "trust_remote_code": trust_remote_code},
            query_length=query_length,
            document_length=document_length,
            query_expansion=expansion,
        )
        project = Dense(
            in_features=word.get_embedding_dimension(),
            out_features=dim,
            bias=False,
            activation_function=torch.nn.Identity(),
            module_input_name="token_embeddings",
        )
        modules = [word, project, MultiVectorMask(), Normalize(module_input_name="token_embeddings")]
        model = MultiVectorEncoder(modules=modules, device=device or "cpu")
    word = model[0]  # the config's lengths and expansion win over a loaded folder's own
    word.query_expansion = None
    word.query_length, word.document_length = query_length, document_length
    word.query_expansion = expansion
    return cast_for_inference(set_dropout(model, dropout), precision, device)


def token_embeddings_with_graph(model, texts: list[str], task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Token vectors ``[n, L, dim]`` and the scoring mask ``[n, L]`` (bool) of ``texts`` encoded as
    ``task`` (``query`` or ``document``), with a graph (the caller decides grad / autocast)."""
    features = model.preprocess(texts, task=task)
    features = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
    out = model(features, task=task)
    return out["token_embeddings"], out["attention_mask"].bool()


def encode_tokens(
    model,
    texts: Sequence[str],
    *,
    task: str,
    prefix: str = "",
    batch_size: int = 64,
    precision: str = "auto",
    show_progress: bool = True,
) -> list[np.ndarray]:
    """Each text's scored token vectors (float32 ``[n_tokens, dim]``, L2-normalised), encoded as
    ``task``; under bf16 autocast when ``precision`` resolves to bf16 and the weights are fp32."""
    if not texts:
        return []
    with inference_context(model, precision):
        out = model.encode(
            [prefix + t for t in texts],
            task=task,
            batch_size=batch_size,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
    vectors = []
    for v in out:  # bf16 outputs were normalised before the cast: normalise again in float32
        v = np.asarray(v, dtype=np.float32)
        vectors.append(v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12))
    return vectors


def _encode_configured(model, texts: Sequence[str], cfg, task: str, prefix: str, show_progress: bool):
    return encode_tokens(
        model,
        texts,
        task=task,
        prefix=prefix,
        batch_size=cfg.eval.batch_size,
        precision=cfg.precision,
        show_progress=show_progress,
    )


def encode_passage_tokens(model, texts: Sequence[str], cfg, show_progress: bool = True) -> list[np.ndarray]:
    """Passages' token vectors with a retriever config's passage prefix, batch size and precision
    (the length is the model's ``document_length``, set from ``model.max_passage_length``)."""
    return _encode_configured(model, texts, cfg, "document", cfg.model.passage_prefix, show_progress)


def encode_query_tokens(model, texts: Sequence[str], cfg, show_progress: bool = True) -> list[np.ndarray]:
    """Queries' token vectors with a retriever config's query prefix, batch size and precision."""
    return _encode_configured(model, texts, cfg, "query", cfg.model.query_prefix, show_progress)


def load_saved_colbert(
    name: str, device: str | None = None, precision: str = "fp32", trust_remote_code: bool = False
):
    """A saved ``MultiVectorEncoder`` with the query / passage lengths and query expansion it was
    saved with (weights from safetensors; bf16 when ``precision`` resolves to it, for inference)."""
    from sentence_transformers import MultiVectorEncoder

    model = MultiVectorEncoder(
        resolve_model(name),
        device=device or "cpu",
        trust_remote_code=trust_remote_code,
        model_kwargs={"use_safetensors": True},
    )
    return cast_for_inference(model, precision, device)


def load_trained_colbert(cfg, name: str | None = None, device: str | None = None):
    """The late-interaction model to search with: ``name`` (default ``cfg.model.name``) must be a
    saved ``MultiVectorEncoder`` (a local folder is checked; a hub name is loaded as it is), at the
    config's lengths and the precision it resolves for inference."""
    from ragtune.errors import UserError

    m = cfg.model
    name = name or m.name
    folder = Path(resolve_model(name))
    if folder.exists() and not is_multi_vector(folder):
        raise UserError(
            f"model.kind=colbert: {name} is not a trained late-interaction model (no MultiVectorEncoder "
            "config_sentence_transformers.json): train one with `ragtune retriever train model.kind=colbert`"
        )
    if not folder.exists():
        return load_saved_colbert(name, device, cfg.precision, m.trust_remote_code)
    return load_colbert(
        name,
        query_length=m.max_query_length,
        document_length=m.max_passage_length,
        query_expansion=m.query_expansion,
        device=device,
        precision=cfg.precision,
        trust_remote_code=m.trust_remote_code,
    )


def maxsim_scores(queries: Sequence[np.ndarray], passages: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[len(queries), len(passages)]`` MaxSim scores (sentence-transformers' ``maxsim``)."""
    from sentence_transformers.util.similarity import maxsim

    return maxsim([torch.as_tensor(q) for q in queries], list(passages))


class ColbertIndex:
    """Every passage's token vectors (float16 on disk, float32 in memory), searched exactly: MaxSim
    of each query against every passage, in chunks of ``chunk_passages``."""

    def __init__(self, vectors: Sequence[np.ndarray], ids: Sequence[str]):
        if len(vectors) != len(ids):
            raise ValueError(f"{len(vectors)} passages' vectors but {len(ids)} ids")
        self.ids = list(ids)
        self.passages = [torch.as_tensor(np.asarray(v, dtype=np.float32)) for v in vectors]
        self.encoder: dict = {}  # how the passages were encoded (model, lengths, precision)

    def __len__(self) -> int:
        return len(self.ids)

    def search(
        self,
        queries: Sequence[np.ndarray],
        k: int,
        chunk_passages: int = 2048,
        chunk_queries: int = 32,
    ) -> list[list[tuple[str, float]]]:
        """The top ``k`` (passage id, MaxSim) per query, best first (ties by corpus order), scored
        ``chunk_queries`` queries x ``chunk_passages`` passages at a time: memory stays bounded
        (all 809 SciFact train queries at once ran a 24 GB machine out of memory)."""
        k = min(k, len(self.ids))
        if not queries or not k:
            return [[] for _ in queries]
        out = []
        for q0 in range(0, len(queries), chunk_queries):
            batch = queries[q0 : q0 + chunk_queries]
            parts = [
                maxsim_scores(batch, self.passages[s : s + chunk_passages])
                for s in range(0, len(self.passages), chunk_passages)
            ]
            for row in torch.cat(parts, dim=1).numpy():
                top = np.argsort(-row, kind="stable")[:k]
                out.append([(self.ids[i], float(row[i])) for i in top])
        return out

    def save(self, folder: str | Path) -> Path:
        """``tokens.npy`` (float16, all passages' vectors stacked), ``offsets.npy`` (passage i owns
        rows ``offsets[i]:offsets[i+1]``), ``ids.json`` and ``encoder.json``; written to a temporary
        folder, then renamed."""
        folder = Path(folder)
        tmp = folder.with_name(folder.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        lengths = [len(p) for p in self.passages]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        dim = self.passages[0].shape[1] if self.passages else 0
        stacked = torch.cat(self.passages).numpy() if self.passages else np.zeros((0, dim), np.float32)
        np.save(tmp / "tokens.npy", stacked.astype(np.float16))
        np.save(tmp / "offsets.npy", offsets)
        atomic_write_text(tmp / "ids.json", json.dumps(self.ids))
        atomic_write_text(tmp / "encoder.json", json.dumps(self.encoder, indent=2) + "\n")
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        tmp.rename(folder)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> ColbertIndex:
        folder = Path(folder)
        missing = [f for f in INDEX_FILES if not (folder / f).exists()]
        if missing:
            raise FileNotFoundError(f"{folder} is not a ColBERT index: {', '.join(missing)} missing")
        tokens = np.load(folder / "tokens.npy")
        offsets = np.load(folder / "offsets.npy")
        ids = json.loads((folder / "ids.json").read_text())
        index = cls([tokens[a:b] for a, b in itertools.pairwise(offsets)], ids)
        if (folder / "encoder.json").exists():
            index.encoder = json.loads((folder / "encoder.json").read_text())
        return index
