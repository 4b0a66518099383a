"""Seeds and significance: the results table's maths on fixed numbers, its writers, reading a
fixed `dvc exp show --json` sample (DVC 3.x shape), and the seed-queueing script."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from genrec_core.evaluation.significance import group_runs, mann_whitney_p, results_table, runs_from_exp_show, to_csv, to_markdown

ROOT = Path(__file__).resolve().parents[1]

GROUPS = {
    "tiger/ce": [{"ndcg@10": 0.1, "hit@10": 0.10}, {"ndcg@10": 0.2, "hit@10": 0.20}, {"ndcg@10": 0.3, "hit@10": 0.20}],
    "sasrec/ce": [{"ndcg@10": 0.4, "hit@10": 0.20}, {"ndcg@10": 0.5, "hit@10": 0.35}, {"ndcg@10": 0.6, "hit@10": 0.50}],
    "gru4rec/ce": [{"ndcg@10": 0.25, "hit@10": 0.3}],
}


def test_means_std_gains_and_p_values():
    table = results_table(GROUPS, baseline="tiger/ce", metrics=["ndcg@10", "hit@10"])
    rows = {r.method: r for r in table.rows}
    assert [r.method for r in table.rows] == list(GROUPS)
    base, sas, gru = rows["tiger/ce"], rows["sasrec/ce"], rows["gru4rec/ce"]
    assert base.mean["ndcg@10"] == pytest.approx(0.2) and sas.mean["ndcg@10"] == pytest.approx(0.5)
    assert sas.std["ndcg@10"] == pytest.approx(0.1)  # ddof=1: sqrt(((-.1)^2 + 0 + .1^2) / 2)
    assert base.std["hit@10"] == pytest.approx(np.std([0.1, 0.2, 0.2], ddof=1))
    assert math.isnan(gru.std["ndcg@10"])  # one run: no sample std
    assert sas.gain["ndcg@10"] == pytest.approx(0.5 / 0.2 - 1)  # +150 %
    assert gru.gain["ndcg@10"] == pytest.approx(0.25 / 0.2 - 1)
    assert base.gain["ndcg@10"] == 0.0 and math.isnan(base.p["ndcg@10"])
    # 3 vs 3, fully separated: exact two-sided p = 2 * 1 / C(6, 3) = 0.1, by hand and by scipy
    assert sas.p["ndcg@10"] == pytest.approx(2 / math.comb(6, 3)) == pytest.approx(0.1)
    assert sas.p["ndcg@10"] == pytest.approx(mannwhitneyu([0.4, 0.5, 0.6], [0.1, 0.2, 0.3], alternative="two-sided").pvalue)
    # with a tie (0.2 in both groups) scipy switches to the normal approximation: same call, same number
    assert sas.p["hit@10"] == pytest.approx(mannwhitneyu([0.2, 0.35, 0.5], [0.1, 0.2, 0.2], alternative="two-sided").pvalue)


def test_exact_p_values_by_hand():
    assert mann_whitney_p([6, 7, 8, 9, 10], [1, 2, 3, 4, 5]) == pytest.approx(2 / math.comb(10, 5))  # 0.0079
    # x = [1, 4], y = [2, 3]: U = 2 = n1 n2 / 2, the centre of the distribution -> p = 1
    assert mann_whitney_p([1, 4], [2, 3]) == pytest.approx(1.0)
    # x = [1, 3, 5], y = [2, 4, 6]: U_x = 3; P(U <= 3) = #{rank sets with U <= 3} / 20 = 7/20 -> p = 0.7
    assert mann_whitney_p([1, 3, 5], [2, 4, 6]) == pytest.approx(0.7)
    assert math.isnan(mann_whitney_p([], [1.0]))


def test_default_metrics_and_no_baseline():
    table = results_table({"a": [{"x": 1.0, "y": 2, "name": "s"}], "b": [{"x": 3.0}]})
    assert table.metrics == ["x"]  # only numeric keys every run has
    assert all(math.isnan(r.p["x"]) for r in table.rows)
    with pytest.raises(KeyError):
        results_table(GROUPS, baseline="nope")


def test_markdown_and_csv_writers():
    table = results_table(GROUPS, baseline="tiger/ce", metrics=["ndcg@10"], seeds={"tiger/ce": [0, 1, 2]})
    md = to_markdown(table)
    assert "| `sasrec/ce` | 3 | 0.5000 ± 0.1000<br>+150.0%, p=0.1 |" in md
    assert "| `tiger/ce` | 3 | 0.2000 ± 0.1000 |" in md
    assert "| `gru4rec/ce` | 1 | 0.2500<br>+25.0%, p=" in md
    assert "ddof=1" in md
    rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert [r["method"] for r in rows] == list(GROUPS)
    sas = rows[1]
    assert float(sas["ndcg@10_mean"]) == pytest.approx(0.5) and float(sas["ndcg@10_p"]) == pytest.approx(0.1)
    assert float(sas["ndcg@10_gain"]) == pytest.approx(1.5) and sas["baseline"] == "tiger/ce"
    assert rows[0]["ndcg@10_p"] == "" and rows[0]["seeds"] == "0 1 2"
    assert rows[2]["ndcg@10_std"] == ""  # single run


def _exp(rev, name, seed, metrics, model=None, loss="ce", metrics_error=False):
    rec = {"tokenizer": "last", "loss": loss, "loss_params": {}, "d_model": 128}
    if model is not None:
        rec["model"] = model
    metrics_entry = {"error": {"type": "FileNotFoundError", "msg": "missing"}} if metrics_error else {"data": metrics}
    return {
        "rev": rev,
        "name": name,
        "error": None,
        "experiments": None,
        "data": {
            "rev": rev,
            "timestamp": "2025-01-01T00:00:00",
            "params": {"params.yaml": {"data": {"seed": seed, "data": {"dataset": "ml-100k"}, "recommender": rec}}},
            "metrics": {"reports/metrics.json": metrics_entry, "reports/train/summary.json": {"data": {"best_epoch": 3}}},
            "deps": {"data/processed/train.parquet": {"hash": "abc", "size": 1, "nfiles": None}},
            "outs": {},
            "meta": {"has_checkpoints": False},
        },
    }


#: The shape of `dvc exp show --json` in DVC 3.x (ExpState.dumpd()): a workspace entry, then the
#: baseline commit with its experiments (each an ExpRange: name, executor, revs).
EXP_SHOW = [
    _exp("workspace", None, 42, {"ndcg@10": 0.9, "hit@10": 0.9}),
    {
        **_exp("a" * 40, "main", 42, {"ndcg@10": 0.8, "hit@10": 0.8}),
        "experiments": [
            {"name": "tiger-s0", "executor": None, "revs": [_exp("b" * 40, "tiger-s0", 0, {"ndcg@10": 0.1, "hit@10": 0.2})]},
            {"name": "tiger-s1", "executor": None, "revs": [_exp("c" * 40, "tiger-s1", 1, {"ndcg@10": 0.2, "hit@10": 0.3})]},
            {"name": "tiger-s1-again", "executor": None, "revs": [_exp("d" * 40, "tiger-s1-again", 1, {"ndcg@10": 0.7, "hit@10": 0.7})]},
            {
                "name": "sasrec-s0",
                "executor": {"state": "success", "name": "workspace", "local": None},
                "revs": [_exp("e" * 40, "sasrec-s0", 0, {"ndcg@10": 0.3, "hit@10": 0.4}, model="sasrec")],
            },
            {"name": "sasrec-s1", "executor": None, "revs": [_exp("f" * 40, "sasrec-s1", 1, {"ndcg@10": 0.4, "hit@10": 0.5}, model="sasrec")]},
            {
                "name": "sasrec-s2",
                "executor": {"state": "queued", "name": None, "local": None},
                "revs": [{"rev": "1" * 40, "name": "sasrec-s2", "data": None, "error": None, "experiments": None}],
            },
            {
                "name": "sasrec-s3",
                "executor": {"state": "failed", "name": None, "local": None},
                "revs": [_exp("2" * 40, "sasrec-s3", 3, {"ndcg@10": 0.0}, model="sasrec")],
            },
            {"name": "gru-bce-s0", "executor": None, "revs": [_exp("3" * 40, "gru-bce-s0", 0, {}, model="gru4rec", loss="bce", metrics_error=True)]},
        ],
    },
]


def test_runs_from_exp_show_keeps_finished_experiments():
    runs = runs_from_exp_show(json.loads(json.dumps(EXP_SHOW)))
    assert [r.name for r in runs] == ["tiger-s0", "tiger-s1", "tiger-s1-again", "sasrec-s0", "sasrec-s1"]
    assert runs[3].params["recommender.model"] == "sasrec" and runs[3].params["seed"] == 0
    assert runs[0].params["recommender.loss_params"] == {}
    with_base = runs_from_exp_show(EXP_SHOW, include_baselines=True)
    assert with_base[0].name == "main" and len(with_base) == 6
    groups, seeds = group_runs(runs)
    assert list(groups) == ["t5/ce", "sasrec/ce"]  # no recommender.model: the T5 (t5, once named tiger)
    assert seeds == {"t5/ce": [0, 1], "sasrec/ce": [0, 1]}  # the repeated seed 1 keeps its first run
    assert groups["t5/ce"][1]["ndcg@10"] == 0.2


def test_results_command_writes_md_and_csv(tmp_path):
    from stages.results import main

    sample = tmp_path / "exps.json"
    sample.write_text(json.dumps(EXP_SHOW))
    assert main(["--json", str(sample), "--baseline", "tiger/ce", "--metrics", "ndcg@10,hit@10", "--out", str(tmp_path / "reports")]) == 0
    md = (tmp_path / "reports" / "results.md").read_text()
    assert "`sasrec/ce` | 2 | 0.3500 ± 0.0707<br>+133.3%, p=0.333" in md  # 2 vs 2 separated: 2/C(4,2)
    rows = list(csv.DictReader((tmp_path / "reports" / "results.csv").open()))
    assert float(rows[1]["ndcg@10_p"]) == pytest.approx(2 / math.comb(4, 2))


def test_seeds_script_prints_queue_commands():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import seeds
    finally:
        sys.path.pop(0)
    cmds = seeds.commands(seeds.seed_list(3, 0, None), ["recommender.model=sasrec", "recommender.epochs=50"], "sasrec")
    assert [" ".join(c) for c in cmds][0] == "dvc exp run --queue --name sasrec-s0 -S seed=0 -S recommender.model=sasrec -S recommender.epochs=50"
    assert [c[c.index("-S") + 1] for c in cmds] == ["seed=0", "seed=1", "seed=2"]
    assert seeds.seed_list(5, 0, "3,9") == [3, 9]
    assert seeds.default_prefix(["recommender.model=sasrec", "recommender.loss=bce"]) == "sasrec-bce"
    with pytest.raises(SystemExit):
        seeds.commands([0], ["seed=3"], "x")


def test_seeds_script_makes_dataset_paths_absolute_for_queued_runs_only(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import seeds
    finally:
        sys.path.pop(0)
    monkeypatch.chdir(tmp_path)
    assert seeds.main(["--n", "1", "-S", "data.raw_dir=rel/yelp", "--name", "x"]) == 0
    assert f"-S data.raw_dir={tmp_path / 'rel' / 'yelp'}" in capsys.readouterr().out  # queued: runs in a temporary copy
    assert seeds.main(["--n", "1", "-S", "data.raw_dir=rel/yelp", "--name", "x", "--now"]) == 0
    assert "-S data.raw_dir=rel/yelp" in capsys.readouterr().out  # --now runs here: left as given


def test_results_command_adds_the_mostpop_and_markov_floors(tmp_path):
    from stages.results import main

    sample = tmp_path / "exps.json"
    sample.write_text(json.dumps(EXP_SHOW))
    floors = tmp_path / "baselines.json"
    floors.write_text(json.dumps({"split": "test", "mostpop": {"ndcg@10": 0.1, "hit@10": 0.2}, "markov": {"ndcg@10": 0.3, "hit@10": 0.4}}))
    out = tmp_path / "reports"
    assert main(["--json", str(sample), "--baseline", "t5/ce", "--metrics", "ndcg@10", "--out", str(out), "--floors", str(floors)]) == 0
    rows = {r["method"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert float(rows["mostpop"]["ndcg@10_mean"]) == 0.1 and float(rows["markov"]["ndcg@10_mean"]) == 0.3
    # a floor is one deterministic run: no std, and its gain is against the baseline's mean
    base = float(rows["t5/ce"]["ndcg@10_mean"])
    assert float(rows["markov"]["ndcg@10_gain"]) == pytest.approx(0.3 / base - 1)
    assert rows["markov"]["ndcg@10_std"] in ("", "nan")


def test_results_command_reads_run_folders_with_their_overrides_resolved(tmp_path):
    """--runs: each folder's params.yaml plus its recorded -S overrides decide its method and seed;
    a folder without metrics (an unfinished run) is skipped."""
    from stages.results import main

    def folder(name, overrides, ndcg):
        d = tmp_path / name
        (d / "reports").mkdir(parents=True)
        (d / "params.yaml").write_text("seed: 42\n")  # every other key at its default
        (d / "overrides.json").write_text(json.dumps({"overrides": overrides}))
        if ndcg is not None:
            (d / "reports" / "metrics.json").write_text(json.dumps({"ndcg@10": ndcg}))
        return d

    dirs = [
        folder("t42", [], 0.10),
        folder("t43", ["seed=43"], 0.20),
        folder("d42", ["recommender.model=decoder_only"], 0.30),
        folder("d43", ["recommender.model=decoder_only", "seed=43"], 0.50),
        folder("d44", ["recommender.model=decoder_only", "seed=44"], None),  # unfinished
    ]
    out = tmp_path / "out"
    assert (
        main(["--runs", *map(str, dirs), "--baseline", "tiger/ce", "--metrics", "ndcg@10", "--out", str(out), "--floors", str(tmp_path / "none.json")]) == 0
    )  # the old name
    rows = {r["method"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert set(rows) == {"t5/ce", "decoder_only/ce"}
    assert float(rows["t5/ce"]["ndcg@10_mean"]) == pytest.approx(0.15)
    assert float(rows["decoder_only/ce"]["ndcg@10_mean"]) == pytest.approx(0.40)
    assert float(rows["decoder_only/ce"]["ndcg@10_gain"]) == pytest.approx(0.40 / 0.15 - 1)
    assert float(rows["decoder_only/ce"]["ndcg@10_p"]) == pytest.approx(2 / math.comb(4, 2))  # 2 vs 2, separated


def test_the_t5_groups_under_one_name_whatever_a_run_calls_it():
    from genrec_core.evaluation.significance import Run, canonical_method, method_of

    runs = [
        Run(str(i), str(i), {"recommender.loss": "ce", **model}, {})
        for i, model in enumerate(({}, {"recommender.model": "tiger"}, {"recommender.model": "t5"}))
    ]
    assert [method_of(r) for r in runs] == ["t5/ce"] * 3
    assert canonical_method("tiger/ce") == "t5/ce" and canonical_method("ce/tiger", ("recommender.loss", "recommender.model")) == "ce/t5"
    assert canonical_method("tiger/ce", ("recommender.method", "recommender.loss")) == "tiger/ce"  # a method named tiger stays
    assert canonical_method("mostpop") == "mostpop"
