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
import dataclasses
import gc
import json
import logging
import os
import signal
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
        "(default: `workers` of the table, else 1); see ng911.elements.workers",
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


def _load(element: str, path: str, table: str | None) -> Any:
    from ng911.elements import config as cfgmod

    classes = {
        "caller": cfgmod.CallerConfig,
        "vsp": cfgmod.VspConfig,
        "esrp": cfgmod.EsrpConfig,
        "psap": cfgmod.PsapConfig,
        "calltaker": cfgmod.CallTakerConfig,
    }
    if element == "lost":
        return _load_lost(path, table or element)
    return cfgmod.load_toml(path, table or element, classes[element])


# ng911.lost.limits.HttpLimits: what a `[lost]` table may set (defaults: the dataclass's)
_LOST_LIMITS = (
    "header_timeout", "body_timeout", "idle_timeout", "max_connections", "max_per_source",
)  # fmt: skip


def _load_lost(path: str, table: str) -> dict[str, Any]:
    """The `[lost]` table: address, boundaries and the URI each boundary maps to, TLS."""
    import tomllib

    from ng911.elements.config import ConfigError

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    node = data.get(table)
    if not isinstance(node, dict):
        raise ConfigError(f"{path}: no table [{table}]")
    allowed = {
        "name", "host", "port", "boundaries", "domain", "uris",
        "cert", "key", "ca", "require_client_cert", "keylog",
        "max_body", *_LOST_LIMITS,
    }  # fmt: skip
    unknown = sorted(set(node) - allowed)
    if unknown:
        raise ConfigError(f"{path}:[{table}]: unknown option(s) {', '.join(unknown)}")
    if not isinstance(node.get("boundaries"), str):
        raise ConfigError(f"{path}:[{table}]: boundaries (a GeoJSON file) is required")
    return node


async def _serve_lost(cfg: dict[str, Any], args: argparse.Namespace) -> int:
    """A LoST server as an element: what the testbed's LoST host runs in its own process."""
    from pathlib import Path

    from ng911.elements.config import ConfigError
    from ng911.lost.embedded import EmbeddedStore
    from ng911.lost.limits import HttpLimits
    from ng911.lost.server import ServerConfig, make_app, serve
    from ng911.lost.store import MappingConfig
    from ng911.pki.tls import server_context

    try:
        limits = HttpLimits(**{k: cfg[k] for k in _LOST_LIMITS if k in cfg})
        server_cfg = ServerConfig(
            limits=limits, max_body=int(cfg.get("max_body", ServerConfig.max_body))
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{cfg.get('name', 'lost')}]: {exc}") from None

    uris = {str(k): tuple(v) for k, v in dict(cfg.get("uris", {})).items()}
    mapping = MappingConfig(domain=str(cfg.get("domain", "esinet.example")), uris=uris)
    store = EmbeddedStore.from_geojson(Path(cfg["boundaries"]), mapping)
    ctx = None
    if cfg.get("cert"):
        ctx = server_context(
            Path(cfg["cert"]),
            Path(cfg["key"]),
            [Path(c) for c in cfg.get("ca", [])],
            require_client_cert=bool(cfg.get("require_client_cert", False)),
            keylog=Path(cfg["keylog"]) if cfg.get("keylog") else None,
        )
    running = await serve(
        make_app(store, server_cfg),
        str(cfg.get("host", "127.0.0.1")),
        int(cfg.get("port", 0)),
        ssl_context=ctx,
    )
    stop = _stop_on_signals()
    try:
        if args.ready:
            print(json.dumps({"ready": cfg.get("name", "lost"), "url": running.url}), flush=True)
        await stop.wait()
        return 0
    finally:
        await running.close()
        store.close()


