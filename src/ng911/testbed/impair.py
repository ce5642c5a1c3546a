"""Impairment relays: user-space delay, jitter and loss on one hop of the chain.

Why: on loopback a TLS handshake's round trips cost microseconds, so the testbed alone
cannot show what they cost across a real network. An ESInet hop between a carrier and a
regional ESRP may be tens of milliseconds long; `--impair hop2:delay=20` puts that on hop 2
and the cold calls then pay the TCP and TLS round trips for real.

How: a relay fronts each end of the impaired hop (its own loopback address, the same
well-known ports), and the element at the other end finds it through its host table (the
launcher gives each element its own). UDP datagrams and TCP bytes (TLS records pass through
untouched: the relay never terminates TLS, so certificates and identities are checked end to
end) are forwarded after `delay ± jitter` ms, in order per direction; UDP datagrams are
dropped with probability `loss` %. A UDP response comes back through the relay because
every element asks for `rport` (RFC 3581): the far end answers the relay's source address.

Each relay reports `AliasEvent`s (relay address → the real address it stands for), so the
trace still sees element to element and the captures still show one conversation per hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from ng911.observe.hops import HOPS
from ng911.testbed.errors import TestbedError

Observer = Callable[[Any], None]


@dataclass(frozen=True, slots=True)
class AliasEvent:
    """`alias` (an address of a relay) stands for `target` (an element's real address)."""

    ts: float
    mono: float
    transport: str  # "udp" | "tcp"
    alias: tuple[str, int]
    target: tuple[str, int]
    relay: str


@dataclass(frozen=True, slots=True)
class Impairment:
    """What one hop suffers: one-way delay and jitter (ms), UDP loss (%)."""

    hop: str
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0

    def __post_init__(self) -> None:
        if self.hop not in HOPS:
            raise TestbedError(f"impairment: unknown hop {self.hop!r} ({', '.join(HOPS)})")
        if self.delay_ms < 0 or self.jitter_ms < 0 or self.jitter_ms > max(self.delay_ms, 0):
            raise TestbedError(
                f"impairment on {self.hop}: need delay ≥ 0 and 0 ≤ jitter ≤ delay "
                f"(got delay={self.delay_ms}, jitter={self.jitter_ms})"
            )
        if not 0 <= self.loss_pct < 100:
            raise TestbedError(f"impairment on {self.hop}: loss must be in [0, 100) %")

    def one_way(self, rng: random.Random) -> float:
        """A one-way delay in seconds."""
        j = rng.uniform(-self.jitter_ms, self.jitter_ms) if self.jitter_ms else 0.0
        return max(0.0, self.delay_ms + j) / 1000.0

    def describe(self) -> str:
        parts = [f"delay={self.delay_ms:g}ms"]
        if self.jitter_ms:
            parts.append(f"jitter={self.jitter_ms:g}ms")
        if self.loss_pct:
            parts.append(f"loss={self.loss_pct:g}%")
        return f"{self.hop}: " + ", ".join(parts)


_SPEC = re.compile(r"^(hop[1-4])(?::(.*))?$")


def parse_impairment(text: str) -> Impairment:
    """`hop2:delay=20,jitter=2,loss=0.5` (ms, ms, %) → Impairment."""
    m = _SPEC.match(text.strip())
    if m is None:
        raise TestbedError(f"impairment {text!r}: expected hopN:delay=MS[,jitter=MS][,loss=PCT]")
    kw: dict[str, float] = {}
    names = {"delay": "delay_ms", "jitter": "jitter_ms", "loss": "loss_pct"}
    for item in filter(None, (m.group(2) or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in names:
            raise TestbedError(f"impairment {text!r}: unknown setting {item!r}")
        try:
            kw[names[key.strip()]] = float(value)
        except ValueError:
            raise TestbedError(f"impairment {text!r}: {key.strip()} is not a number") from None
    return Impairment(m.group(1), **kw)


class _Pacer:
    """Releases items after a delay, never out of order (a link is FIFO)."""

    def __init__(self, imp: Impairment, rng: random.Random) -> None:
        self.imp = imp
        self.rng = rng
        self.last = 0.0

    def schedule(self, fn: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        at = max(loop.time() + self.imp.one_way(self.rng), self.last)
        self.last = at
        loop.call_at(at, fn)

    def lost(self) -> bool:
        return self.imp.loss_pct > 0 and self.rng.random() * 100 < self.imp.loss_pct


class _UdpBack(asyncio.DatagramProtocol):
    """Per-client socket towards the fronted element; answers go back to the client."""

    def __init__(self, relay: _UdpFront, client: tuple[str, int]) -> None:
        self.relay = relay
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] = []
        self.ready = False  # pending flushed: new datagrams go straight through

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        front = self.relay.transport
        if front is None or self.relay.back_pacer.lost():
            return
        self.relay.back_pacer.schedule(lambda: front.sendto(data, self.client))


class _UdpFront(asyncio.DatagramProtocol):
    def __init__(self, hop: HopRelay) -> None:
        self.hop = hop
        self.transport: asyncio.DatagramTransport | None = None
        self.backs: dict[tuple[str, int], _UdpBack] = {}
        self.pacer = _Pacer(hop.imp, hop.rng)
        self.back_pacer = _Pacer(hop.imp, hop.rng)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.pacer.lost():
            return
        back = self.backs.get(addr)
        if back is None:  # a new client: its own socket towards the target, opened once
            back = self.backs[addr] = _UdpBack(self, addr)
            back.pending.append(data)
            self.hop.spawn(self._open_back(back))
        elif not back.ready:
            back.pending.append(data)  # still opening: keep the order
        else:
            self._forward(back, data)

    def _forward(self, back: _UdpBack, data: bytes) -> None:
        t = back.transport
        if t is not None:
            target = self.hop.target_udp
            self.pacer.schedule(lambda: t.sendto(data, target))

    async def _open_back(self, back: _UdpBack) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: back, local_addr=(self.hop.front_ip, 0)
        )
        self.hop.alias("udp", transport.get_extra_info("sockname"), back.client)
        pending, back.pending = back.pending, []
        for data in pending:
            self._forward(back, data)
        back.ready = True


def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
    if not writer.is_closing():
        writer.write(data)


@dataclass(eq=False)
class HopRelay:
    """Fronts one element (`target_ip`) on `front_ip` for the far end of an impaired hop."""

    name: str
    imp: Impairment
    front_ip: str
    target_ip: str
    ports: dict[str, int]  # transport ("udp" | "tcp" | "tls") → port, the same on both sides
    observers: Sequence[Observer] = ()
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self._servers: list[asyncio.AbstractServer] = []
        self._udp: list[asyncio.DatagramTransport] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.target_udp = (self.target_ip, self.ports.get("udp", 5060))

    def alias(self, transport: str, alias: Any, target: Any) -> None:
        ev = AliasEvent(
            time.time(),
            time.perf_counter(),
            transport,
            (str(alias[0]), int(alias[1])),
            (str(target[0]), int(target[1])),
            self.name,
        )
        for obs in list(self.observers):
            with contextlib.suppress(Exception):
                obs(ev)

    def spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for transport, port in self.ports.items():
            if transport == "udp":
                t, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpFront(self), local_addr=(self.front_ip, port)
                )
                self._udp.append(t)
                self.alias("udp", (self.front_ip, port), (self.target_ip, port))
            else:
                srv = await asyncio.start_server(
                    self._make_handler(port), self.front_ip, port, backlog=256
                )
                self._servers.append(srv)
                self.alias("tcp", (self.front_ip, port), (self.target_ip, port))

    def _make_handler(
        self, port: int
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            client = writer.get_extra_info("peername")
            try:
                up_r, up_w = await asyncio.open_connection(
                    self.target_ip, port, local_addr=(self.front_ip, 0)
                )
            except OSError:
                writer.close()
                return
            self.alias("tcp", up_w.get_extra_info("sockname"), client)
            self._writers.update((writer, up_w))
            await asyncio.gather(
                self._pipe(reader, up_w, _Pacer(self.imp, self.rng)),
                self._pipe(up_r, writer, _Pacer(self.imp, self.rng)),
                return_exceptions=True,
            )

        return handle

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pacer: _Pacer
    ) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                pacer.schedule(functools.partial(_write, writer, data))
        except (ConnectionError, OSError):
            pass
        # close after the last delayed chunk has gone
        pacer.schedule(lambda: writer.close())

    async def close(self) -> None:
        for srv in self._servers:
            srv.close()
        for w in list(self._writers):
            w.close()
        for t in self._udp:
            t.close()
        for task in list(self._tasks):
            task.cancel()
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 1.0)
