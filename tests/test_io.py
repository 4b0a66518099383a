"""Atomic artifact writers: equal content gives equal bytes (DVC compares outputs by md5)."""

from __future__ import annotations

import hashlib
import zipfile

import torch

from genrec_core.io import save_torch


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_save_torch_writes_the_same_bytes_for_the_same_object(tmp_path):
    """Saved by path, torch named the archive after the random temporary file, so two saves of one
    object differed and every rerun of a stage looked like a changed output."""
    obj = {"weights": torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), "epoch": 7, "nested": {"ids": torch.arange(5)}}
    a, b = save_torch(obj, tmp_path / "a.pt"), save_torch(obj, tmp_path / "sub" / "b.pt")
    assert _md5(a) == _md5(b)
    assert all(name.startswith("archive/") for name in zipfile.ZipFile(a).namelist())
    loaded = torch.load(a, weights_only=False)
    assert torch.equal(loaded["weights"], obj["weights"]) and torch.equal(loaded["nested"]["ids"], obj["nested"]["ids"]) and loaded["epoch"] == 7
    assert not list(tmp_path.glob(".*.tmp")) and not list((tmp_path / "sub").glob(".*.tmp"))  # no temporary file left
