"""The cross-encoder reranker: losses against hand-computed values, classification metrics against
scikit-learn, reranked run order, training (loss falls, resume, threshold), a folder that loads with
sentence-transformers alone, the CLI and `retriever eval`'s rerank method."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ragtune.cli import main
from ragtune.config import load_config
from ragtune.data.io import DataError, load_triplets, read_jsonl, read_run, write_jsonl, write_run
from ragtune.data.schema import Passage, Query
from ragtune.eval.classification import best_f1_threshold, classification_metrics
from ragtune.reranker.config import RerankerConfig
from ragtune.reranker.rerank import mix_first_stage, rerank_run
from ragtune.retriever.losses import listwise_ce_loss, listwise_kl_loss, margin_mse_loss, pointwise_bce_loss
from tests.conftest import DEMO, killed_after_checkpoints

# ------------------------------------------------------------------------------------------ losses


def test_group_losses_equal_hand_computed_values() -> None:
    s = torch.tensor([[2.0, 0.5, -1.0], [1.0, 3.0, 0.0]])
    valid = torch.tensor([[True, True, True], [True, True, False]])  # second group: 1 negative
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    bce_terms = [-math.log(sig(2.0)), -math.log(1 - sig(0.5)), -math.log(1 - sig(-1.0))]
    bce_terms += [-math.log(sig(1.0)), -math.log(1 - sig(3.0))]
    assert pointwise_bce_loss(s, valid).item() == pytest.approx(sum(bce_terms) / 5, rel=1e-6)
    ce1 = -2.0 + math.log(math.exp(2.0) + math.exp(0.5) + math.exp(-1.0))
    ce2 = -1.0 + math.log(math.exp(1.0) + math.exp(3.0))
    assert listwise_ce_loss(s, valid).item() == pytest.approx((ce1 + ce2) / 2, rel=1e-6)
    t = torch.tensor([[5.0, 1.0, 4.0], [2.0, 2.5, 9.0]])
    # margins: student (1.5, 3.0 | -2.0), teacher (4.0, 1.0 | -0.5); padded column ignored
    mse = ((1.5 - 4.0) ** 2 + (3.0 - 1.0) ** 2 + (-2.0 + 0.5) ** 2) / 3
    assert margin_mse_loss(s, t, valid).item() == pytest.approx(mse, rel=1e-6)

    def kl(student, teacher):
        ps = np.exp(student) / np.exp(student).sum()
        pt = np.exp(teacher) / np.exp(teacher).sum()
        return float((pt * np.log(pt / ps)).sum())

    expected = (
        kl(np.array([2.0, 0.5, -1.0]), np.array([5.0, 1.0, 4.0]) / 2)
        + kl(np.array([1.0, 3.0]), np.array([2.0, 2.5]) / 2)
    ) / 2
    assert listwise_kl_loss(s, t, valid, teacher_temperature=2.0).item() == pytest.approx(expected, rel=1e-5)
    assert listwise_kl_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)  # same distribution: no loss


# -------------------------------------------------------------------------------- classification


def test_classification_metrics_equal_scikit_learn() -> None:
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    labels = (rng.random(300) < 0.2).astype(int)
    scores = np.clip(labels * 0.3 + rng.random(300) * 0.7, 0, 1)
    for threshold in (0.2, 0.5, 0.75, 1.5):
        ours = classification_metrics(labels.tolist(), scores.tolist(), threshold)
        pred = (scores >= threshold).astype(int)
        p, r, f, _ = precision_recall_fscore_support(labels, pred, average="binary", zero_division=0)
        assert ours["Accuracy"] == pytest.approx(accuracy_score(labels, pred))
        assert (ours["Precision"], ours["Recall"], ours["F1"]) == pytest.approx((p, r, f))
    best = best_f1_threshold(labels.tolist(), scores.tolist())
    f1_at = lambda t: classification_metrics(labels.tolist(), scores.tolist(), t)["F1"]  # noqa: E731
    assert f1_at(best) == pytest.approx(max(f1_at(t) for t in set(scores.tolist())))
    assert best_f1_threshold([0, 0], [0.1, 0.9]) == 0.5
    with pytest.raises(ValueError, match="2 labels but 1 scores"):
        classification_metrics([0, 1], [0.5], 0.5)


# ------------------------------------------------------------------------------------------ rerank


class _LengthModel:
    """A stand-in cross-encoder whose logit is the passage's length (so the order is known)."""

    device = torch.device("cpu")

    def parameters(self):
        yield torch.zeros(1)

    def predict(self, pairs, **kwargs):
        return np.array([float(len(p)) for _, p in pairs])


