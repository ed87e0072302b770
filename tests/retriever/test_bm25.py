from __future__ import annotations

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from ragtune.data.io import load_beir
from ragtune.retriever.bm25 import BM25, reciprocal_rank_fusion, tokenize, weighted_fusion
from tests.conftest import DEMO


def test_scores_equal_rank_bm25_on_the_demo_corpus() -> None:
    data = load_beir(DEMO, "test")
    ids, texts = list(data.corpus), [p.full_text() for p in data.corpus.values()]
    ours = BM25(ids, texts)
    reference = BM25Okapi([tokenize(t) for t in texts])
    queries = [q.text for q in data.split_queries().values()] + ["the the of unknownword", "island island"]
    scores = ours.scores(queries)
    for i, q in enumerate(queries):
        np.testing.assert_allclose(scores[i], reference.get_scores(tokenize(q)), rtol=1e-9, atol=1e-9)
    hits = ours.search(queries[:5], k=10)
    for i, row in enumerate(hits):
        expected = np.argsort(-reference.get_scores(tokenize(queries[i])), kind="stable")[:10]
        assert [h for h, _ in row] == [ids[j] for j in expected]


def test_negative_idf_floor_matches_rank_bm25() -> None:
    texts = ["apple banana", "apple cherry", "apple date", "kiwi"]  # 'apple' in 3 of 4 docs: negative idf
    ours = BM25(["a", "b", "c", "d"], texts)
    ref = BM25Okapi([tokenize(t) for t in texts])
    np.testing.assert_allclose(ours.scores(["apple kiwi"])[0], ref.get_scores(["apple", "kiwi"]), rtol=1e-12)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="empty corpus"):
        BM25([], [])
    with pytest.raises(ValueError, match="2 ids but 1 texts"):
        BM25(["a", "b"], ["x"])


def test_reciprocal_rank_fusion_hand_computed() -> None:
    fused = dict(reciprocal_rank_fusion([["a", "b", "c"], ["b", "d"]], k=60))
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["a"] == pytest.approx(1 / 61) and fused["d"] == pytest.approx(1 / 62)
    assert [d for d, _ in reciprocal_rank_fusion([["a", "b", "c"], ["b", "d"]], depth=2)] == ["b", "a"]


def test_weighted_fusion_hand_computed() -> None:
    bm25 = {"a": 10.0, "b": 6.0, "c": 2.0}  # normalised: a 1, b 0.5, c 0
    dense = {"b": 0.9, "d": 0.5}  # normalised: b 1, d 0
    fused = dict(weighted_fusion([bm25, dense], [0.25, 0.75]))
    assert fused == pytest.approx({"a": 0.25, "b": 0.25 * 0.5 + 0.75, "c": 0.0, "d": 0.0})
    ranked = [d for d, _ in weighted_fusion([bm25, dense], [0.25, 0.75], depth=2)]
    assert ranked == ["b", "a"]
    # weight 1 on one list reproduces its order; equal scores count 1
    assert [d for d, _ in weighted_fusion([bm25, dense], [1.0, 0.0])][:3] == ["a", "b", "c"]
    assert dict(weighted_fusion([{"x": 3.0, "y": 3.0}], [1.0])) == {"x": 1.0, "y": 1.0}
    with pytest.raises(ValueError, match="weights"):
        weighted_fusion([bm25], [0.5, 0.5])
    with pytest.raises(ValueError, match=">= 0"):
        weighted_fusion([bm25, dense], [-1.0, 2.0])
