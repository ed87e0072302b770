"""Preference tuning of the generator: ``ragtune generator dpo`` -> ``train_dpo(cfg) -> folder``.

Direct Preference Optimisation (Rafailov et al. 2023) on pairs of answers to the same prompt
(question + passages): the policy is pushed to raise the chosen answer's log-probability relative
to the rejected one's, each measured against a frozen reference. Losses (``dpo.loss``), with
``r = log pi(y|x) - log ref(y|x)`` summed over the answer's tokens (and end of turn):

- ``sigmoid`` (DPO): ``-log sigmoid(beta * (r_chosen - r_rejected))``;
- ``ipo`` (IPO, Azar et al. 2023): ``(r_chosen / n_chosen - r_rejected / n_rejected - 1 / (2 beta))^2``,
  the log-ratios averaged per token as the IPO authors' and TRL's implementations do;
- ``rpo`` (RPO, Pang et al. 2024, "Iterative Reasoning Preference Optimization"): the DPO loss plus
  ``rpo_alpha`` times the chosen answers' mean token NLL, which counters DPO's known drift where the
  chosen answer's likelihood falls along with the rejected one's.

The reference costs no second model in memory: the SFT adapter (``dpo.sft_adapter``) is merged into
the weights, a fresh LoRA is trained on top, and the reference forward pass runs with that LoRA
disabled (``PeftModel.disable_adapter``), which is exactly the SFT model. The adapter written to
``adapter/`` is the SFT and DPO LoRAs concatenated (peft's ``add_weighted_adapter``, ``cat``: rank
r_sft + r_dpo, exact), so it loads on the base model with ``PeftModel.from_pretrained`` and no
ragtune, and ``e2e`` takes it as ``generator.adapter``.

Memory: with ``dpo.grad_chunk`` (default 2) the policy's log-probs are first computed without a
graph, the loss's gradient with respect to each of them taken, and the gradient then
back-propagated ``grad_chunk`` sequences at a time: exactly the same update for one extra forward
pass, with one chunk's activations in memory instead of the micro-batch's (0: one pass).

Speed on a CPU: a micro-batch is the chosen and rejected sequences padded together; vocabulary
logits are computed only where an answer token is predicted (prompts with passages are long,
answers short); bf16 autocast where bf16 is native (:mod:`ragtune.precision`).

Logged per step: ``loss``, ``reward_margin`` (mean ``beta * (r_chosen - r_rejected)``),
``reward_accuracy`` (share of pairs with a positive margin), ``logp_chosen`` and ``logp_rejected``
(the policy's mean summed log-probabilities); validation: ``val_loss`` and ``val_reward_accuracy``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ragtune import distributed as dist
from ragtune.data.io import load_pairs
from ragtune.data.schema import PreferencePair
from ragtune.errors import UserError
from ragtune.generator.collator import load_corpus_arg, pad_batch
from ragtune.generator.config import GeneratorConfig
from ragtune.generator.model import ADAPTER_CONFIG, apply_peft, load_base, load_tokenizer, require_safetensors
from ragtune.generator.prompt import EncodedExample, PromptEncoder
from ragtune.generator.scoring import token_losses
from ragtune.generator.train import split_validation, trainable_state
from ragtune.precision import store_frozen_linears
from ragtune.training import Plan, Run, adamw, epoch_batches


def preference_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    loss: str,
    beta: float,
    n_chosen: torch.Tensor | None = None,
    n_rejected: torch.Tensor | None = None,
) -> torch.Tensor:
    """The per-pair preference loss ``[B]`` from summed answer log-probabilities ``[B]`` of the
    policy and the reference (``n_*``: answer token counts, needed by ``ipo``). ``rpo``'s NLL term
    is added by the caller (it is a mean over tokens, not pairs)."""
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    if loss == "ipo":
        if n_chosen is None or n_rejected is None:
            raise ValueError("the ipo loss needs the answers' token counts")
        delta = chosen_ratio / n_chosen.clamp(min=1) - rejected_ratio / n_rejected.clamp(min=1)
        return (delta - 1.0 / (2.0 * beta)) ** 2
    if loss in ("sigmoid", "rpo"):
        return -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    raise ValueError(f"unknown preference loss {loss!r}")


def sequence_logprobs(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], precision: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's summed log-probability of its labelled tokens and their number: ``([B], [B])``,
    differentiable (:func:`ragtune.generator.scoring.token_losses`, answer-position logits only)."""
    ce, rows = token_losses(model, batch, precision)
    n_rows = batch["input_ids"].shape[0]
    sums = torch.zeros(n_rows, dtype=ce.dtype, device=ce.device).index_add(0, rows, -ce)
    counts = torch.zeros(n_rows, dtype=torch.long, device=ce.device).index_add(0, rows, torch.ones_like(rows))
    return sums, counts


