"""``TrainerView``: what a training method may use of the trainer that runs it.

The trainer (``genrec_core.recommender.trainer.Trainer``) satisfies this protocol; methods type
their ``trainer`` argument with it, so a method depends on this short list and not on the loop's
module (no import circle), and a test can hand a method any object with these members.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from genrec_core.recommender.data import ExampleArrays


class TrainerView(Protocol):
    model: nn.Module  # the recommender (unwrapped)
    train_model: nn.Module  # what training forward passes run through (the DDP wrapper under torchrun)
    params: Any  # RecommenderParams of the run
    device: str
    seed: int
    state: Any  # TrainState: step, epoch, total_steps
    train_examples: ExampleArrays
    valid_examples: ExampleArrays  # the validation users actually ranked (a seeded sample when large)
    reports_dir: Path
    world: int  # processes (torchrun); 1 without
    loss_scale: float  # this rank's share of the global batch x world (1.0 in one process)
    pack_examples: int  # examples packed per sequence (0: the trainer does not pack)

    @property
    def steps_per_epoch(self) -> int: ...

    @property
    def linked_examples(self) -> np.ndarray | None:
        """[E] the packed sampler's ``packing.linked_examples`` of the training split (None unpacked)."""

    @property
    def best_path(self) -> Path: ...

    def local_forward(self) -> contextlib.AbstractContextManager[None]: ...

    def set_item_tokens(self, item_tokens: torch.Tensor) -> None: ...
