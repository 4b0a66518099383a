"""The pure parts of scripts/reproduction.py (no training): the YAML and its checks, the table's
paper / ratio / "not run yet" columns from hand-made run records, and the report of a fake work dir."""

from __future__ import annotations

import csv
import json
import math
import sys
from argparse import Namespace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
import reproduction as rp  # noqa: E402

sys.path.pop(0)
from test_transitions import write_processed  # noqa: E402

from benchmarks import runs  # noqa: E402

PAPER = {"source": "A paper", "hit@5": 0.04, "ndcg@5": 0.02, "hit@10": 0.08, "ndcg@10": 0.04}


def tree(**extra_row):
    return {
        "toy": {
            "label": "Toy data",
            "overrides": ["data.max_items=5", "data.raw_dir=../shared/datasets/toy"],
            "rows": [
                {"name": "tiger-default", "label": "TIGER", "paper": dict(PAPER)},
                {
                    "name": "sasrec-ce",
                    "overrides": "recommender.model=sasrec,recommender.loss=ce",
                    "base": "tiger-default",
                    "paper": {"source": "R", "hit@10": 0.2},
                },
                {"name": "fixed", "runs_of": "tiger-default", "paper": {"hit@10": 0.06}},
                {"name": "gru4rec-ce", "overrides": {"recommender.model": "gru4rec"}, "base": "fixed", **extra_row},
            ],
        }
    }


# --------------------------------------------------------------------------- the YAML


def test_parse_config_rows_overrides_and_papers():
    [ds] = rp.parse_config(tree())
    assert ds.name == "toy" and ds.label == "Toy data" and [r.name for r in ds.rows] == ["tiger-default", "sasrec-ce", "fixed", "gru4rec-ce"]
    tiger, sasrec, fixed, gru = ds.rows
    assert tiger.label == "TIGER" and tiger.base is None and tiger.paper.figures == {k: v for k, v in PAPER.items() if k != "source"}
    assert sasrec.overrides == ["recommender.model=sasrec", "recommender.loss=ce"] and sasrec.label == "sasrec-ce"
    assert gru.overrides == ["recommender.model=gru4rec"] and gru.paper.figures == {}
    assert fixed.workspace == "tiger-default" and tiger.workspace == "tiger-default"


def test_expand_resolves_paths_against_the_repository_root_and_skips_missing_overlays(tmp_path):
    overlay = tmp_path / "o.yaml"
    overlay.write_text("recommender: {lr: 0.001}\n")
    t = tree(config=str(tmp_path / "missing.yaml"))
    t["toy"]["config"] = str(overlay)
    [ds] = rp.parse_config(t)
    rp.expand([ds], overlay=lambda path: ["recommender.lr=0.001"])
    assert ds.resolved == ["recommender.lr=0.001", "data.max_items=5", f"data.raw_dir={(ROOT.parent / 'shared' / 'datasets' / 'toy').resolve()}"]
    gru = ds.row("gru4rec-ce")
    assert gru.resolved is None and "missing.yaml" in gru.skipped and any("gru4rec-ce" in n for n in ds.notes)
    assert ds.row("fixed").resolved == ds.row("tiger-default").resolved == []
    assert rp.run_overrides(ds.row("sasrec-ce"), 43, ["recommender.epochs=1"]) == [
        "seed=43",
        "recommender.model=sasrec",
        "recommender.loss=ce",
        "recommender.epochs=1",
    ]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t["toy"]["rows"][0].update(lr=1), "unknown key(s) lr"),
        (lambda t: t["toy"].update(row=[]), "unknown key(s) row"),
        (lambda t: t["toy"]["rows"][0]["paper"].update({"recall@10": 0.1}), "paper: unknown key(s) recall@10"),
        (lambda t: t["toy"]["rows"][1].update(base="tiger"), "base 'tiger' names no row"),
        (lambda t: t["toy"]["rows"][2].update(runs_of="nothing"), "runs_of 'nothing' names no row"),
        (lambda t: t["toy"]["rows"][1].pop("name"), "row 2: no name"),
        (lambda t: t["toy"]["rows"][1].update(name="tiger-default"), "must be unique: tiger-default"),
        (lambda t: t["toy"]["rows"][1].update(name="upstream"), "upstream folder"),
        (lambda t: t["toy"]["rows"][1].update(name="a/b"), "folder name"),
        (lambda t: t["toy"]["rows"][2].update(overrides=["seed=1"]), "cannot have overrides"),
        (lambda t: t["toy"]["rows"][1].update(overrides=["seed"]), "not key=value"),
        (lambda t: t["toy"]["rows"][0]["paper"].update({"hit@10": 6.48}), "in (0, 1]"),
        (lambda t: t["toy"].update(rows=[]), "rows must be a non-empty list"),
        (lambda t: t["toy"]["rows"][0].update(paper_effect=True), "paper_effect compares the paper's figure with the base row's; the row has no base"),
        (lambda t: t["toy"]["rows"][1].update(paper_effect="yes"), "paper_effect must be true or false, got 'yes'"),
    ],
)
def test_config_errors_say_where_and_what(mutate, message):
    t = tree()
    mutate(t)
    with pytest.raises(rp.ConfigError, match="toy") as err:
        rp.parse_config(t, "my.yaml")
    assert message in str(err.value) and str(err.value).startswith("my.yaml")


