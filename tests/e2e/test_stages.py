"""The joint loop's pure parts: the stage plan, LSR candidate selection, false-negative flags."""

from __future__ import annotations

from ragtune.e2e.stages import STAGES, flag_false_negatives, lsr_candidates, stage_plan


def test_stage_plan_evaluates_round_zero_then_runs_every_stage() -> None:
    plan = stage_plan(2, "all")
    assert plan[0] == (0, "eval")
    assert plan[1:6] == [(1, s) for s in STAGES] and plan[6:] == [(2, s) for s in STAGES]
    assert stage_plan(0, "all") == [(0, "eval")]  # rounds=0: evaluate the starting models only


def test_stage_plan_with_eval_last_skips_the_early_evaluations() -> None:
    plan = stage_plan(2, "last")
    assert [s for s in plan if s[1] == "eval"] == [(2, "eval")]
    assert len(plan) == 2 * len(STAGES) - 1
    assert stage_plan(0, "last") == [(0, "eval")]  # nothing to skip to


def test_lsr_candidates_put_a_missed_gold_passage_last() -> None:
    hits = ["a", "b", "c", "d"]
    assert lsr_candidates(hits, ["c"], 3, include_gold=True) == (["a", "b", "c"], False)  # retrieved
    assert lsr_candidates(hits, ["z", "y"], 3, include_gold=True) == (["a", "b", "z"], True)
    assert lsr_candidates(hits, ["z"], 3, include_gold=False) == (["a", "b", "c"], False)
    assert lsr_candidates(hits, [], 3, include_gold=True) == (["a", "b", "c"], False)
    assert lsr_candidates(["a"], ["z"], 3, include_gold=True) == (["a", "z"], True)  # fewer hits than k


def test_flag_false_negatives_skips_gold_and_already_flagged() -> None:
    cands = ["g", "n1", "n2", "n3"]
    gains = [2.0, 1.9, 1.0, 2.5]  # over no passage
    # gold gain 2.0, ratio 0.9: flag gains >= 1.8 among non-gold candidates
    assert flag_false_negatives(cands, {"g"}, gains, 2.0, 0.9) == ["n1", "n3"]
    assert flag_false_negatives(cands, {"g"}, gains, 2.0, 0.9, already=["n3"]) == ["n1"]
    assert flag_false_negatives(cands, {"g"}, gains, 2.0, 1.0) == ["n3"]
    # the gold passage does not help: no evidence, nothing flagged
    assert flag_false_negatives(cands, {"g"}, gains, -0.5, 0.9) == []
