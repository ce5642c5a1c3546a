import asyncio
import json
import logging
import socket

from nethelpers import options

from ng911.net import MessageEvent
from ng911.net.udp import kernel_drops
from ng911.sip.message import Request, Response


async def test_udp_request_and_response(make_element):
    server = make_element("server")
    client = make_element("client", answer=False)
    addr = await server.layer.listen("udp", "127.0.0.1", 0)
    caddr = await client.layer.listen("udp", "127.0.0.1", 0)
    req = options()
    await client.layer.send(req, addr)
    got, src = await server.next()
    assert isinstance(got, Request) and got.call_id == req.call_id
    assert src.address.transport == "udp" and src.address.port == caddr.port
    assert src.connection_id is None and src.peer_identities == frozenset()
    # RFC 3261 §18.2.1 / RFC 3581: received and rport stamped on the top Via
    assert got.top_via.received == "127.0.0.1" and got.top_via.rport == str(caddr.port)
    resp, _ = await client.next()
    assert isinstance(resp, Response) and resp.status == 200
    out = next(e for e in client.of(MessageEvent) if e.direction == "out")
    assert out.transport == "udp" and out.wire_bytes == out.sip_bytes == len(req.to_bytes())
    assert out.remote == ("127.0.0.1", addr.port) and out.call_id == req.call_id
    assert out.first_line.startswith("OPTIONS sip:esinet.example")
    inn = next(e for e in server.of(MessageEvent) if e.direction == "in")
    assert inn.sip_bytes == len(inn.data) and inn.mono > 0


async def test_udp_asks_large_receive_buffer_and_counts_drops(make_element):
    el = make_element("server")
    await el.layer.listen("udp", "127.0.0.1", 0)
    ep = el.layer._listeners[0].udp
    assert ep.rcvbuf > 208 * 1024  # asked for 4 MB; the kernel may cap it at rmem_max
    assert el.layer.udp_kernel_drops() == 0
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    assert kernel_drops(s) in (0, None)
    s.close()


async def test_udp_garbage_request_answered_400_and_logged(make_element, caplog):
    server = make_element("server")
    addr = await server.layer.listen("udp", "127.0.0.1", 0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(3)
    bad = (
        b"OPTIONS sip:esinet.example SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n"
        b"Max-Forwards: lots\r\nContent-Length: 0\r\n\r\n"
    )
    with caplog.at_level(logging.WARNING, logger="ng911.net"):
        sock.setblocking(False)
        sock.sendto(bad, ("127.0.0.1", addr.port))  # a UDP send does not wait (any loop)
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 65535), 3)
    sock.close()
    assert data.startswith(b"SIP/2.0 400")
    line = json.loads(
        next(r for r in caplog.records if "sip_parse_error" in r.getMessage()).getMessage()
    )
    assert (
        line["element"] == "server" and line["status"] == 400 and line["action"] == "answered 400"
    )
    assert server.layer.stats.parse_errors == 1 and server.inbox.empty()


