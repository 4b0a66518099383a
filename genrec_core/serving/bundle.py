"""Write a bundle: export a workspace's trained model, and save a loaded bundle with added items.

The format (layout, manifest, checks) is ``serving.bundle_format``'s; loading a bundle is
``serving.loading``'s (``read_bundle`` here is kept for callers that import it from this module).

Writing (``export_bundle``, ``write_added_items``) holds the bundle's writer lock, builds the new
folder beside the old one, fsyncs and verifies it, then swaps it in (``serving.durable``): after a
crash the path holds the old bundle or the new one. ``export --force`` replaces only an empty folder
or a genrec bundle. A save of a loaded bundle (``write_added_items``) refuses with ``BundleChanged``
when the bundle on disk is no longer the one loaded (another writer saved meanwhile): the sha256 of
its manifest, recorded at load, must still match.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from pathlib import Path
from typing import Any

import polars as pl
from safetensors.torch import save_file

from genrec_core.errors import GenrecError
from genrec_core.io import sha256_file
from genrec_core.recommender import checkpoint_format
from genrec_core.serving.api import ServingModel, View
from genrec_core.serving.bundle_format import (
    FORMAT,
    FORMAT_VERSION,
    IDS,
    ITEM_TOKENS,
    ITEMS,
    MANIFEST,
    MODEL_JSON,
    TOKENIZER_DIR,
    USERS,
    WEIGHTS,
    check_member,
    dedupe_shared,
    is_bundle,
    manifest_digest,
    read_manifest,
    read_manifest_and_digest,
)
from genrec_core.serving.durable import BundleLocked, new_temp_dir, publish_dir, remove_leftovers, writer_lock
from genrec_core.serving.new_items import AddedItems

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "BundleChanged",
    "BundleLocked",
    "check_member",
    "dedupe_shared",
    "export_bundle",
    "is_bundle",
    "manifest_digest",
    "read_bundle",
    "read_manifest",
    "write_added_items",
]

#: best.pt entries kept in model.json (the tensors go to safetensors files).
_CKPT_KEYS = ("model_kind", "config", "params", "vocab", "tokenizer")


class BundleChanged(GenrecError):
    """The bundle on disk is not the one this process loaded (another writer saved since)."""


def export_bundle(root: str | Path, out_dir: str | Path, params_file: str | Path | None = None, force: bool = False) -> Path:
    """Write the bundle of the workspace at ``root`` to ``out_dir`` (atomically and durably: a
    complete bundle or none; ``force`` replaces an existing bundle, never another folder)."""
    root, out_dir = Path(root), Path(out_dir)
    check_replaceable(out_dir, force)
    rec = ServingModel.from_workspace(root, params_file=params_file)  # checks that everything loads
    ckpt = checkpoint_format.read_checkpoint(rec.meta.paths.recommender_dir / checkpoint_format.BEST)
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
        raise GenrecError(
            f"{out_dir}: is not a genrec bundle (no {MANIFEST} of format {FORMAT!r}); --force replaces only an empty folder or a bundle: remove it "
            "yourself or choose another folder"
        )


def _verify_new(folder: Path) -> None:
    read_manifest(folder, verify=True)


def _write_export(tmp: Path, root: Path, rec: ServingModel, ckpt: dict, stored: dict, model_json: dict, generative: bool) -> None:
    paths = rec.meta.paths
    save_file(stored, str(tmp / WEIGHTS), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    _write_json(model_json, tmp / MODEL_JSON)
    rec.snapshot().frame.write_parquet(tmp / ITEMS, compression="zstd")
    if generative:
        save_file({"item_tokens": ckpt["item_tokens"].detach().cpu().contiguous()}, str(tmp / ITEM_TOKENS))
        if paths.id_table.exists():
            shutil.copyfile(paths.id_table, tmp / IDS)
        kept = paths.tokenizer_dir / "kept" / f"{ckpt['tokenizer']}.pt"
        if kept.exists():
            (tmp / TOKENIZER_DIR).mkdir()
            shutil.copyfile(kept, tmp / TOKENIZER_DIR / kept.name)
    if rec.users is not None:
        pl.DataFrame(
            {"user_id": list(rec.users.values()), "source_user_id": list(rec.users.keys())}, schema={"user_id": pl.Int32, "source_user_id": pl.String}
        ).write_parquet(tmp / USERS)
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
        "checkpoint": {k: ckpt[k] for k in checkpoint_format.RUN_KEYS if k in ckpt},
        "source": str(root.resolve()),
        "encoder": rec.meta.encoder,
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


def read_bundle(path: str | Path, device: str = "cpu", verify: bool = True) -> ServingModel:
    """A ``ServingModel`` from a bundle folder (``ServingModel.from_bundle``: checked, and read again
    when another writer swapped it meanwhile)."""
    return ServingModel.from_bundle(path, device, verify)


def write_added_items(rec: ServingModel, bundle_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write ``rec`` (a bundle's ``ServingModel`` after ``add_items``) as a bundle at ``out_dir``
    (default: over ``bundle_dir``), atomically and durably: a copy of the bundle with items.parquet,
    item_tokens.safetensors and ids.parquet extended, the manifest's hashes, ``num_items`` and
    ``added_items`` updated; the old bundle stays as it was until the finished one verifies and
    replaces it. Holds the writer lock of ``out_dir``; raises ``BundleChanged`` when ``bundle_dir``
    is no longer the bundle ``rec`` was loaded from (another writer saved: saving this copy would
    lose that writer's items)."""
    bundle_dir = Path(bundle_dir)
    out_dir = Path(out_dir) if out_dir is not None else bundle_dir
    added = list(rec.meta.added)
    if not added:
        raise GenrecError("no items were added")
    view = rec.snapshot()  # one consistent catalogue + item table
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(out_dir):
        loaded_digest = rec.meta.manifest_sha256
        manifest, digest = read_manifest_and_digest(bundle_dir, verify=True)
        if loaded_digest is not None and digest != loaded_digest:
            raise BundleChanged(
                f"{bundle_dir}: the bundle on disk changed since it was loaded (another add-items, export or server saved it); not saved, so that its "
                "items are not lost: load it again and add the items to it"
            )
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
        rec.meta.added = [a for a in rec.meta.added if all(a is not b for b in added)]
        if out_dir == bundle_dir:
            rec.meta.manifest = manifest
            rec.meta.manifest_sha256 = manifest_digest(out_dir)
    return out_dir