def test_load_config_of_the_shipped_yaml_and_the_selection():
    datasets = rp.load_config(ROOT / "scripts" / "reproduction.yaml")
    names = {d.name: [r.name for r in d.rows] for d in datasets}
    assert set(names) == {"beauty", "yelp"}
    assert {"tiger-default", "tiger-t5", "sasrec-ce", "sasrec-bce", "gru4rec-ce", "fixed", "bloger", "mtgrec"} <= set(names["beauty"])
    beauty = next(d for d in datasets if d.name == "beauty")
    assert beauty.row("tiger-default").paper.figures["ndcg@10"] == 0.0384 and beauty.row("bloger").base == "fixed"
    assert beauty.row("bloger").paper_effect and not beauty.row("tiger-nodropout").paper_effect  # a paper comparison / two rows under one figure
    chosen = rp.select(datasets, ["beauty"], ["sasrec-ce", "bloger"])
    assert [(d.name, [r.name for r in rows]) for d, rows in chosen] == [("beauty", ["sasrec-ce", "bloger"])]
    assert [d.name for d, _ in rp.select(datasets, None, ["curriculum"])] == ["yelp"]  # a dataset without the row does not run
    with pytest.raises(rp.ConfigError, match="--rows"):
        rp.select(datasets, ["yelp"], ["bloger"])
    with pytest.raises(rp.ConfigError, match="--datasets"):
        rp.select(datasets, ["movielens"], None)


def test_shipped_yaml_resolves_with_the_project_params(tmp_path):
    """Every row's overrides are valid params (the overlay of tiger-t5 read by `genrec overrides`)."""
    from genrec_core.config import load_params

    datasets = rp.load_config(ROOT / "scripts" / "reproduction.yaml")
    rp.expand(datasets)
    for ds in datasets:
        params = rp.write_dataset_params(ROOT / "params.yaml", ds.resolved, tmp_path / ds.name / "params.yaml")
        for row in ds.rows:
            if row.resolved is not None:
                load_params(params, rp.run_overrides(row, 42, []))
    beauty = next(d for d in datasets if d.name == "beauty")
    assert load_params(tmp_path / "beauty" / "params.yaml").data.dataset == "idgenrec"
    assert load_params(tmp_path / "beauty" / "params.yaml", rp.run_overrides(beauty.row("mtgrec"), 1, [])).recommender.method_params["finetune_top_m"] == 2


# --------------------------------------------------------------------------- the table


def _metrics(h10: float, n10: float) -> dict[str, float]:
    return {"hit@5": h10 / 2, "ndcg@5": n10 / 2, "hit@10": h10, "ndcg@10": n10, "hit@20": 2 * h10}


