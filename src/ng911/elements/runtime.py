"""The transaction-user plumbing every element shares (RFC 3261 §8, §17, §18 glue).

Why one module: the sans-I/O transaction machines (`ng911.sip.transaction`) return actions
(send, start a timer, deliver, time out); the transport layer (`ng911.net`) moves bytes.
Something has to carry the actions out, own the clock (`loop.call_later`), route a received
message to its transaction or to the element, and answer what every SIP element answers the
same way. That is `SipElement`; the caller, the proxies and the call taker subclass it and
only decide what to do with a request or a response.

What it does for every element:
- requests: retransmissions absorbed by their server transaction; `100 Trying` at once for
  an INVITE (RFC 3261 §16.2 / §17.2.1); CANCEL answered 200 (or 481) and passed on to the
  element, whose INVITE then ends with 487 (§9.2); OPTIONS answered 200 with Allow and
  Accept (§11.2); an ACK for a 2xx goes to the element (§13.2.2.4: not a transaction);
- bad input: every `Ng911Error` a handler raises on hostile input is answered with the
  status the error carries (400 for a malformed header, 483, 416...), never a crash;
- logs: one JSON object per event (`element`, `call_id`, `hop`, `what`, ...);
- next hops: a static host table (RFC 3263 without DNS, like Kamailio's `alias`/dispatcher
  lists): URI → transport, address, and the name the TLS certificate must carry.
- CPU accounting: `time.thread_time()` around every handler, per element (`cpu_seconds`).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import logging
import os
import random
import secrets
import ssl
import sys
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ng911.elements.config import ElementConfig
from ng911.elements.overload import Admission, overload_via_params
from ng911.errors import Ng911Error
from ng911.net.address import DEFAULT_PORTS, Address, Source, is_ip_literal
from ng911.net.admission import ListenerLimits
from ng911.net.errors import TransportError
from ng911.net.log import MAX_FIELD, clean
from ng911.net.transport import SipTransportLayer
from ng911.pki.tls import client_context, matches_domain, server_context
from ng911.sip.errors import SipParseError
from ng911.sip.headers import MAGIC_COOKIE, Via, new_tag
from ng911.sip.message import Request, Response, make_response
from ng911.sip.priority import classify
from ng911.sip.transaction import (
    CancelTimer,
    ClientTransaction,
    Deliver,
    Send,
    ServerTransaction,
    StartTimer,
    Terminated,
    Timeout,
    TimerConfig,
    TransactionTable,
    client_transaction,
    server_key,
    server_transaction,
)
from ng911.sip.uri import URI, SipURI

__all__ = [
    "ALLOW",
    "ClientCtx",
    "ElementError",
    "EventLog",
    "ServerCtx",
    "SipElement",
    "WorkerRole",
    "status_of",
]

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER"
ACCEPT = "application/sdp, application/pidf+xml, multipart/mixed"

log = logging.getLogger("ng911.elements")


class ElementError(Ng911Error):
    """An element cannot serve a request; `status` is the SIP answer (RFC 3261 §21)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


def status_of(exc: BaseException) -> tuple[int, str]:
    """The SIP status and reason phrase an error is answered with."""
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    if not isinstance(status, int) or not 300 <= status <= 699:
        status = 500 if not isinstance(exc, SipParseError) else 400
    if not isinstance(reason, str) or not reason:
        reason = str(exc) or type(exc).__name__
    # a reason phrase is one line of printable text
    reason = "".join(c if c.isprintable() else " " for c in reason)[:120]
    return status, reason


# ------------------------------------------------------------------------------ logging


class EventLog:
    """One JSON object per event (STYLE: Kamailio-style structured logs).

    Lines go to `stream` (a file opened by the element, or stderr when `echo` is set) and,
    when `keep` is set, to the in-memory `records` list the tests and the chain read.
    """

    def __init__(
        self,
        element: str,
        *,
        stream: TextIO | None = None,
        keep: int = 0,
        echo: bool = False,
    ) -> None:
        self.element = element
        self.stream = stream if stream is not None else (sys.stderr if echo else None)
        self.keep = keep
        self.records: list[dict[str, Any]] = []

    @property
    def enabled(self) -> bool:
        """Would a record go anywhere? Hot paths test this before formatting fields."""
        return self.stream is not None or bool(self.keep) or log.isEnabledFor(logging.INFO)

    def __call__(self, what: str, *, call_id: str | None = None, **fields: Any) -> None:
        if self.stream is None and not self.keep and not log.isEnabledFor(logging.INFO):
            return
        rec: dict[str, Any] = {"ts": round(time.time(), 6), "element": self.element}
        if call_id is not None:
            rec["call_id"] = call_id
        rec["what"] = what
        for k, v in fields.items():
            # peer-supplied text (first lines, reasons, URIs) is bounded and escaped; the
            # common case, short printable text, costs one C-level check
            if isinstance(v, str) and (len(v) > MAX_FIELD or not v.isprintable()):
                v = clean(v)
            rec[k] = v
        if self.keep:
            self.records.append(rec)
            if len(self.records) > self.keep:
                del self.records[: len(self.records) - self.keep]
        line = json.dumps(rec, default=str)
        if self.stream is not None:
            self.stream.write(line + "\n")
            self.stream.flush()
        log.info(line)

    def find(self, what: str, **match: Any) -> list[dict[str, Any]]:
        return [
            r
            for r in self.records
            if r["what"] == what and all(r.get(k) == v for k, v in match.items())
        ]


