"""Generator fine-tuning on a tiny random Llama: loss masking, accumulation, every peft method,
resuming, RAFT draws. The tiny model and its word-level vocabulary are built in memory (no download)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from ragtune.config import load_config
from ragtune.data.io import load_corpus, load_qa
from ragtune.generator.collator import pad_batch
from ragtune.generator.config import DEFAULT_NO_ANSWER, DEFAULT_SYSTEM, GeneratorConfig, PeftConfig
from ragtune.generator.model import apply_peft, load_base, load_tokenizer, load_trained
from ragtune.generator.prompt import IGNORE_INDEX, EncodedExample, PromptEncoder
from ragtune.training import load_state
from tests.conftest import DEMO, killed_after_checkpoints, tiny_llama

_TINY: dict[str, Path] = {}


def tiny_lm_folder(factory: pytest.TempPathFactory) -> Path:
    """A saved tiny Llama + WordLevel tokenizer whose vocabulary holds every word of the demo data
    and the default prompts (so no prompt is <unk> soup). Built once per test session."""
    if "folder" not in _TINY:
        texts = [DEFAULT_SYSTEM, DEFAULT_NO_ANSWER, "system user assistant Passages: Question: [1] Answer:"]
        for p in load_corpus(DEMO / "corpus.jsonl").values():
            texts += [p.title, p.text]
        for line in (DEMO / "qa.jsonl").read_text().splitlines():
            obj = json.loads(line)
            texts += [obj["question"], obj["answer"]]
        words: set[str] = set()
        for t in texts:  # single punctuation marks, and runs of them (the Whitespace pre-tokenizer's unit)
            words.update(re.findall(r"\w+|[^\w\s]", t))
            words.update(re.findall(r"\w+|[^\w\s]+", t))
        model, tokenizer = tiny_llama(" ".join(sorted(words)))
        folder = factory.mktemp("tiny-llama")
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        _TINY["folder"] = folder
    return _TINY["folder"]


def make_cfg(out: Path, model: Path, *extra: str) -> GeneratorConfig:
    return load_config(
        None,
        [
            f"model.name={model}",
            "model.max_length=256",
            f"data.train={DEMO / 'qa_train.jsonl'}",
            f"data.test={DEMO / 'qa_test.jsonl'}",
            f"data.corpus={DEMO}",
            "data.max_examples=40",
            "train.batch_size=4",
            "precision=fp32",
            "train.save_every=0",
            f"output_dir={out}",
            *extra,
        ],
        GeneratorConfig,
    )


def demo_examples(n: int):
    return load_qa(DEMO / "qa_train.jsonl", load_corpus(DEMO / "corpus.jsonl"))[:n]


def encoded_examples(model: Path, n: int, max_length: int = 256) -> tuple[list[EncodedExample], object]:
    """The first ``n`` demo training examples encoded with their gold passage, and the tokenizer."""
    cfg = make_cfg(Path("unused"), model)
    tok = load_tokenizer(str(model))
    enc = PromptEncoder(tok, cfg.prompt, max_length)
    return [enc.encode(e.question, e.contexts, e.answer) for e in demo_examples(n)], tok


def hand_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[float, int]:
    """Summed cross-entropy over the positions whose label is not IGNORE_INDEX, from the full logits."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits = logits[:, -batch["input_ids"].shape[1] :]  # prompt tuning prepends virtual positions
    total, n = 0.0, 0
    for b in range(logits.shape[0]):
        for t in range(1, logits.shape[1]):
            label = int(batch["labels"][b, t])
            if label == IGNORE_INDEX:
                continue
            total += float(-torch.log_softmax(logits[b, t - 1].double(), -1)[label])
            n += 1
    return total, n


# ------------------------------------------------------------------------------------ config


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="p_gold"):
        load_config(None, ["raft.p_gold=1.5"], GeneratorConfig)
    with pytest.raises(ValueError, match="dropout"):
        PeftConfig(dropout=1.0)
    with pytest.raises(ValueError, match=r"train\.grad_accum"):
        load_config(None, ["train.grad_accum=0"], GeneratorConfig)
    cfg = load_config(None, ["peft.method=ia3", "train.lr=1e-3", "data.passages=bm25"], GeneratorConfig)
    assert (cfg.peft.method, cfg.train.lr, cfg.data.passages) == ("ia3", 1e-3, "bm25")


