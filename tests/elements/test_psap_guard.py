"""psapd against a few spoofed packets: REGISTERs that would steal a call taker's AOR, and
its registrations kept across a restart (binding_store)."""

import asyncio
import secrets
import socket

from ng911.elements.binding_store import BindingStore
from ng911.elements.calltaker import CallTaker
from ng911.elements.config import CallTakerConfig, HostEntry, ListenerConfig, PsapConfig
from ng911.elements.psap import Psapd
from ng911.elements.registrar import Binding
from ng911.sip.message import Response
from ng911.sip.parse import parse_message
from ng911.sip.uri import parse_uri

FQDN = "psap.example"


def psapd(**kw) -> Psapd:
    """A psapd for call taker taker1 on a UDP port of its own."""
    cfg = PsapConfig(
        name="psap",
        fqdn=FQDN,
        domain=FQDN,
        listeners=(ListenerConfig("udp", "127.0.0.1", 0),),
        takers=(f"sip:taker1@{FQDN}",),
        **kw,
    )
    return Psapd(cfg, log_keep=1000)


def taker1(psap_port: int, **kw) -> CallTaker:
    """Call taker taker1, registering with the psapd on `psap_port`."""
    return CallTaker(
        CallTakerConfig(
            name="taker",
            fqdn="taker.example",
            listeners=(ListenerConfig("udp", "127.0.0.1", 0),),
            hosts=(HostEntry(FQDN), HostEntry("taker.example")),
            aor=f"sip:taker1@{FQDN}",
            psap=f"sip:{FQDN}:{psap_port}",
            keepalive=0,
            **kw,
        )
    )


