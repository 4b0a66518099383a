"""Atomic artifact writing: every output goes to a temporary sibling and is renamed into place.

A rename within one directory is atomic on POSIX, so a stage killed mid-write leaves either the
previous complete file or none, never a truncated Parquet/JSON/checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_parquet(df: pl.DataFrame, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        df.write_parquet(tmp, compression="zstd", statistics=True)
    return Path(path)


def write_json(obj: Any, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return Path(path)


def write_text(text: str, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def save_torch(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through a file handle: given a path, torch names the archive's root folder
    after the file, here a random temporary name, so equal objects gave different bytes (and DVC
    saw a changed output on every rerun); a handle gets the fixed name ``archive``."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (checksums, resume fingerprints)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_parquet(path: str | Path, what: str = "artifact") -> pl.DataFrame:
    """Read a stage artifact, with an error that says which stage to run when it is missing."""
    from genrec_core.errors import MissingInputError

    path = Path(path)
    if not path.exists():
        raise MissingInputError(path, f"{what}; run the stage that produces it first (dvc repro)")
    return pl.read_parquet(path)
