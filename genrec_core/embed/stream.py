"""Item vectors in row chunks: encode a large catalogue chunk by chunk and stream the chunks into
the embeddings Parquet, so memory holds one chunk of vectors, not all N (the embed stage, SPEC
section 2; benchmarks/large_catalogue.py measures it at a million items).

Up to ``CHUNK_ITEMS`` items everything is one encoder call and one polars write, exactly as the
embed stage did before chunking existed (same vectors, same file).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import polars as pl

from genrec_core.errors import EmptyResultError
from genrec_core.io import atomic_path, write_parquet


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise unit length (in float64, so float16 model outputs do not lose precision); zero rows stay 0."""
    x64 = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x64, axis=1, keepdims=True)
    return (x64 / np.where(norms > 0, norms, 1.0)).astype(np.float32)


#: Items encoded per chunk. A larger catalogue is encoded and written chunk by chunk (one
#: progress bar over all items), so without PCA/concat memory holds one chunk of vectors, not N
#: (benchmarks/large_catalogue.py); up to this many items it is one encoder call and one write,
#: exactly as before chunking existed (same vectors, same file).
CHUNK_ITEMS = 65536


def encode_chunks(encoder, texts: list[str], normalize: bool, timer: dict | None = None, chunk_items: int | None = None) -> Iterator[np.ndarray]:
    """Encoded texts, ``chunk_items`` (default ``CHUNK_ITEMS``) at a time, each chunk float32
    [n, model dim] L2-normalised when ``normalize``; NaN/inf is an error naming the item.
    ``timer["encode_seconds"]`` (when given) adds up the time spent in the encoder."""
    from tqdm.auto import tqdm

    n = len(texts)
    chunk = CHUNK_ITEMS if chunk_items is None else int(chunk_items)
    if chunk < 1:
        raise ValueError(f"chunk_items must be >= 1, got {chunk}")
    chunked = n > chunk
    if chunked and hasattr(encoder, "progress"):
        encoder.progress = False  # one bar over all items instead of one per chunk
    bar = tqdm(total=n, desc="embed", unit="item", disable=not chunked or None)
    try:
        for start in range(0, n, chunk):
            part = texts[start : start + chunk]
            t0 = time.perf_counter()
            vectors = np.asarray(encoder.encode(part), dtype=np.float32)
            if timer is not None:
                timer["encode_seconds"] = timer.get("encode_seconds", 0.0) + time.perf_counter() - t0
            bad = ~np.isfinite(vectors).all(axis=1)
            if bad.any():
                raise EmptyResultError(
                    f"the encoder produced NaN/inf for item {start + int(np.argmax(bad))} (with embed.dtype={getattr(encoder, 'dtype', 'float32')}, try "
                    "float32)"
                )
            yield l2_normalize(vectors) if normalize else vectors
            bar.update(len(part))
    finally:
        bar.close()


def write_vectors(chunks: Iterable[np.ndarray], path: Path, n_items: int) -> int:
    """Write item vectors, given as consecutive row chunks (item 0 first), to the embeddings
    Parquet (item_id Int32, vector Array[Float32, dim]); returns dim.

    One chunk is written as one polars table (as the stage always did); several are streamed
    into the file one row group per chunk, so only one chunk is in memory at a time. Either way
    the file is written atomically and reads back as the same table."""
    it = iter(chunks)
    first = np.ascontiguousarray(next(it), dtype=np.float32)
    dim = int(first.shape[1])

    def table(vectors: np.ndarray, start: int) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "item_id": pl.Series("item_id", np.arange(start, start + vectors.shape[0]), dtype=pl.Int32),
                "vector": pl.Series("vector", np.ascontiguousarray(vectors, dtype=np.float32), dtype=pl.Array(pl.Float32, dim)),
            }
        )

    second = next(it, None)
    if second is None:
        if first.shape[0] != n_items:
            raise EmptyResultError(f"got vectors for {first.shape[0]} items, expected {n_items}")
        write_parquet(table(first, 0), path)
        return dim

    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        written = 0
        writer = None
        try:
            for vectors in itertools.chain([first, second], it):
                if vectors.ndim != 2 or vectors.shape[1] != dim:
                    raise EmptyResultError(f"vector chunk of shape {vectors.shape}, expected [n, {dim}]")
                arrow = table(vectors, written).to_arrow()
                if writer is None:
                    writer = pq.ParquetWriter(tmp, arrow.schema, compression="zstd", write_statistics=True)
                writer.write_table(arrow)
                written += vectors.shape[0]
        finally:
            if writer is not None:
                writer.close()
        if written != n_items:
            raise EmptyResultError(f"got vectors for {written} items, expected {n_items}")
    return dim
