"""Preference tuning: DPO / IPO / RPO losses against hand-computed values, the reference being the SFT
model with the DPO LoRA disabled, training that prefers the chosen answers, the saved adapter loading
with peft alone (and in the joint loop), pair kinds built as specified, and bad pair files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ragtune.data.io import DataError, load_corpus, load_pairs
from ragtune.generator.collator import pad_batch
from ragtune.generator.dpo import (
    PreferenceTask,
    encode_pairs,
    load_policy,
    preference_loss,
    sequence_logprobs,
    train_dpo,
)
from ragtune.generator.model import load_base, load_tokenizer
from ragtune.generator.prompt import PromptEncoder
from tests.conftest import DEMO
from tests.generator.test_train import demo_examples, hand_loss, make_cfg


@pytest.fixture(scope="module")
def sft_adapter(tiny_lm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter with random (non-zero) weights: an SFT model that differs from the base."""
    from ragtune.generator.model import apply_peft

    cfg = make_cfg(Path("unused"), tiny_lm, "peft.r=4", "peft.alpha=8")
    torch.manual_seed(1)
    model = apply_peft(load_base(cfg.model), cfg.peft)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    folder = tmp_path_factory.mktemp("sft") / "adapter"
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Demo questions: chosen = the right answer with its passage, rejected = another question's answer."""
    examples = demo_examples(24)
    corpus = load_corpus(DEMO / "corpus.jsonl")
    rows = []
    for i, e in enumerate(examples):
        wrong = next(o.answer for o in examples[i + 1 :] + examples[:i] if o.answer != e.answer)
        rows.append(
            {
                "id": f"{e.id}/swap",
                "question": e.question,
                "passages": [{"id": p.id} for p in e.contexts],
                "chosen": e.answer,
                "rejected": wrong,
                "kind": "swap",
            }
        )
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(load_pairs(path, corpus)) == 24
    return path


def dpo_cfg(out: Path, tiny_lm: Path, pairs: Path, *extra: str):
    return make_cfg(
        out, tiny_lm, f"dpo.pairs={pairs}", "peft.r=4", "peft.alpha=8", "train.batch_size=4", *extra
    )


# ------------------------------------------------------------------------------------ losses


def test_preference_losses_equal_hand_computed_values() -> None:
    pc, pr = torch.tensor([-4.0, -10.0]), torch.tensor([-6.0, -7.0])
    rc, rr = torch.tensor([-5.0, -9.0]), torch.tensor([-5.5, -8.0])
    nc, nr = torch.tensor([4, 2]), torch.tensor([2, 5])
    beta = 0.5
    sig = preference_loss(pc, pr, rc, rr, "sigmoid", beta)
    # pair 0: ratios +1 and -0.5 -> margin 1.5; pair 1: -1 and +1 -> -2
    expected = [math.log1p(math.exp(-beta * 1.5)), math.log1p(math.exp(-beta * -2.0))]
    assert sig.tolist() == pytest.approx(expected, abs=1e-6)
    assert preference_loss(pc, pr, rc, rr, "rpo", beta).tolist() == pytest.approx(expected, abs=1e-6)
    ipo = preference_loss(pc, pr, rc, rr, "ipo", beta, nc, nr)
    # per-token ratios: pair 0: 1/4 - (-0.5)/2 = 0.5; pair 1: -1/2 - 1/5 = -0.7; target 1/(2 beta) = 1
    assert ipo.tolist() == pytest.approx([(0.5 - 1) ** 2, (-0.7 - 1) ** 2], abs=1e-6)
    with pytest.raises(ValueError, match="token counts"):
        preference_loss(pc, pr, rc, rr, "ipo", beta)


def test_sequence_logprobs_equal_the_full_softmax(tiny_lm: Path) -> None:
    cfg = make_cfg(Path("unused"), tiny_lm)
    tok = load_tokenizer(str(tiny_lm))
    enc = PromptEncoder(tok, cfg.prompt, 256)
    examples = [enc.encode(e.question, e.contexts, e.answer) for e in demo_examples(3)]
    model = load_base(cfg.model).eval()
    batch = pad_batch(examples, tok.pad_token_id)
    with torch.no_grad():
        sums, counts = sequence_logprobs(model, batch, "fp32")
        for row in range(3):
            one = {k: v[row : row + 1] for k, v in batch.items()}
            total, n = hand_loss(model, one)
            assert float(sums[row]) == pytest.approx(-total, rel=1e-5)
            assert int(counts[row]) == n


# ------------------------------------------------------------------------------------ reference


