"""Synthetic (evidence, claim, supported?) examples made from any corpus, for the faithfulness checker.

No labels and no model are needed: every example is built from passage text by rules, so a user's
own documents give a checker for their domain. For a source sentence ``S`` of a passage, the
*evidence* is a window of sentences around ``S`` (sometimes followed by a sentence of another
passage, as RAG contexts mix documents), and the *claims* come in matched pairs, one supported and
one not, in the same form and of similar length, so that neither length nor form gives the label
away (the shortcut that makes answer length alone score AUROC 0.94 on HaluEval):

==================  ==========================================  ==================================================
kind                supported claim                             unsupported claim
==================  ==========================================  ==================================================
``sentence``        ``S``                                       ``S`` with an entity or number swapped for
                                                                another of the same passage (every word still in
                                                                the evidence) or of another passage
``negation``        ``S``                                       ``S`` negated ("was" -> "was not", "not" removed)
``relation``        ``S``                                       ``S`` with two of its entities exchanged
``span``            cloze question of ``S`` + the blanked span  the same question + another span (same passage
                                                                or another), or a number changed
``answer_sentence`` cloze question + ``S`` as the answer        the question + ``S`` with the span swapped
``extension``       question + span + a clause of the evidence  question + span + a clause of another passage
``other_passage``   ``S``                                       a sentence of another passage
``yes_no``          "Is it true that S'?" + the right yes/no   the same question + the wrong one (``S'`` is ``S``
                                                                or ``S`` with a span swapped or negated)
==================  ==========================================  ==================================================

A claim is written as the checker reads it at scoring time (:func:`claim_text`): ``"Question: ...
Answer: ..."`` when there is a question, else the statement alone. Everything is seeded.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["KINDS", "Example", "claim_text", "make_examples", "split_sentences"]

#: Claim kinds, in the order of the table above.
KINDS = (
    "sentence",
    "negation",
    "relation",
    "span",
    "answer_sentence",
    "extension",
    "other_passage",
    "yes_no",
)

# a sentence ends at . ! ? followed by space and a capital/digit, or glued to a capital ("1846).First")
_SENT_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])|(?<=[a-z)\]]{2}[.!?])(?=[A-Z][a-z])")
# an entity: capitalised words (joined by a few lowercase particles), or a token with a capital and
# a digit/hyphen inside ("IL-6", "COVID-19"); a number: digits with separators and a unit sign
_ENTITY = re.compile(
    r"\b[A-Z][\w'’\-]*[\w](?:\s+(?:of|the|de|la|van|von|and|for)\s+[A-Z][\w'’\-]*[\w]|\s+[A-Z][\w'’\-]*[\w])*"
)
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?:\s?%)?(?![\w])")
_AUX = re.compile(r"\b(is|are|was|were|has|have|had|can|could|does|did|do|will|would|should|may)\b")
_NEGATED = re.compile(r"\b(is|are|was|were|has|have|had|can|could|does|did|do|will|would|should|may) not\b")


@dataclass(frozen=True)
class Example:
    """One training pair: the evidence, the claim as the checker reads it, the label, its kind and
    where it came from (the passage id of the source sentence)."""

    evidence: str
    claim: str
    label: int
    kind: str
    passage_id: str


def claim_text(answer: str, question: str | None = None) -> str:
    """The claim as the checker reads it: ``"Question: q Answer: a"``, or ``a`` alone."""
    answer = " ".join(answer.split())
    if question and question.strip():
        return f"Question: {' '.join(question.split())} Answer: {answer}"
    return answer


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (also those glued without a space, as in "1846).First for Women")."""
    return [s.strip() for s in _SENT_END.split(" ".join(text.split())) if s.strip()]


def _spans(sentence: str) -> list[tuple[int, int, str]]:
    """(start, end, type) of the entities and numbers of ``sentence``; a sentence-initial single
    capitalised word is not an entity (it is capitalised for being first)."""
    out = []
    for m in _ENTITY.finditer(sentence):
        text = m.group(0)
        if m.start() == 0 and " " not in text and not any(c.isdigit() or c == "-" for c in text):
            continue
        if len(text) >= 2:
            out.append((m.start(), m.end(), "entity"))
    taken = [(s, e) for s, e, _ in out]
    for m in _NUMBER.finditer(sentence):
        if not any(s <= m.start() < e for s, e in taken):
            out.append((m.start(), m.end(), "number"))
    return sorted(out)


