"""Yelp, in either of the two forms papers use.

``p5``: the S3-Rec/P5 release paper 001 uses (``sequential_data.txt``: ``user item item ...`` per
line, already five-core filtered and in time order; ``Yelp.item.json``: item text keyed by
``str(id - 1)``). ``official``: the Yelp Open Dataset (``review.json`` + ``business.json`` JSON
lines, also under their download names ``yelp_academic_dataset_*.json``); review.json is ~5 GB,
so only the needed columns are read, lazily, by polars.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import polars as pl

from genrec_core.data.readers import collect_json, invalid_json_id, locate_json_error, read_json_document, read_json_lines, read_user_sequences, require_file
from genrec_core.data.sources.base import RawDataset, Source, register_source
from genrec_core.errors import InputFormatError, MissingInputError, ParamError

P5_SEQUENCES = "sequential_data.txt"
P5_ITEMS = "Yelp.item.json"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
DEFAULT_TEMPLATE = "Business: {title}. Categories: {categories}."
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


def _first_existing(raw_dir: Path, names: list[str]) -> Path | None:
    for name in names:
        for candidate in (raw_dir / name, raw_dir / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def official_file(raw_dir: Path, kind: str) -> Path | None:
    """``review.json`` / ``business.json`` or the download's ``yelp_academic_dataset_<kind>.json``."""
    return _first_existing(raw_dir, [f"{kind}.json", f"yelp_academic_dataset_{kind}.json"])


def detect_format(raw_dir: Path, requested: str) -> str:
    """Resolve ``data.yelp_format: auto`` from the files present."""
    if requested != "auto":
        return requested
    if not raw_dir.is_dir():
        raise MissingInputError(raw_dir, "data.raw_dir for yelp")
    if _first_existing(raw_dir, [P5_SEQUENCES]) is not None:
        return "p5"
    if official_file(raw_dir, "review") is not None:
        return "official"
    raise ParamError(
        "data.yelp_format",
        f"auto could not tell the format of {raw_dir}: expected {P5_SEQUENCES} (P5 release) or review.json + business.json (Yelp Open Dataset)",
    )


# --------------------------------------------------------------------------- P5 release


def _p5_id(token: pl.Expr) -> pl.Expr:
    """The P5 release numbers users and items from 1; anything else is null (an error)."""
    value = token.cast(pl.Int64, strict=False)
    return pl.when(value >= 1).then(value)


def read_p5_sequences(path: Path) -> pl.DataFrame:
    """One row per interaction; ``order`` is the running position in the file, so it keeps each line's sequence."""
    return read_user_sequences(path, _p5_id, "ids must be integers from 1")


def find_item_text_file(raw_dir: Path) -> Path:
    """``Yelp.item.json``, else the only ``*.item.json`` in the folder."""
    if (raw_dir / P5_ITEMS).is_file():
        return raw_dir / P5_ITEMS
    candidates = sorted(p for p in raw_dir.glob("*.item.json") if p.is_file())
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise MissingInputError(raw_dir / P5_ITEMS, "item text of the P5 Yelp release (or one *.item.json)")
    raise ParamError("data.raw_dir", f"{raw_dir} has several *.item.json files ({', '.join(p.name for p in candidates)}); keep one or name it {P5_ITEMS}")


def read_p5_items(path: Path) -> pl.DataFrame:
    """Item text keyed by ``str(id - 1)`` -> rows (item = str(id), title, categories)."""
    data = read_json_document(path)
    if not isinstance(data, dict):
        raise InputFormatError(path, "expected a JSON object keyed by item index (str(id - 1))")
    items, titles, categories = [], [], []
    for key, value in data.items():  # ~20k entries: a Python loop is fine here
        if not key.strip().isdigit() or not isinstance(value, dict):
            raise InputFormatError(path, f"entry {key!r}: expected a non-negative integer key and an object with title/description")
        items.append(str(int(key) + 1))
        titles.append(str(value.get("title") or "").strip())
        categories.append(str(value.get("description") or "").strip())
    return pl.DataFrame({"item": items, "title": titles, "categories": categories}, schema={c: pl.String for c in ("item", "title", "categories")})


# --------------------------------------------------------------------------- Yelp Open Dataset

REVIEW_FIELDS = {"user_id": pl.String, "business_id": pl.String, "date": pl.String}
BUSINESS_FIELDS = {"business_id": pl.String, "name": pl.String, "categories": pl.String, "city": pl.String, "state": pl.String}


