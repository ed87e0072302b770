"""Render the results tables of benchmarks/README.md, and the README's results summary, from
``benchmarks/results/*.json``.

    .venv/bin/python benchmarks/report.py --write   # rewrite the generated tables (also: make docs)
    .venv/bin/python benchmarks/report.py --check   # exit 1 when a table differs from the JSON files

Each table sits between ``<!-- generated:bench:NAME -->`` and ``<!-- /generated -->`` and starts with
the line naming its result file(s), the command that wrote them and the hardware they ran on (the
JSON's ``hardware``). Every number in a table comes from a JSON file, so a number typed by hand is
caught by ``tests/test_benchmarks_readme.py``; the interpretation around the tables is hand-written.
Reads JSON only: no torch, no ../shared.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from ragtune.config_docs import generated_parts, replace_generated
from ragtune.data.io import atomic_write_text

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
README = HERE / "README.md"
MAIN_README = ROOT / "README.md"
PREFIX = "bench:"

Cell = Callable[[dict[str, Any]], str]


@functools.cache
def result(name: str) -> dict[str, Any]:
    """The parsed ``benchmarks/results/<name>.json``."""
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: benchmark result not found")
    return json.loads(path.read_text(encoding="utf-8"))


def variant(source: str, name: str) -> dict[str, Any]:
    variants = result(source)["variants"]
    if name not in variants:
        raise KeyError(f"results/{source}.json: no variant {name!r} (has: {', '.join(variants)})")
    return variants[name]


# --- cells: each takes a variant's dict and returns the text of one table cell --------------------


def fmt(value: float, digits: int = 0) -> str:
    """``value`` rounded half up as written in the JSON (0.5535 -> 0.554, 10442.5 -> 10,443), with
    thousands separators: the rounding a reader does by hand, not binary floating point's."""
    rounded = Decimal(repr(value)).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    return f"{rounded:,.{digits}f}"


def metric(name: str, digits: int = 4) -> Cell:
    """``variant.metrics[name]`` with ``digits`` decimals (blank when the variant has no such metric)."""
    return lambda v: fmt(v["metrics"][name], digits) if name in v.get("metrics", {}) else ""


def number(key: str, digits: int = 0, unit: str = "") -> Cell:
    """``variant[key]`` with thousands separators and ``digits`` decimals (blank when absent)."""
    return lambda v: f"{fmt(v[key], digits)}{unit}" if v.get(key) is not None else ""


def megabytes(key: str = "peak_rss_mb") -> Cell:
    return number(key, 0, " MB")


def with_ratio(key: str, digits: int, source: str, base: str, unit: str = "") -> Cell:
    """``variant[key]`` followed by its ratio to the same key of variant ``base`` of ``source`` (the
    peer it is compared with): ``4.00 pairs/s (2.19x)``; the base variant itself shows no ratio."""

    def cell(v: dict[str, Any]) -> str:
        ref = variant(source, base)
        text = f"{fmt(v[key], digits)}{unit}"
        return text if v is ref else f"{text} ({fmt(v[key] / ref[key], 2)}x)"

    return cell


def duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


# --- tables -------------------------------------------------------------------------------------


@dataclass
class Table:
    """A table built from result files: one row per (label, file, variant), one cell per column."""

    name: str
    rows: list[tuple[str, str, str]]
    columns: list[tuple[str, Cell]]

    def sources(self) -> list[str]:
        return list(dict.fromkeys(source for _, source, _ in self.rows))

    def render(self) -> str:
        lines = [provenance(self.sources()), ""]
        lines.append("| " + " | ".join(["variant", *(h for h, _ in self.columns)]) + " |")
        lines.append("|" + " --- |" * (len(self.columns) + 1))
        for label, source, name in self.rows:
            v = variant(source, name)
            cells = [label, *(cell(v) for _, cell in self.columns)]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines)


def hardware_text(h: Mapping[str, Any]) -> str:
    """The machine a result ran on, from its ``hardware`` record."""
    parts = [
        str(h.get("cpu", "unknown CPU")),
        f"{h.get('cores', '?')} cores",
        str(h.get("cpu_capability", "?")),
    ]
    if h.get("amx"):
        parts.append("AMX")
    elif h.get("avx512_bf16") and h.get("native_bf16"):
        parts.append("AVX512-BF16")
    parts.append("native bf16" if h.get("native_bf16") else "no native bf16")
    if h.get("ONEDNN_MAX_CPU_ISA"):
        parts.append(
            f"bf16 units capped away (ONEDNN_MAX_CPU_ISA={h['ONEDNN_MAX_CPU_ISA']} "
            f"ATEN_CPU_CAPABILITY={h.get('ATEN_CPU_CAPABILITY')}"
            + (
                f" MKL_ENABLE_INSTRUCTIONS={h['MKL_ENABLE_INSTRUCTIONS']}"
                if h.get("MKL_ENABLE_INSTRUCTIONS")
                else ""
            )
            + ")"
        )
    parts.append(f"precision {h.get('precision', '?')}")
    parts.append(f"GPU {h['gpu']}" if h.get("gpu") else "no GPU")
    text = ", ".join(parts)
    return text + " (CPU kind labelled after the run)" if h.get("labelled") else text


def provenance(sources: list[str]) -> str:
    """The line above a table: its result files, their commands and dates, and their hardware."""
    groups: dict[str, list[str]] = {}
    for s in sources:
        r = result(s)
        groups.setdefault(hardware_text(r["hardware"]), []).append(
            f"`results/{s}.json` ({r['date'][:10]}, `{r['command']}`)"
        )
    return "; ".join(f"*{', '.join(files)}: {hw}.*" for hw, files in groups.items())


RETRIEVER_SCIFACT = Table(
    "retriever_scifact",
    [
        ("BM25 (ragtune; rank-bm25's scores)", "retriever_scifact", "bm25"),
        ("zero-shot dense, fp32", "retriever_scifact", "zero_shot_fp32"),
        ("zero-shot dense, bf16 weights (default)", "retriever_scifact", "zero_shot"),
        ("hybrid zero-shot (RRF)", "retriever_scifact", "hybrid_zero_shot"),
        (
            "hybrid zero-shot (weighted, dense 0.5, chosen on train queries)",
            "retriever_scifact",
            "hybrid_zero_shot_weighted",
        ),
        (
            "peer: sentence-transformers trainer + MNRL, 1 BM25 negative",
            "retriever_scifact",
            "peer_sentence_transformers",
        ),
        ("ragtune, the peer's exact recipe (1 BM25 negative)", "retriever_scifact", "ragtune_same_recipe"),
        (
            "ragtune recipe (`configs/retriever/scifact.yaml`: 3 dense-mined negatives)",
            "retriever_scifact",
            "ragtune_finetuned",
        ),
        ("ragtune recipe + BM25 (RRF)", "retriever_scifact", "ragtune_finetuned_hybrid_rrf"),
        (
            "ragtune recipe + BM25 (weighted, dense 0.8, chosen on train queries)",
            "retriever_scifact",
            "ragtune_finetuned_hybrid",
        ),
    ],
    [
        ("nDCG@10", metric("nDCG@10")),
        ("Recall@10", metric("Recall@10")),
        ("Recall@100", metric("Recall@100")),
        ("MRR@10", metric("MRR@10")),
        ("train pairs/s", number("pairs_per_s", 2)),
        ("encoding docs/s", number("docs_per_s", 1)),
        ("peak RSS", megabytes()),
    ],
)

