"""The amazon2023 source on hand-written files in the published format, and the synthetic generator."""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
from pathlib import Path

import polars as pl
import pytest

from genrec_core.config import DataParams
from genrec_core.data.sources.amazon2023 import Amazon2023Source
from genrec_core.data.sources.base import get_source
from genrec_core.errors import InputFormatError, MissingInputError

CAT = "Musical_Instruments"

REVIEWS = [
    {
        "rating": 5.0,
        "title": "Great",
        "text": "Love it",
        "images": [],
        "asin": "A1v",
        "parent_asin": "P1",
        "user_id": "U1",
        "timestamp": 1588687728923,
        "helpful_vote": 2,
        "verified_purchase": True,
    },
    {
        "rating": 1,
        "title": "Bad",
        "text": "Broke",
        "images": [{"small_image_url": "s", "large_image_url": "l", "attachment_type": "IMAGE"}],
        "asin": "A2",
        "parent_asin": "P2",
        "user_id": "U2",
        "timestamp": 1588687728000,
        "helpful_vote": 0,
        "verified_purchase": False,
    },
    {
        "rating": "4.0",
        "title": None,
        "text": "",
        "images": None,
        "asin": "A1w",
        "parent_asin": "P1",
        "user_id": "U2",
        "timestamp": 1500000000000,
        "helpful_vote": "1",
        "verified_purchase": True,
        "extra_field": {"x": 1},
    },
    {
        "rating": 3.0,
        "title": "Meh",
        "text": "x",
        "images": [],
        "asin": "A9",
        "parent_asin": "P9",
        "user_id": "U1",
        "timestamp": 1588687728923,
        "helpful_vote": 0,
        "verified_purchase": True,
    },
]
META = [
    {
        "main_category": "Musical Instruments",
        "title": " Fender Strat ",
        "average_rating": 4.6,
        "rating_number": 120,
        "features": ["Alder body", "3 pickups"],
        "description": ["A classic.", "Made in Mexico."],
        "price": 699.99,
        "images": [{"thumb": "t", "large": "l", "variant": "MAIN", "hi_res": None}],
        "videos": [],
        "store": "Fender",
        "categories": ["Musical Instruments", "Guitars", "Electric Guitars"],
        "details": {"Color": "Sunburst", "Weight": 3.5},
        "parent_asin": "P1",
        "bought_together": None,
    },
    {
        "main_category": "All Beauty",
        "title": "Picks",
        "average_rating": 4.1,
        "rating_number": 3,
        "features": [],
        "description": [],
        "price": "None",
        "images": [],
        "videos": [],
        "store": None,
        "categories": [],
        "details": '{"Material": "Celluloid"}',
        "parent_asin": "P2",
        "bought_together": None,
    },
    {"title": "Strap", "parent_asin": "P3", "store": "Levy's"},
]


def write(root: Path, reviews=None, meta=None, gz: bool = False, category: str = CAT) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in ((category, REVIEWS if reviews is None else reviews), (f"meta_{category}", META if meta is None else meta)):
        data = b"".join((r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode("utf-8")) + b"\n" for r in rows)
        if gz:
            (root / f"{name}.jsonl.gz").write_bytes(gzip.compress(data))
        else:
            (root / f"{name}.jsonl").write_bytes(data)
    return root


def load(root: Path, category: str = CAT):
    return Amazon2023Source(DataParams(dataset="amazon2023", raw_dir=str(root), category=category)).load()


def test_interactions_use_parent_asin_ms_timestamps_and_line_order(tmp_path):
    ds = load(write(tmp_path))
    assert ds.presequenced is False
    assert ds.interactions.rows() == [
        ("U1", "P1", 1588687728923, 0),
        ("U2", "P2", 1588687728000, 1),
        ("U2", "P1", 1500000000000, 2),
        ("U1", "P9", 1588687728923, 3),
    ]


def test_item_text_fields(tmp_path):
    items = {row["item"]: row for row in load(write(tmp_path)).items.to_dicts()}
    assert set(items) == {"P1", "P2", "P3", "P9"}  # P9 is reviewed but has no meta row
    assert items["P1"] == {
        "item": "P1",
        "title": "Fender Strat",
        "brand": "Fender",
        "categories": "Musical Instruments > Guitars > Electric Guitars",
        "description": "A classic. Made in Mexico.",
        "features": "Alder body; 3 pickups",
    }
    # empty category path falls back to main_category; null store and empty lists become ""
    assert items["P2"] == {"item": "P2", "title": "Picks", "brand": "", "categories": "All Beauty", "description": "", "features": ""}
    assert items["P3"] == {"item": "P3", "title": "Strap", "brand": "Levy's", "categories": "", "description": "", "features": ""}
    assert items["P9"] == {"item": "P9", "title": "", "brand": "", "categories": "", "description": "", "features": ""}
    template = load(tmp_path).default_template
    assert "Fender Strat" in template.format(**items["P1"])


def test_gz_files_give_the_same_result(tmp_path):
    plain = load(write(tmp_path / "plain"))
    gz = load(write(tmp_path / "gz", gz=True))
    assert gz.interactions.equals(plain.interactions)
    assert gz.items.equals(plain.items)


