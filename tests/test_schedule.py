"""recommender.epochs: auto (genrec_core/recommender/schedule.py): the schedule sized to the data."""

import dataclasses

import polars as pl
import pytest

from genrec_core.config import Params, load_params
from genrec_core.errors import MissingInputError, ParamError
from genrec_core.paths import ArtifactPaths
from genrec_core.recommender.schedule import auto_epochs, resolve_dropout, resolve_epochs, resolve_epochs_from_artifacts


@pytest.mark.parametrize(
    "items, examples, chosen, uncapped",
    [
        (1349, 96458, 7, 6.993),  # ml-100k's five-core split: keeps its measured 7-epoch schedule
        (12101, 131413, 20, 46.042),  # Amazon Beauty: capped at the CPU budget
        (20033, 225061, 20, 44.506),  # Yelp (paper 001's copy)
        (1000, 50000, 10, 10.0),  # in between: exactly 500 visits per item
        (1001, 50000, 11, 10.01),  # a fraction of an epoch rounds up
        (10, 100000, 7, 0.05),  # dense data: the floor
    ],
)
def test_auto_epochs_by_hand(items, examples, chosen, uncapped):
    epochs, wanted = auto_epochs(items, examples)
    assert epochs == chosen
    assert wanted == pytest.approx(uncapped, abs=5e-4)


def test_auto_epochs_needs_data():
    with pytest.raises(ValueError):
        auto_epochs(0, 10)


def test_a_number_is_kept_and_auto_is_replaced():
    params = load_params(None, ["recommender.epochs=12"])
    same, record = resolve_epochs(params, 12101, 131413)
    assert same is params and record is None
    auto = load_params(None, ["recommender.epochs=auto"])
    resolved, record = resolve_epochs(auto, 12101, 131413)
    assert resolved.recommender.epochs == 20 and record["epochs"] == 20 and record["epochs_uncapped"] == pytest.approx(46.04)
    # nothing else changes, and the caller's params are left as they were
    assert dataclasses.replace(resolved.recommender, epochs="auto") == auto.recommender
    assert auto.recommender.epochs == "auto"


def _write_counts(root, items: int, examples: int) -> ArtifactPaths:
    paths = ArtifactPaths(root)
    paths.processed_dir.mkdir(parents=True)
    pl.DataFrame({"item_id": list(range(items))}).write_parquet(paths.items)
    pl.DataFrame({"user_id": [0] * examples}).write_parquet(paths.examples("train"))
    return paths


def test_counts_come_from_the_processed_data(tmp_path):
    paths = _write_counts(tmp_path, items=30, examples=1500)  # 500 x 30 / 1500 = 10 epochs
    params, record = resolve_epochs_from_artifacts(load_params(None, ["recommender.epochs=auto"]), paths)
    assert params.recommender.epochs == 10 and record["items"] == 30 and record["train_examples"] == 1500


def test_auto_without_processed_data_names_the_file(tmp_path):
    with pytest.raises(MissingInputError, match="items.parquet"):
        resolve_epochs_from_artifacts(load_params(None, ["recommender.epochs=auto"]), ArtifactPaths(tmp_path))
    # a number needs no data
    params = load_params(None, ["recommender.epochs=3"])
    assert resolve_epochs_from_artifacts(params, ArtifactPaths(tmp_path)) == (params, None)


@pytest.mark.parametrize("value", ["0", "-2", "soon", "true", "2.5"])
def test_bad_epochs_name_the_param(value):
    with pytest.raises(ParamError, match="recommender.epochs"):
        load_params(None, [f"recommender.epochs={value}"])


def test_params_yaml_default_is_auto():
    assert load_params("params.yaml").recommender.epochs == "auto"
    assert Params().recommender.epochs == 200  # the dataclass default (the SPEC's GPU schedule) stays a number


