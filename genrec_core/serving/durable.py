"""Durable, all-or-nothing replacement of a folder, and the lock that serialises its writers.

A bundle is rewritten by building the new folder beside it (``.NAME.<random>.tmp``), fsyncing
every file and folder of it, checking it (the caller's ``verify``), and only then putting it at
the bundle's path: on Linux with one ``renameat2(RENAME_EXCHANGE)`` (the path never stops naming a
complete bundle), elsewhere with two renames (the old folder moved aside first). The old folder is
deleted last and the parent folder fsynced, so after a crash or ``kill -9`` at any point the path
holds the old bundle or the new one, never half of either; leftovers (``.NAME.*.tmp``,
``.NAME.*.old``) are removed by the next writer.

Writers take ``writer_lock(path)``: an exclusive ``flock`` on ``.NAME.lock`` beside the folder. It
lives beside and not inside the folder because the folder itself is swapped out by every write (a
lock on a file inside it would be a lock on the old copy).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from genrec_core.errors import GenrecError

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
#: How long a writer waits for another writer's lock before giving up (seconds).
LOCK_WAIT_S = 10.0


class BundleLocked(GenrecError):
    """Another process (or request) is writing the same bundle."""


def lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def writer_lock(target: str | Path, wait_s: float | None = None) -> Iterator[None]:
    """Hold the exclusive writer lock of ``target`` (waiting up to ``wait_s``, default
    ``LOCK_WAIT_S``; ``BundleLocked`` after)."""
    target = Path(target)
    wait_s = LOCK_WAIT_S if wait_s is None else wait_s
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(target), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() >= deadline:
                    raise BundleLocked(
                        f"{target}: another writer holds {lock_path(target).name} (genrec add-items, export or a server's save); try again when it is done"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def new_temp_dir(target: Path) -> Path:
    """An empty folder beside ``target`` for building its replacement."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))


def remove_leftovers(target: Path) -> None:
    """Delete the temporary and old folders a killed writer left beside ``target`` (hold the lock)."""
    for p in target.parent.glob(f".{target.name}.*"):
        if p.is_dir() and not p.is_symlink() and (p.name.endswith(".tmp") or p.name.endswith(".old")):
            shutil.rmtree(p, ignore_errors=True)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file, then every folder (deepest first), so the tree survives a power cut."""
    entries = sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True)
    for p in entries:
        if p.is_file() and not p.is_symlink():
            fsync_path(p)
    for p in [*(e for e in entries if e.is_dir() and not e.is_symlink()), folder]:
        fsync_path(p)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the system cannot."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def publish_dir(new: Path, target: Path, verify: Callable[[Path], object] | None = None) -> None:
    """Make the finished folder ``new`` (beside ``target``) the folder at ``target``, durably.

    ``verify(new)`` runs after the fsync and before the swap; if it raises, ``target`` is untouched.
    """
    fsync_tree(new)
    if verify is not None:
        verify(new)
    if not target.exists():
        os.rename(new, target)
    elif _exchange(new, target):
        old = new.with_name(new.name[: -len(".tmp")] + ".old")
        os.rename(new, old)  # ``new`` now names the old bundle
        fsync_path(target.parent)
        shutil.rmtree(old, ignore_errors=True)
    else:  # two renames: the path is briefly empty, the old bundle kept until the new one is in
        old = new.with_name(new.name[: -len(".tmp")] + ".old")
        os.rename(target, old)
        os.rename(new, target)
        fsync_path(target.parent)
        shutil.rmtree(old, ignore_errors=True)
    fsync_path(target.parent)
