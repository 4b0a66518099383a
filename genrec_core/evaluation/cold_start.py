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


def mix_cold_items(ranked: np.ndarray, item_tokens: np.ndarray, cold_items: Sequence[int], k: int, epsilon: float) -> np.ndarray:
    """TIGER's cold-start retrieval (Rajput et al. 2023, section 4.3) on a beam-search list.

    A new item's semantic ID shares its prefix (all levels but the last) with trained items, so a
    generated ID's prefix also retrieves the new items under it. Walking ``ranked`` ([U, B] item
    indices, best first, -1 = empty) in order, each listed item is followed by the cold items whose
    first L-1 tokens equal its own (lower item index first), while at most ``floor(epsilon * k)``
    cold items are in the list (cold items the beam found itself count too); lists are cut to k.
    TIGER's epsilon is that maximum share of cold items in the top k; epsilon 0 returns the beam
    list. Our choices where the paper is silent: where a cold item enters (right after its prefix's
    first listed item) and the order of cold items under one prefix (item index).
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    tokens = np.asarray(item_tokens)
    cold = sorted(int(i) for i in cold_items)
    cold_set = set(cold)
    by_prefix: dict[tuple, list[int]] = {}
    for item in cold:
        by_prefix.setdefault(tuple(tokens[item, :-1].tolist()), []).append(item)
    budget_per_list = int(np.floor(epsilon * k + 1e-9))
    out = np.full((len(ranked), k), -1, dtype=np.int64)
    for row, items in enumerate(np.asarray(ranked)):
        listed: list[int] = []
        seen: set[int] = set()
        budget = budget_per_list
        for item in (int(i) for i in items if i >= 0):
            if len(listed) >= k:
                break
            if item in seen:
                continue
            if item in cold_set:
                if budget == 0:
                    continue
                budget -= 1
            listed.append(item)
            seen.add(item)
            for new in by_prefix.get(tuple(tokens[item, :-1].tolist()), ()):
                if budget == 0 or len(listed) >= k:
                    break
                if new not in seen:
                    listed.append(new)
                    seen.add(new)
                    budget -= 1
        out[row, : len(listed)] = listed
    return out
