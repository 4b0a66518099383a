"""Downloading ml-100k: cache hits stay offline, every checksum is enforced, failures say what to do.

All tests but one use fake fetchers; ``test_real_pypi_download`` (marked network) runs pip.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import urllib.error
import zipfile
from pathlib import Path

import pytest

from genrec_core.data import download
from genrec_core.data.download import (
    GROUPLENS_SPEC,
    PYPI_SPEC,
    DownloadSpec,
    obtain,
    obtain_ml100k,
    sha256_file,
)
from genrec_core.errors import GenrecError, ParamError

MEMBERS = {"pkg/data/a.inter": b"user_id:token\titem_id:token\nu\ti\n", "pkg/data/a.item": b"item_id:token\ni\n"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


ARCHIVE = make_zip(MEMBERS)


def spec(archive_sha: str | None = sha(ARCHIVE), members: dict[str, bytes] = MEMBERS) -> DownloadSpec:
    return DownloadSpec(
        cache_name="toy",
        what="toy data",
        archive_sha256=archive_sha,
        members={m: (Path(m).name, sha(d)) for m, d in members.items()},
    )


class FakeFetch:
    """Writes a given archive into the scratch folder and counts its calls."""

    def __init__(self, archive: bytes = ARCHIVE):
        self.archive = archive
        self.calls = 0

    def __call__(self, scratch: Path) -> Path:
        self.calls += 1
        path = scratch / "thing.whl"
        path.write_bytes(self.archive)
        return path


def no_network(scratch: Path) -> Path:
    raise AssertionError("the network was used although the cache is valid")


def test_fetch_extract_then_cache_hit(tmp_path):
    fetch = FakeFetch()
    target = obtain(spec(), tmp_path, fetch)
    assert target == tmp_path / "toy"
    assert (target / "a.inter").read_bytes() == MEMBERS["pkg/data/a.inter"]
    assert (target / "a.item").read_bytes() == MEMBERS["pkg/data/a.item"]
    assert sorted(p.name for p in target.iterdir()) == ["a.inter", "a.item"]  # no scratch or temp left
    assert fetch.calls == 1
    assert obtain(spec(), tmp_path, no_network) == target


def test_corrupt_cache_is_fetched_again(tmp_path):
    obtain(spec(), tmp_path, FakeFetch())
    (tmp_path / "toy" / "a.item").write_bytes(b"truncated")
    fetch = FakeFetch()
    target = obtain(spec(), tmp_path, fetch)
    assert fetch.calls == 1
    assert (target / "a.item").read_bytes() == MEMBERS["pkg/data/a.item"]


def test_archive_checksum_mismatch(tmp_path):
    with pytest.raises(GenrecError, match=r"checksum mismatch for toy data.*expected 0{64}.*data.raw_dir"):
        obtain(spec(archive_sha="0" * 64), tmp_path, FakeFetch())
    assert not (tmp_path / "toy" / "a.inter").exists()


def test_member_checksum_mismatch(tmp_path):
    tampered = make_zip({**MEMBERS, "pkg/data/a.item": b"item_id:token\nX\n"})
    with pytest.raises(GenrecError, match=r"checksum mismatch for pkg/data/a.item"):
        obtain(spec(archive_sha=None), tmp_path, FakeFetch(tampered))
    assert not (tmp_path / "toy" / "a.item").exists()


def test_member_missing_from_archive(tmp_path):
    partial = make_zip({"pkg/data/a.inter": MEMBERS["pkg/data/a.inter"]})
    with pytest.raises(GenrecError, match="has no member pkg/data/a.item"):
        obtain(spec(archive_sha=None), tmp_path, FakeFetch(partial))


def test_archive_not_a_zip(tmp_path):
    with pytest.raises(GenrecError, match="not a valid zip"):
        obtain(spec(archive_sha=None), tmp_path, FakeFetch(b"<html>proxy login</html>"))


def test_fetch_failure_propagates(tmp_path):
    def broken(scratch: Path) -> Path:
        raise GenrecError("could not download: offline")

    with pytest.raises(GenrecError, match="offline"):
        obtain(spec(), tmp_path, broken)


def test_unknown_origin():
    with pytest.raises(ParamError, match="data.download"):
        obtain_ml100k(Path("."), "ftp")


def test_pinned_specs():
    """The pins of the real origins (the values the project documents)."""
    assert PYPI_SPEC.archive_sha256 == "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
    assert {name for name, _ in PYPI_SPEC.members.values()} == {"ml-100k.inter", "ml-100k.item"}
    assert {name for name, _ in GROUPLENS_SPEC.members.values()} == {"u.data", "u.item", "u.genre"}


def test_obtain_ml100k_passes_the_fetcher(tmp_path):
    """obtain_ml100k goes through the injected fetcher and fails on the (fake) wheel's checksum."""
    fetch = FakeFetch()
    with pytest.raises(GenrecError, match=r"checksum mismatch for ml-100k from the PyPI wheel recbole==1\.2\.1"):
        obtain_ml100k(tmp_path, "pypi", fetch=fetch)
    assert fetch.calls == 1


