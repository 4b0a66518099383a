"""Typed params: every bad key, type or value fails with its dotted name; overrides and overlays."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from genrec_core.config import flatten_overlay, load_params, parse_override
from genrec_core.errors import InputFormatError, MissingInputError, ParamError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_and_overrides_read_as_yaml():
    p = load_params(
        None,
        [
            "data.max_items=50",
            "tokenizer.kind_params.hidden_dims=[64,32]",
            "recommender.loss=curriculum",
            "recommender.loss_params={half_life: 0.3}",
            "data.raw_dir=null",
        ],
    )
    assert p.data.max_items == 50 and p.tokenizer.kind_params == {"hidden_dims": [64, 32]}
    assert p.recommender.loss_params == {"half_life": 0.3} and p.data.raw_dir is None
    assert isinstance(load_params(None, ["tokenizer.lr=1"]).tokenizer.lr, float)  # int accepted for float
    assert parse_override("a.b=") == ("a.b", None)


@pytest.mark.parametrize(
    "override, param",
    [
        ("data.maxitems=5", "data.maxitems"),  # unknown key
        ("recomender.lr=0.5", "recomender"),  # unknown (misspelt) section: never ignored
        ("serve.port=80", "serve"),
        ("recommender.select_metric=ndcg@20", "recommender.select_metric"),  # validation computes K = 1, 5, 10
        ("recommender.select_metric=mrr", "recommender.select_metric"),
        ("data.max_items=five", "data.max_items"),  # wrong type
        ("data.max_items=0", "data.max_items"),  # impossible value
        ("data.min_interactions=2", "data.min_interactions"),  # leave-one-out needs 3
        ("data.dataset=netflix", "data.dataset"),
        ("data.dataset=yelp", "data.raw_dir"),  # only ml-100k downloads itself
        ("tokenizer.keep_last=500", "tokenizer.keep_last"),
        ("embed.device=gpu", "embed.device"),
        ("recommender.model=bert4rec", "recommender.model"),
        ("evaluate.ks=[1,50]", "evaluate.ks"),  # K above the beam size
        ("tokenizer.use_gpu=true", "tokenizer.use_gpu"),
        ("seed=-1", "seed"),
        ("evaluate.trie=1", "evaluate.trie"),  # a bool
        ("finetune.slots=[0,0]", "finetune.slots"),  # MTGRec fine-tuning slots: distinct
        ("finetune.slots=[]", "finetune.slots"),
        ("tokenizer.seed=-1", "tokenizer.seed"),
    ],
)
def test_bad_params_name_themselves(override, param):
    with pytest.raises(ParamError) as err:
        load_params(None, [override])
    assert err.value.param == param and str(err.value).startswith(f"param {param}:")


def test_params_file_errors(tmp_path):
    with pytest.raises(MissingInputError):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("data:\n  max_items: [1,\n")
    with pytest.raises(InputFormatError) as err:
        load_params(bad)
    assert err.value.path == str(bad) and err.value.line is not None


def test_overlay_flattens_to_single_shell_words(tmp_path):
    overlay = tmp_path / "o.yaml"
    overlay.write_text(
        "data:\n  dataset: yelp\n  raw_dir: /d/yelp\ntokenizer:\n  hidden_dims: [512, 256]\nrecommender:\n  loss: curriculum\n  loss_params: {half_life: 0.2}\n"
    )
    items = flatten_overlay(overlay)
    assert items == [
        "data.dataset=yelp",
        "data.raw_dir=/d/yelp",
        "tokenizer.hidden_dims=[512,256]",
        "recommender.loss=curriculum",
        'recommender.loss_params={"half_life":0.2}',
    ]
    # each word round-trips through the override parser to the overlay's values
    p = load_params(None, items)
    assert p.tokenizer.kind_params == {"hidden_dims": [512, 256]} and p.recommender.loss_params == {"half_life": 0.2}
    overlay.write_text("embed:\n  template: '{title} and {genres}'\n")
    with pytest.raises(InputFormatError, match="contains a space"):
        flatten_overlay(overlay)
    overlay.write_text("data:\n  max_items: 0\n")
    with pytest.raises(ParamError, match="data.max_items"):
        flatten_overlay(overlay)


def test_absolute_path_overrides_only_touch_relative_dataset_paths(tmp_path, monkeypatch):
    from genrec_core.config import absolute_path_overrides

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "minilm").mkdir(parents=True)
    given = [
        "data.raw_dir=rel/yelp",
        "data.cache_dir=null",
        "++data.cache_dir=/abs/cache",
        "recommender.lr=0.1",
        "embed.model=sentence-transformers/all-MiniLM-L6-v2",
        "embed.model=models/minilm",
    ]
    assert absolute_path_overrides(given) == [
        f"data.raw_dir={tmp_path / 'rel' / 'yelp'}",  # need not exist yet
        "data.cache_dir=null",
        "++data.cache_dir=/abs/cache",
        "recommender.lr=0.1",
        "embed.model=sentence-transformers/all-MiniLM-L6-v2",  # a hub id: no such folder here
        f"embed.model={tmp_path / 'models' / 'minilm'}",  # an existing local folder
    ]


def test_a_misspelt_section_in_the_params_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 1\nrecomender:\n  lr: 0.5\n")
    with pytest.raises(ParamError) as err:
        load_params(path)
    assert err.value.param == "recomender" and "did you mean recommender?" in str(err.value)
    assert "\n" not in str(err.value)


def test_the_cli_exits_2_with_one_line_naming_an_unknown_section(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("seed: 1\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "genrec_core.cli", "preprocess", "-S", "recomender.lr=0.5", "--params", str(params), "--root", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: param recomender: unknown params section"), proc.stderr
    assert not list(tmp_path.glob("data")) and not list(tmp_path.glob("reports"))  # nothing ran


def test_a_set_value_that_is_not_yaml_is_one_line_naming_the_param(tmp_path):
    for value in ("[1,", "{a", "a: b: c", '"x'):
        with pytest.raises(ParamError) as err:
            parse_override(f"data.max_items={value}")
        assert err.value.param == "data.max_items" and "not valid YAML" in str(err.value) and "\n" not in str(err.value)
    params = tmp_path / "params.yaml"
    params.write_text("seed: 1\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "genrec_core.cli", "preprocess", "-S", "data.max_items=[1,", "--params", str(params), "--root", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: param data.max_items: value '[1,' is not valid YAML"), proc.stderr


def test_select_metric_default_and_choices():
    from genrec_core.config import SELECT_METRICS

    assert load_params(None).recommender.select_metric == "ndcg@10"
    assert load_params(None, ["recommender.select_metric=hit@5"]).recommender.select_metric == "hit@5"
    assert set(SELECT_METRICS) == {f"{m}@{k}" for m in ("hit", "ndcg") for k in (1, 5, 10)}


def test_the_project_params_and_overlays_have_only_known_sections():
    load_params(REPO / "params.yaml")
    for overlay in sorted((REPO / "configs").glob("*.yaml")):
        flatten_overlay(overlay)
