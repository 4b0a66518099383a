"""The multi-identifier table (MTGRec): every item's ID under every kept tokenizer.

One long Parquet table, ``item_id`` (Int32), ``tokenizer`` (String, e.g. ``epoch_0200``),
``codes`` (List[Int32]), sorted by tokenizer then item_id. Long format keeps one schema whatever
the number of kept tokenizers, and lets a reader pick one tokenizer with a filter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl

from genrec_core.errors import InputFormatError, MissingInputError, ParamError
from genrec_core.io import read_parquet
from genrec_core.tokenizers.collisions import group_ids

SCHEMA = {"item_id": pl.Int32, "tokenizer": pl.String, "codes": pl.List(pl.Int32)}


def tokenizer_epoch(name: str) -> int | None:
    """The epoch a kept tokenizer's name ends with (``epoch_0200`` -> 200), None if it has none."""
    match = re.search(r"(\d+)$", name)
    return int(match.group(1)) if match else None


def is_seed_run(name: str) -> bool:
    """A kept tokenizer named after the seed of its own RQ-VAE run (``seed_0042``,
    ``tokenizer.kept_from: seeds``), not after an epoch of one run."""
    return re.fullmatch(r"seed_\d+", name) is not None


def sort_tokenizer_names(names: list[str]) -> list[str]:
    """Names in epoch order (names without an epoch keep their given order, after the others)."""
    indexed = list(enumerate(names))
    indexed.sort(key=lambda t: (tokenizer_epoch(t[1]) is None, tokenizer_epoch(t[1]) or 0, t[0]))
    return [name for _, name in indexed]


def build_id_table(item_ids: np.ndarray, ids_by_tokenizer: Mapping[str, np.ndarray]) -> pl.DataFrame:
    """Long table from ``item_ids`` [N] and {tokenizer name: IDs [N, L']} (row i = item_ids[i])."""
    item_ids = np.asarray(item_ids)
    frames = []
    for name, ids in ids_by_tokenizer.items():
        ids = np.asarray(ids)
        if ids.ndim != 2 or ids.shape[0] != item_ids.shape[0]:
            raise ValueError(f"tokenizer {name}: IDs must be [N={item_ids.shape[0]}, L'], got shape {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() > np.iinfo(np.int32).max):
            raise ValueError(f"tokenizer {name}: codes must be non-negative Int32 values")
        frames.append(
            pl.DataFrame(
                {
                    "item_id": pl.Series(item_ids.astype(np.int32)),
                    "tokenizer": pl.repeat(name, item_ids.shape[0], dtype=pl.String, eager=True),
                    "codes": pl.Series(ids.astype(np.int32)).cast(pl.List(pl.Int32)),
                }
            )
        )
    if not frames:
        return pl.DataFrame(schema=SCHEMA)
    return pl.concat(frames).select(list(SCHEMA)).sort(["tokenizer", "item_id"])


def validate_id_table(df: pl.DataFrame, path: str | Path = "<id table>", item_ids: np.ndarray | None = None) -> None:
    """Check what every consumer relies on; raise InputFormatError naming the first problem.

    Columns and dtypes as ``SCHEMA``; at least one tokenizer; no nulls; every tokenizer lists the
    same items (``item_ids`` if given), each exactly once; IDs of one tokenizer have one length,
    non-negative codes, and no two items share one; rows sorted by tokenizer then item_id.
    """
    for col, dtype in SCHEMA.items():
        if col not in df.columns:
            raise InputFormatError(path, f"missing column {col!r}; expected {list(SCHEMA)}")
        if df.schema[col] != dtype:
            raise InputFormatError(path, f"column {col!r} has type {df.schema[col]}, expected {dtype}")
    if df.height == 0:
        raise InputFormatError(path, "no rows: no tokenizer's IDs")
    for col in SCHEMA:
        if df[col].null_count():
            raise InputFormatError(path, f"column {col!r} has null values")
    sorted_df = df.sort(["tokenizer", "item_id"])
    if not sorted_df.select(["tokenizer", "item_id"]).equals(df.select(["tokenizer", "item_id"])):
        raise InputFormatError(path, "rows are not sorted by tokenizer then item_id")
    expected = None if item_ids is None else np.sort(np.asarray(item_ids).astype(np.int64))
    for (name,), part in df.group_by(["tokenizer"], maintain_order=True):
        items = part["item_id"].to_numpy().astype(np.int64)
        if np.unique(items).size != items.size:
            raise InputFormatError(path, f"tokenizer {name}: some items appear more than once")
        if expected is None:
            expected = items
        elif not np.array_equal(items, expected):
            raise InputFormatError(path, f"tokenizer {name}: does not list the same items as the others (or the given item ids)")
        lengths = part["codes"].list.len()
        if lengths.min() != lengths.max() or lengths.min() == 0:
            raise InputFormatError(path, f"tokenizer {name}: IDs must all have the same non-zero length, got {lengths.min()}..{lengths.max()}")
        codes = part["codes"].list.to_array(int(lengths.min())).to_numpy()
        if codes.min() < 0:
            raise InputFormatError(path, f"tokenizer {name}: negative codes")
        _, sizes = group_ids(codes)
        if sizes.max() > 1:
            raise InputFormatError(path, f"tokenizer {name}: {int((sizes > 1).sum())} IDs are shared by several items")


def read_id_table_with_items(path: str | Path, validate: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(item_ids [N] ascending, {tokenizer: IDs int64 [N, L']} in epoch order); row i = item_ids[i]."""
    df = read_parquet(path, "the item ID table (stage emit-ids)")
    if validate:
        validate_id_table(df, path)
    out: dict[str, np.ndarray] = {}
    item_ids = np.zeros(0, dtype=np.int64)
    parts = {name: part for (name,), part in df.group_by(["tokenizer"], maintain_order=True)}
    for name in sort_tokenizer_names(list(parts)):
        part = parts[name]
        item_ids = part["item_id"].to_numpy().astype(np.int64)
        width = int(part["codes"].list.len().max())
        out[name] = part["codes"].list.to_array(width).to_numpy().astype(np.int64)
    return item_ids, out


def read_id_table(path: str | Path, validate: bool = True) -> dict[str, np.ndarray]:
    """{tokenizer: IDs int64 [N, L']} in epoch order; rows in ascending item_id order."""
    return read_id_table_with_items(path, validate)[1]


def choose_tokenizer(names: list[str], choice: str) -> str:
    """``last`` / ``first`` (epoch order) or an exact kept tokenizer name like ``epoch_0200``."""
    if not names:
        raise MissingInputError("data/ids/item_ids.parquet", "no tokenizer in the ID table")
    if choice == "last":
        return names[-1]
    if choice == "first":
        return names[0]
    if choice in names:
        return choice
    raise ParamError("recommender.tokenizer", f"{choice!r} is not in the ID table; choose last, first or one of {', '.join(names)}")
