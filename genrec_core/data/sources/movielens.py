"""MovieLens 100K and 1M in their GroupLens formats (and ml-100k from PyPI in RecBole's format).

Both give the same item text fields, all Strings: ``title`` (without the trailing " (YYYY)"),
``year`` and ``genres`` ("Animation, Children's, Comedy"). ml-100k without ``raw_dir`` is
obtained by ``genrec_core.data.download``; its two origins parse to identical interactions and
item text (the RecBole conversion's two quirks are undone in ``_recbole_items``).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from genrec_core.data.download import obtain_ml100k
from genrec_core.data.readers import parse_integer, read_lines, require_file, split_fields
from genrec_core.data.sources.atomic import read_atomic_inter, read_atomic_items
from genrec_core.data.sources.base import RawDataset, Source, register_source
from genrec_core.errors import InputFormatError, MissingInputError, ParamError

DEFAULT_TEMPLATE = "Title: {title}. Year: {year}. Genres: {genres}."

#: u.genre of ml-100k, used when the file is absent (index = position of the flag in u.item).
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
_U_ITEM_FIXED = ["item", "raw_title", "release_date", "video_release_date", "imdb_url"]

#: RecBole's ml-100k.item writes the missing title and year of item 267 as this misspelling;
#: u.item has title "unknown" and no release date there.
_RECBOLE_MISSING = "unkonwn"


def _title_year(raw_title: pl.Expr, fallback_year: pl.Expr | None = None) -> list[pl.Expr]:
    """``title`` = the title without a trailing "(YYYY)"; ``year`` = the last "(YYYY)" in the
    title (e.g. "... (1995) (V)" gives 1995), else ``fallback_year``, else ""."""
    raw = raw_title.str.strip_chars()
    title = raw.str.replace(r"\s*\(\d{4}\)$", "").str.strip_chars()
    year = raw.str.extract(r".*\((\d{4})\)", 1)
    if fallback_year is not None:
        year = pl.coalesce(year, fallback_year)
    return [title.fill_null("").alias("title"), year.fill_null("").alias("year")]


def _interactions(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    """Integer-checked user/item/timestamp columns -> the interaction schema, file order kept."""
    for column, what in (("user", "user id"), ("item", "item id"), ("timestamp", "timestamp")):
        df = parse_integer(df, column, path, what)
    return df.select(
        pl.col("user").cast(pl.String),
        pl.col("item").cast(pl.String),
        pl.col("timestamp"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("order"),
    )


def _reject_duplicate_items(df: pl.DataFrame, path: Path) -> None:
    dup = df["item"].is_duplicated()
    if dup.any():
        item = df.filter(dup)["item"][0]
        lines = df.filter(pl.col("item") == item)["line"].to_list()
        raise InputFormatError(path, f"movie id {item} appears again (first on line {lines[0]})", lines[1])


# --------------------------------------------------------------------------- ml-100k


def read_u_data(path: Path) -> pl.DataFrame:
    """``u.data``: user \\t item \\t rating \\t timestamp, strict UTF-8 (it is ASCII)."""
    df = split_fields(read_lines(path), path, "\t", ["user", "item", "rating", "timestamp"])
    return _interactions(df, path)


def read_u_genre(path: Path) -> tuple[str, ...]:
    """Genre names by flag position from ``u.genre`` (``name|index``); standard names if absent."""
    if not path.is_file():
        return ML100K_GENRES
    df = split_fields(read_lines(path, "latin-1"), path, "|", ["name", "index"])
    if df.height == 0:
        raise InputFormatError(path, "no genres: expected lines 'name|index'")
    df = parse_integer(df, "index", path, "genre index")
    out_of_place = df.filter(pl.col("index") != pl.int_range(pl.len(), dtype=pl.Int64))
    if out_of_place.height:
        raise InputFormatError(path, "genre indices must be 0, 1, 2, ... in file order", out_of_place["line"][0])
    return tuple(df["name"].str.strip_chars().to_list())


def read_u_item(path: Path, genres: tuple[str, ...]) -> pl.DataFrame:
    """``u.item`` (latin-1): id|title|release date|video release date|IMDb URL|one 0/1 flag per genre."""
    flags = [f"_g{i}" for i in range(len(genres))]
    df = split_fields(read_lines(path, "latin-1"), path, "|", _U_ITEM_FIXED + flags)
    df = parse_integer(df, "item", path, "movie id").with_columns(pl.col("item").cast(pl.String))
    _reject_duplicate_items(df, path)
    bad = pl.any_horizontal([~pl.col(f).is_in(["0", "1"]) for f in flags])
    wrong = df.filter(bad)
    if wrong.height:
        raise InputFormatError(path, f"genre flags (fields 6-{5 + len(flags)}) must be 0 or 1", wrong["line"][0])
    genre_list = pl.concat_list([pl.when(pl.col(f) == "1").then(pl.lit(name)) for f, name in zip(flags, genres, strict=True)]).list.drop_nulls()
    release_year = pl.col("release_date").str.strip_chars().str.extract(r"(\d{4})$", 1)
    return df.select(
        "item",
        *_title_year(pl.col("raw_title"), release_year),
        genre_list.list.join(", ").alias("genres"),
    )


def _recbole_items(path: Path) -> pl.DataFrame:
    """RecBole's ml-100k.item -> the same title/year/genres as u.item gives.

    RecBole split "Title (YYYY)" into ``movie_title`` and ``release_year`` by the last
    parenthesis, so "Land Before Time III: ... (1995) (V)" became title "... (1995)", year "V";
    rejoining the two and parsing like u.item restores u.item's reading. Its ``class`` is the
    genres joined by spaces (no genre name contains one).
    """
    items = read_atomic_items(path)
    missing = [c for c in ("movie_title", "release_year", "class") if c not in items.columns]
    if missing:
        raise InputFormatError(path, f"header lacks field(s) {', '.join(missing)} of RecBole's ml-100k.item", 1)
    name = pl.col("movie_title")
    year = pl.col("release_year")
    name = pl.when(name == _RECBOLE_MISSING).then(pl.lit("unknown")).otherwise(name)
    full_title = pl.when((year == "") | (year == _RECBOLE_MISSING)).then(name).otherwise(pl.format("{} ({})", name, year))
    return items.select(
        "item",
        *_title_year(full_title),
        pl.col("class").str.split(" ").list.eval(pl.element().filter(pl.element() != "")).list.join(", ").alias("genres"),
    )


def load_ml100k_grouplens(directory: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Interactions and items from the GroupLens files in ``directory``."""
    interactions = read_u_data(require_file(directory / "u.data", "ml-100k ratings (GroupLens u.data)"))
    genres = read_u_genre(directory / "u.genre")
    items = read_u_item(require_file(directory / "u.item", "ml-100k movies (GroupLens u.item)"), genres)
    return interactions, items


