"""Readers of pipeline artifacts that more than one stage (or script) consumes.

Each reader takes the path a stage hands over (``genrec_core.paths.ArtifactPaths``) and turns a
malformed file into an ``InputFormatError`` naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from genrec_core.errors import InputFormatError
from genrec_core.io import read_parquet

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
