"""Load what a served model is made of, from either storage form: a pipeline workspace or a bundle.

- a workspace: the train stage's ``data/recommender/best.pt`` (through
  ``recommender.checkpoint``, the one model loader), the preprocess stage's items and sequences,
  and the params (``params.yaml``; the defaults when there is none);
- a bundle (``genrec export``, format in ``serving.bundle_format``): checked (format, version,
  file names, every sha256), then its safetensors weights, item tokens and tables.

Both give ``ServingParts``; ``serving.api.ServingModel.from_parts`` makes the ranking object of
them. ``load_parts`` tells the forms apart by the bundle's ``manifest.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from safetensors import SafetensorError
from safetensors.torch import load_file

from genrec_core.config import load_params
from genrec_core.errors import InputFormatError
from genrec_core.io import read_parquet
from genrec_core.paths import ArtifactPaths
from genrec_core.recommender.checkpoint import LoadedRecommender, load_recommender, recommender_from_checkpoint
from genrec_core.recommender.checkpoint_format import BEST
from genrec_core.serving.bundle_format import (
    ITEM_TOKENS,
    ITEMS,
    MANIFEST,
    MODEL_JSON,
    TOKENIZER_DIR,
    USERS,
    WEIGHTS,
    manifest_digest,
    read_manifest_and_digest,
    restore_shared,
)
from genrec_core.serving.catalog import catalogue_frame
from genrec_core.serving.errors import BundleError
from genrec_core.serving.meta import ModelMeta
from genrec_core.serving.new_items import encoder_spec

log = logging.getLogger(__name__)

#: Reads of a bundle repeated when another writer swapped it meanwhile.
BUNDLE_READ_TRIES = 3


@dataclass
class ServingParts:
    """A loaded model and everything ranking with it needs, before it becomes a ``ServingModel``."""

    loaded: LoadedRecommender
    frame: pl.DataFrame  # the catalogue table (serving.catalog.catalogue_frame's columns)
    max_len: int  # the training window: histories are cut to their last max_len items
    beam_size: int  # evaluate.beam_size: the fewest beams a generative model ranks with
    batch_size: int  # evaluate.batch_size: histories per model call
    params: dict[str, Any]  # the params the model came from (params.yaml as a dict, recommender as trained)
    users: dict[str, int] | None  # source user id -> user index (models with user tokens only)
    source: str  # the workspace or bundle folder
    meta: ModelMeta


def load_parts(path: str | Path = ".", device: str = "cpu", params_file: str | Path | None = None) -> ServingParts:
    """A bundle folder (has ``manifest.json``) or a workspace root (``params_file``: workspaces only)."""
    path = Path(path)
    if (path / MANIFEST).exists():
        return bundle_parts(path, device)
    return workspace_parts(path, device=device, params_file=params_file)


# --------------------------------------------------------------------------- workspace


def workspace_parts(root: str | Path = ".", device: str = "cpu", params_file: str | Path | None = None) -> ServingParts:
    """From the pipeline's outputs under ``root``; params from ``params_file`` (default
    ``root/params.yaml``; the defaults when there is none)."""
    root = Path(root)
    paths = ArtifactPaths(root)
    loaded = load_recommender(paths.recommender_dir / BEST, device)
    if params_file is None and (root / "params.yaml").exists():
        params_file = root / "params.yaml"
    if params_file is None:
        log.warning("%s has no params.yaml: taking the default params (data.max_items, evaluate.beam_size)", root)
    params = load_params(params_file)
    params_dict = dataclasses.asdict(params)
    params_dict["recommender"] = dataclasses.asdict(loaded.params)  # what the model was trained with
    items = read_parquet(paths.items, "items table (stage preprocess)")
    sequences = read_parquet(paths.sequences, "sequences table (stage preprocess)") if paths.sequences.exists() else None
    try:
        frame = catalogue_frame(items, sequences)
    except ValueError as exc:
        raise InputFormatError(paths.items, str(exc)) from None
    users = None
    if loaded.params.user_tokens and sequences is not None:
        users = dict(zip(sequences["source_user_id"].cast(pl.String).to_list(), sequences["user_id"].to_list()))
    return ServingParts(
        loaded,
        frame,
        max_len=_max_len(loaded, params.data.max_items),
        beam_size=params.evaluate.beam_size,
        batch_size=params.evaluate.batch_size,
        params=params_dict,
        users=users,
        source=str(root),
        meta=ModelMeta(
            encoder=encoder_spec(params_dict, _read_json(paths.reports_dir / "embed.json"), _read_json(paths.dataset_info)),
            tokenizer_path=(paths.tokenizer_dir / "kept" / f"{loaded.tokenizer}.pt") if loaded.tokenizer else None,
            paths=paths,
        ),
    )


def _max_len(loaded: LoadedRecommender, max_items: int) -> int:
    """The training window: an item-ID model's own ``max_len``, else ``data.max_items``."""
    config = getattr(loaded.model, "config", None)
    if isinstance(config, dict) and "max_len" in config:
        return int(config["max_len"])
    return int(max_items)


def _read_json(path: Path) -> dict | None:
    """A report's JSON, None when it is missing or unreadable (the encoder description is optional)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    except (OSError, json.JSONDecodeError):
        return None


# --------------------------------------------------------------------------- bundle


def bundle_parts(path: str | Path, device: str = "cpu", verify: bool = True) -> ServingParts:
    """From a bundle folder, checked (``bundle_format.read_manifest``).

    A writer may swap the folder while it is read: when the manifest changed during the read, the
    read is repeated (a few times), so the files loaded are one bundle's."""
    path = Path(path)
    for _ in range(BUNDLE_READ_TRIES):
        before = manifest_digest(path)
        try:
            parts = _read_bundle(path, device, verify)
        except BundleError:
            if before is None or manifest_digest(path) == before:
                raise  # the bundle itself is bad, not swapped while read
            continue
        if manifest_digest(path) == parts.meta.manifest_sha256 == before:
            return parts
    raise BundleError(f"{path}: the bundle kept changing while it was read (another writer); try again")


def _read_bundle(path: Path, device: str, verify: bool) -> ServingParts:
    manifest, digest = read_manifest_and_digest(path, verify)
    try:
        model_json = json.loads((path / MODEL_JSON).read_text(encoding="utf-8"))
        weights = load_file(str(path / WEIGHTS))
        item_tokens = load_file(str(path / ITEM_TOKENS))["item_tokens"] if (path / ITEM_TOKENS).exists() else None
        items = pl.read_parquet(path / ITEMS)
        users = pl.read_parquet(path / USERS) if (path / USERS).exists() else None
    except (OSError, json.JSONDecodeError, SafetensorError, KeyError, pl.exceptions.PolarsError) as exc:
        raise BundleError(f"{path}: unreadable bundle file ({type(exc).__name__}: {exc})") from None
    weights = restore_shared(weights, model_json.pop("aliases", {}))
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
    return ServingParts(
        loaded,
        items,
        max_len=serving.get("max_len", manifest["params"]["data"]["max_items"]),
        beam_size=serving.get("beam_size", manifest["params"]["evaluate"]["beam_size"]),
        batch_size=serving.get("batch_size", manifest["params"]["evaluate"]["batch_size"]),
        params=manifest.get("params", {}),
        users=user_map,
        source=str(path),
        meta=ModelMeta(
            encoder=manifest.get("encoder"),
            tokenizer_path=path / TOKENIZER_DIR / f"{loaded.tokenizer}.pt" if loaded.tokenizer else None,
            manifest=manifest,
            manifest_sha256=digest,
        ),
    )
