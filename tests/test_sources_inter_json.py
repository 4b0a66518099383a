"""The inter_json source (MTGRec / LC-Rec / LETTER / ETEGRec JSON releases) on hand-made folders."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from genrec_core.config import DataParams, load_params
from genrec_core.data.sources.base import get_source
from genrec_core.data.sources.inter_json import InterJsonSource
from genrec_core.errors import InputFormatError, MissingInputError, ParamError
from stages.preprocess import run as preprocess

# user keys out of numeric order on purpose; every item 4 times, every user 4 items (a 3-core)
INTER = {"10": [0, 1, 2, 3], "2": [3, 2, 1, 0], "7": [1, 0, 3, 2], "3": [2, 3, 0, 1]}
ITEMS = {
    "0": {"title": "Lipstick", "brand": "Acme", "categories": ["Beauty", "Makeup"], "description": " Red "},
    "1": {"description": "Bar soap", "title": "Soap", "categories": [["Beauty", "Bath"], "Soap"], "price": 3.5},
    "7": {"title": "Never bought"},  # no interactions: not in the processed items
    # items 2 and 3 have no text on purpose
}


def write(root: Path, inter=None, items=None, name: str = "Beauty") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for suffix, data in ((".inter.json", INTER if inter is None else inter), (".item.json", items)):
        if data is None:
            continue
        path = root / f"{name}{suffix}"
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data if isinstance(data, str) else json.dumps(data, indent=4), encoding="utf-8")
    return root


def load(root: Path, category: str | None = None):
    return InterJsonSource(DataParams(dataset="inter_json", raw_dir=str(root), category=category)).load()


def test_interactions_keep_each_users_list_in_file_order(tmp_path):
    ds = load(write(tmp_path))
    assert ds.presequenced is True and ds.name == "Beauty"
    assert ds.interactions.schema == {"user": pl.String, "item": pl.String, "timestamp": pl.Int64, "order": pl.Int64}
    expected = [(u, str(i)) for u, seq in INTER.items() for i in seq]
    assert ds.interactions.select("user", "item").rows() == expected
    assert ds.interactions["timestamp"].null_count() == 16
    assert ds.interactions["order"].to_list() == list(range(16))


def test_item_text_fields_and_template(tmp_path):
    ds = load(write(tmp_path, items=ITEMS))
    assert ds.items.columns == ["item", "title", "brand", "categories", "description", "price"]
    rows = {r["item"]: r for r in ds.items.to_dicts()}
    assert rows["0"] == {"item": "0", "title": "Lipstick", "brand": "Acme", "categories": "Beauty, Makeup", "description": "Red", "price": ""}
    assert rows["1"]["categories"] == "Beauty, Bath, Soap" and rows["1"]["price"] == "3.5" and rows["1"]["brand"] == ""
    assert ds.default_template == "Title: {title}. Brand: {brand}. Categories: {categories}. Description: {description}. Price: {price}."


def test_without_item_json_there_is_no_text(tmp_path):
    ds = load(write(tmp_path))
    assert ds.items.columns == ["item"] and ds.items.height == 0
    assert ds.default_template == "Item: {item}."


def test_processed_split_ends_each_user_with_their_last_item(tmp_path):
    raw = write(tmp_path / "raw", items=ITEMS)
    params = load_params(None, ["data.dataset=inter_json", f"data.raw_dir={raw}", "data.min_interactions=3"])
    preprocess(params, tmp_path / "out")
    processed = tmp_path / "out" / "data" / "processed"
    seqs = pl.read_parquet(processed / "sequences.parquet")
    items = pl.read_parquet(processed / "items.parquet")
    assert items["source_item_id"].to_list() == ["0", "1", "2", "3"] and items["item_id"].to_list() == [0, 1, 2, 3]
    by_user = {r["source_user_id"]: r for r in seqs.to_dicts()}
    for user, seq in INTER.items():
        row = by_user[user]
        assert row["items"] == seq  # item_id i is source item i here
        assert row["test_item"] == seq[-1] and row["valid_item"] == seq[-2] and row["train_items"] == seq[:-2]
    test = pl.read_parquet(processed / "test.parquet")
    assert sorted(test["target"].to_list()) == sorted(seq[-1] for seq in INTER.values())
    assert items.filter(pl.col("item_id") == 0)["categories"].item() == "Beauty, Makeup"
    assert items.filter(pl.col("item_id") == 2)["title"].item() == ""  # no text: empty
    info = json.loads((processed / "dataset.json").read_text())
    assert info["presequenced"] is True and info["text_fields"] == ["title", "brand", "categories", "description", "price"]


@pytest.mark.parametrize(
    "inter, entry, message",
    [
        ({"0": [1, 2], "5": [1, "x"]}, "user '5'", "'x' is not a non-negative integer"),
        ({"0": [1, 2], "5": [1, -3]}, "user '5'", "-3"),
        ({"0": [1, 2], "5": [1, 2.5]}, "user '5'", "2.5"),
        ({"0": [1, 2], "5": [True]}, "user '5'", "True"),
        ({"0": [1, 2], "5": []}, "user '5'", "an empty list"),
        ({"0": [1, 2], "5": {"a": 1}}, "user '5'", "non-empty list"),
        ([[1, 2]], "", "expected a JSON object"),
        ('{"0": [1, 2], "0": [3]}', "", "key '0' appears twice"),
    ],
)
def test_bad_inter_entry_is_named(tmp_path, inter, entry, message):
    write(tmp_path, inter=inter)
    with pytest.raises(InputFormatError, match="Beauty.inter.json") as err:
        load(tmp_path)
    assert entry in str(err.value) and message in str(err.value)


def test_malformed_json_and_bad_utf8_name_the_line(tmp_path):
    write(tmp_path / "a", inter='{\n  "0": [1, 2],\n  "1": [3,, 4]\n}')
    with pytest.raises(InputFormatError, match=r"Beauty\.inter\.json:3: malformed JSON"):
        load(tmp_path / "a")
    write(tmp_path / "b", inter=b'{\n  "0": [1, 2],\n  "\xff": [3]\n}')
    with pytest.raises(InputFormatError, match=r"Beauty\.inter\.json:3: bad encoding"):
        load(tmp_path / "b")


@pytest.mark.parametrize(
    "items, message",
    [
        ({"0": {"title": "a"}, "x1": {"title": "b"}}, "entry 'x1': item keys must be non-negative integer"),
        ({"0": {"title": "a"}, "4": "just text"}, "entry '4': expected an object of text fields"),
        ({"4": {"title": {"en": "b"}}}, "entry '4': field 'title' must be a string, number or list"),
        ({"4": {"item_id": "b"}}, "entry '4': field 'item_id' cannot be a text field"),
        ({"4": {"title": "a"}, "04": {"title": "b"}}, "entry '04': item 4 appears twice"),
    ],
)
def test_bad_item_entry_is_named(tmp_path, items, message):
    write(tmp_path, items=items)
    with pytest.raises(InputFormatError, match="Beauty.item.json") as err:
        load(tmp_path)
    assert message in str(err.value)


def test_name_is_data_category_or_the_only_inter_json(tmp_path):
    write(tmp_path, name="Beauty")
    write(tmp_path, inter={"0": [5, 6, 7]}, name="Toys")
    with pytest.raises(ParamError, match=r"data\.category.*several .inter.json files \(Beauty, Toys\)"):
        load(tmp_path)
    assert load(tmp_path, category="Toys").interactions["item"].to_list() == ["5", "6", "7"]
    with pytest.raises(MissingInputError, match=r"Sports\.inter\.json: file not found"):
        load(tmp_path, category="Sports")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingInputError, match="no .inter.json file"):
        load(tmp_path / "empty")
    with pytest.raises(MissingInputError, match="data.raw_dir must be a directory"):
        load(tmp_path / "absent")


def test_registered_as_inter_json(tmp_path):
    source = get_source(DataParams(dataset="inter_json", raw_dir=str(write(tmp_path))))
    assert isinstance(source, InterJsonSource)
    load_params(None, ["data.dataset=inter_json", f"data.raw_dir={tmp_path}"])  # a known dataset name
