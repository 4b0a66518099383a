"""Cold-start evaluation: the users whose test target is an item held out of training
(``data.cold_item_share``), ranked by a model and by the content-similarity floor.

The floor ranks every item by the cosine of its item vector (the embed stage's text vectors) to
the vector of the history's last item, leaving that item itself out (it would always be first);
ties go to the lower item index. It needs no training, so it can rank an unseen item: a model
that does not beat it on the cold users has learnt nothing about new items beyond their text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from genrec_core.evaluation.metrics import hit_ndcg, target_ranks


def cold_test_rows(test: pl.DataFrame, cold_items: Sequence[int]) -> pl.DataFrame:
    """The test examples (user_id, history, target) whose target is a held-out item."""
    return test.filter(pl.col("target").is_in(pl.Series(list(cold_items), dtype=test["target"].dtype).implode()))


def content_floor(vectors: np.ndarray, histories: Sequence[Sequence[int]], k: int) -> np.ndarray:
    """[U, k] item indices by cosine to each history's last item (that item excluded)."""
    v = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    v = v / np.where(norms > 0, norms, 1.0)
    last = np.array([h[-1] for h in histories], dtype=np.int64)
    sims = v[last] @ v.T  # [U, N]
    sims[np.arange(len(last)), last] = -np.inf
    k = min(int(k), v.shape[0] - 1)
    order = np.lexsort((np.broadcast_to(np.arange(v.shape[0]), sims.shape), -sims), axis=-1)  # best first, ties: lower index
    return order[:, :k]


def rank_summary(items, targets, ks: Sequence[int]) -> dict[str, float]:
    """Hit@K / NDCG@K plus the share of users whose target is in the list at all."""
    ranks = target_ranks(items, targets)
    out = hit_ndcg(ranks, ks)
    out["users"] = int(len(ranks))
    out["found"] = float((ranks > 0).mean()) if len(ranks) else 0.0
    return out
