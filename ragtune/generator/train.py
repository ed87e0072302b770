"""Supervised fine-tuning of the generator on (question + passages -> answer): ``train(cfg) -> folder``.

The loss is the cross-entropy of the answer tokens (and the end-of-turn token) only; the prompt and
padding carry ``IGNORE_INDEX`` labels (:mod:`ragtune.generator.prompt`). With gradient accumulation
the loss is the mean over every answer token of the accumulated micro-batches, so an optimiser step
does not depend on how the tokens were split into micro-batches.

What makes it fast on a CPU (measured in ``benchmarks/generator_pubmedqa``):

- bf16 autocast where bf16 is native (``precision: auto``: AMX / AVX512-BF16), fp32 master weights
  and optimiser state; fp32 elsewhere (:mod:`ragtune.precision`); there the frozen base weights are
  stored in bf16 once instead of cast in every forward pass
  (:func:`ragtune.precision.store_frozen_linears`: the same products, half their memory);
- vocabulary logits only where a label is predicted (``logits_to_keep`` with a boolean mask): the
  135M-parameter SmolLM2 spends a fifth of its forward pass in the 49k-word output projection, and
  answers are a small share of the tokens;
- length-grouped batches, so a batch pads little; SDPA attention;
- optionally (``train.compile``) each transformer block compiled by torch.compile
  (:func:`ragtune.generator.model.compile_layers`), which fuses the elementwise work between the
  matrix products; worth its compilation time on runs of more than about a hundred steps.

RAFT (Zhang et al. 2024) contexts, when enabled, are drawn per example and epoch from a seeded RNG,
so a resumed run sees the same contexts as an unbroken one.

Outputs in ``cfg.output_dir``: ``adapter/`` (a peft adapter folder with the tokenizer; ``model/`` for
``peft.method=full``), ``merged/`` on request, ``checkpoint/`` (resumable, rewritten atomically),
``history.jsonl``, ``train_summary.json`` (tokens/s, best validation loss) and ``config.yaml``.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ragtune import distributed as dist
from ragtune.data.io import load_qa, save_dir_atomically
from ragtune.data.schema import QAExample
from ragtune.errors import UserError
from ragtune.generator.collator import PassageSource, gold_passages, load_corpus_arg, pad_batch, raft_contexts
from ragtune.generator.config import GeneratorConfig
from ragtune.generator.model import (
    PROMPT_LEARNING,
    apply_peft,
    compile_layers,
    load_base,
    load_tokenizer,
    merged_for_inference,
    output_folder,
    save_model,
)
from ragtune.generator.prompt import EncodedExample, PromptEncoder
from ragtune.generator.scoring import backward_answer_loss, validation_loss
from ragtune.precision import store_frozen_linears
from ragtune.training import Plan, Run, adamw, epoch_batches

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ data


def split_validation(
    examples: list[QAExample], fraction: float, seed: int
) -> tuple[list[QAExample], list[QAExample]]:
    """Hold out a seeded ``fraction`` of the examples for validation."""
    n_val = round(len(examples) * fraction)
    val = set(random.Random(seed).sample(range(len(examples)), n_val)) if n_val else set()
    return [e for i, e in enumerate(examples) if i not in val], [
        e for i, e in enumerate(examples) if i in val
    ]


def load_data(cfg: GeneratorConfig) -> tuple[list[QAExample], list[QAExample], PassageSource]:
    """Training and validation examples, and the passage source (corpus, BM25, distractors)."""
    if cfg.data.train is None:
        raise UserError("data.train is not set: give a QA JSONL file (see data/README.md)")
    corpus = load_corpus_arg(cfg.data.corpus)
    examples = load_qa(cfg.data.train, corpus)
    if cfg.data.max_examples:
        examples = examples[: cfg.data.max_examples]
    if cfg.data.val is not None:
        train_ex, val_ex = examples, load_qa(cfg.data.val, corpus)
    else:
        train_ex, val_ex = split_validation(examples, cfg.data.val_fraction, cfg.seed)
    if not train_ex:
        raise UserError("no training examples left after the validation split")
    return train_ex, val_ex, PassageSource(cfg.data, corpus, train_ex, cfg.precision)


class EpochData:
    """Encodes the training examples for one epoch (RAFT contexts drawn from ``(seed, epoch, i)``)."""

    def __init__(
        self, cfg: GeneratorConfig, examples: Sequence[QAExample], source: PassageSource, enc: PromptEncoder
    ):
        self.cfg, self.examples, self.enc = cfg, list(examples), enc
        if cfg.raft.enabled:
            self.gold = [gold_passages(e, source.corpus) for e in self.examples]
            self.distractors = source.distractors(
                self.examples, cfg.raft.num_distractors, cfg.raft.distractors
            )
        else:
            self.shown = source.shown(self.examples)

    def encode(self, epoch: int) -> list[EncodedExample]:
        out = []
        for i, e in enumerate(self.examples):
            if self.cfg.raft.enabled:
                rng = random.Random(f"{self.cfg.seed}/{epoch}/{i}")
                passages, target, _ = raft_contexts(
                    self.gold[i], self.distractors[i], e.answer, self.cfg.prompt.no_answer, self.cfg.raft, rng
                )
            else:
                passages, target = self.shown[i], e.answer
            try:
                out.append(self.enc.encode(e.question, passages, target))
            except ValueError as err:
                raise UserError(f"{self.cfg.data.train}: example {e.id!r}: {err}") from None
        return out


# ------------------------------------------------------------------------------------------ train


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_final(model: torch.nn.Module, tokenizer, folder: Path) -> None:
    """A peft adapter folder (or a full transformers folder) plus the tokenizer, written atomically."""
    save_dir_atomically(folder, lambda tmp: _save_model(model, tokenizer, tmp))


def _save_model(model: torch.nn.Module, tokenizer, folder: Path) -> None:
    from ragtune.models import resolve_model

    base = getattr(getattr(model, "config", None), "_name_or_path", None) or ""
    save_model(model, tokenizer, folder, str(resolve_model(base)) if base else base)


class SFTTask:
    """The generator's part of the training loop (:class:`ragtune.training.Task`): the mean
    cross-entropy of the answer tokens of ``grad_accum`` micro-batches per step."""

    unit, metric, higher_is_better = "tokens", "val_loss", False

    def __init__(
        self,
        cfg: GeneratorConfig,
        model: torch.nn.Module,
        tokenizer,
        epoch_data: EpochData,
        val: list[EncodedExample],
    ):
        self.cfg, self.model, self.tokenizer, self.epoch_data, self.val = (
            cfg,
            model,
            tokenizer,
            epoch_data,
            val,
        )
        self.name = f"generator ({cfg.peft.method})"
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.pad_id = tokenizer.pad_token_id
        self.encoded: list[EncodedExample] = []
        self.encoded_epoch = -1

    def epoch_steps(self, epoch: int) -> list[list[list[int]]]:
        """The epoch's optimiser steps, each a list of micro-batches of example indices."""
        if self.encoded_epoch != epoch and (self.cfg.raft.enabled or self.encoded_epoch < 0):
            self.encoded = self.epoch_data.encode(epoch)  # RAFT draws new contexts every epoch
        self.encoded_epoch = epoch
        t = self.cfg.train
        lengths = [len(e.input_ids) for e in self.encoded]
        batches = epoch_batches(lengths, t.batch_size, self.cfg.seed, epoch, t.group_by_length)
        return [batches[s : s + t.grad_accum] for s in range(0, len(batches), t.grad_accum)]

    def backward(self, group: list[list[int]]) -> tuple[float, int]:
        t = self.cfg.train
        padded = [
            pad_batch([self.encoded[i] for i in b], self.pad_id)
            for b in dist.shard_groups(group, t.batch_size)
        ]
        return backward_answer_loss(self.model, padded, self.cfg.precision, t.answer_logits_only)

    def validate(self) -> tuple[float, dict[str, Any]] | None:
        if not self.val:
            return None
        loss = validation_loss(
            self.model, self.val, self.cfg.train.eval_batch_size, self.pad_id, self.cfg.precision
        )
        return loss, {"val_loss": loss}

    def save_model(self, folder: Path) -> None:
        _save_model(self.model, self.tokenizer, folder)

    def checkpoint(self, folder: Path) -> dict[str, Any]:
        return {"trainable": trainable_state(self.model)}


