"""TLS over loopback with real certificates: mutual auth, refusals, identities, reuse,
resumption, key log, and TLS record byte accounting."""

import asyncio
import datetime as dt
import json
import logging

import pytest
from nethelpers import options

from ng911.net import Address, HandshakeEvent, IdentityMismatch, MessageEvent, TlsError
from ng911.pki.profile import TlsProfiles
from ng911.pki.tls import client_context
from ng911.sip.message import Request, Response


def _refusals(caplog, element):
    out = []
    for r in caplog.records:
        if "tls_refused" in r.getMessage() or "tls_error" in r.getMessage():
            line = json.loads(r.getMessage())
            if line["element"] == element:
                out.append(line)
    return out


async def _tls_pair(
    make_element,
    pki,
    *,
    server_cert="esrp",
    require=True,
    client_cert="vsp-proxy",
    server_trust=None,
    client_trust=None,
    keylog=None,
    **ckw,
):
    server = make_element("esrp")
    addr = await server.layer.listen(
        "tls",
        "127.0.0.1",
        0,
        tls=pki.server_context(server_cert, trust=server_trust, require_client_cert=require),
    )
    client = make_element(
        "vsp",
        answer=False,
        client_tls=pki.client_context(client_cert, trust=client_trust, keylog=keylog),
        **ckw,
    )
    return server, client, addr


async def test_mutual_tls_request_response_identities_and_bytes(make_element, pki):
    server, client, addr = await _tls_pair(make_element, pki)
    req = options("sips:esinet.example", transport="TLS")
    await client.layer.send(req, addr, server_name="esinet.example")
    got, src = await server.next()
    assert isinstance(got, Request) and got.call_id == req.call_id
    assert src.secure and src.peer_identities == frozenset({"vsp.example"})
    resp, csrc = await client.next()
    assert isinstance(resp, Response) and resp.status == 200
    assert csrc.peer_identities == frozenset({"esinet.example"})
    # handshake events on both sides
    hc = client.of(HandshakeEvent)[0]
    hs = server.of(HandshakeEvent)[0]
    assert hc.ok and hs.ok and hc.role == "client" and hs.role == "server"
    assert hc.version == "TLSv1.3" and not hc.resumed and hc.duration > 0
    assert hc.peer_identities == ("esinet.example",) and hs.peer_identities == ("vsp.example",)
    assert hc.bytes_out > 0 and hc.bytes_in > 500  # certificate chain
    # TLS 1.3 record = 5-byte header + inner content type + 16-byte AEAD tag
    out = next(e for e in client.of(MessageEvent) if e.direction == "out")
    inn = next(e for e in server.of(MessageEvent) if e.direction == "in")
    assert out.transport == "tls" and out.wire_bytes - out.sip_bytes == 22
    assert inn.sip_bytes == out.sip_bytes and inn.wire_bytes == out.wire_bytes


async def test_tls12_also_works(make_element, pki):
    _server, client, addr = await _tls_pair(make_element, pki)
    c = pki.cert("vsp-proxy")
    client.layer.client_tls = client_context(
        pki.ca_files(), cert=c.chain_path, key=c.key_path, max_version="1.2"
    )
    await client.layer.send(options(transport="TLS"), addr, server_name="esinet.example")
    assert (await client.next())[0].status == 200
    assert client.of(HandshakeEvent)[0].version == "TLSv1.2"


async def test_client_refuses_server_from_wrong_ca(make_element, pki, caplog):
    server, client, addr = await _tls_pair(make_element, pki, client_trust=["vsp"])
    with caplog.at_level(logging.WARNING, logger="ng911.net"), pytest.raises(TlsError) as ei:
        await client.layer.send(options(transport="TLS"), addr, server_name="esinet.example")
    # the server sends its chain (leaf + its root), a root we do not trust
    assert "self-signed certificate in certificate chain" in str(ei.value)
    (line,) = _refusals(caplog, "vsp")
    assert (
        line["peer"] == str(addr)
        and line["reason"] == "self-signed certificate in certificate chain"
    )
    assert not client.of(HandshakeEvent)[0].ok and server.inbox.empty()