def _stop_on_signals() -> asyncio.Event:
    """An event that SIGINT/SIGTERM set. Installed before the ready line is printed: a
    supervisor (the testbed, a worker parent) may stop us the moment it reads that line, and
    the default handler would kill us without closing listeners or writing events."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def _control(el: Any, cfg: Any, stop: asyncio.Event) -> None:
    """The caller's control loop: one call per stdin line, one answer per call on stdout.

    Calls run concurrently (the testbed paces them); EOF or SIGTERM ends the loop.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()

    async def one(req: dict[str, Any]) -> None:
        n = req.get("call")
        try:
            rec = await el.place_call(
                float(req.get("lat", cfg.lat)),
                float(req.get("lon", cfg.lon)),
                hangup_after=req.get("hangup_after"),
                timeout=float(req.get("timeout", cfg.answer_timeout + 5.0)),
            )
            out: dict[str, Any] = {"call": n, "record": rec.to_dict(), "ok": rec.ok}
        except TimeoutError:
            out = {"call": n, "error": "no end within the answer timeout"}
        except Exception as exc:  # reported, never a dead control loop
            out = {"call": n, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(out), flush=True)

    async def read() -> None:
        while True:
            line = await reader.readline()
            if not line:
                return
            try:
                req = json.loads(line)
            except json.JSONDecodeError:
                print(json.dumps({"error": f"not JSON: {line[:80]!r}"}), flush=True)
                continue
            t = asyncio.ensure_future(one(req))
            tasks.add(t)
            t.add_done_callback(tasks.discard)

    stopper = asyncio.ensure_future(stop.wait())
    reading = asyncio.ensure_future(read())
    await asyncio.wait({stopper, reading}, return_when=asyncio.FIRST_COMPLETED)
    for t in (stopper, reading, *tasks):
        t.cancel()


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
    recorder = None
    extra: dict[str, Any] = {}
    if args.events:
        from pathlib import Path

        from ng911.observe.eventlog import EventRecorder

        recorder = EventRecorder(Path(args.events))  # streams from now on (bounded buffer)
        extra["observers"] = [recorder]
        if element == "esrp":
            extra["lost"] = _observed_lost_client(cfg, recorder, args.lost_cache)
    el: SipElement | None = None
    handler: logging.Handler | None = None
    try:
        el = kinds[element](cfg, log_keep=0, **extra)
        if args.worker_role:
            from ng911.elements.runtime import WorkerRole

            el.worker = WorkerRole.from_json(args.worker_role)
        if not args.quiet:
            el.log.stream = el.log.stream or sys.stderr
        handler = route_logs(el.log.stream)
        if args.idle_timeout is not None:
            el.transport.idle_timeout = args.idle_timeout  # before start(): the sweeper
        return await _serve_started(el, cfg, args)
    finally:
        if handler is not None:
            unroute_logs(handler)
        if recorder is not None:  # only what is still pending: milliseconds
            cpu = el.cpu_seconds if el is not None else 0.0
            recorder.close(element=cfg.name, cpu_seconds=cpu)


class _ElementLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that drops records once the element closed its log file (its
    last connections close after it), instead of printing a logging error."""

    saved: tuple[bool, int, int] = (True, logging.NOTSET, logging.NOTSET)

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self.stream, "closed", False):
            return
        super().emit(record)

    def flush(self) -> None:
        if not getattr(self.stream, "closed", False):
            super().flush()


def route_logs(stream: Any) -> logging.Handler:
    """Send every `ng911.*` logger of this process (the transport's `ng911.net` events,
    handler failures) to the element's own log: `stream` is its `log_file` when set, else
    stderr (None: --quiet, only warnings and errors, on stderr). Without this they went to
    Python's last-resort handler, i.e. stderr, whatever `log_file` said.

    The element's own events (`EventLog`) write to that stream themselves; `ng911.elements`
    is kept at WARNING so they are not written twice. Undo with `unroute_logs`.
    """
    handler = _ElementLogHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))  # the lines are JSON already
    root = logging.getLogger("ng911")
    elements = logging.getLogger("ng911.elements")
    handler.saved = (root.propagate, root.level, elements.level)
    root.addHandler(handler)
    root.propagate = False
    root.setLevel(logging.INFO if stream is not None else logging.WARNING)
    elements.setLevel(logging.WARNING)
    return handler


def unroute_logs(handler: logging.Handler) -> None:
    """Detach what `route_logs` attached (the element's log file is about to close)."""
    root = logging.getLogger("ng911")
    root.removeHandler(handler)
    if isinstance(handler, _ElementLogHandler):
        root.propagate, level, elements_level = handler.saved
        root.setLevel(level)
        logging.getLogger("ng911.elements").setLevel(elements_level)
    handler.flush()


def _observed_lost_client(cfg: Any, recorder: Any, use_cache: bool) -> Any:
    """The ESRP's LoST client, reporting each query to the event file."""
    from pathlib import Path

    from ng911.lost.client import LostClient
    from ng911.pki.tls import client_context

    ctx = None
    if cfg.lost_url.startswith("https:"):
        ctx = client_context(
            [Path(p) for p in cfg.lost_ca],
            cert=Path(cfg.lost_cert) if cfg.lost_cert else None,
            key=Path(cfg.lost_key) if cfg.lost_key else None,
            keylog=Path(cfg.tls.keylog) if cfg.tls.keylog else None,
        )
    return LostClient(
        cfg.lost_url,
        element=cfg.name,
        use_cache=use_cache,
        observers=[recorder],
        ssl=ctx,
        timeout=cfg.lost_timeout,
    )


async def _serve_started(el: Any, cfg: Any, args: argparse.Namespace) -> int:
    from ng911.elements.calltaker import CallTaker
    from ng911.elements.ua import Caller

    await el.start()
    # long-lived objects (modules, lxml/shapely/aiohttp state, TLS contexts) out of the cyclic
    # collector's sight: it would walk them on every collection (bench/chain.py: ~2x CPU)
    gc.collect()
    gc.freeze()
    el.freeze_gc_every(getattr(args, "gc_freeze", 1.0))
    stop = _stop_on_signals()
    try:
        if isinstance(el, CallTaker) and args.ready:
            await asyncio.wait_for(el.registered.wait(), 10.0)
        if args.ready:
            ready: dict[str, Any] = {"ready": el.name, "pid": os.getpid()}
            if el.worker is not None:
                ready["worker"] = el.worker.index
            print(json.dumps(ready), flush=True)
        if isinstance(el, Caller) and args.control:
            await _control(el, cfg, stop)
            return 0
        if isinstance(el, Caller):
            recs = await el.place_calls([(cfg.lat, cfg.lon)], count=args.calls, rate=args.rate)
            for r in recs:
                print(json.dumps(r.to_dict()))
            return 0 if recs and all(r.ok for r in recs) else 1
        if el.worker is not None:
            await _until_stopped_or_orphaned(stop)
        else:
            await stop.wait()
        return 0
    finally:
        await el.close()


async def _until_stopped_or_orphaned(stop: asyncio.Event) -> None:
    """A worker: until a signal, or until its parent is gone (stdin EOF)."""
    from ng911.elements.workers import parent_gone

    waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(parent_gone())}
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in waits:
            t.cancel()


