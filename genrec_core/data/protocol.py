"""SPEC section 1, the data protocol shared by every dataset.

raw interactions -> iterated k-core -> contiguous integer ids -> time-ordered sequences ->
leave-one-out split -> windowed (history, target) examples.

Everything is columnar (polars / numpy): no Python loop runs per user or per interaction, so a
category of Amazon Reviews 2023 with tens of millions of reviews fits this 2-core machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa

from genrec_core.data.sources.base import RawDataset
from genrec_core.errors import EmptyResultError

SPLITS = ("train", "valid", "test")


@dataclass
class ProcessedDataset:
    """The protocol's outputs, each written as one Parquet file by the preprocess stage."""

    items: pl.DataFrame  # item_id, source_item_id, text fields
    sequences: pl.DataFrame  # user_id, source_user_id, items, timestamps, train_items, valid_item, test_item
    examples: dict[str, pl.DataFrame]  # split -> user_id, history (list), target
    stats: dict
    cold_items: list[int] = field(default_factory=list)  # item_ids held out of training (data.cold_item_share)


def k_core(interactions: pl.DataFrame, k: int) -> tuple[pl.DataFrame, int]:
    """Drop users and items with fewer than ``k`` interactions until none is left to drop.

    The k-core is unique (the largest sub-log in which every user and item has >= k rows), so
    filtering users and items together each round reaches the same result as alternating.
    Returns the filtered frame and the number of rounds that removed something.
    """
    rounds = 0
    current = interactions
    while True:
        user_ok = pl.col("user").count().over("user") >= k
        item_ok = pl.col("item").count().over("item") >= k
        filtered = current.filter(user_ok & item_ok)
        if filtered.height == current.height:
            return current, rounds
        rounds += 1
        current = filtered
        if current.height == 0:
            return current, rounds


def _id_order(values: pl.Series) -> pl.Series:
    """Sorted unique source ids, numerically when every id is an integer (so '10' follows '9')."""
    frame = pl.DataFrame({"id": values.unique()})
    frame = frame.with_columns(pl.col("id").cast(pl.Int64, strict=False).alias("as_int"))
    if frame["as_int"].null_count() == 0:
        return frame.sort("as_int")["id"]
    return frame.sort("id")["id"]


def _index_map(values: pl.Series, source_name: str, id_name: str) -> pl.DataFrame:
    ordered = _id_order(values)
    return pl.DataFrame({source_name: ordered, id_name: pl.int_range(0, len(ordered), eager=True).cast(pl.Int32)})


def windowed_examples(
    flat_items: np.ndarray, target_positions: np.ndarray, history_starts: np.ndarray, window: int, block_items: int = 1 << 22
) -> pa.LargeListArray:
    """History lists ``flat_items[max(start, t - window) : t]`` for each target position t.

    Built with vectorised gathers, a block of about ``block_items`` history items at a time (the
    int64 gather indices would otherwise take several times the memory of the histories
    themselves); no Python loop per example.
    """
    starts = np.maximum(history_starts, target_positions - window)
    lengths = (target_positions - starts).astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    gathered = np.empty(int(offsets[-1]), dtype=flat_items.dtype)
    step = max(1, block_items // max(1, window))
    for lo in range(0, len(lengths), step):
        hi = min(len(lengths), lo + step)
        first, last = offsets[lo], offsets[hi]
        within = np.arange(last - first, dtype=np.int64) - np.repeat(offsets[lo:hi] - first, lengths[lo:hi])
        gathered[first:last] = flat_items[np.repeat(starts[lo:hi], lengths[lo:hi]) + within]
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(gathered))


def _examples_frame(user_ids: np.ndarray, histories: pa.LargeListArray, targets: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": pl.Series(user_ids, dtype=pl.Int32),
            "history": pl.from_arrow(histories).cast(pl.List(pl.Int32)),
            "target": pl.Series(targets, dtype=pl.Int32),
        }
    )


