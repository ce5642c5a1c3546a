"""The proxy hot path's fast paths (bench/proxy.py): one call through the VSP proxy over
loopback UDP, checked header by header for faithful forwarding (RFC 3261 §16.6, §16.7,
§18.2.1); the synchronous UDP send; branch generation; the collector threshold."""

import asyncio
import gc
import re
import socket

import pytest

from ng911.elements.config import ListenerConfig, VspConfig
from ng911.elements.runtime import new_branch_with, raise_gc_threshold
from ng911.elements.vsp import VspProxy
from ng911.net import Address, SipTransportLayer
from ng911.net.errors import InsecureTransportError
from ng911.sip.message import Request
from ng911.sip.parse import parse_message
from ng911.sip.uri import parse_uri


class Udp:
    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    async def recv(self, prefix, timeout=2.0):
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:  # bounded by the timeout
            try:
                data, addr = self.sock.recvfrom(65535)
            except BlockingIOError:
                await asyncio.sleep(0.002)
                continue
            if data.startswith(prefix):
                return data, addr
        raise AssertionError(f"nothing starting {prefix!r} in {timeout} s")


def lines(data):
    return data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def header_lines(data, name):
    return [ln for ln in lines(data)[1:] if ln.lower().startswith(name.lower() + b":")]


def answer(req, status, tag, contact=None):
    keep = re.compile(rb"^(via|from|to|call-id|cseq|record-route):", re.I)
    out = [b"SIP/2.0 " + status]
    for ln in lines(req)[1:]:
        if keep.match(ln):
            if ln.lower().startswith(b"to:") and b";tag=" not in ln:
                ln += b";tag=" + tag
            out.append(ln)
    if contact:
        out.append(b"Contact: <" + contact + b">")
    out.append(b"Content-Length: 0")
    return b"\r\n".join(out) + b"\r\n\r\n"


SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"


async def test_call_through_the_proxy_forwards_unchanged_headers_byte_identical():
    uac, uas = Udp(), Udp()
    cfg = VspConfig(
        name="vsp",
        fqdn="proxy.vsp.example",
        listeners=(ListenerConfig("udp", "127.0.0.1", 0),),
        esrp=f"sip:127.0.0.1:{uas.port}",
    )
    vsp = VspProxy(cfg, log_keep=0)
    (addr,) = await vsp.start()
    proxy = ("127.0.0.1", addr.port)
    hp_uac, hp_uas = f"127.0.0.1:{uac.port}".encode(), f"127.0.0.1:{uas.port}".encode()
    try:
        uac_via = b"Via: SIP/2.0/UDP " + hp_uac + b";branch=z9hG4bKfp1;rport"
        kept = [
            b'From: "Fast Path" <sip:fp@' + hp_uac + b">;tag=f1",
            b"To: <sip:bob@" + hp_uas + b">",
            b"Call-ID: fp-1@x",
            b"CSeq: 1 INVITE",
            b"Contact: <sip:fp@" + hp_uac + b";transport=udp>",
            b"X-Odd:   spaced ,value",
            b"Content-Type: application/sdp",
        ]
        first = b"INVITE sip:bob@" + hp_uas + b" SIP/2.0"
        length = b"Content-Length: %d" % len(SDP)
        invite = b"\r\n".join([first, uac_via, b"Max-Forwards: 70", *kept, length, b"", SDP])
        uac.sock.sendto(invite, proxy)
        fwd, hop = await uas.recv(b"INVITE")
        trying, _ = await uac.recv(b"SIP/2.0 100")
        assert header_lines(trying, b"Via")[0].startswith(uac_via)
        # our Via on top (new branch, rport asked), the caller's stamped (§18.2.1, RFC 3581)
        vias = header_lines(fwd, b"Via")
        assert re.fullmatch(
            rb"Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK[0-9a-f]{10}\.[0-9a-f]{16};rport"
            % addr.port,
            vias[0],
        )
        assert vias[1] == uac_via.replace(b";rport", b";rport=%d;received=127.0.0.1" % uac.port)
        for ln in kept:  # unchanged headers: byte-identical values (leading LWS is not
            assert ln.replace(b":   ", b": ") in lines(fwd)  # part of a value, §7.3.1)
        assert header_lines(fwd, b"Max-Forwards") == [b"Max-Forwards: 69"]
        assert header_lines(fwd, b"Record-Route")
        assert fwd.endswith(SDP)
        msg = parse_message(fwd)
        assert isinstance(msg, Request) and msg.body == SDP

        uas.sock.sendto(answer(fwd, b"180 Ringing", b"t1"), hop)
        ringing, _ = await uac.recv(b"SIP/2.0 180")
        contact = b"sip:bob@" + hp_uas
        uas.sock.sendto(answer(fwd, b"200 OK", b"t1", contact), hop)
        ok, _ = await uac.recv(b"SIP/2.0 200")
        for resp in (ringing, ok):  # §16.7 item 3: our Via off, the rest as the callee sent it
            assert header_lines(resp, b"Via") == vias[1:]
            assert header_lines(resp, b"From") == [kept[0]]
        route = header_lines(ok, b"Record-Route")[0].split(b":", 1)[1].strip()

        for method, b in ((b"ACK", b"a"), (b"BYE", b"b")):
            req = b"\r\n".join(
                [
                    method + b" " + contact + b" SIP/2.0",
                    b"Via: SIP/2.0/UDP " + hp_uac + b";branch=z9hG4bKfp" + b + b";rport",
                    b"Route: " + route,
                    b"Max-Forwards: 70",
                    kept[0],
                    kept[1] + b";tag=t1",
                    kept[2],
                    b"CSeq: %d " % (1 if method == b"ACK" else 2) + method,
                    b"Content-Length: 0",
                    b"",
                    b"",
                ]
            )
            uac.sock.sendto(req, proxy)
            got, hop = await uas.recv(method)
            assert not header_lines(got, b"Route")  # our own Route consumed (§16.4)
            assert header_lines(got, b"To") == [kept[1] + b";tag=t1"]
        uas.sock.sendto(answer(got, b"200 OK", b"t1"), hop)
        done, _ = await uac.recv(b"SIP/2.0 200")
        assert b"CSeq: 2 BYE" in lines(done)
        assert vsp.errors == 0
    finally:
        await vsp.close()
        uac.sock.close()
        uas.sock.close()


