"""preprocess stage: raw interactions -> k-core, time-ordered, leave-one-out Parquet tables."""

from __future__ import annotations

import logging
from pathlib import Path

from genrec_core.config import Params
from genrec_core.data.protocol import SPLITS, apply_protocol, dataset_display_name, stats_markdown
from genrec_core.data.sources.base import get_source
from genrec_core.io import write_json, write_parquet, write_text
from genrec_core.paths import ArtifactPaths

log = logging.getLogger(__name__)


def run(params: Params, root: Path) -> None:
    paths = ArtifactPaths(Path(root))
    data = params.data
    raw = get_source(data).load()
    processed = apply_protocol(
        raw, data.min_interactions, data.max_items, dataset_display_name(data.dataset, data.category), data.cold_item_share, data.cold_item_seed
    )

    # Everything is computed before the first write, so bad input leaves no partial outputs.
    write_parquet(processed.items, paths.items)
    write_parquet(processed.sequences, paths.sequences)
    for split in SPLITS:
        write_parquet(processed.examples[split], paths.examples(split))
    text_fields = [c for c in processed.items.columns if c not in ("item_id", "source_item_id")]
    write_json(
        {
            "dataset": data.dataset,
            "display_name": dataset_display_name(data.dataset, data.category),
            "default_template": raw.default_template,
            "text_fields": text_fields,
            "presequenced": raw.presequenced,
            **({"cold_item_ids": processed.cold_items} if processed.cold_items else {}),
        },
        paths.dataset_info,
    )
    write_json(processed.stats, paths.data_stats_json)
    write_text(stats_markdown(processed.stats), paths.data_stats_md)
    s = processed.stats
    log.info("%s: %d users, %d items, %d interactions", data.dataset, s["users"], s["items"], s["interactions"])
