"""ID analyses against numbers worked out by hand on tiny tables, and the ID table format."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from genrec_core.analysis.id_analysis import (
    build_report,
    change_shares,
    codebook_usage,
    default_intervals,
    filtered_share,
    purity_gain_summary,
    purity_gains,
    render_markdown,
    train_item_counts,
    transition_information,
)
from genrec_core.errors import InputFormatError
from genrec_core.tokenizers.id_table import (
    build_id_table,
    read_id_table,
    read_id_table_with_items,
    sort_tokenizer_names,
    tokenizer_epoch,
    validate_id_table,
)

# 4 items, L = 2: three share first token 0, one has first token 1.
IDS = np.array([[0, 0], [0, 1], [0, 2], [1, 0]])


def test_filtered_share_by_hand():
    # level 1: before = 4 for all; after = 3, 3, 3, 1 -> filtered 1/4, 1/4, 1/4, 3/4; mean 1.5/4 = 0.375
    # level 2: before = 3, 3, 3, 1; after = 1 each -> 2/3, 2/3, 2/3, 0; mean 2/4 = 0.5
    assert filtered_share(IDS) == pytest.approx([0.375, 0.5])


def test_filtered_share_with_shared_ids():
    # non-unique IDs (raw codes): (0,0),(0,1),(1,0),(1,0)
    # level 1: after = 2 for all -> 1 - 2/4 = 0.5; level 2: 1/2, 1/2, 2/2, 2/2 -> 1/2, 1/2, 0, 0 -> 0.25
    assert filtered_share(np.array([[0, 0], [0, 1], [1, 0], [1, 0]])) == pytest.approx([0.5, 0.25])


def test_purity_gains_by_hand():
    counts = np.array([1, 1, 2, 4])
    ln2, ln3 = math.log(2), math.log(3)
    # all items: p = 1/8, 1/8, 2/8, 4/8; H = 2*(1/8)ln8 + (1/4)ln4 + (1/2)ln2 = (3/4 + 1/2 + 1/2) ln2 = 1.75 ln2
    # purity(root) = 1 - 1.75 ln2 / ln4 = 1 - 1.75/2 = 0.125
    root = 0.125
    # prefix (0): counts 1, 1, 2 -> p = 1/4, 1/4, 1/2; H = 1.5 ln2; n = 3 -> purity = 1 - 1.5 ln2 / ln3
    p0 = 1 - 1.5 * ln2 / ln3  # = 0.05360...
    # prefix (1): one item -> purity 1 by convention; all full IDs are unique -> purity 1
    expected = np.array(
        [
            [p0 - root, 1 - p0],
            [p0 - root, 1 - p0],
            [p0 - root, 1 - p0],
            [1 - root, 1 - 1],
        ]
    )
    np.testing.assert_allclose(purity_gains(IDS, counts), expected, rtol=1e-12)
    summary = purity_gain_summary(IDS, counts)
    lv1, lv2 = summary["levels"]
    # per-token means (Figure 1): level 1 token 0 -> p0 - root, token 1 -> 1 - root;
    # level 2 token 0 held by items 0 and 3 -> ((1 - p0) + 0) / 2; tokens 1, 2 -> 1 - p0
    assert lv1["token_mean_gain"] == pytest.approx({0: p0 - root, 1: 1 - root})
    assert lv2["token_mean_gain"] == pytest.approx({0: (1 - p0) / 2, 1: 1 - p0, 2: 1 - p0})
    assert lv1["per_item"]["mean"] == pytest.approx((3 * (p0 - root) + (1 - root)) / 4)
    assert lv2["per_token"]["count"] == 3
    assert summary["frequencies"] == "item_counts"


def test_purity_uniform_and_zero_counts():
    # uniform: every group of n > 1 items has H = log n -> purity 0; single items purity 1
    np.testing.assert_allclose(purity_gains(IDS), [[0, 1], [0, 1], [0, 1], [1, 0]], atol=1e-12)
    # a group whose items all have count 0 counts as uniform (purity 0), not NaN
    g = purity_gains(IDS, np.array([0, 0, 0, 5]))
    assert np.isfinite(g).all()
    # root: p = 0, 0, 0, 1 -> H = 0 -> purity 1; prefix (0) all zero -> 0; gains level 1 = -1, -1, -1, 0
    np.testing.assert_allclose(g[:, 0], [-1, -1, -1, 0], atol=1e-12)
    with pytest.raises(ValueError):
        purity_gains(IDS, np.array([1, 2]))


def test_codebook_usage_by_hand():
    usage = codebook_usage(IDS, 3)
    # level 1 codes 0,0,0,1: used 2 of 3; p = 3/4, 1/4; H = -(.75 ln .75 + .25 ln .25); perplexity = e^H
    h1 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert usage[0]["used"] == 2 and usage[0]["used_share"] == pytest.approx(2 / 3)
    assert usage[0]["perplexity"] == pytest.approx(math.exp(h1))  # 1.7548
    # level 2 codes 0,1,2,0: used 3 of 3; p = 1/2, 1/4, 1/4; H = 1.5 ln2 -> perplexity 2^1.5
    assert usage[1]["used_share"] == 1.0
    assert usage[1]["perplexity"] == pytest.approx(2**1.5)
    assert usage[1]["perplexity_share"] == pytest.approx(2**1.5 / 3)
    # a None size (dedup level) means max code + 1: level 2 vocabulary 3
    assert codebook_usage(IDS, [8, None])[1]["codebook_size"] == 3
    assert codebook_usage(IDS, [8, None])[0]["used_share"] == pytest.approx(2 / 8)


def three_tables() -> dict[str, np.ndarray]:
    t1 = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    t2 = np.array([[0, 0], [0, 2], [1, 0], [1, 1]])  # vs t1: item 1 changes its 2nd token only
    t6 = np.array([[0, 0], [1, 2], [2, 0], [1, 0]])  # vs t1: items 1, 2 change token 1; item 3 token 2
    return {"epoch_0006": t6, "epoch_0001": t1, "epoch_0002": t2}  # out of order on purpose


def test_change_shares_three_tables():
    rows = change_shares(three_tables())
    # epochs 1, 2, 6 -> span 5 -> intervals 1, 5 (the pair 2 -> 6 is 4 apart: not reported)
    assert [r["interval"] for r in rows] == [1, 5]
    # t = 1 (epoch 1 -> 2): first token changed 0/4, any token 1/4 (item 1)
    assert rows[0] == {"interval": 1, "pairs": 1, "first_changed": 0.0, "any_changed": 0.25}
    # t = 5 (epoch 1 -> 6): first changed items 1, 2 -> 2/4; any: items 1, 2, 3 -> 3/4
    assert rows[1] == {"interval": 5, "pairs": 1, "first_changed": 0.5, "any_changed": 0.75}
    # an explicit interval list: t = 4 is the pair 2 -> 6: first items 1, 2 -> 0.5; any items 1, 2, 3 -> 0.75
    assert change_shares(three_tables(), intervals=[4, 7]) == [{"interval": 4, "pairs": 1, "first_changed": 0.5, "any_changed": 0.75}]


def test_change_shares_average_over_pairs():
    a = np.array([[0, 0], [1, 1]])
    b = np.array([[0, 1], [1, 1]])  # a -> b: any 1/2, first 0
    c = np.array([[1, 1], [0, 0]])  # b -> c: first 2/2 (both), any 2/2
    rows = change_shares({"epoch_3": a, "epoch_4": b, "epoch_5": c})
    # t = 1 averages the pairs (3,4) and (4,5): first (0 + 1)/2 = 0.5, any (0.5 + 1)/2 = 0.75
    assert rows == [{"interval": 1, "pairs": 2, "first_changed": 0.5, "any_changed": 0.75}]
    assert change_shares({"epoch_1": a}) == []
    # final tokenizers of independently seeded runs: 42 and 43 are seeds, not epochs one apart
    assert change_shares({"seed_0042": a, "seed_0043": b, "seed_0044": c}) == []


def test_epoch_names():
    assert tokenizer_epoch("epoch_0200") == 200 and tokenizer_epoch("final") is None
    assert sort_tokenizer_names(["epoch_10", "epoch_9", "epoch_100"]) == ["epoch_9", "epoch_10", "epoch_100"]
    assert default_intervals(0) == [] and default_intervals(4) == [1] and default_intervals(12) == [1, 5, 10]


def test_id_table_roundtrip_and_validation(tmp_path):
    item_ids = np.array([10, 3, 7])
    tables = {"epoch_0002": np.array([[0, 1], [1, 1], [2, 0]]), "epoch_0001": np.array([[0, 0], [1, 1], [2, 2]])}
    df = build_id_table(item_ids, tables)
    assert df.schema == {"item_id": pl.Int32, "tokenizer": pl.String, "codes": pl.List(pl.Int32)}
    assert df["tokenizer"].to_list() == ["epoch_0001"] * 3 + ["epoch_0002"] * 3
    assert df["item_id"].to_list() == [3, 7, 10, 3, 7, 10]
    validate_id_table(df, item_ids=item_ids)
    path = tmp_path / "ids.parquet"
    df.write_parquet(path)
    ids, read = read_id_table_with_items(path)
    np.testing.assert_array_equal(ids, [3, 7, 10])
    assert list(read) == ["epoch_0001", "epoch_0002"]
    np.testing.assert_array_equal(read["epoch_0002"], [[1, 1], [2, 0], [0, 1]])  # rows follow item_id order
    assert read_id_table(path)["epoch_0001"].dtype == np.int64

    with pytest.raises(InputFormatError, match="shared"):
        validate_id_table(build_id_table(item_ids, {"e_1": np.array([[0, 0], [0, 0], [1, 0]])}))
    with pytest.raises(InputFormatError, match="same items"):
        validate_id_table(
            pl.concat([df.filter(pl.col("tokenizer") == "epoch_0001"), df.filter((pl.col("tokenizer") == "epoch_0002") & (pl.col("item_id") != 7))])
        )
    with pytest.raises(InputFormatError, match="more than once"):
        validate_id_table(pl.concat([df.head(1), df.head(3)]).sort(["tokenizer", "item_id"]))
    with pytest.raises(InputFormatError, match="sorted"):
        validate_id_table(df.reverse())
    with pytest.raises(InputFormatError, match="type"):
        validate_id_table(df.with_columns(pl.col("item_id").cast(pl.Int64)))
    with pytest.raises(InputFormatError, match="same items"):
        validate_id_table(df, item_ids=np.array([3, 7, 11]))


def test_train_item_counts(tmp_path):
    # sequences with whole item lists: training part = all but the last two
    pl.DataFrame({"user_id": [0, 1], "items": [[5, 6, 5, 9, 8], [6, 7, 1]]}).write_parquet(tmp_path / "sequences.parquet")
    # user 0 trains on 5, 6, 5; user 1 on 6 -> counts for items [5, 6, 7, 9] = 2, 2, 0, 0
    np.testing.assert_array_equal(train_item_counts(tmp_path, np.array([5, 6, 7, 9])), [2, 2, 0, 0])
    # an explicit train_items column wins
    pl.DataFrame({"user_id": [0], "train_items": [[7, 7]], "items": [[1, 1, 1]]}).write_parquet(tmp_path / "sequences.parquet")
    np.testing.assert_array_equal(train_item_counts(tmp_path, np.array([1, 7])), [0, 2])


def test_train_item_counts_from_examples(tmp_path):
    # user 0 training part 4, 5, 6 (examples t=1: [4]->5, t=2: [4,5]->6); user 1: 5, 5 ([5]->5)
    pl.DataFrame({"user_id": [0, 1, 0], "history": [[4, 5], [5], [4]], "target": [6, 5, 5]}).write_parquet(tmp_path / "train.parquet")
    np.testing.assert_array_equal(train_item_counts(tmp_path, np.array([4, 5, 6, 7])), [1, 3, 1, 0])
    assert train_item_counts(tmp_path / "missing", np.array([1])) is None


def test_build_report_and_markdown():
    tables = three_tables()
    report = build_report(tables, codebook_size=3, levels=2, collision="reassign_last")
    assert report["reference_tokenizer"] == "epoch_0006"
    assert report["tokenizers"] == ["epoch_0001", "epoch_0002", "epoch_0006"]
    assert report["filtered_share"] == pytest.approx(filtered_share(tables["epoch_0006"]))
    md = render_markdown(report)
    assert "| 5 | 1 | 50.00% | 75.00% |" in md
    assert "Layer-1" in md and "perplexity" in md


# 4 items, 2 levels: level 1 splits {0, 1} | {2, 3}; level 2 names every item.
TWO_LEVEL = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])


def test_transition_information_when_the_code_determines_the_next_item():
    # every transition swaps partners inside a level-1 group: 0 <-> 1, 2 <-> 3 (50 times each)
    pairs = np.array([[0, 1], [1, 0], [2, 3], [3, 2]] * 50)
    lv1, lv2 = transition_information(TWO_LEVEL, pairs, seed=0)
    assert lv1["same_prefix"] == 1.0
    assert lv1["entropy_next"] == pytest.approx(1.0)  # next level-1 code: two equally likely groups
    assert lv1["mutual_information"] == pytest.approx(1.0)  # the current group names the next one
    assert lv2["same_prefix"] == 0.0  # the full ID changes at every step
    assert lv2["entropy_next"] == pytest.approx(2.0)
    assert lv2["mutual_information"] == pytest.approx(2.0)  # the current item names the next item
    assert lv1["shuffled"] < 0.05 and lv2["shuffled"] < 0.1  # permuted targets: near-zero plug-in bias on 200 pairs
    assert lv1["information_share"] == pytest.approx(1.0 - lv1["shuffled"])


def test_transition_information_is_zero_when_next_is_independent_of_current():
    # every (current, next) combination exactly once: the joint is the product of the marginals
    pairs = np.array([[a, b] for a in range(4) for b in range(4)])
    lv1, lv2 = transition_information(TWO_LEVEL, pairs, seed=0)
    assert lv1["mutual_information"] == pytest.approx(0.0, abs=1e-12)
    assert lv2["mutual_information"] == pytest.approx(0.0, abs=1e-12)
    assert lv1["same_prefix"] == 0.5  # half the combinations stay in the group
    assert lv2["same_prefix"] == 0.25  # a quarter are the same item


def test_transition_information_rejects_empty_pairs():
    with pytest.raises(ValueError, match="pairs"):
        transition_information(TWO_LEVEL, np.zeros((0, 2), dtype=int))
