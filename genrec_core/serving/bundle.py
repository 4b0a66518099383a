"""Export a trained model as a self-contained bundle, and load one back (checked) without the workspace.

Layout of a bundle folder (``FORMAT_VERSION`` 1):

- ``manifest.json``: ``format`` ("genrec-bundle"), ``format_version``, ``created_utc``,
  ``model_kind``, ``tokenizer``, ``serving`` (max_len, beam_size, batch_size), ``params`` (the
  params the model came from, params.yaml as a dict, recommender section as trained),
  ``checkpoint`` (fingerprint, epoch, step, validation metrics of best.pt) and ``files``:
  ``{relative path: {"sha256", "bytes"}}`` for every other file;
- ``model.safetensors``: the weights (tensors that share storage, e.g. T5's tied embeddings,
  stored once; ``model.json``'s ``aliases`` maps the other names to them);
- ``model.json``: what rebuilds the model (``model_kind`` + ``config``, or params + vocab +
  tokenizer name), i.e. best.pt's entries other than the tensors;
- ``item_tokens.safetensors`` (generative models): every item's token ids [N, L];
- ``items.parquet``: item_id, source_item_id, title, train_count (popularity fallback), text fields;
- ``ids.parquet`` (generative): the ID table (``data/ids/item_ids.parquet``);
- ``tokenizer/<name>.pt`` (generative, when the workspace keeps it): the tokenizer that made the
  IDs, so that new items can be given IDs later;
- ``users.parquet`` (models with user tokens): user_id, source_user_id.

The manifest also has ``encoder`` (what embedding a new item's text needs: the embed stage's
vector source, mode, model, resolved template, text fields, normalisation, PCA; see
``serving.new_items.encoder_spec``) and, once items were added (``genrec add-items``),
``added_items`` (one entry per call: when, how many, their first index). Both are optional
additions inside format version 1: a reader that ignores them ranks the bundle correctly (added
items are ordinary rows of items.parquet and item_tokens.safetensors); a bundle without
``encoder`` (exported before it existed) cannot add items and says to export again. In an
extended bundle ``ids.parquet`` lists the added items under the model's tokenizer only.

``read_bundle`` checks the format, the version, that every listed name is a plain relative path
inside the folder (no ``..``, no absolute path, no symlink) and every file's sha256 before loading,
and fails with one ``BundleError`` line otherwise.

Writing (``export_bundle``, ``write_added_items``) holds the bundle's writer lock, builds the new
folder beside the old one, fsyncs and verifies it, then swaps it in (``serving.durable``): after a
crash the path holds the old bundle or the new one. ``export --force`` replaces only an empty folder
or a genrec bundle. A save of a loaded bundle (``write_added_items``) refuses with ``BundleChanged``
when the bundle on disk is no longer the one loaded (another writer saved meanwhile): the sha256 of
its manifest, recorded at load, must still match.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

import polars as pl
import torch

from genrec_core.errors import GenrecError, InputFormatError
from genrec_core.io import sha256_file
from genrec_core.serving.durable import BundleLocked, new_temp_dir, publish_dir, remove_leftovers, writer_lock
from genrec_core.serving.errors import BundleError

__all__ = ["BundleChanged", "BundleLocked", "export_bundle", "read_bundle", "read_manifest", "write_added_items"]

FORMAT = "genrec-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
MODEL_JSON = "model.json"
ITEM_TOKENS = "item_tokens.safetensors"
ITEMS = "items.parquet"
IDS = "ids.parquet"
USERS = "users.parquet"
#: best.pt entries kept in model.json (the tensors go to safetensors files).
_CKPT_KEYS = ("model_kind", "config", "params", "vocab", "tokenizer")
_CKPT_INFO = ("format", "fingerprint", "epoch", "step", "valid")


class BundleChanged(GenrecError):
    """The bundle on disk is not the one this process loaded (another writer saved since)."""


def dedupe_shared(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors stored once, {alias: stored name}) for a state dict whose tensors may share storage."""
    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype) if tensor.numel() else None
        if key is not None and key in seen:
            aliases[name] = seen[key]
            continue
        if key is not None:
            seen[key] = name
        stored[name] = tensor.detach().cpu().contiguous()
    return stored, aliases


