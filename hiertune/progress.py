"""Progress of long work as log lines a user can follow: done, rate, time left."""

from __future__ import annotations

import logging
import sys
import threading
import time

log = logging.getLogger("hiertune")


def duration(seconds: float, clock: bool = False) -> str:
    m, s = divmod(int(seconds), 60)
    if clock:
        return f"{m}:{s:02d}"
    if m >= 60:
        return f"{m // 60}h{m % 60:02d}m"
    return f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """One line every `every` seconds while `total` items are processed (from any thread):
    how many are done, the rate and the time left; one closing line with the total rate."""

    def __init__(self, what: str, total: int, unit: str = "images", every: float = 15.0):
        self.what, self.total, self.unit, self.every = what, total, unit, every
        self.count = 0
        self.start = self.last = time.monotonic()
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.count += n
            now = time.monotonic()
            if now - self.last < self.every or self.count >= self.total:
                return
            self.last = now
            rate = self.count / (now - self.start)
            log.info("%s: %d/%d %s, %.1f %s/s, ETA %s", self.what, self.count, self.total, self.unit, rate,
                     self.unit, duration((self.total - self.count) / rate))

    def close(self) -> None:
        seconds = max(time.monotonic() - self.start, 1e-9)
        log.info("%s: %d %s in %s (%.1f %s/s)", self.what, self.count, self.unit, duration(seconds),
                 self.count / seconds, self.unit)


def log_to_stderr() -> None:
    """INFO lines of hiertune on stderr in a process nobody configured logging in (a Ray task's
    worker, whose stderr Ray forwards to the driver's console)."""
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
