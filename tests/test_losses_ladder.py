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
        {
            "rev": "workspace",
            "name": None,
            "data": {"rev": "workspace", "params": {}, "metrics": {"reports/metrics.json": {"data": {"ndcg@5": 0.0}}}},
            "error": None,
            "experiments": None,
        },
        {
            "rev": "abc",
            "name": "main",
            "data": {"rev": "abc", "params": {}, "metrics": {}},
            "experiments": [{"revs": [e], "executor": None, "name": e["name"]} for e in exps],
        },
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
    assert sorted(e["name"] for e in exps) == sorted(
        ["ce-s1", "ce-s2", "ce-s3", "curriculum-s1", "curriculum-s2", "curriculum-s3", "fg_to_ce-s1", "unnamed-run"]
    )  # not the workspace or the baseline commit
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
        if name == "ce-s1":
            (d / "train").mkdir()
            (d / "train" / "summary.json").write_text(json.dumps({"best_valid_ndcg@10": 0.0425, "ndcg@5": 9.9}))
    assert ladder.main(["collect", "--metrics-dir", str(tmp_path / "m"), "--out", str(tmp_path / "out" / "ladder")]) == 0
    md = (tmp_path / "out" / "ladder.md").read_text()
    assert "| TIGER + Pos | 1 | 0.1000 | 0.0200 | 0.2000 | 0.0500 | +100.0% |  | - |" in md  # no summary.json: no valid column value
    assert "| TIGER | 1 | 0.1000 | 0.0100 | 0.2000 | 0.0500 |  |  | 0.0425 |" in md  # metrics.json wins over summary keys
    js = tmp_path / "exp.json"
    js.write_text(json.dumps(fake_exp_show()))
    assert ladder.main(["collect", "--json", str(js), "--out", str(tmp_path / "o2")]) == 0
    assert (tmp_path / "o2.csv").exists()


def test_queue_config_overlay_and_absolute_paths_for_queued_runs(ladder, tmp_path, monkeypatch, capsys):
    overlay = tmp_path / "gpu.yaml"
    overlay.write_text("data:\n  dataset: yelp\n  raw_dir: rel/yelp\nrecommender:\n  epochs: 200\n")
    monkeypatch.chdir(tmp_path)
    assert ladder.main(["queue", "--seeds", "2", "--first-seed", "7", "--rungs", "curriculum", "--config", str(overlay), "-S", "recommender.lr=0.001"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split()[5] for ln in lines] == ["curriculum-s7", "curriculum-s8"]
    first = lines[0].split()
    # queued runs execute in a temporary copy: the relative raw_dir becomes absolute; the -S comes after the overlay
    assert f"data.raw_dir={tmp_path / 'rel' / 'yelp'}" in first
    assert first.index("recommender.epochs=200") < first.index("recommender.lr=0.001")


def test_archive_then_head_tail_table_means_over_seeds(ladder, tmp_path):
    def run_reports(head_n10, tail_n10):
        rep = tmp_path / "reports"
        (rep / "analysis").mkdir(parents=True, exist_ok=True)
        (rep / "train" / "live").mkdir(parents=True, exist_ok=True)
        (rep / "metrics.json").write_text(json.dumps({"ndcg@5": head_n10}))
        (rep / "train" / "live" / "metrics.json").write_text("{}")
        model = {g: {"hit@10": 2 * v, "ndcg@10": v} for g, v in (("head", head_n10), ("tail", tail_n10))}
        (rep / "analysis" / "head_tail.json").write_text(
            json.dumps({"groups": {"head": {"items": 5, "users": 9}, "tail": {"items": 5, "users": 3}}, "metrics": {"model": model}})
        )
        return rep

    archive = tmp_path / "runs"
    ladder.archive_reports(run_reports(0.10, 0.00), archive / "ce-s1")
    ladder.archive_reports(run_reports(0.20, 0.02), archive / "ce-s2")
    ladder.archive_reports(run_reports(0.12, 0.04), archive / "curriculum-s1")
    assert (archive / "ce-s1" / "train" / "live" / "metrics.json").exists()
    assert json.loads((archive / "ce-s1" / "metrics.json").read_text()) == {"ndcg@5": 0.10}  # the later run did not overwrite it
    rows, groups = ladder.head_tail_summary(archive)
    assert groups == {"head": {"items": 5, "users": 9}, "tail": {"items": 5, "users": 3}}
    assert [r["rung"] for r in rows] == ["ce", "curriculum"]  # frequency absent: skipped
    assert rows[0]["seeds"] == 2 and rows[0]["head_ndcg@10"] == pytest.approx(0.15) and rows[0]["tail_hit@10"] == pytest.approx(0.02)
    md, png = ladder.write_head_tail(rows, groups, tmp_path / "out" / "ht")
    text = md.read_text()
    assert "| TIGER | 2 | 0.3000 | 0.1500 | 0.0200 | 0.0100 |" in text
    assert "head: 5 items, 9 test users" in text and png.stat().st_size > 0


def test_collect_reference_prints_paper_rows_with_gain(ladder, tmp_path):
    rows = ladder.summarise([{"name": "ce-s1", "metrics": {"hit@5": 0.1, "ndcg@5": 0.05, "hit@10": 0.2, "ndcg@10": 0.07}}])
    md, _ = ladder.write_tables(rows, tmp_path / "l", reference="yelp", preamble="Run on a test.")
    text = md.read_text()
    assert "Run on a test." in text
    assert "### Paper 001 Table 4, yelp (reported)" in text
    # + Curriculum on Yelp: N@5 .0175 vs TIGER .0155 -> +12.9%
    assert "| + Curriculum | 0.0264 | 0.0175 | 0.0419 | 0.0225 | +12.9% |" in text
    with pytest.raises(SystemExit):
        ladder.write_tables(rows, tmp_path / "l2", reference="nope")
