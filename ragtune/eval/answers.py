"""Answer metrics beside ROUGE and F1: PubMedQA's decision Accuracy and macro-F1, METEOR and BERTScore.

- **Decisions** (yes/no/maybe questions, PubMedQA): the verdict an answer opens with
  (:func:`ragtune.eval.generation.stated_decision`) against the gold label; an answer that states
  none is wrong. ``Accuracy`` over all answers and ``macro-F1`` over the three classes, equal to
  scikit-learn's ``accuracy_score`` and ``f1_score(labels=["yes", "no", "maybe"],
  average="macro", zero_division=0)``, the metrics of PubMedQA's official evaluation.
- **METEOR** (Banerjee and Lavie 2005): ``nltk.translate.meteor_score.single_meteor_score`` per
  answer (lower-cased word tokens), averaged. Its matching stages are exact, Porter stem, and
  WordNet synonyms; WordNet is nltk *data*, not on PyPI, so the synonym stage runs only where that
  data is installed (``ragtune eval wordnet``, from Debian's packages: :mod:`ragtune.eval.wordnet`;
  or ``nltk.download("wordnet")``) and otherwise matches no synonyms: which one ran is reported as
  ``meteor_stages``.
- **BERTScore** (Zhang et al. 2020): the ``bert-score`` package's ``score`` with a locally available
  encoder (by default the packaged all-MiniLM-L6-v2 and its last layer; ``model`` and ``layer``
  are reported with the scores), no baseline rescaling, no idf weighting: P, R and F1 per answer
  and averaged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ragtune.eval.generation import stated_decision

DECISIONS = ("yes", "no", "maybe")
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def decision_metrics(predictions: Sequence[str], gold: Sequence[str]) -> dict[str, float]:
    """``{"decision_Accuracy", "decision_macro_F1", "decision_coverage"}`` of the answers' stated
    verdicts against ``gold`` (each yes, no or maybe)."""
    if len(predictions) != len(gold):
        raise ValueError(f"{len(predictions)} predictions but {len(gold)} gold labels")
    if not gold:
        raise ValueError("no answers to score")
    bad = sorted({g for g in gold if g.lower() not in DECISIONS})
    if bad:
        raise ValueError(f"gold decisions must be yes, no or maybe; got {bad[:3]}")
    pairs = [(stated_decision(p), g.lower()) for p, g in zip(predictions, gold, strict=True)]
    f1s = []
    for label in DECISIONS:
        tp = sum(p == label and g == label for p, g in pairs)
        fp = sum(p == label and g != label for p, g in pairs)
        fn = sum(p != label and g == label for p, g in pairs)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return {
        "decision_Accuracy": sum(p == g for p, g in pairs) / len(pairs),
        "decision_macro_F1": sum(f1s) / len(f1s),
        "decision_coverage": sum(p is not None for p, _ in pairs) / len(pairs),
    }


def tokens(text: str) -> list[str]:
    """Lower-cased words and punctuation marks: the tokens METEOR aligns."""
    return _TOKEN.findall(text.lower())


class _NoSynonyms:
    """A stand-in for nltk's WordNet reader when its data is not installed: no word has synsets,
    so METEOR's synonym stage matches nothing and the exact and stem stages run as usual."""

    def synsets(self, *args: Any, **kwargs: Any) -> list:
        return []


def wordnet_reader() -> tuple[Any, str]:
    """nltk's WordNet reader and ``"exact+stem+synonym"`` when its data is installed, else a reader
    with no synonyms and ``"exact+stem"``."""
    import nltk

    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        return _NoSynonyms(), "exact+stem"
    from nltk.corpus import wordnet

    return wordnet, "exact+stem+synonym"


def meteor(predictions: Sequence[str], references: Sequence[str]) -> tuple[float, list[float], str]:
    """``(mean METEOR, per-answer METEOR, the matching stages that ran)``."""
    from nltk.translate.meteor_score import single_meteor_score

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    wordnet, stages = wordnet_reader()
    per = [
        float(single_meteor_score(tokens(r), tokens(p), wordnet=wordnet))
        for p, r in zip(predictions, references, strict=True)
    ]
    return (sum(per) / len(per) if per else 0.0), per, stages


def default_bertscore_model() -> str:
    """The packaged all-MiniLM-L6-v2's transformer folder (loads offline)."""
    from ragtune.models import resolve_model

    return resolve_model("sentence-transformers/all-MiniLM-L6-v2")


def bertscore(
    predictions: Sequence[str],
    references: Sequence[str],
    model: str | None = None,
    layer: int | None = None,
    batch_size: int = 32,
) -> dict[str, Any]:
    """BERTScore of each answer against its reference with ``model`` (a local transformers folder
    or name; default: the packaged MiniLM) at hidden layer ``layer`` (default: the last):
    ``{"BERTScore-P", "BERTScore-R", "BERTScore-F1"}`` means, ``per_example`` lists of (P, R, F1),
    and the ``model`` and ``layer`` used."""
    from bert_score import score
    from transformers import AutoConfig

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    model = model or default_bertscore_model()
    if layer is None:
        layer = int(AutoConfig.from_pretrained(model).num_hidden_layers)
    p, r, f = score(
        list(predictions),
        list(references),
        model_type=model,
        num_layers=layer,
        batch_size=batch_size,
        device="cpu",
        rescale_with_baseline=False,
        idf=False,
    )
    rows = [
        (float(a), float(b), float(c)) for a, b, c in zip(p.tolist(), r.tolist(), f.tolist(), strict=True)
    ]
    n = max(len(rows), 1)
    return {
        "BERTScore-P": sum(x[0] for x in rows) / n,
        "BERTScore-R": sum(x[1] for x in rows) / n,
        "BERTScore-F1": sum(x[2] for x in rows) / n,
        "per_example": rows,
        "model": str(model),
        "layer": layer,
    }


def answer_metrics(
    rows: Sequence[Any],
    metrics: dict[str, float],
    per: dict[str, dict[str, float]],
    with_meteor: bool = False,
    bertscore_model: str | None = None,
    bertscore_layer: int | None = None,
) -> dict[str, Any]:
    """Add to ``metrics`` / ``per`` (of :func:`ragtune.eval.generation.score_predictions`) the
    decision metrics when every row carries a gold decision, METEOR when asked, BERTScore with
    ``bertscore_model`` (``"default"``: the packaged MiniLM); returns what the metrics file should
    also record (METEOR's stages, BERTScore's model and layer)."""
    predictions = [r.prediction for r in rows]
    references = [r.reference for r in rows]
    extra: dict[str, Any] = {}
    decided = [r for r in rows if r.decision is not None]
    if decided and len(decided) == len(rows):
        metrics.update(decision_metrics(predictions, [r.decision for r in rows]))
        for r in rows:
            per[r.id]["decision_correct"] = float(stated_decision(r.prediction) == r.decision.lower())
    if with_meteor:
        mean, scores, stages = meteor(predictions, references)
        metrics["METEOR"] = mean
        for r, m in zip(rows, scores, strict=True):
            per[r.id]["METEOR"] = m
        extra["meteor_stages"] = stages
    if bertscore_model is not None:
        model = None if bertscore_model == "default" else bertscore_model
        result = bertscore(predictions, references, model, bertscore_layer)
        for key in ("BERTScore-P", "BERTScore-R", "BERTScore-F1"):
            metrics[key] = result[key]
        for r, (p, rc, f) in zip(rows, result["per_example"], strict=True):
            per[r.id].update({"BERTScore-P": p, "BERTScore-R": rc, "BERTScore-F1": f})
        extra["bertscore"] = {"model": result["model"], "layer": result["layer"]}
    return extra
