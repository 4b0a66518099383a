"""SPEC section 1 on hand-computed cases: k-core, ordering, leave-one-out, windows."""

from __future__ import annotations

import polars as pl
import pytest

from genrec_core.data.protocol import apply_protocol, k_core, windowed_examples
from genrec_core.data.sources.base import RawDataset
from genrec_core.errors import EmptyResultError


def raw(rows, items=None, presequenced=False) -> RawDataset:
    """rows: (user, item, timestamp) in source order."""
    df = pl.DataFrame(
        {
            "user": [r[0] for r in rows],
            "item": [r[1] for r in rows],
            "timestamp": [r[2] for r in rows],
            "order": list(range(len(rows))),
        },
        schema={"user": pl.String, "item": pl.String, "timestamp": pl.Int64, "order": pl.Int64},
    )
    items = items if items is not None else pl.DataFrame({"item": sorted({r[1] for r in rows}), "title": [f"t{r}" for r in sorted({r[1] for r in rows})]})
    return RawDataset(df, items, "{title}", presequenced=presequenced, name="toy")


def test_k_core_needs_several_rounds():
    # k=2. Round 1: item c (1 row) and user u3 (1 row) fall. That leaves item b with one row
    # (from u1 only, since u3's b row went with u3), so round 2 drops b; then u1 has only a -> 1
    # row, round 3 drops u1; then a has u2's rows only (2) and survives.
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u2", "a", 1), ("u2", "a", 2), ("u3", "b", 1)]
    out, rounds = k_core(raw(rows).interactions, 2)
    assert sorted(zip(out["user"], out["item"])) == [("u2", "a"), ("u2", "a")]
    assert rounds == 3


def test_k_core_result_is_a_fixed_point_and_maximal():
    import random

    rng = random.Random(0)
    rows = [(f"u{rng.randrange(30)}", f"i{rng.randrange(25)}", t) for t in range(400)]
    df = raw(rows).interactions
    out, _ = k_core(df, 5)
    assert out["user"].value_counts()["count"].min() >= 5
    assert out["item"].value_counts()["count"].min() >= 5
    # Maximal: brute-force alternating filter reaches the same rows.
    cur = df
    while True:
        uc = cur.group_by("user").len().filter(pl.col("len") >= 5)["user"]
        cur2 = cur.filter(pl.col("user").is_in(uc.implode()))
        ic = cur2.group_by("item").len().filter(pl.col("len") >= 5)["item"]
        cur2 = cur2.filter(pl.col("item").is_in(ic.implode()))
        if cur2.height == cur.height:
            break
        cur = cur2
    assert sorted(out["order"].to_list()) == sorted(cur["order"].to_list())


def make_toy():
    # Three users, k=3 keeps everything below. User "10" has a timestamp tie (items q and r at
    # t=5): the input order (q first) must be kept.
    rows = [
        ("10", "r", 9),
        ("10", "q", 5),
        ("10", "p", 1),
        ("10", "s", 5),
        ("2", "p", 3),
        ("2", "q", 1),
        ("2", "r", 2),
        ("2", "s", 4),
        ("2", "p", 5),
        ("7", "s", 1),
        ("7", "q", 2),
        ("7", "r", 3),
    ]
    return raw(rows)


def test_ids_sequences_and_split():
    out = apply_protocol(make_toy(), min_interactions=3, max_items=2)
    # Users are numbered numerically (2 < 7 < 10), items lexicographically.
    assert out.sequences["source_user_id"].to_list() == ["2", "7", "10"]
    assert out.items["source_item_id"].to_list() == ["p", "q", "r", "s"]
    p, q, r, s = 0, 1, 2, 3
    seqs = dict(zip(out.sequences["source_user_id"], out.sequences["items"].to_list()))
    assert seqs["2"] == [q, r, p, s, p]
    assert seqs["7"] == [s, q, r]
    assert seqs["10"] == [p, q, s, r]  # tie at t=5: q (row 1) before s (row 3)
    row = out.sequences.filter(pl.col("source_user_id") == "2").row(0, named=True)
    assert row["train_items"] == [q, r, p] and row["valid_item"] == s and row["test_item"] == p


