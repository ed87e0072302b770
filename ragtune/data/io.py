"""Reading and writing ragtune's data: JSONL, BEIR folders, qrels, TREC runs, triplets and QA files.

Every reader validates as it goes and raises :class:`DataError` naming the file, the line and the
field at fault. Every writer writes to a temporary file in the target folder and renames it, so a
crash never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ragtune.data.schema import (
    Negative,
    Passage,
    Prediction,
    PreferencePair,
    QAExample,
    Query,
    Triplet,
    text_id,
)
from ragtune.errors import UserError

Qrels = dict[str, dict[str, int]]  # query id -> document id -> graded relevance
Run = dict[str, dict[str, float]]  # query id -> document id -> score


class DataError(UserError):
    """Bad input data; the message names the file, the line (1-based) and the field."""

    def __init__(self, path: str | Path, line: int | None, field: str | None, message: str):
        self.path, self.line, self.field = str(path), line, field
        where = self.path + (f":{line}" if line is not None else "")
        what = f" field {field!r}:" if field else ""
        super().__init__(f"{where}:{what} {message}")


# ----------------------------------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success rename it over ``path``, on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_dir_atomically(target: Path, write: Callable[[Path], Any]) -> None:
    """Write a folder through ``write(tmp_folder)`` and swap it in place of ``target``: a kill leaves
    either the old folder (or, in the instant between the two renames, ``.<name>.old``) or the new
    one, never a mix; a rerun clears the leftovers."""
    tmp = target.with_name(f".{target.name}.tmp")
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_writer(path) as fh:
        fh.write(text)
    return Path(path)


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write one JSON object per line, atomically."""
    with atomic_writer(path) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Path(path)


# ----------------------------------------------------------------------------------------- reading


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, None, "file not found")
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(path, number, None, f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    path, number, None, f"malformed JSON: {exc.msg} (column {exc.colno})"
                ) from None
            except RecursionError:
                raise DataError(path, number, None, "JSON nested too deeply") from None
            if not isinstance(obj, dict):
                raise DataError(path, number, None, f"expected a JSON object, got {type(obj).__name__}")
            yield number, obj


