"""Stage emit-ids: item vectors + kept tokenizers -> collision-free multi-identifier table.

Reads ``data/embeddings/item_vectors.parquet`` and every tokenizer the train-tokenizer stage kept
(``tokenizer.keep_last`` epochs), quantises all items with each, resolves collisions
(``ids.collision``) and writes ``data/ids/item_ids.parquet`` plus ``reports/ids/emit.json``.

``ids.source: index_json`` imports a paper's IDs instead: ``<data.raw_dir>/<name>.index.json`` of an
``inter_json`` dataset (LETTER, LC-Rec, MTGRec, ETEGRec releases), mapped to the processed item ids
(``data/processed/items.parquet`` keeps the source's item index as ``source_item_id``), as one
tokenizer named ``imported``. No embeddings or tokenizer are read then.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import polars as pl

from genrec_core.artifacts import load_item_vectors
from genrec_core.config import Params
from genrec_core.errors import InputFormatError, MissingInputError, ParamError
from genrec_core.io import read_parquet, write_json, write_parquet
from genrec_core.paths import ArtifactPaths
from genrec_core.tokenizers.base import QuantizeResult
from genrec_core.tokenizers.collisions import collision_stats, group_ids, resolve_collisions
from genrec_core.tokenizers.id_table import build_id_table, validate_id_table

#: The tokenizer name of imported IDs (``recommender.tokenizer: last`` picks it: it is the only one).
IMPORTED = "imported"
#: Colliding groups listed in emit.json (all are counted).
MAX_LISTED_COLLISIONS = 50


def run(params: Params, root: Path) -> None:
    paths = ArtifactPaths(Path(root))
    if params.ids.source == "index_json":
        run_index_json(params, paths)
        return
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
        {"source": "tokenizer", "collision": mode, "n_items": int(item_ids.size), "tokenizers": list(ids_by_tokenizer), "per_tokenizer": report},
        paths.id_reports_dir / "emit.json",
    )


# --------------------------------------------------------------------------- ids.source: index_json


def imported_codes(item_ids: np.ndarray, source_item_ids: list[str], keys: list[str], codes: np.ndarray, path: Path) -> np.ndarray:
    """The ``.index.json`` codes of the processed items [N, L], row i = ``item_ids[i]``; an item
    without an entry is an error naming it (entries of items the k-core dropped are ignored)."""
    row_of = {key: row for row, key in enumerate(keys)}
    missing = [(int(i), s) for i, s in zip(item_ids, source_item_ids) if s not in row_of]
    if missing:
        item_id, source = missing[0]
        raise InputFormatError(path, f"{len(missing)} of the {len(item_ids)} processed items have no ID here, e.g. item index {source!r} (item_id {item_id}); is data.raw_dir the folder the dataset was preprocessed from?")
    return codes[[row_of[s] for s in source_item_ids]]


def resolve_imported_collisions(codes: np.ndarray, mode: str) -> np.ndarray:
    """Unique IDs from imported codes under ``ids.collision``. ``dedup_level`` appends a level as
    for trained tokenizers; ``reassign_last`` has no residuals to measure distances with, so in each
    colliding group the lowest item_id keeps the ID and the others take, in item order, the lowest
    last-level codes no item under the same prefix uses (codes below the largest level's size)."""
    n = codes.shape[0]
    size = int(codes.max()) + 1 if codes.size else 1
    flat = QuantizeResult(codes, np.zeros((n, 1), dtype=np.float32), np.zeros((size, 1), dtype=np.float32))
    return resolve_collisions(flat, mode, size)


def collision_groups(codes: np.ndarray, item_ids: np.ndarray, source_item_ids: list[str]) -> list[dict]:
    """Raw IDs shared by several items: the ID, its item_ids and their item indices in the file."""
    gid, sizes = group_ids(codes)
    groups = []
    for g in np.flatnonzero(sizes > 1):
        rows = np.flatnonzero(gid == g)
        groups.append({"codes": codes[rows[0]].tolist(), "item_ids": item_ids[rows].tolist(), "source_item_ids": [source_item_ids[r] for r in rows]})
    return groups


def run_index_json(params: Params, paths: ArtifactPaths) -> None:
    from genrec_core.data.inter_json_format import INDEX_SUFFIX, find_inter_json_stem, read_index_json
    from genrec_core.data.readers import require_file

    data = params.data
    if data.dataset != "inter_json" or data.raw_dir is None:
        raise ParamError("ids.source", f"index_json imports <data.raw_dir>/<name>.index.json of an inter_json dataset, but data.dataset is {data.dataset!r}; use ids.source: tokenizer")
    raw_dir = Path(data.raw_dir)
    path = require_file(raw_dir / f"{find_inter_json_stem(raw_dir, data.category)}{INDEX_SUFFIX}", "ids.source index_json: the paper's semantic IDs")
    keys, codes, prefixes = read_index_json(path)

    items = read_parquet(paths.items, "the processed items table (stage preprocess)")
    for col in ("item_id", "source_item_id"):
        if col not in items.columns:
            raise InputFormatError(paths.items, f"no {col} column; rerun the preprocess stage")
    items = items.sort("item_id")
    item_ids = items["item_id"].to_numpy().astype(np.int64)
    source_ids = items["source_item_id"].cast(pl.String).to_list()
    raw = imported_codes(item_ids, source_ids, keys, codes, path)

    mode = params.ids.collision
    groups = collision_groups(raw, item_ids, source_ids)
    ids = resolve_imported_collisions(raw, mode) if groups else raw
    stats = collision_stats(raw, ids).to_dict()
    sizes = (ids.max(axis=0) + 1).tolist()
    stats.update(
        levels=int(raw.shape[1]),
        codebook_size=int(max(sizes)),  # one K for the reports; the recommender sizes each level by its codes
        codebook_sizes=[int(k) for k in sizes],  # largest code + 1 per level of the final IDs
        codes_used=[int(np.unique(ids[:, level]).size) for level in range(ids.shape[1])],
        level_prefixes=prefixes,
        colliding_items=int(sum(len(g["item_ids"]) for g in groups)),
        collisions=groups[:MAX_LISTED_COLLISIONS],
        unused_entries=len(keys) - len(item_ids),  # IDs of items the processed dataset does not have
    )
    if mode == "dedup_level":
        stats["dedup_level_vocab"] = stats["max_group_size"]

    table = build_id_table(item_ids, {IMPORTED: ids})
    validate_id_table(table, paths.id_table, item_ids)
    write_parquet(table, paths.id_table)
    write_json(
        {"source": "index_json", "file": str(path), "collision": mode, "n_items": int(item_ids.size), "tokenizers": [IMPORTED], "per_tokenizer": {IMPORTED: stats}},
        paths.id_reports_dir / "emit.json",
    )
