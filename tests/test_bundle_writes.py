"""Catalogue changes and bundle writes (issue 26): ``add_items`` is all-or-nothing, a save never
loses another writer's items, ``export --force`` replaces only a bundle, manifest names stay
inside the bundle, writes are fsynced and the old bundle stays until the new one verifies.

One tiny generative workspace with text vectors (tests/test_cold_start.py's data) is trained
once per module and exported; each test works on its own copy of the bundle.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import polars as pl
import pytest
import torch
from test_cold_start import GENERATIVE, _overrides, _run, _text_dataset, _write_params


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("writes")
    _text_dataset(tmp / "raw")
    root = tmp / "tiger"
    root.mkdir()
    _write_params(root, _overrides(tmp, "recommender.model=tiger"))
    _run(root, GENERATIVE)
    return root


@pytest.fixture(scope="module")
def master(workspace, tmp_path_factory) -> Path:
    from genrec_core.serving.bundle import export_bundle

    return export_bundle(workspace, tmp_path_factory.mktemp("writes_bundle") / "b")


@pytest.fixture
def bundle(master, tmp_path) -> Path:
    return Path(shutil.copytree(master, tmp_path / "b"))


def _cli(*args: str):
    from typer.testing import CliRunner

    from genrec_core.cli import app

    return CliRunner().invoke(app, list(args))


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_consistent(rec) -> None:
    """The model's item table, its trie and the catalogue describe the same items."""
    n = rec.num_items
    assert len(rec.catalog) == n == len(rec.catalog.titles) == len(rec.catalog.index)
    assert rec.loaded.model.item_trie.lookup(rec.loaded.item_tokens).tolist() == list(range(n))
    every = rec.recommend_one(rec.catalog.source_ids[:2], k=n)  # k = the whole catalogue ranks
    assert sorted(i.index for i in every.items) == list(range(n))


def _assert_bundle_sound(path: Path) -> list[str]:
    """The bundle loads with every hash checked, and its tables agree; returns its item ids."""
    from genrec_core.serving.api import ServingModel

    rec = ServingModel.load(path)
    ids = rec.catalog.source_ids
    assert len(set(ids)) == len(ids) == rec.num_items == json.loads((path / "manifest.json").read_text())["num_items"]
    table = pl.read_parquet(path / "ids.parquet").filter(pl.col("tokenizer") == rec.loaded.tokenizer)
    assert sorted(table["item_id"].to_list()) == list(range(rec.num_items))  # no duplicate, none missing
    return ids


# --------------------------------------------------------------------------- add_items: all or nothing


@pytest.mark.parametrize("bad_id, words", [("\ud800", "U+D800"), ("a\nb", "U+000A"), ("x" * 300, "at most 256"), ("a\x00", "U+0000")])
def test_a_refused_item_id_leaves_model_and_catalogue_consistent(bundle, bad_id, words):
    from genrec_core.serving.api import ServingModel
    from genrec_core.serving.bundle import write_added_items
    from genrec_core.serving.errors import RequestError

    rec = ServingModel.load(bundle)
    n, titles = rec.num_items, list(rec.catalog.titles)
    with pytest.raises(RequestError) as err:
        rec.add_items([{"item_id": "fine", "title": "Fine title"}, {"item_id": bad_id, "title": "Bad one"}])
    assert err.value.field == "items[1].item_id" and words in str(err.value)
    assert rec.num_items == n and rec.catalog.titles == titles
    _assert_consistent(rec)
    # the next item gets its own title and index, and the saved bundle loads
    added = rec.add_items([{"item_id": "next", "title": "Next title"}])
    assert added.indices == [n] and rec.catalog.titles[n] == "Next title" and rec.catalog.source_ids[n] == "next"
    _assert_consistent(rec)
    write_added_items(rec, bundle)
    assert _assert_bundle_sound(bundle)[-1] == "next"


def test_a_text_with_a_lone_surrogate_is_refused_before_anything_changes(bundle):
    from genrec_core.serving.api import ServingModel
    from genrec_core.serving.errors import RequestError

    rec = ServingModel.load(bundle)
    n = rec.num_items
    with pytest.raises(RequestError) as err:
        rec.add_items([{"item_id": "s1", "title": "half \udc80 a character"}])
    assert err.value.field == "items[0].title" and "surrogate" in str(err.value)
    assert rec.num_items == n
    _assert_consistent(rec)


