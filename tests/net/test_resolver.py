"""RFC 3263 resolution: static tables, and real DNS against a tiny loopback DNS server."""

import asyncio

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest

from ng911.net import Address, InsecureTransportError
from ng911.net.resolver import (
    NaptrRecord,
    ResolveError,
    SrvRecord,
    dns_resolver,
    static_resolver,
)
from ng911.sip.uri import parse_uri

HOSTS = {
    "esrp1.esinet.example": ["10.0.0.1"],
    "esrp2.esinet.example": ["10.0.0.2"],
    "psap.example": ["10.0.1.1"],
}
SRV = {
    "_sips._tcp.esinet.example": [(10, 10, 5061, "esrp2.esinet.example"),
                                  (5, 10, 5062, "esrp1.esinet.example")],
    "_sip._udp.esinet.example": [SrvRecord(1, 1, 5070, "esrp1.esinet.example")],
    "_sip._tcp.esinet.example": [(1, 1, 5080, "esrp1.esinet.example")],
}  # fmt: skip
NAPTR = {
    "naptr.example": [
        NaptrRecord(20, 10, "SIP+D2U", "_sip._udp.esinet.example"),
        (10, 10, "SIP+D2T", "_sip._tcp.esinet.example"),
        (30, 10, "SIPS+D2T", "_sips._tcp.esinet.example"),
    ]
}


async def _r(uri: str, **kw):
    return await static_resolver(HOSTS, SRV, NAPTR, system_fallback=False, **kw).resolve(
        parse_uri(uri)
    )


async def test_numeric_and_explicit_port():
    assert await _r("sip:10.9.9.9") == [Address("udp", "10.9.9.9", 5060)]
    assert await _r("sips:10.9.9.9") == [Address("tls", "10.9.9.9", 5061)]
    assert await _r("sip:10.9.9.9:5099;transport=tcp") == [Address("tcp", "10.9.9.9", 5099)]
    assert await _r("sip:psap.example:5090") == [Address("udp", "10.0.1.1", 5090)]
    assert await _r("sip:x@psap.example;maddr=10.3.3.3") == [Address("udp", "10.3.3.3", 5060)]


async def test_sips_uses_sips_srv_by_priority():
    assert await _r("sips:esinet.example") == [
        Address("tls", "10.0.0.1", 5062),
        Address("tls", "10.0.0.2", 5061),
    ]


async def test_transport_param_and_sips_rules():
    assert await _r("sip:esinet.example;transport=tcp") == [Address("tcp", "10.0.0.1", 5080)]
    # sips with transport=tcp means TLS (RFC 3261 §26.2.2)
    assert (await _r("sips:esinet.example;transport=tcp"))[0].transport == "tls"
    with pytest.raises(InsecureTransportError):
        await _r("sips:esinet.example;transport=udp")
    with pytest.raises(ResolveError, match="unsupported transport"):
        await _r("sip:esinet.example;transport=sctp")


async def test_srv_without_naptr_follows_our_preference():
    got = await _r("sip:esinet.example")
    assert got[0] == Address("udp", "10.0.0.1", 5070)
    assert {a.transport for a in got} == {"udp", "tcp", "tls"}


async def test_naptr_order_and_sips_filter():
    got = await _r("sip:naptr.example")
    assert [a.transport for a in got][:2] == ["tcp", "udp"]
    assert {a.transport for a in await _r("sips:naptr.example")} == {"tls"}


async def test_a_record_fallback_and_not_found():
    assert await _r("sips:psap.example") == [Address("tls", "10.0.1.1", 5061)]
    with pytest.raises(ResolveError, match="no address"):
        await _r("sip:nowhere.example")


async def test_system_fallback_for_localhost():
    got = await static_resolver().resolve(parse_uri("sip:localhost:5099"))
    assert got and got[0].port == 5099


ZONE = """
$ORIGIN esinet.example.
$TTL 60
@ 60 IN SOA ns hostmaster 1 60 60 60 60
@ IN NS ns
ns IN A 127.0.0.1
@ IN NAPTR 10 10 "S" "SIPS+D2T" "" _sips._tcp.esinet.example.
@ IN NAPTR 20 10 "S" "SIP+D2U" "" _sip._udp.esinet.example.
_sips._tcp IN SRV 1 1 5061 esrp1
_sip._udp IN SRV 1 1 5060 esrp1
esrp1 IN A 10.0.0.1
esrp1 IN AAAA 2001:db8::1
"""


class _DnsServer(asyncio.DatagramProtocol):
    def __init__(self, zone):
        self.zone = zone

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        q = dns.message.from_wire(data)
        resp = dns.message.make_response(q)
        question = q.question[0]
        try:
            node = self.zone.get_node(question.name)
            rds = node.get_rdataset(dns.rdataclass.IN, question.rdtype) if node else None
        except KeyError:
            rds = None
        if rds is not None:
            resp.answer.append(dns.rrset.from_rdata_list(question.name, rds.ttl, list(rds)))
        elif node is None:
            resp.set_rcode(dns.rcode.NXDOMAIN)
        self.transport.sendto(resp.to_wire(), addr)


async def test_real_dns_naptr_srv_a_aaaa():
    zone = dns.zone.from_text(ZONE, relativize=False)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _DnsServer(zone), local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    try:
        r = dns_resolver([("127.0.0.1", port)])
        got = await r.resolve(parse_uri("sip:esinet.example"))
        assert got == [
            Address("tls", "10.0.0.1", 5061),
            Address("tls", "2001:db8::1", 5061),
            Address("udp", "10.0.0.1", 5060),
            Address("udp", "2001:db8::1", 5060),
        ]
        sips = await r.resolve(parse_uri("sips:esinet.example"))
        assert {a.transport for a in sips} == {"tls"}
        with pytest.raises(ResolveError):
            await r.resolve(parse_uri("sip:missing.esinet.example"))
    finally:
        transport.close()
