from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from ragtune.config import load_config
from ragtune.data.io import DataError, load_beir, load_triplets
from ragtune.retriever.bm25 import BM25
from ragtune.retriever.config import MiningConfig, RetrieverConfig
from ragtune.retriever.mining import mine, select_negatives, stats_path
from tests.conftest import DEMO

# A retriever's list, best first. Positives p1 (9.0) and p2 (8.0): the lowest positive score is 8.0,
# so with fn_ratio 0.5 the false-negative threshold is 4.0 (exact in binary floating point).
CANDIDATES = [
    ("a", 12.0),  # rank 1: false negative
    ("p1", 9.0),  # rank 2: positive
    ("b", 8.5),  # rank 3: false negative
    ("p2", 8.0),  # rank 4: positive
    ("c", 4.0),  # rank 5: false negative (score == threshold)
    ("d", 3.999),  # rank 6: the first true candidate
    ("e", 3.0),
    ("f", 2.0),
    ("g", 1.0),
    ("h", 0.5),  # rank 10
]
POS = {"p1", "p2"}


def _cfg(**kw: object) -> MiningConfig:
    base: dict[str, object] = {"rank_start": 1, "rank_end": 10, "num_negatives": 10, "fn_ratio": 0.5}
    base.update(kw)
    return MiningConfig(**base)  # type: ignore[arg-type]


def test_positives_and_false_negatives_are_dropped_exactly() -> None:
    chosen, dropped = select_negatives(CANDIDATES, POS, 8.0, _cfg(), random.Random(0))
    assert chosen == [("d", 6, 3.999), ("e", 7, 3.0), ("f", 8, 2.0), ("g", 9, 1.0), ("h", 10, 0.5)]
    assert dropped == {"positive": 2, "false_negative": 3, "outside_window": 0}
    assert len(chosen) + sum(dropped.values()) == len(CANDIDATES)


def test_fn_ratio_none_keeps_near_positive_candidates() -> None:
    chosen, dropped = select_negatives(CANDIDATES, POS, 8.0, _cfg(fn_ratio=None), random.Random(0))
    assert [(c[0], c[1]) for c in chosen] == [
        ("a", 1),
        ("b", 3),
        ("c", 5),
        ("d", 6),
        ("e", 7),
        ("f", 8),
        ("g", 9),
        ("h", 10),
    ]
    assert dropped == {"positive": 2, "false_negative": 0, "outside_window": 0}


@pytest.mark.parametrize("positive_score", [None, 0.0, -3.0])
def test_unknown_or_non_positive_positive_score_disables_ratio_filter(positive_score: float | None) -> None:
    chosen, dropped = select_negatives(CANDIDATES, POS, positive_score, _cfg(), random.Random(0))
    assert [c[0] for c in chosen] == ["a", "b", "c", "d", "e", "f", "g", "h"]
    assert dropped == {"positive": 2, "false_negative": 0, "outside_window": 0}


def test_ratio_filter_scales_with_the_positive_score() -> None:
    # threshold 0.95 * 4.0 = 3.8: a, b, c dropped (>= 3.8), d (3.999) too; e (3.0) kept.
    chosen, dropped = select_negatives(CANDIDATES, POS, 4.0, _cfg(fn_ratio=0.95), random.Random(0))
    assert [c[0] for c in chosen] == ["e", "f", "g", "h"]
    assert dropped["false_negative"] == 4


def test_window_counts_ranks_including_positives() -> None:
    # ranks 3..5 hold b, p2, c: p2 is a positive, so only b (3) and c (5) are left.
    chosen, dropped = select_negatives(
        CANDIDATES, POS, 8.0, _cfg(rank_start=3, rank_end=5, fn_ratio=None), random.Random(0)
    )
    assert chosen == [("b", 3, 8.5), ("c", 5, 4.0)]
    assert dropped == {"positive": 2, "false_negative": 0, "outside_window": 6}

    chosen, dropped = select_negatives(
        CANDIDATES, POS, 8.0, _cfg(rank_start=7, rank_end=9, fn_ratio=0.5), random.Random(0)
    )
    assert chosen == [("e", 7, 3.0), ("f", 8, 2.0), ("g", 9, 1.0)]
    # a, b, c are false negatives (checked before the window); d (6) and h (10) are outside it
    assert dropped == {"positive": 2, "false_negative": 3, "outside_window": 2}


