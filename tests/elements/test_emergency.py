"""Originating-side emergency call recognition and rewriting (VSP)."""

import pytest

from ng911.elements.emergency import (
    DialPlan,
    classify,
    fix_resource_priority,
    rewrite_emergency,
)
from ng911.sip.uri import parse_uri

US = DialPlan.for_country("US")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:911@vsp.example", "urn:service:sos"),
        ("sip:911@10.0.0.1:5060;user=phone", "urn:service:sos"),
        ("sip:112@vsp.example", "urn:service:sos"),
        ("tel:911", "urn:service:sos"),
        ("urn:service:sos", "urn:service:sos"),
        ("urn:service:sos.fire", "urn:service:sos.fire"),
        ("urn:service:SOS.Police", "urn:service:sos.police"),
        ("urn:service:911", "urn:service:sos"),
        ("sip:bob@vsp.example", None),
        ("sip:9110@vsp.example", None),
        ("tel:+12125550100", None),
        ("urn:service:counseling", None),
        ("sip:vsp.example", None),
        ("mailto:911@example.com", None),
    ],
)
def test_classify(uri, expected):
    assert classify(parse_uri(uri), US) == expected


def test_dial_plan_per_country():
    gb = DialPlan.for_country("gb")
    assert classify(parse_uri("sip:999@vsp.example"), gb) == "urn:service:sos"
    assert classify(parse_uri("sip:911@vsp.example"), gb) is None
    custom = DialPlan.for_country("US", extra=["933"])
    assert classify(parse_uri("sip:933@vsp.example"), custom) == "urn:service:sos"
    # unknown country: 112 only
    assert DialPlan.for_country("ZZ").dial_strings == ("112",)


@pytest.mark.parametrize(
    ("values", "new", "changed"),
    [
        ([], "esnet.1", True),
        (["esnet.1"], "esnet.1", False),
        (["esnet.0"], "esnet.0", False),
        (["esnet.9"], "esnet.1", True),
        (["esnet.x"], "esnet.1", True),
        (["garbage"], "esnet.1", True),
        (["wps.2"], "esnet.1, wps.2", True),
        (["wps.2, esnet.7"], "esnet.1, wps.2", True),
    ],
)
def test_fix_resource_priority(values, new, changed):
    value, note = fix_resource_priority(values)
    assert value == new
    assert (note is not None) == changed


def test_rewrite_dialled_911(make_invite):
    req = make_invite(
        "sip:911@vsp.example",
        extra=(("Subject", "help"),),
        body=b"v=0\r\n",
        content_type="application/sdp",
    )
    out = rewrite_emergency(req, "urn:service:sos")
    assert str(out.request.uri) == "urn:service:sos"
    assert out.request.headers.get("To") == "<urn:service:sos>"
    assert out.request.headers.get("Resource-Priority") == "esnet.1"
    # everything else unchanged, and the original untouched
    assert out.request.headers.get("Subject") == "help"
    assert out.request.body == b"v=0\r\n"
    assert str(req.uri) == "sip:911@vsp.example"
    assert "Resource-Priority" not in req.headers
    assert len(out.changes) == 3


def test_rewrite_keeps_sub_service_and_display_name_and_replaces_bad_priority(make_invite):
    req = make_invite(
        "urn:service:sos.fire",
        to='"Fire" <urn:service:sos.fire>',
        extra=(("Resource-Priority", "esnet.77"),),
    )
    out = rewrite_emergency(req, "urn:service:sos.fire")
    assert str(out.request.uri) == "urn:service:sos.fire"
    assert out.request.headers.get("To") == '"Fire" <urn:service:sos.fire>'
    assert out.request.headers.get("Resource-Priority") == "esnet.1"
    assert out.changes == ("replaced invalid Resource-Priority 'esnet.77' by 'esnet.1'",)


def test_rewrite_to_with_display_name(make_invite):
    req = make_invite("tel:911", to='"Emergency" <tel:911>')
    out = rewrite_emergency(req, "urn:service:sos")
    assert out.request.headers.get("To") == '"Emergency" <urn:service:sos>'
