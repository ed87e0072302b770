"""``ragtune data convert squad``: passages, answer spans across boundaries, split by article,
and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragtune.cli import main
from ragtune.data.converters import squad
from ragtune.data.io import DataError, load_beir, load_qa


def words(prefix: str, n: int) -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


def article(doc: str, n_words: int, qas: list[dict]) -> dict:
    return {
        "paragraphs": [
            {"document_id": doc, "context": f"Title {doc}\n" + words(doc, n_words - 2), "qas": qas}
        ]
    }


def qa(qid: str, context: str, answer: str, **extra) -> dict:
    return {
        "id": qid,
        "question": f"question {qid}?",
        "answers": [{"text": answer, "answer_start": context.index(answer)}],
        **extra,
    }


def make_file(tmp_path: Path, n_articles: int = 5) -> Path:
    arts = []
    for a in range(n_articles):
        doc = f"d{a}"
        ctx = f"Title {doc}\n" + words(doc, 23)  # 25 words: passages of 10 -> [0,10), [10,20), [20,25)
        qas = [
            qa(f"{doc}-inside", ctx, f"{doc}3 {doc}4"),  # words 5-6: passage 0
            qa(f"{doc}-across", ctx, f"{doc}7 {doc}8 {doc}9"),  # words 9-11: passages 0 and 1
        ]
        arts.append({"paragraphs": [{"document_id": doc, "context": ctx, "qas": qas}]})
    arts.append(article("empty", 12, []))  # an article without questions stays in the corpus
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"data": arts}))
    return path


def test_passages_positives_and_boundaries(tmp_path: Path) -> None:
    corpus, train, test, stats = squad(make_file(tmp_path), passage_words=10)
    assert [pid for pid in corpus if pid.startswith("d0-")] == ["d0-0-0", "d0-0-1", "d0-0-2"]
    assert corpus["d0-0-0"].text.split() == ["Title", "d0", *[f"d0{i}" for i in range(8)]]
    assert corpus["d0-0-2"].text.split() == [f"d0{i}" for i in range(18, 23)]
    assert corpus["d0-0-1"].title == "Title d0" and "empty-0-0" in corpus
    by_id = {e.id: e for e in train + test}
    assert by_id["d0-inside"].positive_ids == ("d0-0-0",)
    assert by_id["d0-across"].positive_ids == ("d0-0-0", "d0-0-1")  # an answer crossing a boundary
    assert by_id["d0-across"].answer == "d07 d08 d09" and stats["boundary_answers"] == 5
    # every positive passage holds part of the answer
    for e in train + test:
        assert all(set(corpus[p].text.split()) & set(e.answer.split()) for p in e.positive_ids)
    # overlapping windows: a stride of 5 gives more passages, each answer inside one of them
    corpus5, *_ = squad(make_file(tmp_path), passage_words=10, stride=5)
    assert len([p for p in corpus5 if p.startswith("d0-")]) == 4


def test_the_split_is_by_article_and_seeded(tmp_path: Path) -> None:
    path = make_file(tmp_path, n_articles=10)
    _, train, test, stats = squad(path, passage_words=10, test_fraction=0.3, seed=1)
    train_articles, test_articles = {e.meta["article"] for e in train}, {e.meta["article"] for e in test}
    assert not train_articles & test_articles and len(test_articles) == 3 and len(train_articles) == 7
    assert stats["test_questions"] == 6 and stats["train_questions"] == 14
    assert [e.id for e in squad(path, 10, test_fraction=0.3, seed=1)[2]] == [e.id for e in test]
    assert {e.meta["article"] for e in squad(path, 10, test_fraction=0.3, seed=2)[2]} != test_articles


def test_squad_v2_impossible_questions_are_left_out(tmp_path: Path) -> None:
    ctx = "Title x\n" + words("x", 20)
    data = {
        "data": [
            {
                "paragraphs": [
                    {
                        "document_id": "x",
                        "context": ctx,
                        "qas": [
                            qa("a", ctx, "x3"),
                            {"id": "b", "question": "no?", "answers": [], "is_impossible": True},
                        ],
                    }
                ]
            },
            {
                "paragraphs": [
                    {
                        "document_id": "y",
                        "context": ctx.replace("x", "y"),
                        "qas": [qa("c", ctx.replace("x", "y"), "y5")],
                    }
                ]
            },
        ]
    }
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(data))
    _, train, test, stats = squad(path, 10, test_fraction=0.5)
    assert stats["impossible"] == 1 and sorted(e.id for e in train + test) == ["a", "c"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda q: q["answers"][0].update(answer_start=3),
            r"question d0-inside.answers\[0\].answer_start': 3 points at",
        ),
        (
            lambda q: q["answers"][0].update(answer_start=10_000),
            r"answer_start': 10000 is not in the context",
        ),
        (lambda q: q["answers"][0].pop("text"), r"question d0-inside.answers\[0\].text': missing"),
        (lambda q: q.pop("question"), r"question d0-inside.question': missing"),
        (lambda q: q.update(id="d1-across"), r"question d1-across': duplicate question id"),
    ],
)
def test_bad_input_names_the_question_and_writes_nothing(tmp_path: Path, edit, message: str, capsys) -> None:
    path = make_file(tmp_path)
    data = json.loads(path.read_text())
    edit(data["data"][0]["paragraphs"][0]["qas"][0])
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=message):
        squad(path, 10)
    out = tmp_path / "out"
    assert (
        main(["data", "convert", "squad", "--src", str(path), "--out", str(out), "--passage-words", "10"])
        == 2
    )
    assert "squad.json" in capsys.readouterr().err and not out.exists()


def test_the_cli_writes_a_beir_folder_and_qa_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert (
        main(
            [
                "data",
                "convert",
                "squad",
                "--src",
                str(make_file(tmp_path)),
                "--out",
                str(out),
                "--passage-words",
                "10",
            ]
        )
        == 0
    )
    beir = load_beir(out, "test")
    train = load_qa(out / "qa_train.jsonl", beir.corpus)
    test = load_qa(out / "qa_test.jsonl", beir.corpus)
    assert len(beir.corpus) == 5 * 3 + 2 and len(train) + len(test) == 10
    assert all(set(beir.qrels[e.id]) == set(e.positive_ids) for e in test)


def test_an_answer_start_off_by_a_little_is_an_error_unless_tolerated(tmp_path: Path) -> None:
    path = make_file(tmp_path)
    data = json.loads(path.read_text())
    answer = data["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]
    answer["answer_start"] += 1  # COVID-QA has 142 answers like this
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"--offset-tolerance 1 re-anchors it"):
        squad(path, 10)
    _, train, test, stats = squad(path, 10, offset_tolerance=1)
    assert stats["answers_realigned"] == 1
    e = next(e for e in train + test if e.id == "d0-across")
    assert e.positive_ids == ("d0-0-0", "d0-0-1") and e.answer == "d07 d08 d09"
