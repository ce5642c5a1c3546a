"""`ng911 console`: start a chain in this process and the live console beside it."""

from __future__ import annotations

import argparse
import asyncio
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


def run(args: argparse.Namespace) -> int:
    from ng911.console.server import serve

    def ready(url: str) -> None:
        print(f"ng911 console ({args.scenario}): {url}  (Ctrl-C stops)", flush=True)

    try:
        asyncio.run(serve(args.scenario, args.host, args.port, ready=ready))
    except KeyboardInterrupt:
        print("ng911 console: stopped", flush=True)
    return 0
