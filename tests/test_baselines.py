"""MostPop and the first-order Markov chain on a hand-made dataset with hand-derived top lists."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from genrec_core.evaluation.baselines import (
    PREDICTION_SCHEMA,
    MarkovChain,
    MostPop,
    baseline_predictions,
    popularity_order,
    train_counts,
    transition_counts,
)
from genrec_core.evaluation.metrics import metrics_from_predictions, target_ranks

N_ITEMS = 5


def _sequences() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [0, 1, 2],
            "train_items": [[0, 1, 2], [1, 2], [2, 3, 1]],
            "valid_item": [3, 0, 2],
            "test_item": [1, 1, 0],
        },
        schema={"user_id": pl.Int32, "train_items": pl.List(pl.Int32), "valid_item": pl.Int32, "test_item": pl.Int32},
    )


def _examples(split: str) -> pl.DataFrame:
    if split == "test":  # history = train_items + valid_item
        data = {"user_id": [0, 1, 2], "history": [[0, 1, 2, 3], [1, 2, 0], [2, 3, 1, 2]], "target": [1, 1, 0]}
    else:
        data = {"user_id": [0, 1, 2], "history": [[0, 1, 2], [1, 2], [2, 3, 1]], "target": [3, 0, 2]}
    return pl.DataFrame(data, schema={"user_id": pl.Int32, "history": pl.List(pl.Int32), "target": pl.Int32})


def test_train_counts_and_popularity_order():
    counts = train_counts(_sequences()["train_items"], N_ITEMS)
    # 0: once, 1: three times, 2: three times, 3: once, 4: never (validation/test items do not count)
    assert counts.tolist() == [1, 3, 3, 1, 0]
    # most interacted first, ties by ascending id: 1 before 2, 0 before 3
    assert popularity_order(counts).tolist() == [1, 2, 0, 3, 4]


def test_mostpop_same_list_for_everyone_with_counts_as_scores():
    pred = MostPop.fit(_sequences(), N_ITEMS).predict(_examples("test"), 3)
    assert dict(pred.schema) == PREDICTION_SCHEMA
    assert pred["items"].to_list() == [[1, 2, 0]] * 3
    assert pred["scores"].to_list() == [[3.0, 3.0, 1.0]] * 3
    assert pred["target_item"].to_list() == [1, 1, 0]
    # history items are not excluded: user 0 has interacted with 1, 2 and 0 already
    assert target_ranks(pred["items"], pred["target_item"].to_numpy()).tolist() == [1, 1, 3]


def test_transitions_stay_within_users_and_test_adds_valid_item():
    seqs = _sequences()
    valid_t = transition_counts(seqs["train_items"], N_ITEMS).toarray()
    expected = np.zeros((N_ITEMS, N_ITEMS), dtype=int)
    for a, b in [(0, 1), (1, 2), (1, 2), (2, 3), (3, 1)]:  # no 2->1 / 2->2 across user boundaries
        expected[a, b] += 1
    assert valid_t.tolist() == expected.tolist()
    test_seqs = seqs.select(pl.concat_list("train_items", "valid_item")).to_series()
    test_t = transition_counts(test_seqs, N_ITEMS).toarray()
    for a, b in [(2, 3), (2, 0), (1, 2)]:  # user0 2->3, user1 2->0, user2 1->2 (last train -> valid)
        expected[a, b] += 1
    assert test_t.tolist() == expected.tolist()


def test_markov_test_split_top_lists():
    pred = MarkovChain.fit(_sequences(), "test", N_ITEMS).predict(_examples("test"), 3)
    assert dict(pred.schema) == PREDICTION_SCHEMA
    # user 0, last 3: 3->1 once, then MostPop fill 2, 0
    # user 1, last 0: 0->1 once, then 2, 0 (0 may repeat: no exclusion)
    # user 2, last 2: 2->3 twice, 2->0 once (0 only known thanks to user 1's valid item), then 1
    assert pred["items"].to_list() == [[1, 2, 0], [1, 2, 0], [3, 0, 1]]
    assert pred["scores"].to_list() == [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 1.0, 0.0]]
    m = metrics_from_predictions(pred, [1, 3])
    # ranks: user0 target 1 -> 1, user1 target 1 -> 1, user2 target 0 -> 2
    assert m["hit@1"] == pytest.approx(2 / 3)
    assert m["ndcg@3"] == pytest.approx((1 + 1 + 1 / math.log2(3)) / 3)


def test_markov_valid_split_does_not_see_valid_items():
    pred = MarkovChain.fit(_sequences(), "valid", N_ITEMS).predict(_examples("valid"), 3)
    # user 0, last 2: only 2->3 in train parts (2->0 is user 1's validation transition) -> 3, 1, 2
    # user 1, last 2: same; user 2, last 1: 1->2 twice -> 2, then 1, 0
    assert pred["items"].to_list() == [[3, 1, 2], [3, 1, 2], [2, 1, 0]]


def test_markov_ties_follow_popularity_not_item_id_and_backoff():
    seqs = pl.DataFrame(
        {"user_id": [0, 1], "train_items": [[4, 0, 4, 1], [1, 1]], "valid_item": [2, 0], "test_item": [3, 3]},
        schema={"user_id": pl.Int32, "train_items": pl.List(pl.Int32), "valid_item": pl.Int32, "test_item": pl.Int32},
    )
    chain = MarkovChain.fit(seqs, "valid", N_ITEMS)
    # counts: 1 x3, 4 x2, 0 x1 -> popularity 1, 4, 0, 2, 3
    assert chain.popularity.order.tolist() == [1, 4, 0, 2, 3]
    items, _ = chain.top_after([4, 3, -1], 4)
    # after 4: 4->0 once and 4->1 once (tie) -> 1 (more popular) before 0, then 4, 2
    # 3 never seen and -1 (no history): pure MostPop
    assert items.tolist() == [[1, 0, 4, 2], [1, 4, 0, 2], [1, 4, 0, 2]]


def test_baseline_predictions_both_methods_and_short_catalogue():
    out = baseline_predictions(_sequences(), _examples("test"), "test", N_ITEMS, 3)
    assert set(out) == {"mostpop", "markov"}
    assert out["markov"]["items"].to_list()[2] == [3, 0, 1]
    # asking for more than the catalogue gives every item once, no padding
    longer = baseline_predictions(_sequences(), _examples("test"), "test", N_ITEMS, 8)
    assert longer["mostpop"]["items"].to_list()[0] == [1, 2, 0, 3, 4]
    assert sorted(longer["markov"]["items"].to_list()[2]) == [0, 1, 2, 3, 4]
