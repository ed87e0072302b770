"""The faithfulness checker: synthetic claims built as specified (each kind), training through the
loop (loss falls, validation AUROC, resume), scoring (max over passages), the CLI and bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from ragtune.checker.synth import KINDS, claim_text, make_examples, split_sentences
from ragtune.cli import main
from ragtune.config import load_config
from tests.conftest import DEMO, killed_after_checkpoints

PASSAGES = [
    (
        "curie",
        "Marie Curie was born in Warsaw in 1867. She moved to Paris in 1891 to study physics at the "
        "Sorbonne. Pierre Curie met Marie Curie in Paris in 1894 and they married a year later. "
        "The couple shared the Nobel Prize with Henri Becquerel in 1903.",
    ),
    (
        "tesla",
        "Nikola Tesla was born in Smiljan in 1856. He emigrated to New York in 1884 to work for "
        "Thomas Edison. Tesla later sold his patents to George Westinghouse for 60000 dollars.",
    ),
    (
        "nile",
        "The Nile flows north through Uganda, Sudan and Egypt. Its delta meets the Mediterranean Sea "
        "near Alexandria. Ancient Egyptians farmed the river banks for 5000 years.",
    ),
]
SENTENCES = {s for _, text in PASSAGES for s in split_sentences(text)}


def _answer(claim: str) -> tuple[str | None, str]:
    m = re.fullmatch(r"Question: (.*) Answer: (.*)", claim)
    return (m.group(1), m.group(2)) if m else (None, claim)


def _of_kind(kind: str, seed: int = 0):
    ex = make_examples(PASSAGES, per_passage=4, kinds=[kind], seed=seed)
    assert ex, kind
    pairs = [(ex[i], ex[i + 1]) for i in range(0, len(ex), 2)]
    for pos, neg in pairs:  # matched pairs: same evidence, same kind, supported first
        assert (pos.label, neg.label) == (1, 0) and pos.evidence == neg.evidence
        assert pos.kind == neg.kind == kind and pos.passage_id == neg.passage_id
        assert _answer(neg.claim)[1] not in neg.evidence or kind in ("span", "yes_no")
    return pairs


def test_sentences_split_also_where_glued() -> None:
    text = "Arthur's Magazine (1844–1846) was published in Philadelphia.First for Women is a magazine. It is 3.5 cm."
    assert split_sentences(text) == [
        "Arthur's Magazine (1844–1846) was published in Philadelphia.",
        "First for Women is a magazine.",
        "It is 3.5 cm.",
    ]
    assert claim_text(" Delhi ", "Which  city?") == "Question: Which city? Answer: Delhi"
    assert claim_text("Delhi") == "Delhi"


def _common_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix of two strings."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_statement_kinds_change_one_thing_of_a_source_sentence() -> None:
    for pos, neg in _of_kind("sentence"):
        assert pos.claim in SENTENCES and pos.claim in pos.evidence and neg.claim != pos.claim
        # one span swapped: a common prefix and suffix cover everything else
        a, b = pos.claim, neg.claim
        head = _common_prefix(a, b)
        tail = _common_prefix(a[head:][::-1], b[head:][::-1])
        assert len(a) - head - tail < 30 and len(b) - head - tail < 30, (a, b)
    for pos, neg in _of_kind("negation"):
        assert pos.claim in SENTENCES
        assert neg.claim.replace(" not", "", 1) == pos.claim or pos.claim.replace(" not", "", 1) == neg.claim
    for pos, neg in _of_kind("relation"):
        assert pos.claim in SENTENCES and neg.claim != pos.claim
        assert sorted(neg.claim.split()) == sorted(pos.claim.split()) or len(neg.claim) == len(pos.claim)
    for pos, neg in _of_kind("other_passage"):
        assert pos.claim in SENTENCES and neg.claim in SENTENCES and neg.claim not in pos.evidence


def test_question_kinds_blank_a_span_and_answer_it() -> None:
    for pos, neg in _of_kind("span"):
        (q, right), (q2, wrong) = _answer(pos.claim), _answer(neg.claim)
        assert q == q2 and "what" in q and right != wrong
        filled = q.replace("what", right, 1)[:-1]  # the blank filled with the right span: the sentence
        assert any(s.startswith(filled) for s in SENTENCES), filled
    for pos, neg in _of_kind("answer_sentence"):
        (q, right), (q2, wrong) = _answer(pos.claim), _answer(neg.claim)
        assert q == q2 and right in SENTENCES and wrong not in pos.evidence
    for pos, neg in _of_kind("extension"):
        (q, right), (q2, wrong) = _answer(pos.claim), _answer(neg.claim)
        span, clause = right.split(", ", 1)
        assert q == q2 and wrong.startswith(span + ", ")
        own = next(text for pid, text in PASSAGES if pid == pos.passage_id)
        assert clause.lower() in own.lower() and wrong.split(", ", 1)[1].lower() not in own.lower()
    for pos, neg in _of_kind("yes_no"):
        (q, right), (q2, wrong) = _answer(pos.claim), _answer(neg.claim)
        assert q == q2 and {right, wrong} == {"yes", "no"}
        stated = q.removeprefix("Is it true that ").removesuffix("?")
        true = any(s.rstrip(".").lower() == stated.lower() for s in SENTENCES)
        assert right == ("yes" if true else "no"), q


def test_examples_are_seeded_and_bad_settings_are_refused() -> None:
    a = make_examples(PASSAGES, seed=3)
    assert a == make_examples(PASSAGES, seed=3) and a != make_examples(PASSAGES, seed=4)
    assert {e.kind for e in make_examples(PASSAGES, per_passage=4, seed=0)} <= set(KINDS)
    assert sum(e.label for e in a) * 2 == len(a)
    with pytest.raises(ValueError, match="unknown claim kinds"):
        make_examples(PASSAGES, kinds=["sentence", "paraphrase"])
    with pytest.raises(ValueError, match="at least 2 non-empty passages"):
        make_examples(PASSAGES[:1])


# -------------------------------------------------------------------------------------- training


def _cfg(out: Path, encoder: Path, *overrides: str):
    from ragtune.checker.config import CheckerConfig

    base = [
        f"model.name={encoder}",
        "model.max_length=128",
        f"data.corpus=[{DEMO / 'corpus.jsonl'}]",
        "data.max_passages=120",
        "data.val_fraction=0.2",
        "train.batch_size=32",
        "train.lr=2e-3",
        "train.save_every=4",
        f"output_dir={out}",
        "precision=fp32",
        "logging.tensorboard=false",
    ]
    return load_config(None, [*base, *overrides], CheckerConfig)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_training_lowers_the_loss_resumes_and_scores(tmp_path: Path, tiny_encoder: Path) -> None:
    import ragtune.checker.train as ct
    from ragtune.checker.score import FaithfulnessChecker
    from ragtune.checker.train import train

    # 30 passages, 15 epochs: the tiny random encoder can fit its training pairs (a swapped span
    # is too subtle for it to generalise from 3 epochs), so the loss must fall well below log 2
    extra = ("train.epochs=15", "data.max_passages=30")
    full = train(_cfg(tmp_path / "full", tiny_encoder, *extra))
    hist = [json.loads(x) for x in (full / "history.jsonl").read_text().splitlines()]
    assert np.mean([h["loss"] for h in hist[-3:]]) < 0.7 * np.mean([h["loss"] for h in hist[:3]])
    vals = [h["val"] for h in hist if "val" in h]
    assert len(vals) == 15 and all(0.0 <= v["AUROC"] <= 1.0 for v in vals)
    summary = json.loads((full / "train_summary.json").read_text())
    assert summary["best"]["AUROC"] == pytest.approx(max(v["AUROC"] for v in vals))
    rows = [json.loads(x) for x in (full / "examples.jsonl").read_text().splitlines()]
    stats = json.loads((full / "examples.stats.json").read_text())
    assert stats["examples"] == len(rows) and stats["supported_share"] == 0.5
    train_ids = {r["passage_id"] for r in rows if r["split"] == "train"}
    assert train_ids and train_ids.isdisjoint({r["passage_id"] for r in rows if r["split"] == "val"})
    assert (full / "model" / "checker.json").exists()

    # scoring: a probability per answer, the best over its passages, 0 with none
    checker = FaithfulnessChecker(full, precision="fp32")
    p1, p2 = "Marie Curie was born in Warsaw.", "The Nile flows north."
    one = checker(["born in Warsaw", "born in Warsaw"], [[p1], [p2]], ["Where?", "Where?"])
    both = checker(["born in Warsaw", "born in Warsaw"], [[p1, p2], []], ["Where?", None])
    assert all(0.0 < s < 1.0 for s in one) and both[0] == pytest.approx(max(one), abs=1e-6)
    assert both[1] == 0.0
    with pytest.raises(ValueError, match="2 answers but 1 context lists"):
        checker(["a", "b"], [[p1]])

    part_cfg = _cfg(tmp_path / "part", tiny_encoder, *extra)
    killed_after_checkpoints(ct, 1, lambda: train(part_cfg))  # killed after the step-4 checkpoint
    resumed = train(part_cfg)
    a, b = _weights(full / "model"), _weights(resumed / "model")
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)


def test_cli_train_and_score_and_bad_input(tmp_path: Path, tiny_encoder: Path, capsys) -> None:
    from ragtune.data.io import write_jsonl

    cfg = tmp_path / "checker.yaml"
    cfg.write_text(f"data:\n  corpus: [{DEMO / 'corpus.jsonl'}]\n  max_passages: 40\n")
    out = tmp_path / "run"
    common = [
        f"model.name={tiny_encoder}",
        "train.max_steps=2",
        f"output_dir={out}",
        "logging.tensorboard=false",
    ]
    assert main(["faithfulness", "train", "--config", str(cfg), *common]) == 0
    assert (out / "config.yaml").exists() and "precision" in (out / "hardware.json").read_text()

    preds = tmp_path / "preds.jsonl"
    write_jsonl(
        preds,
        [
            {
                "id": "a",
                "question": "Where?",
                "prediction": "Warsaw",
                "reference": "Warsaw",
                "contexts": ["Born in Warsaw."],
            },
            {"id": "b", "prediction": "Paris", "reference": "Paris", "contexts": [{"text": "In Paris."}]},
        ],
    )
    scored = tmp_path / "scored.jsonl"
    assert (
        main(
            ["faithfulness", "score", "--model", str(out), "--predictions", str(preds), "--out", str(scored)]
        )
        == 0
    )
    got = [json.loads(x) for x in scored.read_text().splitlines()]
    assert [g["id"] for g in got] == ["a", "b"] and all(0 < g["model_faithfulness"] < 1 for g in got)

    # eval generation reports the checker's score beside the lexical one
    metrics = tmp_path / "metrics.json"
    args = ["eval", "generation", "--predictions", str(preds), "--out", str(metrics)]
    assert main([*args, "--faithfulness-model", str(out)]) == 0
    m = json.loads(metrics.read_text())["metrics"]
    assert m["model_faithfulness"] == pytest.approx(np.mean([g["model_faithfulness"] for g in got]), abs=1e-6)
    assert "faithfulness" in m

    capsys.readouterr()
    no_ctx = tmp_path / "no_ctx.jsonl"
    write_jsonl(
        no_ctx,
        [{"prediction": "x", "reference": "y", "contexts": ["c"]}, {"prediction": "x", "reference": "y"}],
    )
    bad = tmp_path / "bad.jsonl"
    assert (
        main(["faithfulness", "score", "--model", str(out), "--predictions", str(no_ctx), "--out", str(bad)])
        == 2
    )
    assert "no_ctx.jsonl:2: field 'contexts'" in capsys.readouterr().err and not bad.exists()
    assert (
        main(
            [
                "faithfulness",
                "score",
                "--model",
                str(tiny_encoder),
                "--predictions",
                str(preds),
                "--out",
                str(bad),
            ]
        )
        == 2
    )
    assert "not a faithfulness checker" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["faithfulness", "train", "--config", str(cfg), *common, f"data.corpus=[{empty}]"]) == 2
    assert "empty.jsonl" in capsys.readouterr().err
    assert main(["faithfulness", "train", *common, "data.kinds=[paraphrase]"]) == 2
    assert "paraphrase" in capsys.readouterr().err
