"""Paper 002 Figure 5: a method's Hit@K gain over a baseline (TIGER) by item-frequency group.

Why: MTGRec's claim is that several IDs per item help rarely seen items most. Items are grouped
by training interaction count (``evaluation.baselines.train_counts``: occurrences in the users'
``train_items``): all catalogue items sorted by count ascending (ties: item id) and cut into
``n_groups`` equal-size groups (``recommendations.popularity_deciles``; group 1 = rarest). A test
user belongs to the group of their target; per group, Hit@K of both prediction tables over those
users and the relative gain ``method / baseline - 1`` (NaN when the baseline's Hit@K is 0).
The paper groups by test interaction count with fixed edges; equal-size groups over the training
counts keep the bins comparable across datasets.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from genrec_core.analysis.recommendations import popularity_deciles
from genrec_core.evaluation.metrics import per_user_metrics, target_ranks


def long_tail_gain(method: pl.DataFrame, baseline: pl.DataFrame, counts: np.ndarray, n_groups: int = 5, k: int = 10) -> list[dict]:
    """One row per frequency group: its items, their training-count range, test users, Hit@k of
    ``method`` and ``baseline`` (prediction tables: ``user_id``, ``target_item``, ``items``), gain.

    Both tables must hold the same users with the same targets (tests of one data split)."""
    a, b = method.sort("user_id"), baseline.sort("user_id")
    if not (a["user_id"].equals(b["user_id"]) and a["target_item"].equals(b["target_item"])):
        raise ValueError("the two prediction tables must hold the same users and targets")
    counts = np.asarray(counts, dtype=np.int64)
    group = popularity_deciles(counts, n_bins=n_groups)
    targets = a["target_item"].to_numpy().astype(np.int64)
    if targets.size and (targets.min() < 0 or targets.max() >= counts.size):
        raise ValueError(f"target items must be in [0, {counts.size})")
    user_group = group[targets]
    hits = {name: per_user_metrics(target_ranks(df["items"], targets), [k])[f"hit@{k}"] for name, df in (("method", a), ("baseline", b))}
    rows = []
    for g in range(1, n_groups + 1):
        members, users = np.flatnonzero(group == g), user_group == g
        ha = float(hits["method"][users].mean()) if users.any() else float("nan")
        hb = float(hits["baseline"][users].mean()) if users.any() else float("nan")
        rows.append(
            {
                "group": g,
                "items": int(members.size),
                "min_train_count": int(counts[members].min()) if members.size else 0,
                "max_train_count": int(counts[members].max()) if members.size else 0,
                "test_users": int(users.sum()),
                f"method_hit@{k}": ha,
                f"baseline_hit@{k}": hb,
                "gain": ha / hb - 1.0 if hb > 0 else float("nan"),
            }
        )
    return rows
