"""Retrieval without labels on SciFact (and COVID-QA): synthetic questions, round-trip filtering,
an LM teacher and Contriever-style pre-training; no training qrels or training questions used (the
test qrels score only).

    python benchmarks/unlabelled_scifact/run.py [--dataset scifact|covidqa] [--max-passages 1000]
        [--per-passage 1] [--variants NAME ...] [--resume]

``--dataset covidqa``: the COVID-QA corpus of ``ragtune data convert squad`` (3,572 passages of 100
words, the split of benchmarks/joint_covidqa), its 195 test questions scored, its training
questions unused; configs/retriever/covidqa.yaml's recipe (BM25 negatives, 10% of the synthetic
questions held out for validation); results to unlabelled_covidqa.json.

Variants (each stage a child process: wall time and peak RSS from wait4; evaluation by
``ragtune retriever eval`` with the dense method on the SciFact test split):

- ``zero_shot``: the packaged MiniLM as shipped;
- ``synth_unfiltered``: ``data synth-queries --filter none`` on a seeded sample of
  ``--max-passages`` abstracts (SmolLM2-135M-Instruct, sampling), BM25-mined negatives, InfoNCE
  (hard labels: each question's own passage);
- ``synth_filtered``: the same questions, kept only if BM25 ranks their passage in the top 20
  (the round trip, :func:`ragtune.data.synth.round_trip_ranks`);
- ``synth_filtered_upr``: + the LM teacher: ``score-triplets`` with ``distill.teacher_kind=lm``
  (UPR query likelihood), ``train.loss=margin_mse`` with the in-batch term;
- ``synth_filtered_upr_kl``: the same scores, ``train.loss=kl`` (listwise KL over each question's
  positive and negatives, temperature 1) with the in-batch term;
- ``pretrain_synth_filtered``: ``retriever pretrain`` (one epoch of cropping pairs on the corpus)
  first, then ``synth_filtered``'s training from it;
- ``synth_unfiltered_upr``, ``pretrain_synth_unfiltered``: the LM teacher and the pre-training
  with the round-trip filter off (the unfiltered questions).

The round-trip filter's wall time is ``filter.seconds`` (BM25 over the corpus, in this process).

Settings are the dataset's retriever recipe (configs/retriever/<dataset>.yaml; SciFact: batch 32,
lr 2e-5, temperature 0.05, 3 negatives) with one epoch and BM25-mined negatives; nothing was tuned
on the test qrels. Writes benchmarks/results/unlabelled_<dataset>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import SHARED_DATASETS, child, write_result  # noqa: E402
from ragtune.data.io import load_corpus, read_jsonl  # noqa: E402
from ragtune.data.synth import round_trip_ranks, write_synth_folder  # noqa: E402
from ragtune.retriever.mining import stats_path  # noqa: E402

PY = [sys.executable, "-m", "ragtune.cli"]
METRICS = ("nDCG@10", "Recall@10", "Recall@100", "MRR@10")
VARIANTS = (
    "zero_shot",
    "synth_unfiltered",
    "synth_filtered",
    "synth_filtered_upr",
    "synth_filtered_upr_kl",
    "pretrain_synth_filtered",
    "synth_unfiltered_upr",
    "pretrain_synth_unfiltered",
)
FILTER_K = 20
DATA = {
    "scifact": {
        "corpus": "SciFact (5,183 abstracts)",
        "evaluation": "test qrels, 300 claims",
        "training_labels": "none",
    },
    "covidqa": {
        "corpus": "COVID-QA, data convert squad (3,572 passages of 100 words)",
        "evaluation": "195 test questions (16 articles)",
        "training_labels": "none (the 806 training questions unused)",
    },
}


def filtered_copy(src: Path, dst: Path, corpus) -> dict:
    """``src``'s synthetic questions whose passage BM25 ranks in the top FILTER_K, as a BEIR folder."""
    rows = [obj for _, obj in read_jsonl(src / "queries.jsonl")]
    ranks = round_trip_ranks(
        [r["text"] for r in rows], [r["metadata"]["passage_id"] for r in rows], corpus, "bm25", FILTER_K
    )
    kept = []
    for r, rank in zip(rows, ranks, strict=True):
        if rank is not None:
            kept.append(
                {
                    **r,
                    "metadata": {**r["metadata"], "filter": "bm25", "filter_k": FILTER_K, "bm25_rank": rank},
                }
            )
    write_synth_folder(dst, corpus, kept)
    return {"questions": len(rows), "kept": len(kept)}


