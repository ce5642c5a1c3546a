"""TCP framing, parse errors, cuts mid-message, connection reuse and limits."""

import asyncio
import json
import logging

import pytest
from nethelpers import options

from ng911.net import (
    Address,
    ConnectionEvent,
    ConnectionLimit,
    ListenerLimits,
    MessageEvent,
    MessageTooLarge,
)
from ng911.sip.message import Request, Response


async def _raw_client(port: int):
    return await asyncio.open_connection("127.0.0.1", port)


async def test_tcp_request_and_response(make_element):
    server = make_element("server")
    addr = await server.layer.listen("tcp", "127.0.0.1", 0)
    client = make_element("client", answer=False)
    req = options(transport="TCP")
    await client.layer.send(req, addr)
    got, src = await server.next()
    assert isinstance(got, Request) and got.call_id == req.call_id
    assert src.address.transport == "tcp" and src.connection_id is not None
    resp, csrc = await client.next()
    assert isinstance(resp, Response) and resp.status == 200
    assert csrc.connection_id is not None
    ev = next(e for e in client.of(MessageEvent) if e.direction == "in")
    assert ev.transport == "tcp" and ev.wire_bytes == ev.sip_bytes > 0
    opened = [e for e in server.of(ConnectionEvent) if e.what == "open"]
    assert len(opened) == 1


async def test_tcp_connection_reused_both_ways(make_element):
    server = make_element("server")
    addr = await server.layer.listen("tcp", "127.0.0.1", 0)
    client = make_element("client", answer=True)
    await client.layer.send(options(transport="TCP"), addr)
    await server.next()
    await client.next()
    await client.layer.send(options(transport="TCP"), addr)
    _, src2 = await server.next()
    await client.next()
    assert len(client.layer.connections()) == 1 and len(server.layer.connections()) == 1
    # the server sends a request back to the client over the connection the client opened
    await server.layer.send(options(transport="TCP"), src2.address)
    got, back = await client.next()
    assert isinstance(got, Request) and back.connection_id == client.layer.connections()[0]["id"]
    assert len(client.layer.connections()) == 1


async def test_tcp_alias_reuse_rfc5923(make_element):
    server = make_element("server")
    addr = await server.layer.listen("tcp", "127.0.0.1", 0)
    client = make_element("client")
    await client.layer.send(options(transport="TCP", via_params=";alias"), addr)
    await server.next()
    # the Via sent-by 192.0.2.1:5060 is now an alias of that connection: no new connect
    await server.layer.send(options(transport="TCP"), Address("tcp", "192.0.2.1", 5060))
    got, _ = await client.next()
    assert isinstance(got, (Request, Response))