def test_the_reference_is_the_sft_model_with_the_lora_disabled(tiny_lm, sft_adapter, pairs_file) -> None:
    from peft import PeftModel

    cfg = dpo_cfg(Path("unused"), tiny_lm, pairs_file, f"dpo.sft_adapter={sft_adapter}")
    tok = load_tokenizer(str(tiny_lm))
    pairs = encode_pairs(
        load_pairs(pairs_file, load_corpus(DEMO / "corpus.jsonl"))[:4],
        PromptEncoder(tok, cfg.prompt, 256),
        pairs_file,
    )
    policy = load_policy(cfg).eval()
    sft = PeftModel.from_pretrained(load_base(cfg.model), str(sft_adapter)).eval()
    base = load_base(cfg.model).eval()
    batch = pad_batch([c for c, _ in pairs] + [r for _, r in pairs], tok.pad_token_id)
    with torch.no_grad():
        with policy.disable_adapter():
            ref, _ = sequence_logprobs(policy, batch, "fp32")
        want, _ = sequence_logprobs(sft, batch, "fp32")
        untuned, _ = sequence_logprobs(base, batch, "fp32")
    assert torch.allclose(ref, want, atol=1e-4)
    assert not torch.allclose(ref, untuned, atol=1e-2)  # the SFT adapter does change the model
    # A fresh LoRA is the reference at step 0: margin 0, DPO loss log 2.
    task = PreferenceTask(cfg, policy, tok, pairs, [])
    out = task._forward(pairs, grad=False)
    per_pair, margin = task._losses(out)
    assert margin.abs().max() < 1e-4
    assert per_pair.tolist() == pytest.approx([math.log(2)] * 4, abs=1e-4)


def test_rpo_adds_alpha_times_the_chosen_answers_token_nll(tiny_lm, pairs_file) -> None:
    tok = load_tokenizer(str(tiny_lm))
    losses = {}
    for loss in ("sigmoid", "rpo"):
        cfg = dpo_cfg(Path("unused"), tiny_lm, pairs_file, f"dpo.loss={loss}", "dpo.rpo_alpha=0.5")
        pairs = encode_pairs(
            load_pairs(pairs_file, load_corpus(DEMO / "corpus.jsonl"))[:4],
            PromptEncoder(tok, cfg.prompt, 256),
            pairs_file,
        )
        task = PreferenceTask(cfg, load_policy(cfg), tok, pairs, [])
        losses[loss], _ = task.backward([[0, 1, 2, 3]])
    model = load_base(cfg.model).eval()
    with torch.no_grad():
        total, n = hand_loss(model, pad_batch([c for c, _ in pairs], tok.pad_token_id))
    assert losses["sigmoid"] == pytest.approx(math.log(2), abs=1e-4)
    assert losses["rpo"] - losses["sigmoid"] == pytest.approx(0.5 * total / n, rel=1e-4)


# ------------------------------------------------------------------------------------ training


