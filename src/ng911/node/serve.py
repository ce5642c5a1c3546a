"""Serving one element (or LoST) in this process until a signal: what `ng911 run` runs.

Config loading (`load`), the element or LoST server, its ready line on stdout, the
caller's `--control` loop, `--events` recording, and the worker's watch on its parent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import os
import signal
import ssl
import sys
import tomllib
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ng911.elements import config as cfgmod
from ng911.elements.calltaker import CallTaker
from ng911.elements.config import ConfigError
from ng911.elements.runtime import SipElement
from ng911.elements.ua import Caller
from ng911.node.build import build_element, close_element, log_sender, lost_client
from ng911.node.logs import route_logs, unroute_logs
from ng911.node.memory import GcFreezer
from ng911.node.metrics import start_metrics
from ng911.node.workers import decode_role, decode_steering, parent_gone

if TYPE_CHECKING:
    from ng911.i3log.sender import LogSender
    from ng911.net.http1 import RunningServer

__all__ = [
    "load",
    "lost_logger",
    "serve_element",
    "serve_logger",
    "serve_lost",
    "start_logger",
    "start_lost",
    "stop_on_signals",
]

CONFIG_CLASSES: dict[str, type[cfgmod.ElementConfig]] = {
    "caller": cfgmod.CallerConfig,
    "vsp": cfgmod.VspConfig,
    "esrp": cfgmod.EsrpConfig,
    "psap": cfgmod.PsapConfig,
    "calltaker": cfgmod.CallTakerConfig,
}

# ng911.net.http1.HttpLimits: what a `[lost]` table may set (defaults: the dataclass's)
_LOST_LIMITS = (
    "header_timeout", "body_timeout", "idle_timeout", "max_connections", "max_per_source",
)  # fmt: skip


# a `[lost]` table's own LogEvents (`lost_logger`): the Logging Service's URL, the certificate
# and key that sign them (default: the table's cert/key), the agencyId (default: the domain's)
_LOST_LOGGER_KEYS = ("logger", "logger_cert", "logger_key", "agency_id")

# a `[logger]` table: the i3 Logging Service (ng911.i3log; defaults in `start_logger`)
_LOGGER_KEYS = (
    "name", "host", "port", "cert", "key", "ca", "require_client_cert", "keylog", "metrics",
    "signer_ca", "store", "table", "max_body", "page_size", "max_page", *_LOST_LIMITS,
)  # fmt: skip


def load(element: str, path: str, table: str | None) -> Any:
    """The element's table of a TOML file: an `ElementConfig`, or the `[lost]` or
    `[logger]` dict."""
    if element == "lost":
        return load_lost(path, table or element)
    if element == "logger":
        return load_logger(path, table or element)
    return cfgmod.load_toml(path, table or element, CONFIG_CLASSES[element])


def _load_table(path: str, table: str, allowed: Iterable[str]) -> dict[str, Any]:
    """One table of a TOML file as a dict, with no key outside `allowed`."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    node = data.get(table)
    if not isinstance(node, dict):
        raise ConfigError(f"{path}: no table [{table}]")
    unknown = sorted(set(node) - set(allowed))
    if unknown:
        raise ConfigError(f"{path}:[{table}]: unknown option(s) {', '.join(unknown)}")
    return node


def load_logger(path: str, table: str) -> dict[str, Any]:
    """The `[logger]` table: address, TLS, the CAs whose elements may log, the store."""
    node = _load_table(path, table, _LOGGER_KEYS)
    _check_http_table(node, f"{path}:[{table}]")
    if not (node.get("signer_ca") or node.get("ca")):
        raise ConfigError(
            f"{path}:[{table}]: signer_ca (or ca) is required: the CA files whose element "
            "certificates may sign LogEvents"
        )
    return node


