"""Log-likelihood of an answer given a prompt under a causal LM: the torch side of faithfulness.

:class:`AnswerLikelihood` is the ``loglik`` callable that
:func:`ragtune.eval.faithfulness.likelihood_faithfulness` expects: it maps ``(prompt, continuation)``
pairs to ``(sum of log-probabilities of the continuation's tokens, number of those tokens)``. It is
also what LM-supervised retrieval needs (the generator's likelihood of a gold answer given a passage).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ragtune.models import resolve_model
from ragtune.precision import autocast

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
        self.end_ids: list[int] = self._end_of_turn_ids() if end_of_turn else []
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id: int = pad if pad is not None else 0
        forward = inspect.signature(model.forward).parameters
        self._keep_logits = "logits_to_keep" in forward

    def _end_of_turn_ids(self) -> list[int]:
        """The tokens the chat template closes an assistant turn with (EOS without a template)."""
        eos = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
        if not self.use_chat_template:
            return eos
        probe = "Probe"
        prefix = self._render_prompt("Q")
        full = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": "Q"}, {"role": "assistant", "content": probe}], tokenize=False
        )
        if not full.startswith(prefix + probe):
            return eos
        suffix = full[len(prefix) + len(probe) :].rstrip()
        ids = self.tokenizer(suffix, add_special_tokens=False)["input_ids"] if suffix else []
        return ids or eos

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

    @torch.inference_mode()
    def _score_batch(self, encoded: Sequence[tuple[list[int], int]]) -> list[tuple[float, int]]:
        """Score one batch: right-padded ``input_ids`` and ``attention_mask`` of shape (B, T)."""
        device = self.model.device
        width = max(len(ids) for ids, _ in encoded)
        input_ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, (ids, _) in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        # Position t's logits predict token t + 1; the first scored token is at n_prompt.
        first = min(n_prompt for _, n_prompt in encoded) - 1
        kwargs: dict[str, Any] = {}
        if self._keep_logits:
            kwargs["logits_to_keep"] = width - first  # logits for positions first .. width-1 only
        with autocast(self.precision, self.model.device.type):
            logits = self.model(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), **kwargs
            ).logits  # (B, T', V) with T' = width - first, or T without logits_to_keep
        offset = width - logits.shape[1]
        out: list[tuple[float, int]] = []
        for row, (ids, n_prompt) in enumerate(encoded):
            n_cont = len(ids) - n_prompt
            if n_cont == 0:
                out.append((0.0, 0))
                continue
            start = n_prompt - 1 - offset
            row_logits = logits[row, start : start + n_cont].float()  # (n_cont, V)
            targets = input_ids[row, n_prompt : n_prompt + n_cont].to(row_logits.device)
            logprobs = torch.log_softmax(row_logits, dim=-1).gather(-1, targets[:, None]).squeeze(-1)
            out.append((float(logprobs.sum()), n_cont))
        return out

    def __call__(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, int]]:
        """``[(sum of natural-log probabilities of the continuation's tokens, their number), ...]``."""
        encoded = [self.encode(prompt, continuation) for prompt, continuation in pairs]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]), reverse=True)
        results: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(starts, desc="log-likelihood", disable=not self.progress):
            batch = order[start : start + self.batch_size]
            for i, scored in zip(batch, self._score_batch([encoded[i] for i in batch])):
                results[i] = scored
        return results