def _write_extended(tmp: Path, bundle_dir: Path, manifest: dict[str, Any], view: View, added: list[AddedItems]) -> dict[str, Any]:
    """Fill ``tmp`` with the bundle extended by ``added`` (the view's catalogue and item table)."""
    for name in manifest["files"]:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle_dir / name, tmp / name)
    view.frame.write_parquet(tmp / ITEMS, compression="zstd")
    save_file({"item_tokens": view.loaded.item_tokens.detach().cpu().contiguous()}, str(tmp / ITEM_TOKENS))
    if (tmp / IDS).exists():
        table = pl.read_parquet(tmp / IDS)
        extra = [
            pl.DataFrame(
                {"item_id": a.indices, "tokenizer": [view.loaded.tokenizer] * len(a.indices), "codes": [c.tolist() for c in a.codes]}, schema=table.schema
            )
            for a in added
        ]
        pl.concat([table, *extra]).sort(["tokenizer", "item_id"]).write_parquet(tmp / IDS)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    manifest = dict(manifest)
    manifest["num_items"] = len(view.catalog)
    manifest["added_items"] = [*manifest.get("added_items", []), *({"added_utc": now, "count": len(a.indices), "first_index": a.indices[0]} for a in added)]
    manifest["files"] = {
        p.relative_to(tmp).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(tmp.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    _write_json(manifest, tmp / MANIFEST)
    _set_modes(tmp)
    return manifest