def test_rerank_orders_the_top_n_and_keeps_the_rest_below() -> None:
    corpus = {f"d{i}": Passage(f"d{i}", "x" * (10 + i)) for i in range(6)}
    queries = {"q": Query("q", "question")}
    run = {"q": {"d0": 6.0, "d5": 5.0, "d2": 4.0, "d4": 3.0, "d1": 2.0}}
    out = rerank_run(_LengthModel(), run, queries, corpus, top_n=3, show_progress=False)["q"]
    order = sorted(out, key=lambda d: -out[d])
    assert order == ["d5", "d2", "d0", "d4", "d1"]  # top 3 by length, then the run's own order
    assert out["d5"] == 15.0 and out["d4"] < out["d0"]
    with pytest.raises(DataError, match="passage 'nope'"):
        rerank_run(_LengthModel(), {"q": {"nope": 1.0}}, queries, corpus, top_n=3, show_progress=False)
    with pytest.raises(DataError, match="query 'q2'"):
        rerank_run(_LengthModel(), {"q2": {"d1": 1.0}}, queries, corpus, top_n=3, show_progress=False)


def test_first_stage_weight_mixes_normalised_scores_by_hand() -> None:
    first = {"q": {"a": 10.0, "b": 8.0, "c": 4.0, "d": 1.0}}
    logits = {"q": {"c": 3.0, "b": 1.0, "a": -1.0, "d": -9.0}}  # a reranked top 3 and its tail
    out = mix_first_stage(first, logits, 3, 0.25)["q"]
    # over the top 3: first (10, 8, 4) -> (1, 2/3, 0); logits (-1, 1, 3) -> (0, 1/2, 1)
    assert out["a"] == pytest.approx(0.25 * 1.0 + 0.75 * 0.0)
    assert out["b"] == pytest.approx(0.25 * 2 / 3 + 0.75 * 0.5)
    assert out["c"] == pytest.approx(0.25 * 0.0 + 0.75 * 1.0)
    assert sorted(out, key=lambda d: -out[d]) == ["c", "b", "a", "d"] and out["d"] < out["a"]
    assert mix_first_stage(first, logits, 3, 0.0) == logits
    full = mix_first_stage(first, logits, 3, 1.0)["q"]
    assert sorted(full, key=lambda d: -full[d]) == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mix_first_stage(first, logits, 3, 1.5)


# ------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def demo_triplets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BM25-mined demo triplets (4 negatives each), with a teacher score on every passage."""
    folder = tmp_path_factory.mktemp("rr-triplets")
    out = folder / "triplets.jsonl"
    assert (
        main(
            [
                *["retriever", "mine", "--config", "configs/tiny/retriever.yaml"],
                *[
                    f"data.beir_dir={DEMO}",
                    "data.train_split=train",
                    "mining.num_negatives=4",
                    f"mining.out={out}",
                ],
            ]
        )
        == 0
    )
    rows = [obj for _, obj in read_jsonl(out)]
    for row in rows:  # a made-up teacher: the positive high, negatives by their mined rank
        for p in row["positives"]:
            p["teacher"] = 5.0
        for n in row["negatives"]:
            n["teacher"] = -float(n["rank"])
    write_jsonl(folder / "teacher.jsonl", rows)
    write_jsonl(folder / "small.jsonl", [obj for _, obj in read_jsonl(out)][:20])  # 16 train + 4 validation
    return out


