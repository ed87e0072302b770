"""Multi-process training on ``torch.distributed``, as launched by ``torchrun`` or ``accelerate launch``.

A trainer calls :func:`setup` first: when the launcher set ``WORLD_SIZE`` > 1 it joins the process
group (NCCL when CUDA is available, gloo on CPU), otherwise everything here is a no-op and the
trainer runs as one process. The scheme, identical for the retriever and the generator:

- Every process draws the same global batch (batch order is a pure function of seed and epoch) and
  works on its contiguous :func:`shard` of it, so the global batch, the learning-rate schedule and
  the checkpoints do not depend on the number of processes: a checkpoint written by N processes
  resumes under M.
- Each process back-propagates its share of the global loss (a sum over its examples divided by a
  global count), then :func:`sum_gradients` all-reduces the gradients, so every replica takes the
  optimiser step of the one-process run on the same global batch.
- Contrastive training gathers the embeddings of all processes with :func:`gather_rows`, whose
  backward pass sends each process the gradient of its own rows (``torch.distributed.nn``), so
  in-batch negatives span the global batch and their gradients flow back to the process that
  encoded them.
- Only the main process (rank 0) writes files; the others wait at :func:`barrier`.

Why not ``DistributedDataParallel``'s wrapper: a contrastive step runs several forward passes per
backward (queries, passages, and GradCache's replayed chunks), which DDP's reducer does not allow
without ``static_graph``; all-reducing after the backward is the same synchronisation, without the
overlap of communication and computation that DDP's buckets give on GPUs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def launched() -> bool:
    """True when a launcher asked for more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup() -> None:
    """Join the process group when launched with several processes (idempotent)."""
    if not launched() or dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def device() -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def barrier() -> None:
    if active():
        dist.barrier()


def shard_bounds(n: int, world: int | None = None, rank_: int | None = None) -> tuple[int, int]:
    """``[start, end)`` of this process's contiguous share of ``n`` items (sizes differ by at most 1)."""
    world = world_size() if world is None else world
    rank_ = rank() if rank_ is None else rank_
    base, extra = divmod(n, world)
    start = rank_ * base + min(rank_, extra)
    return start, start + base + (1 if rank_ < extra else 0)


def shard(items: Sequence[T]) -> Sequence[T]:
    """This process's contiguous share of ``items`` (all of them in a one-process run)."""
    start, end = shard_bounds(len(items))
    return items[start:end]


def gather_rows(local: torch.Tensor, total: int) -> torch.Tensor:
    """Concatenate every process's ``local`` rows (``[n_r, ...]``, the shards of ``total`` rows in
    rank order) into ``[total, ...]``, with gradients flowing back to each process's own rows."""
    if not active():
        return local
    from torch.distributed.nn.functional import all_gather

    sizes = [shard_bounds(total, world_size(), r) for r in range(world_size())]
    longest = max(end - start for start, end in sizes)
    padded = torch.nn.functional.pad(local, (0,) * (2 * (local.dim() - 1)) + (0, longest - len(local)))
    parts = all_gather(padded)
    return torch.cat([part[: end - start] for part, (start, end) in zip(parts, sizes, strict=True)])


def sum_gradients(params: Sequence[torch.nn.Parameter]) -> None:
    """All-reduce (sum) the gradients of ``params`` over the processes, in one flat buffer."""
    if not active():
        return
    params = [p for p in params if p.requires_grad]
    # A parameter may have a gradient on some processes only (a branch no example of this shard
    # reached): it gets zeros where it has none, and stays without one where no process has one,
    # as in a one-process run (AdamW skips parameters without a gradient).
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
    dist.all_reduce(has)
    for p, n in zip(params, has.tolist(), strict=True):
        if n > 0 and p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def sum_value(value: float | int) -> float:
    """The sum of a number over the processes."""
    if not active():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device())
    dist.all_reduce(t)
    return float(t.item())


def from_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on the main process only and hand its (picklable) result to every process; an
    exception raised there is raised on every process (none is left waiting)."""
    if not active():
        return fn()
    box: list[Any] = [None]
    if is_main():
        try:
            box[0] = ("ok", fn())
        except Exception as err:  # re-raised below, on every process
            box[0] = ("error", err)
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise value
    return value


def gather_objects(items: list[T]) -> list[T]:
    """Concatenate every process's list in rank order (each process gets the whole list)."""
    if not active():
        return items
    boxes: list[Any] = [None] * world_size()
    dist.all_gather_object(boxes, items)
    return [x for box in boxes for x in box]


def shard_groups(group: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """This process's micro-batches of one optimiser step: its contiguous shard of the step's
    examples (``group``: the step's micro-batches of example indices), cut into ``batch_size``."""
    if world_size() == 1:
        return [list(b) for b in group]
    mine = list(shard([i for b in group for i in b]))
    return [mine[s : s + batch_size] for s in range(0, len(mine), batch_size)]
