"""Late interaction (model.kind=colbert): MaxSim search against a brute-force computation, the index
round trip, training (loss falls, validation, resume), a folder that loads with
sentence-transformers alone, and `retriever eval` / `index build` / `index search` through the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ragtune.cli import main
from ragtune.config import load_config
from ragtune.data.io import load_beir, read_run
from ragtune.errors import UserError
from ragtune.eval.ir import evaluate_run
from ragtune.retriever.colbert import ColbertIndex, encode_tokens, load_colbert
from ragtune.retriever.config import RetrieverConfig
from tests.conftest import DEMO, killed_after_checkpoints


def _tokens(model, texts: list[str], task: str) -> list[np.ndarray]:
    """Token vectors as the brute-force checks compute them: fp32, no progress bar."""
    return encode_tokens(model, texts, task=task, precision="fp32", show_progress=False)


def _tiny_cli(group: str, command: str, *overrides: str) -> int:
    """``ragtune GROUP COMMAND --config configs/tiny/retriever.yaml OVERRIDES...``'s exit code."""
    return main([group, command, "--config", "configs/tiny/retriever.yaml", *overrides])


def _brute_maxsim(q: np.ndarray, d: np.ndarray) -> float:
    return float(sum(max(float(qi @ dj) for dj in d) for qi in q))


def test_maxsim_search_equals_brute_force_and_the_index_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)

    def unit(n: int) -> np.ndarray:
        v = rng.normal(size=(n, 8)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    docs = [unit(int(n)) for n in rng.integers(1, 12, size=30)]
    queries = [unit(int(n)) for n in (3, 5, 1)]
    ids = [f"d{i}" for i in range(30)]
    index = ColbertIndex(docs, ids)
    hits = index.search(queries, 7, chunk_passages=4, chunk_queries=2)  # several chunks each way
    for q, row in zip(queries, hits, strict=True):
        brute = sorted(((ids[i], _brute_maxsim(q, d)) for i, d in enumerate(docs)), key=lambda x: -x[1])[:7]
        assert [pid for pid, _ in row] == [pid for pid, _ in brute]
        assert [s for _, s in row] == pytest.approx([s for _, s in brute], abs=1e-5)
    index.encoder = {"model": "m"}
    again = ColbertIndex.load(index.save(tmp_path / "idx"))
    assert again.ids == ids and again.encoder == {"model": "m"}
    assert all(a.shape == d.shape for a, d in zip(again.passages, docs, strict=True))
    for q, row in zip(queries, again.search(queries, 7), strict=True):  # float16 on disk
        assert [s for _, s in row] == pytest.approx(
            [_brute_maxsim(q, d.numpy()) for d in (again.passages[ids.index(p)] for p, _ in row)], abs=1e-4
        )
    with pytest.raises(FileNotFoundError, match="not a ColBERT index"):
        ColbertIndex.load(tmp_path)


def test_the_model_is_a_multi_vector_encoder_with_query_expansion(tiny_encoder: Path) -> None:
    torch.manual_seed(0)
    model = load_colbert(str(tiny_encoder), dim=16, query_length=12, document_length=40)
    q = _tokens(model, ["what is a bond"], "query")[0]
    d = _tokens(model, ["a bond is a loan " * 20], "document")[0]
    assert q.shape == (12, 16)  # padded to the query length with [MASK] tokens, all scored
    assert d.shape[1] == 16 and d.shape[0] <= 40
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, rtol=1e-5)
    plain = load_colbert(str(tiny_encoder), dim=16, query_length=12, query_expansion=False)
    assert _tokens(plain, ["what is a bond"], "query")[0].shape[0] < 12


def _cfg(tmp_path: Path, encoder: Path, *extra: str) -> RetrieverConfig:
    return load_config(
        None,
        [
            f"model.name={encoder}",
            "model.kind=colbert",
            "model.colbert_dim=16",
            "model.max_query_length=16",
            "model.max_passage_length=64",
            f"data.beir_dir={DEMO}",
            f"output_dir={tmp_path}",
            "data.val_fraction=0.2",
            "data.val_corpus_size=200",
            "train.batch_size=8",
            "train.lr=1e-3",
            "train.temperature=1.0",
            "train.hard_negatives=0",
            "precision=fp32",
            "train.save_every=3",
            "eval.batch_size=32",
            *extra,
        ],
        RetrieverConfig,
    )


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return {
        str(p.relative_to(folder)) + k: v
        for p in folder.rglob("*.safetensors")
        for k, v in load_file(p).items()
    }