# ------------------------------------------------------------------------------------ loss


def test_answer_loss_counts_only_answer_tokens(tiny_lm: Path) -> None:
    from ragtune.generator.scoring import answer_loss

    examples, tok = encoded_examples(tiny_lm, 3)
    model = load_base(make_cfg(Path("x"), tiny_lm).model).eval()
    batch = pad_batch(examples, tok.pad_token_id)
    # The count is the answer's tokens plus the end-of-turn id, per example.
    end = tok.convert_tokens_to_ids("<|im_end|>")
    answers = [tok(e.answer, add_special_tokens=False)["input_ids"] for e in demo_examples(3)]
    n_answer = sum(len(a) + 1 for a in answers)
    assert [e.input_ids[e.n_prompt :] for e in examples] == [[*a, end] for a in answers]
    assert all(tok.unk_token_id not in e.input_ids for e in examples)  # the vocabulary covers the data
    with torch.no_grad():
        fast, n_fast = answer_loss(model, batch, precision="fp32", logits_only_answers=True)
        full, n_full = answer_loss(model, batch, precision="fp32", logits_only_answers=False)
        by_hand, n_hand = hand_loss(model, batch)
    assert n_fast == n_full == n_hand == n_answer
    assert float(fast) == pytest.approx(float(full), rel=1e-5)
    assert float(fast) == pytest.approx(by_hand, rel=1e-5)
    assert float(fast) / n_fast < 9  # ln(vocab) ~ 7.6 for a random model: a per-token cross-entropy

    with torch.no_grad():
        # Tokens after the answer (the padding) do not matter: make the padding random words.
        noisy = {k: v.clone() for k, v in batch.items()}
        pad = batch["attention_mask"] == 0
        assert int(pad.sum()) > 0
        noisy["input_ids"][pad] = torch.randint(10, 1000, (int(pad.sum()),))
        assert float(answer_loss(model, noisy, "fp32")[0]) == pytest.approx(float(fast), rel=1e-5)
        # Each example alone (no padding at all) sums to the batch loss.
        alone = sum(float(answer_loss(model, pad_batch([e], tok.pad_token_id), "fp32")[0]) for e in examples)
        assert alone == pytest.approx(float(fast), rel=1e-5)
        # Masking one more label removes exactly that token's term.
        first = examples[0].n_prompt
        fewer = {k: v.clone() for k, v in batch.items()}
        fewer["labels"][0, first] = IGNORE_INDEX
        logits = model(input_ids=batch["input_ids"][:1], attention_mask=batch["attention_mask"][:1]).logits
        term = float(-torch.log_softmax(logits[0, first - 1], -1)[examples[0].input_ids[first]])
        loss, n = answer_loss(model, fewer, "fp32")
        assert n == n_answer - 1 and float(loss) == pytest.approx(float(fast) - term, rel=1e-5)
        # Changing a prompt token changes the answer's loss (the answer is conditioned on it).
        edited = {k: v.clone() for k, v in batch.items()}
        edited["input_ids"][0, first - 5] = 42
        assert abs(float(answer_loss(model, edited, "fp32")[0]) - float(fast)) > 1e-4


@pytest.mark.parametrize("method", ["lora", "ia3", "prefix", "prompt", "bottleneck"])
def test_answer_only_logits_equal_the_full_path_for_every_peft_method(tiny_lm: Path, method: str) -> None:
    from ragtune.generator.model import n_virtual_tokens
    from ragtune.generator.scoring import answer_loss

    examples, tok = encoded_examples(tiny_lm, 3)
    cfg = make_cfg(Path("x"), tiny_lm, f"peft.method={method}", "peft.dropout=0", "peft.num_virtual_tokens=5")
    torch.manual_seed(0)
    model = apply_peft(load_base(cfg.model), cfg.peft).eval()
    assert n_virtual_tokens(model) == (5 if method == "prompt" else 0)
    batch = pad_batch(examples, tok.pad_token_id)
    with torch.no_grad():
        fast, n_fast = answer_loss(model, batch, precision="fp32", logits_only_answers=True)
        full, n_full = answer_loss(model, batch, precision="fp32", logits_only_answers=False)
        by_hand, n_hand = hand_loss(model, batch)
    assert n_fast == n_full == n_hand
    assert float(fast) == pytest.approx(float(full), rel=1e-5)
    assert float(fast) == pytest.approx(by_hand, rel=1e-5)


