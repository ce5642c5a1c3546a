"""ESRP routing policy: location extraction, default location, route plans, failover."""

import pytest

from ng911.elements.routing import (
    CallLocation,
    LocationProblem,
    LostFound,
    LostNotFound,
    LostUnreachable,
    NoLocation,
    RoutingPolicy,
    add_default_location,
    apply_hop_policy,
    extract_location,
    pick_sip_uri,
    plan_routes,
    should_fail_over,
)
from ng911.location.geodetic import Point
from ng911.sip.body import BodyPart, build_multipart, find_part, parse_multipart
from ng911.sip.parse import parse_message
from ng911.sip.samples import LOCATION_CID, PIDF, SDP, emergency_invite


def sample():
    req = parse_message(emergency_invite())
    return req


def with_body(make_invite, geo, parts, *, raw=None):
    extra = (("Geolocation", geo),) if geo is not None else ()
    if raw is not None:
        ctype, body = raw
    else:
        ctype, body = build_multipart(parts)
    return make_invite("urn:service:sos", extra=extra, body=body, content_type=ctype)


SDP_PART = BodyPart("application/sdp", SDP.encode())


def pidf_part(cid="loc@ua", data=PIDF.encode()):
    return BodyPart("application/pidf+xml", data, (("Content-ID", f"<{cid}>"),))


def test_location_from_the_sample_invite():
    loc = extract_location(sample())
    assert isinstance(loc, CallLocation)
    assert loc.location == Point(40.7580, -73.9855)
    assert loc.source == f"cid:{LOCATION_CID}"


@pytest.mark.parametrize("geo", ["<cid:loc@ua>", "cid:loc@ua", "<cid:loc@ua>;inserted-by=ua"])
def test_geolocation_with_or_without_brackets(make_invite, geo):
    req = with_body(make_invite, geo, [SDP_PART, pidf_part()])
    assert isinstance(extract_location(req), CallLocation)


def test_second_value_used_when_first_is_by_reference(make_invite):
    req = with_body(make_invite, "<https://lis.example/x>, <cid:loc@ua>", [SDP_PART, pidf_part()])
    assert isinstance(extract_location(req), CallLocation)


def test_nested_multipart(make_invite):
    inner_ct, inner = build_multipart([pidf_part()])
    req = with_body(make_invite, "<cid:loc@ua>", [SDP_PART, BodyPart(inner_ct, inner)])
    assert isinstance(extract_location(req), CallLocation)


@pytest.mark.parametrize(
    ("geo", "parts", "why"),
    [
        (None, [SDP_PART, pidf_part()], "no Geolocation"),
        ("<https://lis.example/loc/1>", [SDP_PART], "not dereferenced"),
        ("<cid:other@ua>", [SDP_PART, pidf_part()], "no body part with Content-ID other@ua"),
        ("<cid:loc@ua>", [SDP_PART, pidf_part(data=b"<presence")], "garbled PIDF-LO"),
        (
            "<cid:loc@ua>",
            [SDP_PART, pidf_part(data=b"<!DOCTYPE x [<!ENTITY a 'b'>]><x/>")],
            "garbled",
        ),
        ("<cid:loc@ua", [SDP_PART, pidf_part()], "unparsable Geolocation"),
        ("", [SDP_PART, pidf_part()], "Geolocation"),
    ],
)
def test_unusable_location_gives_a_reason(make_invite, geo, parts, why):
    req = with_body(make_invite, geo, parts)
    loc = extract_location(req)
    assert isinstance(loc, LocationProblem)
    assert why in loc.reason


def test_garbled_multipart_and_missing_body(make_invite):
    req = with_body(make_invite, "<cid:loc@ua>", [], raw=("multipart/mixed;boundary=zz", b"junk"))
    assert isinstance(extract_location(req), LocationProblem)
    req = make_invite("urn:service:sos", extra=(("Geolocation", "<cid:loc@ua>"),))
    assert "no body" in extract_location(req).reason


def test_default_location_added_to_multipart_keeps_original_parts():
    req = sample()
    original_body = req.body
    headers_before = [(n, v) for n, v in req.headers if n not in ("Geolocation",)]
    uri = add_default_location(req, 40.7128, -74.0060, "esrp.example")
    assert uri.startswith("cid:default-")
    # Geolocation: ours first, the caller's kept
    geo = req.headers.get_all("Geolocation")
    assert geo[0] == f"<{uri}>"
    assert geo[1] == f"<cid:{LOCATION_CID}>"
    # every other header unchanged (Content-Type keeps its boundary)
    assert [(n, v) for n, v in req.headers if n != "Geolocation"] == headers_before
    # the original parts are byte-identical, the new one appended
    old = parse_multipart(req.headers.get("Content-Type"), original_body)
    new = parse_multipart(req.headers.get("Content-Type"), req.body)
    assert new[: len(old)] == old
    assert new[-1].content_id == uri[4:]
    loc = extract_location(req)
    assert isinstance(loc, CallLocation)
    assert loc.location == Point(40.7128, -74.0060)
    assert loc.pidf.primary.method == "Default"


def test_default_location_wraps_a_single_body(make_invite):
    req = make_invite("urn:service:sos", body=SDP.encode(), content_type="application/sdp")
    add_default_location(req, 40.7, -74.0, "esrp.example")
    assert req.headers.get("Content-Type").startswith("multipart/mixed")
    sdp = find_part(req.headers.get("Content-Type"), req.body, mime="application/sdp")
    assert sdp is not None and sdp.body == SDP.encode()
    assert isinstance(extract_location(req), CallLocation)