def load_ml100k_recbole(directory: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Interactions and items from RecBole's ml-100k.inter / ml-100k.item in ``directory``."""
    interactions = read_atomic_inter(require_file(directory / "ml-100k.inter", "RecBole ml-100k.inter"))
    items = _recbole_items(require_file(directory / "ml-100k.item", "RecBole ml-100k.item"))
    return interactions, items


@register_source
class ML100K(Source):
    """MovieLens 100K: GroupLens files in ``raw_dir``, or fetched per ``data.download``."""

    name = "ml-100k"

    def load(self) -> RawDataset:
        if self.params.raw_dir is not None:
            interactions, items = load_ml100k_grouplens(self.raw_dir)
        else:
            directory = obtain_ml100k(Path(self.params.cache_dir), self.params.download)
            if self.params.download == "pypi":
                interactions, items = load_ml100k_recbole(directory)
            else:
                interactions, items = load_ml100k_grouplens(directory)
        return RawDataset(interactions=interactions, items=items, default_template=DEFAULT_TEMPLATE, name=self.name)


# --------------------------------------------------------------------------- ml-1m


def find_ratings_file(raw_dir: Path) -> Path:
    """``ratings.dat``, ``ratings.dat.gz``, else the only ``ratings*.dat[.gz]`` (e.g. a subset)."""
    if not raw_dir.is_dir():
        raise MissingInputError(raw_dir, "data.raw_dir must be a directory holding ratings.dat and movies.dat")
    for name in ("ratings.dat", "ratings.dat.gz"):
        if (raw_dir / name).is_file():
            return raw_dir / name
    found = sorted(p for p in raw_dir.glob("ratings*.dat*") if p.is_file() and p.name.endswith((".dat", ".dat.gz")))
    if not found:
        raise MissingInputError(raw_dir / "ratings.dat", "MovieLens 1M ratings (ratings.dat or ratings*.dat.gz)")
    if len(found) > 1:
        raise ParamError("data.raw_dir", f"{raw_dir} holds several ratings files ({', '.join(p.name for p in found)}); keep one")
    return found[0]


def read_ml1m_ratings(path: Path) -> pl.DataFrame:
    """``UserID::MovieID::Rating::Timestamp``, strict UTF-8 (it is ASCII), ``.gz`` allowed."""
    df = split_fields(read_lines(path), path, "::", ["user", "item", "rating", "timestamp"])
    return _interactions(df, path)


def read_ml1m_movies(path: Path) -> pl.DataFrame:
    """``MovieID::Title (YYYY)::Genre|Genre`` (latin-1)."""
    df = split_fields(read_lines(path, "latin-1"), path, "::", ["item", "raw_title", "genres"])
    df = parse_integer(df, "item", path, "movie id").with_columns(pl.col("item").cast(pl.String))
    _reject_duplicate_items(df, path)
    genres = pl.col("genres").str.strip_chars().str.split("|").list.eval(pl.element().filter(pl.element() != ""))
    return df.select("item", *_title_year(pl.col("raw_title")), genres.list.join(", ").alias("genres"))


@register_source
class ML1M(Source):
    """MovieLens 1M (or a subset of its ratings) from the GroupLens files in ``raw_dir``."""

    name = "ml-1m"

    def load(self) -> RawDataset:
        raw_dir = self.raw_dir
        interactions = read_ml1m_ratings(find_ratings_file(raw_dir))
        items = read_ml1m_movies(require_file(raw_dir / "movies.dat", "MovieLens 1M movies.dat"))
        return RawDataset(interactions=interactions, items=items, default_template=DEFAULT_TEMPLATE, name=self.name)
