"""Prompts for grounded generation: the question and numbered passages, through the chat template.

A training example is ``prompt tokens + answer tokens + end-of-turn``; only the answer and the
end-of-turn token carry labels. When the example is longer than ``max_length``, the question and the
answer are kept whole and the passages are trimmed, lowest-ranked first: the last passage loses
tokens from its end, and is dropped when nothing of it fits, then the one before it, and so on.
An example whose question and answer alone do not fit is an error, never a silently masked row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from ragtune.data.schema import Passage
from ragtune.generator.config import PromptConfig

IGNORE_INDEX = -100  # label of tokens that do not count in the loss


def format_passages(passages: Sequence[Passage]) -> str:
    """``[1] Title\\ntext`` blocks separated by blank lines."""
    blocks = []
    for i, p in enumerate(passages, start=1):
        blocks.append(f"[{i}] {p.title}\n{p.text}" if p.title else f"[{i}] {p.text}")
    return "\n\n".join(blocks)


def user_message(question: str, passages: Sequence[Passage]) -> str:
    """The user turn: the numbered passages (if any), then the question."""
    if not passages:
        return f"Question: {question}"
    return f"Passages:\n{format_passages(passages)}\n\nQuestion: {question}"


def end_of_turn_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The tokens that close an assistant turn: what the chat template writes after a reply
    (``<|im_end|>`` for ChatML), found by rendering a probe conversation; EOS without a template."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if not getattr(tokenizer, "chat_template", None):
        return eos
    probe = "Probe"
    messages = [{"role": "user", "content": "Q"}]
    prefix = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": probe}], tokenize=False)
    if not full.startswith(prefix + probe):
        return eos
    suffix = full[len(prefix) + len(probe) :].rstrip()
    ids = tokenizer(suffix, add_special_tokens=False)["input_ids"] if suffix else []
    return ids or eos


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of one example, its labels (``IGNORE_INDEX`` on the prompt) and what was kept."""

    input_ids: list[int]
    labels: list[int]
    n_prompt: int
    passages_kept: int
    truncated: bool


class PromptEncoder:
    """Builds prompts and training examples for one tokenizer.

    With a chat template (ChatML for SmolLM2), the prompt is ``system + user`` rendered with the
    generation prompt, and the answer is followed by the template's end-of-turn tokens. Without one
    (base models), the prompt is plain text ending in ``Answer:`` and the answer ends with EOS.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, cfg: PromptConfig, max_length: int):
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.max_length = max_length
        self.use_chat_template = bool(getattr(tokenizer, "chat_template", None))
        self.end_ids = end_of_turn_ids(tokenizer)

    def render(self, question: str, passages: Sequence[Passage]) -> str:
        """The prompt text, ending where the answer starts."""
        user = user_message(question, passages)
        if self.use_chat_template:
            messages = [{"role": "system", "content": self.cfg.system}, {"role": "user", "content": user}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return f"{self.cfg.system}\n\n{user}\n\nAnswer:"

    def prompt_ids(self, question: str, passages: Sequence[Passage]) -> list[int]:
        text = self.render(question, passages)
        return self.tokenizer(text, add_special_tokens=not self.use_chat_template)["input_ids"]

    def answer_ids(self, answer: str) -> list[int]:
        text = answer if self.use_chat_template else " " + answer
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] + self.end_ids

    def fit_passages(
        self, question: str, passages: Sequence[Passage], budget: int
    ) -> tuple[list[Passage], bool]:
        """The longest prefix of ``passages`` (the last one possibly cut) whose prompt fits ``budget``
        tokens, and whether anything was trimmed."""
        passages = list(passages[: self.cfg.max_passages])
        if len(self.prompt_ids(question, passages)) <= budget:
            return passages, False
        while passages:
            last = passages.pop()
            if len(self.prompt_ids(question, passages)) > budget:
                continue  # even without the last passage it does not fit: drop it, try the one before
            # Keep as much of the last passage as fits: binary search over its token count.
            tokens = self.tokenizer(last.text, add_special_tokens=False)["input_ids"]
            lo, hi = 0, len(tokens)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                cut = Passage(last.id, self.tokenizer.decode(tokens[:mid]), last.title)
                if len(self.prompt_ids(question, [*passages, cut])) <= budget:
                    lo = mid
                else:
                    hi = mid - 1
            if lo > 0:
                passages.append(Passage(last.id, self.tokenizer.decode(tokens[:lo]), last.title))
            return passages, True
        return [], True

    def encode(self, question: str, passages: Sequence[Passage], answer: str) -> EncodedExample:
        """A training example: prompt + answer + end of turn, labels on the answer part only."""
        return self.encode_answers(question, passages, [answer])[0]

    def encode_answers(
        self, question: str, passages: Sequence[Passage], answers: Sequence[str]
    ) -> list[EncodedExample]:
        """One example per answer, all with the same prompt: the passages are trimmed to leave room
        for the longest answer (a preference pair's two answers must follow the same prompt)."""
        targets = []
        for answer in answers:
            target = self.answer_ids(answer)
            if not answer.strip() or len(target) <= len(self.end_ids):
                raise ValueError("the answer is empty: the example would have no answer token to learn")
            targets.append(target)
        longest = max(len(t) for t in targets)
        budget = self.max_length - longest
        kept, truncated = self.fit_passages(question, passages, budget)
        prompt = self.prompt_ids(question, kept)
        if len(prompt) > budget:
            raise ValueError(
                f"question and answer alone take {len(prompt) + longest} tokens, more than "
                f"max_length={self.max_length}: no answer token would be left after truncation"
            )
        return [
            EncodedExample(
                input_ids=prompt + target,
                labels=[IGNORE_INDEX] * len(prompt) + target,
                n_prompt=len(prompt),
                passages_kept=len(kept),
                truncated=truncated,
            )
            for target in targets
        ]