def test_duplicate_meta_rows_keep_the_first(tmp_path):
    meta = META + [{"title": "Other title", "parent_asin": "P1"}]
    items = load(write(tmp_path, meta=meta)).items
    assert items.filter(pl.col("item") == "P1")["title"].to_list() == ["Fender Strat"]


GOOD = {"user_id": "U3", "parent_asin": "P3", "timestamp": 1600000000000}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"user_id": "U3", "parent_asin": "P3", "timestamp": 16', "malformed JSON"),
        ({"parent_asin": "P3", "timestamp": 1600000000000}, "missing field"),
        ({"user_id": "U3", "timestamp": 1600000000000}, "missing field"),
        ({"user_id": "U3", "parent_asin": "P3"}, "missing field"),
        ({"user_id": "U3", "parent_asin": "P3", "timestamp": "yesterday"}, "timestamp must be an integer"),
        ({"user_id": "U3", "parent_asin": "P3", "timestamp": 1.5}, "timestamp must be an integer"),
        ({"user_id": "U3", "parent_asin": "P3", "timestamp": None}, "timestamp must be an integer"),
        ({"user_id": None, "parent_asin": "P3", "timestamp": 1}, "user_id"),
        ({"user_id": "U3", "parent_asin": "", "timestamp": 1}, "parent_asin"),
        ({"user_id": "U3", "parent_asin": ["P3"], "timestamp": 1}, "parent_asin"),
        (b'{"user_id": "U\xff", "parent_asin": "P3", "timestamp": 1}', "UTF-8"),
        ("[1, 2]", "JSON object"),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_bad_review_line_is_named(tmp_path, bad, message, gz):
    root = write(tmp_path, reviews=[REVIEWS[0], GOOD, bad, REVIEWS[1]], gz=gz)
    with pytest.raises(InputFormatError, match=message) as err:
        load(root)
    assert err.value.line == 3
    assert err.value.path == str(root / (f"{CAT}.jsonl.gz" if gz else f"{CAT}.jsonl"))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"parent_asin": "P4", "title": "x"', "malformed JSON"),
        ({"title": "no id"}, "missing field"),
        ({"parent_asin": "P4", "categories": "Guitars"}, "categories must be a list"),
        ({"parent_asin": None}, "parent_asin"),
    ],
)
def test_bad_meta_line_is_named(tmp_path, bad, message):
    root = write(tmp_path, meta=[META[0], bad, META[1]])
    with pytest.raises(InputFormatError, match=message) as err:
        load(root)
    assert err.value.line == 2
    assert err.value.path == str(root / f"meta_{CAT}.jsonl")


def test_missing_files_name_the_expected_path(tmp_path):
    root = write(tmp_path)
    (root / f"meta_{CAT}.jsonl").unlink()
    with pytest.raises(MissingInputError, match=f"meta_{CAT}.jsonl"):
        load(root)
    with pytest.raises(MissingInputError, match="Other.jsonl"):
        load(root, category="Other")


def test_registered_as_amazon2023(tmp_path):
    source = get_source(DataParams(dataset="amazon2023", raw_dir=str(write(tmp_path)), category=CAT))
    assert isinstance(source, Amazon2023Source)


# --------------------------------------------------------------------------- synthetic generator


def _generator():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "make_synthetic_amazon.py"
    spec = importlib.util.spec_from_file_location("make_synthetic_amazon", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_synthetic_category_is_readable_deterministic_and_five_core_friendly(tmp_path):
    gen = _generator()
    a = gen.make_synthetic_amazon(tmp_path / "a", interactions=20_000, category="Syn", seed=3)
    b = gen.make_synthetic_amazon(tmp_path / "b", interactions=20_000, category="Syn", seed=3)
    assert a.reviews.read_bytes() == b.reviews.read_bytes() and a.meta.read_bytes() == b.meta.read_bytes()
    first = json.loads(a.reviews.open(encoding="utf-8").readline())
    assert list(first) == ["rating", "title", "text", "images", "asin", "parent_asin", "user_id", "timestamp", "helpful_vote", "verified_purchase"]
    meta_first = json.loads(a.meta.open(encoding="utf-8").readline())
    assert {"main_category", "features", "description", "price", "store", "categories", "details", "parent_asin", "bought_together"} <= set(meta_first)

    ds = load(tmp_path / "a", category="Syn")
    inter = ds.interactions
    assert inter.height == 20_000 == a.interactions
    assert inter["user"].n_unique() == a.users
    assert ds.items.height == a.items  # every item has a meta row, ids are unique
    df = inter.select("user", "item")
    while True:
        n = df.height
        df = df.filter((pl.len().over("user") >= 5) & (pl.len().over("item") >= 5))
        if df.height == n:
            break
    assert df.height > 0.5 * inter.height
    # popularity is skewed: the top 1% of items hold far more than 1% of interactions
    counts = inter.group_by("item").len().sort("len", descending=True)["len"]
    assert counts.head(max(1, len(counts) // 100)).sum() > 0.05 * inter.height