async def test_udp_garbage_response_and_noise_dropped(make_element, caplog):
    server = make_element("server")
    addr = await server.layer.listen("udp", "127.0.0.1", 0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with caplog.at_level(logging.WARNING, logger="ng911.net"):
        sock.sendto(b"SIP/2.0 200 OK\r\nCSeq: banana\r\n\r\n", ("127.0.0.1", addr.port))
        sock.sendto(b"\x00\xff\xfe garbage", ("127.0.0.1", addr.port))
        sock.sendto(b"\r\n\r\n", ("127.0.0.1", addr.port))  # keep-alive: silently ignored
        for _ in range(100):
            if server.layer.stats.parse_errors >= 2:
                break
            await asyncio.sleep(0.01)
    sock.close()
    assert server.layer.stats.parse_errors == 2 and server.inbox.empty()
    assert all(
        '"action": "dropped"' in r.getMessage()
        for r in caplog.records
        if "sip_parse_error" in r.getMessage()
    )


async def test_udp_send_without_listener_uses_ephemeral_socket(make_element):
    server = make_element("server")
    addr = await server.layer.listen("udp", "127.0.0.1", 0)
    client = make_element("client", answer=False)
    await client.layer.send(options(), addr)
    _, src = await server.next()
    assert src.address.port != addr.port
    resp, _ = await client.next()
    assert resp.status == 200


async def test_kernel_drops_counted_when_receive_buffer_overflows(make_element):
    import time

    el = make_element("server", answer=False, udp_rcvbuf=4096)
    addr = await el.layer.listen("udp", "127.0.0.1", 0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    data = options().to_bytes()
    # the event loop is blocked while we flood: the kernel buffer (a few KB) overflows
    for _ in range(300):
        sock.sendto(data, ("127.0.0.1", addr.port))
    time.sleep(0.05)
    sock.close()
    assert el.layer.udp_kernel_drops() > 0


async def test_udp_backlog_counts_a_queue_that_never_empties_not_a_drained_burst(make_element):
    """Overload control's UDP signal. A busy proxy wakes to dozens of datagrams each time and
    drains them all: that is no backlog (it made a proxy at 3/4 of a core shed ~9 % of the
    calls it carried, 205 of 2,310 at 750 calls/s). A queue that still holds datagrams after
    every wake-up is one, whatever the loop's own lag says."""
    import threading
    import time

    el = make_element("server", answer=False)
    addr = await el.layer.listen("udp", "127.0.0.1", 0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    data = options().to_bytes()
    got = 0

    async def received(n: int) -> None:
        nonlocal got
        for _ in range(300):  # bounded: 3 s
            while not el.inbox.empty():
                el.inbox.get_nowait()
                got += 1
            if got >= n:
                return
            await asyncio.sleep(0.01)

    # bursts of 50 (over the target of 32), each queued while the loop is busy, then drained
    for burst in range(1, 6):
        for _ in range(50):
            sock.sendto(data, ("127.0.0.1", addr.port))
        await received(50 * burst)
        assert el.layer.udp_backlog() == (0, 0.0), burst

    # the element is slower than its sender: the queue never empties (the sender is a thread
    # that sends ~4 datagrams per ms while each costs the element ~1 ms)
    slow = el.layer.on_message

    def handle(msg, src):  # type: ignore[no-untyped-def]
        time.sleep(0.001)
        slow(msg, src)

    el.layer.on_message = handle
    stop = threading.Event()

    def flood() -> None:
        end = time.monotonic() + 1.5
        while not stop.is_set() and time.monotonic() < end:
            for _ in range(4):
                sock.sendto(data, ("127.0.0.1", addr.port))
            time.sleep(0.001)

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    seen = []
    try:
        for _ in range(40):  # bounded: ~1 s of 25 ms windows
            await asyncio.sleep(0.025)
            seen.append(el.layer.udp_backlog())
    finally:
        stop.set()
        sender.join(5)
        sock.close()
    assert max(n for n, _ in seen) > 32, seen
    # and how long that queue made a datagram wait, from the kernel's arrival stamp: the
    # sender outruns the element 4 to 1, so the head of the queue ages by ~3/4 s a second
    waits = [w for n, w in seen if n]
    assert waits and None not in waits, seen
    assert max(waits) > 0.05, seen


def test_queue_head_wait_reads_the_kernels_arrival_stamp_and_leaves_the_datagram():
    """The UDP backlog signal's clock. An empty queue reads 0.0, not "unknown": a read that
    stops at its cap may have taken the last datagram, and an unknown wait falls back to
    counting, which would call those 95 datagrams a backlog."""
    import time

    from ng911.net.udp import make_udp_socket, queue_head_wait

    sock = make_udp_socket("127.0.0.1", 0, 1 << 20)
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert queue_head_wait(sock) == 0.0
        out.sendto(b"OPTIONS", sock.getsockname())
        time.sleep(0.03)
        wait = queue_head_wait(sock)
        assert wait is not None and 0.025 <= wait < 5.0, wait
        assert sock.recv(100) == b"OPTIONS"  # peeked, not taken
        assert queue_head_wait(sock) == 0.0
    finally:
        sock.close()
        out.close()


async def test_the_stamped_via_is_the_one_written_from_scratch(make_element):
    """RFC 3581 §4: rport filled in and received added. The usual Via (a bare rport last) is
    stamped on its own text; every other form is written again from its parsed value. Either
    way the parsed top Via the element sees is what its text says, and the text keeps the
    Via as sent (the branch first, the parameters in order)."""
    from ng911.sip.headers import parse_via

    server = make_element("server", answer=False)
    client = make_element("client", answer=False)
    addr = await server.layer.listen("udp", "127.0.0.1", 0)
    caddr = await client.layer.listen("udp", "127.0.0.1", 0)
    port = str(caddr.port)
    cases = {
        ";rport": f";rport={port};received=127.0.0.1",
        ";rport;x=1": f";rport={port};x=1;received=127.0.0.1",
        ";rport ;x=1": f";rport={port};x=1;received=127.0.0.1",
        ";received=10.9.9.9;rport": f";received=127.0.0.1;rport={port}",
        ";x=1": ";x=1;received=127.0.0.1",
        # two rports: the first is the one Via.rport reads, so it is the one filled in
        ";rport;x=1;rport": f";rport={port};x=1;rport;received=127.0.0.1",
    }
    for params, stamped in cases.items():
        req = options(via_params=params)
        await client.layer.send(req, addr)
        got, _src = await server.next()
        text = got.headers.get("Via")
        assert text is not None and text.endswith(stamped), (params, text)
        assert got.top_via == parse_via(text) and got.top_via.branch == req.top_via.branch
        assert got.top_via.rport == (port if "rport" in params else None), params
