"""Tokenizer kinds as specs in one registry (tokenizers/spec.py): the built-in kinds, their kept
files, their own params (tokenizer.kind_params) and the old flat names, and a toy kind that is
one class plus its registration."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from genrec_core.config import Params, TokenizerParams, flatten_overlay, load_params, params_record
from genrec_core.errors import ParamError
from genrec_core.io import write_parquet
from genrec_core.paths import ArtifactPaths
from genrec_core.tokenizers.base import QuantizeResult, SemanticTokenizer
from genrec_core.tokenizers.code_stats import code_metrics
from genrec_core.tokenizers.pq import PQTokenizer
from genrec_core.tokenizers.rqkmeans import RQKMeansTokenizer
from genrec_core.tokenizers.runtime import RuntimeItemTokenizer
from genrec_core.tokenizers.spec import TOKENIZERS, TokenizerSpec, check, flat_params, register_tokenizer, resolved_kind_params, tokenizer_kinds, tokenizer_spec
from genrec_core.tokenizers.training import load_kept_tokenizers, load_tokenizer, write_one_shot

REPO = Path(__file__).resolve().parents[1]


def _vectors(n=80, d=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _embeddings(root: Path, x: np.ndarray) -> ArtifactPaths:
    paths = ArtifactPaths(root)
    ids = pl.Series(np.arange(x.shape[0]), dtype=pl.Int32)
    write_parquet(pl.DataFrame({"item_id": ids, "vector": pl.Series(x, dtype=pl.Array(pl.Float32, x.shape[1]))}), paths.embeddings)
    return paths


# --------------------------------------------------------------------------- the registry


def test_the_registry_lists_the_builtin_kinds():
    assert tokenizer_kinds() == ["pq", "rqkmeans", "rqvae"]
    for kind in tokenizer_kinds():
        assert tokenizer_spec(kind).name == kind
    assert [k for k in tokenizer_kinds() if tokenizer_spec(k).seed_runs] == ["rqvae"]


def test_an_unknown_kind_is_a_param_error_listing_the_choices(tmp_path):
    with pytest.raises(ParamError) as err:
        load_params(None, ["tokenizer.kind=rq-vae"])
    assert err.value.param == "tokenizer.kind" and "choose one of pq, rqkmeans, rqvae" in str(err.value)
    torch.save({"kind": "rq-vae"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="unknown tokenizer kind 'rq-vae'"):
        load_tokenizer(tmp_path / "x.pt")


def test_params_validation_does_not_import_torch():
    """Every command validates its params first; the specs it reads must not cost a torch import."""
    probe = (
        "import sys; from genrec_core.config import load_params; load_params(None, ['tokenizer.kind=rqkmeans', 'tokenizer.latent_dim=4']); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    )
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- kept files


TINY = {
    "rqvae": dict(levels=2, codebook_size=8, epochs=3, keep_last=2, batch_size=32, kind_params={"hidden_dims": [16], "latent_dim": 4, "kmeans_iters": 5}),
    "pq": dict(levels=2, codebook_size=8, kind_params={"kmeans_iters": 5}),
    "rqkmeans": dict(levels=2, codebook_size=8, kind_params={"kmeans_iters": 5, "normalize": "input"}),
}


@pytest.mark.parametrize("kind", sorted(TINY))
def test_each_kind_fits_through_its_spec_and_its_kept_file_round_trips(kind, tmp_path):
    x = _vectors()
    tp = TokenizerParams(kind=kind, device="cpu", seed=3, **TINY[kind])
    summary = tokenizer_spec(kind).fit(x, tp, tmp_path / "tok", tmp_path / "rep", item_ids=np.arange(80), progress=False)
    kept = load_kept_tokenizers(tmp_path / "tok")
    assert [name for name, _ in kept] == (["epoch_0002", "epoch_0003"] if kind == "rqvae" else [kind])
    name, tok = kept[-1]
    codes = tok.quantize(x).codes
    # the summary was computed from the fitted tokenizer's codes before it was written
    metrics = code_metrics(codes, 8)
    assert summary["collision_rate"] == metrics["collision_rate"] and summary["usage_share"] == {f"l{i}": metrics[f"usage_l{i}"] for i in (1, 2)}
    # state -> file -> state: the same tokenizer
    state = tok.state()
    assert state["kind"] == kind
    torch.save(state, tmp_path / "again.pt")
    again = load_tokenizer(tmp_path / "again.pt")
    assert type(again) is type(tok)
    np.testing.assert_array_equal(again.quantize(x).codes, codes)
    np.testing.assert_array_equal(tokenizer_spec(kind).from_state(state).quantize(x).codes, codes)
    if kind == "pq":  # one shot: the same as fitting directly with the stage's seed
        np.testing.assert_array_equal(codes, PQTokenizer.fit(x, 2, 8, 5, seed=3).quantize(x).codes)
    if kind == "rqkmeans":
        np.testing.assert_array_equal(codes, RQKMeansTokenizer.fit(x, 2, 8, 5, seed=3, normalize="input").quantize(x).codes)


def test_only_kinds_with_a_trainable_module_train_at_runtime(tmp_path):
    x = _vectors()
    kept = {}
    for kind in ("rqvae", "pq"):
        tokenizer_spec(kind).fit(x, TokenizerParams(kind=kind, device="cpu", **TINY[kind]), tmp_path / kind, tmp_path / f"r{kind}", progress=False)
        kept[kind] = load_kept_tokenizers(tmp_path / kind)[-1][1]
    rt = RuntimeItemTokenizer(list(kept.items()), x, "dedup_level")
    assert rt.is_trainable("rqvae") and not rt.is_trainable("pq")
    for kind, tok in kept.items():  # both start from the kept tokenizer's codes
        np.testing.assert_array_equal(rt.raw_codes(kind).numpy(), tok.quantize(x).codes)


# --------------------------------------------------------------------------- params: kind_params and the old flat names

#: params.yaml's tokenizer section as it was before kind_params (every kind's params flat).
OLD_SECTION = """tokenizer:
  kind: rqvae
  levels: 3
  codebook_size: auto
  hidden_dims: [512, 256, 128]
  latent_dim: 32
  dropout: 0.0
  beta: 0.25
  codebook_update: ste
  ema_decay: 0.99
  kmeans_init: true
  kmeans_iters: 50
  rqkmeans_normalize: none
  dead_code_reseed: true
  dead_code_threshold: 1.0
  optimizer: adamw
  lr: 0.001
  weight_decay: 0.0
  epochs: 100
  batch_size: 256
  keep_last: 5
  kept_from: epochs
  device: auto
  seed: 42