def test_dpo_prefers_the_chosen_answers_and_saves_one_standard_adapter(
    tmp_path, tiny_lm, sft_adapter, pairs_file
) -> None:
    from peft import PeftModel

    cfg = dpo_cfg(
        tmp_path / "run", tiny_lm, pairs_file, f"dpo.sft_adapter={sft_adapter}", "train.lr=3e-2", "dpo.beta=1.0",
        "train.epochs=4", "train.warmup_ratio=0", "data.val_fraction=0.25", "train.eval_every=5",
    )  # fmt: skip
    out = train_dpo(cfg)
    history = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert len(history) == 20  # 18 training pairs / 4 -> 5 steps x 4 epochs
    assert {"reward_margin", "reward_accuracy", "logp_chosen", "logp_rejected"} <= set(history[0])
    assert history[0]["reward_margin"] == pytest.approx(0.0, abs=1e-4)
    assert history[-1]["reward_margin"] > 0.25 and history[-1]["reward_accuracy"] >= 0.75
    vals = [h["val_loss"] for h in history if "val_loss" in h]
    assert len(vals) == 4 and vals[0] != pytest.approx(math.log(2), abs=1e-4)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["best"]["val_loss"] == min(vals)  # adapter/ is the best validated step
    assert summary["pairs"] == 18 and summary["pair_kinds"] == {"swap": 18} and summary["pairs_per_s"] > 0

    # What is saved is one LoRA over the base that peft alone loads, equal to the training model (SFT
    # merged + DPO LoRA): here the last step's, from the checkpoint.
    from ragtune.generator.dpo import save_combined_adapter
    from ragtune.training import load_state

    saved = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert saved["r"] == 8  # r_sft + r_dpo
    policy = load_policy(cfg)
    policy.load_state_dict(load_state(out / "checkpoint" / "state.safetensors")["trainable"], strict=False)
    save_combined_adapter(policy, cfg, tmp_path / "last")
    loaded = PeftModel.from_pretrained(load_base(cfg.model), str(tmp_path / "last")).eval()
    tok = load_tokenizer(str(tiny_lm))
    pairs = encode_pairs(
        load_pairs(pairs_file, load_corpus(DEMO / "corpus.jsonl"))[:3],
        PromptEncoder(tok, cfg.prompt, 256),
        pairs_file,
    )
    batch = pad_batch([c for c, _ in pairs], tok.pad_token_id)
    with torch.no_grad():
        a, _ = sequence_logprobs(loaded, batch, "fp32")
        b, _ = sequence_logprobs(policy.eval(), batch, "fp32")
        with policy.disable_adapter():
            sft, _ = sequence_logprobs(policy, batch, "fp32")
    assert torch.allclose(a, b, atol=1e-4)
    assert not torch.allclose(a, sft, atol=1e-2)  # DPO moved the model away from the SFT one
    best = PeftModel.from_pretrained(load_base(cfg.model), str(out / "adapter")).eval()
    with torch.no_grad():
        a, _ = sequence_logprobs(best, batch, "fp32")

    # The joint loop takes it as its generator.
    from ragtune.config import load_config
    from ragtune.e2e.config import E2EConfig
    from ragtune.e2e.state import Generator

    e2e = load_config(
        None,
        [f"generator.model.name={tiny_lm}", f"generator.adapter={out / 'adapter'}", "precision=fp32"],
        E2EConfig,
    )
    joint = Generator(e2e)
    with torch.no_grad():
        c, _ = sequence_logprobs(joint.model.eval(), batch, "fp32")
    assert torch.allclose(a, c, atol=1e-5)


def test_a_killed_dpo_run_resumes_to_the_same_weights(tmp_path, tiny_lm, pairs_file) -> None:
    import ragtune.generator.dpo as dpo
    from tests.conftest import killed_after_checkpoints

    extra = ("train.lr=5e-3", "train.epochs=2", "train.save_every=2", "data.val_fraction=0")
    full = train_dpo(dpo_cfg(tmp_path / "full", tiny_lm, pairs_file, *extra))
    part_cfg = dpo_cfg(tmp_path / "part", tiny_lm, pairs_file, *extra)
    killed_after_checkpoints(dpo, 2, lambda: train_dpo(part_cfg))
    resumed = train_dpo(part_cfg)
    a = [json.loads(x)["loss"] for x in (full / "history.jsonl").read_text().splitlines()]
    b = [json.loads(x)["loss"] for x in (resumed / "history.jsonl").read_text().splitlines()]
    assert len(a) == 12 and a == b
    from safetensors.torch import load_file

    wa = load_file(full / "adapter" / "adapter_model.safetensors")
    wb = load_file(resumed / "adapter" / "adapter_model.safetensors")
    assert set(wa) == set(wb) and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_dpo_refuses_bad_setups(tmp_path, tiny_lm, pairs_file) -> None:
    from ragtune.errors import UserError

    with pytest.raises(UserError, match=r"dpo\.pairs is not set"):
        train_dpo(make_cfg(tmp_path / "a", tiny_lm))
    with pytest.raises(UserError, match=r"peft\.method must be lora"):
        train_dpo(dpo_cfg(tmp_path / "b", tiny_lm, pairs_file, "peft.method=ia3"))
    with pytest.raises(UserError, match="not a peft adapter folder"):
        train_dpo(dpo_cfg(tmp_path / "c", tiny_lm, pairs_file, f"dpo.sft_adapter={tmp_path}"))
    with pytest.raises(ValueError, match=r"dpo\.beta"):
        dpo_cfg(tmp_path / "d", tiny_lm, pairs_file, "dpo.beta=0")


