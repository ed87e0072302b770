"""The joint-tuning loop on tiny random models: rounds, report, resume after a kill, refresh."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from ragtune.config import load_config
from ragtune.e2e.config import E2EConfig
from tests.conftest import DEMO, killed_after_checkpoints, tiny_llama


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama whose vocabulary covers the demo data, saved as a transformers folder."""
    from ragtune.data.io import load_corpus, load_qa
    from ragtune.retriever.bm25 import tokenize

    words = set()
    for p in load_corpus(DEMO / "corpus.jsonl").values():
        words.update(tokenize(p.full_text()))
    for e in load_qa(DEMO / "qa.jsonl"):
        words.update(tokenize(e.question + " " + e.answer))
    words |= {"Passages", "Question", "You", "system", "user", "assistant", "[", "]", ":", "?", ".", ","}
    model, tok = tiny_llama(" ".join(sorted(words)))
    folder = tmp_path_factory.mktemp("tiny-lm")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def tiny_config(out: Path, encoder: Path, lm: Path, *extra: str) -> E2EConfig:
    return load_config(
        None,
        [
            f"data.corpus={DEMO}",
            f"data.train={DEMO / 'qa_train.jsonl'}",
            f"data.eval={DEMO / 'qa_test.jsonl'}",
            "data.max_train=24",
            "data.max_eval=12",
            "rounds=2",
            "top_k=3",
            f"retriever.model={encoder}",
            "retriever.lr=1e-3",
            "retriever.batch_size=8",
            f"generator.model.name={lm}",
            "generator.model.max_length=256",
            "generator.peft.r=4",
            "generator.peft.alpha=8",
            "generator.batch_size=8",
            "generator.lr=5e-3",
            "generator.generate.max_new_tokens=6",
            "precision=fp32",
            f"output_dir={out}",
            *extra,
        ],
        E2EConfig,
    )


def final_metrics(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())["final"]


def test_rounds_report_and_artifacts(tmp_path: Path, tiny_encoder: Path, tiny_lm: Path) -> None:
    from ragtune.e2e.train import train

    out = train(tiny_config(tmp_path / "run", tiny_encoder, tiny_lm))
    report = json.loads((out / "report.json").read_text())
    rounds = report["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert list(rounds[1]["stages"]) == ["retrieve", "generator", "retriever", "refresh", "eval"]
    for r in rounds:
        m = r["metrics"]
        for key in ("Recall@5", "MRR@10", "nDCG@10", "ROUGE-L", "EM", "F1", "faithfulness"):
            assert 0.0 <= m[key] <= 1.0
        assert sum(r["errors"][k] for k in ("correct", "gold_not_retrieved", "retrieved_but_wrong")) == 12
    # the generator learns: its loss falls within a round and from round 1 to round 2
    g1, g2 = rounds[1]["stages"]["generator"], rounds[2]["stages"]["generator"]
    assert g2["loss_mean"] < g1["loss_first"]
    # query-only mode: the index stays at version 0 and is never refreshed
    assert rounds[2]["index_version"] == 0
    assert rounds[1]["stages"]["refresh"]["refreshed"] is False
    # per-question predictions, the error outcome of each
    lines = (out / "rounds" / "round_2" / "predictions.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    assert len(rows) == 12
    outcomes = {r["outcome"] for r in rows}
    assert outcomes <= {"correct", "gold_not_retrieved", "retrieved_but_wrong"}
    for row in rows:
        assert row["outcome"] != "gold_not_retrieved" or not row["gold_retrieved"]
    # the report and its plots; standard artifacts load without ragtune
    md = (out / "report.md").read_text()
    assert "| round 2 |" in md and "gold_not_retrieved" in md
    assert (out / "plots" / "retrieval.png").read_bytes()[:4] == b"\x89PNG"
    from peft import PeftModel
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lm), str(out / "adapter"))
    assert SentenceTransformer(str(out / "query_encoder")).encode(["x"]).shape[0] == 1
    assert json.loads((out / "index" / "index.json").read_text())["version"] == 0