def encode_pairs(pairs: Sequence[PreferencePair], enc: PromptEncoder, path: Path | None) -> list[tuple]:
    """``(chosen, rejected)`` encoded examples per pair, sharing one prompt."""
    out = []
    for p in pairs:
        try:
            chosen, rejected = enc.encode_answers(p.question, p.passages, [p.chosen, p.rejected])
        except ValueError as err:
            raise UserError(f"{path}: pair {p.id!r}: {err}") from None
        out.append((chosen, rejected))
    return out


class PreferenceTask:
    """The DPO part of the training loop (:class:`ragtune.training.Task`): ``grad_accum``
    micro-batches of ``batch_size`` pairs per optimiser step; the step's loss is the mean over its
    pairs (plus, for RPO, ``rpo_alpha`` x the mean NLL over its chosen answer tokens)."""

    unit, metric, higher_is_better = "pairs", "val_loss", False

    def __init__(
        self, cfg: GeneratorConfig, model, tokenizer, train_pairs: list[tuple], val_pairs: list[tuple]
    ):
        self.cfg, self.model, self.tokenizer = cfg, model, tokenizer
        self.pairs, self.val = train_pairs, val_pairs
        self.name = f"generator dpo ({cfg.dpo.loss})"
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.pad_id = tokenizer.pad_token_id
        self.step_log: dict[str, float] = {}

    def epoch_steps(self, epoch: int) -> list[list[list[int]]]:
        t = self.cfg.train
        lengths = [len(c.input_ids) + len(r.input_ids) for c, r in self.pairs]
        batches = epoch_batches(lengths, t.batch_size, self.cfg.seed, epoch, t.group_by_length)
        return [batches[s : s + t.grad_accum] for s in range(0, len(batches), t.grad_accum)]

    def _forward(self, pairs: Sequence[tuple[EncodedExample, EncodedExample]], grad: bool) -> dict[str, Any]:
        """Policy and reference log-probabilities of a micro-batch's chosen and rejected answers."""
        n = len(pairs)
        batch = pad_batch([c for c, _ in pairs] + [r for _, r in pairs], self.pad_id)
        precision = self.cfg.precision
        with torch.set_grad_enabled(grad):
            sums, counts = sequence_logprobs(self.model, batch, precision)
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad(), self.model.disable_adapter():
            ref, _ = sequence_logprobs(self.model, batch, precision)
        self.model.train(was_training)
        return {
            "policy": (sums[:n], sums[n:]),
            "ref": (ref[:n], ref[n:]),
            "counts": (counts[:n], counts[n:]),
        }

    def _losses(self, out: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.cfg.dpo
        (pc, pr), (rc, rr), (nc, nr) = out["policy"], out["ref"], out["counts"]
        per_pair = preference_loss(pc, pr, rc, rr, d.loss, d.beta, nc, nr)
        margin = d.beta * ((pc - rc) - (pr - rr)).detach()
        return per_pair, margin

    def backward(self, group: list[list[int]]) -> tuple[float, int]:
        t, d = self.cfg.train, self.cfg.dpo
        shards = dist.shard_groups(group, t.batch_size)
        n_pairs = dist.sum_value(sum(len(b) for b in shards))
        n_chosen = dist.sum_value(
            sum(len(self.pairs[i][0].input_ids) - self.pairs[i][0].n_prompt for b in shards for i in b)
        )
        totals = {
            "loss": 0.0,
            "reward_margin": 0.0,
            "reward_accuracy": 0.0,
            "logp_chosen": 0.0,
            "logp_rejected": 0.0,
        }
        for b in shards:
            pairs = [self.pairs[i] for i in b]
            out = self._forward(pairs, grad=not d.grad_chunk)
            if d.grad_chunk:  # the loss's gradient w.r.t. each sequence's log-prob, then chunk by chunk
                out["policy"] = tuple(x.detach().requires_grad_() for x in out["policy"])
            per_pair, margin = self._losses(out)
            loss = per_pair.sum() / n_pairs
            if d.loss == "rpo":
                loss = loss + d.rpo_alpha * (-out["policy"][0].sum()) / n_chosen
            loss.backward()
            if d.grad_chunk:
                self._backward_in_chunks(pairs, out["policy"][0].grad, out["policy"][1].grad)
            totals["loss"] += float(loss.detach()) * n_pairs
            totals["reward_margin"] += float(margin.sum())
            totals["reward_accuracy"] += float((margin > 0).sum())
            totals["logp_chosen"] += float(out["policy"][0].detach().sum())
            totals["logp_rejected"] += float(out["policy"][1].detach().sum())
        means = {k: dist.sum_value(v) / n_pairs for k, v in totals.items()}
        self.step_log = {k: v for k, v in means.items() if k != "loss"}
        return means["loss"], int(n_pairs)

    def _backward_in_chunks(self, pairs, grad_chosen: torch.Tensor, grad_rejected: torch.Tensor) -> None:
        """Back-propagate ``sum_i dL/dlogp_i * logp_i`` over the micro-batch's sequences,
        ``dpo.grad_chunk`` sequences per forward + backward pass: the same gradient as one pass over
        all of them (the loss depends on the parameters only through the log-probs), with the
        activations of a chunk in memory instead of the whole batch's."""
        seqs, coeffs = [], []
        for (c, r), gc, gr in zip(pairs, grad_chosen.tolist(), grad_rejected.tolist(), strict=True):
            seqs += [c, r]  # a pair's two sequences share their prompt length: little padding
            coeffs += [gc, gr]
        size = self.cfg.dpo.grad_chunk
        for s in range(0, len(seqs), size):
            batch = pad_batch(seqs[s : s + size], self.pad_id)
            sums, _ = sequence_logprobs(self.model, batch, self.cfg.precision)
            (sums * torch.tensor(coeffs[s : s + size], dtype=sums.dtype, device=sums.device)).sum().backward()

    @torch.no_grad()
    def evaluate(self, pairs: list[tuple]) -> dict[str, float]:
        """Mean preference loss (without the RPO term) and reward accuracy over ``pairs``."""
        losses, margins = [], []
        size = self.cfg.train.eval_batch_size
        for s in range(0, len(pairs), size):
            per_pair, margin = self._losses(self._forward(pairs[s : s + size], grad=False))
            losses.append(per_pair.float())
            margins.append(margin.float())
        loss, margin = torch.cat(losses), torch.cat(margins)
        return {
            "val_loss": float(loss.mean()),
            "val_reward_margin": float(margin.mean()),
            "val_reward_accuracy": float((margin > 0).float().mean()),
        }

    def validate(self) -> tuple[float, dict[str, Any]] | None:
        if not self.val:
            return None
        fields = self.evaluate(self.val)
        return fields["val_loss"], fields

    def save_model(self, folder: Path) -> None:
        if self.cfg.dpo.sft_adapter is None:
            self.model.save_pretrained(str(folder))
        else:
            save_combined_adapter(self.model, self.cfg, folder)
        self.tokenizer.save_pretrained(str(folder))

    def checkpoint(self, folder: Path) -> dict[str, Any]:
        return {"trainable": trainable_state(self.model)}


def _lora_adapter(path: Path) -> Path:
    """``path`` if it is a LoRA adapter folder (safetensors), else a UserError."""
    config = path / ADAPTER_CONFIG
    if not config.is_file():
        raise UserError(f"dpo.sft_adapter: {path} is not a peft adapter folder (no {ADAPTER_CONFIG})")
    kind = json.loads(config.read_text()).get("peft_type")
    if kind != "LORA":
        raise UserError(f"dpo.sft_adapter: {path} is a {kind} adapter; DPO builds on a LoRA adapter")
    return require_safetensors(path)


def save_combined_adapter(model, cfg: GeneratorConfig, folder: Path) -> None:
    """Write the SFT LoRA and the trained DPO LoRA as one LoRA adapter over the base model: their
    concatenation (rank r_sft + r_dpo, each branch keeping its own scale), which equals the training
    model's weights (the SFT adapter merged, the DPO adapter on top)."""
    from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict

    state = get_peft_model_state_dict(model)
    combined = PeftModel.from_pretrained(load_base(cfg.model), str(cfg.dpo.sft_adapter), adapter_name="sft")
    combined.add_adapter("dpo", model.peft_config["default"])
    set_peft_model_state_dict(combined, state, adapter_name="dpo")
    combined.add_weighted_adapter(["sft", "dpo"], [1.0, 1.0], "default", combination_type="cat")
    combined.delete_adapter("sft")
    combined.delete_adapter("dpo")
    combined.save_pretrained(str(folder))


def load_policy(cfg: GeneratorConfig) -> torch.nn.Module:
    """The base model with ``dpo.sft_adapter`` merged into its weights and a fresh ``peft`` LoRA."""
    base = load_base(cfg.model)
    if cfg.dpo.sft_adapter is not None:
        from peft import PeftModel

        sft = PeftModel.from_pretrained(base, str(_lora_adapter(Path(cfg.dpo.sft_adapter))))
        base = sft.merge_and_unload()
    policy = apply_peft(base.to(dist.device()), cfg.peft)
    store_frozen_linears(policy, cfg.precision)  # the reference (LoRA disabled) reads them too
    return policy


def train_dpo(cfg: GeneratorConfig) -> Path:
    """Preference-tune the generator as configured; returns ``cfg.output_dir`` (``adapter/`` in it)."""
    d, t = cfg.dpo, cfg.train
    if d.pairs is None:
        raise UserError("dpo.pairs is not set: give a preference-pair JSONL (`ragtune generator pairs`)")
    if cfg.peft.method != "lora":
        raise UserError(
            f"generator dpo trains a LoRA on top of the SFT model: peft.method must be lora, not {cfg.peft.method}"
        )
    if d.sft_adapter is not None:
        _lora_adapter(Path(d.sft_adapter))
    corpus = load_corpus_arg(cfg.data.corpus)
    pairs = load_pairs(d.pairs, corpus)
    if d.val_pairs is not None:
        train_pairs, val_pairs = pairs, load_pairs(d.val_pairs, corpus)
    else:
        train_pairs, val_pairs = split_validation(pairs, cfg.data.val_fraction, cfg.seed)
    if not train_pairs:
        raise UserError("no training pairs left after the validation split")
    run = Run(cfg)
    tokenizer = load_tokenizer(cfg.model.name, cfg.model.trust_remote_code)
    enc = PromptEncoder(tokenizer, cfg.prompt, cfg.model.max_length)
    train_enc = encode_pairs(train_pairs, enc, d.pairs)
    val_enc = encode_pairs(val_pairs, enc, d.val_pairs or d.pairs)
    per_epoch = math.ceil(math.ceil(len(train_enc) / t.batch_size) / t.grad_accum)
    total = min(per_epoch * t.epochs, t.max_steps or per_epoch * t.epochs)
    model = load_policy(cfg)
    if run.resuming:
        model.load_state_dict(run.saved["trainable"], strict=False)
    model.train()
    task = PreferenceTask(cfg, model, tokenizer, train_enc, val_enc)
    run.fit(
        task,
        adamw(model, t.lr, t.weight_decay),
        Plan(total, per_epoch, t.warmup_ratio, t.max_grad_norm, t.eval_every, t.patience, t.save_every),
    )
    kinds: dict[str, int] = {}
    for p in train_pairs:
        kinds[p.kind or "unlabelled"] = kinds.get(p.kind or "unlabelled", 0) + 1
    summary = {
        "method": "dpo",
        "loss": d.loss,
        "beta": d.beta,
        "pairs": len(train_pairs),
        "pair_kinds": kinds,
        "validation_pairs": len(val_pairs),
        "sft_adapter": str(d.sft_adapter) if d.sft_adapter else None,
        "trainable_parameters": sum(p.numel() for p in task.params),
    }
    return run.finish(task, "adapter", summary)