def test_a_batch_without_answer_tokens_is_an_error(tiny_lm: Path) -> None:
    from ragtune.generator.scoring import answer_loss

    examples, tok = encoded_examples(tiny_lm, 2)
    model = load_base(make_cfg(Path("x"), tiny_lm).model)
    batch = pad_batch(examples, tok.pad_token_id)
    batch["labels"][:] = IGNORE_INDEX
    for only in (True, False):
        with pytest.raises(ValueError, match="every label is masked"):
            answer_loss(model, batch, False, only)
    # Only the first label (which no position predicts) set: still no answer token.
    batch["labels"][0, 0] = 5
    with pytest.raises(ValueError, match="every label is masked"):
        answer_loss(model, batch, "fp32")


# ------------------------------------------------------------------------------------ batching


def test_micro_batches_are_a_function_of_seed_and_epoch() -> None:
    from ragtune.training import epoch_batches as micro_batches

    lengths = [(i * 37) % 101 + 5 for i in range(70)]
    a = micro_batches(lengths, 8, seed=1, epoch=0, group=True)
    assert a == micro_batches(lengths, 8, seed=1, epoch=0, group=True)
    assert a != micro_batches(lengths, 8, seed=1, epoch=1, group=True)
    assert sorted(i for b in a for i in b) == list(range(70))
    assert sorted(len(b) for b in a) == [6] + [8] * 8
    # Grouped: one chunk of 256 here, so every batch is a run of the length-sorted order.
    order = sorted(range(70), key=lambda i: -lengths[i])
    spans = sorted(sorted(lengths[i] for i in b) for b in a)
    assert spans == sorted(sorted(lengths[i] for i in order[s : s + 8]) for s in range(0, 70, 8))
    # Ungrouped: the batches of 2 are the batches of 4 cut in halves (accumulation sees the same
    # examples per optimiser step).
    four = micro_batches(lengths, 4, seed=3, epoch=2, group=False)
    two = micro_batches(lengths, 2, seed=3, epoch=2, group=False)
    assert [two[k] + two[k + 1] if k + 1 < len(two) else two[k] for k in range(0, len(two), 2)] == four


