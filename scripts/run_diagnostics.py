"""What a finished run measured about itself, beside its test figures: the diagnostics issue 24 asks
for where a paper's effect does not appear (scripts/reproduction.py tables them per dataset).

Per row (means over its finished seeds), read from each workspace:

* the validation-test gap: best validation N@10 of the tested checkpoint (``reports/train/summary.json``,
  or a fine-tuned one's, ``reports/method/selected.json``; on the validation sample when
  ``max_eval_users`` samples) and test N@10 (``reports/metrics.json``), and their ratio;
* BLOGER (``summary.json`` ``bloger_before`` / ``bloger_after`` / ``bloger_updates``): level-1
  codebook density (share of the K codes some item uses) and entropy (bits) of the starting and
  of the selected IDs, and the share of items whose ID changed at the first and at the last update;
* MTGRec (``reports/method/influence.csv``, ``reports/method/selected.json``): the sampling
  distribution p over the kept tokenizers at the last stage (its smallest and largest value and its
  entropy over log2 of the number of tokenizers: 1 = uniform, the mix did not single any out) and
  the tokenizer whose fine-tuned model was tested; and how alike its kept tokenizers' ID tables are
  (``data/ids/item_ids.parquet``): MTGRec's Table 5 at one epoch apart, the share of items whose
  first token and whose any token changes. MTGRec means its tokenizers to be neighbours of one
  another; on tables that share few IDs the model learns several unrelated ones.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from converged import _f, _mean  # the report scripts' mean over runs and "-" for a missing value

from benchmarks.runs import read_json  # converged puts the repository root on sys.path


def _json(path: Path) -> dict[str, Any]:
    return read_json(path) or {}


def final_mix(influence_csv: Path) -> dict[str, float] | None:
    """The last stage's p over tokenizers: min, max, entropy / log2(count); None without stages."""
    try:
        with influence_csv.open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return None
    if not rows:
        return None
    last = max(int(r["stage"]) for r in rows)
    p = [float(r["p"]) for r in rows if int(r["stage"]) == last]
    total = sum(p)
    if len(p) < 2 or total <= 0:
        return None
    p = [x / total for x in p]
    entropy = -sum(x * math.log2(x) for x in p if x > 0)
    return {"p_min": min(p), "p_max": max(p), "p_entropy": entropy / math.log2(len(p)), "tokenizers": len(p)}


def adjacent_id_changes(item_ids: Path) -> dict[str, float] | None:
    """MTGRec Table 5 at interval 1 (genrec_core.analysis.id_analysis.change_shares): the share of
    items whose first token / any token differs between kept tokenizers one epoch apart; None for a
    missing table or one without such pairs."""
    from genrec_core.analysis.id_analysis import change_shares
    from genrec_core.tokenizers.id_table import read_id_table_with_items

    if not item_ids.exists():
        return None
    rows = change_shares(read_id_table_with_items(item_ids)[1], intervals=[1])
    return {"first_changed": rows[0]["first_changed"], "any_changed": rows[0]["any_changed"]} if rows else None


def workspace_diagnostics(workspace: Path) -> dict[str, Any]:
    """The diagnostics one finished workspace holds (keys absent where it has none)."""
    workspace = Path(workspace)
    summary = _json(workspace / "reports" / "train" / "summary.json")
    metrics = _json(workspace / "reports" / "metrics.json")
    out: dict[str, Any] = {}
    # the tested checkpoint's validation: a fine-tuned one's (MTGRec, selected.json) where there is one
    selected = _json(workspace / "reports" / "method" / "selected.json")
    valid, test = (selected.get("valid") or {}).get("ndcg@10", summary.get("best_valid_ndcg@10")), metrics.get("ndcg@10")
    if isinstance(valid, (int, float)) and isinstance(test, (int, float)):
        out.update(valid_ndcg10=float(valid), test_ndcg10=float(test))
        if valid > 0:
            out["test_over_valid"] = float(test) / float(valid)
    before, after, updates = summary.get("bloger_before"), summary.get("bloger_after"), summary.get("bloger_updates") or []
    if before:
        out.update(density_before=before["density"][0], entropy_before=before["entropy"][0])
    if after:
        out.update(density_after=after["density"][0], entropy_after=after["entropy"][0])
    if updates:
        out.update(changed_first=float(updates[0]["changed"]), changed_last=float(updates[-1]["changed"]), updates=len(updates))
    mix = final_mix(workspace / "reports" / "method" / "influence.csv")
    if mix:
        out.update(mix)
        if selected.get("tokenizer") is not None:
            out["selected"] = str(selected["tokenizer"])
        changes = adjacent_id_changes(workspace / "data" / "ids" / "item_ids.parquet")
        if changes:
            out.update(changes)
    return out


