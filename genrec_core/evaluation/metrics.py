"""Ranking metrics of SPEC section 5, vectorised over users.

Every method (the generative model, MostPop, the Markov chain) is evaluated from the same
predictions schema (``user_id``, ``target_item``, ``items`` ranked best first, ``scores``) by the
same code, so their numbers are comparable by construction.

Conventions (SPEC 5): one target per user; ``rank`` is 1-based, 0 when the target is not in the
list (the user still counts, with score 0); Hit@K = [1 <= rank <= K] (equal to Recall@K with one
target); NDCG@K = 1/log2(rank + 1) if 1 <= rank <= K else 0 (the ideal DCG with one relevant item
is 1/log2(2) = 1). Means are over all users. If an item appears twice in a list, its first
position counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

PAD = -1


def as_padded(items, width: int | None = None) -> np.ndarray:
    """Ranked lists as an int64 matrix [U, W], shorter lists padded with -1.

    Accepts a polars List Series, a sequence of sequences, or a 2-D array (already padded).
    ``width`` truncates (or pads) to that many columns; by default the longest list's length.
    """
    if isinstance(items, pl.Series):
        if not isinstance(items.dtype, pl.List):
            raise TypeError(f"expected a List series of item ids, got {items.dtype}")
        w = int(items.list.len().max() or 0) if width is None else int(width)
        if items.len() == 0:
            return np.zeros((0, w), dtype=np.int64)
        if w == 0:
            return np.zeros((items.len(), 0), dtype=np.int64)
        frame = pl.DataFrame({"items": items}).select([pl.col("items").list.get(j, null_on_oob=True).alias(str(j)) for j in range(w)])
        return frame.fill_null(PAD).to_numpy().astype(np.int64).reshape(items.len(), w)
    if isinstance(items, np.ndarray) and items.ndim == 2:
        out = items.astype(np.int64, copy=False)
    else:
        rows = [np.asarray(r, dtype=np.int64).ravel() for r in items]
        w0 = max((r.size for r in rows), default=0)
        out = np.full((len(rows), w0), PAD, dtype=np.int64)
        for i, r in enumerate(rows):
            out[i, : r.size] = r
    if width is not None:
        if out.shape[1] >= width:
            out = out[:, :width]
        else:
            out = np.pad(out, ((0, 0), (0, width - out.shape[1])), constant_values=PAD)
    return out


def first_true_rank(match: np.ndarray) -> np.ndarray:
    """1-based index of the first True per row of a [U, W] bool matrix, 0 where a row has none."""
    match = np.asarray(match, dtype=bool)
    if match.shape[1] == 0:
        return np.zeros(match.shape[0], dtype=np.int64)
    first = match.argmax(axis=1) + 1
    return np.where(match.any(axis=1), first, 0).astype(np.int64)


def target_ranks(items, targets) -> np.ndarray:
    """1-based rank of each user's target in their ranked list, 0 if absent. Shape [U]."""
    mat = as_padded(items)
    targets = np.asarray(targets, dtype=np.int64).ravel()
    if mat.shape[0] != targets.shape[0]:
        raise ValueError(f"{mat.shape[0]} ranked lists but {targets.shape[0]} targets")
    return first_true_rank((mat == targets[:, None]) & (mat != PAD))