def _found():
    return [
        {"method": "tiger-default", "seed": 43, "metrics": _metrics(0.06, 0.03), "seconds": 20.0},
        {"method": "tiger-default", "seed": 42, "metrics": _metrics(0.04, 0.02), "seconds": 10.0},
        {"method": "sasrec-ce", "seed": 42, "metrics": _metrics(0.10, 0.05), "seconds": 4.0},
    ]


def test_dataset_table_paper_ratios_p_and_not_run_rows():
    [ds] = rp.parse_config(tree())
    rp.expand([ds], overlay=lambda path: [])
    floors = {"mostpop": _metrics(0.01, 0.005), "markov": _metrics(0.02, 0.01)}
    recs = {r["row"]: r for r in rp.dataset_table(ds, _found(), floors, lambda d, r: f"run {d} {r}")}
    assert list(recs) == ["tiger-default", "sasrec-ce", "fixed", "gru4rec-ce", "mostpop", "markov"]
    tiger = recs["tiger-default"]
    assert tiger["status"] == "ok" and tiger["seeds_finished"] == 2 and tiger["seeds"] == "42 43" and tiger["train_seconds"] == 15.0
    assert tiger["hit@10_mean"] == pytest.approx(0.05) and tiger["hit@10_std"] == pytest.approx(math.sqrt(2) * 0.01)
    assert tiger["paper_hit@10"] == 0.08 and tiger["ratio_hit@10"] == pytest.approx(0.05 / 0.08) and tiger["ratio_ndcg@5"] == pytest.approx(0.0125 / 0.02)
    assert math.isnan(tiger["hit@10_p"])  # no base
    sasrec = recs["sasrec-ce"]
    assert sasrec["base"] == "tiger-default" and sasrec["hit@10_p"] == pytest.approx(2 / 3)  # 1 vs 2 runs: exact two-sided p = 2/3
    assert sasrec["ratio_hit@10"] == pytest.approx(0.10 / 0.2) and math.isnan(sasrec["paper_hit@5"]) and math.isnan(sasrec["ratio_hit@5"])
    assert math.isnan(sasrec["hit@10_std"])  # one seed
    fixed = recs["fixed"]  # tiger-default's runs under its own paper figure
    assert fixed["seeds_finished"] == 2 and fixed["hit@10_mean"] == pytest.approx(0.05) and fixed["ratio_hit@10"] == pytest.approx(0.05 / 0.06)
    gru = recs["gru4rec-ce"]
    assert gru["status"] == "not run yet" and gru["command"] == "run toy gru4rec-ce" and gru["seeds_finished"] == 0 and math.isnan(gru["hit@10_mean"])
    assert recs["markov"]["status"] == "deterministic" and recs["markov"]["hit@10_mean"] == 0.02 and math.isnan(recs["markov"]["hit@10_std"])
    md = "\n".join(rp.markdown_table(list(recs.values())))
    assert "| `gru4rec-ce` | gru4rec-ce | not run yet |" in md
    assert "0.0500 ± 0.0141" in md and "0.0800<br>×0.62" in md and "p=0.667" in md
    assert "Markov chain (floor)" in md and "(runs of `tiger-default`)" in md


