"""genrec_core.evaluation.transitions: the share of users whose (last history item -> target) pair
is a transition of the training data, on hand-made sequences with hand-counted answers."""

from __future__ import annotations

import math

import polars as pl
import pytest

from genrec_core.data.protocol import apply_protocol
from genrec_core.data.sources.base import RawDataset
from genrec_core.evaluation.transitions import known_transition_mask, known_transition_share, transition_shares, transition_statistics

# Four users' full sequences (time order). Leave-one-out: train = all but the last two items,
# valid = second to last, test = last.
#   u0 [1 2 3 4 5]: train 1 2 3   -> 1>2 2>3 | valid pair 3>4 | test pair 4>5
#   u1 [2 3 4 5 6]: train 2 3 4   -> 2>3 3>4 | valid pair 4>5 | test pair 5>6
#   u2 [6 1 2 7 3]: train 6 1 2   -> 6>1 1>2 | valid pair 2>7 | test pair 7>3
#   u3 [4 5 7 3 2]: train 4 5 7   -> 4>5 5>7 | valid pair 7>3 | test pair 3>2
# Training transitions T = {1>2, 2>3, 3>4, 6>1, 4>5, 5>7}; the validation transitions add {2>7, 7>3}
# (3>4 and 4>5 are in T already).
#   valid: 3>4 yes, 4>5 yes, 2>7 no, 7>3 no                      -> 2/4
#   test, train only: 4>5 yes, 5>6 no, 7>3 no, 3>2 no            -> 1/4
#   test, train + valid transitions: 4>5 yes, 7>3 yes (u3's validation transition) -> 2/4
# 3>2 would be "known" if transitions crossed users: u0's training part ends with 3 and u1's starts
# with 2 (flattened: ... 1 2 3 | 2 3 4 ...). They must not.
FULL = {0: [1, 2, 3, 4, 5], 1: [2, 3, 4, 5, 6], 2: [6, 1, 2, 7, 3], 3: [4, 5, 7, 3, 2]}


def tables():
    users = sorted(FULL)
    sequences = pl.DataFrame(
        {"user_id": users, "train_items": [FULL[u][:-2] for u in users], "valid_item": [FULL[u][-2] for u in users], "test_item": [FULL[u][-1] for u in users]},
        schema={"user_id": pl.Int32, "train_items": pl.List(pl.Int32), "valid_item": pl.Int32, "test_item": pl.Int32},
    )
    valid = pl.DataFrame(
        {"history": [FULL[u][:-2] for u in users], "target": [FULL[u][-2] for u in users]}, schema={"history": pl.List(pl.Int32), "target": pl.Int32}
    )
    test = pl.DataFrame(
        {"history": [FULL[u][:-1] for u in users], "target": [FULL[u][-1] for u in users]}, schema={"history": pl.List(pl.Int32), "target": pl.Int32}
    )
    return sequences, valid, test


def test_hand_counted_shares():
    sequences, valid, test = tables()
    got = transition_shares(sequences, valid, test)
    assert got["valid"] == pytest.approx(2 / 4)
    assert got["test_train"] == pytest.approx(1 / 4)
    assert got["test_train+valid"] == pytest.approx(2 / 4)
    assert got["users_valid"] == got["users_test"] == 4


def test_mask_on_plain_lists_never_crosses_users():
    train = [FULL[u][:-2] for u in sorted(FULL)]
    # test pairs: 4>5 (u3's training), 5>6, 7>3, 3>2 (only across the u0|u1 boundary)
    assert known_transition_mask(train, [4, 5, 7, 3], [5, 6, 3, 2]).tolist() == [True, False, False, False]
    assert known_transition_share(train, [4, 5, 7, 3], [5, 6, 3, 2]) == pytest.approx(0.25)


def test_repeats_unknown_items_and_empty_histories():
    train = [[1, 1, 2], [3]]
    # 1>1 is a transition (a repeat), 2>1 is not; an item never seen (9) and no history (-1) are never known
    assert known_transition_mask(train, [1, 2, 9, -1], [1, 1, 1, 1]).tolist() == [True, False, False, False]
    assert math.isnan(known_transition_share(train, [], []))
    with pytest.raises(ValueError):
        known_transition_mask(train, [1, 2], [1])


def write_processed(root, sequences: dict, max_items: int) -> None:
    """``root/data/processed`` (items, sequences, train/valid/test) of users' time-ordered item
    sequences, through the real protocol (1-core: nothing dropped; ids renumbered)."""
    rows = [(f"u{u}", f"i{item}", t) for u, seq in sequences.items() for t, item in enumerate(seq)]
    df = pl.DataFrame(
        {"user": [r[0] for r in rows], "item": [r[1] for r in rows], "timestamp": [r[2] for r in rows], "order": list(range(len(rows)))},
        schema={"user": pl.String, "item": pl.String, "timestamp": pl.Int64, "order": pl.Int64},
    )
    items = pl.DataFrame({"item": sorted({r[1] for r in rows})}).with_columns(pl.col("item").alias("title"))
    out = apply_protocol(RawDataset(df, items, "{title}", name="toy"), min_interactions=1, max_items=max_items)
    processed = root / "data" / "processed"
    processed.mkdir(parents=True)
    out.items.write_parquet(processed / "items.parquet")
    out.sequences.write_parquet(processed / "sequences.parquet")
    for split in ("train", "valid", "test"):
        out.examples[split].write_parquet(processed / f"{split}.parquet")


def test_statistics_of_a_processed_folder_through_the_protocol(tmp_path):
    """The same four users through the real protocol and its Parquet tables (item ids are renumbered,
    user ids too, the pairs are the same): the same shares. A window of 2: the last history item is
    all that matters."""
    write_processed(tmp_path, FULL, max_items=2)
    got = transition_statistics(tmp_path)
    assert (got["valid"], got["test_train"], got["test_train+valid"]) == pytest.approx((0.5, 0.25, 0.5))
    assert got["users_valid"] == got["users_test"] == 4