def train(cfg: GeneratorConfig) -> Path:
    """Fine-tune the generator as configured; returns ``cfg.output_dir``."""
    if cfg.save_merged and cfg.peft.method in (*PROMPT_LEARNING, "bottleneck"):
        raise UserError(f"save_merged: peft.method={cfg.peft.method} has nothing to merge into the weights")
    run = Run(cfg)
    t = cfg.train
    tokenizer = load_tokenizer(cfg.model.name, cfg.model.trust_remote_code)
    enc = PromptEncoder(tokenizer, cfg.prompt, cfg.model.max_length)
    train_ex, val_ex, source = load_data(cfg)
    val = [enc.encode(e.question, passages, e.answer) for e, passages in zip(val_ex, source.shown(val_ex))]
    per_epoch = math.ceil(math.ceil(len(train_ex) / t.batch_size) / t.grad_accum)
    total = min(per_epoch * t.epochs, t.max_steps or per_epoch * t.epochs)

    model = apply_peft(load_base(cfg.model).to(dist.device()), cfg.peft)
    store_frozen_linears(model, cfg.precision)
    if run.resuming:
        missing = set(trainable_state(model)) - set(run.saved["trainable"])
        if missing:
            raise UserError(
                f"{run.checkpoint}: checkpoint lacks trainable weights such as {sorted(missing)[0]}"
            )
        model.load_state_dict(run.saved["trainable"], strict=False)
    if t.compile:
        log.info("compiling %d transformer blocks (torch.compile, dynamic shapes)", compile_layers(model))
    model.train()
    task = SFTTask(cfg, model, tokenizer, EpochData(cfg, train_ex, source, enc), val)
    optimizer = adamw(model, t.lr, t.weight_decay)
    run.fit(
        task,
        optimizer,
        Plan(total, per_epoch, t.warmup_ratio, t.max_grad_norm, t.eval_every, t.patience, t.save_every),
    )

    def merge(final: Path) -> None:
        if cfg.save_merged:
            from ragtune.generator.model import load_trained

            save_final(
                merged_for_inference(load_trained(final, cfg.model), cfg.peft.method),
                tokenizer,
                out / "merged",
            )

    out = run.out
    summary = {
        "method": cfg.peft.method,
        "examples": len(train_ex),
        "validation_examples": len(val_ex),
        "trainable_parameters": sum(p.numel() for p in task.params),
    }
    return run.finish(task, output_folder(cfg.peft.method), summary, after=merge)