# ------------------------------------------------------------------------------ the collector

# Allocations between two young-generation collections of the cyclic collector (CPython's
# default: 700). An element allocates ~1,000 container objects per call, most of them freed
# by reference counting within milliseconds; at 700 the collector examines (and promotes to
# the old generation) objects that were about to die anyway, and the old generation's full
# collections then walk every live transaction. bench/proxy.py, VspProxy, 5,000 calls held
# live: 676 µs of CPU per call at 700, 514 at 10,000, 496 at 50,000, 488 with no collector.
GC_GEN0_THRESHOLD = 50_000


_libc_trim: Callable[[int], int] | bool | None = False  # False: not looked up yet


def release_freed_memory() -> bool:
    """Hand memory that is free inside the process back to the OS (glibc `malloc_trim`).

    Why: after a flood the transactions expire and Python frees their objects, but the
    ~1-2 KB message buffers came from malloc, whose heap keeps the freed space: RSS stayed
    at its flood peak for good (70 → 211 MB after 30,000 INVITEs, never back). Trimming
    returns it. False where there is no glibc."""
    global _libc_trim
    if _libc_trim is False:
        try:
            import ctypes

            _libc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _libc_trim = None
    if _libc_trim is None or _libc_trim is True:
        return False
    _libc_trim(0)
    return True


def raise_gc_threshold(gen0: int = GC_GEN0_THRESHOLD) -> None:
    """Raise (never lower) the collector's young-generation threshold for a SIP element
    process; cyclic garbage is still collected, just in larger, rarer batches."""
    t0, t1, t2 = gc.get_threshold()
    if 0 < t0 < gen0:
        gc.set_threshold(gen0, t1, t2)