def test_pair_files_with_bad_rows_name_file_line_and_field(tmp_path: Path) -> None:
    good = {"id": "a", "question": "Q?", "chosen": "yes", "rejected": "no", "passages": ["some text"]}
    cases = [
        ({k: v for k, v in good.items() if k != "chosen"}, "field 'chosen': missing"),
        ({**good, "rejected": " yes "}, "field 'rejected': the same text"),
        (
            {**good, "passages": [{"id": "p9"}]},
            r"field 'passages\[0\].id': passages given by id need a corpus",
        ),
    ]
    for row, message in cases:
        path = tmp_path / "pairs.jsonl"
        path.write_text(json.dumps({**good, "id": "first"}) + "\n" + json.dumps(row) + "\n")
        with pytest.raises(DataError, match=f"pairs.jsonl:2: {message}"):
            load_pairs(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(DataError, match=r"pairs\.jsonl:2: field 'id': duplicate"):
        load_pairs(path)


# ------------------------------------------------------------------------------------ pairs


def test_pairs_are_built_as_each_kind_says(tmp_path, tiny_lm) -> None:
    from ragtune.generator.generate import Generator
    from ragtune.generator.pairs import build_pairs

    cfg = make_cfg(
        tmp_path, tiny_lm, "data.max_examples=6", "generate.max_new_tokens=4", "pairs.mix.unanswerable=1.0",
        "pairs.num_distractors=2",
    )  # fmt: skip
    out = tmp_path / "pairs.jsonl"
    stats = build_pairs(cfg, None, None, out, limit=6)
    corpus = load_corpus(DEMO / "corpus.jsonl")
    pairs = load_pairs(out, corpus)
    rows = {json.loads(x)["id"]: json.loads(x) for x in out.read_text().splitlines()}
    examples = {e.id: e for e in demo_examples(6)}
    planned = 6 * 3
    dropped = sum(stats["dropped_same_as_chosen"].values())
    assert stats["pairs"] == len(pairs) == planned - dropped - stats["skipped_without_distractors"]
    gen = Generator(cfg, None)
    for p in pairs:
        e = examples[p.id.rsplit("/", 1)[0]]
        gold = {c.id for c in e.contexts}
        shown = {c.id for c in p.passages}
        assert rows[p.id]["question_id"] == e.id and p.question == e.question
        if p.kind == "closed_book":
            assert shown == gold and p.chosen == e.answer
            assert p.rejected == gen([e.question], [[]])[0]  # the model's own answer without passages
        elif p.kind == "distractors":
            assert gold < shown and len(shown) == len(gold) + 2 and p.chosen == e.answer
            asked = rows[p.id]["rejected_passage_ids"]  # the distractors, in their retrieval order
            assert set(asked) == shown - gold
            assert p.rejected == gen([e.question], [[corpus[i] for i in asked]])[0]
        else:
            assert p.kind == "unanswerable" and not shown & gold and len(shown) == 2
            assert (p.chosen, p.rejected) == (cfg.prompt.no_answer, e.answer)
    assert {p.kind for p in pairs} >= {"unanswerable"}
    assert json.loads((tmp_path / "pairs.jsonl.stats.json").read_text())["pairs"] == len(pairs)


def test_pair_mix_zero_leaves_a_kind_out(tmp_path, tiny_lm) -> None:
    from ragtune.generator.pairs import build_pairs

    cfg = make_cfg(
        tmp_path, tiny_lm, "pairs.mix.closed_book=0", "pairs.mix.distractors=0", "pairs.mix.unanswerable=1",
    )  # fmt: skip
    stats = build_pairs(cfg, None, None, tmp_path / "p.jsonl", limit=5)
    assert stats["kinds"] == {"closed_book": 0, "distractors": 0, "unanswerable": 5}
    assert stats["generated_answers"] == 0


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "rpo"])
def test_chunked_backward_gives_the_one_pass_gradient(tiny_lm, sft_adapter, pairs_file, loss) -> None:
    tok = load_tokenizer(str(tiny_lm))
    grads, losses = {}, {}
    for chunk in (0, 1, 3):
        cfg = dpo_cfg(
            Path("unused"), tiny_lm, pairs_file, f"dpo.sft_adapter={sft_adapter}", f"dpo.loss={loss}",
            f"dpo.grad_chunk={chunk}", "dpo.beta=0.5",
        )  # fmt: skip
        pairs = encode_pairs(
            load_pairs(pairs_file, load_corpus(DEMO / "corpus.jsonl"))[:4],
            PromptEncoder(tok, cfg.prompt, 256),
            pairs_file,
        )
        torch.manual_seed(0)
        policy = load_policy(cfg)
        with torch.no_grad():  # off the reference, so that every pair's loss has a different slope
            for name, p in policy.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
        task = PreferenceTask(cfg, policy, tok, pairs, [])
        losses[chunk], _ = task.backward([[0, 1], [2, 3]])
        grads[chunk] = {n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad}
    for chunk in (1, 3):
        assert losses[chunk] == pytest.approx(losses[0], rel=1e-6)
        for n, g in grads[0].items():
            torch.testing.assert_close(grads[chunk][n], g, rtol=1e-4, atol=1e-6)
    assert max(float(g.abs().max()) for g in grads[0].values()) > 1e-4  # a gradient worth comparing
