"""Workers that share a UDP port hand each request to the worker that owns its Call-ID.

Why: the kernel spreads a SO_REUSEPORT port's datagrams over the workers by source address
and port, so every datagram of one upstream socket reaches one worker. An ESRP's upstream is
a handful of BCFs and VSP proxies, each one socket: with the kernel's hash alone, one
worker carried every call and the others idled (bench/load.py's `ng911-esrp (2 workers)`
row on one SIPp socket). Kamailio's children all read one socket and share their
transactions in shared memory; ng911's workers share nothing, so a request goes to the one
worker that may hold its transaction: `owner_of(Call-ID)`, a CRC-32 (the same in every
process, unlike `hash()`) modulo the count. The INVITE, its retransmissions, its CANCEL,
the ACK, the BYE from either side and a subscription's NOTIFYs all meet in that worker.

How: the supervisor makes one AF_UNIX datagram socket pair per worker before it starts them
(`steering_pairs`); worker i reads pair i's inbox, and every worker may write to each
pair's outbox. A socket pair is not reachable from the network, so nobody outside the
element can inject a "handed-over" datagram with a forged source. A connected pair is also
not bound by `net.unix.max_dgram_qlen` (10 by default), only by the outbox's send buffer.
A hand-over carries the shared port it arrived on and the sender's address in one header
line; the owner handles it as if it had read it from that port (it holds a socket bound to
the same address and port, so its answers leave from it).

Responses are not steered: each worker's requests name its own UDP port in their Via
(`ng911.elements.addressing.WorkerRole`), so responses come back to it directly. A hand-over
that does not fit (the owner is stalled and the outbox is full) is dropped, counted and
logged: processing it elsewhere would fork a transaction (a retransmitted INVITE would
reach the next hop twice with two branches, and its 482 would fail the call), whereas the
sender's own retransmission (RFC 3261 Timer A/E) delivers it once the owner catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import zlib
from collections.abc import Callable
from typing import Any

from ng911.net.log import LogBudget, log_limited

__all__ = ["CallSteering", "steering_pairs"]

# what one wake-up of the inbox reads at most (then the loop runs other callbacks)
BATCH = 64
# the outbox's send buffer: what may wait for a stalled owner (~1,500 hand-overs of an
# emergency INVITE); the kernel caps it at net.core.wmem_max unless we may force it
OUTBOX_BYTES = 4 << 20
MAX_HANDOVER = 65507 + 300  # a UDP payload and the header line

Deliver = Callable[[int, bytes, tuple[str, int]], None]


def owner_of(call_id: str, count: int) -> int:
    """The worker (0..count-1) that owns the Call-ID: the same in every process."""
    return zlib.crc32(call_id.encode("utf-8", "surrogateescape")) % count


def steering_pairs(count: int) -> list[tuple[socket.socket, socket.socket]]:
    """One (inbox, outbox) connected AF_UNIX datagram pair per worker, non-blocking, with
    a send buffer as large as the kernel allows. The caller passes the inbox of worker i
    and every outbox to worker i (`pass_fds`) and keeps them all open while the workers
    run, so that a restarted worker finds its inbox (and what waited in it)."""
    pairs = []
    for _ in range(count):
        inbox, outbox = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for s in (inbox, outbox):
            s.setblocking(False)
            s.set_inheritable(True)
        force = getattr(socket, "SO_SNDBUFFORCE", 32)
        try:
            outbox.setsockopt(socket.SOL_SOCKET, force, OUTBOX_BYTES)  # root only
        except OSError:
            with contextlib.suppress(OSError):
                outbox.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, OUTBOX_BYTES)
        pairs.append((inbox, outbox))
    return pairs


class CallSteering:
    """This worker's side: which worker owns a Call-ID, hand a datagram over to it, and
    read what the others hand over to this one."""

    def __init__(self, index: int, inbox: socket.socket, outboxes: list[socket.socket]) -> None:
        if not 0 <= index < len(outboxes):
            raise ValueError(f"worker {index} of {len(outboxes)}")
        self.index = index
        self.count = len(outboxes)
        self.inbox = inbox
        self.outboxes = outboxes
        self.handed_over = 0  # datagrams this worker gave to their owner
        self.taken_over = 0  # datagrams another worker gave to this one
        self.dropped = 0  # hand-overs that did not fit (the owner's outbox was full)
        self.bad = 0  # inbox datagrams without a readable header (never from a sibling)
        self._deliver: Deliver | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._budget = LogBudget()

    @classmethod
    def from_fds(cls, index: int, inbox_fd: int, outbox_fds: list[int]) -> CallSteering:
        """The sockets a parent passed by file descriptor (`steering_pairs`)."""
        inbox = socket.socket(fileno=inbox_fd)
        inbox.setblocking(False)
        outboxes = [socket.socket(fileno=fd) for fd in outbox_fds]
        for s in outboxes:
            s.setblocking(False)
        return cls(index, inbox, outboxes)

    def owner(self, call_id: str) -> int:
        return owner_of(call_id, self.count)

    def hand_over(self, owner: int, port: int, data: bytes, addr: tuple[str, int]) -> bool:
        """Give `data`, read from the shared UDP `port` and sent by `addr`, to `owner`.
        False when it did not fit: it is dropped (counted, logged; see the module)."""
        header = f"{port} {addr[0]} {addr[1]}\n".encode("ascii", "replace")
        try:
            self.outboxes[owner].send(header + data)
        except OSError as exc:
            self.dropped += 1
            log_limited(
                self._budget,
                logging.WARNING,
                "udp_handover_dropped",
                worker=self.index,
                owner=owner,
                peer=f"udp:{addr[0]}:{addr[1]}",
                reason=exc.strerror or type(exc).__name__,
                action="dropped; the sender's retransmission will reach the owner",
            )
            return False
        self.handed_over += 1
        return True

    def start(self, loop: asyncio.AbstractEventLoop, deliver: Deliver) -> None:
        """Read the inbox on `loop`, handing each datagram to `deliver(port, data, addr)`."""
        if self._loop is not None:
            return
        self._loop = loop
        self._deliver = deliver
        loop.add_reader(self.inbox.fileno(), self._drain)

    def stop(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.inbox.fileno())
            self._loop = None

    def _drain(self) -> None:
        deliver = self._deliver
        assert deliver is not None
        recv = self.inbox.recv
        for _ in range(BATCH):
            try:
                raw = recv(MAX_HANDOVER)
            except OSError:  # empty (BlockingIOError) or closed: wait for the next wake-up
                return
            head, sep, data = raw.partition(b"\n")
            parts = head.split(b" ")
            if not sep or len(parts) != 3:
                self.bad += 1
                continue
            try:
                port, host, sport = int(parts[0]), parts[1].decode("ascii"), int(parts[2])
            except (ValueError, UnicodeDecodeError):
                self.bad += 1
                continue
            self.taken_over += 1
            try:
                deliver(port, data, (host, sport))
            except Exception as exc:  # one bad datagram never stops the inbox
                log_limited(
                    self._budget,
                    logging.ERROR,
                    "udp_handover_failed",
                    worker=self.index,
                    peer=f"udp:{host}:{sport}",
                    reason=f"{type(exc).__name__}: {exc}",
                )

    def stats(self) -> dict[str, Any]:
        return {
            "handed_over": self.handed_over,
            "taken_over": self.taken_over,
            "dropped": self.dropped,
            "bad": self.bad,
        }
