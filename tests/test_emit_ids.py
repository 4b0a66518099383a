"""emit-ids and analyse-ids end to end, with fake tokenizers put in place of the trained ones."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from genrec_core.artifacts import load_item_vectors
from genrec_core.config import Params
from genrec_core.errors import InputFormatError, MissingInputError
from genrec_core.paths import ArtifactPaths
from genrec_core.tokenizers.base import QuantizeResult, SemanticTokenizer
from genrec_core.tokenizers.id_table import read_id_table_with_items, validate_id_table
from stages import analyse_ids, emit_ids


class GridTokenizer(SemanticTokenizer):
    """L = 2, K = 4: level 1 = floor(x0) (clipped), level 2 = nearest of 4 points 0..3 to x1 + shift.

    The last residual is x1 + shift and the last codebook the points 0..3, so collision handling
    sees real distances.
    """

    levels = 2
    codebook_size = 4

    def __init__(self, shift: float = 0.0):
        self.shift = shift

    def quantize(self, vectors: np.ndarray) -> QuantizeResult:
        r = vectors[:, 1:2] + self.shift
        book = np.arange(4, dtype=np.float32)[:, None]
        first = np.clip(np.floor(vectors[:, 0]), 0, 3).astype(np.int64)
        last = np.argmin(np.abs(r - book.T), axis=1).astype(np.int64)
        return QuantizeResult(np.stack([first, last], axis=1), r.astype(np.float32), book)


# item ids not in row order on purpose; vectors (x0, x1)
ITEMS = [40, 10, 30, 20, 50]
VECTORS = [[0.5, 0.2], [0.5, 0.1], [0.5, 2.0], [1.5, 1.0], [1.5, 1.1]]
# sorted by item id: 10 (0.5, 0.1), 20 (1.5, 1.0), 30 (0.5, 2.0), 40 (0.5, 0.2), 50 (1.5, 1.1)
# shift 0 -> raw codes 10 (0,0), 20 (1,1), 30 (0,2), 40 (0,0), 50 (1,1): two colliding pairs
#   reassign_last: 10 keeps (0,0) (dist .01 < .04); 40 (r = .2) nearest free of {1, 3} is 1 -> (0,1)
#                  20 keeps (1,1) (dist 0 < .01); 50 (r = 1.1) nearest free of {0, 2, 3} is 2 -> (1,2)
# shift 1 -> raw 10 (0,1), 20 (1,2), 30 (0,3), 40 (0,1), 50 (1,2): same pattern one code up
#   40 (r = 1.2) free {0, 2} -> 2: (0,2); 50 (r = 2.1) free {0, 1, 3} -> 3 (dist .81 < 1.21): (1,3)
EXPECTED_REASSIGN = {
    "epoch_0009": [[0, 0], [1, 1], [0, 2], [0, 1], [1, 2]],
    "epoch_0010": [[0, 1], [1, 2], [0, 3], [0, 2], [1, 3]],
}


@pytest.fixture
def project(tmp_path, monkeypatch):
    paths = ArtifactPaths(tmp_path)
    paths.embeddings.parent.mkdir(parents=True)
    pl.DataFrame(
        # the embed stage's format: vector Array[Float32, dim]
        {"item_id": pl.Series(ITEMS, dtype=pl.Int32), "vector": pl.Series(VECTORS, dtype=pl.Array(pl.Float32, 2))}
    ).write_parquet(paths.embeddings)
    calls = []

    def load_kept_tokenizers(tokenizer_dir):
        calls.append(Path(tokenizer_dir))
        return [("epoch_0009", GridTokenizer(0.0)), ("epoch_0010", GridTokenizer(1.0))]

    fake = types.ModuleType("genrec_core.tokenizers.training")
    fake.load_kept_tokenizers = load_kept_tokenizers
    monkeypatch.setitem(sys.modules, "genrec_core.tokenizers.training", fake)
    return paths, calls


def make_params(collision: str) -> Params:
    params = Params()
    params.ids.collision = collision
    params.tokenizer.levels = 2
    params.tokenizer.codebook_size = 4
    return params


def test_emit_ids_reassign_last(project):
    paths, calls = project
    emit_ids.run(make_params("reassign_last"), paths.root)
    assert calls == [paths.tokenizer_dir]
    df = pl.read_parquet(paths.id_table)
    validate_id_table(df, paths.id_table, np.array(ITEMS))
    item_ids, tables = read_id_table_with_items(paths.id_table)
    np.testing.assert_array_equal(item_ids, [10, 20, 30, 40, 50])
    assert list(tables) == ["epoch_0009", "epoch_0010"]
    for name, expected in EXPECTED_REASSIGN.items():
        np.testing.assert_array_equal(tables[name], expected)

    report = json.loads((paths.id_reports_dir / "emit.json").read_text())
    assert report["collision"] == "reassign_last" and report["n_items"] == 5
    assert report["tokenizers"] == ["epoch_0009", "epoch_0010"]
    stats = report["per_tokenizer"]["epoch_0009"]
    assert stats["collision_rate"] == pytest.approx(4 / 5)  # items 10, 40, 20, 50
    assert stats["duplicate_rate"] == pytest.approx(1 - 3 / 5)
    assert stats["items_moved"] == 2 and stats["max_group_size"] == 2 and stats["id_length"] == 2
    assert stats["levels"] == 2 and stats["codebook_size"] == 4
    assert "dedup_level_vocab" not in stats


def test_emit_ids_dedup_level(project):
    paths, _ = project
    emit_ids.run(make_params("dedup_level"), paths.root)
    _, tables = read_id_table_with_items(paths.id_table)
    # items 10, 40 share (0,0) -> extra 0, 1 in item-id order; 20, 50 share (1,1) -> 0, 1
    np.testing.assert_array_equal(tables["epoch_0009"], [[0, 0, 0], [1, 1, 0], [0, 2, 0], [0, 0, 1], [1, 1, 1]])
    stats = json.loads((paths.id_reports_dir / "emit.json").read_text())["per_tokenizer"]["epoch_0010"]
    assert stats["id_length"] == 3 and stats["items_moved"] == 0 and stats["dedup_level_vocab"] == 2


def test_analyse_ids_after_emit(project):
    paths, _ = project
    params = make_params("reassign_last")
    emit_ids.run(params, paths.root)
    # training counts from sequences: items[:-2] -> 10 x2, 20 x1
    paths.processed_dir.mkdir(parents=True)
    pl.DataFrame({"user_id": [0, 1], "items": [[10, 10, 20, 30, 40], [50, 40]]}).write_parquet(paths.sequences)
    analyse_ids.run(params, paths.root)
    out = paths.id_reports_dir / "analysis"
    report = json.loads((out / "analysis.json").read_text())
    assert set(report) >= {"reference_tokenizer", "tokenizers", "filtered_share", "purity_gain", "codebook_usage", "change_shares"}
    assert report["reference_tokenizer"] == "epoch_0010"
    # epoch_0010 IDs by item: (0,1),(1,2),(0,3),(0,2),(1,3): level 1 groups of 3 and 2
    # level 1: 1 - 3/5 (x3), 1 - 2/5 (x2) -> (1.2 + 1.2)/5 = 0.48; level 2: 1 - 1/3 (x3), 1 - 1/2 (x2) -> 3/5
    assert report["filtered_share"] == pytest.approx([0.48, 0.6])
    assert report["purity_gain"]["frequencies"] == "item_counts"
    # epoch 9 -> 10: every item's last token changed, no first token
    assert report["change_shares"] == [{"interval": 1, "pairs": 1, "first_changed": 0.0, "any_changed": 1.0}]
    assert report["codebook_usage"][0]["used"] == 2
    assert "Layer-2" in (out / "analysis.md").read_text()
    for png in ("purity_gain.png", "codebook_usage.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_emit_ids_errors(project, monkeypatch):
    paths, _ = project
    fake = types.ModuleType("genrec_core.tokenizers.training")
    fake.load_kept_tokenizers = lambda d: []
    monkeypatch.setitem(sys.modules, "genrec_core.tokenizers.training", fake)
    with pytest.raises(MissingInputError, match="tokenizer"):
        emit_ids.run(make_params("reassign_last"), paths.root)
    assert not paths.id_table.exists()
    paths.embeddings.unlink()
    with pytest.raises(MissingInputError):
        emit_ids.run(make_params("reassign_last"), paths.root)
    # List vectors are accepted too; rows come back in item_id order
    pl.DataFrame({"item_id": [2, 1], "vector": [[0.0, 1.0], [1.0, 0.0]]}).write_parquet(paths.embeddings)
    ids, vecs = load_item_vectors(paths.embeddings)
    np.testing.assert_array_equal(ids, [1, 2])
    np.testing.assert_array_equal(vecs, [[1.0, 0.0], [0.0, 1.0]])
    assert vecs.dtype == np.float32
    pl.DataFrame({"item_id": [1, 1], "vector": [[0.0, 1.0], [1.0, 0.0]]}).write_parquet(paths.embeddings)
    with pytest.raises(InputFormatError, match="unique"):
        load_item_vectors(paths.embeddings)


def test_analyse_ids_describes_the_emitted_table(project):
    paths, _ = project
    emit_ids.run(make_params("dedup_level"), paths.root)
    analyse_ids.run(make_params("reassign_last"), paths.root)  # params changed since: emit.json wins
    report = json.loads((paths.id_reports_dir / "analysis" / "analysis.json").read_text())
    assert report["collision"] == "dedup_level" and report["id_length"] == 3
    assert report["purity_gain"]["frequencies"] == "uniform"  # no data/processed here
    # the dedup level's vocabulary is max code + 1 = 2 (groups of two), both codes used
    assert report["codebook_usage"][2]["codebook_size"] == 2 and report["codebook_usage"][2]["used"] == 2
