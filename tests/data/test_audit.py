"""ragtune data audit: duplicates, leakage between splits and broken rows, counted exactly."""

from __future__ import annotations

import json
import random
from itertools import combinations
from pathlib import Path

import pytest

from ragtune.cli import main
from ragtune.data.audit import AuditSettings, audit, jaccard, near_duplicate_pairs, normalise, shingles
from ragtune.data.converters import write_dataset
from ragtune.data.io import DataError
from ragtune.data.schema import Passage, QAExample

pytest.importorskip("datasketch")

LONG = (
    "the incubation period of the novel coronavirus ranged from two to fourteen days in the first "
    "cohort of patients admitted to the hospital in wuhan during january with a median of five days"
)


def _passages() -> dict[str, Passage]:
    words = LONG.split()
    near = " ".join([*words[:-1], "weeks"])  # the last of 33 words changed: 30 of 32 distinct 3-grams shared
    return {
        "p1": Passage("p1", LONG, "A"),
        "p2": Passage("p2", LONG.upper().replace(" ", "  ") + "!", "B"),  # exact duplicate once normalised
        "p3": Passage("p3", near, "C"),
        "p4": Passage("p4", "  ...  ", "D"),  # no word at all
        "p5": Passage("p5", "masks reduce transmission " * 15, "E"),  # 45 words: overlong at max_words 40
        "p6": Passage("p6", "ventilators were scarce in several regions during the surge", "F"),
    }


def _folder(tmp_path: Path, leak: bool = True) -> Path:
    corpus = _passages()
    train = [
        QAExample("q1", "What was the median incubation period in Wuhan?", "five days", positive_ids=("p1",)),
        QAExample(
            "q2",
            "Which equipment was scarce in several regions during the first surge of cases?",
            "ventilators",
            positive_ids=("p6",),
        ),
    ]
    test = [
        QAExample("t3", "What reduces transmission?", "hand washing", positive_ids=("p5",)),
    ]
    if leak:
        test += [
            # the same question as q1 once normalised; its positive is a training positive too
            QAExample(
                "t1", "what was the MEDIAN incubation period in wuhan", "five days", positive_ids=("p1",)
            ),
            # q2 with one word added: 24 of 28 distinct 1- and 2-grams shared
            QAExample(
                "t2",
                "Which equipment was scarce in several regions during the first surge of COVID cases?",
                "ventilators",
                positive_ids=("p3",),
            ),
        ]
    out = tmp_path / "data"
    write_dataset(out, corpus, {"train": train, "test": test})
    return out


def test_the_report_counts_each_finding(tmp_path):
    folder = _folder(tmp_path)
    report = audit(folder, settings=AuditSettings(max_words=40))
    c = report["corpus"]
    assert c["passages"] == 6
    assert c["empty"] == {"count": 1, "examples": ["p4"]}
    assert c["overlong"] == {"count": 1, "examples": ["p5"]}
    assert c["exact_duplicates"]["examples"] == [["p1", "p2"]]
    # p3 is near both p1 and p2 (their texts are equal once normalised), with the exact Jaccard
    expected = round(jaccard(shingles(LONG, (3,)), shingles(_passages()["p3"].text, (3,))), 3)
    assert expected == round(30 / 32, 3)
    assert c["near_duplicates"] == {
        "pairs": 2,
        "examples": [{"ids": ["p1", "p3"], "jaccard": expected}, {"ids": ["p2", "p3"], "jaccard": expected}],
    }
    leak = report["leakage"]["train/test"]
    assert (leak["exact"], leak["near"]) == (1, 1)
    assert leak["examples"][0] == {
        "test": "t1",
        "train": "q1",
        "text": "What was the median incubation period in Wuhan?",  # the first split's text
    }
    assert {leak["examples"][1]["test"], leak["examples"][1]["train"]} == {"t2", "q2"}
    shared = report["shared_positives"]["train/test"]
    assert shared["passages"] == 1 and shared["test_questions"] == 1 and shared["examples"] == ["p1"]
    # answers: "five days" is in p1; "hand washing" is not in p5; "ventilators" is not in p3
    assert report["qa"]["train"]["answer_not_in_passages"] == 0
    assert report["qa"]["test"]["answer_not_in_passages"] == 2
    assert report["leakage_found"] is True
    written = json.loads((folder / "audit.json").read_text())
    assert written == json.loads(json.dumps(report))
    assert "LEAKAGE" in (folder / "audit.md").read_text()