RETRIEVER_SPEED_TRAIN = Table(
    "retriever_speed_train",
    [
        (
            "peer-like: bf16 autocast, dropout 0.1, eager attention, random batches",
            "retriever_speed",
            "peer_like",
        ),
        ("+ SDPA attention", "retriever_speed", "+sdpa"),
        ("+ no dropout (mask generation was half the step)", "retriever_speed", "+no_dropout"),
        (
            "+ length-grouped batches (the default when measured; now off)",
            "retriever_speed",
            "ragtune_default",
        ),
        ("default without autocast (fp32)", "retriever_speed", "fp32"),
        (
            "default with bf16 weights instead of autocast (timing only: loses updates)",
            "retriever_speed",
            "bf16_weights",
        ),
        ("default + `train.compile=true` (compile time excluded)", "retriever_speed", "compile"),
        (
            "default with passages cut to 128 tokens (changes what is learnt)",
            "retriever_speed",
            "passage_len_128",
        ),
    ],
    [("pairs/s", number("pairs_per_s", 2)), ("x peer-like", number("speedup_vs_peer_like", 2))],
)

RETRIEVER_SPEED_ENCODE = Table(
    "retriever_speed_encode",
    [
        ("fp32", "retriever_speed", "encode_fp32"),
        ("bf16 autocast", "retriever_speed", "encode_bf16_autocast"),
        ("bf16 weights (default)", "retriever_speed", "encode_bf16_weights"),
        ("bf16 weights + `torch.compile`", "retriever_speed", "encode_bf16_weights_compiled"),
    ],
    [
        ("docs/s", number("docs_per_s", 1)),
        ("x fp32", number("speedup_vs_fp32", 2)),
        ("passages", number("docs")),
    ],
)

FAITHFULNESS = Table(
    "faithfulness",
    [
        ('length only ("the shorter answer is right")', "faithfulness", "length_baseline"),
        ("`lexical` (content words + word pairs, no model)", "faithfulness", "lexical"),
        ("`model` (SmolLM2-135M likelihood, per-token PMI; the default)", "faithfulness", "model"),
        ("`model`, conditional likelihood only (ablation)", "faithfulness", "model_conditional"),
        ("`model`, PMI summed over tokens (ablation)", "faithfulness", "model_pmi_sum"),
        ("mean of `lexical` and `model`", "faithfulness", "lexical+model"),
    ],
    [
        ("AUROC", metric("AUROC", 3)),
        ("lexically supported", metric("AUROC_lexically_supported", 3)),
        ("rows", lambda v: f"{v['metrics']['n_lexically_supported']}"),
        ("hallucination not longer", metric("AUROC_not_longer", 3)),
        ("rows", lambda v: f"{v['metrics']['n_not_longer']}"),
        ("first 100 rows", metric("AUROC_first100", 3)),
    ],
)

FAITHFULNESS_CHECKER = Table(
    "faithfulness_checker",
    [
        ('length only ("the shorter answer is right")', "faithfulness_checker", "length_baseline"),
        ("`lexical` (no model)", "faithfulness_checker", "lexical"),
        ("trained checker (MiniLM cross-encoder, synthetic claims only)", "faithfulness_checker", "checker"),
        ("checker x lexical", "faithfulness_checker", "checker*lexical"),
    ],
    [
        ("AUROC", metric("AUROC", 3)),
        ("lexically supported", metric("AUROC_lexically_supported", 3)),
        ("length-matched", metric("AUROC_length_matched", 3)),
        ("rows", lambda v: f"{v['metrics']['n_length_matched']}"),
        ("hallucination not longer", metric("AUROC_not_longer", 3)),
        ("first 100 rows", metric("AUROC_first100", 3)),
        ("pairs/s", lambda v: fmt(v["pairs_per_s"], 1) if "pairs_per_s" in v else ""),
    ],
)

GENERATOR_PUBMEDQA = Table(
    "generator_pubmedqa",
    [
        ("base, no passages (faithfulness vs the gold abstract)", "generator_pubmedqa", "base_no_passages"),
        ("base, the question's CONTEXTS", "generator_pubmedqa", "base_with_passages"),
        ("base, BM25 top 3 of 3,358 paragraphs", "generator_pubmedqa", "base_with_bm25_passages"),
        ("ragtune LoRA (r16, all projections, lr 3e-4)", "generator_pubmedqa", "ragtune_lora"),
        ("ragtune IA3 (57,600 parameters, lr 3e-3)", "generator_pubmedqa", "ragtune_ia3"),
        ("ragtune prompt tuning (20 tokens, lr 3e-2)", "generator_pubmedqa", "ragtune_prompt_tuning"),
        ("ragtune LoRA, BM25 top 3", "generator_pubmedqa", "ragtune_lora_bm25_passages"),
        (
            "base, the question's CONTEXTS, all 500 test questions",
            "generator_pubmedqa",
            "base_with_passages_all_test",
        ),
        ("ragtune LoRA, all 500 test questions", "generator_pubmedqa", "ragtune_lora_all_test"),
    ],
    [
        ("questions", number("test_questions")),
        ("ROUGE-1", metric("ROUGE-1")),
        ("ROUGE-2", metric("ROUGE-2")),
        ("ROUGE-L", metric("ROUGE-L")),
        ("F1", metric("F1")),
        ("faithfulness", metric("faithfulness", 3)),
        ("answer tokens", number("mean_answer_tokens", 1)),
        ("train tokens/s", number("train_tokens_per_s")),
        ("peak RSS", megabytes()),
    ],
)

GENERATOR_PEER = Table(
    "generator_peer",
    [
        (
            "peer: transformers `Trainer` + peft, default arguments (fp32)",
            "generator_pubmedqa",
            "peer_trainer",
        ),
        ("ragtune", "generator_pubmedqa", "ragtune_lora_peer_recipe"),
    ],
    [
        ("steps", number("steps")),
        ("tokens/s", with_ratio("tokens_per_s", 1, "generator_pubmedqa", "peer_trainer")),
        ("validation loss", number("val_loss", 4)),
        ("peak RSS", megabytes()),
    ],
)

GENERATOR_BATCHING = Table(
    "generator_batching",
    [("ragtune LoRA, the same 16 questions", "generator_pubmedqa", "ragtune_lora")],
    [
        ("one at a time, tokens/s", number("single_tokens_per_s", 1)),
        ("batches of 16, tokens/s", number("batched_tokens_per_s", 1)),
        ("speed-up", number("batched_speedup", 2, "x")),
    ],
)