def test_training_lowers_the_loss_resumes_and_loads_without_ragtune(
    tmp_path: Path, tiny_encoder: Path
) -> None:
    from ragtune.retriever.train import train

    extra = ("train.epochs=2", "train.eval_every=5")
    full = train(_cfg(tmp_path / "full", tiny_encoder, *extra))
    hist = [json.loads(x) for x in (full / "history.jsonl").read_text().splitlines()]
    assert len(hist) == 2 * math.ceil(101 / 8)
    assert np.mean([h["loss"] for h in hist[-3:]]) < 0.8 * np.mean([h["loss"] for h in hist[:3]])
    vals = [h["val"]["nDCG@10"] for h in hist if "val" in h]
    assert len(vals) == math.ceil(len(hist) / 5) and max(vals) > vals[0]

    # The folder is a MultiVectorEncoder: sentence-transformers alone gives ragtune's MaxSim scores.
    texts = ["what is a bond", "a bond is a loan to a company", "income tax rates"]
    code = (
        "import json; from sentence_transformers import MultiVectorEncoder; "
        f"m = MultiVectorEncoder({str(full / 'model')!r}, device='cpu'); "
        f"print(json.dumps(m.similarity(m.encode_query([{texts[0]!r}]), m.encode_document({texts[1:]!r})).tolist()))"
    )
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    theirs = json.loads(probe.stdout.strip().splitlines()[-1])[0]
    model = load_colbert(str(full / "model"), query_length=16, document_length=64)
    q = _tokens(model, texts[:1], "query")
    d = _tokens(model, texts[1:], "document")
    ours = [_brute_maxsim(q[0], x) for x in d]
    assert theirs == pytest.approx(ours, abs=1e-4)

    import ragtune.retriever.train as tr

    part_cfg = _cfg(tmp_path / "part", tiny_encoder, *extra)
    killed_after_checkpoints(tr, 2, lambda: train(part_cfg))
    resumed = train(part_cfg)
    a, b = _weights(full / "model"), _weights(resumed / "model")
    assert set(a) == set(b) and len(a) > 10
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)


def test_eval_and_index_search_with_maxsim_through_the_cli(tmp_path: Path, tiny_encoder: Path) -> None:
    torch.manual_seed(0)
    folder = tmp_path / "colbert"
    load_colbert(str(tiny_encoder), dim=16, query_length=16, document_length=64).save(str(folder))
    common = [
        f"model.name={folder}",
        "model.kind=colbert",
        "model.max_query_length=16",
        "model.max_passage_length=64",
        "eval.methods=[dense,hybrid]",
        "eval.depth=20",
        "eval.ks=[1,5,10]",
    ]
    assert _tiny_cli("retriever", "eval", *common, f"output_dir={tmp_path / 'ev'}") == 0
    run = read_run(tmp_path / "ev" / "run_dense.trec")
    data = load_beir(DEMO, "test")
    queries = data.split_queries()
    model = load_colbert(str(folder), query_length=16, document_length=64)
    pids = list(data.corpus)
    dvec = _tokens(model, [p.full_text() for p in data.corpus.values()], "document")
    for qid in list(queries)[:5]:  # the run's top 5 are the brute-force MaxSim top 5
        qv = _tokens(model, [queries[qid].text], "query")[0]
        brute = sorted(
            ((pid, _brute_maxsim(qv, d)) for pid, d in zip(pids, dvec, strict=True)), key=lambda x: -x[1]
        )
        got = sorted(run[qid].items(), key=lambda x: -x[1])[:5]
        assert [s for _, s in got] == pytest.approx([s for _, s in brute[:5]], abs=1e-4)
    metrics = json.loads((tmp_path / "ev" / "metrics_dense.json").read_text())
    assert metrics["metrics"]["nDCG@10"] == pytest.approx(
        evaluate_run(run, data.qrels, ks=(1, 5, 10)).metrics["nDCG@10"]
    )

    # `retriever mine` with mining.method=dense mines by MaxSim: the top-ranked non-positives
    mined = tmp_path / "mined.jsonl"
    mine = ("mining.method=dense", "mining.num_negatives=3", "mining.fn_ratio=null", f"mining.out={mined}")
    assert _tiny_cli("retriever", "mine", *common, *mine) == 0
    train = load_beir(DEMO, "train")
    rows = [json.loads(x) for x in mined.read_text().splitlines()]
    assert rows
    for row in rows[:4]:
        qv = _tokens(model, [train.queries[row["query_id"]].text], "query")[0]
        brute = sorted(
            ((pid, _brute_maxsim(qv, d)) for pid, d in zip(pids, dvec, strict=True)), key=lambda x: -x[1]
        )
        positives = {p for p, g in train.qrels[row["query_id"]].items() if g >= 1}
        expected = [(pid, s) for pid, s in brute if pid not in positives][:3]
        negs = row["negatives"]
        assert [n["id"] for n in negs] == [pid for pid, _ in expected]
        assert [n["score"] for n in negs] == pytest.approx([s for _, s in expected], abs=1e-4)
        assert all(n["source"] == "dense" for n in negs)

    # index build + index search: the same ranking as eval's.
    out = tmp_path / "ix"
    assert _tiny_cli("index", "build", *common, f"output_dir={out}") == 0
    assert json.loads((out / "index" / "encoder.json").read_text())["kind"] == "colbert"
    trec = tmp_path / "search.trec"
    assert (
        main(
            [
                "index",
                "search",
                "--index",
                str(out / "index"),
                "--queries",
                str(DEMO / "queries.jsonl"),
                "--out",
                str(trec),
                "--k",
                "20",
            ]
        )
        == 0
    )
    searched = read_run(trec)
    for qid in queries:
        a = sorted(searched[qid].items(), key=lambda x: -x[1])[:5]
        b = sorted(run[qid].items(), key=lambda x: -x[1])[:5]
        assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=2e-3)  # float16 index


