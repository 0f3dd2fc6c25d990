"""The ``anymodal`` command. Each command lives in its own module under ``anymodal/commands`` (benchmarks
under ``anymodal/bench``) and adds its parser through ``register(subparsers)``; this file only lists them."""

from __future__ import annotations

import argparse
import logging
import sys

from .errors import AnyModalError

COMMAND_MODULES = ["demo", "chat", "plugins", "encode", "index", "decode", "train", "quantize", "speak", "speech_build",
                   "vocoder_train", "serve", "app",
                   "toyworld", "eval"]
BENCH_MODULES = ["generate", "index", "decode", "encoders", "train", "quantize", "speech", "serve"]


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="anymodal", description="Any-to-any multimodal assistants.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"anymodal.commands.{name}").register(commands)
    bench = commands.add_parser("bench", help="measure speed against a baseline run in the same process")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    for name in BENCH_MODULES:
        importlib.import_module(f"anymodal.bench.{name}").register(benches)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except AnyModalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
