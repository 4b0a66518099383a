"""Every ``genrec`` command checks every param at start (``params_validation.validate_everything``), before
its stage runs: the registries' names (recommender.method, recommender.loss and their params) and
the constraints between params, so a bad value fails in the first command, not in the stage that
reads it (issue 25: ``-S recommender.method=nosuchmethod`` used to pass preprocess)."""

from __future__ import annotations

import importlib

import pytest
from typer.testing import CliRunner

from genrec_core.cli import app

#: command -> the stage module it runs (genrec_core/cli.py)
COMMANDS = {
    "preprocess": "preprocess",
    "embed": "embed",
    "train-tokenizer": "train_tokenizer",
    "emit-ids": "emit_ids",
    "analyse-ids": "analyse_ids",
    "token-weights": "token_weights",
    "train": "train",
    "finetune": "finetune",
    "select-tokenizer": "select_tokenizer",
    "evaluate": "evaluate",
    "analyse": "analyse",
}


@pytest.fixture
def stage_calls(monkeypatch) -> list[str]:
    """Every stage's ``run`` replaced by a recorder: a command that passes validation records its
    stage and returns; one that fails never gets there."""
    calls: list[str] = []
    for module in COMMANDS.values():
        mod = importlib.import_module(f"stages.{module}")
        monkeypatch.setattr(mod, "run", lambda params, root, _m=module, **_: calls.append(_m))
    return calls


def invoke(tmp_path, command: str, *overrides: str):
    params = tmp_path / "params.yaml"
    params.write_text("recommender:\n  epochs: 1\n", encoding="utf-8")  # the rest: the dataclass defaults
    args = [command, "--params", str(params), "--root", str(tmp_path)]
    for ov in overrides:
        args += ["-S", ov]
    return CliRunner().invoke(app, args)


def test_preprocess_accepts_good_params(tmp_path, stage_calls):
    """The control: valid params (a registered method and loss with their own params, ks within
    the beam) reach the stage."""
    result = invoke(
        tmp_path,
        "preprocess",
        "recommender.method=mtgrec",
        "recommender.method_params={tau: 2.0}",
        "recommender.loss=pos",
        "evaluate.beam_size=10",
        "evaluate.ks=[1,5,10]",
    )
    assert result.exit_code == 0, result.output
    assert stage_calls == ["preprocess"]


@pytest.mark.parametrize(
    ("overrides", "param", "words"),
    [
        (["recommender.method=nosuchmethod"], "recommender.method", "unknown method 'nosuchmethod'"),
        (["recommender.method=mtgrec", "recommender.method_params={nosuchkey: 1}"], "recommender.method_params.nosuchkey", "unknown param"),
        (["recommender.loss=nosuchloss"], "recommender.loss", "unknown loss 'nosuchloss'"),
        (["recommender.loss=pos", "recommender.loss_params={nosuchkey: 1}"], "recommender.loss_params.nosuchkey", "unknown param"),
        (["evaluate.beam_size=10"], "evaluate.ks", "cannot exceed evaluate.beam_size (10)"),  # default ks go up to 20
        (["recommender.model=sasrec", "recommender.loss=pos"], "recommender.loss", "trains with ce or bce"),
        (["recommender.model=sasrec", "recommender.num_heads=3"], "recommender.num_heads", "must divide recommender.d_model"),
        (
            ["recommender.model=decoder_only", "recommender.num_heads=6", "recommender.d_kv=64"],
            "recommender.num_heads",
            "must divide recommender.d_model (128)",
        ),
        (["recommender.model=decoder_only", "recommender.d_kv=33"], "recommender.d_kv", "must be even"),
        (["ids.source=index_json"], "ids.source", "data.dataset is 'ml-100k'"),
    ],
)
def test_preprocess_rejects_bad_params_at_start(tmp_path, stage_calls, overrides, param, words):
    result = invoke(tmp_path, "preprocess", *overrides)
    assert result.exit_code == 2, result.output
    assert f"error: param {param}:" in result.output and words in result.output
    assert stage_calls == []  # the stage never ran


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_checks_the_method_at_start(tmp_path, stage_calls, command):
    result = invoke(tmp_path, command, "recommender.method=nosuchmethod")
    assert result.exit_code == 2, result.output
    assert "recommender.method" in result.output and "nosuchmethod" in result.output
    assert stage_calls == []
    assert invoke(tmp_path, command).exit_code == 0 and stage_calls == [COMMANDS[command]]  # the same command with good params runs


def test_sequential_models_accept_their_losses(tmp_path, stage_calls):
    """SASRec / GRU4Rec train with ce or bce (not in the generative loss registry): both pass."""
    for loss in ("ce", "bce"):
        assert invoke(tmp_path, "preprocess", "recommender.model=gru4rec", f"recommender.loss={loss}").exit_code == 0
    assert stage_calls == ["preprocess", "preprocess"]


def test_overrides_command_checks_the_method(tmp_path):
    """``genrec overrides`` (an overlay printed as -S words) validates through the same function."""
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("recommender:\n  method: nosuchmethod\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["overrides", str(overlay)])
    assert result.exit_code == 2 and "unknown method 'nosuchmethod'" in result.output