def trained_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def test_gradient_accumulation_matches_one_big_batch(tmp_path: Path, tiny_lm: Path) -> None:
    from ragtune.generator.scoring import answer_loss

    # One optimiser step's gradient: the accumulated micro-batch gradients, each divided by the
    # answer tokens of the whole step, equal the gradient of the big batch's mean token loss.
    examples, tok = encoded_examples(tiny_lm, 4)
    cfg = make_cfg(tmp_path, tiny_lm, "peft.dropout=0")
    torch.manual_seed(0)
    model = apply_peft(load_base(cfg.model), cfg.peft)
    for name, p in model.named_parameters():  # LoRA B starts at zero: make the update non-trivial
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    params = [p for p in model.parameters() if p.requires_grad]
    big = pad_batch(examples, tok.pad_token_id)
    loss, n = answer_loss(model, big, "fp32")
    (loss / n).backward()
    g_big = [p.grad.clone() for p in params]
    model.zero_grad()
    halves = [pad_batch(examples[:2], tok.pad_token_id), pad_batch(examples[2:], tok.pad_token_id)]
    n_total = sum(int((h["labels"][:, 1:] != IGNORE_INDEX).sum()) for h in halves)
    assert n_total == n
    for h in halves:
        part, _ = answer_loss(model, h, "fp32")
        (part / n_total).backward()
    for a, b in zip(g_big, [p.grad for p in params], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    assert max(float(g.abs().max()) for g in g_big) > 1e-4

    # End to end: 3 optimiser steps of 4 examples, as 1x4 or 2x2, give the same adapter.
    runs = {}
    for bs, accum in ((4, 1), (2, 2)):
        out = tmp_path / f"bs{bs}"
        c = make_cfg(
            out, tiny_lm, f"train.batch_size={bs}", f"train.grad_accum={accum}", "train.group_by_length=false",
            "train.max_steps=3", "peft.dropout=0", "data.val_fraction=0", "train.lr=1e-2",
        )  # fmt: skip
        from ragtune.generator.train import train

        train(c)
        runs[bs] = trained_state(out / "adapter")
        hist = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
        runs[f"loss{bs}"] = [h["loss"] for h in hist]
    assert runs["loss4"] == pytest.approx(runs["loss2"], rel=1e-5)
    assert set(runs[4]) == set(runs[2]) and len(runs[4]) == 2 * 7 * 2  # A and B of 7 modules x 2 layers
    for name in runs[4]:
        torch.testing.assert_close(runs[4][name], runs[2][name], rtol=1e-4, atol=1e-5)
    assert max(float(t.abs().max()) for k, t in runs[4].items() if "lora_B" in k) > 1e-3  # it trained


def test_compiled_blocks_train_to_the_same_adapter(tmp_path: Path, tiny_lm: Path) -> None:
    from ragtune.generator.model import compile_layers, decoder_layers
    from ragtune.generator.train import train

    # The blocks found and compiled in place: parameter names (what the adapter saves) unchanged.
    model = apply_peft(load_base(make_cfg(tmp_path, tiny_lm).model), PeftConfig())
    names = [n for n, _ in model.named_parameters()]
    assert len(decoder_layers(model)) == model.config.num_hidden_layers == 2
    assert compile_layers(model) == 2 and [n for n, _ in model.named_parameters()] == names

    # 3 steps (and a validation) eager and compiled: the same losses and the same adapter.
    from torch._dynamo.utils import counters

    runs = {}
    for compiled in (False, True):
        out = tmp_path / f"compile-{compiled}"
        c = make_cfg(out, tiny_lm, f"train.compile={compiled}", "train.max_steps=3", "train.lr=1e-2")
        counters.clear()
        train(c)
        assert (counters["stats"]["unique_graphs"] > 0) == compiled  # dynamo did capture the blocks
        runs[compiled] = trained_state(out / "adapter")
        hist = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
        runs[f"loss{compiled}"] = [h.get("loss", h.get("val_loss")) for h in hist]
    assert runs["lossTrue"] == pytest.approx(runs["lossFalse"], rel=1e-4)
    assert set(runs[True]) == set(runs[False])
    for name in runs[True]:
        torch.testing.assert_close(runs[True][name], runs[False][name], rtol=1e-3, atol=1e-5)
    assert max(float(t.abs().max()) for k, t in runs[True].items() if "lora_B" in k) > 1e-3


def test_compile_without_a_cxx_compiler_is_a_clear_error(tiny_lm: Path, monkeypatch) -> None:
    from ragtune.errors import UserError
    from ragtune.generator.model import compile_layers

    model = load_base(make_cfg(Path("unused"), tiny_lm).model)
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(UserError, match="C\\+\\+ compiler"):
        compile_layers(model)


# ------------------------------------------------------------------------------ peft methods


def fixed_input(tiny_lm: Path) -> torch.Tensor:
    examples, _ = encoded_examples(tiny_lm, 1)
    return torch.tensor([examples[0].input_ids])


def logits_of(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


@pytest.mark.parametrize("method", ["lora", "ia3", "prefix", "prompt", "bottleneck", "full"])
def test_every_method_saves_a_folder_plain_peft_and_transformers_load(
    tmp_path: Path, tiny_lm: Path, method: str
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ragtune.generator.train import train

    lr = 1e-2 if method != "full" else 1e-3
    cfg = make_cfg(
        tmp_path, tiny_lm, f"peft.method={method}", "train.max_steps=3", "data.val_fraction=0",
        f"train.lr={lr}", "peft.num_virtual_tokens=4",
    )  # fmt: skip
    out = train(cfg)
    ids = fixed_input(tiny_lm)
    if method == "full":
        folder = out / "model"
        assert not (out / "adapter").exists() and not (folder / "adapter_config.json").exists()
        plain = AutoModelForCausalLM.from_pretrained(folder)
    elif method == "bottleneck":  # not a peft folder: the adapters' config and weights, over the base
        from ragtune.generator.bottleneck import load_bottlenecks

        folder = out / "adapter"
        assert json.loads((folder / "bottleneck_config.json").read_text())["base_model_name_or_path"] == str(
            tiny_lm
        )
        plain = load_bottlenecks(AutoModelForCausalLM.from_pretrained(tiny_lm), folder)
    else:
        folder = out / "adapter"
        assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
            tiny_lm
        )
        plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lm), folder)
    ours = load_trained(folder, cfg.model)
    expected = logits_of(plain, ids)
    torch.testing.assert_close(logits_of(ours, ids), expected, rtol=0, atol=1e-6)
    assert (folder / "tokenizer.json").exists()

    # Training moved the weights away from the seeded initialisation that train() starts from, by
    # no more than Adam's step bound (<= ~lr per step): the start was reproduced and steps were taken.
    torch.manual_seed(cfg.seed)
    fresh = apply_peft(load_base(cfg.model), cfg.peft)
    trainable = {n for n, p in fresh.named_parameters() if p.requires_grad}
    fresh_state, ours_state = fresh.state_dict(), ours.state_dict()
    moved = max(float((ours_state[n] - fresh_state[n]).abs().max()) for n in trainable)
    assert 0.3 * lr < moved <= 3 * lr  # the lr schedule sums to 2 lr over the 3 steps
    assert float((logits_of(fresh, ids) - expected).abs().max()) > 1e-4
    if method in ("lora", "ia3", "bottleneck", "full"):  # these start as the base model itself
        torch.testing.assert_close(logits_of(fresh, ids), logits_of(load_base(cfg.model), ids))
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 3 and summary["method"] == method
    assert summary["trainable_parameters"] == sum(fresh_state[n].numel() for n in trainable)


