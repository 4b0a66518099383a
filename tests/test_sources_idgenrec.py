"""The idgenrec source (P5 / IDGenRec release) on hand-made folders, and both Beauty copies' counts."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from genrec_core.config import DataParams, load_params
from genrec_core.data.sources.base import get_source
from genrec_core.data.sources.idgenrec import IdGenRecSource
from genrec_core.errors import InputFormatError, MissingInputError
from stages.preprocess import run as preprocess

# users not in id order; tabs and repeated spaces; a blank line
SEQUENCES = "U9 B1 B2 B3 B4\nA2\tB4  B3 B2 B1\n\nA10 B2 B1 B4 B3\nA1 B3 B4 B1 B2\n"
TITLES = "B1 rene furterer  complexe 5\nB2 sedu ionic\nB3\nB9 never bought\n"  # B3: no words; B4: no line


def write(root: Path, sequences: str | bytes = SEQUENCES, titles: str | None = TITLES) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "user_sequence.txt").write_bytes(sequences if isinstance(sequences, bytes) else sequences.encode("utf-8"))
    if titles is not None:
        (root / "item_generative_indexing_phase_0.txt").write_text(titles, encoding="utf-8")
    return root


def load(root: Path):
    return IdGenRecSource(DataParams(dataset="idgenrec", raw_dir=str(root))).load()


def test_interactions_keep_each_line_in_order(tmp_path):
    ds = load(write(tmp_path))
    assert ds.presequenced is True
    assert ds.interactions.schema == {"user": pl.String, "item": pl.String, "timestamp": pl.Int64, "order": pl.Int64}
    assert ds.interactions.select("user", "item").rows() == [
        ("U9", "B1"), ("U9", "B2"), ("U9", "B3"), ("U9", "B4"),
        ("A2", "B4"), ("A2", "B3"), ("A2", "B2"), ("A2", "B1"),
        ("A10", "B2"), ("A10", "B1"), ("A10", "B4"), ("A10", "B3"),
        ("A1", "B3"), ("A1", "B4"), ("A1", "B1"), ("A1", "B2"),
    ]  # fmt: skip
    assert ds.interactions["order"].to_list() == list(range(16)) and ds.interactions["timestamp"].null_count() == 16


def test_titles_and_template(tmp_path):
    ds = load(write(tmp_path))
    assert ds.default_template == "Title: {title}."
    assert dict(ds.items.select("item", "title").rows()) == {"B1": "rene furterer complexe 5", "B2": "sedu ionic", "B3": "", "B9": "never bought"}
    bare = load(write(tmp_path / "bare", titles=None))
    assert bare.items.columns == ["item"] and bare.default_template == "Item: {item}."


def test_processed_split_ends_each_user_with_their_last_item(tmp_path):
    raw = write(tmp_path / "raw")
    params = load_params(None, ["data.dataset=idgenrec", f"data.raw_dir={raw}", "data.min_interactions=3"])
    preprocess(params, tmp_path / "out")
    processed = tmp_path / "out" / "data" / "processed"
    items = pl.read_parquet(processed / "items.parquet")
    assert items.select("source_item_id", "title").rows() == [("B1", "rene furterer complexe 5"), ("B2", "sedu ionic"), ("B3", ""), ("B4", "")]
    item_of = dict(zip(items["source_item_id"], items["item_id"]))
    seqs = {r["source_user_id"]: r for r in pl.read_parquet(processed / "sequences.parquet").to_dicts()}
    for line in SEQUENCES.splitlines():
        if not line.strip():
            continue
        user, *seq = line.split()
        ids = [item_of[i] for i in seq]
        assert seqs[user]["items"] == ids and seqs[user]["test_item"] == ids[-1] and seqs[user]["valid_item"] == ids[-2]
    assert json.loads((processed / "dataset.json").read_text())["default_template"] == "Title: {title}."


@pytest.mark.parametrize(
    "sequences, line, message",
    [
        ("U1 B1 B2\nU2\n", 2, "expected a user id followed by at least one item id"),
        ("U1 B1 B2\nU2 B1\nU1 B3\n", 3, "user U1 already has a line (1)"),
        (b"U1 B1 B2\nU2 B\xff1\n", 2, "bad encoding"),
    ],
)
def test_bad_sequence_line_is_named(tmp_path, sequences, line, message):
    write(tmp_path, sequences=sequences)
    with pytest.raises(InputFormatError, match=rf"user_sequence\.txt:{line}: ") as err:
        load(tmp_path)
    assert message in str(err.value)


def test_repeated_title_line_is_named(tmp_path):
    write(tmp_path, titles="B1 a\nB2 b\nB1 c\n")
    with pytest.raises(InputFormatError, match=r"item_generative_indexing_phase_0\.txt:3: item 'B1' already has a line \(1\)"):
        load(tmp_path)


def test_missing_sequences_are_named(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(MissingInputError, match=r"user_sequence\.txt: file not found"):
        load(tmp_path / "raw")


def test_registered_as_idgenrec(tmp_path):
    assert isinstance(get_source(DataParams(dataset="idgenrec", raw_dir=str(write(tmp_path)))), IdGenRecSource)


# --------------------------------------------------------------------------- real data

#: TIGER's Table 1, Amazon Beauty (2014) after the five-core filter: users, items, interactions.
BEAUTY = (22_363, 12_101, 198_502)


@pytest.mark.shared_data
def test_shared_beauty_counts_from_both_copies(tmp_path, shared_dataset):
    stats = {}
    for dataset, folder in (("inter_json", "beauty/letter"), ("idgenrec", "beauty/idgenrec")):
        params = load_params(None, [f"data.dataset={dataset}", f"data.raw_dir={shared_dataset(folder)}"])
        preprocess(params, tmp_path / dataset)
        stats[dataset] = json.loads((tmp_path / dataset / "reports" / "data_stats.json").read_text())
        assert (stats[dataset]["users"], stats[dataset]["items"], stats[dataset]["interactions"]) == BEAUTY, dataset
        assert stats[dataset]["k_core_rounds"] == 0  # both releases are already five-core
    # the two copies are one dataset: the same distribution of sequence lengths
    lengths = {d: sorted(pl.read_parquet(tmp_path / d / "data" / "processed" / "sequences.parquet")["items"].list.len().to_list()) for d in stats}
    assert lengths["inter_json"] == lengths["idgenrec"]
