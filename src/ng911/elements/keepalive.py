"""OPTIONS keep-alive pings (RFC 3261 §11): "is a SIP stack answering at this URI?".

Why OPTIONS: every SIP element answers it (§11.2: as it would an INVITE, 200 when it could
take a call), it creates no state at the pinged side, and it travels the same hop, transport
and TLS profile as the calls do, so an answered ping means a call would get through too.
Kamailio's `dispatcher` (`ds_ping_interval`) and most SBCs probe their next hops the same
way. The ESRP pings its PSAPs (`elements/health.py` keeps the up/down state); a call taker
pings its psapd to notice a restart and register again at once.
"""

from __future__ import annotations

from collections.abc import Callable

from ng911.elements.runtime import ClientCtx, SipElement
from ng911.errors import Ng911Error
from ng911.sip.headers import new_branch, new_call_id, new_tag
from ng911.sip.message import Request, Response
from ng911.sip.uri import URI

__all__ = ["PingDone", "ping"]

# called once per ping: the final status (None: no answer in time / transport failure), why
PingDone = Callable[[int | None, str], None]


def ping(element: SipElement, uri: URI, *, timeout: float, done: PingDone) -> None:
    """Send one OPTIONS to `uri`; `done` is called exactly once, at the latest after
    `timeout` seconds (the transaction's own Timer F, 64*T1 over UDP, is far too long
    to notice a dead peer)."""
    finished = False

    def finish(status: int | None, why: str) -> None:
        nonlocal finished
        if finished:
            return
        finished = True
        timer.cancel()
        done(status, why)

    timer = element.call_later(timeout, finish, None, f"no answer to OPTIONS in {timeout:g} s")
    try:
        dest, name = element.locate(uri)
    except Ng911Error as exc:
        finish(None, f"cannot resolve: {exc}")
        return
    req = Request(
        "OPTIONS",
        uri,
        [
            ("Via", element.via(dest.transport, new_branch())),
            ("Max-Forwards", "70"),
            ("From", f"<sip:keepalive@{element.fqdn}>;tag={new_tag()}"),
            ("To", f"<{uri}>"),
            ("Call-ID", new_call_id(element.fqdn)),
            ("CSeq", "1 OPTIONS"),
            ("Accept", "application/sdp"),
        ],
    )

    def on_response(ctx: ClientCtx, resp: Response) -> None:
        if resp.status >= 200:
            finish(resp.status, f"OPTIONS answered {resp.status}")

    def on_failure(ctx: ClientCtx, status: int, cause: str) -> None:
        finish(None, f"OPTIONS failed: {cause}")

    element.send_request(
        req, dest, server_name=name, on_response=on_response, on_failure=on_failure
    )