def test_examples_windows_by_hand():
    out = apply_protocol(make_toy(), min_interactions=3, max_items=2)
    p, q, r, s = 0, 1, 2, 3
    u2, u7, u10 = 0, 1, 2
    train = sorted(zip(out.examples["train"]["user_id"], map(tuple, out.examples["train"]["history"].to_list()), out.examples["train"]["target"]))
    # u2 train part [q, r, p]: (q)->r, (q, r)->p. u7 train part [s]: none. u10 train [p, q]: (p)->q.
    assert train == [(u2, (q,), r), (u2, (q, r), p), (u10, (p,), q)]
    valid = sorted(zip(out.examples["valid"]["user_id"], map(tuple, out.examples["valid"]["history"].to_list()), out.examples["valid"]["target"]))
    # valid input = whole training part, truncated to the last 2 items.
    assert valid == [(u2, (r, p), s), (u7, (s,), q), (u10, (p, q), s)]
    test = sorted(zip(out.examples["test"]["user_id"], map(tuple, out.examples["test"]["history"].to_list()), out.examples["test"]["target"]))
    # test input = training part + validation item, last 2.
    assert test == [(u2, (p, s), p), (u7, (s, q), r), (u10, (q, s), r)]


def test_examples_match_a_python_loop_on_random_data():
    import random

    rng = random.Random(3)
    rows = [(f"u{rng.randrange(40)}", f"i{rng.randrange(30)}", rng.randrange(1000)) for _ in range(1500)]
    window = 4
    out = apply_protocol(raw(rows), min_interactions=5, max_items=window)
    expected = {"train": [], "valid": [], "test": []}
    for uid, seq in zip(out.sequences["user_id"], out.sequences["items"].to_list()):
        train = seq[:-2]
        for t in range(1, len(train)):
            expected["train"].append((uid, tuple(train[max(0, t - window) : t]), train[t]))
        expected["valid"].append((uid, tuple(train[-window:]), seq[-2]))
        expected["test"].append((uid, tuple(seq[:-1][-window:]), seq[-1]))
    for split, exp in expected.items():
        df = out.examples[split]
        got = list(zip(df["user_id"], map(tuple, df["history"].to_list()), df["target"]))
        assert got == exp, split
    assert out.stats["examples"]["train"] == sum(len(s) - 3 for s in out.sequences["items"].to_list())


def test_windowed_examples_in_blocks_match_one_gather():
    """Blocks (bounded temporaries) give the same histories as a python slice, any block size."""
    import numpy as np

    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 30, 200)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    flat = rng.integers(0, 1000, int(lengths.sum())).astype(np.int32)
    targets = starts + rng.integers(1, 3, 200)  # 1 or 2 items into each sequence
    targets = np.minimum(targets + rng.integers(0, 25, 200), starts + lengths - 1)
    window = 5
    expected = [flat[max(s, t - window) : t].tolist() for s, t in zip(starts, targets)]
    for block_items in (1, 7, 64, 1 << 22):
        got = windowed_examples(flat, targets, starts, window, block_items=block_items)
        assert got.to_pylist() == expected, block_items
    assert windowed_examples(flat, targets[:0], starts[:0], window).to_pylist() == []


def test_stats_and_item_text():
    out = apply_protocol(make_toy(), min_interactions=3, max_items=20, dataset_name="toy")
    st = out.stats
    assert (st["users"], st["items"], st["interactions"]) == (3, 4, 12)
    assert st["avg_seq_len"] == 4.0
    assert st["sparsity"] == 0.0  # 12 interactions over 3 x 4 cells
    assert out.items["title"].to_list() == ["tp", "tq", "tr", "ts"]


def test_items_without_text_get_empty_fields():
    items = pl.DataFrame({"item": ["p", "zz"], "title": ["only p", "not used"]})
    r = make_toy()
    r.items = items
    out = apply_protocol(r, min_interactions=3, max_items=20)
    assert out.items["title"].to_list() == ["only p", "", "", ""]


def test_presequenced_source_keeps_file_order():
    rows = [("1", "b", None), ("1", "a", None), ("1", "c", None), ("2", "c", None), ("2", "b", None), ("2", "a", None)]
    out = apply_protocol(raw(rows, presequenced=True), min_interactions=2, max_items=20)
    a, b, c = 0, 1, 2
    assert out.sequences["items"].to_list() == [[b, a, c], [c, b, a]]


def test_filter_that_empties_the_data_names_the_param():
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 3)]
    with pytest.raises(EmptyResultError, match="data.min_interactions"):
        apply_protocol(raw(rows), min_interactions=5, max_items=20)
