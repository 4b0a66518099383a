"""Data-parallel training under ``torchrun`` (``recommender.processes``; README "Distributed training").

torchrun starts one process per device and sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; a
plain ``python`` run has none of them and is world 1, where every helper here is a no-op, so the
single-process trainer runs exactly as before. The trainer keeps the seeded sampler global (every
rank draws the same global batches) and each rank trains on its contiguous part of each batch
(``shard_slice``); DistributedDataParallel averages the gradients.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import numpy as np
import torch

#: validation runs on rank 0 alone while the others wait in a collective: allow long ones
TIMEOUT = datetime.timedelta(hours=6)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0: the one process that writes checkpoints and reports."""
    return rank() == 0


def active() -> bool:
    """A process group of more than one process is up."""
    return world_size() > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()


def device_for(device: str) -> str:
    """Under torchrun on CUDA each process takes its own GPU (``cuda:LOCAL_RANK``)."""
    if world_size() > 1 and torch.device(device).type == "cuda":
        return f"cuda:{local_rank()}"
    return device


def init(device: str) -> None:
    """Join torchrun's process group (gloo on a CPU, nccl on CUDA) when WORLD_SIZE > 1; idempotent."""
    if world_size() <= 1 or active():
        return
    if not torch.distributed.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(local_rank())
    torch.distributed.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)


def barrier() -> None:
    if active():
        torch.distributed.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (pickled; e.g. validation metrics)."""
    if not active():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _all_reduce(value: float, op: Any, device: str) -> float:
    """One float reduced over the ranks (on ``device``: nccl reduces CUDA tensors only)."""
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t, op=op)
    return float(t.item())


def all_reduce_max(value: float, device: str = "cpu") -> float:
    """The largest ``value`` over the ranks (a stop flag: every rank stops at the same step)."""
    return _all_reduce(value, torch.distributed.ReduceOp.MAX, device) if active() else float(value)


def all_reduce_sum(value: float, device: str = "cpu") -> float:
    return _all_reduce(value, torch.distributed.ReduceOp.SUM, device) if active() else float(value)


def shard_slice(n: int, rank_: int, world: int, starts: np.ndarray | None = None) -> slice:
    """This rank's contiguous positions of a global batch of ``n`` examples: ``np.array_split``
    of the positions (sizes differ by at most one), or of the chunks opening at ``starts``
    (sorted positions, 0 first) so that no packed chunk is cut. A rank may get nothing."""
    if world <= 1:
        return slice(0, n)
    if starts is None:
        bounds = np.arange(n + 1)
    else:
        bounds = np.append(np.asarray(starts, dtype=np.int64), n)
    groups = np.array_split(np.arange(bounds.shape[0] - 1), world)[rank_]
    if groups.size == 0:
        return slice(n, n)
    return slice(int(bounds[groups[0]]), int(bounds[groups[-1] + 1]))
