"""The shared element runtime, poked with raw datagrams: what every element answers."""

import asyncio
import contextlib
import socket

from ng911.elements.calltaker import CallTaker
from ng911.elements.config import CallTakerConfig, ListenerConfig, VspConfig
from ng911.elements.keepalive import ping
from ng911.elements.runtime import ElementError, status_of
from ng911.elements.vsp import VspProxy
from ng911.sip.errors import SipParseError
from ng911.sip.message import make_response
from ng911.sip.parse import parse_message
from ng911.sip.uri import parse_uri


def request(
    method,
    *,
    ruri="sip:taker@127.0.0.1",
    branch="z9hG4bKrt1",
    call_id="rt-1@x",
    cseq=None,
    extra="",
    contact=True,
):
    return (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:ops@x.example>;tag=1\r\n"
        f"To: <{ruri}>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq or '1 ' + method}\r\n"
        + ("Contact: <sip:ops@127.0.0.1:9>\r\n" if contact else "")
        + extra
        + "Content-Length: 0\r\n\r\n"
    ).encode()


class Peer:
    """A raw UDP socket: send a request, collect the answers."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)

    async def ask(self, port, data, *, want=1, timeout=2.0):
        loop = asyncio.get_running_loop()
        self.sock.sendto(data, ("127.0.0.1", port))
        out = []
        end = loop.time() + timeout
        while len(out) < want and loop.time() < end:  # bounded by the timeout
            try:
                raw = self.sock.recv(65535)
            except BlockingIOError:
                await asyncio.sleep(0.01)
                continue
            out.append(parse_message(raw))
        return out

    def close(self):
        self.sock.close()


class _UnregisteredTaker(CallTaker):
    async def started(self) -> None:
        return None  # no REGISTER: nobody listens at the psap address


async def start_taker(**kw):
    t = _UnregisteredTaker(
        CallTakerConfig(
            name="t", listeners=(ListenerConfig("udp"),), t1=0.05, psap="sip:127.0.0.1:9", **kw
        ),
        log_keep=200,
    )
    await t.start()
    return t


async def test_uas_basics():
    taker = await start_taker(answer_delay=-1)
    peer = Peer()
    port = taker.local("udp").port
    try:
        # unknown CANCEL: 481
        (r,) = await peer.ask(port, request("CANCEL", branch="z9hG4bKnone"))
        assert r.status == 481
        # an unknown method: 405 with Allow
        (r,) = await peer.ask(port, request("PUBLISH"))
        assert r.status == 405 and "INVITE" in r.headers.get_field("Allow")
        # INVITE without Contact: 400, a reason, no crash
        rs = await peer.ask(port, request("INVITE", branch="z9hG4bKnc", contact=False), want=2)
        assert [x.status for x in rs] == [100, 400]
        # an INVITE rings; its retransmission is absorbed (the last answer resent)
        inv = request("INVITE", branch="z9hG4bKinv", call_id="rt-2@x")
        rs = await peer.ask(port, inv, want=2)
        assert [x.status for x in rs] == [100, 180]
        assert taker.offered == 1  # the Contact-less one was refused before ringing
        (again,) = await peer.ask(port, inv)
        assert again.status == 180 and taker.offered == 1
        # CANCEL it: 200 to the CANCEL, 487 to the INVITE
        cancel = request("CANCEL", branch="z9hG4bKinv", call_id="rt-2@x", cseq="1 CANCEL")
        rs = await peer.ask(port, cancel, want=2)
        assert sorted(x.status for x in rs) == [200, 487]
        assert taker.cancelled == 1
        # OPTIONS: 200 with Allow and Accept
        (r,) = await peer.ask(port, request("OPTIONS", branch="z9hG4bKopt"))
        assert r.status == 200 and r.headers.get_field("Accept")
    finally:
        peer.close()
        await taker.close()
    assert taker.errors == 0


async def test_registrar_domain_and_stray_responses():
    vsp = VspProxy(VspConfig(name="vsp", listeners=(ListenerConfig("udp"),), t1=0.05), log_keep=200)
    await vsp.start()
    peer = Peer()
    port = vsp.local("udp").port
    try:
        (r,) = await peer.ask(port, request("REGISTER", ruri="sip:other.example"))
        assert r.status == 403
        (r,) = await peer.ask(port, request("REGISTER", ruri="sip:vsp.example", branch="z9hG4bKr2"))
        assert r.status == 200 and r.headers.get("Contact").startswith("<sip:ops@127.0.0.1:9>")
        # a response nobody asked for is dropped quietly
        stray = (
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKzz\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: s@x\r\n"
            b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        )
        assert await peer.ask(port, stray, timeout=0.3) == []
        # still alive
        (r,) = await peer.ask(port, request("OPTIONS", ruri="sip:vsp.example", branch="z9hG4bKo"))
        assert r.status == 200
    finally:
        peer.close()
        await vsp.close()
    assert vsp.errors == 0


def test_status_of():
    assert status_of(ElementError(482, "Loop Detected")) == (482, "Loop Detected")
    assert status_of(SipParseError("bad From", 400))[0] == 400
    assert status_of(ValueError("x\r\ny"))[0] == 500
    assert "\r" not in status_of(ValueError("x\r\ny"))[1]


async def test_a_tls_listener_needs_an_injected_server_context():
    """An element builds no TLS context from its config (`ng911.node.build` does)."""
    import pytest

    vsp = VspProxy(VspConfig(name="vsp", listeners=(ListenerConfig("tls", "127.0.0.1", 0),)))
    try:
        with pytest.raises(ElementError, match="TLS listener needs a server context"):
            await vsp.start()
    finally:
        await vsp.close()


class SlowPeer:
    """A raw UDP SIP peer that answers each request 200 OK after `delay` s (None: never)."""

    def __init__(self, delay):
        self.delay = delay
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.got = []
        self.task = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self):
        loop = asyncio.get_running_loop()
        for _ in range(500):  # bounded: 5 s
            try:
                raw, addr = self.sock.recvfrom(65535)
            except BlockingIOError:
                await asyncio.sleep(0.01)
                continue
            req = parse_message(raw)
            self.got.append(req.method)
            if self.delay is not None:
                loop.call_later(self.delay, self._answer, req, addr)

    def _answer(self, req, addr):
        with contextlib.suppress(OSError):
            self.sock.sendto(make_response(req, 200).to_bytes(), addr)

    def close(self):
        self.task.cancel()
        self.sock.close()


def ping_peer(element, peer: SlowPeer) -> list:
    """One OPTIONS from `element` to `peer`; the list its answer's status lands in."""
    answers: list = []
    uri = parse_uri(f"sip:127.0.0.1:{peer.port}")
    ping(element, uri, timeout=3.0, done=lambda status, why: answers.append(status))
    return answers


