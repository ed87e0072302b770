"""Property-based tests (hypothesis) over the data readers and the config loader: arbitrary bytes,
truncated lines, wrong types, huge fields, non-UTF-8 and duplicate ids either load or fail with a
named, clear error (``DataError`` / ``ConfigError`` naming the file), never a traceback from deep
inside a library."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ragtune.config import ConfigError, load_config  # noqa: E402
from ragtune.data import io  # noqa: E402
from ragtune.e2e.config import E2EConfig  # noqa: E402
from ragtune.generator.config import GeneratorConfig  # noqa: E402
from ragtune.retriever.config import RetrieverConfig  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CORPUS = {"p1": io.Passage("p1", "a"), "p2": io.Passage("p2", "b")}
QUERIES = {"q1": io.Query("q1", "x")}

READERS = {
    "corpus": io.load_corpus,
    "queries": io.load_queries,
    "qrels": lambda p: io.load_qrels(p, QUERIES, CORPUS),
    "qrels_unchecked": io.load_qrels,
    "triplets": lambda p: io.load_triplets(p, CORPUS, QUERIES),
    "qa": lambda p: io.load_qa(p, CORPUS),
    "run": io.read_run,
}

# JSON values of every type, including huge strings and numbers, nested a little.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.just("x" * 100_000),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
keys = st.sampled_from(["_id", "id", "text", "title", "question", "answer", "contexts", "positive_ids",
                        "query", "query_id", "positive", "positives", "negatives", "passage", "rank", "score"])  # fmt: skip
records = st.dictionaries(st.one_of(keys, st.text(max_size=5)), values, max_size=6)


def _write(data: bytes) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="ragtune-hostile-"))
    path = folder / "input.jsonl"
    path.write_bytes(data)
    return path


def _loads_or_names_the_file(reader, data: bytes) -> None:
    path = _write(data)
    try:
        reader(path)
    except io.DataError as err:
        assert str(path) in str(err), err
        assert err.path == str(path)


@pytest.mark.parametrize("kind", sorted(READERS))
@SETTINGS
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes(kind: str, data: bytes) -> None:
    _loads_or_names_the_file(READERS[kind], data)


@pytest.mark.parametrize("kind", sorted(READERS))
@SETTINGS
@given(
    rows=st.lists(records, max_size=4),
    cut=st.integers(min_value=0, max_value=2000),
    junk=st.binary(max_size=4),
)
def test_wrong_types_truncation_and_non_utf8(kind: str, rows: list[dict], cut: int, junk: bytes) -> None:
    lines = [json.dumps(r, ensure_ascii=False, allow_nan=True) for r in rows]
    data = "\n".join(lines).encode("utf-8")
    _loads_or_names_the_file(READERS[kind], data[: cut if cut < len(data) else len(data)] + junk)


@pytest.mark.parametrize("kind", ["qrels_unchecked", "run"])
@SETTINGS
@given(
    cells=st.lists(
        st.lists(st.one_of(st.text(max_size=6), st.integers().map(str), st.floats().map(str)), max_size=7),
        max_size=5,
    )
)
def test_whitespace_tables(kind: str, cells: list[list[str]]) -> None:
    text = "\n".join(" ".join(row) for row in cells)
    _loads_or_names_the_file(READERS[kind], text.encode("utf-8", "surrogatepass"))


def test_duplicate_ids_are_named(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "p1", "text": "a"}\n{"_id": "p1", "text": "b"}\n')
    with pytest.raises(io.DataError, match=r"corpus\.jsonl:2: field '_id': duplicate id 'p1'"):
        io.load_corpus(corpus)
    qa = tmp_path / "qa.jsonl"
    qa.write_text(
        '{"id": "a", "question": "q", "answer": "x"}\n{"id": "a", "question": "q", "answer": "y"}\n'
    )
    with pytest.raises(io.DataError, match=r"qa\.jsonl:2: field 'id': duplicate id 'a'"):
        io.load_qa(qa)


def test_deeply_nested_json_is_a_named_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text('{"_id": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(io.DataError, match=r"deep\.jsonl:1: JSON nested too deeply"):
        io.load_corpus(path)


CONFIGS = [RetrieverConfig, GeneratorConfig, E2EConfig]
yaml_keys = st.sampled_from(["model", "name", "data", "train", "eval", "rounds", "top_k", "lr", "batch_size",
                             "retriever", "generator", "peft", "r", "seed", "output_dir", "ks", "mode"])  # fmt: skip
yaml_docs = st.recursive(
    scalars.filter(lambda v: not (isinstance(v, str) and len(v) > 1000)),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.one_of(yaml_keys, st.text(max_size=5)), inner, max_size=4)
    ),
    max_leaves=10,
)


@pytest.mark.parametrize("cls", CONFIGS, ids=[c.__name__ for c in CONFIGS])
@SETTINGS
@given(doc=yaml_docs, raw=st.binary(max_size=200), use_raw=st.booleans())
def test_config_loader(cls: type, doc, raw: bytes, use_raw: bool) -> None:
    import yaml

    folder = Path(tempfile.mkdtemp(prefix="ragtune-hostile-"))
    path = folder / "config.yaml"
    path.write_bytes(raw if use_raw else yaml.safe_dump(doc, allow_unicode=True).encode("utf-8"))
    try:
        cfg = load_config(path, [], cls)
    except ConfigError as err:
        assert str(path) in str(err), err
    else:
        assert isinstance(cfg, cls)


@pytest.mark.parametrize("cls", CONFIGS, ids=[c.__name__ for c in CONFIGS])
@SETTINGS
@given(overrides=st.lists(st.text(max_size=20), max_size=3))
def test_config_overrides(cls: type, overrides: list[str]) -> None:
    """Each override loads into a ``cls`` or is a ConfigError; nothing else escapes."""
    try:
        cfg = load_config(None, overrides, cls)
    except ConfigError as err:
        assert str(err)
    else:
        assert isinstance(cfg, cls)
