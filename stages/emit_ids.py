"""Stage emit-ids: item vectors + kept tokenizers -> collision-free multi-identifier table.

Reads ``data/embeddings/item_vectors.parquet`` and every tokenizer the train-tokenizer stage kept
(``tokenizer.keep_last`` epochs), quantises all items with each, resolves collisions
(``ids.collision``) and writes ``data/ids/item_ids.parquet`` plus ``reports/ids/emit.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from genrec_core.config import Params
from genrec_core.errors import InputFormatError, MissingInputError
from genrec_core.io import read_parquet, write_json, write_parquet
from genrec_core.paths import ArtifactPaths
from genrec_core.tokenizers.collisions import collision_stats, resolve_collisions
from genrec_core.tokenizers.id_table import build_id_table, validate_id_table

VECTOR_COLUMNS = ("vector", "embedding", "vectors", "embeddings")


def load_item_vectors(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(item_ids int64 [N] ascending, vectors float32 [N, D]) from the embed stage's Parquet.

    Expects ``item_id`` and one list/array column of floats (``vector`` preferred); rows are
    sorted by item_id so IDs line up with the table whatever order the file has.
    """
    df = read_parquet(path, "item vectors (stage embed)")
    if "item_id" not in df.columns:
        raise InputFormatError(path, f"missing column 'item_id'; columns: {df.columns}")
    vec_cols = [c for c in VECTOR_COLUMNS if c in df.columns]
    if not vec_cols:
        vec_cols = [c for c, t in df.schema.items() if isinstance(t, (pl.List, pl.Array))]
    if not vec_cols:
        raise InputFormatError(path, f"no vector column (one of {VECTOR_COLUMNS} or a list column); columns: {df.columns}")
    col = vec_cols[0]
    if df.height == 0:
        raise InputFormatError(path, "no items")
    df = df.sort("item_id")
    item_ids = df["item_id"].to_numpy().astype(np.int64)
    if np.unique(item_ids).size != item_ids.size:
        raise InputFormatError(path, "item_id values are not unique")
    series = df[col]
    if isinstance(series.dtype, pl.List):
        lengths = series.list.len()
        if lengths.min() != lengths.max():
            raise InputFormatError(path, f"column {col!r}: vectors of different lengths ({lengths.min()}..{lengths.max()})")
        series = series.list.to_array(int(lengths.min()))
    vectors = np.ascontiguousarray(series.to_numpy(), dtype=np.float32)
    if not np.isfinite(vectors).all():
        raise InputFormatError(path, f"column {col!r} has NaN or infinite values")
    return item_ids, vectors


def run(params: Params, root: Path) -> None:
    paths = ArtifactPaths(Path(root))
    from genrec_core.tokenizers.training import load_kept_tokenizers  # heavy (torch): import lazily

    item_ids, vectors = load_item_vectors(paths.embeddings)
    tokenizers = load_kept_tokenizers(paths.tokenizer_dir)
    if not tokenizers:
        raise MissingInputError(paths.tokenizer_dir, "no kept tokenizers; run the train-tokenizer stage first")

    mode = params.ids.collision
    ids_by_tokenizer: dict[str, np.ndarray] = {}
    report: dict[str, dict] = {}
    for name, tokenizer in tokenizers:
        result = tokenizer.quantize(vectors)
        codes = np.asarray(result.codes)
        if codes.shape != (item_ids.size, tokenizer.levels):
            raise ValueError(f"tokenizer {name}: quantize returned codes of shape {codes.shape}, expected {(item_ids.size, tokenizer.levels)}")
        ids = resolve_collisions(result, mode, tokenizer.codebook_size)
        stats = collision_stats(codes, ids).to_dict()
        stats.update(levels=int(tokenizer.levels), codebook_size=int(tokenizer.codebook_size))
        if mode == "dedup_level":
            stats["dedup_level_vocab"] = stats["max_group_size"]
        ids_by_tokenizer[name] = ids
        report[name] = stats

    table = build_id_table(item_ids, ids_by_tokenizer)
    validate_id_table(table, paths.id_table, item_ids)
    write_parquet(table, paths.id_table)
    write_json(
        {"collision": mode, "n_items": int(item_ids.size), "tokenizers": list(ids_by_tokenizer), "per_tokenizer": report},
        paths.id_reports_dir / "emit.json",
    )
