"""Memory left behind by batches of new shapes: generator SFT steps with oneDNN's and ideep's
per-shape primitive caches at the libraries' capacity (1024 each) and at ragtune's
(:func:`ragtune.allocator.bound_primitive_caches`).

    python benchmarks/primitive_cache/run.py [--steps 24] [--repeats 3] [--precision auto]

Each variant is a child process that trains the packaged SmolLM2-135M with the LoRA of
``configs/e2e/covidqa.yaml`` (r16 on every projection, batch 2) for ``--steps`` steps on random
token ids, the last 48 of each row labelled; the padded width of each step is drawn (seeded) from
300-640 tokens, as length-grouped batches of real data vary, or is 640 every step
(``fixed_width``: the floor, one shape). Resident memory is read after every step; tokens/s counts
the steps after the first. The variants run in turn ``--repeats`` times (speed on a shared 2-core
machine varies by ~10% between runs): resident memory is the first run's, tokens/s the mean of all
runs, each run's kept. Writes ``benchmarks/results/primitive_cache.json`` with the capacities
each child ran under.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402
from ragtune.allocator import PRIMITIVE_CACHE_CAPACITY  # noqa: E402

SEED = 0
ANSWER_TOKENS = 48
LIBRARY_DEFAULTS = {var: "1024" for var in PRIMITIVE_CACHE_CAPACITY}  # ideep's and oneDNN's own
# (name, environment the child starts with, width mode); "ragtune" leaves the variables unset and
# lets the child's bound_primitive_caches() set them after torch is imported, as the CLI does
VARIANTS = (
    ("library_defaults", LIBRARY_DEFAULTS, "vary"),
    ("ragtune", {}, "vary"),
    ("fixed_width", LIBRARY_DEFAULTS, "fixed"),
)


def rss_mb() -> float:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024


def run_child(steps: int, widths: str, precision: str) -> dict:
    import torch

    from ragtune.allocator import bound_primitive_caches, keep_freed_memory
    from ragtune.config import load_config
    from ragtune.e2e.config import E2EConfig
    from ragtune.generator.model import apply_peft, load_base
    from ragtune.generator.scoring import backward_answer_loss
    from ragtune.precision import store_frozen_linears

    keep_freed_memory()
    capacities = bound_primitive_caches()
    torch.manual_seed(SEED)
    cfg = load_config(ROOT / "configs/e2e/covidqa.yaml", [f"precision={precision}"], E2EConfig)
    g = cfg.generator
    model = apply_peft(load_base(g.model), g.peft)
    store_frozen_linears(model, cfg.precision)
    model.train()
    rng = random.Random(SEED)
    rss, tokens, started = [], 0, 0.0
    for step in range(steps):
        width = g.model.max_length if widths == "fixed" else rng.randint(300, g.model.max_length)
        ids = torch.randint(100, 40000, (g.batch_size, width), generator=torch.Generator().manual_seed(step))
        labels = ids.clone()
        labels[:, : width - ANSWER_TOKENS] = -100
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
        if step == 1:
            started, tokens = time.perf_counter(), 0
        _, n = backward_answer_loss(model, [batch], cfg.precision)
        model.zero_grad(set_to_none=True)
        tokens += n
        rss.append(round(rss_mb(), 1))
    return {
        "capacities": capacities,
        "rss_mb_per_step": rss,
        "rss_after_first_step_mb": rss[0],
        "rss_end_mb": rss[-1],
        "growth_mb": round(rss[-1] - rss[0], 1),
        "growth_mb_per_step": round((rss[-1] - rss[0]) / (steps - 1), 1),
        "tokens_per_s": round(tokens / (time.perf_counter() - started), 1),
        "steps": steps,
        "widths": widths,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--child", choices=["vary", "fixed"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_child(args.steps, args.child, args.precision)), flush=True)
        return
    variants: dict[str, dict] = {}
    for repeat in range(args.repeats):
        for name, env, widths in VARIANTS:
            child_env = {k: v for k, v in os.environ.items() if k not in PRIMITIVE_CACHE_CAPACITY}
            child_env.update(env, HF_HUB_OFFLINE="1")
            cmd = [sys.executable, __file__, "--child", widths, "--steps", str(args.steps)]
            cmd += ["--precision", args.precision]
            out = subprocess.run(cmd, env=child_env, capture_output=True, text=True, check=True)
            run = json.loads(out.stdout.strip().splitlines()[-1])
            v = variants.setdefault(name, {**run, "tokens_per_s_runs": []})
            v["tokens_per_s_runs"].append(run["tokens_per_s"])
            v["tokens_per_s"] = round(sum(v["tokens_per_s_runs"]) / len(v["tokens_per_s_runs"]), 1)
            print(
                f"run {repeat + 1}/{args.repeats}",
                name,
                run["capacities"],
                run["rss_after_first_step_mb"],
                "->",
                run["rss_end_mb"],
                "MB,",
                run["tokens_per_s"],
                "tokens/s",
                flush=True,
            )
    command = (
        f"python benchmarks/primitive_cache/run.py --steps {args.steps} --repeats {args.repeats}"
        f" --precision {args.precision}"
    )
    path = write_result("primitive_cache", command, SEED, variants, precision=args.precision)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
