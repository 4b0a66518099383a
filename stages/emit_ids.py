"""Stage emit-ids: item vectors + kept tokenizers -> collision-free multi-identifier table.

Reads ``data/embeddings/item_vectors.parquet`` and every tokenizer the train-tokenizer stage kept
(``tokenizer.keep_last`` epochs), quantises all items with each, resolves collisions
(``ids.collision``) and writes ``data/ids/item_ids.parquet`` plus ``reports/ids/emit.json``.

``ids.source: index_json`` imports a paper's IDs instead: ``<data.raw_dir>/<name>.index.json`` of an
``inter_json`` dataset (LETTER, LC-Rec, MTGRec, ETEGRec releases), mapped to the processed item ids
(``data/processed/items.parquet`` keeps the source's item index as ``source_item_id``), as one
tokenizer named ``imported`` (``genrec_core.tokenizers.imported_ids``). No embeddings or tokenizer are read then.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genrec_core.artifacts import load_item_vectors
from genrec_core.config import Params
from genrec_core.errors import MissingInputError
from genrec_core.io import read_parquet, write_json, write_parquet
from genrec_core.paths import ArtifactPaths
from genrec_core.tokenizers.collisions import collision_stats, resolve_collisions
from genrec_core.tokenizers.id_table import build_id_table, validate_id_table


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


def run_index_json(params: Params, paths: ArtifactPaths) -> None:
    from genrec_core.tokenizers.imported_ids import IMPORTED, import_index_json

    items = read_parquet(paths.items, "the processed items table (stage preprocess)")
    path, item_ids, ids, stats = import_index_json(params, items, paths.items)
    table = build_id_table(item_ids, {IMPORTED: ids})
    validate_id_table(table, paths.id_table, item_ids)
    write_parquet(table, paths.id_table)
    write_json(
        {
            "source": "index_json",
            "file": str(path),
            "collision": params.ids.collision,
            "n_items": int(item_ids.size),
            "tokenizers": [IMPORTED],
            "per_tokenizer": {IMPORTED: stats},
        },
        paths.id_reports_dir / "emit.json",
    )