def test_save_merged_lora_loads_with_plain_transformers(tmp_path: Path, tiny_lm: Path) -> None:
    from transformers import AutoModelForCausalLM

    from ragtune.generator.train import train

    cfg = make_cfg(
        tmp_path, tiny_lm, "save_merged=true", "train.max_steps=3", "data.val_fraction=0", "train.lr=1e-2"
    )
    out = train(cfg)
    ids = fixed_input(tiny_lm)
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    assert not (out / "merged" / "adapter_config.json").exists()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    adapter = logits_of(load_trained(out / "adapter", cfg.model), ids)
    torch.testing.assert_close(logits_of(merged, ids), adapter, rtol=0, atol=1e-4)
    assert float((logits_of(load_base(cfg.model), ids) - adapter).abs().max()) > 1e-3

    with pytest.raises(ValueError, match="nothing to merge"):
        train(make_cfg(tmp_path / "prefix", tiny_lm, "save_merged=true", "peft.method=prefix"))
    assert not (tmp_path / "prefix").exists()  # refused before anything was written


# ------------------------------------------------------------------------------ training runs


def history(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]


def test_training_lowers_the_loss_and_keeps_the_best_validation(tmp_path: Path, tiny_lm: Path) -> None:
    cfg = make_cfg(
        tmp_path, tiny_lm, "train.epochs=2", "train.lr=5e-3", "train.eval_every=3", "peft.dropout=0"
    )
    from ragtune.generator.scoring import validation_loss
    from ragtune.generator.train import load_data, train

    out = train(cfg)
    hist = history(out)
    steps_per_epoch = math.ceil(36 / 4)  # 40 examples, 10% held out
    assert [h["step"] for h in hist] == list(range(1, 2 * steps_per_epoch + 1))
    assert [h["epoch"] for h in hist] == [0] * steps_per_epoch + [1] * steps_per_epoch
    first, last = sum(h["loss"] for h in hist[:3]) / 3, sum(h["loss"] for h in hist[-3:]) / 3
    assert last < first - 0.05
    vals = {h["step"]: h["val_loss"] for h in hist if "val_loss" in h}
    assert list(vals) == [3, 6, 9, 12, 15, 18]
    assert vals[18] < vals[3]
    assert hist[-1]["lr"] == 0.0  # linear decay to zero at the last step
    summary = json.loads((out / "train_summary.json").read_text())
    best_step = min(vals, key=vals.get)
    assert summary["best"] == {"val_loss": pytest.approx(min(vals.values())), "step": best_step}
    assert (summary["examples"], summary["validation_examples"], summary["steps"]) == (36, 4, 18)
    assert summary["tokens_per_s"] > 0 and summary["tokens_seen"] > 36 * 2 * 50
    # adapter/ is the best validated adapter.
    best, final = trained_state(out / "best"), trained_state(out / "adapter")
    assert all(torch.equal(best[k], final[k]) for k in best)
    # ... and its validation loss is the recorded one.
    _, val_ex, source = load_data(cfg)
    tok = load_tokenizer(str(tiny_lm))
    enc = PromptEncoder(tok, cfg.prompt, cfg.model.max_length)
    val_encoded = [enc.encode(e.question, p, e.answer) for e, p in zip(val_ex, source.shown(val_ex))]
    model = load_trained(out / "adapter", cfg.model)
    assert validation_loss(model, val_encoded, 8, tok.pad_token_id, "fp32") == pytest.approx(
        min(vals.values()), rel=1e-5
    )


