"""Answer questions from passages with a (fine-tuned) generator: ``ragtune generator generate``.

Prompts are built like the training prompts (:class:`ragtune.generator.prompt.PromptEncoder`, the
passages trimmed lowest-ranked first so that prompt + ``max_new_tokens`` fit ``model.max_length``),
sorted by length, left-padded into batches and decoded with ``model.generate`` (KV cache; greedy,
beam search or sampling) until the end-of-turn token. When ``precision`` resolves to bf16 (native
bf16 hardware, :mod:`ragtune.precision`) the weights are cast to bfloat16 for inference.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ragtune.data.io import atomic_write_text, write_jsonl
from ragtune.data.schema import Passage, QAExample
from ragtune.errors import UserError
from ragtune.generator.collator import PassageSource, gold_passages, load_questions
from ragtune.generator.config import GenerateConfig, GeneratorConfig
from ragtune.generator.model import load_tokenizer, load_trained
from ragtune.generator.prompt import PromptEncoder
from ragtune.precision import cast_for_inference


def left_pad(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` ``[B, longest]``, padded on the left."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids, mask


def _generate(
    model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, kwargs: dict[str, Any]
) -> torch.Tensor:
    """The new token ids ``[B, n]`` that ``model.generate`` appends to the left-padded ``ids``.

    Prompt and prefix tuning go around ``PeftModel.generate``, which is wrong with transformers 5
    (the KV-cache argument is now ``cache``; peft 0.21 still looks for ``past_key_values``): prefix
    tuning generated as the bare base model, prompt tuning drifted after the first token. The base
    model generates instead, from the soft prompt put before the input embeddings, or from a cache
    pre-filled with the prefix (stand-in pad tokens take the prefix positions the cache covers):
    the same computation as the training forward pass.
    """
    device = next(model.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    peft_cfg = getattr(model, "active_peft_config", None)
    if peft_cfg is None or not peft_cfg.is_prompt_learning:
        return model.generate(input_ids=ids, attention_mask=mask, **kwargs)[:, ids.shape[1] :]
    n_virtual, base = peft_cfg.num_virtual_tokens, model.get_base_model()
    mask = torch.cat([torch.ones(len(ids), n_virtual, dtype=mask.dtype), mask], dim=1)
    if peft_cfg.peft_type.value == "PROMPT_TUNING":
        embeds = base.get_input_embeddings()(ids)
        virtual = model.get_prompt(batch_size=len(ids)).to(embeds.dtype)
        return base.generate(inputs_embeds=torch.cat([virtual, embeds], dim=1), attention_mask=mask, **kwargs)
    if kwargs["num_beams"] > 1:  # prefix tuning: beam search would not see the prefix cache
        raise UserError("peft.method=prefix: beam search is not supported, set generate.num_beams=1")
    cache = model.get_prompt(batch_size=len(ids))
    name = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
    stand_in = torch.full((len(ids), n_virtual), kwargs["pad_token_id"], dtype=ids.dtype)
    out = base.generate(
        input_ids=torch.cat([stand_in, ids], dim=1), attention_mask=mask, **{name: cache}, **kwargs
    )
    return out[:, n_virtual + ids.shape[1] :]


@torch.inference_mode()
def generate_ids(
    model: torch.nn.Module,
    prompts: Sequence[list[int]],
    cfg: GenerateConfig,
    stop_ids: Sequence[int],
    pad_id: int,
    progress: bool = True,
) -> tuple[list[list[int]], dict[str, float]]:
    """New token ids for each prompt (up to and excluding the stop token) and speed statistics:
    ``{"tokens": generated tokens counting each stop token, "seconds", "tokens_per_s"}``."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    out: list[list[int]] = [[] for _ in prompts]
    stops = set(stop_ids)
    kwargs: dict[str, Any] = {
        "max_new_tokens": cfg.max_new_tokens,
        "num_beams": cfg.num_beams,
        "do_sample": cfg.do_sample,
        "repetition_penalty": cfg.repetition_penalty,
        "eos_token_id": list(stop_ids),
        "pad_token_id": pad_id,
    }
    if cfg.do_sample:
        kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    n_tokens, started = 0, time.perf_counter()
    starts = range(0, len(order), cfg.batch_size)
    for s in tqdm(starts, desc="generate", unit="batch", disable=not progress):
        batch = order[s : s + cfg.batch_size]
        ids, mask = left_pad([prompts[i] for i in batch], pad_id)
        new = _generate(model, ids, mask, kwargs).tolist()
        for i, row in zip(batch, new, strict=True):
            kept = []
            for tok in row:
                if tok in stops:
                    n_tokens += 1
                    break
                kept.append(tok)
            n_tokens += len(kept)
            out[i] = kept
    seconds = time.perf_counter() - started
    return out, {
        "tokens": n_tokens,
        "seconds": seconds,
        "tokens_per_s": n_tokens / seconds if seconds else 0.0,
    }


