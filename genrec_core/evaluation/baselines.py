"""Non-neural floors for the generative model: MostPop and a first-order Markov chain.

Both write the predictions schema of the evaluate stage (``user_id`` Int32, ``target_item`` Int32,
``items`` List[Int32] ranked best first, ``scores`` List[Float32]), so one metrics code path
scores every method. A generative recommender that does not beat the Markov chain has not learnt
more than "what usually follows the last item".

Which interactions each baseline learns from (leave-one-out, SPEC 1):

* MostPop counts every occurrence of an item in the users' ``train_items`` (the training part of
  each sequence; validation and test targets never count, and neither does the validation item
  when scoring the test split, so its popularity is the SPEC's "training interaction count", the
  one head/tail and deciles use). Repeated interactions with one item count each time. Ties are
  broken by ascending item id.
* The Markov chain counts transitions a -> b between consecutive items of each user's sequence
  available before the split's target: ``train_items`` for the validation split, ``train_items``
  followed by ``valid_item`` for the test split (the test input already contains the validation
  item, so its transition is known history). Transitions never cross users. Scoring: items
  following the last history item, by transition count, ties and the remaining places filled in
  MostPop order (unseen last items get pure MostPop).

No item is excluded from a list, not even the user's history: the protocol lets a user interact
with an item again, and the generative model is not filtered either.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp

from genrec_core.evaluation.metrics import PAD

PREDICTION_SCHEMA = {
    "user_id": pl.Int32,
    "target_item": pl.Int32,
    "items": pl.List(pl.Int32),
    "scores": pl.List(pl.Float32),
}


def _flatten(seqs) -> tuple[np.ndarray, np.ndarray]:
    """(all items concatenated, sequence lengths) from a List series or a sequence of sequences."""
    if isinstance(seqs, pl.Series):
        lens = seqs.list.len().fill_null(0).to_numpy().astype(np.int64)
        flat = seqs.list.explode(keep_nulls=False, empty_as_null=False).drop_nulls().to_numpy().astype(np.int64)
        return flat, lens
    arrays = [np.asarray(s, dtype=np.int64).ravel() for s in seqs]
    lens = np.array([a.size for a in arrays], dtype=np.int64)
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    return flat, lens


def sequences_before_target(sequences: pl.DataFrame, split: str) -> pl.Series:
    """Each user's items known before the split's target: train_items (+ valid_item for test)."""
    if split == "valid":
        return sequences["train_items"]
    if split == "test":
        return sequences.select(pl.concat_list(pl.col("train_items"), pl.col("valid_item"))).to_series()
    raise ValueError(f"split must be 'valid' or 'test', got {split!r}")


def train_counts(train_items, n_items: int) -> np.ndarray:
    """Training interaction count per item id [n_items] (every occurrence in ``train_items``)."""
    flat, _ = _flatten(train_items)
    if flat.size and (flat.min() < 0 or flat.max() >= n_items):
        raise ValueError(f"item ids must be in [0, {n_items}), got {flat.min()}..{flat.max()}")
    return np.bincount(flat, minlength=n_items).astype(np.int64)


def popularity_order(counts: np.ndarray) -> np.ndarray:
    """Item ids, most interacted first; ties by ascending item id."""
    counts = np.asarray(counts)
    return np.lexsort((np.arange(counts.size), -counts)).astype(np.int64)


def transition_counts(seqs, n_items: int) -> sp.csr_matrix:
    """Sparse [n_items, n_items] matrix of consecutive-pair counts a -> b within each sequence."""
    flat, lens = _flatten(seqs)
    if flat.size and (flat.min() < 0 or flat.max() >= n_items):
        raise ValueError(f"item ids must be in [0, {n_items}), got {flat.min()}..{flat.max()}")
    seq_end = np.cumsum(lens) - 1  # index of each sequence's last item
    keep = np.ones(max(flat.size - 1, 0), dtype=bool)
    ends = seq_end[(lens > 0) & (seq_end < flat.size - 1)]
    keep[ends] = False  # a sequence's last item does not lead into the next user's first
    src, dst = flat[:-1][keep], flat[1:][keep]
    mat = sp.coo_matrix((np.ones(src.size, dtype=np.int64), (src, dst)), shape=(n_items, n_items))
    return mat.tocsr()  # duplicates summed


def _lists(mat: np.ndarray, valid: np.ndarray, dtype: pl.DataType) -> pl.Series:
    """List series from a padded matrix: row i keeps ``mat[i, valid[i]]`` (valid is a prefix)."""
    n, k = mat.shape
    if n == 0:
        return pl.Series([], dtype=pl.List(dtype))
    if valid.all():  # the usual case: one reshape, no grouping
        return pl.Series(np.ascontiguousarray(mat)).cast(pl.Array(dtype, k)).cast(pl.List(dtype))
    lens = valid.sum(axis=1)
    flat = pl.Series(mat[valid]).cast(dtype)
    grouped = pl.DataFrame({"row": np.repeat(np.arange(n), lens), "v": flat}).group_by("row", maintain_order=True).agg("v")
    full = pl.DataFrame({"row": np.arange(n)}).join(grouped, on="row", how="left")
    return full["v"].fill_null([]).cast(pl.List(dtype))


def _frame(user_ids, targets, items: np.ndarray, scores: np.ndarray) -> pl.DataFrame:
    """Predictions table from padded [U, K] item and score matrices (padding -1 dropped)."""
    valid = items != PAD
    return pl.DataFrame(
        {
            "user_id": pl.Series(np.asarray(user_ids)).cast(pl.Int32),
            "target_item": pl.Series(np.asarray(targets)).cast(pl.Int32),
            "items": _lists(items, valid, pl.Int32),
            "scores": _lists(scores, valid, pl.Float32),
        }
    )


class MostPop:
    """Recommends the same top-K most interacted training items to everyone."""

    def __init__(self, counts: np.ndarray):
        self.counts = np.asarray(counts, dtype=np.int64)
        self.order = popularity_order(self.counts)

    @classmethod
    def fit(cls, sequences: pl.DataFrame, n_items: int) -> MostPop:
        """Counts from ``sequences.train_items`` (see the module docstring)."""
        return cls(train_counts(sequences["train_items"], n_items))

    def top(self, n_users: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(items [U, k], scores = training counts [U, k])."""
        top = self.order[:k]
        items = np.broadcast_to(top, (n_users, top.size))
        return items, np.broadcast_to(self.counts[top].astype(np.float64), (n_users, top.size))

    def predict(self, examples: pl.DataFrame, k: int) -> pl.DataFrame:
        """Predictions table for an examples table (``user_id``, ``history``, ``target``)."""
        items, scores = self.top(examples.height, k)
        return _frame(examples["user_id"], examples["target"], items, scores)


