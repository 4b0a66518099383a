"""Stage analyse-ids: how the semantic IDs discriminate items and how stable they are across epochs.

Reads ``data/ids/item_ids.parquet`` (and training frequencies from ``data/processed`` when
available) and writes to ``reports/ids/analysis/`` (one DVC output directory): ``analysis.json``,
``analysis.md``, ``purity_gain.png`` and ``codebook_usage.png`` (see
``genrec_core.analysis.id_analysis``).
"""

from __future__ import annotations

import json
from pathlib import Path

from genrec_core.analysis.id_analysis import build_report, render_markdown, save_plots, train_item_counts
from genrec_core.config import Params
from genrec_core.io import write_json, write_text
from genrec_core.paths import ArtifactPaths
from genrec_core.tokenizers.base import auto_codebook_size
from genrec_core.tokenizers.id_table import read_id_table_with_items


def run(params: Params, root: Path) -> None:
    paths = ArtifactPaths(Path(root))
    item_ids, tables = read_id_table_with_items(paths.id_table)
    counts = train_item_counts(paths.processed_dir, item_ids)
    # describe the table as emitted (emit.json), which params may no longer match outside DVC
    emit_report = paths.id_reports_dir / "emit.json"
    collision = params.ids.collision
    codebook_size = params.tokenizer.codebook_size
    if emit_report.exists():
        emitted = json.loads(emit_report.read_text(encoding="utf-8"))
        collision = emitted.get("collision", collision)
        # the K the tokenizer was trained with (codebook_size: auto is resolved there)
        sizes = {int(t["codebook_size"]) for t in emitted.get("per_tokenizer", {}).values() if "codebook_size" in t}
        if len(sizes) == 1:
            codebook_size = sizes.pop()
    if codebook_size == "auto":
        codebook_size = auto_codebook_size(int(item_ids.size), params.tokenizer.levels)
    report = build_report(
        tables,
        codebook_size=codebook_size,
        levels=params.tokenizer.levels,
        item_counts=counts,
        collision=collision,
    )
    out = paths.id_reports_dir / "analysis"
    save_plots(report, out)
    write_text(render_markdown(report), out / "analysis.md")
    write_json(report, out / "analysis.json")
