"""Credentials stay in this process's memory: never in a file, a log line, stdout or MLflow.

Three ways in, each closed here:
- A password in a URI (`http://user:pass@host`), percent-encoded or written raw with any
  character a URI parser stops at ('@', ':', '/', '?', '#', a space): the userinfo runs to the
  URI's last '@', so what a parser would misread as a path, query or fragment is still the password.
  For an MLflow server it leaves the URI altogether: MLflow's REST client takes basic-auth
  credentials from MLFLOW_TRACKING_USERNAME/PASSWORD, so the URI that MLflow prints ("View run
  at …"), Ray pickles and hiertune records has none. A URI whose password cannot leave it (a
  database store) is redacted wherever it is shown or pickled (SweepPlace), and restored from
  this process's memory when the driver unpickles it.
- A token in a query string (`?token=…`): MLflow's REST client appends its paths to the URI, so
  such a URI never works; it is refused, without echoing the token.
- AWS credentials in the environment: Ray Tune copies AWS_* variables into every trial actor's
  runtime_env, which Ray's runtime_env agent writes to its log. A local cluster's workers
  inherit the raylet's environment anyway, and a real cluster's nodes get theirs from the
  instance role, so Tune is told not to copy them (keep_out_of_ray).

Every line the CLI prints passes through `redact`, which also masks any secret value this
process has seen, in whatever form, as a last line of defence.
"""

from __future__ import annotations

import json
import os
import re
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from hiertune.errors import UserError

MASK = "***"
SECRET_KEY = re.compile(r"(secret|password|passwd|token|credential|access_key|api_key|signature)", re.I)
AWS_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
MLFLOW_USER, MLFLOW_PASSWORD = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
MLFLOW_TOKEN = "MLFLOW_TRACKING_TOKEN"
# Variables that hold a URI which may carry a password.
URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                 "MLFLOW_S3_ENDPOINT_URL", "RAY_ADDRESS", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
# In free text a URI ends at whitespace or a quote; its userinfo at the last '@' before that end.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^\s'\"<>]*@")
_QUERY_SECRET = re.compile(r"(?P<key>[?&;][^=&\s]*(?:secret|password|passwd|token|credential|access_key|api_key|"
                           r"signature)[^=&\s]*=)(?!\*\*\*)[^&\s'\"#),;]*", re.I)
_known: set[str] = set()  # secret values seen by this process, in every spelling they may take
_revealed: dict[str, str] = {}  # a redacted URI → the URI as given, for pickles read back here


def remember(value: str | None) -> None:
    """Mask `value` in every later line, in each spelling it may be printed in: as given,
    percent-decoded or -encoded, and escaped inside a repr() or a JSON string."""
    if not value or len(value) < 4:  # a shorter "secret" would mask innocent text everywhere
        return
    for plain in {value, unquote(value)}:
        _known.update({plain, quote(plain, safe=""), repr(plain)[1:-1], json.dumps(plain)[1:-1],
                       json.dumps(plain, ensure_ascii=False)[1:-1]})


def remember_env() -> None:
    for name in (*AWS_SECRETS, MLFLOW_PASSWORD, MLFLOW_TOKEN):
        remember(os.environ.get(name))
    for name in URI_VARIABLES:
        remember_uri(os.environ.get(name))


def remember_uri(value) -> None:
    """A URI's password and secret query values, wherever the URI came from (an argument, a
    --set value, a space file, the environment): masked in every later line."""
    if not isinstance(value, str) or "://" not in value:
        return
    _, user, password = split_userinfo(value)
    remember(password if password is not None else user)  # a user alone is a token in its place
    for key, secret in parse_qsl(urlsplit(value).query, keep_blank_values=True) if "?" in value else ():
        if SECRET_KEY.search(key):
            remember(secret)


def split_userinfo(uri: str) -> tuple[str, str | None, str | None]:
    """(uri without user:password@, user, password), both as written (percent-encoded or not).
    The userinfo ends at the URI's last '@', so a character left unencoded in a password ('@',
    ':', '/', '?', '#', a space), where a URI parser would end the authority early and read the
    rest of the password as a path, query or fragment, stays in the password."""
    scheme, sep, rest = uri.partition("://")
    if not sep or "@" not in rest:
        return uri, None, None
    userinfo, _, _ = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    return f"{scheme}://{rest[len(userinfo) + 1:]}", user, password if colon else None


def redact_uri(uri: str) -> str:
    """The URI as it may be shown: no user:password@, no secret query value."""
    clean, user, password = split_userinfo(str(uri))
    if user is not None or password is not None:
        scheme, _, rest = clean.partition("://")
        clean = f"{scheme}://{MASK}@{rest}"
    return _QUERY_SECRET.sub(lambda m: m["key"] + MASK, clean)


def redact(text: str) -> str:
    """Any text with the credentials of URIs in it, and every secret this process knows, masked."""
    text = _USERINFO.sub(lambda m: m["scheme"] + MASK + "@", str(text))
    text = _QUERY_SECRET.sub(lambda m: m["key"] + MASK, text)
    for secret in sorted(_known, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def redact_param(key: str, value) -> str:
    """An MLflow param or tag: secret-looking keys masked, credentials removed from values."""
    if SECRET_KEY.search(key):
        return MASK
    return redact(str(value))[:6000]  # MLflow's param value limit


def tracking_uri(uri: str) -> str:
    """The MLflow tracking URI to use and record: a server's basic-auth credentials moved into
    MLflow's environment variables, any other URI's remembered for redaction."""
    clean, user, password = split_userinfo(uri)
    remember(password)
    if any(SECRET_KEY.search(k) for k, _ in parse_qsl(urlsplit(clean).query, keep_blank_values=True)):
        for _, value in parse_qsl(urlsplit(clean).query, keep_blank_values=True):
            remember(value)
        raise UserError(f"--mlflow-uri {redact_uri(uri)}: a credential in the query string is not supported (MLflow "
                        f"appends its API paths to the URI); put a user and password before the host, or set "
                        f"{MLFLOW_USER}/{MLFLOW_PASSWORD} or MLFLOW_TRACKING_TOKEN")
    if clean.startswith(("http://", "https://")) and user is not None:
        os.environ[MLFLOW_USER] = unquote(user)
        if password is not None:
            os.environ[MLFLOW_PASSWORD] = unquote(password)
        return clean
    if password is not None:
        # Written as a database driver parses it: a raw '#', '?' or '/' in the password would
        # otherwise end the authority there.
        uri = f"{clean.partition('://')[0]}://{_encoded(user)}:{_encoded(password)}@{clean.partition('://')[2]}"
        _revealed[redact_uri(uri)] = uri
    return uri


def _encoded(part: str) -> str:
    return quote(unquote(part), safe="")


def reveal(uri: str) -> str:
    """The URI as given to this process, for one that was redacted to be pickled."""
    return _revealed.get(uri, uri)


def keep_out_of_ray() -> None:
    """Ray Tune copies these from the driver's environment into each trial actor's runtime_env
    (ray.tune.execution.class_cache), and the runtime_env agent logs it in plain text."""
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE = frozenset(class_cache.ENV_VARS_TO_PROPAGATE) - set(AWS_SECRETS)
