"""The exported bundle's format on disk: its layout, the manifest's checks, shared weights.

Layout of a bundle folder (``FORMAT_VERSION`` 1):

- ``manifest.json``: ``format`` ("genrec-bundle"), ``format_version``, ``created_utc``,
  ``model_kind``, ``tokenizer``, ``serving`` (max_len, beam_size, batch_size), ``params`` (the
  params the model came from, params.yaml as a dict, recommender section as trained),
  ``checkpoint`` (fingerprint, epoch, step, validation metrics of best.pt) and ``files``:
  ``{relative path: {"sha256", "bytes"}}`` for every other file;
- ``model.safetensors``: the weights (tensors that share storage, e.g. T5's tied embeddings,
  stored once; ``model.json``'s ``aliases`` maps the other names to them: ``dedupe_shared``
  writes them, ``restore_shared`` reads them back);
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

``read_manifest`` checks the format, the version, that every listed name is a plain relative path
inside the folder (no ``..``, no absolute path, no symlink) and every file's sha256, and fails with
one ``BundleError`` line otherwise. Loading a bundle is ``serving.loading``'s; writing one is
``serving.bundle``'s.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from genrec_core.io import sha256_file
from genrec_core.serving.errors import BundleError
from genrec_core.serving.new_items import quote_id

FORMAT = "genrec-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
MODEL_JSON = "model.json"
ITEM_TOKENS = "item_tokens.safetensors"
ITEMS = "items.parquet"
IDS = "ids.parquet"
USERS = "users.parquet"
TOKENIZER_DIR = "tokenizer"


def dedupe_shared(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors stored once, {alias: stored name}) for a state dict whose tensors may share storage
    (safetensors refuses shared tensors)."""
    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in state.items():
        key = (
            (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
            if tensor.numel()
            else None
        )
        if key is not None and key in seen:
            aliases[name] = seen[key]
            continue
        if key is not None:
            seen[key] = name
        stored[name] = tensor.detach().cpu().contiguous()
    return stored, aliases


def restore_shared(weights: dict[str, torch.Tensor], aliases: dict[str, str]) -> dict[str, torch.Tensor]:
    """``weights`` with every alias of ``dedupe_shared`` pointing at its stored tensor again."""
    for alias, name in aliases.items():
        weights[alias] = weights[name]
    return weights


def is_bundle(path: Path) -> bool:
    """Whether ``path`` holds a genrec bundle's manifest (its files are not checked)."""
    try:
        return json.loads((path / MANIFEST).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def manifest_digest(path: str | Path) -> str | None:
    """sha256 of the bundle's manifest.json (None when there is none): which bundle is on disk."""
    try:
        return hashlib.sha256((Path(path) / MANIFEST).read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def check_member(path: Path, name: Any) -> Path:
    """The file ``name`` of a manifest's list, which must be a plain relative path inside the
    bundle folder ``path``: no absolute path, no ``..``, no backslash, no symlink on the way."""
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
    return read_manifest_and_digest(Path(path), verify)[0]


def read_manifest_and_digest(path: Path, verify: bool) -> tuple[dict[str, Any], str]:
    """(``read_manifest``'s manifest, sha256 of its bytes)."""
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
        raise BundleError(
            f"{path}: bundle format version {version!r}, but this genrec reads version {FORMAT_VERSION}; export the model again with this version "
            "(genrec export)"
        )
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
                raise BundleError(
                    f"{f}: sha256 {got[:12]}... differs from the manifest's {str(entry.get('sha256'))[:12]}...: the bundle was modified or is "
                    "incomplete; export it again"
                )
    return manifest, hashlib.sha256(raw).hexdigest()
