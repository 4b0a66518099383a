"""Item vectors without text (SPEC section 9): co-occurrence SVD, SASRec item embeddings, text +
collaborative concatenation, and the embed stage's ``embed.source`` dispatch.

Everything runs on small synthetic data built here (no network, no text model: a tiny fake
encoder stands in for MiniLM where text is needed).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from genrec_core.config import DataParams, EmbedParams, Params, load_params
from genrec_core.embed.collaborative import (
    combine,
    cooccurrence_matrix,
    cooccurrence_svd_vectors,
    inner_split,
    ppmi,
    sasrec_item_vectors,
)
from genrec_core.errors import ParamError

PAIR = (0, 1)  # the two items that always appear together


def pair_sequences(n_items: int = 30, n_users: int = 200, seed: int = 0) -> list[np.ndarray]:
    """Random sequences over items 2..N-1; half the users also hold items 0 and 1, always both,
    next to each other in a random order."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n_users):
        seq = list(rng.choice(np.arange(2, n_items), size=int(rng.integers(5, 11)), replace=False))
        if rng.random() < 0.5:
            pos = int(rng.integers(0, len(seq) + 1))
            pair = list(PAIR) if rng.random() < 0.5 else list(PAIR[::-1])
            seq[pos:pos] = pair
        seqs.append(np.array(seq, dtype=np.int32))
    return seqs


def _cos(v: np.ndarray) -> np.ndarray:
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    return u @ u.T


def assert_pair_is_nearest(vectors: np.ndarray) -> None:
    cos = _cos(vectors.astype(np.float64))
    a, b = PAIR
    others = np.arange(2, vectors.shape[0])
    assert cos[a, b] > cos[a, others].max(), (cos[a, b], cos[a, others].max())
    assert cos[a, b] > cos[b, others].max(), (cos[a, b], cos[b, others].max())


# --------------------------------------------------------------------------- co-occurrence + SVD


def test_cooccurrence_counts_pairs_within_users_and_window():
    seqs = [np.array([0, 1, 2, 0]), np.array([3, 2])]
    full = cooccurrence_matrix(seqs, 4, window=0).toarray()
    # user 0: positions (0,1,2,0): pairs 0-1 twice, 0-2 twice, 1-2 once; the 0-0 pair is dropped
    expected = np.zeros((4, 4))
    for i, j, c in [(0, 1, 2), (0, 2, 2), (1, 2, 1), (2, 3, 1)]:
        expected[i, j] = expected[j, i] = c
    np.testing.assert_array_equal(full, expected)
    near = cooccurrence_matrix(seqs, 4, window=1).toarray()
    expected1 = np.zeros((4, 4))
    for i, j, c in [(0, 1, 1), (1, 2, 1), (0, 2, 1), (2, 3, 1)]:  # 0-1, 1-2, 2-0 adjacent; never across users
        expected1[i, j] = expected1[j, i] = c
    np.testing.assert_array_equal(near, expected1)
    weights = ppmi(cooccurrence_matrix(seqs, 4)).toarray()
    assert (weights >= 0).all() and np.allclose(np.diag(weights), 0)


@pytest.mark.parametrize("window", [0, 2])
@pytest.mark.parametrize("dim", [64, 8])
def test_svd_always_cooccurring_items_are_nearest(dim, window):
    seqs = pair_sequences()
    vectors = cooccurrence_svd_vectors(seqs, 30, dim=dim, seed=0, window=window)
    assert vectors.shape == (30, min(dim, 29)) and vectors.dtype == np.float32
    assert_pair_is_nearest(vectors)


