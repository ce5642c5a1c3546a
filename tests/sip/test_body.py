"""ng911.sip.body: multipart/mixed as emergency calls carry it (RFC 2046, RFC 5621, RFC 6442)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ng911.sip.body import (
    MAX_DEPTH,
    BodyPart,
    build_multipart,
    content_type_param,
    find_part,
    media_type,
    parse_multipart,
)
from ng911.sip.errors import SipParseError
from ng911.sip.parse import parse_message
from ng911.sip.samples import LOCATION_CID, PIDF, SDP, emergency_invite


def test_sample_invite_parts():
    m = parse_message(emergency_invite())
    ctype = m.content_type
    assert ctype is not None
    sdp, pidf = parse_multipart(ctype, m.body)
    assert sdp.mime == "application/sdp" and sdp.body == SDP.encode() and sdp.content_id is None
    assert pidf.mime == "application/pidf+xml" and pidf.body == PIDF.encode()
    assert pidf.content_id == LOCATION_CID and pidf.header("content-id") == f"<{LOCATION_CID}>"
    assert find_part(ctype, m.body, content_id=f"cid:{LOCATION_CID}") == pidf
    assert find_part(ctype, m.body, content_id=f"<{LOCATION_CID}>") == pidf
    assert find_part(ctype, m.body, mime="APPLICATION/SDP") == sdp
    assert find_part(ctype, m.body, mime="application/pidf+xml", content_id=LOCATION_CID) == pidf
    assert find_part(ctype, m.body, mime="application/sdp", content_id=LOCATION_CID) is None
    assert find_part(ctype, m.body, content_id="nope@x") is None


def test_build_and_parse_round_trip():
    parts = [
        BodyPart("application/sdp", b"v=0\r\n"),
        BodyPart(
            "application/pidf+xml",
            b"<presence/>",
            (("Content-ID", "<loc@x>"), ("Content-Disposition", "by-reference")),
        ),
        BodyPart("text/plain", b""),
    ]
    ctype, body = build_multipart(parts, "b1")
    assert ctype == "multipart/mixed;boundary=b1"
    assert parse_multipart(ctype, body) == parts
    ctype2, body2 = build_multipart(parts)
    assert content_type_param(ctype2, "boundary") != "b1"
    assert parse_multipart(ctype2, body2) == parts
    with pytest.raises(ValueError):
        build_multipart([BodyPart("text/plain", b"--b1 inside")], "b1")


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["application/sdp", "application/pidf+xml", "text/plain"]),
            st.binary(max_size=100).filter(lambda b: b"--" not in b),
            st.one_of(st.none(), st.from_regex(r"[a-z0-9]{1,10}@[a-z]{1,8}", fullmatch=True)),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_multipart_round_trip_property(specs):
    parts = [BodyPart(t, b, (("Content-ID", f"<{cid}>"),) if cid else ()) for t, b, cid in specs]
    ctype, body = build_multipart(parts)
    assert parse_multipart(ctype, body) == parts


def test_nested_multipart_is_descended():
    inner_ct, inner = build_multipart(
        [
            BodyPart("application/pidf+xml", b"<inner/>", (("Content-ID", "<deep@x>"),)),
            BodyPart("application/EmergencyCallData.ProviderInfo+xml", b"<p/>"),
        ],
        "inner",
    )
    outer_ct, outer = build_multipart(
        [BodyPart("application/sdp", b"v=0\r\n"), BodyPart(inner_ct, inner)], "outer"
    )
    top = parse_multipart(outer_ct, outer)
    assert top[1].mime == "multipart/mixed" and top[1].body == inner  # returned as-is
    found = find_part(outer_ct, outer, content_id="cid:deep@x")
    assert found is not None and found.body == b"<inner/>"
    found = find_part(outer_ct, outer, mime="application/emergencycalldata.providerinfo+xml")
    assert found is not None and found.body == b"<p/>"


def test_single_part_body():
    assert find_part("application/sdp", b"v=0", mime="application/sdp") == BodyPart(
        "application/sdp", b"v=0"
    )
    assert find_part("application/sdp", b"v=0", mime="application/pidf+xml") is None
    assert find_part("application/sdp", b"v=0", content_id="x") is None


def test_tolerant_forms():
    body = (
        b"preamble to ignore\r\n"
        b"--XYZ   \r\n"  # transport padding after the delimiter
        b"content-type: application/sdp\r\n"
        b"  ;charset=utf-8\r\n"  # folded part header
        b"\r\n"
        b"v=0\r\n"
        b"--XYZ\n"
        b"\n"  # no headers: text/plain by default, bare LF
        b"plain\n"
        b"--XYZ--\r\n"
        b"epilogue\r\n"
    )
    a, b = parse_multipart('multipart/mixed; boundary="XYZ"', body)
    assert a.content_type == "application/sdp ;charset=utf-8" and a.body == b"v=0"
    assert b.content_type == "text/plain" and b.body == b"plain"


def test_helpers():
    assert media_type(" Multipart/Mixed ; boundary=x") == "multipart/mixed"
    assert content_type_param('multipart/mixed;boundary="a \\"b\\""', "BOUNDARY") == 'a "b"'
    assert content_type_param("text/plain", "charset") is None
    assert content_type_param("text/plain;flag", "flag") == ""
    assert content_type_param("text/plain;;", "charset") is None


@pytest.mark.parametrize(
    "ctype,body",
    [
        ("application/sdp", b"v=0"),
        ("multipart/mixed", b"--x\r\n\r\nbody\r\n--x--"),
        ("multipart/mixed;boundary=", b"--x\r\n\r\nbody\r\n--x--"),
        ("multipart/mixed;boundary=" + "b" * 71, b""),
        ("multipart/mixed;boundary=x", b"no delimiter here"),
        ("multipart/mixed;boundary=x", b"--x\r\nContent-Type: a/b\r\n\r\nno close"),
        ("multipart/mixed;boundary=x", b"--x"),
        ("multipart/mixed;boundary=x", b"--x\r\nBad header line\r\n\r\nbody\r\n--x--"),
        ("multipart/mixed;boundary=x", b"--x\r\nContent-Type: caf\xe9\r\n\r\nbody\r\n--x--"),
    ],
)
def test_malformed_multipart(ctype, body):
    with pytest.raises(SipParseError) as ei:
        parse_multipart(ctype, body)
    assert ei.value.status == 400


def test_nesting_too_deep_is_refused():
    ctype, body = "application/pidf+xml", b"<deep/>"
    for i in range(MAX_DEPTH + 2):
        ctype, body = build_multipart([BodyPart(ctype, body)], f"b{i}")
    with pytest.raises(SipParseError) as ei:
        find_part(ctype, body, mime="application/pidf+xml")
    assert ei.value.status == 400
    # within the limit it is found
    ctype, body = "application/pidf+xml", b"<deep/>"
    for i in range(MAX_DEPTH):
        ctype, body = build_multipart([BodyPart(ctype, body)], f"b{i}")
    assert find_part(ctype, body, mime="application/pidf+xml") is not None


@given(st.binary(max_size=300), st.sampled_from(["x", "XYZ", "b1"]))
def test_random_bodies_raise_only_typed_errors(body, boundary):
    for b in (body, b"--" + boundary.encode() + b"\r\n" + body):
        try:
            find_part(f"multipart/mixed;boundary={boundary}", b, mime="application/pidf+xml")
        except SipParseError as e:
            assert e.status == 400
