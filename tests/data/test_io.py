from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragtune.data.io import (
    DataError,
    atomic_writer,
    load_beir,
    load_corpus,
    load_qa,
    load_qrels,
    load_queries,
    load_triplets,
    read_run,
    triplet_to_dict,
    write_jsonl,
    write_run,
)
from ragtune.data.schema import text_id
from tests.conftest import DEMO, shared_dataset


def lines(path: Path, *rows: object) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def beir(tmp_path: Path) -> Path:
    lines(
        tmp_path / "corpus.jsonl", {"_id": "d1", "title": "T1", "text": "alpha"}, {"_id": 2, "text": "beta"}
    )
    lines(tmp_path / "queries.jsonl", {"_id": "q1", "text": "what is alpha"}, {"_id": "q2", "text": "beta?"})
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq2\t2\t1\n")
    return tmp_path


def test_beir_folder_loads(beir: Path) -> None:
    data = load_beir(beir, "test")
    assert list(data.corpus) == ["d1", "2"] and data.corpus["d1"].title == "T1"
    assert data.corpus["d1"].full_text() == "T1\nalpha" and data.corpus["2"].full_text() == "beta"
    assert data.qrels == {"q1": {"d1": 2}, "q2": {"2": 1}}
    assert list(data.split_queries()) == ["q1", "q2"]


def test_qrels_without_header_and_trec_format(beir: Path, tmp_path: Path) -> None:
    (tmp_path / "nohead.tsv").write_text("q1\td1\t1\n")
    (tmp_path / "trec.txt").write_text("q1 0 d1 3\nq2 0 2 0\n")
    assert load_qrels(tmp_path / "nohead.tsv") == {"q1": {"d1": 1}}
    assert load_qrels(tmp_path / "trec.txt") == {"q1": {"d1": 3}, "q2": {"2": 0}}


def test_scifact_loads_as_it_is() -> None:
    folder = shared_dataset("scifact")
    test = load_beir(folder, "test")
    assert (len(test.corpus), len(test.queries), len(test.qrels)) == (5183, 1109, 300)
    assert sum(len(v) for v in test.qrels.values()) == 339
    train = load_beir(folder, "train")
    assert (len(train.qrels), sum(len(v) for v in train.qrels.values())) == (809, 919)


def test_demo_data_loads() -> None:
    data = load_beir(DEMO, "test")
    assert len(data.corpus) >= 200 and len(data.qrels) >= 30
    qa = load_qa(DEMO / "qa.jsonl", data.corpus)
    assert len(qa) >= 100
    for ex in qa:  # the short answer is stated in its gold passage
        assert any(ex.answer in data.corpus[pid].text for pid in ex.positive_ids), ex.id


# ----------------------------------------------------------------------------- bad input classes


@pytest.mark.parametrize(
    ("rows", "pattern"),
    [
        (['{"_id": "a", "text": "x"}', '{"_id": "b", "text": '], r"corpus\.jsonl:2: malformed JSON"),
        ([{"_id": "a", "text": "x"}, {"_id": "b"}], r"corpus\.jsonl:2: field 'text': missing"),
        ([{"_id": "a", "text": "x"}, {"text": "y"}], r"corpus\.jsonl:2: field '_id': missing"),
        (
            [{"_id": "a", "text": "x"}, {"_id": "a", "text": "y"}],
            r"corpus\.jsonl:2: field '_id': duplicate id 'a'",
        ),
        ([{"_id": "a", "text": 5}], r"corpus\.jsonl:1: field 'text': expected a string, got int"),
        ([{"_id": "a", "text": "   "}], r"corpus\.jsonl:1: field 'text': empty"),
        ([{"_id": "a", "text": "x", "title": 3}], r"corpus\.jsonl:1: field 'title': expected a string"),
        (["[1, 2]"], r"corpus\.jsonl:1: expected a JSON object, got list"),
        ([], r"corpus\.jsonl: empty corpus"),
        (["", "  "], r"corpus\.jsonl: empty corpus"),
    ],
)
def test_corpus_errors_name_file_line_field(tmp_path: Path, rows: list, pattern: str) -> None:
    path = lines(tmp_path / "corpus.jsonl", *rows)
    with pytest.raises(DataError, match=pattern):
        load_corpus(path)


