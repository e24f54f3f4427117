"""Atomic writes: a reader never sees a half-written file or directory; and the checks and the
lock that let a command refuse before it writes anything."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from hiertune.errors import UserError


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make results unreadable to other users
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; it becomes `path` only if the block succeeds.

    With overwrite=True an existing `path` is replaced (moved aside, then deleted), so a crash
    leaves either the old directory or the new one, never a mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp's 0700, as in atomic_file
        if path.exists():
            if not overwrite:
                raise FileExistsError(path)
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_writable(path: str | os.PathLike, what: str, folder: bool) -> None:
    """`path` can be written as a folder (folder=True) or a file: found now, in one line naming
    `what`, not as a traceback from the first write. Nothing is created."""
    path = Path(path).absolute()
    if path.exists() and path.is_dir() != folder:
        raise UserError(f"{what} {path}: is {'not ' if folder else ''}a folder")
    existing = next(p for p in (path.parent, *path.parents) if p.exists()) if not path.exists() else path
    if not existing.is_dir():
        raise UserError(f"{what} {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path}: {existing} is not writable")


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, busy: str) -> Iterator[None]:
    """Hold an exclusive lock on an existing file or folder for the block; if another process
    holds it, refuse at once with the one line `busy`."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(busy) from None
        yield
    finally:
        os.close(fd)  # releases the lock
