"""The yelp source: P5 release and Yelp Open Dataset, format detection, strict errors, real counts."""

from __future__ import annotations

import calendar
import gzip
import json
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from genrec_core.config import DataParams
from genrec_core.data.sources.base import get_source
from genrec_core.data.sources.yelp import YelpSource, detect_format
from genrec_core.errors import InputFormatError, MissingInputError, ParamError


def load(raw_dir: Path, fmt: str = "auto"):
    return YelpSource(DataParams(dataset="yelp", raw_dir=str(raw_dir), yelp_format=fmt)).load()


def epoch(date: str) -> int:
    return calendar.timegm(datetime.strptime(date, "%Y-%m-%d %H:%M:%S").timetuple())


# --------------------------------------------------------------------------- P5 fixtures

P5_ITEMS = {
    "0": {"title": "The Great Greek", "description": "Diners, Greek, Mediterranean, Restaurants"},
    "1": {"title": "Sal's Pizza", "description": "Pizza, Restaurants"},
    "2": {"title": "Cigar Outlet", "description": None},
    # item 4 (key "3") has no text on purpose
}


def write_p5(root: Path, sequences: str = "1 1 2 3\n2 2 4\n\n3  3\t1 2\n", items=None, item_file: str = "Yelp.item.json") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "sequential_data.txt").write_text(sequences, encoding="utf-8")
    (root / item_file).write_text(json.dumps(P5_ITEMS if items is None else items, indent=2), encoding="utf-8")
    (root / "Yelp_item2attributes.json").write_text('{"1": [1, 2]}', encoding="utf-8")
    return root


def test_p5_interactions_keep_the_file_sequence(tmp_path):
    ds = load(write_p5(tmp_path))
    assert ds.presequenced is True
    assert ds.interactions.rows() == [
        ("1", "1", None, 0),
        ("1", "2", None, 1),
        ("1", "3", None, 2),
        ("2", "2", None, 3),
        ("2", "4", None, 4),
        ("3", "3", None, 5),
        ("3", "1", None, 6),
        ("3", "2", None, 7),
    ]
    assert ds.interactions.schema == {"user": pl.String, "item": pl.String, "timestamp": pl.Int64, "order": pl.Int64}


def test_p5_item_text_is_keyed_by_id_minus_one_and_missing_text_is_empty(tmp_path):
    ds = load(write_p5(tmp_path))
    items = {row["item"]: (row["title"], row["categories"]) for row in ds.items.to_dicts()}
    assert items == {
        "1": ("The Great Greek", "Diners, Greek, Mediterranean, Restaurants"),
        "2": ("Sal's Pizza", "Pizza, Restaurants"),
        "3": ("Cigar Outlet", ""),
        "4": ("", ""),
    }
    assert ds.default_template.format(title="T", categories="C") == "Business: T. Categories: C."


