"""The parse caches of URIs, name-addrs and Vias: same values as a fresh parse, bounded under
a flood of unique texts, and never a cached error."""

from __future__ import annotations

import pytest

from ng911.sip import headers, uri
from ng911.sip.errors import SipParseError
from ng911.sip.headers import parse_via
from ng911.sip.uri import PARSE_CACHE_MAX, parse_name_addr, parse_uri


def test_a_cached_parse_is_the_value_a_fresh_parse_gives() -> None:
    text = "sip:alice@example.com:5061;transport=tls"
    first = parse_uri(text)
    assert parse_uri(text) is first  # the second comes from the cache
    assert first == uri._parse_uri(text)
    na = '"Alice" <sip:alice@example.com>;tag=abc'
    assert parse_name_addr(na) == uri._parse_name_addr(na)
    assert parse_name_addr(na).tag == "abc"
    via = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport"
    assert parse_via(via) is parse_via(via)
    assert parse_via(via) == headers._parse_via(via)


def test_a_flood_of_unique_texts_keeps_each_cache_bounded() -> None:
    for i in range(3 * PARSE_CACHE_MAX):
        parse_uri(f"sip:u{i}@example.com")
        parse_name_addr(f"<sip:u{i}@example.com>;tag=t{i}")
        parse_via(f"SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{i}")
        assert len(uri._URIS) <= PARSE_CACHE_MAX
        assert len(uri._NAME_ADDRS) <= PARSE_CACHE_MAX
        assert len(headers._VIAS) <= PARSE_CACHE_MAX


@pytest.mark.parametrize("bad", ["sip:", "sip:a b@example.com", "nocolon", "sip:a@exa mple.com"])
def test_a_bad_text_raises_every_time_and_is_not_kept(bad: str) -> None:
    for _ in range(2):
        with pytest.raises(SipParseError):
            parse_uri(bad)
    assert bad not in uri._URIS
    for _ in range(2):
        with pytest.raises(SipParseError):
            parse_via(f"SIP/2.0 {bad}")


def test_sent_by_is_kept_by_its_text_and_bounded() -> None:
    """Every Via of a hop carries the same sent-by: its host and port are kept by text, the
    same values a fresh parse gives, and a flood of unique ones stays within the bound."""
    via = "SIP/2.0/TLS PSAP.Example:5061;branch=z9hG4bKa"
    assert (parse_via(via).host, parse_via(via).port) == ("psap.example", 5061)
    assert uri._HOSTPORTS["PSAP.Example:5061"] == uri._parse_hostport("PSAP.Example:5061", via)
    for i in range(3 * PARSE_CACHE_MAX):
        parse_via(f"SIP/2.0/UDP 10.{i // 65536}.{i // 256 % 256}.{i % 256}:5060;branch=z9hG4bK")
        assert len(uri._HOSTPORTS) <= PARSE_CACHE_MAX
    for bad in ("10.0.0.1:99999", "ba%d:5060", "[::1"):
        for _ in range(2):
            with pytest.raises(SipParseError):
                parse_via(f"SIP/2.0/UDP {bad};branch=z9hG4bKb")
        assert bad not in uri._HOSTPORTS


def test_the_usual_via_spelling_and_the_others_parse_alike() -> None:
    """`SIP/2.0/` as every element writes it is read without the general split; LWS and
    case inside the protocol give the same Via (RFC 3261 §7.3.1)."""
    canonical = headers._parse_via("SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKc;rport")
    for other in (
        "SIP / 2.0 / TLS 192.0.2.1:5061;branch=z9hG4bKc;rport",
        "sip/2.0/tls 192.0.2.1:5061 ;branch=z9hG4bKc ; rport",
        "SIP/2.0/ TLS 192.0.2.1:5061;branch=z9hG4bKc;rport",
    ):
        assert headers._parse_via(other) == canonical
