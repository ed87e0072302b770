from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ragtune.config import load_config
from ragtune.data.schema import Passage, Query
from ragtune.retriever.config import RetrieverConfig
from ragtune.retriever.losses import false_negative_mask, info_nce_loss
from ragtune.retriever.train import Example, batch_order, load_for_training, step_loss, train
from tests.conftest import DEMO, killed_after_checkpoints


def test_info_nce_hand_computed() -> None:
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # pos0, pos1, a hard negative
    t = torch.tensor([0, 1])
    tau = 0.5
    s = 1 / math.sqrt(2)
    # cosines: q0 -> [1, 0, s], q1 -> [0, 1, s]
    l0 = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(0) + math.exp(s / tau)))
    l1 = -math.log(math.exp(1 / tau) / (math.exp(0) + math.exp(1 / tau) + math.exp(s / tau)))
    assert float(info_nce_loss(q, p, t, tau)) == pytest.approx((l0 + l1) / 2, rel=1e-6)
    # Masking q0's logit on passage 1 (a known positive of q0 too) removes that term.
    mask = torch.tensor([[False, True, False], [False, False, False]])
    m0 = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(s / tau)))
    assert float(info_nce_loss(q, p, t, tau, mask)) == pytest.approx((m0 + l1) / 2, rel=1e-6)
    # Symmetric: positives pick their query among the 2 queries (cosines [[1, 0], [0, 1]]).
    back = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 1))
    assert float(info_nce_loss(q, p, t, tau, symmetric=True)) == pytest.approx(
        ((l0 + l1) / 2 + back) / 2, rel=1e-6
    )


def test_false_negative_mask_keeps_own_positive() -> None:
    mask = false_negative_mask([{"a", "b"}, {"c"}, {"a"}], ["a", "c", "a", "b", "x"], torch.tensor([0, 1, 2]))
    assert mask.tolist() == [
        [False, False, True, True, False],  # q0: the second copy of "a" and "b" are its positives
        [False, False, False, False, False],
        [True, False, False, False, False],  # q2: column 0 is "a" too
    ]


def _examples(n: int) -> list[Example]:
    return [
        Example(
            Query(f"q{i}", f"question {i} " * (i % 4 + 1)),
            Passage(f"p{i}", "text " * (i % 9 + 1)),
            (Passage(f"n{i}", "neg"),),
            frozenset({f"p{i}"}),
        )
        for i in range(n)
    ]


def test_batch_order_is_a_function_of_seed_and_epoch() -> None:
    ex = _examples(70)
    a = batch_order(ex, 8, seed=1, epoch=0, group_by_length=True)
    assert a == batch_order(ex, 8, seed=1, epoch=0, group_by_length=True)
    assert a != batch_order(ex, 8, seed=1, epoch=1, group_by_length=True)
    assert sorted(i for b in a for i in b) == list(range(70))
    # Length grouping: inside a batch the passage lengths are close (one mega-batch here).
    assert all(
        max(len(ex[i].positive.text) for i in b) - min(len(ex[i].positive.text) for i in b) <= 10 for b in a
    )


def _cfg(tmp_path: Path, encoder: Path, *extra: str) -> RetrieverConfig:
    return load_config(
        None,
        [
            f"model.name={encoder}",
            f"data.beir_dir={DEMO}",
            f"output_dir={tmp_path}",
            "data.val_fraction=0.2",
            "data.val_corpus_size=200",
            "train.batch_size=8",
            "train.epochs=1",
            "train.lr=5e-4",
            "precision=fp32",
            "train.save_every=3",
            "eval.batch_size=32",
            "train.hard_negatives=0",
            *extra,
        ],
        RetrieverConfig,
    )


def test_cached_step_gives_the_same_gradients(tmp_path: Path, tiny_encoder: Path) -> None:
    grads = []
    for cached in (False, True):
        cfg = _cfg(tmp_path, tiny_encoder, f"train.cached={str(cached).lower()}", "train.mini_batch_size=3")
        torch.manual_seed(0)
        model = load_for_training(cfg)
        model.eval()
        loss = step_loss(model, cfg, _examples(7))
        grads.append((loss, [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (l0, g0), (l1, g1) = grads
    assert l0 == pytest.approx(l1, rel=1e-5) and len(g0) == len(g1) > 10
    for a, b in zip(g0, g1, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(next(folder.rglob("model.safetensors")))


def test_training_lowers_the_loss_validates_and_resumes_to_the_same_weights(
    tmp_path: Path, tiny_encoder: Path
) -> None:
    full = train(_cfg(tmp_path / "full", tiny_encoder, "train.epochs=2", "train.eval_every=5"))
    hist = [json.loads(x) for x in (full / "history.jsonl").read_text().splitlines()]
    steps = len(hist)
    assert steps == 2 * math.ceil(101 / 8)  # 126 train queries, 20% held out -> 101 pairs
    first, last = sum(h["loss"] for h in hist[:3]) / 3, sum(h["loss"] for h in hist[-3:]) / 3
    assert last < first * 0.8
    vals = [h["val"]["nDCG@10"] for h in hist if "val" in h]
    assert len(vals) == math.ceil(steps / 5) and max(vals) > vals[0]
    summary = json.loads((full / "train_summary.json").read_text())
    assert summary["best"]["nDCG@10"] == pytest.approx(max(vals))
    # The saved model is a plain sentence-transformers folder holding the best validated weights.
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(full / "model"), device="cpu").encode(["x"]).shape == (1, 32)
    for name, tensor in _weights(full / "best").items():
        assert torch.equal(tensor, _weights(full / "model")[name])

    # Interrupted run: stop after 7 steps (a checkpoint was written at step 6), then run again.
    part_cfg = _cfg(tmp_path / "part", tiny_encoder, "train.epochs=2", "train.eval_every=5")
    import ragtune.retriever.train as tr

    killed_after_checkpoints(tr, 2, lambda: train(part_cfg))
    assert json.loads((tmp_path / "part" / "checkpoint" / "state.json").read_text())["step"] == 6
    resumed = train(part_cfg)
    a, b = _weights(full / "model"), _weights(resumed / "model")
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)
    assert (resumed / "history.jsonl").read_text().count("\n") == steps


def test_a_checkpoint_of_another_config_is_refused(tmp_path: Path, tiny_encoder: Path) -> None:
    train(_cfg(tmp_path, tiny_encoder, "train.max_steps=2"))
    (tmp_path / "checkpoint").exists()
    with pytest.raises(ValueError, match="different config"):
        train(_cfg(tmp_path, tiny_encoder, "train.max_steps=3"))
