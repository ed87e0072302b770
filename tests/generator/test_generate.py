"""Generation (batched, left-padded, greedy, stopping at the end of turn) and the generator CLI, on the
tiny random Llama of :mod:`tests.generator.test_train`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ragtune.cli import main
from ragtune.data.io import load_corpus, load_qa
from ragtune.generator.generate import Generator, generate, generate_ids, left_pad
from ragtune.generator.model import load_base, load_tokenizer
from ragtune.retriever.bm25 import BM25
from tests.conftest import DEMO, ROOT
from tests.generator.test_train import make_cfg


def test_left_pad() -> None:
    ids, mask = left_pad([[5, 6, 7], [8], [9, 10]], pad_id=1)
    assert ids.tolist() == [[5, 6, 7], [1, 1, 8], [1, 9, 10]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]


def varied_questions(n: int = 8):
    examples = load_qa(DEMO / "qa_test.jsonl", load_corpus(DEMO / "corpus.jsonl"))
    # Different prompt lengths: the 8 questions with the most varied gold passage lengths.
    by_len = sorted(examples, key=lambda e: len(e.contexts[0].text))
    picked = [by_len[round(i * (len(by_len) - 1) / (n - 1))] for i in range(n)]
    return picked


def stopping_model(cfg, tok):
    """The tiny model with the end-of-turn token's output row swapped with that of a word it often
    generates, so that some answers end early and others run to ``max_new_tokens``."""
    model = load_base(cfg.model).eval()
    end = tok.convert_tokens_to_ids("<|im_end|>")
    gen = Generator(cfg, model=model, tokenizer=tok)
    prompts, _ = gen.build([e.question for e in varied_questions()], [e.contexts for e in varied_questions()])
    free, _ = generate_ids(model, prompts, cfg.generate, [tok.unk_token_id], tok.pad_token_id, progress=False)
    # A word that some (not all) continuations produce after their first token.
    counts: dict[int, int] = {}
    for row in free:
        for t in set(row[1:]):
            counts[t] = counts.get(t, 0) + 1
    word = min(
        (t for t, c in counts.items() if 0 < c < len(free)), key=lambda t: (abs(counts[t] - len(free) / 2), t)
    )
    with torch.no_grad():
        w = model.lm_head.weight
        w[[end, word]] = w[[word, end]]
    return model, end


def test_batched_left_padded_greedy_equals_one_at_a_time_and_stops_at_end_of_turn(tiny_lm: Path) -> None:
    cfg = make_cfg(Path("unused"), tiny_lm, "generate.max_new_tokens=8")
    tok = load_tokenizer(str(tiny_lm))
    model, end = stopping_model(cfg, tok)
    gen = Generator(cfg, model=model, tokenizer=tok)
    questions = varied_questions()
    prompts, _ = gen.build([e.question for e in questions], [e.contexts for e in questions])
    assert len({len(p) for p in prompts}) >= 6  # different lengths: real left padding in a batch

    # Unconstrained continuations (a stop id that never comes), then the same with the end of turn.
    free, _ = generate_ids(model, prompts, cfg.generate, [tok.unk_token_id], tok.pad_token_id, progress=False)
    assert all(len(r) == 8 for r in free)
    results = {}
    for bs in (8, 3, 1):
        gcfg = make_cfg(
            Path("unused"), tiny_lm, "generate.max_new_tokens=8", f"generate.batch_size={bs}"
        ).generate
        results[bs] = generate_ids(model, prompts, gcfg, gen.enc.end_ids, tok.pad_token_id, progress=False)
    ids, stats = results[8]
    assert ids == results[1][0] == results[3][0]
    assert gen.enc.end_ids == [end]
    stopped = 0
    for row, ref in zip(ids, free, strict=True):
        assert end not in row and len(row) <= 8
        expected = ref[: ref.index(end)] if end in ref else ref
        assert row == expected
        stopped += end in ref
    assert 0 < stopped < len(ids)  # some answers ended at the end of turn, others ran to max_new_tokens
    assert stats["tokens"] == sum(len(r) for r in ids) + stopped  # each stop token counts once
    assert stats["tokens"] == results[1][1]["tokens"] and stats["tokens_per_s"] > 0

    # Through the Generator: decoded text, the same for batch sizes 8 and 1.
    answers8 = gen.answer(prompts, progress=False)
    answers1 = gen.answer(
        prompts,
        make_cfg(Path("u"), tiny_lm, "generate.max_new_tokens=8", "generate.batch_size=1").generate,
        False,
    )
    assert answers8 == answers1 == [tok.decode(r, skip_special_tokens=True).strip() for r in ids]
    assert sum(a == "" for a in answers8) < len(answers8)
    # max_new_tokens is respected at any value.
    short = make_cfg(Path("u"), tiny_lm, "generate.max_new_tokens=2").generate
    two, _ = generate_ids(model, prompts, short, [end], tok.pad_token_id, progress=False)
    assert two == [r[:2] for r in ids]


def greedy_by_full_forward(model, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding with no KV cache: the model's training forward pass on the whole sequence."""
    x = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(n):
            nxt = model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0, -1].argmax()
            x = torch.cat([x, nxt.view(1, 1)], dim=1)
    return x[0, len(prompt) :].tolist()


