import asyncio
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ng911.pki.errors import CertificateError
from ng911.pki.tls import client_context, matches_domain, peer_identities, server_context


def test_peer_identities_uri_san_wins_over_dns():
    d = {"subjectAltName": (("DNS", "esrp.esinet.example"), ("URI", "sip:ESInet.example"))}
    assert peer_identities(d) == {"esinet.example"}


def test_peer_identities_dns_when_no_sip_uri():
    d = {"subjectAltName": (("DNS", "a.example"), ("URI", "https://x"), ("URI", "sip:u@x.example"))}
    assert peer_identities(d) == {"a.example"}


def test_peer_identities_cn_only_without_sans():
    d = {"subject": ((("organizationName", "x"),), (("commonName", "Proxy.Example"),))}
    assert peer_identities(d) == {"proxy.example"}
    assert peer_identities({}) == set()
    assert peer_identities(None) == set()


def test_peer_identities_der_and_x509(pki):
    c = pki.cert("esrp")
    cert = x509.load_pem_x509_certificate(c.cert_path.read_bytes())
    der = cert.public_bytes(Encoding.DER)
    assert peer_identities(der) == peer_identities(cert) == {"esinet.example"}
    with pytest.raises(CertificateError):
        peer_identities(b"garbage")


def test_matches_domain_exact_and_wildcards():
    assert matches_domain({"esinet.example"}, "ESInet.example.")
    assert not matches_domain({"esinet.example"}, "evil.example")
    assert not matches_domain({"*.esinet.example"}, "esrp.esinet.example")
    assert matches_domain({"*.esinet.example"}, "esrp.esinet.example", wildcards=True)
    assert not matches_domain({"*.esinet.example"}, "a.b.esinet.example", wildcards=True)


async def _handshake(server_ctx, client_ctx):
    """One real TLS handshake over loopback; returns (client peercert, server peercert|exc)."""
    got: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_conn(r, w):
        try:
            await r.read(1)
            got.set_result(w.get_extra_info("peercert"))
        except Exception as exc:
            if not got.done():
                got.set_result(exc)
        w.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        _r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        peer = w.get_extra_info("peercert")
        w.write(b"x")
        await w.drain()
        srv = await asyncio.wait_for(got, 5)
        w.close()
        return peer, srv
    finally:
        server.close()


async def test_mutual_tls_handshake_and_identities(pki, tmp_path):
    keylog = tmp_path / "keys.log"
    srv = pki.server_context("esrp", require_client_cert=True)
    cli = pki.client_context("vsp-proxy", keylog=keylog)
    client_saw, server_saw = await _handshake(srv, cli)
    assert peer_identities(client_saw) == {"esinet.example"}
    assert peer_identities(server_saw) == {"vsp.example"}
    assert "CLIENT_HANDSHAKE_TRAFFIC_SECRET" in keylog.read_text()


async def test_client_cert_optional_for_user_agents(pki):
    srv = pki.server_context("vsp-proxy", require_client_cert=False)
    cli = pki.client_context(None)
    _, server_saw = await _handshake(srv, cli)
    assert server_saw is None


async def test_client_rejects_server_from_untrusted_ca(pki):
    srv = pki.server_context("esrp")
    cli = pki.client_context("vsp-proxy", trust=["vsp"])
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(srv, cli)


def test_tls_versions_and_client_without_cert(pki):
    ctx = client_context(pki.ca_files(["esinet"]))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    c = pki.cert("esrp")
    s = server_context(c.chain_path, c.key_path, [], require_client_cert=False, min_version="1.3")
    assert s.verify_mode == ssl.CERT_NONE and s.minimum_version == ssl.TLSVersion.TLSv1_3