def _req_str(obj: Mapping[str, Any], key: str, path: Path, line: int, *, allow_empty: bool = False) -> str:
    """A required string field (ids given as integers are accepted and turned into strings)."""
    if key not in obj:
        raise DataError(path, line, key, "missing")
    value = obj[key]
    if isinstance(value, int) and not isinstance(value, bool) and key.endswith("id"):
        value = str(value)
    if not isinstance(value, str):
        raise DataError(path, line, key, f"expected a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise DataError(path, line, key, "empty")
    return value


def _unique_id(obj: Mapping[str, Any], seen: set[str], path: Path, line: int) -> str:
    """The row's ``id``, an error when an earlier row of the file had it; added to ``seen``."""
    row_id = _req_str(obj, "id", path, line)
    if row_id in seen:
        raise DataError(path, line, "id", f"duplicate id {row_id!r}")
    seen.add(row_id)
    return row_id


def _opt_str(obj: Mapping[str, Any], key: str, path: Path, line: int) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(path, line, key, f"expected a string, got {type(value).__name__}")
    return value


def load_corpus(path: str | Path, allow_empty_text: bool = False) -> dict[str, Passage]:
    """Read a BEIR ``corpus.jsonl`` (``_id``, ``text``, optional ``title``) into id -> Passage.

    Insertion order is file order. Raises :class:`DataError` on a duplicate id or an empty corpus,
    and on a blank ``text`` unless ``allow_empty_text`` (``data audit`` reports those instead).
    """
    path = Path(path)
    corpus: dict[str, Passage] = {}
    for line, obj in read_jsonl(path):
        pid = _req_str(obj, "_id", path, line)
        if pid in corpus:
            raise DataError(path, line, "_id", f"duplicate id {pid!r}")
        text = _req_str(obj, "text", path, line, allow_empty=allow_empty_text)
        corpus[pid] = Passage(pid, text, _opt_str(obj, "title", path, line))
    if not corpus:
        raise DataError(path, None, None, "empty corpus: no passages")
    return corpus


def load_queries(path: str | Path) -> dict[str, Query]:
    """Read a BEIR ``queries.jsonl`` (``_id``, ``text``) into id -> Query."""
    path = Path(path)
    queries: dict[str, Query] = {}
    for line, obj in read_jsonl(path):
        qid = _req_str(obj, "_id", path, line)
        if qid in queries:
            raise DataError(path, line, "_id", f"duplicate id {qid!r}")
        queries[qid] = Query(qid, _req_str(obj, "text", path, line))
    if not queries:
        raise DataError(path, None, None, "no queries")
    return queries


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line_number, stripped_text)`` for each non-blank line of a UTF-8 text file."""
    if not path.is_file():
        raise DataError(path, None, None, "file not found")
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                raise DataError(path, number, None, f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
            if text:
                yield number, text


def load_qrels(
    path: str | Path,
    queries: Mapping[str, Any] | None = None,
    corpus: Mapping[str, Any] | None = None,
) -> Qrels:
    """Read relevance judgements: BEIR TSV (``query-id  corpus-id  score``, header optional) or TREC
    (``qid  iteration  docid  relevance``, whitespace separated). Scores are integers (graded).

    When ``queries``/``corpus`` are given, a row naming an unknown query or document is an error.
    """
    path = Path(path)
    qrels: Qrels = {}
    for number, text in _text_lines(path):
        cols = text.split("\t") if "\t" in text else text.split()
        cols = [c.strip() for c in cols]
        if number == 1 and len(cols) in (3, 4) and not _is_int(cols[-1]):
            continue  # header line such as "query-id corpus-id score"
        if len(cols) == 3:
            qid, did, rel = cols
        elif len(cols) == 4:
            qid, _, did, rel = cols
        else:
            raise DataError(path, number, None, f"expected 3 (BEIR) or 4 (TREC) columns, got {len(cols)}")
        if not _is_int(rel):
            raise DataError(path, number, "score", f"relevance must be an integer, got {rel!r}")
        if queries is not None and qid not in queries:
            raise DataError(path, number, "query-id", f"unknown query {qid!r}")
        if corpus is not None and did not in corpus:
            raise DataError(path, number, "corpus-id", f"unknown document {did!r}")
        docs = qrels.setdefault(qid, {})
        if did in docs:
            raise DataError(path, number, "corpus-id", f"duplicate judgement for ({qid!r}, {did!r})")
        docs[did] = int(rel)
    if not qrels:
        raise DataError(path, None, None, "no judgements")
    return qrels


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


@dataclass
class BeirDataset:
    """A corpus, its queries and the qrels of one split, as read from a BEIR-layout folder."""

    corpus: dict[str, Passage]
    queries: dict[str, Query]
    qrels: Qrels

    def split_queries(self) -> dict[str, Query]:
        """The queries judged in this split, in qrels order."""
        return {qid: self.queries[qid] for qid in self.qrels}


def load_beir(folder: str | Path, split: str = "test") -> BeirDataset:
    """Read ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv`` from a BEIR folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, None, None, "BEIR folder not found")
    corpus = load_corpus(folder / "corpus.jsonl")
    queries = load_queries(folder / "queries.jsonl")
    qrels = load_qrels(folder / "qrels" / f"{split}.tsv", queries, corpus)
    return BeirDataset(corpus, queries, qrels)


def load_predictions(path: str | Path) -> list[Prediction]:
    """A predictions JSONL file (``ragtune generator generate`` writes one): ``prediction`` and
    ``reference`` strings, optional ``id`` (default: the line number), ``contexts`` (texts or
    passage objects with a ``text``), ``final_decision`` / ``decision`` (yes/no/maybe), ``answerable``
    and ``question``."""
    rows = []
    for line, obj in read_jsonl(path):
        for key in ("prediction", "reference"):
            if not isinstance(obj.get(key), str):
                raise DataError(path, line, key, "missing or not a string")
        ctx = obj.get("contexts")
        if ctx is not None and not (isinstance(ctx, list) and all(isinstance(c, str | dict) for c in ctx)):
            raise DataError(path, line, "contexts", "expected a list of texts or passage objects")
        texts = None if ctx is None else [c if isinstance(c, str) else str(c.get("text", "")) for c in ctx]
        decision = obj.get("final_decision", obj.get("decision"))
        if decision is not None and (
            not isinstance(decision, str) or decision.lower() not in ("yes", "no", "maybe")
        ):
            field = "final_decision" if "final_decision" in obj else "decision"
            raise DataError(path, line, field, f"expected yes, no or maybe, got {decision!r}")
        answerable = obj.get("answerable")
        if answerable is not None and not isinstance(answerable, bool):
            raise DataError(path, line, "answerable", f"expected true or false, got {answerable!r}")
        question = obj.get("question")
        if question is not None and not isinstance(question, str):
            raise DataError(path, line, "question", "expected a string")
        rows.append(
            Prediction(
                str(obj.get("id", line)),
                obj["prediction"],
                obj["reference"],
                texts,
                decision,
                answerable,
                question,
            )
        )
    if not rows:
        raise DataError(path, None, None, "no predictions")
    return rows


