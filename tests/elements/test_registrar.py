"""Registrar bindings (RFC 3261 §10.3)."""

import pytest

from ng911.elements.registrar import Registrar, aor_key
from ng911.elements.runtime import ElementError
from ng911.net.address import Address, Source
from ng911.sip.message import Request
from ng911.sip.uri import parse_uri

SRC = Source(Address("udp", "127.0.0.1", 5062), Address("udp", "127.0.0.1", 5060))


def register(contact="<sip:alice@127.0.0.1:5062>", expires="3600", cseq=1, call_id="r1"):
    headers = [
        ("Via", "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKr"),
        ("From", "<sip:alice@vsp.example>;tag=1"),
        ("To", "<sip:alice@vsp.example>"),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} REGISTER"),
        ("Contact", contact),
    ]
    if expires is not None:
        headers.append(("Expires", expires))
    return Request("REGISTER", parse_uri("sip:vsp.example"), headers)


def test_bind_lookup_expire():
    r = Registrar(("vsp.example",), max_expires=600)
    got = r.register(register(), SRC, now=100.0)
    assert [str(b.contact) for b in got] == ["sip:alice@127.0.0.1:5062"]
    assert got[0].expires_at == 700.0  # capped at max_expires
    assert r.lookup(parse_uri("sip:alice@VSP.example:5060"), 699.0)
    assert r.lookup(parse_uri("sip:alice@vsp.example"), 700.0) == []


def test_contact_expires_param_and_removal():
    r = Registrar(("vsp.example",))
    r.register(register("<sip:a@h1>;expires=10, <sip:a@h2>"), SRC, 0.0)
    assert len(r.lookup_aor("sip:alice@vsp.example", 5.0)) == 2
    assert len(r.lookup_aor("sip:alice@vsp.example", 11.0)) == 1
    r.register(register("<sip:a@h2>", expires="0", cseq=2), SRC, 12.0)
    assert r.lookup_aor("sip:alice@vsp.example", 12.0) == []


def test_wildcard_and_errors():
    r = Registrar(("vsp.example",))
    r.register(register(), SRC, 0.0)
    with pytest.raises(ElementError) as e:
        r.register(register("*", expires="60", cseq=2), SRC, 0.0)
    assert e.value.status == 400
    assert r.register(register("*", expires="0", cseq=3), SRC, 0.0) == []
    r.register(register(cseq=5), SRC, 0.0)
    with pytest.raises(ElementError) as e:
        r.register(register(cseq=4), SRC, 0.0)  # out of order, same Call-ID
    assert e.value.status == 500


def test_aor_key():
    assert aor_key(parse_uri("sip:Bob@Example.COM:5070;transport=tcp")) == "sip:Bob@example.com"
    assert aor_key(parse_uri("tel:+1-212-555-0100")) == "tel:+12125550100"
    assert Registrar(("a.example",)).serves(parse_uri("sip:x@A.example"))