def test_resume_after_kill_equals_unbroken_run(tmp_path: Path, tiny_encoder: Path, tiny_lm: Path) -> None:
    from ragtune.e2e import train as e2e_train

    whole = e2e_train.train(tiny_config(tmp_path / "whole", tiny_encoder, tiny_lm, "rounds=1"))
    # killed after stage 3 of 6 (round 0 eval, retrieve, generator), then run again
    cfg = tiny_config(tmp_path / "broken", tiny_encoder, tiny_lm, "rounds=1")
    killed_after_checkpoints(e2e_train, 3, lambda: e2e_train.train(cfg))
    state = json.loads((tmp_path / "broken" / "checkpoint" / "state.json").read_text())
    assert state["done"] == [1, "generator"]
    resumed = e2e_train.train(cfg)
    assert final_metrics(resumed) == final_metrics(whole)
    a = json.loads((whole / "report.json").read_text())["rounds"][1]["stages"]["retriever"]
    b = json.loads((resumed / "report.json").read_text())["rounds"][1]["stages"]["retriever"]
    assert a["loss_last"] == b["loss_last"]


def test_both_encoders_refresh_the_index(tmp_path: Path, tiny_encoder: Path, tiny_lm: Path) -> None:
    from ragtune.e2e.train import train

    out = train(
        tiny_config(
            tmp_path / "both",
            tiny_encoder,
            tiny_lm,
            "rounds=2",
            "retriever.mode=both",
            "refresh.every=2",
            "refresh.min_cosine=null",
            "generator.enabled=false",
        )
    )
    rounds = json.loads((out / "report.json").read_text())["rounds"]
    r1, r2 = rounds[1]["stages"]["refresh"], rounds[2]["stages"]["refresh"]
    # round 1: not due on the schedule and no threshold set; round 2: the schedule
    assert r1["refreshed"] is False and r2["refreshed"] is True and r2["reason"] == "schedule"
    assert r1["probe_mean_cosine"] < 1.0  # the encoder moved
    assert (rounds[1]["index_version"], rounds[2]["index_version"]) == (0, 1)
    assert json.loads((out / "index" / "index.json").read_text())["version"] == 1
    # a drift threshold above the measured cosine forces a refresh in round 1
    out2 = train(
        tiny_config(
            tmp_path / "drift",
            tiny_encoder,
            tiny_lm,
            "rounds=1",
            "retriever.mode=both",
            "refresh.every=0",
            "refresh.min_cosine=1.0",
            "generator.enabled=false",
        )
    )
    r = json.loads((out2 / "report.json").read_text())["rounds"][1]["stages"]["refresh"]
    assert (r["refreshed"], r["reason"], r["index_version"]) == (True, "drift", 1)


def test_report_rerender_and_compare_through_the_cli(
    tmp_path: Path, tiny_encoder: Path, tiny_lm: Path
) -> None:
    from ragtune.cli import main
    from ragtune.e2e.train import train

    a = train(tiny_config(tmp_path / "a", tiny_encoder, tiny_lm, "rounds=1"))
    b = train(tiny_config(tmp_path / "b", tiny_encoder, tiny_lm, "rounds=1", "retriever.enabled=false"))
    (a / "report.md").unlink()
    shutil.rmtree(a / "plots")
    assert main(["report", str(a)]) == 0
    assert "| round 1 |" in (a / "report.md").read_text()
    assert (a / "plots" / "answers.png").exists()
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    text = (tmp_path / "cmp" / "compare.md").read_text()
    fa = json.loads((a / "report.json").read_text())["final"]
    fb = json.loads((b / "report.json").read_text())["final"]
    delta_row = next(line for line in text.splitlines() if line.startswith("| B - A |"))
    assert f"{fb['nDCG@10'] - fa['nDCG@10']:.4f}" in delta_row
    # the retriever did not move in b: its retrieval equals round 0 of a
    r0 = json.loads((a / "report.json").read_text())["rounds"][0]["metrics"]
    assert fb["nDCG@10"] == pytest.approx(r0["nDCG@10"])
    assert main(["report", str(tmp_path / "nothing")]) == 2
    # the paired test over the questions: its mean difference is the difference of the means
    paired = json.loads((tmp_path / "cmp" / "compare.json").read_text())["paired"]
    for metric in ("ROUGE-L", "F1", "nDCG@10", "Recall@3", "faithfulness"):
        t = paired[metric]
        assert t["n"] == len((a / "rounds" / "round_1" / "predictions.jsonl").read_text().splitlines())
        assert t["delta"] == pytest.approx(fb[metric] - fa[metric], abs=1e-9)
        assert t["ci95"][0] <= t["delta"] <= t["ci95"][1] and 0 <= t["p_value"] <= 1
    assert "| ROUGE-L |" in text and "randomisation-test p-value" in text


