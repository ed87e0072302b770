from __future__ import annotations

import math
import random
import subprocess
import sys

import pytest

from ragtune.eval.ir import evaluate_run, map_at_k, mrr_at_k, ndcg_at_k, rank_documents

pytrec_eval = pytest.importorskip(
    "pytrec_eval", reason="pytrec-eval-terrier (dev extra) is the trec_eval reference"
)

KS = (1, 3, 5, 10, 20, 100)


def top_k(run, k):
    """The run cut to each query's ``k`` best documents (trec_eval order): the reference's input."""
    return {qid: {d: docs[d] for d in rank_documents(docs)[:k]} for qid, docs in run.items()}


def random_case(seed: int) -> tuple[dict, dict]:
    """Graded qrels (grades 0-3, some queries with no relevant document) and a run full of ties."""
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(150)]
    qrels = {}
    for q in range(60):
        judged = rng.sample(docs, rng.randint(1, 12))
        qrels[f"q{q}"] = {d: rng.choice([0, 0, 1, 1, 2, 3]) for d in judged}
    run = {}
    for q in qrels:
        if rng.random() < 0.1:
            continue  # a judged query the run does not answer
        retrieved = rng.sample(docs, rng.randint(1, 120))
        # Few distinct scores, so many ties, plus relevant documents pulled up.
        run[q] = {
            d: float(rng.randint(0, 6)) + (0.5 if qrels[q].get(d, 0) and rng.random() < 0.5 else 0)
            for d in retrieved
        }
    run["unjudged"] = {"d1": 1.0}
    return qrels, run


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_equals_trec_eval_on_random_runs_with_ties_and_grades(seed: int) -> None:
    qrels, run = random_case(seed)
    measures = {f"{m}.{','.join(map(str, KS))}" for m in ("ndcg_cut", "recall", "P", "map_cut", "success")}
    reference = pytrec_eval.RelevanceEvaluator(qrels, measures | {"recip_rank"}).evaluate(run)
    mine = evaluate_run(run, qrels, ks=KS)
    names = {"nDCG": "ndcg_cut", "Recall": "recall", "P": "P", "MAP": "map_cut", "Hit": "success"}
    compared = 0
    for qid, ref in reference.items():
        if not any(r >= 1 for r in qrels[qid].values()):
            assert qid not in mine.per_query  # queries without relevant documents are left out
            continue
        for ours, theirs in names.items():
            for k in KS:
                assert mine.per_query[qid][f"{ours}@{k}"] == pytest.approx(ref[f"{theirs}_{k}"], abs=1e-6), (
                    qid,
                    ours,
                    k,
                )
                compared += 1
        # trec_eval's recip_rank has no cut-off; MRR@k equals it on the run cut to k documents.
        assert mine.per_query[qid]["MRR@100"] == pytest.approx(
            pytrec_eval.RelevanceEvaluator({qid: qrels[qid]}, {"recip_rank"}).evaluate(
                top_k({qid: run[qid]}, 100)
            )[qid]["recip_rank"],
            abs=1e-6,
        )
    assert compared > 1000
    for k in (1, 10):  # MRR with a cut-off against trec_eval on the truncated run
        cut = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top_k(run, k))
        for qid, ref in cut.items():
            if qid in mine.per_query:
                assert mine.per_query[qid][f"MRR@{k}"] == pytest.approx(ref["recip_rank"], abs=1e-6)


def test_missing_queries_score_zero_and_count_in_the_average() -> None:
    qrels = {"a": {"d1": 1}, "b": {"d2": 1}, "c": {"d3": 0}}
    run = {"a": {"d1": 1.0}, "zzz": {"d1": 1.0}}
    result = evaluate_run(run, qrels, ks=(10,))
    assert result.n_queries == 2  # "c" has no relevant document, "zzz" no judgement
    assert result.per_query["b"]["Recall@10"] == 0.0
    assert result.metrics["Recall@10"] == 0.5 and result.metrics["MRR@10"] == 0.5


def test_hand_computed_values_and_tie_order() -> None:
    rels = {"d1": 2, "d3": 1, "d9": 3}
    run = {"d1": 0.9, "d2": 0.5, "d3": 0.5, "d4": 0.1}
    ranked = rank_documents(run)
    assert ranked == ["d1", "d3", "d2", "d4"]  # equal scores: descending id, as trec_eval
    dcg = 2 / math.log2(2) + 1 / math.log2(3)
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranked, rels, 10) == pytest.approx(dcg / idcg)
    assert map_at_k(ranked, rels, 10) == pytest.approx((1 / 1 + 2 / 2) / 3)
    assert mrr_at_k(["x", "d3"], rels, 1) == 0.0 and mrr_at_k(["x", "d3"], rels, 2) == 0.5


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="cut-offs"):
        evaluate_run({}, {}, ks=(0,))
    with pytest.raises(ValueError, match="unknown metric 'BLEU'"):
        evaluate_run({}, {}, metrics=("BLEU",))


def test_eval_package_imports_without_torch() -> None:
    code = (
        "import sys, ragtune.eval.ir, ragtune.eval.generation, ragtune.eval.report, ragtune.eval.faithfulness;"
        "bad = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