_JOINT = "joint_pubmedqa"
JOINT_PUBMEDQA = Table(
    "joint_pubmedqa",
    [
        ("no tuning (round 0 of joint)", _JOINT, "no_tuning"),
        ("retriever only (LSR, untuned teacher)", _JOINT, "retriever_only"),
        ("generator only", _JOINT, "generator_only"),
        ("separate (both, tuned apart; wall: evaluation only, + both runs above)", _JOINT, "separate"),
        ("joint (alternating, LSR)", _JOINT, "joint"),
    ],
    [
        ("Recall@3", metric("Recall@3")),
        ("Recall@5", metric("Recall@5")),
        ("MRR@10", metric("MRR@10")),
        ("nDCG@10", metric("nDCG@10")),
        ("ROUGE-L", metric("ROUGE-L")),
        ("F1", metric("F1")),
        ("faithfulness", metric("faithfulness")),
        (
            "right / gold not retrieved / retrieved but wrong",
            lambda v: "{correct} / {gold_not_retrieved} / {retrieved_but_wrong}".format(**v["errors"]),
        ),
        ("wall", number("wall_s", 0, " s")),
        ("peak RSS", megabytes()),
    ],
)

_SWEEP = "joint_pubmedqa_sweep"
JOINT_SWEEP = Table(
    "joint_pubmedqa_sweep",
    [
        ("joint: tau 1, gamma 0.05, LSR, query encoder, top 3 (above)", _JOINT, "joint"),
        ("`retriever.tau=0.1`", _SWEEP, "joint_tau_0.1"),
        ("`retriever.gamma=0.02`", _SWEEP, "joint_gamma_0.02"),
        ("`retriever.loss=pdist`", _SWEEP, "joint_pdist"),
        ("`retriever.mode=both` (index refreshed every round)", _SWEEP, "joint_mode_both"),
        ("`top_k=5`", _SWEEP, "joint_top_k_5"),
        ("separate (the target to beat)", _JOINT, "separate"),
    ],
    [
        ("Recall@5", metric("Recall@5")),
        ("ROUGE-L", metric("ROUGE-L")),
        ("faithfulness", metric("faithfulness")),
        ("wall", number("wall_s", 0, " s")),
    ],
)


def _index_params(v: dict[str, Any]) -> str:
    p = v.get("params")
    if not p:
        return ""
    if p["kind"] == "hnsw":
        return f"M {p['hnsw_m']}, efC {p['ef_construction']}, efS {p['ef_search']}"
    return f"{p['nlist']:,} lists, nprobe {p['nprobe']}, {p['pq_m']} x {p['pq_nbits']} bits"


INDEX_SCALE = Table(
    "index_scale",
    [
        ("exact (`IndexFlatIP`)", "index_scale", "exact"),
        ("faiss HNSW", "index_scale", "faiss_hnsw"),
        ("ragtune HNSW", "index_scale", "ragtune_hnsw"),
        ("faiss IVF-PQ", "index_scale", "faiss_ivfpq"),
        ("ragtune IVF-PQ", "index_scale", "ragtune_ivfpq"),
    ],
    [
        ("parameters", _index_params),
        ("Recall@10", metric("Recall@10")),
        ("build", number("build_s", 0, " s")),
        ("queries/s", number("qps")),
        ("queries/s with ids", number("qps_with_ids")),
        ("index size", lambda v: f"{fmt(v['bytes'] / 1e6)} MB"),
    ],
)

_SAME = "index_scale_same_index"
INDEX_SAME = Table(
    "index_scale_same_index",
    [
        ("plain FAISS, one call", _SAME, "faiss_one_call"),
        ("plain FAISS, chunks of 4,096 queries", _SAME, "faiss_chunks_4096"),
        ("ragtune `search_arrays`", _SAME, "ragtune_search_arrays"),
        ("ragtune `search` (id-mapped)", _SAME, "ragtune_search_with_ids"),
    ],
    [
        ("queries/s", number("qps")),
        ("vs one call", lambda v: f"{v['qps'] / variant(_SAME, 'faiss_one_call')['qps'] - 1:+.1%}"),
    ],
)

_PEER = "peer_speed_avx2"
_RET_PEER, _GEN_PEER = "retriever_peer_sentence_transformers", "generator_peer_trainer"


def _peer_speed(v: dict[str, Any]) -> str:
    if "pairs_per_s" in v:
        return with_ratio("pairs_per_s", 2, _PEER, _RET_PEER, " pairs/s")(v)
    return with_ratio("tokens_per_s", 1, _PEER, _GEN_PEER, " tokens/s")(v)


def _peer_quality(v: dict[str, Any]) -> str:
    return (
        f"nDCG@10 {fmt(v['metrics']['nDCG@10'], 4)}"
        if "metrics" in v
        else f"val loss {fmt(v['val_loss'], 4)}"
    )


def _peer_rss(v: dict[str, Any]) -> str:
    return with_ratio("peak_rss_mb", 0, _PEER, _RET_PEER if "pairs_per_s" in v else _GEN_PEER, " MB")(v)


PEER_SPEED = Table(
    "peer_speed_avx2",
    [
        (
            "sentence-transformers `SentenceTransformerTrainer` + MNRL",
            _PEER,
            "retriever_peer_sentence_transformers",
        ),
        ("ragtune `retriever train`", _PEER, "retriever_ragtune"),
        ("transformers `Trainer` + peft LoRA", _PEER, "generator_peer_trainer"),
        ("ragtune `generator train`", _PEER, "generator_ragtune"),
    ],
    [
        ("speed", _peer_speed),
        ("quality", _peer_quality),
        ("peak RSS", _peer_rss),
        ("precision", lambda v: v["precision"]),
    ],
)

_COMPILE = "peer_speed_avx2_compile"
_PROCESSES = "peer_speed_avx2_processes"


def _generator_speed(source: str) -> Cell:
    """Tokens/s over the whole run and after the first step (which pays any compilation), each
    with its ratio to the one-process eager peer of ``source``."""

    def cell(v: dict[str, Any]) -> str:
        whole = with_ratio("tokens_per_s", 1, source, _GEN_PEER, " tokens/s")(v)
        after = with_ratio("tokens_per_s_after_step_1", 1, source, _GEN_PEER, " tokens/s")(v)
        return f"{whole}; after step 1: {after}"

    return cell


PEER_SPEED_COMPILE = Table(
    _COMPILE,
    [
        ("transformers `Trainer` + peft LoRA", _COMPILE, "generator_peer_trainer"),
        ("the same, `torch_compile=True`", _COMPILE, "generator_peer_trainer_compiled"),
        ("ragtune `generator train`", _COMPILE, "generator_ragtune"),
        ("the same, `train.compile=true`", _COMPILE, "generator_ragtune_compiled"),
    ],
    [
        ("speed (whole run; after step 1, which pays the compilation)", _generator_speed(_COMPILE)),
        ("val loss", number("val_loss", 4)),
        ("peak RSS", with_ratio("peak_rss_mb", 0, _COMPILE, _GEN_PEER, " MB")),
    ],
)

