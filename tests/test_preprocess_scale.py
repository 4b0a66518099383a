"""benchmarks/preprocess_scale.py end to end on tiny sizes (the real run is 10M and 30M reviews)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import preprocess_scale  # noqa: E402

sys.path.pop(0)


def test_parse_sizes():
    assert preprocess_scale.parse_sizes("10000000,30000000") == [10_000_000, 30_000_000]
    assert preprocess_scale.parse_sizes("10M, 2.5M,20K,7") == [10_000_000, 2_500_000, 20_000, 7]
    with pytest.raises(ValueError):
        preprocess_scale.parse_sizes("0")


def test_two_tiny_sizes_give_a_row_each_and_leave_no_files(tmp_path, capsys):
    rows = preprocess_scale.main(["--interactions", "3000,6000", "--workdir", str(tmp_path / "w"), "--json", str(tmp_path / "rows.json")])
    assert [r["interactions"] for r in rows] == [3000, 6000]
    for r in rows:
        assert not r["stopped"] and 0 < r["after_interactions"] <= r["interactions"]
        assert r["peak_rss_gib"] > 0.01 and r["preprocess_s"] > 0 and r["files_gb"] > r["reviews_gb"] > 0
    assert list((tmp_path / "w").iterdir()) == []
    out = capsys.readouterr().out
    assert "| 3,000 |" in out and "| 6,000 |" in out and "peak RSS" in out
    assert (tmp_path / "rows.json").is_file()


def test_a_run_past_the_memory_limit_is_stopped_and_reported(tmp_path):
    rows = preprocess_scale.main(["--interactions", "3000", "--workdir", str(tmp_path / "w"), "--max-rss-gib", "0.001"])
    assert rows[0]["stopped"]
    assert "stopped" in preprocess_scale.table(rows)