def load_lost(path: str, table: str) -> dict[str, Any]:
    """The `[lost]` table: address, boundaries and the URI each boundary maps to, TLS."""
    allowed = {
        "name", "host", "port", "boundaries", "domain", "uris",
        "cert", "key", "ca", "require_client_cert", "keylog",
        "max_body", "metrics", *_LOST_LIMITS, *_LOST_LOGGER_KEYS,
    }  # fmt: skip
    node = _load_table(path, table, allowed)
    if not isinstance(node.get("boundaries"), str):
        raise ConfigError(f"{path}:[{table}]: boundaries (a GeoJSON file) is required")
    _check_http_table(node, f"{path}:[{table}]")
    return node


def _check_http_table(node: dict[str, Any], where: str) -> None:
    """The values of a `[lost]`/`[logger]` table checked where the file and table are known
    (`start_lost`/`start_logger` take a dict the testbed may have built)."""
    from ng911.net.http1 import HttpLimits

    port = node.get("port", 0)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"{where}: port must be an integer 0..65535, not {port!r}")
    for key in ("max_body", "page_size", "max_page"):
        v = node.get(key, 1)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{where}: {key} must be a positive integer, not {v!r}")
    try:
        HttpLimits(**{k: node[k] for k in _LOST_LIMITS if k in node})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


async def start_lost(cfg: dict[str, Any]) -> RunningServer:
    """A LoST server from a `[lost]` table (`load` checked its keys): the embedded store over
    its boundaries, its mappings, limits and TLS. What `ng911 run lost` serves and what the
    in-process testbed starts from its plan."""
    from ng911.lost.embedded import EmbeddedStore
    from ng911.lost.server import ServerConfig, make_app, serve
    from ng911.lost.store import MappingConfig
    from ng911.net.http1 import HttpLimits

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
    sender = None
    if cfg.get("logger"):
        sender, observe = lost_logger(cfg)
        server_cfg.observers = (observe,)
    app = make_app(store, server_cfg)
    if sender is not None:
        log_sender = sender

        async def close_sender(_app: Any) -> None:
            await log_sender.close()

        app.on_cleanup.append(close_sender)
    return await serve(
        app,
        str(cfg.get("host", "127.0.0.1")),
        int(cfg.get("port", 0)),
        ssl_context=_server_tls(cfg),
    )


