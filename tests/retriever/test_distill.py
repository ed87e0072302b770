"""Distilling a cross-encoder into the bi-encoder: teacher scores (`retriever score-triplets`) with
RocketQA denoising, and `retriever train` with train.loss=margin_mse / kl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ragtune.cli import main
from ragtune.config import load_config
from ragtune.data.io import DataError, load_triplets, read_jsonl
from ragtune.data.schema import Passage, Query
from ragtune.retriever.config import RetrieverConfig
from ragtune.retriever.mining import stats_path
from ragtune.retriever.train import Example, batch_loss, load_for_training, step_loss
from tests.conftest import DEMO


def _cfg(tmp_path: Path, encoder: Path | str, *extra: str) -> RetrieverConfig:
    return load_config(
        None,
        [
            f"model.name={encoder}",
            f"data.beir_dir={DEMO}",
            f"output_dir={tmp_path}",
            "train.batch_size=8",
            "train.hard_negatives=3",
            "train.lr=1e-3",
            "data.val_fraction=0",
            "precision=fp32",
            *extra,
        ],
        RetrieverConfig,
    )


def test_margin_mse_and_kl_batch_losses_use_each_examples_own_group() -> None:
    torch.manual_seed(0)
    q, p = torch.randn(2, 4), torch.randn(5, 4)  # p: pos0, pos1, neg0a, neg0b, neg1a
    batch = [
        Example(
            Query("a", "a"),
            Passage("p0", "x"),
            (Passage("n0a", "x"), Passage("n0b", "x")),
            frozenset({"p0"}),
            (3.0, 1.0, -2.0),
        ),
        Example(Query("b", "b"), Passage("p1", "x"), (Passage("n1a", "x"),), frozenset({"p1"}), (0.5, 2.0)),
    ]
    targets, mask = torch.tensor([0, 1]), torch.zeros(2, 5, dtype=torch.bool)
    cos = F.normalize(q, dim=-1) @ F.normalize(p, dim=-1).T / 0.05
    margins = [cos[0, 0] - cos[0, 2], cos[0, 0] - cos[0, 3], cos[1, 1] - cos[1, 4]]
    expected = sum((m - t) ** 2 for m, t in zip(margins, [2.0, 5.0, -1.5], strict=True)) / 3
    cfg = _cfg(Path("."), "unused", "train.loss=margin_mse", "train.in_batch_weight=0")
    assert float(batch_loss(cfg, q, p, targets, mask, batch)) == pytest.approx(float(expected), rel=1e-5)
    from ragtune.retriever.losses import info_nce_loss

    both = _cfg(Path("."), "unused", "train.loss=margin_mse", "train.in_batch_weight=0.5")
    nce = info_nce_loss(q, p, targets, 0.05, mask)
    assert float(batch_loss(both, q, p, targets, mask, batch)) == pytest.approx(
        float(expected + 0.5 * nce), rel=1e-5
    )
    kl = _cfg(Path("."), "unused", "train.loss=kl", "train.in_batch_weight=0")
    groups = [(cos[0, [0, 2, 3]], torch.tensor([3.0, 1.0, -2.0])), (cos[1, [1, 4]], torch.tensor([0.5, 2.0]))]
    want = (
        sum(
            F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="sum")
            for s, t in groups
        )
        / 2
    )
    assert float(batch_loss(kl, q, p, targets, mask, batch)) == pytest.approx(float(want), rel=1e-5)


def test_cached_step_matches_the_plain_one_under_distillation(tmp_path: Path, tiny_encoder: Path) -> None:
    examples = [
        Example(
            Query(f"q{i}", f"question {i}"),
            Passage(f"p{i}", "text " * (i + 1)),
            (Passage(f"n{i}", "neg"),),
            frozenset({f"p{i}"}),
            (1.0, -1.0 * i),
        )
        for i in range(5)
    ]
    grads = []
    for cached in (False, True):
        cfg = _cfg(
            tmp_path,
            tiny_encoder,
            "train.loss=margin_mse",
            f"train.cached={str(cached).lower()}",
            "train.mini_batch_size=2",
        )
        torch.manual_seed(0)
        model = load_for_training(cfg)
        model.eval()
        loss = step_loss(model, cfg, examples)
        grads.append((loss, [x.grad.clone() for x in model.parameters() if x.grad is not None]))
    (l0, g0), (l1, g1) = grads
    assert l0 == pytest.approx(l1, rel=1e-5)
    for a, b in zip(g0, g1, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_score_triplets_denoises_and_training_distils(tmp_path: Path, tiny_encoder: Path) -> None:
    mined = tmp_path / "mined.jsonl"
    base = ["--config", "configs/tiny/retriever.yaml", f"data.beir_dir={DEMO}"]
    assert main(["retriever", "mine", *base, "mining.num_negatives=4", f"mining.out={mined}"]) == 0
    from ragtune.reranker.model import load_cross_encoder, score_pairs

    teacher = tmp_path / "teacher"  # a (random) cross-encoder folder: fixed scores across loads
    torch.manual_seed(0)
    load_cross_encoder(str(tiny_encoder)).save(str(teacher))
    scored = tmp_path / "scored.jsonl"
    args = [
        *base,
        f"data.triplets={mined}",
        f"distill.teacher={teacher}",
        f"distill.out={scored}",
        "precision=fp32",
    ]
    assert (
        main(
            [
                "retriever",
                "score-triplets",
                *base,
                f"data.triplets={mined}",
                f"distill.teacher={tiny_encoder}",
            ]
        )
        == 2
    )
    assert main(["retriever", "score-triplets", *args]) == 0
    everything = tmp_path / "all.jsonl"  # denoising off: every negative kept, with its score
    assert (
        main(["retriever", "score-triplets", *args, "distill.denoise=false", f"distill.out={everything}"])
        == 0
    )
    before, after, full = load_triplets(mined), load_triplets(scored), load_triplets(everything)
    stats = json.loads(stats_path(scored).read_text())
    assert len(before) == len(after) == len(full) == stats["triplets"]
    dropped = 0
    for b, a, f in zip(
        before, after, full, strict=True
    ):  # exactly the negatives scored above the positive go
        assert [n.passage.id for n in f.negatives] == [n.passage.id for n in b.negatives]
        assert set(f.teacher) == {p.id for p in b.positives} | {n.passage.id for n in b.negatives}
        floor = min(f.teacher[p.id] for p in f.positives)
        want = [n.passage.id for n in b.negatives if f.teacher[n.passage.id] <= floor]
        assert [n.passage.id for n in a.negatives] == want
        assert all(a.teacher[x] == f.teacher[x] for x in a.teacher)
        dropped += len(b.negatives) - len(want)
    assert stats["negatives_dropped_as_likely_positives"] == dropped > 0
    assert stats["negatives_kept"] == sum(len(a.negatives) for a in after)
    # The teacher's scores are the cross-encoder's logits of those pairs.
    t0 = after[0]
    ref = score_pairs(
        load_cross_encoder(str(teacher)),
        [(t0.query.text, t0.positives[0].full_text())],
        precision="fp32",
        show_progress=False,
    )
    assert t0.teacher[t0.positives[0].id] == pytest.approx(float(ref[0]), abs=1e-5)

    from ragtune.retriever.train import train

    for loss in ("margin_mse", "kl"):
        out = train(
            _cfg(
                tmp_path / loss,
                tiny_encoder,
                f"data.triplets={scored}",
                f"train.loss={loss}",
                "train.epochs=3",
            )
        )
        hist = [json.loads(x)["loss"] for x in (out / "history.jsonl").read_text().splitlines()]
        assert sum(hist[-3:]) < 0.9 * sum(hist[:3])
    with pytest.raises(DataError, match=r"mined\.jsonl:1: field 'teacher'"):
        train(_cfg(tmp_path / "bad", tiny_encoder, f"data.triplets={mined}", "train.loss=margin_mse"))
    row = next(read_jsonl(scored))[1]  # the teacher score lives on each passage object
    assert "teacher" not in row and "teacher" in row["positives"][0] and "teacher" in row["negatives"][0]


def test_score_triplets_needs_a_trained_teacher(tmp_path: Path, capsys) -> None:
    assert (
        main(
            [
                "retriever",
                "score-triplets",
                "--config",
                "configs/tiny/retriever.yaml",
                "data.triplets=x.jsonl",
            ]
        )
        == 2
    )
    assert "distill.teacher" in capsys.readouterr().err
    assert main(["retriever", "pretrain", "--config", "configs/tiny/retriever.yaml", "train.loss=kl"]) == 2
    assert "train.loss must be info_nce" in capsys.readouterr().err


def test_lm_teacher_scores_are_upr_query_likelihoods(tmp_path: Path) -> None:
    """distill.teacher_kind=lm: each pair's teacher score is the LM's mean log p(query | passage)
    over the query's tokens, computed here directly from the logits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ragtune.data.io import load_corpus
    from ragtune.data.synth import INSTRUCTION
    from ragtune.retriever.bm25 import tokenize
    from tests.conftest import tiny_llama

    words = set(INSTRUCTION.replace("{passage}", "").split())
    for p in load_corpus(DEMO / "corpus.jsonl").values():
        words.update(tokenize(p.full_text()))
    for line in (DEMO / "queries.jsonl").read_text().splitlines():
        words.update(tokenize(json.loads(line)["text"]))
    model, tok = tiny_llama(" ".join(sorted(words)))
    lm = tmp_path / "lm"
    model.save_pretrained(lm)
    tok.save_pretrained(lm)
    mined, scored = tmp_path / "mined.jsonl", tmp_path / "scored.jsonl"
    base = ["--config", "configs/tiny/retriever.yaml", f"data.beir_dir={DEMO}", "precision=fp32"]
    assert main(["retriever", "mine", *base, "mining.num_negatives=2", f"mining.out={mined}"]) == 0
    args = [f"data.triplets={mined}", f"distill.teacher={lm}", "distill.teacher_kind=lm"]
    args += [f"distill.out={scored}", "distill.denoise=false", "distill.lm_passage_tokens=24"]
    assert main(["retriever", "score-triplets", *base, *args]) == 0
    assert json.loads(stats_path(scored).read_text())["teacher_kind"] == "lm"

    model = AutoModelForCausalLM.from_pretrained(lm).eval()
    tok = AutoTokenizer.from_pretrained(lm)
    triplets = load_triplets(scored)
    for t in triplets[:2]:
        for p in (t.positives[0], t.negatives[0].passage):
            shown = tok.decode(tok(p.full_text(), add_special_tokens=False)["input_ids"][:24]).strip()
            prompt = tok.apply_chat_template(
                [{"role": "user", "content": INSTRUCTION.format(passage=shown)}],
                tokenize=False,
                add_generation_prompt=True,
            )
            prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
            query_ids = tok(t.query.text, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt_ids + query_ids])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
            n = len(prompt_ids)
            want = sum(float(logp[n + i - 1, q]) for i, q in enumerate(query_ids)) / len(query_ids)
            assert t.teacher[p.id] == pytest.approx(want, abs=1e-4)
