"""The worked examples of docs/extending.md, run as written: each fenced ``python`` block that
starts with ``# example: NAME`` is executed, registered, and driven through the ``genrec``
commands on a tiny dataset. A change to a base class or registry that breaks an example fails
here, so the page cannot drift from the library."""

from __future__ import annotations

import json
import random
import re
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from helpers import manual_nll
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
EXTENDING = ROOT / "docs" / "extending.md"

USERS, ITEMS, CLICKS = 40, 24, 9


def doc_example(name: str) -> str:
    """The code of the fenced python block of docs/extending.md that starts with ``# example: name``."""
    blocks = re.findall(r"^```python\n(# example: ([\w-]+)\n.*?)^```", EXTENDING.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)
    found = [code for code, marker in blocks if marker == name]
    assert len(found) == 1, f"docs/extending.md must have exactly one block starting '# example: {name}'"
    return found[0]


def run_example(name: str) -> dict:
    """Execute the example as its own module (not under ``genrec_core.``, so the params reference
    does not list what it registers), importable by its name (``docs_example_<name>``: a spec may
    name its class as "module:Class"); returns its namespace."""
    module = types.ModuleType(f"docs_example_{name.replace('-', '_')}")
    sys.modules[module.__name__] = module
    exec(compile(doc_example(name), f"docs/extending.md#{name}", "exec"), module.__dict__)
    return module.__dict__


def genrec(root: Path, *args: str) -> None:
    """``genrec ARGS --root root --params root/params.yaml`` in this process (so what an example
    registered is visible), as the command line runs it."""
    from genrec_core.cli import app

    command, *rest = args
    result = CliRunner().invoke(app, [command, "--params", str(root / "params.yaml"), "--root", str(root), *rest])
    assert result.exit_code == 0, f"genrec {' '.join(args)} failed:\n{result.output}\n{result.exception!r}"


def user_clicks(user: int) -> list[str]:
    """The items user ``user`` clicked, in time order (distinct: 7 is coprime to 24)."""
    return [f"i{(user * 5 + t * 7) % ITEMS}" for t in range(CLICKS)]