def test_svd_is_deterministic_for_a_seed_and_noise_marks_items_without_cooccurrence():
    seqs = pair_sequences(n_items=30) + [np.array([30], dtype=np.int32)]  # item 30: alone in its sequence
    runs = [cooccurrence_svd_vectors(seqs, 32, dim=6, seed=3, return_info=True) for _ in range(2)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    vectors, info = runs[0]
    # items 30 (alone) and 31 (never seen) have no co-occurrence: tiny, distinct, seeded noise
    assert info["items_without_cooccurrence"] == 2 and info["rank"] == 6
    norms = np.linalg.norm(vectors, axis=1)
    assert 0 < norms[30] < 1e-2 * np.median(norms[:30]) and 0 < norms[31] < 1e-2 * np.median(norms[:30])
    assert not np.array_equal(vectors[30], vectors[31])
    other_seed = cooccurrence_svd_vectors(seqs, 32, dim=6, seed=4)
    np.testing.assert_array_equal(other_seed[:30], vectors[:30])  # the exact SVD draws nothing
    assert not np.array_equal(other_seed[30], vectors[30])


def test_svd_arpack_path_is_seeded_and_deterministic(monkeypatch):
    from genrec_core.embed import collaborative

    monkeypatch.setattr(collaborative, "DENSE_SVD_MAX_ITEMS", 10)
    seqs = pair_sequences()
    a, info = cooccurrence_svd_vectors(seqs, 30, dim=5, seed=1, return_info=True)
    b = cooccurrence_svd_vectors(seqs, 30, dim=5, seed=1)
    assert info["svd_solver"] == "arpack"
    np.testing.assert_array_equal(a, b)
    monkeypatch.setattr(collaborative, "DENSE_SVD_MAX_ITEMS", 2048)
    dense = cooccurrence_svd_vectors(seqs, 30, dim=5, seed=1)
    np.testing.assert_allclose(a, dense, atol=1e-4)  # same components, same sign convention


def test_svd_without_any_cooccurrence_is_a_clear_error():
    from genrec_core.errors import EmptyResultError

    with pytest.raises(EmptyResultError, match="co-occurrence"):
        cooccurrence_svd_vectors([np.array([0]), np.array([1])], 2, dim=4)


# --------------------------------------------------------------------------- SASRec


def test_inner_split_holds_out_the_last_training_item():
    train, held = inner_split([np.array([5, 6, 7, 8]), np.array([1, 2]), np.array([3])], max_len=2)
    assert held.targets.tolist() == [8, 2]
    assert [held.history[held.offsets[i] : held.offsets[i + 1]].tolist() for i in range(len(held))] == [[6, 7], [1]]
    assert train.targets.tolist() == [6, 7]
    assert [train.history[train.offsets[i] : train.offsets[i + 1]].tolist() for i in range(len(train))] == [[5], [5, 6]]


def test_sasrec_vectors_are_deterministic_and_pair_is_nearest():
    seqs = pair_sequences()
    a, info = sasrec_item_vectors(seqs, 30, dim=16, seed=0, epochs=12, patience=12, lr=5e-3, return_info=True)
    b = sasrec_item_vectors(seqs, 30, dim=16, seed=0, epochs=12, patience=12, lr=5e-3)
    assert a.shape == (30, 16) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert 1 <= info["best_epoch"] <= info["epochs_run"] <= 12
    assert_pair_is_nearest(a)


# --------------------------------------------------------------------------- combine


def test_combine_normalises_each_part():
    rng = np.random.default_rng(0)
    text, collab = rng.normal(size=(5, 3)) * 7, rng.normal(size=(5, 4)) * 0.01
    collab[2] = 0
    out = combine(text, collab)
    assert out.shape == (5, 7) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out[:, :3], axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out[:, 3:], axis=1), [1, 1, 0, 1, 1], atol=1e-6)
    with pytest.raises(ValueError):
        combine(text, collab[:4])


# --------------------------------------------------------------------------- the stage


def write_atomic(raw: Path, with_items: bool, n_users: int = 40, n_items: int = 16, seed: int = 0) -> None:
    """A RecBole atomic dataset every user and item of which survives the five-core filter."""
    rng = np.random.default_rng(seed)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(n_users):
        items = rng.choice(n_items, size=8, replace=False)
        for t, i in enumerate(items):
            lines.append(f"u{u}\ti{i}\t4\t{1000 + t}")
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "toy.inter").write_text("\n".join(lines) + "\n")
    if with_items:
        rows = ["item_id:token\ttitle:token_seq"] + [f"i{i}\tItem number {i}" for i in range(n_items)]
        (raw / "toy.item").write_text("\n".join(rows) + "\n")


class FakeEncoder:
    """Stands in for a text model: a fixed pseudo-random, not unit-length vector per text."""

    model_name = "fake"
    device = "cpu"
    dim = 6

    def encode(self, texts):
        return np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=self.dim) * 3 for t in texts]).astype(np.float32)


@pytest.fixture
def fake_encoder(monkeypatch):
    from stages import embed as stage

    monkeypatch.setattr(stage, "build_encoder", lambda p, device: FakeEncoder())


def run_stages(tmp_path: Path, with_items: bool, **embed) -> tuple[Path, np.ndarray, dict]:
    from stages import embed as embed_stage
    from stages import preprocess

    raw, root = tmp_path / "raw", tmp_path / "ws"
    write_atomic(raw, with_items)
    params = Params(data=DataParams(dataset="atomic", raw_dir=str(raw)), embed=EmbedParams(device="cpu", **embed)).validate()
    preprocess.run(params, root)
    embed_stage.run(params, root)
    table = pl.read_parquet(root / "data" / "embeddings" / "item_vectors.parquet")
    report = json.loads((root / "reports" / "embed.json").read_text())
    return root, table, report


