from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragtune.cli import main
from ragtune.data.io import load_beir, load_qrels, read_run, write_run
from ragtune.eval.generation import evaluate_generation
from ragtune.eval.ir import evaluate_run
from tests.conftest import DEMO, shared_dataset


def test_eval_retrieval_writes_the_documented_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    qrels = load_qrels(DEMO / "qrels" / "test.tsv")
    run = {q: {d: 1.0 for d in docs} | {"p0001": 0.5} for q, docs in qrels.items()}
    write_run(tmp_path / "run.trec", run)
    out = tmp_path / "m.json"
    assert (
        main(
            [
                "eval",
                "retrieval",
                "--run",
                str(tmp_path / "run.trec"),
                "--qrels",
                str(DEMO / "qrels/test.tsv"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    doc = json.loads(out.read_text())
    expected = evaluate_run(read_run(tmp_path / "run.trec"), qrels)
    assert doc["metrics"] == pytest.approx(expected.metrics)
    for name in ("nDCG@10", "Recall@100", "MRR@10", "MAP@100", "P@10"):
        assert name in doc["metrics"]
    assert doc["metrics"]["Recall@100"] == 1.0 and set(doc["per_query"]) == set(qrels)
    assert "nDCG@10" in capsys.readouterr().out


def test_eval_generation(tmp_path: Path) -> None:
    rows = [
        {
            "id": "a",
            "prediction": "Paris is the capital.",
            "reference": "Paris",
            "contexts": ["Paris is the capital of France."],
        },
        {"id": "b", "prediction": "Berlin", "reference": "Berlin"},
    ]
    pred = tmp_path / "pred.jsonl"
    pred.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["eval", "generation", "--predictions", str(pred), "--out", str(tmp_path / "g.json")]) == 0
    doc = json.loads((tmp_path / "g.json").read_text())
    metrics, _ = evaluate_generation([r["prediction"] for r in rows], [r["reference"] for r in rows])
    for name in ("ROUGE-1", "ROUGE-2", "ROUGE-L", "EM", "F1", "BLEU"):
        assert doc["metrics"][name] == pytest.approx(metrics[name])
    assert doc["metrics"]["EM"] == 0.5
    assert doc["per_query"]["a"]["faithfulness"] == pytest.approx(1.0)  # every word is in the context
    assert "faithfulness" not in doc["per_query"]["b"]


def test_errors_exit_2_with_file_line_field(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pred = tmp_path / "pred.jsonl"
    pred.write_text('{"prediction": "x", "reference": "y"}\n{"prediction": "x"}\n')
    assert main(["eval", "generation", "--predictions", str(pred), "--out", str(tmp_path / "g.json")]) == 2
    assert "pred.jsonl:2: field 'reference': missing or not a string" in capsys.readouterr().err
    assert not (tmp_path / "g.json").exists()
    cfg = tmp_path / "c.yaml"
    cfg.write_text("eval:\n  depht: 3\n")
    assert main(["retriever", "eval", "--config", str(cfg)]) == 2
    assert "c.yaml: unknown key 'eval.depht'" in capsys.readouterr().err
    bad = tmp_path / "corpus.jsonl"
    bad.write_text('{"_id": "a"}\n')
    assert main(["data", "check", "corpus", str(bad)]) == 2
    assert "corpus.jsonl:1: field 'text': missing" in capsys.readouterr().err


def test_data_check(capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "check", "beir", str(DEMO)]) == 0
    assert main(["data", "check", "qa", str(DEMO / "qa.jsonl"), "--corpus", str(DEMO / "corpus.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "ok:" in out and "qa records" in out


def test_retriever_eval_bm25_on_demo(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["retriever", "eval", "--config", "configs/tiny/retriever.yaml", f"output_dir={out}"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    # The written run scores the same through the metric code as the summary says.
    data = load_beir(DEMO, "test")
    rescored = evaluate_run(read_run(out / "run_bm25.trec"), data.qrels, ks=(1, 5, 10))
    assert summary["metrics"]["bm25"] == pytest.approx(rescored.metrics)
    assert 0.3 < summary["metrics"]["bm25"]["Recall@10"] <= 1.0
    assert (out / "config.yaml").read_text().count("bm25") >= 1


def test_retriever_eval_dense_and_hybrid_with_a_tiny_encoder(tmp_path: Path, tiny_encoder: Path) -> None:
    out = tmp_path / "run"
    args = [
        "retriever",
        "eval",
        "--config",
        "configs/tiny/retriever.yaml",
        f"output_dir={out}",
        f"model.name={tiny_encoder}",
        "eval.methods=[bm25,dense,hybrid]",
    ]
    assert main(args) == 0
    metrics = json.loads((out / "summary.json").read_text())["metrics"]
    assert set(metrics) == {"bm25", "dense", "hybrid"}
    run = read_run(out / "run_dense.trec")
    assert all(len(docs) == 10 for docs in run.values())
    assert all(-1.0001 <= s <= 1.0001 for docs in run.values() for s in docs.values())  # cosine scores


def test_convert_pubmedqa(tmp_path: Path) -> None:
    src = shared_dataset("pubmedqa")
    assert main(["data", "convert", "pubmedqa", "--src", str(src), "--out", str(tmp_path)]) == 0
    data = load_beir(tmp_path, "test")
    assert len(data.qrels) == 500 and len(load_beir(tmp_path, "train").qrels) == 500
    assert len(data.corpus) == 3358 and "21645374-0" in data.corpus
    first = json.loads((tmp_path / "qa_train.jsonl").read_text().splitlines()[0])
    assert first["final_decision"] in {"yes", "no", "maybe"} and first["contexts"][0].endswith("-0")


def test_convert_halueval(tmp_path: Path) -> None:
    src = shared_dataset("halueval") / "qa_one-turn_data.json"
    assert main(["data", "convert", "halueval", "--src", str(src), "--out", str(tmp_path)]) == 0
    rows = [json.loads(x) for x in (tmp_path / "qa_test.jsonl").read_text().splitlines()]
    assert len(rows) == 500 and rows[0]["answer"] == "Arthur's Magazine" and rows[0]["hallucinated_answer"]


def test_mine_train_index_search_eval_through_the_cli(tmp_path: Path, tiny_encoder: Path) -> None:
    common = [
        f"data.beir_dir={DEMO}",
        f"model.name={tiny_encoder}",
        "model.max_passage_length=128",
        "precision=fp32",
        "eval.batch_size=32",
    ]
    triplets = tmp_path / "neg.jsonl"
    assert main(["retriever", "mine", *common, "mining.num_negatives=2", f"mining.out={triplets}"]) == 0
    assert len(triplets.read_text().splitlines()) == 126  # one triplet per training pair of the demo
    out = tmp_path / "train"
    assert (
        main(
            [
                "retriever",
                "train",
                *common,
                f"data.triplets={triplets}",
                "train.hard_negatives=2",
                "train.max_steps=3",
                "train.batch_size=8",
                "precision=fp32",
                "data.val_fraction=0",
                f"output_dir={out}",
            ]
        )
        == 0
    )
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 3 and summary["pairs_per_s"] > 0
    ix = tmp_path / "ix"
    assert (
        main(
            [
                "index",
                "build",
                *[c for c in common if not c.startswith("model.name")],
                f"model.name={out / 'model'}",
                "index.kind=hnsw",
                f"output_dir={ix}",
            ]
        )
        == 0
    )
    meta = json.loads((ix / "index" / "index.json").read_text())
    assert meta["kind"] == "hnsw" and meta["n"] == 337 and 0.9 <= meta["report"]["recall@10_vs_exact"] <= 1.0
    run = tmp_path / "run.trec"
    assert (
        main(
            [
                "index",
                "search",
                "--index",
                str(ix / "index"),
                "--queries",
                str(DEMO / "queries.jsonl"),
                "--out",
                str(run),
                "--k",
                "20",
            ]
        )
        == 0
    )
    assert len(read_run(run)) == 180
    ev = tmp_path / "ev"
    assert (
        main(
            [
                "retriever",
                "eval",
                *common,
                f"eval.index_dir={ix / 'index'}",
                "eval.methods=[dense]",
                f"output_dir={ev}",
            ]
        )
        == 0
    )
    dense = read_run(ev / "run_dense.trec")
    searched = read_run(run)
    for qid in dense:  # the index scored through `retriever eval` gives the same top documents
        assert list(dense[qid])[:5] == list(searched[qid])[:5]


def test_a_bug_keeps_its_traceback_while_user_errors_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import ragtune.retriever.evaluate as evaluate_module
    from ragtune.errors import UserError

    def bug(cfg):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(evaluate_module, "evaluate", bug)
    with pytest.raises(ValueError, match="internal invariant"):  # not swallowed into exit 2
        main(["retriever", "eval", f"output_dir={tmp_path}"])

    def user_error(cfg):
        raise UserError("data.beir_dir: no such folder")

    monkeypatch.setattr(evaluate_module, "evaluate", user_error)
    assert main(["retriever", "eval", f"output_dir={tmp_path}"]) == 2
    assert capsys.readouterr().err.strip() == "ragtune: error: data.beir_dir: no such folder"