class MarkovChain:
    """First-order Markov chain over items: P(next | last) by transition counts, MostPop back-off."""

    def __init__(self, transitions: sp.csr_matrix, popularity: MostPop):
        self.transitions = transitions.tocsr()
        self.popularity = popularity

    @classmethod
    def fit(cls, sequences: pl.DataFrame, split: str, n_items: int) -> MarkovChain:
        """Transitions known before ``split``'s target; MostPop counts from train_items only."""
        seqs = sequences_before_target(sequences, split)
        return cls(transition_counts(seqs, n_items), MostPop.fit(sequences, n_items))

    def top_after(self, last_items, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(items [U, k], scores [U, k]) for each last item (-1 = no history: MostPop only).

        Scores are transition counts; back-off items (never seen after the last item) score 0.
        """
        last = np.asarray(last_items, dtype=np.int64).ravel()
        n_items = self.transitions.shape[0]
        uniq, inverse = np.unique(last, return_inverse=True)
        known = (uniq >= 0) & (uniq < n_items)
        coo = self.transitions[np.where(known, uniq, 0)].tocoo()
        keep = known[coo.row]  # rows of unknown items (or no history) stay empty
        coo = sp.coo_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=coo.shape)
        pop_rank = np.empty(n_items, dtype=np.int64)
        pop_rank[self.popularity.order] = np.arange(n_items)
        # transitions of each row: count desc, then popularity order
        order = np.lexsort((pop_rank[coo.col], -coo.data, coo.row))
        rows, cols, data = coo.row[order], coo.col[order], coo.data[order]
        starts = np.searchsorted(rows, np.arange(uniq.size))
        pos = np.arange(rows.size) - starts[rows]
        take = pos < k
        u = uniq.size
        chain_items = np.full((u, k), PAD, dtype=np.int64)
        chain_scores = np.zeros((u, k), dtype=np.float64)
        chain_items[rows[take], pos[take]] = cols[take]
        chain_scores[rows[take], pos[take]] = data[take]
        # back-off: the most popular items not already listed, in popularity order
        cand = self.popularity.order[: 2 * k]
        listed = (cand[None, :, None] == chain_items[:, None, :]).any(axis=2)  # [u, 2k]
        fill_order = np.argsort(listed, axis=1, kind="stable")
        fill = np.take_along_axis(np.broadcast_to(cand, listed.shape), fill_order, axis=1)
        fill_ok = ~np.take_along_axis(listed, fill_order, axis=1)
        n_chain = (chain_items != PAD).sum(axis=1)
        items = chain_items.copy()
        for j in range(k):  # k <= 50 columns, vectorised over rows
            need = n_chain <= j
            src = j - n_chain
            src_c = np.clip(src, 0, fill.shape[1] - 1)
            pick = fill[np.arange(u), src_c]
            ok = need & (src < fill.shape[1]) & fill_ok[np.arange(u), src_c]
            items[ok, j] = pick[ok]
        return items[inverse], chain_scores[inverse]

    def predict(self, examples: pl.DataFrame, k: int) -> pl.DataFrame:
        """Predictions table: next item after each example's last history item."""
        last = examples.select(pl.col("history").list.last().fill_null(PAD)).to_series().to_numpy()
        items, scores = self.top_after(last, k)
        return _frame(examples["user_id"], examples["target"], items, scores)


def baseline_predictions(sequences: pl.DataFrame, examples: pl.DataFrame, split: str, n_items: int, k: int) -> dict[str, pl.DataFrame]:
    """{"mostpop": predictions, "markov": predictions} for one split's examples, top-k each."""
    mostpop = MostPop.fit(sequences, n_items)
    markov = MarkovChain(transition_counts(sequences_before_target(sequences, split), n_items), mostpop)
    return {"mostpop": mostpop.predict(examples, k), "markov": markov.predict(examples, k)}