async def test_server_refuses_client_from_wrong_ca(make_element, pki, caplog):
    server, client, addr = await _tls_pair(make_element, pki, server_trust=["psap"])
    with caplog.at_level(logging.WARNING, logger="ng911.net"):
        try:
            # TLS 1.3: the client finishes first, then gets the server's alert
            await client.layer.send(options(transport="TLS"), addr, server_name="esinet.example")
        except TlsError:
            pass
        for _ in range(100):
            if _refusals(caplog, "esrp"):
                break
            await asyncio.sleep(0.01)
    (line,) = _refusals(caplog, "esrp")
    assert line["role"] == "server"
    assert line["reason"] == "self-signed certificate in certificate chain"
    assert server.inbox.empty()


async def test_server_requires_client_certificate(make_element, pki, caplog):
    server, client, addr = await _tls_pair(make_element, pki, client_cert=None)
    with caplog.at_level(logging.WARNING, logger="ng911.net"):
        try:
            await client.layer.send(options(transport="TLS"), addr, server_name="esinet.example")
        except TlsError:
            pass
        for _ in range(100):
            if _refusals(caplog, "esrp"):
                break
            await asyncio.sleep(0.01)
    (line,) = _refusals(caplog, "esrp")
    assert "certificate" in line["reason"].lower()
    assert server.inbox.empty()


async def test_user_agent_without_certificate_allowed_when_optional(make_element, pki):
    server, client, addr = await _tls_pair(make_element, pki, client_cert=None, require=False)
    await client.layer.send(options(transport="TLS"), addr, server_name="esinet.example")
    _, src = await server.next()
    assert src.secure and src.peer_identities == frozenset()
    assert (await client.next())[0].status == 200


async def test_expired_server_certificate_refused(make_element, pki, caplog):
    pki.issue(
        "esrp-expired",
        ca="esinet",
        dns=["esrp.esinet.example"],
        sip_domains=["esinet.example"],
        not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=30),
        days=1,
    )
    _server, client, addr = await _tls_pair(make_element, pki, server_cert="esrp-expired")
    with caplog.at_level(logging.WARNING, logger="ng911.net"), pytest.raises(TlsError):
        await client.layer.send(options(transport="TLS"), addr, server_name="esinet.example")
    (line,) = _refusals(caplog, "vsp")
    assert line["reason"] == "certificate has expired"


async def test_name_mismatch_refused(make_element, pki, caplog):
    server, client, addr = await _tls_pair(make_element, pki)
    with caplog.at_level(logging.WARNING, logger="ng911.net"), pytest.raises(IdentityMismatch):
        await client.layer.send(options(transport="TLS"), addr, server_name="psap.example")
    (line,) = _refusals(caplog, "vsp")
    assert "identity mismatch" in line["reason"] and line["expected"] == "psap.example"
    assert "esinet.example" in line["reason"]
    assert server.inbox.empty() and client.layer.connections() == []


async def test_profiles_per_peer_domain(make_element, pki):
    server = make_element("esrp")
    addr = await server.layer.listen("tls", "127.0.0.1", 0, tls=pki.server_context("esrp"))
    profiles = TlsProfiles.of(
        [
            pki.profile("vsp-proxy", domain="esinet.example", trust=["esinet"]),
            pki.profile("vsp-proxy", domain="*", trust=["psap"]),
        ]
    )
    client = make_element("vsp", answer=False, client_tls=profiles)
    await client.layer.send(options(transport="TLS"), addr, server_name="esinet.example")
    assert (await client.next())[0].status == 200
    # same server reached under another domain name: the default profile trusts only the
    # PSAP CA, so the chain check fails before the identity check
    other = make_element("vsp2", answer=False, client_tls=profiles)
    with pytest.raises(TlsError):
        await other.layer.send(options(transport="TLS"), addr, server_name="other.example")


async def test_connection_reused_and_used_back_by_identity(make_element, pki):
    server, client, addr = await _tls_pair(make_element, pki)
    client.answer = True
    for _ in range(2):
        await client.layer.send(options(transport="TLS"), addr, server_name="esinet.example")
        await server.next()
        await client.next()
    assert len(client.of(HandshakeEvent)) == 1 and len(client.layer.connections()) == 1
    # the ESRP sends a request to vsp.example: no address known for it, but the connection
    # the VSP opened is authenticated as vsp.example (mutual TLS), so it is reused (RFC 5923)
    nowhere = Address("tls", "192.0.2.99", 5061)
    await server.layer.send(
        options("sip:vsp.example", transport="TLS"), nowhere, server_name="vsp.example"
    )
    got, src = await client.next()
    assert isinstance(got, Request) and src.connection_id == client.layer.connections()[0]["id"]
    resp, _ = await server.next()
    assert resp.status == 200
    assert len(server.of(HandshakeEvent)) == 1