# ------------------------------------------------------------------------------- triplets and QA


def _passages(
    obj: Mapping[str, Any], field: str, path: Path, line: int, corpus: Mapping[str, Passage] | None
) -> list[tuple[Passage, Mapping[str, Any]]]:
    """A list field of passages given as texts, ``{"id": ...}`` or ``{"text": ...}`` objects.

    Returns (passage, the object it came from) pairs so that callers can read provenance.
    """
    value = obj[field]
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list):
        raise DataError(path, line, field, f"expected a list, got {type(value).__name__}")
    out = []
    for i, item in enumerate(value):
        name = f"{field}[{i}]"
        if isinstance(item, str):
            if not item.strip():
                raise DataError(path, line, name, "empty text")
            out.append((Passage(text_id(item), item), {}))
        elif isinstance(item, dict):
            pid = item.get("id")
            if isinstance(pid, int) and not isinstance(pid, bool):
                pid = str(pid)
            text = item.get("text")
            if pid is not None and not isinstance(pid, str):
                raise DataError(path, line, f"{name}.id", f"expected a string, got {type(pid).__name__}")
            if text is not None and not isinstance(text, str):
                raise DataError(path, line, f"{name}.text", f"expected a string, got {type(text).__name__}")
            if text is None:
                if pid is None:
                    raise DataError(path, line, name, "needs an 'id' or a 'text'")
                if corpus is None:
                    raise DataError(path, line, f"{name}.id", "passages given by id need a corpus")
                if pid not in corpus:
                    raise DataError(path, line, f"{name}.id", f"unknown passage id {pid!r}")
                out.append((corpus[pid], item))
            else:
                title = item.get("title") or ""
                out.append(
                    (Passage(pid or text_id(text), text, title if isinstance(title, str) else ""), item)
                )
        else:
            raise DataError(path, line, name, f"expected a text or an object, got {type(item).__name__}")
    return out


def _ids_as_passages(
    obj: Mapping[str, Any], field: str, path: Path, line: int, corpus: Mapping[str, Passage] | None
) -> list[tuple[Passage, Mapping[str, Any]]]:
    value = obj[field]
    if not isinstance(value, list):
        raise DataError(path, line, field, f"expected a list of ids, got {type(value).__name__}")
    return _passages({field: [{"id": v} for v in value]}, field, path, line, corpus)


def load_triplets(
    path: str | Path, corpus: Mapping[str, Passage] | None = None, queries: Mapping[str, Query] | None = None
) -> list[Triplet]:
    """Read retriever training triplets from JSONL.

    Per line: the query as ``query`` (text) or ``query_id``; positives as ``positive``/``positives``
    (texts or ``{"id"}``/``{"text"}`` objects) or ``positive_ids``; optional negatives as
    ``negatives`` (same forms; objects may carry ``source``, ``rank``, ``score``) or ``negative_ids``.
    """
    path = Path(path)
    out: list[Triplet] = []
    for line, obj in read_jsonl(path):
        if "query" in obj:
            text = _req_str(obj, "query", path, line)
            qid = str(obj.get("query_id") or text_id(text))
            query = Query(qid, text)
        elif "query_id" in obj:
            qid = _req_str(obj, "query_id", path, line)
            if queries is None:
                raise DataError(path, line, "query_id", "queries given by id need a queries file")
            if qid not in queries:
                raise DataError(path, line, "query_id", f"unknown query id {qid!r}")
            query = queries[qid]
        else:
            raise DataError(path, line, "query", "missing (give 'query' or 'query_id')")
        keys = [k for k in ("positive", "positives", "positive_ids") if k in obj]
        if not keys:
            raise DataError(
                path, line, "positives", "missing (give 'positive', 'positives' or 'positive_ids')"
            )
        if keys[0] == "positive_ids":
            pos = _ids_as_passages(obj, "positive_ids", path, line, corpus)
        else:
            pos = _passages(obj, keys[0], path, line, corpus)
        if not pos:
            raise DataError(path, line, keys[0], "no positive passage")
        teacher: dict[str, float] = {}
        _teacher_scores(pos, keys[0], path, line, teacher)
        negs: list[Negative] = []
        if "negatives" in obj or "negative_ids" in obj:
            field = "negatives" if "negatives" in obj else "negative_ids"
            items = (_passages if field == "negatives" else _ids_as_passages)(obj, field, path, line, corpus)
            for i, (passage, meta) in enumerate(items):
                rank, score, source = meta.get("rank"), meta.get("score"), meta.get("source")
                if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int)):
                    raise DataError(path, line, f"{field}[{i}].rank", f"expected an integer, got {rank!r}")
                if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
                    raise DataError(path, line, f"{field}[{i}].score", f"expected a number, got {score!r}")
                if source is not None and not isinstance(source, str):
                    raise DataError(path, line, f"{field}[{i}].source", f"expected a string, got {source!r}")
                negs.append(
                    Negative(passage, source or "given", rank, None if score is None else float(score))
                )
            _teacher_scores(items, field, path, line, teacher)
        out.append(Triplet(query, tuple(p for p, _ in pos), tuple(negs), teacher or None))
    if not out:
        raise DataError(path, None, None, "no triplets")
    return out