PEER_SPEED_PROCESSES = Table(
    _PROCESSES,
    [
        ("transformers `Trainer` + peft LoRA, 1 process", _PROCESSES, "generator_peer_trainer"),
        ("the same, 2 processes (DDP, torchrun)", _PROCESSES, "generator_peer_trainer_2proc"),
        ("ragtune `generator train`, 1 process", _PROCESSES, "generator_ragtune"),
        ("the same, `train.compile=true`", _PROCESSES, "generator_ragtune_compiled"),
        ("ragtune, 2 processes (torchrun)", _PROCESSES, "generator_ragtune_2proc"),
        ("ragtune, 2 processes, `train.compile=true`", _PROCESSES, "generator_ragtune_2proc_compiled"),
    ],
    [
        ("speed, x the 1-process peer (whole run; after step 1)", _generator_speed(_PROCESSES)),
        ("val loss", number("val_loss", 4)),
        ("peak RSS of one process", megabytes()),
    ],
)

_FLOPS = "peer_speed_flops"
PEER_SPEED_FLOPS = Table(
    _FLOPS,
    [
        ("transformers `Trainer` + peft LoRA (whole-vocabulary logits, random batches)", _FLOPS, _GEN_PEER),
        (
            "ragtune `generator train` (answer logits only, length-grouped batches)",
            _FLOPS,
            "generator_ragtune",
        ),
    ],
    [
        ("GFLOP per real token", number("gflop_per_token", 4)),
        ("padding share", lambda v: f"{fmt(100 * v['padding_share'], 1)}%"),
        ("ceiling at the matmul peak", number("ceiling_tokens_per_s", 0, " tokens/s")),
    ],
)


_CACHE = "primitive_cache"
PRIMITIVE_CACHE = Table(
    _CACHE,
    [
        ("batch widths 300-640, the libraries' cache capacities", _CACHE, "library_defaults"),
        ("batch widths 300-640, ragtune's capacities (`bound_primitive_caches`)", _CACHE, "ragtune"),
        ("width 640 every step (one shape: the floor)", _CACHE, "fixed_width"),
    ],
    [
        (
            "ideep / oneDNN cache capacity",
            lambda v: (
                f"{v['capacities']['LRU_CACHE_CAPACITY']} / {v['capacities']['ONEDNN_PRIMITIVE_CACHE_CAPACITY']}"
            ),
        ),
        ("steps", number("steps")),
        ("RSS after step 1", megabytes("rss_after_first_step_mb")),
        ("RSS after the last step", megabytes("rss_end_mb")),
        ("growth per step", number("growth_mb_per_step", 1, " MB")),
        (
            "tokens/s: mean (each run)",
            lambda v: f"{v['tokens_per_s']:.1f} ({', '.join(f'{t:.1f}' for t in v['tokens_per_s_runs'])})",
        ),
    ],
)


def covidqa_rerank(source: str) -> Table:
    """A ``benchmarks/joint_covidqa/rerank.py`` result: BM25, reranked, mixed; test then dev."""
    return Table(
        source,
        [
            ("BM25 (test)", source, "bm25"),
            ("BM25's top candidates reranked by the cross-encoder (test)", source, "rerank_bm25"),
            ("reranker mixed with BM25, weight chosen on dev (test)", source, "rerank_bm25_mixed"),
            ("BM25 (dev)", source, "bm25_dev"),
            ("BM25's top candidates reranked (dev)", source, "rerank_bm25_dev"),
            ("reranker mixed with BM25 (dev)", source, "rerank_bm25_mixed_dev"),
        ],
        [
            ("nDCG@10", metric("nDCG@10")),
            ("Recall@5", metric("Recall@5")),
            ("Recall@20", metric("Recall@20")),
            ("MRR@10", metric("MRR@10")),
            ("reranker weight", number("reranker_weight", 1)),
        ],
    )


_AVX2 = "retriever_speed_avx2"
RETRIEVER_SPEED_AVX2_TRAIN = Table(
    "retriever_speed_avx2_train",
    [
        ("peer-like: dropout 0.1, eager attention, random batches", _AVX2, "peer_like"),
        ("+ SDPA attention", _AVX2, "+sdpa"),
        ("+ no dropout (the default)", _AVX2, "ragtune_default"),
        ("+ length-grouped batches (off by default: it cost nDCG@10 on SciFact)", _AVX2, "+length_grouping"),
        ("default, precision forced to fp32 (what auto resolves to here)", _AVX2, "fp32"),
        ("default on 1 thread instead of 2", _AVX2, "threads_1"),
        ("default + `torch.compile` (compile time excluded)", _AVX2, "compile"),
        ("default with passages cut to 128 tokens (changes what is learnt)", _AVX2, "passage_len_128"),
    ],
    [("pairs/s", number("pairs_per_s", 2)), ("x peer-like", number("speedup_vs_peer_like", 2))],
)

RETRIEVER_SPEED_AVX2_ENCODE = Table(
    "retriever_speed_avx2_encode",
    [
        ("fp32", _AVX2, "encode_fp32"),
        ("fp32 + `torch.compile`", _AVX2, "encode_fp32_compiled"),
        (
            "dynamic int8 linear layers (`torch.ao.quantization.quantize_dynamic`)",
            _AVX2,
            "encode_int8_dynamic",
        ),
    ],
    [
        ("docs/s", number("docs_per_s", 1)),
        ("x fp32", number("speedup_vs_fp32", 2)),
        ("mean cosine to fp32", number("mean_cosine_to_fp32", 4)),
        ("SciFact nDCG@10", metric("nDCG@10")),
        ("SciFact Recall@100", metric("Recall@100")),
    ],
)


def _demo_rounds(key: str, digits: int = 4) -> Cell:
    return lambda v: " -> ".join(fmt(v["rounds"][r][key], digits) for r in sorted(v["rounds"]))


DEMO_TIME = Table(
    "demo_time",
    [
        ("`make demo`, AVX2 kind", "demo_time_avx2", "make_demo"),
        ("`make demo`, AVX512-BF16 kind", "demo_time_avx512_bf16", "make_demo"),
        ("`make demo`, AMX kind", "demo_time_amx", "make_demo"),
    ],
    [
        ("precision", lambda v: v["precision"]),
        ("wall", lambda v: duration(v["wall_s"])),
        ("stages", lambda v: f"{fmt(sum(v['stage_s'].values()))} s"),
        ("peak RSS", megabytes()),
        ("ROUGE-L, rounds 0 -> 1 -> 2", _demo_rounds("ROUGE-L")),
        ("EM", _demo_rounds("EM")),
        ("faithfulness", _demo_rounds("faithfulness")),
        ("MRR@10", _demo_rounds("MRR@10")),
    ],
)

_COVID = "joint_covidqa"


def _retrieval(name: str) -> Cell:
    return lambda v: fmt(v["retrieval"][name], 4) if name in v.get("retrieval", {}) else ""