def test_top_sampling_takes_the_best_ranked() -> None:
    chosen, _ = select_negatives(CANDIDATES, POS, 8.0, _cfg(num_negatives=2), random.Random(0))
    assert chosen == [("d", 6, 3.999), ("e", 7, 3.0)]


def test_random_sampling_is_seeded_and_stays_in_the_window() -> None:
    cfg = _cfg(num_negatives=2, sampling="random", rank_start=6, rank_end=9)
    window = {"d": 6, "e": 7, "f": 8, "g": 9}
    draws = []
    for seed in range(30):
        chosen, dropped = select_negatives(CANDIDATES, POS, 8.0, cfg, random.Random(seed))
        again, _ = select_negatives(CANDIDATES, POS, 8.0, cfg, random.Random(seed))
        assert chosen == again  # reproducible
        assert len(chosen) == 2
        assert all(window[pid] == rank for pid, rank, _ in chosen)
        assert [c[1] for c in chosen] == sorted(c[1] for c in chosen)
        assert dropped == {"positive": 2, "false_negative": 3, "outside_window": 1}
        draws.append(tuple(c[0] for c in chosen))
    # all 6 pairs of the 4 window candidates are drawn over 30 seeds; top would give only (d, e)
    assert len(set(draws)) == 6


def test_fewer_candidates_than_requested() -> None:
    chosen, dropped = select_negatives(
        [("p1", 5.0), ("x", 1.0)], {"p1"}, 5.0, _cfg(num_negatives=4), random.Random(0)
    )
    assert chosen == [("x", 2, 1.0)]
    assert dropped == {"positive": 1, "false_negative": 0, "outside_window": 0}
    assert select_negatives([], {"p1"}, 5.0, _cfg(), random.Random(0)) == (
        [],
        {"positive": 0, "false_negative": 0, "outside_window": 0},
    )


# ------------------------------------------------------------------------------------- mine()


def _mine_cfg(beir: Path, out: Path, *extra: str) -> RetrieverConfig:
    return load_config(
        None,
        [f"data.beir_dir={beir}", "data.train_split=train", f"mining.out={out}", *extra],
        RetrieverConfig,
    )


def _check_common(out: Path, cfg: RetrieverConfig, source: str) -> tuple[list, dict]:
    """Checks every mined file must pass; returns the triplets and the stats."""
    data = load_beir(cfg.data.beir_dir, cfg.data.train_split)
    triplets = load_triplets(out, data.corpus, data.queries)
    stats = json.loads(stats_path(out).read_text())
    mc = cfg.mining
    pairs = [(q, d) for q, docs in data.qrels.items() for d, g in docs.items() if g >= 1]
    assert [(t.query.id, t.positives[0].id) for t in triplets] == pairs
    assert all(len(t.positives) == 1 for t in triplets)
    assert stats["triplets"] == len(triplets) == len(pairs)
    assert stats["queries"] == len({q for q, _ in pairs})
    assert stats["negatives"] == sum(len(t.negatives) for t in triplets)
    short = {t.query.id for t in triplets if len(t.negatives) < mc.num_negatives}
    assert stats["queries_short"] == len(short)
    assert stats["mining"]["fn_ratio"] == mc.fn_ratio and stats["mining"]["method"] == mc.method
    for t in triplets:
        positives = {d for d, g in data.qrels[t.query.id].items() if g >= 1}
        assert len(t.negatives) <= mc.num_negatives
        assert not positives & {n.passage.id for n in t.negatives}
        assert len({n.passage.id for n in t.negatives}) == len(t.negatives)
        for n in t.negatives:
            assert n.source == source
            assert mc.rank_start <= n.rank <= mc.rank_end
            assert n.score is not None
            assert n.passage == data.corpus[n.passage.id]
        ranks = [n.rank for n in t.negatives]
        assert ranks == sorted(ranks)
        # a better rank never has a lower score
        scores = [n.score for n in t.negatives]
        assert scores == sorted(scores, reverse=True)
    saved = load_config(out.parent / "mine_config.yaml", None, RetrieverConfig)
    assert saved.mining == mc and saved.seed == cfg.seed
    return triplets, stats


