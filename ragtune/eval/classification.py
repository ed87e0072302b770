"""Binary classification metrics of scored pairs: Accuracy, Precision, Recall and F1 at a threshold,
and the threshold that maximises F1 on validation data (to be applied, unchanged, to test data).

A reranker's (query, passage) scores are probabilities here (the sigmoid of its logit); a pair is
predicted relevant when its score is >= the threshold. The metrics equal scikit-learn's
``accuracy_score`` and ``precision_recall_fscore_support(average="binary", zero_division=0)``.
"""

from __future__ import annotations

from collections.abc import Sequence


def classification_metrics(
    labels: Sequence[int | bool], scores: Sequence[float], threshold: float
) -> dict[str, float]:
    """``Accuracy``, ``Precision``, ``Recall``, ``F1`` of predicting ``score >= threshold`` against
    ``labels`` (1 = relevant); 0 where a ratio has an empty denominator. Also the counts."""
    if len(labels) != len(scores):
        raise ValueError(f"{len(labels)} labels but {len(scores)} scores")
    if not labels:
        raise ValueError("no pairs to score")
    tp = fp = fn = tn = 0
    for y, s in zip(labels, scores, strict=True):
        pred = s >= threshold
        if pred and y:
            tp += 1
        elif pred:
            fp += 1
        elif y:
            fn += 1
        else:
            tn += 1
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "Accuracy": (tp + tn) / len(labels),
        "Precision": precision,
        "Recall": recall,
        "F1": f1,
        "threshold": threshold,
        "pairs": len(labels),
        "positives": tp + fn,
    }


def best_f1_threshold(labels: Sequence[int | bool], scores: Sequence[float]) -> float:
    """The threshold with the highest F1 on these pairs (ties: the highest threshold, the more
    precise choice). Candidates are the distinct scores, so the result is one of them; 0.5 when no
    pair is relevant."""
    if not any(labels):
        return 0.5
    pairs = sorted(zip(scores, labels, strict=True), key=lambda x: -x[0])
    n_pos = sum(1 for y in labels if y)
    best_f1, best_t = -1.0, 0.5
    tp = fp = 0
    i = 0
    while i < len(pairs):
        t = pairs[i][0]
        while i < len(pairs) and pairs[i][0] == t:  # every pair scoring >= t is predicted relevant
            tp += 1 if pairs[i][1] else 0
            fp += 0 if pairs[i][1] else 1
            i += 1
        f1 = 2 * tp / (2 * tp + fp + (n_pos - tp))
        if f1 > best_f1:
            best_f1, best_t = f1, t
    return float(best_t)
