"""ragtune retriever pretrain: Contriever-style cropping pairs, the shared loop, resume."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ragtune.cli import main
from ragtune.config import load_config
from ragtune.data.io import load_corpus
from ragtune.errors import UserError
from ragtune.retriever.config import RetrieverConfig
from ragtune.retriever.pretrain import crop, crop_pairs, pretrain
from tests.conftest import DEMO, killed_after_checkpoints


def _cfg(tmp_path: Path, encoder: Path | str, *extra: str) -> RetrieverConfig:
    return load_config(
        None,
        [
            f"model.name={encoder}",
            f"data.beir_dir={DEMO}",
            f"output_dir={tmp_path}",
            "train.batch_size=16",
            "train.lr=1e-3",
            "train.save_every=3",
            "precision=fp32",
            "pretrain.max_passages=96",
            *extra,
        ],
        RetrieverConfig,
    )


def test_crops_are_spans_of_the_allowed_lengths() -> None:
    words = [f"w{i}" for i in range(50)]
    rng = random.Random(0)
    lengths = set()
    for _ in range(500):
        span = crop(words, rng, 0.1, 0.5).split()
        start = words.index(span[0])
        assert span == words[start : start + len(span)]  # contiguous, in order
        assert 5 <= len(span) <= 25
        lengths.add(len(span))
    assert min(lengths) == 5 and max(lengths) == 25  # the whole range is drawn
    assert crop(["one"], random.Random(0), 0.1, 0.1) == "one"  # at least one word


def test_pairs_are_seeded_by_epoch(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "unused")
    passages = [p for p in load_corpus(DEMO / "corpus.jsonl").values()][:40]
    e0, again, e1 = crop_pairs(passages, cfg, 0), crop_pairs(passages, cfg, 0), crop_pairs(passages, cfg, 1)
    assert e0 == again and e0 != e1
    for ex in e0:  # a query crop and a positive crop of the same passage, nothing else
        text = next(p.text for p in passages if p.id == ex.query.id)
        assert ex.positive.id == ex.query.id and ex.positive_ids == {ex.query.id} and not ex.negatives
        assert ex.query.text in " ".join(text.split()) and ex.positive.text in " ".join(text.split())
    assert sum(ex.query.text != ex.positive.text for ex in e0) >= 35  # independent crops
    sampled = _cfg(tmp_path, "unused", "pretrain.max_passages=10")
    assert len(crop_pairs(passages, sampled, 0)) == 10


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(next(folder.rglob("model.safetensors")))


def test_pretraining_lowers_the_loss_and_resumes_to_the_same_weights(
    tmp_path: Path, tiny_encoder: Path
) -> None:
    full = pretrain(_cfg(tmp_path / "full", tiny_encoder, "train.epochs=3"))
    hist = [json.loads(x) for x in (full / "history.jsonl").read_text().splitlines()]
    assert len(hist) == 3 * math.ceil(96 / 16)
    first, last = sum(h["loss"] for h in hist[:3]) / 3, sum(h["loss"] for h in hist[-3:]) / 3
    assert last < first * 0.8
    summary = json.loads((full / "train_summary.json").read_text())
    assert summary["pairs_per_epoch"] == 96 and summary["best"] is None
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(full / "model"), device="cpu").encode(["x"]).shape == (1, 32)

    part_cfg = _cfg(tmp_path / "part", tiny_encoder, "train.epochs=3")
    import ragtune.retriever.train as tr

    killed_after_checkpoints(tr, 2, lambda: pretrain(part_cfg))  # killed after the step-6 checkpoint
    resumed = pretrain(part_cfg)
    a, b = _weights(full / "model"), _weights(resumed / "model")
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)


def test_too_few_passages_is_a_clear_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(UserError, match=r"pretrain\.min_words=100000"):
        pretrain(_cfg(tmp_path, "unused", "pretrain.min_words=100000"))
    with pytest.raises(ValueError, match="crop_min <= crop_max"):
        _cfg(tmp_path, "unused", "pretrain.crop_min=0.6")
    assert main(["retriever", "pretrain", "--config", "configs/tiny/retriever.yaml", "pretrain.bogus=1"]) == 2
    assert "pretrain.bogus" in capsys.readouterr().err
