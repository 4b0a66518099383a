"""Stage embed: item texts and/or training sequences -> item vectors (SPEC sections 2 and 9).

``embed.source`` picks where the vectors come from:

- ``text``: reads data/processed/items.parquet and dataset.json, renders each item's text from
  ``embed.template``, encodes it with ``embed.mode``/``embed.model``;
- ``collaborative``: ``embed.collaborative`` (``svd`` or ``sasrec``) vectors of size
  ``embed.collaborative_dim`` from the ``train_items`` of data/processed/sequences.parquet (the
  training parts only; genrec_core.embed.collaborative);
- ``concat``: both, each part L2-normalised, concatenated;
- ``auto`` (default): ``text`` when the dataset has item text (dataset.json lists text fields and
  at least one item's rendered text is not blank), else ``collaborative``; embed.json and the
  log say which and why.

Then the vectors are optionally L2-normalised (``embed.normalize``; for ``concat`` each part
already is) and reduced with PCA, and written to data/embeddings/item_vectors.parquet (item_id
Int32, vector Array[Float32, dim], rows in item_id order) plus reports/embed.json.

Text vectors without PCA are streamed (genrec_core/embed/stream.py): encoded ``CHUNK_ITEMS``
items at a time (one progress bar) and written one Parquet row group per chunk, so a
million-item catalogue never holds all its vectors in memory (PCA and ``concat`` need them all,
and assemble them).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl

from genrec_core.config import EmbedParams, Params
from genrec_core.embed.encoders import build_encoder
from genrec_core.embed.pca import check_pca_dim, fit_pca
from genrec_core.embed.stream import encode_chunks, l2_normalize, write_vectors
from genrec_core.embed.text import render_texts
from genrec_core.errors import EmptyResultError, InputFormatError, MissingInputError, ParamError
from genrec_core.io import read_parquet, write_json
from genrec_core.paths import ArtifactPaths
from genrec_core.runtime import resolve_device, seed_everything

log = logging.getLogger(__name__)


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


def _text_fields(items: pl.DataFrame, info: dict) -> list[str]:
    """dataset.json's ``text_fields``; for an older dataset.json without them, the items' columns."""
    fields = info.get("text_fields")
    if isinstance(fields, list):
        return [str(f) for f in fields]
    return [c for c in items.columns if c not in ("item_id", "source_item_id")]


def choose_source(p: EmbedParams, items: pl.DataFrame, info: dict) -> tuple[str, str, list[str] | None]:
    """(source used: text | collaborative | concat, why, rendered texts or None when not needed).

    The dataset "has text" when dataset.json lists text fields and at least one item's text,
    rendered from ``embed.template``, is not blank.
    """
    n = items.height
    fields = _text_fields(items, info)
    if p.source == "collaborative":
        return "collaborative", "embed.source is collaborative", None
    if p.source == "text":
        try:
            texts = render_texts(items, p.template, info)
        except ParamError as exc:
            if fields:
                raise
            raise ParamError(
                "embed.source",
                f"is text, but the dataset has no item text fields (dataset.json) and the template failed ({exc}); use embed.source: collaborative or auto",
            ) from None
        if not any(t.strip() for t in texts):
            log.warning(
                "embed.source is text but all %d item texts are empty: every item gets the same vector (embed.source: auto would use collaborative vectors)", n
            )
        return "text", "embed.source is text", texts
    # auto / concat: find out whether there is text
    if not fields:
        has_text, why, texts = False, "the dataset has no item text fields (dataset.json text_fields is empty)", None
    else:
        texts = render_texts(items, p.template, info)
        nonblank = sum(1 for t in texts if t.strip())
        if nonblank == 0:
            has_text, why = False, f"all {n} item texts rendered from the template are empty (fields: {', '.join(fields)})"
        else:
            has_text, why = True, f"{nonblank} of {n} items have text (fields: {', '.join(fields)})"
    if p.source == "concat":
        if not has_text:
            raise ParamError("embed.source", f"is concat, which needs item text, but {why}; use embed.source: collaborative")
        return "concat", f"embed.source is concat; {why}", texts
    return ("text" if has_text else "collaborative"), f"embed.source is auto and {why}", texts


def read_train_sequences(paths: ArtifactPaths, n_items: int) -> list[np.ndarray]:
    """The training part of every user's sequence (``train_items`` of sequences.parquet)."""
    path = paths.sequences
    seqs = read_parquet(path, "sequences table (stage preprocess)")
    if "train_items" not in seqs.columns:
        raise InputFormatError(path, f"no train_items column (columns: {', '.join(seqs.columns)}); rerun the preprocess stage")
    col = seqs["train_items"]
    if col.null_count() or col.list.eval(pl.element().is_null().any()).explode().any():
        raise InputFormatError(path, "train_items holds null values")
    arrow = col.cast(pl.List(pl.Int32)).rechunk().to_arrow()
    if hasattr(arrow, "combine_chunks"):
        arrow = arrow.combine_chunks()
    offsets = np.asarray(arrow.offsets, dtype=np.int64)
    offsets = offsets - offsets[0]
    values = np.asarray(arrow.values.to_numpy(zero_copy_only=False), dtype=np.int32)[: offsets[-1]] if len(arrow) else np.zeros(0, np.int32)
    if values.size and (values.min() < 0 or values.max() >= n_items):
        raise InputFormatError(
            path,
            f"train_items holds item id {int(values.max()) if values.max() >= n_items else int(values.min())} outside 0..{n_items - 1} (items.parquet); "
            "rerun the preprocess stage",
        )
    return np.split(values, offsets[1:-1]) if len(arrow) else []


