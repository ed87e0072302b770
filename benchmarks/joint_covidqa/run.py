"""Joint RAG tuning on COVID-QA, where retrieval has headroom: zero-shot, supervised and joint
retrievers, the generator alone, both tuned separately, and joint tuning, at the same budget.

    python benchmarks/joint_covidqa/run.py [--test-limit 100] [--rounds 1] [--questions-per-round 128]
        [--seeds 0] [--split test|dev] [--sweep LEVER ...] [--eval-variants NAME ...]
        [--skip joint_cold joint_hybrid] [--pretrain] [--resume] [KEY=VALUE ...]

Data: ``ragtune data convert squad`` of ../shared/datasets/covidqa (100-word passages, answers
re-anchored with --offset-tolerance 1, split by article with seed 0: 806 training / 195 test
questions). ``--split dev`` holds out a fifth of the *training* articles instead (seeded, by
article) and evaluates on them: settings are chosen there, never on test.

Variants (each a child process; wall time and peak RSS from wait4):

- retrieval only, on every evaluation question: ``bm25_no_tuning``, ``no_tuning`` (the packaged
  MiniLM, dense), ``hybrid_no_tuning`` (RRF of both); ``retriever_only`` (contrastive training on
  the training questions' positives with BM25-mined negatives, configs/retriever/covidqa.yaml) and
  its hybrids: RRF, and the weighted fusion (``eval.fusion=weighted``) whose dense weight the dev
  split chooses (``--split dev`` scores 0.1 .. 0.9; the test run reads the choice from
  ``joint_covidqa_dev.json``); with ``--pretrain``, ``pretrained_no_labels`` (``retriever
  pretrain``, Contriever-style cropping on the corpus, one epoch, no labels) and
  ``retriever_only_pretrained`` (the same supervised training started from it) with its hybrids;
- end to end, on the first ``--test-limit`` evaluation questions (configs/e2e/covidqa.yaml):
  ``no_tuning`` (round 0 of the cold joint run, or its own evaluation-only run),
  ``generator_only`` (SFT rounds on the zero-shot retriever's passages), ``separate`` (``retriever_only``'s encoder, for queries and passages, with
  ``generator_only``'s adapter), ``joint`` (generator SFT and LSR query-encoder updates alternating,
  warm-started from ``retriever_only``'s encoder, which also encodes the passages, as Atlas and
  RA-DIT start from a trained retriever) and
  ``joint_cold`` (the same from the zero-shot encoder) and ``joint_hybrid`` (warm, with the LM's
  candidates and the distractors from BM25 + dense fusion, ``retriever.candidates=hybrid``).
  All are reported: none was picked on the test questions. ``--skip`` leaves the first-seed
  ``joint_cold`` / ``joint_hybrid`` out (each is a whole joint run, ~14 minutes).
- evaluation only (``rounds=0`` with the tuned models given; ``--eval-variants``): the held-out
  questions retrieved by BM25 or the BM25 + dense fusion instead of the dense index
  (``eval.passages``), and ``no_tuning`` with the dense index: ``bm25_no_tuning`` /
  ``hybrid_no_tuning`` (base generator), ``generator_only_bm25`` / ``generator_only_hybrid`` (the tuned generator), ``separate_hybrid``
  and ``joint_eval_hybrid`` (the joint run's final encoder and adapter), ``separate_weighted``
  (``separate``'s models, passages from the weighted fusion with the dev-chosen dense weight:
  ``retriever.fusion=weighted``).
- ``--sweep LEVER ...``: levers changed one at a time from ``joint`` (first seed): tau 0.01, gamma
  0.02, top_k 5, BM25 candidates, 256 questions per round, ``mode=both`` (warm shared encoder,
  index refreshed). Run them with ``--split dev`` to choose settings without touching test.

``joint - separate`` is reported per metric with a paired bootstrap 95% CI and a randomisation
p-value over the questions (ragtune.eval.significance). Writes
benchmarks/results/joint_covidqa[_dev].json.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import SHARED_DATASETS, child, write_result  # noqa: E402
from ragtune.data.converters import squad, write_dataset  # noqa: E402
from ragtune.eval.report import question_metrics  # noqa: E402
from ragtune.eval.significance import paired_tests  # noqa: E402

RETRIEVER = ROOT / "configs/retriever/covidqa.yaml"
E2E = ROOT / "configs/e2e/covidqa.yaml"
IR = ("Recall@1", "Recall@5", "Recall@10", "Recall@20", "MRR@10", "nDCG@10")
ANSWERS = ("ROUGE-1", "ROUGE-2", "ROUGE-L", "EM", "F1", "faithfulness")
PY = [sys.executable, "-m", "ragtune.cli"]
# --sweep: the levers the issue names, each changed alone from the warm joint run (``joint``).
LEVERS = {
    "joint_tau_0.01": ["retriever.tau=0.01"],
    "joint_gamma_0.02": ["retriever.gamma=0.02"],
    "joint_top_k_5": ["top_k=5"],
    "joint_bm25_candidates": ["retriever.candidates=bm25"],
    "joint_questions_256": ["questions_per_round=256"],
    "joint_mode_both": ["retriever.mode=both"],  # one shared encoder, warm-started, index refreshed
}
# The weighted BM25 + dense fusion's dense weights tried on the dev split (the test run takes the
# one chosen there, from benchmarks/results/joint_covidqa_dev.json).
DENSE_WEIGHTS = tuple(round(0.1 * i, 1) for i in range(1, 10))
DEV_RESULT = ROOT / "benchmarks/results/joint_covidqa_dev.json"
EVAL_ONLY = (
    "no_tuning",
    "bm25_no_tuning",
    "hybrid_no_tuning",
    "generator_only_bm25",
    "generator_only_hybrid",
    "separate_hybrid",
    "joint_eval_hybrid",
    "separate_weighted",
)


def pick(metrics: dict, keys=IR + ANSWERS) -> dict:
    return {k: round(metrics[k], 4) for k in keys if k in metrics}


def fusion_inputs(data: Path, bm25_run: Path, dense_run: Path) -> tuple[dict, dict, dict]:
    """The evaluation qrels and the two saved TREC runs that :func:`weighted_hybrid` fuses, read once."""
    from ragtune.data.io import load_beir, read_run

    return load_beir(data, "test").qrels, read_run(bm25_run), read_run(dense_run)


def weighted_hybrid(inputs: tuple[dict, dict, dict], weight: float) -> dict:
    """Retrieval metrics of the weighted fusion (``eval.fusion=weighted``) of two saved runs."""
    from ragtune.eval.ir import evaluate_run
    from ragtune.retriever.bm25 import hybrid_fusion

    qrels, bm25, dense = inputs
    fused = {
        q: dict(hybrid_fusion(bm25.get(q, {}), dense.get(q, {}), "weighted", weight, 100)) for q in qrels
    }
    return pick(evaluate_run(fused, qrels, ks=(1, 5, 10, 20)).metrics, IR)


def chosen_dense_weight(model: str) -> float:
    """The dense weight the dev split chose for ``model``'s runs (its best weighted-fusion nDCG@10)."""
    if not DEV_RESULT.exists():
        raise SystemExit(
            f"{DEV_RESULT} is missing: run with --split dev first (it chooses the fusion weight)"
        )
    fusion = json.loads(DEV_RESULT.read_text())["fusion"]
    if model not in fusion:
        raise SystemExit(
            f"{DEV_RESULT} has no fusion weight for {model}: rerun --split dev with the same options"
        )
    return fusion[model]["chosen_dense_weight"]