def _cell(diags: list[dict[str, Any]], key: str, fmt: str) -> str:
    """The mean of ``key`` over the workspaces that have it, formatted ("-" where none has)."""
    return _f(_mean([d.get(key) for d in diags]), fmt)


def row_cells(diags: list[dict[str, Any]]) -> list[str]:
    """The table cells of one row's workspaces' diagnostics (means over them)."""
    ids = "-"
    if any("density_before" in d for d in diags):
        ids = (
            f"density {_cell(diags, 'density_before', '.3f')} -> {_cell(diags, 'density_after', '.3f')}, "
            f"entropy {_cell(diags, 'entropy_before', '.2f')} -> {_cell(diags, 'entropy_after', '.2f')} bits; "
            f"IDs changed {_cell(diags, 'changed_first', '.1%')} (first update) -> {_cell(diags, 'changed_last', '.1%')} "
            f"(last of {_cell(diags, 'updates', '.0f')})"
        )
    mix = "-"
    if any("p_entropy" in d for d in diags):
        chosen = ", ".join(sorted({d["selected"] for d in diags if "selected" in d})) or "-"
        mix = (
            f"p over {_cell(diags, 'tokenizers', '.0f')} tokenizers {_cell(diags, 'p_min', '.2f')}-{_cell(diags, 'p_max', '.2f')}, "
            f"entropy {_cell(diags, 'p_entropy', '.2f')} of uniform's; tested: {chosen}"
        )
        if any("any_changed" in d for d in diags):
            mix += (
                f"; kept tokenizers one epoch apart change the first token of {_cell(diags, 'first_changed', '.1%')} of the items, "
                f"any token of {_cell(diags, 'any_changed', '.1%')}"
            )
    return [_cell(diags, "valid_ndcg10", ".4f"), _cell(diags, "test_ndcg10", ".4f"), _cell(diags, "test_over_valid", ".2f"), ids, mix]


def diagnostics_lines(rows: list[tuple[str, list[Path]]]) -> list[str]:
    """A markdown table, one line per (row name, its finished workspaces); none if no row has one."""
    rows = [(name, spaces) for name, spaces in rows if spaces]
    if not rows:
        return []
    lines = [
        "Diagnostics of the finished runs (means over seeds; scripts/run_diagnostics.py): best validation N@10 (on the validation "
        "sample where one is drawn), test N@10 and their ratio; BLOGER's level-1 codebook density and entropy of the starting -> "
        "selected IDs and the share of IDs each tokenizer update changed; MTGRec's sampling distribution over its tokenizers at the "
        "last stage, the tokenizer tested, and the share of items whose first / any token changes between kept tokenizers one epoch apart "
        "(MTGRec Table 5).",
        "",
        "| row | seeds | best valid N@10 | test N@10 | test / valid | BLOGER: IDs | MTGRec: tokenizer mix |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for name, spaces in rows:
        lines.append("| " + " | ".join([f"`{name}`", str(len(spaces)), *row_cells([workspace_diagnostics(w) for w in spaces])]) + " |")
    return lines