class Generator:
    """A loaded generator: ``Generator(cfg, path)(questions, passages) -> answers``.

    ``path`` is a peft adapter folder, a full model folder, or None for ``cfg.model.name`` itself.
    """

    def __init__(self, cfg: GeneratorConfig, path: str | Path | None = None, model=None, tokenizer=None):
        self.cfg = cfg
        self.tokenizer = tokenizer or load_tokenizer(cfg.model.name, cfg.model.trust_remote_code)
        self.model = model if model is not None else load_trained(path, cfg.model)
        self.model.eval()
        cast_for_inference(self.model, cfg.precision, next(self.model.parameters()).device)
        self.enc = PromptEncoder(self.tokenizer, cfg.prompt, cfg.model.max_length)
        self.stats: dict[str, float] = {}

    def build(
        self, questions: Sequence[str], passages: Sequence[Sequence[Passage]]
    ) -> tuple[list[list[int]], list[list[Passage]]]:
        """Prompt token ids, and the passages each prompt kept within ``max_length - max_new_tokens``."""
        budget = self.cfg.model.max_length - self.cfg.generate.max_new_tokens
        ids, kept = [], []
        for q, p in zip(questions, passages, strict=True):
            fitted, _ = self.enc.fit_passages(q, p, budget)
            ids.append(self.enc.prompt_ids(q, fitted))
            kept.append(fitted)
        return ids, kept

    def answer(
        self, prompts: Sequence[list[int]], gen: GenerateConfig | None = None, progress: bool = True
    ) -> list[str]:
        """Decoded answers to prompt token ids; speed statistics in ``self.stats``."""
        ids, self.stats = generate_ids(
            self.model,
            prompts,
            gen or self.cfg.generate,
            self.enc.end_ids,
            self.tokenizer.pad_token_id,
            progress,
        )
        return [self.tokenizer.decode(r, skip_special_tokens=True).strip() for r in ids]

    def __call__(self, questions: Sequence[str], passages: Sequence[Sequence[Passage]]) -> list[str]:
        return self.answer(self.build(questions, passages)[0])


def without_gold(
    examples: Sequence[QAExample], shown: Sequence[Sequence[Passage]], source: PassageSource
) -> list[list[Passage]]:
    """Each question's shown passages minus its gold ones (``contexts`` / ``positive_ids``); where
    nothing is left (``data.passages=given``), as many BM25 distractors as passages were shown."""
    golds = [{p.id for p in gold_passages(e, source.corpus)} | set(e.positive_ids) for e in examples]
    missing = [e.id for e, g in zip(examples, golds, strict=True) if not g]
    if missing:
        raise UserError(
            f"example {missing[0]!r} names no gold passage (contexts or positive_ids): it cannot be "
            "asked without them"
        )
    rest = [[p for p in s if p.id not in g] for s, g in zip(shown, golds, strict=True)]
    need = [i for i, r in enumerate(rest) if not r]
    if need:
        width = max(1, max(len(s) for s in shown))
        found = source.distractors([examples[i] for i in need], width, "bm25")
        for i, d in zip(need, found, strict=True):
            rest[i] = list(d[: max(1, len(shown[i]))])
    return rest


def generate(
    cfg: GeneratorConfig,
    model_path: str | Path | None,
    input_path: str | Path | None,
    out: str | Path,
    limit: int = 0,
    unanswerable: bool = False,
) -> dict[str, Any]:
    """Answer every question of ``input_path`` (default ``data.test``) and write predictions JSONL:
    ``id``, ``question``, ``contexts`` (the passages shown: id, title, text), ``prediction`` and,
    when the input has answers, ``reference``. Returns the speed statistics (also in
    ``<out>.stats.json``).

    ``unanswerable``: ask each question a second time with its gold passages removed (row id
    ``<id>#unanswerable``, see :func:`without_gold`); every row then says ``answerable`` true or
    false, for the abstention rates of ``ragtune eval generation``."""
    examples, corpus = load_questions(input_path or cfg.data.test, cfg.data.corpus, "data.test", limit)
    source = PassageSource(cfg.data, corpus, examples, cfg.precision)
    shown = source.shown(examples)
    asked = [(e, passages, None) for e, passages in zip(examples, shown, strict=True)]
    if unanswerable:
        asked = [(e, p, True) for e, p, _ in asked]
        asked += [(e, p, False) for e, p in zip(examples, without_gold(examples, shown, source), strict=True)]
    gen = Generator(cfg, model_path)
    prompts, kept = gen.build([e.question for e, _, _ in asked], [p for _, p, _ in asked])
    answers = gen.answer(prompts)
    rows = []
    for (e, _, answerable), passages, answer in zip(asked, kept, answers, strict=True):
        row: dict[str, Any] = {
            "id": e.id if answerable is not False else f"{e.id}#unanswerable",
            "question": e.question,
            "contexts": [{"id": p.id, "title": p.title, "text": p.text} for p in passages],
            "prediction": answer,
            "reference": e.answer,
        }
        if answerable is not None:
            row["answerable"] = answerable
        row.update({k: v for k, v in e.meta.items() if k not in row})
        rows.append(row)
    out = Path(out)
    write_jsonl(out, rows)
    stats = {**gen.stats, "examples": len(rows), "model": str(model_path or cfg.model.name)}
    atomic_write_text(out.with_name(out.name + ".stats.json"), json.dumps(stats, indent=2) + "\n")
    return stats
