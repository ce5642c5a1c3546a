"""Just enough media for a call: an SDP offer/answer (RFC 4566, RFC 3264) on a real port.

Why a real bound UDP port: a call taker that answers with a port nobody listens on looks
fine in SIP traces but fails every interop lab's RTP check. We bind the port (and discard
what arrives); media itself is out of scope.
"""

from __future__ import annotations

import asyncio
import secrets

__all__ = ["RtpPort", "sdp"]


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