def register_from(host: str, port: int, aor: str, contact: str) -> Response:
    """One REGISTER from a UDP socket bound to `host` (127.0.0.x); its final answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        s.settimeout(5)
        me = s.getsockname()[1]
        msg = (
            f"REGISTER sip:{FQDN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{me};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <{aor}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <{aor}>\r\n"
            f"Call-ID: {secrets.token_hex(8)}@{host}\r\n"
            "CSeq: 1 REGISTER\r\n"
            f"Contact: <{contact}>\r\n"
            "Expires: 600\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        s.sendto(msg.encode(), ("127.0.0.1", port))
        while True:
            resp = parse_message(s.recv(65535))
            if isinstance(resp, Response) and resp.status >= 200:
                return resp


async def test_spoofed_registers_cannot_take_a_call_takers_aor(tmp_path):
    psap = psapd(registrations=str(tmp_path / "reg.sqlite"))
    await psap.start()
    port = psap.local("udp").port
    taker = taker1(port)
    try:
        await taker.start()
        loop = asyncio.get_running_loop()

        def reg(host, aor, contact):
            return loop.run_in_executor(None, register_from, host, port, aor, contact)

        # another host claims taker1: refused, the binding stays the taker's
        resp = await reg("127.0.0.2", f"sip:taker1@{FQDN}", "sip:evil@127.0.0.2:5060")
        assert resp.status == 403
        contacts = [str(b.contact) for b in psap.registrar.lookup_aor(f"sip:taker1@{FQDN}", 0)]
        assert contacts and not any("evil" in c for c in contacts)
        assert psap.log.find("register_refused")
        # an AOR that is not one of this PSAP's call takers
        resp = await reg("127.0.0.1", f"sip:intruder@{FQDN}", "sip:x@127.0.0.1:5070")
        assert resp.status == 403
        assert psap.acd.takers == (f"sip:taker1@{FQDN}",)
        # the taker's own host (a restarted taker, another port) may re-register
        resp = await reg("127.0.0.1", f"sip:taker1@{FQDN}", "sip:taker1@127.0.0.1:5999")
        assert resp.status == 200
    finally:
        await taker.close()
        await psap.close()

    # a new psapd on the same file knows the takers at once, newest contact first
    again = Psapd(
        PsapConfig(name="psap2", fqdn=FQDN, domain=FQDN, registrations=str(tmp_path / "reg.sqlite"))
    )
    try:
        assert again.acd.takers == (f"sip:taker1@{FQDN}",)
        assert len(again.registrar.lookup_aor(f"sip:taker1@{FQDN}", 0)) == 2
    finally:
        await again.close()


def test_binding_store_round_trip_and_expiry(tmp_path):
    store = BindingStore(tmp_path / "b.sqlite")
    live = Binding("sip:a@x", parse_uri("sip:a@127.0.0.1:5070"), 200.0, None, "c1", 3)
    old = Binding("sip:b@x", parse_uri("sip:b@127.0.0.1:5071"), 50.0, None, "c2", 1)
    store.save("sip:a@x", [live], "127.0.0.1")
    store.save("sip:b@x", [old], "127.0.0.9")
    store.close()
    store = BindingStore(tmp_path / "b.sqlite")
    got = store.load(now=100.0)
    assert [(s.binding, s.source_host) for s in got] == [(live, "127.0.0.1")]
    store.save("sip:a@x", [], "127.0.0.1")  # unregistered
    assert store.load(now=100.0) == []
    store.close()


async def test_calls_only_from_the_configured_esrp():
    psap = Psapd(
        PsapConfig(
            name="psap",
            fqdn=FQDN,
            domain=FQDN,
            listeners=(ListenerConfig("udp", "127.0.0.1", 0),),
            hosts=(HostEntry("esrp.example", "127.0.0.3"),),
            calls_from=("esrp.example",),
        ),
        log_keep=100,
    )
    await psap.start()
    try:
        port = psap.local("udp").port
        loop = asyncio.get_running_loop()
        resp = await loop.run_in_executor(None, invite_from, "127.0.0.1", port)
        assert resp.status == 403
        assert psap.log.find("call_refused")
        # from the ESRP's address the call is taken (no taker registered here: 480)
        resp = await loop.run_in_executor(None, invite_from, "127.0.0.3", port)
        assert resp.status == 480
    finally:
        await psap.close()


def invite_from(host: str, port: int) -> Response:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        s.settimeout(5)
        s.sendto(_invite(host, s.getsockname()[1]), ("127.0.0.1", port))
        while True:
            resp = parse_message(s.recv(65535))
            if isinstance(resp, Response) and resp.status >= 200:
                return resp


def _invite(host: str, me: int) -> bytes:
    return (
        "INVITE urn:service:sos SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{me};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:x@{host}>;tag={secrets.token_hex(4)}\r\n"
        "To: <urn:service:sos>\r\n"
        f"Call-ID: {secrets.token_hex(8)}@{host}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:x@{host}:{me}>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def _answers(sock: socket.socket, want, timeout: float = 5.0) -> list[Response]:
    """What `sock` receives until `want(answers)` holds (bounded by `timeout`)."""
    loop = asyncio.get_running_loop()
    got: list[Response] = []
    end = loop.time() + timeout
    while not want(got) and loop.time() < end:
        try:
            msg = parse_message(sock.recv(65535))
        except BlockingIOError:
            await asyncio.sleep(0.01)
            continue
        if isinstance(msg, Response):
            got.append(msg)
    return got


async def test_calls_not_yet_answered_are_handed_back_503_when_psapd_stops():
    """A psapd that stops answers each call its takers have not answered (ringing at a
    taker, or waiting in the queue) 503 with Retry-After, and CANCELs the ringing offer: the
    ESRP fails over to the alternate PSAP at once (503 is among its failover statuses) rather
    than waiting on a call that died with psapd's sockets."""
    psap = psapd(hosts=(HostEntry("taker.example"),), queue_size=5)
    await psap.start()
    port = psap.local("udp").port
    taker = taker1(port, answer_delay=-1)  # rings, never answers
    socks = []
    try:
        await taker.start()
        for _ in range(2):  # the first rings at the taker, the second waits in the queue
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            socks.append(s)
            s.sendto(_invite("127.0.0.1", s.getsockname()[1]), ("127.0.0.1", port))
        ringing = await _answers(socks[0], lambda g: any(r.status == 180 for r in g))
        queued = await _answers(socks[1], lambda g: any(r.status == 182 for r in g))
        assert 180 in [r.status for r in ringing] and 182 in [r.status for r in queued]
        await asyncio.wait_for(psap.close(), 10)
        for s in socks:
            final = await _answers(s, lambda g: any(r.status >= 200 for r in g))
            statuses = [r.status for r in final if r.status >= 200]
            assert statuses == [503], statuses
            assert final[-1].headers.get("Retry-After") is not None
        for _ in range(100):  # bounded: the taker's CANCEL
            if taker.cancelled:
                break
            await asyncio.sleep(0.02)
        assert taker.cancelled == 1
        outcomes = [e.outcome for e in psap.call_log]
        assert outcomes.count("handed back 503") == 2, outcomes
    finally:
        for s in socks:
            s.close()
        await taker.close()
        await psap.close()


async def test_a_queued_call_is_refused_480_when_no_taker_comes_back():
    """The only call taker turns out unreachable while a call rings: the call goes back to
    the queue with nobody left to take it. After `unstaffed_wait` it gets 480 (the ESRP
    tries the alternate PSAP). Before: 100 Trying, then nothing, for ever."""
    psap = psapd(unstaffed_wait=0.2)
    await psap.start()
    # taker1 registers from a host psapd cannot resolve: every offer to it fails
    taker = taker1(psap.local("udp").port)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        await taker.start()
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        s.sendto(_invite("127.0.0.1", s.getsockname()[1]), ("127.0.0.1", psap.local("udp").port))
        got = await _answers(s, lambda g: any(r.status >= 200 for r in g))
        assert [r.status for r in got if r.status >= 200] == [480]
        assert got[-1].headers.get("Retry-After") is not None
        assert psap.log.find("unstaffed")
        assert [e.outcome for e in psap.call_log] == ["rejected 480"]
    finally:
        s.close()
        await taker.close()
        await psap.close()