def _check_review(obj: dict) -> str | None:
    """The vectorised rules, line by line; only runs to name the first bad line."""
    for key in ("user_id", "business_id"):
        if not isinstance(obj[key], str) or not obj[key]:
            return f"{key} must be a non-empty string, got {obj[key]!r}"[:300]
    date = obj["date"]
    try:
        if not isinstance(date, str) or not _DATE_RE.match(date):
            raise ValueError
        datetime.strptime(date, DATE_FORMAT)
    except ValueError:
        return f"date must look like 'YYYY-MM-DD HH:MM:SS', got {date!r}"[:300]
    return None


def _check_business(obj: dict) -> str | None:
    if not isinstance(obj["business_id"], str) or not obj["business_id"]:
        return f"business_id must be a non-empty string, got {obj['business_id']!r}"[:300]
    return None


def read_official_reviews(path: Path) -> pl.DataFrame:
    frame = read_json_lines(path, REVIEW_FIELDS, tuple(REVIEW_FIELDS), _check_review).lazy().with_row_index("order")
    frame = frame.with_columns(pl.col("date").str.strptime(pl.Datetime("us"), DATE_FORMAT, strict=False).dt.epoch("s").alias("timestamp"))
    df = collect_json(frame, path, tuple(REVIEW_FIELDS), _check_review)
    bad = pl.any_horizontal(invalid_json_id("user_id"), invalid_json_id("business_id"), pl.col("timestamp").is_null())
    if df.select(bad.any()).item():
        raise locate_json_error(path, "a review with a bad id or date", tuple(REVIEW_FIELDS), _check_review)
    return df.select(
        pl.col("user_id").alias("user"),
        pl.col("business_id").alias("item"),
        pl.col("timestamp").cast(pl.Int64),
        pl.col("order").cast(pl.Int64),
    )


def read_official_businesses(path: Path) -> pl.DataFrame:
    df = read_json_lines(path, BUSINESS_FIELDS, ("business_id",), _check_business)
    if df.select(invalid_json_id("business_id").any()).item():
        raise locate_json_error(path, "a business without business_id", ("business_id",), _check_business)
    return df.select(
        pl.col("business_id").alias("item"),
        pl.col("name").fill_null("").str.strip_chars().alias("title"),
        pl.col("categories").fill_null("").str.strip_chars(),
        pl.col("city").fill_null("").str.strip_chars(),
        pl.col("state").fill_null("").str.strip_chars(),
    ).unique("item", keep="first", maintain_order=True)


# --------------------------------------------------------------------------- the source


def _with_missing_items(items: pl.DataFrame, interactions: pl.DataFrame) -> pl.DataFrame:
    """Items that have interactions but no text row get one with empty strings."""
    unseen = interactions.select(pl.col("item").unique(maintain_order=True)).join(items.select("item"), on="item", how="anti", maintain_order="left")
    if not unseen.height:
        return items
    fill = unseen.with_columns([pl.lit("").alias(c) for c in items.columns if c != "item"])
    return pl.concat([items, fill], how="vertical")


@register_source
class YelpSource(Source):
    """``data.dataset: yelp``; ``data.yelp_format`` picks p5, official, or auto (by the files present)."""

    name = "yelp"

    def load(self) -> RawDataset:
        raw_dir = self.raw_dir
        fmt = detect_format(raw_dir, self.params.yelp_format)
        if fmt == "p5":
            sequences = _first_existing(raw_dir, [P5_SEQUENCES]) or require_file(raw_dir / P5_SEQUENCES, "P5 Yelp release")
            interactions = read_p5_sequences(sequences)
            items = read_p5_items(find_item_text_file(raw_dir))
            presequenced = True
        else:
            reviews = official_file(raw_dir, "review") or require_file(raw_dir / "review.json", "Yelp Open Dataset reviews")
            businesses = official_file(raw_dir, "business") or require_file(raw_dir / "business.json", "Yelp Open Dataset businesses (item text)")
            interactions = read_official_reviews(reviews)
            items = read_official_businesses(businesses)
            presequenced = False
        return RawDataset(
            interactions=interactions,
            items=_with_missing_items(items, interactions),
            default_template=DEFAULT_TEMPLATE,
            presequenced=presequenced,
            name=self.name,
        )
