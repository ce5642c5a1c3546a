"""Issue 11, item 2: idle and half-open connections must not lock an element out.

One host holding 1,100 idle plain-TCP connections made the ESRP refuse its VSP's mutual-TLS
connection (TCP and TLS shared one connection table); nothing closed a connection that never
sent a byte or never finished its TLS handshake. Real sockets on loopback, real TLS with the
test PKI, a real element (`SipElement` answers OPTIONS with 200).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time

import pytest
from netlimits_helpers import (
    Peer,
    close_all,
    closed_by_peer,
    esrp_config,
    open_idle,
    options_bytes,
    raise_nofile,
    start_element,
)

from ng911.elements.config import ListenerConfig
from ng911.pki.testpki import TestPki, build_test_pki

IDLE = 1100


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return build_test_pki(tmp_path_factory.mktemp("idlepki"))


@pytest.mark.parametrize(
    "tcp",
    [
        ListenerConfig("tcp"),  # the defaults: the per-source cap stops the host early
        # the per-source cap lifted: the TCP listener fills up, and TLS must not care
        ListenerConfig("tcp", max_connections=1024, max_per_source=5000),
    ],
    ids=["defaults", "tcp-listener-full"],
)
async def test_idle_tcp_flood_does_not_lock_out_mutual_tls(pki, tcp, caplog):
    raise_nofile(2 * IDLE + 200)  # both ends of every connection live in this process
    el, tcp_addr, tls_addr = await start_element(
        esrp_config(pki, tcp=tcp, first_message_timeout=60.0)
    )
    vsp = Peer(pki.client_context("vsp-proxy"))
    socks: list[socket.socket] = []
    caplog.set_level(logging.WARNING, logger="ng911.net")
    try:
        socks = await open_idle(tcp_addr.port, IDLE)
        stats = el.transport.stats
        want = IDLE - min(tcp.max_connections, tcp.max_per_source)
        for _ in range(200):  # let the element accept (or refuse) every one
            if stats.connections_refused >= want:
                break
            await asyncio.sleep(0.05)
        assert stats.connections_refused == want
        # each refusal counted, but the log gets a few lines a second, not one per connection
        lines = [r for r in caplog.records if "connection_refused" in r.getMessage()]
        assert 0 < len(lines) < 100
        assert '"listener": "tcp:127.0.0.1:' in lines[0].getMessage()
        # the real VSP still gets in over mutual TLS and is answered
        resp = await vsp.options(tls_addr)
        assert resp.status == 200
    finally:
        close_all(socks)
        await vsp.close()
        await el.close()


async def test_silent_and_half_open_connections_are_closed_in_seconds(pki):
    el, tcp_addr, tls_addr = await start_element(
        esrp_config(pki, handshake_timeout=1.0, first_message_timeout=2.0)
    )
    socks: list[socket.socket] = []
    try:
        t0 = time.monotonic()
        silent_tcp = await open_idle(tcp_addr.port, 5)  # never a byte
        silent_tls = await open_idle(tls_addr.port, 5)  # no ClientHello
        half = await open_idle(tls_addr.port, 3)  # a ClientHello cut short
        for s in half:
            s.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        socks = silent_tcp + silent_tls + half
        # a TLS client that finishes its handshake and then says nothing
        ctx = pki.client_context("vsp-proxy")
        ctx.check_hostname = False
        done_hs = []
        for _ in range(3):
            r, w = await asyncio.open_connection("127.0.0.1", tls_addr.port, ssl=ctx)
            done_hs.append((r, w))
        results = await asyncio.gather(*(closed_by_peer(s, 15.0) for s in socks))
        assert all(results), results
        for r, _w in done_hs:
            try:
                data = await asyncio.wait_for(r.read(), 15.0)
            except (ConnectionResetError, ssl.SSLError):
                data = b""
            assert data == b""
        elapsed = time.monotonic() - t0
        assert elapsed < 12.0, f"took {elapsed:.1f} s to reclaim the connections"
        stats = el.transport.stats
        assert stats.handshake_timeouts >= 8
        assert stats.first_message_timeouts >= 8
        assert el.transport.connections() == []
        for _r, w in done_hs:
            w.close()
    finally:
        close_all(socks)
        await el.close()


async def test_a_used_connection_outlives_the_first_message_timeout(pki):
    """A peer that sent a request keeps its connection (until the idle timeout)."""
    el, tcp_addr, _tls = await start_element(
        esrp_config(pki, handshake_timeout=0.5, first_message_timeout=1.0)
    )
    try:
        r, w = await asyncio.open_connection("127.0.0.1", tcp_addr.port)
        w.write(options_bytes())
        first = await asyncio.wait_for(r.readuntil(b"\r\n"), 5)
        assert b"200" in first
        await asyncio.sleep(2.5)
        assert len(el.transport.connections()) == 1
        w.close()
    finally:
        await el.close()


async def test_per_source_cap_refuses_the_next_connection_from_that_address(pki):
    el, tcp_addr, _tls = await start_element(
        esrp_config(pki, tcp=ListenerConfig("tcp", max_per_source=3))
    )
    socks: list[socket.socket] = []
    try:
        socks = await open_idle(tcp_addr.port, 3)
        await asyncio.sleep(0.2)
        extra = await open_idle(tcp_addr.port, 1)
        socks += extra
        assert await closed_by_peer(extra[0], 5.0)
        assert el.transport.stats.source_limit_refused == 1
        # the first three are still open ...
        assert len(el.transport.connections()) == 3
        # ... and another address gets in and is answered
        loop = asyncio.get_running_loop()
        other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        other.setblocking(False)
        other.bind(("127.0.0.2", 0))
        socks.append(other)
        await asyncio.wait_for(loop.sock_connect(other, ("127.0.0.1", tcp_addr.port)), 5)
        await loop.sock_sendall(other, options_bytes("127.0.0.2"))
        answer = await asyncio.wait_for(loop.sock_recv(other, 65536), 5)
        assert answer.startswith(b"SIP/2.0 200")
    finally:
        close_all(socks)
        await el.close()


async def test_a_message_trickled_byte_by_byte_is_cut_off(pki):
    """After a first good request, a peer that keeps a connection busy by trickling one
    message a byte at a time (idle timer always fresh) is closed once the message is older
    than the first-message timeout."""
    el, tcp_addr, _tls = await start_element(
        esrp_config(pki, handshake_timeout=0.5, first_message_timeout=1.5)
    )
    try:
        r, w = await asyncio.open_connection("127.0.0.1", tcp_addr.port)
        w.write(options_bytes())
        answer = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)  # no body
        assert answer.startswith(b"SIP/2.0 200")
        t0 = time.monotonic()
        slow = options_bytes()
        closed = False
        for i in range(len(slow)):  # one byte every 0.2 s: the message would take minutes
            try:
                w.write(slow[i : i + 1])
                await w.drain()
            except (ConnectionError, OSError):
                closed = True
                break
            if r.at_eof() or w.is_closing():
                closed = True
                break
            try:
                data = await asyncio.wait_for(r.read(1), 0.2)
                if data == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
            except ConnectionError:
                closed = True
                break
            if time.monotonic() - t0 > 15:
                break
        assert closed, "a trickling peer kept its connection"
        assert time.monotonic() - t0 < 10
        assert el.transport.stats.message_timeouts == 1
        w.close()
    finally:
        await el.close()
