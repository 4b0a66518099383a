"""benchmarks/memorization.py builds its five probe sets from the right windows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("memorization", ROOT / "benchmarks" / "memorization.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_probe_windows_by_hand():
    seq = pl.DataFrame(
        {"user_id": [1, 0, 2], "train_items": [[10, 11, 12, 13], [1, 2, 3], [7]], "valid_item": [14, 4, 8], "test_item": [15, 5, 9]},
        schema={"user_id": pl.Int32, "train_items": pl.List(pl.Int32), "valid_item": pl.Int32, "test_item": pl.Int32},
    )
    sets = _module().probe_examples(seq, window=2)

    def as_lists(ex):
        return [ex.history[a:b].tolist() for a, b in zip(ex.offsets[:-1], ex.offsets[1:])], ex.targets.tolist(), ex.user_ids.tolist()

    # user 2 has one training item (no training example): left out; users sorted
    assert as_lists(sets["train last"]) == ([[1, 2], [11, 12]], [3, 13], [0, 1])
    assert as_lists(sets["valid"]) == ([[2, 3], [12, 13]], [4, 14], [0, 1])
    assert as_lists(sets["v from last train window"]) == ([[1, 2], [11, 12]], [4, 14], [0, 1])
    assert as_lists(sets["test"]) == ([[3, 4], [13, 14]], [5, 15], [0, 1])
    assert as_lists(sets["t without v"]) == ([[2, 3], [12, 13]], [5, 15], [0, 1])


def test_unknown_case_is_refused_before_any_run_loads(tmp_path):
    import pytest

    with pytest.raises(SystemExit, match="--cases: unknown 'tset'"):
        _module().main(["--run", f"x={tmp_path / 'absent'}", "--cases", "valid,tset"])


def test_every_run_is_checked_before_the_first_one_ranks(tmp_path, monkeypatch):
    """A missing workspace in the last --run stops the probe before the first (minutes long) run;
    a run's name may hold "=" (the directory is what follows the last one)."""
    import pytest

    module = _module()
    ranked = []
    monkeypatch.setattr(module, "probe_run", lambda *a, **k: ranked.append(a) or {})
    good = tmp_path / "good"
    good.mkdir()
    (good / "params.yaml").write_text("{}\n")
    with pytest.raises(SystemExit, match="absent has no params.yaml"):
        module.main(["--run", f"a (best = last)={good}", "--run", f"b={tmp_path / 'absent'}::last"])
    assert ranked == []
    with pytest.raises(SystemExit, match="expected NAME=DIR"):
        module.main(["--run", f"c={good}::final"])