def _teacher_scores(
    items: list[tuple[Passage, Mapping[str, Any]]],
    field: str,
    path: Path,
    line: int,
    into: dict[str, float],
) -> None:
    """Collect the optional ``teacher`` score of each passage object of a triplet field."""
    for i, (passage, meta) in enumerate(items):
        value = meta.get("teacher")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise DataError(path, line, f"{field}[{i}].teacher", f"expected a finite number, got {value!r}")
        into[passage.id] = float(value)


def triplet_to_dict(t: Triplet) -> dict[str, Any]:
    """The JSONL form of a triplet, passages by id and text, negatives with their provenance, and
    each passage's ``teacher`` score when the triplet has them."""
    scores = t.teacher or {}

    def passage(p: Passage) -> dict[str, Any]:
        out = {"id": p.id, "title": p.title, "text": p.text} if p.title else {"id": p.id, "text": p.text}
        if p.id in scores:
            out["teacher"] = scores[p.id]
        return out

    return {
        "query_id": t.query.id,
        "query": t.query.text,
        "positives": [passage(p) for p in t.positives],
        "negatives": [
            {**passage(n.passage), "source": n.source, "rank": n.rank, "score": n.score} for n in t.negatives
        ],
    }


def load_qa(path: str | Path, corpus: Mapping[str, Passage] | None = None) -> list[QAExample]:
    """Read QA JSONL: ``id``, ``question``, ``answer``, optional ``contexts`` (texts, ``{"id"}`` or
    ``{"text"}`` objects) and ``positive_ids``. Other keys are kept in ``meta``."""
    path = Path(path)
    out: list[QAExample] = []
    seen: set[str] = set()
    for line, obj in read_jsonl(path):
        qa_id = _unique_id(obj, seen, path, line)
        question = _req_str(obj, "question", path, line)
        answer = _req_str(obj, "answer", path, line)
        contexts: list[Passage] = []
        if obj.get("contexts") is not None:
            raw = obj["contexts"]
            if not isinstance(raw, list):
                raise DataError(path, line, "contexts", f"expected a list, got {type(raw).__name__}")
            if corpus is not None:
                # Plain strings that are corpus ids are references; anything else is passage text.
                raw = [{"id": c} if isinstance(c, str) and c in corpus else c for c in raw]
            contexts = [p for p, _ in _passages({"contexts": raw}, "contexts", path, line, corpus)]
        positive_ids: list[str] = []
        if obj.get("positive_ids") is not None:
            raw_ids = obj["positive_ids"]
            if not isinstance(raw_ids, list) or not all(isinstance(x, (str, int)) for x in raw_ids):
                raise DataError(path, line, "positive_ids", "expected a list of ids")
            positive_ids = [str(x) for x in raw_ids]
            if corpus is not None:
                for i, pid in enumerate(positive_ids):
                    if pid not in corpus:
                        raise DataError(path, line, f"positive_ids[{i}]", f"unknown passage id {pid!r}")
        meta = {
            k: v for k, v in obj.items() if k not in {"id", "question", "answer", "contexts", "positive_ids"}
        }
        out.append(QAExample(qa_id, question, answer, tuple(contexts), tuple(positive_ids), meta))
    if not out:
        raise DataError(path, None, None, "no QA examples")
    return out


