"""Names that become one path component: a sweep's `--name` (its folder under the storage root,
its MLflow experiment, its export directory). Checked in one place, so no command can write
outside its storage root or onto a hidden staging name."""

from __future__ import annotations

import unicodedata

from hiertune.errors import UserError

MAX_LENGTH = 200  # leaves room under the usual 255-byte file name limit for staging suffixes


def check_name(name: str, what: str = "--name") -> str:
    """`name` if it is one plain path component; otherwise a UserError saying why."""
    if not name or not name.strip():
        raise UserError(f"{what} {name!r}: must not be empty")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in name):  # NUL, newline; BOM, zero-width space
        raise UserError(f"{what} {name!r}: must not contain control characters (NUL, newline, …)")
    if "/" in name or "\\" in name:
        raise UserError(f"{what} {name!r}: must be a plain name, not a path (no '/' or '\\')")
    if name.startswith("."):  # '.', '..' and the hidden names of staging directories
        raise UserError(f"{what} {name!r}: must not start with '.'")
    if name != name.strip():
        raise UserError(f"{what} {name!r}: must not start or end with spaces")
    if len(name.encode()) > MAX_LENGTH:
        raise UserError(f"{what} {name[:40]!r}…: longer than {MAX_LENGTH} bytes")
    return name
