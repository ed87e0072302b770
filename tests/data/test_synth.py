"""ragtune data synth-queries: cleaning, round-trip filter, dedupe, provenance, outputs, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragtune.data.io import DataError, load_beir, load_qa, write_jsonl
from ragtune.data.schema import Passage
from ragtune.data.synth import SynthSettings, clean_question, round_trip_ranks, synth_queries
from tests.conftest import tiny_llama

CORPUS = [
    {"_id": "sky", "title": "Sky", "text": "the sky is blue because air scatters blue light"},
    {"_id": "grass", "title": "Grass", "text": "grass is green because of chlorophyll in its cells"},
    {"_id": "sea", "title": "Sea", "text": "the sea is salty because rivers carry minerals into it"},
]


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    words = " ".join(w for p in CORPUS for w in (p["title"] + " " + p["text"]).split())
    words += (
        " Question why is what color question write one that the passage below answers reply with only ? . :"
    )
    model, tok = tiny_llama(words)
    folder = tmp_path_factory.mktemp("synth-lm")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    write_jsonl(path, CORPUS)
    return path


def test_clean_question_takes_the_first_line_without_labels() -> None:
    assert clean_question('Question: "Why is the sky blue?"\nAnswer: air', 3, 20) == "Why is the sky blue?"
    assert clean_question("\n  Q1) what is grass made of?  ", 3, 20) == "what is grass made of?"
    assert (
        clean_question("The answer to this question would be: What is X made of?", 3, 20)
        == "What is X made of?"
    )
    assert clean_question("What is the ratio: 3 to 4?", 3, 20) == "What is the ratio: 3 to 4?"
    assert clean_question("Why?", 3, 20) is None  # too short
    assert clean_question("", 3, 20) is None
    assert clean_question("a b c d e f", 1, 5) is None  # too long


def test_round_trip_ranks_keep_a_question_its_passage_answers() -> None:
    corpus = {p["_id"]: Passage(p["_id"], p["text"], p["title"]) for p in CORPUS}
    ranks = round_trip_ranks(
        ["why is the sky blue", "why is the sky blue", "why is the sea salty"],
        ["sky", "grass", "sea"],
        corpus,
        "bm25",
        1,
    )
    assert ranks == [1, None, 1]  # the second question's passage (grass) is not its top hit
    ranks = round_trip_ranks(["why is the sky blue"], ["grass"], corpus, "bm25", 3)
    assert ranks[0] is not None and ranks[0] > 1


def _canned(monkeypatch: pytest.MonkeyPatch, tok, replies: list[str], answers: list[str]) -> list[int]:
    """Make generation return ``replies`` (questions, in prompt order), then ``answers``."""
    import ragtune.generator.generate as g

    calls = []

    def fake(model, prompts, cfg, stop_ids, pad_id, progress=True):
        texts = replies if not calls else answers
        calls.append(len(prompts))
        assert len(prompts) == len(texts)
        ids = [tok(t, add_special_tokens=False)["input_ids"] + list(stop_ids) for t in texts]
        return ids, {"tokens": sum(map(len, ids)), "seconds": 0.5, "tokens_per_s": 1.0}

    monkeypatch.setattr(g, "generate_ids", fake)
    return calls


def test_synth_queries_filters_dedupes_and_keeps_provenance(
    lm: Path, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(lm)
    replies = [
        "Question: why is the sky blue ?",  # sky, passes the round trip
        "why is the sky blue ?",  # sky again: an exact duplicate
        "why is the sky blue ?",  # grass, but about the sky: a duplicate too (text first seen)
        "what color is the sky ?",  # grass, about the sky: fails the round trip at k=1
        "why is the sea salty ?",  # sea, passes
        "sea",  # sea: too short
    ]
    calls = _canned(monkeypatch, tok, replies, ["air scatters blue light", "rivers carry minerals"])
    settings = SynthSettings(
        model=str(lm), per_passage=2, filter="bm25", filter_k=1, answers=True, precision="fp32"
    )
    stats = synth_queries(corpus, tmp_path / "out", settings)
    assert calls == [6, 2]  # 3 passages x 2 samples, then the 2 kept questions answered
    assert (stats["generated"], stats["malformed"], stats["duplicates"]) == (6, 1, 2)
    assert (stats["filtered_out"], stats["kept"], stats["answers"]) == (1, 2, 2)

    out = tmp_path / "out"
    queries = [json.loads(line) for line in (out / "queries.jsonl").read_text().splitlines()]
    assert [q["text"] for q in queries] == ["why is the sky blue ?", "why is the sea salty ?"]
    meta = queries[0]["metadata"]
    assert meta["passage_id"] == "sky" and meta["bm25_rank"] == 1 and meta["dense_rank"] is None
    assert meta["model"] == str(lm) and "{passage}" in meta["prompt"] and meta["seed"] == 0
    assert meta["sampling"] == {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 48}
    assert meta["filter"] == "bm25" and meta["filter_k"] == 1
    beir = load_beir(out, "train")  # what retriever mine / train read
    assert len(beir.corpus) == 3 and {q: set(r) for q, r in beir.qrels.items()} == {
        "synth-0": {"sky"},
        "synth-1": {"sea"},
    }
    qa = load_qa(out / "qa_train.jsonl", beir.corpus)  # what generator train / e2e train read
    assert [(e.question, e.answer, e.positive_ids) for e in qa] == [
        ("why is the sky blue ?", "air scatters blue light", ("sky",)),
        ("why is the sea salty ?", "rivers carry minerals", ("sea",)),
    ]
    assert qa[0].meta["provenance"]["passage_id"] == "sky"


def test_filter_none_keeps_every_clean_question(
    lm: Path, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(lm)
    _canned(
        monkeypatch, tok, ["why is the sky blue ?", "what color is the sky ?", "why is the sea salty ?"], []
    )
    stats = synth_queries(
        corpus, tmp_path / "out", SynthSettings(model=str(lm), filter="none", precision="fp32")
    )
    assert stats["kept"] == 3 and stats["filtered_out"] == 0
    assert not (tmp_path / "out" / "qa_train.jsonl").exists()


def test_near_duplicates_are_dropped(
    lm: Path, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(lm)
    near = [
        "why is the sky blue because of air ?",
        "why is the sky blue because of the air ?",
        "why is the sea salty ?",
    ]
    _canned(monkeypatch, tok, near, [])
    s = SynthSettings(model=str(lm), filter="none", near=0.7, precision="fp32")
    stats = synth_queries(corpus, tmp_path / "out", s)
    assert (stats["near_duplicates"], stats["kept"]) == (1, 2)


def test_real_generation_through_the_cli(lm: Path, corpus: Path, tmp_path: Path) -> None:
    from ragtune.cli import main

    out = tmp_path / "synth"
    args = ["data", "synth-queries", "--corpus", str(corpus), "--out", str(out), "--model", str(lm)]
    args += ["--per-passage", "2", "--filter", "none", "--min-words", "1", "--max-words", "100"]
    args += ["--max-new-tokens", "6", "--precision", "fp32"]
    assert main(args) == 0
    stats = json.loads((out / "synth_stats.json").read_text())
    assert stats["generated"] == 6 and stats["kept"] >= 1
    assert stats["hardware"]["precision"] == "fp32" and stats["settings"]["per_passage"] == 2
    rows = [json.loads(line) for line in (out / "queries.jsonl").read_text().splitlines()]
    assert all(r["metadata"]["passage_id"] in {"sky", "grass", "sea"} for r in rows)


def test_bad_input_names_file_line_and_field_and_writes_nothing(
    lm: Path, corpus: Path, tmp_path: Path
) -> None:
    shots = tmp_path / "shots.jsonl"
    shots.write_text(
        '{"passage": "the sky is blue", "question": "why is the sky blue ?"}\n{"passage": "x"}\n'
    )
    with pytest.raises(DataError, match=r"shots.jsonl:2: field 'question'"):
        synth_queries(
            corpus, tmp_path / "out", SynthSettings(model=str(lm), few_shot=shots, precision="fp32")
        )
    assert not (tmp_path / "out").exists()
    from ragtune.errors import UserError

    with pytest.raises(UserError, match="--greedy"):
        SynthSettings(greedy=True, per_passage=2)
    with pytest.raises(UserError, match="--filter"):
        SynthSettings(filter="colbert")


# A planted dense encoder for the round-trip filter: a passage points at the topic its text names
# (sky, grass, sea); each question at the topic in PLANTED, so dense and BM25 can disagree on purpose.
TOPICS = ("sky", "grass", "sea")
PLANTED = {
    "why is the sky blue ?": "sky",  # BM25 finds sky, dense finds sky
    "why is the air light ?": "grass",  # asked of grass: BM25 finds sky (air, light), dense grass
    "why is the sea salty ?": "sky",  # asked of sea: BM25 finds sea, dense sky
}


def _plant_encoder(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    import numpy as np

    import ragtune.retriever.model as m

    encoded: list[str] = []

    def encode(model, texts, **kwargs):
        encoded.extend(texts)
        out = np.zeros((len(texts), len(TOPICS)), dtype=np.float32)
        for i, t in enumerate(texts):
            topic = PLANTED.get(t) or next(x for x in TOPICS if x in t.lower())
            out[i, TOPICS.index(topic)] = 1.0
        return out

    monkeypatch.setattr(m, "load_encoder", lambda name, precision="auto": name)
    monkeypatch.setattr(m, "encode", encode)
    return encoded


def test_dense_round_trip_ranks_follow_the_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = {p["_id"]: Passage(p["_id"], p["text"], p["title"]) for p in CORPUS}
    encoded = _plant_encoder(monkeypatch)
    questions = ["why is the air light ?", "why is the sea salty ?"]
    assert round_trip_ranks(questions, ["grass", "sea"], corpus, "dense", 1) == [1, None]
    # sea ties grass at score 0 behind sky: the stable order puts it third of three
    assert round_trip_ranks(questions[1:], ["sea"], corpus, "dense", 3) == [3]
    assert "why is the air light ?" in encoded  # the questions went through the encoder
    with pytest.raises(ValueError, match="round-trip method"):
        round_trip_ranks(["q"], ["sky"], corpus, "colbert", 1)


@pytest.mark.parametrize(
    ("method", "kept"),
    [
        ("bm25", ["why is the sky blue ?", "why is the sea salty ?"]),
        ("dense", ["why is the sky blue ?", "why is the air light ?"]),
        ("both", ["why is the sky blue ?"]),  # a question must pass each retriever
    ],
)
def test_round_trip_filter_by_bm25_dense_or_both(
    method: str,
    kept: list[str],
    lm: Path,
    corpus: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(lm)
    _plant_encoder(monkeypatch)
    # prompts in corpus order: sky, grass, sea
    _canned(
        monkeypatch, tok, ["why is the sky blue ?", "why is the air light ?", "why is the sea salty ?"], []
    )
    s = SynthSettings(model=str(lm), filter=method, filter_k=1, retriever="planted", precision="fp32")
    stats = synth_queries(corpus, tmp_path / "out", s)
    assert (stats["kept"], stats["filtered_out"]) == (len(kept), 3 - len(kept))
    assert stats["filter_seconds"] >= 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "queries.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == kept
    for r in rows:
        meta = r["metadata"]
        assert meta["filter"] == method and meta["filter_k"] == 1
        assert (meta["bm25_rank"] == 1) == (method in ("bm25", "both"))
        assert (meta["dense_rank"] == 1) == (method in ("dense", "both"))
        assert meta["retriever"] == (None if method == "bm25" else "planted")


def test_few_shot_examples_come_before_each_passage(
    lm: Path, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoTokenizer

    import ragtune.generator.generate as g

    tok = AutoTokenizer.from_pretrained(lm)
    shots = tmp_path / "shots.jsonl"
    write_jsonl(shots, [{"passage": "grass is green", "question": "what color is the grass ?"}])
    seen: list[str] = []
    real = g.generate_ids

    def spy(model, prompts, cfg, stop_ids, pad_id, progress=True):
        seen.extend(tok.decode(p) for p in prompts)
        return real(model, prompts, cfg, stop_ids, pad_id, progress)

    monkeypatch.setattr(g, "generate_ids", spy)
    s = SynthSettings(
        model=str(lm), few_shot=shots, filter="none", min_words=1, max_words=100, max_new_tokens=4,
        precision="fp32",
    )  # fmt: skip
    stats = synth_queries(corpus, tmp_path / "out", s)
    assert len(seen) == 3
    for prompt, p in zip(seen, CORPUS, strict=True):
        shot = prompt.index("what color is the grass ?")
        assert prompt.count("what color is the grass ?") == 1
        assert prompt.index("grass is green") < shot < prompt.rindex(p["text"])  # example, then the passage
    assert stats["settings"]["few_shot"] == str(shots)
    rows = [json.loads(line) for line in (tmp_path / "out" / "queries.jsonl").read_text().splitlines()]
    assert rows and all(r["metadata"]["few_shot"] == str(shots) for r in rows)
    # without the file the prompts hold no example
    seen.clear()
    synth_queries(corpus, tmp_path / "plain", SynthSettings(**{**s.__dict__, "few_shot": None}))
    assert len(seen) == 3 and not any("what color is the grass ?" in x for x in seen)
