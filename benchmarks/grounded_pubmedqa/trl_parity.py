"""DPO loss parity with TRL's ``DPOTrainer`` at a point where it can fail.

At step 0 a fresh LoRA's B matrices are zero, so the policy equals the reference and every DPO
loss is log 2 whatever the implementation: the step-0 match in ``grounded_pubmedqa.json`` proves
nothing. Here the LoRA is first moved off zero (every ``lora_B`` drawn from a seeded normal), so
policy and reference differ, and then, on the same pairs and the same model object:

1. TRL's loss: ``DPOTrainer(model=<the peft model>)`` (reference = the adapter disabled, as in
   ragtune: passed as ``ref_model``, since TRL's own reference for a model that already carries an
   adapter is a frozen copy of that adapter), its first training batch holding every pair, ``trainer.compute_loss`` in eval mode;
2. ragtune's loss on TRL's batch: the same token ids and completion masks through
   ``ragtune.generator.dpo.sequence_logprobs`` + ``preference_loss`` (the loss arithmetic alone);
3. ragtune's loss on its own encoding (``PreferenceTask``, as ``generator dpo`` computes it): the
   arithmetic plus ragtune's prompt and answer tokens; their token ids are compared with TRL's.

for the ``sigmoid``, ``ipo`` and ``rpo`` losses (RPO in TRL: ``loss_type=["sigmoid", "sft"]`` with
``loss_weights=[1, rpo_alpha]``). fp32, LoRA dropout 0. TRL is a peer, not a ragtune dependency:

    pip install --no-deps --target /tmp/trl trl==1.16.0
    PYTHONPATH=/tmp/trl python benchmarks/grounded_pubmedqa/trl_parity.py [--pairs 8]

Writes ``benchmarks/results/dpo_trl_parity.json``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402
from benchmarks.grounded_pubmedqa.peer_trl import conversations  # noqa: E402

SEED = 0
TOL = 1e-4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=8, help="pairs in the one batch")
    ap.add_argument("--b-std", type=float, default=0.02, help="std of the LoRA B entries drawn")
    args = ap.parse_args()

    import torch
    import trl
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from ragtune.config import load_config
    from ragtune.data.io import load_corpus, load_qa
    from ragtune.data.schema import PreferencePair
    from ragtune.generator.collator import IGNORE_INDEX
    from ragtune.generator.config import GeneratorConfig
    from ragtune.generator.dpo import (
        PreferenceTask,
        encode_pairs,
        load_policy,
        preference_loss,
        sequence_logprobs,
    )
    from ragtune.generator.model import load_base, load_tokenizer
    from ragtune.generator.prompt import PromptEncoder

    cfg = load_config(
        ROOT / "configs/generator/demo.yaml", ["precision=fp32", "peft.dropout=0.0"], GeneratorConfig
    )
    corpus = load_corpus(ROOT / "data/demo/corpus.jsonl")
    qa = load_qa(ROOT / "data/demo/qa_train.jsonl", corpus)[: args.pairs + 1]
    # chosen: the reference answer; rejected: the next question's (a wrong answer, other length)
    pairs = [
        PreferencePair(e.id, e.question, tuple(corpus[p] for p in e.positive_ids), e.answer, f.answer)
        for e, f in itertools.pairwise(qa)
    ]
    tok = load_tokenizer(cfg.model.name)

    def policy():
        """The base model + a fresh LoRA (cfg.peft), fp32, its B matrices drawn off zero (seeded)."""
        torch.manual_seed(SEED)
        model = load_policy(cfg)
        g = torch.Generator().manual_seed(SEED)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * args.b_std)
        return model.eval()

    rows = conversations(cfg.prompt.system, pairs)
    enc = PromptEncoder(tok, cfg.prompt, cfg.model.max_length)
    ours_enc = encode_pairs(pairs, enc, None)

    results: dict[str, dict] = {}
    tokens_equal = None
    for loss in ("sigmoid", "ipo", "rpo"):
        c = load_config(
            ROOT / "configs/generator/demo.yaml",
            ["precision=fp32", "peft.dropout=0.0", f"dpo.loss={loss}"],
            GeneratorConfig,
        )
        d = c.dpo
        targs = DPOConfig(
            output_dir=str(HERE / "work" / "trl_parity"),
            per_device_train_batch_size=len(pairs),
            beta=d.beta,
            loss_type=["sigmoid", "sft"] if loss == "rpo" else [loss],
            loss_weights=[1.0, d.rpo_alpha] if loss == "rpo" else None,
            max_length=None,
            use_cpu=True,
            bf16=False,  # TRL's configs default to bf16 autocast; the comparison is in fp32
            report_to=[],
            seed=SEED,
        )
        model = policy()
        # TRL's reference for a model that already carries an adapter is a frozen copy of that
        # adapter ("ref"), so it would equal the policy here; ragtune's reference is the model with
        # the DPO LoRA disabled. Passing that model as `ref_model` gives TRL the same reference.
        reference = load_base(c.model).eval()
        trainer = DPOTrainer(
            model=model,
            ref_model=reference,
            args=targs,
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
        )
        batch = next(iter(trainer.get_train_dataloader()))
        trainer.model.eval()
        with torch.no_grad():
            theirs = float(trainer.compute_loss(trainer.model, batch))

        # ragtune's arithmetic on TRL's batch: TRL's rows are [chosen..., rejected...]
        ids, att, comp = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
        labels = ids.masked_fill(comp == 0, IGNORE_INDEX)
        ours_batch = {"input_ids": ids, "attention_mask": att, "labels": labels}
        with torch.no_grad():
            sums, counts = sequence_logprobs(model, ours_batch, "fp32")
            with model.disable_adapter():
                ref, _ = sequence_logprobs(model, ours_batch, "fp32")
        n = len(pairs)
        per = preference_loss(sums[:n], sums[n:], ref[:n], ref[n:], loss, d.beta, counts[:n], counts[n:])
        on_their_batch = per.mean()
        if loss == "rpo":
            on_their_batch = on_their_batch + d.rpo_alpha * (-sums[:n].sum() / counts[:n].sum())

        # ragtune end to end: its own encoding, as `generator dpo` computes a step's loss
        task = PreferenceTask(c, model, tok, ours_enc, [])
        with torch.no_grad():
            out = task._forward(ours_enc, grad=False)
            per_pair, _ = task._losses(out)
            own = per_pair.mean()
            if loss == "rpo":
                nc = sum(len(ch.input_ids) - ch.n_prompt for ch, _ in ours_enc)
                own = own + d.rpo_alpha * (-out["policy"][0].sum() / nc)

        if tokens_equal is None:  # TRL's sequences (padding dropped; its loader shuffles) vs ragtune's
            theirs_seqs = sorted(ids[i][att[i].bool()].tolist() for i in range(2 * n))
            ours_seqs = sorted([ch.input_ids for ch, _ in ours_enc] + [r.input_ids for _, r in ours_enc])
            tokens_equal = theirs_seqs == ours_seqs
            # the chat template writes "\n" after the end-of-turn token; TRL keeps it in the completion
            newline = tok("\n", add_special_tokens=False)["input_ids"]
            tail = len(newline)
            tokens_equal_but_trailing_newline = (
                all(a[-tail:] == newline for a in theirs_seqs)
                and sorted(a[:-tail] for a in theirs_seqs) == ours_seqs
            )
            example = {
                "trl_completion_tail": tok.decode(theirs_seqs[0][-4:]),
                "ragtune_completion_tail": tok.decode(ours_seqs[0][-3:]),
            }
        results[loss] = {
            "trl": round(theirs, 7),
            "ragtune_on_trl_batch": round(float(on_their_batch), 7),
            "ragtune_own_encoding": round(float(own), 7),
            "abs_diff_same_batch": float(f"{abs(theirs - float(on_their_batch)):.3g}"),
            "abs_diff_own_encoding": float(f"{abs(theirs - float(own)):.3g}"),
            "log2": 0.6931472,
        }
        print(loss, results[loss], flush=True)

    summary = {
        "same_batch_within_1e-4": all(r["abs_diff_same_batch"] <= TOL for r in results.values()),
        "own_encoding_within_1e-4": all(r["abs_diff_own_encoding"] <= TOL for r in results.values()),
        "token_ids_equal": tokens_equal,
        "token_ids_equal_but_trl_scores_the_newline_after_end_of_turn": tokens_equal_but_trailing_newline,
        "example": example,
        "pairs": len(pairs),
        "lora_b_std": args.b_std,
        "trl": trl.__version__,
        "model": cfg.model.name,
        "data": "data/demo qa_train (chosen: the answer; rejected: the next question's answer)",
    }
    out = write_result(
        "dpo_trl_parity",
        f"PYTHONPATH=/tmp/trl python benchmarks/grounded_pubmedqa/trl_parity.py --pairs {args.pairs}",
        SEED,
        results,
        extra={"summary": summary},
        precision="fp32",
    )
    print(summary)
    print("written to", out)


if __name__ == "__main__":
    main()
