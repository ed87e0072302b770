"""Answer metrics: ROUGE-1/2/L (Google's ``rouge-score``, stemming on), exact match and token F1
with SQuAD's normalisation, and corpus BLEU through ``sacrebleu``.

ROUGE values are F-measures from ``rouge_score.rouge_scorer.RougeScorer`` itself, so they are
Google's numbers by construction; BLEU is ``sacrebleu.corpus_bleu`` divided by 100. EM and F1
follow the SQuAD v1.1 evaluation script: lower case, strip punctuation and the articles a/an/the,
collapse white space; F1 is the harmonic mean of token precision and recall over the bag of tokens.
This module imports neither torch nor any model code.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

from ragtune.data.schema import Prediction

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_ROUGE_NAMES = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}
_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of precision and recall of normalised tokens (SQuAD F1)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F-measures of one prediction against one reference (stemming on)."""
    scores = _rouge_scorer().score(reference, prediction)
    return {_ROUGE_NAMES[t]: scores[t].fmeasure for t in ROUGE_TYPES}


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU in [0, 1] (sacrebleu's default 13a tokenisation, one reference per prediction)."""
    import sacrebleu

    return sacrebleu.corpus_bleu(list(predictions), [list(references)]).score / 100.0


def evaluate_generation(
    predictions: Sequence[str],
    references: Sequence[str],
    ids: Sequence[str] | None = None,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Average and per-example ROUGE-1/2/L, EM and F1, plus corpus BLEU.

    Returns ``(metrics, per_example)`` where ``per_example`` maps an id (or the index) to its scores.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    ids = [str(i) for i in (ids if ids is not None else range(len(predictions)))]
    per_example: dict[str, dict[str, float]] = {}
    for key, pred, ref in zip(ids, predictions, references, strict=True):
        per_example[key] = {**rouge(pred, ref), "EM": exact_match(pred, ref), "F1": token_f1(pred, ref)}
    names = list(next(iter(per_example.values())))
    metrics = {n: sum(s[n] for s in per_example.values()) / len(per_example) for n in names}
    metrics["BLEU"] = bleu(predictions, references)
    return metrics, per_example


_DECISION = re.compile(r"^\W*(yes|no|maybe)\b", re.IGNORECASE)


def stated_decision(text: str) -> str | None:
    """The yes/no/maybe verdict an answer opens with (``"Yes, ..."`` -> ``"yes"``), or None when it
    states none. Used for PubMedQA-style questions whose answers may lead with a verdict."""
    match = _DECISION.match(text)
    return match.group(1).lower() if match else None


def decision_accuracy(predictions: Sequence[str], gold: Sequence[str]) -> dict[str, float]:
    """Accuracy of the stated verdicts against ``gold`` labels (yes/no/maybe), over the answers that
    state one, and the share that do: ``{"decision_accuracy", "decision_coverage"}``."""
    if len(predictions) != len(gold):
        raise ValueError(f"{len(predictions)} predictions but {len(gold)} gold labels")
    stated = [(stated_decision(p), g.lower()) for p, g in zip(predictions, gold, strict=True)]
    stated = [(s, g) for s, g in stated if s is not None]
    return {
        "decision_accuracy": sum(s == g for s, g in stated) / len(stated) if stated else 0.0,
        "decision_coverage": len(stated) / len(predictions) if predictions else 0.0,
    }


def score_predictions(rows: Sequence[Prediction]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """:func:`evaluate_generation` of predictions with ids, plus the lexical faithfulness
    (:func:`ragtune.eval.faithfulness.lexical_faithfulness`) of those that carry their contexts,
    averaged over them. Returns ``(metrics, per-id metrics)``."""
    from ragtune.eval.faithfulness import lexical_faithfulness

    metrics, per = evaluate_generation(
        [r.prediction for r in rows], [r.reference for r in rows], [r.id for r in rows]
    )
    with_ctx = [r for r in rows if r.contexts is not None]
    for r in with_ctx:
        per[r.id]["faithfulness"] = lexical_faithfulness(r.prediction, r.contexts)
    if with_ctx:
        metrics["faithfulness"] = sum(per[r.id]["faithfulness"] for r in with_ctx) / len(with_ctx)
    return metrics, per
