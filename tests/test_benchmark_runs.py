"""The pure parts of benchmarks/runs.py, benchmarks/convergence.py and scripts/converged.py (no training)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import convergence, runs  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
import converged  # noqa: E402

sys.path.pop(0)


# --------------------------------------------------------------------------- override parsing


def test_parse_spec_name_and_overrides():
    assert runs.parse_spec("NAME=a=1,b=2") == ("NAME", ["a=1", "b=2"])
    assert runs.parse_spec("sasrec-ce=recommender.model=sasrec,recommender.loss=ce") == ("sasrec-ce", ["recommender.model=sasrec", "recommender.loss=ce"])
    assert runs.parse_spec("tiger") == ("tiger", [])


def test_split_overrides_keeps_bracketed_commas():
    assert runs.split_overrides("tokenizer.hidden_dims=[512,256],seed=1") == ["tokenizer.hidden_dims=[512,256]", "seed=1"]
    assert runs.split_overrides("++recommender.loss_params={a: 1, b: 2}") == ["++recommender.loss_params={a: 1, b: 2}"]
    with pytest.raises(ValueError):
        runs.split_overrides("a=1,oops")
    with pytest.raises(ValueError):
        runs.parse_spec("=a=1")


@pytest.mark.parametrize(
    ("overrides", "stages"),
    [
        ([], []),
        (["recommender.model=sasrec", "seed=3"], []),
        (["ids.collision=dedup_level"], ["emit-ids"]),
        (["tokenizer.levels=4", "recommender.lr=0.001"], ["train-tokenizer", "emit-ids"]),
        (["ids.collision=dedup_level", "embed.pca_dim=64"], ["embed", "train-tokenizer", "emit-ids"]),
        (["data.max_items=50"], ["preprocess", "embed", "train-tokenizer", "emit-ids"]),
        (["++tokenizer.kind=pq"], ["train-tokenizer", "emit-ids"]),
    ],
)
def test_upstream_stages(overrides, stages):
    assert runs.upstream_stages(overrides) == stages


def test_reuse_needs_same_overrides_params_data_and_outputs(tmp_path, fake_project):
    params = fake_project / "params.yaml"
    (fake_project / "data" / "ids" / "item_ids.parquet").write_bytes(b"v1")
    spec = runs.RunSpec("r", ["seed=2"], ("train", "evaluate"))
    key = runs.reuse_key(spec, params)
    root = tmp_path / "r"
    (root / "reports" / "train").mkdir(parents=True)
    (root / "overrides.json").write_text(json.dumps({**key, "threads": 1}))
    assert not runs.is_finished(root, key)  # no outputs yet
    for f in runs.done_files(spec.stages):
        (root / f).write_text("{}")
    assert runs.is_finished(root, key)
    assert not runs.is_finished(root, runs.reuse_key(runs.RunSpec("r", ["seed=3"], ("train", "evaluate")), params))
    (fake_project / "data" / "ids" / "item_ids.parquet").write_bytes(b"v2")  # project's IDs rebuilt since
    assert not runs.is_finished(root, runs.reuse_key(spec, params))
    (fake_project / "data" / "ids" / "item_ids.parquet").write_bytes(b"v1")
    params.write_text(params.read_text() + "\n# edited\n")  # a comment: the same params
    assert runs.is_finished(root, runs.reuse_key(spec, params))
    # an override restating the value the run resolved to is the same run
    assert runs.is_finished(root, runs.reuse_key(runs.RunSpec("r", ["seed=2", "recommender.lr=0.002"], ("train", "evaluate")), params))
    # the file's seed is overridden by seed=2: editing it changes nothing the run uses
    params.write_text(params.read_text().replace("seed: 42", "seed: 7", 1))  # the top-level seed only
    assert runs.is_finished(root, runs.reuse_key(spec, params))
    params.write_text(params.read_text().replace("lr: 0.002", "lr: 0.005"))  # an effective value changed
    assert "lr: 0.005" in params.read_text()
    assert not runs.is_finished(root, runs.reuse_key(spec, params))
    # an ids. override rebuilds the IDs in the workspace: the project's ID table no longer matters
    assert "ids" not in runs.reuse_key(runs.RunSpec("r", ["ids.collision=dedup_level"]), params)["inputs"]


def test_only_bloger_runs_depend_on_the_tokenizer_folder(tmp_path, fake_project):
    """A tiger run reads the IDs, not the kept RQ-VAEs: rebuilding data/tokenizer (same IDs) keeps
    it reusable, also when its record (older) holds the folder's digest; a bloger run is retrained."""
    params = fake_project / "params.yaml"
    folder = fake_project / "data" / "tokenizer"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kept.pt").write_bytes(b"v1")
    tiger = runs.RunSpec("t", ["seed=2"], ("train",))
    bloger = runs.RunSpec("b", ["seed=2", "recommender.method=bloger"], ("train",))
    assert "tokenizer" not in runs.reuse_key(tiger, params)["inputs"] and "tokenizer" in runs.reuse_key(bloger, params)["inputs"]
    roots = {}
    for spec in (tiger, bloger):
        root = roots[spec.name] = tmp_path / spec.name
        (root / "reports" / "train").mkdir(parents=True)
        key = runs.reuse_key(spec, params)
        record = {**key, "inputs": {**key["inputs"], "tokenizer": runs.tree_digest(folder)}}  # as records before this rule
        (root / "overrides.json").write_text(json.dumps(record))
        for f in runs.done_files(spec.stages):
            (root / f).write_text("{}")
        assert runs.is_finished(root, runs.reuse_key(spec, params))
    (folder / "kept.pt").write_bytes(b"v2")  # rebuilt
    assert runs.is_finished(roots["t"], runs.reuse_key(tiger, params))
    assert not runs.is_finished(roots["b"], runs.reuse_key(bloger, params))


