"""The bi-encoder: a sentence-transformers model, and batched, normalised encoding."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from ragtune.models import resolve_model


def load_encoder(name: str, device: str | None = None) -> SentenceTransformer:
    """Load a sentence-transformers model by name or path (the packaged default resolves offline)."""
    return SentenceTransformer(resolve_model(name), device=device or "cpu")


def encode(
    model: SentenceTransformer,
    texts: Sequence[str],
    *,
    prefix: str = "",
    max_length: int = 256,
    batch_size: int = 64,
    bf16: bool = True,
    show_progress: bool = True,
) -> np.ndarray:
    """Encode ``texts`` into L2-normalised float32 vectors of shape ``[len(texts), dim]``.

    Texts are sorted by length inside sentence-transformers, so padding stays small; ``bf16`` runs
    the forward pass under bf16 autocast (AMX on CPU), keeping the output in float32.
    """
    model.max_seq_length = max_length
    device_type = "cuda" if str(model.device).startswith("cuda") else "cpu"
    ctx = torch.autocast(device_type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with ctx, torch.inference_mode():
        vectors = model.encode(
            [prefix + t for t in texts],
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=show_progress,
        )
    return np.ascontiguousarray(vectors, dtype=np.float32)
