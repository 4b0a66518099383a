"""The items a served model ranks: the catalogue table and its in-memory index.

The table (``catalogue_frame``: item_id, source_item_id, title, train_count, then the other text
fields) is what a bundle stores as ``items.parquet``; ``Catalog`` is what ranking reads (row =
internal item index). ``extend_catalogue`` appends added items (cold start) without touching the
existing rows, so indices stay valid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl


def title_column(columns: Sequence[str]) -> str | None:
    """The items table's title column: ``title``, else the first column whose name contains it."""
    if "title" in columns:
        return "title"
    return next((c for c in columns if "title" in c.lower() and c not in ("item_id", "source_item_id")), None)


def catalogue_frame(items: pl.DataFrame, sequences: pl.DataFrame | None) -> pl.DataFrame:
    """``item_id, source_item_id, title, train_count`` (+ the other text fields) from the preprocess
    stage's items table and (for the popularity fallback) its sequences' training items."""
    n = items.height
    items = items.sort("item_id")
    if n == 0 or not np.array_equal(items["item_id"].to_numpy(), np.arange(n)):
        raise ValueError("item ids must be 0..N-1 (the preprocess stage numbers items densely)")
    counts = np.zeros(n, dtype=np.int64)
    if sequences is not None and "train_items" in sequences.columns:
        flat = sequences["train_items"].explode().drop_nulls().to_numpy().astype(np.int64)
        counts = np.bincount(flat[(flat >= 0) & (flat < n)], minlength=n).astype(np.int64)
    col = title_column(items.columns)
    title = items[col].cast(pl.String) if col else pl.Series("title", [None] * n, dtype=pl.String)
    extra = [c for c in items.columns if c not in ("item_id", "source_item_id", "title", "train_count")]
    return pl.DataFrame(
        {
            "item_id": items["item_id"].cast(pl.Int32),
            "source_item_id": items["source_item_id"].cast(pl.String),
            "title": title.alias("title"),
            "train_count": counts,
        }
    ).hstack(items.select(extra))


@dataclass(frozen=True)
class Catalog:
    """The items a model ranks: row = internal item index."""

    source_ids: list[str]
    titles: list[str | None]
    train_count: np.ndarray  # int64 [N]
    index: dict[str, int] = field(repr=False)
    popular: np.ndarray = field(repr=False)  # item indices, most seen in training first

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> Catalog:
        frame = frame.sort("item_id")
        source_ids = [str(s) for s in frame["source_item_id"].to_list()]
        counts = frame["train_count"].to_numpy().astype(np.int64) if "train_count" in frame.columns else np.zeros(frame.height, np.int64)
        popular = np.lexsort((np.arange(frame.height), -counts)).astype(np.int64)
        titles = frame["title"].to_list() if "title" in frame.columns else [None] * frame.height
        return cls(source_ids, titles, counts, {s: i for i, s in enumerate(source_ids)}, popular)

    def __len__(self) -> int:
        return len(self.source_ids)


def extend_catalogue(frame: pl.DataFrame | None, catalog: Catalog, new: Sequence[Any], start: int) -> pl.DataFrame:
    """The catalogue frame with one row per new item (``new_items.NewItem``s; train_count 0; title
    and text fields as given), numbered from ``start``."""
    if frame is None:
        frame = pl.DataFrame(
            {
                "item_id": np.arange(len(catalog), dtype=np.int32),
                "source_item_id": catalog.source_ids,
                "title": catalog.titles,
                "train_count": catalog.train_count,
            }
        )
    rows: dict[str, list] = {c: [] for c in frame.columns}
    for j, it in enumerate(new):
        for c in frame.columns:
            if c == "item_id":
                rows[c].append(start + j)
            elif c == "source_item_id":
                rows[c].append(it.source_id)
            elif c == "train_count":
                rows[c].append(0)
            elif c == "title":
                col = title_column(list(it.fields))
                rows[c].append(it.fields.get(col) if col else None)
            else:
                rows[c].append(it.fields.get(c, ""))
    added = pl.DataFrame(rows, schema=frame.schema)
    return pl.concat([frame, added])
