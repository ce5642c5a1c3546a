"""`SipTransportLayer`: one per element; listens, sends, reuses connections, reports events.

Connection reuse (RFC 5923 style, RFC 3261 §18): open TCP/TLS connections are indexed by
remote address AND, for TLS, by the SIP identities the peer proved with its certificate. A
request to a peer domain reuses any live connection authenticated as that domain, including
one the peer opened to us; a response goes back over the connection its request came on
(RFC 3261 §18.2.2), found by the top Via branch or the connection id. A TCP peer that puts
`alias` in its Via (RFC 5923 §5) has its connection indexed under its Via sent-by too.

Server transport duties done here (RFC 3261 §18.2.1, RFC 3581 §4): a received request's
top Via gets `received` when the sent-by host differs from the source address, and `rport`
filled in when the client asked for it.

Admission and reclaiming (`ng911.net.admission`): each stream listener has its own cap and a
cap per source address, so plain TCP cannot starve TLS and one host cannot take a listener;
outgoing connections have their own bound (`max_connections`). A server connection that does
not finish its TLS handshake within `handshake_timeout`, or deliver one complete SIP message
within `first_message_timeout`, is aborted; one that did is closed after `idle_timeout`
without traffic. One sweeper task does all of it (no task or timer per connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast

from ng911.net.address import Address, Source, is_ip_literal
from ng911.net.admission import ListenerLimits, refusal
from ng911.net.errors import ConnectionLimit, MessageTooLarge, TlsError, TransportError
from ng911.net.events import ConnectionEvent, MessageEvent, NetEvent
from ng911.net.log import LogBudget, clean, log_event, log_limited
from ng911.net.sips import check_secure
from ng911.net.stream import StreamConnection
from ng911.net.udp import MAX_DATAGRAM, UdpEndpoint, make_udp_socket
from ng911.pki.profile import TlsProfiles
from ng911.sip.errors import SipParseError
from ng911.sip.headers import Via
from ng911.sip.message import Request, Response
from ng911.sip.parse import DEFAULT_MAX_SIZE

if TYPE_CHECKING:
    from ng911.net.steer import CallSteering

OnMessage = Callable[[Request | Response, Source], None]
Observer = Callable[[NetEvent], None]


def _fits_datagram(data: bytes, dest: Address) -> None:
    if len(data) > MAX_DATAGRAM:
        raise MessageTooLarge(f"{len(data)} bytes do not fit a UDP datagram", peer=str(dest))


# A Via's rport flag as RFC 3581 §3 clients send it: no value, for the server to fill in.
_BARE_RPORT: Final = ("rport", None)


def _lone_bare_rport_last(params: tuple[tuple[str, str | None], ...]) -> bool:
    """A bare rport is the last parameter and the only rport: the Via the stamp may fill in
    on its text. With two, the first is the one that counts (`Via.rport`) and is stamped."""
    if not params or params[-1] != _BARE_RPORT:
        return False
    return all(name != "rport" for name, _ in params[:-1])


# methods counted by name; any other (a peer may send any token) is counted as "other", so
# a hostile peer cannot grow the counters without bound
METHODS = frozenset(
    ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "SUBSCRIBE", "NOTIFY", "REFER",
     "INFO", "UPDATE", "PRACK", "MESSAGE", "PUBLISH")
)  # fmt: skip


def _tally(
    msg: Request | Response, requests: dict[str, int], responses: dict[tuple[str, int], int]
) -> None:
    """One message into the per-method (request) or per-(CSeq method, status) counters: two
    dict operations, what the per-message path can afford (`ng911.node.metrics` reads them)."""
    if isinstance(msg, Request):
        m = msg.method if msg.method in METHODS else "other"
        requests[m] = requests.get(m, 0) + 1
        return
    try:
        m = msg.cseq_method
    except SipParseError:
        m = "other"
    key = (m if m in METHODS else "other", msg.status)
    responses[key] = responses.get(key, 0) + 1


def _usable(c: StreamConnection | None) -> StreamConnection | None:
    """`c` if it can carry a message now (open, its TLS handshake done), else None."""
    return c if c is not None and not c.closed and c.handshake_done else None


@dataclass
class TransportStats:
    """Counters of one transport layer (read, never reset; `ng911 stats` shows them)."""

    messages_in: int = 0
    messages_out: int = 0
    # method -> requests, (CSeq method, status) -> responses; each direction
    requests_in: dict[str, int] = field(default_factory=dict)
    requests_out: dict[str, int] = field(default_factory=dict)
    responses_in: dict[tuple[str, int], int] = field(default_factory=dict)
    responses_out: dict[tuple[str, int], int] = field(default_factory=dict)
    # TLS handshakes completed: (role "client"|"server", resumed) -> count
    tls_handshakes: dict[tuple[str, bool], int] = field(default_factory=dict)
    parse_errors: int = 0
    tls_refused: int = 0
    connections_refused: int = 0  # every refusal at accept (limits, closing)
    listener_limit_refused: int = 0
    source_limit_refused: int = 0
    peers_refused: int = 0  # valid certificate, name not in the listener's allowed peers
    connections_opened: int = 0
    idle_closed: int = 0
    handshake_timeouts: int = 0
    first_message_timeouts: int = 0
    message_timeouts: int = 0  # a message begun and not finished (a trickling peer)

    def count_in(self, msg: Request | Response) -> None:
        self.messages_in += 1
        _tally(msg, self.requests_in, self.responses_in)

    def count_out(self, msg: Request | Response) -> None:
        self.messages_out += 1
        _tally(msg, self.requests_out, self.responses_out)

    def handshake(self, role: str, resumed: bool) -> None:
        key = (role, resumed)
        self.tls_handshakes[key] = self.tls_handshakes.get(key, 0) + 1


@dataclass
class _Listener:
    address: Address
    server: asyncio.Server | None = None
    udp: UdpEndpoint | None = None
    tls: ssl.SSLContext | None = None
    limits: ListenerLimits = field(default_factory=ListenerLimits)
    open: int = 0  # connections accepted and not yet lost
    per_source: dict[str, int] = field(default_factory=dict)


@dataclass
class SipTransportLayer:
    """All transports of one element.

    `client_tls`: an `ssl.SSLContext` for every TLS peer, or `TlsProfiles` (CA and identity
    per peer domain). `verify_identity`: check the server certificate names the domain we
    meant to reach (RFC 5922 §7.2) - the domain is `server_name` of `send`, else the
    destination host when it is a name; with only an IP to go by, the chain alone is checked.

    `max_connections` bounds the connections we open (outgoing); each listener has its own
    `ListenerLimits` (given to `listen`, else `listener_limits`). Timeouts in seconds, 0 = off:
    `handshake_timeout` and `first_message_timeout` apply to accepted connections, counted
    from the accept; after the first message, each message begun must be complete within
    `first_message_timeout` too; `idle_timeout` applies to every connection.
    """

    element: str = "ng911"
    client_tls: ssl.SSLContext | TlsProfiles | None = None
    max_connections: int = 1024  # outgoing connections
    listener_limits: ListenerLimits = field(default_factory=ListenerLimits)
    handshake_timeout: float = 5.0
    first_message_timeout: float = 10.0
    idle_timeout: float = 300.0
    connect_timeout: float = 5.0
    max_message_size: int = DEFAULT_MAX_SIZE
    udp_rcvbuf: int = 4 * 1024 * 1024
    verify_identity: bool = True
    tls_resumption: bool = True  # client side: offer the last session to the same peer
    on_message: OnMessage | None = None
    observers: list[Observer] = field(default_factory=list)
    stats: TransportStats = field(default_factory=TransportStats)

    def __post_init__(self) -> None:
        self._listeners: list[_Listener] = []
        self._conns: dict[int, StreamConnection] = {}
        self._unproven: dict[int, StreamConnection] = {}  # accepted, no complete message yet
        self._outgoing = 0
        # hostile floods cost the log a few lines a second per event kind, not one per packet
        self.log_budgets: dict[str, LogBudget] = {
            "connection_refused": LogBudget(),
            "connection_timeout": LogBudget(),
            "tls_refused": LogBudget(),
            "sip_parse_error": LogBudget(),
            "udp_handover": LogBudget(),
        }
        self._by_addr: dict[tuple[str, str, int], StreamConnection] = {}
        self._by_identity: dict[str, dict[int, StreamConnection]] = {}
        self._by_branch: OrderedDict[str, int] = OrderedDict()
        self._connecting: dict[tuple[str, str, int], asyncio.Future[StreamConnection]] = {}
        self._sessions: OrderedDict[tuple[str, int, str | None], ssl.SSLSession] = OrderedDict()
        self._udp_client: UdpEndpoint | None = None
        self._udp_requests: UdpEndpoint | None = None  # a worker's own port (requests out)
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False
        # a worker's Call-ID steering of its shared UDP ports (ng911.net.steer), set by
        # whoever starts the worker before it listens; None: no sibling workers, or off
        self.steering: CallSteering | None = None
        # what this turn of the loop sent, sent together at its end (`_release`): the
        # datagrams `send_datagram` took, and the connections with bytes to write
        self._held: list[tuple[UdpEndpoint, bytes, Request | Response, Address]] = []
        self._held_streams: list[StreamConnection] = []
        self._release_due = False

    # ================================================================= listening
    async def listen(
        self,
        transport: str,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        reuse_port: bool = False,
        limits: ListenerLimits | None = None,
    ) -> Address:
        """Start listening; port 0 picks a free one. Returns the bound address.

        `reuse_port` (SO_REUSEPORT): worker processes share the port; the kernel hands each
        UDP source address/port, and each TCP/TLS connection, to one of them. `limits`: the
        connection caps and allowed TLS peers of this listener (default `listener_limits`).
        """
        loop = asyncio.get_running_loop()
        transport = transport.lower()
        if transport == "udp":
            sock = make_udp_socket(host, port, self.udp_rcvbuf, reuse_port=reuse_port)
            _, ep = await loop.create_datagram_endpoint(lambda: UdpEndpoint(self, sock), sock=sock)
            self._listeners.append(_Listener(ep.local, udp=ep))
            if reuse_port and self.steering is not None:
                ep.steering = self.steering
                self.steering.start(loop, self._taken_over)
            return ep.local
        if transport not in ("tcp", "tls"):
            raise TransportError(f"unknown transport {transport!r}")
        if transport == "tls" and tls is None:
            raise TlsError("listening on TLS needs a server SSLContext (ng911.pki.tls)")

        lst = _Listener(
            Address(transport, host, port), tls=tls, limits=limits or self.listener_limits
        )

        def factory() -> StreamConnection:
            return StreamConnection(
                self, kind=transport, role="server", ssl_context=tls, listener=lst
            )

        server = await loop.create_server(
            factory, host, port, reuse_address=True, reuse_port=reuse_port or None, backlog=1024
        )
        # read through Any: uvloop's `sockets` is a list, typeshed says a tuple, and compiled
        # code checks the declared type
        sockname = cast(Any, server).sockets[0].getsockname()
        lst.address = Address(transport, sockname[0], sockname[1])
        lst.server = server
        self._listeners.append(lst)
        self._start_sweeper()
        return lst.address

    async def listen_requests_udp(self, host: str, port: int) -> Address:
        """A UDP socket of this process alone, from which every request goes out (a worker
        process: its Via names this port, so the answers come back to the process that holds
        the client transaction, not to whichever worker the shared port hashes them to).
        Responses still leave from the listener the request came in on."""
        loop = asyncio.get_running_loop()
        sock = make_udp_socket(host, port, self.udp_rcvbuf)
        _, ep = await loop.create_datagram_endpoint(lambda: UdpEndpoint(self, sock), sock=sock)
        self._udp_requests = ep
        return ep.local

    def local_address(self, transport: str) -> Address | None:
        for lst in self._listeners:
            if lst.address.transport == transport:
                return lst.address
        return None

    def source_host(self, dest: Address) -> str | None:
        """The address a connection to `dest` leaves from: the one this layer listens on.

        Left to the kernel, every host of a machine with several addresses (each testbed
        host has its own 127.B.C.N) would connect from the same one (127.0.0.1 on
        loopback), so a peer could not tell hosts apart by address, and two elements could
        use the same source address and port one after the other within a run. Only a
        listener on a specific address of the destination's family and scope (loopback or
        not) is used; a wildcard listener leaves the choice to the kernel.
        """
        try:
            to = ipaddress.ip_address(dest.host.strip("[]"))
        except ValueError:
            return None  # a name: resolved by the loop; let the kernel choose
        best: str | None = None
        for lst in self._listeners:
            try:
                mine = ipaddress.ip_address(lst.address.host.strip("[]"))
            except ValueError:
                continue
            if mine.is_unspecified or mine.version != to.version:
                continue
            if mine.is_loopback != to.is_loopback:
                continue
            if lst.address.transport == dest.transport:
                return str(mine)
            best = best or str(mine)
        return best

    @property
    def addresses(self) -> list[Address]:
        return [lst.address for lst in self._listeners]

    def udp_kernel_drops(self) -> int:
        """Datagrams the kernel dropped on our UDP sockets (receive buffer full)."""
        total = 0
        for lst in self._listeners:
            if lst.udp is not None:
                total += lst.udp.kernel_drops() or 0
        if self._udp_requests is not None:
            total += self._udp_requests.kernel_drops() or 0
        return total

    def udp_backlog(self) -> tuple[int, float | None]:
        """How far behind the kernel's queue this element is, since the last call, over our
        UDP sockets (`UdpEndpoint.take_backlog`): the largest of each one's fewest datagrams
        read at a wake-up that left more queued, and the longest of the least times the
        head of such a queue had waited (s; None when a backlogged socket gave no stamp).
        A socket whose queue some wake-up emptied reads (0, 0.0), however many datagrams
        each wake-up drained."""
        eps = [lst.udp for lst in self._listeners if lst.udp is not None]
        most, longest = 0, 0.0
        unknown = False
        for ep in (*eps, self._udp_requests, self._udp_client):
            if ep is None:
                continue
            n, wait = ep.take_backlog()
            most = max(most, n)
            if wait is None:
                unknown = unknown or n > 0
            else:
                longest = max(longest, wait)
        return most, (None if unknown else longest)

    def connections(self) -> list[dict[str, object]]:
        return [c.describe() for c in self._conns.values()]

    def peer_connections(self) -> dict[tuple[str, str], int]:
        """Open connections by (transport, peer): the peer is the first SIP identity its
        certificate proved, else its address (what a scrape reports per peer)."""
        out: dict[tuple[str, str], int] = {}
        for c in self._conns.values():
            peer = min(c.identities) if c.identities else c.remote.host
            key = (c.kind, peer)
            out[key] = out.get(key, 0) + 1
        return out

    def close_connection(self, connection_id: int) -> bool:
        """Close one connection (TLS sessions stay cached for resumption)."""
        conn = self._conns.get(connection_id)
        if conn is None:
            return False
        conn.close()
        return True

    def drop_connections(
        self, hosts: Collection[str] | None = None, *, forget_sessions: bool = True
    ) -> int:
        """Close every TCP/TLS connection (only those whose peer address is one of `hosts`,
        when given) and, by default, forget the TLS sessions kept for resuming them, so the
        next message to that peer opens a new connection with a full handshake: what the
        testbed does before a cold call. Returns how many it closed."""
        conns = [c for c in self._conns.values() if hosts is None or c.remote.host in hosts]
        for conn in conns:
            conn.close()
        if forget_sessions:
            for key in [k for k in self._sessions if hosts is None or k[0] in hosts]:
                del self._sessions[key]
        return len(conns)

    # ================================================================= sending
    async def send(
        self,
        message: Request | Response,
        dest: Address,
        *,
        server_name: str | None = None,
        connection_id: int | None = None,
    ) -> None:
        """Send `message` to `dest`.

        Raises `InsecureTransportError` for a sips request over UDP/TCP, `MessageTooLarge`,
        `TlsError`/`IdentityMismatch` when the TLS peer is refused, `TransportError` otherwise.
        """
        data = self._encode(message, dest)
        if dest.transport == "udp":
            await self._send_udp(message, data, dest)
            return
        conn = self._find_connection(message, dest, server_name, connection_id)
        if conn is None:
            conn = await self._connect(dest, server_name)
        self._write(conn, message, data)
        await conn.drained()  # back-pressure: a slow peer slows its senders, not our memory

    def send_stream(
        self,
        message: Request | Response,
        dest: Address,
        server_name: str | None = None,
        connection_id: int | None = None,
    ) -> bool:
        """`send` over a TCP/TLS connection that is open and below its write buffer's
        high-water mark, without a coroutine (a coroutine per message, three deep, cost
        more than the write); False: none is, use `send` (it connects, or waits for the
        buffer to drain). Raises what `send` raises."""
        conn = self._find_connection(message, dest, server_name, connection_id)
        if conn is None or not conn.writable:
            return False
        self._write(conn, message, self._encode(message, dest))
        return True

    def _write(self, conn: StreamConnection, message: Request | Response, data: bytes) -> None:
        wire = conn.write(data)
        self.stats.count_out(message)
        if self.observers:
            self._emit_message(
                "out", conn.kind, conn.local, conn.remote, data, wire, message, conn.id
            )

    def send_datagram(self, message: Request | Response, dest: Address) -> bool:
        """`send` to a UDP `dest` without a coroutine, when a UDP socket is open already
        (a UDP send never waits; a coroutine per message costs more than the send).
        False: none is open yet, use `send`. Raises what `_encode` raises (the message may
        not go there, or is too large).

        The datagram leaves at the end of this turn of the event loop, with every other
        one taken in it (`_release`), not at once. Why: a datagram sent to a sleeping
        process wakes it, and on a virtual machine that wake-up (an inter-processor
        interrupt) is most of a send's cost; the datagrams of one turn (a batch read at one
        wake-up, the answers a LoST reply releases) reach their peers together, which wake
        once for all of them (the VSP's CPU per call at 2,000 calls/s: 410 → 347 µs, README
        "What paid"). Nothing is lost by waiting: an error of a UDP send is not raised to the
        sender anyway (the loop hands it to `UdpEndpoint.error_received`). A TCP/TLS
        connection holds its writes of the turn the same way (`StreamConnection.release`)."""
        ep = self._udp_for(dest, message)
        if ep is None or ep.transport is None:
            return False
        data = self._encode(message, dest)
        _fits_datagram(data, dest)
        self._release_soon()
        self._held.append((ep, data, message, dest))
        return True

    def _hold_stream(self, conn: StreamConnection) -> None:
        """`conn` has bytes to write at the end of this turn (`StreamConnection._send_raw`)."""
        self._release_soon()
        self._held_streams.append(conn)

    def _release_soon(self) -> None:
        """Have `_release` run at the end of this turn (once, however much is held)."""
        if not self._release_due:
            self._release_due = True
            asyncio.get_running_loop().call_soon(self._release)

    def _release(self) -> None:
        """Send what this turn of the loop held: each datagram in the order it was taken,
        and each connection's bytes in one write."""
        self._release_due = False
        held, self._held = self._held, []
        streams, self._held_streams = self._held_streams, []
        for conn in streams:
            conn.release()
        for ep, data, message, dest in held:
            if ep.transport is None or ep.transport.is_closing():
                continue  # the socket closed under it (the element is stopping)
            try:
                self._sendto(ep, message, data, dest)
            except TransportError as exc:
                log_event(logging.WARNING, "udp_send_failed", element=self.element,
                          dest=str(dest), reason=str(exc))  # fmt: skip

    def _encode(self, message: Request | Response, dest: Address) -> bytes:
        """The bytes of `message` for `dest`, once it may go there (`check_secure`, size)."""
        check_secure(message, dest)
        data = message.to_bytes()
        if len(data) > self.max_message_size:
            raise MessageTooLarge(
                f"{len(data)}-byte message exceeds the limit of {self.max_message_size}",
                peer=str(dest),
            )
        return data

    async def _send_udp(self, message: Request | Response, data: bytes, dest: Address) -> None:
        _fits_datagram(data, dest)
        ep = self._udp_for(dest, message)
        if ep is None:
            ep = await self._udp_client_endpoint(dest)
        self._sendto(ep, message, data, dest)

    def _sendto(
        self, ep: UdpEndpoint, message: Request | Response, data: bytes, dest: Address
    ) -> None:
        assert ep.transport is not None
        try:
            ep.transport.sendto(data, (dest.host, dest.port))
        except OSError as exc:
            raise TransportError(f"UDP send to {dest} failed: {exc}", peer=str(dest)) from exc
        self.stats.count_out(message)
        if self.observers:
            self._emit_message("out", "udp", ep.local, dest, data, len(data), message, None)

    def _udp_for(self, dest: Address, message: Request | Response) -> UdpEndpoint | None:
        fam6 = ":" in dest.host
        req_ep = self._udp_requests
        if (
            req_ep is not None
            and isinstance(message, Request)
            and (":" in req_ep.local.host) == fam6
        ):
            return req_ep
        for lst in self._listeners:
            if lst.udp is not None and (":" in lst.address.host) == fam6:
                return lst.udp
        return self._udp_client

    async def _udp_client_endpoint(self, dest: Address) -> UdpEndpoint:
        loop = asyncio.get_running_loop()
        host = "::" if ":" in dest.host else "0.0.0.0"
        sock = make_udp_socket(host, 0, self.udp_rcvbuf)
        _, ep = await loop.create_datagram_endpoint(lambda: UdpEndpoint(self, sock), sock=sock)
        self._udp_client = ep
        return ep

    def _find_connection(
        self,
        message: Request | Response,
        dest: Address,
        server_name: str | None,
        connection_id: int | None,
    ) -> StreamConnection | None:
        if connection_id is not None and (c := _usable(self._conns.get(connection_id))):
            return c
        if isinstance(message, Response):
            # RFC 3261 §18.2.2: the connection the request arrived on
            branch = message.headers.cached("top_via_branch", lambda: _branch_of(message))
            if branch is not None:
                cid = self._by_branch.get(branch)
                if cid is not None and (c := _usable(self._conns.get(cid))):
                    return c
        c = _usable(self._by_addr.get((dest.transport, dest.host, dest.port)))
        if c is not None:
            if (
                dest.transport == "tls"
                and isinstance(message, Request)
                and server_name
                and self.verify_identity
                and not self._identity_ok(c, server_name)
            ):
                c = None  # a connection authenticated as someone else: do not reuse
            else:
                return c
        if dest.transport == "tls" and server_name and isinstance(message, Request):
            # RFC 5923: reuse a connection authenticated as that domain, whichever side opened it
            want = self._expected_identity(server_name, dest)
            if want is not None:
                for c2 in self._by_identity.get(want, {}).values():
                    if _usable(c2) is not None:
                        return c2
        return None

    def _identity_ok(self, conn: StreamConnection, server_name: str) -> bool:
        want = self._expected_identity(server_name, conn.remote)
        if want is None or want == conn.matched_identity:
            return True  # the certificate cannot change on an open connection: checked once
        from ng911.pki.tls import matches_domain

        if not matches_domain(conn.identities, want):
            return False
        conn.matched_identity = want
        return True

    def _expected_identity(self, server_name: str | None, dest: Address) -> str | None:
        if not self.verify_identity:
            return None
        name = server_name or (None if is_ip_literal(dest.host) else dest.host)
        if name is None:
            return None
        if isinstance(self.client_tls, TlsProfiles):
            return self.client_tls.for_domain(name).identity_for(name)
        return name.lower()

    async def _connect(self, dest: Address, server_name: str | None) -> StreamConnection:
        key = (dest.transport, dest.host, dest.port)
        pending = self._connecting.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[StreamConnection] = asyncio.get_running_loop().create_future()
        self._connecting[key] = fut
        try:
            conn = await self._open(dest, server_name)
        except BaseException as exc:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()
            raise
        else:
            fut.set_result(conn)
            return conn
        finally:
            self._connecting.pop(key, None)

    async def _open(self, dest: Address, server_name: str | None) -> StreamConnection:
        if self._closing:
            raise TransportError("transport layer is closed")
        if self._outgoing >= self.max_connections:
            self.stats.connections_refused += 1
            raise ConnectionLimit(
                f"connection limit {self.max_connections} reached; not connecting to {dest}",
                peer=str(dest),
            )
        loop = asyncio.get_running_loop()
        ctx: ssl.SSLContext | None = None
        wildcards = False
        expected = None
        session = None
        sni = None
        skey = None
        if dest.transport == "tls":
            if self.client_tls is None:
                raise TlsError("no client TLS context configured", peer=str(dest))
            if isinstance(self.client_tls, TlsProfiles):
                ctx, profile = self.client_tls.client_context_for(server_name or dest.host)
                wildcards = profile.wildcards
            else:
                ctx = self.client_tls
            expected = self._expected_identity(server_name, dest)
            skey = (dest.host, dest.port, server_name)
            session = self._sessions.get(skey) if self.tls_resumption else None
            sni = server_name if server_name and not is_ip_literal(server_name) else None

        def factory() -> StreamConnection:
            return StreamConnection(
                self,
                kind=dest.transport,
                role="client",
                ssl_context=ctx,
                server_hostname=sni,
                session=session,
                expected_identity=expected,
                wildcards=wildcards,
                session_key=skey,
            )

        src = self.source_host(dest)
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    factory, dest.host, dest.port, local_addr=(src, 0) if src else None
                ),
                self.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            log_event(
                logging.WARNING,
                "connect_failed",
                element=self.element,
                peer=str(dest),
                reason=str(exc) or type(exc).__name__,
            )
            raise TransportError(f"cannot connect to {dest}: {exc}", peer=str(dest)) from exc
        try:
            await asyncio.wait_for(asyncio.shield(conn.ready), self.connect_timeout)
        except TimeoutError as exc:
            conn.abort("handshake timeout")
            raise TlsError(f"TLS handshake with {dest} timed out", peer=str(dest)) from exc
        self._by_addr[(dest.transport, dest.host, dest.port)] = conn
        conn.aliases.add((dest.transport, dest.host, dest.port))
        self._start_sweeper()
        return conn

    # ================================================================= callbacks from connections
    def _admit(self, conn: StreamConnection) -> bool:
        lst = conn.listener
        reason: str | None = "closing" if self._closing else None
        if reason is None and lst is not None:
            reason = refusal(lst.limits, lst.open, lst.per_source.get(conn.remote.host, 0))
            if reason is not None:
                if reason.startswith("listener"):
                    self.stats.listener_limit_refused += 1
                else:
                    self.stats.source_limit_refused += 1
        if reason is not None:
            self.stats.connections_refused += 1
            log_limited(
                self.log_budgets["connection_refused"],
                logging.WARNING,
                "connection_refused",
                element=self.element,
                listener=str(lst.address) if lst is not None else None,
                peer=str(conn.remote),
                reason=reason,
            )
            self._emit_conn(conn, "refused", reason)
            conn.abort(reason)
            return False
        self._conns[conn.id] = conn
        if lst is not None:
            lst.open += 1
            src = conn.remote.host
            lst.per_source[src] = lst.per_source.get(src, 0) + 1
            self._unproven[conn.id] = conn
        else:
            self._outgoing += 1
        self.stats.connections_opened += 1
        key = (conn.kind, conn.remote.host, conn.remote.port)
        self._by_addr[key] = conn
        conn.aliases.add(key)
        self._emit_conn(conn, "open", None)
        return True

    def _connection_ready(self, conn: StreamConnection) -> None:
        for ident in conn.identities:
            self._by_identity.setdefault(ident, {})[conn.id] = conn

    def _connection_lost(self, conn: StreamConnection, reason: str | None) -> None:
        if self._conns.pop(conn.id, None) is None:
            return
        lst = conn.listener
        if lst is not None:
            self._unproven.pop(conn.id, None)
            lst.open -= 1
            src = conn.remote.host
            left = lst.per_source.get(src, 0) - 1
            if left > 0:
                lst.per_source[src] = left
            else:
                lst.per_source.pop(src, None)
        else:
            self._outgoing -= 1
        for key in conn.aliases:
            if self._by_addr.get(key) is conn:
                del self._by_addr[key]
        for ident in conn.identities:
            d = self._by_identity.get(ident)
            if d is not None:
                d.pop(conn.id, None)
                if not d:
                    del self._by_identity[ident]
        self._emit_conn(conn, "close", reason)

    def _remember_session(self, conn: StreamConnection) -> bool:
        """Keep the client session of `conn` for resuming the next connection to that peer;
        True once a resumable one (TLS 1.2 session, or TLS 1.3 ticket) is kept."""
        if not self.tls_resumption or conn.session_key is None or conn._sslobj is None:
            return True  # nothing to keep: stop asking
        sess = conn._sslobj.session
        if sess is None:
            return False
        if sess.has_ticket or conn._sslobj.version() == "TLSv1.2":
            self._sessions[conn.session_key] = sess
            self._sessions.move_to_end(conn.session_key)
            while len(self._sessions) > 4096:
                self._sessions.popitem(last=False)
            return True
        return False

    def _received(
        self,
        conn: StreamConnection,
        msg: Request | Response,
        acct: tuple[bytes, int, int] | None,
    ) -> None:
        self.stats.count_in(msg)
        if not conn.proven:
            conn.proven = True  # a complete message: the first-message timer stops
            self._unproven.pop(conn.id, None)
        if isinstance(msg, Request) and not self._server_via(msg, conn.remote, conn):
            return
        if acct is not None:
            raw, sip_bytes, wire = acct
            self._emit_message(
                "in", conn.kind, conn.local, conn.remote, raw, wire, msg, conn.id, sip_bytes
            )
        src = Source(conn.remote, conn.local, conn.identities, conn.id)
        self._dispatch(msg, src)

    def _received_udp(
        self, ep: UdpEndpoint, msg: Request | Response, data: bytes, addr: tuple[str, int]
    ) -> None:
        self.stats.count_in(msg)
        src = ep.source_of(addr)
        remote = src.address
        if isinstance(msg, Request) and not self._server_via(msg, remote, None, ep):
            return
        if self.observers:
            self._emit_message("in", "udp", ep.local, remote, data, len(data), msg, None)
        self._dispatch(msg, src)

    def _server_via(
        self,
        msg: Request,
        remote: Address,
        conn: StreamConnection | None,
        ep: UdpEndpoint | None = None,
    ) -> bool:
        """RFC 3261 §18.2.1 + RFC 3581 §4: stamp received/rport; remember the connection."""
        try:
            via = msg.top_via
        except SipParseError as exc:
            self.stats.parse_errors += 1
            log_limited(
                self.log_budgets["sip_parse_error"],
                logging.WARNING,
                "sip_parse_error",
                element=self.element,
                peer=str(remote),
                transport=remote.transport,
                status=exc.status,
                reason=exc.reason,
                action="dropped",
            )
            return False
        src_host = remote.host
        params: dict[str, str | None] = {}
        if via.host.strip("[]") != src_host:
            params["received"] = src_host
        if via.rport is not None:
            params["rport"] = str(remote.port)
            params["received"] = src_host
        if params:
            ps = via.params
            raw = msg.headers.get("Via") if _lone_bare_rport_last(ps) else None
            if raw is not None and raw.endswith(";rport") and via.received is None:
                # The usual Via (every RFC 3581 client puts a bare rport last): fill it in and
                # append received to the text as it came, with no Via written from scratch.
                port = params["rport"]
                new = Via(via.transport, via.host, via.port,
                          (*ps[:-1], ("rport", port), ("received", src_host)))  # fmt: skip
                text = f"{raw}={port};received={src_host}"
            else:
                new = via.with_param_map(params)
                text = str(new)
            msg.headers.replace_first("Via", text)
            msg.headers.remember("top_via", new)  # written from it: no need to parse it back
        if conn is not None:
            if via.branch:
                self._by_branch[via.branch] = conn.id
                if len(self._by_branch) > 65536:
                    self._by_branch.popitem(last=False)
            if via.param("alias") is not None and via.port is not None:
                # RFC 5923 §5: the peer offers this connection for requests to its sent-by
                key = (conn.kind, via.host, via.port)
                if key not in self._by_addr:
                    self._by_addr[key] = conn
                    conn.aliases.add(key)
        return True

    def _dispatch(self, msg: Request | Response, src: Source) -> None:
        if self.on_message is None:
            return
        try:
            self.on_message(msg, src)
        except Exception:
            logging.getLogger("ng911.net").exception(
                "on_message handler of %s failed for %s", self.element, clean(msg.first_line)
            )

    # ================================================================= events
    def _emit(self, event: NetEvent) -> None:
        for obs in list(self.observers):
            try:
                obs(event)
            except Exception:
                logging.getLogger("ng911.net").exception("observer failed")

    def _emit_message(
        self,
        direction: str,
        transport: str,
        local: Address,
        remote: Address,
        data: bytes,
        wire: int,
        msg: Request | Response,
        conn_id: int | None,
        sip_bytes: int | None = None,
    ) -> None:
        try:
            call_id: str | None = msg.headers.get("Call-ID")
        except Exception:
            call_id = None
        self._emit(
            MessageEvent(
                ts=time.time(),
                mono=time.perf_counter(),
                element=self.element,
                direction=direction,
                transport=transport,
                local=local.hostport,
                remote=remote.hostport,
                sip_bytes=len(data) if sip_bytes is None else sip_bytes,
                wire_bytes=wire,
                data=data,
                call_id=call_id,
                first_line=msg.first_line,
                connection_id=conn_id,
            )
        )

    def _emit_conn(self, conn: StreamConnection, what: str, reason: str | None) -> None:
        if self.observers:
            self._emit(
                ConnectionEvent(
                    ts=time.time(),
                    mono=time.perf_counter(),
                    element=self.element,
                    transport=conn.kind,
                    local=conn.local.hostport,
                    remote=conn.remote.hostport,
                    what=what,
                    reason=reason,
                    connection_id=conn.id,
                )
            )

    # ================================================================= housekeeping
    def _start_sweeper(self) -> None:
        timers = (self.idle_timeout, self.handshake_timeout, self.first_message_timeout)
        if self._sweeper is None and max(timers) > 0 and not self._closing:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def _periods(self) -> tuple[float, float]:
        """(fast, idle): how often to check unproven connections, and every connection."""
        short = [t for t in (self.handshake_timeout, self.first_message_timeout) if t > 0]
        # the pass over every connection: idleness, and messages begun but not finished
        idle = min(
            [t / 2 for t in (self.idle_timeout, self.first_message_timeout) if t > 0] + [5.0]
        )
        fast = min(short) / 4 if short else idle
        return max(0.05, min(fast, 1.0, idle)), max(0.05, idle)

    async def _sweep(self) -> None:
        """One task for every timer: each pass looks at the accepted connections that have
        not proved themselves yet (few, unless under attack) and, less often, at all of them
        for idleness. A deadline is overrun by at most one period."""
        last_idle = time.monotonic()
        while True:
            fast, idle_period = self._periods()
            await asyncio.sleep(fast)
            now = time.monotonic()
            if self._unproven:
                self._sweep_unproven(now)
            if now - last_idle >= idle_period:
                last_idle = now
                self._sweep_idle(now)

    def _sweep_unproven(self, now: float) -> None:
        hs, first = self.handshake_timeout, self.first_message_timeout
        for conn in list(self._unproven.values()):
            age = now - conn.opened
            if conn.closed:
                continue
            if hs > 0 and not conn.handshake_done and age > hs:
                self.stats.handshake_timeouts += 1
                what, limit = "TLS handshake not finished", hs
            elif first > 0 and age > first:
                self.stats.first_message_timeouts += 1
                what, limit = "no complete SIP message", first
            else:
                continue
            log_limited(
                self.log_budgets["connection_timeout"],
                logging.INFO,
                "connection_timeout",
                element=self.element,
                listener=str(conn.listener.address) if conn.listener is not None else None,
                peer=str(conn.remote),
                connection_id=conn.id,
                reason=f"{what} within {limit:g} s",
            )
            conn.abort(what)

    def _sweep_idle(self, now: float) -> None:
        slow = self.first_message_timeout
        for conn in list(self._conns.values()):
            if conn.closed:
                continue
            since = conn.partial_since
            if slow > 0 and conn.proven and since is not None and now - since > slow:
                self.stats.message_timeouts += 1
                log_limited(
                    self.log_budgets["connection_timeout"],
                    logging.INFO,
                    "connection_timeout",
                    element=self.element,
                    peer=str(conn.remote),
                    connection_id=conn.id,
                    reason=f"SIP message not completed within {slow:g} s",
                )
                conn.abort("message not completed")
                continue
            if self.idle_timeout > 0 and now - conn.last_used > self.idle_timeout:
                self.stats.idle_closed += 1
                log_event(
                    logging.INFO,
                    "connection_idle_closed",
                    element=self.element,
                    peer=str(conn.remote),
                    connection_id=conn.id,
                    idle=round(now - conn.last_used, 3),
                )
                conn.close()

    def _taken_over(self, port: int, data: bytes, addr: tuple[str, int]) -> None:
        """A datagram a sibling worker read from our shared UDP `port` and handed over
        (ng911.net.steer): handled as if read here."""
        for lst in self._listeners:
            ep = lst.udp
            if ep is not None and ep.local.port == port:
                ep._one(data, addr, False)
                return
        # no such port here (siblings share one config, so never expected): said, not silent
        self.stats.parse_errors += 1
        log_limited(
            self.log_budgets["udp_handover"],
            logging.ERROR,
            "udp_handover_unknown_port",
            element=self.element,
            port=port,
            peer=f"udp:{addr[0]}:{addr[1]}",
            action="dropped",
        )

    async def close(self) -> None:
        """Close listeners and every connection (TLS close_notify first)."""
        self._closing = True
        self._release()  # what this turn of the loop sent leaves before the sockets close
        if self.steering is not None:
            self.steering.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for lst in self._listeners:
            if lst.server is not None:
                lst.server.close()
            if lst.udp is not None and lst.udp.transport is not None:
                lst.udp.transport.close()
        for ep in (self._udp_client, self._udp_requests):
            if ep is not None and ep.transport is not None:
                ep.transport.close()
        for conn in list(self._conns.values()):
            conn.close()
        for lst in self._listeners:
            if lst.server is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(lst.server.wait_closed(), 1.0)
        await asyncio.sleep(0)
        self._listeners.clear()


def _branch_of(message: Request | Response) -> str | None:
    try:
        return message.top_via.branch
    except SipParseError:
        return None
