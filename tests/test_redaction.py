"""hiertune.secrets on every spelling of a credential a URI or the environment can carry."""

from __future__ import annotations

import pickle

import pytest

from hiertune import secrets
from hiertune.errors import UserError
from hiertune.sweep.place import SweepPlace


@pytest.mark.parametrize(("uri", "password"), [
    ("http://u:plain-pass-1@host:5000", "plain-pass-1"),
    ("https://u:p%40ss%3Aw%2Frd@host/path", "p%40ss%3Aw%2Frd"),  # percent-encoded '@', ':', '/'
    ("http://u:raw@pa:ss@host", "raw@pa:ss"),  # '@' and ':' left unencoded
    ("http://only-a-token-user@host", None),
    ("postgresql://mlflow:db-pass-9@db.internal:5432/mlflow", "db-pass-9"),
])
def test_uri_credentials_are_never_shown(uri, password):
    shown = secrets.redact_uri(uri)
    assert "***@" in shown and (password is None or password not in shown)
    line = secrets.redact(f"request to {uri}/api/2.0 failed")
    assert password is None or password not in line
    assert "only-a-token-user" not in line


def test_query_credentials_are_masked_and_refused_for_mlflow():
    uri = "https://host/?x=1&token=tok-123456&api_key=k-98765"
    shown = secrets.redact_uri(uri)
    assert "tok-123456" not in shown and "k-98765" not in shown and "x=1" in shown
    with pytest.raises(UserError) as error:
        secrets.tracking_uri(uri)
    assert "tok-123456" not in str(error.value) and "k-98765" not in secrets.redact(str(error.value))


def test_a_server_password_moves_to_mlflow_environment(monkeypatch):
    monkeypatch.delenv(secrets.MLFLOW_USER, raising=False)
    monkeypatch.setenv(secrets.MLFLOW_PASSWORD, "placeholder")  # restored after the test
    assert secrets.tracking_uri("http://al%20ice:s3%40cret-xy@127.0.0.1:5000") == "http://127.0.0.1:5000"
    import os

    assert os.environ[secrets.MLFLOW_USER] == "al ice" and os.environ[secrets.MLFLOW_PASSWORD] == "s3@cret-xy"
    monkeypatch.delenv(secrets.MLFLOW_USER)
    # and any later line holding it, in any spelling, is masked
    assert "s3@cret-xy" not in secrets.redact("x s3@cret-xy s3%40cret-xy")
    assert "s3%40cret-xy" not in secrets.redact("x s3%40cret-xy")


def test_a_database_password_stays_out_of_pickles_and_comes_back_here():
    place = SweepPlace.resolve("cnn1", "/tmp/hiertune-sweeps", "postgresql://u:db-secret-77@db/mlflow")
    data = pickle.dumps(place)
    assert b"db-secret-77" not in data
    assert pickle.loads(data).mlflow_uri == "postgresql://u:db-secret-77@db/mlflow"


def test_ray_tune_does_not_copy_aws_credentials_into_trial_actors(monkeypatch):
    from ray.tune.execution.class_cache import _ActorClassCache

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-123456")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "aws-token-123456")
    secrets.keep_out_of_ray()

    class Trainable:
        pass

    remote = _ActorClassCache().get(Trainable)
    env = remote._default_options.get("runtime_env", {}).get("env_vars", {})
    assert env.get("PL_DISABLE_FORK") == "1"  # Ray's own variable: this is the runtime_env it sets
    assert "AWS_SECRET_ACCESS_KEY" not in env and "AWS_SESSION_TOKEN" not in env