def test_bad_input_is_a_clear_error(tmp_path: Path, tiny_encoder: Path, tiny_lm: Path) -> None:
    from ragtune.e2e.train import train

    with pytest.raises(ValueError, match=r"data\.train and data\.eval"):
        train(tiny_config(tmp_path / "x", tiny_encoder, tiny_lm, "data.eval=null"))
    bad = tmp_path / "qa.jsonl"
    bad.write_text('{"id": "z1", "question": "Where?", "answer": "here"}\n')
    with pytest.raises(ValueError, match=r"qa.jsonl: example 'z1' names no gold passage"):
        train(tiny_config(tmp_path / "y", tiny_encoder, tiny_lm, f"data.eval={bad}"))
    with pytest.raises(Exception, match=r"retriever\.query_model needs mode=query"):
        tiny_config(
            tmp_path / "z",
            tiny_encoder,
            tiny_lm,
            "retriever.mode=both",
            f"retriever.query_model={tiny_encoder}",
        )


def test_lsr_without_the_false_negative_check(tmp_path: Path, tiny_encoder: Path, tiny_lm: Path) -> None:
    from ragtune.e2e.train import train

    on = train(tiny_config(tmp_path / "on", tiny_encoder, tiny_lm, "rounds=1", "false_negatives.ratio=0.01"))
    off = train(
        tiny_config(tmp_path / "off", tiny_encoder, tiny_lm, "rounds=1", "false_negatives.enabled=false")
    )
    stage_on = json.loads((on / "report.json").read_text())["rounds"][1]["stages"]["retriever"]
    stage_off = json.loads((off / "report.json").read_text())["rounds"][1]["stages"]["retriever"]
    # with the check off nothing is flagged
    assert stage_off["false_negatives_total"] == 0
    # the LSR update is the same whether or not the extra passages were scored
    assert stage_on["loss_first"] == pytest.approx(stage_off["loss_first"], rel=1e-5)
    assert stage_off["steps"] == stage_on["steps"] > 0


def test_hybrid_candidates_fuse_bm25_with_the_dense_retriever(
    tmp_path: Path, tiny_encoder: Path, tiny_lm: Path
) -> None:
    from ragtune.e2e.stages import SEARCH_EXTRA
    from ragtune.e2e.state import Data, Retriever
    from ragtune.e2e.train import train
    from ragtune.retriever.bm25 import BM25, reciprocal_rank_fusion

    cfg = tiny_config(
        tmp_path / "run", tiny_encoder, tiny_lm, "rounds=1", "retriever.candidates=hybrid", "eval.rounds=last"
    )
    out = train(cfg)
    hits = json.loads((out / "checkpoint" / "state.json").read_text())["hits"]  # round 1's retrieve stage
    data = Data(cfg)
    retriever = Retriever(cfg, data)  # the encoder as round 1's retrieve stage saw it
    depth = cfg.top_k + SEARCH_EXTRA
    questions = [e.question for e in data.train]
    lexical = BM25(data.ids, [p.full_text() for p in data.corpus.values()]).search(questions, depth)
    dense = retriever.search(questions, depth)
    for e, b, d in zip(data.train, lexical, dense, strict=True):
        expected = [
            pid for pid, _ in reciprocal_rank_fusion([[x for x, _ in b], [x for x, _ in d]], depth=depth)
        ]
        assert hits[e.id] == expected
    assert any(hits[e.id] != [x for x, _ in d] for e, d in zip(data.train, dense, strict=True))


