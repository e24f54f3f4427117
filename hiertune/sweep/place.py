"""Where a sweep lives: its folder (local, or on S3 with a local working copy) and its MLflow store."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from hiertune import secrets, storage
from hiertune.data.cache import default_cache_root
from hiertune.fsutil import check_writable
from hiertune.names import check_name


@dataclass(frozen=True)
class SweepPlace:
    """Where a sweep lives. `root` holds every sweep's folder: a local folder, or an S3 URI.
    On S3 the driver writes the sweep's own files into a local working copy under the cache
    root and publishes each to S3, the copy that counts: `prepare` rebuilds the working copy
    from S3, so a fresh machine can resume a sweep or redraw its front."""

    root: str  # an absolute local path, or s3://bucket/prefix
    name: str
    mlflow_uri: str

    @property
    def uri(self) -> str:
        return storage.join(self.root, self.name)

    @property
    def remote(self) -> bool:
        return storage.is_s3(self.root)

    @property
    def dir(self) -> Path:
        # Computed where it is used: a resumed sweep unpickles its callbacks on another machine.
        return storage.mirror_path(self.uri, default_cache_root() / "sweeps") if self.remote else Path(self.uri)

    @property
    def tune_uri(self) -> str:
        return storage.join(self.uri, "tune")

    @classmethod
    def resolve(cls, name: str, root: str | None, mlflow_uri: str | None) -> "SweepPlace":
        check_name(name)
        if mlflow_uri:
            mlflow_uri = secrets.tracking_uri(mlflow_uri)
        if storage.is_s3(root):
            # SQLite cannot live on S3: the store stays on the driver's disk, its artifacts go to S3.
            return cls(root.rstrip("/"), name, mlflow_uri or f"sqlite:///{Path('sweeps').resolve() / 'mlflow.db'}")
        local = Path(root or "sweeps").resolve()
        return cls(str(local), name, mlflow_uri or f"sqlite:///{local / 'mlflow.db'}")

    def __reduce__(self):
        # Ray pickles the place with the sweep's callback into tune/tuner.pkl: a database URI's
        # password stays out of it, and comes back from memory when this driver resumes.
        return _unpickle_place, (self.root, self.name, secrets.redact_uri(self.mlflow_uri))

    def artifact_location(self) -> str | None:
        # A local SQLite store keeps its artifacts beside the sweeps; a server decides for itself.
        if not self.mlflow_uri.startswith("sqlite:"):
            return None
        return storage.join(self.root, "mlartifacts") if self.remote else Path(self.root, "mlartifacts").as_uri()

    def prepare(self) -> None:
        """Check S3 access and make the working copy what S3 holds; locally, that the storage
        root is (or can become) a folder this process may write to."""
        if not self.remote:
            check_writable(self.root, "--storage", folder=True)
        else:
            storage.check(self.uri)
            shutil.rmtree(self.dir, ignore_errors=True)
            storage.sync_down(self.uri, self.dir, keep=lambda name: "/" not in name)  # not Ray's tune/

    def publish(self, *paths: Path) -> None:
        if self.remote:
            for path in paths:
                storage.upload(path, storage.join(self.uri, path.name))

    def location(self, path: Path) -> str:
        """Where a file of the sweep's folder is for a user: on S3 for an S3 sweep."""
        return storage.join(self.uri, path.name) if self.remote else str(path)

    def started(self) -> bool:
        return storage.exists(storage.join(self.tune_uri, "tuner.pkl"))


def _unpickle_place(root: str, name: str, mlflow_uri: str) -> SweepPlace:
    return SweepPlace(root, name, secrets.reveal(mlflow_uri))
