"""REGISTER on both sides: answering it (the VSP, psapd) and sending it (caller, call taker).

Both sides speak Digest when asked (RFC 3261 §22): `answer_register` takes an optional
`Authenticator` (elements/auth.py) and challenges with 401 before any binding is made;
`send_register` answers a 401/407 once per challenge with the strongest algorithm offered
(RFC 8760: SHA-256 over MD5), and stops when its fresh credentials are refused.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from ng911.elements.auth import Authenticator, Denied
from ng911.elements.registrar import Binding, Registrar
from ng911.elements.runtime import ClientCtx, ServerCtx, SipElement
from ng911.net.address import Address
from ng911.sip.digest import Challenge, answer_challenge, choose_challenge
from ng911.sip.headers import new_branch, new_call_id, new_tag
from ng911.sip.message import Request, Response
from ng911.sip.uri import URI, NameAddr, SipURI, parse_uri

__all__ = ["Registration", "answer_register", "registrar_uri", "send_register"]


def answer_register(
    element: SipElement,
    registrar: Registrar,
    ctx: ServerCtx,
    auth: Authenticator | None = None,
) -> list[Binding]:
    """RFC 3261 §10.3: apply the REGISTER and answer 200 with every current binding.

    With `auth`, steps 3-4 of §10.3 come first: no valid credentials → 401 with a fresh
    challenge per algorithm; credentials of another user than the AoR's → 403. Nothing is
    bound in either case.
    """
    req = ctx.request
    now = time.time()
    if auth is not None:
        who = auth.authenticate(req, now, proxy=False)
        if isinstance(who, Denied):
            ctx.reply(who.status, None if who.status != 400 else who.reason, extra=who.headers)
            element.log(
                "register_challenged" if who.status == 401 else "register_refused",
                status=who.status,
                reason=who.reason,
                user=who.user,
                hop=str(ctx.source.address),
            )
            return []
        if not auth.may_register(who, req.to_addr.uri):
            ctx.reply(403, "Forbidden: not your address-of-record")
            element.log("register_refused", status=403, user=who, hop=str(ctx.source.address))
            return []
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
    username: str = ""  # Digest credentials (RFC 3261 §22.2); "" = the AoR's user part
    password: str = ""  # "" = none: a 401/407 is final
    # the last challenge answered, reused for refreshes with the next nonce-count (§22.2
    # lets a UA send credentials pre-emptively; a stale nonce just brings a new challenge)
    challenge: Challenge | None = None
    challenge_proxy: bool = False
    nc: int = 0

    @classmethod
    def new(cls, aor: str, host: str, *, username: str = "", password: str = "") -> Registration:
        if not username:
            uri = parse_uri(aor)
            username = (uri.user or "") if isinstance(uri, SipURI) else ""
        return cls(aor=aor, call_id=new_call_id(host), username=username, password=password)

    def credentials(self, request: Request) -> tuple[str, str] | None:
        """The Authorization header for `request` from the cached challenge, nc + 1."""
        if self.challenge is None or not self.password:
            return None
        self.nc += 1
        creds = answer_challenge(
            self.challenge,
            username=self.username,
            password=self.password,
            method=request.method,
            uri=str(request.uri),
            nc=self.nc,
        )
        name = "Proxy-Authorization" if self.challenge_proxy else "Authorization"
        return name, str(creds)


def registrar_uri(uri: str) -> URI:
    """RFC 3261 §10.2: the REGISTER Request-URI names the registrar's domain, no user part."""
    target = parse_uri(uri)
    return target.replace(user=None, params=()) if isinstance(target, SipURI) else target


async def _transact(
    element: SipElement,
    req: Request,
    dest: Address,
    server_name: str | None,
    timeout: float,
) -> tuple[int, Response | None]:
    """One client transaction: (final status, the response or None on transport failure)."""
    fut: asyncio.Future[tuple[int, Response | None]] = element.loop.create_future()

    def done(ctx: ClientCtx, resp: Response) -> None:
        if resp.status >= 200 and not fut.done():
            fut.set_result((resp.status, resp))

    def failed(ctx: ClientCtx, status: int, cause: str) -> None:
        if not fut.done():
            fut.set_result((status, None))

    element.send_request(req, dest, server_name=server_name, on_response=done, on_failure=failed)
    return await asyncio.wait_for(fut, timeout)


MAX_AUTH_ROUNDS = 3  # pre-emptive credentials, a fresh challenge, a stale one: then give up


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
    """Send a REGISTER for `reg` to `dest` and return the final status.

    `dest` is the registrar itself or the outbound proxy in front of it. A transport failure
    comes back as its status (408/503); `asyncio.TimeoutError` only when nothing at all
    arrives within `timeout`. A 401/407 is answered with credentials (a new request, same
    Call-ID, CSeq + 1, RFC 3261 §22.2); when the credentials answering a fresh challenge are
    refused (a 401 without `stale=true`), the user or password is wrong: logged, and the
    401 returned.
    """
    fresh = False  # the credentials in the request we send answer a challenge just received
    status = 0
    reason = ""
    for _ in range(MAX_AUTH_ROUNDS + 1):
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
        auth = reg.credentials(req)
        if auth is not None:
            req.headers.add(*auth)
        status, resp = await _transact(element, req, dest, server_name, timeout)
        if status not in (401, 407) or resp is None:
            break
        proxy = status == 407
        offered = resp.headers.get_all("Proxy-Authenticate" if proxy else "WWW-Authenticate")
        ch = choose_challenge(offered)
        if ch is None:
            reason = "no Digest challenge we can answer"
            break
        if not reg.password:
            reason = "credentials required and none configured"
            break
        if fresh and not ch.stale:
            reason = "credentials refused (wrong user name or password)"
            reg.challenge = None
            break
        reg.challenge, reg.challenge_proxy, reg.nc = ch, proxy, 0
        fresh = True
    else:
        reason = "too many challenges"
    if status < 300:
        element.log("registered", status=status, registrar=str(request_uri))
    else:
        fields = {"reason": reason} if reason else {}
        element.log("register_failed", status=status, registrar=str(request_uri), **fields)
    return status