def test_an_upstream_build_digest_covers_only_the_upstream_sections(tmp_path):
    """A recommender param (added or changed) leaves an upstream build reusable, not a training run."""
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("recommender:\n  lr: 0.002\n")
    b.write_text("recommender:\n  lr: 0.003\n  pack_order: length\n")
    up = runs.digest_sections(runs.UPSTREAM)
    assert set(up) == {"data", "embed", "tokenizer", "ids"} and runs.digest_sections(("train", "evaluate")) is None
    assert runs.params_digest(a, [], up) == runs.params_digest(b, [], up)
    assert runs.params_digest(a) != runs.params_digest(b)
    assert runs.params_digest(a, ["tokenizer.levels=4"], up) != runs.params_digest(b, [], up)
    # the download cache's folder is not what a run computes: a clone elsewhere keeps its runs
    assert runs.params_digest(a, ["data.cache_dir=/elsewhere/raw"]) == runs.params_digest(a)


def test_the_digest_reads_item_embedding_auto_as_what_it_resolves_to(tmp_path):
    """auto is on for the decoder-only plain default and off for a method that mixes ID tables: a
    workspace made with the value auto chose is the same run (a copy of params.yaml from before the
    param resolves to false)."""
    auto, old = tmp_path / "auto.yaml", tmp_path / "old.yaml"
    auto.write_text("recommender:\n  model: decoder_only\n  encoder_input: items\n  item_embedding: auto\n")
    old.write_text("recommender:\n  model: decoder_only\n  encoder_input: items\n")
    assert runs.params_digest(auto) == runs.params_digest(old, ["recommender.item_embedding=true"])
    assert runs.params_digest(auto, ["recommender.item_embedding=false"]) == runs.params_digest(old)
    assert runs.params_digest(auto, ["recommender.method=mtgrec"]) == runs.params_digest(old, ["recommender.method=mtgrec"])
    assert runs.params_digest(auto) != runs.params_digest(old)


