"""Every hostile case of tests/hostile_cases.py that needs no trained model, through the CLI:
exit 2, one stderr line naming the problem, nothing written, no secret anywhere; and the
README's rejected-input table holds each case's row."""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

import pytest

from conftest import files_under
from hostile_cases import CASES, LAUGHS, SECRETS, Ctx, readme_rows

README = Path(__file__).resolve().parents[1] / "README.md"
MLFLOW_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@pytest.fixture
def ctx(tmp_path, tiny_data, tiny_outliers, monkeypatch):
    # An unreachable server is refused at once rather than after MLflow's minutes of retries.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    space = tmp_path / "space.yaml"
    space.write_text(f"family: cnn\nfixed: {{epochs: 1, cnn_width: 8, data: {tiny_data}, outliers: none}}\n"
                     "search:\n  lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n")
    outside = tmp_path / "private" / "secret.jpg"
    outside.parent.mkdir()
    outside.write_bytes((tiny_data / "train_images" / "0.jpg").read_bytes())
    fds: list[int] = []

    def hold(path: Path) -> None:  # as a running export-best holds its sweep folder
        fd = os.open(path, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        fds.append(fd)

    yield Ctx(tmp_path, tiny_data, tiny_outliers, space, outside, hold=hold)
    for fd in fds:
        os.close(fd)
    for name in MLFLOW_ENV:  # set by the CLI from a URI's credentials, in this process
        os.environ.pop(name, None)


def message_pattern(example: str) -> str:
    """A README example as a pattern: `…`, PATH and DIR stand for anything."""
    parts = re.split(r"(…|PATH|DIR)", example.strip("`"))
    return "".join(".*" if p in ("…", "PATH", "DIR") else re.escape(p) for p in parts)


def check_refused(ctx: Ctx, cli, case) -> None:
    argv = case.build(ctx)
    before = {p for p in files_under(ctx.tmp) if "cache" not in p.relative_to(ctx.tmp).parts}
    result = cli(*argv)
    assert result.code == 2, (case.id, result.err[-3000:])
    assert len(result.err_lines) == 1, (case.id, result.err[-3000:])
    assert case.expect in result.err_lines[0], (case.id, result.err_lines[0])
    if case.message:  # the README's example is what the CLI says, up to its placeholders
        assert re.search(message_pattern(case.message), result.err_lines[0]), (case.id, result.err_lines[0])
    after = {p for p in files_under(ctx.tmp) if "cache" not in p.relative_to(ctx.tmp).parts}
    assert after == before, (case.id, sorted(map(str, after - before)))
    leaked = [s for s in SECRETS if s in result.out + result.err]
    leaked += [str(p) for p in files_under(ctx.tmp) if p.is_file() and not p.is_symlink()
               and any(s.encode() in p.read_bytes() for s in SECRETS)]
    assert not leaked, (case.id, leaked)


@pytest.mark.parametrize("case", [c for c in CASES if not c.needs_model], ids=lambda c: c.id)
def test_hostile_input_is_refused_in_one_line(ctx, cli, case):
    check_refused(ctx, cli, case)


def test_nested_aliases_are_refused_before_they_expand(ctx, cli):
    import time
    import tracemalloc

    path = ctx.tmp / "laughs.yaml"
    path.write_text(LAUGHS)
    assert len(LAUGHS) < 400
    tracemalloc.start()
    start = time.perf_counter()
    result = cli("train", str(path))
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.code == 2 and len(result.err_lines[0]) < 300
    assert seconds < 5 and peak < 20 * 2**20, (seconds, peak)


def test_the_readme_table_holds_every_hostile_case():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Rejected input"):]
    section = section[:section.index("\n## ", 3)]
    table = [line for line in section.splitlines() if line.startswith("|")]
    missing = [row for row in readme_rows() if row not in table]
    assert not missing, "README's rejected-input table lacks (python tests/hostile_cases.py prints them):\n" + \
        "\n".join(missing)
    # and every case that shares a row still matches the message its row promises
    for case in CASES:
        assert case.expect, case.id
    assert len({c.id for c in CASES}) == len(CASES)
    assert all(re.fullmatch(r"[a-z0-9-]+", c.id) for c in CASES)
