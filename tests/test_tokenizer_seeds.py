"""tokenizer.kept_from: seeds (MTGRec "w/o relevant tokenizers"): n seeded RQ-VAE runs as the kept
tokenizers, each equal to a single run with its seed; epochs mode unchanged; the param validated."""

import json

import numpy as np
import polars as pl
import pytest
import torch
from helpers import tokenizer_params

from genrec_core.config import IdsParams, Params, TokenizerParams, load_params
from genrec_core.errors import ParamError
from genrec_core.io import write_parquet
from genrec_core.paths import ArtifactPaths
from genrec_core.tokenizers.training import load_kept_tokenizers, train_rqvae


def _small(**kw):
    base = dict(levels=2, codebook_size=8, hidden_dims=[16], latent_dim=4, lr=1e-3, epochs=2, keep_last=3, kmeans_iters=5, batch_size=32, device="cpu", seed=7)
    base.update(kw)
    return tokenizer_params(**base)


def _root(tmp_path, name, n=60, d=8):
    x = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
    paths = ArtifactPaths(tmp_path / name)
    write_parquet(pl.DataFrame({"item_id": pl.Series(np.arange(n), dtype=pl.Int32), "vector": pl.Series(x, dtype=pl.Array(pl.Float32, d))}), paths.embeddings)
    return paths, x


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same(a, b, where="state"):
    """Nested state dicts equal: tensors bit-identical, every other value equal."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def test_seeds_are_independent_runs_each_equal_to_a_single_run(tmp_path):
    from stages.train_tokenizer import run

    paths, x = _root(tmp_path, "seeds")
    tp = _small(kept_from="seeds")
    run(Params(tokenizer=tp), paths.root)
    kept = load_kept_tokenizers(paths.tokenizer_dir)
    assert [name for name, _ in kept] == ["seed_0007", "seed_0008", "seed_0009"]  # seed, seed + 1, ...
    books = [tok.quantizer.codebooks.detach().numpy() for _, tok in kept]
    assert not np.array_equal(books[0], books[1]) and not np.array_equal(books[1], books[2])
    for seed in (7, 8, 9):
        single = TokenizerParams(**{**tp.__dict__, "keep_last": 1, "kept_from": "epochs"})
        train_rqvae(x, single, seed, tmp_path / f"single{seed}", tmp_path / f"rsingle{seed}", item_ids=np.arange(60), progress=False)
        ref = _state(tmp_path / f"single{seed}" / "kept" / "epoch_0002.pt")
        got = _state(paths.tokenizer_dir / "kept" / f"seed_{seed:04d}.pt")
        _assert_same(got, ref)
    assert not (paths.tokenizer_dir / "last.pt").exists()
    metrics = json.loads((paths.tokenizer_reports_dir / "metrics.json").read_text())
    assert metrics["kept_from"] == "seeds" and metrics["seeds"] == [7, 8, 9]
    hist = pl.read_csv(paths.tokenizer_reports_dir / "history.csv")
    assert hist["seed"].to_list() == [7, 7, 8, 8, 9, 9] and hist["epoch"].to_list() == [1, 2] * 3

    # a rerun resumes every finished run (no retraining: same files), emit-ids reads the tables
    before = {f.name: f.read_bytes() for f in (paths.tokenizer_dir / "kept").glob("*.pt")}
    run(Params(tokenizer=tp), paths.root)
    assert {f.name: f.read_bytes() for f in (paths.tokenizer_dir / "kept").glob("*.pt")} == before
    from stages.emit_ids import run as emit

    emit(Params(tokenizer=tp, ids=IdsParams(collision="dedup_level")), paths.root)
    from genrec_core.tokenizers.id_table import read_id_table

    assert list(read_id_table(paths.id_table)) == ["seed_0007", "seed_0008", "seed_0009"]


def test_epochs_mode_unchanged_and_switching_back_clears_seed_runs(tmp_path):
    from stages.train_tokenizer import run

    paths, x = _root(tmp_path, "epochs")
    run(Params(tokenizer=_small(kept_from="seeds", keep_last=2)), paths.root)
    run(Params(tokenizer=_small(keep_last=2)), paths.root)  # default kept_from: epochs
    names = sorted(f.name for f in (paths.tokenizer_dir / "kept").glob("*.pt"))
    assert names == ["epoch_0001.pt", "epoch_0002.pt"]
    assert not (paths.tokenizer_dir / "seeds").exists()
    train_rqvae(x, _small(keep_last=2), 7, tmp_path / "direct", tmp_path / "rdirect", item_ids=np.arange(60), progress=False)
    for name in names:
        _assert_same(_state(paths.tokenizer_dir / "kept" / name), _state(tmp_path / "direct" / "kept" / name))


def test_kept_from_is_validated(tmp_path):
    with pytest.raises(ParamError, match="tokenizer.kept_from"):
        load_params(None, ["tokenizer.kept_from=runs"])
    with pytest.raises(ParamError, match="tokenizer.kept_from"):
        load_params(None, ["tokenizer.kept_from=seeds", "tokenizer.kind=pq"])
    p = load_params(None, ["tokenizer.kept_from=seeds", "tokenizer.keep_last=8", "tokenizer.epochs=3"])  # n runs, not n epochs
    assert p.tokenizer.kept_from == "seeds" and p.tokenizer.keep_last == 8