# ------------------------------------------------------------------------------ workers


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """This element is worker `index` of `count` processes sharing its listeners.

    Why a private UDP port per worker: the workers share each listening port
    (SO_REUSEPORT; the kernel hashes every upstream source address/port to one worker, so
    an INVITE and its CANCEL and retransmissions meet the same server transaction), but a
    response from downstream comes from the next hop's address and would be hashed to any
    worker, not to the one holding the client transaction. So each worker sends its
    requests from a port of its own (`udp_ports[index]`) and names it in its Via sent-by
    (RFC 3261 §18.2.2, RFC 3581 §4). Record-Route keeps the shared address: in-dialog
    requests are new transactions any worker can proxy. `udp_ports` lists every worker's
    port, so that loop detection (§16.3 item 4) knows a Via of a sibling as ours.
    """

    index: int
    count: int
    udp_ports: tuple[int, ...] = ()

    @property
    def udp_port(self) -> int:
        return self.udp_ports[self.index] if self.index < len(self.udp_ports) else 0

    def to_json(self) -> str:
        return json.dumps({"index": self.index, "count": self.count, "udp": self.udp_ports})

    @classmethod
    def from_json(cls, text: str) -> WorkerRole:
        try:
            d = json.loads(text)
            return cls(int(d["index"]), int(d["count"]), tuple(int(p) for p in d["udp"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ElementError(500, f"bad worker role {text[:80]!r}: {exc}") from None


# ------------------------------------------------------------------------------ contexts


@dataclass(eq=False, slots=True)
class ServerCtx:
    """A received request and its server transaction: answer it with `respond`/`reply`."""

    element: SipElement
    tx: ServerTransaction
    request: Request
    source: Source
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    final: int = 0  # status of the final response sent, 0 while none
    to_tag: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    delivered: bool = False  # the request went up to the element (once, never again)
    size: int = 0  # characters of the request held (overload control's memory budget)

    @property
    def call_id(self) -> str:
        return self.request.call_id

    def respond(self, response: Response) -> None:
        if response.status >= 200:
            if self.final:
                return  # one final response per transaction (§16.7 step 10, §17.2.1)
            self.final = response.status
        self.element._run(self, self.tx.send_response(response))

    def reply(
        self,
        status: int,
        reason: str | None = None,
        *,
        to_tag: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Response:
        tag = to_tag if to_tag is not None else (self.to_tag if status > 100 else None)
        if tag is None and status >= 200 and self.request.to_addr.tag is None:
            # RFC 3261 §8.2.6.2: a final response we generate carries our To tag
            tag = self.to_tag = new_tag()
        resp = make_response(self.request, status, reason, to_tag=tag, extra=extra)
        if body:
            resp.headers.add("Content-Type", content_type or "application/sdp")
            resp.body = body
        self.respond(resp)
        return resp


OnResponse = Callable[["ClientCtx", Response], None]
OnFailure = Callable[["ClientCtx", int, str], None]


@dataclass(eq=False, slots=True)
class ClientCtx:
    """A request we sent and its client transaction; responses go to the callbacks."""

    element: SipElement
    tx: ClientTransaction
    request: Request
    dest: Address
    server_name: str | None
    on_response: OnResponse | None
    on_failure: OnFailure | None
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    failed: bool = False


Ctx = ServerCtx | ClientCtx


# ------------------------------------------------------------------------------ the element


class SipElement:
    """Base of every element: listeners, transactions, timers, OPTIONS/CANCEL, logging."""

    role = "element"
    answers_options = True
    # overload control and per-source limits (`overload.py`): the proxies turn it on; a UA
    # serves its own few dialogs and has nothing to shed
    sheds_load = False

    def __init__(
        self,
        config: ElementConfig,
        *,
        log_keep: int = 0,
        observers: Iterable[Callable[[Any], None]] = (),
        client_tls: ssl.SSLContext | None = None,
        server_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.fqdn = config.fqdn
        self.timers = TimerConfig(t1=config.t1, t2=max(config.t1, 4.0))
        self.hosts: dict[str, str] = {h.name.lower(): h.address for h in config.hosts}
        stream: TextIO | None = None
        if config.log_file:
            stream = open(config.log_file, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._log_stream = stream
        self.log = EventLog(self.name, stream=stream, keep=log_keep)
        self._client_tls = client_tls
        self._server_tls = server_tls
        self.transport = SipTransportLayer(
            element=self.name,
            client_tls=self._client_ctx(),
            handshake_timeout=config.handshake_timeout,
            first_message_timeout=config.first_message_timeout,
            idle_timeout=config.idle_timeout,
        )
        self.transport.on_message = self._on_message
        self.transport.observers.extend(observers)
        self.table = TransactionTable()
        self._ctxs: dict[Any, Ctx] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.addresses: list[Address] = []
        self._located: dict[URI, tuple[Address, str | None]] = {}
        self.cpu_seconds = 0.0
        self.handled = 0
        self.errors = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gc_freezer: asyncio.TimerHandle | None = None
        self.worker: WorkerRole | None = None  # set before start() in a worker process
        self.via_udp: Address | None = None  # a worker's own UDP port (its Via sent-by)
        self.admission = Admission(config.overload, self.hosts.values(), _branch_rng.random)
        self._lag_timer: asyncio.TimerHandle | None = None
        self.held_bytes = 0  # request text held by server transactions
        self._table_high = 0  # most transactions since memory was last released
        self._trim_check = 0.0
        self._admission = self.sheds_load and config.overload.enabled
        self._lag_timer: asyncio.TimerHandle | None = None
        self._shed_logged = (0, 0, 0.0)  # refused, source-limited, when last logged

    # -------------------------------------------------------------- TLS and start/stop

    def _client_ctx(self) -> ssl.SSLContext | None:
        if self._client_tls is not None:
            return self._client_tls
        tls = self.config.tls
        if not tls.ca:
            return None
        return client_context(
            [Path(p) for p in tls.ca],
            cert=Path(tls.cert) if tls.cert else None,
            key=Path(tls.key) if tls.key else None,
            keylog=Path(tls.keylog) if tls.keylog else None,
        )

    def _server_ctx(self) -> ssl.SSLContext:
        if self._server_tls is not None:
            return self._server_tls
        tls = self.config.tls
        if not tls.enabled:
            raise ElementError(500, f"{self.name}: a TLS listener needs tls.cert and tls.key")
        return server_context(
            Path(tls.cert),
            Path(tls.key),
            [Path(p) for p in tls.ca],
            require_client_cert=tls.require_client_cert,
            keylog=Path(tls.keylog) if tls.keylog else None,
        )

    async def start(self) -> list[Address]:
        """Open every configured listener; returns the bound addresses."""
        self._loop = asyncio.get_running_loop()
        raise_gc_threshold()
        shared = self.worker is not None
        for lst in self.config.listeners:
            tls = self._server_ctx() if lst.transport == "tls" else None
            limits = ListenerLimits(lst.max_connections, lst.max_per_source, lst.allowed_peers)
            addr = await self.transport.listen(
                lst.transport, lst.host, lst.port, tls=tls, reuse_port=shared, limits=limits
            )
            self.addresses.append(addr)
            self.log("listening", transport=addr.transport, address=f"{addr.host}:{addr.port}")
        udp = next((a for a in self.addresses if a.transport == "udp"), None)
        if self.worker is not None and udp is not None:
            self.via_udp = await self.transport.listen_requests_udp(udp.host, self.worker.udp_port)
            self.log(
                "worker",
                index=self.worker.index,
                count=self.worker.count,
                via=f"{self.via_udp.host}:{self.via_udp.port}",
            )
        if self._admission:
            self._sample_lag(self.loop.time())
        await self.started()
        return list(self.addresses)

    async def started(self) -> None:
        """Hook: after the listeners are up (REGISTER, for a UA)."""

    def freeze_gc_every(self, interval: float) -> None:
        """Call `gc.freeze()` every `interval` seconds (0: stop); what `ng911 run` does.

        Why: each call leaves ~190 GC-tracked objects alive for the 32 s its transactions
        wait out (RFC 3261/6026 timers over UDP), and a full collection walks every one of
        them (~30 µs per held call): at 300 calls/s a pass stalls the loop for 0.3 s and the
        setup delay's p99 goes past 100 ms. Frozen objects are never walked again, yet still
        freed by reference counting when their call ends; only cyclic garbage frozen before
        it was collected would stay. A call leaves none (the transactions break their cycles
        in `_release`; tests/elements count it), so this is off in a library by default and
        on in the element process. bench/load.py (`ng911-gc-freeze` row): 1,000 calls/s
        with p99 < 10 ms, against 300 without.
        """
        if self._gc_freezer is not None:
            self._gc_freezer.cancel()
            self._gc_freezer = None
        if interval > 0:
            self._gc_freezer = self.loop.call_later(interval, self._freeze_gc, interval)

    def _freeze_gc(self, interval: float) -> None:
        gc.freeze()
        self._gc_freezer = self.loop.call_later(interval, self._freeze_gc, interval)

    async def close(self) -> None:
        self.freeze_gc_every(0)
        if self._lag_timer is not None:
            self._lag_timer.cancel()
            self._lag_timer = None
        for ctx in list(self._ctxs.values()):
            for h in ctx.timers.values():
                h.cancel()
        self._ctxs.clear()
        for task in list(self._tasks):
            task.cancel()
        await self.transport.close()
        if self._log_stream is not None:
            self._log_stream.close()
            self._log_stream = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def drive(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` now, as far as it goes without waiting; a task only if it must wait.

        Why: a send over UDP, or over an open TCP/TLS connection, never waits, and a task
        per message costs more than the send itself. The coroutine is stepped here; only
        when it waits (a TCP connect, a TLS handshake) is the rest handed to a task that
        resumes it, so the messages of one transaction still leave in order.
        """
        try:
            fut = coro.send(None)
        except StopIteration:
            return
        except Exception as exc:
            self.errors += 1
            self.log("task_failed", error=f"{type(exc).__name__}: {exc}")
            return
        self.spawn(_resume(coro, fut))

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run a coroutine as a task whose failure is logged, never lost."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.errors += 1
            self.log("task_failed", error=f"{type(exc).__name__}: {exc}")
            log.error("%s: task failed", self.name, exc_info=exc)

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> asyncio.TimerHandle:
        """A timer whose callback runs under this element's accounting and error guard."""
        return self.loop.call_later(delay, self._guarded, fn, args)

    def _guarded(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        t0 = time.thread_time()
        try:
            fn(*args)
        except Exception as exc:
            self.errors += 1
            self.log("handler_failed", error=f"{type(exc).__name__}: {exc}")
            log.error("%s: timer handler failed", self.name, exc_info=exc)
        finally:
            self.cpu_seconds += time.thread_time() - t0

    # -------------------------------------------------------------- addresses

    def local(self, transport: str) -> Address:
        """Our listener for `transport` (else the first one) — for Via, Contact, Record-Route."""
        for a in self.addresses:
            if a.transport == transport:
                return a
        if not self.addresses:
            raise ElementError(500, f"{self.name} has no listener")
        return self.addresses[0]

    def advertised_host(self, addr: Address) -> str:
        """Our name in Via/Contact/Record-Route: the FQDN when the host table knows it
        (so TLS peers can check our certificate by name, RFC 5922), else the address."""
        if self.fqdn.lower() in self.hosts:
            return self.fqdn
        return addr.host

    def via(self, transport: str, branch: str) -> str:
        return str(self.via_value(transport, branch))

    def via_value(self, transport: str, branch: str) -> Via:
        """Our Via (RFC 3261 §16.6 item 8, §18.1.1; `rport` asks for RFC 3581) as a value,
        so that a message we send can cache it instead of parsing it back."""
        addr = self.local(transport)
        if transport == "udp" and self.via_udp is not None:
            addr = self.via_udp  # a worker: answers come back to this process (WorkerRole)
        host = self.advertised_host(addr)
        return Via(transport.upper(), host, addr.port, (("branch", branch), ("rport", None)))

    def push_via(self, message: Request, transport: str, branch: str) -> None:
        """Put our Via on top of `message` (its top-Via cache seeded, not re-parsed)."""
        via = self.via_value(transport, branch)
        message.headers.prepend("Via", str(via))
        message.headers.remember("top_via", via)

    def own_uri(
        self, transport: str, *, user: str | None = None, lr: bool = True, sips: bool = True
    ) -> SipURI:
        """A URI that reaches us over `transport`: `sips:` on TLS (RFC 5630 §3), or with
        `sips=False` (a Contact or Record-Route in a dialog that is not sips: end to end)
        `sip:…;transport=tls`, so that in-dialog requests are not bound to TLS on hops that
        are not (RFC 3261 §26.2.2 would refuse them) and UAs that cannot send to a sips:
        route for a sip: dialog (baresip) still can."""
        addr = self.local(transport)
        params: list[tuple[str, str | None]] = []
        if transport == "tls" and sips:
            scheme = "sips"
        else:
            scheme = "sip"
            if transport in ("tcp", "tls"):
                params.append(("transport", transport))
        if lr:
            params.append(("lr", None))
        return SipURI(scheme, user, None, self.advertised_host(addr), addr.port, tuple(params))

    def is_own(self, uri: URI) -> bool:
        """Does `uri` (a Route or Request-URI) name this element?"""
        if not isinstance(uri, SipURI):
            return False
        host = uri.host.lower()
        names = {self.fqdn.lower()}
        names.update(a.host for a in self.addresses)
        if host not in names and self.hosts.get(host) not in {a.host for a in self.addresses}:
            return False
        if uri.port is None:
            return True
        return any(a.port == uri.port for a in self.addresses)

    def locate(self, uri: URI) -> tuple[Address, str | None]:
        """Where to send a request for `uri` (RFC 3263 §4 on a static host table).

        Transport: the `transport` parameter, else TLS for sips:, else UDP; port: the URI's,
        else the transport's default. Returns the address and the host name the TLS peer's
        certificate must carry (None when the URI holds an IP address).
        """
        hit = self._located.get(uri)
        if hit is not None:
            return hit
        found = self._locate(uri)
        if len(self._located) >= 4096:
            self._located.clear()
        self._located[uri] = found
        return found

    def _locate(self, uri: URI) -> tuple[Address, str | None]:
        if not isinstance(uri, SipURI):
            raise ElementError(416, f"cannot route to a {uri!s:.40} URI")
        transport = uri.transport or ("tls" if uri.secure else "udp")
        if uri.secure:
            transport = "tls"  # RFC 3261 §26.2.2: sips only over TLS
        if transport not in DEFAULT_PORTS:
            raise ElementError(503, f"unsupported transport {transport}")
        maddr = uri.param("maddr")
        host = (maddr or uri.host).strip("[]")
        if is_ip_literal(host):
            ip, name = host, None
        else:
            ip_or_none = self.hosts.get(host.lower())
            if ip_or_none is None:
                if host.lower() == "localhost":
                    ip_or_none = "127.0.0.1"
                else:
                    raise ElementError(503, f"cannot resolve {host} (not in the host table)")
            ip, name = ip_or_none, host.lower()
        port = uri.port or DEFAULT_PORTS[transport]
        return Address(transport, ip, port), name

    # -------------------------------------------------------------- sending

    def send_request(
        self,
        request: Request,
        dest: Address,
        *,
        server_name: str | None = None,
        on_response: OnResponse | None = None,
        on_failure: OnFailure | None = None,
    ) -> ClientCtx:
        """Send `request` in a new client transaction (its top Via must be ours)."""
        tx = client_transaction(request, reliable=dest.reliable, timers=self.timers)
        ctx = ClientCtx(self, tx, request, dest, server_name, on_response, on_failure)
        self.table.add(tx)
        self._ctxs[tx.key] = ctx
        self._run(ctx, tx.start())
        return ctx

    def send_stateless(
        self,
        message: Request | Response,
        dest: Address,
        *,
        server_name: str | None = None,
        connection_id: int | None = None,
    ) -> None:
        """Send outside any transaction (ACK for a 2xx, a 2xx retransmission)."""
        self._send_now(message, dest, server_name, connection_id, None)

    def _send_now(
        self,
        message: Request | Response,
        dest: Address,
        server_name: str | None,
        connection_id: int | None,
        ctx: Ctx | None,
    ) -> None:
        """Send at once: over UDP straight into the socket (no coroutine: it never waits),
        otherwise through `drive`."""
        if dest.transport == "udp":
            try:
                if self.transport.send_datagram(message, dest):
                    return
            except (TransportError, OSError, ssl.SSLError) as exc:
                self._send_failed(message, dest, exc, ctx)
                return
            except Exception as exc:  # as `drive` treats a failing send: logged, not raised
                self.errors += 1
                self.log("task_failed", error=f"{type(exc).__name__}: {exc}")
                return
        self.drive(self._send(message, dest, server_name, connection_id, ctx))

    async def _send(
        self,
        message: Request | Response,
        dest: Address,
        server_name: str | None,
        connection_id: int | None,
        ctx: Ctx | None,
    ) -> None:
        try:
            await self.transport.send(
                message, dest, server_name=server_name, connection_id=connection_id
            )
        except (TransportError, OSError, ssl.SSLError) as exc:
            self._send_failed(message, dest, exc, ctx)

    def _send_failed(
        self, message: Request | Response, dest: Address, exc: BaseException, ctx: Ctx | None
    ) -> None:
        self.log(
            "send_failed",
            call_id=message.headers.get("Call-ID"),
            first_line=message.first_line,
            dest=str(dest),
            error=str(exc),
        )
        if isinstance(ctx, ClientCtx) and not ctx.failed:
            # later, never inside the _run that is sending: no re-entrancy
            self.loop.call_soon(self._guarded, self._transport_failed, (ctx,))

    def _transport_failed(self, ctx: ClientCtx) -> None:
        if not ctx.failed:
            self._run(ctx, ctx.tx.on_transport_error())

    def _accounted(self, fn: Callable[..., None], *args: Any) -> None:
        t0 = time.thread_time()
        try:
            fn(*args)
        finally:
            self.cpu_seconds += time.thread_time() - t0

    # -------------------------------------------------------------- running actions

    def _run(self, ctx: Ctx, actions: list[Any]) -> None:
        for a in actions:
            if isinstance(a, Send):
                if isinstance(ctx, ClientCtx):
                    self._send_now(a.message, ctx.dest, ctx.server_name, None, ctx)
                else:
                    src = ctx.source
                    self._send_now(a.message, src.address, None, src.connection_id, ctx)
            elif isinstance(a, StartTimer):
                old = ctx.timers.pop(a.name, None)
                if old is not None:
                    old.cancel()
                ctx.timers[a.name] = self.loop.call_later(a.delay, self._timer, ctx, a.name)
            elif isinstance(a, CancelTimer):
                h = ctx.timers.pop(a.name, None)
                if h is not None:
                    h.cancel()
            elif isinstance(a, Deliver):
                if isinstance(ctx, ClientCtx):
                    if ctx.on_response is not None and isinstance(a.message, Response):
                        ctx.on_response(ctx, a.message)
                else:
                    self._server_deliver(ctx, a.message)
            elif isinstance(a, Timeout):
                if isinstance(ctx, ClientCtx):
                    ctx.failed = True
                    if ctx.on_failure is not None:
                        ctx.on_failure(ctx, a.status, a.cause)
                else:
                    self.log("server_timeout", call_id=ctx.call_id, cause=a.cause)
                    self.server_timeout(ctx)
            elif isinstance(a, Terminated):
                self.table.remove(ctx.tx)
                if self._ctxs.pop(ctx.tx.key, None) is not None and isinstance(ctx, ServerCtx):
                    self.held_bytes -= ctx.size
                for h in ctx.timers.values():
                    h.cancel()
                ctx.timers.clear()
                self._release(ctx)

    def _server_deliver(self, ctx: ServerCtx, message: Request | Response) -> None:
        """A server transaction's Deliver: the request that created it goes up once (never
        twice, whatever the machine says), an ACK goes up as an ACK.

        RFC 6026 §7.1: an ACK matching an INVITE transaction in "accepted" (an RFC 2543
        client's ACK for the 2xx, §17.2.3, or one reusing the INVITE's branch) is passed to
        the TU as the ACK it is; re-delivering the INVITE would start the call again.
        """
        if message is ctx.request:
            if not ctx.delivered:
                ctx.delivered = True
                self._deliver(ctx)
                return
        elif isinstance(message, Request) and message.method == "ACK":
            self.on_ack(message, ctx.data.pop("ack_source", None) or ctx.source)
            return
        self.log("redelivery_dropped", call_id=ctx.call_id, method=ctx.request.method)

    def _release(self, ctx: Ctx) -> None:
        """Break the reference cycles of a finished transaction (callbacks, call state), so
        reference counting frees the call's objects at once. Left to the cyclic collector,
        ~100 objects per call pile up between collections and the full collections that
        free them pause the element for tens of milliseconds under load."""
        if isinstance(ctx, ClientCtx):
            ctx.on_response = None
            ctx.on_failure = None
        else:
            self.server_released(ctx)
        ctx.data.clear()

    def server_released(self, ctx: ServerCtx) -> None:
        """Hook: a server transaction ended; drop what refers back to it."""

    def _timer(self, ctx: Ctx, name: str) -> None:
        ctx.timers.pop(name, None)
        self._guarded(lambda: self._run(ctx, ctx.tx.on_timer(name)), ())

    # -------------------------------------------------------------- receiving

    def _on_message(self, msg: Request | Response, source: Source) -> None:
        t0 = time.thread_time()
        try:
            if isinstance(msg, Response):
                self._on_response(msg, source)
            else:
                self._on_request(msg, source)
        except Ng911Error as exc:
            self._bad_input(msg, source, exc)
        except Exception as exc:  # a bug must not take the element down: answer 500, log
            self.errors += 1
            log.error("%s: handler failed on %s", self.name, msg.first_line, exc_info=exc)
            self._bad_input(msg, source, exc)
        finally:
            self.cpu_seconds += time.thread_time() - t0
            self.handled += 1

    def _bad_input(self, msg: Request | Response, source: Source, exc: BaseException) -> None:
        status, reason = status_of(exc)
        call_id = msg.headers.get("Call-ID")
        self.log(
            "bad_input",
            call_id=call_id,
            hop=str(source.address),
            first_line=msg.first_line[:120],
            status=status,
            error=reason,
        )
        if not isinstance(msg, Request) or msg.method == "ACK":
            return
        ctx = self._ctxs.get(self._server_key_or_none(msg))
        if isinstance(ctx, ServerCtx):
            if not ctx.final:
                ctx.reply(status, reason)
            return
        try:  # outside a transaction: answer directly (the request may be too broken)
            resp = make_response(msg, status, reason)
            self.send_stateless(resp, source.address, connection_id=source.connection_id)
        except Exception as inner:
            self.log("bad_input_unanswered", call_id=call_id, error=str(inner))

    @staticmethod
    def _server_key_or_none(msg: Request) -> Any:
        try:
            return server_key(msg)
        except Exception:
            return None

    def _on_response(self, resp: Response, source: Source) -> None:
        tx = self.table.match_response(resp)
        if tx is None:
            self.stray_response(resp, source)
            return
        ctx = self._ctxs.get(tx.key)
        if ctx is None:
            return
        self._run(ctx, tx.on_response(resp))

    def _on_request(self, req: Request, source: Source) -> None:
        if req.method == "ACK":
            tx = self.table.match_request(req)
            if tx is not None:
                ctx = self._ctxs.get(tx.key)
                if isinstance(ctx, ServerCtx):
                    ctx.data["ack_source"] = source  # where this ACK came from, for on_ack
                    self._run(ctx, tx.on_request(req))
                    ctx.data.pop("ack_source", None)
                return
            refused = self.admission.refused_keys
            if refused and server_key(req) in refused:
                return  # the ACK for a 503 we sent statelessly under overload
            self.on_ack(req, source)
            return
        tx = self.table.match_request(req)
        if tx is not None:  # a retransmission: the transaction resends its last response
            ctx = self._ctxs.get(tx.key)
            if ctx is not None:
                self._run(ctx, tx.on_request(req))
            return
        if self._admission and not self._admit(req, source):
            return
        # RFC 3261 §16.3 item 1 / §8.2: a reasonable syntax check of what every element
        # reads (the rest is parsed, and refused with 400, where it is used)
        req.top_via  # noqa: B018
        req.from_addr  # noqa: B018
        req.to_addr  # noqa: B018
        req.max_forwards  # noqa: B018
        if req.cseq.method != req.method:
            raise ElementError(400, "CSeq method does not match the request method")
        self._check_peer(source)
        stx = server_transaction(req, reliable=source.address.reliable, timers=self.timers)
        ctx = ServerCtx(self, stx, req, source)
        ctx.size = len(req.body) + req.headers.text_size()
        self.held_bytes += ctx.size
        self.table.add(stx)
        self._ctxs[stx.key] = ctx
        self._run(ctx, stx.start())

    # -------------------------------------------------------------- overload control

    def recognises_emergency(self, req: Request) -> bool:
        """Hook: is this new request an emergency call by the element's own rules (the
        VSP's dial strings)? `urn:service:sos*` and `esnet.*` are recognised for all."""
        return False

    def _admit(self, req: Request, source: Source) -> bool:
        """Overload control and per-source limits before a new request costs a transaction
        (`ng911.elements.overload`); False when it was refused or dropped."""
        priority = classify(
            req.method,
            str(req.uri),
            req.to_addr.tag is not None,
            req.headers.get_all("Resource-Priority"),
            recognised_emergency=req.method == "INVITE" and self.recognises_emergency(req),
        )
        d = self.admission.decide(
            priority,
            source.address.host,
            authenticated=bool(source.peer_identities),
            reliable=source.address.reliable,
            transactions=len(self._ctxs),
            now=self.loop.time(),
            held_bytes=self.held_bytes,
        )
        if d.admit:
            return True
        if d.answer and req.method != "ACK":
            self._refuse(req, source, d.retry_after)
        return False

    def _refuse(self, req: Request, source: Source, retry_after: int) -> None:
        """503 + Retry-After (RFC 3261 §21.5.4), without a transaction: under overload a
        refusal must cost far less than the work it saves."""
        adm = self.admission
        try:
            resp = make_response(
                req,
                503,
                "Service Unavailable",
                to_tag=new_tag() if req.to_addr.tag is None else None,
                extra=(("Retry-After", str(adm.spread(retry_after))),),
            )
            via = req.top_via
            if via.param("oc") is not None:  # RFC 7339 §5.1: the client supports oc
                params = overload_via_params(adm.controller.shed, adm.controller.seq)
                resp.headers.replace_first("Via", str(via.with_params(**params)))
            if req.method == "INVITE":
                adm.refused_keys.add(server_key(req))
            self.send_stateless(resp, source.address, connection_id=source.connection_id)
        except Ng911Error as exc:
            self.log("refuse_failed", call_id=req.headers.get("Call-ID"), error=str(exc))

    def _sample_lag(self, expected: float) -> None:
        """How late this periodic timer runs is how long any ready callback (a received
        datagram) waits: the event loop's lag, the overload signal."""
        now = self.loop.time()
        backlog = self.transport.udp_backlog()
        live = len(self._ctxs)
        for what, fields in self.admission.sample(now - expected, backlog, live, now):
            self.log(what, **fields)
        self._table_high = max(self._table_high, live)
        if now >= self._trim_check:
            # every 5 s: when the table has shrunk well below its high-water mark (a flood
            # or a busy hour is over), give the freed memory back
            self._trim_check = now + 5.0
            if self._table_high > 2 * live + 1000:
                self._table_high = live
                if release_freed_memory():
                    self.log("memory_released", transactions=live)
        nxt = now + self.config.overload.sample_interval
        self._lag_timer = self.loop.call_at(nxt, self._sample_lag, nxt)

    def _check_peer(self, source: Source) -> None:
        """`tls.expected_peer`: requests over TLS only from peers whose certificate names
        one of these SIP domains (RFC 5922 §7.3: a proxy authorises the proxy it talks to)."""
        expected = self.config.tls.expected_peer
        if not expected or source.transport != "tls":
            return
        wanted = [d.strip() for d in expected.split(",") if d.strip()]
        if not any(matches_domain(source.peer_identities, d) for d in wanted):
            who = ", ".join(sorted(source.peer_identities)) or "no certificate"
            raise ElementError(403, f"TLS peer {who} is not {expected}")

    def _deliver(self, ctx: ServerCtx) -> None:
        """A new request reached us (the server transaction's Deliver)."""
        req = ctx.request
        try:
            if req.method == "INVITE":
                ctx.respond(make_response(req, 100))  # RFC 3261 §16.2: at once, stop retransmits
            if req.method == "CANCEL":
                self._on_cancel(ctx)
                return
            if req.method == "OPTIONS" and self.answers_options and self.options_for_us(req):
                ctx.reply(200, extra=(("Allow", ALLOW), ("Accept", ACCEPT)))
                return
            self.on_request(ctx)
        except Ng911Error as exc:
            self._answer_error(ctx, exc)
        except Exception as exc:
            self.errors += 1
            log.error("%s: handler failed on %s", self.name, req.first_line, exc_info=exc)
            self._answer_error(ctx, exc)

    def _answer_error(self, ctx: ServerCtx, exc: BaseException) -> None:
        status, reason = status_of(exc)
        self.log(
            "request_refused",
            call_id=ctx.request.headers.get("Call-ID"),
            hop=str(ctx.source.address),
            method=ctx.request.method,
            status=status,
            error=reason,
        )
        if not ctx.final:
            ctx.reply(status, reason)

    def _on_cancel(self, ctx: ServerCtx) -> None:
        """RFC 3261 §9.2: 200 to the CANCEL, then the element ends the INVITE (487)."""
        target = self.table.cancel_target(ctx.request)
        if target is None:
            ctx.reply(481)
            return
        ctx.reply(200)
        inv = self._ctxs.get(target.key)
        if isinstance(inv, ServerCtx) and not inv.final:
            self.log("cancel", call_id=inv.call_id, hop=str(ctx.source.address))
            self.on_cancel(inv)

    # -------------------------------------------------------------- element hooks

    def options_for_us(self, req: Request) -> bool:
        """OPTIONS addressed to this element (a proxy forwards others)."""
        return True

    def on_request(self, ctx: ServerCtx) -> None:
        """A new request (not ACK, not CANCEL). Default: 405 (RFC 3261 §8.2.1)."""
        ctx.reply(405, extra=(("Allow", ALLOW),))

    def on_cancel(self, ctx: ServerCtx) -> None:
        """The INVITE of `ctx` was cancelled (200 to the CANCEL is sent already)."""
        ctx.reply(487)

    def on_ack(self, req: Request, source: Source) -> None:
        """An ACK for a 2xx (or a stray one)."""

    def stray_response(self, resp: Response, source: Source) -> None:
        """A response matching no transaction (RFC 3261 §17.1.3: the core's business)."""

    def server_timeout(self, ctx: ServerCtx) -> None:
        """Timer H: no ACK came for our final response."""


async def _resume(coro: Coroutine[Any, Any, None], fut: Any) -> None:
    """Continue a coroutine that `SipElement.drive` started and that now waits on `fut`."""
    while True:
        try:
            if fut is None:
                await asyncio.sleep(0)  # a bare yield
            else:
                # what Task.__step does with a yielded future: clear its "blocking" flag,
                # then wait for it (here by awaiting it ourselves)
                fut._asyncio_future_blocking = False
                await fut
        except asyncio.CancelledError:
            coro.close()
            raise
        except BaseException:
            pass  # the coroutine reads the future's outcome itself when resumed
        try:
            fut = coro.send(None)
        except StopIteration:
            return


# Branches need to be unique, not secret (RFC 3261 §8.1.1.7; anyone on the path sees them):
# 64 bits from a generator seeded once from the OS, not a getrandom() system call per branch.
_branch_rng = random.Random(secrets.randbits(128))
# a forked worker must not repeat its parent's sequence
os.register_at_fork(after_in_child=lambda: _branch_rng.seed(secrets.randbits(128)))


def new_branch_with(prefix: str = "") -> str:
    """A branch (RFC 3261 §8.1.1.7), optionally carrying a loop-detection hash (§16.6)."""
    rand = f"{_branch_rng.getrandbits(64):016x}"
    return f"{MAGIC_COOKIE}{prefix}.{rand}" if prefix else f"{MAGIC_COOKIE}{rand}"


def loop_hash(req: Request) -> str:
    """RFC 3261 §16.6 item 8: a hash of what makes a request "the same" at this proxy."""
    key = "|".join(
        (
            str(req.uri),
            req.from_addr.tag or "",
            req.to_addr.tag or "",
            req.call_id,
            str(req.cseq.seq),
            ",".join(req.headers.get_all("Proxy-Require")),
        )
    )
    return hashlib.blake2s(key.encode(), digest_size=5).hexdigest()


def via_matches(via: Via, element: SipElement) -> bool:
    """Is `via` one of ours (loop detection)?"""
    if (
        via.port is not None
        and not any(a.port == via.port for a in element.addresses)
        and not (element.worker is not None and via.port in element.worker.udp_ports)
    ):
        return False
    host = via.host.lower()
    return host == element.fqdn.lower() or any(a.host == host for a in element.addresses)
