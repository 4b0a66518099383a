"""Amazon Reviews 2023 (McAuley lab), one category as published: reviews + item metadata.

Files in ``raw_dir`` (``.gz`` variants accepted): ``<category>.jsonl`` (one review per line) and
``meta_<category>.jsonl`` (one item per line). Items are ``parent_asin`` (the dataset's standard:
colour/size variants of one product share it). Large categories have tens of millions of reviews
with many fields of mixed types (``details``, ``price``, ``images``), so polars reads only the
columns needed under an explicit schema, a piece of the file at a time (peak memory follows the
kept columns, not the file size); no Python code runs per line unless a line is bad.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from genrec_core.data.readers import invalid_json_id, locate_json_error, read_json_lines
from genrec_core.data.sources.base import RawDataset, Source, register_source
from genrec_core.errors import MissingInputError

REVIEW_FIELDS = {"user_id": pl.String, "parent_asin": pl.String, "timestamp": pl.Int64}
META_FIELDS = {
    "parent_asin": pl.String,
    "title": pl.String,
    "store": pl.String,
    "main_category": pl.String,
    "categories": pl.List(pl.String),
    "description": pl.List(pl.String),
    "features": pl.List(pl.String),
}
TEXT_FIELDS = ("title", "brand", "categories", "description", "features")
DEFAULT_TEMPLATE = "Title: {title}. Brand: {brand}. Categories: {categories}. Features: {features}. Description: {description}."


def find_file(raw_dir: Path, stem: str, what: str) -> Path:
    """``stem.jsonl`` or ``stem.jsonl.gz``; missing is an error naming the path it expected."""
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (raw_dir / name).is_file():
            return raw_dir / name
    raise MissingInputError(raw_dir / f"{stem}.jsonl", f"Amazon Reviews 2023 {what} (.jsonl or .jsonl.gz)")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_review(obj: dict) -> str | None:
    """Line-level rules that mirror the vectorised ones; only run to name a bad line."""
    for key in ("user_id", "parent_asin"):
        if obj[key] is None or obj[key] == "":
            return f"{key} is null or empty"
        if isinstance(obj[key], (list, dict)):
            return f"{key} must be a string, got {obj[key]!r}"[:300]
    if not _is_int(obj["timestamp"]):
        return f"timestamp must be an integer (milliseconds), got {obj['timestamp']!r}"
    return None


def _check_meta(obj: dict) -> str | None:
    if obj["parent_asin"] is None or obj["parent_asin"] == "" or isinstance(obj["parent_asin"], (list, dict)):
        return f"parent_asin must be a non-empty string, got {obj['parent_asin']!r}"[:300]
    for key in ("categories", "description", "features"):
        value = obj.get(key)
        if value is not None and not (isinstance(value, list) and all(v is None or isinstance(v, str) for v in value)):
            return f"{key} must be a list of strings, got {value!r}"[:300]
    return None


def read_reviews(path: Path) -> pl.DataFrame:
    """Interactions (user, item, timestamp, order) of one review file, in line order."""
    df = read_json_lines(path, REVIEW_FIELDS, tuple(REVIEW_FIELDS), _check_review).with_row_index("order")
    if df.select(pl.any_horizontal(invalid_json_id("user_id"), invalid_json_id("parent_asin"), pl.col("timestamp").is_null()).any()).item():
        raise locate_json_error(path, "a review with a null, empty or non-string id or timestamp", tuple(REVIEW_FIELDS), _check_review)
    return df.select(
        pl.col("user_id").alias("user"),
        pl.col("parent_asin").alias("item"),
        "timestamp",
        pl.col("order").cast(pl.Int64),
    )


def _join(column: str, separator: str) -> pl.Expr:
    return pl.col(column).list.eval(pl.element().str.strip_chars()).list.drop_nulls().list.join(separator).fill_null("")


def read_meta(path: Path) -> pl.DataFrame:
    """Item text fields, one row per parent_asin (first row wins when the file repeats one)."""
    df = read_json_lines(path, META_FIELDS, ("parent_asin",), _check_meta)
    if df.select(invalid_json_id("parent_asin").any()).item():
        raise locate_json_error(path, "an item without parent_asin", ("parent_asin",), _check_meta)
    categories = _join("categories", " > ")
    return df.select(
        pl.col("parent_asin").alias("item"),
        pl.col("title").fill_null("").str.strip_chars(),
        pl.col("store").fill_null("").str.strip_chars().alias("brand"),
        # Many items have an empty category path; main_category ("All Beauty", ...) still says something.
        pl.when(categories != "").then(categories).otherwise(pl.col("main_category").fill_null("")).alias("categories"),
        _join("description", " "),
        _join("features", "; "),
    ).unique("item", keep="first", maintain_order=True)


@register_source
class Amazon2023Source(Source):
    """``data.dataset: amazon2023`` with ``data.category`` = the file stem (e.g. Musical_Instruments)."""

    name = "amazon2023"

    def load(self) -> RawDataset:
        category = self.params.category
        reviews_path = find_file(self.raw_dir, category, "reviews")
        # The embed stage needs item text, so the meta file is required, not optional.
        meta_path = find_file(self.raw_dir, f"meta_{category}", "item metadata")
        interactions = read_reviews(reviews_path)
        items = read_meta(meta_path)
        # Items reviewed but absent from the meta file still get a row (empty text).
        unseen = (
            interactions.select(pl.col("item").unique(maintain_order=True))
            .join(items.select("item"), on="item", how="anti", maintain_order="left")
            .with_columns([pl.lit("").alias(c) for c in TEXT_FIELDS])
        )
        if unseen.height:
            items = pl.concat([items, unseen], how="vertical")
        return RawDataset(
            interactions=interactions,
            items=items,
            default_template=DEFAULT_TEMPLATE,
            presequenced=False,
            name=self.name,
        )
