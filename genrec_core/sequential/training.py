"""Glue that lets the generic ``Trainer`` and the default method train an item-ID model: a collate
and a loss (ranking is the model's own ``rank``: the top K of all item scores).

- ``ItemIdEncoder.collate`` gives the same ``Batch`` as the generative encoder, but
  ``input_ids`` [B, H] are item ids + 1 (0 = pad, right-padded) and ``labels`` [B, 1] the target
  item ids; the method then calls ``model(input_ids, attention_mask, labels)`` (scores [B, N])
  and the loss below.
- ``SequentialLoss``: ``ce`` = softmax cross-entropy over all N items; ``bce`` = the original
  SASRec's binary cross-entropy of the target against one negative sampled uniformly from the
  other N - 1 items (the original samples outside the user's whole sequence; here only the target
  is excluded). Negatives come from torch's global RNG, which ``last.pt`` saves, so a resumed run
  stays bit-identical.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genrec_core.errors import ParamError
from genrec_core.recommender.data import Batch, ExampleArrays, thin_histories
from genrec_core.recommender.losses import LossOutput

SEQUENTIAL_LOSSES = ("ce", "bce")


class ItemIdEncoder:
    """Examples -> item-id batches (``Batch`` with item ids where the T5 path has tokens)."""

    def __init__(self, num_items: int):
        self.num_items = int(num_items)

    def collate(
        self,
        examples: ExampleArrays,
        index: np.ndarray,
        tokenizer_index: torch.Tensor | None = None,
        history_dropout: float = 0.0,
        rng: np.random.Generator | None = None,
        keep: np.ndarray | None = None,
    ) -> Batch:
        """``history_dropout`` > 0 with ``rng``: training histories thinned as for the generative
        models (``ExampleArrays.padded_with_dropout``); or ``keep`` [B, H]: thinned to these
        padded positions (a mask drawn for a whole DDP batch, ``Method.collate_part``)."""
        index = np.asarray(index, dtype=np.int64)
        if keep is not None:
            history, lengths = thin_histories(*examples.padded(index), keep)
        else:
            history, lengths = examples.training_histories(index, history_dropout, rng)
        history_t = torch.from_numpy(history)
        targets_t = torch.from_numpy(examples.targets[index].astype(np.int64))
        return Batch(
            input_ids=history_t + 1,  # pad -1 -> 0
            attention_mask=(history_t >= 0).long(),
            labels=targets_t.unsqueeze(1),
            history=history_t,
            lengths=torch.from_numpy(lengths.astype(np.int64)),
            targets=targets_t,
            user_ids=torch.from_numpy(examples.user_ids[index].astype(np.int64)),
            example_index=torch.from_numpy(index),
            tokenizer_index=None,
        )


class SequentialLoss(nn.Module):
    """The ``LossStrategy`` interface the default method uses, over all-item scores [B, N]
    (terms per example: ``ce``, or ``bce`` = the positive's and the negative's binary CE)."""

    extra_forward_needed: ClassVar[bool] = False

    def __init__(self, name: str = "ce"):
        super().__init__()
        if name not in SEQUENTIAL_LOSSES:
            raise ParamError("recommender.loss", f"the sequential models train with {' or '.join(SEQUENTIAL_LOSSES)}, got {name!r}")
        self.name = name

    def on_step(self, step: int, total_steps: int) -> None:
        pass

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, batch: Batch, state: Any = None, extra_logits: Any = None) -> LossOutput:
        logits = logits.float()
        targets = batch.targets
        if self.name == "ce":
            # the scalar as it always was (a fused mean); the per-example values beside it
            per = F.cross_entropy(logits, targets, reduction="none")
            return LossOutput(F.cross_entropy(logits, targets), terms={"ce": per}, per_example=per)
        n = logits.shape[1]
        negatives = (targets + torch.randint(1, n, targets.shape, device=targets.device)) % n  # uniform over items != target
        pos = logits.gather(1, targets.unsqueeze(1)).squeeze(1)
        neg = logits.gather(1, negatives.unsqueeze(1)).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos)) + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg))
        per_pos = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos), reduction="none")
        per_neg = F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg), reduction="none")
        return LossOutput(loss, terms={"bce_positive": per_pos, "bce_negative": per_neg}, per_example=per_pos + per_neg)
