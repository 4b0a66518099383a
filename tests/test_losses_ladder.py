"""scripts/ladder.py: the queued experiments and the Table 3/4 collection from a fixed fake input."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from genrec_core.recommender.losses import check_loss_params

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ladder.py"


@pytest.fixture(scope="module")
def ladder():
    spec = importlib.util.spec_from_file_location("ladder", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ladder"] = mod  # dataclasses look their module up
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop("ladder", None)


def _exp(name, loss, seed, n5, extra=None):
    m = {"hit@5": 2 * n5, "ndcg@5": n5, "hit@10": 3 * n5, "ndcg@10": 1.5 * n5}
    return {
        "rev": f"{abs(hash(name)):040x}"[:40],
        "name": name,
        "data": {
            "rev": "x",
            "params": {"params.yaml": {"data": {"seed": seed, "recommender": {"loss": loss, "loss_params": extra or {}}}}},
            "metrics": {"reports/metrics.json": {"data": m}, "reports/train/summary.json": {"data": {"epochs": 3}}},
        },
    }


def fake_exp_show():
    """The shape of ``dvc exp show --json`` (DVC 3): workspace, baseline commit, experiments."""
    exps = [_exp(f"ce-s{s}", "ce", s, 0.010 + 0.001 * s) for s in (1, 2, 3)]
    exps += [_exp(f"curriculum-s{s}", "curriculum", s, 0.020 + 0.001 * s) for s in (1, 2, 3)]
    exps += [_exp("fg_to_ce-s1", "fg_to_ce", 1, 0.015)]
    exps += [_exp("unnamed-run", "multi_target", 1, 0.012, {"regulariser": "uncertainty"})]
    return [
        {"rev": "workspace", "name": None, "data": {"rev": "workspace", "params": {}, "metrics": {"reports/metrics.json": {"data": {"ndcg@5": 0.0}}}}, "error": None, "experiments": None},
        {"rev": "abc", "name": "main", "data": {"rev": "abc", "params": {}, "metrics": {}}, "experiments": [{"revs": [e], "executor": None, "name": e["name"]} for e in exps]},
    ]


def test_queue_commands_cover_the_ladder_with_valid_params(ladder):
    cmds = ladder.experiment_commands([1, 2], ["recommender.epochs=200"])
    assert len(cmds) == 2 * len(ladder.RUNGS)
    first = cmds[0]
    assert first[:6] == ["dvc", "exp", "run", "--queue", "-n", "ce-s1"]
    assert "recommender.loss=ce" in first and "seed=1" in first and first[-1] == "recommender.epochs=200"
    unc = [c for c in cmds if "multi_target_unc-s2" in c][0]
    assert "++recommender.loss_params.regulariser=uncertainty" in unc
    names = {r.loss for r in ladder.RUNGS}
    assert {"ce", "pos", "cft", "igd", "rank", "fg_to_ce", "fg_ce_fr", "multi_target", "curriculum"} <= names
    for r in ladder.RUNGS:
        check_loss_params(r.loss, r.loss_params)  # every rung's params pass the registry


def test_collect_builds_tables_from_exp_show_json(ladder, tmp_path):
    exps = ladder.experiments_from_exp_show(fake_exp_show())
    assert sorted(e["name"] for e in exps) == sorted(["ce-s1", "ce-s2", "ce-s3", "curriculum-s1", "curriculum-s2", "curriculum-s3", "fg_to_ce-s1", "unnamed-run"])  # not the workspace or the baseline commit
    rows = ladder.summarise(exps)
    by = {r["rung"]: r for r in rows}
    assert [r["rung"] for r in rows] == ["ce", "fg_to_ce", "multi_target_unc", "curriculum"]  # ladder order
    assert by["ce"]["seeds"] == 3 and by["ce"]["ndcg@5"] == pytest.approx(0.012)
    assert by["ce"]["ndcg@5_std"] == pytest.approx(0.001)
    assert by["curriculum"]["hit@5"] == pytest.approx(0.044)
    assert by["curriculum"]["p_vs_ce"] == pytest.approx(0.1, abs=1e-9)  # 3 vs 3, fully separated: exact two-sided p
    assert by["fg_to_ce"]["p_vs_ce"] is None  # one seed: no test
    md_path, csv_path = ladder.write_tables(rows, tmp_path / "ladder")
    md = md_path.read_text()
    assert "Table 3" in md and "Table 4" in md
    assert "| TIGER | 3 | 0.0240 ± 0.0020 | 0.0120 ± 0.0010 |" in md
    assert "| + Curriculum | 3 |" in md and "+83.3%" in md
    assert "+ Multi-Target (uncertainty reg.)" in md  # found by loss + params, not by name
    rows_csv = list(csv.DictReader(csv_path.open()))
    assert [r["rung"] for r in rows_csv] == ["ce", "fg_to_ce", "multi_target_unc", "curriculum"]
    assert float(rows_csv[0]["ndcg@5"]) == pytest.approx(0.012)


def test_collect_from_metrics_dir_and_main(ladder, tmp_path):
    for name, n5 in (("ce-s1", 0.01), ("pos-s1", 0.02)):
        d = tmp_path / "m" / name
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"hit@5": 0.1, "ndcg@5": n5, "hit@10": 0.2, "ndcg@10": 0.05}))
    assert ladder.main(["collect", "--metrics-dir", str(tmp_path / "m"), "--out", str(tmp_path / "out" / "ladder")]) == 0
    md = (tmp_path / "out" / "ladder.md").read_text()
    assert "| TIGER + Pos | 1 | 0.1000 | 0.0200 | 0.2000 | 0.0500 | +100.0% |  |" in md
    js = tmp_path / "exp.json"
    js.write_text(json.dumps(fake_exp_show()))
    assert ladder.main(["collect", "--json", str(js), "--out", str(tmp_path / "o2")]) == 0
    assert (tmp_path / "o2.csv").exists()
