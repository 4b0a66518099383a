"""How much of an evaluation split a first-order transition table can know: a data statistic.

For each evaluation example (one per user under leave-one-out), is the pair (last history item ->
target) a transition that occurs as two consecutive items of some user's training data? The
share of users for whom it is bounds what "what usually follows the last item" can get right,
and is what the Markov floor (genrec_core.evaluation.baselines) lives on: a dataset where it is
high rewards memorising item-to-item transitions.

Which data count as "training" (every user's, never crossing from one user into the next):

* validation split: every user's ``train_items`` (the sequence without its last two items);
* test split, ``train``: the same ``train_items`` only;
* test split, ``train+valid`` (the headline figure): ``train_items`` followed by ``valid_item``,
  i.e. also every user's transition into their validation item. This is what the test input
  already contains (the validation item is the last history item of the test example) and what
  the Markov floor learns from for the test split (``sequences_before_target``).

A repeated pair of the user's own training part counts (the transition is in the training data);
the evaluated pair itself never is (targets are left out of the "before" sequences). An example
with an empty history counts as not known.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from genrec_core.evaluation.baselines import _flatten, sequences_before_target, transition_counts
from genrec_core.evaluation.metrics import PAD


def known_transition_mask(before: Any, last_items: Sequence[int], targets: Sequence[int]) -> np.ndarray:
    """Per example: whether (``last_items[i]`` -> ``targets[i]``) occurs as consecutive items of
    some sequence of ``before`` (a List series or a sequence of item-id sequences, ids >= 0).
    A last item of ``PAD`` (-1, no history) is never known."""
    last = np.asarray(last_items, dtype=np.int64).ravel()
    target = np.asarray(targets, dtype=np.int64).ravel()
    if last.shape != target.shape:
        raise ValueError(f"{last.size} last items but {target.size} targets")
    flat, _ = _flatten(before)
    n_items = int(max(flat.max(initial=-1), last.max(initial=-1), target.max(initial=-1))) + 1
    mat = transition_counts(before, max(n_items, 1))
    ok = (last >= 0) & (target >= 0)
    out = np.zeros(last.size, dtype=bool)
    if ok.any():
        out[ok] = np.asarray(mat[last[ok], target[ok]]).ravel() > 0
    return out


def known_transition_share(before: Any, last_items: Sequence[int], targets: Sequence[int]) -> float:
    """The share of examples whose (last item -> target) pair is a known transition (nan: none)."""
    mask = known_transition_mask(before, last_items, targets)
    return float(mask.mean()) if mask.size else float("nan")


def _last_and_target(examples: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    last = examples.select(pl.col("history").list.last().fill_null(PAD)).to_series().to_numpy()
    return last, examples["target"].to_numpy()


def transition_shares(sequences: pl.DataFrame, valid: pl.DataFrame, test: pl.DataFrame) -> dict[str, Any]:
    """The statistic for the processed tables (``sequences`` with ``train_items``/``valid_item``;
    ``valid``/``test``: one example per user, ``history`` and ``target``):
    ``{"valid": share, "test_train": share, "test_train+valid": share, "users_valid": n, "users_test": n}``."""
    out: dict[str, Any] = {}
    last, target = _last_and_target(valid)
    out["valid"] = known_transition_share(sequences_before_target(sequences, "valid"), last, target)
    last, target = _last_and_target(test)
    out["test_train"] = known_transition_share(sequences["train_items"], last, target)
    out["test_train+valid"] = known_transition_share(sequences_before_target(sequences, "test"), last, target)
    out["users_valid"], out["users_test"] = valid.height, test.height
    return out


def transition_statistics(root: Path) -> dict[str, Any]:
    """``transition_shares`` of ``root``'s ``data/processed`` (sequences, valid and test tables)."""
    processed = Path(root) / "data" / "processed"
    sequences = pl.read_parquet(processed / "sequences.parquet")
    valid, test = (pl.read_parquet(processed / f"{split}.parquet").select("history", "target") for split in ("valid", "test"))
    return transition_shares(sequences, valid, test)
