"""The one interface of every recommender model, and ranking a split with it.

Every model (the T5 ``GenerativeRecommender``, ``DecoderOnlyRecommender``, SASRec and GRU4Rec)
takes a collated ``Batch`` and implements:

- ``loss(batch)`` -> [B]: its own training objective per example (generative: the token-mean
  cross-entropy of the target's tokens and eos under teacher forcing; SASRec/GRU4Rec: the softmax
  cross-entropy over all items). A method may use it, or the logits of ``forward`` with a
  token-weighting strategy (``recommender.loss``) as the default method does;
- ``rank(batch, k)`` -> (items [B, k] int64, scores [B, k] float32), best first: generative
  models run beam search constrained to the trie of the item IDs set with ``set_items`` (-1 /
  -inf where fewer than k items exist), the item-ID models take the top k of all item scores;
- ``forward(input_ids, attention_mask, labels)``: teacher-forced logits (generative [B, L+1, V])
  or all-item scores ([B, N]).

``genrec_core.recommender.checkpoint.load_recommender`` rebuilds any of them from its ``best.pt``.
``rank_examples`` ranks a whole split in batches: validation (the trainer) and test (the evaluate
stage) use the same routine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from tqdm.auto import tqdm

from genrec_core.recommender.data import Batch, ExampleArrays, eval_batches
from genrec_core.recommender.model_spec import model_spec
from genrec_core.runtime import eval_mode


@runtime_checkable
class Recommender(Protocol):
    """What the trainer, the methods and the evaluate stage rely on (see the module docstring)."""

    def loss(self, batch: Batch) -> torch.Tensor: ...

    def rank(self, batch: Batch, k: int) -> tuple[torch.Tensor, torch.Tensor]: ...


def amp_dtype_for(device: str | torch.device, precision: str = "auto") -> torch.dtype | None:
    """Decoding's autocast dtype: bf16 on CUDA (unless ``precision`` is float32), full precision
    on a CPU whatever ``precision`` says (rankings stay those of the float32 weights)."""
    return torch.bfloat16 if torch.device(device).type == "cuda" and precision != "float32" else None


def train_amp_dtype_for(device: str | torch.device, precision: str = "auto") -> torch.dtype | None:
    """Training's autocast dtype (``recommender.precision``): auto = bf16 on CUDA, none elsewhere;
    bfloat16 = bf16 on any device (on a CPU with AMX or AVX512-BF16 the step runs ~1.6x faster;
    the weights and optimiser state stay float32); float32 = none."""
    if precision == "bfloat16":
        return torch.bfloat16
    return amp_dtype_for(device, precision)


def training_precision(params: Any) -> str:
    """``recommender.precision`` for a generative model; ``auto`` (float32 on a CPU) for the item-ID
    baselines (SASRec, GRU4Rec): they train in float32 whatever ``recommender.precision`` says (their
    published setting; a baseline is never run in a cheaper mode than it was tuned in)."""
    return params.precision if model_spec(params.model).generative else "auto"


def autocast_for(device: str | torch.device, precision: str = "auto"):
    """The training step's autocast context (see ``train_amp_dtype_for``)."""
    dtype = train_amp_dtype_for(device, precision)
    return torch.autocast(torch.device(device).type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def rank_examples(
    model: Any, examples: ExampleArrays, collate: Callable[[ExampleArrays, np.ndarray], Batch], k: int, batch_size: int, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(items [E, k'], scores [E, k']) of ``model.rank`` over a whole split, rows in split order.

    ``collate(examples, index)`` builds each batch (a method's ``eval_collate`` or an encoder's
    ``collate``); k' is the width the model returns (k, or fewer when it knows fewer items).
    Dropout is off and no gradients are kept while ranking.
    """
    n = len(examples)
    items: np.ndarray | None = None
    scores: np.ndarray | None = None
    with eval_mode(model), torch.inference_mode():
        for index in tqdm(eval_batches(examples, batch_size), desc="rank", leave=False, disable=not progress or None):
            got_items, got_scores = model.rank(collate(examples, index), k)
            if items is None:
                width = got_items.shape[1]
                items = np.full((n, width), -1, dtype=np.int64)
                scores = np.full((n, width), -np.inf, dtype=np.float32)
            items[index] = got_items.cpu().numpy()
            scores[index] = got_scores.float().cpu().numpy()
    if items is None:  # no examples
        return np.full((0, k), -1, dtype=np.int64), np.full((0, k), -np.inf, dtype=np.float32)
    return items, scores