@pytest.mark.parametrize("method", ["lora", "ia3", "prefix", "prompt", "bottleneck"])
def test_generation_with_every_peft_method_equals_greedy_full_forward(tiny_lm: Path, method: str) -> None:
    """KV-cached, left-padded generation gives the tokens of a cache-free greedy loop over the same
    forward pass that training uses, for batch sizes 8 and 1, and the adapter is in effect."""
    from ragtune.generator.model import apply_peft

    cfg = make_cfg(
        Path("u"), tiny_lm, f"peft.method={method}", "peft.num_virtual_tokens=4", "peft.dropout=0",
        "generate.max_new_tokens=5",
    )  # fmt: skip
    torch.manual_seed(0)
    model = apply_peft(load_base(cfg.model), cfg.peft)
    with torch.no_grad():  # LoRA and IA3 start as the identity: move them off it
        for name, p in model.named_parameters():
            if "lora_B" in name or "ia3_l" in name or name.endswith(".up.weight"):
                p.add_(torch.randn_like(p) * 0.5)
    model.eval()
    tok = load_tokenizer(str(tiny_lm))
    gen = Generator(cfg, model=model, tokenizer=tok)
    questions = varied_questions()
    prompts, _ = gen.build([e.question for e in questions], [e.contexts for e in questions])
    expected = [greedy_by_full_forward(model, p, 5) for p in prompts]
    for bs in (8, 1):
        gcfg = make_cfg(Path("u"), tiny_lm, "generate.max_new_tokens=5", f"generate.batch_size={bs}").generate
        ids, _ = generate_ids(model, prompts, gcfg, [tok.unk_token_id], tok.pad_token_id, progress=False)
        assert ids == expected
    base = load_base(cfg.model).eval()
    assert [greedy_by_full_forward(base, p, 5) for p in prompts] != expected
    if method == "prefix":
        beams = make_cfg(Path("u"), tiny_lm, "generate.num_beams=2").generate
        with pytest.raises(ValueError, match="num_beams=1"):
            generate_ids(model, prompts[:1], beams, [tok.unk_token_id], tok.pad_token_id, progress=False)


