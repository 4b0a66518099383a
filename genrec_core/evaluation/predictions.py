"""The predictions table every ranking model writes (SPEC 5): one row per user, best item first."""

from __future__ import annotations

import numpy as np
import polars as pl


def predictions_frame(user_ids: np.ndarray, targets: np.ndarray, items: np.ndarray, scores: np.ndarray) -> pl.DataFrame:
    """One row per user; ``items``/``scores`` ranked best first, beam padding (-1) dropped."""
    valid = items >= 0
    lengths = valid.sum(axis=1)
    flat_items = items[valid].astype(np.int32)
    flat_scores = scores[valid].astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    split = lambda flat: [flat[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]  # noqa: E731
    return pl.DataFrame(
        {
            "user_id": pl.Series(user_ids, dtype=pl.Int32),
            "target_item": pl.Series(targets, dtype=pl.Int32),
            "items": pl.Series(split(flat_items), dtype=pl.List(pl.Int32)),
            "scores": pl.Series(split(flat_scores), dtype=pl.List(pl.Float32)),
        }
    )
