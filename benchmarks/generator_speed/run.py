"""Which levers speed up the generator's LoRA step and its generation on the CPU at hand.

    python benchmarks/generator_speed/run.py [--steps 4]

Training: one optimiser step of SmolLM2-135M-Instruct + LoRA (r16, all projections) on 4 PubMedQA
training examples (question + CONTEXTS -> LONG_ANSWER, ~450 tokens each), the same batches for
every setting, median of ``--steps`` steps after a warm-up:

- ``peer_like``: what transformers' ``Trainer`` + ``DataCollatorForSeq2Seq`` do: random batches,
  vocabulary logits at every position, LoRA dropout 0.05 (peft's usual value);
- ``+no_lora_dropout``, ``+answer_logits_only``, ``ragtune_default`` (+ length-grouped batches):
  one lever at a time, cumulatively;
- ``bf16_autocast`` (native bf16 only: without it 10-80x slower), ``threads_1``. (``torch.compile``
  gave nothing to the retriever's fp32 step, ``benchmarks/retriever_speed``, and compiling the
  30-layer LM with its backward takes minutes on 2 cores: not measured here.)

Generation: the 54 demo test questions with their gold passage, greedy, up to 16 new tokens:
batched (16) vs one at a time, and with dynamic int8 quantisation of the linear layers
(``torch.ao.quantization.quantize_dynamic``, per tensor and per channel, LM head kept): tokens/s,
ROUGE-L / EM against the references and how many answers equal the fp32 ones. Writes
``benchmarks/results/generator_speed_<cpu kind>.json``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.common import SHARED_DATASETS, cpu_kind, write_result  # noqa: E402
from ragtune.data.converters import pubmedqa  # noqa: E402
from ragtune.data.io import load_corpus, load_qa  # noqa: E402
from ragtune.eval.generation import evaluate_generation  # noqa: E402
from ragtune.generator.collator import pad_batch  # noqa: E402
from ragtune.generator.config import GeneratorConfig, PeftConfig  # noqa: E402
from ragtune.generator.generate import Generator  # noqa: E402
from ragtune.generator.model import apply_peft, load_base, load_tokenizer  # noqa: E402
from ragtune.generator.prompt import PromptEncoder  # noqa: E402
from ragtune.generator.train import micro_batches, optimizer_step  # noqa: E402
from ragtune.precision import native_bf16  # noqa: E402
from ragtune.training import linear_schedule  # noqa: E402

# name -> (precision, lora dropout, answer logits only, length-grouped batches, threads)
SETTINGS = {
    "peer_like": ("fp32", 0.05, False, False, 0),
    "+no_lora_dropout": ("fp32", 0.0, False, False, 0),
    "+answer_logits_only": ("fp32", 0.0, True, False, 0),
    "ragtune_default": ("auto", 0.0, True, True, 0),
    "fp32": ("fp32", 0.0, True, True, 0),
    "bf16_autocast": ("bf16", 0.0, True, True, 0),
    "threads_1": ("auto", 0.0, True, True, 1),
}


def training(args, tokenizer, base, examples) -> dict[str, dict]:
    out = {}
    threads = torch.get_num_threads()
    lengths = [len(x.input_ids) for x in examples]
    for name, (precision, dropout, logits_only, grouped, n_threads) in SETTINGS.items():
        if precision == "bf16" and not native_bf16("cpu"):
            out[name] = {"skipped": "no native bf16 on this CPU (10-80x slower than fp32)"}
            continue
        torch.set_num_threads(n_threads or threads)
        torch.manual_seed(0)
        model = apply_peft(copy.deepcopy(base), PeftConfig(dropout=dropout))
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=3e-4)
        scheduler = linear_schedule(optimizer, 100, 0)
        batches = micro_batches(lengths, 4, seed=0, epoch=0, group=grouped)[: args.steps + 1]
        times, tokens = [], []
        for i, b in enumerate(batches):
            padded = [pad_batch([examples[j] for j in b], tokenizer.pad_token_id)]
            start = time.perf_counter()
            _, n = optimizer_step(model, padded, params, optimizer, scheduler, precision, 1.0, logits_only)
            if i:
                times.append(time.perf_counter() - start)
                tokens.append(n)
        median = statistics.median(times)
        out[name] = {
            "step_s_median": round(median, 3),
            "step_s": [round(t, 3) for t in times],
            "tokens_per_s": round(sum(tokens) / sum(times), 1),
            "padded_tokens_per_step": round(
                statistics.mean(max(lengths[j] for j in b) * len(b) for b in batches[1:]), 1
            ),
            "real_tokens_per_step": round(statistics.mean(tokens), 1),
            "precision": precision,
            "threads": torch.get_num_threads(),
        }
        print(name, out[name], flush=True)
    torch.set_num_threads(threads)
    base_speed = out["peer_like"]["tokens_per_s"]
    for v in out.values():
        if "tokens_per_s" in v:
            v["speedup_vs_peer_like"] = round(v["tokens_per_s"] / base_speed, 2)
    return out


def generation(tokenizer, base) -> dict[str, dict]:
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    corpus = load_corpus(ROOT / "data/demo/corpus.jsonl")
    qa = load_qa(ROOT / "data/demo/qa_test.jsonl", corpus)
    cfg = GeneratorConfig(precision="fp32")
    cfg.model.max_length = 512
    cfg.generate = replace(cfg.generate, max_new_tokens=16, batch_size=16)
    passages = [[corpus[p] for p in e.positive_ids] for e in qa]
    out: dict[str, dict] = {}
    reference = None
    for name, qconfig, batch in [
        ("generate_fp32_batch16", None, 16),
        ("generate_fp32_batch1", None, 1),
        ("generate_int8_per_tensor", default_dynamic_qconfig, 16),
        ("generate_int8_per_channel", per_channel_dynamic_qconfig, 16),
    ]:
        model = copy.deepcopy(base)
        if qconfig is not None:  # the decoder layers; the (tied) LM head stays fp32
            quantize_dynamic(model.model, {torch.nn.Linear: qconfig}, inplace=True)
        gen = Generator(
            replace(cfg, generate=replace(cfg.generate, batch_size=batch)), model=model, tokenizer=tokenizer
        )
        prompts, _ = gen.build([e.question for e in qa], passages)
        start = time.perf_counter()
        answers = gen.answer(prompts, progress=False)
        wall = time.perf_counter() - start
        metrics, _ = evaluate_generation(answers, [e.answer for e in qa])
        reference = reference or answers
        out[name] = {
            "metrics": {k: round(metrics[k], 4) for k in ("ROUGE-L", "EM", "F1")},
            "wall_s": round(wall, 1),
            "tokens_per_s": round(gen.stats["tokens_per_s"], 1),
            "answers_equal_to_fp32": sum(a == b for a, b in zip(answers, reference, strict=True)),
            "questions": len(qa),
        }
        print(name, out[name], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=4, help="timed training steps per setting (after a warm-up)")
    args = ap.parse_args()
    cfg = GeneratorConfig()
    tokenizer = load_tokenizer(cfg.model.name)
    base = load_base(cfg.model)
    _, train, _ = pubmedqa(SHARED_DATASETS / "pubmedqa")
    enc = PromptEncoder(tokenizer, cfg.prompt, 768)
    examples = [enc.encode(e.question, list(e.contexts), e.answer) for e in train[:64]]
    variants = {**training(args, tokenizer, base, examples), **generation(tokenizer, base)}
    path = write_result(
        f"generator_speed_{cpu_kind()}",
        f"python benchmarks/generator_speed/run.py --steps {args.steps}",
        0,
        variants,
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