def test_a_killed_run_resumes_to_the_same_weights(tmp_path: Path, tiny_lm: Path) -> None:
    import ragtune.generator.train as gt

    # RAFT contexts (drawn per epoch), LoRA dropout (torch RNG), validation and a kill in epoch 2.
    extra = (
        "train.epochs=2", "train.batch_size=8", "train.save_every=3", "train.eval_every=4", "train.lr=5e-3",
        "raft.enabled=true", "raft.num_distractors=1", "raft.p_gold=0.7",
    )  # fmt: skip
    full = gt.train(make_cfg(tmp_path / "full", tiny_lm, *extra))
    whole = history(full)
    assert [h["step"] for h in whole] == list(range(1, 11))  # 36 examples / 8 -> 5 steps x 2 epochs

    part_cfg = make_cfg(tmp_path / "part", tiny_lm, *extra)
    killed_after_checkpoints(gt, 2, lambda: gt.train(part_cfg))
    part = tmp_path / "part"
    assert json.loads((part / "checkpoint" / "state.json").read_text())["step"] == 6
    assert not (part / "adapter").exists()
    # A run of another config may not reuse the checkpoint.
    with pytest.raises(ValueError, match="different config"):
        gt.train(make_cfg(part, tiny_lm, *extra, "train.lr=1e-3"))
    resumed = gt.train(part_cfg)
    again = history(resumed)
    assert [h["step"] for h in again] == list(range(1, 11))  # each step once
    for a, b in zip(whole, again, strict=True):
        assert a["loss"] == b["loss"] and a.get("val_loss") == b.get("val_loss")
    a, b = trained_state(full / "adapter"), trained_state(resumed / "adapter")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    last_a = load_state(full / "checkpoint" / "state.safetensors")["trainable"]
    last_b = load_state(part / "checkpoint" / "state.safetensors")["trainable"]
    assert all(torch.equal(last_a[k], last_b[k]) for k in last_a)
    assert (
        json.loads((full / "train_summary.json").read_text())["best"]
        == json.loads((resumed / "train_summary.json").read_text())["best"]
    )


# ------------------------------------------------------------------------------ RAFT


