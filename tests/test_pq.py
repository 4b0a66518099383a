"""PQ: codes are the per-segment nearest centroids; equal segments enforced; files load back."""

import json

import numpy as np
import pytest

from genrec_core.config import TokenizerParams
from genrec_core.errors import ParamError
from genrec_core.tokenizers.pq import PQTokenizer, segment_bounds
from genrec_core.tokenizers.training import load_kept_tokenizers, train_pq


def _data(n=500, d=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32)


def test_codes_equal_brute_force_per_segment():
    x = _data()
    tok = PQTokenizer.fit(x, levels=3, codebook_size=16, iters=10, seed=0)
    res = tok.quantize(x)
    assert res.codes.shape == (500, 3) and res.codes.dtype == np.int64
    for level, (a, b) in enumerate(segment_bounds(24, 3)):
        cents = tok.centroids[level].numpy().astype(np.float64)
        brute = ((x[:, None, a:b].astype(np.float64) - cents[None]) ** 2).sum(-1).argmin(1)
        np.testing.assert_array_equal(res.codes[:, level], brute)
    np.testing.assert_array_equal(res.last_residual, x[:, 16:24])
    np.testing.assert_array_equal(res.last_codebook, tok.centroids[-1].numpy())
    assert res.last_codebook.shape == (16, 8)


def test_unequal_segments_are_a_param_error():
    with pytest.raises(ParamError, match="tokenizer.levels"):
        PQTokenizer.fit(_data(d=10), levels=3, codebook_size=4, iters=2, seed=0)


def test_deterministic_for_seed():
    x = _data()
    a = PQTokenizer.fit(x, 4, 8, 5, seed=3).quantize(x).codes
    b = PQTokenizer.fit(x, 4, 8, 5, seed=3).quantize(x).codes
    np.testing.assert_array_equal(a, b)


def test_train_pq_writes_loadable_tokenizer_and_reports(tmp_path):
    x = _data()
    tp = TokenizerParams(kind="pq", levels=4, codebook_size=8, kind_params={"kmeans_iters": 5}, device="cpu")
    (tmp_path / "tok" / "kept").mkdir(parents=True)
    (tmp_path / "tok" / "kept" / "epoch_0003.pt").write_bytes(b"stale")  # from an older RQ-VAE run
    summary = train_pq(x, tp, 0, tmp_path / "tok", tmp_path / "rep")
    kept = load_kept_tokenizers(tmp_path / "tok")
    assert [name for name, _ in kept] == ["pq"]
    direct = PQTokenizer.fit(x, 4, 8, 5, seed=0).quantize(x).codes
    np.testing.assert_array_equal(kept[0][1].quantize(x).codes, direct)
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert metrics == summary and metrics["kind"] == "pq" and set(metrics["usage_share"]) == {"l1", "l2", "l3", "l4"}
    assert 0.0 <= metrics["collision_rate"] <= 1.0
    assert (tmp_path / "rep" / "history.csv").read_text().startswith("epoch,")