def test_effect_against_the_base_and_the_papers_only_where_it_compared_the_two():
    """Effect = our mean / the base's mean - 1 (by hand from _found: tiger-default's mean H@10 is
    (0.06 + 0.04) / 2 = 0.05, sasrec-ce's 0.10: +100%); the paper's = its figure for the row over its
    figure for the base's method, only with paper_effect (0.2 / 0.08 - 1 = +150%)."""
    for flagged in (False, True):
        t = tree()
        t["toy"]["rows"][1]["paper_effect"] = flagged
        [ds] = rp.parse_config(t)
        rp.expand([ds], overlay=lambda path: [])
        recs = {r["row"]: r for r in rp.dataset_table(ds, _found(), {"markov": _metrics(0.02, 0.01)}, lambda d, r: "cmd")}
        sasrec = recs["sasrec-ce"]
        assert sasrec["effect_hit@10"] == pytest.approx(0.10 / 0.05 - 1) and sasrec["effect_ndcg@10"] == pytest.approx(0.05 / 0.025 - 1)
        assert math.isnan(sasrec["paper_effect_ndcg@10"])  # the paper gives no N@10 for the row
        if flagged:
            assert sasrec["paper_effect_hit@10"] == pytest.approx(0.2 / 0.08 - 1)
        else:
            assert math.isnan(sasrec["paper_effect_hit@10"])
        assert math.isnan(recs["tiger-default"]["effect_hit@10"])  # no base
        assert math.isnan(recs["gru4rec-ce"]["effect_hit@10"])  # not run
        assert math.isnan(recs["markov"]["effect_hit@10"])
        md = "\n".join(rp.markdown_table(list(recs.values())))
        line = next(x for x in md.splitlines() if x.startswith("| `sasrec-ce`"))
        assert ("ours +100.0% / +100.0%<br>paper +150.0% / -" if flagged else "ours +100.0% / +100.0% |") in line
        assert "effect vs base (H@10 / N@10)" in md
        gru = next(x for x in md.splitlines() if x.startswith("| `gru4rec-ce`"))
        assert "| `fixed` | ours - / - |" in gru  # a base but no runs


def test_rows_whose_base_has_no_runs_get_no_p_and_skipped_rows_no_command():
    [ds] = rp.parse_config(tree(config="/nonexistent/overlay.yaml"))
    rp.expand([ds], overlay=lambda path: [])
    found = [r for r in _found() if r["method"] == "sasrec-ce"]
    recs = {r["row"]: r for r in rp.dataset_table(ds, found, None, lambda d, r: "cmd")}
    assert recs["sasrec-ce"]["status"] == "ok" and math.isnan(recs["sasrec-ce"]["hit@10_p"])
    assert recs["tiger-default"]["status"] == "not run yet" and recs["tiger-default"]["command"] == "cmd"
    assert recs["gru4rec-ce"]["status"].startswith("skipped: its overlay") and recs["gru4rec-ce"]["command"] == ""
    assert "mostpop" not in recs


def test_row_command_runs_one_row_into_the_same_report():
    args = Namespace(
        config=Path("scripts/reproduction.yaml"),
        seeds=[42, 43],
        jobs=2,
        threads=1,
        work_dir=Path("/work/repro"),
        out=Path("reports/reproduction"),
        set=["recommender.epochs=1"],
    )
    assert rp.row_command(args, "beauty", "bloger") == (
        "python scripts/reproduction.py --config scripts/reproduction.yaml --seeds 42,43 --jobs 2 --threads 1 --work-dir /work/repro "
        "--out reports/reproduction --datasets beauty --rows bloger --set recommender.epochs=1"
    )


# --------------------------------------------------------------------------- a fake work dir


def _fake_workspace(root: Path, key: dict, overrides: list[str], metrics: dict[str, float], seconds: float) -> None:
    (root / "reports" / "train").mkdir(parents=True)
    (root / "overrides.json").write_text(json.dumps({**key, "overrides": overrides}))
    (root / "reports" / "train" / "summary.json").write_text(json.dumps({"seconds": seconds, "epochs": 1, "best_epoch": 1, "best_valid_ndcg@10": 0.1}))
    (root / "reports" / "train" / "valid_curve.csv").write_text("epoch,step,ndcg@10\n1,10,0.1\n")
    (root / "reports" / "metrics.json").write_text(json.dumps(metrics))