def _change_number(text: str, rng: random.Random) -> str:
    digits = re.sub(r"[^\d]", "", text)
    value = int(digits[:9]) if digits else 0
    new = value
    while new == value:
        new = max(0, value + rng.choice([-1, 1]) * rng.randint(1, max(2, value // 3 + 1)))
    return (
        text.replace(text.rstrip("% ").strip(), str(new), 1)
        if "." not in text and "," not in text
        else str(new)
    )


def _negate(sentence: str) -> str | None:
    if _NEGATED.search(sentence):
        return _NEGATED.sub(lambda m: m.group(1), sentence, count=1)
    if _AUX.search(sentence):
        return _AUX.sub(lambda m: m.group(1) + " not", sentence, count=1)
    return None


class _Source:
    """One passage cut into sentences, with the spans of each."""

    def __init__(self, pid: str, text: str):
        self.id = pid
        self.sentences = split_sentences(text)
        self.spans = [_spans(s) for s in self.sentences]

    def pool(self, kind: str) -> list[str]:
        return [s[a:b] for s, sp in zip(self.sentences, self.spans) for a, b, t in sp if t == kind]


def make_examples(
    passages: Sequence[tuple[str, str]],
    *,
    per_passage: int = 2,
    window: int = 3,
    distractor_share: float = 0.5,
    kinds: Sequence[str] = KINDS,
    min_words: int = 6,
    max_words: int = 60,
    seed: int = 0,
) -> list[Example]:
    """Matched supported / unsupported claims for up to ``per_passage`` source sentences of each
    ``(id, text)`` passage (sentences of ``min_words``..``max_words`` words), one pair per sentence
    of a kind drawn from ``kinds``; the evidence is up to ``window`` sentences around the source
    sentence, plus (with probability ``distractor_share``) one sentence of another passage."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown claim kinds {unknown}; choose from {list(KINDS)}")
    if not kinds:
        raise ValueError("kinds must name at least one claim kind")
    rng = random.Random(seed)
    sources = [_Source(pid, text) for pid, text in passages if text and text.strip()]
    sources = [s for s in sources if s.sentences]
    if len(sources) < 2:
        raise ValueError(f"synthetic examples need at least 2 non-empty passages, got {len(sources)}")
    out: list[Example] = []
    for src in sources:
        usable = [
            i
            for i, s in enumerate(src.sentences)
            if min_words <= len(s.split()) <= max_words and src.spans[i]
        ]
        rng.shuffle(usable)
        for i in usable[:per_passage]:
            # one other passage lends the evidence its distractor sentence, another the wrong claims
            mixed_in, other = _two_others(sources, src, rng)
            evidence = _evidence(src, i, mixed_in, window, distractor_share, rng)
            pair = _pair(src, i, other, list(kinds), rng)
            if pair is None or pair[1][0] in evidence:
                continue  # an "unsupported" claim the evidence states word for word is no negative
            for claim, label, kind in pair:
                out.append(Example(evidence, claim, label, kind, src.id))
    return out


def _two_others(sources: list[_Source], src: _Source, rng: random.Random) -> tuple[_Source, _Source]:
    picked: list[_Source] = []
    while len(picked) < 2:
        cand = sources[rng.randrange(len(sources))]
        if cand is not src and (not picked or cand is not picked[0] or len(sources) < 3):
            picked.append(cand)
    return picked[0], picked[1]


def _evidence(src: _Source, i: int, other: _Source, window: int, share: float, rng: random.Random) -> str:
    lo = max(0, i - rng.randint(0, window - 1))
    sentences = src.sentences[lo : lo + window]
    if i >= lo + window:  # keep the source sentence in its window
        sentences = src.sentences[i - window + 1 : i + 1]
    if rng.random() < share:
        extra = other.sentences[rng.randrange(len(other.sentences))]
        sentences = [*sentences, extra] if rng.random() < 0.5 else [extra, *sentences]
    return " ".join(sentences)


def _cloze(sentence: str, a: int, b: int) -> str:
    q = sentence[:a] + "what" + sentence[b:]
    return q.rstrip(" .") + "?"


def _pair(src: _Source, i: int, other: _Source, kinds: list[str], rng: random.Random):
    """A (supported, unsupported) claim pair of a random kind that applies to sentence ``i``, or None."""
    s, spans = src.sentences[i], src.spans[i]
    rng.shuffle(kinds)
    for kind in kinds:
        a, b, typ = spans[rng.randrange(len(spans))]
        span = s[a:b]
        wrong = _wrong_span(src, other, span, typ, rng)
        if kind == "sentence" and wrong:
            return (s, 1, kind), (s[:a] + wrong + s[b:], 0, kind)
        if kind == "negation":
            negated = _negate(s)
            if negated:
                return (s, 1, kind), (negated, 0, kind)
        if kind == "relation":
            ents = [(x, y) for x, y, t in spans if t == "entity" and s[x:y] != span]
            if typ == "entity" and ents:
                x, y = ents[rng.randrange(len(ents))]
                (p0, p1), (q0, q1) = sorted([(a, b), (x, y)])
                if p1 <= q0 and s[p0:p1] != s[q0:q1]:
                    swapped = s[:p0] + s[q0:q1] + s[p1:q0] + s[p0:p1] + s[q1:]
                    return (s, 1, kind), (swapped, 0, kind)
        question = _cloze(s, a, b)
        if kind == "span" and wrong:
            return (claim_text(span, question), 1, kind), (claim_text(wrong, question), 0, kind)
        if kind == "answer_sentence" and wrong:
            return (claim_text(s, question), 1, kind), (claim_text(s[:a] + wrong + s[b:], question), 0, kind)
        if kind == "extension":
            own = [x for j, x in enumerate(src.sentences) if j != i]
            clause = _clause(own[rng.randrange(len(own))] if own else s, rng)
            foreign = _clause(other.sentences[rng.randrange(len(other.sentences))], rng)
            return (
                (claim_text(f"{span}, {clause}", question), 1, kind),
                (claim_text(f"{span}, {foreign}", question), 0, kind),
            )
        if kind == "yes_no":
            changed = s[:a] + wrong + s[b:] if wrong and rng.random() < 0.5 else _negate(s)
            if changed:
                true = rng.random() < 0.5
                asked = _yes_no_question(s if true else changed)
                right, wrong_answer = ("yes", "no") if true else ("no", "yes")
                return (claim_text(right, asked), 1, kind), (claim_text(wrong_answer, asked), 0, kind)
        if kind == "other_passage":
            return (s, 1, kind), (other.sentences[rng.randrange(len(other.sentences))], 0, kind)
    return None


def _yes_no_question(sentence: str) -> str:
    body = sentence.rstrip(" .!?")
    if body[:2] != body[:2].upper():  # "The drug ..." -> "the drug ..."; keep "IL-6 ..." as written
        body = body[:1].lower() + body[1:]
    return f"Is it true that {body}?"


def _wrong_span(src: _Source, other: _Source, span: str, typ: str, rng: random.Random) -> str | None:
    """Another span of the same type: from the same passage (every word then still in the
    evidence) half the time, else from the other passage; numbers may also be changed."""
    if typ == "number" and rng.random() < 0.5:
        return _change_number(span, rng)
    pools = [src.pool(typ), other.pool(typ)]
    if rng.random() < 0.5:
        pools.reverse()
    for pool in pools:
        choices = [x for x in pool if x.lower() != span.lower() and x.lower() not in span.lower()]
        if choices:
            return choices[rng.randrange(len(choices))]
    return _change_number(span, rng) if typ == "number" else None


def _clause(sentence: str, rng: random.Random) -> str:
    """A few words of ``sentence`` as a trailing clause (lower-cased start, no final stop)."""
    words = sentence.rstrip(" .!?").split()
    if len(words) > 12:
        start = rng.randrange(0, len(words) - 8)
        words = words[start : start + rng.randint(6, 12)]
    text = " ".join(words)
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text