async def test_send_datagram_needs_an_open_socket_and_keeps_the_sips_rule():
    layer = SipTransportLayer(element="t")
    peer = Udp()
    try:
        req = Request(
            "OPTIONS",
            parse_uri("sip:x@127.0.0.1"),
            [
                ("Via", "SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKsd;rport"),
                ("From", "<sip:a@x>;tag=1"),
                ("To", "<sip:x@127.0.0.1>"),
                ("Call-ID", "sd@x"),
                ("CSeq", "1 OPTIONS"),
            ],
        )
        dest = Address("udp", "127.0.0.1", peer.port)
        assert layer.send_datagram(req, dest) is False  # no UDP socket yet: use send()
        await layer.listen("udp", "127.0.0.1", 0)
        assert layer.send_datagram(req, dest) is True
        data, _ = await peer.recv(b"OPTIONS")
        assert data == req.to_bytes()
        assert layer.stats.messages_out == 1
        sips = req.copy()
        sips.uri = parse_uri("sips:x@127.0.0.1")
        with pytest.raises(InsecureTransportError):
            layer.send_datagram(sips, dest)
    finally:
        await layer.close()
        peer.sock.close()


def _options(n: int) -> Request:
    return Request(
        "OPTIONS",
        parse_uri("sip:x@127.0.0.1"),
        [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKheld{n};rport"),
            ("From", "<sip:a@x>;tag=1"),
            ("To", "<sip:x@127.0.0.1>"),
            ("Call-ID", f"held{n}@x"),
            ("CSeq", "1 OPTIONS"),
        ],
    )


async def test_the_datagrams_of_one_loop_turn_leave_together_at_its_end():
    """What one turn of the loop sends waits for the turn's end, then leaves in order (the
    peers it wakes wake once for all of it); a layer that closes first sends what it held."""
    layer = SipTransportLayer(element="t")
    peer = Udp()
    closed = False
    try:
        await layer.listen("udp", "127.0.0.1", 0)
        dest = Address("udp", "127.0.0.1", peer.port)
        reqs = [_options(n) for n in range(3)]
        for req in reqs:
            assert layer.send_datagram(req, dest) is True
        # a loopback send is in the peer's queue when sendto returns: none was sent yet
        with pytest.raises(BlockingIOError):
            peer.sock.recvfrom(65535)
        assert layer.stats.messages_out == 0
        got = [(await peer.recv(b"OPTIONS"))[0] for _ in reqs]
        assert got == [req.to_bytes() for req in reqs]
        assert layer.stats.messages_out == 3
        assert layer.send_datagram(reqs[0], dest) is True
        await layer.close()  # before the turn ends
        closed = True
        data, _ = await peer.recv(b"OPTIONS")
        assert data == reqs[0].to_bytes()
    finally:
        if not closed:
            await layer.close()
        peer.sock.close()


