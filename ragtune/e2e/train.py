"""Joint RAG tuning in rounds: ``train(cfg) -> output folder``.

Round 0 evaluates the starting retriever and generator. Every round r >= 1 then runs these stages:

1. ``retrieve``: the current retriever and index give each training question its top passages.
2. ``generator``: LoRA (any peft method) SFT on question + RAFT contexts -> answer; the distractors
   are the current retriever's top non-gold passages, minus those the generator flagged as likely
   unlabelled positives in earlier rounds (the negatives cache).
3. ``retriever``: LM-supervised retrieval (REPLUG LSR, Shi et al. 2023; RA-DIT, Lin et al. 2023) or
   perplexity distillation (Atlas, Izacard et al. 2022): the updated generator scores
   ``log p(answer | question, passage)`` for each of the K candidates, and the retriever learns
   ``softmax(score / gamma)`` towards ``softmax(log p / tau)`` (:mod:`ragtune.e2e.feedback`). The
   same scores, with the gold passage's and the no-passage ones, flag retrieved non-gold passages
   that help the generator nearly as much as the gold one (generator-checked negatives).
4. ``refresh`` (``retriever.mode=both``): a probe sample measures drift; the index is re-encoded on
   the schedule or past a threshold, and its version goes up (:mod:`ragtune.e2e.refresh`).
5. ``eval``: Recall@k / MRR / nDCG of the held-out questions, then answers generated from the top-k
   passages: ROUGE-1/2/L, EM/F1, faithfulness, and each wrong answer's cause ("gold passage not
   retrieved" or "retrieved but answered wrong").

After every stage the whole state (retriever, adapter, index and its version, negatives cache,
metrics so far) is written atomically to ``checkpoint/``. Every stage seeds its RNGs from
``(seed, round, stage)`` and builds its optimiser afresh, so running the same command after a kill
redoes the interrupted stage exactly and ends with the metrics of an unbroken run.

Outputs in ``cfg.output_dir``: ``query_encoder/`` and ``passage_encoder/`` (sentence-transformers
folders), ``adapter/`` (peft), ``index/`` (FAISS + ids), ``report.json``, ``report.md``,
``plots/*.png``, ``rounds/round_<r>/predictions.jsonl``, ``checkpoint/`` and ``config.yaml``.
"""

from __future__ import annotations

import json
import logging
import resource
import shutil
import time
from pathlib import Path
from typing import Any

from ragtune import distributed as dist
from ragtune.allocator import release_freed_memory
from ragtune.data.io import atomic_write_text, save_dir_atomically
from ragtune.e2e import stages
from ragtune.e2e.config import E2EConfig
from ragtune.e2e.stages import STAGES, Round, stage_plan
from ragtune.e2e.state import Data, Generator, LoopState, Retriever, save_checkpoint
from ragtune.eval.report import write_run_report
from ragtune.training import log_scalars, seed_everything, start_run, tensorboard_writer

log = logging.getLogger(__name__)

RUN_STAGE = {
    "retrieve": stages.retrieve,
    "generator": stages.tune_generator,
    "retriever": stages.tune_retriever,
    "refresh": stages.refresh,
}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def seed_stage(seed: int, round_: int, stage: str) -> None:
    """Seed Python, NumPy and torch from ``(seed, round, stage)``: a resumed stage repeats itself."""
    seed_everything((seed * 1_000_003 + round_ * 101 + STAGES.index(stage)) % (2**31))


def train(cfg: E2EConfig) -> Path:
    """Run the rounds as configured (resuming from ``checkpoint/``); returns ``cfg.output_dir``.

    Under ``torchrun`` each process scores, trains on and answers its shard of every stage's
    questions (gradients summed over processes, see :mod:`ragtune.distributed`); retrieval, index
    refreshes and metrics are computed by every process alike; only the main process writes."""
    dist.setup()
    if cfg.eval.checker:  # a wrong path fails now, not after the first round's training
        from ragtune.checker.score import checker_folder

        checker_folder(cfg.eval.checker)
    out = Path(cfg.output_dir)
    ckpt = dist.from_main(lambda: start_run(cfg, out))
    data = Data(cfg)
    if (ckpt / "state.json").exists():
        state = LoopState.load(ckpt)
        retriever, generator = Retriever(cfg, data, ckpt), Generator(cfg, ckpt / "adapter")
        log.info("resuming after round %d stage %s", *state.done)
    else:
        seed_everything(cfg.seed)
        state = LoopState()
        retriever, generator = Retriever(cfg, data), Generator(cfg)
    writer = tensorboard_writer(cfg, out)  # the rounds' metrics, eval/<metric> by round
    plan = stage_plan(cfg.rounds, cfg.eval.rounds)
    start = 0 if state.done is None else plan.index(tuple(state.done)) + 1
    for round_, stage in plan[start:]:
        seed_stage(cfg.seed, round_, stage)
        started = time.perf_counter()
        record = state.rounds.setdefault(str(round_), {"round": round_, "stages": {}})
        r = Round(round_, cfg, data, retriever, generator, state.hits, state.flagged, out)
        if stage == "eval":
            result = stages.evaluate(r)
            record["metrics"], record["errors"] = result["metrics"], result["errors"]
            stats: dict[str, Any] = {"generate_tokens_per_s": result["generate_tokens_per_s"]}
            log.info("round %d: %s", round_, {k: round(v, 4) for k, v in result["metrics"].items()})
            if writer is not None:
                log_scalars(writer, {"eval": result["metrics"]}, round_)
        else:
            stats = RUN_STAGE[stage](r)
        stats.update(seconds=time.perf_counter() - started, peak_rss_mb=peak_rss_mb())
        release_freed_memory()  # the next stage allocates differently: start it from a lean heap
        record["stages"][stage] = stats
        record["index_version"] = retriever.version
        record["wall_s"] = sum(s["seconds"] for s in record["stages"].values())
        state.done = [round_, stage]
        if dist.is_main():
            save_checkpoint(ckpt, state, retriever, generator)
        dist.barrier()
    if writer is not None:
        writer.close()
    if dist.is_main():
        _finish(cfg, out, ckpt, retriever)
        write_run_report(out)
    dist.barrier()
    return out


def _finish(cfg: E2EConfig, out: Path, ckpt: Path, retriever: Retriever) -> None:
    """Copy the final artifacts out of the checkpoint: encoders, adapter, index."""
    for name in ("query_encoder", "adapter", "index"):
        save_dir_atomically(
            out / name, lambda tmp, n=name: shutil.copytree(ckpt / n, tmp, dirs_exist_ok=True)
        )
    if cfg.retriever.mode == "both":
        save_dir_atomically(
            out / "passage_encoder",
            lambda tmp: shutil.copytree(ckpt / "query_encoder", tmp, dirs_exist_ok=True),
        )
    else:
        save_dir_atomically(out / "passage_encoder", lambda tmp: retriever.passage.save(str(tmp)))
    state = json.loads((ckpt / "state.json").read_text())
    atomic_write_text(out / "state.json", json.dumps({k: state[k] for k in ("done", "rounds")}, indent=1))