def test_p5_accepts_a_single_other_item_json_and_rejects_ambiguity(tmp_path):
    ds = load(write_p5(tmp_path / "a", item_file="Other.item.json"))
    assert ds.items.filter(pl.col("item") == "1")["title"].item() == "The Great Greek"
    root = write_p5(tmp_path / "b", item_file="One.item.json")
    (root / "Two.item.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ParamError, match="several"):
        load(root)
    root = write_p5(tmp_path / "c")
    (root / "Yelp.item.json").unlink()
    with pytest.raises(MissingInputError, match="Yelp.item.json"):
        load(root)


def test_p5_gzipped_sequences(tmp_path):
    root = write_p5(tmp_path)
    text = (root / "sequential_data.txt").read_bytes()
    (root / "sequential_data.txt").unlink()
    (root / "sequential_data.txt.gz").write_bytes(gzip.compress(text))
    assert load(root).interactions.height == 8


@pytest.mark.parametrize(
    ("sequences", "line", "message"),
    [
        ("1 1 2\n2\n", 2, "at least one item"),
        ("1 1 2\n2 3 x4\n", 2, "'x4'"),
        ("1 1 2\n\n2 3 0\n", 3, "from 1"),
        ("u1 1 2\n", 1, "'u1'"),
        ("1 1 2\n2 3\n1 4 5\n", 3, "already has a line"),
    ],
)
def test_p5_bad_sequence_lines_name_file_and_line(tmp_path, sequences, line, message):
    root = write_p5(tmp_path, sequences=sequences)
    with pytest.raises(InputFormatError, match=message) as err:
        load(root)
    assert err.value.line == line
    assert err.value.path == str(root / "sequential_data.txt")


def test_p5_bad_encoding_names_the_line(tmp_path):
    root = write_p5(tmp_path)
    (root / "sequential_data.txt").write_bytes(b"1 1 2\n2 3 4\xff\n")
    with pytest.raises(InputFormatError, match="UTF-8") as err:
        load(root)
    assert err.value.line == 2


def test_p5_malformed_item_json_names_the_line(tmp_path):
    root = write_p5(tmp_path)
    (root / "Yelp.item.json").write_text('{\n  "0": {"title": "A"},\n  "1": {"title": "B",}\n}\n', encoding="utf-8")
    with pytest.raises(InputFormatError) as err:
        load(root)
    assert err.value.line == 3 and err.value.path.endswith("Yelp.item.json")


# --------------------------------------------------------------------------- official fixtures

REVIEWS = [
    {"review_id": "r1", "user_id": "uA", "business_id": "bX", "stars": 5.0, "useful": 1, "text": "Great", "date": "2018-07-07 22:09:11"},
    {"review_id": "r2", "user_id": "uB", "business_id": "bY", "stars": 3, "useful": "n/a", "text": "Ok", "date": "2012-01-03 15:28:18"},
    {"review_id": "r3", "user_id": "uA", "business_id": "bZ", "stars": 4.0, "text": None, "date": "2014-02-05 20:30:30"},
]
BUSINESSES = [
    {
        "business_id": "bX",
        "name": "Oskar Blues Taproom",
        "city": "Boulder",
        "state": "CO",
        "categories": "Gastropubs, Food, Beer",
        "attributes": {"WiFi": "u'free'"},
        "hours": None,
    },
    {
        "business_id": "bY",
        "name": "Flying Elephants",
        "city": "Portland",
        "state": "OR",
        "categories": None,
        "attributes": None,
        "hours": {"Monday": "7:0-20:0"},
    },
]


def write_official(root: Path, reviews=None, businesses=None, gz: bool = False, names=("review.json", "business.json")) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in zip(names, (REVIEWS if reviews is None else reviews, BUSINESSES if businesses is None else businesses)):
        text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode("utf-8")
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(text))
        else:
            (root / name).write_bytes(text)
    return root


def test_official_interactions_have_epoch_seconds_and_line_order(tmp_path):
    ds = load(write_official(tmp_path))
    assert ds.presequenced is False
    assert ds.interactions.rows() == [
        ("uA", "bX", epoch("2018-07-07 22:09:11"), 0),
        ("uB", "bY", epoch("2012-01-03 15:28:18"), 1),
        ("uA", "bZ", epoch("2014-02-05 20:30:30"), 2),
    ]
    assert epoch("2018-07-07 22:09:11") == 1_531_001_351  # 17719 days + 22:09:11, UTC


def test_official_items_text_and_reviewed_items_without_business_row(tmp_path):
    items = load(write_official(tmp_path)).items
    assert items.sort("item").rows() == [
        ("bX", "Oskar Blues Taproom", "Gastropubs, Food, Beer", "Boulder", "CO"),
        ("bY", "Flying Elephants", "", "Portland", "OR"),
        ("bZ", "", "", "", ""),
    ]
    assert items.columns == ["item", "title", "categories", "city", "state"]


