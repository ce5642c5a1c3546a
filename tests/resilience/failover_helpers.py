"""Helpers of the failover resilience tests: a bare UDP SIP user agent (an attacker's socket
or a minimal real caller) and small polling loops. Real sockets on loopback, no mocks."""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Callable

from ng911.sip.message import Response
from ng911.sip.parse import parse_message
from ng911.sip.uri import parse_name_addr


def free_port() -> int:
    """A port nothing listens on (bound, then closed) on 127.0.0.1, UDP and TCP."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(cond: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    """Poll `cond` until true or `timeout` s (bounded); returns its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        await asyncio.sleep(step)
    return cond()


class RawUa(asyncio.DatagramProtocol):
    """A UDP socket that sends INVITEs and, if `ack`, ACKs their 2xx (RFC 3261 §13.2.2.4);
    with `ack=False` it is the spoofer: it never answers anything."""

    def __init__(self, ack: bool) -> None:
        self.ack = ack
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.responses: dict[str, list[Response]] = {}
        self.finals: dict[str, asyncio.Future[Response]] = {}
        self.acked: set[str] = set()
        self.dest: tuple[str, int] = ("127.0.0.1", 0)

    @classmethod
    async def open(cls, dest_port: int, *, ack: bool, host: str = "127.0.0.1") -> RawUa:
        loop = asyncio.get_running_loop()
        ua = cls(ack)
        ua.dest = (host, dest_port)
        await loop.create_datagram_endpoint(lambda: ua, local_addr=("127.0.0.1", 0))
        return ua

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def invite(self, call_id: str | None = None, ruri: str = "urn:service:sos") -> str:
        call_id = call_id or f"raw-{secrets.token_hex(6)}@127.0.0.1"
        self.finals[call_id] = asyncio.get_running_loop().create_future()
        msg = (
            f"INVITE {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:spoof@127.0.0.1>;tag={secrets.token_hex(4)}\r\n"
            f"To: <{ruri}>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 1 INVITE\r\n"
            f"Contact: <sip:raw@127.0.0.1:{self.port}>\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        assert self.transport is not None
        self.transport.sendto(msg.encode(), self.dest)
        return call_id

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = parse_message(data)
        except Exception:
            return
        if not isinstance(msg, Response):
            return  # a BYE or retransmission for us: the spoofer ignores it (so does the test)
        cid = msg.call_id
        self.responses.setdefault(cid, []).append(msg)
        fut = self.finals.get(cid)
        if msg.status >= 200 and fut is not None and not fut.done():
            fut.set_result(msg)
        if self.ack and 200 <= msg.status < 300 and msg.cseq.method == "INVITE":
            self._ack(msg, addr)

    def _ack(self, ok: Response, addr: tuple[str, int]) -> None:
        """ACK for the 2xx: R-URI = its Contact, Route = its Record-Route reversed."""
        contact = ok.headers.get("Contact")
        ruri = str(parse_name_addr(contact).uri) if contact else "sip:unknown@127.0.0.1"
        routes = list(reversed(ok.headers.get_all("Record-Route")))
        route_lines = "".join(f"Route: {r}\r\n" for r in routes)
        msg = (
            f"ACK {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"{route_lines}"
            f"From: {ok.headers.get('From')}\r\n"
            f"To: {ok.headers.get('To')}\r\n"
            f"Call-ID: {ok.call_id}\r\n"
            f"CSeq: {ok.cseq.seq} ACK\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        assert self.transport is not None
        self.transport.sendto(msg.encode(), self.dest)
        self.acked.add(ok.call_id)

    async def final(self, call_id: str, timeout: float) -> Response:
        return await asyncio.wait_for(asyncio.shield(self.finals[call_id]), timeout)
