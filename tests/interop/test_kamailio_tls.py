"""Interop: ng911's TLS client against a real Kamailio over mutual TLS.

Kamailio (Debian's kamailio + kamailio-tls-modules) listens on TLS with a certificate from the
ESInet test CA, verifies and requires client certificates from the VSP CA, and answers every
OPTIONS with 200 (`sl_send_reply`). Our client verifies Kamailio's chain and its RFC 5922
identity while Kamailio verifies ours; a client whose certificate comes from another CA is
refused. Skipped, with the reason, when Kamailio or its TLS module is absent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from ng911.interop.kamailio import Kamailio, config_head, missing_reason, tls_cfg
from ng911.interop.procs import free_port
from ng911.net import (
    Address,
    HandshakeEvent,
    NetEvent,
    SipTransportLayer,
    Source,
    TlsError,
    TransportError,
)
from ng911.pki.testpki import TestPki, build_test_pki
from ng911.pki.tls import client_context
from ng911.sip.headers import new_branch, new_call_id, new_tag
from ng911.sip.message import Request, Response
from ng911.sip.uri import parse_uri

pytestmark = pytest.mark.interop

# answers every OPTIONS with 200; everything else 501
ROUTE = """
loadmodule "tls.so"
loadmodule "sl.so"
modparam("tls", "config", "{tlscfg}")

request_route {{
    if (method == "OPTIONS") {{
        sl_send_reply("200", "OK");
        exit;
    }}
    sl_send_reply("501", "Not Implemented");
}}
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return build_test_pki(tmp_path_factory.mktemp("kampki"))


@pytest.fixture(scope="module")
def kamailio(pki: TestPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kamailio]:
    reason = missing_reason("tls", "sl")
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("kamailio")
    cert = pki.issue(
        "kamailio", ca="esinet", dns=["kamailio.esinet.example"], sip_domains=["esinet.example"]
    )
    tlscfg = root / "tls.cfg"
    # Kamailio trusts only the VSP CA: a client from another CA must be refused
    tlscfg.write_text(tls_cfg(cert=cert.chain_path, key=cert.key_path, ca=pki.cas["vsp"].cert_path))
    port = free_port()
    head = config_head(f"listen=tls:127.0.0.1:{port}", tls=True)
    k = Kamailio(head + ROUTE.format(tlscfg=tlscfg), port, "tls", shm_mb=64, workdir=root)
    k.start()
    try:
        yield k
    finally:
        k.stop()


def _options(port: int) -> Request:
    return Request(
        "OPTIONS",
        parse_uri(f"sips:esinet.example:{port}"),
        [
            ("Via", f"SIP/2.0/TLS 127.0.0.1:5061;branch={new_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:ng911@vsp.example>;tag={new_tag()}"),
            ("To", "<sips:esinet.example>"),
            ("Call-ID", new_call_id("vsp.example")),
            ("CSeq", "1 OPTIONS"),
        ],
    )


async def _client(
    pki: TestPki, cert: str, max_version: str = "1.3"
) -> tuple[SipTransportLayer, asyncio.Queue[Response]]:
    c = pki.cert(cert)
    ctx = client_context(pki.ca_files(), cert=c.chain_path, key=c.key_path, max_version=max_version)
    layer = SipTransportLayer(element="ng911-client", client_tls=ctx)
    q: asyncio.Queue[Response] = asyncio.Queue()

    def on_message(msg: Request | Response, src: Source) -> None:
        if isinstance(msg, Response):
            q.put_nowait(msg)

    layer.on_message = on_message
    return layer, q


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_options_over_mutual_tls_with_kamailio(
    kamailio: Kamailio, pki: TestPki, version: str
) -> None:
    layer, q = await _client(pki, "vsp-proxy", version)
    events: list[NetEvent] = []
    layer.observers.append(events.append)
    try:
        req = _options(kamailio.port)
        await layer.send(
            req, Address("tls", "127.0.0.1", kamailio.port), server_name="esinet.example"
        )
        resp = await asyncio.wait_for(q.get(), 5)
        assert resp.status == 200 and resp.call_id == req.call_id
        (conn,) = layer.connections()
        assert conn["identities"] == ["esinet.example"]
        (hs,) = [e for e in events if isinstance(e, HandshakeEvent)]
        assert hs.ok and hs.version == f"TLSv{version}"
    finally:
        await layer.close()


async def test_kamailio_refuses_client_from_wrong_ca(kamailio: Kamailio, pki: TestPki) -> None:
    layer, q = await _client(pki, "psap")  # PSAP CA: Kamailio trusts only the VSP CA
    try:
        with pytest.raises((TlsError, TransportError)):
            await layer.send(
                _options(kamailio.port),
                Address("tls", "127.0.0.1", kamailio.port),
                server_name="esinet.example",
            )
            # TLS 1.3: our side finishes the handshake before Kamailio checks our certificate;
            # its refusal arrives as an alert and no answer ever comes
            try:
                await asyncio.wait_for(q.get(), 2)
            except TimeoutError:
                raise TransportError("no answer: connection refused by the peer") from None
        assert q.empty()
    finally:
        await layer.close()


async def test_kamailio_identity_checked(kamailio: Kamailio, pki: TestPki) -> None:
    from ng911.net import IdentityMismatch

    layer, _ = await _client(pki, "vsp-proxy")
    try:
        with pytest.raises(IdentityMismatch):
            await layer.send(
                _options(kamailio.port),
                Address("tls", "127.0.0.1", kamailio.port),
                server_name="psap.example",
            )
    finally:
        await layer.close()