def lost_logger(cfg: dict[str, Any]) -> tuple[LogSender, Callable[[Any], None]]:
    """The ECRF's own LogEvents (NENA-STA-010.3 §4.12.3: an ECRF logs the LoST queries it
    answers): a `LogSender` to the table's `logger`, signing with `logger_cert`/`logger_key`
    (default: the table's TLS `cert`/`key`), https to the logger with the table's `ca` (and
    that certificate for mutual TLS), and the observer to hand the LoST server
    (`ServerConfig.observers`): served queries become LostQuery/LostResponse LogEvents
    (`node.logevents`), elementId the table's `domain`."""
    from ng911.i3log.jws import Signer
    from ng911.i3log.sender import LogSender
    from ng911.node.build import ids_of
    from ng911.node.logevents import LogEventMapper
    from ng911.pki.errors import PkiError
    from ng911.pki.tls import client_context

    name = str(cfg.get("name", "lost"))
    cert, key = cfg.get("logger_cert") or cfg.get("cert"), cfg.get("logger_key") or cfg.get("key")
    if not (cert and key):
        raise ConfigError(
            f"[{name}]: logger needs cert and key (or logger_cert and logger_key):"
            " LogEvents are signed with them"
        )
    try:
        signer = Signer.from_files(str(cert), str(key))
        url = str(cfg["logger"])
        ctx = None
        if url.startswith("https:"):
            cafiles = [Path(c) for c in cfg.get("ca", [])]
            ctx = client_context(cafiles, cert=Path(cert), key=Path(key))
    except (PkiError, OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[{name}]: logger: {exc}") from None
    sender = LogSender(url, signer, ssl_context=ctx)
    element_id, agency_id = ids_of(str(cfg.get("domain", "")), name, str(cfg.get("agency_id", "")))
    mapper = LogEventMapper(sender, element_id, agency_id)
    return sender, mapper.observe


def _server_tls(cfg: dict[str, Any]) -> ssl.SSLContext | None:
    """The server context of a `[lost]` or `[logger]` table (None without `cert`)."""
    from ng911.pki.tls import server_context

    if not cfg.get("cert"):
        return None
    return server_context(
        Path(cfg["cert"]),
        Path(cfg["key"]),
        [Path(c) for c in cfg.get("ca", [])],
        require_client_cert=bool(cfg.get("require_client_cert", False)),
        keylog=Path(cfg["keylog"]) if cfg.get("keylog") else None,
    )


async def start_logger(cfg: dict[str, Any]) -> RunningServer:
    """An i3 Logging Service from a `[logger]` table (`load` checked its keys): its store
    (`store`: a PostgreSQL DSN, else a SQLite file, default "logevents.sqlite"; ":memory:"
    keeps nothing), the CAs that vouch for signers (`signer_ca`, default `ca`), limits and
    TLS (`require_client_cert` for mutual TLS). What `ng911 run logger` serves and what an
    in-process chain starts; closing the returned server closes the store."""
    from ng911.i3log.jws import Verifier
    from ng911.i3log.server import LoggingServer, LoggingServerConfig, serve_logging
    from ng911.i3log.store import open_store

    name = cfg.get("name", "logger")
    try:
        defaults = LoggingServerConfig()
        limits = dataclasses.replace(
            defaults.limits, **{k: cfg[k] for k in _LOST_LIMITS if k in cfg}
        )
        server_cfg = LoggingServerConfig(
            max_body=int(cfg.get("max_body", defaults.max_body)),
            limits=limits,
            page_size=int(cfg.get("page_size", defaults.page_size)),
            max_page=int(cfg.get("max_page", defaults.max_page)),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{name}]: {exc}") from None
    signer_ca = cfg.get("signer_ca") or cfg.get("ca") or []
    verifier = Verifier.from_files([str(p) for p in signer_ca])  # PkiError: one line, exit 2
    ctx = _server_tls(cfg)
    try:
        store = await open_store(
            str(cfg.get("store", "logevents.sqlite")), table=str(cfg.get("table", "log_events"))
        )
    except Exception as exc:  # sqlite3/psycopg errors: a bad path or DSN is a config error
        raise ConfigError(f"[{name}]: store: {type(exc).__name__}: {exc}") from None
    server = LoggingServer(store, verifier, server_cfg)
    return await serve_logging(
        server,
        str(cfg.get("host", "127.0.0.1")),
        int(cfg.get("port", 0)),
        ssl_context=ctx,
        cleanup=store.close,
    )


async def serve_lost(cfg: dict[str, Any], args: argparse.Namespace) -> int:
    """A LoST server as an element: what the testbed's LoST host runs in its own process."""
    return await _serve_http(await start_lost(cfg), cfg, "lost", args)


async def serve_logger(cfg: dict[str, Any], args: argparse.Namespace) -> int:
    """The i3 Logging Service as an element (`ng911 run logger`)."""
    return await _serve_http(await start_logger(cfg), cfg, "logger", args)


async def _serve_http(
    running: RunningServer, cfg: dict[str, Any], role: str, args: argparse.Namespace
) -> int:
    """Serve an HTTP service until a signal, its ready line naming its URL (and its
    metrics': event-loop lag and the process's CPU and memory)."""
    name = cfg.get("name", role)
    stop = stop_on_signals()
    metrics = None
    try:
        spec = getattr(args, "metrics", None) or cfg.get("metrics")
        if spec:
            metrics = await start_metrics(str(spec))
        if args.ready:
            ready = {"ready": name, "url": running.url}
            if metrics is not None:
                ready["metrics"] = metrics.url
            print(json.dumps(ready), flush=True)
        if getattr(args, "stop_with_parent", False):
            await _until_stopped_or_orphaned(stop)
        else:
            await stop.wait()
        return 0
    finally:
        if metrics is not None:
            await metrics.close()
        await running.close()


def stop_on_signals() -> asyncio.Event:
    """An event that SIGINT/SIGTERM set. Installed before the ready line is printed: a
    supervisor (the testbed, a worker parent) may stop us the moment it reads that line, and
    the default handler would kill us without closing listeners or writing events."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def json_lines(reader: asyncio.StreamReader) -> AsyncIterator[tuple[bytes, Any]]:
    """Each line of `reader` until EOF with its JSON value (None when it is not JSON): how a
    controlled caller and the testbed that drives it speak, one object per line."""
    while line := await reader.readline():
        try:
            yield line, json.loads(line)
        except json.JSONDecodeError:
            yield line, None


async def _control(el: Caller, cfg: Any, stop: asyncio.Event) -> None:
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
        async for line, req in json_lines(reader):
            if req is None:
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


def worker_config(cfg: Any, role_text: str) -> Any:
    """A worker's config: its listeners on the ports its parent picked (shared by all)."""
    _, ports = decode_role(role_text)
    listeners = tuple(
        dataclasses.replace(lst, port=port) for lst, port in zip(cfg.listeners, ports, strict=True)
    )
    return dataclasses.replace(cfg, listeners=listeners)


async def serve_element(element: str, cfg: Any, args: argparse.Namespace) -> int:
    """Build the element from `cfg` and serve it until a signal (a caller: its calls)."""
    recorder = None
    lost = None
    if args.events:
        from ng911.observe.eventlog import EventRecorder

        # streams from now on (bounded buffer)
        interval = getattr(args, "events_interval", 0.5)
        recorder = EventRecorder(Path(args.events), interval=max(0.01, interval))
        if element == "esrp":
            lost = lost_client(cfg, observers=[recorder], use_cache=args.lost_cache)
    el: SipElement | None = None
    handler = None
    try:
        obs = [recorder] if recorder is not None else []
        el = build_element(element, cfg, observers=obs, lost=lost)
        sender = log_sender(el)
        if sender is not None and getattr(args, "logger_defer", None):
            sender.pause()  # close_element resumes it and drains for --logger-defer s
        if args.worker_role:
            el.worker = decode_role(args.worker_role)[0]
            el.transport.steering = decode_steering(args.worker_role)
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


async def _serve_started(el: SipElement, cfg: Any, args: argparse.Namespace) -> int:
    await el.start()
    metrics = None
    spec = getattr(args, "metrics", None) or cfg.metrics
    if spec:
        try:
            metrics = await start_metrics(spec, el)
        except BaseException:
            await close_element(el)
            raise
    # long-lived objects (modules, lxml/shapely/aiohttp state, TLS contexts) out of the cyclic
    # collector's sight: it would walk them on every collection (bench/chain.py: ~2x CPU)
    gc.collect()
    gc.freeze()
    freezer = GcFreezer()
    freezer.every(getattr(args, "gc_freeze", 1.0))
    stop = stop_on_signals()
    try:
        if isinstance(el, CallTaker) and args.ready:
            await asyncio.wait_for(el.registered.wait(), 10.0)
        if args.ready:
            ready: dict[str, Any] = {"ready": el.name, "pid": os.getpid()}
            ready["addresses"] = [str(a) for a in el.addresses]
            if el.worker is not None:
                ready["worker"] = el.worker.index
            if metrics is not None:
                ready["metrics"] = metrics.url
            print(json.dumps(ready), flush=True)
        if isinstance(el, Caller) and args.control:
            await _control(el, cfg, stop)
            return 0
        if isinstance(el, Caller):
            recs = await el.place_calls([(cfg.lat, cfg.lon)], count=args.calls, rate=args.rate)
            for r in recs:
                print(json.dumps(r.to_dict()))
            return 0 if recs and all(r.ok for r in recs) else 1
        if el.worker is not None or getattr(args, "stop_with_parent", False):
            await _until_stopped_or_orphaned(stop)
        else:
            await stop.wait()
        return 0
    finally:
        freezer.stop()
        if metrics is not None:
            await metrics.close()
        await close_element(el, drain=getattr(args, "logger_defer", None) or 1.0)


async def _until_stopped_or_orphaned(stop: asyncio.Event) -> None:
    """A worker (or any process run with `--stop-with-parent`): until a signal, or until its
    parent is gone (stdin EOF)."""
    waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(parent_gone())}
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in waits:
            t.cancel()
