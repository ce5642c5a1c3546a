"""`ng911 run ELEMENT --config FILE` and `ng911 chain`: the call-chain elements from the shell.

`ng911 run` starts one element from one table of a TOML file (the testbed writes such files;
an operator edits them): `[vsp]`, `[esrp]`, `[psap.manhattan]`... `--table` picks the table,
by default the element's name. It runs until interrupted; the caller places `--calls` calls
and exits. `ng911 chain` starts the whole chain in one process on loopback (LoST included)
and places one call from each NYC borough: the quickest way to see everything work.

Only the command line is here; serving is `ng911.node.serve`, worker processes
`ng911.node.workers` (imported when the command runs, so `ng911 --help` stays fast).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

ELEMENTS = ("caller", "vsp", "esrp", "psap", "calltaker", "lost")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run one call-chain element (caller, vsp, esrp, psap, calltaker, lost)",
        description=(
            "Run one element from a table of a TOML file (see ng911.elements.config for the "
            "options of each). Logs one JSON object per event on stderr (or log_file)."
        ),
    )
    p.add_argument("element", choices=ELEMENTS)
    p.add_argument("--config", required=True, help="TOML file")
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
        type=int,
        metavar="N",
        help="vsp, esrp: run N worker processes sharing the listening ports "
        "(default: `workers` of the table, else 1); see ng911.node.workers",
    )
    p.add_argument("--worker-role", help=argparse.SUPPRESS)  # what the parent gives a worker
    p.set_defaults(func=run_element)

    c = sub.add_parser(
        "chain",
        help="run the whole call chain in one process and call from each NYC borough",
        description=(
            "Start LoST, the VSP proxy, the ESRP, a psapd per NYC borough (+ a default PSAP) "
            "with a call taker each, and a caller, on 127.0.0.1; place one 911 call from each "
            "borough and print where it went and its setup delay."
        ),
    )
    c.add_argument(
        "--scenario",
        default="plain",
        choices=("plain", "tcp", "tls-e2e", "tls-vsp-psap", "tls-all"),
    )
    c.add_argument("--json", action="store_true", help="print the call records as JSON")
    c.set_defaults(func=run_chain)


def run_element(args: argparse.Namespace) -> int:
    from ng911.errors import Ng911Error
    from ng911.node.serve import load, serve_element, serve_lost, worker_config
    from ng911.node.workers import supervise, worker_count

    try:
        cfg = load(args.element, args.config, args.table)
        if args.element == "lost":
            return asyncio.run(serve_lost(cfg, args))
        if args.worker_role:
            cfg = worker_config(cfg, args.worker_role)
        else:
            n = worker_count(args, cfg)
            if n > 1:
                return asyncio.run(supervise(args, cfg, n))
        return asyncio.run(serve_element(args.element, cfg, args))
    except Ng911Error as exc:
        print(f"ng911 run {args.element}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a listener that cannot bind: one line, not a traceback
        print(f"ng911 run {args.element}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


async def _chain(args: argparse.Namespace) -> int:
    from ng911.elements.chain import BOROUGHS, ChainOptions, build_chain

    chain = await build_chain(ChainOptions(scenario=args.scenario, caller_hangup=0.01))
    ok = True
    try:
        print(f"scenario {args.scenario}: hops {' / '.join(chain.hops)}, LoST {chain.lost_scheme}")
        for name, lat, lon in BOROUGHS.values():
            rec = await chain.place_call(lat, lon, timeout=10)
            ok = ok and rec.ok
            if args.json:
                print(json.dumps({**rec.to_dict(), "psap": chain.psap_of(rec)}))
                continue
            s180 = f"{rec.setup_180 * 1000:.2f} ms" if rec.setup_180 is not None else "-"
            s200 = f"{rec.setup_200 * 1000:.2f} ms" if rec.setup_200 is not None else "-"
            print(
                f"  {name:<14} ({lat:.4f},{lon:.4f}) -> {rec.status} {rec.reason:<4} "
                f"PSAP {chain.psap_of(rec) or '-':<14} INVITE->180 {s180:>9}  "
                f"INVITE->200 {s200:>9}"
            )
    finally:
        await chain.close()
    return 0 if ok else 1


def run_chain(args: argparse.Namespace) -> int:
    logging.getLogger("ng911").setLevel(logging.WARNING)
    return asyncio.run(_chain(args))
