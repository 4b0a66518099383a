"""The P5 / IDGenRec release format (``data.dataset: idgenrec``).

``data.raw_dir`` holds ``user_sequence.txt`` (one line per user: ``user item item ...``,
whitespace-separated string ids, e.g. Amazon ASINs, in time order) and optionally
``item_generative_indexing_phase_0.txt`` (one line per item: ``ITEMID word word ...``, the item's
title words), read as the text field ``title``.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from genrec_core.data.readers import first_repeat, read_lines, read_user_sequences, require_file
from genrec_core.data.sources.atomic import atomic_template
from genrec_core.data.sources.base import RawDataset, Source, register_source
from genrec_core.errors import InputFormatError

SEQUENCES = "user_sequence.txt"
ITEM_TITLES = "item_generative_indexing_phase_0.txt"
DEFAULT_TEMPLATE = atomic_template(["title"])  # "Title: {title}.", as the atomic source writes a title field


def read_item_titles(path: Path) -> pl.DataFrame:
    """``item`` and ``title`` (the words after the id, single-spaced; may be empty). An item on
    two lines is an error naming the second."""
    lines = read_lines(path)
    parts = lines.select(
        "line",
        pl.col("text").str.strip_chars().str.extract(r"^(\S+)", 1).alias("item"),
        pl.col("text").str.strip_chars().str.replace(r"^\S+\s*", "").str.replace_all(r"\s+", " ").alias("title"),
    )
    if repeat := first_repeat(parts, "item"):
        item, first, second = repeat
        raise InputFormatError(path, f"item {item!r} already has a line ({first})", second)
    return parts.select("item", "title")


@register_source
class IdGenRecSource(Source):
    """``data.dataset: idgenrec``: presequenced (no timestamps; ``order`` keeps each line's sequence)."""

    name = "idgenrec"

    def load(self) -> RawDataset:
        raw_dir = self.raw_dir
        interactions = read_user_sequences(require_file(raw_dir / SEQUENCES, "the P5/IDGenRec user sequences"))
        titles = raw_dir / ITEM_TITLES
        if titles.is_file():
            items, template = read_item_titles(titles), DEFAULT_TEMPLATE
        else:
            items, template = pl.DataFrame({"item": []}, schema={"item": pl.String}), atomic_template([])
        return RawDataset(interactions=interactions, items=items, default_template=template, presequenced=True, name=self.name)
