"""Stage train-tokenizer: item vectors -> trained semantic-ID tokenizer(s) (SPEC sections 3, 9).

``tokenizer.kind`` picks the registered kind whose spec fits (genrec_core/tokenizers/spec.py):
rqvae (epochs, resumable; ``kept_from: seeds``: keep_last seeded runs, tokenizers/seed_runs.py),
pq or rqkmeans (one shot, one kept tokenizer).

Reads data/embeddings/item_vectors.parquet (item_id Int32, vector Array[Float32]); writes
data/tokenizer/{last.pt, kept/*.pt} and reports/tokenizer/{history.csv, metrics.json}. A killed
RQ-VAE run resumes from data/tokenizer/last.pt, so that path must survive between runs
(``persist: true`` in dvc.yaml).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from genrec_core.config import Params, TokenizerParams
from genrec_core.errors import InputFormatError
from genrec_core.io import read_parquet
from genrec_core.paths import ArtifactPaths
from genrec_core.tokenizers.base import auto_codebook_size
from genrec_core.tokenizers.spec import tokenizer_spec

log = logging.getLogger(__name__)


def load_vectors(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(item_ids int64 [N], vectors float32 [N, D]) from the embeddings Parquet, in file order."""
    df = read_parquet(path, "item vectors")
    missing = {"item_id", "vector"} - set(df.columns)
    if missing:
        raise InputFormatError(path, f"missing column(s) {sorted(missing)}; expected item_id and vector")
    if df.height == 0:
        raise InputFormatError(path, "no items")
    vectors = df["vector"].to_numpy()
    if vectors.ndim != 2:  # a List column of ragged lengths
        raise InputFormatError(path, "column vector must hold fixed-length float vectors")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if not np.isfinite(vectors).all():
        raise InputFormatError(path, "vector has NaN or infinite values")
    return df["item_id"].to_numpy().astype(np.int64), vectors


def resolve_tokenizer_params(tp: TokenizerParams, num_items: int) -> TokenizerParams:
    """``codebook_size: auto`` -> the K chosen from the item count (logged), else ``tp`` as is."""
    if tp.codebook_size != "auto":
        return tp
    k = auto_codebook_size(num_items, tp.levels)
    log.info(
        "tokenizer.codebook_size auto: K = %d for %d items and L = %d (smallest power of two with K^(L-1) >= N, within [16, 256])", k, num_items, tp.levels
    )
    return dataclasses.replace(tp, codebook_size=k)


def run(params: Params, root: Path) -> None:
    paths = ArtifactPaths(Path(root))
    ids, vectors = load_vectors(paths.embeddings)
    tp = resolve_tokenizer_params(params.tokenizer, int(ids.size))
    tokenizer_spec(tp.kind).fit(vectors, tp, paths.tokenizer_dir, paths.tokenizer_reports_dir, item_ids=ids)