def build_examples(sequences: pl.DataFrame, window: int) -> dict[str, pl.DataFrame]:
    """Leave-one-out examples from time-ordered sequences (each user has >= 3 items).

    train: every position t >= 1 of the training part (all but the last two items), history =
    items before t; valid: history = the training part, target = second to last; test: history =
    training part + validation item, target = last. Histories keep the last ``window`` items.
    """
    lengths = sequences["items"].list.len().to_numpy().astype(np.int64)
    user_ids = sequences["user_id"].to_numpy()
    flat = sequences["items"].explode().to_numpy().astype(np.int32)
    seq_starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=seq_starts[1:])

    train_len = lengths - 2
    per_user = np.maximum(train_len - 1, 0)
    train_users = np.repeat(np.arange(len(lengths)), per_user)
    group_offsets = np.concatenate([[0], np.cumsum(per_user)[:-1]])
    t_in_user = np.arange(per_user.sum(), dtype=np.int64) - np.repeat(group_offsets, per_user) + 1
    train_starts = seq_starts[train_users]
    train_pos = train_starts + t_in_user

    valid_pos = seq_starts + lengths - 2
    test_pos = seq_starts + lengths - 1
    return {
        "train": _examples_frame(user_ids[train_users], windowed_examples(flat, train_pos, train_starts, window), flat[train_pos]),
        "valid": _examples_frame(user_ids, windowed_examples(flat, valid_pos, seq_starts, window), flat[valid_pos]),
        "test": _examples_frame(user_ids, windowed_examples(flat, test_pos, seq_starts, window), flat[test_pos]),
    }


def dataset_display_name(dataset: str, category: str | None = None) -> str:
    """The name reports show: the kind, with the file stem for kinds that read one file of many
    (``atomic``: the ``.inter`` stem alone, ``amazon2023``: ``amazon2023 Musical_Instruments``)."""
    if not category:
        return dataset
    return category if dataset == "atomic" else f"{dataset} {category}"


def hold_out_cold_items(filtered: pl.DataFrame, share: float, seed: int) -> tuple[pl.DataFrame, list]:
    """(interactions, held-out source item ids) for the cold-start evaluation.

    A seeded ``share`` of the items (after the k-core filter, ``round(share * items)``) is held
    out: every interaction with one of them is removed except a user's last one, so a held-out
    item is never in a training sequence, a validation target or any history, and is the test
    target of the users whose last item it is. Users left with fewer than 3 interactions (leave-
    one-out needs a training, a validation and a test item) are dropped. The held-out items stay
    in the catalogue (with their text), so embed and the tokenizer see them like any item.
    """
    items = _id_order(filtered["item"].unique())
    n_cold = int(round(share * items.len()))
    if share <= 0 or n_cold == 0:
        return filtered, []
    rng = np.random.default_rng(seed)
    cold = items.gather(np.sort(rng.choice(items.len(), size=n_cold, replace=False)))
    ordered = filtered.sort(["user", "timestamp", "order"], nulls_last=True, maintain_order=True)
    is_last = pl.int_range(pl.len()).over("user") == pl.len().over("user") - 1
    kept = ordered.filter(~pl.col("item").is_in(cold.implode()) | is_last)
    kept = kept.filter(pl.len().over("user") >= 3)
    return kept, cold.to_list()