def test_mine_bm25_on_demo(tmp_path: Path) -> None:
    out = tmp_path / "mined" / "triplets.jsonl"
    cfg = _mine_cfg(
        DEMO, out, "mining.method=bm25", "mining.rank_start=2", "mining.rank_end=30", "mining.num_negatives=3"
    )
    assert mine(cfg) == out
    triplets, stats = _check_common(out, cfg, "bm25")
    data = load_beir(DEMO, "train")
    ids = list(data.corpus)
    col = {pid: i for i, pid in enumerate(ids)}
    bm25 = BM25(ids, [p.full_text() for p in data.corpus.values()])
    qtexts = [t.query.text for t in triplets]
    scores = bm25.scores(qtexts)
    hits = bm25.search(qtexts, 31)
    n_fn = 0
    for t, row, hit in zip(triplets, scores, hits, strict=True):
        pos_score = min(row[col[d]] for d, g in data.qrels[t.query.id].items() if g >= 1)
        for n in t.negatives:
            assert n.score == row[col[n.passage.id]]  # exactly BM25.scores for (query, doc)
            assert hit[n.rank - 1][0] == n.passage.id  # the rank is the position in BM25's list
            if pos_score > 0:
                assert n.score < 0.95 * pos_score
        # top sampling: the negatives are the first candidates that pass both filters
        eligible = [
            (d, r)
            for r, (d, s) in enumerate(hit[:31], start=1)
            if d != t.positives[0].id and not (pos_score > 0 and s >= 0.95 * pos_score) and 2 <= r <= 30
        ]
        assert [(n.passage.id, n.rank) for n in t.negatives] == eligible[:3]
        n_fn += sum(
            1 for d, s in hit[:31] if d != t.positives[0].id and pos_score > 0 and s >= 0.95 * pos_score
        )
    assert stats["dropped_false_negatives"] == n_fn
    assert stats["negatives"] == 3 * len(triplets) - sum(3 - len(t.negatives) for t in triplets)
    assert stats["dropped_positives"] <= len(triplets)


def test_mine_multiple_positives_and_skips(tmp_path: Path) -> None:
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    docs = {
        "d1": "red apple orchard harvest",
        "d2": "red apple pie recipe",
        "d3": "apple orchard in autumn",
        "d4": "green pear orchard",
        "d5": "red car engine",
        "d6": "orchard ladder",
        "d7": "blue sky",
    }
    (beir / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in docs.items())
    )
    queries = {"q1": "red apple orchard", "q2": "blue sky"}
    (beir / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items())
    )
    # q1: two relevant documents (grades 2 and 1) and a judged non-relevant one; q2: none relevant
    (beir / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td3\t1\nq1\td2\t0\nq2\td7\t0\n"
    )
    out = tmp_path / "out" / "t.jsonl"
    cfg = _mine_cfg(beir, out, "mining.num_negatives=5", "mining.fn_ratio=null")
    mine(cfg)
    triplets, stats = _check_common(out, cfg, "bm25")
    assert [(t.query.id, t.positives[0].id) for t in triplets] == [("q1", "d1"), ("q1", "d3")]
    assert triplets[0].negatives == triplets[1].negatives  # mined once per query
    bm25 = BM25(list(docs), list(docs.values()))
    expected = [
        (d, r)
        for r, (d, _) in enumerate(bm25.search(["red apple orchard"], 12)[0], start=1)
        if d not in {"d1", "d3"}
    ]
    assert [(n.passage.id, n.rank) for n in triplets[0].negatives] == expected[:5]
    assert "d2" in {n.passage.id for n in triplets[0].negatives}  # grade 0 is not a positive
    assert stats["queries"] == 1 and stats["queries_without_positive"] == 1
    # d7 shares no token with q1 (BM25 score 0, not retrieved): 4 negatives, short of 5
    assert [n.passage.id for n in triplets[0].negatives] == ["d2", "d6", "d4", "d5"]
    assert stats["triplets"] == 2 and stats["negatives"] == 8 and stats["queries_short"] == 1
    assert stats["dropped_positives"] == 2 and stats["dropped_false_negatives"] == 0

    # with the filter on, the lowest positive score (d3's) sets the threshold
    row = bm25.scores(["red apple orchard"])[0]
    low = min(row[0], row[2])
    assert low < max(row[0], row[2])
    mine(_mine_cfg(beir, out, "mining.num_negatives=5", "mining.fn_ratio=0.9"))
    refiltered = load_triplets(out, None, None)
    kept = {n.passage.id for n in refiltered[0].negatives}
    expected_kept = {
        d for d, s in zip(docs, row, strict=True) if s > 0 and d not in {"d1", "d3"} and s < 0.9 * low
    }
    assert kept == expected_kept
    fn = json.loads(stats_path(out).read_text())["dropped_false_negatives"]
    assert fn == sum(1 for d, s in zip(docs, row, strict=True) if d not in {"d1", "d3"} and s >= 0.9 * low)