def test_report_tables_the_finished_runs_of_a_fake_work_dir(tmp_path, monkeypatch):
    config = tmp_path / "repro.yaml"
    config.write_text(
        json.dumps(
            {
                "toy": {
                    "overrides": ["data.max_items=5"],
                    "rows": [
                        {"name": "tiger-default", "paper": PAPER},
                        {"name": "sasrec-ce", "overrides": ["recommender.model=sasrec", "recommender.loss=ce"], "base": "tiger-default"},
                        {"name": "gru4rec-ce", "overrides": ["recommender.model=gru4rec"], "base": "tiger-default"},
                    ],
                }
            }
        )
    )  # JSON is YAML
    work = tmp_path / "work"
    [ds] = rp.load_config(config)
    rp.expand([ds])
    params = rp.write_dataset_params(ROOT / "params.yaml", ds.resolved, work / "toy" / "params.yaml")
    upstream = work / "toy" / "upstream"
    write_processed(upstream, {u: [(u + k) % 7 for k in range(6)] for u in range(8)}, max_items=5)
    for f in ("data/embeddings/item_vectors.parquet", "data/ids/item_ids.parquet", "data/tokenizer/kept.json"):
        (upstream / f).parent.mkdir(parents=True, exist_ok=True)
        (upstream / f).write_bytes(b"fake")
    (upstream / "reports").mkdir()
    (upstream / "reports" / "data_stats.json").write_text(json.dumps({"users": 8, "items": 7, "interactions": 48, "min_interactions": 1, "max_items": 5}))
    up_spec = runs.RunSpec("upstream", [], runs.UPSTREAM)
    (upstream / "overrides.json").write_text(json.dumps({**runs.reuse_key(up_spec, params), "overrides": []}))
    done = {("tiger-default", 42): 0.04, ("tiger-default", 43): 0.06, ("sasrec-ce", 42): 0.10}
    for (row, seed), h10 in done.items():
        spec = rp.run_spec(ds, ds.row(row), seed, [])
        _fake_workspace(work / "toy" / spec.name, runs.reuse_key(spec, params, upstream), spec.overrides, _metrics(h10, h10 / 2), 12.0)
    stale = rp.run_spec(ds, ds.row("gru4rec-ce"), 42, ["recommender.lr=0.1"])  # run with another --set: not tabled
    _fake_workspace(work / "toy" / stale.name, runs.reuse_key(stale, params, upstream), stale.overrides, _metrics(0.5, 0.5), 1.0)

    out = tmp_path / "out" / "repro"
    monkeypatch.setattr(sys, "argv", ["scripts/reproduction.py"])
    code = rp.main(["--config", str(config), "--seeds", "42,43", "--work-dir", str(work), "--out", str(out), "--report-only"])
    assert code == 0
    md = Path(f"{out}.md").read_text()
    assert "## toy: toy" in md and "8 users, 7 items, 48 interactions" in md
    assert "| `tiger-default` | tiger-default | 2 | 0.0250 ± 0.0071 | 0.0125 ± 0.0035 | 0.0500 ± 0.0141 | 0.0250 ± 0.0071 |" in md
    assert "0.0800<br>×0.62" in md and "p=0.667" in md
    assert "| `gru4rec-ce` | gru4rec-ce | not run yet |" in md and "--datasets toy --rows gru4rec-ce" in md
    assert "`gru4rec-ce-s42`: other params" in md
    assert "Known transitions:" in md and "Markov chain (floor)" in md and "MostPop (floor)" in md
    # the diagnostics table: finished runs only (gru4rec-ce's was made with other params), means over seeds
    assert "| `tiger-default` | 2 | 0.1000 | 0.0250 | 0.25 | - | - |" in md and "| `sasrec-ce` | 1 | 0.1000 | 0.0500 | 0.50 |" in md
    assert "| `gru4rec-ce` | 1 |" not in md
    with open(f"{out}.csv", newline="") as f:
        table = {r["row"]: r for r in csv.DictReader(f)}
    assert table["tiger-default"]["seeds_finished"] == "2" and float(table["tiger-default"]["ratio_hit@10"]) == pytest.approx(0.05 / 0.08)
    assert table["gru4rec-ce"]["status"] == "not run yet" and table["markov"]["status"] == "deterministic"
    with open(out.parent / "repro_runs.csv", newline="") as f:
        lines = list(csv.DictReader(f))
    assert [(r["dataset"], r["method"], r["seed"], r["status"]) for r in lines] == [
        ("toy", "tiger-default", "42", "ok"),
        ("toy", "tiger-default", "43", "ok"),
        ("toy", "sasrec-ce", "42", "ok"),
        ("toy", "mostpop", "", "deterministic"),
        ("toy", "markov", "", "deterministic"),
    ]
    assert float(lines[2]["hit@10"]) == pytest.approx(0.10)