@pytest.mark.parametrize("where", ["catalogue", "trie"])
def test_a_failure_at_the_last_step_changes_nothing(bundle, monkeypatch, where):
    """Even a failure after the IDs were made (building the rows, or the trie) leaves the old state."""
    from genrec_core.serving import api
    from genrec_core.serving.api import ServingModel

    rec = ServingModel.load(bundle)
    n, tokens = rec.num_items, rec.loaded.item_tokens.clone()

    def boom(*args, **kwargs):
        raise RuntimeError(f"{where} failed")

    if where == "catalogue":
        monkeypatch.setattr(api, "extend_catalogue", boom)
    else:
        original = type(rec.loaded.model).set_items
        monkeypatch.setattr(type(rec.loaded.model), "set_items", lambda self, table: boom() if table.shape[0] > n else original(self, table))
    with pytest.raises(RuntimeError, match=f"{where} failed"):
        rec.add_items([{"item_id": "late", "title": "Late failure"}])
    monkeypatch.undo()
    assert rec.num_items == n and torch.equal(rec.loaded.item_tokens, tokens) and "late" not in rec.catalog.index
    _assert_consistent(rec)


def test_concurrent_additions_and_rankings_never_mix_catalogues(bundle):
    """Rankings while items are added (some refused): every answer's item ids and titles are
    those of one catalogue, and every k up to that catalogue's size is served in full."""
    from genrec_core.serving.api import ServingModel
    from genrec_core.serving.errors import RequestError

    rec = ServingModel.load(bundle)
    n0 = rec.num_items
    answers, failures = [], []
    stop = threading.Event()

    def rank():
        while not stop.is_set():
            view = rec.snapshot()
            k = len(view.catalog)
            try:
                answers.append((k, rec.recommend_one(view.catalog.source_ids[:2], k=k)))
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                failures.append(exc)

    threads = [threading.Thread(target=rank) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for j in range(4):
            rec.add_items([{"item_id": f"c{j}", "title": f"Concurrent {j}"}])
            with pytest.raises(RequestError):
                rec.add_items([{"item_id": f"ok{j}", "title": "fine"}, {"item_id": f"bad{j}\ud800", "title": "refused"}])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:3]
    assert rec.num_items == n0 + 4 and answers
    final = rec.catalog
    for k, answer in answers:
        assert len(answer.items) == k
        for item in answer.items:
            assert item.item_id == final.source_ids[item.index] and item.title == final.titles[item.index]
    _assert_consistent(rec)


# --------------------------------------------------------------------------- saves: no lost items


def test_a_save_over_a_bundle_changed_since_load_is_refused_and_loses_nothing(bundle):
    from genrec_core.serving.api import ServingModel
    from genrec_core.serving.bundle import BundleChanged, write_added_items

    first, second = ServingModel.load(bundle), ServingModel.load(bundle)
    first.add_items([{"item_id": "from-first", "title": "First writer"}])
    write_added_items(first, bundle)
    second.add_items([{"item_id": "from-second", "title": "Second writer"}])
    before = _files(bundle)
    with pytest.raises(BundleChanged, match="changed since it was loaded"):
        write_added_items(second, bundle)
    assert _files(bundle) == before
    ids = _assert_bundle_sound(bundle)
    assert "from-first" in ids and "from-second" not in ids
    # the first writer may save again (its own save is the bundle on disk now)
    first.add_items([{"item_id": "first-again", "title": "Again"}])
    write_added_items(first, bundle)
    assert _assert_bundle_sound(bundle)[-2:] == ["from-first", "first-again"]


def test_cli_add_items_while_another_writer_holds_the_lock_fails_cleanly(bundle, tmp_path, monkeypatch):
    from genrec_core.serving import durable

    monkeypatch.setattr(durable, "LOCK_WAIT_S", 0.2)
    (tmp_path / "new.jsonl").write_text(json.dumps({"item_id": "z1", "title": "Locked out"}) + "\n")
    before = _files(bundle)
    with durable.writer_lock(bundle):
        res = _cli("add-items", str(tmp_path / "new.jsonl"), "--bundle", str(bundle))
    assert res.exit_code == 2 and "another writer holds" in res.output, res.output
    assert _files(bundle) == before
    assert _cli("add-items", str(tmp_path / "new.jsonl"), "--bundle", str(bundle)).exit_code == 0
    assert _assert_bundle_sound(bundle)[-1] == "z1"