def test_mine_without_relevant_documents_is_an_error(tmp_path: Path) -> None:
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "x y"}) + "\n")
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "x"}) + "\n")
    (beir / "qrels" / "train.tsv").write_text("q1\td1\t0\n")
    with pytest.raises(DataError, match=r"train\.tsv.*no query has a relevant document"):
        mine(_mine_cfg(beir, tmp_path / "t.jsonl"))
    assert not (tmp_path / "t.jsonl").exists()


def test_mine_dense_on_demo(tmp_path: Path, tiny_encoder: Path) -> None:
    from ragtune.retriever.model import encode, load_encoder

    extra = [
        f"model.name={tiny_encoder}",
        "mining.method=dense",
        "model.max_passage_length=128",
        "mining.rank_start=3",
        "mining.rank_end=40",
        "mining.num_negatives=4",
        "mining.sampling=random",
        "mining.fn_ratio=null",
        "precision=fp32",
        "eval.batch_size=64",
        "seed=7",
    ]
    out = tmp_path / "a" / "triplets.jsonl"
    cfg = _mine_cfg(DEMO, out, *extra)
    mine(cfg)
    triplets, stats = _check_common(out, cfg, "dense")
    assert stats["negatives"] > 0

    data = load_beir(DEMO, "train")
    model = load_encoder(str(tiny_encoder))
    ids = list(data.corpus)
    col = {pid: i for i, pid in enumerate(ids)}
    pvec = encode(
        model,
        [p.full_text() for p in data.corpus.values()],
        max_length=128,
        precision="fp32",
        show_progress=False,
    )
    qvec = encode(
        model, [t.query.text for t in triplets], max_length=64, precision="fp32", show_progress=False
    )
    for i, t in enumerate(triplets):
        order = np.argsort(-(pvec @ qvec[i]), kind="stable")
        for n in t.negatives:
            cos = float(qvec[i] @ pvec[col[n.passage.id]])
            assert n.score == pytest.approx(cos, abs=1e-5)  # the dense score is the cosine
            assert (
                ids[order[n.rank - 1]] == n.passage.id
                or abs(float(pvec[order[n.rank - 1]] @ qvec[i]) - cos) < 1e-5
            )  # the rank is the position in the exact ranking (up to ties)

    # seeded: the same config gives the same file
    out2 = tmp_path / "b" / "triplets.jsonl"
    mine(_mine_cfg(DEMO, out2, *extra))
    assert out2.read_text() == out.read_text()

    # a random model maps every text to nearly the same direction (cosines 0.94..0.99), so the
    # default fn_ratio 0.95 marks every retrieved non-positive as a false negative
    out3 = tmp_path / "c" / "triplets.jsonl"
    mine(_mine_cfg(DEMO, out3, *extra, "mining.fn_ratio=0.95"))
    filtered = json.loads(stats_path(out3).read_text())
    depth = 40 + 1  # rank_end + one positive per demo query
    assert filtered["negatives"] == 0 and filtered["queries_short"] == len(triplets)
    assert filtered["dropped_outside_window"] == 0
    assert filtered["dropped_false_negatives"] + filtered["dropped_positives"] == depth * len(triplets)
    assert filtered["dropped_positives"] == stats["dropped_positives"]