"""

#: what dataclasses.asdict gave for that section (and for params.yaml's): digests were computed over it
OLD_FLAT = {
    "kind": "rqvae",
    "levels": 3,
    "codebook_size": "auto",
    "hidden_dims": [512, 256, 128],
    "latent_dim": 32,
    "dropout": 0.0,
    "beta": 0.25,
    "codebook_update": "ste",
    "ema_decay": 0.99,
    "kmeans_init": True,
    "kmeans_iters": 50,
    "rqkmeans_normalize": "none",
    "dead_code_reseed": True,
    "dead_code_threshold": 1.0,
    "optimizer": "adamw",
    "lr": 0.001,
    "weight_decay": 0.0,
    "epochs": 100,
    "batch_size": 256,
    "keep_last": 5,
    "kept_from": "epochs",
    "device": "auto",
    "seed": 42,
}


@pytest.fixture
def old_file(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text(OLD_SECTION)
    return path


@pytest.mark.parametrize(
    "overrides", [[], ["tokenizer.kind=pq"], ["tokenizer.kind=rqkmeans"], ["tokenizer.latent_dim=16", "tokenizer.kind_params.dropout=0.5"]]
)
def test_an_old_params_file_resolves_as_the_new_one(old_file, overrides):
    old = load_params(old_file, overrides).tokenizer
    new = load_params(REPO / "params.yaml", overrides).tokenizer
    assert resolved_kind_params(old) == resolved_kind_params(new)
    assert flat_params(old) == flat_params(new)
    assert params_record(load_params(old_file, overrides))["tokenizer"] == flat_params(new)


def test_the_flat_record_is_the_old_section():
    assert flat_params(load_params(REPO / "params.yaml").tokenizer) == OLD_FLAT
    rq = flat_params(load_params(REPO / "params.yaml", ["tokenizer.kind=rqkmeans", "tokenizer.kind_params.normalize=input"]).tokenizer)
    assert rq == {**OLD_FLAT, "kind": "rqkmeans", "rqkmeans_normalize": "input"}


@pytest.mark.parametrize(
    "overrides, kind_params",
    [
        (["tokenizer.latent_dim=16"], {"latent_dim": 16}),
        (["tokenizer.kind=rqkmeans", "tokenizer.rqkmeans_normalize=input", "tokenizer.kmeans_iters=7"], {"normalize": "input", "kmeans_iters": 7}),
        (["tokenizer.kind=pq", "tokenizer.hidden_dims=[8]", "tokenizer.kmeans_iters=3"], {"kmeans_iters": 3}),  # hidden_dims: rqvae's, dropped
        (["tokenizer.latent_dim=16", "tokenizer.latent_dim=12"], {"latent_dim": 12}),  # the last override wins
    ],
)
def test_old_flat_overrides_map_into_kind_params(overrides, kind_params):
    assert load_params(None, overrides).tokenizer.kind_params == kind_params


def test_an_override_wins_over_the_file_under_either_name(old_file):
    assert resolved_kind_params(load_params(old_file, ["tokenizer.kind_params.latent_dim=8"]).tokenizer)["latent_dim"] == 8
    assert resolved_kind_params(load_params(old_file, ["tokenizer.latent_dim=8"]).tokenizer)["latent_dim"] == 8
    new_file = old_file.with_name("new.yaml")
    new_file.write_text("tokenizer:\n  kind_params: {latent_dim: 16}\n")
    assert load_params(new_file, ["tokenizer.latent_dim=8"]).tokenizer.kind_params == {"latent_dim": 8}


def test_old_and_new_names_with_different_values_are_a_param_error(tmp_path):
    both = tmp_path / "both.yaml"
    both.write_text("tokenizer:\n  latent_dim: 16\n  kind_params: {latent_dim: 8}\n")
    with pytest.raises(ParamError) as err:
        load_params(both)
    assert err.value.param == "tokenizer.latent_dim" and "tokenizer.kind_params.latent_dim" in str(err.value)
    both.write_text("tokenizer:\n  latent_dim: 16\n  kind_params: {latent_dim: 16}\n")  # the same value twice: fine
    assert load_params(both).tokenizer.kind_params == {"latent_dim": 16}
    with pytest.raises(ParamError) as err:
        load_params(None, ["tokenizer.latent_dim=16", "tokenizer.kind_params.latent_dim=8"])
    assert err.value.param == "tokenizer.latent_dim" and "tokenizer.kind_params.latent_dim" in str(err.value)


@pytest.mark.parametrize(
    "overrides, param",
    [
        (["tokenizer.kind_params.latentdim=4"], "tokenizer.kind_params.latentdim"),  # not a param of rqvae
        (["tokenizer.kind=pq", "tokenizer.kind_params.latent_dim=4"], "tokenizer.kind_params.latent_dim"),  # rqvae's, not pq's
        (["tokenizer.kind_params.latent_dim=0"], "tokenizer.kind_params.latent_dim"),
        (["tokenizer.kind_params.hidden_dims=[8,0]"], "tokenizer.kind_params.hidden_dims"),
        (["tokenizer.kind_params.dropout=yes"], "tokenizer.kind_params.dropout"),  # a type error
        (["tokenizer.latent_dim=0"], "tokenizer.latent_dim"),  # named as written
        (["tokenizer.kind=pq", "tokenizer.codebook_update=adam"], "tokenizer.codebook_update"),  # another kind's, still checked
        (["tokenizer.kind=pq", "tokenizer.kept_from=seeds"], "tokenizer.kept_from"),
        (["tokenizer.use_gpu=true"], "tokenizer.use_gpu"),
    ],
)
def test_bad_kind_params_name_themselves(overrides, param):
    with pytest.raises(ParamError) as err:
        load_params(None, overrides)
    assert err.value.param == param


def test_overlays_in_the_new_form_flatten_per_key():
    words = flatten_overlay(REPO / "configs" / "mtgrec-amazon-gpu.yaml")
    assert "tokenizer.kind_params.hidden_dims=[2048,1024,512,256]" in words and "tokenizer.kind_params.codebook_update=ema" in words
    kp = resolved_kind_params(load_params(REPO / "params.yaml", words).tokenizer)
    assert (kp["hidden_dims"], kp["latent_dim"], kp["codebook_update"]) == ([2048, 1024, 512, 256], 128, "ema")


# --------------------------------------------------------------------------- a new kind: one class and its registration


class ScaledGridTokenizer(SemanticTokenizer):
    """Code of level l: floor(x_l * scale) mod K (dimension l of the vector)."""

    def __init__(self, levels: int, codebook_size: int, scale: float):
        self.levels, self.codebook_size, self.scale = levels, codebook_size, scale

    def quantize(self, vectors: np.ndarray) -> QuantizeResult:
        codes = np.floor(vectors[:, : self.levels] * self.scale).astype(np.int64) % self.codebook_size
        last = vectors[:, self.levels - 1 : self.levels].copy()
        return QuantizeResult(codes, last, (np.arange(self.codebook_size, dtype=np.float32) / self.scale)[:, None])

    def state(self) -> dict:
        return {"kind": "toy", "levels": self.levels, "codebook_size": self.codebook_size, "scale": self.scale}


class ToySpec(TokenizerSpec):
    param_defaults = {"scale": 1.0}

    def check_values(self, p, prefix):
        check(p["scale"] > 0, f"{prefix}.scale", f"must be > 0, got {p['scale']}")

    def fit(self, vectors, tp, tokenizer_dir, reports_dir, *, item_ids=None, progress=True):
        t0 = time.perf_counter()
        tok = ScaledGridTokenizer(tp.levels, tp.codebook_size, resolved_kind_params(tp)["scale"])
        row = {"epoch": 1, **code_metrics(tok.quantize(vectors).codes, tp.codebook_size), "seconds": 0.0}
        return write_one_shot("toy", tok, row, tp, vectors.shape[0], t0, Path(tokenizer_dir), Path(reports_dir))

    def from_state(self, state, device="cpu"):
        return ScaledGridTokenizer(state["levels"], state["codebook_size"], state["scale"])


@pytest.fixture
def toy_kind():
    register_tokenizer("toy")(ToySpec)
    try:
        yield
    finally:
        TOKENIZERS.pop("toy", None)


def test_a_registered_toy_kind_is_validated_and_trained_by_the_stage(toy_kind, tmp_path):
    from stages.train_tokenizer import run

    assert "toy" in tokenizer_kinds()
    params = load_params(REPO / "params.yaml", ["tokenizer.kind=toy", "tokenizer.kind_params.scale=4", "tokenizer.levels=2", "tokenizer.codebook_size=8"])
    assert params.tokenizer.kind_params == {"scale": 4}
    with pytest.raises(ParamError, match="tokenizer.kind_params.scale"):
        load_params(None, ["tokenizer.kind=toy", "tokenizer.kind_params.scale=0"])
    with pytest.raises(ParamError, match="tokenizer.kind_params.latent_dim"):
        load_params(None, ["tokenizer.kind=toy", "tokenizer.kind_params.latent_dim=4"])
    with pytest.raises(ParamError, match="tokenizer.kept_from"):
        load_params(None, ["tokenizer.kind=toy", "tokenizer.kept_from=seeds"])

    x = _vectors()
    paths = _embeddings(tmp_path, x)
    run(params, tmp_path)
    kept = load_kept_tokenizers(paths.tokenizer_dir)
    assert [name for name, _ in kept] == ["toy"]
    expected = np.floor(x[:, :2].astype(np.float64) * 4).astype(np.int64) % 8
    np.testing.assert_array_equal(kept[0][1].quantize(x).codes, expected)
    metrics = json.loads((paths.tokenizer_reports_dir / "metrics.json").read_text())
    assert metrics["kind"] == "toy" and metrics["items"] == 80 and metrics["codebook_size"] == 8
    assert flat_params(params.tokenizer)["scale"] == 4.0  # a new kind's params count in digests under their own names
    rt = RuntimeItemTokenizer(kept, x, "dedup_level")  # hard IDs only
    assert not rt.is_trainable("toy") and rt.raw_codes("toy").numpy().tolist() == expected.tolist()


def test_an_unregistered_kind_is_refused_again(toy_kind):
    assert load_params(None, ["tokenizer.kind=toy"]).tokenizer.kind == "toy"
    TOKENIZERS.pop("toy")
    with pytest.raises(ParamError, match="tokenizer.kind"):
        load_params(None, ["tokenizer.kind=toy"])
    with pytest.raises(ValueError, match="registered twice"):
        register_tokenizer("rqvae")(ToySpec)


def test_params_built_in_code_resolve_their_kinds_defaults():
    """A Params built in code (no load_params) resolves its kind's defaults."""
    assert resolved_kind_params(Params().tokenizer)["latent_dim"] == 32
    assert resolved_kind_params(TokenizerParams(kind="pq"), "pq") == {"kmeans_iters": 50}
    with pytest.raises(ValueError, match="'rqvae' given to the 'pq'"):
        resolved_kind_params(TokenizerParams(), "pq")
