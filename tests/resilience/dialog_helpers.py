"""Helpers of the dialog/branchless/hostile-boundary resilience tests (issue 11, items 6-7).

`RawUa` is a caller made of one UDP socket and hand-written requests, so a test can send
what real-world gear sends (no Via branch, `urn:service:sos` as the Request-URI of an ACK
or BYE, no Route) instead of what `ng911.elements.ua.Caller` would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ng911.errors import Ng911Error
from ng911.sip.message import Request, Response
from ng911.sip.parse import parse_message
from ng911.sip.samples import BOUNDARY, LOCATION_CID, emergency_body

Message = Request | Response


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, queue: asyncio.Queue[Message]) -> None:
        self.queue = queue

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.queue.put_nowait(parse_message(data))
        except Ng911Error:
            pass


class RawUa:
    """One UDP socket on 127.0.0.1 that sends raw SIP text and collects what comes back."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.seen: list[Message] = []

    async def open(self) -> RawUa:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Proto(self.queue), local_addr=("127.0.0.1", 0)
        )
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def send(self, text: str | bytes, dest: tuple[str, int]) -> None:
        assert self.transport is not None
        data = text.encode() if isinstance(text, str) else text
        self.transport.sendto(data, dest)

    async def expect(self, pred: Callable[[Message], bool], timeout: float = 10.0) -> Message:
        """The first message (already received or arriving) for which `pred` is true."""
        for m in self.seen:
            if pred(m):
                self.seen.remove(m)
                return m
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError("no matching message")
            m = await asyncio.wait_for(self.queue.get(), left)
            if pred(m):
                return m
            self.seen.append(m)


def response_to(method: str, status: int | None = None) -> Callable[[Message], bool]:
    def pred(m: Message) -> bool:
        if not isinstance(m, Response) or m.cseq.method != method:
            return False
        return m.status >= 200 if status is None else m.status == status

    return pred


def via(port: int, branch: str | None) -> str:
    b = f";branch={branch}" if branch else ""
    return f"Via: SIP/2.0/UDP 127.0.0.1:{port}{b}"


def emergency_invite(port: int, call_id: str, *, branch: str | None) -> str:
    """A 911 INVITE from a caller at Times Square (Manhattan), as `samples` has it, with
    a Via that has a `branch` or (RFC 2543 style) none."""
    body = emergency_body().decode()
    return (
        "INVITE urn:service:sos SIP/2.0\r\n"
        f"{via(port, branch)}\r\n"
        "Max-Forwards: 70\r\n"
        'From: "Caller" <sip:+12125550123@vsp.example>;tag=caller-tag-1\r\n'
        "To: <urn:service:sos>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:caller@127.0.0.1:{port}>\r\n"
        f"Geolocation: <cid:{LOCATION_CID}>\r\n"
        "Geolocation-Routing: yes\r\n"
        f"Content-Type: multipart/mixed;boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
        f"{body}"
    )


def in_dialog(
    method: str,
    port: int,
    call_id: str,
    ok: Response,
    *,
    cseq: int,
    branch: str | None,
    ruri: str | None = None,
    routes: bool = True,
) -> str:
    """An ACK/BYE from the caller in the dialog `ok` (the 200 to the INVITE) created:
    Request-URI `ruri` (default: the callee's Contact), the route set from Record-Route
    (reversed, RFC 3261 §12.1.2) unless `routes` is False."""
    target = ruri if ruri is not None else str(ok.contacts[0].uri)
    lines = [
        f"{method} {target} SIP/2.0",
        via(port, branch),
        "Max-Forwards: 70",
        'From: "Caller" <sip:+12125550123@vsp.example>;tag=caller-tag-1',
        f"To: {ok.headers.get('To')}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
    ]
    if routes:
        lines.extend(f"Route: {r}" for r in reversed(ok.headers.get_all("Record-Route")))
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines)


def options(port: int, ruri: str, call_id: str = "options-probe@127.0.0.1") -> str:
    return "\r\n".join(
        [
            f"OPTIONS {ruri} SIP/2.0",
            via(port, "z9hG4bKoptionsprobe"),
            "Max-Forwards: 70",
            "From: <sip:probe@127.0.0.1>;tag=probe",
            f"To: <{ruri}>",
            f"Call-ID: {call_id}",
            "CSeq: 1 OPTIONS",
            "Content-Length: 0",
            "",
            "",
        ]
    )
