"""Faithfulness of an answer to its contexts: how much of what the answer says the contexts support.

Two scorers, both returning numbers in ``[0, 1]`` (higher = more faithful):

- :func:`lexical_faithfulness` needs no model: the share of the answer's content words, and of its
  content-word bigrams, that occur in the contexts.
- :func:`likelihood_faithfulness` asks a language model how much the contexts raise the likelihood
  of the answer (pointwise mutual information between answer and contexts). It takes a
  log-likelihood *function*, not a model, so this module stays free of torch: the torch side is
  :class:`ragtune.generator.likelihood.AnswerLikelihood`, and any callable with the same contract
  works (a remote API, a cached table, a test double).

:func:`faithfulness_prompt` builds the prompt both sides share, :func:`lexically_supported` flags
answers whose every content word occurs in the contexts (where word overlap cannot tell a right
answer from a wrong one), and :func:`auroc` measures how well a score separates two classes.

This module imports no model code; ``import ragtune.eval.faithfulness`` leaves torch unloaded.
"""

from __future__ import annotations

import itertools
import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Literal

__all__ = [
    "STOPWORDS",
    "LogLik",
    "auroc",
    "content_tokens",
    "faithfulness_prompt",
    "lexical_faithfulness",
    "lexically_supported",
    "likelihood_faithfulness",
]

#: A short English stopword list: articles, pronouns, auxiliaries, prepositions, conjunctions and the
#: answer particles "yes"/"no". Negations ("not", "never", "nor") are deliberately *not* stopwords:
#: they flip a claim, so an answer that negates must find its negation in the evidence.
# fmt: off
STOPWORDS: frozenset[str] = frozenset([
    "a", "an", "the", "this", "that", "these", "those", "there", "here",
    "i", "me", "my", "we", "our", "us", "you", "your", "he", "him", "his", "she", "her", "it",
    "its", "they", "them", "their", "who", "whom", "whose", "which", "what", "when", "where", "why",
    "how",
    "is", "are", "was", "were", "be", "been", "being", "am", "do", "does", "did", "done", "doing",
    "have", "has", "had", "having", "will", "would", "shall", "should", "can", "could", "may",
    "might", "must",
    "of", "in", "on", "at", "to", "for", "from", "by", "with", "without", "about", "as", "into",
    "onto", "over", "under", "than", "then", "so", "such",
    "and", "or", "but", "if", "because", "while", "both", "either", "each", "all", "any", "some",
    "more", "most", "other", "also", "only", "just", "very", "too",
    "s", "t", "yes", "no",
])
# fmt: on

_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+")


