"""PubMedQA decision metrics (against scikit-learn), METEOR (nltk, hand-computed case), BERTScore
(against a direct computation from the encoder's hidden states) and their CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragtune.eval.answers import bertscore, decision_metrics, meteor, tokens, wordnet_reader


def test_decision_metrics_equal_scikit_learn() -> None:
    from sklearn.metrics import accuracy_score, f1_score

    predictions = ["Yes, it does.", "no.", "Maybe so", "The data say nothing", "yes", "No", "maybe"]
    gold = ["yes", "yes", "maybe", "no", "no", "no", "yes"]
    got = decision_metrics(predictions, gold)
    stated = ["yes", "no", "maybe", "none", "yes", "no", "maybe"]
    assert got["decision_Accuracy"] == pytest.approx(accuracy_score(gold, stated))
    want = f1_score(gold, stated, labels=["yes", "no", "maybe"], average="macro", zero_division=0)
    assert got["decision_macro_F1"] == pytest.approx(want)
    assert got["decision_coverage"] == pytest.approx(6 / 7)
    with pytest.raises(ValueError, match="yes, no or maybe"):
        decision_metrics(["yes"], ["perhaps"])


def test_meteor_matches_a_hand_computed_value_and_uses_stems() -> None:
    # Identical 4-token answers: P = R = 1, one chunk of 4 matches, penalty 0.5 * (1/4)^3.
    score, per, stages = meteor(["the cat sat down"], ["The cat sat down"])
    assert per == [pytest.approx(1 - 0.5 * (1 / 4) ** 3)] and score == per[0]
    assert stages == wordnet_reader()[1] and stages.startswith("exact+stem")
    stemmed, _, _ = meteor(["cats running"], ["cat runs"])  # matched only through Porter stems
    unrelated, _, _ = meteor(["dogs barking"], ["cat runs"])
    assert stemmed > 0.4 and unrelated == 0.0
    assert tokens("It's 3.5 mg!") == ["it", "'", "s", "3", ".", "5", "mg", "!"]


def _manual_bertscore(folder: Path, cand: str, ref: str, layer: int) -> tuple[float, float, float]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()

    def vectors(text: str) -> torch.Tensor:
        ids = tok(text, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**ids, output_hidden_states=True).hidden_states[layer][0]
        return torch.nn.functional.normalize(hidden, dim=-1)

    # Every token, [CLS] and [SEP] included, is a match candidate; only the others are averaged
    # (bert-score's idf weights without idf: 1, and 0 for [CLS] and [SEP]).
    c, r = vectors(cand), vectors(ref)
    sim = c @ r.T
    p = float(sim.max(dim=1).values[1:-1].mean())
    rc = float(sim.max(dim=0).values[1:-1].mean())
    return p, rc, 2 * p * rc / (p + rc)


@pytest.fixture()
def bert_folder(tiny_encoder: Path, tmp_path: Path) -> Path:
    """The tiny BERT under the sentence-transformer, its tokenizer given a model_max_length (bert-score
    truncates to it; a tokenizer built from a vocabulary has none)."""
    import shutil

    from transformers import AutoTokenizer

    folder = tmp_path / "bert"
    shutil.copytree(tiny_encoder.parent / "hf", folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.model_max_length = 128
    tok.save_pretrained(folder)
    return folder


def test_bertscore_equals_a_direct_computation(bert_folder: Path) -> None:
    folder = bert_folder
    cands = ["the ferry hull is red", "the market sells salt"]
    refs = ["the hull of the ferry is red", "the ferry hull is red"]
    for cand, ref in zip(cands, refs, strict=True):  # one pair a call: no padding between pairs
        got = bertscore([cand], [ref], str(folder), layer=1)
        assert got["layer"] == 1 and got["model"] == str(folder)
        want = _manual_bertscore(folder, cand, ref, 1)
        assert got["per_example"][0] == pytest.approx(want, abs=1e-5)
        assert got["BERTScore-F1"] == pytest.approx(want[2], abs=1e-5)
    both = bertscore(cands, refs, str(folder), layer=1)
    assert both["BERTScore-P"] == pytest.approx(sum(x[0] for x in both["per_example"]) / 2)
    same = bertscore(["the ferry hull is red"], ["the ferry hull is red"], str(folder))
    assert same["layer"] == 2 and same["BERTScore-F1"] == pytest.approx(1.0, abs=1e-5)


def test_eval_generation_cli_adds_the_answer_metrics(tmp_path: Path, bert_folder: Path, capsys) -> None:
    from ragtune.cli import main

    rows = [
        {"id": "a", "prediction": "Yes, the ferry hull is red", "reference": "yes the hull is red", "final_decision": "yes"},
        {"id": "b", "prediction": "The market sells salt", "reference": "no it sells fish", "final_decision": "no"},
    ]  # fmt: skip
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "metrics.json"
    hf = bert_folder
    args = ["eval", "generation", "--predictions", str(preds), "--out", str(out), "--meteor"]
    assert main([*args, "--bertscore", str(hf), "--bertscore-layer", "1"]) == 0
    doc = json.loads(out.read_text())
    m = doc["metrics"]
    assert m["decision_Accuracy"] == 0.5 and m["decision_coverage"] == 0.5
    assert 0 < m["METEOR"] < 1 and 0 < m["BERTScore-F1"] <= 1
    assert doc["meteor_stages"].startswith("exact+stem") and doc["bertscore"] == {
        "model": str(hf),
        "layer": 1,
    }
    assert doc["per_query"]["a"]["decision_correct"] == 1.0 and "BERTScore-R" in doc["per_query"]["b"]
    preds.write_text(json.dumps({**rows[0], "final_decision": "perhaps"}) + "\n")
    out.unlink()
    assert main(args) == 2
    assert "preds.jsonl:1: field 'final_decision'" in capsys.readouterr().err and not out.exists()


def test_abstention_is_counted_on_a_constructed_case(tmp_path: Path, capsys) -> None:
    from ragtune.cli import main
    from ragtune.data.schema import Prediction
    from ragtune.eval.abstention import abstention_metrics, is_abstention, score_answer_rows

    assert is_abstention("The passages do not say.") and is_abstention("Sorry - the passages do NOT say")
    assert not is_abstention("The passages say it is red.")
    assert is_abstention("Unknown.", ["unknown"]) and not is_abstention("Unknown.")
    rows = [
        Prediction("a", "red", "red", answerable=True),
        Prediction("b", "The passages do not say.", "blue", answerable=True),  # a false abstention
        Prediction("c", "green wings", "green", answerable=True),
        Prediction("d", "yellow", "blue", answerable=True),
        Prediction("a#u", "The passages do not say.", "red", answerable=False),
        Prediction("b#u", "blue", "blue", answerable=False),  # answered without support
        Prediction("c#u", "It is not mentioned in the passages.", "green", answerable=False),
    ]
    m = abstention_metrics(rows)
    assert m == {"n_answerable": 4, "n_unanswerable": 3, "abstain_rate": 2 / 3, "false_abstain_rate": 1 / 4}
    metrics, per, extra = score_answer_rows(rows)
    # answer metrics over the 4 answerable rows; answered_* over the 3 that did not abstain
    assert metrics["EM"] == pytest.approx(1 / 4) and metrics["answered_EM"] == pytest.approx(1 / 3)
    assert metrics["n_answered"] == 3 and per["b"]["abstained"] == 1.0 and per["b#u"]["abstained"] == 0.0
    assert "abstain_phrases" in extra

    path = tmp_path / "pred.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {"id": r.id, "prediction": r.prediction, "reference": r.reference, "answerable": r.answerable}
            )
            + "\n"
            for r in rows
        )
    )
    assert main(["eval", "generation", "--predictions", str(path), "--out", str(tmp_path / "m.json")]) == 0
    saved = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert saved["abstain_rate"] == pytest.approx(2 / 3) and saved["false_abstain_rate"] == 0.25
    path.write_text(json.dumps({"prediction": "x", "reference": "y", "answerable": "yes"}) + "\n")
    assert main(["eval", "generation", "--predictions", str(path), "--out", str(tmp_path / "n.json")]) == 2
    assert "pred.jsonl:1: field 'answerable': expected true or false" in capsys.readouterr().err


def test_lexnames_come_from_the_manual_page_table() -> None:
    from ragtune.errors import UserError
    from ragtune.eval.wordnet import lexnames_from_manpage

    page = ".TS\nl l l.\n\\fBFile Number\\fP\t\\fBName\\fP\t\\fBContents\\fP\n_\n"
    page += "00\tadj.all\tall adjective clusters\n01\tadj.pert\trelational adjectives\n"
    page += "02\tadv.all\tall adverbs\n03\tnoun.Tops\tunique beginner for nouns\n"
    page += "18\tnoun.person  \tnouns denoting people\n"  # a gap: not a complete table
    with pytest.raises(UserError, match="numbered 00, 01"):
        lexnames_from_manpage(page)
    page = page.replace("18\tnoun.person  ", "04\tnoun.person  ") + "05\tverb.body\tgrooming verbs\n"
    assert lexnames_from_manpage(page) == (
        "00\tadj.all\t3\n01\tadj.pert\t3\n02\tadv.all\t4\n03\tnoun.Tops\t1\n04\tnoun.person\t1\n05\tverb.body\t2\n"
    )


def test_wordnet_install_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    import subprocess

    from ragtune.errors import UserError
    from ragtune.eval import wordnet

    monkeypatch.setattr(wordnet.shutil, "which", lambda name: None)  # not a Debian-family system
    with pytest.raises(UserError, match=r"`apt-get` not found.*exact words and stems only"):
        wordnet.install(tmp_path / "a")
    assert not (tmp_path / "a" / "corpora" / "wordnet").exists()
    monkeypatch.undo()
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb not installed: the package-content check needs it")
    pkg = tmp_path / "pkg"  # a package with one of the files nltk needs
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        "Package: fake-wordnet\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n"
    )
    (pkg / "usr/share/wordnet").mkdir(parents=True)
    (pkg / "usr/share/wordnet/data.noun").write_text("x\n")
    subprocess.run(["dpkg-deb", "-b", str(pkg), str(tmp_path / "fake.deb")], check=True, capture_output=True)
    with pytest.raises(UserError, match=r"fake\.deb'\] lack data\.verb"):
        wordnet.install(tmp_path / "b", [tmp_path / "fake.deb"])
    assert not (tmp_path / "b" / "corpora" / "wordnet").exists()
    assert [p.name for p in (tmp_path / "b" / "corpora").iterdir()] == []  # no staging folder left


def test_meteor_matches_wordnet_synonyms_when_wordnet_is_installed() -> None:
    if wordnet_reader()[1] != "exact+stem+synonym":  # neither ragtune's install nor nltk.download's
        pytest.skip("WordNet not installed: `ragtune eval wordnet` (make install runs it) adds it")
    from nltk.corpus import wordnet as wn
    from nltk.translate.meteor_score import single_meteor_score

    assert wordnet_reader()[1] == "exact+stem+synonym" and wn.get_version() == "3.0"
    assert set(wn.synset("car.n.01").lemma_names()) >= {"car", "auto", "automobile", "motorcar"}
    score, per, _ = meteor(["The automobile is quick"], ["the car is fast"])
    assert per[0] == pytest.approx(
        single_meteor_score(["the", "car", "is", "fast"], ["the", "automobile", "is", "quick"], wordnet=wn)
    )
    # "automobile" matches "car" only through a synonym: exact + stem alone score less
    from ragtune.eval.answers import _NoSynonyms

    plain = single_meteor_score(
        ["the", "car", "is", "fast"], ["the", "automobile", "is", "quick"], wordnet=_NoSynonyms()
    )
    assert score > plain + 0.2