@pytest.mark.parametrize("method", ["bm25", "hybrid", "weighted"])
def test_eval_passages_come_from_the_configured_retrieval(
    tmp_path: Path, tiny_encoder: Path, tiny_lm: Path, method: str
) -> None:
    from ragtune.e2e.state import Data, Retriever
    from ragtune.e2e.train import train
    from ragtune.eval.ir import evaluate_run
    from ragtune.retriever.bm25 import BM25, reciprocal_rank_fusion, weighted_fusion

    # weighted: eval.passages=hybrid with retriever.fusion=weighted, fused over both top-100 lists
    fusion = ["eval.passages=hybrid", "retriever.fusion=weighted", "retriever.dense_weight=0.3"]
    extra = fusion if method == "weighted" else [f"eval.passages={method}"]
    cfg = tiny_config(tmp_path / "run", tiny_encoder, tiny_lm, "rounds=0", *extra)
    out = train(cfg)
    rows = [
        json.loads(x) for x in (out / "rounds" / "round_0" / "predictions.jsonl").read_text().splitlines()
    ]
    data = Data(cfg)
    questions = [e.question for e in data.eval]
    depth = max([*cfg.eval.ks, cfg.top_k])
    pool = max(depth, 100) if method == "weighted" else depth
    lexical = BM25(data.ids, [p.full_text() for p in data.corpus.values()]).search(questions, pool)
    dense = Retriever(cfg, data).search(questions, pool)
    if method == "weighted":
        expected = [
            weighted_fusion([dict(b), dict(d)], [0.7, 0.3], depth=depth)
            for b, d in zip(lexical, dense, strict=True)
        ]
        assert expected != [
            reciprocal_rank_fusion([[x for x, _ in b[:depth]], [x for x, _ in d[:depth]]], depth=depth)
            for b, d in zip(lexical, dense, strict=True)
        ]
    elif method == "hybrid":
        expected = [
            reciprocal_rank_fusion([[x for x, _ in b], [x for x, _ in d]], depth=depth)
            for b, d in zip(lexical, dense, strict=True)
        ]
    else:
        expected = lexical
    top = [[pid for pid, _ in h[: cfg.top_k]] for h in expected]
    assert [[c["id"] for c in row["contexts"]] for row in rows] == top
    assert top != [[pid for pid, _ in h[: cfg.top_k]] for h in dense]  # not what dense retrieval shows
    qrels = {e.id: {pid: 1 for pid in data.gold_ids(e)} for e in data.eval}
    reference = evaluate_run(
        {e.id: dict(h) for e, h in zip(data.eval, expected, strict=True)}, qrels, ks=cfg.eval.ks
    )
    final = json.loads((out / "report.json").read_text())["final"]
    for metric in ("Recall@3", "MRR@10", "nDCG@10"):
        assert final[metric] == pytest.approx(reference.metrics[metric])


def test_a_reranker_orders_the_eval_passages_and_metrics(
    tmp_path: Path, tiny_encoder: Path, tiny_lm: Path, tiny_cross_encoder: Path
) -> None:
    """retriever.reranker: the top rerank_top_n of eval.passages are rescored by the cross-encoder; the
    generator sees its top_k and the retrieval metrics score its order."""
    import numpy as np

    from ragtune.e2e.state import Data
    from ragtune.e2e.train import train
    from ragtune.eval.ir import evaluate_run
    from ragtune.reranker.model import load_cross_encoder, score_pairs
    from ragtune.retriever.bm25 import BM25

    extra = (
        "rounds=0",
        "eval.passages=bm25",
        f"retriever.reranker={tiny_cross_encoder}",
        "retriever.rerank_top_n=10",
    )
    cfg = tiny_config(tmp_path / "run", tiny_encoder, tiny_lm, *extra)
    out = train(cfg)
    rows = [
        json.loads(x) for x in (out / "rounds" / "round_0" / "predictions.jsonl").read_text().splitlines()
    ]
    data = Data(cfg)
    depth = max([*cfg.eval.ks, cfg.top_k])
    lexical = BM25(data.ids, [p.full_text() for p in data.corpus.values()]).search(
        [e.question for e in data.eval], depth
    )
    model = load_cross_encoder(str(tiny_cross_encoder))
    expected = []
    for e, hits in zip(data.eval, lexical, strict=True):
        head = [pid for pid, _ in hits[:10]]
        logits = score_pairs(
            model,
            [(e.question, data.corpus[p].full_text()) for p in head],
            precision="fp32",
            show_progress=False,
        )
        expected.append([head[i] for i in np.argsort(-logits, kind="stable")] + [p for p, _ in hits[10:]])
    assert [[c["id"] for c in row["contexts"]] for row in rows] == [h[: cfg.top_k] for h in expected]
    assert [h[: cfg.top_k] for h in expected] != [[p for p, _ in h[: cfg.top_k]] for h in lexical]
    qrels = {e.id: {pid: 1 for pid in data.gold_ids(e)} for e in data.eval}
    run = {
        e.id: {pid: float(depth - i) for i, pid in enumerate(h)}
        for e, h in zip(data.eval, expected, strict=True)
    }
    reference = evaluate_run(run, qrels, ks=cfg.eval.ks)
    final = json.loads((out / "report.json").read_text())["final"]
    for metric in ("Recall@3", "MRR@10", "nDCG@10"):
        assert final[metric] == pytest.approx(reference.metrics[metric])
    with pytest.raises(ValueError, match="rerank_top_n"):
        tiny_config(
            tmp_path / "bad",
            tiny_encoder,
            tiny_lm,
            f"retriever.reranker={tiny_cross_encoder}",
            "retriever.rerank_top_n=2",
        )