async def test_session_resumption(make_element, pki):
    server, client, addr = await _tls_pair(make_element, pki)
    await client.layer.send(options(transport="TLS"), addr, server_name="esinet.example")
    await client.next()
    (conn,) = client.layer.connections()
    client.layer.close_connection(conn["id"])
    for _ in range(100):
        if not client.layer.connections():
            break
        await asyncio.sleep(0.01)
    await client.layer.send(options(transport="TLS"), addr, server_name="esinet.example")
    await client.next()
    first, second = client.of(HandshakeEvent)
    assert not first.resumed and second.resumed and second.ok
    assert second.bytes_in < first.bytes_in  # no certificate chain on resumption
    assert [h.resumed for h in server.of(HandshakeEvent)] == [False, True]
    # counted without observers too (what /metrics reports: ng911.node.metrics)
    assert client.layer.stats.tls_handshakes == {("client", False): 1, ("client", True): 1}
    assert server.layer.stats.tls_handshakes == {("server", False): 1, ("server", True): 1}
    # identities survive resumption
    assert second.peer_identities == ("esinet.example",)


async def test_key_log_written(make_element, pki, tmp_path):
    keylog = tmp_path / "sslkeys.log"
    _server, client, addr = await _tls_pair(make_element, pki, keylog=keylog)
    await client.layer.send(options(transport="TLS"), addr, server_name="esinet.example")
    await client.next()
    text = keylog.read_text()
    assert "CLIENT_HANDSHAKE_TRAFFIC_SECRET" in text and "CLIENT_TRAFFIC_SECRET_0" in text


async def test_two_messages_in_one_record_share_its_bytes(make_element, pki):
    import ssl

    server = make_element("esrp", answer=False)
    addr = await server.layer.listen(
        "tls", "127.0.0.1", 0, tls=pki.server_context("esrp", require_client_cert=False)
    )
    ctx = pki.client_context(None)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    _r, w = await asyncio.open_connection("127.0.0.1", addr.port, ssl=ctx)
    a, b = options(transport="TLS").to_bytes(), options(transport="TLS").to_bytes()
    w.write(a + b)  # one write: one TLS record carrying both messages
    await w.drain()
    await server.next()
    await server.next()
    ins = [e for e in server.of(MessageEvent) if e.direction == "in"]
    assert len(ins) == 2
    assert sum(e.wire_bytes for e in ins) == len(a) + len(b) + 22
    w.close()


async def test_failed_handshake_event(make_element, pki):
    _server, client, addr = await _tls_pair(make_element, pki)
    with pytest.raises(IdentityMismatch):
        await client.layer.send(options(transport="TLS"), addr, server_name="psap.example")
    (hs,) = client.of(HandshakeEvent)
    assert (
        not hs.ok and "identity mismatch" in hs.error and hs.peer_identities == ("esinet.example",)
    )


async def test_tls12_session_resumption(make_element, pki):
    _server, client, addr = await _tls_pair(make_element, pki)
    c = pki.cert("vsp-proxy")
    client.layer.client_tls = client_context(
        pki.ca_files(), cert=c.chain_path, key=c.key_path, max_version="1.2"
    )
    for _ in range(2):
        await client.layer.send(options(transport="TLS"), addr, server_name="esinet.example")
        await client.next()
        (conn,) = client.layer.connections()
        client.layer.close_connection(conn["id"])
        for _ in range(100):
            if not client.layer.connections():
                break
            await asyncio.sleep(0.01)
    assert [(h.version, h.resumed) for h in client.of(HandshakeEvent)] == [
        ("TLSv1.2", False),
        ("TLSv1.2", True),
    ]


