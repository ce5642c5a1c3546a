"""Issue 11 item 9: the VSP registrar took unauthenticated REGISTERs for any AoR.

With `VspConfig.auth` on, a REGISTER needs Digest credentials of the AoR's own user
(RFC 3261 §22, RFC 8760: SHA-256 and MD5 challenges); non-emergency calls are challenged
with 407 (`auth_invites`); emergency calls are routed without any credentials (RFC 6881 §8,
NENA i3). Real elements and sockets on loopback; a raw UDP socket plays the ESRP and, for
the replay and header checks, a hand-written UAC.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from ng911.elements.config import CallerConfig, ListenerConfig, VspConfig
from ng911.elements.runtime import ElementError
from ng911.elements.ua import Caller
from ng911.elements.vsp import VspProxy
from ng911.sip.digest import answer_challenge, parse_challenge
from ng911.sip.headers import new_branch, new_tag
from ng911.sip.message import Request, Response, make_response
from ng911.sip.parse import parse_message
from ng911.sip.uri import parse_uri

USERS = {"alice": "wonderland", "bob": "builder"}
TIMEOUT = 10.0


class Peer(asyncio.DatagramProtocol):
    """A raw UDP endpoint: what it receives goes to a queue; it can answer requests."""

    def __init__(self, answer: int | None = None) -> None:
        self.inbox: asyncio.Queue[Request | Response] = asyncio.Queue()
        self.answer = answer
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = parse_message(data)
        self.inbox.put_nowait(msg)
        if isinstance(msg, Request) and self.answer is not None and msg.method != "ACK":
            assert self.transport is not None
            self.transport.sendto(make_response(msg, self.answer, to_tag="esrp1").to_bytes(), addr)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, req: Request, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(req.to_bytes(), ("127.0.0.1", port))

    async def response(self) -> Response:
        while True:
            msg = await asyncio.wait_for(self.inbox.get(), TIMEOUT)
            if isinstance(msg, Response) and msg.status >= 200:
                return msg


@contextlib.asynccontextmanager
async def peer(answer: int | None = None) -> AsyncIterator[Peer]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: Peer(answer), local_addr=("127.0.0.1", 0)
    )
    try:
        yield proto
    finally:
        transport.close()


@contextlib.asynccontextmanager
async def vsp(esrp_port: int = 9, **kw: object) -> AsyncIterator[VspProxy]:
    cfg = VspConfig(
        name="vsp",
        listeners=(ListenerConfig("udp"),),
        t1=0.05,
        esrp=f"sip:127.0.0.1:{esrp_port}",
        auth=True,
        users=dict(USERS),
        **kw,  # type: ignore[arg-type]
    )
    element = VspProxy(cfg, log_keep=1000)
    await element.start()
    try:
        yield element
    finally:
        await element.close()


@contextlib.asynccontextmanager
async def caller(vsp_port: int, **kw: object) -> AsyncIterator[Caller]:
    cfg = CallerConfig(
        listeners=(ListenerConfig("udp"),),
        t1=0.05,
        proxy=f"sip:127.0.0.1:{vsp_port}",
        register=False,
        **kw,  # type: ignore[arg-type]
    )
    element = Caller(cfg, log_keep=200)
    await element.start()
    try:
        yield element
    finally:
        await element.close()


def register(port: int, *, aor: str = "sip:alice@vsp.example", cseq: int = 1,
             contact_port: int = 5999, auth: str | None = None) -> Request:  # fmt: skip
    headers = [
        ("Via", f"SIP/2.0/UDP 127.0.0.1:{contact_port};branch={new_branch()};rport"),
        ("Max-Forwards", "70"),
        ("From", f"<{aor}>;tag={new_tag()}"),
        ("To", f"<{aor}>"),
        ("Call-ID", "raw-register-1"),
        ("CSeq", f"{cseq} REGISTER"),
        ("Contact", f"<sip:alice@127.0.0.1:{contact_port}>"),
        ("Expires", "600"),
    ]
    if auth is not None:
        headers.append(("Authorization", auth))
    return Request("REGISTER", parse_uri(f"sip:127.0.0.1:{port}"), headers)


async def test_unauthenticated_register_gets_401_and_no_binding() -> None:
    async with vsp() as v, peer() as p:
        port = v.local("udp").port
        for aor in ("sip:alice@vsp.example", "sip:mallory@vsp.example", "sip:911@vsp.example"):
            p.send(register(port, aor=aor), port)
            resp = await p.response()
            assert resp.status == 401, resp
            chs = [parse_challenge(c) for c in resp.headers.get_all("WWW-Authenticate")]
            # RFC 8760 §2.4: one challenge per algorithm, the preferred (SHA-256) first
            assert [c.algorithm for c in chs] == ["SHA-256", "MD5"]
            assert {c.realm for c in chs} == {"vsp.example"}
            assert all(c.qop == ("auth",) for c in chs)
        assert v.registrar.all(0) == []
        async with caller(port) as c:  # a UA without credentials fails clearly
            assert await c.register() == 401
            assert c.log.find("register_failed", status=401)
        assert v.registrar.all(0) == []


async def test_wrong_password_is_refused_right_one_registers() -> None:
    async with vsp() as v:
        port = v.local("udp").port
        async with caller(port, auth_password="not-wonderland") as c:
            assert await c.register() == 401
            failed = c.log.find("register_failed")
            assert failed and "refused" in failed[-1]["reason"]
            # one challenge answered, once: not a loop of attempts
            assert len(v.log.find("register_challenged")) == 2
        assert v.registrar.all(0) == []
        async with caller(port, auth_password="wonderland") as c:
            assert await c.register() == 200
            assert [b.aor for b in v.registrar.all(0)] == ["sip:alice@vsp.example"]
            challenged = len(v.log.find("register_challenged"))
            # a refresh sends credentials pre-emptively with the next nonce-count: no 401
            assert await c.register() == 200
            assert len(v.log.find("register_challenged")) == challenged
            assert c._registration.nc == 2


async def test_md5_only_ua_and_algorithm_choice() -> None:
    async with vsp(auth_algorithms=("MD5",)) as v:
        port = v.local("udp").port
        async with caller(port, auth_password="wonderland") as c:
            assert await c.register() == 200
            assert c._registration.challenge is not None
            assert c._registration.challenge.algorithm == "MD5"
    async with vsp() as v:
        port = v.local("udp").port
        async with caller(port, auth_password="wonderland") as c:
            assert await c.register() == 200
            assert c._registration.challenge is not None
            assert c._registration.challenge.algorithm == "SHA-256"  # strongest offered


async def test_user_cannot_register_another_aor() -> None:
    async with vsp() as v:
        port = v.local("udp").port
        async with caller(
            port, aor="sip:bob@vsp.example", auth_user="alice", auth_password="wonderland"
        ) as c:
            assert await c.register() == 403
        assert v.registrar.all(0) == []
        assert v.log.find("register_refused", status=403)


async def test_replayed_authorization_is_refused() -> None:
    async with vsp() as v, peer() as p:
        port = v.local("udp").port
        p.send(register(port), port)
        resp = await p.response()
        ch = parse_challenge(resp.headers.get_all("WWW-Authenticate")[0])
        creds = answer_challenge(ch, username="alice", password="wonderland",
                                 method="REGISTER", uri=f"sip:127.0.0.1:{port}")  # fmt: skip
        p.send(register(port, cseq=2, auth=str(creds)), port)
        assert (await p.response()).status == 200
        assert len(v.registrar.all(0)) == 1
        # the same Authorization (same nonce and nc) on a new REGISTER binding elsewhere
        p.send(register(port, cseq=3, contact_port=6666, auth=str(creds)), port)
        resp = await p.response()
        assert resp.status == 401
        assert v.log.find("register_challenged")[-1]["reason"] == "nonce-count replayed"
        assert [b.contact.port for b in v.registrar.all(0)] == [5999]
        # hostile credentials: 400, nothing echoed unbounded, nothing bound
        p.send(register(port, cseq=4, auth='Digest realm="vsp.example", nonce="' + "x" * 5000),
               port)  # fmt: skip
        resp = await p.response()
        assert resp.status == 400 and len(resp.reason) <= 120
        assert len(v.registrar.all(0)) == 1


async def test_emergency_call_without_credentials_is_routed() -> None:
    async with peer(answer=486) as esrp, vsp(esrp.port) as v:
        port = v.local("udp").port
        async with caller(port) as c:  # no account at all
            rec = await asyncio.wait_for(c.place_call(dial="911", timeout=TIMEOUT), TIMEOUT)
            assert rec.status == 486  # the ESRP's answer: routed, not challenged
            got = await asyncio.wait_for(esrp.inbox.get(), TIMEOUT)
            assert isinstance(got, Request) and got.method == "INVITE"
            assert str(got.uri) == "urn:service:sos"
        async with caller(port, auth_password="wrong-password") as c:  # wrong password too
            rec = await asyncio.wait_for(c.place_call(dial="911", timeout=TIMEOUT), TIMEOUT)
            assert rec.status == 486
        assert v.emergency_calls == 2
        assert not v.log.find("request_challenged")


@pytest.mark.parametrize("auth_invites", [True, False])
async def test_non_emergency_invite_challenged_407(auth_invites: bool) -> None:
    async with peer(answer=486) as esrp, vsp(esrp.port, auth_invites=auth_invites) as v:
        port = v.local("udp").port
        async with caller(port) as c:
            dial = "sip:bob@vsp.example"
            rec = await asyncio.wait_for(c.place_call(dial=dial, timeout=TIMEOUT), TIMEOUT)
            # challenged, or (auth_invites off) routed: bob is not registered
            assert rec.status == (407 if auth_invites else 404)
        if not auth_invites:
            return
        # the same INVITE with our realm's Proxy-Authorization is routed (404: no bob)
        async with peer() as p:
            invite = c.build_invite("sip:bob@vsp.example")
            invite.headers.set("Via", f"SIP/2.0/UDP 127.0.0.1:{p.port};branch={new_branch()}")
            p.send(invite, port)
            resp = await p.response()
            assert resp.status == 407
            offered = [parse_challenge(h) for h in resp.headers.get_all("Proxy-Authenticate")]
            assert [h.algorithm for h in offered] == ["SHA-256", "MD5"]
            creds = answer_challenge(offered[0], username="alice", password="wonderland",
                                     method="INVITE", uri=str(invite.uri))  # fmt: skip
            again = invite.copy()
            again.headers.set("Via", f"SIP/2.0/UDP 127.0.0.1:{p.port};branch={new_branch()}")
            again.headers.set("CSeq", f"{invite.cseq.seq + 1} INVITE")
            again.headers.add("Proxy-Authorization", str(creds))
            p.send(again, port)
            assert (await p.response()).status == 404


async def test_users_file_with_precomputed_ha1(tmp_path) -> None:
    """An operator keeps HA1s, not passwords: `user:realm:HA1`, MD5 or SHA-256."""
    from ng911.sip.digest import ha1

    users = tmp_path / "users"
    users.write_text(
        "# htdigest-style\n"
        f"carol:vsp.example:{ha1('SHA-256', 'carol', 'vsp.example', 's3cret')}\n"
        f"carol:vsp.example:{ha1('MD5', 'carol', 'vsp.example', 's3cret')}\n"
        f"carol:other.example:{ha1('MD5', 'carol', 'other.example', 'x')}\n"
    )
    async with vsp(users_file=str(users)) as v:
        port = v.local("udp").port
        async with caller(port, aor="sip:carol@vsp.example", auth_password="s3cret") as c:
            assert await c.register() == 200
        async with caller(port, aor="sip:carol@vsp.example", auth_password="guess") as c:
            assert await c.register() == 401
        assert [b.aor for b in v.registrar.all(0)] == ["sip:carol@vsp.example"]
    users.write_text("carol:vsp.example:not-hex\n")
    with pytest.raises(ElementError, match="users:1"):
        VspProxy(VspConfig(auth=True, users_file=str(users)))


async def test_refresh_after_nonce_expiry_gets_stale_and_recovers() -> None:
    """A refresh with an expired nonce: 401 stale=true, answered without asking anyone."""
    async with vsp(auth_nonce_ttl=0.3) as v:
        port = v.local("udp").port
        async with caller(port, auth_password="wonderland") as c:
            assert await c.register() == 200
            await asyncio.sleep(0.6)
            assert await c.register() == 200
            reasons = [r["reason"] for r in v.log.find("register_challenged")]
            assert "nonce expired" in reasons
            # a VSP restart (a new nonce secret) is recovered from the same way
            assert v.auth is not None
            v.auth.server.secret = b"another process"
            assert await c.register() == 200
            assert v.log.find("register_challenged")[-1]["reason"] == "nonce not ours"


async def test_call_taker_shares_the_register_client() -> None:
    from ng911.elements.calltaker import CallTaker
    from ng911.elements.config import CallTakerConfig

    async with vsp() as v:
        port = v.local("udp").port
        bob = CallTaker(
            CallTakerConfig(
                name="bob",
                listeners=(ListenerConfig("udp"),),
                t1=0.05,
                aor="sip:bob@vsp.example",
                psap=f"sip:127.0.0.1:{port}",
                auth_password="builder",
            ),
            log_keep=100,
        )
        await bob.start()
        try:
            assert bob.registered.is_set()
            assert [b.aor for b in v.registrar.all(0)] == ["sip:bob@vsp.example"]
        finally:
            await bob.close()


def test_config_refuses_unknown_algorithms() -> None:
    from ng911.elements.config import ConfigError

    with pytest.raises(ConfigError, match="auth_algorithms"):
        VspConfig.from_dict({"auth": True, "auth_algorithms": ["SHA-1"]})
    with pytest.raises(ConfigError, match="auth_algorithms"):
        VspConfig(auth_algorithms=())
    assert VspConfig().auth is False  # off by default (the testbed)