def test_colbert_errors_are_clear(tmp_path: Path, tiny_encoder: Path, capsys) -> None:
    from ragtune.retriever.colbert import load_trained_colbert

    with pytest.raises(UserError, match="not a trained late-interaction model"):
        load_trained_colbert(_cfg(tmp_path, tiny_encoder))
    with pytest.raises(ValueError, match=r"train\.cached"):
        _cfg(tmp_path, tiny_encoder, "train.cached=true")
    assert (
        _tiny_cli(
            "retriever",
            "eval",
            f"model.name={tiny_encoder}",
            "model.kind=colbert",
            "eval.methods=[dense]",
            f"output_dir={tmp_path / 'e'}",
        )
        == 2
    )
    assert "retriever train model.kind=colbert" in capsys.readouterr().err


@pytest.mark.parametrize("loss", ["margin_mse", "kl"])
def test_distillation_losses_over_maxsim_equal_a_brute_force_computation(
    loss: str, tmp_path: Path, tiny_encoder: Path
) -> None:
    import torch.nn.functional as F

    from ragtune.data.schema import Passage, Query
    from ragtune.retriever.train import Example, load_for_training, step_loss

    texts = {
        "p0": "a bond is a loan to a company",
        "p1": "a stock is a share of a company",
        "n0a": "income tax rates rise",
        "n0b": "the loan was repaid early",
        "n1a": "shares fell on monday",
    }
    batch = [
        Example(
            Query("a", "what is a bond"),
            Passage("p0", texts["p0"]),
            (Passage("n0a", texts["n0a"]), Passage("n0b", texts["n0b"])),
            frozenset({"p0"}),
            (3.0, 1.0, -2.0),
        ),
        Example(
            Query("b", "what is a stock"),
            Passage("p1", texts["p1"]),
            (Passage("n1a", texts["n1a"]),),
            frozenset({"p1"}),
            (0.5, 2.0),
        ),
    ]
    cfg = _cfg(
        tmp_path, tiny_encoder, f"train.loss={loss}", "train.in_batch_weight=0", "train.temperature=0.5"
    )
    torch.manual_seed(0)
    model = load_for_training(cfg)
    model.eval()
    got = step_loss(model, cfg, batch)

    q = _tokens(model, ["what is a bond", "what is a stock"], "query")
    d = dict(zip(texts, _tokens(model, list(texts.values()), "document"), strict=True))
    groups = [
        (torch.tensor([_brute_maxsim(q[0], d[x]) for x in ("p0", "n0a", "n0b")]) / 0.5, torch.tensor([3.0, 1.0, -2.0])),
        (torch.tensor([_brute_maxsim(q[1], d[x]) for x in ("p1", "n1a")]) / 0.5, torch.tensor([0.5, 2.0])),
    ]  # fmt: skip
    if loss == "margin_mse":  # (student margin - teacher margin)^2 over every (positive, negative)
        terms = [((s[0] - s[j]) - (t[0] - t[j])) ** 2 for s, t in groups for j in range(1, len(s))]
        want = sum(terms) / len(terms)
    else:  # KL(teacher softmax || student softmax) per group, mean over groups
        want = sum(
            F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="sum")
            for s, t in groups
        ) / len(groups)
    assert got == pytest.approx(float(want), rel=1e-4)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_colbert_trains_on_teacher_scores(tmp_path: Path, tiny_encoder: Path) -> None:
    from ragtune.reranker.model import load_cross_encoder

    base = ["--config", "configs/tiny/retriever.yaml", f"data.beir_dir={DEMO}"]
    mined, scored, teacher = tmp_path / "mined.jsonl", tmp_path / "scored.jsonl", tmp_path / "teacher"
    assert main(["retriever", "mine", *base, "mining.num_negatives=3", f"mining.out={mined}"]) == 0
    torch.manual_seed(0)
    load_cross_encoder(str(tiny_encoder)).save(str(teacher))
    args = [*base, f"data.triplets={mined}", f"distill.teacher={teacher}", f"distill.out={scored}"]
    assert main(["retriever", "score-triplets", *args, "precision=fp32"]) == 0
    from ragtune.retriever.train import train

    for loss in ("margin_mse", "kl"):
        extra = (f"data.triplets={scored}", f"train.loss={loss}", "train.hard_negatives=3", "train.epochs=3")
        out = train(_cfg(tmp_path / loss, tiny_encoder, *extra))
        hist = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
        losses = [h["loss"] for h in hist]
        assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3])
        assert (out / "model").is_dir()
