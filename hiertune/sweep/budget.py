"""A sweep's time budget (`--budget 30m`, `budget:` in a space): how it is written and read.

The budget is the trials' wall clock, spent through Ray Tune's own `TuneConfig(time_budget_s=...)`:
when it runs out Tune stops every running trial at its last checkpoint and starts no more, and the
front, the recommended point and export-best work on what reported. It starts with the first
trial; the one-time feature extraction and the cost probe come before it. Ray keeps what is left
of it in the sweep's state (its TimeoutStopper is part of the controller state `Tuner.restore`
brings back), so `--resume` continues with the rest, and a sweep its budget ended stops again at once.
"""

from __future__ import annotations

import re

from hiertune.errors import UserError

_UNITS = {"h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(value, where: str) -> float | None:
    """`30m`, `1h30m`, `90s`, `2.5h` -> seconds; None stays None. A bare number is refused: 30
    could be seconds or minutes."""
    if value is None:
        return None
    text = str(value).strip().lower().replace(" ", "")
    match = _DURATION.fullmatch(text)
    if not text or not match or not any(match.groups()):
        raise UserError(f"{where}: {value!r} is not a duration; write it with a unit: 30m, 2h, 1h30m, 90s")
    seconds = sum(float(n) * unit for n, unit in zip(match.groups(), _UNITS.values()) if n)
    if seconds <= 0:
        raise UserError(f"{where}: the budget must be more than 0, got {value!r}")
    return seconds

