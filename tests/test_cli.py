"""The CLI contract: --help everywhere, --json as the last stdout line, one-line errors, exit 2."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hiertune.cli import build_parser


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[list[str]]:
    """Every command and subcommand the parser has, the bare program first: none left out."""
    found = [list(path)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*path, name))
    return found


COMMANDS = _commands(build_parser())


def test_the_command_list_is_the_parsers():
    assert {"ls", "leave-out"} <= {c[0] for c in COMMANDS if c} and ["data", "push"] in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "hiertune")
def test_help_on_every_command(cli, command):
    result = cli(*command, "--help")
    assert result.code == 0
    assert result.out.startswith("usage: hiertune")


def test_unknown_command_and_missing_argument_are_one_line(cli):
    for argv, message in [(["frobnicate"], "invalid choice: 'frobnicate'"),
                          (["data", "inspect"], "the following arguments are required: dir"),
                          (["data", "inspect", "x", "--image-size", "big"], "invalid int value: 'big'")]:
        result = cli(*argv)
        assert result.code == 2
        assert len(result.err_lines) == 1 and message in result.err_lines[0], result.err


def test_remeasure_with_resume_is_refused_in_one_line(cli, tmp_path):
    result = cli("sweep", "--name", "s", "--storage", str(tmp_path), "--resume", "--remeasure")
    assert result.code == 2 and len(result.err_lines) == 1
    assert "--remeasure measures a new sweep's costs" in result.err_lines[0]
    assert list(tmp_path.iterdir()) == []  # refused before anything is looked up or written


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name != "imports.py"))
def test_every_benchmark_runs_through_run_script(script):
    """The benchmarks take data paths and settings: each says bad input as the CLI does."""
    assert (BENCHMARKS / script).read_text().rstrip().endswith("run_script(main, Path(__file__).name)")


def test_a_scripts_bad_input_is_one_redacted_line_and_exit_2(capsys, monkeypatch):
    from hiertune.cli import run_script
    from hiertune.errors import UserError

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "script-secret-4242")

    def main():
        raise UserError("s3://bucket: refused with key script-secret-4242")
    with pytest.raises(SystemExit) as exited:
        run_script(main, "bench.py")
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench.py: error: s3://bucket: refused") and "4242" not in err[0]


def test_a_benchmark_given_a_missing_data_folder_says_so_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(BENCHMARKS / "photo_ceiling.py"), "--data", str(tmp_path / "none")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"photo_ceiling.py: error: {tmp_path / 'none'}: data directory not found"]


def test_inspect_json_is_the_last_stdout_line(cli, tiny_data, tiny_outliers):
    result = cli("data", "inspect", str(tiny_data), "--outliers", str(tiny_outliers), "--json")
    assert result.code == 0
    summary = json.loads(result.out.strip().splitlines()[-1])
    assert summary["labeled_images"] == 30
    assert summary["superclasses"] == 2 and summary["subclasses"] == 6
    assert summary["per_superclass"] == {"bird": 15, "dog": 15}
    assert summary["test_images"] == 4
    assert summary["image_size"] == [64, 64, 3]
    assert summary["outliers"]["classes"] == 4 and summary["outliers"]["images"] == 12
    assert {c["status"] for c in summary["cache"].values()} == {"built"}
    again = json.loads(cli("data", "inspect", str(tiny_data), "--outliers", str(tiny_outliers),
                           "--json").out.splitlines()[-1])
    assert {c["status"] for c in again["cache"].values()} == {"warm"}


def test_inspect_human_output(cli, tiny_data):
    result = cli("data", "inspect", str(tiny_data))
    assert result.code == 0
    assert "labeled    30 images, 2 superclasses, 6 subclasses" in result.out
    assert "test       4 images" in result.out and "outliers   none" in result.out


@pytest.mark.slow
def test_synth_refuses_to_overwrite_without_force(cli, tmp_path):
    target = tmp_path / "synthetic"
    first = cli("data", "synth", str(target), "--json")
    assert first.code == 0
    summary = json.loads(first.out.splitlines()[-1])
    # The summary describes what was written: one CSV row and one file per training image, one
    # file per test image, the outliers in their class folders.
    rows = (target / "train_data.csv").read_text().splitlines()
    assert rows[0].startswith("image,superclass_index,subclass_index")
    assert summary["train_images"] == len(rows) - 1 == len(list((target / "train_images").iterdir())) > 0
    assert summary["test_images"] == len(list((target / "test_images").iterdir())) > 0
    outliers = [d for d in (target / "outliers").iterdir() if d.is_dir()]
    assert summary["outlier_classes"] == len(outliers)
    assert summary["outlier_images"] == sum(len(list(d.iterdir())) for d in outliers)
    written = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    second = cli("data", "synth", str(target))
    assert second.code == 2 and "already exists and is not empty; pass --force" in second.err_lines[0]
    assert {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} == written  # refused: untouched
    assert cli("data", "synth", str(target), "--force").code == 0
    assert {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} == written  # same seed, same bytes


@pytest.mark.slow
def test_console_script_and_module_are_the_same_cli(tmp_path):
    bin_dir = __import__("pathlib").Path(sys.executable).parent
    missing = str(tmp_path / "missing")
    for argv in ([str(bin_dir / "hiertune")], [sys.executable, "-m", "hiertune"]):
        proc = subprocess.run(argv + ["data", "inspect", missing], capture_output=True, text=True)
        assert proc.returncode == 2
        assert proc.stderr == f"hiertune: error: {missing}: data directory not found\n"
        assert proc.stdout == ""
