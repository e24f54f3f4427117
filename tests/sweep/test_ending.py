"""A local Ray worker's start: Ray's SIGTERM exit stays off the console, real errors do not."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
from hiertune.sweep.ending import worker_setup
worker_setup()

class Exits:  # as Ray's SIGTERM handler does when the signal lands in a finalizer
    def __del__(self):
        raise SystemExit(1)

class Fails:
    def __del__(self):
        raise ValueError("a real bug in a finalizer")

Exits()
Fails()
print("still running")
"""


def test_a_worker_keeps_rays_exit_off_the_console_and_prints_other_unraisable_errors():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "still running" in done.stdout
    assert "SystemExit" not in done.stderr
    assert "Exception ignored in" in done.stderr and "ValueError: a real bug in a finalizer" in done.stderr