JOINT_COVIDQA_RETRIEVAL = Table(
    "joint_covidqa_retrieval",
    [
        ("BM25", _COVID, "bm25_no_tuning"),
        ("dense, packaged MiniLM (zero-shot)", _COVID, "no_tuning"),
        ("hybrid (RRF), zero-shot", _COVID, "hybrid_no_tuning"),
        ("dense, fine-tuned on the training questions", _COVID, "retriever_only"),
        ("hybrid (RRF), fine-tuned", _COVID, "retriever_only_hybrid"),
        ("hybrid (weighted, dense weight chosen on dev), fine-tuned", _COVID, "retriever_only_weighted"),
        (
            "dense, Contriever-style pre-training on the corpus only (no labels)",
            _COVID,
            "pretrained_no_labels",
        ),
        ("dense, pre-trained then fine-tuned", _COVID, "retriever_only_pretrained"),
        ("hybrid (RRF), pre-trained then fine-tuned", _COVID, "retriever_only_pretrained_hybrid"),
        ("hybrid (weighted), pre-trained then fine-tuned", _COVID, "retriever_only_pretrained_weighted"),
    ],
    [
        ("nDCG@10", _retrieval("nDCG@10")),
        ("Recall@5", _retrieval("Recall@5")),
        ("Recall@20", _retrieval("Recall@20")),
        ("MRR@10", _retrieval("MRR@10")),
    ],
)


def _seed0(key: str, digits: int = 0, unit: str = "") -> Cell:
    def cell(v: dict[str, Any]) -> str:
        seeds = v.get("seeds") or {}
        first = seeds[min(seeds, key=int)] if seeds else {}
        return f"{fmt(first[key], digits)}{unit}" if first.get(key) is not None else ""

    return cell


JOINT_COVIDQA = Table(
    "joint_covidqa",
    [
        ("no tuning (packaged retriever and generator)", _COVID, "no_tuning"),
        ("generator only", _COVID, "generator_only"),
        ("separate: fine-tuned retriever + generator only (wall: evaluation only)", _COVID, "separate"),
        ("joint, warm start from the fine-tuned retriever", _COVID, "joint"),
        ("BM25 passages, base generator", _COVID, "bm25_no_tuning"),
        ("generator only, BM25 passages", _COVID, "generator_only_bm25"),
        ("separate, hybrid passages", _COVID, "separate_hybrid"),
        ("joint (warm), hybrid passages", _COVID, "joint_eval_hybrid"),
        ("separate, weighted-hybrid passages (dense weight chosen on dev)", _COVID, "separate_weighted"),
    ],
    [
        ("Recall@5", metric("Recall@5")),
        ("nDCG@10", metric("nDCG@10")),
        ("ROUGE-L", metric("ROUGE-L")),
        ("F1", metric("F1")),
        ("EM", metric("EM")),
        ("faithfulness", metric("faithfulness")),
        ("seeds", lambda v: ", ".join(v.get("seeds", {})) or "0"),
        ("wall (seed 0)", _seed0("wall_s", 0, " s")),
        ("peak RSS (seed 0)", _seed0("peak_rss_mb", 0, " MB")),
    ],
)


_DEV = "joint_covidqa_dev"

JOINT_COVIDQA_SWEEP = Table(
    "joint_covidqa_sweep",
    [
        ("no tuning", _DEV, "no_tuning"),
        ("generator only", _DEV, "generator_only"),
        ("generator only, BM25 passages", _DEV, "generator_only_bm25"),
        ("separate", _DEV, "separate"),
        ("separate, weighted-hybrid passages", _DEV, "separate_weighted"),
        (
            "joint (warm start; tau 1, gamma 0.05, top-3 dense candidates, 128 questions, query side)",
            _DEV,
            "joint",
        ),
        ("joint, tau 0.01", _DEV, "joint_tau_0.01"),
        ("joint, BM25 candidates for the LM", _DEV, "joint_bm25_candidates"),
        ("joint, mode=both (shared encoder, index refreshed)", _DEV, "joint_mode_both"),
        ("joint, 256 questions per round", _DEV, "joint_questions_256"),
    ],
    [
        ("Recall@5", metric("Recall@5")),
        ("nDCG@10", metric("nDCG@10")),
        ("ROUGE-L", metric("ROUGE-L")),
        ("F1", metric("F1")),
        ("faithfulness", metric("faithfulness")),
        ("wall", _seed0("wall_s", 0, " s")),
        ("peak RSS", _seed0("peak_rss_mb", 0, " MB")),
    ],
)


def _splits_cell(v: dict[str, Any]) -> str:
    return ", ".join(f"{n} {s}" for s, n in v["questions"].items())


DATA_AUDIT = Table(
    "data_audit",
    [
        ("SciFact (BEIR)", "data_audit", "scifact"),
        ("PubMedQA PQA-L (`data convert pubmedqa`)", "data_audit", "pubmedqa"),
        ("HaluEval QA (`data convert halueval`)", "data_audit", "halueval"),
        ("COVID-QA (`data convert squad`, split by article)", "data_audit", "covidqa"),
    ],
    [
        ("passages", number("passages")),
        ("questions", _splits_cell),
        ("overlong (> 512 words)", number("overlong_passages")),
        ("exact-duplicate passages", number("exact_duplicate_passages")),
        ("near-duplicate passage pairs", number("near_duplicate_passage_pairs")),
        ("repeated questions within a split", number("duplicate_questions_within_splits")),
        (
            "train/test leaked questions: exact + near",
            lambda v: f"{v['leaked_questions_exact']} + {v['leaked_questions_near']}",
        ),
        ("test questions with a training positive", number("questions_with_a_shared_positive")),
        (
            "answers not in their passages",
            lambda v: f"{v['answers_not_in_passages']} / {v['qa_rows']}" if v["qa_rows"] else "",
        ),
        ("wall", lambda v: duration(v["wall_s"])),
    ],
)


class PairedTable:
    """The paired tests of a result file (``paired``: comparison -> metric -> test), a row each."""

    def __init__(self, name: str, source: str, metrics: list[str]):
        self.name, self.source, self.metrics = name, source, metrics

    def sources(self) -> list[str]:
        return [self.source]

    def render(self) -> str:
        lines = [provenance(self.sources()), ""]
        lines.append("| comparison | " + " | ".join(self.metrics) + " |")
        lines.append("|" + " --- |" * (len(self.metrics) + 1))
        for comparison, tests in result(self.source)["paired"].items():
            cells = []
            for m in self.metrics:
                t = tests.get(m)
                cells.append(
                    ""
                    if t is None
                    else f"{t['delta']:+.4f} [{t['ci95'][0]:+.4f}, {t['ci95'][1]:+.4f}] p={fmt(t['p_value'], 3)}"
                )
            n = next(iter(tests.values()))["n"] if tests else 0
            lines.append(f"| {comparison} (n={n}) | " + " | ".join(cells) + " |")
        return "\n".join(lines)


JOINT_COVIDQA_PAIRED = PairedTable(
    "joint_covidqa_paired", _COVID, ["F1", "ROUGE-L", "Recall@5", "faithfulness"]
)

JOINT_COVIDQA_SWEEP_PAIRED = PairedTable(
    "joint_covidqa_sweep_paired", _DEV, ["F1", "ROUGE-L", "Recall@5", "faithfulness"]
)

