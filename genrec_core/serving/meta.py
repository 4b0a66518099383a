"""``ModelMeta``: what a served model knows beyond its weights and catalogue.

Filled by the loaders (``serving.loading``), read and extended by the ranking class when items are
added (``serving.api``), read and updated by the bundle writers (``serving.bundle``). Nothing of
it is written to disk as such: the bundle's manifest (``manifest``) is kept here as read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genrec_core.paths import ArtifactPaths
from genrec_core.serving.new_items import AddedItems


@dataclass
class ModelMeta:
    """Where a served model came from, and what adding items to it needs."""

    #: how a new item's text is embedded (``new_items.encoder_spec``); None: it cannot add items
    encoder: dict[str, Any] | None = None
    #: the tokenizer that made the item IDs (gives added items theirs); None: an item-ID model
    tokenizer_path: Path | None = None
    #: a workspace's artifact paths (export reads best.pt, the ID table, the kept tokenizer there)
    paths: ArtifactPaths | None = None
    #: a bundle's manifest as loaded, or as this process last saved it
    manifest: dict[str, Any] | None = None
    #: sha256 of that manifest's bytes: a save refuses when the bundle on disk has another
    manifest_sha256: str | None = None
    #: the item batches added in memory and not yet saved to the bundle
    added: list[AddedItems] = field(default_factory=list)
    #: built on the first ``add_items`` and kept (a sentence encoder is slow to load)
    text_encoder: Any = None
    #: loaded on the first ``add_items`` and kept
    tokenizer: Any = None

    @property
    def format_version(self) -> int | None:
        """The bundle's format version (None: loaded from a workspace)."""
        return (self.manifest or {}).get("format_version")
