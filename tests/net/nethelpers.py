"""Helpers for transport tests: a request builder, and an element stub that records what
it receives and answers requests with 200 (real sockets, loopback)."""

from __future__ import annotations

import asyncio

from ng911.net import Address, NetEvent, SipTransportLayer, Source
from ng911.sip.headers import new_branch, new_call_id, new_tag
from ng911.sip.message import Request, Response, make_response
from ng911.sip.uri import parse_uri


def options(
    uri: str = "sip:esinet.example",
    *,
    transport: str = "UDP",
    route: str | None = None,
    via_params: str = ";rport",
    body: bytes = b"",
) -> Request:
    headers = [
        ("Via", f"SIP/2.0/{transport} 192.0.2.1:5060;branch={new_branch()}{via_params}"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:test@vsp.example>;tag={new_tag()}"),
        ("To", f"<{uri}>"),
        ("Call-ID", new_call_id("vsp.example")),
        ("CSeq", "1 OPTIONS"),
    ]
    if route:
        headers.append(("Route", route))
    return Request("OPTIONS", parse_uri(uri), headers, body)


class Element:
    """A transport layer plus a queue of what it received; answers requests with 200."""

    def __init__(self, layer: SipTransportLayer, *, answer: bool = True) -> None:
        self.layer = layer
        self.inbox: asyncio.Queue[tuple[Request | Response, Source]] = asyncio.Queue()
        self.events: list[NetEvent] = []
        self.answer = answer
        self.tasks: set[asyncio.Task[None]] = set()
        layer.on_message = self._on_message
        layer.observers.append(self.events.append)

    def _on_message(self, msg: Request | Response, src: Source) -> None:
        self.inbox.put_nowait((msg, src))
        if self.answer and isinstance(msg, Request):
            resp = make_response(msg, 200, "OK")
            t = asyncio.get_running_loop().create_task(
                self.layer.send(resp, src.address, connection_id=src.connection_id)
            )
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)

    async def next(self, timeout: float = 3.0) -> tuple[Request | Response, Source]:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


def loop_addr(transport: str, addr: Address) -> Address:
    return Address(transport, "127.0.0.1", addr.port)
