"""RecBole atomic files: parsed values on hand-written files, and one clear error per bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from genrec_core.config import DataParams
from genrec_core.data.sources.atomic import AtomicSource, atomic_template, read_atomic_inter, read_atomic_items
from genrec_core.errors import InputFormatError, MissingInputError, ParamError

INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\nu1\ti9\t4\t300.0\nu2\ti8\t5\t100\nu1\ti8\t3\t200\n"
ITEM = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\ni8\tThe Matrix\t1999\tAction Sci-Fi\ni9\tHeat\t1995\tCrime\n"


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


def load(raw_dir: Path, category: str | None = None):
    return AtomicSource(DataParams(dataset="atomic", raw_dir=str(raw_dir), category=category)).load()


def test_inter_and_item_values(tmp_path):
    write(tmp_path / "toy.inter", INTER)
    write(tmp_path / "toy.item", ITEM)
    ds = load(tmp_path)
    inter = ds.interactions
    assert inter.columns == ["user", "item", "timestamp", "order"]
    assert inter.rows() == [("u1", "i9", 300, 0), ("u2", "i8", 100, 1), ("u1", "i8", 200, 2)]
    assert ds.items.rows() == [("i8", "The Matrix", "1999", "Action Sci-Fi"), ("i9", "Heat", "1995", "Crime")]
    assert ds.items.columns == ["item", "movie_title", "release_year", "class"]
    assert ds.default_template == "Movie title: {movie_title}. Release year: {release_year}. Class: {class}."
    assert ds.name == "toy"
    assert not ds.presequenced


def test_without_timestamp_and_item_file(tmp_path):
    write(tmp_path / "x.inter", "item_id:token\tuser_id:token\nb\tu\na\tu\n\n")
    ds = load(tmp_path)
    assert ds.interactions.rows() == [("u", "b", None, 0), ("u", "a", None, 1)]
    assert ds.items.height == 0 and ds.items.columns == ["item"]
    assert ds.default_template == "Item: {item}."


def test_fractional_timestamps_keep_their_order(tmp_path):
    path = write(tmp_path / "f.inter", "user_id:token\titem_id:token\ttimestamp:float\nu\ta\t2.5\nu\tb\t1.25\nu\tc\t2.5\nu\td\t3\n")
    assert read_atomic_inter(path)["timestamp"].to_list() == [2, 1, 2, 3]


def test_category_picks_the_stem(tmp_path):
    write(tmp_path / "a.inter", INTER)
    write(tmp_path / "b.inter", "user_id:token\titem_id:token\nz\ty\n")
    with pytest.raises(ParamError, match="data.category"):
        load(tmp_path)
    assert load(tmp_path, "b").interactions.rows() == [("z", "y", None, 0)]
    with pytest.raises(MissingInputError, match=r"c\.inter"):
        load(tmp_path, "c")


def test_no_inter_file(tmp_path):
    write(tmp_path / "toy.item", ITEM)
    with pytest.raises(MissingInputError, match="no .inter file"):
        load(tmp_path)


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("user_id:token\trating:float\nu\t1\n", 1, "lacks required field.*item_id"),
        ("item_id:token\ttimestamp:float\ni\t1\n", 1, "lacks required field.*user_id"),
        ("user_id:token\titem_id:token\ttimestamp:float\nu\ti\t1\nu\ti\n", 3, "expected 3 tab-separated fields.*found 2"),
        ("user_id:token\titem_id:token\ttimestamp:float\nu\ti\t1\nu\ti\tyesterday\n", 3, "timestamp must be a number.*yesterday"),
        ("user_id:token\titem_id:token\ttimestamp:float\nu\ti\tnan\n", 2, "timestamp must be a number"),
        ("user_id:token\titem_id:token\n\nu\t\n", 3, "item_id is empty"),
        ("user_id:token\titem_id:tokens\n", 1, "unknown type 'tokens'"),
        ("user_id\titem_id:token\n", 1, "not 'name:type'"),
        ("user_id:token\tuser_id:token\titem_id:token\n", 1, "twice"),
    ],
)
def test_bad_inter_names_file_and_line(tmp_path, text, line, message):
    path = write(tmp_path / "bad.inter", text)
    with pytest.raises(InputFormatError, match=message) as err:
        read_atomic_inter(path)
    assert err.value.path == str(path)
    assert err.value.line == line


def test_bad_encoding_in_inter(tmp_path):
    path = write(tmp_path / "bad.inter", b"user_id:token\titem_id:token\nu\ti\nu\tcaf\xe9\n")
    with pytest.raises(InputFormatError, match="UTF-8") as err:
        load(tmp_path)
    assert (err.value.path, err.value.line) == (str(path), 3)


def test_empty_inter_file(tmp_path):
    path = write(tmp_path / "e.inter", "")
    with pytest.raises(InputFormatError, match="empty file") as err:
        read_atomic_inter(path)
    assert err.value.path == str(path)


def test_duplicate_item_in_item_file(tmp_path):
    path = write(tmp_path / "d.item", ITEM + "i8\tAgain\t2000\tDrama\n")
    with pytest.raises(InputFormatError, match="first on line 2") as err:
        read_atomic_items(path)
    assert err.value.line == 4


def test_item_file_without_item_id(tmp_path):
    path = write(tmp_path / "d.item", "title:token_seq\nHeat\n")
    with pytest.raises(InputFormatError, match="item_id") as err:
        read_atomic_items(path)
    assert err.value.line == 1


def test_template_from_fields():
    assert atomic_template(["title", "brand_name"]) == "Title: {title}. Brand name: {brand_name}."
    assert atomic_template(["title"]).format(title="Heat") == "Title: Heat."
