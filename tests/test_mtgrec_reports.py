"""MTGRec report parts: the long-tail gain of paper 002 Figure 5 (hand-computed tiny case) and the
plot script on tiny synthetic inputs (influence.csv, two prediction tables)."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from genrec_core.analysis.long_tail import long_tail_gain

ROOT = Path(__file__).resolve().parents[1]


def _preds(rows):
    return pl.DataFrame(
        {"user_id": [r[0] for r in rows], "target_item": [r[1] for r in rows], "items": [r[2] for r in rows], "scores": [[0.0] * len(r[2]) for r in rows]},
        schema={"user_id": pl.Int32, "target_item": pl.Int32, "items": pl.List(pl.Int32), "scores": pl.List(pl.Float32)},
    )


# training counts of items 0..3 -> ascending: item 1 (0), item 3 (1) | item 2 (2), item 0 (4)
COUNTS = np.array([4, 0, 2, 1])
MTG = _preds([(0, 1, [1, 0, 2]), (1, 3, [0, 3]), (2, 2, [0, 1]), (3, 0, [0])])
TIGER = _preds([(3, 0, [1, 0]), (1, 3, [3]), (0, 1, [0, 2, 1]), (2, 2, [2, 0])])  # another user order


def test_long_tail_gain_hand_computed():
    rows = long_tail_gain(MTG, TIGER, COUNTS, n_groups=2, k=2)
    # group 1 (items 1, 3; users 0, 1): MTGRec hits both (ranks 1, 2); TIGER misses user 0 (rank 3)
    # group 2 (items 2, 0; users 2, 3): MTGRec misses user 2; TIGER hits both
    assert rows == [
        {"group": 1, "items": 2, "min_train_count": 0, "max_train_count": 1, "test_users": 2, "method_hit@2": 1.0, "baseline_hit@2": 0.5, "gain": 1.0},
        {"group": 2, "items": 2, "min_train_count": 2, "max_train_count": 4, "test_users": 2, "method_hit@2": 0.5, "baseline_hit@2": 1.0, "gain": -0.5},
    ]
    k1 = long_tail_gain(MTG, TIGER, COUNTS, n_groups=2, k=1)  # top-1: users 0, 3 vs users 1, 2
    assert [(r["method_hit@1"], r["baseline_hit@1"], r["gain"]) for r in k1] == [(0.5, 0.5, 0.0), (0.5, 0.5, 0.0)]
    empty = TIGER.with_columns(pl.col("items").list.head(0))  # no baseline hit: no ratio
    assert all(math.isnan(r["gain"]) for r in long_tail_gain(MTG, empty, COUNTS, n_groups=2, k=2))


def test_long_tail_gain_needs_the_same_users_and_targets():
    with pytest.raises(ValueError, match="same users"):
        long_tail_gain(MTG, TIGER.with_columns(pl.col("target_item").reverse()), COUNTS)


def test_plot_script_on_tiny_inputs(tmp_path):
    inf = pl.DataFrame(
        {
            "stage": [1, 1, 2, 2],
            "epoch": [1, 1, 2, 2],
            "step": [10, 10, 20, 20],
            "tokenizer": [0, 1, 0, 1],
            "influence": [0.2, -0.1, 0.1, 0.0],
            "cumulative": [0.2, -0.1, 0.3, -0.1],
            "p": [0.57, 0.43, 0.6, 0.4],
        }
    )
    inf.write_csv(tmp_path / "influence.csv")
    MTG.write_parquet(tmp_path / "mtg.parquet")
    TIGER.write_parquet(tmp_path / "tiger.parquet")
    pl.DataFrame({"user_id": [0, 1], "train_items": [[0, 0, 2, 3], [0, 0, 2]]}, schema={"user_id": pl.Int32, "train_items": pl.List(pl.Int32)}).write_parquet(
        tmp_path / "sequences.parquet"
    )
    script = [sys.executable, str(ROOT / "scripts" / "mtgrec_plots.py")]
    subprocess.run([*script, "influence", "--csv", str(tmp_path / "influence.csv"), "--out", str(tmp_path / "influence.png")], check=True, cwd=ROOT)
    subprocess.run(
        [
            *script,
            "long-tail",
            "--method",
            str(tmp_path / "mtg.parquet"),
            "--baseline",
            str(tmp_path / "tiger.parquet"),
            "--sequences",
            str(tmp_path / "sequences.parquet"),
            "--num-items",
            "4",
            "--groups",
            "2",
            "--k",
            "2",
            "--out",
            str(tmp_path / "long_tail"),
        ],
        check=True,
        cwd=ROOT,
    )
    assert (tmp_path / "influence.png").stat().st_size > 0 and (tmp_path / "long_tail.png").stat().st_size > 0
    table = pl.read_csv(tmp_path / "long_tail.csv")
    assert table["gain"].to_list() == [1.0, -0.5]  # the counts above: the hand-computed case


def test_ablation_config_rows_are_valid_and_uniform_row_has_no_stage_end():
    sys.path.insert(0, str(ROOT / "scripts"))
    import converged

    sys.path.pop(0)
    from genrec_core.config import load_params
    from genrec_core.methods.mtgrec import MTGRecMethod, stage_end_steps

    rows = {m.name: m for m in converged.methods_from_config(ROOT / "scripts" / "mtgrec_ablation.yaml")}
    assert list(rows) == ["decoder-only-packed", "mtgrec", "mtgrec-uniform", "mtgrec-seeds"]
    params = {name: load_params(ROOT / "params.yaml", m.overrides) for name, m in rows.items()}
    assert all(p.recommender.model == "decoder_only" and p.recommender.history_dropout == 0.2 for p in params.values())
    assert params["decoder-only-packed"].recommender.pack_examples == 10
    for name in ("mtgrec", "mtgrec-uniform", "mtgrec-seeds"):  # the CPU default, packed (one draw per chunk)
        rp = params[name].recommender
        assert rp.method == "mtgrec" and rp.pack_examples == 10 and rp.epochs == params["decoder-only-packed"].recommender.epochs
        top_m = MTGRecMethod.check_params(rp.method_params)["finetune_top_m"]
        assert 0 < top_m <= len(params[name].finetune.slots)  # a slot for every tokenizer to fine-tune
    assert params["mtgrec-seeds"].tokenizer.kept_from == "seeds" and params["mtgrec"].tokenizer.kept_from == "epochs"
    uniform = MTGRecMethod.check_params(params["mtgrec-uniform"].recommender.method_params)
    assert stage_end_steps(1508, 377, uniform["warmup"], uniform["stage_length"], uniform["schedule_unit"]) == []  # p stays uniform
    default = MTGRecMethod.check_params(params["mtgrec"].recommender.method_params)
    assert len(stage_end_steps(1508, 377, default["warmup"], default["stage_length"], default["schedule_unit"])) == 7
    # the TIGER row is reports/converged.md's, override for override (its workspaces are reused)
    conv = {m.name: m.overrides for m in converged.methods_from_config(ROOT / "scripts" / "converged_methods.yaml")}
    assert rows["decoder-only-packed"].overrides == conv["decoder-only-packed"]