def load_pairs(path: str | Path, corpus: Mapping[str, Passage] | None = None) -> list[PreferencePair]:
    """Read preference-pair JSONL (``ragtune generator pairs`` writes it): ``id``, ``question``,
    ``chosen``, ``rejected``, optional ``passages`` (texts, ``{"id"}`` or ``{"text"}`` objects) and
    ``kind``. A pair whose two answers are the same text teaches nothing and is an error."""
    path = Path(path)
    out: list[PreferencePair] = []
    seen: set[str] = set()
    for line, obj in read_jsonl(path):
        pair_id = _unique_id(obj, seen, path, line)
        question = _req_str(obj, "question", path, line)
        chosen = _req_str(obj, "chosen", path, line)
        rejected = _req_str(obj, "rejected", path, line)
        if chosen.strip() == rejected.strip():
            raise DataError(path, line, "rejected", "the same text as 'chosen': the pair prefers nothing")
        passages: list[Passage] = []
        if obj.get("passages") is not None:
            passages = [p for p, _ in _passages(obj, "passages", path, line, corpus)]
        kind = _opt_str(obj, "kind", path, line)
        out.append(PreferencePair(pair_id, question, tuple(passages), chosen, rejected, kind))
    if not out:
        raise DataError(path, None, None, "no preference pairs")
    return out


def pair_to_dict(pair: PreferencePair) -> dict[str, Any]:
    """The JSONL form of a preference pair (passages as objects)."""
    return {
        "id": pair.id,
        "question": pair.question,
        "passages": [{"id": p.id, "title": p.title, "text": p.text} for p in pair.passages],
        "chosen": pair.chosen,
        "rejected": pair.rejected,
        "kind": pair.kind,
    }


def qa_to_dict(ex: QAExample, contexts_by_id: bool = False) -> dict[str, Any]:
    """The JSONL form of a QA example (contexts as ids when ``contexts_by_id``, else as objects)."""
    if contexts_by_id:
        contexts: list[Any] = [p.id for p in ex.contexts]
    else:
        contexts = [{"id": p.id, "title": p.title, "text": p.text} for p in ex.contexts]
    row: dict[str, Any] = {"id": ex.id, "question": ex.question, "answer": ex.answer, "contexts": contexts}
    if ex.positive_ids:
        row["positive_ids"] = list(ex.positive_ids)
    row.update(ex.meta)
    return row


# ------------------------------------------------------------------------------------- TREC runs


def read_run(path: str | Path) -> Run:
    """Read a TREC run file (``qid Q0 docid rank score tag``, whitespace separated)."""
    path = Path(path)
    run: Run = {}
    for number, text in _text_lines(path):
        cols = text.split()
        if len(cols) != 6:
            raise DataError(
                path, number, None, f"expected 6 columns (qid Q0 docid rank score tag), got {len(cols)}"
            )
        qid, _, did, rank, score, _ = cols
        if not _is_int(rank):
            raise DataError(path, number, "rank", f"expected an integer, got {rank!r}")
        try:
            value = float(score)
        except ValueError:
            raise DataError(path, number, "score", f"expected a number, got {score!r}") from None
        if not math.isfinite(value):
            raise DataError(path, number, "score", f"not a finite number: {score!r}")
        docs = run.setdefault(qid, {})
        if did in docs:
            raise DataError(path, number, "docid", f"document {did!r} listed twice for query {qid!r}")
        docs[did] = value
    if not run:
        raise DataError(path, None, None, "empty run")
    return run


def write_run(
    path: str | Path, run: Mapping[str, Mapping[str, float]], tag: str = "ragtune", depth: int | None = None
) -> Path:
    """Write a TREC run file, each query's documents by descending score (ties by document id),
    at most ``depth`` per query."""
    with atomic_writer(path) as fh:
        for qid, docs in run.items():
            ranked = sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))
            for rank, (did, score) in enumerate(ranked[:depth] if depth else ranked, start=1):
                fh.write(f"{qid} Q0 {did} {rank} {float(score)!r} {tag}\n")
    return Path(path)
