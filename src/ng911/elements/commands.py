"""`ng911 run ELEMENT --config FILE` and `ng911 chain`: the call-chain elements from the shell.

`ng911 run` starts one element from one table of a TOML file (the testbed writes such files;
an operator edits them): `[vsp]`, `[esrp]`, `[psap.manhattan]`... `--table` picks the table,
by default the element's name. It runs until interrupted; the caller places `--calls` calls
and exits. `ng911 chain` starts the whole chain in one process on loopback (LoST included)
and places one call from each NYC borough: the quickest way to see everything work.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import signal
import sys
from typing import Any

ELEMENTS = ("caller", "vsp", "esrp", "psap", "calltaker")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run one call-chain element (caller, vsp, esrp, psap, calltaker)",
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


def _load(element: str, path: str, table: str | None) -> Any:
    from ng911.elements import config as cfgmod

    classes = {
        "caller": cfgmod.CallerConfig,
        "vsp": cfgmod.VspConfig,
        "esrp": cfgmod.EsrpConfig,
        "psap": cfgmod.PsapConfig,
        "calltaker": cfgmod.CallTakerConfig,
    }
    return cfgmod.load_toml(path, table or element, classes[element])


async def _serve(element: str, cfg: Any, args: argparse.Namespace) -> int:
    from ng911.elements.calltaker import CallTaker
    from ng911.elements.esrp import Esrp
    from ng911.elements.psap import Psapd
    from ng911.elements.runtime import SipElement
    from ng911.elements.ua import Caller
    from ng911.elements.vsp import VspProxy

    kinds: dict[str, type[SipElement]] = {
        "caller": Caller,
        "vsp": VspProxy,
        "esrp": Esrp,
        "psap": Psapd,
        "calltaker": CallTaker,
    }
    el = kinds[element](cfg, log_keep=0)
    el.log.stream = el.log.stream or sys.stderr
    await el.start()
    # long-lived objects (modules, lxml/shapely/aiohttp state, TLS contexts) out of the cyclic
    # collector's sight: it would walk them on every collection (bench/chain.py: ~2x CPU)
    gc.collect()
    gc.freeze()
    try:
        if isinstance(el, Caller):
            recs = await el.place_calls([(cfg.lat, cfg.lon)], count=args.calls, rate=args.rate)
            for r in recs:
                print(json.dumps(r.to_dict()))
            return 0 if recs and all(r.ok for r in recs) else 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        return 0
    finally:
        await el.close()


def run_element(args: argparse.Namespace) -> int:
    from ng911.errors import Ng911Error

    try:
        cfg = _load(args.element, args.config, args.table)
        return asyncio.run(_serve(args.element, cfg, args))
    except Ng911Error as exc:
        print(f"ng911 run {args.element}: {exc}", file=sys.stderr)
        return 2


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