def fusion_weight(split: str, inputs: tuple[dict, dict, dict], model: str) -> dict:
    """On dev: every weight of DENSE_WEIGHTS scored, the best chosen; on test: dev's choice."""
    if split != "dev":
        return {"chosen_dense_weight": chosen_dense_weight(model), "chosen_on": "dev split"}
    grid = {str(w): weighted_hybrid(inputs, w) for w in DENSE_WEIGHTS}
    best = max(DENSE_WEIGHTS, key=lambda w: (grid[str(w)]["nDCG@10"], -abs(w - 0.5)))
    return {
        "chosen_dense_weight": best,
        "nDCG@10_by_dense_weight": {w: m["nDCG@10"] for w, m in grid.items()},
    }


def prepare(folder: Path, split: str) -> Path:
    """The BEIR folder + QA files of COVID-QA; with ``split="dev"`` the training articles' dev split."""
    corpus, train, test, stats = squad(SHARED_DATASETS / "covidqa" / "covidqa.json", 100, None, 0.2, 0, 1)
    if split == "dev":
        articles = sorted({e.meta["article"] for e in train})
        dev = set(random.Random(1).sample(articles, round(len(articles) * 0.2)))
        train, test = (
            [e for e in train if e.meta["article"] not in dev],
            [e for e in train if e.meta["article"] in dev],
        )
    write_dataset(folder, corpus, {"train": train, "test": test})
    (folder / "stats.json").write_text(
        json.dumps({**stats, "split": split, "eval_questions": len(test)}, indent=1)
    )
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--test-limit", type=int, default=100, help="end-to-end variants: the first N evaluation questions"
    )
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--questions-per-round", type=int, default=128)
    ap.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="seeds of the separate and joint variants"
    )
    ap.add_argument("--split", choices=["test", "dev"], default="test")
    ap.add_argument("--resume", action="store_true", help="reuse variants finished by an earlier invocation")
    ap.add_argument(
        "--sweep",
        nargs="*",
        choices=list(LEVERS),
        default=[],
        help="also run these levers (each changed alone from the warm joint run), first seed",
    )
    ap.add_argument(
        "--eval-variants",
        nargs="*",
        choices=EVAL_ONLY,
        default=list(EVAL_ONLY),
        help="evaluation-only variants (tuned models, held-out questions retrieved by BM25 or hybrid)",
    )
    ap.add_argument(
        "--skip",
        nargs="*",
        choices=["joint_cold", "joint_hybrid"],
        default=[],
        help="leave out these first-seed joint variants (no_tuning then needs its evaluation-only run)",
    )
    ap.add_argument(
        "--pretrain",
        action="store_true",
        help="also: Contriever-style pre-training on the corpus (no labels), alone and before the supervised training",
    )
    ap.add_argument("extra", nargs="*", metavar="KEY=VALUE", help="overrides for every joint-loop variant")
    args = ap.parse_args()
    if "joint_cold" in args.skip and "no_tuning" not in args.eval_variants:
        ap.error("no_tuning's end-to-end metrics need joint_cold (round 0) or --eval-variants no_tuning")
    work = HERE / "work" / args.split
    data = prepare(work / "data", args.split)
    runs: dict[str, dict] = {}

    def run(name: str, cmd: list[str], done: Path) -> dict:
        stats = work / f"{name}.child.json"
        if not (args.resume and stats.exists() and done.exists()):
            wall, rss = child(cmd, work / f"{name}.log")
            stats.write_text(json.dumps({"wall_s": round(wall, 1), "peak_rss_mb": round(rss, 1)}))
        runs[name] = json.loads(stats.read_text())
        print(name, runs[name], flush=True)
        return runs[name]

    # ---- retrieval: zero-shot and supervised, every evaluation question
    r_common = ["--config", str(RETRIEVER), f"data.beir_dir={data}"]
    zero = work / "retrieval_zero_shot"
    run(
        "retrieval_zero_shot",
        [*PY, "retriever", "eval", *r_common, f"output_dir={zero}"],
        zero / "summary.json",
    )
    sup = work / "retriever_only"
    negatives = sup / "negatives.jsonl"
    run(
        "mine",
        [*PY, "retriever", "mine", *r_common, f"mining.out={negatives}", f"output_dir={sup}"],
        negatives,
    )
    run(
        "retriever_train",
        [*PY, "retriever", "train", *r_common, f"data.triplets={negatives}", f"output_dir={sup}"],
        sup / "model",
    )
    sup_eval = sup / "eval"
    model = f"model.name={sup / 'model'}"
    run(
        "retriever_eval",
        [*PY, "retriever", "eval", *r_common, model, "eval.methods=[dense,hybrid]", f"output_dir={sup_eval}"],
        sup_eval / "summary.json",
    )

    if args.pretrain:  # Contriever-style cropping on the corpus (no labels), then the same training
        pre, sup_pre = work / "retriever_pretrain", work / "retriever_only_pretrained"
        run(
            "retriever_pretrain",
            [*PY, "retriever", "pretrain", *r_common, "train.epochs=1", f"output_dir={pre}"],
            pre / "model",
        )
        pre_model = f"model.name={pre / 'model'}"
        run(
            "pretrain_eval",
            [
                *PY,
                "retriever",
                "eval",
                *r_common,
                pre_model,
                "eval.methods=[dense]",
                f"output_dir={pre / 'eval'}",
            ],
            pre / "eval" / "summary.json",
        )
        run(
            "retriever_train_pretrained",
            [
                *PY,
                "retriever",
                "train",
                *r_common,
                pre_model,
                f"data.triplets={negatives}",
                f"output_dir={sup_pre}",
            ],
            sup_pre / "model",
        )
        run(
            "retriever_eval_pretrained",
            [
                *[*PY, "retriever", "eval", *r_common, f"model.name={sup_pre / 'model'}"],
                *["eval.methods=[dense,hybrid]", f"output_dir={sup_pre / 'eval'}"],
            ],
            sup_pre / "eval" / "summary.json",
        )

    # The weighted fusion's dense weight per fine-tuned dense model: chosen on dev, read on test.
    dense_runs = {"retriever_only": sup_eval / "run_dense.trec"}
    if args.pretrain:
        dense_runs["retriever_only_pretrained"] = sup_pre / "eval" / "run_dense.trec"
    fused = {name: fusion_inputs(data, zero / "run_bm25.trec", path) for name, path in dense_runs.items()}
    fusion = {name: fusion_weight(args.split, inputs, name) for name, inputs in fused.items()}
    weighted = [
        "eval.passages=hybrid",
        "retriever.fusion=weighted",
        f"retriever.dense_weight={fusion['retriever_only']['chosen_dense_weight']}",
    ]

    # ---- end to end
    e_common = [
        *["--config", str(E2E), f"data.corpus={data}", f"data.train={data / 'qa_train.jsonl'}"],
        *[f"data.eval={data / 'qa_test.jsonl'}", f"data.max_eval={args.test_limit}", f"rounds={args.rounds}"],
        f"questions_per_round={args.questions_per_round}",
        *args.extra,
    ]

    def e2e(name: str, seed: int, *overrides: str) -> Path:
        out = work / f"{name}_s{seed}"
        if not (args.resume and (out / "report.json").exists()):
            shutil.rmtree(out, ignore_errors=True)
        run(
            f"{name}_s{seed}",
            [*PY, "e2e", "train", *e_common, f"seed={seed}", f"output_dir={out}", *overrides],
            out / "report.json",
        )
        return out

    for seed in args.seeds:
        gen = e2e(
            "generator_only",
            seed,
            "retriever.enabled=false",
            "false_negatives.enabled=false",
            "eval.rounds=last",
        )
        e2e(
            "separate",
            seed,
            "rounds=0",
            f"retriever.model={sup / 'model'}",
            f"generator.adapter={gen / 'adapter'}",
        )
        e2e("joint", seed, f"retriever.model={sup / 'model'}")
        if seed == args.seeds[0]:  # the other joint settings: first seed only
            if "joint_cold" not in args.skip:
                e2e("joint_cold", seed)
            if "joint_hybrid" not in args.skip:
                e2e("joint_hybrid", seed, f"retriever.model={sup / 'model'}", "retriever.candidates=hybrid")
    seed0, joint0 = args.seeds[0], work / f"joint_s{args.seeds[0]}"
    for name in args.sweep:  # one lever at a time from the warm joint run, first seed only
        e2e(name, seed0, f"retriever.model={sup / 'model'}", *LEVERS[name])
    # Evaluation-only variants: the same models, the held-out questions retrieved another way
    # (rounds=0 evaluates the starting models; the generator's adapter and query encoder given).
    tuned_gen = f"generator.adapter={work / f'generator_only_s{seed0}' / 'adapter'}"
    eval_only = {
        "no_tuning": [],
        "bm25_no_tuning": ["eval.passages=bm25"],
        "hybrid_no_tuning": ["eval.passages=hybrid"],
        "generator_only_bm25": [tuned_gen, "eval.passages=bm25"],
        "generator_only_hybrid": [tuned_gen, "eval.passages=hybrid"],
        "separate_hybrid": [f"retriever.model={sup / 'model'}", tuned_gen, "eval.passages=hybrid"],
        "separate_weighted": [f"retriever.model={sup / 'model'}", tuned_gen, *weighted],
        "joint_eval_hybrid": [
            f"retriever.model={joint0 / 'passage_encoder'}",
            f"retriever.query_model={joint0 / 'query_encoder'}",
            f"generator.adapter={joint0 / 'adapter'}",
            "eval.passages=hybrid",
        ],
    }
    assert set(eval_only) == set(EVAL_ONLY)
    for name in args.eval_variants:
        e2e(name, seed0, "rounds=0", *eval_only[name])

    # ---- results
    variants: dict[str, dict] = {}
    zero_summary = json.loads((zero / "summary.json").read_text())
    sup_summary = json.loads((sup_eval / "summary.json").read_text())
    for method, name in (("bm25", "bm25_no_tuning"), ("dense", "no_tuning"), ("hybrid", "hybrid_no_tuning")):
        variants[name] = {"retrieval": pick(zero_summary["metrics"][method], IR)}
    variants["retriever_only"] = {"retrieval": pick(sup_summary["metrics"]["dense"], IR)}
    variants["retriever_only_hybrid"] = {"retrieval": pick(sup_summary["metrics"]["hybrid"], IR)}
    # The weighted fusion of BM25 and the fine-tuned dense model: its weight chosen on dev, never test.
    if args.pretrain:
        pre_summary = json.loads((pre / "eval" / "summary.json").read_text())
        sup_pre_summary = json.loads((sup_pre / "eval" / "summary.json").read_text())
        variants["pretrained_no_labels"] = {
            "retrieval": pick(pre_summary["metrics"]["dense"], IR),
            **runs["retriever_pretrain"],
            "pairs_per_s": json.loads((pre / "train_summary.json").read_text())["pairs_per_s"],
        }
        variants["retriever_only_pretrained"] = {
            "retrieval": pick(sup_pre_summary["metrics"]["dense"], IR),
            **runs["retriever_train_pretrained"],
        }
        variants["retriever_only_pretrained_hybrid"] = {
            "retrieval": pick(sup_pre_summary["metrics"]["hybrid"], IR)
        }
    for model_name, inputs in fused.items():
        w = fusion[model_name]["chosen_dense_weight"]
        variants[f"{model_name}_weighted"] = {
            "retrieval": weighted_hybrid(inputs, w),
            "dense_weight": w,
        }
    train_summary = json.loads((sup / "train_summary.json").read_text())
    variants["retriever_only"].update(
        wall_s=runs["retriever_train"]["wall_s"],
        peak_rss_mb=runs["retriever_train"]["peak_rss_mb"],
        pairs_per_s=train_summary["pairs_per_s"],
    )
    if "no_tuning" not in args.eval_variants:  # round 0 of the cold joint run: the packaged models
        cold = work / f"joint_cold_s{args.seeds[0]}"
        round0 = json.loads((cold / "report.json").read_text())["rounds"][0]
        variants["no_tuning"]["metrics"] = pick(round0["metrics"])
    single = [v for v in ("joint_cold", "joint_hybrid") if v not in args.skip]
    single += [*args.eval_variants, *args.sweep]
    for name in ("generator_only", "separate", "joint", *single):
        per_seed = {}
        for seed in args.seeds if name in ("generator_only", "separate", "joint") else args.seeds[:1]:
            report = json.loads((work / f"{name}_s{seed}" / "report.json").read_text())
            per_seed[str(seed)] = {
                "metrics": pick(report["final"]),
                "metrics_per_round": {
                    str(r["round"]): pick(r["metrics"]) for r in report["rounds"] if "metrics" in r
                },
                **runs[f"{name}_s{seed}"],
                "seconds_per_round": {str(r["round"]): round(r["wall_s"], 1) for r in report["rounds"]},
            }
        mean = {
            k: round(sum(s["metrics"][k] for s in per_seed.values()) / len(per_seed), 4)
            for k in per_seed[str(args.seeds[0])]["metrics"]
        }
        variants.setdefault(name, {}).update(metrics=mean, seeds=per_seed)
    paired = {}
    for seed in args.seeds:
        a = question_metrics(work / f"separate_s{seed}", 0)
        for name in ("joint", *single) if seed == args.seeds[0] else ("joint",):
            report = json.loads((work / f"{name}_s{seed}" / "report.json").read_text())
            b = question_metrics(work / f"{name}_s{seed}", report["final_round"])
            paired[f"{name}-separate/seed{seed}"] = paired_tests(a, b, [*IR, *ANSWERS])
    if len(args.seeds) > 1:  # each question's metrics averaged over the seeds, then paired

        def seed_mean(name: str, round_of) -> dict[str, dict[str, float]]:
            runs_ = [question_metrics(work / f"{name}_s{seed}", round_of(seed)) for seed in args.seeds]
            shared = set.intersection(*(set(r) for r in runs_))
            return {
                q: {
                    m: sum(r[q][m] for r in runs_) / len(runs_)
                    for m in runs_[0][q]
                    if all(m in r[q] for r in runs_)
                }
                for q in shared
            }

        def final_round(seed: int) -> int:
            return json.loads((work / f"joint_s{seed}" / "report.json").read_text())["final_round"]

        paired["joint-separate/seed-mean"] = paired_tests(
            seed_mean("separate", lambda seed: 0), seed_mean("joint", final_round), [*IR, *ANSWERS]
        )
    j, s = variants["joint"]["metrics"], variants["separate"]["metrics"]
    tuned = [v for v in ("retriever_only", "retriever_only_pretrained") if v in variants]
    best_tuned = max(variants[v]["retrieval"]["nDCG@10"] for v in tuned)  # the best tuned dense model
    best_single = max(best_tuned, variants["bm25_no_tuning"]["retrieval"]["nDCG@10"])
    best_hybrid = max(
        variants[v]["retrieval"]["nDCG@10"]
        for v in variants
        if v.endswith(("_hybrid", "_weighted"))
        and "retrieval" in variants[v]
        and v.startswith("retriever_only")
    )
    targets = {
        "tuned_retriever_beats_bm25_by_0.05_nDCG@10": best_tuned
        - variants["bm25_no_tuning"]["retrieval"]["nDCG@10"]
        >= 0.05,
        "tuned_retriever_beats_zero_shot_by_0.10_nDCG@10": best_tuned
        - variants["no_tuning"]["retrieval"]["nDCG@10"]
        >= 0.10,
        "hybrid_beats_best_single": best_hybrid > best_single,
        "joint_F1>separate_CI_above_0": all(
            p["F1"]["ci95"][0] > 0 for k, p in paired.items() if k.startswith("joint-")
        ),
        "joint_ROUGE-L>separate_CI_above_0": all(
            p["ROUGE-L"]["ci95"][0] > 0 for k, p in paired.items() if k.startswith("joint-")
        ),
        "joint_Recall@5>=separate": j["Recall@5"] >= s["Recall@5"],
        "joint_faithfulness>=separate": j["faithfulness"] >= s["faithfulness"],
    }
    extra = " ".join(args.extra)
    command = (
        f"python benchmarks/joint_covidqa/run.py --split {args.split} --test-limit {args.test_limit} --rounds {args.rounds} "
        f"--questions-per-round {args.questions_per_round} --seeds {' '.join(map(str, args.seeds))}"
        + (f" --sweep {' '.join(args.sweep)}" if args.sweep else "")
        + (f" --skip {' '.join(args.skip)}" if args.skip else "")
        + (" --pretrain" if args.pretrain else "")
        + (
            ""
            if args.eval_variants == list(EVAL_ONLY)
            else f" --eval-variants {' '.join(args.eval_variants)}"
        )
        + f" {extra}"
    ).strip()
    data_stats = json.loads((data / "stats.json").read_text())
    name = "joint_covidqa" if args.split == "test" else "joint_covidqa_dev"
    path = write_result(
        name,
        command,
        args.seeds[0],
        variants,
        extra={
            "data": data_stats,
            "paired": paired,
            "fusion": fusion,
            "targets": targets,
            "children": runs,
            "overrides": args.extra,
        },
    )
    print(json.dumps(targets, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
