"""Scoring answers with a trained faithfulness checker.

:class:`FaithfulnessChecker` loads a checker (``ragtune faithfulness train`` writes one) and scores
answers against their passages: each passage is read as evidence for the claim
(:func:`ragtune.checker.synth.claim_text` of the answer and its question), and an answer's score is
the highest probability over its passages (a claim needs one passage that supports it; MiniCheck
and AlignScore take the same maximum over evidence chunks). :func:`score_file` scores a predictions
JSONL file for ``ragtune faithfulness score``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ragtune.checker.synth import claim_text
from ragtune.errors import UserError

log = logging.getLogger(__name__)

#: Written beside a trained checker's CrossEncoder files: marks the folder and states the claim format.
CHECKER_FILE = "checker.json"


def claim_scores(
    model: Any,
    pairs: Sequence[tuple[str, str]],
    *,
    batch_size: int = 32,
    precision: str = "auto",
    show_progress: bool = True,
) -> list[float]:
    """``sigmoid(logit)`` of each (evidence, claim) pair: the probability the evidence supports it."""
    from scipy.special import expit

    from ragtune.reranker.model import score_pairs

    logits = score_pairs(
        model, pairs, batch_size=batch_size, precision=precision, show_progress=show_progress
    )
    return expit(logits).tolist()


def checker_folder(path: str | Path) -> Path:
    """The model folder of a checker given as that folder or as the training run's output folder."""
    path = Path(path)
    for folder in (path, path / "model"):
        if (folder / CHECKER_FILE).exists():
            return folder
    raise UserError(
        f"{path} is not a faithfulness checker (no {CHECKER_FILE} in it or in {path / 'model'}): "
        "train one with `ragtune faithfulness train`"
    )


class FaithfulnessChecker:
    """A trained checker, callable as ``checker(answers, contexts, questions=None) -> scores``."""

    def __init__(
        self,
        path: str | Path,
        *,
        precision: str = "auto",
        batch_size: int = 32,
        max_length: int | None = None,
        device: str | None = None,
        progress: bool = False,
    ):
        from ragtune.reranker.model import load_cross_encoder

        self.folder = checker_folder(path)
        self.precision, self.batch_size, self.progress = precision, batch_size, progress
        self.model = load_cross_encoder(
            str(self.folder), max_length=max_length, device=device, precision=precision, trained=True
        )
        self.model.eval()

    def __call__(
        self,
        answers: Sequence[str],
        contexts: Sequence[Sequence[str]],
        questions: Sequence[str | None] | None = None,
    ) -> list[float]:
        """Per answer, the highest support probability over its passages (0.0 with no passage)."""
        if len(answers) != len(contexts):
            raise ValueError(f"{len(answers)} answers but {len(contexts)} context lists")
        questions = [None] * len(answers) if questions is None else list(questions)
        if len(questions) != len(answers):
            raise ValueError(f"{len(answers)} answers but {len(questions)} questions")
        pairs, owner = [], []
        for i, (a, ctx, q) in enumerate(zip(answers, contexts, questions, strict=True)):
            claim = claim_text(a, q)
            for passage in ctx:
                if passage and passage.strip():
                    pairs.append((passage, claim))
                    owner.append(i)
        probs = claim_scores(
            self.model,
            pairs,
            batch_size=self.batch_size,
            precision=self.precision,
            show_progress=self.progress,
        )
        best = [0.0] * len(answers)
        for i, p in zip(owner, probs, strict=True):
            best[i] = max(best[i], p)
        return best


def score_file(
    predictions: str | Path, out: str | Path, checker_path: str | Path, **kwargs: Any
) -> dict[str, Any]:
    """Score a predictions JSONL file (rows with ``prediction`` and ``contexts``; ``question`` used
    when present): writes ``out`` (each row's id and ``model_faithfulness``) and returns the summary."""
    from ragtune.data.io import DataError, atomic_write_text, load_predictions, write_jsonl

    rows = load_predictions(predictions)
    missing = [i for i, r in enumerate(rows, start=1) if r.contexts is None]
    if missing:
        raise DataError(predictions, missing[0], "contexts", "the checker needs each answer's passages")
    checker = FaithfulnessChecker(checker_path, **kwargs)
    scores = checker([r.prediction for r in rows], [r.contexts for r in rows], [r.question for r in rows])
    write_jsonl(out, [{"id": r.id, "model_faithfulness": s} for r, s in zip(rows, scores, strict=True)])
    summary = {
        "n": len(rows),
        "model_faithfulness": sum(scores) / len(scores),
        "checker": str(checker.folder),
    }
    atomic_write_text(Path(str(out) + ".summary.json"), json.dumps(summary, indent=2) + "\n")
    return summary
