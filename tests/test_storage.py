"""S3 through a real S3-compatible server (moto) on loopback: pushed data, and credential errors."""

from __future__ import annotations

import dataclasses
import json
import shutil
import urllib.request
import uuid

import boto3
import numpy as np
import pytest
from conftest import AWS_KEY_ID, AWS_SECRET, last_json, space_file

from hiertune.data.dataset import load_competition, load_test_images
from hiertune.data.bundle import load_bundle
from hiertune.data.splits import SplitConfig

pytestmark = pytest.mark.slow


def test_pushed_data_loads_from_s3_alone_exactly_as_from_its_folder(cli, small_data, s3, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    local = load_bundle(str(data), None, 64, SplitConfig(), tmp_path / "local-cache")
    local_test = load_competition(data, 64, tmp_path / "local-cache").test_images
    # The test images alone, for a caller that has the training images (export): the same pixels.
    alone, report = load_test_images(local.data.root, local.data.test_names, 64, tmp_path / "local-cache")
    np.testing.assert_array_equal(alone, local_test)
    assert report is not None and len(local_test) == len(local.data.test_names) > 0
    pushed = cli("data", "push", str(data), s3.uri("nndl"), "--cache-dir", str(tmp_path / "local-cache"), "--json")
    assert pushed.code == 0, pushed.err
    summary = last_json(pushed.out)
    assert summary["train_images"] == len(local.data.train.names)
    assert summary["outlier_images"] == len(local.outliers.names) > 0
    assert s3.keys("nndl/") == sorted(f"nndl/{name}" for name in (
        "hiertune-data.json", "superclass_mapping.csv", "subclass_mapping.csv", "train_data.csv",
        "train_images-64px.parquet", "test_images-64px.parquet", "outliers/hiertune-data.json",
        "outliers/outliers-64px.parquet"))
    shutil.rmtree(data)  # from here on only S3 has the dataset

    remote = load_bundle(s3.uri("nndl"), None, 64, SplitConfig(), tmp_path / "remote-cache")
    assert remote.data.hierarchy.superclasses == local.data.hierarchy.superclasses
    assert remote.data.hierarchy.subclasses == local.data.hierarchy.subclasses
    assert remote.data.train.names == local.data.train.names
    np.testing.assert_array_equal(remote.data.train.images, local.data.train.images)
    np.testing.assert_array_equal(remote.data.train.subclass, local.data.train.subclass)
    assert remote.data.test_names == local.data.test_names
    np.testing.assert_array_equal(load_test_images(remote.data.root, remote.data.test_names, 64,
                                                   tmp_path / "remote-cache")[0], local_test)
    assert remote.outliers.names == local.outliers.names and remote.outliers.classes == local.outliers.classes
    np.testing.assert_array_equal(remote.outliers.images, local.outliers.images)
    np.testing.assert_array_equal(remote.outliers.class_index, local.outliers.class_index)
    for field in dataclasses.fields(local.splits):  # same data in the same order: the same splits
        np.testing.assert_array_equal(getattr(remote.splits, field.name), getattr(local.splits, field.name))
    # The outliers are also a pushed folder of their own.
    outliers = load_bundle(s3.uri("nndl"), s3.uri("nndl", "outliers"), 64, SplitConfig(), tmp_path / "remote-cache")
    assert outliers.outliers.names == local.outliers.names

    inspected = cli("data", "inspect", s3.uri("nndl"), "--json")
    assert inspected.code == 0, inspected.err
    assert last_json(inspected.out)["test_images"] == len(list((small_data / "test_images").iterdir()))

    # Pushed again without outliers: the local mirror must not keep serving the old ones.
    again = tmp_path / "again"
    shutil.copytree(small_data, again)
    assert cli("data", "push", str(again), s3.uri("nndl"), "--outliers", "none").code == 0
    assert load_bundle(s3.uri("nndl"), None, 64, SplitConfig(), tmp_path / "remote-cache").outliers is None


def test_pushed_data_rejects_what_it_cannot_serve_in_one_line(cli, small_data, s3, tmp_path):
    assert cli("data", "push", str(small_data), s3.uri("d"), "--outliers", "none").code == 0
    cases = {
        ("data", "inspect", s3.uri("d"), "--image-size", "32"): "train_images was pushed at 64px, not 32px; push it "
                                                                 "again with --image-size 32",
        ("data", "inspect", s3.uri("elsewhere")): f"{s3.uri('elsewhere')}: no pushed dataset here "
                                                   "(hiertune-data.json not found)",
        ("data", "push", str(small_data), s3.uri("d"), "--outliers", "cifar100"): "cifar100: CIFAR-100 is downloaded "
                                                                                  "where a sweep runs, not pushed",
        ("data", "push", str(small_data), str(tmp_path / "x")): "push to an s3:// URI",
        ("data", "inspect", s3.uri("d", "..", "..", "etc")): "an S3 URI may not contain '..'",
    }
    for argv, message in cases.items():
        result = cli(*argv)
        assert result.code == 2 and len(result.err_lines) == 1, result.err
        assert result.err_lines[0].startswith("hiertune: error: ") and message in result.err_lines[0]
    assert not (tmp_path / "x").exists()


def _moto_auth(endpoint: str, count: str) -> None:
    """moto checks signatures and IAM policies after `count` more requests ('inf': never)."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=count.encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(request, timeout=30).close()


@pytest.fixture
def iam_users(s3):
    """Two IAM users on the S3 server, one allowed everything and one nothing, with moto
    checking every request's signature and permissions until the test ends."""
    iam = boto3.client("iam", endpoint_url=s3.endpoint, region_name="us-east-1", aws_access_key_id=AWS_KEY_ID,
                       aws_secret_access_key=AWS_SECRET)
    keys = {}
    for role, policy in (("allowed", {"Effect": "Allow", "Action": "*", "Resource": "*"}), ("denied", None)):
        user = f"{role}-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=user)
        if policy:
            iam.put_user_policy(UserName=user, PolicyName="all", PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [policy]}))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        keys[role] = (key["AccessKeyId"], key["SecretAccessKey"])
    _moto_auth(s3.endpoint, "0")
    try:
        yield keys
    finally:
        _moto_auth(s3.endpoint, "inf")