def _cfg(tmp_path: Path, encoder: Path, triplets: Path, *extra: str) -> RerankerConfig:
    return load_config(
        None,
        [
            f"model.name={encoder}",
            "model.max_length=64",
            f"data.beir_dir={DEMO}",
            f"data.triplets={triplets}",
            f"output_dir={tmp_path}",
            "train.negatives=4",
            "train.batch_size=16",
            "train.mini_batch_size=8",
            "train.lr=1e-3",
            "train.save_every=4",
            "precision=fp32",
            *extra,
        ],
        RerankerConfig,
    )


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_training_lowers_the_loss_resumes_and_loads_without_ragtune(
    tmp_path: Path, tiny_encoder: Path, demo_triplets: Path
) -> None:
    from ragtune.reranker.model import load_cross_encoder, score_pairs
    from ragtune.reranker.train import train

    small = demo_triplets.with_name("small.jsonl")
    extra = ("train.epochs=16", "data.val_fraction=0.2", "train.lr=3e-3")  # one 16-group batch per epoch
    full = train(_cfg(tmp_path / "full", tiny_encoder, small, *extra))
    hist = [json.loads(x) for x in (full / "history.jsonl").read_text().splitlines()]
    assert len(hist) == 16 and all("val" in h for h in hist)  # validated after every epoch
    assert np.mean([h["loss"] for h in hist[-3:]]) < 0.85 * np.mean([h["loss"] for h in hist[:3]])
    summary = json.loads((full / "train_summary.json").read_text())
    assert summary["best"]["nDCG@10"] == pytest.approx(max(h["val"]["nDCG@10"] for h in hist))
    info = json.loads((full / "model" / "threshold.json").read_text())
    assert 0 < info["threshold"] < 1 and info["val"]["pairs"] == 4 * 5 and "F1" in info["val"]

    # The folder loads with sentence-transformers alone and gives ragtune's scores (as sigmoids).
    pairs = [("what is a bond", "a bond is a loan to a company"), ("tax", "income tax rates")]
    code = (
        "import json, sys; from sentence_transformers import CrossEncoder; "
        f"m = CrossEncoder({str(full / 'model')!r}, device='cpu'); "
        f"print(json.dumps([float(x) for x in m.predict({pairs!r})]))"
    )
    env_probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    theirs = json.loads(env_probe.stdout.strip().splitlines()[-1])
    ours = score_pairs(load_cross_encoder(str(full / "model")), pairs, precision="fp32", show_progress=False)
    assert theirs == pytest.approx(list(1 / (1 + np.exp(-ours))), abs=1e-5)

    part_cfg = _cfg(tmp_path / "part", tiny_encoder, small, *extra)
    import ragtune.reranker.train as rt

    killed_after_checkpoints(rt, 2, lambda: train(part_cfg))  # killed after the step-8 checkpoint
    resumed = train(part_cfg)
    a, b = _weights(full / "model"), _weights(resumed / "model")
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)


def test_margin_mse_needs_teacher_scores(tmp_path: Path, tiny_encoder: Path, demo_triplets: Path) -> None:
    from ragtune.reranker.train import train

    with pytest.raises(DataError, match=r"triplets\.jsonl:1: field 'teacher'.*score-triplets"):
        train(_cfg(tmp_path / "a", tiny_encoder, demo_triplets, "train.loss=margin_mse"))
    teacher = demo_triplets.with_name("teacher.jsonl")
    for t in load_triplets(teacher):
        ids = {p.id for p in t.positives} | {n.passage.id for n in t.negatives}
        assert t.teacher is not None and set(t.teacher) == ids
    out = train(_cfg(tmp_path / "b", tiny_encoder, teacher, "train.loss=margin_mse", "train.epochs=2"))
    hist = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert hist[-1]["loss"] < hist[0]["loss"]


