"""Supervised fine-tuning of the generator on (question + passages -> answer): ``train(cfg) -> folder``.

The loss is the cross-entropy of the answer tokens (and the end-of-turn token) only; the prompt and
padding carry ``IGNORE_INDEX`` labels (:mod:`ragtune.generator.prompt`). With gradient accumulation
the loss is the mean over every answer token of the accumulated micro-batches, so an optimiser step
does not depend on how the tokens were split into micro-batches.

What makes it fast on a CPU (measured in ``benchmarks/generator_pubmedqa``):

- bf16 autocast where bf16 is native (``precision: auto``: AMX / AVX512-BF16), fp32 master weights
  and optimiser state; fp32 elsewhere (:mod:`ragtune.precision`);
- vocabulary logits only where a label is predicted (``logits_to_keep`` with a boolean mask): the
  135M-parameter SmolLM2 spends a fifth of its forward pass in the 49k-word output projection, and
  answers are a small share of the tokens;
- length-grouped batches, so a batch pads little; SDPA attention.

RAFT (Zhang et al. 2024) contexts, when enabled, are drawn per example and epoch from a seeded RNG,
so a resumed run sees the same contexts as an unbroken one.

Outputs in ``cfg.output_dir``: ``adapter/`` (a peft adapter folder with the tokenizer; ``model/`` for
``peft.method=full``), ``merged/`` on request, ``checkpoint/`` (resumable, rewritten atomically),
``history.jsonl``, ``train_summary.json`` (tokens/s, best validation loss) and ``config.yaml``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ragtune import distributed as dist
from ragtune.data.io import atomic_write_text, load_qa, save_dir_atomically
from ragtune.data.schema import QAExample
from ragtune.generator.collator import PassageSource, gold_passages, load_corpus_arg, pad_batch, raft_contexts
from ragtune.generator.config import GeneratorConfig
from ragtune.generator.model import apply_peft, load_base, load_tokenizer
from ragtune.generator.prompt import IGNORE_INDEX, EncodedExample, PromptEncoder
from ragtune.precision import autocast, hardware
from ragtune.training import (
    finish_step,
    linear_schedule,
    load_state,
    record_validation,
    save_state,
    start_run,
    trim_history,
)

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
        raise ValueError("data.train is not set: give a QA JSONL file (see data/README.md)")
    corpus = load_corpus_arg(cfg.data.corpus)
    examples = load_qa(cfg.data.train, corpus)
    if cfg.data.max_examples:
        examples = examples[: cfg.data.max_examples]
    if cfg.data.val is not None:
        train_ex, val_ex = examples, load_qa(cfg.data.val, corpus)
    else:
        train_ex, val_ex = split_validation(examples, cfg.data.val_fraction, cfg.seed)
    if not train_ex:
        raise ValueError("no training examples left after the validation split")
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
                raise ValueError(f"{self.cfg.data.train}: example {e.id!r}: {err}") from None
        return out


def micro_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, group: bool
) -> list[list[int]]:
    """The micro-batches of one epoch (example indices); a pure function of ``(seed, epoch)``.

    With ``group``, a shuffled order is cut into chunks of 32 batches, each sorted by length, then
    the batches are shuffled, so a batch pads little and the order stays random.
    """
    rng = random.Random(seed * 100_003 + epoch)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    if group:
        chunk = batch_size * 32
        idx = [
            i
            for s in range(0, len(idx), chunk)
            for i in sorted(idx[s : s + chunk], key=lambda i: -lengths[i])
        ]
    batches = [idx[s : s + batch_size] for s in range(0, len(idx), batch_size)]
    if group:
        rng.shuffle(batches)
    return batches


# ------------------------------------------------------------------------------------------ loss


def n_virtual_tokens(model: torch.nn.Module) -> int:
    """Soft-prompt tokens that prompt tuning puts before the input (0 for other methods)."""
    cfg = getattr(model, "active_peft_config", None)
    if cfg is not None and cfg.peft_type.value == "PROMPT_TUNING":
        return int(cfg.num_virtual_tokens)
    return 0


def token_losses(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], precision: str, logits_only_answers: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of every labelled token of ``batch`` and the batch row it belongs to.

    ``batch`` holds right-padded ``input_ids``, ``attention_mask`` and ``labels``, each ``[B, T]``.
    Position ``t`` predicts token ``t + 1``; with ``logits_only_answers`` the model projects to the
    vocabulary only at the positions whose next token is labelled (``logits_to_keep`` as a boolean
    ``[B, T]`` mask, shifted by the soft prompt under prompt tuning), giving ``[N, V]`` logits.
    Returns ``(ce [N] float32, rows [N] int64)`` in row-major order.
    """
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    labels = batch["labels"]
    targets_mask = labels[:, 1:] != IGNORE_INDEX  # [B, T-1]
    targets = labels[:, 1:][targets_mask]  # [N]
    if int(targets.numel()) == 0:
        raise ValueError("a batch without any answer token: every label is masked")
    rows = torch.nonzero(targets_mask)[:, 0]  # [N]
    kwargs = {}
    if logits_only_answers:
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[:, :-1] = targets_mask
        n_virtual = n_virtual_tokens(model)
        if n_virtual:
            keep = torch.cat([keep.new_zeros(len(keep), n_virtual), keep], dim=1)
        kwargs["logits_to_keep"] = keep
    with autocast(precision, labels.device.type):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs).logits
    if logits_only_answers:
        picked = logits.reshape(-1, logits.shape[-1])  # [N, V]
    else:
        logits = logits[:, -labels.shape[1] :]  # drop soft-prompt positions
        picked = logits[:, :-1][targets_mask]
    ce = torch.nn.functional.cross_entropy(picked.float(), targets, reduction="none")
    return ce, rows


