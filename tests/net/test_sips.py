import pytest
from nethelpers import options

from ng911.net import Address, InsecureTransportError
from ng911.net.sips import check_secure, requires_tls
from ng911.sip.message import make_response


def test_requires_tls_for_sips_request_uri_or_top_route():
    assert requires_tls(options("sips:esinet.example"))
    assert requires_tls(options("sip:esinet.example", route="<sips:esrp.esinet.example;lr>"))
    assert not requires_tls(options("sip:esinet.example", route="<sip:esrp.esinet.example;lr>"))
    assert not requires_tls(make_response(options("sips:esinet.example"), 200))


def test_check_secure_raises_typed_error_with_status():
    req = options("sips:esinet.example")
    for t in ("udp", "tcp"):
        with pytest.raises(InsecureTransportError) as ei:
            check_secure(req, Address(t, "127.0.0.1", 5060))
        assert ei.value.status == 480 and "sips" in str(ei.value)
    check_secure(req, Address("tls", "127.0.0.1", 5061))


async def test_layer_refuses_sips_over_udp_and_tcp(make_element):
    server = make_element("server")
    udp = await server.layer.listen("udp", "127.0.0.1", 0)
    tcp = await server.layer.listen("tcp", "127.0.0.1", 0)
    client = make_element("client")
    for dest in (udp, tcp):
        with pytest.raises(InsecureTransportError):
            await client.layer.send(options("sips:esinet.example"), dest)
    assert server.inbox.empty() and client.layer.stats.messages_out == 0
