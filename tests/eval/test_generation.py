from __future__ import annotations

import random

import pytest

from ragtune.eval.generation import bleu, evaluate_generation, exact_match, normalize_answer, rouge, token_f1


def test_squad_normalisation_em_and_f1() -> None:
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert exact_match("the Eiffel Tower.", "Eiffel tower") == 1.0
    assert exact_match("Eiffel", "Eiffel Tower") == 0.0
    # pred tokens [paris, france], ref [paris]: P = 1/2, R = 1, F1 = 2/3
    assert token_f1("Paris, France", "Paris") == pytest.approx(2 / 3)
    assert (
        token_f1("", "") == 1.0
        and token_f1("word", "") == 0.0
        and token_f1("a", "the") == 1.0
        and token_f1("x", "y") == 0.0
    )


def test_rouge_hand_computed_with_stemming() -> None:
    # Stemmed tokens: pred [the, cat, are, run] vs ref [the, cat, ran]: unigram overlap {the, cat} = 2.
    scores = rouge("The cats are running", "the cat ran")
    p, r = 2 / 4, 2 / 3
    assert scores["ROUGE-1"] == pytest.approx(2 * p * r / (p + r))
    assert scores["ROUGE-2"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))  # bigram "the cat"
    assert scores["ROUGE-L"] == pytest.approx(scores["ROUGE-1"])  # LCS = the cat


def test_equals_google_rouge_score_on_random_texts() -> None:
    from rouge_score import rouge_scorer

    rng = random.Random(0)
    words = [
        "the",
        "a",
        "patients",
        "study",
        "results",
        "showed",
        "significant",
        "increase",
        "decreased",
        "running",
        "runs",
        "cells",
        "cell",
    ]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    preds = [" ".join(rng.choices(words, k=rng.randint(1, 20))) for _ in range(50)]
    refs = [" ".join(rng.choices(words, k=rng.randint(1, 20))) for _ in range(50)]
    metrics, per = evaluate_generation(preds, refs)
    for i, (p, r) in enumerate(zip(preds, refs, strict=True)):
        ref = scorer.score(r, p)
        assert per[str(i)]["ROUGE-L"] == pytest.approx(ref["rougeL"].fmeasure, abs=1e-12)
        assert per[str(i)]["ROUGE-2"] == pytest.approx(ref["rouge2"].fmeasure, abs=1e-12)
    mean_r1 = sum(scorer.score(r, p)["rouge1"].fmeasure for p, r in zip(preds, refs, strict=True)) / 50
    assert metrics["ROUGE-1"] == pytest.approx(mean_r1, abs=1e-12)


def test_bleu_matches_sacrebleu_and_bounds() -> None:
    import sacrebleu

    preds = ["the cat sat on the mat", "a quick brown fox"]
    refs = ["the cat sat on a mat", "the quick brown fox jumps"]
    assert bleu(preds, refs) == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score / 100)
    assert bleu(["identical sentence here ok"], ["identical sentence here ok"]) == pytest.approx(1.0)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        evaluate_generation(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no predictions"):
        evaluate_generation([], [])


def test_stated_decision_reads_a_leading_verdict_only() -> None:
    from ragtune.eval.generation import decision_accuracy, stated_decision

    assert stated_decision("Yes, the trial shows it.") == "yes"
    assert stated_decision("  no. It does not.") == "no"
    assert stated_decision("Maybe: the evidence is mixed") == "maybe"
    assert stated_decision("Nothing suggests yes") is None  # 'Nothing' is not 'no'
    assert stated_decision("Yesterday's data") is None
    out = decision_accuracy(
        ["Yes, it does.", "No.", "It is unclear.", "maybe"], ["yes", "yes", "no", "maybe"]
    )
    assert out == {"decision_accuracy": 2 / 3, "decision_coverage": 3 / 4}
