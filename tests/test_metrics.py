"""Hit@K / NDCG@K and relaxed prefix matching on rankings whose values are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from genrec_core.evaluation.metrics import (
    as_padded,
    evaluation_summary,
    hit_ndcg,
    metrics_from_predictions,
    per_user_metrics,
    prefix_match_ranks,
    relaxed_prefix_ndcg,
    target_ranks,
)


def test_target_ranks_first_position_absent_and_padding():
    lists = [[5, 3, 9], [1, 2, 3], [7, 8], [4, 4], []]
    targets = [5, 3, 1, 4, 2]
    # 5 at rank 1; 3 at rank 3; 1 absent; 4 twice -> first position; empty list -> absent
    assert target_ranks(lists, targets).tolist() == [1, 3, 0, 1, 0]
    padded = np.array([[5, 3, 9], [1, 2, 3], [7, 8, -1], [4, 4, -1], [-1, -1, -1]])
    assert target_ranks(padded, targets).tolist() == [1, 3, 0, 1, 0]
    series = pl.Series([[5, 3, 9], [1, 2, 3], [7, 8], [4, 4], []], dtype=pl.List(pl.Int32))
    assert target_ranks(series, np.array(targets, dtype=np.int32)).tolist() == [1, 3, 0, 1, 0]


def test_as_padded_width_and_mismatch():
    assert as_padded([[1, 2, 3], [4]], width=2).tolist() == [[1, 2], [4, -1]]
    assert as_padded(pl.Series([[1], [2, 3]], dtype=pl.List(pl.Int32)), width=3).tolist() == [[1, -1, -1], [2, 3, -1]]
    with pytest.raises(ValueError):
        target_ranks([[1], [2]], [1])


def test_hit_ndcg_hand_computed():
    ranks = np.array([1, 3, 0, 10, 11])
    m = hit_ndcg(ranks, [1, 5, 10])
    # Hit@1: only rank 1 -> 1/5.  NDCG@1: 1/log2(2) = 1 -> 1/5.
    assert m["hit@1"] == pytest.approx(1 / 5)
    assert m["ndcg@1"] == pytest.approx(1 / 5)
    # @5: ranks 1 and 3. NDCG = (1/log2(2) + 1/log2(4)) / 5 = (1 + 0.5) / 5 = 0.3
    assert m["hit@5"] == pytest.approx(2 / 5)
    assert m["ndcg@5"] == pytest.approx(0.3)
    # @10: rank 10 is inside (K edge), rank 11 is not: (1 + 0.5 + 1/log2(11)) / 5
    assert m["hit@10"] == pytest.approx(3 / 5)
    assert m["ndcg@10"] == pytest.approx((1 + 0.5 + 1 / math.log2(11)) / 5)
    assert list(m) == ["hit@1", "ndcg@1", "hit@5", "ndcg@5", "hit@10", "ndcg@10"]


def test_k_edges_and_absent_users_count_as_zero():
    # rank == K counts, rank K + 1 does not; absent users (0) stay in the denominator
    m = hit_ndcg([5, 6, 0, 0], [5])
    assert m["hit@5"] == pytest.approx(1 / 4)
    assert m["ndcg@5"] == pytest.approx((1 / math.log2(6)) / 4)  # 1/log2(6) = 0.38685...
    assert hit_ndcg([], [5]) == {"hit@5": 0.0, "ndcg@5": 0.0}


def test_per_user_metrics_arrays():
    per_user = per_user_metrics([2, 0, 1], [1, 2])
    assert per_user["hit@1"].tolist() == [0.0, 0.0, 1.0]
    assert per_user["hit@2"].tolist() == [1.0, 0.0, 1.0]
    assert per_user["ndcg@2"] == pytest.approx([1 / math.log2(3), 0.0, 1.0])


def test_metrics_from_predictions_table():
    pred = pl.DataFrame(
        {
            "user_id": [0, 1, 2],
            "target_item": [7, 8, 9],
            "items": [[7, 1], [1, 8], [1, 2]],
            "scores": [[0.0, -1.0], [0.0, -1.0], [0.0, -1.0]],
        },
        schema={"user_id": pl.Int32, "target_item": pl.Int32, "items": pl.List(pl.Int32), "scores": pl.List(pl.Float32)},
    )
    m = metrics_from_predictions(pred, [1, 2])
    # ranks 1, 2, absent: Hit@1 = 1/3; NDCG@2 = (1 + 1/log2(3)) / 3
    assert m["hit@1"] == pytest.approx(1 / 3)
    assert m["hit@2"] == pytest.approx(2 / 3)
    assert m["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 3)


# item ids 10..13 (not 0..N-1, so the lookup is exercised); 3 tokens per ID
ITEM_IDS = np.array([10, 11, 12, 13])
CODES = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]])


def test_prefix_match_ranks_by_level():
    lists = [[13, 12, 11, 10], [11, 12]]
    targets = [10, 13]
    ranks = prefix_match_ranks(lists, targets, CODES, ITEM_IDS)
    # user 0, target 10 = (0,0,0): 13=(1,..) no; 12=(0,1,0) shares 1 token -> level 1 at rank 2;
    # 11=(0,0,1) shares 2 -> level 2 at rank 3; 10 itself -> level 3 at rank 4.
    # user 1, target 13 = (1,0,0): nothing starts with 1 -> 0 at every level.
    assert ranks.tolist() == [[2, 3, 4], [0, 0, 0]]


def test_relaxed_prefix_ndcg_values_and_exact_level():
    lists = [[13, 12, 11, 10], [11, 12]]
    targets = [10, 13]
    r = relaxed_prefix_ndcg(lists, targets, CODES, ITEM_IDS, k=5)
    assert list(r) == ["prefix3_ndcg@5", "prefix2_ndcg@5", "prefix1_ndcg@5"]
    assert r["prefix3_ndcg@5"] == pytest.approx((1 / math.log2(5)) / 2)  # rank 4
    assert r["prefix2_ndcg@5"] == pytest.approx((1 / math.log2(4)) / 2)  # rank 3: 0.5 / 2
    assert r["prefix1_ndcg@5"] == pytest.approx((1 / math.log2(3)) / 2)  # rank 2
    # the full-length level is the exact metric when IDs are unique
    assert r["prefix3_ndcg@5"] == pytest.approx(hit_ndcg(target_ranks(lists, targets), [5])["ndcg@5"])
    # k cuts: with k=3 the exact match at rank 4 no longer counts
    assert relaxed_prefix_ndcg(lists, targets, CODES, ITEM_IDS, k=3)["prefix3_ndcg@3"] == 0.0


def test_prefix_match_ignores_unknown_items_and_rejects_unknown_targets():
    ranks = prefix_match_ranks([[99, -1, 10]], [10], CODES, ITEM_IDS)
    assert ranks.tolist() == [[3, 3, 3]]
    with pytest.raises(ValueError, match="targets without an ID"):
        prefix_match_ranks([[10]], [99], CODES, ITEM_IDS)


def test_evaluation_summary_keys():
    pred = pl.DataFrame(
        {"user_id": [0, 1], "target_item": [10, 13], "items": [[13, 12, 11, 10], [11, 12]]},
        schema={"user_id": pl.Int32, "target_item": pl.Int32, "items": pl.List(pl.Int32)},
    )
    s = evaluation_summary(pred, [1, 5], CODES, ITEM_IDS)
    assert s["users"] == 2
    assert s["hit@5"] == pytest.approx(0.5)
    assert s["prefix1_ndcg@5"] == pytest.approx((1 / math.log2(3)) / 2)
    assert "prefix1_ndcg@5" not in evaluation_summary(pred, [1, 5])