def test_prompts_leave_room_for_the_answer(tiny_lm: Path) -> None:
    cfg = make_cfg(Path("unused"), tiny_lm, "model.max_length=130", "generate.max_new_tokens=16")
    gen = Generator(cfg)
    tok = gen.tokenizer
    questions = varied_questions()
    prompts, kept = gen.build([e.question for e in questions], [e.contexts for e in questions])
    assert all(len(p) <= 130 - 16 for p in prompts)
    cut = 0
    for p, k, e in zip(prompts, kept, questions, strict=True):
        gold = e.contexts[0]
        if len(gen.enc.prompt_ids(e.question, [gold])) <= 114:
            assert k == [gold]  # fits: shown whole
            continue
        cut += 1  # too long: the passage is cut to fill the budget, not dropped
        n_full = len(tok(gold.text, add_special_tokens=False)["input_ids"])
        assert len(k) == 1 and k[0].id == gold.id
        assert 0 < len(tok(k[0].text, add_special_tokens=False)["input_ids"]) < n_full
        assert len(p) >= 114 - 3
    assert 2 <= cut < len(questions)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_generate_writes_predictions_with_the_shown_passages(tmp_path: Path, tiny_lm: Path) -> None:
    corpus = load_corpus(DEMO / "corpus.jsonl")
    questions = load_qa(DEMO / "qa_test.jsonl", corpus)[:5]
    out = tmp_path / "pred.jsonl"
    base = ("generate.max_new_tokens=4", "generate.batch_size=2")
    stats = generate(make_cfg(tmp_path, tiny_lm, *base), None, None, out, limit=5)
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == [e.id for e in questions]
    for r, e in zip(rows, questions, strict=True):
        assert set(r) == {"id", "question", "contexts", "prediction", "reference", "split"}
        assert (r["question"], r["reference"], r["split"]) == (e.question, e.answer, "test")
        p = e.contexts[0]
        assert r["contexts"] == [
            {"id": p.id, "title": p.title, "text": p.text}
        ]  # the gold passage, untrimmed
        assert isinstance(r["prediction"], str) and r["prediction"]
        assert len(r["prediction"].split()) <= 4  # word-level tokens: at most max_new_tokens words
    saved = json.loads((tmp_path / "pred.jsonl.stats.json").read_text())
    assert saved["examples"] == 5 and saved["model"] == str(tiny_lm)
    assert saved["tokens"] == stats["tokens"] and 5 <= stats["tokens"] <= 5 * 4

    # The same predictions from a Generator called directly.
    gen = Generator(make_cfg(tmp_path, tiny_lm, *base))
    assert gen([e.question for e in questions], [e.contexts for e in questions]) == [
        r["prediction"] for r in rows
    ]

    # bm25: the top_k passages of the corpus for the question.
    stats = generate(
        make_cfg(tmp_path, tiny_lm, *base, "data.passages=bm25", "data.top_k=2"), None, None, out, 5
    )
    bm25 = BM25(list(corpus), [p.full_text() for p in corpus.values()])
    hits = bm25.search([e.question for e in questions], 2)
    rows = read_jsonl(out)
    assert [[c["id"] for c in r["contexts"]] for r in rows] == [[pid for pid, _ in h] for h in hits]
    assert all(c["text"] == corpus[c["id"]].text for r in rows for c in r["contexts"])
    found = sum(
        e.contexts[0].id in [c["id"] for c in r["contexts"]] for e, r in zip(questions, rows, strict=True)
    )
    assert found >= 3  # BM25 finds most gold passages on the demo data

    # none: closed book.
    generate(make_cfg(tmp_path, tiny_lm, *base, "data.passages=none"), None, None, out, 5)
    assert all(r["contexts"] == [] for r in read_jsonl(out))


# ------------------------------------------------------------------------------------ CLI