def write_clicks_folder(folder: Path) -> None:
    """clicks.tsv in shuffled line order (the time order must come from the timestamps) and titles.tsv."""
    lines = [f"u{u}\t{item}\t{1_000_000 + u * 100 + t}" for u in range(USERS) for t, item in enumerate(user_clicks(u))]
    random.Random(0).shuffle(lines)
    folder.mkdir(parents=True)
    (folder / "clicks.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "titles.tsv").write_text("".join(f"i{i}\tFilm number {i}\n" for i in range(ITEMS)), encoding="utf-8")


#: Tiny sizes for every stage after preprocess (keys every tokenizer and model kind understands).
TINY = [
    "embed.source=collaborative",  # the example has titles; collaborative vectors keep the test fast
    "embed.collaborative_dim=8",
    "tokenizer.kind=rqkmeans",
    "tokenizer.levels=2",
    "tokenizer.codebook_size=8",
    "recommender.num_layers=1",
    "recommender.num_decoder_layers=1",
    "recommender.d_model=16",
    "recommender.d_ff=32",
    "recommender.num_heads=2",
    "recommender.d_kv=8",
    "recommender.epochs=2",
    "recommender.batch_size=64",
    "recommender.warmup_steps=1",
    "recommender.eval_beam_size=10",
    "recommender.device=cpu",
    "recommender.threads=1",
    "evaluate.beam_size=10",
    "evaluate.ks=[1,5,10]",
]


@pytest.fixture(scope="module")
def examples():
    """Run the examples once (a registry refuses a name given twice) and take them out again
    afterwards, with the registration lines the page names done by hand."""
    from genrec_core import config
    from genrec_core.data.sources.base import SOURCES
    from genrec_core.methods import METHODS
    from genrec_core.recommender.losses import LOSSES
    from genrec_core.recommender.model_spec import ModelSpec, register_model, unregister_model
    from genrec_core.tokenizers.spec import TOKENIZERS

    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        source = run_example("data-source")
        mp.setattr(config, "DATASETS", (*config.DATASETS, "clicks_tsv"))  # the DATASETS line of the page
        loss = run_example("loss")
        model = run_example("model")
        register_model(ModelSpec("mean_pool", "item_id", "Mean of item embeddings", "docs_example_model:MeanPool"))  # the page's registration line
        method = run_example("method")  # registered by its decorator
        tokenizer = run_example("tokenizer")  # likewise
        yield {"source": source, "loss": loss, "model": model, "method": method, "tokenizer": tokenizer}
        SOURCES.pop("clicks_tsv", None)
        LOSSES.pop("first_token", None)
        unregister_model("mean_pool")
        METHODS.pop("grad_noise", None)
        TOKENIZERS.pop("lsh", None)
        for name in ("model", "method", "tokenizer"):
            sys.modules.pop(f"docs_example_{name}", None)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clicks_project(tmp_path_factory, examples) -> Path:
    """A project whose params.yaml is the repository's with the toy source and TINY sizes,
    preprocessed by ``genrec preprocess``."""
    import yaml

    from genrec_core.config import _set_dotted, parse_override

    tmp = tmp_path_factory.mktemp("extending")
    write_clicks_folder(tmp / "raw")
    root = tmp / "project"
    root.mkdir()
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    for text in [*TINY, "data.dataset=clicks_tsv", f"data.raw_dir={tmp / 'raw'}", f"data.cache_dir={tmp / 'cache'}"]:
        _set_dotted(params, *parse_override(text))
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    genrec(root, "preprocess")
    return root


def test_the_data_source_example_reads_its_format(clicks_project):
    root = clicks_project
    stats = json.loads((root / "reports" / "data_stats.json").read_text())
    assert (stats["users"], stats["items"], stats["interactions"]) == (USERS, ITEMS, USERS * CLICKS)
    items = pl.read_parquet(root / "data" / "processed" / "items.parquet")
    source_id = dict(zip(items["item_id"].to_list(), items["source_item_id"].to_list()))
    assert dict(zip(items["source_item_id"], items["title"]))["i17"] == "Film number 17"
    assert json.loads((root / "data" / "processed" / "dataset.json").read_text())["text_fields"] == ["title"]
    sequences = pl.read_parquet(root / "data" / "processed" / "sequences.parquet")
    for user, seq in zip(sequences["source_user_id"], sequences["items"]):
        assert [source_id[i] for i in seq] == user_clicks(int(user[1:]))  # time order, not line order


def test_the_data_source_example_names_a_bad_line(tmp_path, examples):
    from genrec_core.config import load_params
    from genrec_core.errors import InputFormatError

    write_clicks_folder(tmp_path / "raw")
    clicks = tmp_path / "raw" / "clicks.tsv"
    lines = clicks.read_text(encoding="utf-8").splitlines()
    lines[6] = "u1\ti2\tyesterday"
    clicks.write_text("\n".join(lines) + "\n", encoding="utf-8")
    params = load_params(None, ["data.dataset=clicks_tsv", f"data.raw_dir={tmp_path / 'raw'}"])
    with pytest.raises(InputFormatError, match="line 7.*yesterday|yesterday.*line 7|7.*yesterday"):
        examples["source"]["ClicksTsvSource"](params.data).load()


def _vocab_and_tokens():
    from genrec_core.recommender.vocab import SemanticIdVocab

    codes = np.stack([np.arange(8) // 4, np.arange(8) % 4], axis=1)  # 8 items, L = 2
    vocab = SemanticIdVocab.from_codes([codes])
    return vocab, torch.from_numpy(vocab.codes_to_tokens(codes))


def test_the_loss_example_weights_the_first_token_by_boost(examples):
    from genrec_core.recommender.losses import LossContext, build_loss

    vocab, tokens = _vocab_and_tokens()
    loss = build_loss("first_token", {"boost": 3.0}, LossContext(vocab, tokens))
    torch.manual_seed(0)
    labels = torch.cat([tokens[[1, 6, 3]], torch.ones(3, 1, dtype=tokens.dtype)], dim=1)  # L = 2 codes, then eos (id 1)
    logits = torch.randn(3, 3, vocab.size)
    nll = manual_nll(logits, labels)  # [B, 3]
    # weights [3, 1] scaled to sum L = 2: [1.5, 0.5]; eos weight 1; divided by L + 1 = 3
    expected = (1.5 * nll[:, 0] + 0.5 * nll[:, 1] + nll[:, 2]) / 3
    out = loss(logits, labels)
    assert torch.allclose(out.per_example, expected, atol=1e-5)
    assert torch.allclose(out.loss, expected.mean(), atol=1e-5)


def test_the_loss_example_refuses_a_bad_boost(examples):
    from genrec_core.errors import ParamError
    from genrec_core.recommender.losses import check_loss_params

    assert check_loss_params("first_token", {}) == {"eos": "include", "boost": 2.0}
    with pytest.raises(ParamError, match=r"recommender\.loss_params\.boost"):
        check_loss_params("first_token", {"boost": 0})


@pytest.fixture(scope="module")
def upstream_project(clicks_project) -> Path:
    """The clicks project with item vectors, tokenizer and ID table (``genrec embed``,
    ``train-tokenizer``, ``emit-ids``)."""
    for command in ("embed", "train-tokenizer", "emit-ids"):
        genrec(clicks_project, command)
    return clicks_project


def copy_project(source: Path, tmp_path: Path) -> Path:
    """A copy of a project to train in (each test its own checkpoints and reports)."""
    root = tmp_path / "project"
    shutil.copytree(source, root)
    return root


def test_the_examples_run_through_train_and_evaluate(upstream_project, examples, monkeypatch):
    root = upstream_project
    loss_cls = examples["loss"]["FirstTokenLoss"]
    boosts = []

    def counted(self, labels, batch, state=None, _weights=loss_cls.token_weights):
        boosts.append(self.params["boost"])
        return _weights(self, labels, batch, state)

    monkeypatch.setattr(loss_cls, "token_weights", counted)
    overrides = ["-S", "recommender.loss=first_token", "-S", "recommender.loss_params={boost: 3.0}"]
    genrec(root, "train", *overrides)
    assert boosts and set(boosts) == {3.0}  # every training step weighted its tokens with the example
    genrec(root, "evaluate", *overrides)
    summary = json.loads((root / "reports" / "train" / "summary.json").read_text())
    assert summary["loss"] == "first_token" and summary["epochs"] == 2
    best = torch.load(root / "data" / "recommender" / "best.pt", map_location="cpu", weights_only=False)
    assert (best["params"]["loss"], best["params"]["loss_params"]) == ("first_token", {"boost": 3.0})
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert metrics["users"] == USERS and 0.0 <= metrics["ndcg@10"] <= metrics["hit@10"] <= 1.0


# --------------------------------------------------------------------------- a model


def test_the_model_example_is_the_running_mean_of_the_items_so_far(examples):
    model = examples["model"]["MeanPool"](num_items=5, max_len=4, d_model=3)
    ids = torch.tensor([[1, 2, 3, 0], [4, 0, 0, 0]])  # item id + 1, right-padded
    mask = (ids > 0).long()
    out = model.sequence_output(ids, mask)
    e = model.item_embedding.weight.detach()
    assert torch.allclose(out[0, 2], (e[1] + e[2] + e[3]) / 3, atol=1e-6) and torch.allclose(out[0, 1], (e[1] + e[2]) / 2, atol=1e-6)
    assert torch.allclose(out[1, 0], e[4], atol=1e-6)
    assert torch.allclose(model.user_vectors(ids, mask)[0], (e[1] + e[2] + e[3]) / 3, atol=1e-6)  # the last item's state


def test_the_model_example_runs_through_train_and_evaluate(upstream_project, examples, tmp_path):
    from genrec_core.recommender.checkpoint import load_recommender

    root = copy_project(upstream_project, tmp_path)
    genrec(root, "train", "-S", "recommender.model=mean_pool")
    genrec(root, "evaluate", "-S", "recommender.model=mean_pool")
    loaded = load_recommender(root / "data" / "recommender" / "best.pt")
    assert type(loaded.model).__name__ == "MeanPool" and loaded.kind == "mean_pool"
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert metrics["model"] == "mean_pool" and metrics["users"] == USERS


# --------------------------------------------------------------------------- a method


def test_the_method_example_refuses_a_negative_sigma(examples):
    from genrec_core.errors import ParamError
    from genrec_core.methods import check_method_params

    assert check_method_params("grad_noise", {}) == {"sigma": 0.01, "decay": 0.55}
    with pytest.raises(ParamError, match=r"recommender\.method_params\.sigma"):
        check_method_params("grad_noise", {"sigma": -1.0})


def test_the_method_example_without_noise_is_plain_training_and_with_noise_is_not(upstream_project, examples, tmp_path):
    def run(name: str, *overrides: str) -> tuple[dict, dict]:
        root = copy_project(upstream_project, tmp_path / name)
        genrec(root, "train", *overrides)
        genrec(root, "evaluate", *overrides)
        best = torch.load(root / "data" / "recommender" / "best.pt", map_location="cpu", weights_only=True)
        return json.loads((root / "reports" / "metrics.json").read_text()), best["model"]

    plain_metrics, plain = run("plain")
    silent_metrics, silent = run("silent", "-S", "recommender.method=grad_noise", "-S", "recommender.method_params={sigma: 0.0}")
    _, noisy = run("noisy", "-S", "recommender.method=grad_noise", "-S", "recommender.method_params={sigma: 0.05}")
    assert all(torch.equal(plain[k], silent[k]) for k in plain)  # sigma 0: the plain method's run, bit for bit
    assert {k: v for k, v in plain_metrics.items() if k != "users_per_second"} == {k: v for k, v in silent_metrics.items() if k != "users_per_second"}
    assert not all(torch.equal(plain[k], noisy[k]) for k in plain)


# --------------------------------------------------------------------------- a tokenizer


def test_the_tokenizer_example_reads_the_sign_pattern_as_a_binary_number(examples):
    tokenizer = examples["tokenizer"]["LshTokenizer"]
    planes = np.zeros((2, 3, 2), dtype=np.float32)  # 2 levels, D = 3, 2 bits (K = 4)
    planes[0, 0, 0], planes[0, 1, 1] = 1.0, 1.0  # level 1: bit 0 = x0 > 0, bit 1 = x1 > 0
    planes[1, 2, 0], planes[1, 0, 1] = 1.0, -1.0  # level 2: bit 0 = x2 > 0, bit 1 = x0 < 0
    tok = tokenizer(planes, np.zeros(3, dtype=np.float32), 4)
    vectors = np.array([[1.0, -1.0, 2.0], [-1.0, 1.0, -2.0]], dtype=np.float32)
    result = tok.quantize(vectors)
    assert result.codes.tolist() == [[1, 1], [2, 2]]  # [1 + 0, 1 + 0], [0 + 2, 0 + 2]
    assert result.last_codebook.tolist() == [[-1, -1], [1, -1], [-1, 1], [1, 1]]


def test_the_tokenizer_example_refuses_a_codebook_size_not_a_power_of_two(upstream_project, examples, tmp_path):
    from genrec_core.config import load_params
    from genrec_core.errors import ParamError
    from genrec_core.tokenizers.spec import tokenizer_spec

    tp = load_params(None, ["tokenizer.kind=lsh", "tokenizer.codebook_size=6"]).tokenizer
    with pytest.raises(ParamError, match=r"tokenizer\.codebook_size"):
        tokenizer_spec("lsh").fit(np.zeros((4, 3), dtype=np.float32), tp, tmp_path / "tok", tmp_path / "reports")


def test_the_tokenizer_example_runs_through_the_pipeline(upstream_project, examples, tmp_path):
    import polars as pl

    root = copy_project(upstream_project, tmp_path)
    overrides = ["-S", "tokenizer.kind=lsh", "-S", "tokenizer.codebook_size=8", "-S", "ids.collision=dedup_level"]  # 24 items hash unevenly
    for command in ("train-tokenizer", "emit-ids", "train", "evaluate"):
        genrec(root, command, *overrides)
    assert [p.name for p in (root / "data" / "tokenizer" / "kept").iterdir()] == ["lsh.pt"]
    ids = pl.read_parquet(root / "data" / "ids" / "item_ids.parquet")
    assert ids.height == ITEMS
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert metrics["tokenizer"] == "lsh" and metrics["users"] == USERS