RERANK_SCIFACT = Table(
    "rerank_scifact",
    [
        ("BM25", "rerank_scifact", "bm25"),
        ("zero-shot dense (packaged MiniLM)", "rerank_scifact", "dense"),
        ("hybrid (weighted, weight chosen on train queries)", "rerank_scifact", "hybrid"),
        ("BM25 top 100 reranked (ragtune cross-encoder)", "rerank_scifact", "rerank_bm25"),
        ("dense top 100 reranked (ragtune cross-encoder)", "rerank_scifact", "rerank_dense"),
        ("hybrid top 100 reranked (ragtune cross-encoder)", "rerank_scifact", "rerank_hybrid"),
        ("ColBERT from MiniLM (ragtune `model.kind=colbert`)", "rerank_scifact", "colbert"),
        ("ColBERT + BM25 (weighted)", "rerank_scifact", "colbert_hybrid"),
        ("ColBERT, peer MultiVectorEncoderTrainer", "rerank_scifact", "colbert_peer_sentence_transformers"),
        ("training: ragtune `reranker train`", "rerank_scifact", "train_ragtune"),
        (
            "training: peer CrossEncoderTrainer + ListNetLoss",
            "rerank_scifact",
            "train_peer_sentence_transformers",
        ),
    ],
    [
        ("nDCG@10", metric("nDCG@10")),
        ("Recall@10", metric("Recall@10")),
        ("Recall@100", metric("Recall@100")),
        ("MRR@10", metric("MRR@10")),
        ("train pairs/s", number("pairs_per_s", 2)),
        ("train s", number("train_s", 0)),
        ("peak RSS", megabytes()),
        (
            "note",
            lambda v: (
                f"killed by the out-of-memory killer after {v['steps_done']}/{v['steps_total']} steps"
                if str(v.get("status", "")).startswith("failed")
                else ""
            ),
        ),
    ],
)

_RR = "rerank_scifact_random_negatives"
RERANK_SCIFACT_RANDOM = Table(
    _RR,
    [
        ("BM25", _RR, "bm25"),
        ("zero-shot dense (packaged MiniLM)", _RR, "dense"),
        ("hybrid (weighted, weight chosen on train queries)", _RR, "hybrid"),
        ("BM25 top 100 reranked", _RR, "rerank_bm25"),
        ("dense top 100 reranked", _RR, "rerank_dense"),
        ("hybrid top 100 reranked", _RR, "rerank_hybrid"),
        (
            "hybrid top 100, reranker + hybrid score (weight chosen on held-out train queries)",
            _RR,
            "rerank_hybrid_interpolated",
        ),
        ("training: ragtune `reranker train`, 2 epochs", _RR, "train_ragtune"),
    ],
    RERANK_SCIFACT.columns[:-1],
)


def joint_covidqa_cost(source: str, rows: list[tuple[str, str]]) -> Table:
    """A ``benchmarks/joint_covidqa/cost.py`` result: one joint round's stages, time and memory."""
    return Table(
        source,
        [(label, source, variant) for label, variant in rows],
        [
            ("training questions", number("questions")),
            ("training stages", lambda v: duration(v["round_training_s"])),
            ("generator SFT", lambda v: duration(v["stage_seconds"]["generator"])),
            ("generator tokens/s", number("generator_tokens_per_s", 1)),
            ("LM feedback + retriever update", lambda v: duration(v["stage_seconds"]["retriever"])),
            ("evaluation (100 questions)", lambda v: duration(v["eval_s"])),
            ("peak RSS (whole run)", megabytes()),
        ],
    )


JOINT_COVIDQA_COST = joint_covidqa_cost(
    "joint_covidqa_cost", [("one joint round, `configs/e2e/covidqa.yaml`", "config")]
)
JOINT_COVIDQA_COST_ONE_DISTRACTOR = joint_covidqa_cost(
    "joint_covidqa_cost_one_distractor",
    [
        (
            "the same round with one distractor per question (`generator.raft.num_distractors=1`)",
            "one_distractor",
        )
    ],
)

_UNL = "unlabelled_scifact"
UNLABELLED_SCIFACT = Table(
    _UNL,
    [
        ("zero-shot (packaged MiniLM)", _UNL, "zero_shot"),
        ("synthetic questions, no round-trip filter", _UNL, "synth_unfiltered"),
        ("synthetic questions, BM25 round trip (top 20)", _UNL, "synth_filtered"),
        ("+ LM teacher (UPR scores, Margin-MSE + InfoNCE)", _UNL, "synth_filtered_upr"),
        ("+ LM teacher (UPR scores, listwise KL + InfoNCE)", _UNL, "synth_filtered_upr_kl"),
        ("Contriever-style pre-training, then filtered synthetic questions", _UNL, "pretrain_synth_filtered"),
        ("LM teacher (UPR, Margin-MSE + InfoNCE), no round-trip filter", _UNL, "synth_unfiltered_upr"),
        (
            "Contriever-style pre-training, then unfiltered synthetic questions",
            _UNL,
            "pretrain_synth_unfiltered",
        ),
    ],
    [
        *((m, metric(m)) for m in ("nDCG@10", "Recall@10", "Recall@100", "MRR@10")),
        ("training pairs/s", number("pairs_per_s", 2)),
    ],
)

_UNC = "unlabelled_covidqa"
UNLABELLED_COVIDQA = Table(
    _UNC,
    [(label, _UNC, name) for label, _, name in UNLABELLED_SCIFACT.rows[:3]],  # the variants run there
    UNLABELLED_SCIFACT.columns,
)

_GR = "grounded_pubmedqa"
GROUNDED_PUBMEDQA = Table(
    _GR,
    [
        ("base SmolLM2-135M-Instruct", _GR, "base"),
        ("LoRA SFT", _GR, "sft"),
        ("bottleneck adapter SFT (size 70)", _GR, "sft_bottleneck"),
        ("SFT + DPO (sigmoid, beta 0.1)", _GR, "sft_dpo_sigmoid"),
        ("SFT + RPO (DPO + chosen NLL, alpha 1)", _GR, "sft_dpo_rpo"),
        ("SFT + IPO (tau 0.1)", _GR, "sft_dpo_ipo"),
    ],
    [
        *(
            (label, metric(m, 3 if m in ("faithfulness", "abstain_rate", "false_abstain_rate") else 4))
            for label, m in (
                ("ROUGE-L", "ROUGE-L"),
                ("F1", "F1"),
                ("decision Acc.", "decision_Accuracy"),
                ("decision macro-F1", "decision_macro_F1"),
                ("METEOR", "METEOR"),
                ("BERTScore-F1", "BERTScore-F1"),
                ("faithfulness (lexical)", "faithfulness"),
                ("abstain (unanswerable)", "abstain_rate"),
                ("false abstain", "false_abstain_rate"),
            )
        ),
    ],
)

GROUNDED_PEER = Table(
    "grounded_peer",
    [
        ("peer: TRL `DPOTrainer`, default arguments", _GR, "peer_trl_dpo"),
        ("ragtune `generator dpo` (default: `grad_chunk=2`)", _GR, "ragtune_dpo_same_steps"),
        ("ragtune `generator dpo`, one pass (`grad_chunk=0`)", _GR, "ragtune_dpo_same_steps_one_pass"),
    ],
    [
        ("steps", number("steps")),
        ("loss at step 1", number("step0_loss", 4)),
        ("pairs/s", with_ratio("pairs_per_s", 3, _GR, "peer_trl_dpo")),
        ("peak RSS", megabytes()),
    ],
)

