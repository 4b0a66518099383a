"""RQ-KMeans (SPEC section 9): residual k-means codes, determinism, collision-free ID tables,
kept-file round trip, params, and the train-tokenizer -> emit-ids stages through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from genrec_core.config import Params, TokenizerParams, load_params
from genrec_core.errors import ParamError
from genrec_core.tokenizers.base import auto_codebook_size
from genrec_core.tokenizers.collisions import assert_unique_ids, collision_stats, resolve_collisions
from genrec_core.tokenizers.id_table import build_id_table, read_id_table_with_items, validate_id_table
from genrec_core.tokenizers.rqkmeans import RQKMeansTokenizer
from genrec_core.tokenizers.spec import resolved_kind_params
from genrec_core.tokenizers.training import load_kept_tokenizers, load_tokenizer, params_hash, train_rqkmeans

REPO = Path(__file__).resolve().parents[1]


def _blobs(n=600, k=6, d=8, seed=0, scale=10.0, noise=0.1):
    """Well-separated Gaussian clusters: (vectors float32 [n, d], true labels [n])."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=scale, size=(k, d))
    labels = rng.integers(0, k, n)
    return (centres[labels] + rng.normal(scale=noise, size=(n, d))).astype(np.float32), labels


def _with_duplicates(n=200, d=16, dup=20, seed=1):
    """Clustered vectors whose last ``dup`` rows repeat earlier rows exactly: raw codes must collide."""
    x, _ = _blobs(n - dup, k=8, d=d, seed=seed, scale=3.0, noise=1.0)
    return np.concatenate([x, x[:dup]]).astype(np.float32)


