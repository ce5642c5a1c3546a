"""`ng911 run ELEMENT --config FILE` and `ng911 chain`: the call-chain elements from the shell.

`ng911 run` starts one element from one table of a TOML file (the testbed writes such files;
an operator edits them): `[vsp]`, `[esrp]`, `[psap.manhattan]`... `--table` picks the table,
by default the element's name. It runs until interrupted; the caller places `--calls` calls
and exits. `ng911 run --bundle DIR` runs the host a bundle of `ng911 testbed export`
describes (role and table from its `bundle.toml`, in DIR, so its relative paths hold).

Only the command line is here; serving is `ng911.node.serve`, worker processes
`ng911.node.workers` (imported when the command runs, so `ng911 --help` stays fast).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

ELEMENTS = ("caller", "vsp", "esrp", "psap", "calltaker", "lost", "logger")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run one call-chain element (caller, vsp, esrp, psap, calltaker, lost, logger)",
        description=(
            "Run one element from a table of a TOML file (see ng911.elements.config for the "
            "options of each). Logs one JSON object per event on stderr (or log_file). "
            "`logger` is the NENA i3 Logging Service: a [logger] table with host, port, "
            "cert/key/ca (TLS; require_client_cert for mutual TLS), signer_ca (CA files whose "
            "element certificates may sign LogEvents; default ca), store (a PostgreSQL DSN, "
            "else a SQLite file; default logevents.sqlite), max_body, page_size, max_page, "
            "and the HTTP limits of [lost]."
        ),
    )
    p.add_argument("element", choices=ELEMENTS, nargs="?", help="the role (not with --bundle)")
    p.add_argument("--config", help="TOML file")
    p.add_argument(
        "--bundle",
        metavar="DIR",
        help="run the host of a bundle written by `ng911 testbed export` (its role, config "
        "and certificates; the process works in DIR)",
    )
    p.add_argument("--table", help="table of the file (default: the element's name)")
    p.add_argument("--calls", type=int, default=1, help="caller: calls to place")
    p.add_argument("--rate", type=float, default=1.0, help="caller: calls per second")
    # what `ng911 testbed run --processes` drives a child with (ng911.testbed.processes)
    p.add_argument(
        "--events",
        metavar="FILE",
        help="record every observer event (messages, handshakes, TLS records, LoST queries) "
        "as JSON lines to FILE, streamed as they happen through a bounded buffer (events "
        "beyond it are dropped and counted); the last line, written at stop, closes the file",
    )
    p.add_argument(
        "--events-interval",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="with --events: write what waits at least this often (default 0.5; the live "
        "console watching element processes asks for less)",
    )
    p.add_argument(
        "--ready",
        action="store_true",
        help='print one JSON line {"ready": NAME, ...} on stdout once listening (and '
        "registered, for a caller or call taker)",
    )
    p.add_argument(
        "--control",
        action="store_true",
        help="caller: place calls on request, one JSON object per line on stdin "
        '({"call": N, "lat": .., "lon": ..}); answers one line per call on stdout',
    )
    p.add_argument("--quiet", action="store_true", help="no per-event log on stderr")
    p.add_argument(
        "--lost-cache",
        action="store_true",
        help="esrp with --events: cache LoST answers (default: ask LoST for every call)",
    )
    p.add_argument(
        "--logger-defer",
        type=float,
        metavar="SECONDS",
        help="queue the element's LogEvents while it runs and send them when it stops, for "
        "up to SECONDS (a measurement that must not share the CPU with logging; default: "
        "sent as they happen)",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        help="close connections idle this long (s); the caller reconnects (TLS resumption)",
    )
    p.add_argument(
        "--gc-freeze",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="call gc.freeze() this often, so that full collections do not walk the calls "
        "held in their transactions (0: only once, after start-up)",
    )
    p.add_argument(
        "--workers",
        type=parse_workers,
        metavar="N|auto",
        help="vsp, esrp: run N worker processes sharing the listening ports, or one per core "
        "(auto) (default: `workers` of the table, else 1); see "
        "ng911.node.workers",
    )
    p.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default: `metrics` of "
        "the table, else off; port 0 picks one, named in the --ready line); with --workers, "
        "worker i serves PORT+i. `ng911 stats` prints them",
    )
    p.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        help="the event loop (default: `loop` of the table, else auto = uvloop when "
        "installed, else asyncio's); see ng911.node.loop",
    )
    p.add_argument(
        "--udp-steering",
        choices=("call-id", "source"),
        default="call-id",
        help="with --workers: which worker handles a UDP request. call-id (default): the "
        "worker that owns its Call-ID (one upstream socket is spread over all workers, and "
        "every message of a call meets in one); source: the one the kernel picks by the "
        "sender's address and port (no hand-over, but one upstream socket is one worker); "
        "see ng911.net.steer",
    )
    p.add_argument("--worker-role", help=argparse.SUPPRESS)  # what the parent gives a worker
    # started by a parent that holds our stdin open (the testbed's element processes): stop
    # when it reaches EOF, so a parent killed mid-run leaves no element or service running
    p.add_argument("--stop-with-parent", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=run_element)
    _register_stats(sub)


def _register_stats(sub: Any) -> None:
    p = sub.add_parser(
        "stats",
        help="print the metrics of running elements (ng911 run --metrics)",
        description=(
            "Scrape each element's Prometheus /metrics and print a compact table per "
            "element: calls by outcome, requests and responses, transactions, TLS handshakes "
            "(full/resumed) and connections per peer, LoST p50/p95, event-loop lag, queues, "
            "overload. Exit 2 when a target cannot be read (one line on stderr for each)."
        ),
    )
    p.add_argument(
        "targets",
        nargs="*",
        metavar="TARGET",
        help="an element's metrics URL (http://HOST:PORT/metrics) or HOST:PORT; or a "
        "directory: a bundle (`ng911 testbed export`) or a tree of them (a --processes "
        "run), scraped at each host's `metrics` address (with workers: every worker's port)",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="a TOML file: every table (e.g. [vsp], [psap.manhattan]) that sets `metrics`",
    )
    p.add_argument(
        "--timeout", type=float, default=3.0, metavar="S", help="seconds per scrape (default 3)"
    )
    p.set_defaults(func=print_stats)


def print_stats(args: argparse.Namespace) -> int:
    from ng911.errors import Ng911Error
    from ng911.node.stats import render, scrape, targets_of

    try:
        if not args.targets and args.config is None:
            raise Ng911Error("give metrics URLs, bundle directories or --config FILE")
        targets = targets_of(args.targets, args.config)
    except Ng911Error as exc:
        print(f"ng911 stats: {exc}", file=sys.stderr)
        return 2
    status = 0
    for name, url in targets:
        try:
            page = scrape(name, url, args.timeout)
        except Ng911Error as exc:
            who = "" if name in str(exc) else f"{name}: "
            print(f"ng911 stats: {who}{exc}", file=sys.stderr)
            status = 2
            continue
        print(render(page), flush=True)
    return status


def parse_workers(text: str) -> int | str:
    """`--workers N|auto` (argparse type; the config module is imported only when used)."""
    from ng911.elements.config import WORKERS_AUTO

    if text == WORKERS_AUTO:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'a number or "auto", not {text!r}') from None


def run_element(args: argparse.Namespace) -> int:
    from ng911.elements.config import metrics_address
    from ng911.errors import Ng911Error
    from ng911.node.loop import run
    from ng911.node.serve import load, serve_element, serve_logger, serve_lost, worker_config
    from ng911.node.workers import supervise, worker_count

    try:
        _resolve_bundle(args)
        if args.metrics is not None:
            metrics_address(args.metrics)  # a bad value: one line, before anything starts
        cfg = load(args.element, args.config, args.table)
        # `--loop`, else the table's `loop` (lost and logger tables are dicts: auto)
        loop = str(getattr(args, "loop", None) or getattr(cfg, "loop", "auto"))
        if args.element == "lost":
            return run(serve_lost(cfg, args), loop)
        if args.element == "logger":
            return run(serve_logger(cfg, args), loop)
        if args.worker_role:
            cfg = worker_config(cfg, args.worker_role)
        else:
            n = worker_count(args, cfg)
            if n > 1:
                return asyncio.run(supervise(args, cfg, n))  # the parent only waits
        return run(serve_element(args.element, cfg, args), loop)
    except (Ng911Error, OSError) as exc:  # OSError: a listener that cannot bind; one line
        who = " ".join(x for x in ("ng911 run", args.element) if x)
        print(f"{who}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _resolve_bundle(args: argparse.Namespace) -> None:
    """`--bundle DIR`: role, config file and table from DIR/bundle.toml, and DIR as the
    working directory (a bundle's paths are relative). Else ELEMENT and --config are needed."""
    import os
    from pathlib import Path

    from ng911.elements.config import ConfigError
    from ng911.node.bundle import read_bundle

    if args.bundle is None:
        if args.element is None or args.config is None:
            raise ConfigError("give ELEMENT and --config FILE, or --bundle DIR")
        return
    if args.config is not None or args.table is not None:
        raise ConfigError("--bundle names its own config: leave out --config and --table")
    host, role, path = read_bundle(Path(args.bundle))
    if args.element not in (None, role):
        raise ConfigError(f"{args.bundle} is a {role} bundle, not {args.element}")
    os.chdir(path.parent)
    args.element, args.config, args.table = role, path.name, host
