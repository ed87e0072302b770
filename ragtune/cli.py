"""The ``ragtune`` command: parse arguments, load the config, call the package. No logic lives here."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ragtune import __version__
from ragtune.config import load_config
from ragtune.errors import UserError


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help="YAML config (defaults when omitted)")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides applied after the file, e.g. eval.depth=50",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ragtune", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ragtune {__version__}")
    sub = parser.add_subparsers(dest="group", required=True)

    # ragtune eval ...
    ev = sub.add_parser("eval", help="score runs and predictions").add_subparsers(dest="cmd", required=True)
    r = ev.add_parser("retrieval", help="score a TREC run against qrels (trec_eval-identical)")
    r.add_argument("--run", type=Path, required=True, help="TREC run file")
    r.add_argument("--qrels", type=Path, required=True, help="BEIR TSV or TREC qrels file")
    r.add_argument("--out", type=Path, required=True, help="metrics JSON to write")
    r.add_argument("--k", type=int, nargs="+", default=[1, 3, 5, 10, 20, 100], help="cut-offs")
    w = ev.add_parser(
        "wordnet",
        help="install WordNet 3.0 for METEOR's synonym stage from Debian's wordnet-base and "
        "wordnet-sense-index packages (apt-get download, no root)",
    )
    w.add_argument("--dest", type=Path, default=None, help="nltk data folder (default: the environment's)")
    w.add_argument("--deb", type=Path, nargs="+", default=[], help="use these downloaded .deb files")
    g = ev.add_parser(
        "generation",
        help="score predictions: ROUGE, EM/F1, BLEU, faithfulness, PubMedQA decisions, METEOR, BERTScore",
    )
    g.add_argument(
        "--predictions",
        type=Path,
        required=True,
        help="JSONL with prediction, reference and optionally id and contexts",
    )
    g.add_argument("--out", type=Path, required=True, help="metrics JSON to write")
    g.add_argument(
        "--meteor", action="store_true", help="also METEOR (nltk; synonyms only with WordNet data)"
    )
    g.add_argument(
        "--bertscore",
        nargs="?",
        const="default",
        default=None,
        metavar="MODEL",
        help="also BERTScore (bert-score package) with MODEL, a local transformers folder or name "
        "(no MODEL: the packaged all-MiniLM-L6-v2)",
    )
    g.add_argument(
        "--bertscore-layer", type=int, default=None, help="BERTScore's hidden layer (default: the last)"
    )
    g.add_argument(
        "--abstain-text",
        action="append",
        default=[],
        metavar="PHRASE",
        help="another phrase that marks an answer as an abstention (repeatable; rows with "
        "'answerable' get abstain / false-abstain rates)",
    )
    g.add_argument(
        "--faithfulness-model",
        default=None,
        metavar="PATH",
        help="also model_faithfulness: a trained checker's score (`ragtune faithfulness train`)",
    )

    # ragtune data ...
    da = sub.add_parser("data", help="convert and check data").add_subparsers(dest="cmd", required=True)
    c = da.add_parser("convert", help="convert a public dataset to a BEIR folder + QA JSONL")
    c.add_argument("dataset", choices=["pubmedqa", "halueval", "squad"])
    c.add_argument(
        "--src", type=Path, required=True, help="the dataset's folder (pubmedqa) or file (halueval, squad)"
    )
    c.add_argument("--out", type=Path, required=True, help="output folder")
    c.add_argument("--passage-words", type=int, default=100, help="squad: words per passage")
    c.add_argument(
        "--stride", type=int, default=None, help="squad: words between passage starts (default: no overlap)"
    )
    c.add_argument(
        "--test-fraction", type=float, default=0.2, help="squad: share of the articles in the test split"
    )
    c.add_argument("--seed", type=int, default=0, help="squad: seed of the split by article")
    c.add_argument(
        "--offset-tolerance",
        type=int,
        default=0,
        help="squad: re-anchor an answer whose text starts at most this many characters from its answer_start",
    )
    ck = da.add_parser("check", help="validate a data file and print its size")
    ck.add_argument("kind", choices=["beir", "corpus", "queries", "qrels", "triplets", "qa", "run"])
    ck.add_argument("path", type=Path)
    ck.add_argument("--corpus", type=Path, default=None, help="corpus.jsonl to resolve passage ids against")
    ck.add_argument("--split", default="test", help="qrels split for kind=beir")

    au = da.add_parser("audit", help="duplicates, leakage between splits and broken rows of a dataset folder")
    au.add_argument("folder", type=Path, help="a BEIR folder, with qa_<split>.jsonl files if any")
    au.add_argument(
        "--out", type=Path, default=None, help="where audit.json and audit.md go (default: FOLDER)"
    )
    au.add_argument("--near", type=float, default=0.8, help="Jaccard similarity of near duplicates")
    au.add_argument("--max-words", type=int, default=512, help="passages longer than this are reported")
    au.add_argument("--strict", action="store_true", help="exit 1 when questions leak between splits")

    sq = da.add_parser(
        "synth-queries",
        help="the generator writes questions for corpus passages (round-trip filtered): a BEIR folder without labels",
    )
    sq.add_argument("--corpus", type=Path, required=True, help="corpus.jsonl or a BEIR folder holding one")
    sq.add_argument("--out", type=Path, required=True, help="output folder (BEIR layout + synth_stats.json)")
    sq.add_argument(
        "--model", default="SmolLM2-135M-Instruct", help="instruction LM: name, folder or peft adapter"
    )
    sq.add_argument("--per-passage", type=int, default=1, help="questions sampled per passage")
    sq.add_argument("--max-passages", type=int, default=0, help="a seeded sample of N passages (0: all)")
    sq.add_argument("--few-shot", type=Path, default=None, help="JSONL of example {passage, question} turns")
    sq.add_argument("--greedy", action="store_true", help="greedy decoding (one question per passage)")
    sq.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    sq.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling mass")
    sq.add_argument("--max-new-tokens", type=int, default=48, help="tokens per generated question at most")
    sq.add_argument("--max-passage-tokens", type=int, default=256, help="passage tokens shown in the prompt")
    sq.add_argument("--batch-size", type=int, default=16, help="prompts per generation batch")
    sq.add_argument("--min-words", type=int, default=3, help="shorter questions are dropped")
    sq.add_argument("--max-words", type=int, default=48, help="longer questions are dropped")
    sq.add_argument(
        "--near",
        type=float,
        default=1.0,
        help="drop near-duplicate questions from this Jaccard (1: exact only)",
    )
    sq.add_argument(
        "--filter",
        choices=["none", "bm25", "dense", "both"],
        default="bm25",
        help="round trip: keep a question only if its passage ranks in the top --filter-k for it",
    )
    sq.add_argument("--filter-k", type=int, default=20, help="rank its passage must reach")
    sq.add_argument(
        "--retriever", default="sentence-transformers/all-MiniLM-L6-v2", help="dense model of the round trip"
    )
    sq.add_argument(
        "--answers", action="store_true", help="also answer each question from its passage (qa_train.jsonl)"
    )
    sq.add_argument("--seed", type=int, default=0, help="seed of the passage sample and the sampling")
    sq.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="compute precision")

    # ragtune retriever ...
    rt = sub.add_parser("retriever", help="dense retriever").add_subparsers(dest="cmd", required=True)
    _config_args(rt.add_parser("eval", help="score BM25 / dense / hybrid retrieval on a BEIR folder"))
    _config_args(rt.add_parser("train", help="contrastive training of the bi-encoder"))
    _config_args(rt.add_parser("mine", help="mine hard negatives (BM25 or dense) into a triplets file"))
    _config_args(
        rt.add_parser(
            "score-triplets",
            help="a cross-encoder teacher scores a triplets file (for margin_mse / kl), denoising negatives",
        )
    )
    _config_args(
        rt.add_parser(
            "pretrain", help="unsupervised Contriever-style pre-training on the corpus (cropping pairs)"
        )
    )
    rr = sub.add_parser("reranker", help="cross-encoder reranker").add_subparsers(dest="cmd", required=True)
    _config_args(
        rr.add_parser("train", help="train the cross-encoder on a triplets file (bce, listwise, margin_mse)")
    )
    rk = rr.add_parser("rerank", help="rescore the top-n of a TREC run with the cross-encoder")
    rk.add_argument(
        "--run", type=Path, required=True, help="TREC run to rerank (queries and passages from data.beir_dir)"
    )
    rk.add_argument("--out", type=Path, required=True, help="reranked TREC run to write")
    rk.add_argument(
        "--model",
        default=None,
        help="CrossEncoder folder or name (default: output_dir/model, else model.name)",
    )
    _config_args(rk)
    fa = sub.add_parser("faithfulness", help="learned faithfulness checker").add_subparsers(
        dest="cmd", required=True
    )
    _config_args(
        fa.add_parser("train", help="train the checker on synthetic claims made from corpus passages")
    )
    fs = fa.add_parser("score", help="score a predictions JSONL file's answers against their contexts")
    fs.add_argument(
        "--model", type=Path, required=True, help="checker folder (or its training output folder)"
    )
    fs.add_argument("--predictions", type=Path, required=True, help="JSONL with prediction and contexts")
    fs.add_argument("--out", type=Path, required=True, help="JSONL of id and model_faithfulness to write")
    fs.add_argument("--batch-size", type=int, default=32, help="(passage, claim) pairs per forward pass")
    fs.add_argument(
        "--precision", choices=["auto", "fp32", "bf16"], default="auto", help="auto: bf16 where native"
    )
    ge = sub.add_parser("generator", help="grounded generator").add_subparsers(dest="cmd", required=True)
    _config_args(ge.add_parser("train", help="fine-tune the generator (LoRA, IA3, prefix, prompt or full)"))
    gg = ge.add_parser("generate", help="answer questions from their passages; writes predictions JSONL")
    gg.add_argument(
        "--model", type=Path, default=None, help="adapter or model folder (default: model.name untuned)"
    )
    gg.add_argument("--input", type=Path, default=None, help="QA JSONL to answer (default: data.test)")
    gg.add_argument("--out", type=Path, required=True, help="predictions JSONL to write")
    gg.add_argument("--limit", type=int, default=0, help="answer only the first N questions")
    gg.add_argument(
        "--unanswerable",
        action="store_true",
        help="also ask each question with its gold passages removed (abstention check)",
    )
    _config_args(gg)
    gp = ge.add_parser(
        "pairs", help="preference pairs from QA data and the model's own answers (for generator dpo)"
    )
    gp.add_argument(
        "--model", type=Path, default=None, help="adapter or model that answers (default: dpo.sft_adapter)"
    )
    gp.add_argument("--input", type=Path, default=None, help="QA JSONL (default: data.train)")
    gp.add_argument("--out", type=Path, required=True, help="pairs JSONL to write")
    gp.add_argument("--limit", type=int, default=0, help="use only the first N questions")
    _config_args(gp)
    _config_args(
        ge.add_parser("dpo", help="preference-tune a LoRA on top of the SFT adapter (DPO, IPO, RPO)")
    )
    e2 = sub.add_parser("e2e", help="joint retriever + generator tuning").add_subparsers(
        dest="cmd", required=True
    )
    _config_args(e2.add_parser("train", help="alternate generator and retriever updates in rounds"))
    rp = sub.add_parser("report", help="re-render a joint run's report, or compare two runs")
    rp.add_argument("run", type=Path, help="output folder of `ragtune e2e train`")
    rp.add_argument("run_b", type=Path, nargs="?", default=None, help="a second run to compare with")
    rp.add_argument("--out", type=Path, default=None, help="folder for compare.md and plots (with RUN_B)")
    ix = sub.add_parser("index", help="FAISS index over a corpus").add_subparsers(dest="cmd", required=True)
    _config_args(ix.add_parser("build", help="encode the corpus and build the configured FAISS index"))
    s = ix.add_parser("search", help="search a saved index with the queries of a queries.jsonl")
    s.add_argument("--index", type=Path, required=True, help="index folder written by `ragtune index build`")
    s.add_argument("--queries", type=Path, required=True, help="BEIR queries.jsonl")
    s.add_argument("--out", type=Path, required=True, help="TREC run file to write")
    s.add_argument("--k", type=int, default=100, help="documents per query")
    s.add_argument("--model", default=None, help="query encoder (default: the one recorded in the index)")
    hw = sub.add_parser(
        "hardware", help="this machine's CPU/GPU kind and what each precision setting resolves to"
    )
    hw.add_argument("--json", action="store_true", help="print the hardware record as JSON")
    return parser


def _hardware(args: argparse.Namespace) -> int:
    import json

    from ragtune.precision import PRECISIONS, describe, hardware

    if args.json:
        print(json.dumps(hardware("auto"), indent=2))
        return 0
    for setting in PRECISIONS:
        print(f"precision={setting:5s} -> {describe(hardware(setting))}")
    return 0


def _index(args: argparse.Namespace) -> int:
    from ragtune.retriever import index

    if args.cmd == "build":
        from ragtune.retriever.config import RetrieverConfig

        folder = index.build_index(load_config(args.config, args.overrides, RetrieverConfig))
        print(f"index written to {folder}")
    else:
        print(
            f"run written to {index.search_index(args.index, args.queries, args.out, k=args.k, model_name=args.model)}"
        )
    return 0


def _eval_retrieval(args: argparse.Namespace) -> int:
    from ragtune.data.io import load_qrels, read_run
    from ragtune.eval.ir import evaluate_run
    from ragtune.eval.report import markdown_table, write_metrics

    result = evaluate_run(read_run(args.run), load_qrels(args.qrels), ks=args.k)
    write_metrics(args.out, result.metrics, result.per_query, n_queries=result.n_queries)
    columns = [
        c for c in ("nDCG@10", "Recall@10", "Recall@100", "MRR@10", "MAP@100", "P@10") if c in result.metrics
    ]
    print(markdown_table({args.run.name: result.metrics}, columns or None, label="run"))
    print(f"{result.n_queries} queries; written to {args.out}")
    return 0


def _eval_wordnet(args: argparse.Namespace) -> int:
    from ragtune.eval.wordnet import install

    print(f"WordNet for METEOR's synonym stage: {install(args.dest, args.deb)}")
    return 0


def _eval_generation(args: argparse.Namespace) -> int:
    from ragtune.data.io import load_predictions
    from ragtune.eval.abstention import ABSTAIN_PHRASES, score_answer_rows
    from ragtune.eval.report import markdown_table, write_metrics

    rows = load_predictions(args.predictions)
    phrases = [*ABSTAIN_PHRASES, *args.abstain_text]
    metrics, per, extra = score_answer_rows(
        rows, args.meteor, args.bertscore, args.bertscore_layer, phrases, args.faithfulness_model
    )
    write_metrics(args.out, metrics, per, n_examples=len(rows), faithfulness_scorer="lexical", **extra)
    print(markdown_table({args.predictions.name: metrics}, label="predictions"))
    print(f"{len(rows)} predictions; written to {args.out}")
    return 0


def _data_convert(args: argparse.Namespace) -> int:
    from ragtune.data import converters

    if args.dataset == "pubmedqa":
        corpus, train, test = converters.pubmedqa(args.src)
        splits = {"train": train, "test": test}
    elif args.dataset == "squad":
        corpus, train, test, stats = converters.squad(
            args.src, args.passage_words, args.stride, args.test_fraction, args.seed, args.offset_tolerance
        )
        splits = {"train": train, "test": test}
        print(", ".join(f"{k} {v}" for k, v in stats.items()))
    else:
        corpus, examples = converters.halueval(args.src)
        splits = {"test": examples}
    converters.write_dataset(args.out, corpus, splits)
    sizes = ", ".join(f"{k}: {len(v)} questions" for k, v in splits.items())
    print(f"{len(corpus)} passages, {sizes}; written to {args.out}")
    return 0


def _data_audit(args: argparse.Namespace) -> int:
    from ragtune.data.audit import AuditSettings, audit

    try:
        settings = AuditSettings(near=args.near, max_words=args.max_words)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    report = audit(args.folder, args.out, settings)
    out = args.out or args.folder
    print((out / "audit.md").read_text())
    print(f"written to {out / 'audit.json'} and {out / 'audit.md'}")
    if args.strict and report["leakage_found"]:
        print("error: questions leak between splits (--strict)", file=sys.stderr)
        return 1
    return 0


def _data_synth_queries(args: argparse.Namespace) -> int:
    from ragtune.data.synth import SynthSettings, synth_queries

    fields = SynthSettings.__dataclass_fields__
    settings = SynthSettings(**{k: v for k, v in vars(args).items() if k in fields})
    stats = synth_queries(args.corpus, args.out, settings)
    print(
        f"{stats['generated']} questions generated for {stats['passages']} passages "
        f"({stats['questions_per_s']} per s): {stats['malformed']} malformed, {stats['duplicates']} "
        f"duplicates, {stats['near_duplicates']} near duplicates, {stats['filtered_out']} failed the "
        f"round trip ({args.filter}); {stats['kept']} kept; written to {args.out}"
    )
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from ragtune.data import io

    corpus = io.load_corpus(args.corpus) if args.corpus else None
    kind, path = args.kind, args.path
    if kind == "beir":
        d = io.load_beir(path, args.split)
        print(f"ok: {len(d.corpus)} passages, {len(d.queries)} queries, {len(d.qrels)} judged queries")
        return 0
    loaders = {
        "corpus": lambda: io.load_corpus(path),
        "queries": lambda: io.load_queries(path),
        "qrels": lambda: io.load_qrels(path, corpus=corpus),
        "triplets": lambda: io.load_triplets(path, corpus),
        "qa": lambda: io.load_qa(path, corpus),
        "run": lambda: io.read_run(path),
    }
    print(f"ok: {len(loaders[kind]())} {kind} records in {path}")
    return 0


def _retriever(args: argparse.Namespace) -> int:
    from ragtune.retriever.config import RetrieverConfig

    cfg = load_config(args.config, args.overrides, RetrieverConfig)
    if args.cmd == "eval":
        from ragtune.retriever.evaluate import evaluate

        evaluate(cfg)
    elif args.cmd == "train":
        from ragtune.retriever.train import train

        print(f"model written to {train(cfg) / 'model'}")
    elif args.cmd == "mine":
        from ragtune.retriever.mining import mine

        print(f"triplets written to {mine(cfg)}")
    elif args.cmd == "score-triplets":
        from ragtune.retriever.distill import score_triplets

        print(f"scored triplets written to {score_triplets(cfg)}")
    elif args.cmd == "pretrain":
        from ragtune.retriever.pretrain import pretrain

        print(f"model written to {pretrain(cfg) / 'model'}")
    return 0


def _reranker(args: argparse.Namespace) -> int:
    from ragtune.reranker.config import RerankerConfig

    cfg = load_config(args.config, args.overrides, RerankerConfig)
    if args.cmd == "train":
        from ragtune.reranker.train import train

        print(f"model written to {train(cfg) / 'model'}")
    else:
        from ragtune.reranker.rerank import rerank

        print(f"reranked run written to {rerank(cfg, args.run, args.out, args.model)}")
    return 0


def _faithfulness(args: argparse.Namespace) -> int:
    if args.cmd == "train":
        from ragtune.checker.config import CheckerConfig
        from ragtune.checker.train import train

        print(
            f"checker written to {train(load_config(args.config, args.overrides, CheckerConfig)) / 'model'}"
        )
        return 0
    from ragtune.checker.score import score_file

    summary = score_file(
        args.predictions,
        args.out,
        args.model,
        batch_size=args.batch_size,
        precision=args.precision,
        progress=True,
    )
    print(
        f"{summary['n']} answers, mean model_faithfulness {summary['model_faithfulness']:.4f}; written to {args.out}"
    )
    return 0


def _generator(args: argparse.Namespace) -> int:
    from ragtune.generator.config import GeneratorConfig

    cfg = load_config(args.config, args.overrides, GeneratorConfig)
    if args.cmd == "train":
        from ragtune.generator.model import output_folder
        from ragtune.generator.train import train

        folder = train(cfg) / output_folder(cfg.peft.method)
        print(f"written to {folder}")
    elif args.cmd == "dpo":
        from ragtune.generator.dpo import train_dpo

        print(f"written to {train_dpo(cfg) / 'adapter'}")
    elif args.cmd == "pairs":
        from ragtune.generator.pairs import build_pairs

        stats = build_pairs(cfg, args.model, args.input, args.out, args.limit)
        print(f"{stats['pairs']} pairs written to {args.out} (kinds: {stats['kinds']})")
    else:
        from ragtune.generator.generate import generate

        stats = generate(cfg, args.model, args.input, args.out, args.limit, args.unanswerable)
        print(
            f"{stats['examples']} predictions written to {args.out} "
            f"({stats['tokens']} tokens at {stats['tokens_per_s']:.1f} tokens/s)"
        )
    return 0


def _e2e(args: argparse.Namespace) -> int:
    from ragtune.e2e.config import E2EConfig
    from ragtune.e2e.train import train

    out = train(load_config(args.config, args.overrides, E2EConfig))
    print((out / "report.md").read_text())
    print(f"written to {out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from ragtune.eval.report import compare_run_reports, write_run_report

    if args.run_b is None:
        path = write_run_report(args.run)
        print(path.read_text())
        print(f"written to {path}")
    else:
        print(compare_run_reports(args.run, args.run_b, args.out))
        if args.out is not None:
            print(f"written to {args.out / 'compare.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ragtune`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    from ragtune.allocator import bound_primitive_caches, keep_freed_memory

    keep_freed_memory()  # before any tensor work: freed activations are reused, not page-faulted in again
    bound_primitive_caches()  # and a batch of a new shape does not leave its primitives behind
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it logs every CPU variant it tries
    handlers = {
        ("eval", "retrieval"): _eval_retrieval,
        ("eval", "generation"): _eval_generation,
        ("eval", "wordnet"): _eval_wordnet,
        ("data", "convert"): _data_convert,
        ("data", "check"): _data_check,
        ("data", "audit"): _data_audit,
        ("data", "synth-queries"): _data_synth_queries,
    }
    groups = {
        "retriever": _retriever,
        "reranker": _reranker,
        "faithfulness": _faithfulness,
        "index": _index,
        "generator": _generator,
        "e2e": _e2e,
        "report": _report,
        "hardware": _hardware,
    }
    try:
        if args.group in groups:
            return groups[args.group](args)
        return handlers[(args.group, args.cmd)](args)
    except (UserError, FileNotFoundError) as exc:  # bad config or data: one line; a bug keeps its traceback
        print(f"ragtune: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
