"""The `hiertune` command line: `python -m hiertune` and the console script are this module.

Every command returns a JSON-ready dict; `--json` prints it as the last stdout line, otherwise
the command's renderer prints it for a person. A UserError is one stderr line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable

from hiertune import __version__
from hiertune.errors import UserError

log = logging.getLogger("hiertune")


class _Parser(argparse.ArgumentParser):
    """argparse prints the usage block before its error; we want the one-line contract."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _command(sub: argparse._SubParsersAction, name: str, help: str, handler: Callable,
             render: Callable[[dict], str], json_flag: bool = True) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    if json_flag:
        p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    p.set_defaults(handler=handler, render=render)
    return p


def _cache_root(args: argparse.Namespace) -> Path:
    from hiertune.data.cache import default_cache_root

    return Path(args.cache_dir) if args.cache_dir else default_cache_root()


def _data_inspect(args: argparse.Namespace) -> dict:
    from hiertune.data.inspect import inspect_data

    summary, warnings = inspect_data(args.dir, args.outliers, args.image_size, _cache_root(args))
    for line in warnings:
        print(line, file=sys.stderr)
    return summary


def _render_inspect(summary: dict) -> str:
    from hiertune.data.inspect import render

    return render(summary)


def _data_synth(args: argparse.Namespace) -> dict:
    from hiertune.data.synth import SynthConfig, write_synthetic

    return write_synthetic(args.dir, SynthConfig(seed=args.seed), overwrite=args.force).to_dict()


def _render_synth(summary: dict) -> str:
    return (f"wrote {summary['root']}: {summary['train_images']:,} train images in "
            f"{summary['superclasses']} superclasses / {summary['subclasses']} subclasses, "
            f"{summary['test_images']:,} test images ({summary['test_novel_superclass']} novel superclass, "
            f"{summary['test_novel_subclass']} novel subclass), "
            f"{summary['outlier_images']:,} outliers in {summary['outlier_classes']} classes")


def _demo(args: argparse.Namespace) -> dict:
    from hiertune.data.inspect import inspect_data
    from hiertune.data.synth import SynthConfig, write_synthetic

    data_dir = Path(args.dir) / "data"
    if not (data_dir / "train_data.csv").is_file():
        log.info("generating the synthetic dataset in %s", data_dir)
        write_synthetic(data_dir, SynthConfig(), overwrite=True)
    summary, warnings = inspect_data(str(data_dir), None, 64, _cache_root(args))
    for line in warnings:
        print(line, file=sys.stderr)
    return {"data": summary}


def _render_demo(result: dict) -> str:
    from hiertune.data.inspect import render

    return render(result["data"])


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hiertune", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"hiertune {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    demo = _command(sub, "demo", "run the main job end to end on the embedded synthetic dataset",
                    _demo, _render_demo)
    demo.add_argument("--dir", default="sweeps/demo", help="where the demo writes (default: %(default)s)")
    demo.add_argument("--cache-dir", help="image cache root (default: $HIERTUNE_CACHE_DIR or ~/.cache/hiertune)")

    data = sub.add_parser("data", help="validate, inspect and generate datasets",
                          description="validate, inspect and generate datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND", parser_class=_Parser)
    inspect = _command(data_sub, "inspect", "validate a competition-format directory and print its counts",
                       _data_inspect, _render_inspect)
    inspect.add_argument("dir", help="competition-format directory, or 'synthetic' for the embedded default")
    inspect.add_argument("--outliers", help="class-per-folder outlier directory, 'cifar100', or 'none' "
                                            "(default: the data directory's own outliers/, if any)")
    inspect.add_argument("--image-size", type=int, default=64, help="decoded side length (default: %(default)s)")
    inspect.add_argument("--cache-dir", help="image cache root (default: $HIERTUNE_CACHE_DIR or ~/.cache/hiertune)")
    synth = _command(data_sub, "synth", "write the synthetic hierarchical dataset in competition format",
                     _data_synth, _render_synth)
    synth.add_argument("dir", help="directory to create")
    synth.add_argument("--seed", type=int, default=0, help="generator seed (default: %(default)s)")
    synth.add_argument("--force", action="store_true", help="replace the directory if it exists")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    try:
        result = args.handler(args)
    except UserError as exc:
        print(f"hiertune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hiertune: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result))
    else:
        print(args.render(result))
    return 0
