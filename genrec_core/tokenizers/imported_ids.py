"""A paper's own semantic IDs as the ID table (``ids.source: index_json``).

``<data.raw_dir>/<name>.index.json`` of an ``inter_json`` dataset (LETTER, LC-Rec, MTGRec, ETEGRec
releases): item index -> tokens such as ``"<a_12>"``. ``import_index_json`` maps the file's item
indices to the processed item ids (``items.parquet`` keeps the source index as ``source_item_id``),
makes the IDs unique under ``ids.collision`` and returns them with the statistics emit-ids reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from genrec_core.config import Params
from genrec_core.errors import InputFormatError, ParamError
from genrec_core.tokenizers.base import QuantizeResult
from genrec_core.tokenizers.collisions import collision_stats, group_ids, resolve_collisions

#: The tokenizer name of imported IDs (``recommender.tokenizer: last`` picks it: it is the only one).
IMPORTED = "imported"
#: Colliding groups listed in emit.json (all are counted).
MAX_LISTED_COLLISIONS = 50


def imported_codes(item_ids: np.ndarray, source_item_ids: list[str], keys: list[str], codes: np.ndarray, path: Path) -> np.ndarray:
    """The ``.index.json`` codes of the processed items [N, L], row i = ``item_ids[i]``; an item
    without an entry is an error naming it (entries of items the k-core dropped are ignored)."""
    row_of = {key: row for row, key in enumerate(keys)}
    missing = [(int(i), s) for i, s in zip(item_ids, source_item_ids) if s not in row_of]
    if missing:
        item_id, source = missing[0]
        raise InputFormatError(
            path,
            f"{len(missing)} of the {len(item_ids)} processed items have no ID here, e.g. item index {source!r} (item_id {item_id}); is data.raw_dir "
            "the folder the dataset was preprocessed from?",
        )
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


def import_index_json(params: Params, items: pl.DataFrame, items_path: Path) -> tuple[Path, np.ndarray, np.ndarray, dict[str, Any]]:
    """(the index file, item_ids [N], unique IDs [N, L'], statistics) for the processed ``items``
    (read from ``items_path``, named in errors)."""
    from genrec_core.data.inter_json_format import INDEX_SUFFIX, find_inter_json_stem, read_index_json
    from genrec_core.data.readers import require_file

    data = params.data
    if data.dataset != "inter_json" or data.raw_dir is None:
        raise ParamError(
            "ids.source",
            f"index_json imports <data.raw_dir>/<name>.index.json of an inter_json dataset, but data.dataset is {data.dataset!r}; use ids.source: tokenizer",
        )
    raw_dir = Path(data.raw_dir)
    path = require_file(raw_dir / f"{find_inter_json_stem(raw_dir, data.category)}{INDEX_SUFFIX}", "ids.source index_json: the paper's semantic IDs")
    keys, codes, prefixes = read_index_json(path)

    for col in ("item_id", "source_item_id"):
        if col not in items.columns:
            raise InputFormatError(items_path, f"no {col} column; rerun the preprocess stage")
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
    return path, item_ids, ids, stats
