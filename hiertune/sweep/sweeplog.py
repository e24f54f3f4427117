"""The sweep's log file, `<sweep>/sweep.log`: every hiertune line, and Ray's own messages, which
stay off the console unless --verbose (its hints name Ray's API, `Tuner.restore(...)`, not the
hiertune command; its warnings and tracebacks on a Ctrl+C are Ray's to mind)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from hiertune.secrets import redact

LOG_NAME = "sweep.log"


@contextlib.contextmanager
def sweep_log(sweep_dir: Path, verbose: bool) -> Iterator[Path]:
    path = sweep_dir / LOG_NAME
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(RedactingFormatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    ours, ray_logger = logging.getLogger("hiertune"), logging.getLogger("ray")
    console = [] if verbose else [h for h in ray_logger.handlers if isinstance(h, logging.StreamHandler)
                                  and not isinstance(h, logging.FileHandler)]
    for h in console:
        ray_logger.removeHandler(h)
    ours.addHandler(handler)
    ray_logger.addHandler(handler)
    try:
        yield path
    finally:
        ours.removeHandler(handler)
        ray_logger.removeHandler(handler)
        for h in console:
            ray_logger.addHandler(h)
        handler.close()


class RedactingFormatter(logging.Formatter):
    """Every log line, console or file, through the one redaction filter."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