@pytest.mark.shared_data
def test_grouplens_cache_hit_never_downloads(tmp_path, shared_dataset, monkeypatch):
    """Real u.* files in the cache verify against the pins, so neither default fetcher runs."""
    source = shared_dataset("ml-100k")
    cache = tmp_path / "ml-100k-grouplens"
    cache.mkdir()
    for name in ("u.data", "u.item", "u.genre"):
        shutil.copy(source / name, cache / name)
    monkeypatch.setattr(download, "http_download_grouplens", no_network)
    monkeypatch.setattr(download.urllib.request, "urlopen", no_network)
    assert obtain_ml100k(tmp_path, "grouplens") == cache
    assert obtain_ml100k(tmp_path, "grouplens", fetch=no_network) == cache


def test_pip_command_and_wheel_pickup(tmp_path, monkeypatch):
    seen = {}

    def fake_run(cmd, **kwargs):
        seen["cmd"] = cmd
        seen["timeout"] = kwargs.get("timeout")
        out = Path(cmd[cmd.index("-d") + 1])
        (out / "recbole-1.2.1-py3-none-any.whl").write_bytes(b"zip")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(download.subprocess, "run", fake_run)
    wheel = download.pip_download_recbole(tmp_path)
    assert wheel == tmp_path / "recbole-1.2.1-py3-none-any.whl"
    assert seen["cmd"][1:] == [
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "recbole==1.2.1",
        "-d",
        str(tmp_path),
    ]
    assert seen["timeout"] is not None


def test_pip_failure_is_a_clear_error(tmp_path, monkeypatch):
    def failing_run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version\nNetwork is unreachable")

    monkeypatch.setattr(download.subprocess, "run", failing_run)
    with pytest.raises(GenrecError, match=r"pip download recbole==1\.2\.1 failed.*Network is unreachable.*data\.raw_dir"):
        obtain_ml100k(tmp_path, "pypi")
    assert not (tmp_path / "ml-100k-pypi" / "ml-100k.inter").exists()


def test_http_failure_is_a_clear_error(tmp_path, monkeypatch):
    def unreachable(url, timeout=None):
        assert timeout is not None
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(download.urllib.request, "urlopen", unreachable)
    with pytest.raises(GenrecError, match=r"could not download https://files\.grouplens\.org.*data\.raw_dir"):
        obtain_ml100k(tmp_path, "grouplens")


@pytest.mark.network
def test_real_pypi_download(pypi_ml100k_dir):
    """The one test that really runs pip download: pinned files arrive and parse as ml-100k."""
    from genrec_core.data.sources.movielens import load_ml100k_recbole

    for name, expected in PYPI_SPEC.members.values():
        assert sha256_file(pypi_ml100k_dir / name) == expected
    interactions, items = load_ml100k_recbole(pypi_ml100k_dir)
    assert interactions.height == 100_000
    assert interactions["user"].n_unique() == 943
    assert interactions["item"].n_unique() == 1682
    assert items.height == 1682
    assert obtain_ml100k(pypi_ml100k_dir.parent, "pypi", fetch=no_network) == pypi_ml100k_dir
