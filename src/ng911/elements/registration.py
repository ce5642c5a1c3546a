"""REGISTER on both sides: answering it (the VSP, psapd) and sending it (caller, call taker)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from ng911.elements.registrar import Binding, Registrar
from ng911.elements.runtime import ClientCtx, ServerCtx, SipElement
from ng911.net.address import Address
from ng911.sip.headers import new_branch, new_call_id, new_tag
from ng911.sip.message import Request, Response
from ng911.sip.uri import URI, NameAddr, SipURI, parse_uri

__all__ = ["Registration", "answer_register", "registrar_uri", "send_register"]


def answer_register(element: SipElement, registrar: Registrar, ctx: ServerCtx) -> list[Binding]:
    """RFC 3261 §10.3: apply the REGISTER and answer 200 with every current binding."""
    req = ctx.request
    now = time.time()
    bindings = registrar.register(req, ctx.source, now)  # raises ElementError -> its status
    extra = [
        ("Contact", f"<{b.contact}>;expires={max(0, int(b.expires_at - now))}") for b in bindings
    ]
    ctx.reply(200, extra=extra)
    element.log(
        "register",
        aor=str(req.to_addr.uri),
        contacts=[str(b.contact) for b in bindings],
        hop=str(ctx.source.address),
    )
    return bindings


@dataclass(slots=True)
class Registration:
    """A UA's registration with one registrar.

    RFC 3261 §10.2.4: every REGISTER (first one and refreshes) to the same registrar carries
    the same Call-ID and a CSeq one higher than the last, so the registrar can order them.
    """

    aor: str
    call_id: str
    cseq: int = 0

    @classmethod
    def new(cls, aor: str, host: str) -> Registration:
        return cls(aor=aor, call_id=new_call_id(host))


def registrar_uri(uri: str) -> URI:
    """RFC 3261 §10.2: the REGISTER Request-URI names the registrar's domain, no user part."""
    target = parse_uri(uri)
    return target.replace(user=None, params=()) if isinstance(target, SipURI) else target


async def send_register(
    element: SipElement,
    reg: Registration,
    request_uri: URI,
    contact: NameAddr,
    dest: Address,
    server_name: str | None,
    *,
    expires: int,
    timeout: float = 5.0,
) -> int:
    """Send one REGISTER for `reg` to `dest` and return the final status.

    `dest` is the registrar itself or the outbound proxy in front of it. A transport failure
    comes back as its status (408/503); `asyncio.TimeoutError` only when nothing at all
    arrives within `timeout`.
    """
    reg.cseq += 1
    req = Request(
        "REGISTER",
        request_uri,
        [
            ("Via", element.via(dest.transport, new_branch())),
            ("Max-Forwards", "70"),
            ("From", f"<{reg.aor}>;tag={new_tag()}"),
            ("To", f"<{reg.aor}>"),
            ("Call-ID", reg.call_id),
            ("CSeq", f"{reg.cseq} REGISTER"),
            ("Contact", str(contact)),
            ("Expires", str(expires)),
        ],
    )
    fut: asyncio.Future[int] = element.loop.create_future()

    def done(ctx: ClientCtx, resp: Response) -> None:
        if resp.status >= 200 and not fut.done():
            fut.set_result(resp.status)

    def failed(ctx: ClientCtx, status: int, cause: str) -> None:
        if not fut.done():
            fut.set_result(status)

    element.send_request(req, dest, server_name=server_name, on_response=done, on_failure=failed)
    status = await asyncio.wait_for(fut, timeout)
    element.log(
        "registered" if status < 300 else "register_failed",
        status=status,
        registrar=str(request_uri),
    )
    return status
