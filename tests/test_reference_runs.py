"""The default training is bit-identical to the recorded reference runs (tests/reference_runs.py).

Each case trains a tiny model for 16 steps with a fixed seed and compares every step's loss and
logged values, every final parameter, the validation metrics and the ranked test lists with
``tests/data/reference_runs.json``, written by the code before the method registry (issue 11).
"""

from __future__ import annotations

import json

import pytest
import reference_runs as ref
import torch

SAVED = json.loads(ref.FIXTURE.read_text(encoding="utf-8"))
SAME_TORCH = SAVED["environment"]["torch"] == torch.__version__
SAME_BUILD = SAVED["environment"] == ref.environment()


def test_the_default_fingerprint_is_unchanged():
    assert ref.default_fingerprint() == SAVED["default_fingerprint"]


def test_every_case_is_recorded():
    assert set(SAVED["runs"]) == set(ref.CASES)


@pytest.mark.skipif(
    not SAME_BUILD, reason=f"reference floats were recorded on {SAVED['environment']}, this is {ref.environment()}: the close-match test runs instead"
)
@pytest.mark.parametrize("name", list(ref.CASES))
def test_training_is_bit_identical_to_the_reference(name):
    got, want = ref.record(name), SAVED["runs"][name]
    assert got["steps"] == want["steps"]
    assert got["parameters"] == want["parameters"]
    assert got["evals"] == want["evals"] and got["best_epoch"] == want["best_epoch"]
    assert (got["test_items"], got["test_scores"]) == (want["test_items"], want["test_scores"])


@pytest.mark.skipif(SAME_BUILD or not SAME_TORCH, reason="bit-identity is checked on the recording build; another torch version may legitimately differ more")
@pytest.mark.parametrize("name", list(ref.CASES))
def test_training_matches_the_reference_closely_on_another_cpu(name):
    """Another CPU of the same torch build: the same computation up to float rounding, so every
    logged value of every step agrees to 1e-3 relative (a changed loss, batch or RNG draw moves
    them by far more)."""
    got, want = ref.record(name), SAVED["runs"][name]
    assert len(got["steps"]) == len(want["steps"])
    for step, (g, w) in enumerate(zip(got["steps"], want["steps"])):
        assert set(g) == set(w), step
        for key in w:
            assert float.fromhex(g[key]) == pytest.approx(float.fromhex(w[key]), rel=1e-3, abs=1e-6), (step, key)
