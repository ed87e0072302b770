"""The cross-encoder: a sentence-transformers ``CrossEncoder`` (one logit per (query, passage) pair),
loaded for training or inference, and batched pair scoring.

Starting from a plain encoder checkpoint (the packaged MiniLM bi-encoder by default),
sentence-transformers builds a sequence-classification model with a fresh one-logit head; a
trained folder reloads with ``sentence_transformers.CrossEncoder(path)``, without ragtune.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import CrossEncoder

from ragtune import distributed as dist
from ragtune.errors import UserError
from ragtune.models import resolve_model, set_dropout
from ragtune.precision import cast_for_inference, inference_context

log = logging.getLogger(__name__)


def load_cross_encoder(
    name: str,
    *,
    max_length: int | None = None,
    device: str | None = None,
    precision: str = "fp32",
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    dropout: float | None = None,
    trained: bool = False,
) -> CrossEncoder:
    """A one-logit CrossEncoder from ``name`` (resolved offline for the packaged default), weights
    from safetensors only; ``max_length`` tokens per pair (None: the folder's own setting).

    For inference, ``precision`` resolving to bf16 casts the weights to bfloat16 (as the bi-encoder
    does for encoding); for training leave it ``fp32`` and run the forward under autocast.
    ``dropout`` (when not None) sets every dropout module's probability. ``trained``: refuse a
    local folder that holds no sequence-classification head (a plain encoder would get a fresh,
    random head: meaningless scores for reranking or as a teacher).
    """
    if trained:
        _check_trained(name)
    kwargs = {"use_safetensors": True}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    noisy = logging.getLogger("transformers.modeling_utils"), logging.getLogger("sentence_transformers")
    levels = [lg.level for lg in noisy]
    for lg in noisy:  # the fresh head's "newly initialised" report is expected, not a warning
        lg.setLevel(logging.ERROR)
    try:
        model = CrossEncoder(
            resolve_model(name),
            device=device or "cpu",
            num_labels=1,
            max_length=max_length,
            trust_remote_code=trust_remote_code,
            model_kwargs=kwargs,
        )
    finally:
        for lg, level in zip(noisy, levels, strict=True):
            lg.setLevel(level)
    if model.num_labels != 1:
        raise ValueError(f"{name}: a reranker needs one output logit, this model has {model.num_labels}")
    return cast_for_inference(set_dropout(model, dropout), precision, device)


def _check_trained(name: str) -> None:
    folder = Path(resolve_model(name))
    config = folder / "config.json"
    if not config.exists():
        return  # a hub name: whatever it is, it is what the user asked for
    architectures = json.loads(config.read_text()).get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise UserError(
            f"{name} is not a trained cross-encoder (its config.json names {architectures or 'no'} "
            "architecture, no sequence-classification head): train one with `ragtune reranker train`"
        )


def cross_encoder_to_train(
    start: Path | None, cfg: Any, attn_implementation: str | None, dropout: float | None
) -> CrossEncoder:
    """The cross-encoder a trainer trains: the checkpoint's ``model/`` when resuming (``start``),
    else ``cfg.name`` (a model config with ``name``, ``max_length``, ``trust_remote_code``), on this
    process's device, in train mode only when dropout is on (eval mode skips the mask work)."""
    model = load_cross_encoder(
        str(start) if start is not None else cfg.name,
        max_length=cfg.max_length,
        device=str(dist.device()),
        trust_remote_code=cfg.trust_remote_code,
        attn_implementation=attn_implementation,
        dropout=dropout,
    )
    model.train(dropout is None or dropout > 0)
    return model


def pair_logits_with_graph(model: CrossEncoder, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
    """Logits ``[len(pairs)]`` with a graph (the caller decides grad / autocast)."""
    features = model.preprocess(list(pairs))
    features = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
    return model(features)["scores"].squeeze(-1)


def score_pairs(
    model: CrossEncoder,
    pairs: Sequence[tuple[str, str]],
    *,
    batch_size: int = 64,
    precision: str = "auto",
    show_progress: bool = True,
) -> np.ndarray:
    """Raw logits (float64 ``[len(pairs)]``) of ``pairs``, batched by length (sentence-transformers
    sorts them), under bf16 autocast when ``precision`` resolves to bf16 and the weights are fp32."""
    if not pairs:
        return np.zeros(0)
    with inference_context(model, precision):
        scores = model.predict(
            list(pairs),
            batch_size=batch_size,
            activation_fn=torch.nn.Identity(),
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
    return np.asarray(scores, dtype=np.float64).reshape(len(pairs))
