"""Where sweeps, pushed data and MLflow artifacts live: a local path or an `s3://bucket/prefix` URI.

hiertune's own S3 reads and writes go through boto3, whose errors carry AWS's error codes;
Ray Tune gets a pyarrow S3FileSystem, which it pickles to every node that persists a
checkpoint. Both take credentials from AWS's standard chain (environment, profile, instance
role) and the endpoint of an S3-compatible server from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL.
No credential is ever passed explicitly, so none is pickled into Ray's state or shipped to
another process, and every S3 failure is one UserError naming the URI and AWS's error code,
never a key.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from pathlib import Path
from typing import Callable, Iterator

from hiertune.errors import UserError, first_line
from hiertune.fsutil import atomic_file

SCHEME = "s3://"
# What the standard chain reads from the environment: a change in any of them needs a new client.
_CHAIN_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION",
              "AWS_DEFAULT_REGION", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_EC2_METADATA_DISABLED")
_CODES = {
    "InvalidAccessKeyId": "AWS does not know this access key (InvalidAccessKeyId); check AWS_ACCESS_KEY_ID or "
                          "the profile",
    "SignatureDoesNotMatch": "the secret key does not belong to the access key (SignatureDoesNotMatch); check "
                             "AWS_SECRET_ACCESS_KEY or the profile",
    "InvalidToken": "the session token is not valid (InvalidToken); refresh the credentials",
    "ExpiredToken": "the credentials have expired (ExpiredToken); refresh them",
    "AccessDenied": "access denied (AccessDenied); these credentials may not use this bucket or prefix",
    "403": "access denied (403); these credentials may not use this bucket or prefix",
}


def is_s3(uri: str | os.PathLike | None) -> bool:
    return uri is not None and str(uri).startswith(SCHEME)


def join(uri: str, *parts: str) -> str:
    if is_s3(uri):
        return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts if p.strip("/"))])
    return str(Path(uri, *parts))


def split(uri: str) -> tuple[str, str]:
    """(bucket, key) of an s3:// URI; the key has no leading or trailing slash."""
    bucket, _, key = uri[len(SCHEME):].partition("/")
    if not bucket:
        raise UserError(f"{uri}: an S3 URI needs a bucket (s3://bucket/prefix)")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", bucket):  # a user:password@ or a port, which S3 URIs never hold
        raise UserError(f"{uri}: the part before the first '/' is not a bucket name (an S3 URI holds no "
                        "user:password@: credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)")
    if ".." in key.split("/"):  # its local copy would land outside the folder meant for it
        raise UserError(f"{uri}: an S3 URI may not contain '..'")
    return bucket, key.strip("/")


def mirror_path(uri: str, root: Path) -> Path:
    """Where a local copy of an S3 URI lives under `root`: root/s3/bucket/key."""
    bucket, key = split(uri)
    return root / "s3" / bucket / key


def endpoint_url() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def client():
    return _client(endpoint_url(), tuple(os.environ.get(k) for k in _CHAIN_ENV))


@functools.lru_cache(maxsize=4)
def _client(endpoint: str | None, _chain_env: tuple):
    # Creating a client costs tens of milliseconds, and a sweep's front reads a file per trial.
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=endpoint)