def test_progress_lines_without_a_terminal(caplog, monkeypatch):
    """Training logged to a file gets a progress line (step, examples/s, time left) instead of a bar."""
    import logging

    from genrec_core.recommender import trainer

    monkeypatch.setattr(trainer, "PROGRESS_EVERY_S", 0.0)
    lines = trainer.ProgressLines(epoch=2, epochs=20, batches=10, done=4)  # resumed after 4 batches
    with caplog.at_level(logging.INFO, logger=trainer.log.name):
        assert lines.due()
        lines.step(150, 3.25)
        lines.step(100, None)  # not due: no line
    assert len(caplog.records) == 1
    text = caplog.records[0].getMessage()
    assert text.startswith("epoch 2/20: step 5/10,") and "loss 3.2500" in text and "examples/s" in text and "s left in the epoch" in text
    assert lines.done == 6 and lines.examples == 250


@pytest.mark.parametrize("epochs, expected", [(1, 0.0), (7, 0.0), (8, 0.1), (20, 0.1)])
def test_dropout_auto_follows_the_schedule_length(epochs, expected):
    """0.1 (TIGER's) on a schedule longer than the 7-epoch short one, none on it or shorter."""
    rp = load_params(None, ["recommender.dropout=auto", f"recommender.epochs={epochs}"]).recommender
    resolved, line = resolve_dropout(rp)
    assert resolved.dropout == expected and f"{epochs}-epoch" in line
    assert dataclasses.replace(resolved, dropout="auto") == rp  # nothing else changes
    # a number is kept as given, whatever the schedule
    given = dataclasses.replace(rp, dropout=0.3)
    assert resolve_dropout(given) == (given, None)


def test_dropout_auto_needs_the_epochs_resolved_first():
    rp = load_params(None, ["recommender.dropout=auto", "recommender.epochs=auto"]).recommender
    with pytest.raises(ValueError, match="recommender.epochs"):
        resolve_dropout(rp)
    assert resolve_dropout(rp, epochs=20)[0].dropout == 0.1  # the stage's resolved schedule


@pytest.mark.parametrize("value", ["1.0", "-0.1", "sometimes", "true"])
def test_bad_dropout_names_the_param(value):
    with pytest.raises(ParamError, match="recommender.dropout"):
        load_params(None, [f"recommender.dropout={value}"])


def test_a_model_is_never_built_with_dropout_auto():
    from genrec_core.recommender.model import build_generative_model
    from genrec_core.recommender.vocab import SemanticIdVocab
    from genrec_core.sequential.models import build_model

    rp = load_params(None, ["recommender.dropout=auto", "recommender.model=decoder_only", "recommender.item_embedding=false"]).recommender
    with pytest.raises(ValueError, match="dropout auto"):
        build_generative_model(rp, SemanticIdVocab([4, 4]))
    with pytest.raises(ValueError, match="dropout auto"):
        build_model("sasrec", 10, 5, rp)


def test_params_yaml_dropout_is_auto_and_ml100k_keeps_none():
    rp = load_params("params.yaml").recommender
    assert rp.dropout == "auto"
    assert resolve_dropout(rp, epochs=auto_epochs(1349, 96458)[0])[0].dropout == 0.0  # ml-100k: 7 epochs, as measured
    assert resolve_dropout(rp, epochs=auto_epochs(12101, 131413)[0])[0].dropout == 0.1  # Beauty: 20 epochs


def test_a_finetune_slot_keeps_the_pre_training_dropout():
    """MTGRec's slots fine-tune for finetune_epochs (3 here): their recipe keeps the 0.1 that the
    pre-training's 20-epoch schedule resolved, not the 0 a 3-epoch schedule alone would get."""
    from genrec_core.config import RecommenderParams
    from genrec_core.training import slot_finetune_recipe

    rp = RecommenderParams(model="decoder_only", encoder_input="items", dropout="auto", epochs=20, method="mtgrec", method_params={"finetune_epochs": 3})
    recipe = slot_finetune_recipe(rp)
    assert recipe.epochs == 3 and recipe.dropout == 0.1
    assert resolve_dropout(recipe) == (recipe, None)