async def test_peer_closing_mid_message_loses_nothing_complete(make_element, caplog):
    server = make_element("server", answer=False)
    addr = await server.layer.listen("tcp", "127.0.0.1", 0)
    _r, w = await _raw_client(addr.port)
    m1, m2 = options(transport="TCP"), options(transport="TCP")
    one, two, third = m1.to_bytes(), m2.to_bytes(), options(transport="TCP").to_bytes()
    with caplog.at_level(logging.INFO, logger="ng911.net"):
        # two complete messages and half of a third, split at odd places, then the cut
        data = one + two + third[: len(third) // 2]
        for i in range(0, len(data), 97):
            w.write(data[i : i + 97])
            await w.drain()
        w.close()
        a, _ = await server.next()
        b, _ = await server.next()
        for _ in range(100):
            if not server.layer.connections():
                break
            await asyncio.sleep(0.01)
    assert (a.call_id, b.call_id) == (m1.call_id, m2.call_id) and server.inbox.empty()
    assert any("connection_closed_mid_message" in r.getMessage() for r in caplog.records)


async def test_stream_garbage_answers_400_then_closes(make_element, caplog):
    server = make_element("server", answer=False)
    addr = await server.layer.listen("tcp", "127.0.0.1", 0)
    r, w = await _raw_client(addr.port)
    gm = options(transport="TCP")
    good = gm.to_bytes()
    # a request without Content-Length on a stream is a framing error (RFC 3261 §18.3)
    bad = (
        b"OPTIONS sip:esinet.example SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKq\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n"
    )
    with caplog.at_level(logging.WARNING, logger="ng911.net"):
        w.write(good + bad)
        await w.drain()
        msg, _ = await server.next()
        answer = await asyncio.wait_for(r.read(65535), 3)
        rest = await asyncio.wait_for(r.read(), 3)  # EOF: the server closed
    w.close()
    assert msg.call_id == gm.call_id
    assert answer.startswith(b"SIP/2.0 400") and rest == b""
    rec = next(r for r in caplog.records if "sip_parse_error" in r.getMessage())
    line = json.loads(rec.getMessage())
    assert line["action"] == "close connection" and line["transport"] == "tcp"


async def test_stream_pure_garbage_closes_without_answer(make_element):
    server = make_element("server", answer=False)
    addr = await server.layer.listen("tcp", "127.0.0.1", 0)
    r, w = await _raw_client(addr.port)
    w.write(b"\x16\x03\x01 this is not SIP\r\n\r\n")
    await w.drain()
    assert await asyncio.wait_for(r.read(), 3) == b""
    w.close()
    assert server.layer.stats.parse_errors == 1


async def test_message_size_limit(make_element):
    server = make_element("server", answer=False, max_message_size=2000)
    addr = await server.layer.listen("tcp", "127.0.0.1", 0)
    with pytest.raises(MessageTooLarge):
        await server.layer.send(options(body=b"x" * 3000), addr)
    client = make_element("client", answer=False)
    await client.layer.send(options(transport="TCP", body=b"x" * 3000), addr)
    resp, _ = await client.next()  # the server answers 413 and closes
    assert resp.status == 413


async def test_connection_limit(make_element, caplog):
    server = make_element("server", answer=False)
    addr = await server.layer.listen(
        "tcp", "127.0.0.1", 0, limits=ListenerLimits(max_connections=1)
    )
    _r1, w1 = await _raw_client(addr.port)
    await asyncio.sleep(0.05)
    with caplog.at_level(logging.WARNING, logger="ng911.net"):
        r2, w2 = await _raw_client(addr.port)
        assert await asyncio.wait_for(r2.read(), 3) == b""
    assert server.layer.stats.connections_refused == 1
    assert any("connection_refused" in r.getMessage() for r in caplog.records)
    client = make_element("client", max_connections=0)
    with pytest.raises(ConnectionLimit):
        await client.layer.send(options(), Address("tcp", "127.0.0.1", addr.port))
    w1.close()
    w2.close()


async def test_idle_connections_are_closed(make_element):
    server = make_element("server", idle_timeout=0.2)
    addr = await server.layer.listen("tcp", "127.0.0.1", 0)
    client = make_element("client", answer=False, idle_timeout=0)
    await client.layer.send(options(transport="TCP"), addr)
    await client.next()
    for _ in range(100):
        if not client.layer.connections():
            break
        await asyncio.sleep(0.02)
    assert server.layer.stats.idle_closed == 1 and client.layer.connections() == []


async def test_connect_refused_is_transport_error(make_element, caplog):
    from ng911.net import TransportError

    client = make_element("client")
    server = make_element("server")
    addr = await server.layer.listen("tcp", "127.0.0.1", 0)
    await server.layer.close()
    with caplog.at_level(logging.WARNING, logger="ng911.net"), pytest.raises(TransportError):
        await client.layer.send(options(), addr)
    assert any("connect_failed" in r.getMessage() for r in caplog.records)


async def test_a_connection_leaves_from_the_address_its_layer_listens_on(make_element):
    """Each testbed host has its own loopback address; a connection it opens must come from
    that address, not 127.0.0.1 (the kernel's choice), so that peers and the trace tell
    hosts apart. A layer listening only on a wildcard address leaves it to the kernel."""
    server = make_element("server")
    addr = await server.layer.listen("tcp", "127.0.0.3", 0)
    client = make_element("client", answer=False)
    await client.layer.listen("tcp", "127.0.0.2", 0)
    await client.layer.send(options(transport="TCP"), addr)
    _, src = await server.next()
    assert src.address.host == "127.0.0.2"
    await client.next()
    wild = make_element("wild", answer=False)
    await wild.layer.listen("tcp", "0.0.0.0", 0)
    assert wild.layer.source_host(addr) is None
    assert client.layer.source_host(Address("tcp", "192.0.2.7", 5060)) is None  # not loopback
    assert client.layer.source_host(Address("tcp", "::1", 5060)) is None  # other family


async def test_send_stream_writes_at_once_on_an_open_connection_and_defers_otherwise(
    make_element,
):
    """`send_stream` is the element's coroutine-free path: it writes only on a connection
    that is open and below its high-water mark, and says False otherwise, so that `send`
    (which connects, or waits for the buffer to drain) keeps the cases that wait."""
    server = make_element("server", answer=False)
    addr = await server.layer.listen("tcp", "127.0.0.1", 0)
    client = make_element("client", answer=False)
    first = options(transport="TCP")
    assert not client.layer.send_stream(first, addr)  # no connection yet: nothing sent
    await client.layer.send(first, addr)  # connects
    await server.next()
    second = options(transport="TCP")
    assert client.layer.send_stream(second, addr)  # written now, no await
    got, _ = await server.next()
    assert got.call_id == second.call_id
    # a connection over its high-water mark is left to `send`, which waits for it to drain
    conn = client.layer._find_connection(second, addr, None, None)
    assert conn is not None and conn.writable
    conn.pause_writing()
    try:
        assert not conn.writable
        assert not client.layer.send_stream(options(transport="TCP"), addr)
    finally:
        conn.resume_writing()
    assert client.layer.send_stream(options(transport="TCP"), addr)
    await server.next()