def test_compiled_generator_gives_an_inference_copy_that_runs_its_own_weights(
    tmp_path: Path, tiny_lm: Path
) -> None:
    """generator.compile compiles the training model's blocks; the merged inference copy runs its
    own weights, not the training blocks' compiled calls (torch drops them from a deep copy)."""
    import torch
    from torch._dynamo.utils import counters

    from ragtune.e2e.state import Generator

    cfg = tiny_config(tmp_path / "run", tmp_path / "unused", tiny_lm, "generator.compile=true")
    gen = Generator(cfg)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        for name, p in gen.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
        counters.clear()
        gen.model.train()
        trained = gen.model(input_ids=ids).logits
        assert counters["stats"]["unique_graphs"] > 0  # the training model's blocks are compiled
        copy = gen.inference_copy()
        before = copy(input_ids=ids).logits
        torch.testing.assert_close(before, trained, rtol=1e-4, atol=1e-4)  # the merged same model
        for name, p in gen.model.named_parameters():  # now change the training model only
            if "lora_B" in name:
                p.add_(0.5)
        assert not torch.allclose(gen.model(input_ids=ids).logits, trained, atol=1e-3)
        torch.testing.assert_close(copy(input_ids=ids).logits, before)  # the copy runs its own


def test_feedback_scores_each_passage_once_and_match_the_training_model(
    tmp_path: Path, tiny_encoder: Path, tiny_lm: Path
) -> None:
    """The retriever stage's scores (merged inference copy, duplicates scored once) equal the
    answer log-likelihoods of the training model itself, scored one triple at a time."""
    import torch

    from ragtune.e2e import stages
    from ragtune.e2e.state import Data, Generator, Retriever
    from ragtune.generator.scoring import answer_logprobs

    cfg = tiny_config(tmp_path / "run", tiny_encoder, tiny_lm, "generator.peft.r=4")
    data = Data(cfg)
    gen = Generator(cfg)
    with torch.no_grad():  # a LoRA update that is not zero, so merging it changes the weights
        for name, p in gen.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    r = stages.Round(1, cfg, data, Retriever(cfg, data), gen, {}, {}, tmp_path / "run")
    questions = data.train[:3]
    ids = data.ids
    rows = [[ids[0], ids[1], ids[0], None], [ids[2], ids[2], ids[3], None], [ids[1], ids[4], ids[5], None]]
    calls = []
    original = gen.score
    gen.score = lambda *a: calls.append(len(a[0])) or original(*a)
    sums, counts = stages.score_unique(r, questions, rows)
    assert calls == [10] and sums.shape == counts.shape == (3, 4)  # 12 cells, 2 repeats
    for q, row in enumerate(rows):
        for j, pid in enumerate(row):
            e = questions[q]
            enc = gen.enc.encode(e.question, [] if pid is None else [data.corpus[pid]], e.answer)
            want, n = answer_logprobs(gen.model, [enc], 1, gen.pad_id, "fp32")
            assert int(counts[q, j]) == int(n[0])
            assert float(sums[q, j]) == pytest.approx(float(want[0]), rel=1e-4, abs=1e-4)
    assert sums[0, 0] == sums[0, 2] and sums[1, 0] == sums[1, 1]