async def test_close_waits_for_the_answer_to_a_request_just_sent():
    """A ping sent a moment before close gets its answer before the socket closes: else the
    peer's 200 meets a closed socket, and the peer's log holds a response no one received."""
    peer = SlowPeer(0.1)
    t = await start_taker()
    try:
        answers = ping_peer(t, peer)
        await asyncio.sleep(0.02)  # the OPTIONS has left; its answer is 80 ms away
        assert peer.got == ["OPTIONS"]
        await asyncio.wait_for(t.close(), 5)
        assert answers == [200]
    finally:
        peer.close()


async def test_close_is_bounded_when_a_request_gets_no_answer():
    peer = SlowPeer(None)  # a peer that never answers: close still ends (at most 0.5 s on)
    t = await start_taker()
    try:
        answers = ping_peer(t, peer)
        await asyncio.sleep(0.02)
        assert peer.got == ["OPTIONS"]
        await asyncio.wait_for(t.close(), 5)
        assert answers == []
    finally:
        peer.close()


async def test_a_new_invite_while_the_element_stops_gets_503_not_silence():
    """A call that reaches an element after its stop began is refused (503, Retry-After) so
    the previous hop fails over at once, instead of being taken and then dropped when the
    sockets close. Requests of existing dialogs are still served."""
    silent = SlowPeer(None)  # an unanswered ping holds the stop open for CLOSE_WAIT
    t = await start_taker()
    caller = Peer()
    try:
        ping_peer(t, silent)
        await asyncio.sleep(0.02)
        closing = asyncio.get_running_loop().create_task(t.close())
        await asyncio.sleep(0.05)
        assert t.going_down and not closing.done()
        port = t.local("udp").port
        got = await caller.ask(port, request("INVITE", call_id="late-1@x"))
        assert [r.status for r in got] == [503]
        assert got[0].headers.get("Retry-After") is not None
        assert got[0].to_addr.tag is not None  # a final answer to a new INVITE carries one
        assert any(r["what"] == "request_refused" and r.get("status") == 503 for r in t.log.records)
        await asyncio.wait_for(closing, 5)
    finally:
        caller.close()
        silent.close()