def collaborative_vectors(params: Params, paths: ArtifactPaths, n_items: int) -> tuple[np.ndarray, dict]:
    """``embed.collaborative`` vectors [N, d] of the training sequences, and their report."""
    from genrec_core.embed.collaborative import cooccurrence_svd_vectors, sasrec_item_vectors

    p = params.embed
    t0 = time.perf_counter()
    sequences = read_train_sequences(paths, n_items)
    if p.collaborative == "svd":
        vectors, info = cooccurrence_svd_vectors(sequences, n_items, p.collaborative_dim, seed=p.seed, window=p.cooccurrence_window, return_info=True)
    elif p.collaborative == "sasrec":
        vectors, info = sasrec_item_vectors(
            sequences, n_items, p.collaborative_dim, seed=p.seed, epochs=p.sasrec_epochs, patience=p.sasrec_patience, device=p.device, return_info=True
        )
    else:
        raise ParamError("embed.collaborative", f"must be svd or sasrec, got {p.collaborative!r}")
    if not np.isfinite(vectors).all():
        raise EmptyResultError(f"the {p.collaborative} item vectors hold NaN/inf")
    report = {
        "collaborative": p.collaborative,
        "collaborative_dim": int(vectors.shape[1]),
        "collaborative_seed": p.seed,
        "collaborative_info": info,
        "collaborative_seconds": round(time.perf_counter() - t0, 3),
    }
    log.info("%s item vectors: %d items x %d", p.collaborative, n_items, vectors.shape[1])
    return vectors, report


