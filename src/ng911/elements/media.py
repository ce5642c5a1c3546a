"""Just enough media for a call: an SDP offer/answer (RFC 4566, RFC 3264) on a real port.

Why a real bound UDP port: a call taker that answers with a port nobody listens on looks
fine in SIP traces but fails every interop lab's RTP check. We bind the port (and discard
what arrives); media itself is out of scope.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque

__all__ = ["MediaPorts", "RtpPort", "sdp"]


class _Discard(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received += 1


class RtpPort:
    """A bound UDP port for RTP, closed at the end of the call."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.protocol = _Discard()
        self.resting = False  # kept by a `MediaPorts` between two calls

    async def open(self, host: str) -> int:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self.protocol, local_addr=(host, 0)
        )
        self.transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        return self.port

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


class MediaPorts:
    """The RTP ports of one UA: a port whose call ended is kept bound for a later call.

    Why: binding a UDP port and wrapping it in an event-loop endpoint, then closing it,
    costs ~80 µs of CPU, paid twice per call (caller and call taker): about 4 % of the
    whole chain's CPU per call in `bench/chain.py`. Media servers and SIPp keep their ports
    for the same reason. A kept port rests behind all the others freed before it (oldest
    first), so a late packet of its last call is long gone when the next one uses it, and
    it would be discarded anyway (`_Discard`). At most `keep` rest; more are closed.
    """

    def __init__(self, host: str, keep: int = 64) -> None:
        self.host = host
        self.keep = keep
        self._resting: deque[RtpPort] = deque()
        self._closed = False

    async def take(self) -> RtpPort:
        """A bound port for a new call: a resting one, else a newly bound one."""
        while self._resting:
            port = self._resting.popleft()
            port.resting = False
            if port.transport is not None and not port.transport.is_closing():
                port.protocol.received = 0
                return port
        port = RtpPort()
        await port.open(self.host)
        return port

    def give_back(self, port: RtpPort) -> None:
        """The call of `port` is over: keep it for a later call (idempotent)."""
        if port.resting or port.transport is None:
            return
        if self._closed or len(self._resting) >= self.keep or port.transport.is_closing():
            port.close()
            return
        port.resting = True
        self._resting.append(port)

    def close(self) -> None:
        """The UA stops: close every resting port; ports given back later are closed."""
        self._closed = True
        while self._resting:
            self._resting.popleft().close()


def sdp(host: str, port: int, *, user: str = "ng911", session: str = "emergency call") -> bytes:
    """An audio SDP (PCMU/PCMA + telephone-event), offer or answer alike (RFC 3264 §6)."""
    sess_id = secrets.randbelow(2**31)
    return (
        "v=0\r\n"
        f"o={user} {sess_id} {sess_id} IN IP4 {host}\r\n"
        f"s={session}\r\n"
        f"c=IN IP4 {host}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 8 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=sendrecv\r\n"
    ).encode()
