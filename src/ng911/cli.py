"""The `ng911` command.

Each sub-command lives beside the code it drives, in a module exposing
`register(subparsers)`; this file only lists those modules. They are imported lazily, so
`ng911 --help` stays fast and a sub-command's dependencies load only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ng911 import __version__

# Modules that add sub-commands. Each has `register(subparsers: argparse._SubParsersAction)`;
# a registered command sets `func` (taking the parsed namespace, returning an exit code).
COMMAND_MODULES: tuple[str, ...] = (
    "ng911.demo",
    "ng911.pki.commands",
    "ng911.lost.commands",
    "ng911.testbed.commands",
    "ng911.node.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ng911",
        description=(
            "An NG-9-1-1 emergency call network with TLS on every SIP hop, "
            "and the harness that measures what TLS costs."
        ),
    )
    parser.add_argument("--version", action="version", version=f"ng911 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    result = func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