def _fold(text: str) -> str:
    """Lowercase and strip accents (``"Rhöner"`` -> ``"rhoner"``)."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def content_tokens(text: str) -> list[str]:
    """Lowercased, accent-folded word tokens of ``text`` without :data:`STOPWORDS`, in order.

    A token is a run of letters or a number (``"6.213"`` and ``"1,000"`` stay whole), so text glued
    across a sentence end (``"century.First"``) still splits into words.
    """
    return [tok for tok in _TOKEN.findall(_fold(text)) if tok not in STOPWORDS]


def _bigrams(tokens: Sequence[str]) -> list[tuple[str, str]]:
    return list(itertools.pairwise(tokens))


def lexical_faithfulness(answer: str, contexts: Sequence[str]) -> float:
    """Share of the answer that the contexts support word for word, in ``[0, 1]``.

    With ``A`` the answer's content tokens (:func:`content_tokens`, counted with repetition) and
    ``C`` those of all contexts together::

        unigram = |{a in A : a in C}| / |A|
        bigram  = |{(a_i, a_i+1) in A : the pair occurs consecutively in some context}| / (|A| - 1)
        score   = (unigram + bigram) / 2      if |A| >= 2, else unigram

    The unigram term rewards answers whose words all come from the evidence; the bigram term
    rewards answers that keep the evidence's word order (names, dates, fixed phrases), so an answer
    that recombines context words ("Kelli Clarkson" from "Kelli Ward ... Kelly Clarkson") scores
    below one that quotes them. An answer with no content words (empty, or only "yes"/"no")
    claims nothing the contexts could contradict word for word and scores ``1.0``.
    """
    answer_tokens = content_tokens(answer)
    if not answer_tokens:
        return 1.0
    context_tokens = [content_tokens(ctx) for ctx in contexts]
    vocabulary = {tok for toks in context_tokens for tok in toks}
    unigram = sum(tok in vocabulary for tok in answer_tokens) / len(answer_tokens)
    if len(answer_tokens) < 2:
        return unigram
    context_bigrams = {bg for toks in context_tokens for bg in _bigrams(toks)}
    answer_bigrams = _bigrams(answer_tokens)
    bigram = sum(bg in context_bigrams for bg in answer_bigrams) / len(answer_bigrams)
    return (unigram + bigram) / 2


def lexically_supported(answer: str, contexts: Sequence[str]) -> bool:
    """True when every content word of ``answer`` occurs somewhere in ``contexts``.

    On such answers a word-overlap score cannot separate faithful from unfaithful: the words are all
    there, only their relation may be wrong ("Pablo Trapero was born first." against a passage that
    gives both birth dates).
    """
    vocabulary = {tok for ctx in contexts for tok in content_tokens(ctx)}
    return all(tok in vocabulary for tok in content_tokens(answer))


def faithfulness_prompt(question: str | None, contexts: Sequence[str] | None) -> str:
    """The user message a language model scores an answer under.

    With contexts: an instruction, the numbered passages, then the question (if any). Without
    contexts (``None`` or empty): the same instruction and question with no passages, the reference
    condition of pointwise mutual information. A string only, so it lives here, model-free.
    """
    parts: list[str] = []
    if contexts:
        parts.append("Answer the question using the passages.")
        parts.extend(f"Passage {i}: {ctx.strip()}" for i, ctx in enumerate(contexts, start=1))
    else:
        parts.append("Answer the question.")
    if question:
        parts.append(f"Question: {question.strip()}")
    return "\n\n".join(parts)


#: ``loglik(pairs) -> [(sum_logprob, n_tokens), ...]``: for each ``(prompt, continuation)`` pair, the
#: summed natural-log probability of the continuation's tokens given the prompt, and their number.
LogLik = Callable[[list[tuple[str, str]]], list[tuple[float, int]]]


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def likelihood_faithfulness(
    answers: Sequence[str],
    contexts: Sequence[Sequence[str]],
    questions: Sequence[str | None] | None,
    loglik: LogLik,
    *,
    mode: Literal["pmi", "conditional"] = "pmi",
    scale: float = 1.0,
) -> list[float]:
    """Model-based faithfulness: how much the contexts raise the model's likelihood of the answer.

    For answer ``a`` (``n`` tokens), question ``q`` and contexts ``c``, with ``loglik`` giving
    ``log p(a | prompt)`` summed over the answer's tokens::

        cond = log p(a | q, c) / n            mean per-token log-likelihood with the contexts
        prior = log p(a | q) / n              ... and without them
        pmi = cond - prior                    per-token pointwise mutual information of a and c
        score = sigmoid(scale * pmi)          (mode="pmi", the default)
        score = exp(cond)                     (mode="conditional": per-token likelihood, geometric mean)

    PMI is the conditional pointwise mutual information used against hallucination by van der Poel,
    Cotterell & Meister, "Mutual Information Alleviates Hallucinations in Abstractive
    Summarization" (EMNLP 2022), and against surface-form bias by Holtzman et al., "Surface Form
    Competition" (EMNLP 2021); ``mode="conditional"`` is the likelihood score of BARTScore
    (Yuan et al., NeurIPS 2021). Two traps shape the design:

    - *Length.* A summed log-likelihood falls with every token, so it would prefer short answers
      whatever they say; both terms are per-token means, and ``pmi`` is a difference of two
      likelihoods of the same tokens, so how long or how fluent an answer is cancels out.
    - *Word overlap.* An answer built from context words ("Pablo Trapero was born first.") passes a
      lexical check; PMI asks instead whether the passages make these tokens, in this order, more
      likely than the question alone does, which depends on what the passages say.

    ``pmi = 0`` (contexts change nothing) maps to ``0.5``; ``scale`` sets how sharply the sigmoid
    saturates and does not change rankings. ``questions`` may be ``None`` (score against contexts
    alone); prompts come from :func:`faithfulness_prompt`. ``loglik`` is called once with all
    pairs, so it can batch them. Answers that tokenise to nothing (``n = 0``) score ``0.5``.
    """
    if len(answers) != len(contexts):
        raise ValueError(f"{len(answers)} answers but {len(contexts)} context lists")
    if questions is None:
        questions = [None] * len(answers)
    if len(questions) != len(answers):
        raise ValueError(f"{len(answers)} answers but {len(questions)} questions")
    if mode not in ("pmi", "conditional"):
        raise ValueError(f"mode must be 'pmi' or 'conditional', got {mode!r}")

    pairs = [(faithfulness_prompt(q, list(c)), a) for a, c, q in zip(answers, contexts, questions)]
    if mode == "pmi":
        pairs += [(faithfulness_prompt(q, None), a) for a, q in zip(answers, questions)]
    results = loglik(pairs)
    if len(results) != len(pairs):
        raise ValueError(f"loglik returned {len(results)} results for {len(pairs)} pairs")

    scores: list[float] = []
    for i in range(len(answers)):
        cond_sum, n = results[i]
        if n <= 0:
            scores.append(0.5)
            continue
        cond = cond_sum / n
        if mode == "conditional":
            scores.append(math.exp(min(cond, 0.0)))
            continue
        prior_sum, n_prior = results[len(answers) + i]
        if n_prior != n:
            raise ValueError(f"answer {i}: {n} tokens with contexts but {n_prior} without")
        scores.append(_sigmoid(scale * (cond - prior_sum / n)))
    return scores


def auroc(labels: Sequence[int | bool], scores: Sequence[float]) -> float:
    """Area under the ROC curve: the probability that a random positive outscores a random negative.

    Computed as the Mann-Whitney U statistic from average ranks, so a tie between a positive and a
    negative counts ``0.5``. ``labels`` are 1/True for positives and 0/False for negatives.
    """
    if len(labels) != len(scores):
        raise ValueError(f"{len(labels)} labels but {len(scores)} scores")
    if any(math.isnan(s) for s in scores):
        raise ValueError("scores contain NaN")
    n_pos = sum(1 for y in labels if y)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"auroc needs both classes, got {n_pos} positives and {n_neg} negatives")
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        average = (start + end) / 2 + 1  # ranks are 1-based
        for k in range(start, end + 1):
            ranks[order[k]] = average
        start = end + 1
    rank_sum = sum(r for r, y in zip(ranks, labels) if y)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