def test_joint_eval_asks_again_without_the_gold_passages(
    tmp_path: Path, tiny_encoder: Path, tiny_lm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragtune.checker.config import CheckerConfig
    from ragtune.checker.train import train as train_checker
    from ragtune.e2e.state import Data, Generator
    from ragtune.e2e.train import train
    from ragtune.eval.abstention import is_abstention

    # The tiny model never abstains by itself: make it abstain on every other question it is asked,
    # so the rates the loop reports have known non-zero values.
    real = Generator.answer

    def answer(self, questions, shown):
        answers, kept, speed = real(self, questions, shown)
        return [("The passages do not say." if i % 2 == 0 else a) for i, a in enumerate(answers)], kept, speed

    monkeypatch.setattr(Generator, "answer", answer)
    checker = train_checker(
        load_config(
            None,
            [
                f"model.name={tiny_encoder}",
                f"data.corpus=[{DEMO / 'corpus.jsonl'}]",
                "data.max_passages=30",
                "train.max_steps=1",
                f"output_dir={tmp_path / 'checker'}",
                "logging.tensorboard=false",
            ],
            CheckerConfig,
        )
    )
    cfg = tiny_config(
        tmp_path / "run",
        tiny_encoder,
        tiny_lm,
        "rounds=0",
        "eval.passages=bm25",
        "eval.unanswerable=true",
        f"eval.faithfulness={checker}",
    )
    out = train(cfg)
    folder = out / "rounds" / "round_0"
    answered = [json.loads(x) for x in (folder / "predictions.jsonl").read_text().splitlines()]
    refused = [json.loads(x) for x in (folder / "predictions_unanswerable.jsonl").read_text().splitlines()]
    data = Data(cfg)
    gold = {e.id: set(data.gold_ids(e)) for e in data.eval}
    assert [r["id"] for r in refused] == [f"{r['id']}#unanswerable" for r in answered]
    for r in refused:
        assert len(r["contexts"]) == cfg.top_k and not set(r["contexts"]) & gold[r["id"].split("#")[0]]
        assert r["answerable"] is False
    m = final_metrics(out)
    half = math.ceil(len(answered) / 2) / len(answered)
    assert sum(is_abstention(r["prediction"]) for r in refused) / len(refused) == half
    assert m["abstain_rate"] == pytest.approx(half) and m["false_abstain_rate"] == pytest.approx(half)
    # the checker's score beside the lexical one, per question and averaged
    scores = [r["model_faithfulness"] for r in answered]
    assert all(0.0 < s < 1.0 for s in scores) and all(
        r["metrics"]["model_faithfulness"] == r["model_faithfulness"] for r in answered
    )
    assert m["model_faithfulness"] == pytest.approx(sum(scores) / len(scores)) and "faithfulness" in m
    # ... and they are the checker's own scores of those answers over the passages shown
    from ragtune.checker.score import FaithfulnessChecker

    own = FaithfulnessChecker(checker, precision=cfg.precision)(
        [r["prediction"] for r in answered],
        [[c["text"] for c in r["contexts"]] for r in answered],
        [r["question"] for r in answered],
    )
    assert scores == pytest.approx(own, abs=1e-5)


def test_the_joint_loop_trains_and_resaves_bottleneck_adapters(
    tmp_path: Path, tiny_encoder: Path, tiny_lm: Path
) -> None:
    from ragtune.e2e.state import Generator
    from ragtune.e2e.train import train
    from ragtune.generator.bottleneck import adapter_state, is_bottleneck

    extra = (
        "rounds=1",
        "generator.peft.method=bottleneck",
        "generator.peft.bottleneck_size=8",
        "data.max_eval=4",
    )
    out = train(tiny_config(tmp_path / "run", tiny_encoder, tiny_lm, *extra))
    assert is_bottleneck(out / "adapter")
    cfg = tiny_config(
        tmp_path / "again", tiny_encoder, tiny_lm, *extra, f"generator.adapter={out / 'adapter'}"
    )
    loaded = Generator(cfg)
    state = adapter_state(loaded.model)
    assert state and all(p.requires_grad for n, p in loaded.model.named_parameters() if n in state)
    assert any(float(v.abs().max()) > 0 for k, v in state.items() if k.endswith("up.weight"))  # trained
