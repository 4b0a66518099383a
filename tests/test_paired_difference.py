"""benchmarks/paired_difference.py on hand-made predictions: per-user differences, the paired error
and the error on a sample, computed by hand."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import paired_difference as pdiff  # noqa: E402


def workspace(root: Path, name: str, users: list[int], targets: list[int], items: list[list[int]], valid: dict | None = None) -> Path:
    ws = root / name
    (ws / "data" / "predictions").mkdir(parents=True)
    pl.DataFrame(
        {"user_id": users, "target_item": targets, "items": items, "scores": [[0.0] * len(x) for x in items]},
        schema={"user_id": pl.Int32, "target_item": pl.Int32, "items": pl.List(pl.Int32), "scores": pl.List(pl.Float32)},
    ).write_parquet(ws / pdiff.PREDICTIONS)
    if valid is not None:
        (ws / "reports" / "train").mkdir(parents=True)
        (ws / pdiff.BEST_VALID).write_text(json.dumps(valid))
    return ws


@pytest.fixture
def pair(tmp_path):
    targets = [10, 11, 12, 13]
    # base: user 0 at rank 1, user 1 missing, user 2 at rank 3, user 3 missing (rows out of user order)
    base = workspace(
        tmp_path,
        "base",
        [2, 0, 1, 3],
        [12, 10, 11, 13],
        [[5, 6, 12], [10, 5, 6], [5, 6, 7], [5, 6, 7]],
        valid={"best_valid_hit@10": 0.5, "best_valid_ndcg@10": 0.25},
    )
    # run: user 0 missing, users 1 and 2 at rank 1, user 3 at rank 2
    run = workspace(
        tmp_path, "run", [0, 1, 2, 3], targets, [[5, 6, 7], [11, 5, 6], [12, 5, 6], [5, 13, 6]], valid={"best_valid_hit@10": 0.6, "best_valid_ndcg@10": 0.2}
    )
    return base, run


def test_paired_difference_by_hand(pair):
    base, run = pair
    rows = {r["metric"]: r for r in pdiff.compare(base, [run], [10], sample=1)}
    hit, ndcg = rows["hit@10"], rows["ndcg@10"]
    # hit@10: base [1, 0, 1, 0], run [0, 1, 1, 1] -> diff [-1, 1, 0, 1]
    sd = math.sqrt(((-1.25) ** 2 + 0.75**2 + (-0.25) ** 2 + 0.75**2) / 3)
    assert hit["run"] == "run" and hit["users"] == 4 and hit["sample"] == 1
    assert hit["base_mean"] == pytest.approx(0.5) and hit["run_mean"] == pytest.approx(0.75)
    assert hit["diff"] == pytest.approx(0.25) and hit["relative"] == pytest.approx(0.5)
    assert hit["sd"] == pytest.approx(sd) and hit["se"] == pytest.approx(sd / 2)
    assert hit["ci_low"] == pytest.approx(0.25 - 1.96 * sd / 2) and hit["ci_high"] == pytest.approx(0.25 + 1.96 * sd / 2)
    assert hit["se_sample"] == pytest.approx(sd * math.sqrt(3 / 4))  # one of four users: x sqrt(1 - 1/4)
    assert hit["p"] == pytest.approx(math.erfc(0.25 / (sd / 2) / math.sqrt(2)))
    assert hit["valid_diff"] == pytest.approx(0.1)
    # ndcg@10: base [1, 0, 1/log2(4), 0], run [0, 1, 1, 1/log2(3)]
    diff = [-1.0, 1.0, 0.5, 1 / math.log2(3)]
    assert ndcg["diff"] == pytest.approx(sum(diff) / 4)
    assert ndcg["relative"] == pytest.approx(sum(diff) / 4 / 0.375)
    assert ndcg["valid_diff"] == pytest.approx(-0.05)


def test_a_sample_of_every_user_has_no_error(pair):
    base, run = pair
    assert all(r["se_sample"] == 0 for r in pdiff.compare(base, [run], [10], sample=4))


def test_runs_over_other_users_are_refused(tmp_path, pair):
    base, _ = pair
    other = workspace(tmp_path, "other", [0, 1, 2], [10, 11, 12], [[10], [11], [12]])
    with pytest.raises(SystemExit, match="other users"):
        pdiff.compare(base, [other], [10], sample=2)


def test_markdown_and_json_written(tmp_path, pair):
    base, run = pair
    out = tmp_path / "out" / "diff"
    assert pdiff.main(["--base", str(base), "--runs", str(run), "--sample", "2", "--note", "run: made by hand", "--out", str(out)]) == 0
    text = out.with_suffix(".md").read_text()
    assert "| `run` | hit@10 | 0.5000 | 0.7500 | +0.2500 (+50.0%) | 0.4787 |" in text
    assert text.endswith("\n- run: made by hand\n")
    assert len(json.loads(out.with_suffix(".json").read_text())) == 2


def test_missing_predictions_named(tmp_path, pair):
    base, _ = pair
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no test predictions"):
        pdiff.compare(base, [tmp_path / "empty"], [10], sample=2)