def test_cli_train_then_generate(tmp_path: Path, tiny_lm: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(ROOT)  # the demo config names data/demo/... relative to the repository
    config = str(ROOT / "configs/generator/demo.yaml")
    small = [
        f"model.name={tiny_lm}", "model.max_length=256", "data.max_examples=16", "train.max_steps=2",
        "precision=fp32", "generate.max_new_tokens=4", f"output_dir={tmp_path / 'run'}",
    ]  # fmt: skip
    assert main(["generator", "train", "--config", config, *small]) == 0
    adapter = tmp_path / "run" / "adapter"
    assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    assert f"written to {adapter}" in capsys.readouterr().out
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["steps"] == 2 and summary["method"] == "lora"
    cfg_saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "p_gold: 0.8" in cfg_saved and "enabled: true" in cfg_saved  # the demo's RAFT settings

    out = tmp_path / "pred.jsonl"
    argv = ["generator", "generate", "--config", config, "--model", str(adapter), "--out", str(out)]
    assert main([*argv, "--limit", "4", *small]) == 0
    rows = read_jsonl(out)
    assert len(rows) == 4 and all(len(r["contexts"]) == 1 for r in rows)
    assert "4 predictions written to" in capsys.readouterr().out
    assert json.loads((tmp_path / "pred.jsonl.stats.json").read_text())["model"] == str(adapter)


def test_cli_errors(tmp_path: Path, tiny_lm: Path, capsys) -> None:
    config = str(ROOT / "configs/generator/demo.yaml")
    assert main(["generator", "train", "--config", config, "train.nope=1"]) == 2
    assert "nope" in capsys.readouterr().err
    missing = tmp_path / "no_such_train.jsonl"
    args = [f"model.name={tiny_lm}", f"data.train={missing}", f"output_dir={tmp_path / 'run'}"]
    assert main(["generator", "train", "--config", config, *args]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "not found" in err
    out = tmp_path / "p.jsonl"
    gen = ["generator", "generate", "--config", config, "--model", str(tmp_path / "nope"), "--out", str(out)]
    assert (
        main([*gen, f"model.name={tiny_lm}", f"data.test={DEMO / 'qa_test.jsonl'}", f"data.corpus={DEMO}"])
        == 2
    )
    assert "no such model or adapter folder" in capsys.readouterr().err
    assert not out.exists()


def test_dense_passages_and_distractors_come_from_the_retriever(tmp_path: Path, tiny_encoder: Path) -> None:
    """data.passages=dense and raft.distractors=dense search the corpus with data.retriever: the same
    hits as encoding and searching by hand, gold passages excluded from the distractors."""
    import numpy as np

    from ragtune.generator.collator import PassageSource
    from ragtune.generator.config import DataConfig
    from ragtune.retriever.model import encode, load_encoder

    corpus = load_corpus(DEMO / "corpus.jsonl")
    examples = load_qa(DEMO / "qa_test.jsonl", corpus)[:6]
    cfg = DataConfig(passages="dense", top_k=3, retriever=str(tiny_encoder))
    source = PassageSource(cfg, corpus, examples, precision="fp32")
    shown = source.shown(examples)
    model = load_encoder(str(tiny_encoder), precision="fp32")
    pvec = encode(model, [p.full_text() for p in corpus.values()], precision="fp32", show_progress=False)
    qvec = encode(model, [e.question for e in examples], max_length=64, precision="fp32", show_progress=False)
    top = np.argsort(-(qvec @ pvec.T), axis=1, kind="stable")[:, :3]
    ids = list(corpus)
    assert [[p.id for p in s] for s in shown] == [[ids[i] for i in row] for row in top]
    distractors = source.distractors(examples, 2, "dense")
    for e, d in zip(examples, distractors, strict=True):
        assert len(d) == 2 and e.contexts[0].id not in {p.id for p in d}


def test_dense_passages_from_a_colbert_folder_are_maxsim_hits(tmp_path: Path, tiny_encoder: Path) -> None:
    """data.retriever naming a saved ColBERT folder: data.passages=dense shows the exact MaxSim top_k."""
    import torch

    from ragtune.generator.collator import PassageSource
    from ragtune.generator.config import DataConfig
    from ragtune.retriever.colbert import encode_tokens, load_colbert

    torch.manual_seed(0)
    folder = tmp_path / "colbert"
    load_colbert(str(tiny_encoder), dim=16, query_length=16, document_length=64).save(str(folder))
    corpus = load_corpus(DEMO / "corpus.jsonl")
    examples = load_qa(DEMO / "qa_test.jsonl", corpus)[:4]
    cfg = DataConfig(passages="dense", top_k=3, retriever=str(folder))
    shown = PassageSource(cfg, corpus, examples, precision="fp32").shown(examples)
    model = load_colbert(str(folder), query_length=16, document_length=64)
    docs = encode_tokens(
        model,
        [p.full_text() for p in corpus.values()],
        task="document",
        precision="fp32",
        show_progress=False,
    )
    ids = list(corpus)
    for e, got in zip(examples, shown, strict=True):
        q = encode_tokens(model, [e.question], task="query", precision="fp32", show_progress=False)[0]
        maxsim = [float((q @ d.T).max(axis=1).sum()) for d in docs]
        best = sorted(range(len(ids)), key=lambda i: -maxsim[i])[:3]
        assert [p.id for p in got] == [ids[i] for i in best]


def test_a_reranker_orders_the_retrieved_passages(tiny_cross_encoder: Path) -> None:
    """data.reranker: BM25's top rerank_top_n are rescored by the cross-encoder and its top_k shown;
    the passages equal sorting those candidates by the cross-encoder's own logits by hand."""
    import numpy as np

    from ragtune.generator.collator import PassageSource
    from ragtune.generator.config import DataConfig
    from ragtune.reranker.model import load_cross_encoder, score_pairs

    corpus = load_corpus(DEMO / "corpus.jsonl")
    examples = load_qa(DEMO / "qa_test.jsonl", corpus)[:6]
    cfg = DataConfig(passages="bm25", top_k=2, reranker=str(tiny_cross_encoder), rerank_top_n=8)
    shown = PassageSource(cfg, corpus, examples, precision="fp32").shown(examples)
    plain = PassageSource(DataConfig(passages="bm25", top_k=8), corpus, examples).shown(examples)
    model = load_cross_encoder(str(tiny_cross_encoder))
    expected = []
    for e, cands in zip(examples, plain, strict=True):
        logits = score_pairs(
            model, [(e.question, p.full_text()) for p in cands], precision="fp32", show_progress=False
        )
        expected.append([cands[i].id for i in np.argsort(-logits, kind="stable")[:2]])
    assert [[p.id for p in s] for s in shown] == expected
    assert expected != [[p.id for p in c[:2]] for c in plain]  # the reranker changed what is shown
    with pytest.raises(ValueError, match=r"needs data\.passages=bm25 or dense"):
        DataConfig(passages="given", reranker=str(tiny_cross_encoder))
    with pytest.raises(ValueError, match="rerank_top_n"):
        DataConfig(passages="bm25", top_k=5, reranker=str(tiny_cross_encoder), rerank_top_n=3)


def test_unanswerable_asks_each_question_again_without_its_gold_passages(
    tmp_path: Path, tiny_lm: Path
) -> None:
    corpus = load_corpus(DEMO / "corpus.jsonl")
    questions = load_qa(DEMO / "qa_test.jsonl", corpus)[:4]
    out = tmp_path / "pred.jsonl"
    base = ("generate.max_new_tokens=3", "generate.batch_size=4")
    for extra in ((), ("data.passages=bm25", "data.top_k=3")):
        generate(make_cfg(tmp_path, tiny_lm, *base, *extra), None, None, out, 4, unanswerable=True)
        rows = {r["id"]: r for r in read_jsonl(out)}
        assert len(rows) == 8
        for e in questions:
            kept, dropped = rows[e.id], rows[f"{e.id}#unanswerable"]
            assert kept["answerable"] is True and dropped["answerable"] is False
            gold = {p.id for p in e.contexts} | set(e.positive_ids)
            shown = [c["id"] for c in kept["contexts"]]
            rest = [c["id"] for c in dropped["contexts"]]
            assert rest and not set(rest) & gold
            if extra:  # retrieved passages: the same list, the gold ones taken out
                assert rest == [i for i in shown if i not in gold] or not [i for i in shown if i not in gold]
            else:  # given passages: as many BM25 distractors as passages were shown
                assert shown == [p.id for p in e.contexts] and len(rest) == len(shown)
            assert dropped["reference"] == e.answer