def test_reuse_of_a_workspace_recorded_with_the_old_file_hash(tmp_path, fake_project):
    """Records from before the params digest hold the file's sha256; the workspace's params copy decides."""
    params = fake_project / "params.yaml"
    spec = runs.RunSpec("r", ["seed=2"], ("train",))
    key = runs.reuse_key(spec, params)
    root = tmp_path / "r"
    (root / "reports" / "train").mkdir(parents=True)
    old = {k: v for k, v in key.items() if k != "resolved_params"} | {"params_sha256": runs.sha256(params), "overrides": ["seed=2"]}
    (root / "overrides.json").write_text(json.dumps(old))
    for f in runs.done_files(spec.stages):
        (root / f).write_text("{}")
    (root / "params.yaml").write_text(params.read_text() + "\n# a comment the project file lacks\n")
    assert runs.is_finished(root, key)
    (root / "params.yaml").write_text(params.read_text().replace("lr: 0.002", "lr: 0.005"))
    assert not runs.is_finished(root, key)


# --------------------------------------------------------------------------- curve statistics

CURVE = [
    {"epoch": 1, "step": 10, "seconds": 12.0, "train_seconds": 10.0, "ndcg@10": 0.010},
    {"epoch": 2, "step": 20, "seconds": 24.0, "train_seconds": 10.0, "ndcg@10": 0.030},
    {"epoch": 3, "step": 30, "seconds": 37.0, "train_seconds": 11.0, "ndcg@10": 0.0385},  # >= 0.95 * 0.040 = 0.038
    {"epoch": 4, "step": 40, "seconds": 49.0, "train_seconds": 10.0, "ndcg@10": 0.040},
    {"epoch": 5, "step": 50, "seconds": 61.0, "train_seconds": 9.0, "ndcg@10": 0.039},
]


def test_samples_per_second():
    assert convergence.samples_per_second(1000, 5, 50.0) == 100.0
    assert math.isnan(convergence.samples_per_second(1000, 5, 0.0))


def test_curve_stats_time_to_95_percent_and_throughput():
    stats = convergence.curve_stats(CURVE, train_examples=2000)
    assert stats["plateau"] == 0.040
    assert stats["epoch_95"] == 3 and stats["seconds_95"] == 37.0
    assert stats["samples_per_s"] == pytest.approx(2000 * 5 / 50.0)
    # a curve whose first evaluation is already the best
    flat = convergence.curve_stats([{**CURVE[0], "ndcg@10": 0.05}, {**CURVE[1], "ndcg@10": 0.05}], train_examples=10)
    assert flat["epoch_95"] == 1 and flat["seconds_95"] == 12.0
    assert math.isnan(convergence.curve_stats([], 10)["plateau"])


def test_read_curve(tmp_path):
    path = tmp_path / "valid_curve.csv"
    path.write_text("epoch,step,seconds,train_seconds,hit@10,ndcg@10\n1,377,80.5,70.1,0.09,0.044\n")
    assert runs.read_curve(path) == [{"epoch": 1, "step": 377, "seconds": 80.5, "train_seconds": 70.1, "hit@10": 0.09, "ndcg@10": 0.044}]


# --------------------------------------------------------------------------- results table


def _metrics(h10: float, n10: float) -> dict[str, float]:
    return {"hit@5": h10 / 2, "ndcg@5": n10 / 2, "hit@10": h10, "ndcg@10": n10, "hit@20": 2 * h10, "ndcg@20": 2 * n10}