def apply_protocol(
    raw: RawDataset, min_interactions: int, max_items: int, dataset_name: str = "", cold_item_share: float = 0.0, cold_item_seed: int = 0
) -> ProcessedDataset:
    """Run SPEC section 1 on a source's raw data (``cold_item_share`` > 0: hold items out of
    training for the cold-start evaluation, ``hold_out_cold_items``)."""
    raw_stats = {
        "users": raw.interactions["user"].n_unique(),
        "items": raw.interactions["item"].n_unique(),
        "interactions": raw.interactions.height,
    }
    if raw.interactions.height == 0:
        raise EmptyResultError(f"dataset {dataset_name or raw.name!r}: the source contains no interactions")
    filtered, rounds = k_core(raw.interactions, min_interactions)
    if filtered.height == 0:
        raise EmptyResultError(
            f"dataset {dataset_name or raw.name!r}: the {min_interactions}-core filter (param data.min_interactions) "
            f"removed all {raw_stats['interactions']} interactions; lower data.min_interactions or use more data"
        )

    items = _index_map(filtered["item"], "item", "item_id")  # held-out items keep their place in the catalogue
    filtered, cold_source = hold_out_cold_items(filtered, cold_item_share, cold_item_seed)
    if filtered.height == 0:
        raise EmptyResultError(
            f"dataset {dataset_name or raw.name!r}: holding out data.cold_item_share={cold_item_share} of the items left no user with 3 interactions"
        )
    users = _index_map(filtered["user"], "user", "user_id")
    ordered = filtered.join(users, on="user").join(items, on="item").sort(["user_id", "timestamp", "order"], nulls_last=True, maintain_order=True)
    sequences = (
        ordered.group_by("user_id", maintain_order=True)
        .agg(pl.col("user").first().alias("source_user_id"), pl.col("item_id").alias("items"), pl.col("timestamp").alias("timestamps"))
        .with_columns(
            pl.col("items").list.slice(0, pl.col("items").list.len() - 2).alias("train_items"),
            pl.col("items").list.get(-2).alias("valid_item"),
            pl.col("items").list.get(-1).alias("test_item"),
        )
    )
    examples = build_examples(sequences, max_items)

    text = raw.items.unique("item", keep="first", maintain_order=True)
    text_fields = [c for c in text.columns if c != "item"]
    item_table = (
        items.join(text, on="item", how="left")
        .with_columns([pl.col(c).cast(pl.String).fill_null("") for c in text_fields])
        .select(pl.col("item_id"), pl.col("item").alias("source_item_id"), *text_fields)
        .sort("item_id")
    )

    n_users, n_items, n_inter = users.height, items.height, ordered.height
    seq_len = sequences["items"].list.len()
    stats = {
        "dataset": dataset_name or raw.name,
        "users": n_users,
        "items": n_items,
        "interactions": n_inter,
        "avg_seq_len": round(n_inter / n_users, 4),
        "median_seq_len": float(seq_len.median()),
        "max_seq_len": int(seq_len.max()),
        "sparsity": round(1.0 - n_inter / (n_users * n_items), 6),
        "min_interactions": min_interactions,
        "k_core_rounds": rounds,
        "max_items": max_items,
        "examples": {split: examples[split].height for split in SPLITS},
        "raw": raw_stats,
    }
    cold_ids: list[int] = []
    if cold_source:
        cold_ids = sorted(items.filter(pl.col("item").is_in(pl.Series(cold_source, dtype=items["item"].dtype).implode()))["item_id"].to_list())
        cold_set = set(cold_ids)
        stats["cold_items"] = {
            "share": cold_item_share,
            "seed": cold_item_seed,
            "items": len(cold_ids),
            "test_targets": int(sum(1 for t in sequences["test_item"].to_list() if t in cold_set)),
        }
    return ProcessedDataset(items=item_table, sequences=sequences, examples=examples, stats=stats, cold_items=cold_ids)


def stats_markdown(stats: dict) -> str:
    """A paper-style dataset table (paper 001, Table 2)."""
    header = "| Dataset | #Users | #Items | #Interactions | Avg. length | Sparsity |\n|---|---:|---:|---:|---:|---:|\n"
    row = (
        f"| {stats['dataset']} | {stats['users']:,} | {stats['items']:,} | {stats['interactions']:,} | "
        f"{stats['avg_seq_len']:.2f} | {100 * stats['sparsity']:.2f}% |\n"
    )
    ex = stats["examples"]
    note = (
        f"\n{stats['min_interactions']}-core filter ({stats['k_core_rounds']} rounds) from "
        f"{stats['raw']['interactions']:,} raw interactions; examples: train {ex['train']:,}, "
        f"valid {ex['valid']:,}, test {ex['test']:,}; history window {stats['max_items']}.\n"
    )
    return header + row + note
