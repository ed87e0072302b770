"""Unsupervised continued pre-training of the bi-encoder on a corpus: ``pretrain(cfg) -> folder``.

Contriever's independent cropping (Izacard et al. 2022, "Unsupervised Dense Information Retrieval
with Contrastive Learning"): for each passage, two word spans are drawn independently (each of a
uniform length between ``pretrain.crop_min`` and ``pretrain.crop_max`` of the passage's words, at a
uniform start); the first is encoded as a query, the second as its positive passage, and the other
passages' spans in the batch are its negatives (InfoNCE, :mod:`ragtune.retriever.losses`). No label
is used: it adapts an encoder to a domain's vocabulary before (or instead of) supervised training.

The crops of epoch ``e`` are drawn from ``(seed, e, passage id)``, so a resumed run sees the same
pairs as an unbroken one. Everything else is :func:`ragtune.retriever.train.train`'s loop (one
:class:`ragtune.training.Run`): ``train.*`` sets epochs or ``max_steps``, batch size, learning
rate, temperature, precision and checkpoints; there is no validation, since there are no labels.
Outputs in ``cfg.output_dir``: ``model/`` (a sentence-transformers folder), ``checkpoint/``,
``history.jsonl``, ``train_summary.json`` and the resolved ``config.yaml``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from ragtune.data.io import load_corpus
from ragtune.data.schema import Passage, Query
from ragtune.errors import UserError
from ragtune.retriever.config import RetrieverConfig
from ragtune.retriever.train import ContrastiveTask, Example, fit, training_model
from ragtune.training import Run


def crop(words: Sequence[str], rng: random.Random, low: float, high: float) -> str:
    """One random span of ``words``: its length a uniform fraction in [``low``, ``high``] of them
    (at least one word), its start uniform over the positions where it fits."""
    n = max(1, round(len(words) * rng.uniform(low, high)))
    start = rng.randrange(len(words) - n + 1)
    return " ".join(words[start : start + n])


def crop_pairs(passages: Sequence[Passage], cfg: RetrieverConfig, epoch: int) -> list[Example]:
    """The epoch's training pairs: two independent crops of each passage (a seeded sample of
    ``pretrain.max_passages`` of them when set), drawn from ``(seed, epoch, passage id)``."""
    p = cfg.pretrain
    chosen = list(passages)
    if p.max_passages and p.max_passages < len(chosen):
        chosen = random.Random(f"{cfg.seed}/{epoch}/sample").sample(chosen, p.max_passages)
    out = []
    for passage in chosen:
        words = passage.text.split()
        rng = random.Random(f"{cfg.seed}/{epoch}/{passage.id}")
        a, b = crop(words, rng, p.crop_min, p.crop_max), crop(words, rng, p.crop_min, p.crop_max)
        out.append(Example(Query(passage.id, a), Passage(passage.id, b), (), frozenset({passage.id})))
    return out


class CroppingTask(ContrastiveTask):
    """:class:`ContrastiveTask` whose examples are each epoch's fresh crop pairs."""

    name = "retriever pretrain"

    def __init__(self, cfg: RetrieverConfig, model, passages: list[Passage]):
        super().__init__(cfg, model, crop_pairs(passages, cfg, 0), None)
        self.passages = passages

    def epoch_steps(self, epoch: int) -> list[list[int]]:
        self.examples = crop_pairs(self.passages, self.cfg, epoch)
        return super().epoch_steps(epoch)


def pretrain(cfg: RetrieverConfig) -> Path:
    """Contriever-style pre-training on ``data.beir_dir``'s corpus; returns ``cfg.output_dir``."""
    if cfg.train.loss != "info_nce":
        raise UserError(
            f"retriever pretrain has no teacher scores: train.loss must be info_nce, not {cfg.train.loss}"
        )
    corpus = load_corpus(Path(cfg.data.beir_dir) / "corpus.jsonl")
    passages = [p for p in corpus.values() if len(p.text.split()) >= cfg.pretrain.min_words]
    if len(passages) < 2:
        raise UserError(
            f"{cfg.data.beir_dir}: {len(passages)} passage(s) of at least pretrain.min_words="
            f"{cfg.pretrain.min_words} words; cropping pairs need 2 or more"
        )
    run = Run(cfg)
    pairs = min(len(passages), cfg.pretrain.max_passages or len(passages))
    task = CroppingTask(cfg, training_model(cfg, run), passages)  # validates nothing: no labels
    return fit(cfg, run, task, pairs, {"passages": len(passages), "pairs_per_epoch": pairs})
