"""The results of a sweep's probes (what an epoch costs here, how separable the image sources
are), kept under the cache root so that the next sweep on the same data, backbone and machine
reads them instead of measuring again.

One JSON file per probe and key, `<cache root>/probes/<probe>-<key>.json`: the key is a sha256
over everything the result depends on (the probe's own inputs, which the caller names, this
format's version and hiertune's), the file holds the key again, when it was measured, and the
figures: named records of finite numbers. It is written to a temporary file, then renamed. A
file that does not parse, holds another key or probe, or figures that are not finite numbers
(or not the records the caller expects) is only a cache: it is said in one line and measured
again, which overwrites it; it is never read as figures.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from hiertune import __version__
from hiertune.fsutil import atomic_file

log = logging.getLogger("hiertune")

FORMAT = "hiertune-probe"
FORMAT_VERSION = 1
Records = dict[str, dict[str, float]]  # record name -> field -> figure


@dataclass(frozen=True)
class ProbeResult:
    records: Records
    measured: str  # when, UTC, ISO 8601
    cached: bool  # read from an earlier measurement


def probe_key(probe: str, inputs: dict) -> str:
    parts = {"format": FORMAT, "version": FORMAT_VERSION, "hiertune": __version__, "probe": probe, "inputs": inputs}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def probe_path(cache_root: Path, probe: str, key: str) -> Path:
    return Path(cache_root) / "probes" / f"{probe}-{key}.json"


def cached_probe(cache_root: Path | None, probe: str, inputs: dict, measure: Callable[[], Records],
                 expected: Collection[str] | None = None, fresh: bool = False) -> ProbeResult:
    """`probe`'s records for `inputs`: read from the cache root when an earlier run measured them
    there, else `measure()`d and written (no cache root: measured, nothing written). `expected`:
    the record names the caller needs; a file without them is measured again. `fresh`: measured
    again even where an earlier run's figures are kept, which they replace (a user who knows they
    were measured on a busy machine)."""
    if cache_root is None:
        return ProbeResult(measure(), _now(), False)
    key = probe_key(probe, inputs)
    path = probe_path(cache_root, probe, key)
    if path.exists() and not fresh:
        try:
            return _read(path, probe, key, expected)
        except ValueError as exc:
            log.warning("warning: %s: %s; measured again", path, exc)
    measured = measure()
    try:
        records = _checked(measured)
    except ValueError:  # a figure that is not a number (a probe that could not tell): said as it is, not kept
        return ProbeResult(measured, _now(), False)
    result = ProbeResult(records, _now(), False)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "probe": probe, "key": key,
                                   "measured": result.measured, "records": records}, allow_nan=False, indent=1))
    return result


def _read(path: Path, probe: str, key: str, expected: Collection[str] | None) -> ProbeResult:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ValueError(f"unreadable ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or raw.get("version") != FORMAT_VERSION:
        raise ValueError(f"not a {FORMAT} file of version {FORMAT_VERSION}")
    if raw.get("probe") != probe or raw.get("key") != key:
        raise ValueError("written for another probe or key")
    if not isinstance(raw.get("measured"), str):
        raise ValueError("no time of measurement")
    records = _checked(raw.get("records"))
    if expected is not None and set(records) != set(expected):
        raise ValueError(f"holds records {sorted(records)}, not {sorted(expected)}")
    return ProbeResult(records, raw["measured"], True)


def _checked(records) -> Records:
    """`records` if they are named records of finite numbers; ValueError otherwise."""
    if not isinstance(records, dict):
        raise ValueError("records are not a mapping")
    for name, fields in records.items():
        if not isinstance(name, str) or not isinstance(fields, dict) or not fields:
            raise ValueError(f"record {name!r} is not a mapping of figures")
        for field, value in fields.items():
            if not isinstance(field, str) or isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise ValueError(f"record {name!r}: {field!r} is not a finite number")
    return {name: {f: float(v) for f, v in fields.items()} for name, fields in records.items()}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