def export_bundle(root: str | Path, out_dir: str | Path, params_file: str | Path | None = None, force: bool = False) -> Path:
    """Write the bundle of the workspace at ``root`` to ``out_dir`` (atomically and durably: a
    complete bundle or none; ``force`` replaces an existing bundle, never another folder)."""
    from genrec_core.serving.api import Recommender

    root, out_dir = Path(root), Path(out_dir)
    check_replaceable(out_dir, force)
    rec = Recommender.from_workspace(root, params_file=params_file)  # checks that everything loads
    paths = rec.meta["paths"]
    best = paths.recommender_dir / "best.pt"
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    stored, aliases = dedupe_shared(ckpt["model"])
    model_json = {k: ckpt[k] for k in _CKPT_KEYS if k in ckpt}
    model_json["aliases"] = aliases
    generative = ckpt.get("item_tokens") is not None

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(out_dir):
        check_replaceable(out_dir, force)  # again, under the lock: another writer may have been first
        remove_leftovers(out_dir)
        tmp = new_temp_dir(out_dir)
        try:
            _write_export(tmp, root, rec, ckpt, stored, model_json, generative)
            publish_dir(tmp, out_dir, verify=_verify_new)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def check_replaceable(out_dir: Path, force: bool) -> None:
    """Refuse to overwrite anything but a missing or empty folder, or (``force``) a genrec bundle."""
    if out_dir.is_symlink():
        raise GenrecError(f"{out_dir}: is a symbolic link; give the folder itself")
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise GenrecError(f"{out_dir}: exists and is not a folder; a bundle is written only to a new or empty folder, or over a bundle (--force)")
    if not any(out_dir.iterdir()):
        return
    if not force:
        raise GenrecError(f"{out_dir}: already exists and is not empty (pass --force to replace it)")
    if not is_bundle(out_dir):
        raise GenrecError(f"{out_dir}: is not a genrec bundle (no {MANIFEST} of format {FORMAT!r}); --force replaces only an empty folder or a bundle: remove it yourself or choose another folder")