_RD = "rerank_scifact_distill"
RERANK_SCIFACT_DISTILL = Table(
    _RD,
    [
        ("hybrid (weighted, weight chosen on train queries)", _RD, "hybrid"),
        ("teacher: the cross-encoder above, retrained (2 epochs)", _RD, "train_ragtune"),
        ("distilled bi-encoder (Margin-MSE + InfoNCE, denoised negatives)", _RD, "distilled_dense"),
        ("distilled bi-encoder + BM25 (weighted, weight chosen on train queries)", _RD, "distilled_hybrid"),
    ],
    RERANK_SCIFACT.columns[:-1],
)

_PARITY = "dpo_trl_parity"
DPO_TRL_PARITY = Table(
    _PARITY,
    [(f"`{loss}`", _PARITY, loss) for loss in ("sigmoid", "ipo", "rpo")],
    [
        ("TRL `DPOTrainer`", number("trl", 7)),
        ("ragtune on TRL's batch", number("ragtune_on_trl_batch", 7)),
        ("difference", lambda v: f"{v['abs_diff_same_batch']:.1e}"),
        ("ragtune on its own encoding", number("ragtune_own_encoding", 7)),
        ("difference", lambda v: f"{v['abs_diff_own_encoding']:.1e}"),
    ],
)

TABLES: list[Table | PairedTable] = [
    DATA_AUDIT,
    FAITHFULNESS,
    FAITHFULNESS_CHECKER,
    RETRIEVER_SCIFACT,
    RERANK_SCIFACT,
    RERANK_SCIFACT_RANDOM,
    RERANK_SCIFACT_DISTILL,
    RETRIEVER_SPEED_TRAIN,
    RETRIEVER_SPEED_ENCODE,
    GENERATOR_PUBMEDQA,
    GENERATOR_PEER,
    GENERATOR_BATCHING,
    GROUNDED_PUBMEDQA,
    GROUNDED_PEER,
    DPO_TRL_PARITY,
    JOINT_PUBMEDQA,
    JOINT_SWEEP,
    JOINT_COVIDQA_RETRIEVAL,
    JOINT_COVIDQA,
    JOINT_COVIDQA_PAIRED,
    JOINT_COVIDQA_SWEEP,
    JOINT_COVIDQA_SWEEP_PAIRED,
    JOINT_COVIDQA_COST,
    JOINT_COVIDQA_COST_ONE_DISTRACTOR,
    UNLABELLED_SCIFACT,
    UNLABELLED_COVIDQA,
    INDEX_SCALE,
    INDEX_SAME,
    PEER_SPEED,
    PEER_SPEED_COMPILE,
    PEER_SPEED_PROCESSES,
    PEER_SPEED_FLOPS,
    covidqa_rerank("covidqa_rerank"),
    covidqa_rerank("covidqa_rerank_hard"),
    PRIMITIVE_CACHE,
    RETRIEVER_SPEED_AVX2_TRAIN,
    RETRIEVER_SPEED_AVX2_ENCODE,
    DEMO_TIME,
]


# --- the README's summary -----------------------------------------------------------------------


def _short_hardware(*sources: str) -> str:
    """``AMX, bf16``: the CPU kind and precision of each result file (deduplicated)."""
    out = []
    for source in sources:
        h = result(source)["hardware"]
        kind = (
            "AMX" if h.get("amx") else "AVX512-BF16" if h.get("native_bf16") else h.get("cpu_capability", "?")
        )
        out.append(f"{kind}, {h.get('precision', '?')}")
    return "; ".join(dict.fromkeys(out))


def _covid_summary() -> str:
    """The COVID-QA headline: retrieval headroom, and joint vs separate with the paired test."""
    doc = result("joint_covidqa")
    v = doc["variants"]
    key = (
        "joint-separate/seed-mean" if "joint-separate/seed-mean" in doc["paired"] else "joint-separate/seed0"
    )
    t = doc["paired"][key]["F1"]
    seeds = len(v["joint"].get("seeds", {})) or 1
    return (
        f"nDCG@10 BM25 {fmt(v['bm25_no_tuning']['retrieval']['nDCG@10'], 4)}, packaged dense "
        f"{fmt(v['no_tuning']['retrieval']['nDCG@10'], 4)}, fine-tuned {fmt(v['retriever_only']['retrieval']['nDCG@10'], 4)}; "
        f"answer F1 joint {fmt(v['joint']['metrics']['F1'], 4)} vs separate {fmt(v['separate']['metrics']['F1'], 4)} "
        f"({seeds} seed{'s' if seeds > 1 else ''}; paired {t['delta']:+.4f}, 95% CI [{t['ci95'][0]:+.4f}, "
        f"{t['ci95'][1]:+.4f}])"
    )


def _audit_summary() -> str:
    """Which shared datasets leak questions between train and test, and SciFact's shared positives."""
    v = result("data_audit")["variants"]
    names = {"scifact": "SciFact", "pubmedqa": "PubMedQA", "halueval": "HaluEval", "covidqa": "COVID-QA"}
    leaks = [
        f"{names[k]} {d['leaked_questions_exact']} exact + {d['leaked_questions_near']} near"
        for k, d in v.items()
        if d["leakage_found"]
    ]
    clean = [names[k] for k, d in v.items() if not d["leakage_found"] and len(d["questions"]) > 1]
    return f"questions repeated across train/test: {', '.join(leaks) or 'none'}" + (
        f"; none in {' and '.join(clean)}" if clean else ""
    )


def _grounded_summary() -> str:
    """SFT vs SFT + DPO on PubMedQA: faithfulness, ROUGE-L, abstention, and the speed against TRL."""
    doc = result("grounded_pubmedqa")
    v = doc["variants"]
    sft, dpo = v["sft"]["metrics"], v["sft_dpo_sigmoid"]["metrics"]
    return (
        f"SFT -> +DPO: faithfulness {fmt(sft['faithfulness'], 3)} -> {fmt(dpo['faithfulness'], 3)}, ROUGE-L "
        f"{fmt(sft['ROUGE-L'], 4)} -> {fmt(dpo['ROUGE-L'], 4)}, abstains {fmt(dpo['abstain_rate'] * 100)}% "
        f"unanswerable; {fmt(doc['speed_ratio_vs_trl'], 2)}x TRL's pairs/s"
    )


def _unlabelled_summary() -> str:
    """Zero-shot vs the best no-label variant of unlabelled_scifact, in words."""
    v = result("unlabelled_scifact")["variants"]
    best = max(
        (k for k in v if k != "zero_shot" and "metrics" in v[k]), key=lambda k: v[k]["metrics"]["nDCG@10"]
    )
    labels = {
        "synth_unfiltered": "synthetic questions",
        "synth_filtered": "round-trip-filtered synthetic questions",
        "synth_filtered_upr": "filtered questions + LM teacher",
        "synth_filtered_upr_kl": "filtered questions + LM teacher",
        "pretrain_synth_filtered": "pre-training + filtered questions",
        "synth_unfiltered_upr": "questions + LM teacher",
        "pretrain_synth_unfiltered": "pre-training + questions",
    }
    return (
        f"nDCG@10 {fmt(v['zero_shot']['metrics']['nDCG@10'], 4)} zero-shot, "
        f"{fmt(v[best]['metrics']['nDCG@10'], 4)} with no labels ({labels[best]})"
    )


