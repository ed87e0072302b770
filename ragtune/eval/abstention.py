"""Answering or abstaining: how often a generator declines when its passages hold no answer, and
how often it declines when they do.

Each question is asked twice (``ragtune generator generate --unanswerable``): with its passages
(``answerable: true``) and with its gold passages removed (``answerable: false``; distractors shown
instead). An answer *abstains* when, after :func:`ragtune.eval.generation.normalize_answer`
(lower case, no punctuation or articles), it contains one of the abstention phrases: the
generator's trained refusal ("The passages do not say.") and a few common paraphrases, or the
phrases given with ``--abstain-text``. Reported:

- ``abstain_rate``: the share of unanswerable questions answered with an abstention (higher is
  better);
- ``false_abstain_rate``: the share of answerable questions answered with one (lower is better);
- the answer metrics over the answerable questions, and ``answered_*`` over those of them that were
  answered (not abstained), so that refusing does not hide in the averages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ragtune.eval.generation import normalize_answer

ABSTAIN_PHRASES = (
    "The passages do not say.",
    "The passages do not contain the answer.",
    "not mentioned in the passages",
    "cannot be answered from the passages",
    "no information in the passages",
)


def is_abstention(text: str, phrases: Sequence[str] = ABSTAIN_PHRASES) -> bool:
    """Whether ``text`` declines to answer: it contains one of ``phrases`` (both normalised)."""
    norm = normalize_answer(text)
    return any(q and q in norm for q in map(normalize_answer, phrases))


def abstention_metrics(rows: Sequence[Any], phrases: Sequence[str] = ABSTAIN_PHRASES) -> dict[str, float]:
    """``abstain_rate`` over rows with ``answerable`` False, ``false_abstain_rate`` over rows with
    it True, and both counts; rows without the flag are not counted."""
    flagged = [r for r in rows if r.answerable is not None]
    if not flagged:
        raise ValueError("no row says whether it is answerable (the 'answerable' field)")
    unanswerable = [r for r in flagged if not r.answerable]
    answerable = [r for r in flagged if r.answerable]
    out: dict[str, float] = {"n_answerable": len(answerable), "n_unanswerable": len(unanswerable)}
    if unanswerable:
        out["abstain_rate"] = sum(is_abstention(r.prediction, phrases) for r in unanswerable) / len(
            unanswerable
        )
    if answerable:
        out["false_abstain_rate"] = sum(is_abstention(r.prediction, phrases) for r in answerable) / len(
            answerable
        )
    return out


def score_answer_rows(
    rows: Sequence[Any],
    with_meteor: bool = False,
    bertscore_model: str | None = None,
    bertscore_layer: int | None = None,
    phrases: Sequence[str] = ABSTAIN_PHRASES,
    faithfulness_model: str | None = None,
) -> tuple[dict[str, float], dict[str, dict[str, float]], dict[str, Any]]:
    """Everything ``ragtune eval generation`` reports for a predictions file: ``(metrics, per-id
    metrics, extra fields)``. Without ``answerable`` flags every row is scored; with them, the
    answer metrics cover the answerable rows (a reference answer is no target for a question asked
    without its gold passages), ``answered_*`` the answerable rows that did not abstain, and the
    abstention rates both kinds (:func:`abstention_metrics`). With ``faithfulness_model`` (a trained
    checker, ``ragtune faithfulness train``) the scored rows that carry contexts also get
    ``model_faithfulness``, beside the lexical ``faithfulness``."""
    from ragtune.eval.answers import answer_metrics
    from ragtune.eval.generation import score_predictions

    flagged = any(r.answerable is not None for r in rows)
    scored = [r for r in rows if r.answerable is not False] if flagged else list(rows)
    if not scored:
        raise ValueError("no answerable rows to score")
    metrics, per = score_predictions(scored)
    extra = answer_metrics(scored, metrics, per, with_meteor, bertscore_model, bertscore_layer)
    if faithfulness_model is not None:
        from ragtune.checker.score import FaithfulnessChecker

        with_ctx = [r for r in scored if r.contexts is not None]
        if not with_ctx:
            raise ValueError("the faithfulness checker needs rows with contexts; none has any")
        checker = FaithfulnessChecker(faithfulness_model)
        probs = checker(
            [r.prediction for r in with_ctx], [r.contexts for r in with_ctx], [r.question for r in with_ctx]
        )
        for r, p in zip(with_ctx, probs, strict=True):
            per[r.id]["model_faithfulness"] = p
        metrics["model_faithfulness"] = sum(probs) / len(probs)
        extra["faithfulness_model"] = str(checker.folder)
    if flagged:
        metrics.update(abstention_metrics(rows, phrases))
        for r in rows:
            per.setdefault(r.id, {})["abstained"] = float(is_abstention(r.prediction, phrases))
        answered = [r for r in scored if not per[r.id]["abstained"]]
        if answered:
            sub, _ = score_predictions(answered)
            metrics.update({f"answered_{k}": v for k, v in sub.items()})
        metrics["n_answered"] = len(answered)
        extra["abstain_phrases"] = list(phrases)
    return metrics, per, extra
