"""scripts/run_diagnostics.py on hand-made workspaces: the validation-test ratio, BLOGER's ID records,
MTGRec's last tokenizer mix, and the table reproduction.py prints."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import run_diagnostics as rd  # noqa: E402


def workspace(root: Path, name: str, valid: float, test: float, summary: dict | None = None, influence: str | None = None, selected=None) -> Path:
    ws = root / name
    (ws / "reports" / "train").mkdir(parents=True)
    (ws / "reports" / "train" / "summary.json").write_text(json.dumps({"best_valid_ndcg@10": valid, **(summary or {})}))
    (ws / "reports" / "metrics.json").write_text(json.dumps({"ndcg@10": test, "hit@10": 2 * test}))
    (ws / "reports" / "method").mkdir()
    (ws / "reports" / "method" / "influence.csv").write_text(influence or "stage,epoch,step,tokenizer,influence,cumulative,p\n")
    if selected is not None:
        (ws / "reports" / "method" / "selected.json").write_text(json.dumps({"tokenizer": selected, "valid": {"ndcg@10": 2 * valid}}))
    return ws


BLOGER = {
    "bloger_before": {"density": [0.5, 1.0], "entropy": [3.0, 4.0]},
    "bloger_after": {"density": [0.75, 1.0], "entropy": [3.5, 4.0]},
    "bloger_updates": [{"update": 1, "changed": 0.2}, {"update": 2, "changed": 0.05}, {"update": 3, "changed": 0.01}],
}
# stage 1 then stage 2 (the last): p = 2, 1, 1 over three tokenizers -> 0.5, 0.25, 0.25 after normalising
INFLUENCE = "stage,epoch,step,tokenizer,influence,cumulative,p\n" + "".join(
    f"{stage},{stage}.0,{10 * stage},{t},0.0,0.0,{p}\n" for stage, ps in ((1, (0.2, 0.3, 0.5)), (2, (2.0, 1.0, 1.0))) for t, p in enumerate(ps)
)


def test_plain_run_has_the_ratio_only(tmp_path):
    d = rd.workspace_diagnostics(workspace(tmp_path, "plain", valid=0.05, test=0.04))
    assert d == {"valid_ndcg10": 0.05, "test_ndcg10": 0.04, "test_over_valid": pytest.approx(0.8)}


def test_bloger_records(tmp_path):
    d = rd.workspace_diagnostics(workspace(tmp_path, "b", 0.04, 0.03, summary=BLOGER))
    assert (d["density_before"], d["density_after"], d["entropy_before"], d["entropy_after"]) == (0.5, 0.75, 3.0, 3.5)
    assert (d["changed_first"], d["changed_last"], d["updates"]) == (0.2, 0.01, 3)


def test_mtgrec_last_stage_mix(tmp_path):
    d = rd.workspace_diagnostics(workspace(tmp_path, "m", 0.04, 0.03, influence=INFLUENCE, selected="epoch_0099"))
    assert d["tokenizers"] == 3 and d["p_min"] == pytest.approx(0.25) and d["p_max"] == pytest.approx(0.5)
    assert d["p_entropy"] == pytest.approx(1.5 / math.log2(3))  # H(.5, .25, .25) = 1.5 bits
    assert d["selected"] == "epoch_0099"
    assert d["valid_ndcg10"] == 0.08 and d["test_over_valid"] == pytest.approx(0.03 / 0.08)  # the fine-tuned checkpoint's validation


def test_mtgrec_kept_tables_one_epoch_apart(tmp_path):
    ws = workspace(tmp_path, "m", 0.04, 0.03, influence=INFLUENCE, selected="epoch_0099")
    (ws / "data" / "ids").mkdir(parents=True)
    # 4 items, epochs 7, 8, 9 (and 11: two epochs from 9, not a pair at one epoch apart)
    # 7 -> 8: item 1 changes its second token, items 2, 3 their first; 8 -> 9: item 3 its second only
    tables = {
        "epoch_0007": [[1, 1], [2, 2], [3, 3], [4, 4]],
        "epoch_0008": [[1, 1], [2, 9], [5, 3], [6, 4]],
        "epoch_0009": [[1, 1], [2, 9], [5, 3], [6, 7]],
        "epoch_0011": [[9, 1], [9, 2], [9, 8], [9, 7]],
    }
    rows = [(item, name, codes[item]) for name, codes in tables.items() for item in range(4)]
    pl.DataFrame(
        {"item_id": [r[0] for r in rows], "tokenizer": [r[1] for r in rows], "codes": [r[2] for r in rows]},
        schema={"item_id": pl.Int32, "tokenizer": pl.Utf8, "codes": pl.List(pl.Int32)},
    ).write_parquet(ws / "data" / "ids" / "item_ids.parquet")
    d = rd.workspace_diagnostics(ws)
    assert d["first_changed"] == pytest.approx((2 / 4 + 0 / 4) / 2)
    assert d["any_changed"] == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert rd.row_cells([d])[4].endswith("; kept tokenizers one epoch apart change the first token of 25.0% of the items, any token of 50.0%")


def test_a_missing_workspace_has_nothing(tmp_path):
    assert rd.workspace_diagnostics(tmp_path / "nowhere") == {}


def test_table_means_over_seeds(tmp_path):
    a = workspace(tmp_path, "b1", 0.04, 0.02, summary=BLOGER)
    b = workspace(tmp_path, "b2", 0.06, 0.04, summary=BLOGER)
    m = workspace(tmp_path, "m1", 0.05, 0.04, influence=INFLUENCE, selected="epoch_0099")
    lines = rd.diagnostics_lines([("bloger", [a, b]), ("mtgrec", [m]), ("not-run", [])])
    assert len(lines) == 6  # text, blank, header, rule, two rows: the row without runs is left out
    assert lines[4].startswith("| `bloger` | 2 | 0.0500 | 0.0300 | 0.58 | density 0.500 -> 0.750, entropy 3.00 -> 3.50 bits; IDs changed 20.0%")
    assert "(last of 3)" in lines[4] and lines[4].endswith("| - |")  # mean of 0.5 and 0.667 ratios
    assert lines[5].endswith("| - | p over 3 tokenizers 0.25-0.50, entropy 0.95 of uniform's; tested: epoch_0099 |")
    assert rd.diagnostics_lines([("x", [])]) == []
