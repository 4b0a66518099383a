"""New items (cold start, issue 14 part 4): add-items through the API, the CLI and HTTP, and the
cold-start evaluation's held-out items.

A tiny atomic dataset with item text (titles, genres) is run through the generative stages once
per module with text vectors from the bundled MiniLM; a SASRec on the same data checks the
item-ID models' refusal.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]

GENRES = ["Comedy", "Drama", "Action", "Horror", "Romance", "Sci-Fi"]
WORDS = ["river", "night", "glass", "storm", "garden", "orbit", "silver", "winter", "harbor", "echo", "paper", "forest"]


def _text_dataset(folder: Path, users: int = 40, items: int = 24, length: int = 9) -> None:
    """tests/test_dvc_dependencies.py's tiny interactions plus a .item file with text."""
    from test_dvc_dependencies import _tiny_dataset

    _tiny_dataset(folder, users, items, length)
    lines = ["item_id:token\ttitle:token_seq\tgenre:token"]
    for i in range(items):
        lines.append(f"i{i}\tThe {WORDS[i % len(WORDS)]} of {WORDS[(i * 5 + 3) % len(WORDS)]} {i}\t{GENRES[i % len(GENRES)]}")
    (folder / "tiny.item").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_params(root: Path, overrides: list[str]) -> None:
    from genrec_core.config import load_params

    params = dataclasses.asdict(load_params(None, overrides))
    (root / "params.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(params))), encoding="utf-8")


def _run(root: Path, stages: tuple[str, ...]) -> None:
    from genrec_core.cli import _run_stage

    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for stage in stages:
            _run_stage(stage, root / "params.yaml", [], root)
    torch.set_num_threads(threads)


GENERATIVE = ("preprocess", "embed", "train_tokenizer", "emit_ids", "train")


def _overrides(tmp: Path, *extra: str) -> list[str]:
    from test_dvc_dependencies import TINY

    return [
        *TINY,
        "embed.source=text",
        "tokenizer.codebook_size=16",
        f"data.raw_dir={tmp / 'raw'}",
        f"data.cache_dir={tmp / 'cache'}",
        "recommender.epochs=1",
        *extra,
    ]


@pytest.fixture(scope="module")
def spaces(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("cold")
    _text_dataset(tmp / "raw")
    roots = {}
    for name, model, stages in (("tiger", "tiger", GENERATIVE), ("sasrec", "sasrec", ("preprocess", "train"))):
        root = tmp / name
        root.mkdir()
        _write_params(root, _overrides(tmp, f"recommender.model={model}"))
        _run(root, stages)
        roots[name] = root
    return roots


@pytest.fixture(scope="module")
def bundle(spaces, tmp_path_factory) -> Path:
    from genrec_core.serving.bundle import export_bundle

    return export_bundle(spaces["tiger"], tmp_path_factory.mktemp("cold_bundle") / "tiger")


def _copy(bundle: Path, dest: Path) -> Path:
    shutil.copytree(bundle, dest)
    return dest


def _item_fields(root: Path, index: int) -> dict[str, str]:
    items = pl.read_parquet(root / "data/processed/items.parquet").sort("item_id")
    row = items.row(index, named=True)
    return {"title": row["title"], "genre": row["genre"]}


# --------------------------------------------------------------------------- IDs for new items


def test_new_ids_keep_the_table_and_resolve_collisions_as_trained():
    from genrec_core.serving.new_items import UnassignableItem, assign_new_ids

    existing = np.array([[0, 0], [0, 1], [1, 0]])
    codebook = np.array([[0.0], [1.0], [2.0], [3.0]])
    # free raw ID kept; a taken one moves to the nearest free last code under its prefix; new
    # items placed in order (the second [0, 0] finds 1 and 2 taken... by then)
    codes = np.array([[1, 1], [0, 0], [0, 0]])
    residual = np.array([[1.0], [0.9], [2.6]])
    ids, moved = assign_new_ids(codes, residual, codebook, existing, "reassign_last", (2, 4))
    assert ids.tolist() == [[1, 1], [0, 2], [0, 3]] and moved.tolist() == [False, True, True]
    with pytest.raises(UnassignableItem, match="all 4 last-level codes") as err:
        assign_new_ids(np.array([[0, 0]] * 3), np.zeros((3, 1)), codebook, existing, "reassign_last", (2, 4))
    assert err.value.row == 2
    with pytest.raises(UnassignableItem, match="no token"):
        assign_new_ids(np.array([[3, 0]]), np.zeros((1, 1)), codebook, existing, "reassign_last", (2, 4))
    # dedup_level: the next free number of the group, within the dedup level's vocabulary
    existing = np.array([[0, 0, 0], [0, 0, 1], [1, 1, 0]])
    ids, _ = assign_new_ids(np.array([[0, 0], [1, 1], [1, 0]]), np.zeros((3, 1)), codebook, existing, "dedup_level", (2, 2, 3))
    assert ids.tolist() == [[0, 0, 2], [1, 1, 1], [1, 0, 0]]
    with pytest.raises(UnassignableItem, match="dedup level has 3 tokens"):
        assign_new_ids(np.array([[0, 0], [0, 0]]), np.zeros((2, 1)), codebook, existing, "dedup_level", (2, 2, 3))


# --------------------------------------------------------------------------- API


def test_an_item_with_an_existing_items_text_gets_a_neighbouring_id_and_is_recommendable(bundle, spaces):
    from genrec_core.serving.api import ServingModel

    rec = ServingModel.load(bundle)
    n = rec.num_items
    twin = 5
    fields = _item_fields(spaces["tiger"], twin)
    added = rec.add_items([{"item_id": "new-twin", **fields}, {"item_id": "new-text", "text": "A quiet film about harbors and storms"}])
    assert added.indices == [n, n + 1] and rec.num_items == n + 2 and rec.catalog.index["new-twin"] == n
    tokens = rec.loaded.item_tokens
    twin_codes = rec.loaded.vocab.tokens_to_codes(tokens[twin].numpy())
    assert int((added.codes[0] != twin_codes).sum()) <= 1, (added.codes[0], twin_codes)
    assert len({tuple(r) for r in tokens.tolist()}) == rec.num_items  # IDs stay unique
    trie = rec.loaded.model.item_trie
    assert trie.lookup(tokens[n:]).tolist() == [n, n + 1]
    # ranked: over the whole catalogue, and from a history that holds the new item
    every = rec.recommend_one(rec.catalog.source_ids[:3], k=rec.num_items)
    assert {"new-twin", "new-text"} <= {i.item_id for i in every.items}
    from_new = rec.recommend_one(["new-twin", "new-text"], k=5)
    assert len(from_new.items) == 5 and rec.catalog.titles[n] == fields["title"]


def test_bad_new_items_raise_one_error_naming_the_field(bundle, spaces):
    from genrec_core.errors import GenrecError
    from genrec_core.serving.api import ServingModel
    from genrec_core.serving.errors import RequestError

    rec = ServingModel.load(bundle)
    n = rec.num_items
    known = rec.catalog.source_ids[0]
    for items, field, words in [
        ([{"text": "x"}], "items[0].item_id", "missing"),
        ([{"item_id": "a", "text": "x"}, {"item_id": "b"}], "items[1].text", "missing"),
        ([{"item_id": "a", "text": "x"}, {"item_id": "a", "text": "y"}], "items[1].item_id", "duplicate id 'a'"),
        ([{"item_id": known, "text": "x"}], "items[0].item_id", "already in the catalogue"),
        ([{"item_id": "a", "colour": "red"}], "items[0].colour", "unknown field"),
        ([{"item_id": "a", "text": "x", "title": "y"}], "items[0].text", "not both"),
        ([], "items", "no items"),
        ("a,b", "items", "list"),
    ]:
        with pytest.raises(RequestError) as err:
            rec.add_items(items)
        assert err.value.field == field and words in str(err.value), str(err.value)
    assert rec.num_items == n  # nothing changed
    sasrec = ServingModel.load(spaces["sasrec"])
    with pytest.raises(GenrecError, match="cannot rank an unseen item"):
        sasrec.add_items([{"item_id": "a", "text": "x"}])


# --------------------------------------------------------------------------- CLI


def _cli(*args: str):
    from typer.testing import CliRunner

    from genrec_core.cli import app

    return CliRunner().invoke(app, list(args))


def test_cli_add_items_extends_the_bundle_which_loads_checked(bundle, spaces, tmp_path):
    from genrec_core.serving.api import ServingModel

    target = _copy(bundle, tmp_path / "b")
    n = ServingModel.load(target).num_items
    f = tmp_path / "new.jsonl"
    f.write_text(
        json.dumps({"item_id": "n1", **_item_fields(spaces["tiger"], 2)}) + "\n\n" + json.dumps({"item_id": "n2", "text": "Space opera in winter"}) + "\n"
    )
    res = _cli("add-items", str(f), "--bundle", str(target))
    assert res.exit_code == 0, res.output
    assert f"added 2 items to {target}" in res.output
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["num_items"] == n + 2 and manifest["added_items"][0]["count"] == 2 and manifest["format_version"] == 1
    rec = ServingModel.load(target)  # every hash checked
    assert rec.num_items == n + 2 and rec.catalog.source_ids[-2:] == ["n1", "n2"]
    assert {"n1", "n2"} <= {i.item_id for i in rec.recommend_one(["n1"], k=rec.num_items).items}
    ids = pl.read_parquet(target / "ids.parquet").filter(pl.col("tokenizer") == rec.loaded.tokenizer)
    assert ids.height == n + 2
    # again, over the extended bundle: the second addition sees the first's IDs
    f2 = tmp_path / "more.csv"
    f2.write_text("item_id,title,genre\nn3,Another title,Drama\n")
    assert _cli("add-items", str(f2), "--bundle", str(target)).exit_code == 0
    assert ServingModel.load(target).num_items == n + 3


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("missing_text.jsonl", '{"item_id": "z1", "text": "ok"}\n{"item_id": "z2"}\n', "line 2: text: missing"),
        ("missing_id.jsonl", '{"text": "ok"}\n', "line 1: item_id: missing"),
        ("dup.jsonl", '{"item_id": "z1", "text": "a"}\n{"item_id": "z1", "text": "b"}\n', "line 2: item_id: duplicate id 'z1' (also line 1)"),
        ("known.jsonl", '{"item_id": "i3", "text": "a"}\n', "line 1: item_id: 'i3' is already in the catalogue"),
        ("broken.jsonl", '{"item_id": "z1", "text": "a"}\n{"item_id": "z2", \n', "line 2: "),
        ("broken.csv", "item_id,text\nz1,a,b\n", "line 2: "),
        ("items.txt", "z1 a\n", "unknown file type"),
    ],
)
def test_cli_bad_items_are_one_line_exit_2_and_leave_the_bundle_as_it_was(bundle, tmp_path, name, content, words):
    target = _copy(bundle, tmp_path / "b")
    before = {p.name: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    f = tmp_path / name
    f.write_text(content)
    res = _cli("add-items", str(f), "--bundle", str(target))
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], res.output
    assert {p.name: p.read_bytes() for p in target.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary folder left


# --------------------------------------------------------------------------- HTTP


def test_http_post_items_adds_recommendable_items_and_names_bad_fields(bundle, spaces, tmp_path):
    from fastapi.testclient import TestClient

    from genrec_core.serving.api import ServingModel
    from genrec_core.serving.http import create_app

    target = _copy(bundle, tmp_path / "b")
    rec = ServingModel.load(target)
    n = rec.num_items
    token = "t" * 32
    with TestClient(create_app(rec, write_token=token), base_url="http://127.0.0.1", headers={"Authorization": f"Bearer {token}"}) as client:
        r = client.post("/items", json={"items": [{"item_id": "h1", "text": "A film about glass gardens"}]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["items"] == n + 1 and body["added"][0]["item_id"] == "h1" and body["added"][0]["index"] == n
        r = client.post("/recommend", json={"history": ["h1"], "k": n + 1})
        assert r.status_code == 200 and "h1" in {i["item_id"] for i in r.json()["items"]}
        for payload, status, field in [
            ({"items": [{"item_id": "h1", "text": "again"}]}, 422, "items[0].item_id"),
            ({"items": [{"item_id": "h2"}]}, 422, "items[0].text"),
            ({"items": [{"text": "x"}]}, 422, "items[0].item_id"),
            ({"items": "x"}, 422, "items"),
            ({}, 422, "items"),
        ]:
            r = client.post("/items", json=payload)
            assert r.status_code == status and r.json()["field"] == field, r.text
        r = client.post("/items", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["field"] == "body"
        r = client.post("/items", json={"items": [{"item_id": "h3", "text": "Saved item"}], "save": True})
        assert r.status_code == 200 and r.json()["saved"] == str(target)
    assert ServingModel.load(target).num_items == n + 2
    with TestClient(
        create_app(ServingModel.load(spaces["sasrec"]), write_token=token), base_url="http://127.0.0.1", headers={"Authorization": f"Bearer {token}"}
    ) as client:
        r = client.post("/items", json={"items": [{"item_id": "s1", "text": "x"}]})
        assert r.status_code == 409 and "cannot rank an unseen item" in r.json()["error"]


# --------------------------------------------------------------------------- cold-start evaluation


def test_cold_item_share_is_checked():
    from genrec_core.config import load_params
    from genrec_core.errors import ParamError

    for bad in ("1.0", "-0.1", "true", "x"):
        with pytest.raises(ParamError, match="data.cold_item_share"):
            load_params(None, [f"data.cold_item_share={bad}"])
    assert load_params(None, []).data.cold_item_share == 0


@pytest.fixture(scope="module")
def cold_spaces(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("cold_eval")
    _text_dataset(tmp / "raw")
    roots = {}
    for name, model, stages in (("tiger", "tiger", (*GENERATIVE, "evaluate")), ("sasrec", "sasrec", ("preprocess", "train", "evaluate"))):
        root = tmp / name
        root.mkdir()
        _write_params(root, _overrides(tmp, f"recommender.model={model}", "data.cold_item_share=0.25", "data.cold_item_seed=3"))
        _run(root, stages)
        roots[name] = root
    return roots


def test_held_out_items_are_never_trained_on_and_are_test_targets(cold_spaces, spaces):
    root = cold_spaces["tiger"]
    info = json.loads((root / "data/processed/dataset.json").read_text())
    cold = set(info["cold_item_ids"])
    items = pl.read_parquet(root / "data/processed/items.parquet")
    assert len(cold) == 6 and items.height == 24  # round(0.25 * 24); every item stays in the catalogue, with its text
    assert set(items.filter(pl.col("item_id").is_in(list(cold)))["title"].to_list()) and "" not in items["title"].to_list()
    seqs = pl.read_parquet(root / "data/processed/sequences.parquet")
    assert not cold & set(seqs["train_items"].explode().to_list())
    assert not cold & set(seqs["valid_item"].to_list())
    for split in ("train", "valid", "test"):
        ex = pl.read_parquet(root / f"data/processed/{split}.parquet")
        assert not cold & set(ex["history"].explode().to_list()), split
        if split != "test":
            assert not cold & set(ex["target"].to_list()), split
    test_targets = pl.read_parquet(root / "data/processed/test.parquet")["target"].to_list()
    assert cold & set(test_targets)
    stats = json.loads((root / "reports/data_stats.json").read_text())["cold_items"]
    assert stats["items"] == 6 and stats["test_targets"] == sum(t in cold for t in test_targets) > 0
    # a held-out item is a test target exactly where it was the user's last item in the raw data
    full = pl.read_parquet(spaces["tiger"] / "data/processed/sequences.parquet")
    last_raw = dict(zip(full["source_user_id"].to_list(), full["test_item"].to_list()))
    assert dict(zip(seqs["source_user_id"].to_list(), seqs["test_item"].to_list())) == {u: last_raw[u] for u in seqs["source_user_id"].to_list()}
    # same seed, same items; the IDs of held-out items come from the tokenizer like any item's
    assert pl.read_parquet(root / "data/ids/item_ids.parquet")["item_id"].n_unique() == 24


def test_the_content_floor_ranks_by_cosine_to_the_last_item():
    from genrec_core.evaluation.cold_start import content_floor, rank_summary

    vectors = np.array([[1.0, 0.0], [2.0, 0.2], [0.0, 3.0], [1.0, 1.0], [5.0, 0.0]])
    got = content_floor(vectors, [[2, 0], [1, 4, 2]], k=3)
    # last item 0 = (1, 0): cosines item4 1.0, item1 0.995, item3 0.707, item2 0 (item 0 itself left out)
    # last item 2 = (0, 1): item3 0.707, item1 0.0995, then items 0 and 4 tie at 0 -> lower index
    assert got.tolist() == [[4, 1, 3], [3, 1, 0]]
    m = rank_summary(got, np.array([1, 0]), ks=[1, 5])
    assert m["hit@1"] == 0.0 and m["hit@5"] == 1.0 and m["ndcg@5"] == pytest.approx((1 / np.log2(3) + 1 / np.log2(4)) / 2)


def test_the_cold_start_script_writes_its_report(cold_spaces, tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import cold_start
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    out = tmp_path / "cold_start.md"
    assert cold_start.main(["--workspace", str(cold_spaces["tiger"]), "--sasrec", str(cold_spaces["sasrec"]), "--out", str(out)]) == 0
    text = out.read_text()
    for words in (
        "t5 (generative, 10 beams)",
        "sasrec (item IDs, full ranking)",
        "content floor",
        "held out 6 of 24 items",
        "python benchmarks/cold_start.py --workspace",
    ):
        assert words in text, text


def test_tiger_cold_mixing_inserts_prefix_matches_up_to_epsilon_k():
    """Hand-worked lists: cold items follow the first listed item sharing their 2-token prefix."""
    from genrec_core.evaluation.cold_start import mix_cold_items

    tokens = np.array([[1, 10, 20], [1, 11, 21], [2, 12, 22], [1, 10, 23], [2, 12, 24], [1, 10, 25]])
    cold = [5, 3, 4]  # items 3 and 5 share item 0's prefix (1, 10); item 4 shares item 2's (2, 12)
    beam = np.array([[0, 1, 2]])
    assert mix_cold_items(beam, tokens, cold, k=4, epsilon=0.5).tolist() == [[0, 3, 5, 1]]
    assert mix_cold_items(beam, tokens, cold, k=4, epsilon=0.25).tolist() == [[0, 3, 1, 2]]
    assert mix_cold_items(beam, tokens, cold, k=4, epsilon=0.0).tolist() == [[0, 1, 2, -1]]
    assert mix_cold_items(np.array([[2, 0, 1]]), tokens, cold, k=5, epsilon=0.4).tolist() == [[2, 4, 0, 3, 1]]
    # a cold item the beam found itself uses the budget: nothing more is inserted
    assert mix_cold_items(np.array([[5, 0, 1, -1]]), tokens, cold, k=3, epsilon=1 / 3).tolist() == [[5, 0, 1]]
    with pytest.raises(ValueError, match="epsilon"):
        mix_cold_items(beam, tokens, cold, k=4, epsilon=1.5)
