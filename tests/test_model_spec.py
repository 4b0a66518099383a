"""One ``ModelSpec`` per model (``genrec_core/recommender/model_spec.py``): the registry, the
``tiger`` -> ``t5`` alias in params and checkpoints, and that a registered model is a valid
``recommender.model`` everywhere the names are read."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from genrec_core.analysis.recommendations import method_labels
from genrec_core.config import RecommenderParams, load_params
from genrec_core.errors import InputFormatError, ParamError
from genrec_core.recommender.checkpoint import load_recommender
from genrec_core.recommender.decoder_only import DecoderOnlyRecommender
from genrec_core.recommender.fingerprint import fingerprint
from genrec_core.recommender.model import GenerativeRecommender, build_generative_model
from genrec_core.recommender.model_spec import MODEL_ALIASES, MODEL_SPECS, ModelSpec, model_spec, register_model, unregister_model
from genrec_core.recommender.vocab import SemanticIdVocab
from genrec_core.sequential.models import GRU4Rec, SASRec
from genrec_core.sequential.runner import GENERATIVE_KINDS, model_kind

NAMES = ("t5", "decoder_only", "sasrec", "gru4rec")
TINY = dict(num_layers=1, num_decoder_layers=1, d_model=16, d_ff=32, num_heads=2, d_kv=8, dropout=0.0)


class ToyModel:
    """Stands for a new model's class (never built here: validation does not import classes)."""


@pytest.fixture
def toy():
    spec = register_model(ModelSpec("toy", "generative", "Toy model", f"{__name__}:ToyModel", aliases=("toy_old",)))
    try:
        yield spec
    finally:
        unregister_model("toy")


def test_the_registry_holds_the_four_models_with_their_family_packing_and_class():
    assert tuple(MODEL_SPECS) == NAMES
    assert {n: (s.family, s.packs) for n, s in MODEL_SPECS.items()} == {
        "t5": ("generative", False),
        "decoder_only": ("generative", True),
        "sasrec": ("item_id", False),
        "gru4rec": ("item_id", False),
    }
    classes = {n: s.model_class() for n, s in MODEL_SPECS.items()}
    assert classes == {"t5": GenerativeRecommender, "decoder_only": DecoderOnlyRecommender, "sasrec": SASRec, "gru4rec": GRU4Rec}
    assert MODEL_ALIASES == {"tiger": "t5"}
    assert list(GENERATIVE_KINDS) == ["t5", "decoder_only"]
    assert method_labels("t5")["model"] == method_labels("tiger")["model"] == "TIGER (T5 over semantic IDs)"


def test_tiger_loads_as_t5_from_overrides_files_and_constructors(tmp_path):
    assert load_params(None, ["recommender.model=tiger"]).recommender.model == "t5"
    path = tmp_path / "params.yaml"
    path.write_text("recommender:\n  model: tiger\n")
    params = load_params(path)
    assert params.recommender.model == "t5" and model_kind(params) == "t5"
    assert RecommenderParams(model="tiger").model == "t5" == RecommenderParams().model
    assert dataclasses.replace(RecommenderParams(model="sasrec"), model="tiger").model == "t5"
    assert load_params(None, ["recommender.model=decoder_only"]).recommender.model == "decoder_only"  # no other name moves


def test_a_tiger_checkpoint_loads_as_the_t5(tmp_path):
    codes = np.stack([np.arange(12) // 4, np.arange(12) % 4], axis=1)
    vocab = SemanticIdVocab.from_codes([codes])
    tokens = torch.from_numpy(vocab.codes_to_tokens(codes))
    torch.manual_seed(0)
    model = build_generative_model(RecommenderParams(model="t5", **TINY), vocab, tokens)
    stored = {**dataclasses.asdict(RecommenderParams(**TINY)), "model": "tiger"}  # as a checkpoint written before the rename
    torch.save(
        {"model": model.state_dict(), "params": stored, "vocab": vocab.to_dict(), "tokenizer": "epoch_0001", "item_tokens": tokens}, tmp_path / "best.pt"
    )
    loaded = load_recommender(tmp_path / "best.pt")
    assert loaded.kind == "t5" and loaded.params.model == "t5" and isinstance(loaded.model, GenerativeRecommender)
    a, b = model.state_dict(), loaded.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_an_unknown_model_kind_in_a_checkpoint_names_the_file(tmp_path):
    torch.save({"model": {}, "model_kind": "bert4rec", "config": {}}, tmp_path / "best.pt")
    with pytest.raises(InputFormatError, match="bert4rec") as err:
        load_recommender(tmp_path / "best.pt")
    assert err.value.path == str(tmp_path / "best.pt")


def test_the_t5_fingerprints_as_tiger_did_and_only_packing_models_hash_pack_examples():
    """t5 and tiger: the model left out of the fingerprint (as for tiger before the rename), so a
    last.pt of either resumes; pack_examples counts for decoder_only only."""

    def info(*overrides):
        return fingerprint(load_params(None, ["recommender.pack_examples=4", "recommender.encoder_input=items", *overrides]), "tok", {})

    (t5, t5_info), (tiger, _), (dec, dec_info), (sas, sas_info) = (info(f"recommender.model={m}") for m in ("t5", "tiger", "decoder_only", "sasrec"))
    assert t5 == tiger and "recommender.model" not in t5_info and "recommender.pack_examples" not in t5_info
    assert dec_info["recommender.model"] == "decoder_only" and dec_info["recommender.pack_examples"] == 4
    assert sas_info["recommender.model"] == "sasrec" and "recommender.pack_examples" not in sas_info
    assert len({t5, dec, sas}) == 3


def test_an_unknown_model_is_a_param_error_listing_the_choices():
    with pytest.raises(ParamError) as err:
        load_params(None, ["recommender.model=bert4rec"])
    assert err.value.param == "recommender.model"
    assert all(name in str(err.value) for name in (*NAMES, "bert4rec", "tiger"))


def test_model_checks_run_at_validation():
    with pytest.raises(ParamError) as err:
        load_params(None, ["recommender.model=decoder_only", "recommender.d_kv=7"])
    assert err.value.param == "recommender.d_kv"
    with pytest.raises(ParamError) as err:
        load_params(None, ["recommender.model=sasrec", "recommender.d_model=30", "recommender.num_heads=4"])
    assert err.value.param == "recommender.num_heads"
    load_params(None, ["recommender.model=t5", "recommender.d_kv=7", "recommender.d_model=30", "recommender.num_heads=4"])  # the T5 has neither constraint


def test_a_registered_model_is_a_valid_recommender_model_until_unregistered(toy):
    params = load_params(None, ["recommender.model=toy_old"])
    assert params.recommender.model == "toy" and model_kind(params) == "toy"
    assert "toy" in GENERATIVE_KINDS and model_spec("toy").model_class() is ToyModel
    assert method_labels("toy")["model"] == "Toy model"
    with pytest.raises(ValueError, match="registered twice"):
        register_model(ModelSpec("t5", "generative", "again", f"{__name__}:ToyModel"))
    with pytest.raises(ValueError, match="registered twice"):
        register_model(ModelSpec("other", "generative", "again", f"{__name__}:ToyModel", aliases=("tiger",)))
    unregister_model("toy")
    try:
        with pytest.raises(ParamError) as err:
            load_params(None, ["recommender.model=toy"])
        assert err.value.param == "recommender.model" and "toy_old" not in MODEL_ALIASES
    finally:
        register_model(toy)  # for the fixture's clean-up


def test_a_family_must_be_known():
    with pytest.raises(ValueError, match="family"):
        ModelSpec("x", "bag_of_words", "X", f"{__name__}:ToyModel")
