"""An MLflow client for a store that several sweeps may write to at once.

Two sweep drivers on one SQLite file meet two problems. Both may create the schema of a new
store at the same moment, and alembic's migration in one then fails on the rows the other wrote
("Online migration expected to match one row"): creation is serialised by a file lock beside the
database. And two write transactions that both hold a read lock can deadlock on upgrading it,
which SQLite answers at once with "database is locked", whatever the busy timeout: such a call
is retried (a failed transaction was rolled back, so running it again is safe).
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

RETRIES = 8
FIRST_WAIT_S = 0.2
PROBE_TIMEOUT_S = 10


def open_client(uri: str) -> MlflowClient:
    db = sqlite_path(uri)
    if db is None:
        client = MlflowClient(uri, registry_uri=uri)
        if uri.startswith(("http://", "https://")):
            _probe(client)
        return RetryOnLocked(client)  # type: ignore[return-value]  # same methods
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # Opening the store creates or migrates its schema. The registry is the same store, not
        # whatever registry URI the process set globally.
        client = MlflowClient(uri, registry_uri=uri)
    return RetryOnLocked(client)  # type: ignore[return-value]


def _probe(client: MlflowClient) -> None:
    """One request, no retries, a short timeout: a server that does not answer is reported now,
    not after MLflow's default retries with backoff (7 of them, minutes). Later calls, in a
    running sweep, keep MLflow's retries for a server that blinks."""
    limits = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": str(min(PROBE_TIMEOUT_S, int(os.environ.get(
                  "MLFLOW_HTTP_REQUEST_TIMEOUT", PROBE_TIMEOUT_S) or PROBE_TIMEOUT_S)))}
    saved = {name: os.environ.get(name) for name in limits}
    os.environ.update(limits)
    try:
        client.search_experiments(max_results=1)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


class RetryOnLocked:
    """Forwards to a client; a call that finds the database locked is tried again, with backoff."""

    def __init__(self, client):
        self._client = client

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            for attempt in range(RETRIES):
                try:
                    return attr(*args, **kwargs)
                except MlflowException as exc:
                    if "database is locked" not in str(exc) or attempt == RETRIES - 1:
                        raise
                    time.sleep(FIRST_WAIT_S * 2 ** attempt)

        return call