async def _read_until(sock: socket.socket, want: bytes, timeout: float = 2.0) -> bytes:
    """What a TCP peer reads until `want` is in it, or the connection ends (bounded)."""
    loop = asyncio.get_running_loop()
    got, end = b"", loop.time() + timeout
    while want not in got and loop.time() < end:
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            await asyncio.sleep(0.002)
            continue
        if not chunk:
            break
        got += chunk
    return got


async def test_the_writes_of_one_loop_turn_on_a_connection_leave_in_one_write():
    """What one turn writes on a TCP connection waits for the turn's end, then leaves in
    order; closing the layer writes what it held before the connection's FIN."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    dest = Address("tcp", "127.0.0.1", server.getsockname()[1])
    layer = SipTransportLayer(element="t")
    peer: socket.socket | None = None
    closed = False
    try:
        reqs = [_options(n) for n in range(4)]
        await layer.send(reqs[0], dest)  # opens the connection
        peer, _ = server.accept()
        peer.setblocking(False)
        first = await _read_until(peer, b"\r\n\r\n")
        assert first == reqs[0].to_bytes()
        for req in reqs[1:3]:
            assert layer.send_stream(req, dest) is True
        with pytest.raises(BlockingIOError):  # a loopback write would be readable now
            peer.recv(65536)
        both = await _read_until(peer, b"held2@x")
        assert both == reqs[1].to_bytes() + reqs[2].to_bytes()
        assert layer.send_stream(reqs[3], dest) is True
        await layer.close()  # before the turn ends
        closed = True
        rest = await _read_until(peer, b"never")
        assert rest == reqs[3].to_bytes()  # then the connection ended
    finally:
        if not closed:
            await layer.close()
        if peer is not None:
            peer.close()
        server.close()


def test_branches_are_rfc3261_and_unique():
    seen = {new_branch_with() for _ in range(10_000)}
    assert len(seen) == 10_000
    assert all(re.fullmatch(r"z9hG4bK[0-9a-f]{16}", b) for b in seen)
    assert re.fullmatch(r"z9hG4bKabc\.[0-9a-f]{16}", new_branch_with("abc"))


def test_gc_threshold_is_raised_never_lowered():
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        raise_gc_threshold(5000)
        assert gc.get_threshold() == (5000, 10, 10)
        raise_gc_threshold(1000)
        assert gc.get_threshold() == (5000, 10, 10)
        gc.set_threshold(0, 10, 10)  # 0 = collector off: left off
        raise_gc_threshold(5000)
        assert gc.get_threshold()[0] == 0
    finally:
        gc.set_threshold(*before)


async def test_gc_freezer_freezes_until_stopped():
    from ng911.node.memory import GcFreezer

    freezer = GcFreezer()
    try:
        gc.unfreeze()
        freezer.every(0.01)
        loop = asyncio.get_running_loop()
        end = loop.time() + 2.0
        while gc.get_freeze_count() == 0 and loop.time() < end:  # bounded
            await asyncio.sleep(0.01)
        assert gc.get_freeze_count() > 0
        freezer.every(0)
        gc.unfreeze()
        await asyncio.sleep(0.05)
        assert gc.get_freeze_count() == 0  # stopped
        freezer.every(0.01)
    finally:
        freezer.stop()  # what `ng911 run` does when its element closes
        gc.unfreeze()
    await asyncio.sleep(0.05)
    assert gc.get_freeze_count() == 0


def test_is_own_follows_listeners_added_after_a_first_answer():
    """is_own keeps its names and ports between calls: a listener bound later (start()
    appends one per configured listener) is still ours, and nothing else becomes ours."""
    vsp = VspProxy(VspConfig(name="vsp", fqdn="proxy.vsp.example", esrp="sip:192.0.2.9"))
    assert vsp.is_own(parse_uri("sip:proxy.vsp.example"))
    assert not vsp.is_own(parse_uri("sip:127.0.0.1:5070;lr"))
    vsp.addresses.append(Address("udp", "127.0.0.1", 5070))
    assert vsp.is_own(parse_uri("sip:127.0.0.1:5070;lr"))
    assert vsp.is_own(parse_uri("sip:PROXY.vsp.example:5070"))
    assert not vsp.is_own(parse_uri("sip:127.0.0.1:5071;lr"))
    assert not vsp.is_own(parse_uri("sip:192.0.2.9"))
    assert not vsp.is_own(parse_uri("tel:+12125550123"))