def test_assemble_results_table_means_and_floors():
    fake = [
        {"method": "tiger", "seed": 1, "metrics": _metrics(0.10, 0.05)},
        {"method": "tiger", "seed": 2, "metrics": _metrics(0.12, 0.07)},
        {"method": "tiger", "seed": 3, "metrics": _metrics(0.14, 0.06)},
        {"method": "sasrec-ce", "seed": 1, "metrics": _metrics(0.20, 0.10)},
        {"method": "sasrec-ce", "seed": 2, "metrics": _metrics(0.22, 0.12)},
    ]
    floors = {"mostpop": _metrics(0.04, 0.02), "markov": _metrics(0.08, 0.03)}
    table = converged.assemble(fake, floors, ["tiger", "sasrec-ce", "gru4rec-ce"], n_seeds=3, baseline="tiger")
    rows = {r.method: r for r in table.rows}
    assert [r.method for r in table.rows] == ["tiger", "sasrec-ce", "mostpop", "markov"]  # no runs: no row
    assert table.metrics == list(converged.TABLE_METRICS)
    assert rows["tiger"].mean["hit@10"] == pytest.approx(0.12)
    assert rows["tiger"].mean["ndcg@10"] == pytest.approx(0.06)
    assert rows["tiger"].std["ndcg@10"] == pytest.approx(0.01)  # sample std of .05 .07 .06
    assert rows["sasrec-ce"].mean["ndcg@10"] == pytest.approx(0.11)
    assert rows["sasrec-ce"].gain["ndcg@10"] == pytest.approx(0.11 / 0.06 - 1)
    assert rows["sasrec-ce"].runs == 2 and rows["sasrec-ce"].seeds == [1, 2]
    assert rows["mostpop"].runs == 3 and rows["mostpop"].std["hit@10"] == 0.0
    assert rows["markov"].mean["ndcg@20"] == pytest.approx(0.06)
    assert math.isfinite(rows["markov"].p["ndcg@10"]) and math.isnan(rows["tiger"].p["ndcg@10"])
    sentence = converged.lead_sentence(table, {"sasrec-ce": "SASRec-CE", "tiger": "TIGER"})
    assert "ahead on N@10 and H@10" in sentence and "+83.3%" in sentence and "+75.0%" in sentence  # .11/.06, .21/.12


def test_assemble_without_baseline_runs_has_no_p_values():
    fake = [{"method": "sasrec-ce", "seed": 1, "metrics": _metrics(0.2, 0.1)}]
    table = converged.assemble(fake, {"mostpop": _metrics(0.04, 0.02)}, ["sasrec-ce"], n_seeds=1, baseline="tiger")
    assert table.baseline is None
    assert "not computed" in converged.lead_sentence(table, {})


def test_methods_from_args_and_config(tmp_path):
    defaults = [converged.ResultRow("tiger", "TIGER (our CPU default)"), converged.ResultRow("sasrec-ce", "SASRec", ["recommender.model=sasrec"])]
    got = converged.methods_from_args(["tiger", "sasrec-ce=recommender.model=sasrec,recommender.loss=ce", "x=seed=1"], defaults)
    assert [(m.name, m.label, m.overrides) for m in got] == [
        ("tiger", "TIGER (our CPU default)", []),
        ("sasrec-ce", "SASRec", ["recommender.model=sasrec", "recommender.loss=ce"]),
        ("x", "x", ["seed=1"]),
    ]
    cfg = tmp_path / "m.yaml"
    cfg.write_text(
        "- {name: a, label: A, overrides: [recommender.lr=0.001]}\n- {name: b, overrides: 'recommender.model=gru4rec,recommender.loss=ce'}\n"
        "- {name: c, overrides: {recommender.d_model: 64, tokenizer.hidden_dims: [64, 32]}}\n"
    )
    got = converged.methods_from_config(cfg)
    assert [(m.name, m.label, m.overrides) for m in got] == [
        ("a", "A", ["recommender.lr=0.001"]),
        ("b", "b", ["recommender.model=gru4rec", "recommender.loss=ce"]),
        ("c", "c", ["recommender.d_model=64", "tokenizer.hidden_dims=[64,32]"]),
    ]


# --------------------------------------------------------------------------- workspaces


