"""Stage embed: item texts -> item vectors (SPEC section 2).

Reads data/processed/items.parquet and dataset.json, renders each item's text from
``embed.template``, encodes it with ``embed.mode``/``embed.model``, optionally L2-normalises and
reduces with PCA, and writes data/embeddings/item_vectors.parquet (item_id Int32, vector
Array[Float32, dim], rows in item_id order) plus reports/embed.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import polars as pl

from genrec_core.config import Params
from genrec_core.embed.encoders import build_encoder
from genrec_core.embed.pca import check_pca_dim, fit_pca
from genrec_core.embed.text import render_texts
from genrec_core.errors import EmptyResultError, InputFormatError, MissingInputError
from genrec_core.io import read_parquet, write_json, write_parquet
from genrec_core.paths import ArtifactPaths
from genrec_core.runtime import resolve_device, seed_everything


def _read_dataset_info(path: Path) -> dict:
    if not path.exists():
        raise MissingInputError(path, "dataset.json; run the preprocess stage first (dvc repro)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputFormatError(path, f"invalid JSON: {exc.msg}", exc.lineno) from None
    if not isinstance(info, dict):
        raise InputFormatError(path, "expected a JSON object")
    return info


def _check_items(items: pl.DataFrame, path: Path) -> pl.DataFrame:
    """Items sorted by item_id; the IDs must be 0..N-1 so row i of every later table is item i."""
    if "item_id" not in items.columns:
        raise InputFormatError(path, f"no item_id column (columns: {', '.join(items.columns)})")
    if items.height == 0:
        raise EmptyResultError(f"{path}: no items to embed")
    items = items.sort("item_id")
    ids = items["item_id"].to_numpy()
    if not np.array_equal(ids, np.arange(items.height)):
        raise InputFormatError(path, f"item_id must be 0..N-1 without gaps or repeats (N={items.height})")
    return items


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise unit length (in float64, so float16 model outputs do not lose precision); zero rows stay 0."""
    x64 = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x64, axis=1, keepdims=True)
    return (x64 / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def run(params: Params, root: Path) -> None:
    """Encode every item's text and write the vectors table and reports/embed.json."""
    start = time.perf_counter()
    p = params.embed
    paths = ArtifactPaths(Path(root))
    info = _read_dataset_info(paths.dataset_info)
    items = _check_items(read_parquet(paths.items, "items table"), paths.items)
    texts = render_texts(items, p.template, info)
    n = len(texts)
    if p.pca_dim is not None and p.pca_dim > n:
        check_pca_dim(p.pca_dim, n, p.pca_dim)  # fails now, before the model loads

    seed_everything(0)  # encoding draws no random numbers; a fixed seed keeps it so for any model, independent of the run's seed
    device = resolve_device(p.device)
    encoder = build_encoder(p, device)
    if p.pca_dim is not None:
        check_pca_dim(p.pca_dim, n, encoder.dim)
    t0 = time.perf_counter()
    vectors = encoder.encode(texts)
    encode_seconds = time.perf_counter() - t0
    if not np.isfinite(vectors).all():
        bad = int((~np.isfinite(vectors).all(axis=1)).sum())
        raise EmptyResultError(f"the encoder produced NaN/inf for {bad} of {n} items (with embed.dtype={p.dtype}, try float32)")
    model_dim = int(vectors.shape[1])

    if p.normalize:
        vectors = l2_normalize(vectors)
    pca_report = None
    if p.pca_dim is not None:
        pca = fit_pca(vectors, p.pca_dim, whiten=p.pca_whiten)
        vectors = pca.transform(vectors)
        pca_report = {
            "dim": p.pca_dim,
            "whiten": p.pca_whiten,
            "explained_variance_ratio": float(pca.explained_variance_ratio.sum()),
        }
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = int(vectors.shape[1])

    table = pl.DataFrame(
        {
            "item_id": pl.Series("item_id", np.arange(n), dtype=pl.Int32),
            "vector": pl.Series("vector", vectors, dtype=pl.Array(pl.Float32, dim)),
        }
    )
    write_parquet(table, paths.embeddings)
    n_empty = sum(1 for t in texts if not t)
    write_json(
        {
            "model": p.model,
            "model_path": encoder.model_name,
            "mode": p.mode,
            "template": p.template if p.template != "auto" else info.get("default_template"),
            "device": device,
            "dtype": p.dtype,
            "normalize": p.normalize,
            "model_dim": model_dim,
            "dim": dim,
            "pca": pca_report,
            "n_items": n,
            "n_empty_texts": n_empty,
            "example_text": texts[0],
            "encode_seconds": round(encode_seconds, 3),
            "seconds": round(time.perf_counter() - start, 3),
        },
        paths.reports_dir / "embed.json",
    )