def _is_bijection(a: np.ndarray, b: np.ndarray) -> bool:
    """a and b label the same partition (equal up to renaming the labels)."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


# --------------------------------------------------------------------------- codes by hand


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_four_corners_by_hand(seed):
    """Points at (+-100, +-1), five copies each, L = 2, K = 2: level 1 splits on the sign of x0
    (centroids (+-100, 0)), leaving residuals (0, +-1) that level 2 splits on the sign of x1
    (centroids (0, +-1)); nothing is left after level 2."""
    corners = np.array([[-100, -1], [-100, 1], [100, -1], [100, 1]], dtype=np.float32)
    x = np.repeat(corners, 5, axis=0)
    tok = RQKMeansTokenizer.fit(x, levels=2, codebook_size=2, iters=10, seed=seed)
    res = tok.quantize(x)
    assert res.codes.shape == (20, 2) and res.codes.dtype == np.int64
    assert _is_bijection(res.codes[:, 0], (x[:, 0] > 0).astype(int))
    assert _is_bijection(res.codes[:, 1], (x[:, 1] > 0).astype(int))
    c1 = tok.centroids[0].numpy()
    np.testing.assert_allclose(np.sort(c1[:, 0]), [-100, 100], atol=1e-4)
    np.testing.assert_allclose(c1[:, 1], [0, 0], atol=1e-5)
    np.testing.assert_allclose(np.sort(tok.centroids[1].numpy()[:, 1]), [-1, 1], atol=1e-5)
    # mean squared residual: ||(0, +-1)||^2 = 1 after level 1, 0 after level 2
    np.testing.assert_allclose(tok.residual_errors(x), [1.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(tok.reconstruct(res.codes), x, atol=1e-4)
    # what reassign_last sees: the level-2 inputs (the level-1 residuals) and level 2's centroids
    np.testing.assert_allclose(res.last_residual, np.c_[np.zeros(20), x[:, 1]], atol=1e-4)
    np.testing.assert_array_equal(res.last_codebook, tok.centroids[1].numpy())


def test_separated_clusters_level1_is_the_clustering_and_error_falls_each_level():
    x, labels = _blobs(k=6)
    tok = RQKMeansTokenizer.fit(x, levels=3, codebook_size=6, iters=20, seed=0)
    codes = tok.quantize(x).codes
    assert _is_bijection(codes[:, 0], labels)  # level-1 codes = the true clusters, renamed
    errors = tok.residual_errors(x)
    energy = float((x.astype(np.float64) ** 2).sum(1).mean())
    assert energy > errors[0] > errors[1] > errors[2] > 0
    assert errors[0] < 0.1 * 8  # only the noise (0.1^2 per dimension, d = 8) is left after level 1
    recon = tok.reconstruct(codes)
    assert float(((x - recon) ** 2).sum(1).mean()) == pytest.approx(errors[-1], rel=1e-4)
    for level in range(3):  # codes are the nearest centroid of each level's input
        inp = x - tok.reconstruct(codes[:, :level])
        c = tok.centroids[level].numpy().astype(np.float64)
        brute = ((inp[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1).argmin(1)
        np.testing.assert_array_equal(codes[:, level], brute)


@pytest.mark.parametrize("normalize", ["input", "residuals"])
def test_normalised_variants_ignore_the_vectors_length(normalize):
    x, _ = _blobs(n=300, k=5, d=8)
    tok = RQKMeansTokenizer.fit(x, levels=3, codebook_size=5, iters=10, seed=0, normalize=normalize)
    a, b = tok.quantize(x), tok.quantize(3.0 * x)
    np.testing.assert_array_equal(a.codes, b.codes)
    if normalize == "residuals":  # every level clusters unit vectors
        np.testing.assert_allclose(np.linalg.norm(a.last_residual, axis=1), 1.0, atol=1e-5)
    else:  # the centroids sum to the normalised vector, up to what is left
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        err = float(((xn - tok.reconstruct(a.codes)) ** 2).sum(1).mean())
        assert err == pytest.approx(tok.residual_errors(x)[-1], rel=1e-4, abs=1e-7)


def test_codes_in_range_with_more_codes_than_distinct_points():
    x = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)  # 3 distinct points, K = 8
    res = RQKMeansTokenizer.fit(x, levels=2, codebook_size=8, iters=5, seed=0).quantize(x)
    assert res.codes.min() >= 0 and res.codes.max() < 8
    assert _is_bijection(res.codes[:, 0], np.argmax(x, axis=1))


def test_bad_inputs():
    tok = RQKMeansTokenizer.fit(_blobs(n=50, d=4)[0], levels=2, codebook_size=4, iters=2, seed=0)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        tok.quantize(np.zeros((3, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="normalize"):
        RQKMeansTokenizer.fit(np.zeros((4, 2), dtype=np.float32), 1, 2, 1, 0, normalize="l2")


# --------------------------------------------------------------------------- determinism


def test_deterministic_for_a_seed_and_seed_matters():
    x = _with_duplicates()
    a = RQKMeansTokenizer.fit(x, 3, 16, 10, seed=3)
    b = RQKMeansTokenizer.fit(x, 3, 16, 10, seed=3)
    c = RQKMeansTokenizer.fit(x, 3, 16, 10, seed=4)
    for ca, cb in zip(a.centroids, b.centroids):
        assert torch.equal(ca, cb)
    np.testing.assert_array_equal(a.quantize(x).codes, b.quantize(x).codes)
    assert not all(torch.equal(ca, cc) for ca, cc in zip(a.centroids, c.centroids))


def test_train_twice_gives_identical_kept_files(tmp_path):
    x = _with_duplicates()
    tp = TokenizerParams(kind="rqkmeans", levels=3, codebook_size=16, kind_params={"kmeans_iters": 10}, device="cpu", seed=5)
    s1 = train_rqkmeans(x, tp, 5, tmp_path / "a" / "tok", tmp_path / "a" / "rep")
    s2 = train_rqkmeans(x, tp, 5, tmp_path / "b" / "tok", tmp_path / "b" / "rep")
    t1 = torch.load(tmp_path / "a" / "tok" / "kept" / "rqkmeans.pt", weights_only=True)
    t2 = torch.load(tmp_path / "b" / "tok" / "kept" / "rqkmeans.pt", weights_only=True)
    assert t1["kind"] == t2["kind"] == "rqkmeans"
    assert all(torch.equal(u, v) for u, v in zip(t1["centroids"], t2["centroids"]))
    assert {k: v for k, v in s1.items() if k != "seconds"} == {k: v for k, v in s2.items() if k != "seconds"}


# --------------------------------------------------------------------------- ID tables


@pytest.mark.parametrize("mode", ["reassign_last", "dedup_level"])
def test_id_table_from_rqkmeans_codes_is_unique(mode):
    x = _with_duplicates()
    k = auto_codebook_size(x.shape[0], 3)
    tok = RQKMeansTokenizer.fit(x, 3, k, 10, seed=0)
    res = tok.quantize(x)
    stats_raw = collision_stats(res.codes, res.codes)
    assert stats_raw.collision_rate > 0  # the duplicated rows share raw codes
    ids = resolve_collisions(res, mode, k)
    assert_unique_ids(ids)
    if mode == "reassign_last":
        assert ids.shape == (200, 3)
        np.testing.assert_array_equal(ids[:, :2], res.codes[:, :2])  # only the last token moves
        assert ids.max() < k
    else:
        assert ids.shape == (200, 4)
        np.testing.assert_array_equal(ids[:, :3], res.codes)
    item_ids = np.arange(1000, 1200)
    table = build_id_table(item_ids, {"rqkmeans": ids})
    validate_id_table(table, "<test>", item_ids)  # raises on any shared ID


# --------------------------------------------------------------------------- kept file


def test_kept_file_round_trips(tmp_path):
    x = _with_duplicates()
    tp = TokenizerParams(kind="rqkmeans", levels=3, codebook_size=16, kind_params={"kmeans_iters": 10, "normalize": "residuals"}, device="cpu")
    tok_dir, rep_dir = tmp_path / "tok", tmp_path / "rep"
    (tok_dir / "kept").mkdir(parents=True)
    (tok_dir / "kept" / "epoch_0003.pt").write_bytes(b"stale")  # from an older RQ-VAE run
    (tok_dir / "last.pt").write_bytes(b"stale RQ-VAE checkpoint")
    summary = train_rqkmeans(x, tp, 11, tok_dir, rep_dir)
    assert not (tok_dir / "last.pt").exists()
    kept = load_kept_tokenizers(tok_dir)
    assert [name for name, _ in kept] == ["rqkmeans"]
    loaded = kept[0][1]
    assert isinstance(loaded, RQKMeansTokenizer) and loaded.normalize == "residuals"
    assert (loaded.levels, loaded.codebook_size) == (3, 16)
    direct = RQKMeansTokenizer.fit(x, 3, 16, 10, seed=11, normalize="residuals")
    a, b = direct.quantize(x), loaded.quantize(x)
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.last_residual, b.last_residual)
    np.testing.assert_array_equal(a.last_codebook, b.last_codebook)
    again = load_tokenizer(tok_dir / "kept" / "rqkmeans.pt")
    np.testing.assert_array_equal(again.quantize(x).codes, a.codes)

    metrics = json.loads((rep_dir / "metrics.json").read_text())
    assert metrics == summary and metrics["kind"] == "rqkmeans" and metrics["epochs"] == 1
    assert set(metrics["usage_share"]) == {"l1", "l2", "l3"} and metrics["resumed_from_epoch"] == 0
    hist = pl.read_csv(rep_dir / "history.csv")
    assert hist.height == 1 and hist["epoch"].to_list() == [1]
    assert {"quant_error", "residual_l1", "residual_l2", "residual_l3", "usage_l1", "perplexity_l3", "collision_rate"} <= set(hist.columns)
    assert hist["quant_error"][0] == pytest.approx(hist["residual_l3"][0]) == pytest.approx(metrics["quant_error"])


# --------------------------------------------------------------------------- params


def test_params_validate_kind_and_normalize():
    assert load_params(None, ["tokenizer.kind=rqkmeans"]).tokenizer.kind == "rqkmeans"
    assert resolved_kind_params(load_params(None, ["tokenizer.kind=rqkmeans"]).tokenizer)["normalize"] == "none"
    for value in ("none", "input", "residuals"):
        for name in ("tokenizer.kind_params.normalize", "tokenizer.rqkmeans_normalize"):  # its old flat name too
            tp = load_params(None, ["tokenizer.kind=rqkmeans", f"{name}={value}"]).tokenizer
            assert tp.kind_params == {"normalize": value}
    with pytest.raises(ParamError) as err:
        load_params(None, ["tokenizer.kind=rqkmeans", "tokenizer.kind_params.normalize=l2"])
    assert err.value.param == "tokenizer.kind_params.normalize" and "none, input or residuals" in str(err.value)
    with pytest.raises(ParamError) as err:  # the old name is checked as it always was, also with another kind
        load_params(None, ["tokenizer.rqkmeans_normalize=l2"])
    assert err.value.param == "tokenizer.rqkmeans_normalize" and "none, input or residuals" in str(err.value)
    with pytest.raises(ParamError) as err:
        load_params(None, ["tokenizer.kind=rq-kmeans"])
    assert err.value.param == "tokenizer.kind" and "rqkmeans" in str(err.value)
    project = load_params(REPO / "params.yaml", ["tokenizer.kind=rqkmeans"])
    assert resolved_kind_params(project.tokenizer) == {"kmeans_iters": 50, "normalize": "none"}


def test_rqvae_checkpoint_identity_ignores_the_rqkmeans_param():
    """An RQ-VAE checkpoint written before tokenizer.rqkmeans_normalize (and kept_from) existed still resumes."""
    import dataclasses
    import hashlib

    tp = TokenizerParams()
    # the flat dict hashed before kind_params existed, less rqkmeans_normalize and kept_from, written out
    old = {
        "kind": "rqvae",
        "levels": 3,
        "codebook_size": 256,
        "hidden_dims": [512, 256, 128],
        "latent_dim": 32,
        "dropout": 0.0,
        "beta": 0.25,
        "codebook_update": "ste",
        "ema_decay": 0.99,
        "kmeans_init": True,
        "kmeans_iters": 50,
        "dead_code_reseed": True,
        "dead_code_threshold": 1.0,
        "optimizer": "adamw",
        "lr": 0.001,
        "weight_decay": 0.0,
        "epochs": 100,
        "batch_size": 256,
        "keep_last": 5,
        "device": "auto",
        "seed": 42,
    }
    blob = json.dumps({"tokenizer": old, "seed": 1, "data": "fp"}, sort_keys=True)
    assert params_hash(tp, 1, "fp") == hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert params_hash(dataclasses.replace(tp, kind_params={"latent_dim": 32}), 1, "fp") == params_hash(tp, 1, "fp")  # a default restated
    assert params_hash(dataclasses.replace(tp, kind_params={"latent_dim": 16}), 1, "fp") != params_hash(tp, 1, "fp")
    assert params_hash(dataclasses.replace(tp, kept_from="seeds"), 1, "fp") == params_hash(tp, 1, "fp")
    rq = dataclasses.replace(tp, kind="rqkmeans")
    assert params_hash(dataclasses.replace(rq, kind_params={"normalize": "input"}), 1, "fp") != params_hash(rq, 1, "fp")


# --------------------------------------------------------------------------- stages via the CLI


def _cli(args: list[str]):
    from typer.testing import CliRunner

    from genrec_core.cli import app

    threads = torch.get_num_threads()
    try:
        return CliRunner().invoke(app, args)
    finally:
        torch.set_num_threads(threads)


def test_train_tokenizer_then_emit_ids_through_the_cli(tmp_path):
    from genrec_core.io import write_parquet
    from genrec_core.paths import ArtifactPaths

    x = _with_duplicates(n=120, d=8, dup=12)
    rng = np.random.default_rng(0)
    item_ids = rng.permutation(np.arange(500, 620))  # not contiguous, not in file order
    paths = ArtifactPaths(tmp_path)
    write_parquet(pl.DataFrame({"item_id": pl.Series(item_ids, dtype=pl.Int32), "vector": pl.Series(x, dtype=pl.Array(pl.Float32, 8))}), paths.embeddings)
    common = ["--params", str(REPO / "params.yaml"), "--root", str(tmp_path)]
    tok = [
        "-S",
        "tokenizer.kind=rqkmeans",
        "-S",
        "tokenizer.levels=3",
        "-S",
        "tokenizer.codebook_size=auto",
        "-S",
        "tokenizer.kmeans_iters=10",
        "-S",
        "tokenizer.device=cpu",
        "-S",
        "tokenizer.seed=7",
    ]

    bad = _cli(["train-tokenizer", *common, *tok, "-S", "tokenizer.rqkmeans_normalize=l2"])
    assert bad.exit_code == 2 and "param tokenizer.rqkmeans_normalize" in bad.output
    assert not paths.tokenizer_dir.exists()

    out = _cli(["train-tokenizer", *common, *tok])
    assert out.exit_code == 0, out.output
    assert sorted(p.name for p in (paths.tokenizer_dir / "kept").iterdir()) == ["rqkmeans.pt"]
    assert not (paths.tokenizer_dir / "last.pt").exists()
    metrics = json.loads((paths.tokenizer_reports_dir / "metrics.json").read_text())
    k = auto_codebook_size(120, 3)
    assert metrics["kind"] == "rqkmeans" and metrics["items"] == 120 and metrics["codebook_size"] == k
    assert pl.read_csv(paths.tokenizer_reports_dir / "history.csv")["epoch"].to_list() == [1]

    # the stage fits on the file order with tokenizer.seed; emit-ids quantises in item_id order
    direct = RQKMeansTokenizer.fit(x, 3, k, 10, seed=7)
    order = np.argsort(item_ids)
    raw = direct.quantize(x[order]).codes
    assert collision_stats(raw, raw).collision_rate > 0

    for mode, width in (("reassign_last", 3), ("dedup_level", 4)):
        out = _cli(["emit-ids", *common, *tok, "-S", f"ids.collision={mode}"])
        assert out.exit_code == 0, out.output
        ids_read, tables = read_id_table_with_items(paths.id_table)  # validates: unique IDs
        np.testing.assert_array_equal(ids_read, np.sort(item_ids))
        assert list(tables) == ["rqkmeans"]
        ids = tables["rqkmeans"]
        assert ids.shape == (120, width)
        assert_unique_ids(ids)
        keep = 2 if mode == "reassign_last" else 3
        np.testing.assert_array_equal(ids[:, :keep], raw[:, :keep])
        report = json.loads((paths.id_reports_dir / "emit.json").read_text())
        assert report["collision"] == mode and report["tokenizers"] == ["rqkmeans"]
        stats = report["per_tokenizer"]["rqkmeans"]
        assert stats["levels"] == 3 and stats["codebook_size"] == k and stats["id_length"] == width
        assert stats["collision_rate"] > 0


def test_stage_run_picks_rqkmeans(tmp_path):
    """stages.train_tokenizer dispatches on tokenizer.kind (no RQ-VAE files for rqkmeans)."""
    from genrec_core.io import write_parquet
    from genrec_core.paths import ArtifactPaths
    from stages.train_tokenizer import run

    x, _ = _blobs(n=64, k=4, d=4)
    paths = ArtifactPaths(tmp_path)
    write_parquet(pl.DataFrame({"item_id": pl.Series(np.arange(64), dtype=pl.Int32), "vector": pl.Series(x, dtype=pl.Array(pl.Float32, 4))}), paths.embeddings)
    run(Params(tokenizer=TokenizerParams(kind="rqkmeans", levels=2, codebook_size=8, kind_params={"kmeans_iters": 5}, device="cpu")), tmp_path)
    kept = load_kept_tokenizers(paths.tokenizer_dir)
    assert [name for name, _ in kept] == ["rqkmeans"] and isinstance(kept[0][1], RQKMeansTokenizer)
