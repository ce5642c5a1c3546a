"""The `ng911` command.

Each sub-command lives beside the code it drives, in a module exposing
`register(subparsers)`; this file only lists those modules. They are imported lazily, so
`ng911 --help` stays fast and a sub-command's dependencies load only when it runs.

Errors are one line on stderr naming the file, table or address, exit status 2: argparse's
usage errors (`Parser.error`), and any `Ng911Error` a command lets through (`main`). Every
sub-command and option has help text (tests/test_cli_errors.py walks the tree).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator, Sequence
from typing import NoReturn

from ng911 import __version__, compiled
from ng911.errors import Ng911Error

# Modules that add sub-commands. Each has `register(subparsers: argparse._SubParsersAction)`;
# a registered command sets `func` (taking the parsed namespace, returning an exit code).
COMMAND_MODULES: tuple[str, ...] = (
    "ng911.demo",
    "ng911.pki.commands",
    "ng911.lost.commands",
    "ng911.testbed.commands",
    "ng911.node.commands",
    "ng911.console.commands",
)


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (not the usage block), exit 2.
    Sub-parsers are made of the same class (argparse uses the parent's type)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def walk(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parser and every sub-parser under it, depth first."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases: once
                yield from walk(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="ng911",
        description=(
            "An NG-9-1-1 emergency call network with TLS on every SIP hop, "
            "and the harness that measures what TLS costs."
        ),
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"ng911 {__version__}, {compiled.describe()}",
        help="the version, and which build runs: mypyc-compiled or pure Python",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for p in walk(parser):
        p.set_defaults(cli_prog=p.prog)  # the deepest parser's wins: who to name in an error
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        result = func(args)
    except Ng911Error as exc:  # a command's own handling missed it: still one line
        print(f"{args.cli_prog}: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
