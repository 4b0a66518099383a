"""Data-derived token weights (SPEC 6): Front-Greater (Lemma 4.1), Frequency (beta = 0.99), IGD,
the token-weights report stage and the Figure-5 alpha plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from genrec_core.config import Params
from genrec_core.recommender import token_weights as tw
from genrec_core.recommender.losses import LossContext, build_loss
from genrec_core.recommender.vocab import SemanticIdVocab

REPO = Path(__file__).resolve().parents[1]


def hierarchical_codes(n: int, levels: int, k: int, seed: int) -> np.ndarray:
    """Distinct random IDs [n, levels] over k codes per level."""
    rng = np.random.default_rng(seed)
    codes = np.unique(rng.integers(0, k, size=(3 * n, levels)), axis=0)
    return codes[rng.permutation(codes.shape[0])[:n]]


# --------------------------------------------------------------------------- front-greater


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_front_greater_mu_non_increasing_on_synthetic_data(seed):
    rng = np.random.default_rng(seed)
    codes = hierarchical_codes(300, 4, 4, seed)
    vectors = rng.normal(size=(codes.shape[0], 8)) + codes[:, :1] * 2.0  # structure at the first level
    mu = tw.front_greater_dispersion(vectors, codes, "paper")
    assert mu.shape == (5,)
    assert np.all(np.diff(mu) <= 1e-12), mu  # Lemma 4.1
    assert mu[-1] == pytest.approx(0.0, abs=1e-12)  # unique IDs: singleton groups
    assert mu[0] == pytest.approx(((vectors - vectors.mean(0)) ** 2).sum(1).mean())
    for variant in tw.FG_VARIANTS:
        w = tw.front_greater_weights(tw.front_greater_dispersion(vectors, codes, variant), variant)
        assert w.shape == (4,) and np.all(w >= 0) and w.sum() == pytest.approx(4.0)
    assert np.argmax(tw.front_greater_weights(mu)) == 0  # the informative level gets the largest weight


def test_front_greater_groups_and_edge_cases():
    codes = np.array([[0, 0], [0, 1], [1, 0]])
    groups = tw.prefix_groups(codes)
    assert [g.tolist() for g in groups] == [[0, 0, 0], [0, 0, 1], [0, 1, 2]]
    assert tw.front_greater_weights(np.array([1.0, 1.0, 1.0])).tolist() == [1.0, 1.0]  # no gain: uniform
    assert tw.front_greater_weights(np.array([1.0, 2.0, 0.0])).tolist() == [0.0, 2.0]  # negative delta -> 0


@pytest.fixture(scope="module")
def real_ml100k(tmp_path_factory):
    """(codes [N, L], vectors [N, D]) of ml-100k: the workspace's pipeline outputs when they are
    there, else built from ../shared/datasets/ml-100k by the real stages (preprocess, MiniLM
    embeddings, a 30-epoch RQ-VAE, emit-ids) in a temporary root."""
    from conftest import SHARED_DATASETS

    from genrec_core.artifacts import load_item_vectors
    from genrec_core.tokenizers.id_table import choose_tokenizer, read_id_table

    root = REPO
    info = root / "data" / "processed" / "dataset.json"
    have = all((root / p).exists() for p in ("data/ids/item_ids.parquet", "data/embeddings/item_vectors.parquet")) and info.exists()
    if not have or json.loads(info.read_text())["dataset"] != "ml-100k":
        raw = SHARED_DATASETS / "ml-100k"
        if not raw.is_dir():
            pytest.skip(f"../shared/datasets absent ({raw}) and no ml-100k pipeline outputs in the workspace")
        from genrec_core.config import load_params
        from stages import embed, emit_ids, preprocess, train_tokenizer

        root = tmp_path_factory.mktemp("ml100k")
        params = load_params(None, [f"data.raw_dir={raw}", "tokenizer.epochs=30", "embed.device=cpu", "tokenizer.device=cpu"])
        for stage in (preprocess, embed, train_tokenizer, emit_ids):
            stage.run(params, root)
    tables = read_id_table(root / "data" / "ids" / "item_ids.parquet")
    codes = tables[choose_tokenizer(list(tables), "last")]
    item_ids, vectors = load_item_vectors(root / "data" / "embeddings" / "item_vectors.parquet")
    if not np.array_equal(item_ids, np.arange(codes.shape[0])):
        pytest.skip("embeddings and ID table list different items (stale workspace outputs)")
    return codes, vectors


def test_front_greater_mu_non_increasing_on_real_ml100k(real_ml100k):
    codes, vectors = real_ml100k
    assert codes.shape[0] == 1_349
    mu = tw.front_greater_dispersion(vectors, codes, "paper")
    assert np.all(np.diff(mu) <= 1e-9), mu
    w = tw.front_greater_weights(mu)
    assert w.sum() == pytest.approx(codes.shape[1]) and w[0] > w[-1]


# --------------------------------------------------------------------------- frequency


def test_effective_number():
    assert tw.effective_number(np.array([0, 1, 2]), 0.99).tolist() == pytest.approx([0.0, 1.0, 1.99])
    assert float(tw.effective_number(np.array(10_000), 0.99)) == pytest.approx(100.0)


def test_frequency_weights_use_beta_099_not_09():
    # two first-level codes: code 0 seen 50 times, code 1 100 times (one item each, two items per code)
    codes = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    counts = np.array([25, 25, 50, 50])
    n = tw.level_token_counts(codes, counts)
    assert n[0].tolist() == [50, 100] and n[1].tolist() == [75, 75]
    vocab = SemanticIdVocab((2, 2))
    ctx = LossContext(vocab=vocab, item_tokens=torch.as_tensor(vocab.codes_to_tokens(codes)), target_counts=counts)
    fr = build_loss("frequency", {}, ctx)
    w = fr.token_table[vocab.level_offsets[0] : vocab.level_offsets[0] + 2].double().numpy()
    ratio = w[0] / w[1]  # E_100 / E_50
    assert ratio == pytest.approx((1 - 0.99**100) / (1 - 0.99**50), rel=1e-5)  # 1.605
    assert abs(ratio - (1 - 0.9**100) / (1 - 0.9**50)) > 0.5  # beta 0.9 saturates: ratio ~1.005
    assert w[0] == pytest.approx(0.01 / (1 - 0.99**50), rel=1e-5)


def test_frequency_never_seen_code_gets_the_n1_weight():
    assert tw.frequency_weights(np.array([0, 1, 3]), 0.99).tolist() == pytest.approx([1.0, 1.0, 1 / 2.9701])


# --------------------------------------------------------------------------- IGD


def test_igd_zero_gain_on_a_hand_made_trie():
    # root -> a (items 0, 1) -> a0 (item 0), a1 (item 1)
    #      -> b (item 2 only: its second token is decided)  -> b0 (item 2)
    #      -> c (items 3, 4; item 4 never a target: the frequency-weighted trie has one branch) -> c0, c1
    codes = np.array([[0, 0], [0, 1], [1, 0], [2, 0], [2, 1]])
    counts = np.array([1, 1, 2, 4, 0])
    gains = tw.igd_gains(codes, counts)
    p = np.array([1, 1, 2, 4]) / 8
    h_root = -(p * np.log(p)).sum()
    assert gains[0].tolist() == pytest.approx([h_root - math.log(2), math.log(2)])
    assert gains[2].tolist() == pytest.approx([h_root, 0.0])
    assert gains[3].tolist() == pytest.approx([h_root, 0.0])  # c's only target-bearing child
    w = tw.igd_weights(gains, 0.1)
    assert w[:, 1].tolist() == [1.0, 1.0, 0.1, 0.1, 0.1]
    assert w[:, 0].tolist() == [1.0] * 5
    share = tw.zero_gain_share(gains, counts)
    assert share["items"] == pytest.approx([0.0, 3 / 5])
    assert share["targets"] == pytest.approx([0.0, 6 / 8])


# --------------------------------------------------------------------------- stage + plot


def _write_inputs(root: Path, codes: np.ndarray, vectors: np.ndarray, targets: list[int]) -> None:
    from genrec_core.io import write_parquet
    from genrec_core.tokenizers.id_table import build_id_table

    n = codes.shape[0]
    write_parquet(build_id_table(np.arange(n), {"epoch_0001": codes}), root / "data" / "ids" / "item_ids.parquet")
    write_parquet(
        pl.DataFrame({"item_id": np.arange(n, dtype=np.int64), "vector": vectors.astype(np.float32).tolist()}),
        root / "data" / "embeddings" / "item_vectors.parquet",
    )
    hist = [[(t + 1) % n] for t in targets]
    write_parquet(
        pl.DataFrame(
            {"user_id": list(range(len(targets))), "history": hist, "target": targets},
            schema={"user_id": pl.Int32, "history": pl.List(pl.Int32), "target": pl.Int32},
        ),
        root / "data" / "processed" / "train.parquet",
    )


def test_token_weights_stage_writes_the_report(tmp_path):
    from stages.token_weights import run

    codes = np.array([[0, 0], [0, 1], [1, 0], [2, 2]])
    vectors = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [6.0, 4.0]])
    _write_inputs(tmp_path, codes, vectors, [0, 0, 1, 2, 3, 3, 3, 3])
    run(Params(), tmp_path)
    report = json.loads((tmp_path / "reports" / "token_weights.json").read_text())
    assert report["tokenizer"] == "epoch_0001" and report["training_targets"] == 8
    fg = report["front_greater"]["paper"]
    assert fg["mu"] == pytest.approx([10.0, 0.5, 0.0]) and fg["weights"] == pytest.approx([1.9, 0.1])
    assert len(report["front_greater"]["released"]["weights"]) == 2
    fr = report["frequency"]
    assert fr["beta"] == 0.99 and fr["counts"] == [[3, 1, 4], [3, 1, 4]]
    assert fr["weights"][0] == pytest.approx([1 / 2.9701, 1.0, 1 / 3.940399], rel=1e-6)
    assert report["igd"]["zero_gain_share"]["items"] == pytest.approx([0.0, 0.5])


def test_plot_alpha_trajectories_from_dvclive_tsv(tmp_path):
    from genrec_core.analysis.training_logs import plot_alpha_trajectories, read_live_series

    folder = tmp_path / "live" / "plots" / "metrics" / "train"
    folder.mkdir(parents=True)
    steps = np.arange(50, 1001, 50)
    d = np.exp(-steps / 300)
    for name, values in {
        "alpha_fg": d / (2 * d + (1 - d)),
        "alpha_or": d / (2 * d + (1 - d)),
        "alpha_fr": (1 - d) / (2 * d + (1 - d)),
        "curriculum": d,
    }.items():
        (folder / f"{name}.tsv").write_text("step\t" + name + "\n" + "".join(f"{s}\t{v}\n" for s, v in zip(steps, values)))
    (folder / "loss.tsv").write_text("step\tloss\n50\t3.0\n")
    series = read_live_series(tmp_path / "live")
    assert set(series) == {"fg", "fr", "or"} and series["fr"][0].tolist() == steps.tolist()
    png = plot_alpha_trajectories(tmp_path / "live", tmp_path / "alphas.png")
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"
