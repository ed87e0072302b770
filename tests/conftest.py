"""Shared fixtures: paths, the shared datasets (skipped when absent) and a tiny random encoder."""

from __future__ import annotations

import os
import random
import string
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
SHARED = ROOT.parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)


def shared_dataset(name: str) -> Path:
    """The folder of a shared dataset, or skip the test with the reason."""
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"shared dataset {name!r} not found at {path} (../shared/datasets is absent)")
    return path


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random BERT sentence-transformer with a WordPiece vocabulary built from the demo
    corpus, saved as a standard sentence-transformers folder. Built from config: no download."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from ragtune.data.io import load_corpus
    from ragtune.retriever.bm25 import tokenize

    folder = tmp_path_factory.mktemp("tiny-encoder")
    hf_dir = folder / "hf"
    hf_dir.mkdir()
    words = sorted({w for p in load_corpus(DEMO / "corpus.jsonl").values() for w in tokenize(p.full_text())})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *string.punctuation, *words]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    word = Transformer(str(hf_dir), max_seq_length=64)
    pool = Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    st_dir = folder / "st"
    SentenceTransformer(modules=[word, pool], device="cpu").save(str(st_dir))
    return st_dir


@pytest.fixture(scope="session")
def tiny_cross_encoder(tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CrossEncoder folder over the tiny encoder (a seeded random one-logit head), saved once so
    every load gives the same scores."""
    import torch

    from ragtune.reranker.model import load_cross_encoder

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-cross-encoder")
    load_cross_encoder(str(tiny_encoder), max_length=64).save(str(folder))
    return folder


CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def tiny_llama(words: str, chat_template: str | None = CHATML, seed: int = 0):
    """A 2-layer random Llama and a WordLevel tokenizer over ``words`` (+ ChatML specials), built
    from config: no download. Returns ``(model, tokenizer)``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(specials + words.split()))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(specials)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", eos_token="<|im_end|>"
    )
    tokenizer.chat_template = chat_template
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, vocab_size=len(vocab), max_position_embeddings=512,
        pad_token_id=vocab["<pad>"], eos_token_id=vocab["<|im_end|>"], bos_token_id=None,
    )  # fmt: skip
    return LlamaForCausalLM(config), tokenizer


def killed_after_checkpoints(module, n: int, run) -> None:
    """Run ``run()`` with the checkpoint writer of a trainer ``module`` (the training loop's
    ``Run._save_checkpoint``; the joint loop's ``save_checkpoint``) raising KeyboardInterrupt (a
    simulated kill) right after its ``n``-th checkpoint is written; the real one is restored
    afterwards."""
    import pytest

    target, name = (module.Run, "_save_checkpoint") if hasattr(module, "Run") else (module, "save_checkpoint")
    real = getattr(target, name)
    calls = {"n": 0}

    def crash(*args, **kwargs):
        real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt("simulated kill")

    setattr(target, name, crash)
    try:
        with pytest.raises(KeyboardInterrupt):
            run()
    finally:
        setattr(target, name, real)