def test_default_location_wraps_a_garbled_multipart_and_an_empty_body(make_invite):
    req = make_invite("urn:service:sos", body=b"junk", content_type="multipart/mixed;boundary=zz")
    add_default_location(req, 40.7, -74.0, "esrp.example")
    assert isinstance(extract_location(req), CallLocation)
    req = make_invite("urn:service:sos")
    add_default_location(req, 40.7, -74.0, "esrp.example")
    assert isinstance(extract_location(req), CallLocation)


POLICY = RoutingPolicy(
    default_route="sip:default@psap.example",
    alternates=(("sip:psap-bronx@esinet.example", ("sip:psap-queens@esinet.example",)),),
)


def test_pick_sip_uri():
    uris = ("xmpp:psap@example.com", "sip:psap@example.com", "sips:psap@example.com")
    assert pick_sip_uri(uris) == "sip:psap@example.com"
    assert pick_sip_uri(uris, prefer_secure=True) == "sips:psap@example.com"
    assert pick_sip_uri(("xmpp:a@b", "mailto:c@d")) is None


def test_plan_found_alternate_then_default():
    plan = plan_routes(LostFound(("xmpp:x@y", "sip:psap-bronx@esinet.example"), "ecrf"), POLICY)
    assert [c.uri for c in plan] == [
        "sip:psap-bronx@esinet.example",
        "sip:psap-queens@esinet.example",
        "sip:default@psap.example",
    ]
    assert plan[0].reason == "LoST mapping from ecrf"
    assert "alternate of" in plan[1].reason


def test_plan_without_sip_uri_goes_to_default():
    plan = plan_routes(LostFound(("xmpp:x@y",)), POLICY)
    assert [c.uri for c in plan] == ["sip:default@psap.example"]
    assert "no SIP URI" in plan[0].reason


@pytest.mark.parametrize(
    ("outcome", "why"),
    [
        (LostNotFound("no mapping"), "LoST notFound"),
        (LostUnreachable("connection refused"), "LoST unreachable"),
        (NoLocation("no Geolocation header"), "no usable location"),
    ],
)
def test_plan_default_route(outcome, why):
    plan = plan_routes(outcome, POLICY)
    assert plan[0].uri == "sip:default@psap.example"
    assert plan[0].reason.startswith(why)


def test_sips_policy_on_a_tls_hop():
    tls = RoutingPolicy("sip:default@psap.example", hop_transport="tls")
    plan = plan_routes(LostFound(("sip:psap@esinet.example:5070;transport=udp",)), tls)
    assert plan[0].uri == "sips:psap@esinet.example:5070"
    assert "sips policy" in plan[0].reason
    assert plan[1].uri == "sips:default@psap.example"


def test_transport_param_on_udp_and_tcp_hops():
    tcp = RoutingPolicy("sip:d@x", hop_transport="tcp")
    assert apply_hop_policy("sip:p@h:5060", tcp)[0] == "sip:p@h:5060;transport=tcp"
    keep = RoutingPolicy("sip:d@x", sips_policy="keep", hop_transport="tls")
    assert apply_hop_policy("sip:p@h", keep) == ("sip:p@h", None)


def test_require_policy_skips_non_sips_uris():
    req = RoutingPolicy("sips:default@psap.example", sips_policy="require")
    plan = plan_routes(LostFound(("sip:psap@esinet.example",)), req)
    assert [c.uri for c in plan] == ["sips:default@psap.example"]
    assert "skipped" in plan[0].reason


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, True),
        (408, True),
        (500, True),
        (503, True),
        (603, True),
        (180, False),
        (200, False),
        (486, True),  # every taker busy: the alternate PSAP may have one free
        (480, True),  # no taker registered (e.g. a psapd just restarted)
        (404, False),
        (487, False),
    ],
)
def test_should_fail_over(status, expected):
    assert should_fail_over(status, POLICY) is expected


def test_hostile_bodies_give_a_reason_not_an_exception(make_invite):
    # multipart nested deeper than the SIP layer allows
    ctype, body = "application/pidf+xml", PIDF.encode()
    part = BodyPart(ctype, body, (("Content-ID", "<loc@ua>"),))
    ct, b = build_multipart([part])
    for _ in range(12):
        ct, b = build_multipart([BodyPart(ct, b)])
    req = make_invite(
        "urn:service:sos", extra=(("Geolocation", "<cid:loc@ua>"),), body=b, content_type=ct
    )
    assert isinstance(extract_location(req), LocationProblem)
    # multipart without a boundary, entity expansion, a huge document
    bomb = b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaaaaaaaa">]><p>&a;&a;</p>'
    for ct, b in [
        ("multipart/mixed", b"--x\r\n\r\n--x--"),
        *[build_multipart([SDP_PART, pidf_part(data=d)]) for d in (bomb, b"<p>" * 200_000)],
    ]:
        req = make_invite(
            "urn:service:sos", extra=(("Geolocation", "<cid:loc@ua>"),), body=b, content_type=ct
        )
        assert isinstance(extract_location(req), LocationProblem)
        add_default_location(req, 40.7, -74.0, "esrp.example")
        assert isinstance(extract_location(req), CallLocation)