def test_missing_or_wrong_credentials_are_one_line_without_the_key(cli, small_data, s3, iam_users, tmp_path,
                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = str(space_file(tmp_path, small_data, samples=1, max_t=1))
    allowed_id, allowed_secret = iam_users["allowed"]
    cases = [  # (key id, secret, command, what the line must say); each command a different S3 entry point
        (allowed_id, allowed_secret, ("data", "inspect", "s3://no-such-bucket-hiertune/d"),
         "s3://no-such-bucket-hiertune/d/hiertune-data.json: bucket 'no-such-bucket-hiertune' does not exist "
         "(NoSuchBucket)"),
        (allowed_id, "wrong" + allowed_secret[5:], ("sweep", space, "--name", "n", "--storage", s3.uri("sweeps")),
         f"{s3.uri('sweeps', 'n')}: the secret key does not belong to the access key (SignatureDoesNotMatch)"),
        ("AKIAUNKNOWNKEY000000", allowed_secret, ("data", "push", str(small_data), s3.uri("d")),
         f"{s3.uri('d')}: AWS does not know this access key (InvalidAccessKeyId)"),
        (*iam_users["denied"], ("pareto", "n", "--storage", s3.uri("sweeps")),
         f"{s3.uri('sweeps', 'n')}: access denied (AccessDenied)"),
        (None, None, ("sweep", space, "--name", "n", "--storage", s3.uri("sweeps")),
         f"{s3.uri('sweeps', 'n')}: no AWS credentials found"),
    ]
    for key_id, secret, argv, message in cases:
        for name, value in (("AWS_ACCESS_KEY_ID", key_id), ("AWS_SECRET_ACCESS_KEY", secret)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        result = cli(*argv)
        assert result.code == 2 and len(result.err_lines) == 1, result.err
        assert result.err_lines[0].startswith(f"hiertune: error: {message}"), result.err_lines[0]
        assert all(part not in result.err for part in (key_id, secret, allowed_secret) if part)
    assert not (tmp_path / "sweeps").exists()  # nothing was started