def test_non_utf8_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "queries.jsonl"
    path.write_bytes(b'{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "\xff\xfe"}\n')
    with pytest.raises(DataError, match=r"queries\.jsonl:2: not UTF-8"):
        load_queries(path)
    with pytest.raises(DataError, match=r"nope\.jsonl: file not found"):
        load_corpus(tmp_path / "nope.jsonl")


def test_qrels_errors(beir: Path) -> None:
    data = load_beir(beir, "test")
    qrels = beir / "qrels" / "bad.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td1\t1\n")
    with pytest.raises(DataError, match=r"bad\.tsv:3: field 'query-id': unknown query 'q9'"):
        load_qrels(qrels, data.queries, data.corpus)
    qrels.write_text("q1\td9\t1\n")
    with pytest.raises(DataError, match=r"bad\.tsv:1: field 'corpus-id': unknown document 'd9'"):
        load_qrels(qrels, data.queries, data.corpus)
    qrels.write_text("q1\td1\t1\nq1\td1\tx\n")
    with pytest.raises(DataError, match=r"bad\.tsv:2: field 'score': relevance must be an integer"):
        load_qrels(qrels)
    qrels.write_text("q1\td1\n")
    with pytest.raises(DataError, match=r"bad\.tsv:1: expected 3 \(BEIR\) or 4 \(TREC\) columns, got 2"):
        load_qrels(qrels)
    qrels.write_text("q1\td1\t1\nq1\td1\t2\n")
    with pytest.raises(DataError, match=r"bad\.tsv:2: field 'corpus-id': duplicate judgement"):
        load_qrels(qrels)
    (beir / "qrels" / "test.tsv").write_text("q1\td1\t1\nq3\td1\t1\n")
    with pytest.raises(DataError, match=r"test\.tsv:2: field 'query-id': unknown query 'q3'"):
        load_beir(beir, "test")


# ---------------------------------------------------------------------------------- triplets, QA


def test_triplets_by_text_and_by_id(beir: Path, tmp_path: Path) -> None:
    data = load_beir(beir, "test")
    path = lines(
        tmp_path / "triplets.jsonl",
        {"query": "what is alpha", "positive": "alpha text", "negatives": ["beta text"]},
        {
            "query_id": "q1",
            "positive_ids": ["d1"],
            "negatives": [{"id": "2", "source": "bm25", "rank": 3, "score": 1.5}],
        },
        {"query": "q", "positives": [{"text": "p", "title": "t"}, {"id": "d1"}]},
    )
    t = load_triplets(path, data.corpus, data.queries)
    assert t[0].query.text == "what is alpha" and t[0].positives[0].id == text_id("alpha text")
    assert t[0].negatives[0].passage.text == "beta text" and t[0].negatives[0].source == "given"
    assert t[1].query.id == "q1" and t[1].positives[0].text == "alpha"
    neg = t[1].negatives[0]
    assert (neg.passage.id, neg.source, neg.rank, neg.score) == ("2", "bm25", 3, 1.5)
    assert [p.title for p in t[2].positives] == ["t", "T1"] and t[2].negatives == ()
    # The written form reads back to the same triplets.
    write_jsonl(tmp_path / "again.jsonl", (triplet_to_dict(x) for x in t))
    assert load_triplets(tmp_path / "again.jsonl", data.corpus, data.queries)[1:] == t[1:]


