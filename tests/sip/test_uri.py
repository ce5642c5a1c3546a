"""ng911.sip.uri: parsing, serialisation, RFC 3261 §19.1.4 comparison, name-addr."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sip_strategies import any_uri, name_addrs, sip_uris, tel_uris, urns

from ng911 import compiled
from ng911.sip.errors import SipParseError
from ng911.sip.headers import CSeq, Via, parse_via
from ng911.sip.transaction import Terminated, TransactionKey
from ng911.sip.uri import (
    URN,
    AbsoluteURI,
    NameAddr,
    SipURI,
    TelURI,
    parse_name_addr,
    parse_name_addr_list,
    parse_uri,
)


def sip(text: str) -> SipURI:
    u = parse_uri(text)
    assert isinstance(u, SipURI)
    return u


# --- SIP URIs ------------------------------------------------------------------------------


def test_full_sip_uri():
    u = sip("sips:alice:secret@Atlanta.COM:5061;transport=TCP;lr;maddr=239.255.255.1?subject=x&h=y")
    assert u.scheme == "sips" and u.secure
    assert (u.user, u.password, u.host, u.port) == ("alice", "secret", "atlanta.com", 5061)
    assert u.params == (("transport", "TCP"), ("lr", None), ("maddr", "239.255.255.1"))
    assert u.headers == (("subject", "x"), ("h", "y"))
    assert u.transport == "tcp"
    assert u.param("lr") == "" and u.param("LR") == "" and u.param("nope") is None
    assert u.has_param("maddr") and not u.has_param("ttl")


def test_minimal_and_scheme_case():
    u = sip("SIP:example.com")
    assert u.scheme == "sip" and u.user is None and u.port is None and not u.secure
    assert str(u) == "sip:example.com"


def test_ipv6_host_and_port():
    u = sip("sip:bob@[2001:DB8::1]:5070;transport=tls")
    assert u.host == "[2001:db8::1]" and u.port == 5070
    assert str(u) == "sip:bob@[2001:db8::1]:5070;transport=tls"
    assert sip("sip:[::1]").port is None


def test_escaped_user_is_unescaped_and_reescaped():
    u = sip("sip:%61lice%20smith@example.com")
    assert u.user == "alice smith"
    assert str(u) == "sip:alice%20smith@example.com"
    assert parse_uri(str(u)) == u


def test_telephone_subscriber_user_with_semicolon():
    u = sip("sip:+1-212-555-0100;phone-context=example.com@gw.example.com;user=phone")
    assert u.user == "+1-212-555-0100;phone-context=example.com"
    assert u.param("user") == "phone"
    assert parse_uri(str(u)) == u


def test_question_mark_in_user_and_sloppy_at_sign_in_header():
    # RFC 3261 grammar: the first "@" ends the userinfo, which may hold "?" and "=".
    u = sip("sip:example.com?Replaces=abc@host")
    assert u.user == "example.com?Replaces=abc" and u.host == "host"
    assert parse_uri(str(u)) == u and "%3F" in str(u)
    # ... unless that reading fails: then the "@" belonged to a header of a user-less URI.
    u = sip("sip:example.com?Replaces=abc@host%3Bto-tag%3D1")
    assert u.user is None and u.host == "example.com"
    assert u.headers == (("Replaces", "abc@host%3Bto-tag%3D1"),)
    with pytest.raises(SipParseError):
        parse_uri("sip:exa mple.com?Replaces=abc@host%3B")


def test_rfc4475_unusual_user_and_password():
    # RFC 4475 §3.1.1.2 ("intmeth"): every legal user and password character.
    text = (
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too."
        "(doesn't-it)@example.com"
    )
    u = sip(text)
    assert u.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert u.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert u.host == "example.com" and parse_uri(str(u)) == u and u.equivalent(sip(text))
    # RFC 4475 §3.1.1.3 ("esc01") and §3.1.1.10 ("semiuri")
    assert sip("sip:sips%3Auser%40example.com@example.net").user == "sips:user@example.com"
    assert sip("sip:user;par=u%40example.net@example.com").user == "user;par=u@example.net"


def test_with_and_without_params():
    u = sip("sip:esrp.example.net")
    r = u.with_params(lr=None, transport="tls")
    assert str(r) == "sip:esrp.example.net;lr;transport=tls"
    assert str(r.with_params(transport="udp")) == "sip:esrp.example.net;lr;transport=udp"
    assert str(r.without_params("LR")) == "sip:esrp.example.net;transport=tls"
    assert str(u.replace(scheme="sips", port=5061)) == "sips:esrp.example.net:5061"
    assert u.with_params(phone_context="x").param("phone-context") == "x"


def test_with_param_map_is_with_params():
    via = parse_via("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1;rport")
    for kw in ({}, {"received": "198.51.100.4"}, {"rport": "4000", "received": "198.51.100.4"},
               {"lr": None, "phone_context": "x"}):  # fmt: skip
        assert via.with_param_map(dict(kw)) == via.with_params(**kw)
        assert str(via.with_param_map(dict(kw))) == str(via.with_params(**kw))
    uri = sip("sip:esrp.example.net")
    assert uri.with_param_map({"lr": None}) == uri.with_params(lr=None)


@pytest.mark.parametrize(
    "a,b",
    [
        # RFC 3261 §19.1.4, the equivalent examples
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
        ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
        (
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
        ),
        (
            "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
        ),
    ],
)
def test_rfc3261_equivalent(a, b):
    assert sip(a).equivalent(sip(b)) and sip(b).equivalent(sip(a))


@pytest.mark.parametrize(
    "a,b",
    [
        # RFC 3261 §19.1.4, the non-equivalent examples
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
        ("sip:alice@example.com", "sips:alice@example.com"),
    ],
)
def test_rfc3261_not_equivalent(a, b):
    assert not sip(a).equivalent(sip(b)) and not sip(b).equivalent(sip(a))


def test_equivalent_other_types():
    assert not sip("sip:a@b").equivalent("sip:a@b")
    assert not sip("sip:a@b").equivalent(parse_uri("tel:+1234"))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip",
        ":foo",
        "sip:",
        "sip:@example.com",
        "sip:alice@",
        "sip:alice@exa mple.com",
        "sip:alice@example.com:port",
        "sip:alice@example.com:70000",
        "sip:alice@example.com:",
        "sip:alice@[2001:db8::1",
        "sip:alice@[zz::1]",
        "sip:alice@[2001:db8::1]x",
        "sip:alice@example.com;",
        "sip:alice@example.com;=x",
        "sip:alice@example.com?novalue",
        "sip:alice@example.com?=x",
        "sip:alice@exa<mple.com",
        "sip:alice@exa\r\nmple.com",
        'sip:a"b@example.com',
        "1sip:example.com",
        "si p:example.com",
        "tel:",
        "tel:+",
        "tel:+12x4",
        "tel:abc",
        "urn:service",
        "urn::sos",
        "urn:service:",
        "urn:" + "x" * 33 + ":a",
        "urn:s@rvice:sos",
    ],
)
def test_malformed_uris(text):
    with pytest.raises(SipParseError) as ei:
        parse_uri(text)
    assert ei.value.status == 400


# --- tel, urn, absolute ----------------------------------------------------------------------


def test_tel_uri():
    t = parse_uri("TEL:+1-212-555-0100;ext=123;Phone-Context=example.com")
    assert isinstance(t, TelURI)
    assert t.number == "+1-212-555-0100" and t.is_global
    assert t.param("ext") == "123" and t.param("phone-context") == "example.com"
    assert t.digits == "+12125550100"
    assert str(t) == "tel:+1-212-555-0100;ext=123;phone-context=example.com"
    assert t.equivalent(parse_uri("tel:+1.212.555.0100;phone-context=EXAMPLE.com;ext=123"))
    assert not t.equivalent(parse_uri("tel:+1-212-555-0101;ext=123;phone-context=example.com"))
    local = parse_uri("tel:911;phone-context=+1")
    assert isinstance(local, TelURI) and not local.is_global
    assert str(t.with_params(ext="9")) == "tel:+1-212-555-0100;ext=9;phone-context=example.com"


@pytest.mark.parametrize(
    "text,emergency,service",
    [
        ("urn:service:sos", True, "sos"),
        ("URN:Service:SOS", True, "sos"),
        ("urn:service:sos.fire", True, "sos.fire"),
        ("urn:service:sos.ambulance", True, "sos.ambulance"),
        ("urn:service:counseling", False, "counseling"),
        ("urn:service:sosx", False, "sosx"),
        ("urn:nena:service:sos", False, None),
        ("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6", False, None),
    ],
)
def test_urn(text, emergency, service):
    u = parse_uri(text)
    assert isinstance(u, URN)
    assert u.is_emergency is emergency
    assert u.service == service
    assert parse_uri(str(u)) == u


def test_urn_equivalence_and_str():
    assert str(URN("service", "sos")) == "urn:service:sos"
    a = parse_uri("urn:service:SOS.fire")
    assert isinstance(a, URN) and a.equivalent(URN("service", "sos.fire"))
    assert not URN("uuid", "ABC").equivalent(URN("uuid", "abc"))


@pytest.mark.parametrize(
    "text,scheme",
    [
        ("cid:caller-loc@ua.example.net", "cid"),
        ("http://lis.example.net/loc/1", "http"),
        ("HTTPS://lis.example.net/", "https"),
        ("xmpp:psap@example.net", "xmpp"),
        ("mailto:psap@example.net", "mailto"),
    ],
)
def test_absolute_uri(text, scheme):
    u = parse_uri(text)
    assert isinstance(u, AbsoluteURI)
    assert u.scheme == scheme
    assert parse_uri(str(u)) == u
    assert u.equivalent(parse_uri(str(u)))


# --- round-trip properties ---------------------------------------------------------------------


@given(sip_uris())
def test_sip_uri_round_trip(u):
    text = str(u)
    again = parse_uri(text)
    assert again == u
    assert str(again) == text
    assert again.equivalent(u)


@given(tel_uris)
def test_tel_uri_round_trip(u):
    assert parse_uri(str(u)) == u


@given(urns)
def test_urn_round_trip(u):
    assert parse_uri(str(u)) == u


@given(name_addrs)
def test_name_addr_round_trip(na):
    text = str(na)
    assert parse_name_addr(text) == na
    assert str(parse_name_addr(text)) == text


@given(st.lists(name_addrs, min_size=1, max_size=4))
def test_name_addr_list_round_trip(nas):
    assert parse_name_addr_list(", ".join(str(n) for n in nas)) == nas


@given(any_uri)
def test_any_uri_in_angle_brackets(u):
    assert parse_name_addr(f"<{u}>").uri == u


# --- name-addr ---------------------------------------------------------------------------------


def test_name_addr_forms():
    a = parse_name_addr('"Alice \\"Al\\" Smith" <sip:alice@example.com;transport=tls>;tag=88sja8x')
    assert a.display == 'Alice "Al" Smith'
    assert isinstance(a.uri, SipURI) and a.uri.param("transport") == "tls"
    assert a.tag == "88sja8x"
    assert str(a) == '"Alice \\"Al\\" Smith" <sip:alice@example.com;transport=tls>;tag=88sja8x'

    b = parse_name_addr("Bob Jones <sip:bob@example.com>")
    assert b.display == "Bob Jones" and b.tag is None

    c = parse_name_addr("sip:carol@example.com;tag=xyz;expires=60")
    assert c.display is None
    assert c.uri == parse_uri("sip:carol@example.com")  # params of an addr-spec are header params
    assert c.params == (("tag", "xyz"), ("expires", "60"))
    assert str(c) == "<sip:carol@example.com>;tag=xyz;expires=60"

    d = parse_name_addr('<sip:ua@192.0.2.1>;+sip.instance="<urn:uuid:0001>";Expires=3600')
    assert d.param("+sip.instance") == '"<urn:uuid:0001>"' and d.param("expires") == "3600"

    e = parse_name_addr("  <urn:service:sos>  ")
    assert e.uri == URN("service", "sos")
    assert parse_name_addr('"" <sip:x@y>').display == ""


def test_name_addr_with_params():
    a = parse_name_addr("<sip:psap@example.net>")
    b = a.with_params(tag="abc")
    assert str(b) == "<sip:psap@example.net>;tag=abc" and b.tag == "abc"
    assert str(b.with_params(tag="def")) == "<sip:psap@example.net>;tag=def"
    assert b.without_params("tag") == a
    assert a.replace(display="PSAP").display == "PSAP"
    assert NameAddr(URN("service", "sos")).tag is None


def test_values_compare_hash_and_print_as_the_dataclasses_did():
    """The value classes are plain `uri.Value` classes (cheaper to build than frozen
    dataclasses); their `==`, `hash` and `repr` stay what the dataclasses gave."""
    u = sip("sip:alice@example.com:5060;transport=tcp")
    same = SipURI("sip", "alice", None, "example.com", 5060, (("transport", "tcp"),))
    assert u == same and hash(u) == hash(same) and (u != same) is False
    assert u != u.with_params(lr=None) and u != "sip:alice@example.com:5060;transport=tcp"
    assert URN("service", "sos") != AbsoluteURI("service", "sos")  # same fields, other class
    assert len({CSeq(1, "INVITE"), CSeq(1, "INVITE"), CSeq(2, "INVITE")}) == 2
    assert {TransactionKey("z9hG4bKa", "INVITE"): 1}.get(TransactionKey("z9hG4bKa", "INVITE"))
    assert TransactionKey("z9hG4bKa", "INVITE") != TransactionKey("z9hG4bKa", "INVITE", "h")
    assert Terminated() == Terminated() and repr(Terminated()) == "Terminated()"
    assert repr(CSeq(7, "BYE")) == "CSeq(seq=7, method='BYE')"
    assert repr(NameAddr(URN("service", "sos"))) == (
        "NameAddr(uri=URN(nid='service', nss='sos'), display=None, params=())"
    )
    via = parse_via("SIP/2.0/UDP h:5060;branch=z9hG4bKx")
    assert via.with_params(rport="1") == Via(
        "UDP", "h", 5060, (("branch", "z9hG4bKx"), ("rport", "1"))
    )
    # replace(): None is a value (no user), an argument not given keeps the field
    assert str(u.replace(user=None, params=())) == "sip:example.com:5060"
    assert u.replace() == u and NameAddr(u).replace(display=None) == NameAddr(u)


@pytest.mark.skipif(compiled.build() != "compiled", reason="read-only in the compiled build only")
def test_values_are_read_only_compiled():
    u = sip("sip:alice@example.com")
    for obj, attr in ((u, "host"), (NameAddr(u), "params"), (CSeq(1, "ACK"), "seq")):
        with pytest.raises(AttributeError):
            setattr(obj, attr, None)


def test_name_addr_list_splits_outside_quotes_and_brackets():
    text = (
        '"Doe, John" <sip:john@example.com;a=b,c>;q=0.5, <sip:p1.example.net;lr>,sip:x@example.org'
    )
    out = parse_name_addr_list(text)
    assert [n.display for n in out] == ["Doe, John", None, None]
    assert str(out[0].uri) == "sip:john@example.com;a=b,c"
    assert out[0].param("q") == "0.5"
    assert str(out[1]) == "<sip:p1.example.net;lr>"
    assert parse_name_addr_list("") == []


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        '"unterminated <sip:a@b>',
        '"Alice" sip:alice@example.com',
        "<sip:alice@example.com",
        "<sip:alice@example.com> junk",
        "<sip:alice@example.com>;",
        "<sip:alice@example.com>;tag=a;;x=1",
        "<sip:alice@example.com>;bad name=1",
        "<not a uri>",
        "Alice <>",
    ],
)
def test_malformed_name_addr(text):
    with pytest.raises(SipParseError) as ei:
        parse_name_addr(text)
    assert ei.value.status == 400


@given(st.text(max_size=60))
def test_random_text_raises_only_typed_errors(text):
    for fn in (parse_uri, parse_name_addr, parse_name_addr_list):
        try:
            fn(text)
        except SipParseError as e:
            assert e.status == 400


def test_a_uri_is_written_once_and_its_text_is_no_field() -> None:
    """str() keeps the wire form on the object: the same text every time, and equality,
    hash and repr read the fields only (a written and an unwritten URI are equal)."""
    written = parse_uri("sips:+12125550123@ESRP.example:5061;lr;transport=tls")
    fresh = SipURI(
        "sips", "+12125550123", None, "esrp.example", 5061, (("lr", None), ("transport", "tls"))
    )
    text = str(written)
    assert str(written) is text and text == "sips:+12125550123@esrp.example:5061;lr;transport=tls"
    assert written == fresh and hash(written) == hash(fresh) and repr(written) == repr(fresh)
    assert "_text" not in repr(written)
    assert str(fresh.with_params(lr=None, maddr="192.0.2.1")).endswith(";maddr=192.0.2.1")
    assert str(SipURI("sip", "a b", None, "example.com")) == "sip:a%20b@example.com"
