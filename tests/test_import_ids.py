"""ids.source: index_json: a paper's semantic IDs (<name>.index.json of an inter_json release)
imported by emit-ids as the ID table, with hand-computed expected codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from genrec_core.config import load_params
from genrec_core.errors import InputFormatError, MissingInputError, ParamError
from genrec_core.paths import ArtifactPaths
from genrec_core.recommender.vocab import SemanticIdVocab
from genrec_core.tokenizers.id_table import choose_tokenizer, read_id_table_with_items, validate_id_table
from stages import emit_ids
from stages.preprocess import run as preprocess

# source item indices 1, 3, 5, 8 -> processed item_ids 0, 1, 2, 3 (numeric order); a 3-core
INTER = {"0": [5, 3, 8, 1], "1": [1, 8, 3, 5], "2": [3, 1, 5, 8], "3": [8, 5, 1, 3]}
INDEX = {
    "5": ["<a_1>", "<b_2>", "<c_0>"],
    "3": ["<a_0>", "<b_3>", "<c_1>"],
    "8": ["<a_2>", "<b_0>", "<c_4>"],
    "1": ["<a_0>", "<b_0>", "<c_0>"],
    "9": ["<a_7>", "<b_7>", "<c_7>"],  # an item without interactions: not imported
}
EXPECTED = [[0, 0, 0], [0, 3, 1], [1, 2, 0], [2, 0, 4]]  # by item_id: sources 1, 3, 5, 8


def setup(tmp_path: Path, index=INDEX, dataset: str = "inter_json", extra: tuple[str, ...] = ()) -> tuple:
    raw = tmp_path / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "Beauty.inter.json").write_text(json.dumps(INTER), encoding="utf-8")
    if index is not None:
        (raw / "Beauty.index.json").write_bytes(index if isinstance(index, bytes) else json.dumps(index).encode("utf-8"))
    root = tmp_path / "out"
    preprocess(load_params(None, ["data.dataset=inter_json", f"data.raw_dir={raw}", "data.min_interactions=3"]), root)
    params = load_params(None, [f"data.dataset={dataset}", f"data.raw_dir={raw}", "data.min_interactions=3", "ids.source=index_json", *extra])
    return params, ArtifactPaths(root)


def report(paths: ArtifactPaths) -> dict:
    return json.loads((paths.id_reports_dir / "emit.json").read_text())


def test_index_json_becomes_the_id_table(tmp_path):
    params, paths = setup(tmp_path)
    emit_ids.run(params, paths.root)  # no embeddings, no tokenizer: neither is read
    validate_id_table(pl.read_parquet(paths.id_table), paths.id_table, np.arange(4))
    item_ids, tables = read_id_table_with_items(paths.id_table)
    assert list(tables) == ["imported"] and item_ids.tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(tables["imported"], EXPECTED)

    r = report(paths)
    assert r["source"] == "index_json" and r["file"].endswith("Beauty.index.json") and r["tokenizers"] == ["imported"]
    stats = r["per_tokenizer"]["imported"]
    assert stats["levels"] == 3 and stats["codebook_sizes"] == [3, 4, 5] and stats["codebook_size"] == 5
    assert stats["codes_used"] == [3, 3, 3] and stats["level_prefixes"] == ["a", "b", "c"]
    assert stats["colliding_groups"] == 0 and stats["collisions"] == [] and stats["items_moved"] == 0
    assert stats["unused_entries"] == 1


def test_training_picks_the_imported_ids_and_sizes_the_vocabulary_from_them(tmp_path):
    params, paths = setup(tmp_path)
    emit_ids.run(params, paths.root)
    _, tables = read_id_table_with_items(paths.id_table)
    # what the train stage does (stages/train.py): recommender.tokenizer last, vocabulary from the codes
    assert choose_tokenizer(list(tables), params.recommender.tokenizer) == "imported"
    assert SemanticIdVocab.from_codes(tables.values()).level_sizes == (3, 4, 5)  # whatever tokenizer.levels/codebook_size say


COLLIDING = INDEX | {"3": ["<a_0>", "<b_0>", "<c_0>"], "5": ["<a_0>", "<b_0>", "<c_1>"]}  # sources 1 and 3 share (0, 0, 0)


def test_collisions_are_reported_and_reassigned(tmp_path):
    params, paths = setup(tmp_path, COLLIDING)
    emit_ids.run(params, paths.root)
    _, tables = read_id_table_with_items(paths.id_table)
    # prefix (0, 0) uses last codes {0, 1}: item 0 (lowest item_id) keeps (0, 0, 0), item 1 takes 2
    np.testing.assert_array_equal(tables["imported"], [[0, 0, 0], [0, 0, 2], [0, 0, 1], [2, 0, 4]])
    stats = report(paths)["per_tokenizer"]["imported"]
    assert stats["collisions"] == [{"codes": [0, 0, 0], "item_ids": [0, 1], "source_item_ids": ["1", "3"]}]
    assert stats["colliding_groups"] == 1 and stats["colliding_items"] == 2 and stats["items_moved"] == 1 and stats["id_length"] == 3


def test_collisions_with_dedup_level(tmp_path):
    params, paths = setup(tmp_path, COLLIDING, extra=("ids.collision=dedup_level",))
    emit_ids.run(params, paths.root)
    _, tables = read_id_table_with_items(paths.id_table)
    np.testing.assert_array_equal(tables["imported"], [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0], [2, 0, 4, 0]])
    stats = report(paths)["per_tokenizer"]["imported"]
    assert stats["id_length"] == 4 and stats["levels"] == 3 and stats["dedup_level_vocab"] == 2


@pytest.mark.parametrize(
    "change, message",
    [
        ({"8": ["<a_2>", "<b_0>"]}, "entry '8': ID has 2 tokens, the first entry's has 3"),
        ({"8": ["<a_2>", "<x_0>", "<c_4>"]}, "entry '8': token 2 has prefix 'x', the first entry's has 'b'"),
        ({"8": ["<a_2>", "<b_-1>", "<c_4>"]}, "entry '8': token '<b_-1>' is not of the form"),
        ({"8": ["a_2", "<b_0>", "<c_4>"]}, "entry '8': token 'a_2' is not of the form"),
        ({"8": ["<a_2>", "<b_0>", 4]}, "entry '8': token 4 is not of the form"),
        ({"8": []}, "entry '8': expected a non-empty list of tokens"),
        ({"8": ["<a_2>", "<b_0>", "<c_99999999999>"]}, "entry '8': code 99999999999 of token 3 is out of range"),
        ({"x8": ["<a_2>", "<b_0>", "<c_4>"]}, "entry 'x8': item keys must be non-negative integer"),
    ],
)
def test_bad_index_entry_is_named(tmp_path, change, message):
    params, paths = setup(tmp_path, INDEX | change)
    with pytest.raises(InputFormatError, match="Beauty.index.json") as err:
        emit_ids.run(params, paths.root)
    assert message in str(err.value)
    assert not paths.id_table.exists()


def test_an_item_without_an_id_is_named(tmp_path):
    params, paths = setup(tmp_path, {k: v for k, v in INDEX.items() if k != "8"})
    with pytest.raises(InputFormatError, match=r"1 of the 4 processed items have no ID here, e.g. item index '8' \(item_id 3\)"):
        emit_ids.run(params, paths.root)


def test_malformed_index_json_names_the_line(tmp_path):
    params, paths = setup(tmp_path, b'{"1": ["<a_0>"],\n "3": ["<a_0>"\n}')
    with pytest.raises(InputFormatError, match=r"Beauty\.index\.json:3: malformed JSON"):
        emit_ids.run(params, paths.root)


def test_missing_index_file_and_wrong_dataset(tmp_path):
    params, paths = setup(tmp_path / "a", index=None)
    with pytest.raises(MissingInputError, match=r"Beauty\.index\.json: file not found"):
        emit_ids.run(params, paths.root)
    from genrec_core.params_validation import validate_everything

    with pytest.raises(ParamError, match=r"ids\.source.*inter_json dataset, but data\.dataset is 'atomic'"):
        validate_everything(setup(tmp_path / "b", dataset="atomic")[0])  # every command checks it at start: no stage runs


def test_ids_source_is_validated():
    assert load_params(None, []).ids.source == "tokenizer"
    with pytest.raises(ParamError, match=r"ids\.source: must be tokenizer or index_json"):
        load_params(None, ["ids.source=letter"])


# --------------------------------------------------------------------------- real data


@pytest.mark.shared_data
def test_letter_beauty_ids_import(tmp_path, shared_dataset):
    raw = shared_dataset("beauty/letter")
    params = load_params(None, ["data.dataset=inter_json", f"data.raw_dir={raw}", "ids.source=index_json"])
    preprocess(params, tmp_path)
    emit_ids.run(params, tmp_path)
    item_ids, tables = read_id_table_with_items(ArtifactPaths(tmp_path).id_table)
    assert item_ids.size == 12_101 and tables["imported"].shape == (12_101, 4)
    assert SemanticIdVocab.from_codes(tables.values()).level_sizes == (256, 256, 256, 256)  # LETTER: 4 x 256
    stats = report(ArtifactPaths(tmp_path))["per_tokenizer"]["imported"]
    # the release's IDs are not all unique: 11 IDs shared by 24 items (up to 3), resolved by reassign_last
    assert (stats["colliding_groups"], stats["colliding_items"], stats["max_group_size"], stats["items_moved"]) == (11, 24, 3, 13)
    assert stats["unused_entries"] == 0 and stats["level_prefixes"] == ["a", "b", "c", "d"]