def is_bundle(path: Path) -> bool:
    """Whether ``path`` holds a genrec bundle's manifest (its files are not checked)."""
    try:
        return json.loads((path / MANIFEST).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _verify_new(folder: Path) -> None:
    read_manifest(folder, verify=True)


def _write_export(tmp: Path, root: Path, rec: Any, ckpt: dict, stored: dict, model_json: dict, generative: bool) -> None:
    from safetensors.torch import save_file

    paths = rec.meta["paths"]
    save_file(stored, str(tmp / WEIGHTS), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    _write_json(model_json, tmp / MODEL_JSON)
    rec.snapshot().frame.write_parquet(tmp / ITEMS, compression="zstd")
    if generative:
        save_file({"item_tokens": ckpt["item_tokens"].detach().cpu().contiguous()}, str(tmp / ITEM_TOKENS))
        if paths.id_table.exists():
            shutil.copyfile(paths.id_table, tmp / IDS)
        kept = paths.tokenizer_dir / "kept" / f"{ckpt['tokenizer']}.pt"
        if kept.exists():
            (tmp / "tokenizer").mkdir()
            shutil.copyfile(kept, tmp / "tokenizer" / kept.name)
    if rec.users is not None:
        pl.DataFrame({"user_id": list(rec.users.values()), "source_user_id": list(rec.users.keys())}, schema={"user_id": pl.Int32, "source_user_id": pl.String}).write_parquet(tmp / USERS)
    files = {p.relative_to(tmp).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in sorted(tmp.rglob("*")) if p.is_file()}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model_kind": rec.kind,
        "tokenizer": rec.loaded.tokenizer,
        "num_items": rec.num_items,
        "serving": {"max_len": rec.max_len, "beam_size": rec.beam_size, "batch_size": rec.batch_size},
        "params": rec.params,
        "checkpoint": {k: ckpt[k] for k in _CKPT_INFO if k in ckpt},
        "source": str(root.resolve()),
        "encoder": rec.meta.get("encoder"),
        "files": files,
    }
    _write_json(manifest, tmp / MANIFEST)
    _set_modes(tmp)


def _write_json(obj: Any, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")


def _set_modes(folder: Path) -> None:
    """mkdtemp and safetensors create owner-only entries; give the bundle the usual umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    for p in [folder, *folder.rglob("*")]:
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


def manifest_digest(path: str | Path) -> str | None:
    """sha256 of the bundle's manifest.json (None when there is none): which bundle is on disk."""
    try:
        return hashlib.sha256((Path(path) / MANIFEST).read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def check_member(path: Path, name: Any) -> Path:
    """The file ``name`` of a manifest's list, which must be a plain relative path inside the
    bundle folder ``path``: no absolute path, no ``..``, no backslash, no symlink on the way."""
    from genrec_core.serving.new_items import quote_id

    pure = PurePosixPath(name) if isinstance(name, str) else None
    if pure is None or not name or "\\" in name or "\x00" in name or pure.is_absolute() or any(part in ("..", ".", "") for part in name.split("/")):
        raise BundleError(f"{path / MANIFEST}: file name {quote_id(str(name))} is not a plain relative path inside the bundle")
    current = path
    for part in pure.parts:
        current = current / part
        if current.is_symlink():
            raise BundleError(f"{path / MANIFEST}: file {quote_id(name)} is (or lies under) a symbolic link; a bundle holds its files itself")
    return current


def read_manifest(path: str | Path, verify: bool = True) -> dict[str, Any]:
    """The bundle's manifest, after checking its format, version, file names and (``verify``) every file's hash."""
    return _read_manifest(Path(path), verify)[0]


def _read_manifest(path: Path, verify: bool) -> tuple[dict[str, Any], str]:
    """(manifest, sha256 of its bytes)."""
    mpath = path / MANIFEST
    if not mpath.exists():
        raise BundleError(f"{path}: not a genrec bundle (no {MANIFEST}); create one with `genrec export DIR`")
    raw = mpath.read_bytes()
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{mpath}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{mpath}: not a genrec bundle manifest (format is not {FORMAT!r})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{path}: bundle format version {version!r}, but this genrec reads version {FORMAT_VERSION}; export the model again with this version (genrec export)")
    files = manifest.get("files")
    if not isinstance(files, dict) or WEIGHTS not in files or MODEL_JSON not in files or ITEMS not in files:
        raise BundleError(f"{mpath}: the file list lacks {WEIGHTS}, {MODEL_JSON} or {ITEMS}")
    for name in files:
        check_member(path, name)
    if verify:
        for name, entry in files.items():
            f = path / name
            if not isinstance(entry, dict):
                raise BundleError(f"{mpath}: the entry of {name} is not an object with sha256 and bytes")
            if not f.is_file():
                raise BundleError(f"{f}: missing from the bundle (listed in {MANIFEST}); export it again")
            got = sha256_file(f)
            if got != entry.get("sha256"):
                raise BundleError(f"{f}: sha256 {got[:12]}... differs from the manifest's {str(entry.get('sha256'))[:12]}...: the bundle was modified or is incomplete; export it again")
    return manifest, hashlib.sha256(raw).hexdigest()


def read_bundle(path: str | Path, device: str = "cpu", verify: bool = True):
    """A ``Recommender`` from a bundle folder (see the module docstring for the checks).

    A writer may swap the folder while it is read: when the manifest changed during the read, the
    read is repeated (a few times), so the files loaded are one bundle's."""
    path = Path(path)
    for _ in range(3):
        before = manifest_digest(path)
        try:
            rec = _read_bundle(path, device, verify)
        except BundleError:
            if before is None or manifest_digest(path) == before:
                raise  # the bundle itself is bad, not swapped while read
            continue
        if manifest_digest(path) == rec.meta["manifest_sha256"] == before:
            return rec
    raise BundleError(f"{path}: the bundle kept changing while it was read (another writer); try again")


def _read_bundle(path: Path, device: str, verify: bool):
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from genrec_core.recommender.checkpoint import recommender_from_checkpoint
    from genrec_core.serving.api import Catalog, Recommender

    manifest, digest = _read_manifest(path, verify)
    try:
        model_json = json.loads((path / MODEL_JSON).read_text(encoding="utf-8"))
        weights = load_file(str(path / WEIGHTS))
        item_tokens = load_file(str(path / ITEM_TOKENS))["item_tokens"] if (path / ITEM_TOKENS).exists() else None
        items = pl.read_parquet(path / ITEMS)
        users = pl.read_parquet(path / USERS) if (path / USERS).exists() else None
    except (OSError, json.JSONDecodeError, SafetensorError, KeyError, pl.exceptions.PolarsError) as exc:
        raise BundleError(f"{path}: unreadable bundle file ({type(exc).__name__}: {exc})") from None
    for alias, name in model_json.pop("aliases", {}).items():
        weights[alias] = weights[name]
    ckpt = {**model_json, "model": weights}
    if item_tokens is not None:
        ckpt["item_tokens"] = item_tokens
    try:
        loaded = recommender_from_checkpoint(ckpt, path / WEIGHTS, device)
    except InputFormatError as exc:
        raise BundleError(str(exc)) from None
    except RuntimeError as exc:  # load_state_dict: missing / unexpected / mis-shaped weights
        raise BundleError(f"{path / WEIGHTS}: weights do not fit the model ({str(exc).splitlines()[0]})") from None
    serving = manifest.get("serving", {})
    user_map = None if users is None else dict(zip(users["source_user_id"].cast(pl.String).to_list(), users["user_id"].to_list()))
    return Recommender(
        loaded,
        Catalog.from_frame(items),
        max_len=serving.get("max_len", manifest["params"]["data"]["max_items"]),
        beam_size=serving.get("beam_size", manifest["params"]["evaluate"]["beam_size"]),
        batch_size=serving.get("batch_size", manifest["params"]["evaluate"]["batch_size"]),
        params=manifest.get("params", {}),
        users=user_map,
        source=str(path),
        meta={
            "manifest": manifest,
            "manifest_sha256": digest,
            "catalogue": items,
            "encoder": manifest.get("encoder"),
            "tokenizer_path": path / "tokenizer" / f"{loaded.tokenizer}.pt" if loaded.tokenizer else None,
        },
    )


def write_added_items(rec, bundle_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write ``rec`` (a bundle's Recommender after ``add_items``) as a bundle at ``out_dir``
    (default: over ``bundle_dir``), atomically and durably: a copy of the bundle with items.parquet,
    item_tokens.safetensors and ids.parquet extended, the manifest's hashes, ``num_items`` and
    ``added_items`` updated; the old bundle stays as it was until the finished one verifies and
    replaces it. Holds the writer lock of ``out_dir``; raises ``BundleChanged`` when ``bundle_dir``
    is no longer the bundle ``rec`` was loaded from (another writer saved: saving this copy would
    lose that writer's items)."""
    bundle_dir = Path(bundle_dir)
    out_dir = Path(out_dir) if out_dir is not None else bundle_dir
    added = list(rec.meta.get("added") or [])
    if not added:
        raise GenrecError("no items were added")
    view = rec.snapshot()  # one consistent catalogue + item table
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(out_dir):
        loaded_digest = rec.meta.get("manifest_sha256")
        manifest, digest = _read_manifest(bundle_dir, verify=True)
        if loaded_digest is not None and digest != loaded_digest:
            raise BundleChanged(f"{bundle_dir}: the bundle on disk changed since it was loaded (another add-items, export or server saved it); not saved, so that its items are not lost: load it again and add the items to it")
        pending = sum(len(a.indices) for a in added)
        if isinstance(manifest.get("num_items"), int) and manifest["num_items"] + pending != len(view.catalog):
            raise GenrecError(f"{bundle_dir}: {manifest['num_items']} items on disk + {pending} added != {len(view.catalog)} in memory; not saved")
        if out_dir != bundle_dir:
            check_replaceable(out_dir, force=False)
        remove_leftovers(out_dir)
        tmp = new_temp_dir(out_dir)
        try:
            manifest = _write_extended(tmp, bundle_dir, manifest, view, added)
            publish_dir(tmp, out_dir, verify=_verify_new)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        rec.meta["added"] = [a for a in rec.meta.get("added", []) if all(a is not b for b in added)]
        if out_dir == bundle_dir:
            rec.meta["manifest"] = manifest
            rec.meta["manifest_sha256"] = manifest_digest(out_dir)
    return out_dir


def _write_extended(tmp: Path, bundle_dir: Path, manifest: dict[str, Any], view: Any, added: list[Any]) -> dict[str, Any]:
    """Fill ``tmp`` with the bundle extended by ``added`` (the view's catalogue and item table)."""
    from safetensors.torch import save_file

    for name in manifest["files"]:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle_dir / name, tmp / name)
    view.frame.write_parquet(tmp / ITEMS, compression="zstd")
    save_file({"item_tokens": view.loaded.item_tokens.detach().cpu().contiguous()}, str(tmp / ITEM_TOKENS))
    if (tmp / IDS).exists():
        table = pl.read_parquet(tmp / IDS)
        extra = [
            pl.DataFrame({"item_id": a.indices, "tokenizer": [view.loaded.tokenizer] * len(a.indices), "codes": [c.tolist() for c in a.codes]}, schema=table.schema)
            for a in added
        ]
        pl.concat([table, *extra]).sort(["tokenizer", "item_id"]).write_parquet(tmp / IDS)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    manifest = dict(manifest)
    manifest["num_items"] = len(view.catalog)
    manifest["added_items"] = [*manifest.get("added_items", []), *({"added_utc": now, "count": len(a.indices), "first_index": a.indices[0]} for a in added)]
    manifest["files"] = {p.relative_to(tmp).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in sorted(tmp.rglob("*")) if p.is_file() and p.name != MANIFEST}
    _write_json(manifest, tmp / MANIFEST)
    _set_modes(tmp)
    return manifest
