"""How a trial fails: which failures are worth a retry, and the test-only fault plan.

Ray Tune retries a failed trial from its latest checkpoint (`tune.max_failures`). That helps a
trial whose node was preempted or whose worker was killed, and is pure waste for a failure that
the same checkpoint and config reproduce: a diverged loss (the restored weights, optimizer and
random state replay the same epoch), an out-of-memory error (a trial's memory need follows from
its config: backbone, batch size, its GPU share), an unreadable checkpoint, bad input. Those are
*final*.

The fault plan (`TrialConfig.faults`) is for tests only: it makes chosen trials of a real sweep
fail in a chosen way at a chosen epoch, so tests/faults can drive every failure path for real.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from hiertune.errors import UserError, first_line

# What a trial reports to Ray just before raising a final failure: the reason, for the sweep's
# records, and the sign for `hiertune.sweep.trainable.FinalFailures` that a retry would be waste.
FAILURE_KEY = "failure"
FAULT_KINDS = ("raise", "raise_once", "nan", "oom", "stall")
STALL_SECONDS = 600


class TrialFailed(RuntimeError):
    """A trial that cannot go on; Ray retries it from its latest checkpoint unless `final`."""

    final = False


class TrialDiverged(TrialFailed):
    final = True


class CheckpointUnreadable(TrialFailed):
    final = True


def final_reason(exc: BaseException) -> str | None:
    """The one-line reason of a failure a retry would repeat; None for one worth retrying."""
    if isinstance(exc, torch.OutOfMemoryError):
        return f"out of memory: {first_line(exc, 300)}"
    if isinstance(exc, UserError) or (isinstance(exc, TrialFailed) and exc.final):
        return str(exc)
    return None


@dataclass(frozen=True)
class Fault:
    kind: str  # one of FAULT_KINDS
    epoch: int  # 0-based epoch at whose start it strikes

    def strike(self, epoch: int, attempt: int) -> bool:
        """Called at the start of every epoch; True means: poison this epoch's loss with NaN."""
        if epoch != self.epoch:
            return False
        if self.kind == "raise" or (self.kind == "raise_once" and attempt == 1):
            raise TrialFailed(f"injected fault {self.kind}@{epoch} (test setting)")
        if self.kind == "oom":
            raise torch.OutOfMemoryError(f"CUDA out of memory: injected fault oom@{epoch} (test setting)")
        if self.kind == "stall" and attempt == 1:
            # Holds the worker here, after the previous epoch's checkpoint, until the test kills it.
            time.sleep(STALL_SECONDS)
            raise TrialFailed(f"injected fault stall@{epoch}: nothing killed the worker (test setting)")
        return self.kind == "nan"


def fault_for(plan: str, trial_number: int) -> Fault | None:
    """The fault `plan` assigns to trial `trial_number`: plan items are `N=KIND@EPOCH` separated
    by ';', N the trial's number in its sweep (0-based) or `*` for every trial."""
    faults = parse_plan(plan)
    return faults.get(trial_number, faults.get("*"))


def parse_plan(plan: str) -> dict[int | str, Fault]:
    faults: dict[int | str, Fault] = {}
    for item in filter(None, (part.strip() for part in plan.split(";"))):
        trial, _, rest = item.partition("=")
        kind, _, epoch = rest.partition("@")
        trial = trial.strip()
        if not (trial == "*" or trial.isdigit()) or kind not in FAULT_KINDS or not epoch.isdigit():
            raise UserError(f"faults: {item!r} is not N=KIND@EPOCH (N a trial number or *, "
                            f"KIND one of {', '.join(FAULT_KINDS)})")
        faults[trial if trial == "*" else int(trial)] = Fault(kind, int(epoch))
    return faults