def per_user_metrics(ranks, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-user Hit@K and NDCG@K arrays (float64 [U]); their means are the reported metrics.

    Kept per user so significance tests and subgroup analyses (head/tail) reuse them.
    """
    ranks = np.asarray(ranks, dtype=np.int64).ravel()
    found = ranks >= 1
    gain = np.zeros(ranks.shape, dtype=np.float64)
    gain[found] = 1.0 / np.log2(ranks[found] + 1.0)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        within = found & (ranks <= int(k))
        out[f"hit@{k}"] = within.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(within, gain, 0.0)
    return out


def metric_keys(ks: Sequence[int]) -> list[str]:
    """Key order used by every report: hit@k then ndcg@k for each k."""
    return [f"{m}@{k}" for k in ks for m in ("hit", "ndcg")]


def hit_ndcg(ranks, ks: Sequence[int]) -> dict[str, float]:
    """{"hit@k": mean, "ndcg@k": mean} over all users (0 for an empty set of users)."""
    per_user = per_user_metrics(ranks, ks)
    return {key: float(per_user[key].mean()) if per_user[key].size else 0.0 for key in metric_keys(ks)}


def metrics_from_predictions(pred_df: pl.DataFrame, ks: Sequence[int]) -> dict[str, float]:
    """Hit@K / NDCG@K of a predictions table (columns ``items`` and ``target_item``)."""
    return hit_ndcg(target_ranks(pred_df["items"], pred_df["target_item"].to_numpy()), ks)


def _code_lookup(codes: np.ndarray, item_ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(codes [N, L], row of each item id or -1) so item ids need not be 0..N-1."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2:
        raise ValueError(f"ID table must be [N, L], got shape {codes.shape}")
    ids = np.arange(codes.shape[0], dtype=np.int64) if item_ids is None else np.asarray(item_ids, dtype=np.int64)
    if ids.shape[0] != codes.shape[0]:
        raise ValueError(f"{ids.shape[0]} item ids for {codes.shape[0]} ID rows")
    row = np.full(int(ids.max(initial=-1)) + 1, -1, dtype=np.int64)
    row[ids] = np.arange(ids.shape[0])
    return codes, row


def prefix_match_ranks(items, targets, codes: np.ndarray, item_ids: np.ndarray | None = None) -> np.ndarray:
    """Relaxed ranks [U, L]: column k-1 = first rank whose item shares the target's first k tokens.

    Paper 001 Table 6: a ranked item counts as a hit at level k if its first k ID tokens equal the
    target's. Column L-1 is the exact-ID match (= exact item match when IDs are unique). Padding
    and items without an ID never match. ``codes`` row i is the ID of ``item_ids[i]`` (default:
    item i).
    """
    codes, row = _code_lookup(codes, item_ids)
    mat = as_padded(items)
    targets = np.asarray(targets, dtype=np.int64).ravel()
    if mat.shape[0] != targets.shape[0]:
        raise ValueError(f"{mat.shape[0]} ranked lists but {targets.shape[0]} targets")
    t_ok = (targets >= 0) & (targets < row.size)
    t_row = np.where(t_ok, row[np.clip(targets, 0, max(row.size - 1, 0))], -1)
    if (t_row < 0).any():
        bad = targets[t_row < 0][:5].tolist()
        raise ValueError(f"targets without an ID in the ID table, e.g. {bad}")
    i_ok = (mat >= 0) & (mat < row.size)
    i_row = np.where(i_ok, row[np.clip(mat, 0, max(row.size - 1, 0))], -1)
    valid = i_row >= 0
    item_codes = codes[np.where(valid, i_row, 0)]  # [U, W, L]
    equal = item_codes == codes[t_row][:, None, :]
    prefix_equal = np.logical_and.accumulate(equal, axis=2) & valid[:, :, None]
    n_levels = codes.shape[1]
    return np.stack([first_true_rank(prefix_equal[:, :, k]) for k in range(n_levels)], axis=1).reshape(mat.shape[0], n_levels)


def relaxed_prefix_ndcg(items, targets, codes: np.ndarray, item_ids: np.ndarray | None = None, k: int = 5) -> dict[str, float]:
    """NDCG@k under relaxed prefix matching for prefix lengths L..1: {"prefix{l}_ndcg@{k}": value}."""
    ranks = prefix_match_ranks(items, targets, codes, item_ids)
    n_levels = ranks.shape[1]
    return {f"prefix{lv}_ndcg@{k}": hit_ndcg(ranks[:, lv - 1], [k])[f"ndcg@{k}"] for lv in range(n_levels, 0, -1)}


def evaluation_summary(
    pred_df: pl.DataFrame,
    ks: Sequence[int],
    codes: np.ndarray | None = None,
    item_ids: np.ndarray | None = None,
    relaxed_k: int = 5,
) -> dict[str, float | int]:
    """Everything the metrics JSON holds: ``users``, hit@k/ndcg@k, and (with an ID table) relaxed NDCG.

    Flat keys so DVC can show and diff them.
    """
    targets = pred_df["target_item"].to_numpy()
    out: dict[str, float | int] = {"users": int(pred_df.height)}
    out.update(hit_ndcg(target_ranks(pred_df["items"], targets), ks))
    if codes is not None:
        out.update(relaxed_prefix_ndcg(pred_df["items"], targets, codes, item_ids, relaxed_k))
    return out