def test_cli_rerank_and_retriever_eval_rerank(
    tmp_path: Path, tiny_encoder: Path, demo_triplets: Path
) -> None:
    from ragtune.reranker.train import train

    model = train(_cfg(tmp_path / "rr", tiny_encoder, demo_triplets, "train.max_steps=2")) / "model"
    out = tmp_path / "eval"
    assert (
        main(
            [
                *["retriever", "eval", "--config", "configs/tiny/retriever.yaml"],
                *[f"output_dir={out}", "eval.methods=[bm25,rerank]", f"eval.reranker={model}"],
                *["eval.rerank_candidates=bm25", "eval.rerank_top_n=5"],
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    c = summary["classification"]["rerank"]
    assert c["threshold_source"] == "F1 of the validation pairs" and c["pairs"] == 54 * 5
    bm25, rr = read_run(out / "run_bm25.trec"), read_run(out / "run_rerank.trec")
    for q in bm25:  # the same top 5 per query, possibly reordered; the rest below in BM25 order
        a, b = (sorted(r[q], key=r[q].__getitem__, reverse=True) for r in (bm25, rr))
        assert set(a[:5]) == set(b[:5]) and a[5:] == b[5:]
    # reranker rerank: a run file in, a reranked run file out, identical to eval's rerank
    reranked = tmp_path / "rr.trec"
    assert (
        main(
            [
                *["reranker", "rerank", "--config", "configs/reranker/demo.yaml", "--model", str(model)],
                *[
                    "--run",
                    str(out / "run_bm25.trec"),
                    "--out",
                    str(reranked),
                    "rerank.top_n=5",
                    "precision=fp32",
                ],
            ]
        )
        == 0
    )
    again = read_run(reranked)
    for q in rr:
        assert sorted(again[q], key=lambda d: -again[q][d]) == sorted(rr[q], key=lambda d: -rr[q][d])
    assert json.loads(Path(str(reranked) + ".json").read_text())["pairs"] == 54 * 5
    # a first-stage weight: eval's rerank run and `reranker rerank`'s both equal mixing by hand
    mixed = tmp_path / "mixed"
    assert (
        main(
            [
                *["retriever", "eval", "--config", "configs/tiny/retriever.yaml"],
                *[f"output_dir={mixed}", "eval.methods=[bm25,rerank]", f"eval.reranker={model}"],
                *["eval.rerank_candidates=bm25", "eval.rerank_top_n=5", "eval.rerank_first_stage_weight=0.5"],
            ]
        )
        == 0
    )
    expected = mix_first_stage(bm25, rr, 5, 0.5)
    got = read_run(mixed / "run_rerank.trec")
    for q in expected:
        assert sorted(got[q], key=lambda d: -got[q][d]) == sorted(expected[q], key=lambda d: -expected[q][d])
    assert any(  # the weight changed an order: a rerank that ignored it would fail above
        sorted(expected[q], key=lambda d: -expected[q][d]) != sorted(rr[q], key=lambda d: -rr[q][d])
        for q in expected
    )
    cli_mixed = tmp_path / "mixed.trec"
    args = ["--run", str(out / "run_bm25.trec"), "--out", str(cli_mixed), "rerank.top_n=5", "precision=fp32"]
    assert (
        main(
            [
                *["reranker", "rerank", "--config", "configs/reranker/demo.yaml", "--model", str(model)],
                *args,
                "rerank.first_stage_weight=0.5",
            ]
        )
        == 0
    )
    again = read_run(cli_mixed)
    for q in expected:
        assert sorted(again[q], key=lambda d: -again[q][d]) == sorted(
            expected[q], key=lambda d: -expected[q][d]
        )


def test_bad_input_is_a_clear_error(tmp_path: Path, capsys, demo_triplets: Path) -> None:
    bad = tmp_path / "run.trec"
    write_run(bad, {"q-unknown": {"d1": 1.0}})
    assert (
        main(
            [
                "reranker",
                "rerank",
                "--config",
                "configs/reranker/demo.yaml",
                "--run",
                str(bad),
                "--out",
                str(tmp_path / "o.trec"),
            ]
        )
        == 2
    )
    assert "q-unknown" in capsys.readouterr().err and not (tmp_path / "o.trec").exists()
    assert main(["reranker", "train", "--config", "configs/reranker/demo.yaml", "train.loss=hinge"]) == 2
    assert "train.loss" in capsys.readouterr().err
    assert main(["reranker", "train", "data.triplets=null", f"output_dir={tmp_path / 'x'}"]) == 2
    assert "needs data.triplets" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"set eval\.reranker"):
        from ragtune.retriever.config import EvalConfig

        EvalConfig(methods=["rerank"])
    rows = [obj for _, obj in read_jsonl(demo_triplets)]
    rows[1]["negatives"][0]["teacher"] = "high"
    write_jsonl(tmp_path / "t.jsonl", rows)
    with pytest.raises(DataError, match=r"t\.jsonl:2: field 'negatives\[0\]\.teacher'"):
        load_triplets(tmp_path / "t.jsonl")
