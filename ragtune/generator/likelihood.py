"""Log-likelihood of an answer given a prompt under a causal LM: the torch side of faithfulness.

:class:`AnswerLikelihood` is the ``loglik`` callable that
:func:`ragtune.eval.faithfulness.likelihood_faithfulness` expects: it maps ``(prompt, continuation)``
pairs to ``(sum of log-probabilities of the continuation's tokens, number of those tokens)``. It is
also what LM-supervised retrieval needs (the generator's likelihood of a gold answer given a passage).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ragtune.generator.prompt import IGNORE_INDEX, EncodedExample, end_of_turn_ids
from ragtune.generator.scoring import answer_logprobs
from ragtune.models import resolve_model

__all__ = ["AnswerLikelihood"]


class AnswerLikelihood:
    """Score continuations of prompts: ``__call__(pairs) -> [(sum_logprob, n_tokens), ...]``.

    When the tokenizer has a chat template, a pair is scored as a conversation: the prompt is the
    user message and the continuation the assistant's reply. The prompt is rendered with the
    generation prompt (``<|im_start|>assistant\\n`` for ChatML) and tokenised; the continuation's
    tokens and the template's end-of-turn token(s) (``<|im_end|>``) are appended, so the boundary
    between prompt and answer is exactly where a model would start generating. Without a chat
    template the prompt is tokenised as is (with the tokenizer's special tokens, such as BOS) and the
    continuation, plus EOS, appended.

    Only the continuation's tokens are scored; with ``end_of_turn=True`` (the default) the end-of-turn
    token counts as one of them, so that the score says the answer is complete (a correct answer's
    prefix does not score as well as the answer). ``n_tokens`` counts the scored tokens.

    Args:
        model: a model name or path (through :func:`ragtune.models.resolve_model`, so
            ``"SmolLM2-135M-Instruct"`` loads offline) or a loaded causal LM.
        tokenizer: the tokenizer, required with a loaded model; loaded from ``model`` otherwise.
        batch_size: sequences per forward pass. Pairs are sorted by length so a batch pads little.
        precision: ``auto | fp32 | bf16`` (:mod:`ragtune.precision`); when it resolves to bf16 the
            forward pass runs under bf16 autocast, and log probabilities are still taken in float32
            from the (bfloat16) logits.
        end_of_turn: append and score the end-of-turn token.
        max_length: longest sequence; a longer prompt loses tokens from its start (the continuation is
            always kept whole). Defaults to the model's ``max_position_embeddings``.
        progress: show a progress bar over batches.
    """

    def __init__(
        self,
        model: str | PreTrainedModel = "SmolLM2-135M-Instruct",
        tokenizer: PreTrainedTokenizerBase | None = None,
        *,
        batch_size: int = 16,
        precision: str = "auto",
        end_of_turn: bool = True,
        max_length: int | None = None,
        progress: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(model, str):
            path = resolve_model(model)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)
        elif tokenizer is None:
            raise ValueError("a loaded model needs its tokenizer: AnswerLikelihood(model, tokenizer)")
        self.model: PreTrainedModel = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.precision = precision
        self.end_of_turn = end_of_turn
        self.max_length = max_length or getattr(model.config, "max_position_embeddings", None)
        self.progress = progress
        self.use_chat_template = bool(getattr(tokenizer, "chat_template", None))
        self.end_ids: list[int] = end_of_turn_ids(tokenizer) if end_of_turn else []
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id: int = pad if pad is not None else 0
        forward = inspect.signature(model.forward).parameters
        self._keep_logits = "logits_to_keep" in forward

    def _render_prompt(self, prompt: str) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )

    def encode(self, prompt: str, continuation: str) -> tuple[list[int], int]:
        """Token ids of prompt + continuation (+ end of turn), and how many of them are the prompt."""
        if self.use_chat_template:
            prompt_ids = self.tokenizer(self._render_prompt(prompt), add_special_tokens=False)["input_ids"]
        else:
            prompt_ids = self.tokenizer(prompt)["input_ids"]
        cont_ids = self.tokenizer(continuation, add_special_tokens=False)["input_ids"] + self.end_ids
        if not cont_ids:
            return list(prompt_ids), len(prompt_ids)
        if self.max_length is not None and len(prompt_ids) + len(cont_ids) > self.max_length:
            room = self.max_length - len(cont_ids)
            if room < 1:
                raise ValueError(
                    f"continuation of {len(cont_ids)} tokens does not fit max_length={self.max_length}"
                )
            prompt_ids = prompt_ids[-room:]
        if not prompt_ids:
            raise ValueError("the prompt is empty: the first continuation token has nothing to condition on")
        return list(prompt_ids) + cont_ids, len(prompt_ids)

    def __call__(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, int]]:
        """``[(sum of natural-log probabilities of the continuation's tokens, their number), ...]``
        (:func:`ragtune.generator.scoring.answer_logprobs`, batches sorted by length)."""
        examples = []
        for prompt, continuation in pairs:
            ids, n_prompt = self.encode(prompt, continuation)
            examples.append(
                EncodedExample(ids, [IGNORE_INDEX] * n_prompt + ids[n_prompt:], n_prompt, 0, False)
            )
        sums, counts = [], []
        chunk = self.batch_size * 8
        for s in tqdm(range(0, len(examples), chunk), desc="log-likelihood", disable=not self.progress):
            a, b = answer_logprobs(
                self.model,
                examples[s : s + chunk],
                self.batch_size,
                self.pad_id,
                self.precision,
                self._keep_logits,
            )
            sums += a.tolist()
            counts += b.tolist()
        return [(float(a), int(b)) for a, b in zip(sums, counts, strict=True)]