def test_official_gz_and_download_names(tmp_path):
    plain = load(write_official(tmp_path / "plain"))
    gz = load(write_official(tmp_path / "gz", gz=True))
    named = load(write_official(tmp_path / "named", names=("yelp_academic_dataset_review.json", "yelp_academic_dataset_business.json")))
    assert gz.interactions.equals(plain.interactions) and named.interactions.equals(plain.interactions)
    assert gz.items.equals(plain.items)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"user_id": "uC", "business_id": "bX", "date": "2018-07-07 22:09:11"', "malformed JSON"),
        ({"user_id": "uC", "business_id": "bX"}, "missing field"),
        ({"business_id": "bX", "date": "2018-07-07 22:09:11"}, "missing field"),
        ({"user_id": "uC", "business_id": "bX", "date": "2018-13-07 22:09:11"}, "date"),
        ({"user_id": "uC", "business_id": "bX", "date": "07/07/2018"}, "date"),
        ({"user_id": "uC", "business_id": None, "date": "2018-07-07 22:09:11"}, "business_id"),
        ({"user_id": ["uC"], "business_id": "bX", "date": "2018-07-07 22:09:11"}, "user_id"),
        ("[1, 2]", "JSON object"),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_official_bad_review_line_is_named(tmp_path, bad, message, gz):
    root = write_official(tmp_path, reviews=[REVIEWS[0], REVIEWS[1], bad, REVIEWS[2]], gz=gz)
    with pytest.raises(InputFormatError, match=message) as err:
        load(root)
    assert err.value.line == 3
    assert err.value.path == str(root / ("review.json.gz" if gz else "review.json"))


def test_official_bad_encoding_and_bad_business_line(tmp_path):
    root = write_official(tmp_path / "enc")
    (root / "review.json").write_bytes((root / "review.json").read_bytes() + b'{"user_id": "u\xff", "business_id": "b", "date": "2018-07-07 22:09:11"}\n')
    with pytest.raises(InputFormatError, match="UTF-8") as err:
        load(root)
    assert err.value.line == 4
    root = write_official(tmp_path / "biz", businesses=[BUSINESSES[0], {"name": "no id"}])
    with pytest.raises(InputFormatError, match="business_id") as err:
        load(root)
    assert err.value.line == 2 and err.value.path.endswith("business.json")


def test_official_missing_business_file(tmp_path):
    root = write_official(tmp_path)
    (root / "business.json").unlink()
    with pytest.raises(MissingInputError, match="business.json"):
        load(root)


# --------------------------------------------------------------------------- detection, registry


def test_format_detection(tmp_path):
    assert detect_format(write_p5(tmp_path / "p5"), "auto") == "p5"
    assert detect_format(write_official(tmp_path / "off"), "auto") == "official"
    assert detect_format(write_official(tmp_path / "offgz", gz=True), "auto") == "official"
    assert detect_format(tmp_path / "p5", "official") == "official"  # an explicit choice wins
    (tmp_path / "empty").mkdir()
    with pytest.raises(ParamError, match="yelp_format"):
        detect_format(tmp_path / "empty", "auto")
    with pytest.raises(MissingInputError):
        detect_format(tmp_path / "nowhere", "auto")
    with pytest.raises(MissingInputError, match="review.json"):
        load(tmp_path / "p5", "official")


def test_registered_as_yelp(tmp_path):
    source = get_source(DataParams(dataset="yelp", raw_dir=str(write_p5(tmp_path))))
    assert isinstance(source, YelpSource)


# --------------------------------------------------------------------------- real data


def test_real_p5_yelp_counts_and_text(shared_dataset):
    ds = load(shared_dataset("yelp"))
    inter = ds.interactions
    assert inter.height == 316_354
    assert inter["user"].n_unique() == 30_431
    assert inter["item"].n_unique() == 20_033
    assert ds.items.height == 20_033
    assert inter["order"].to_list() == list(range(inter.height))
    first = ds.items.filter(pl.col("item") == "1").row(0, named=True)
    assert first["title"] == "The Great Greek"
    assert first["categories"] == "Diners, Greek, Mediterranean, Restaurants"
    # user 2's line is "2 57 58 59 60 61"
    assert inter.filter(pl.col("user") == "2")["item"].to_list() == ["57", "58", "59", "60", "61"]