def text_vectors(
    p: EmbedParams, texts: list[str], info: dict, check_pca: bool = True, assemble: bool = True
) -> tuple[np.ndarray | Iterator[np.ndarray], dict, dict]:
    """Encoded item texts [N, model dim], L2-normalised when ``embed.normalize``, and the report
    entries that go before and after the common ones (the text-only embed.json layout).
    ``check_pca``: check ``embed.pca_dim`` against the model's dimension before encoding.
    ``assemble=False``: the vectors as a lazy iterator of row chunks (``encode_chunks``); the
    tail's ``encode_seconds`` is filled in once it is exhausted."""
    n = len(texts)
    seed_everything(0)  # encoding draws no random numbers; a fixed seed keeps it so for any model, independent of the run's seed
    device = resolve_device(p.device)
    encoder = build_encoder(p, device)
    if p.pca_dim is not None and check_pca:
        check_pca_dim(p.pca_dim, n, encoder.dim)
    head = {
        "model": p.model,
        "model_path": encoder.model_name,
        "mode": p.mode,
        "template": p.template if p.template != "auto" else info.get("default_template"),
        "device": device,
        "dtype": p.dtype,
        "normalize": p.normalize,
        "model_dim": int(encoder.dim),
    }
    timer: dict = {"encode_seconds": 0.0}
    tail = {"n_empty_texts": sum(1 for t in texts if not t), "example_text": texts[0], "encode_seconds": 0.0}
    chunks = encode_chunks(encoder, texts, p.normalize, timer)

    def timed() -> Iterator[np.ndarray]:
        yield from chunks
        tail["encode_seconds"] = round(timer["encode_seconds"], 3)

    if not assemble:
        return timed(), head, tail
    parts = list(timed())
    vectors = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return vectors, head, tail


def run(params: Params, root: Path) -> None:
    """Make every item's vector (text, collaborative or both) and write the vectors table and reports/embed.json."""
    start = time.perf_counter()
    p = params.embed
    paths = ArtifactPaths(Path(root))
    info = _read_dataset_info(paths.dataset_info)
    items = _check_items(read_parquet(paths.items, "items table"), paths.items)
    n = items.height
    source, reason, texts = choose_source(p, items, info)
    log.info("embed: using %s item vectors (%s)", source, reason)
    if p.pca_dim is not None and p.pca_dim > n:
        check_pca_dim(p.pca_dim, n, p.pca_dim)  # fails now, before a model loads or trains

    report: dict = {"source": source, "source_param": p.source, "source_reason": reason}
    tail: dict = {}
    if source == "text" and p.pca_dim is None:  # nothing needs all vectors at once: encode and write chunk by chunk
        assert texts is not None
        chunks, head, tail = text_vectors(p, texts, info, assemble=False)
        report.update(head)
        dim = write_vectors(chunks, paths.embeddings, n)
        report.update({"dim": dim, "pca": None, "n_items": n, **tail, "seconds": round(time.perf_counter() - start, 3)})
        write_json(report, paths.reports_dir / "embed.json")
        return
    if source in ("text", "concat"):
        assert texts is not None
        tvec, head, tail = text_vectors(p, texts, info, check_pca=source == "text")
        report.update(head)
    if source in ("collaborative", "concat"):
        cvec, creport = collaborative_vectors(params, paths, n)
        report.update(creport)

    if source == "text":
        vectors = tvec
    elif source == "collaborative":
        vectors = l2_normalize(cvec) if p.normalize else cvec
        report["normalize"] = p.normalize
    else:
        from genrec_core.embed.collaborative import combine

        vectors = combine(tvec, cvec)
        report["combine"] = "each part L2-normalised, then concatenated (text first)"
        report["text_dim"] = int(tvec.shape[1])
    if p.pca_dim is not None:
        check_pca_dim(p.pca_dim, n, int(vectors.shape[1]))

    pca_report = None
    if p.pca_dim is not None:
        pca = fit_pca(vectors, p.pca_dim, whiten=p.pca_whiten)
        vectors = pca.transform(vectors)
        pca_report = {
            "dim": p.pca_dim,
            "whiten": p.pca_whiten,
            "explained_variance_ratio": float(pca.explained_variance_ratio.sum()),
        }
    dim = write_vectors([vectors], paths.embeddings, n)
    report.update({"dim": dim, "pca": pca_report, "n_items": n, **tail, "seconds": round(time.perf_counter() - start, 3)})
    write_json(report, paths.reports_dir / "embed.json")