def test_strict_fails_only_on_leakage(tmp_path, capsys):
    leaky = _folder(tmp_path / "a")
    clean = _folder(tmp_path / "b", leak=False)
    out = tmp_path / "reports"
    assert main(["data", "audit", str(leaky), "--out", str(out)]) == 0
    assert main(["data", "audit", str(leaky), "--out", str(out), "--strict"]) == 1
    assert "leak between splits" in capsys.readouterr().err
    assert main(["data", "audit", str(clean), "--strict"]) == 0
    report = json.loads((clean / "audit.json").read_text())
    assert report["leakage_found"] is False and report["leakage"]["train/test"]["exact"] == 0


def test_a_clean_set_reports_nothing(tmp_path):
    """Distinct passages of normal length, distinct questions whose answers are in their positives:
    every count is zero (the audit does not flag what is not there)."""
    corpus = {
        "p1": Passage("p1", LONG, "A"),
        "p2": Passage("p2", "ventilators were scarce in several regions during the surge", "B"),
        "p3": Passage("p3", "hand washing and masks reduce transmission in crowded indoor rooms", "C"),
    }
    train = [
        QAExample("q1", "What was the median incubation period in Wuhan?", "five days", positive_ids=("p1",)),
        QAExample("q2", "Which equipment was scarce during the surge?", "ventilators", positive_ids=("p2",)),
    ]
    test = [QAExample("t1", "What reduces transmission indoors?", "hand washing", positive_ids=("p3",))]
    folder = tmp_path / "data"
    write_dataset(folder, corpus, {"train": train, "test": test})
    report = audit(folder, settings=AuditSettings(max_words=40))
    c = report["corpus"]
    assert c["passages"] == 3
    assert c["empty"]["count"] == c["overlong"]["count"] == 0
    assert c["exact_duplicates"]["examples"] == [] and c["near_duplicates"]["pairs"] == 0
    leak = report["leakage"]["train/test"]
    assert (leak["exact"], leak["near"]) == (0, 0) and leak["examples"] == []
    shared = report["shared_positives"]["train/test"]
    assert shared["passages"] == shared["test_questions"] == 0
    assert (
        report["qa"]["train"]["answer_not_in_passages"] == report["qa"]["test"]["answer_not_in_passages"] == 0
    )
    assert report["leakage_found"] is False
    assert "LEAKAGE" not in (folder / "audit.md").read_text()


def test_near_duplicates_agree_with_brute_force():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(60)]
    base = [[rng.choice(vocab) for _ in range(40)] for _ in range(15)]
    texts = {}
    for i, words in enumerate(base):  # each base text and edited copies of it: 0 to 12 words changed
        texts[f"b{i}"] = " ".join(words)
        for j, changes in enumerate((1, 4, 12)):
            copy = list(words)
            for pos in rng.sample(range(40), changes):
                copy[pos] = rng.choice(vocab)
            texts[f"b{i}c{j}"] = " ".join(copy)
    sets = {k: shingles(t, (3,)) for k, t in texts.items()}
    settings = AuditSettings(near=0.7)
    found = {(a, b): s for a, b, s in near_duplicate_pairs(sets, None, settings)}
    truth = {
        (a, b): jaccard(sets[a], sets[b])
        for a, b in combinations(sorted(sets), 2)
        if jaccard(sets[a], sets[b]) >= 0.7
    }
    assert len(truth) > 10
    assert set(found) <= set(truth)  # never a pair below the threshold
    assert all(found[p] == pytest.approx(truth[p]) for p in found)
    assert {p for p, s in truth.items() if s >= 0.85} <= set(found)  # the clear ones are all found


def test_normalise_and_shingles():
    assert normalise("  Hello,  WORLD! 2-3 ") == "hello world 2 3"
    assert shingles("a b c", (1, 2)) == {"a", "b", "c", "a b", "b c"}
    assert shingles("short", (3,)) == {"short"} and shingles("...", (3,)) == set()


def test_bad_input_names_the_file_and_line(tmp_path, capsys):
    folder = _folder(tmp_path)
    (folder / "corpus.jsonl").write_text('{"_id": "p1", "text": "x"}\n{"text": "no id"}\n')
    with pytest.raises(DataError, match=r"corpus.jsonl:2: field '_id'"):
        audit(folder)
    assert not (folder / "audit.json").exists()
    assert main(["data", "audit", str(tmp_path / "missing")]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    with pytest.raises(ValueError, match="near"):
        AuditSettings(near=0.0)
