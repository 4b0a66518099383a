"""Optimiser helpers every training method builds its optimiser and schedule from: AdamW's fused
kernel where torch has it, and the warm-up + cosine learning-rate multiplier. Kept apart from the
training loop (``trainer.py``) so methods depend on these, not on the loop."""

from __future__ import annotations

import math
from typing import Any

import torch


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float = 0.0, schedule: str = "cosine"):
    """LR multiplier for the optimiser step with index ``step`` (0-based).

    Linear warm-up to 1 over ``warmup_steps``; then ``cosine`` decays to ``min_ratio`` exactly on
    the last step of the run (index ``total_steps - 1``), so a run that is given its real length
    spends its last steps at the floor instead of stopping halfway down the curve; ``constant``
    stays at 1. ``total_steps`` is the run's planned length (``epochs`` x batches per epoch):
    early stopping can end a run before the floor, which is why short CPU runs set ``epochs`` to
    the length they actually train (params.yaml).
    """
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be cosine or constant, got {schedule!r}")

    def fn(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        span = max(1, total_steps - 1 - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return fn


def fused_adamw_kwargs(device: str) -> dict[str, Any]:
    """AdamW's fused kernel (one pass over all parameters instead of a loop of small ops), on
    CPU and CUDA where this torch build has it; the plain loop elsewhere."""
    kind = torch.device(device).type
    if kind in ("cpu", "cuda"):
        return {"fused": True}
    return {}
