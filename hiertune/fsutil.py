"""Atomic writes: a reader never sees a half-written file or directory; and the checks and the
lock that let a command refuse before it writes anything."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from hiertune.errors import UserError


# A write that fails for these reasons is the place's fault, not a bug: one line naming it.
# EFBIG is what `ulimit -f` gives (Python ignores SIGXFSZ); ENOSPC and EDQUOT a full disk or quota.
_PLACE_ERRORS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                 errno.EEXIST, errno.ENAMETOOLONG, errno.EISDIR}


def write_error(path: str | os.PathLike, exc: BaseException) -> UserError | None:
    """`exc`, raised while writing `path`, as the one line a user acts on; None for anything that
    is not the place's fault. Writers that are not Python's own (safetensors, Arrow) report the
    errno in their message only."""
    code = getattr(exc, "errno", None)
    if code is None:
        found = re.search(r"os error (\d+)|\[Errno (\d+)\]", str(exc))
        code = int(found[1] or found[2]) if found else None
    if code not in _PLACE_ERRORS:
        return None
    return UserError(f"cannot write {path}: {os.strerror(code)}")


@contextlib.contextmanager
def _place_errors(path: Path, created: list[Path]) -> Iterator[None]:
    """Turn a failed write into one line naming `path`, and remove the folders made for it."""
    try:
        yield
    except Exception as exc:
        for folder in reversed(created):  # innermost first; only while empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        if (error := write_error(path, exc)) is not None:
            raise error from None
        raise


def _make_parents(path: Path, created: list[Path]) -> None:
    """mkdir -p of `path`'s parent, adding the folders it makes to `created` (outermost first)
    before it makes them. Any failure here (no such place, not a folder, read-only) is the
    place's: one line."""
    created += [p for p in (path.parent, *path.parent.parents) if not p.exists()][::-1]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None


def _staging(make, path: Path):
    """mkstemp / mkdtemp beside `path`, any failure one line naming it."""
    try:
        return make(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds.
    A write that fails for the place's sake (a full disk, a read-only folder) is one UserError,
    and leaves neither the temporary file nor a folder made for it."""
    path = Path(path)
    created: list[Path] = []
    with _place_errors(path, created):
        _make_parents(path, created)
        fd, tmp = _staging(tempfile.mkstemp, path)
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
    leaves either the old directory or the new one, never a mix. Failures as in atomic_file.
    """
    path = Path(path)
    created: list[Path] = []
    with _place_errors(path, created):
        _make_parents(path, created)
        tmp = Path(_staging(tempfile.mkdtemp, path))
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
    """`path` can be written as a folder (folder=True) or a file (a new one, or one to replace):
    found now, in one line naming `what`, not as a traceback from the first write. Nothing is
    created."""
    path = Path(path).absolute()
    if path.exists() and path.is_dir() != folder:
        raise UserError(f"{what} {path}: is {'not ' if folder else ''}a folder")
    # A folder is written into; a file is replaced by a rename in its folder.
    start = path if folder else path.parent
    existing = next(p for p in (start, *start.parents) if p.exists())
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