def raft_data(tiny_lm: Path, *extra: str):
    from ragtune.generator.train import EpochData, load_data

    cfg = make_cfg(Path("unused"), tiny_lm, "raft.enabled=true", "raft.num_distractors=2", *extra)
    train_ex, _, source = load_data(cfg)
    tok = load_tokenizer(str(tiny_lm))
    enc = PromptEncoder(tok, cfg.prompt, 1024)
    return EpochData(cfg, train_ex, source, enc), train_ex, tok


def test_raft_targets_and_contexts_in_training(tiny_lm: Path) -> None:
    data, examples, tok = raft_data(tiny_lm, "raft.p_gold=0")
    no_answer = tok.decode(tok(DEFAULT_NO_ANSWER, add_special_tokens=False)["input_ids"])
    for e, enc in zip(examples, data.encode(0), strict=True):
        target = [t for t in enc.labels if t != IGNORE_INDEX]
        assert tok.decode(target) == no_answer + " <|im_end|>"
        prompt = tok.decode(enc.input_ids[: enc.n_prompt])
        gold = tok.decode(tok(e.contexts[0].text, add_special_tokens=False)["input_ids"])
        assert gold not in prompt and enc.passages_kept == 2  # two distractors, no gold passage

    data, examples, tok = raft_data(tiny_lm, "raft.p_gold=1")
    epoch0 = data.encode(0)
    for e, enc in zip(examples, epoch0, strict=True):
        gold = tok.decode(tok(e.contexts[0].text, add_special_tokens=False)["input_ids"])
        assert gold in tok.decode(enc.input_ids[: enc.n_prompt]) and enc.passages_kept == 3
        answer = tok.decode(tok(e.answer, add_special_tokens=False)["input_ids"])
        assert tok.decode([t for t in enc.labels if t != IGNORE_INDEX]) == answer + " <|im_end|>"
    # Distractors are BM25 hits that are not the gold passage.
    assert all(
        e.contexts[0].id not in {p.id for p in d} for e, d in zip(examples, data.distractors, strict=True)
    )

    # The draws are a function of (seed, epoch, example): the same again, different next epoch.
    data, _, _ = raft_data(tiny_lm, "raft.p_gold=0.5")
    e0, e1 = data.encode(0), data.encode(1)
    assert [x.input_ids for x in e0] == [
        x.input_ids for x in raft_data(tiny_lm, "raft.p_gold=0.5")[0].encode(0)
    ]
    changed = sum(a.input_ids != b.input_ids for a, b in zip(e0, e1, strict=True))
    assert changed > len(e0) // 3
    shown = [x.passages_kept == 3 for x in e0]
    assert 0.25 < sum(shown) / len(shown) < 0.75  # ~p_gold of the examples see their gold passage
    other_seed = raft_data(tiny_lm, "raft.p_gold=0.5", "seed=1")[0].encode(0)
    assert [x.input_ids for x in other_seed] != [x.input_ids for x in e0]


def test_right_padding_needs_no_attention_mask() -> None:
    from ragtune.generator.scoring import causal_only

    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    assert causal_only(right) is None
    for mask in ([[0, 1, 1, 1], [1, 1, 1, 1]], [[1, 0, 1, 0]], [[1, 1, 0, 1]]):  # left padding, holes
        mask = torch.tensor(mask)
        assert causal_only(mask) is mask


def test_the_loss_forward_drops_the_mask_only_for_right_padding(tiny_lm: Path) -> None:
    from ragtune.generator.scoring import token_losses

    examples, tok = encoded_examples(tiny_lm, 3)
    model = load_base(make_cfg(Path("x"), tiny_lm).model).eval()
    seen = []
    model.register_forward_pre_hook(lambda _m, _a, kw: seen.append(kw["attention_mask"]), with_kwargs=True)
    batch = pad_batch(examples, tok.pad_token_id)
    assert int((batch["attention_mask"] == 0).sum()) > 0  # the batch is padded
    with torch.no_grad():
        token_losses(model, batch, "fp32")
        left = {k: v.flip(1) for k, v in batch.items()}  # left padding: the mask must reach the model
        token_losses(model, left, "fp32")
    assert seen[0] is None
    assert torch.equal(seen[1], left["attention_mask"])
