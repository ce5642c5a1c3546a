"""`ng911 console`: start a chain in this process and the live console beside it; and
`ng911 testbed run --console`: the console watching a testbed run's chains.

The `--console` options are added here, to the `testbed run` parser, not in
ng911.testbed.commands: the testbed must not import the console (tests/test_layers.py), so
the console hands the run its watcher (`args.chain_watch`, the run's `ChainWatch` hook).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

from ng911.testbed.scenarios import BASELINE, SCENARIOS


def register(sub: Any) -> None:
    p = sub.add_parser(
        "console",
        help="a live web console: watch every hop, place a call from the map, answer it",
        description=(
            "Start the call chain in this process (one scenario; switchable from the page) and "
            "a web console on localhost: the network view with each hop in its transport's "
            "colour, the live ladder and message inspector, a map of the boroughs to place "
            "calls from, and a console per call taker. Ctrl-C stops both."
        ),
    )
    p.add_argument(
        "--scenario",
        default=BASELINE,
        choices=sorted(SCENARIOS),
        help=f"the scenario to start with (default {BASELINE})",
    )
    p.add_argument("--port", type=int, default=8911, help="TCP port (default 8911; 0: any)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.set_defaults(func=run)
    _extend_testbed_run(sub)


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            found: argparse.ArgumentParser = action.choices[name]
            return found
    return None


def _extend_testbed_run(sub: Any) -> None:
    """`--console` and `--console-port` on `ng911 testbed run` (registered before this)."""
    testbed = sub.choices.get("testbed")
    r = _subparser(testbed, "run") if testbed is not None else None
    if r is None:
        return
    r.add_argument(
        "--console",
        action="store_true",
        help="serve the live console on localhost while the run measures: each hop, the "
        "ladder and the call takers of the chain shown (a selector picks among the running "
        "scenarios); the console never holds up a call (bounded buffers); with "
        "--processes/--netns it shows the element processes' messages a tenth of a second "
        "behind (their call takers' consoles need the in-process chain)",
    )
    r.add_argument(
        "--console-stay",
        action="store_true",
        help="with --console: keep serving the console after the run (its report written), "
        "to browse the finished run, until Ctrl-C",
    )
    r.add_argument(
        "--console-port",
        type=int,
        default=8911,
        metavar="PORT",
        help="the console's TCP port on 127.0.0.1 (default 8911; 0: any)",
    )
    inner = r.get_default("func")
    r.set_defaults(func=lambda args: run_with_console(args, inner))


def run_with_console(args: argparse.Namespace, inner: Callable[[argparse.Namespace], int]) -> int:
    """`ng911 testbed run`, with the console watching when `--console` asks for it."""
    if not args.console:
        if args.console_stay:
            print("ng911 testbed: --console-stay needs --console", file=sys.stderr)
            return 2
        return inner(args)
    from ng911.console.server import RunConsole

    until = "until Ctrl-C after the run" if args.console_stay else "it stops when the run ends"

    def ready(url: str) -> None:
        print(f"ng911 console: {url}  (watching the run; {until})", flush=True)

    def say(text: str) -> None:
        print(text, flush=True)

    args.chain_watch = RunConsole(
        port=args.console_port, ready=ready, stay=args.console_stay, say=say
    )
    return inner(args)


def run(args: argparse.Namespace) -> int:
    from ng911.console.server import serve

    def ready(url: str) -> None:
        print(f"ng911 console ({args.scenario}): {url}  (Ctrl-C stops)", flush=True)

    try:
        asyncio.run(serve(args.scenario, args.host, args.port, ready=ready))
    except KeyboardInterrupt:
        print("ng911 console: stopped", flush=True)
    return 0