def full_corpus_estimate(
    stages: dict, filt: dict | None, best: str, corpus_size: int, max_passages: int
) -> dict | None:
    """The best variant's pipeline (zero-shot evaluation, synthesis, filter, mining, training,
    evaluation) scaled to questions for every passage of the corpus: the stages that grow with the
    number of questions scaled linearly by ``corpus_size / max_passages``, the evaluations as
    measured. An estimate from this run's stage times, not a measurement."""
    if not max_passages or max_passages >= corpus_size or f"train_{best}" not in stages:
        return None
    scale = corpus_size / max_passages
    filtered = "filtered" in best and "unfiltered" not in best
    grows = ["synth_queries", f"train_{best}", "mine_filtered" if filtered else "mine_unfiltered"]
    if "upr" in best:
        grows.append("score_upr" if filtered else "score_upr_unfiltered")
    # pre-training already runs over the whole corpus: counted as measured, not scaled
    fixed = ["eval_zero_shot", f"eval_{best}"] + (["pretrain"] if best.startswith("pretrain") else [])
    seconds = sum(
        stages[s]["wall_s"] * (1 if s in fixed else scale) for s in set(grows + fixed) if s in stages
    )
    if filtered and filt and "seconds" in filt:
        seconds += filt["seconds"] * scale
    return {
        "variant": best,
        "passages": corpus_size,
        "scale": round(scale, 3),
        "seconds": round(seconds),
        "within_2_hours": seconds <= 7200,
        "how": "this run's stage wall times; stages that grow with the questions scaled linearly "
        "to a question for every passage; an estimate, not a measurement",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", choices=["scifact", "covidqa"], default="scifact")
    ap.add_argument("--max-passages", type=int, default=1000, help="abstracts given a synthetic question")
    ap.add_argument("--per-passage", type=int, default=1)
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--resume", action="store_true", help="keep variants an earlier invocation finished")
    args = ap.parse_args()
    if not (SHARED_DATASETS / args.dataset).exists():
        sys.exit(f"{SHARED_DATASETS / args.dataset} is missing: this benchmark needs ../shared/datasets")
    CONFIG = ROOT / f"configs/retriever/{args.dataset}.yaml"
    work = HERE / "work" if args.dataset == "scifact" else HERE / "work" / args.dataset
    work.mkdir(parents=True, exist_ok=True)
    if args.dataset == "scifact":
        source = SHARED_DATASETS / "scifact"
    else:
        from benchmarks.joint_covidqa.run import prepare

        source = work / "data"
        if not (source / "corpus.jsonl").exists():
            prepare(source, "test")
    partial = work / "partial.json"
    state = (
        json.loads(partial.read_text())
        if args.resume and partial.exists()
        else {"variants": {}, "stages": {}}
    )
    variants, stages = state["variants"], state["stages"]

    def save() -> None:
        partial.write_text(json.dumps(state, indent=1))

    def stage(name: str, cmd: list[str]) -> None:
        if name in stages:
            return
        wall, rss = child(cmd, work / f"{name}.log")
        stages[name] = {"wall_s": round(wall, 1), "peak_rss_mb": round(rss, 1)}
        save()
        print(name, stages[name], flush=True)

    def evaluate(name: str, model: str) -> None:
        out = work / f"eval_{name}"
        stage(
            f"eval_{name}",
            [*PY, "retriever", "eval", "--config", str(CONFIG), f"model.name={model}", f"data.beir_dir={source}",
             "eval.methods=[dense]", f"output_dir={out}"],
        )  # fmt: skip
        metrics = json.loads((out / "summary.json").read_text())["metrics"]["dense"]
        variants[name] = {**variants.get(name, {}), "metrics": {k: round(metrics[k], 4) for k in METRICS}}
        save()
        print(name, variants[name]["metrics"], flush=True)

    def train(name: str, beir: Path, triplets: Path, *extra: str) -> str:
        out = work / name
        stage(
            f"train_{name}",
            [*PY, "retriever", "train", "--config", str(CONFIG), f"data.beir_dir={beir}",
             f"data.triplets={triplets}", "train.epochs=1", f"output_dir={out}", *extra],
        )  # fmt: skip
        summary = json.loads((out / "train_summary.json").read_text())
        variants[name] = {"pairs_per_s": round(summary.get("pairs_per_s", 0.0), 2)}
        return str(out / "model")

    if "zero_shot" in args.variants:
        evaluate("zero_shot", "sentence-transformers/all-MiniLM-L6-v2")

    synth = work / "synth"
    needs_synth = [v for v in args.variants if v != "zero_shot"]
    if needs_synth:
        stage(
            "synth_queries",
            [*PY, "data", "synth-queries", "--corpus", str(source), "--out", str(synth), "--filter", "none",
             "--max-passages", str(args.max_passages), "--per-passage", str(args.per_passage)],
        )  # fmt: skip
        state["synth"] = json.loads((synth / "synth_stats.json").read_text())
        if "filter" not in state:
            started = time.perf_counter()
            state["filter"] = filtered_copy(
                synth, work / "synth_filtered_data", load_corpus(source / "corpus.jsonl")
            )
            state["filter"]["seconds"] = round(time.perf_counter() - started, 1)
        save()

    def mined(name: str, beir: Path) -> Path:
        out = work / f"{name}_negatives.jsonl"
        stage(
            f"mine_{name}",
            [*PY, "retriever", "mine", "--config", str(CONFIG), f"data.beir_dir={beir}",
             "mining.method=bm25", f"mining.out={out}"],
        )  # fmt: skip
        return out

    filtered = work / "synth_filtered_data"
    if "synth_unfiltered" in args.variants:
        evaluate("synth_unfiltered", train("synth_unfiltered", synth, mined("unfiltered", synth)))
    if "synth_filtered" in args.variants:
        evaluate("synth_filtered", train("synth_filtered", filtered, mined("filtered", filtered)))

    def upr(name: str, beir: Path) -> Path:
        """The LM teacher's (UPR) scores of ``name``'s mined triplets (stage ``score_upr`` for the
        filtered questions, ``score_upr_unfiltered`` for the others)."""
        scored = work / f"{name}_upr.jsonl"
        stage(
            "score_upr" if name == "filtered" else f"score_upr_{name}",
            [*PY, "retriever", "score-triplets", "--config", str(CONFIG), f"data.beir_dir={beir}",
             f"data.triplets={mined(name, beir)}", "distill.teacher_kind=lm",
             "distill.teacher=SmolLM2-135M-Instruct", "distill.denoise=false", "distill.batch_size=16",
             f"distill.out={scored}"],
        )  # fmt: skip
        state["upr" if name == "filtered" else f"upr_{name}"] = json.loads(stats_path(scored).read_text())
        return scored

    def pretrained() -> Path:
        pre = work / "pretrain"
        stage(
            "pretrain",
            [*PY, "retriever", "pretrain", "--config", str(CONFIG), f"data.beir_dir={source}",
             "train.epochs=1", f"output_dir={pre}"],
        )  # fmt: skip
        return pre / "model"

    distil = ("train.loss=margin_mse", "train.in_batch_weight=1.0")
    if "synth_filtered_upr" in args.variants:
        evaluate(
            "synth_filtered_upr", train("synth_filtered_upr", filtered, upr("filtered", filtered), *distil)
        )
    if "synth_filtered_upr_kl" in args.variants:
        if "score_upr" not in stages:
            raise SystemExit(
                "synth_filtered_upr_kl reuses synth_filtered_upr's UPR scores: run that variant first"
            )
        scored = work / "filtered_upr.jsonl"
        model = train("synth_filtered_upr_kl", filtered, scored, "train.loss=kl", "train.in_batch_weight=1.0")
        evaluate("synth_filtered_upr_kl", model)
    if "pretrain_synth_filtered" in args.variants:
        model = train(
            "pretrain_synth_filtered", filtered, mined("filtered", filtered), f"model.name={pretrained()}"
        )
        evaluate("pretrain_synth_filtered", model)
    if "synth_unfiltered_upr" in args.variants:
        evaluate(
            "synth_unfiltered_upr", train("synth_unfiltered_upr", synth, upr("unfiltered", synth), *distil)
        )
    if "pretrain_synth_unfiltered" in args.variants:
        model = train(
            "pretrain_synth_unfiltered", synth, mined("unfiltered", synth), f"model.name={pretrained()}"
        )
        evaluate("pretrain_synth_unfiltered", model)

    zs = variants.get("zero_shot", {}).get("metrics", {}).get("nDCG@10")
    best = max((v["metrics"]["nDCG@10"], k) for k, v in variants.items() if "metrics" in v)
    targets: dict = {"best_variant": best[1]}
    if args.dataset == "scifact":
        targets["no_label_nDCG@10>=0.68"] = best[0] >= 0.68
    if zs is not None:
        targets["gain_over_zero_shot"] = round(best[0] - zs, 4)
        if args.dataset == "covidqa":
            targets["no_label_beats_zero_shot_by_0.05"] = best[0] - zs >= 0.05
    corpus_size = len(load_corpus(source / "corpus.jsonl"))
    targets["pipeline_estimate_full_corpus"] = full_corpus_estimate(
        stages, state.get("filter"), best[1], corpus_size, args.max_passages
    )
    command = "python benchmarks/unlabelled_scifact/run.py " + " ".join(sys.argv[1:])
    state.setdefault("commands", []).append(command.strip())
    save()
    command = " ; ".join(state["commands"])  # every invocation whose variants the file holds
    path = write_result(
        f"unlabelled_{args.dataset}",
        command.strip(),
        0,
        variants,
        {
            "stages": stages,
            "synth": state.get("synth"),
            "filter": state.get("filter"),
            "upr": state.get("upr"),
            "upr_unfiltered": state.get("upr_unfiltered"),
            "targets": targets,
            "pipeline_wall_s": round(sum(s["wall_s"] for s in stages.values()), 1),
            "data": DATA[args.dataset],
        },
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