async def test_listen_errors(make_element):
    el = make_element("x")
    with pytest.raises(TlsError, match="needs a server SSLContext"):
        await el.layer.listen("tls", "127.0.0.1", 0)
    from ng911.net import TransportError

    with pytest.raises(TransportError, match="unknown transport"):
        await el.layer.listen("sctp", "127.0.0.1", 0)
    with pytest.raises(TlsError, match="no client TLS context"):
        await el.layer.send(options(transport="TLS"), Address("tls", "127.0.0.1", 9))
    await el.layer.close()
    await el.layer.close()  # idempotent


async def test_a_connection_checked_once_for_a_name_still_refuses_another(make_element, pki):
    """A connection's identity is checked against the first request's name and the verdict
    kept; a request for another name is still checked, and not sent on it."""
    server, client, addr = await _tls_pair(make_element, pki)
    client.answer = True
    for _ in range(2):  # the second send takes the kept verdict
        await client.layer.send(options(transport="TLS"), addr, server_name="esinet.example")
        await server.next()
        await client.next()
    (conn,) = client.layer.connections()
    with pytest.raises((TlsError, IdentityMismatch)):
        await client.layer.send(options(transport="TLS"), addr, server_name="other.example")
    await client.layer.send(options(transport="TLS"), addr, server_name="esinet.example")
    got, _src = await server.next()
    assert isinstance(got, Request)
    assert [c["id"] for c in client.layer.connections()] == [conn["id"]]


def _memory_tls_pair(pki):
    """A client and a server `SSLObject` over memory BIOs, handshake done in memory."""
    import ssl

    sctx = pki.server_context("esrp", require_client_cert=False)
    cctx = pki.client_context(None)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = cctx.wrap_bio(c_in, c_out, server_hostname="esrp.esinet.example")
    server = sctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for obj in (client, server):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    client.do_handshake()
    return client, c_out, server, s_in


def test_openssl_takes_one_record_at_a_time_from_the_bio(pki):
    """What `StreamConnection._read_app` stops on: with three records in the BIO, reading
    one leaves the other two there (read-ahead off), and nothing is held inside OpenSSL
    once the BIO is empty and `pending()` is 0. Were read-ahead on, records would wait in
    OpenSSL's buffer unseen and the read loop must not stop early."""
    import ssl

    client, c_out, server, s_in = _memory_tls_pair(pki)
    for part in (b"one", b"two", b"three"):
        client.write(part)
    s_in.write(c_out.read())
    got = []
    while s_in.pending or server.pending():
        try:
            got.append(server.read(65536))
        except ssl.SSLWantReadError:  # a TLS 1.3 ticket-only record, say
            break
        if got[-1] != b"three":
            assert s_in.pending > 0
    assert got[-3:] == [b"one", b"two", b"three"]
    assert s_in.pending == 0 and server.pending() == 0
    with pytest.raises(ssl.SSLWantReadError):
        server.read(65536)


async def test_records_in_one_write_and_a_record_split_across_writes(make_element, pki):
    """A peer writes six messages as six TLS records: the first three in one TCP write,
    the fourth cut in two across writes, and two more whole. Every message arrives, in
    order, however the records fall across reads (the read loop stops only when nothing
    is left to decrypt)."""
    import ssl

    server = make_element("esrp", answer=False)
    addr = await server.layer.listen(
        "tls", "127.0.0.1", 0, tls=pki.server_context("esrp", require_client_cert=False)
    )
    r, w = await asyncio.open_connection("127.0.0.1", addr.port)
    inb, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = pki.client_context(None).wrap_bio(inb, outb, server_hostname="esrp.esinet.example")
    for _ in range(20):
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            w.write(outb.read())
            inb.write(await asyncio.wait_for(r.read(65536), 3))
    w.write(outb.read())
    msgs = [options(transport="TLS") for _ in range(6)]
    records = []
    for m in msgs:
        tls.write(m.to_bytes())
        records.append(outb.read())
    fourth = records[3]
    w.write(b"".join(records[:3]) + fourth[: len(fourth) // 2])
    await w.drain()
    await asyncio.sleep(0.05)
    w.write(fourth[len(fourth) // 2 :] + b"".join(records[4:]))
    await w.drain()
    seen = [(await server.next())[0] for _ in range(6)]
    assert [m.call_id for m in seen] == [m.call_id for m in msgs]
    w.close()
