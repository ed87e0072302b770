"""Metric tables and metric files: what every command prints and writes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ragtune.data.io import atomic_write_text
from ragtune.eval.significance import paired_tests


def markdown_table(
    rows: Mapping[str, Mapping[str, float]],
    columns: Sequence[str] | None = None,
    digits: int = 4,
    label: str = "",
) -> str:
    """A Markdown table: one row per key of ``rows``, one column per metric (``columns`` or all)."""
    if columns is None:
        columns = list(dict.fromkeys(c for r in rows.values() for c in r))
    head = f"| {label} | " + " | ".join(columns) + " |"
    sep = "| --- " * (len(columns) + 1) + "|"
    body = []
    for name, values in rows.items():
        cells = [
            f"{values[c]:.{digits}f}" if isinstance(values.get(c), (int, float)) else "" for c in columns
        ]
        body.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *body])


def write_metrics(
    path: str | Path, metrics: Mapping[str, float], per_item: Mapping[str, Any] | None = None, **extra: Any
) -> Path:
    """Write ``{"metrics": ..., "per_query": ..., ...extra}`` as JSON, atomically."""
    doc: dict[str, Any] = {"metrics": dict(metrics)}
    if per_item is not None:
        doc["per_query"] = per_item
    doc.update(extra)
    return atomic_write_text(Path(path), json.dumps(doc, indent=2) + "\n")


# ------------------------------------------------------------------------ joint-tuning reports

ROUND_COLUMNS = ("ROUGE-1", "ROUGE-2", "ROUGE-L", "EM", "F1", "faithfulness")
ERROR_COLUMNS = ("correct", "gold_not_retrieved", "retrieved_but_wrong", "correct_without_gold")


def round_columns(metrics: Mapping[str, float]) -> list[str]:
    """The columns of the per-round table: every Recall@k, MRR@10 and nDCG@10 (or their largest k
    below 10), then the answer metrics."""
    recall = sorted((k for k in metrics if k.startswith("Recall@")), key=lambda k: int(k.split("@")[1]))

    def at_most_10(prefix: str) -> list[str]:
        ks = sorted(int(k.split("@")[1]) for k in metrics if k.startswith(prefix + "@"))
        small = [k for k in ks if k <= 10]
        return [f"{prefix}@{(small or ks)[-1]}"] if ks else []

    return [*recall, *at_most_10("MRR"), *at_most_10("nDCG"), *(c for c in ROUND_COLUMNS if c in metrics)]


def _stage_details(stats: Mapping[str, Any]) -> str:
    skip = {"seconds", "peak_rss_mb", "loss_first", "loss_last", "loss_mean"}
    parts = []
    for k, v in stats.items():
        if k in skip:
            continue
        parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts)


def load_run_report(run_dir: str | Path) -> dict[str, Any]:
    """``report.json`` of a joint-tuning run, rebuilt from its ``state.json`` (or checkpoint) when the
    report is missing."""
    run_dir = Path(run_dir)
    for path in (run_dir / "state.json", run_dir / "checkpoint" / "state.json"):
        if path.exists():
            state = json.loads(path.read_text())
            break
    else:
        if (run_dir / "report.json").exists():
            return json.loads((run_dir / "report.json").read_text())
        raise FileNotFoundError(f"{run_dir}: no state.json or report.json of a joint-tuning run")
    rounds = [state["rounds"][k] for k in sorted(state["rounds"], key=int)]
    done = [r for r in rounds if "metrics" in r]
    stages = [s for r in rounds for s in r["stages"].values()]
    hw = run_dir / "hardware.json"
    return {
        "hardware": json.loads(hw.read_text()) if hw.exists() else None,
        "run": str(run_dir),
        "rounds": rounds,
        "final": done[-1]["metrics"] if done else {},
        "final_round": done[-1]["round"] if done else None,
        "index_version": rounds[-1].get("index_version") if rounds else None,
        "wall_s": sum(s["seconds"] for s in stages),
        "peak_rss_mb": max((s["peak_rss_mb"] for s in stages), default=None),
    }


def plot_rounds(reports: Mapping[str, Mapping[str, Any]], folder: str | Path) -> list[Path]:
    """``retrieval.png`` and ``answers.png``: each metric across rounds, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, pick in (
        ("retrieval", lambda c: c.split("@")[0] in ("Recall", "MRR", "nDCG")),
        ("answers", lambda c: c in ROUND_COLUMNS),
    ):
        fig, ax = plt.subplots(figsize=(7, 4))
        for label, report in reports.items():
            rounds = [r for r in report["rounds"] if "metrics" in r]
            if not rounds:
                continue
            columns = [c for c in round_columns(rounds[-1]["metrics"]) if pick(c)]
            for c in columns:
                prefix = f"{label}: " if len(reports) > 1 else ""
                ax.plot(
                    [r["round"] for r in rounds],
                    [r["metrics"][c] for r in rounds],
                    marker="o",
                    label=prefix + c,
                )
        ax.set_xlabel("round")
        ax.set_ylabel("score")
        ax.set_title(f"{name} metrics by round (held-out questions)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = folder / f"{name}.png"
        tmp = path.with_name(f".{path.name}.tmp.png")
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        tmp.replace(path)
        written.append(path)
    return written


def render_run_report(report: Mapping[str, Any]) -> str:
    """The Markdown of one joint-tuning run: metrics and error split per round, stage timings."""
    rounds = [r for r in report["rounds"] if "metrics" in r]
    lines = [f"# Joint RAG tuning: {report['run']}", ""]
    hw = report.get("hardware")
    if hw:
        native = "yes" if hw.get("native_bf16") else "no"
        lines += [
            f"Precision {hw.get('precision')} ({hw.get('precision_setting')}) on {hw.get('cpu')}, "
            f"{hw.get('cpu_capability')}, native bf16: {native}, {hw.get('threads')} threads"
            + (f", GPU {hw['gpu']}" if hw.get("gpu") else ""),
            "",
        ]
    if rounds:
        columns = round_columns(rounds[-1]["metrics"])
        table = {f"round {r['round']}": r["metrics"] for r in rounds}
        lines += ["## Held-out metrics per round", "", markdown_table(table, columns, label="after"), ""]
        errors = {f"round {r['round']}": r["errors"] for r in rounds}
        lines += [
            "## Error split per round (answer right = ROUGE-L at or above eval.correct_rouge_l)",
            "",
            markdown_table(errors, list(ERROR_COLUMNS), digits=0, label="after"),
            "",
        ]
    lines += [
        "## Stages",
        "",
        "| round | stage | seconds | loss (first -> last) | details |",
        "| --- " * 5 + "|",
    ]
    for r in report["rounds"]:
        for stage, stats in r["stages"].items():
            loss = f"{stats['loss_first']:.4f} -> {stats['loss_last']:.4f}" if "loss_first" in stats else ""
            lines.append(
                f"| {r['round']} | {stage} | {stats['seconds']:.1f} | {loss} | {_stage_details(stats)} |"
            )
    lines += [
        "",
        f"Index version at the end: {report.get('index_version')}; wall time {report['wall_s']:.0f} s; "
        f"peak RSS {report['peak_rss_mb'] or 0:.0f} MB.",
        "",
        "![retrieval metrics by round](plots/retrieval.png)",
        "![answer metrics by round](plots/answers.png)",
        "",
    ]
    return "\n".join(lines)


def write_run_report(run_dir: str | Path) -> Path:
    """(Re-)write ``report.json``, ``report.md`` and ``plots/`` of a joint-tuning run; returns the
    Markdown path."""
    run_dir = Path(run_dir)
    report = load_run_report(run_dir)
    atomic_write_text(run_dir / "report.json", json.dumps(report, indent=2) + "\n")
    plot_rounds({run_dir.name: report}, run_dir / "plots")
    return atomic_write_text(run_dir / "report.md", render_run_report(report))


def question_metrics(run_dir: str | Path, round_: int | None) -> dict[str, dict[str, float]]:
    """Each evaluated question's metrics in a round of a joint run (``rounds/round_<r>/predictions.jsonl``;
    empty when the run predates per-question metrics or the round was not evaluated)."""
    path = Path(run_dir) / "rounds" / f"round_{round_}" / "predictions.jsonl"
    if round_ is None or not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {str(r["id"]): r["metrics"] for r in rows if isinstance(r.get("metrics"), dict)}


def significance_table(tests: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown of :func:`ragtune.eval.significance.paired_tests` results, one row per metric."""
    if not tests:
        return "No paired test: the runs share no per-question metrics (rerun them with this version)."
    n = {t["n"] for t in tests.values()}
    lines = [
        f"Paired over the questions both runs answered (n = {', '.join(map(str, sorted(n)))}): B - A, "
        "paired-bootstrap 95% CI, randomisation-test p-value.",
        "",
        "| metric | B - A | 95% CI | p |",
        "| --- | --- | --- | --- |",
    ]
    for m, t in tests.items():
        lo, hi = t["ci95"]
        lines.append(f"| {m} | {t['delta']:+.4f} | [{lo:+.4f}, {hi:+.4f}] | {t['p_value']:.4f} |")
    return "\n".join(lines)


def compare_run_reports(run_a: str | Path, run_b: str | Path, out: str | Path | None = None) -> str:
    """The final-round metrics of two runs side by side with B - A; with ``out``, also writes
    ``compare.md`` and the overlaid plots there. Returns the Markdown."""
    a, b = load_run_report(run_a), load_run_report(run_b)
    name_a, name_b = f"A: {Path(run_a).name}", f"B: {Path(run_b).name}"
    if name_a[3:] == name_b[3:]:
        name_a, name_b = f"A: {run_a}", f"B: {run_b}"
    columns = [c for c in round_columns(a["final"]) if c in b["final"]]
    delta = {c: b["final"][c] - a["final"][c] for c in columns}
    rows = {name_a: a["final"], name_b: b["final"], "B - A": delta}
    errors = {}
    for name, rep in ((name_a, a), (name_b, b)):
        done = [r for r in rep["rounds"] if "errors" in r]
        if done:
            errors[name] = done[-1]["errors"]
    tests = paired_tests(
        question_metrics(run_a, a["final_round"]), question_metrics(run_b, b["final_round"]), columns
    )
    text = "\n".join(
        [
            f"# {name_a} vs {name_b} (final round: {a['final_round']} vs {b['final_round']})",
            "",
            markdown_table(rows, columns, label="run"),
            "",
            significance_table(tests),
            "",
            markdown_table(errors, list(ERROR_COLUMNS), digits=0, label="errors"),
            "",
            f"wall time: {a['wall_s']:.0f} s vs {b['wall_s']:.0f} s; peak RSS: "
            f"{a['peak_rss_mb'] or 0:.0f} MB vs {b['peak_rss_mb'] or 0:.0f} MB",
            "",
        ]
    )
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        plot_rounds({name_a: a, name_b: b}, out)
        atomic_write_text(out / "compare.md", text + "\n![](retrieval.png)\n![](answers.png)\n")
        doc = {"a": str(run_a), "b": str(run_b), "final": {"a": a["final"], "b": b["final"]}, "paired": tests}
        atomic_write_text(out / "compare.json", json.dumps(doc, indent=2) + "\n")
    return text