def answer_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], precision: str, logits_only_answers: bool = True
) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy of the labelled tokens of ``batch`` and their number (see
    :func:`token_losses`)."""
    ce, _ = token_losses(model, batch, precision, logits_only_answers)
    return ce.sum(), int(ce.numel())


def optimizer_step(
    model: torch.nn.Module,
    padded: Sequence[dict[str, torch.Tensor]],
    params: Sequence[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    precision: str,
    max_grad_norm: float,
    logits_only_answers: bool = True,
) -> tuple[float, int]:
    """One optimiser step over the accumulated micro-batches ``padded`` (each from :func:`pad_batch`):
    the loss is the mean over every answer token of all of them. Returns (that loss, tokens seen).

    With several processes, ``padded`` is this process's shard of the step (see :func:`step_shard`):
    the answer tokens are counted over all processes and the gradients summed, so the step equals
    the one-process step on the whole global batch."""
    optimizer.zero_grad(set_to_none=True)
    n_answer = dist.sum_value(sum(int((p["labels"][:, 1:] != IGNORE_INDEX).sum()) for p in padded))
    total = 0.0
    for batch in padded:
        loss, _ = answer_loss(model, batch, precision, logits_only_answers)
        (loss / n_answer).backward()
        total += float(loss.detach())
    dist.sum_gradients(params)
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    scheduler.step()
    tokens = dist.sum_value(sum(int(p["attention_mask"].sum()) for p in padded))
    return dist.sum_value(total) / n_answer, int(tokens)


def step_shard(group: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """This process's micro-batches of one optimiser step: its contiguous shard of the step's
    examples (``group``: the step's micro-batches of example indices), cut into ``batch_size``."""
    if dist.world_size() == 1:
        return [list(b) for b in group]
    mine = list(dist.shard([i for b in group for i in b]))
    return [mine[s : s + batch_size] for s in range(0, len(mine), batch_size)]


@torch.no_grad()
def answer_logprobs(
    model: torch.nn.Module, examples: Sequence[EncodedExample], batch_size: int, pad_id: int, precision: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each example's log-probability of its labelled tokens (answer + end of turn) under ``model``:
    ``(sums [N] float32, counts [N] int64)``. Batches are sorted by length, so they pad little."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(examples), dtype=torch.float32)
    counts = torch.zeros(len(examples), dtype=torch.int64)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        ce, rows = token_losses(model, pad_batch([examples[i] for i in idx], pad_id), precision)
        index = torch.tensor(idx)[rows]
        sums.index_add_(0, index, -ce.float())
        counts.index_add_(0, index, torch.ones_like(index))
    model.train(was_training)
    return sums, counts


@torch.no_grad()
def validation_loss(
    model: torch.nn.Module, examples: Sequence[EncodedExample], batch_size: int, pad_id: int, precision: str
) -> float:
    """Mean cross-entropy per answer token over ``examples`` (batches sorted by length)."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    total, count = 0.0, 0
    for s in range(0, len(order), batch_size):
        batch = pad_batch([examples[i] for i in order[s : s + batch_size]], pad_id)
        loss, n = answer_loss(model, batch, precision)
        total += float(loss)
        count += n
    model.train(was_training)
    return total / count


# ---------------------------------------------------------------------------------- checkpoints


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_final(model: torch.nn.Module, tokenizer, folder: Path) -> None:
    """A peft adapter folder (or a full transformers folder) plus the tokenizer, written atomically."""

    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))

    save_dir_atomically(folder, write)


def _save_checkpoint(folder: Path, model, optimizer, scheduler, state: dict) -> None:
    def write(tmp: Path) -> None:
        save_state(
            {
                "trainable": trainable_state(model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
            },
            tmp / "state.safetensors",
        )
        (tmp / "state.json").write_text(json.dumps(state))

    save_dir_atomically(folder, write)


# ------------------------------------------------------------------------------------------ train


def train(cfg: GeneratorConfig) -> Path:
    """Fine-tune the generator as configured; returns ``cfg.output_dir``."""
    if cfg.save_merged and cfg.peft.method in ("prefix", "prompt"):
        raise ValueError(f"save_merged: peft.method={cfg.peft.method} has nothing to merge into the weights")
    dist.setup()
    out = Path(cfg.output_dir)
    ckpt = dist.from_main(lambda: start_run(cfg, out))
    main = dist.is_main()
    t = cfg.train
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    tokenizer = load_tokenizer(cfg.model.name, cfg.model.trust_remote_code)
    enc = PromptEncoder(tokenizer, cfg.prompt, cfg.model.max_length)
    train_ex, val_ex, source = load_data(cfg)
    epoch_data = EpochData(cfg, train_ex, source, enc)
    val_encoded = []
    for e, passages in zip(val_ex, source.shown(val_ex)):
        val_encoded.append(enc.encode(e.question, passages, e.answer))
    n_micro = math.ceil(len(train_ex) / t.batch_size)
    steps_per_epoch = math.ceil(n_micro / t.grad_accum)
    total = steps_per_epoch * t.epochs
    if t.max_steps:
        total = min(total, t.max_steps)

    model = apply_peft(load_base(cfg.model).to(dist.device()), cfg.peft)
    resuming = (ckpt / "state.json").exists()
    state = {"step": 0, "best": None, "bad_evals": 0, "stopped": False, "tokens": 0}
    if resuming:
        state = json.loads((ckpt / "state.json").read_text())
        saved = load_state(ckpt / "state.safetensors")
        missing = set(trainable_state(model)) - set(saved["trainable"])
        if missing:
            raise ValueError(f"{ckpt}: checkpoint lacks trainable weights such as {sorted(missing)[0]}")
        model.load_state_dict(saved["trainable"], strict=False)
        log.info("resuming from %s at step %d", ckpt, state["step"])
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    warmup = int(total * t.warmup_ratio)

    scheduler = linear_schedule(optimizer, total, warmup)
    if resuming:
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])

    history = out / "history.jsonl"
    if main:
        trim_history(history, resuming, state["step"])
    pad_id = tokenizer.pad_token_id
    eval_every = t.eval_every or steps_per_epoch
    model.train()
    bar = tqdm(
        total=total,
        initial=state["step"],
        desc=f"generator ({cfg.peft.method})",
        unit="step",
        disable=not main,
    )
    step_time, step_tokens = 0.0, 0
    encoded: list[EncodedExample] = []
    encoded_epoch = -1
    while state["step"] < total and not state["stopped"]:
        epoch, offset = divmod(state["step"], steps_per_epoch)
        if encoded_epoch != epoch:
            encoded = epoch_data.encode(epoch) if cfg.raft.enabled or encoded_epoch < 0 else encoded
            encoded_epoch = epoch
        batches = micro_batches(
            [len(e.input_ids) for e in encoded], t.batch_size, cfg.seed, epoch, t.group_by_length
        )
        steps = [batches[s : s + t.grad_accum] for s in range(0, len(batches), t.grad_accum)]
        for group in steps[offset:]:
            started = time.perf_counter()
            padded = [pad_batch([encoded[i] for i in b], pad_id) for b in step_shard(group, t.batch_size)]
            step_loss, tokens = optimizer_step(
                model,
                padded,
                params,
                optimizer,
                scheduler,
                cfg.precision,
                t.max_grad_norm,
                t.answer_logits_only,
            )
            elapsed = time.perf_counter() - started
            step_time += elapsed
            step_tokens += tokens
            state["step"] += 1
            state["tokens"] += tokens
            record = {
                "step": state["step"],
                "epoch": epoch,
                "loss": step_loss,
                "lr": scheduler.get_last_lr()[0],
                "tokens_per_s": tokens / elapsed,
                "processes": dist.world_size(),
            }
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
            if val_encoded and (state["step"] % eval_every == 0 or state["step"] == total):
                val = dist.from_main(
                    lambda: validation_loss(model, val_encoded, t.eval_batch_size, pad_id, cfg.precision)
                )
                record["val_loss"] = val
                log.info("step %d: validation loss %.4f", state["step"], val)
                record_validation(
                    state,
                    "val_loss",
                    val,
                    False,
                    t.patience,
                    lambda: main and save_final(model, tokenizer, out / "best"),
                )
            save = lambda: _save_checkpoint(ckpt, model, optimizer, scheduler, state)  # noqa: E731
            if finish_step(history, record, state, total, t.save_every, save):
                break
    bar.close()
    if not main:
        dist.barrier()  # the main process writes the outputs
        return out
    final = out / ("model" if cfg.peft.method == "full" else "adapter")
    if (out / "best").exists():
        save_dir_atomically(final, lambda tmp: shutil.copytree(out / "best", tmp, dirs_exist_ok=True))
    else:
        save_final(model, tokenizer, final)
    if cfg.save_merged:
        from ragtune.generator.model import load_trained

        merged = load_trained(final, cfg.model)
        if cfg.peft.method != "full":
            merged = merged.merge_and_unload()
        save_final(merged, tokenizer, out / "merged")
    summary = {
        "method": cfg.peft.method,
        "steps": state["step"],
        "examples": len(train_ex),
        "validation_examples": len(val_ex),
        "trainable_parameters": n_trainable,
        "step_seconds_this_process": step_time,
        "tokens_per_s": step_tokens / step_time if step_time else None,
        "tokens_seen": state["tokens"],
        "processes": dist.world_size(),
        "best": state["best"],
        "early_stopped": state["stopped"],
        "hardware": hardware(cfg.precision),
    }
    atomic_write_text(out / "train_summary.json", json.dumps(summary, indent=2) + "\n")
    log.info("training done: %s", summary)
    dist.barrier()
    return out