def test_writes_are_fsynced_before_the_swap(bundle, monkeypatch):
    from genrec_core.serving import durable
    from genrec_core.serving.api import ServingModel
    from genrec_core.serving.bundle import write_added_items

    synced: list[str] = []
    renamed: list[int] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    def rename(a, b):
        renamed.append(len(synced))
        return real_rename(a, b)

    monkeypatch.setattr(durable.os, "fsync", fsync)
    monkeypatch.setattr(durable.os, "rename", rename)
    monkeypatch.setattr(durable, "_exchange", lambda a, b: False)  # the two-rename path: both renames observed
    rec = ServingModel.load(bundle)
    rec.add_items([{"item_id": "durable", "title": "Synced"}])
    write_added_items(rec, bundle)
    first_rename = renamed[0]
    before_swap = synced[:first_rename]
    tmp_root = Path(before_swap[-1])  # the new folder itself is synced last, after its files
    assert tmp_root.name.startswith(".b.") and tmp_root.name.endswith(".tmp")
    names = {Path(p).relative_to(tmp_root).as_posix() for p in before_swap if p.startswith(str(tmp_root) + "/")}
    assert set(_files(bundle)) <= names  # every file of the bundle, fsynced before any rename
    assert str(bundle.parent) in synced[first_rename:]  # and the parent folder after the swap


def test_the_old_bundle_stays_when_the_new_one_does_not_verify(bundle, monkeypatch):
    from genrec_core.serving import bundle as bundle_mod
    from genrec_core.serving.api import ServingModel
    from genrec_core.serving.errors import BundleError

    real = bundle_mod._write_extended

    def tampered(tmp, *args):
        manifest = real(tmp, *args)
        with (tmp / "items.parquet").open("ab") as fh:  # a file that no longer matches its hash
            fh.write(b"torn")
        return manifest

    monkeypatch.setattr(bundle_mod, "_write_extended", tampered)
    rec = ServingModel.load(bundle)
    rec.add_items([{"item_id": "torn", "title": "Never published"}])
    before = _files(bundle)
    with pytest.raises(BundleError, match="sha256"):
        bundle_mod.write_added_items(rec, bundle)
    assert _files(bundle) == before
    assert [p.name for p in bundle.parent.iterdir() if p.name.startswith(".b.") and p.is_dir()] == []


def test_leftovers_of_a_killed_writer_are_removed_by_the_next_one(bundle, workspace):
    from genrec_core.serving.bundle import export_bundle

    for name in (".b.abc123.tmp", ".b.def456.old"):
        (bundle.parent / name).mkdir()
        (bundle.parent / name / "model.safetensors").write_bytes(b"half")
    export_bundle(workspace, bundle, force=True)
    assert sorted(p.name for p in bundle.parent.iterdir() if p.is_dir()) == ["b"]
    _assert_bundle_sound(bundle)


# --------------------------------------------------------------------------- export --force


def test_export_force_replaces_only_a_bundle_or_an_empty_folder(workspace, bundle, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    res = _cli("export", str(precious), "--root", str(workspace), "--force")
    assert res.exit_code == 2 and "is not a genrec bundle" in res.output and "--force replaces only" in res.output, res.output
    assert (precious / "thesis.tex").read_text() == "years of work"
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    res = _cli("export", str(a_file), "--root", str(workspace), "--force")
    assert res.exit_code == 2 and "not a folder" in res.output and a_file.read_text() == "x"
    # a bundle (also one whose files were damaged) and an empty folder are replaced
    (bundle / "model.safetensors").write_bytes(b"damaged")
    assert _cli("export", str(bundle), "--root", str(workspace), "--force").exit_code == 0
    _assert_bundle_sound(bundle)
    (tmp_path / "empty").mkdir()
    assert _cli("export", str(tmp_path / "empty"), "--root", str(workspace)).exit_code == 0
    _assert_bundle_sound(tmp_path / "empty")


# --------------------------------------------------------------------------- manifest names


@pytest.mark.parametrize("name", ["../outside.bin", "/etc/hostname", "sub/../../outside.bin", "link.bin", "./model.json", "a\\..\\b"])
def test_manifest_names_outside_the_bundle_are_refused(bundle, tmp_path, name):
    from genrec_core.io import sha256_file
    from genrec_core.serving.api import ServingModel
    from genrec_core.serving.errors import BundleError

    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"not part of the bundle")
    if name == "link.bin":
        (bundle / "link.bin").symlink_to(outside)
    manifest = json.loads((bundle / "manifest.json").read_text())
    target = outside if name != "/etc/hostname" else Path(name)
    if target.exists():
        manifest["files"][name] = {"sha256": sha256_file(target), "bytes": target.stat().st_size}
    else:
        manifest["files"][name] = {"sha256": "0" * 64, "bytes": 0}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as err:
        ServingModel.load(bundle)
    assert ("not a plain relative path" in str(err.value) or "symbolic link" in str(err.value)) and "\n" not in str(err.value)
