"""ng911.sip.headers: Via, CSeq, and the branch/tag/Call-ID generators."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sip_strategies import header_params, host, port

from ng911.sip.errors import SipParseError
from ng911.sip.headers import (
    MAGIC_COOKIE,
    CSeq,
    Via,
    new_branch,
    new_call_id,
    new_tag,
    parse_cseq,
    parse_via,
    parse_via_list,
)


def test_via_basic():
    v = parse_via("SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport")
    assert (v.transport, v.host, v.port) == ("UDP", "192.0.2.10", 5060)
    assert v.branch == "z9hG4bK776asdhds"
    assert v.rport == "" and v.received is None and v.maddr is None
    assert v.sent_by == "192.0.2.10:5060"
    assert str(v) == "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport"


def test_via_tolerates_lws_and_case():
    v = parse_via(
        "sip / 2.0 / tls   Proxy.Example.NET : 5061 ; Branch = z9hG4bKx ; received=1.2.3.4"
    )
    assert (v.transport, v.host, v.port) == ("TLS", "proxy.example.net", 5061)
    assert v.branch == "z9hG4bKx" and v.received == "1.2.3.4"


def test_via_ipv6_no_port_and_helpers():
    v = parse_via("SIP/2.0/TCP [2001:db8::9];branch=z9hG4bKa")
    assert v.host == "[2001:db8::9]" and v.port is None and v.sent_by == "[2001:db8::9]"
    w = v.with_params(received="2001:db8::1", rport="5070")
    assert w.received == "2001:db8::1" and w.rport == "5070" and w.branch == "z9hG4bKa"
    assert str(w) == "SIP/2.0/TCP [2001:db8::9];branch=z9hG4bKa;received=2001:db8::1;rport=5070"
    assert Via("WSS", "example.net").branch is None
    assert v.param("BRANCH") == "z9hG4bKa"


def test_via_list():
    vs = parse_via_list(
        "SIP/2.0/UDP a.example;branch=z9hG4bK1, SIP/2.0/TCP b.example:5070 ;branch=z9hG4bK2"
    )
    assert [(v.host, v.port, v.branch) for v in vs] == [
        ("a.example", None, "z9hG4bK1"),
        ("b.example", 5070, "z9hG4bK2"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SIP/2.0/UDP",
        "SIP/2.0/UDP ",
        "SIP/2.0 192.0.2.1",
        "HTTP/1.1/TCP host",
        "SIP/2.0/UDP host:notaport",
        "SIP/2.0/UDP host:99999",
        "SIP/2.0/UDP ho@st",
        "SIP/2.0/UDP host;branch=a;;x",
        "SIP/2.0/UDP host;bad name=1",
    ],
)
def test_malformed_via(text):
    with pytest.raises(SipParseError) as ei:
        parse_via(text)
    assert ei.value.status == 400


@given(
    st.sampled_from(["UDP", "TCP", "TLS", "WS", "WSS", "SCTP"]),
    host,
    port,
    header_params,
)
def test_via_round_trip(transport, h, p, params):
    v = Via(transport, h, p, params)
    assert parse_via(str(v)) == v
    assert parse_via_list(f"{v}, {v}") == [v, v]


def test_cseq():
    c = parse_cseq(" 314159   INVITE ")
    assert c == CSeq(314159, "INVITE") and str(c) == "314159 INVITE"
    assert parse_cseq("0 ACK").seq == 0
    assert parse_cseq(f"{2**31 - 1} BYE").seq == 2**31 - 1


@pytest.mark.parametrize(
    "text",
    ["", "INVITE", "1", "abc INVITE", "-1 INVITE", "1 IN VITE", f"{2**31} INVITE", "١ INVITE"],
)
def test_malformed_cseq(text):
    with pytest.raises(SipParseError) as ei:
        parse_cseq(text)
    assert ei.value.status == 400


@given(st.integers(0, 2**31 - 1), st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"]))
def test_cseq_round_trip(n, method):
    assert parse_cseq(str(CSeq(n, method))) == CSeq(n, method)


def test_generators_are_unique_and_well_formed():
    branches = {new_branch() for _ in range(1000)}
    assert len(branches) == 1000
    assert all(b.startswith(MAGIC_COOKIE) and len(b) > len(MAGIC_COOKIE) + 8 for b in branches)
    tags = {new_tag() for _ in range(1000)}
    assert len(tags) == 1000
    cid = new_call_id("vsp.example.net")
    assert cid.endswith("@vsp.example.net") and new_call_id("x") != new_call_id("x")


@given(st.text(max_size=60))
def test_random_text_raises_only_typed_errors(text):
    for fn in (parse_via, parse_via_list, parse_cseq):
        try:
            fn(text)
        except SipParseError as e:
            assert e.status == 400
