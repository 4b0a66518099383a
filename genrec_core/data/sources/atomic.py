"""RecBole "atomic" files: ``<stem>.inter`` (interactions) and optional ``<stem>.item`` (item text).

Both are tab-separated with a typed header (``user_id:token	item_id:token	timestamp:float``), the
format RecBole ships its example datasets in and that many published preprocessings export. The
readers here are also what the ml-100k source uses for the copy inside the ``recbole`` wheel, so
both paths share one parser.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from genrec_core.data.readers import find_file_stem, read_lines
from genrec_core.data.sources.base import RawDataset, Source, register_source
from genrec_core.errors import InputFormatError

#: Field types RecBole defines for atomic headers.
ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")
USER_FIELD = "user_id"
ITEM_FIELD = "item_id"
TIME_FIELD = "timestamp"


def read_atomic_table(path: Path) -> tuple[pl.DataFrame, dict[str, str], int]:
    """Read one atomic file strictly as UTF-8.

    Returns the data rows (``line`` plus one String column per header field, in header order),
    ``{field name: type}`` and the header's line number. Every row must have exactly as many
    tab-separated fields as the header.
    """
    lines = read_lines(path)
    if lines.height == 0:
        raise InputFormatError(path, "empty file: expected a typed header such as 'user_id:token<TAB>item_id:token'")
    header_line, header_text = lines.row(0)
    fields: dict[str, str] = {}
    for raw in header_text.split("\t"):
        name, sep, ftype = raw.strip().rpartition(":")
        if not sep or not name:
            raise InputFormatError(path, f"header field {raw!r} is not 'name:type' (types: {', '.join(ATOMIC_TYPES)})", header_line)
        if ftype not in ATOMIC_TYPES:
            raise InputFormatError(path, f"header field {raw!r} has unknown type {ftype!r} (types: {', '.join(ATOMIC_TYPES)})", header_line)
        if name in fields:
            raise InputFormatError(path, f"header names field {name!r} twice", header_line)
        fields[name] = ftype
    names = list(fields)
    body = lines.slice(1)
    parts = body.select("line", pl.col("text").str.split("\t").alias("_parts"))
    bad = parts["_parts"].list.len() != len(names)
    if bad.any():
        line, found = parts.filter(bad).select("line", pl.col("_parts").list.len()).row(0)
        raise InputFormatError(path, f"expected {len(names)} tab-separated fields as in the header, found {found}", line)
    table = parts.select("line", *[pl.col("_parts").list.get(i).alias(f"_f{i}") for i in range(len(names))]).rename(
        {f"_f{i}": name for i, name in enumerate(names)}
    )
    return table, fields, header_line


def _require_fields(path: Path, fields: dict[str, str], header_line: int, required: tuple[str, ...]) -> None:
    missing = [name for name in required if name not in fields]
    if missing:
        raise InputFormatError(path, f"header lacks required field(s) {', '.join(missing)} (has: {', '.join(fields)})", header_line)


def _require_nonempty(table: pl.DataFrame, path: Path, column: str) -> None:
    empty = table[column].str.strip_chars() == ""
    if empty.any():
        raise InputFormatError(path, f"{column} is empty", table.filter(empty)["line"][0])


def _numeric_timestamp(table: pl.DataFrame, path: Path) -> pl.Series:
    """Timestamps as Int64, keeping their order.

    Integers and integral floats (RecBole writes ``881250949.0``) are kept as they are; if some
    value has a fraction, all values are replaced by their dense rank, which keeps the order
    (the only thing the protocol uses) without losing sub-unit ties.
    """
    text = table[TIME_FIELD].str.strip_chars()
    as_int = text.cast(pl.Int64, strict=False)
    as_float = text.cast(pl.Float64, strict=False)
    bad = as_float.is_null() | ~as_float.is_finite()
    if bad.any():
        row = table.filter(bad).row(0, named=True)
        raise InputFormatError(path, f"timestamp must be a number, got {row[TIME_FIELD]!r}", row["line"])
    fractional = as_int.is_null() & (as_float != as_float.floor())
    if fractional.any():
        return as_float.rank("dense").cast(pl.Int64)
    return pl.select(pl.coalesce(as_int, as_float.cast(pl.Int64))).to_series()


def read_atomic_inter(path: Path) -> pl.DataFrame:
    """Interactions of a ``.inter`` file: ``user``, ``item`` (tokens as written), ``timestamp``
    (Int64; null when the file has no timestamp field) and ``order`` (0-based row position)."""
    table, fields, header_line = read_atomic_table(path)
    _require_fields(path, fields, header_line, (USER_FIELD, ITEM_FIELD))
    _require_nonempty(table, path, USER_FIELD)
    _require_nonempty(table, path, ITEM_FIELD)
    if TIME_FIELD in fields:
        timestamp = _numeric_timestamp(table, path)
    else:
        timestamp = pl.Series(TIME_FIELD, [None] * table.height, dtype=pl.Int64)
    return pl.DataFrame(
        {
            "user": table[USER_FIELD],
            "item": table[ITEM_FIELD],
            "timestamp": timestamp,
            "order": pl.int_range(table.height, eager=True, dtype=pl.Int64),
        }
    )


def read_atomic_items(path: Path) -> pl.DataFrame:
    """Items of a ``.item`` file: ``item`` plus every other field as a String text field.

    Sequence fields (``token_seq``, ``float_seq``) stay the space-joined strings they are in the
    file. A repeated item id is an error: it would make the item's text ambiguous.
    """
    table, fields, header_line = read_atomic_table(path)
    _require_fields(path, fields, header_line, (ITEM_FIELD,))
    _require_nonempty(table, path, ITEM_FIELD)
    dup = table[ITEM_FIELD].is_duplicated()
    if dup.any():
        item = table.filter(dup)[ITEM_FIELD][0]
        lines = table.filter(pl.col(ITEM_FIELD) == item)["line"].to_list()
        raise InputFormatError(path, f"item_id {item!r} appears again (first on line {lines[0]})", lines[1])
    text_fields = [name for name in fields if name != ITEM_FIELD]
    return table.select(
        pl.col(ITEM_FIELD).alias("item"),
        *[pl.col(name).fill_null("").str.strip_chars() for name in text_fields],
    )


def atomic_template(text_fields: list[str]) -> str:
    """A readable template naming every text field, e.g. ``Movie title: {movie_title}.``;
    without text fields only the item token is left to embed."""
    if not text_fields:
        return "Item: {item}."
    return " ".join(f"{name.replace('_', ' ').capitalize()}: {{{name}}}." for name in text_fields)


def find_atomic_stem(raw_dir: Path, category: str | None) -> str:
    """``data.category`` when given, else the stem of the only ``.inter`` file in raw_dir."""
    return find_file_stem(raw_dir, category, ".inter")


@register_source
class AtomicSource(Source):
    """Any dataset in RecBole atomic format (``data.dataset: atomic``)."""

    name = "atomic"

    def load(self) -> RawDataset:
        raw_dir = self.raw_dir
        stem = find_atomic_stem(raw_dir, self.params.category)
        interactions = read_atomic_inter(raw_dir / f"{stem}.inter")
        item_path = raw_dir / f"{stem}.item"
        if item_path.is_file():
            items = read_atomic_items(item_path)
        else:
            items = pl.DataFrame({"item": []}, schema={"item": pl.String})
        text_fields = [c for c in items.columns if c != "item"]
        return RawDataset(
            interactions=interactions,
            items=items,
            default_template=atomic_template(text_fields),
            presequenced=False,
            name=stem,
        )
