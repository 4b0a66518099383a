"""The JSON release format of MTGRec, LC-Rec, LETTER and ETEGRec (``data.dataset: inter_json``).

``data.raw_dir`` holds ``<name>.inter.json`` (user index -> item indices in time order), optional
``<name>.item.json`` (item text) and optional ``<name>.index.json`` (the paper's semantic IDs, read
by emit-ids under ``ids.source: index_json``); ``<name>`` is ``data.category`` or the only
``*.inter.json`` there. The files are parsed by ``genrec_core.data.inter_json_format``.
"""

from __future__ import annotations

import polars as pl

from genrec_core.data.inter_json_format import INTER_SUFFIX, ITEM_SUFFIX, find_inter_json_stem, read_inter_json, read_item_json
from genrec_core.data.sources.atomic import atomic_template
from genrec_core.data.sources.base import RawDataset, Source, register_source


@register_source
class InterJsonSource(Source):
    """``data.dataset: inter_json``: presequenced (no timestamps; ``order`` keeps each user's list)."""

    name = "inter_json"

    def load(self) -> RawDataset:
        raw_dir = self.raw_dir
        stem = find_inter_json_stem(raw_dir, self.params.category)
        interactions = read_inter_json(raw_dir / f"{stem}{INTER_SUFFIX}")
        item_path = raw_dir / f"{stem}{ITEM_SUFFIX}"
        items = read_item_json(item_path) if item_path.is_file() else pl.DataFrame({"item": []}, schema={"item": pl.String})
        return RawDataset(
            interactions=interactions,
            items=items,
            default_template=atomic_template([c for c in items.columns if c != "item"]),
            presequenced=True,
            name=stem,
        )