# --------------------------------------------------------------------------- benchmarks/runs.py's upstream root


def test_runs_link_an_upstream_root_and_build_one(tmp_path):
    params = ROOT / "params.yaml"
    up = tmp_path / "up"
    for sub in runs.UPSTREAM_OUTPUT.values():
        (up / "data" / sub).mkdir(parents=True)
    (up / "data" / "ids" / "item_ids.parquet").write_bytes(b"v1")
    spec = runs.RunSpec("r", ["tokenizer.levels=4"], ("train", "evaluate"))
    root = tmp_path / "work" / "r"
    runs.prepare_workspace(root, spec, params, force=False, upstream_root=up)
    assert (root / "data" / "processed").resolve() == up / "data" / "processed" and (root / "data" / "embeddings").is_symlink()
    assert not (root / "data" / "tokenizer").exists() and not (root / "data" / "ids").exists()  # rebuilt in the workspace
    plain = runs.RunSpec("p", ["seed=1"], ("train", "evaluate"))
    key = runs.reuse_key(plain, params, up)
    assert set(key["inputs"]) == {"processed", "embeddings", "ids"}
    (up / "data" / "ids" / "item_ids.parquet").write_bytes(b"v2")  # a rebuilt upstream: the runs on the old one are not reused
    assert runs.reuse_key(plain, params, up)["inputs"]["ids"] != key["inputs"]["ids"]

    build = runs.RunSpec("upstream", [], runs.UPSTREAM)
    assert runs.workspace_upstream(build) == list(runs.UPSTREAM) and runs.workspace_upstream(plain) == []
    assert runs.workspace_upstream(runs.RunSpec("x", ["ids.collision=dedup_level"], ("train",))) == ["emit-ids"]
    assert runs.done_files(runs.UPSTREAM) == [runs.UPSTREAM_DONE[s] for s in runs.UPSTREAM] and runs.done_files(("train",)) == [
        "reports/train/summary.json",
        "reports/train/valid_curve.csv",
    ]
    assert runs.reuse_key(build, params)["inputs"] == {}  # links nothing: depends on its params alone
    runs.prepare_workspace(tmp_path / "work" / "upstream", build, params, force=False)
    assert not any((tmp_path / "work" / "upstream" / "data").iterdir())


def test_upstream_only_builds_the_upstream_and_starts_no_row(tmp_path, monkeypatch):
    """--upstream-only: run_dataset asks run_all for the upstream alone; without it, for the rows too."""
    [ds] = rp.parse_config(tree())
    rp.expand([ds], overlay=lambda path: [])
    calls = []

    def fake_run_all(specs, ds_dir, params_file, jobs, threads, force, command, upstream_root=None):
        calls.append([s.name for s in specs])
        return [runs.RunResult(s, ds_dir / s.name, ok=True) for s in specs]

    monkeypatch.setattr(rp, "run_all", fake_run_all)
    args = Namespace(work_dir=tmp_path, seeds=[42], set=[], jobs=1, threads=1, force=False, upstream_only=True)
    assert [r.spec.name for r in rp.run_dataset(ds, ds.rows[:2], args, tmp_path / "p.yaml", "cmd")] == ["upstream"]
    assert calls == [["upstream"]]
    calls.clear()
    args.upstream_only = False
    rp.run_dataset(ds, ds.rows[:2], args, tmp_path / "p.yaml", "cmd")
    assert calls == [["upstream"], ["tiger-default-s42", "sasrec-ce-s42"]]
    with pytest.raises(SystemExit, match="choose one"):
        rp.main(["--report-only", "--upstream-only"])
