"""Whether a feature-cache file holds what it claims to: the cache key in its name and metadata
says which features they are, and the sha256 of its arrays, written beside the key, says that
these are the values that were computed for it. A file rewritten with the right key but other
values, or holding values that are not numbers, is not used (hiertune.training.features)."""

from __future__ import annotations

import hashlib

import numpy as np

DIGEST_KEY = "sha256"  # the metadata entry holding the arrays' digest


def content_digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over every array's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype}|{a.shape}|".encode())
        h.update(a.data)
    return h.hexdigest()


def problem(arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> str | None:
    """Why these arrays, read from a cache file with this metadata, must not be used; None if
    they may."""
    expected = metadata.get(DIGEST_KEY)
    if expected is None:
        return "no content digest"
    if content_digest(arrays) != expected:
        return "its values do not match their digest (rewritten or damaged)"
    for name, a in arrays.items():
        if not np.isfinite(a).all():
            return f"{name} holds NaN or infinite values"
    return None