@pytest.mark.parametrize(
    ("row", "pattern"),
    [
        ({"positive": "p"}, r":1: field 'query': missing"),
        ({"query": "q"}, r":1: field 'positives': missing"),
        (
            {"query": "q", "positive_ids": ["zz"]},
            r":1: field 'positive_ids\[0\]\.id': unknown passage id 'zz'",
        ),
        ({"query_id": "q7", "positive": "p"}, r":1: field 'query_id': unknown query id 'q7'"),
        ({"query": "q", "positives": []}, r":1: field 'positives': no positive passage"),
        (
            {"query": "q", "positive": "p", "negatives": [{"id": "d1", "rank": "1"}]},
            r":1: field 'negatives\[0\]\.rank': expected an integer",
        ),
        (
            {"query": "q", "positive": "p", "negatives": [7]},
            r":1: field 'negatives\[0\]': expected a text or an object",
        ),
        (
            {"query": "q", "positive": "p", "negatives": [{"score": 1}]},
            r":1: field 'negatives\[0\]': needs an 'id'",
        ),
    ],
)
def test_triplet_errors(beir: Path, tmp_path: Path, row: dict, pattern: str) -> None:
    data = load_beir(beir, "test")
    path = lines(tmp_path / "t.jsonl", row)
    with pytest.raises(DataError, match=r"t\.jsonl" + pattern):
        load_triplets(path, data.corpus, data.queries)


def test_qa_contexts_by_id_and_text(beir: Path, tmp_path: Path) -> None:
    data = load_beir(beir, "test")
    path = lines(
        tmp_path / "qa.jsonl",
        {
            "id": "a",
            "question": "Q?",
            "answer": "A",
            "contexts": ["d1", "free text"],
            "positive_ids": ["d1"],
            "split": "train",
        },
        {"id": "b", "question": "Q2?", "answer": "B"},
    )
    qa = load_qa(path, data.corpus)
    assert [p.id for p in qa[0].contexts] == ["d1", text_id("free text")]
    assert (
        qa[0].contexts[0].text == "alpha"
        and qa[0].positive_ids == ("d1",)
        and qa[0].meta == {"split": "train"}
    )
    assert qa[1].contexts == ()
    for row, pattern in [
        ({"id": "a", "question": "Q", "answer": "A", "positive_ids": ["zz"]}, r"field 'positive_ids\[0\]'"),
        ({"id": "a", "question": "Q"}, r":1: field 'answer': missing"),
        (
            {"id": "a", "question": "Q", "answer": "A", "contexts": "d1x"},
            r":1: field 'contexts': expected a list, got str",
        ),
    ]:
        lines(path, row)
        with pytest.raises(DataError, match=pattern):
            load_qa(path, data.corpus)
    lines(path, {"id": "a", "question": "Q", "answer": "A"}, {"id": "a", "question": "Q", "answer": "A"})
    with pytest.raises(DataError, match=r"qa\.jsonl:2: field 'id': duplicate id 'a'"):
        load_qa(path)


# ------------------------------------------------------------------------------ runs and writing


def test_run_round_trip_keeps_scores_exactly(tmp_path: Path) -> None:
    run = {"q1": {"d1": 0.1 + 0.2, "d2": 1 / 3, "d3": 1 / 3}, "q2": {"d9": -2.5}}
    write_run(tmp_path / "run.trec", run, tag="t")
    text = (tmp_path / "run.trec").read_text().splitlines()
    assert text[0].startswith("q1 Q0 d2 1 ") and text[1].startswith("q1 Q0 d3 2 ")  # ties by id ascending
    assert read_run(tmp_path / "run.trec") == run


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("q1 Q0 d1 1 0.5\n", r":1: expected 6 columns"),
        ("q1 Q0 d1 x 0.5 t\n", r":1: field 'rank'"),
        ("q1 Q0 d1 1 high t\n", r":1: field 'score': expected a number"),
        ("q1 Q0 d1 1 nan t\n", r":1: field 'score': not a finite number"),
        ("q1 Q0 d1 1 1 t\nq1 Q0 d1 2 0 t\n", r":2: field 'docid': document 'd1' listed twice"),
        ("\n", r": empty run"),
    ],
)
def test_run_errors(tmp_path: Path, text: str, pattern: str) -> None:
    (tmp_path / "run.trec").write_text(text)
    with pytest.raises(DataError, match=r"run\.trec" + pattern):
        read_run(tmp_path / "run.trec")


def test_atomic_writer_leaves_nothing_half_written(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")

    def rows():
        yield {"a": 1}
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl(target, rows())
    assert target.read_text() == "old\n"  # the previous version survives whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no temporary left behind
    with atomic_writer(tmp_path / "new" / "f.txt") as fh:
        fh.write("done")
    assert (tmp_path / "new" / "f.txt").read_text() == "done"
