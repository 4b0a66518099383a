"""The one interface every raw data source implements, and the registry that finds them by name.

A source reads a dataset in its own published format and returns ``RawDataset``: the raw
interactions and the items' text fields, with the dataset's own ids kept as strings. Everything
after that (k-core, ordering, splits, integer ids) is source-independent and lives in
``genrec_core.data.protocol``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import polars as pl

from genrec_core.config import DataParams
from genrec_core.errors import ParamError

#: Columns and dtypes of ``RawDataset.interactions``.
INTERACTION_SCHEMA = {"user": pl.String, "item": pl.String, "timestamp": pl.Int64, "order": pl.Int64}


@dataclass
class RawDataset:
    """What a source hands to the protocol.

    interactions: one row per interaction, columns ``INTERACTION_SCHEMA``. ``timestamp`` is an integer in
        the source's own unit, only its order matters (null for pre-sequenced sources); ``order`` is the row's position in the source
        (0-based), which breaks timestamp ties so that sorting is stable w.r.t. the input.
    items: one row per known item: ``item`` (String) plus String text fields (title, genres,
        year, categories, description, brand, ...); items with interactions but no row get
        empty text.
    default_template: the item-text template the embed stage uses when ``embed.template: auto``.
    presequenced: the source gives each user's items already in time order (no timestamps).
    """

    interactions: pl.DataFrame
    items: pl.DataFrame
    default_template: str
    presequenced: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        missing = [c for c in INTERACTION_SCHEMA if c not in self.interactions.columns]
        if missing:
            raise ValueError(f"source {self.name!r} returned interactions without columns {missing}")
        self.interactions = self.interactions.select([pl.col(c).cast(t) for c, t in INTERACTION_SCHEMA.items()])
        if "item" not in self.items.columns:
            raise ValueError(f"source {self.name!r} returned items without an 'item' column")
        self.items = self.items.with_columns(pl.col("item").cast(pl.String))


class Source(ABC):
    """A dataset reader. Subclasses set ``name`` and implement ``load``."""

    name: ClassVar[str]

    def __init__(self, params: DataParams):
        self.params = params

    @property
    def raw_dir(self) -> Path:
        if self.params.raw_dir is None:
            raise ParamError("data.raw_dir", f"dataset {self.name!r} needs raw_dir")
        return Path(self.params.raw_dir)

    @abstractmethod
    def load(self) -> RawDataset:
        """Read the raw files; raise InputFormatError/MissingInputError on bad input."""


SOURCES: dict[str, type[Source]] = {}


def register_source(cls: type[Source]) -> type[Source]:
    """Class decorator: make a source selectable by ``data.dataset: <cls.name>``."""
    SOURCES[cls.name] = cls
    return cls


#: Modules of ``genrec_core.data.sources`` whose import registers the built-in sources.
BUILTIN_SOURCE_MODULES = ("movielens", "atomic", "yelp", "amazon2023", "inter_json", "idgenrec")


def get_source(params: DataParams) -> Source:
    import importlib

    for module in BUILTIN_SOURCE_MODULES:
        importlib.import_module(f"genrec_core.data.sources.{module}")

    if params.dataset not in SOURCES:
        raise ParamError("data.dataset", f"unknown dataset {params.dataset!r}; choose one of {', '.join(sorted(SOURCES))}")
    return SOURCES[params.dataset](params)