def test_stage_no_text_dataset_uses_collaborative_vectors(tmp_path):
    from stages.embed import l2_normalize

    root, table, report = run_stages(tmp_path, with_items=False, collaborative_dim=8)
    info = json.loads((root / "data" / "processed" / "dataset.json").read_text())
    assert info["text_fields"] == []
    assert report["source"] == "collaborative" and report["source_param"] == "auto"
    assert "no item text fields" in report["source_reason"]
    assert report["collaborative"] == "svd" and report["dim"] == 8 and report["n_items"] == 16
    assert "model" not in report and report["seconds"] > 0
    assert table.schema == pl.Schema({"item_id": pl.Int32, "vector": pl.Array(pl.Float32, 8)})
    assert table["item_id"].to_list() == list(range(16))
    vectors = table["vector"].to_numpy()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    # built from the training parts only: exactly the vectors of sequences.parquet's train_items
    train_items = [np.array(s, dtype=np.int32) for s in pl.read_parquet(root / "data" / "processed" / "sequences.parquet")["train_items"].to_list()]
    np.testing.assert_array_equal(vectors, l2_normalize(cooccurrence_svd_vectors(train_items, 16, 8, seed=0)))


def test_stage_auto_with_all_texts_blank_uses_collaborative_and_pca_applies(tmp_path, fake_encoder):
    raw = tmp_path / "raw"
    write_atomic(raw, with_items=True)
    (raw / "toy.item").write_text("item_id:token\ttitle:token_seq\n" + "".join(f"i{i}\t \n" for i in range(16)))
    from stages import embed as embed_stage
    from stages import preprocess

    params = Params(data=DataParams(dataset="atomic", raw_dir=str(raw)), embed=EmbedParams(device="cpu", collaborative_dim=8, pca_dim=4)).validate()
    preprocess.run(params, tmp_path / "ws")
    embed_stage.run(params, tmp_path / "ws")
    report = json.loads((tmp_path / "ws" / "reports" / "embed.json").read_text())
    assert report["source"] == "collaborative" and "all 16 item texts" in report["source_reason"]
    assert report["dim"] == 4 and report["pca"]["dim"] == 4 and report["collaborative_dim"] == 8


def test_stage_auto_uses_text_when_items_have_text(tmp_path, fake_encoder):
    _, table, report = run_stages(tmp_path, with_items=True)
    assert report["source"] == "text" and "16 of 16 items have text" in report["source_reason"]
    assert report["dim"] == FakeEncoder.dim and report["model"] == "default" and "collaborative" not in report


def test_stage_concat_is_text_then_collaborative_each_unit_norm(tmp_path, fake_encoder):
    _, table, report = run_stages(tmp_path, with_items=True, source="concat", collaborative_dim=5)
    assert report["source"] == "concat" and report["text_dim"] == 6 and report["collaborative_dim"] == 5
    assert report["dim"] == 11 and table.schema["vector"] == pl.Array(pl.Float32, 11)
    vectors = table["vector"].to_numpy()
    np.testing.assert_allclose(np.linalg.norm(vectors[:, :6], axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors[:, 6:], axis=1), 1, atol=1e-5)


def test_stage_sasrec_source(tmp_path):
    _, table, report = run_stages(tmp_path, with_items=False, source="collaborative", collaborative="sasrec", collaborative_dim=8, sasrec_epochs=2)
    assert report["source"] == "collaborative" and report["collaborative"] == "sasrec"
    assert report["collaborative_info"]["epochs_run"] <= 2 and table.schema["vector"] == pl.Array(pl.Float32, 8)


@pytest.mark.parametrize("source", ["text", "concat"])
def test_stage_text_sources_on_a_no_text_dataset_name_embed_source(tmp_path, source):
    with pytest.raises(ParamError) as err:
        run_stages(tmp_path, with_items=False, source=source)
    assert err.value.param == "embed.source" and "collaborative" in str(err.value)


@pytest.mark.parametrize(
    "override, param",
    [
        ("embed.source=texts", "embed.source"),
        ("embed.collaborative=als", "embed.collaborative"),
        ("embed.collaborative_dim=0", "embed.collaborative_dim"),
        ("embed.cooccurrence_window=-1", "embed.cooccurrence_window"),
        ("embed.sasrec_epochs=0", "embed.sasrec_epochs"),
        ("embed.sasrec_patience=0", "embed.sasrec_patience"),
        ("embed.seed=-1", "embed.seed"),
        ("embed.collaborative_dim=abc", "embed.collaborative_dim"),
    ],
)
def test_bad_params_name_the_key(override, param):
    with pytest.raises(ParamError) as err:
        load_params(None, [override])
    assert err.value.param == param