def summary() -> str:
    """A few lines for the main README: the headline of each benchmark, every number from its JSON."""
    sci = result("retriever_scifact")
    sv = sci["variants"]
    gen = result("generator_pubmedqa")
    gv = gen["variants"]
    jv = result("joint_pubmedqa")["variants"]
    fv = result("faithfulness")["variants"]
    cv = result("faithfulness_checker")["variants"]
    iv = result("index_scale")["variants"]
    peers = result("peer_speed_avx2")["summary"]
    demo = {k: result(f"demo_time_{k}")["variants"]["make_demo"] for k in ("avx2", "avx512_bf16", "amx")}
    rr = result("rerank_scifact")["variants"]
    rn = result("rerank_scifact_random_negatives")["variants"]

    def m(v: dict[str, Any], name: str, digits: int = 4) -> str:
        return fmt(v["metrics"][name], digits)

    rows = [
        (
            "retriever, SciFact test",
            f"nDCG@10 {m(sv['zero_shot'], 'nDCG@10')} zero-shot -> {m(sv['ragtune_finetuned'], 'nDCG@10')} "
            f"fine-tuned, {m(sv['ragtune_finetuned_hybrid'], 'nDCG@10')} hybrid; training "
            f"{fmt(sci['summary']['speedup_same_recipe'], 2)}x the sentence-transformers trainer's pairs/s "
            f"at {fmt(sci['summary']['rss_ratio_same_recipe'], 2)}x its memory",
            ["retriever_scifact"],
        ),
        (
            "generator, PubMedQA",
            f"ROUGE-L {m(gv['base_with_passages'], 'ROUGE-L')} -> {m(gv['ragtune_lora'], 'ROUGE-L')} with "
            f"LoRA, faithfulness {m(gv['base_with_passages'], 'faithfulness', 3)} -> "
            f"{m(gv['ragtune_lora'], 'faithfulness', 3)}; training "
            f"{fmt(gen['summary']['train_speedup_vs_peer'], 2)}x the transformers Trainer's tokens/s",
            ["generator_pubmedqa"],
        ),
        (
            "DPO, PubMedQA",
            _grounded_summary(),
            ["grounded_pubmedqa"],
        ),
        (
            "joint tuning, PubMedQA",
            f"ROUGE-L {m(jv['joint'], 'ROUGE-L')} joint vs {m(jv['separate'], 'ROUGE-L')} tuned separately"
            + (
                ": no gain (retrieval is near saturated there)"
                if jv["joint"]["metrics"]["ROUGE-L"] <= jv["separate"]["metrics"]["ROUGE-L"]
                else ""
            ),
            ["joint_pubmedqa"],
        ),
        (
            "joint tuning, COVID-QA",
            _covid_summary(),
            ["joint_covidqa"],
        ),
        (
            "reranker, ColBERT, SciFact",
            f"ColBERT {m(rr['colbert'], 'nDCG@10')} (peer {m(rr['colbert_peer_sentence_transformers'], 'nDCG@10')}); "
            f"hybrid {m(rn['hybrid'], 'nDCG@10')}, reranked {m(rn['rerank_hybrid_interpolated'], 'nDCG@10')}",
            ["rerank_scifact", "rerank_scifact_random_negatives"],
        ),
        (
            "retriever without labels, SciFact",
            _unlabelled_summary(),
            ["unlabelled_scifact"],
        ),
        (
            "data audit, shared datasets",
            _audit_summary(),
            ["data_audit"],
        ),
        (
            "faithfulness, HaluEval",
            f"AUROC {m(fv['lexical'], 'AUROC', 3)} lexical, {m(fv['model'], 'AUROC', 3)} model, "
            f"{m(cv['checker'], 'AUROC', 3)} trained checker (length alone: {m(fv['length_baseline'], 'AUROC', 3)})",
            ["faithfulness", "faithfulness_checker"],
        ),
        (
            "FAISS, 1M vectors",
            f"HNSW Recall@10 {m(iv['ragtune_hnsw'], 'Recall@10')} at {fmt(iv['ragtune_hnsw']['qps'])} "
            f"queries/s, {iv['ragtune_hnsw']['search_overhead']:+.1%} search time over plain FAISS",
            ["index_scale"],
        ),
        (
            "against the peers' trainers",
            f"retriever {fmt(peers['retriever_speedup'], 2)}x, generator {fmt(peers['generator_speedup'], 2)}x "
            "their speed"
            + (
                ", at better quality and less memory"
                if peers["retriever_nDCG@10_delta"] > 0
                and peers["generator_val_loss_delta"] < 0
                and max(peers["retriever_rss_ratio"], peers["generator_rss_ratio"]) < 1
                else ""
            ),
            ["peer_speed_avx2"],
        ),
        (
            "`make demo`",
            f"{duration(demo['avx2']['wall_s'])}, {duration(demo['avx512_bf16']['wall_s'])} and "
            f"{duration(demo['amx']['wall_s'])}",
            ["demo_time_avx2", "demo_time_avx512_bf16", "demo_time_amx"],
        ),
    ]
    lines = ["| benchmark | result | CPU kind, precision |", "| --- | --- | --- |"]
    lines += [f"| {name} | {text} | {_short_hardware(*sources)} |" for name, text, sources in rows]
    return "\n".join(lines)


# --- files --------------------------------------------------------------------------------------


def blocks() -> dict[Path, dict[str, str]]:
    """What each generated part must hold, by file and marker name."""
    return {
        README: {PREFIX + t.name: t.render() for t in TABLES},
        MAIN_README: {PREFIX + "summary": summary()},
    }


def stale(files: Mapping[Path, Mapping[str, str]] | None = None) -> list[str]:
    """``file: part`` for each generated part whose text differs from what the JSON files render."""
    out = []
    for path, parts in (files or blocks()).items():
        current = generated_parts(path.read_text(encoding="utf-8"))
        out += [
            f"{path.name}: {name}" for name, text in parts.items() if current.get(name) != text.strip("\n")
        ]
    return out


def write() -> list[Path]:
    """Rewrite every generated table (atomically); returns the files that changed."""
    changed = []
    for path, parts in blocks().items():
        text = path.read_text(encoding="utf-8")
        new = replace_generated(text, parts, str(path), prefix=PREFIX)
        if new != text:
            atomic_write_text(path, new)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    from ragtune.config_docs import generator_cli

    def show() -> None:
        for t in TABLES:
            print(f"{t.name}\n\n{t.render()}\n")

    return generator_cli(argv, "benchmarks/report.py", __doc__.split("\n\n")[0], write, lambda: stale(), show)


if __name__ == "__main__":
    sys.exit(main())
