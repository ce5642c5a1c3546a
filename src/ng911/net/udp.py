"""SIP over UDP (RFC 3261 §18.1.1, §18.2.1): one datagram, one message.

The socket asks for a large receive buffer (4 MB by default): the kernel's default (~208 KB)
overflows in bursts above a few thousand calls per second (ANCHORS.md). Datagrams the kernel
dropped for lack of buffer are read from /proc/net/udp (the `drops` column of our socket);
datagrams we dropped ourselves (unparseable) are counted in `SipTransportLayer.stats`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import sys
import time
from typing import TYPE_CHECKING, cast

from ng911.net.address import Address, Source
from ng911.net.log import log_event, log_limited
from ng911.sip.errors import SipParseError
from ng911.sip.message import Request, Response, make_response
from ng911.sip.parse import parse_message
from ng911.sip.priority import Priority, priority_of

if TYPE_CHECKING:
    from ng911.net.steer import CallSteering
    from ng911.net.transport import SipTransportLayer

MAX_DATAGRAM = 65507  # IPv4 UDP payload limit
# Linux's SO_TIMESTAMPNS (also the type of the control message it adds; Python's socket
# module does not name it): the kernel stamps each datagram with its arrival time, so how
# long the head of a queue has waited is read, not guessed from how many datagrams it holds
SO_TIMESTAMPNS = 35
_TS_SPACE = socket.CMSG_SPACE(16)
_TIMESPEC = struct.Struct("qq")


def make_udp_socket(
    host: str, port: int, rcvbuf: int, *, reuse_port: bool = False
) -> socket.socket:
    """A bound, non-blocking UDP socket. `reuse_port`: SO_REUSEPORT, so that the worker
    processes of one element share its port (the kernel hashes each source address and port
    to one of them: every datagram of one upstream socket reaches the same worker)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, min(rcvbuf, 1 << 20))
        if sys.platform.startswith("linux"):
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)  # `queue_wait`
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def queue_head_wait(sock: socket.socket) -> float | None:
    """How long the oldest datagram still queued on `sock` has waited (s), from the arrival
    time the kernel stamped on it (SO_TIMESTAMPNS), read with MSG_PEEK so that it stays
    queued; 0.0 when nothing is queued (a read that stopped at its cap may have taken the
    last one), None when the socket gives no stamp. Both times are the wall clock: a step
    of it can make one sample wrong, and shedding takes three in a row."""
    try:
        _, anc, _, _ = sock.recvmsg(1, _TS_SPACE, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return 0.0
    except OSError:
        return None
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = _TIMESPEC.unpack_from(data)
            arrived: float = sec + nsec * 1e-9
            return max(0.0, time.time() - arrived)
    return None


def kernel_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped on this socket (Linux /proc/net/udp `drops`), or None."""
    try:
        inode = os.fstat(sock.fileno()).st_ino
    except OSError:
        return None
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if len(cols) >= 13 and cols[9] == str(inode):
                        return int(cols[12])
        except (OSError, StopIteration, ValueError):
            continue
    return None


# At most this many datagrams are read at one wake-up (asyncio reads one per wake-up).
BATCH = 64
# libuv (uvloop) reads at most this many per socket per wake-up (`uv__udp_recvmsg`)
LIBUV_BATCH = 32


class UdpEndpoint(asyncio.DatagramProtocol):
    """One UDP socket of an element.

    Why it reads the socket itself after asyncio hands it a datagram: asyncio reads one
    datagram per socket per loop iteration, so under a flood an emergency INVITE waits in
    the kernel's queue behind everything that arrived before it, and nothing tells the
    element how far behind it is. Reading what is queued (up to `BATCH`) at each wake-up
    measures the backlog, overload control's UDP signal, and lets the batch be ordered.

    The backlog is read per sample window (`take_backlog`): the fewest datagrams read at a
    wake-up that stopped at its cap with more still queued, and how long the head of what
    was left had waited (`queue_head_wait`); a wake-up that emptied the queue counts 0 for
    both. Only a queue that never empties counts (a proxy at three quarters of a core wakes
    to 40-90 datagrams and drains them all; counting those had it refuse ~9 % of the calls
    it carried), and of such a queue, how long it makes a request wait: near its capacity a
    proxy keeps a hundred datagrams queued for minutes, ~7 ms of waiting at 2,000 calls/s,
    and counting datagrams had it shed calls it was carrying at p99 20 ms. The batch is
    ordered: new ordinary requests go after everything else (emergency calls, responses,
    ACK, CANCEL, in-dialog requests), keeping each call's own messages in arrival order.
    On uvloop, which reads every queued datagram itself at a wake-up, the endpoint reads
    nothing: it gathers what uvloop hands over and handles it as one batch just after
    (`_flush`), which saves a failing `recvfrom` per datagram.
    """

    def __init__(self, layer: SipTransportLayer, sock: socket.socket | None = None) -> None:
        self.layer = layer
        self.sock = sock
        self.transport: asyncio.DatagramTransport | None = None
        self.local = Address("udp", "?", 0)
        self.rcvbuf = 0
        self.backlog_floor: int | None = None  # fewest left queued at a wake-up, this window
        # the least time the queue's head had waited at such a wake-up, this window (None:
        # no stamp read); `_head_wait` is the last capped read's
        self.wait_floor: float | None = None
        self._head_wait: float | None = None
        # uvloop (libuv) reads every queued datagram at one wake-up and hands them over one
        # by one: they are gathered here and handled together after the last one
        # (`_flush`), with no read of our own; asyncio reads one per wake-up: the rest are
        # read here (`_read_queued`)
        self._gathered: list[tuple[bytes, tuple[str, int]]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # the Source of each sender (immutable): a peer sends many datagrams, and building
        # two frozen dataclasses per datagram costs ~1 µs
        self._sources: dict[tuple[str, int], Source] = {}
        # a worker's shared port: requests go to the worker that owns their Call-ID
        # (ng911.net.steer); None: everything read here is handled here
        self.steering: CallSteering | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        sockname = self.transport.get_extra_info("sockname")
        self.local = Address("udp", sockname[0], sockname[1])
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        loop = asyncio.get_running_loop()
        if type(loop).__module__.startswith("uvloop"):
            self._loop = loop
            self._gathered = []

    def source_of(self, addr: tuple[str, int]) -> Source:
        """Where a datagram from `addr` came from (cached per sender, at most 4,096)."""
        src = self._sources.get(addr)
        if src is None:
            if len(self._sources) >= 4096:
                self._sources.clear()
            src = self._sources[addr] = Source(Address("udp", addr[0], addr[1]), self.local)
        return src

    def kernel_drops(self) -> int | None:
        sock = self.sock or (self.transport.get_extra_info("socket") if self.transport else None)
        return kernel_drops(sock) if sock is not None else None

    def take_backlog(self) -> tuple[int, float | None]:
        """Since the last call: the fewest datagrams read at one wake-up that left more
        queued (0: some wake-up emptied the queue, or none read), and the least time the
        head of what was left had waited (s; 0.0 likewise; None: not measured). Then a
        new window starts."""
        floor, self.backlog_floor = self.backlog_floor, None
        wait, self.wait_floor = self.wait_floor, None
        if not floor:
            return 0, 0.0
        return floor, wait

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        gathered = self._gathered
        if gathered is not None:
            if not gathered:
                assert self._loop is not None
                self._loop.call_soon(self._flush)
            gathered.append((data, addr))
            return
        more, drained = self._read_queued() if self.sock is not None else ([], True)
        if not more:
            self.backlog_floor = 0
            self.wait_floor = 0.0
            self._one(data, addr)
            return
        self._batch([(data, addr), *more], drained)

    def _flush(self) -> None:
        """The datagrams uvloop handed over at this wake-up: one at once, more as a batch."""
        batch, self._gathered = self._gathered, []
        if not batch:
            return
        drained = True  # libuv stopped short of its cap: it read until the queue was empty
        if len(batch) >= LIBUV_BATCH and self.sock is not None:
            # libuv stopped at its cap: read on (a deeper queue than the cap is what
            # overload control's backlog signal must see, and the batch to order)
            more, drained = self._read_queued()
            batch += more
        if len(batch) == 1:
            self.backlog_floor = 0
            self.wait_floor = 0.0
            self._one(*batch[0])
        else:
            self._batch(batch, drained)

    def _one(self, data: bytes, addr: tuple[str, int], steer: bool = True) -> None:
        """Handle one datagram; `steer` False: a sibling worker handed it over (it is ours)."""
        msg = self._parse(data, addr)
        if msg is None:
            return
        if steer and self.steering is not None and self._handed_over(msg, data, addr):
            return
        self.layer._received_udp(self, msg, data, addr)

    def _handed_over(self, msg: Request | Response, data: bytes, addr: tuple[str, int]) -> bool:
        """True when a request belongs to another worker and went to it (or was dropped
        because it could not: ng911.net.steer says why it is not handled here then).
        Responses stay: they reach the worker whose own port their Via names."""
        st = self.steering
        if st is None or not isinstance(msg, Request):
            return False
        owner = st.owner(msg.headers.get("Call-ID") or "")
        if owner == st.index:
            return False
        st.hand_over(owner, self.local.port, data, addr)
        return True

    def _batch(self, batch: list[tuple[bytes, tuple[str, int]]], drained: bool) -> None:
        left = 0 if drained else len(batch)  # more queued behind this batch: a backlog
        if self.backlog_floor is None or left < self.backlog_floor:
            self.backlog_floor = left
        wait = 0.0 if drained else self._head_wait
        if wait is not None and (self.wait_floor is None or wait < self.wait_floor):
            self.wait_floor = wait
        first: list[tuple[Request | Response, bytes, tuple[str, int]]] = []
        later: list[tuple[Request | Response, bytes, tuple[str, int]]] = []
        deferred: set[str] = set()
        steering = self.steering is not None
        for d, a in batch:
            msg = self._parse(d, a)
            if msg is None or (steering and self._handed_over(msg, d, a)):
                continue
            call_id = msg.headers.get("Call-ID") or ""
            if priority_of(msg) == Priority.NORMAL:
                deferred.add(call_id)
                later.append((msg, d, a))
            elif call_id in deferred:
                later.append((msg, d, a))  # e.g. the CANCEL of a deferred INVITE: after it
            else:
                first.append((msg, d, a))
        for msg, d, a in first:
            self.layer._received_udp(self, msg, d, a)
        for msg, d, a in later:
            self.layer._received_udp(self, msg, d, a)

    def _read_queued(self) -> tuple[list[tuple[bytes, tuple[str, int]]], bool]:
        """Up to `BATCH - 1` more datagrams, and whether the queue was found empty (False:
        the read stopped at its cap with more waiting, whose head's wait it notes)."""
        assert self.sock is not None
        out: list[tuple[bytes, tuple[str, int]]] = []
        recv = self.sock.recvfrom
        for _ in range(BATCH - 1):
            try:
                out.append(recv(MAX_DATAGRAM + 28))
            except (BlockingIOError, InterruptedError):
                return out, True
            except OSError as exc:  # e.g. ICMP port unreachable reported on this socket
                self.error_received(exc)
                return out, True
        self._head_wait = queue_head_wait(self.sock)
        return out, False

    def _parse(self, data: bytes, addr: tuple[str, int]) -> Request | Response | None:
        if not data.strip(b"\r\n\x00"):
            return None  # keep-alive (RFC 5626 §3.5.1 CRLF, or empty)
        try:
            return parse_message(data, max_size=self.layer.max_message_size)
        except SipParseError as exc:
            self.layer.stats.parse_errors += 1
            answered = False
            if exc.partial is not None and self.transport is not None:
                # RFC 3261 §21.4 / §18.2.1: answer a bad request if we can; never a response
                try:
                    # a reason phrase is one line of printable text (no response splitting)
                    phrase = "".join(c if c.isprintable() else " " for c in exc.reason[:100])
                    resp = make_response(exc.partial, exc.status, phrase or None)
                    self.transport.sendto(resp.to_bytes(), addr)
                    answered = True
                except Exception as inner:
                    log_event(logging.DEBUG, "parse_error_no_answer", reason=str(inner))
            log_limited(
                self.layer.log_budgets["sip_parse_error"],
                logging.WARNING,
                "sip_parse_error",
                element=self.layer.element,
                peer=f"udp:{addr[0]}:{addr[1]}",
                transport="udp",
                status=exc.status,
                reason=exc.reason,
                action=f"answered {exc.status}" if answered else "dropped",
            )
            return None

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable etc.: UDP has no connection to fail; log it
        log_event(logging.INFO, "udp_error", element=self.layer.element, reason=str(exc))