@pytest.fixture
def fake_project(tmp_path, monkeypatch):
    project = tmp_path / "project"
    for sub in runs.UPSTREAM_OUTPUT.values():
        (project / "data" / sub).mkdir(parents=True)
    (project / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    monkeypatch.setattr(runs, "PROJECT_ROOT", project)
    return project


def test_workspace_links_what_the_overrides_leave_alone(tmp_path, fake_project):
    root = tmp_path / "work" / "r"
    runs.prepare_workspace(root, runs.RunSpec("r", ["tokenizer.levels=4"]), fake_project / "params.yaml", force=False)
    data = root / "data"
    assert (data / "processed").resolve() == fake_project / "data" / "processed"
    assert (data / "embeddings").is_symlink()
    assert not (data / "tokenizer").exists() and not (data / "ids").exists()  # rebuilt in the workspace
    assert (root / "params.yaml").read_text() == (fake_project / "params.yaml").read_text()


def test_workspace_refuses_to_wipe_a_foreign_folder(tmp_path, fake_project):
    root = tmp_path / "precious"
    root.mkdir()
    (root / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        runs.prepare_workspace(root, runs.RunSpec("precious", []), fake_project / "params.yaml", force=True)
    assert (root / "keep.txt").exists()


@pytest.mark.slow
def test_failed_run_is_reported_with_its_log_tail(tmp_path, fake_project):
    """genrec train on empty data folders exits 2 (a few seconds: only imports, no training)."""
    [result] = runs.run_all([runs.RunSpec("broken", ["recommender.epochs=1"])], tmp_path / "work", fake_project / "params.yaml", jobs=1, threads=1)
    assert not result.ok
    assert "genrec train" in result.error and "status 2" in result.error
    assert "item_ids.parquet: file not found" in result.error  # the stage's own one-line error, from run.log
    assert (result.root / "run.log").exists() and (result.root / "overrides.json").exists()


def test_reuse_after_the_code_gained_a_param(tmp_path, fake_project):
    """A param added to the code since the run changes the digest today's code computes, not what
    the run did: the workspace's params copy and recorded overrides, resolved again, decide."""
    params = fake_project / "params.yaml"
    spec = runs.RunSpec("r", ["seed=2"], ("train",))
    key = runs.reuse_key(spec, params)
    root = tmp_path / "r"
    (root / "reports" / "train").mkdir(parents=True)
    stale = {**key, "resolved_params": "0" * 64, "overrides": ["seed=2"]}  # as digested by older code
    (root / "overrides.json").write_text(json.dumps(stale))
    for f in runs.done_files(spec.stages):
        (root / f).write_text("{}")
    (root / "params.yaml").write_text(params.read_text())
    assert runs.is_finished(root, key)
    (root / "overrides.json").write_text(json.dumps({**stale, "overrides": ["seed=3"]}))  # another seed ran there
    assert not runs.is_finished(root, key)
    (root / "overrides.json").write_text(json.dumps(stale))
    (root / "params.yaml").write_text(params.read_text().replace("lr: 0.002", "lr: 0.005"))  # another lr ran there
    assert not runs.is_finished(root, key)


def test_stage_commands_run_mtgrec_finetuning_and_selection_before_evaluate():
    params = ROOT / "params.yaml"
    assert runs.stage_commands(("train", "evaluate"), params, ["seed=1"]) == [["train"], ["evaluate"]]
    assert runs.stage_commands(("train",), params, ["recommender.method=mtgrec"]) == [["train"]]
    assert runs.stage_commands(("train", "evaluate"), params, ["recommender.method=mtgrec", "finetune.slots=[0,1,2]"]) == [
        ["train"],
        ["finetune", "--slot", "0"],
        ["finetune", "--slot", "1"],
        ["finetune", "--slot", "2"],
        ["select-tokenizer"],
        ["evaluate"],
    ]


def test_run_measured_gives_the_status_and_the_childs_own_peak_memory(tmp_path):
    """The peak is the child's own (run after a larger child, a small one reports less); a child
    spawned from a large parent may report the parent's resident size at the spawn as its floor."""
    import os
    import resource

    small = [sys.executable, "-c", "import sys; sys.exit(3)"]
    big = [sys.executable, "-c", "b = bytearray(300 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])"]
    with (tmp_path / "log").open("w") as f:
        rc_big, peak_big = runs.run_measured(big, tmp_path, dict(os.environ), f)
        rc_small, peak_small = runs.run_measured(small, tmp_path, dict(os.environ), f)
    assert rc_small == 3 and rc_big == 0
    parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert peak_big >= 300 and peak_small <= max(parent, 100) + 50
    if parent < 200:
        assert peak_small < peak_big - 100


def test_cost_and_ids_section_of_runs_with_moving_ids():
    summary = {
        "seconds": 100.0,
        "epochs": 4,
        "bloger_before": {"density": [0.5, 1.0], "entropy": [5.0, 6.0]},
        "bloger_after": {"density": [0.75, 1.0], "entropy": [5.5, 6.0]},
    }
    extras = converged.run_extras(summary, {"peak_rss_mb": {"train": 900.0, "evaluate": 400.0}})
    assert extras == {
        "seconds_per_epoch": 25.0,
        "peak_rss_train_mb": 900.0,
        "density_1_before": 0.5,
        "entropy_1_before": 5.0,
        "density_1_after": 0.75,
        "entropy_1_after": 5.5,
    }
    base = converged.run_extras({"seconds": 40.0, "epochs": 4}, {"peak_rss_mb": {"train": 600.0}})
    runs_ = [{"method": "fixed", **base}, {"method": "bloger", **extras}]
    methods = [converged.ResultRow("fixed", "Fixed"), converged.ResultRow("bloger", "BLOGER")]
    lines = converged.cost_and_ids_lines(methods, runs_, "fixed")
    assert "| `bloger` | 25.0 | 2.50 | 900 | 1.50 | 0.500 -> 0.750 | 5.000 -> 5.500 |" in lines
    assert "| `fixed` | 10.0 | 1.00 | 600 | 1.00 | (fixed IDs) | (fixed IDs) |" in lines
    assert converged.cost_and_ids_lines(methods, [{"method": "fixed", **base}], "fixed") == []  # no moving IDs: no section


def test_the_digest_reads_dropout_auto_as_the_schedule_resolves_it(tmp_path):
    """dropout auto follows the schedule: with a numeric schedule it resolves without data; under
    epochs auto from the processed data the run links to (Beauty-sized: 20 epochs, 0.1), and
    without that data it stays auto."""
    import polars as pl

    from genrec_core.paths import ArtifactPaths

    auto, old = tmp_path / "auto.yaml", tmp_path / "old.yaml"
    auto.write_text("recommender:\n  dropout: auto\n  epochs: auto\n")
    old.write_text("recommender:\n  dropout: 0.0\n  epochs: auto\n")
    assert runs.params_digest(auto, ["recommender.epochs=7"]) == runs.params_digest(old, ["recommender.epochs=7"])
    assert runs.params_digest(auto, ["recommender.epochs=8"]) == runs.params_digest(old, ["recommender.epochs=8", "recommender.dropout=0.1"])
    sparse = ArtifactPaths(tmp_path / "sparse")
    sparse.processed_dir.mkdir(parents=True)
    pl.DataFrame({"item_id": list(range(100))}).write_parquet(sparse.items)
    pl.DataFrame({"user_id": [0] * 1000}).write_parquet(sparse.examples("train"))  # 500 x 100 / 1000 = 50 -> 20 epochs
    assert runs.params_digest(auto, [], None, tmp_path / "sparse") == runs.params_digest(old, ["recommender.dropout=0.1"])
    assert runs.params_digest(auto, [], None, tmp_path / "absent") == runs.params_digest(auto)
    assert runs.params_digest(auto) != runs.params_digest(old) and runs.params_digest(auto) != runs.params_digest(old, ["recommender.dropout=0.1"])