@contextlib.contextmanager
def s3_errors(uri: str) -> Iterator[None]:
    """botocore's failures as one line naming the URI; FileNotFoundError for a missing key."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        yield
    except NoCredentialsError:
        raise UserError(f"{uri}: no AWS credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                        "or AWS_PROFILE, or run where an instance role provides them)") from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "unknown"))
        if code in ("NoSuchKey", "404"):
            raise FileNotFoundError(uri) from None
        if code == "NoSuchBucket":
            raise UserError(f"{uri}: bucket {split(uri)[0]!r} does not exist (NoSuchBucket)") from None
        detail = _CODES.get(code) or f"S3 error {code} ({first_line(str(error.get('Message', '')), 200)})"
        raise UserError(f"{uri}: {detail}") from None
    except BotoCoreError as exc:  # unreachable endpoint, partial credentials, unknown profile
        raise UserError(f"{uri}: {first_line(exc, 300)}") from None


def check(uri: str) -> None:
    """Fail now, in one line, when the credentials or the bucket are wrong: a listing names the
    problem (a HEAD request only says 403 or 404)."""
    if is_s3(uri):
        bucket, key = split(uri)
        with s3_errors(uri):
            client().list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)


def read_bytes(uri: str) -> bytes:
    """The file's bytes; FileNotFoundError when there is none, locally or on S3."""
    if not is_s3(uri):
        return Path(uri).read_bytes()
    bucket, key = split(uri)
    with s3_errors(uri):
        return client().get_object(Bucket=bucket, Key=key)["Body"].read()


def exists(uri: str) -> bool:
    if not is_s3(uri):
        return Path(uri).exists()
    bucket, key = split(uri)
    try:
        with s3_errors(uri):
            client().head_object(Bucket=bucket, Key=key)
    except FileNotFoundError:
        return False
    return True


def upload(path: Path, uri: str) -> None:
    """One file; a single S3 upload replaces the object whole, so readers never see a part."""
    bucket, key = split(uri)
    with s3_errors(uri):
        client().upload_file(str(path), bucket, key)


def write_bytes(uri: str, data: bytes) -> None:
    bucket, key = split(uri)
    with s3_errors(uri):
        client().put_object(Bucket=bucket, Key=key, Body=data)


def listing(uri: str) -> dict[str, tuple[int, float]]:
    """Relative name → (size, modification time) of every object under the prefix."""
    bucket, key = split(uri)
    prefix = f"{key}/" if key else ""
    found: dict[str, tuple[int, float]] = {}
    with s3_errors(uri):
        for page in client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                found[obj["Key"][len(prefix):]] = (obj["Size"], obj["LastModified"].timestamp())
    return found


def sync_down(uri: str, dest: Path, keep: Callable[[str], bool]) -> list[str]:
    """Copy the objects under `uri` whose relative name `keep` accepts into `dest`, skipping
    those already there with the same size and time; returns the names copied or kept."""
    bucket, key = split(uri)
    names = []
    for rel, (size, mtime) in listing(uri).items():
        if not rel or rel.endswith("/") or not keep(rel):
            continue
        if ".." in rel.split("/") or rel.startswith("/"):
            raise UserError(f"{uri}: object {rel!r} would be written outside {dest}")
        target = dest / rel
        names.append(rel)
        if target.is_file() and target.stat().st_size == size and int(target.stat().st_mtime) == int(mtime):
            continue
        with atomic_file(target) as tmp, s3_errors(join(uri, rel)):
            client().download_file(bucket, f"{key}/{rel}" if key else rel, str(tmp))
        os.utime(target, (mtime, mtime))
    return names


def tune_storage(uri: str):
    """Ray Tune's (storage_path, storage_filesystem) for a sweep folder: the filesystem's own
    path (bucket/key) and an S3FileSystem for S3, the path and None (Ray's default) locally."""
    if not is_s3(uri):
        return uri, None
    import boto3
    from pyarrow.fs import S3FileSystem

    bucket, key = split(uri)
    # The same region and endpoint boto3 resolves, so both clients talk to the same place;
    # without a configured region pyarrow applies its own heuristics (e.g. the instance's).
    region = boto3.session.Session().region_name
    fs = S3FileSystem(endpoint_override=endpoint_url(), **({"region": region} if region else {}))
    return f"{bucket}/{key}".rstrip("/"), fs


def checkpoint_uri(checkpoint) -> str:
    """A Ray Checkpoint's location as a URI this module reads: s3://… on S3, a path locally."""
    return SCHEME + checkpoint.path if checkpoint.filesystem.type_name == "s3" else checkpoint.path
