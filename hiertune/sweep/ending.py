"""How a sweep's Ray Tune run ended: every trial run, the time budget spent, or Ctrl+C.

Ray Tune turns the first Ctrl+C into a clean stop (it saves its state one last time) and returns
from `Tuner.fit` as if the run had ended; it keeps no record of why. `EndWatch`, a Tune callback,
notes the signal on its way to Ray's handler. Callbacks are pickled with the tuner and come back
from it on `--resume`, so the note is the module's, not the instance's.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from ray import tune

_interrupted = threading.Event()

FINISHED, BUDGET, INTERRUPTED = "finished", "budget", "interrupted"


class EndWatch(tune.Callback):
    def setup(self, **info):
        # Called by Tune's controller after Tune installed its SIGINT handler, in the driver's thread.
        _interrupted.clear()
        ray_handler = signal.getsignal(signal.SIGINT)
        if not callable(ray_handler) or threading.current_thread() is not threading.main_thread():
            return

        def note(sig, frame):
            _interrupted.set()
            ray_handler(sig, frame)

        signal.signal(signal.SIGINT, note)


def worker_setup() -> None:
    """A local Ray worker's start (runtime_env worker_process_setup_hook): Ctrl+C is the driver's,
    and Ray's note on each trial restored from a checkpoint stays out of the console (the
    sweep's own lines say which trials continue), as does the exit Ray asks of it (`_quiet_exit`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("ray.tune.trainable").setLevel(logging.WARNING)
    sys.unraisablehook = _quiet_exit


def _quiet_exit(unraisable) -> None:
    """Ray stops a worker with SIGTERM, whose handler raises SystemExit. When the signal lands in a
    weakref callback, Python cannot raise it there and prints "Exception ignored in ...
    SystemExit" with a traceback to the sweep's console (cpython #95959): Ray's exit, not an
    error, so it goes unprinted; any other unraisable exception is printed as Python would."""
    if not issubclass(unraisable.exc_type, SystemExit):
        sys.__unraisablehook__(unraisable)


def how_it_ended(unfinished: int, budget: float | None) -> str:
    """`unfinished`: trials the run planned that did not end (cut, or never started)."""
    if _interrupted.is_set():
        return INTERRUPTED
    if unfinished and budget:
        return BUDGET
    return INTERRUPTED if unfinished else FINISHED