WORKER_ELEMENTS = ("vsp", "esrp")
MAX_WORKERS = 64


def _worker_count(args: argparse.Namespace, cfg: Any) -> int:
    from ng911.elements.config import ConfigError

    n = args.workers if args.workers is not None else int(getattr(cfg, "workers", 1))
    if not 1 <= n <= MAX_WORKERS:
        raise ConfigError(f"workers must be 1..{MAX_WORKERS}, not {n}")
    if n > 1 and args.element not in WORKER_ELEMENTS:
        raise ConfigError(
            f"workers: only {' and '.join(WORKER_ELEMENTS)} run in several processes "
            f"({args.element} keeps its state in one)"
        )
    return n


def worker_commands(args: argparse.Namespace, cfg: Any, n: int) -> list[list[str]]:
    """The command line of each of `n` workers: this one, with a `--worker-role`.

    Listeners on port 0 get a port picked here, the same for every worker (they share it);
    each worker gets a UDP port of its own for its Via (`runtime.WorkerRole`).
    """
    from ng911.elements.workers import free_ports

    ports = [lst.port or free_ports(lst.transport, lst.host, 1)[0] for lst in cfg.listeners]
    udp = next((lst for lst in cfg.listeners if lst.transport == "udp"), None)
    own = free_ports("udp", udp.host, n) if udp is not None else []
    base = [sys.executable, "-m", "ng911", "run", args.element, "--config", args.config]
    base += ["--table", args.table] if args.table else []
    base += ["--ready", "--gc-freeze", str(args.gc_freeze)]
    base += ["--quiet"] if args.quiet else []
    if args.idle_timeout is not None:
        base += ["--idle-timeout", str(args.idle_timeout)]
    if args.lost_cache:
        base += ["--lost-cache"]
    cmds = []
    for i in range(n):
        role = {"index": i, "count": n, "udp": own, "ports": ports}
        cmd = [*base, "--worker-role", json.dumps(role)]
        if args.events:
            cmd += ["--events", f"{args.events}.w{i}"]
        cmds.append(cmd)
    return cmds


async def _supervise(args: argparse.Namespace, cfg: Any, n: int) -> int:
    from ng911.elements.workers import Supervisor, WorkerProcess

    cmds = worker_commands(args, cfg, n)
    sup = Supervisor(cfg.name, cmds)  # its few lines (a worker died...) even with --quiet
    ports = json.loads(cmds[0][cmds[0].index("--worker-role") + 1])["ports"]

    def ready(workers: list[WorkerProcess]) -> None:
        if args.ready:
            addresses = [
                f"{lst.transport}:{lst.host}:{port}"
                for lst, port in zip(cfg.listeners, ports, strict=True)
            ]
            line = {
                "ready": cfg.name,
                "pid": os.getpid(),
                "workers": [w.pid for w in workers],
                "addresses": addresses,
            }
            print(json.dumps(line), flush=True)

    return await sup.run(ready)


def run_element(args: argparse.Namespace) -> int:
    from ng911.errors import Ng911Error

    try:
        cfg = _load(args.element, args.config, args.table)
        if args.element == "lost":
            return asyncio.run(_serve_lost(cfg, args))
        if args.worker_role:
            role = json.loads(args.worker_role)
            listeners = tuple(
                dataclasses.replace(lst, port=int(port))
                for lst, port in zip(cfg.listeners, role["ports"], strict=True)
            )
            cfg = dataclasses.replace(cfg, listeners=listeners)
        else:
            n = _worker_count(args, cfg)
            if n > 1:
                return asyncio.run(_supervise(args, cfg, n))
        return asyncio.run(_serve(args.element, cfg, args))
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
