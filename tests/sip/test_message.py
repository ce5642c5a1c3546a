"""ng911.sip.message: the header multimap, lazy views, serialisation, make_response."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sip_strategies import sip_uris

from ng911.sip.errors import SipParseError
from ng911.sip.headers import CSeq, Via
from ng911.sip.message import REASONS, Headers, Request, Response, header_key, make_response
from ng911.sip.parse import parse_message
from ng911.sip.samples import emergency_invite, ok_with_sdp, ringing
from ng911.sip.uri import URN, SipURI, parse_uri


def invite_headers() -> list[tuple[str, str]]:
    return [
        ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKabc"),
        ("Max-Forwards", "70"),
        ("From", "<sip:alice@example.com>;tag=111"),
        ("To", "<urn:service:sos>"),
        ("Call-ID", "cid-1@192.0.2.10"),
        ("CSeq", "1 INVITE"),
    ]


# --- Headers -----------------------------------------------------------------------------------


def test_headers_case_and_compact_forms():
    h = Headers([("v", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("f", "<sip:a@b>"), ("CALL-ID", "x")])
    assert list(h) == [
        ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"),
        ("From", "<sip:a@b>"),
        ("Call-ID", "x"),
    ]
    assert h.get("VIA") == h.get("v") == "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert h.get("call-id") == "x" and h.get("i") == "x"
    assert "from" in h and "F" in h and "To" not in h and 3 not in h
    assert len(h) == 3
    # unknown headers keep their spelling on output and match case-insensitively
    h.add("X-Custom-Thing", "1")
    assert h.get("x-custom-thing") == "1" and list(h)[-1] == ("X-Custom-Thing", "1")


def test_headers_comma_lists():
    h = Headers(
        [
            ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"),
            ("Via", "SIP/2.0/UDP c;branch=z9hG4bK3"),
            (
                "Call-Info",
                "<urn:emergency:uid:callid:1:esrp>;purpose=emergency-CallId,"
                '<https://x/a,b>;purpose="x,y"',
            ),
            ("Date", "Sat, 13 Nov 2010 23:29:00 GMT"),
            ("Allow", "INVITE,ACK , BYE"),
        ]
    )
    assert h.get_all("Via") == [
        "SIP/2.0/UDP a;branch=z9hG4bK1",
        "SIP/2.0/UDP b;branch=z9hG4bK2",
        "SIP/2.0/UDP c;branch=z9hG4bK3",
    ]
    assert h.get("Via") == "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert h.get_field("Via") == "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"
    assert h.get_all("Call-Info") == [
        "<urn:emergency:uid:callid:1:esrp>;purpose=emergency-CallId",
        '<https://x/a,b>;purpose="x,y"',
    ]
    assert h.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]  # not a list header
    assert h.get_all("Allow") == ["INVITE", "ACK", "BYE"]
    assert h.get_all("Route") == [] and h.get("Route") is None and h.get_field("Route") is None


def test_headers_mutations():
    h = Headers([("To", "a"), ("Route", "<sip:r1;lr>, <sip:r2;lr>"), ("Route", "<sip:r3;lr>")])
    h.prepend("Via", "SIP/2.0/UDP top")  # absent: at the very top
    assert next(iter(h)) == ("Via", "SIP/2.0/UDP top")
    h.prepend("Via", "SIP/2.0/UDP newer")
    assert h.get_all("Via") == ["SIP/2.0/UDP newer", "SIP/2.0/UDP top"]
    h.prepend("Route", "<sip:r0;lr>")
    assert h.get_all("Route") == ["<sip:r0;lr>", "<sip:r1;lr>", "<sip:r2;lr>", "<sip:r3;lr>"]
    assert h.remove_first("Route") == "<sip:r0;lr>"
    assert h.remove_first("route") == "<sip:r1;lr>"  # splits the comma list
    assert [v for n, v in h if n == "Route"] == ["<sip:r2;lr>", "<sip:r3;lr>"]
    assert h.remove_first("Route") == "<sip:r2;lr>"
    assert h.remove_first("Route") == "<sip:r3;lr>"
    assert h.remove_first("Route") is None
    h.add("Contact", "<sip:a>")
    h.add("Contact", "<sip:b>")
    h.set("contact", "<sip:c>")
    assert h.get_all("Contact") == ["<sip:c>"]
    h.set("Expires", "60")
    assert list(h)[-1] == ("Expires", "60")
    assert h.remove("Via") == 2 and h.remove("Via") == 0
    c = h.copy()
    c.add("X", "y")
    assert "X" not in h and c != h and h == h.copy()
    assert repr(h).startswith("Headers(")


# --- lazy views --------------------------------------------------------------------------------


def test_lazy_views_and_cache_invalidation():
    m = parse_message(emergency_invite())
    assert isinstance(m, Request)
    assert m.method == "INVITE" and m.uri == URN("service", "sos")
    assert m.call_id == "a84b4c76e66710@192.0.2.10"
    assert m.cseq == CSeq(314159, "INVITE")
    assert m.branch == "z9hG4bK776asdhds"
    assert m.top_via is m.top_via  # cached
    assert m.max_forwards == 70
    assert m.from_addr.tag == "1928301774" and m.from_addr.display == "Caller"
    assert m.to_addr.uri == URN("service", "sos") and m.to_addr.tag is None
    assert m.content_type is not None and m.content_type.startswith("multipart/mixed")
    assert len(m.contacts) == 1 and m.routes == [] and m.record_routes == []
    m.validate()
    m.headers.prepend("Via", "SIP/2.0/TLS vsp.example.net;branch=z9hG4bKvsp")
    assert m.branch == "z9hG4bKvsp" and len(m.vias) == 2  # the cache was dropped


def test_garbage_in_unread_headers_does_not_stop_a_proxy():
    data = emergency_invite().replace(
        b'From: "Caller" <sip:+12125550123@vsp.example.net>;tag=1928301774',
        b"From: <<<garbage",
    )
    m = parse_message(data)
    assert m.branch == "z9hG4bK776asdhds" and m.max_forwards == 70 and m.call_id
    with pytest.raises(SipParseError) as ei:
        m.from_addr  # noqa: B018
    assert ei.value.status == 400 and ei.value.partial is m
    with pytest.raises(SipParseError):
        m.validate()


@pytest.mark.parametrize(
    "header,value,attr",
    [
        ("Via", "garbage", "top_via"),
        ("Via", "garbage", "vias"),
        ("To", "<sip:", "to_addr"),
        ("Max-Forwards", "ten", "max_forwards"),
        ("Route", "<sip:x", "routes"),
        ("Record-Route", "nope nope", "record_routes"),
        ("Contact", "<>", "contacts"),
    ],
)
def test_lazy_errors_carry_the_request(header, value, attr):
    req = Request("OPTIONS", parse_uri("sip:x@example.com"), invite_headers())
    req.headers.set("CSeq", "1 OPTIONS")
    req.headers.set(header, value)
    with pytest.raises(SipParseError) as ei:
        getattr(req, attr)
    assert ei.value.status == 400 and ei.value.partial is req


def test_missing_headers_raise():
    r = Response(200)
    for attr in ("call_id", "cseq", "from_addr", "to_addr", "top_via", "vias"):
        with pytest.raises(SipParseError) as ei:
            getattr(r, attr)
        assert ei.value.status == 400 and ei.value.partial is None
    assert r.max_forwards is None and r.content_type is None


def test_contact_star_validates():
    req = Request("REGISTER", parse_uri("sip:registrar.example.net"), invite_headers())
    req.headers.set("CSeq", "2 REGISTER")
    req.headers.add("Contact", "*")
    req.validate()


# --- serialisation -------------------------------------------------------------------------


def test_to_bytes_sets_content_length():
    req = Request("MESSAGE", parse_uri("sip:psap@example.net"), invite_headers(), b"hello")
    req.headers.set("CSeq", "1 MESSAGE")
    data = req.to_bytes()
    assert data.startswith(b"MESSAGE sip:psap@example.net SIP/2.0\r\nVia: ")
    assert data.endswith(b"\r\nContent-Length: 5\r\n\r\nhello")
    assert bytes(req) == data
    req.headers.set("Content-Length", "999")
    req.body = b""
    assert b"Content-Length: 0\r\n\r\n" in req.to_bytes() and b"999" not in req.to_bytes()
    assert parse_message(req.to_bytes()) == req


def test_compact_forms_serialise_long():
    data = (
        b"OPTIONS sip:x@example.com SIP/2.0\r\nv: SIP/2.0/UDP a;branch=z9hG4bK1\r\n"
        b"f: <sip:a@b>;tag=1\r\nt: <sip:x@example.com>\r\ni: c1\r\nCSeq: 1 OPTIONS\r\n"
        b"k: timer\r\nl: 0\r\n\r\n"
    )
    out = parse_message(data).to_bytes()
    for long_form in (
        b"\r\nVia: ",
        b"\r\nFrom: ",
        b"\r\nTo: ",
        b"\r\nCall-ID: ",
        b"\r\nSupported: ",
    ):
        assert long_form in out
    assert out.endswith(b"\r\nContent-Length: 0\r\n\r\n")


def test_proxy_forwarding_keeps_other_headers_byte_identical():
    original = emergency_invite()
    m = parse_message(original)
    assert isinstance(m, Request)
    m.headers.prepend("Via", "SIP/2.0/TLS vsp.example.net:5061;branch=z9hG4bKvsp1")
    m.headers.prepend("Route", "<sip:esrp.esinet.example;lr>")
    m.headers.set("Max-Forwards", str((m.max_forwards or 70) - 1))
    out = m.to_bytes()
    head_in, body_in = original.split(b"\r\n\r\n", 1)
    head_out, body_out = out.split(b"\r\n\r\n", 1)
    assert body_in == body_out
    lines_out = set(head_out.split(b"\r\n"))
    for line in head_in.split(b"\r\n")[1:]:
        if not line.startswith(b"Max-Forwards"):
            assert line in lines_out
    assert b"Max-Forwards: 69" in lines_out
    again = parse_message(out)
    assert again == m
    # the element downstream pops what was pushed
    assert again.headers.remove_first("Route") == "<sip:esrp.esinet.example;lr>"
    assert (
        again.headers.remove_first("Via") == "SIP/2.0/TLS vsp.example.net:5061;branch=z9hG4bKvsp1"
    )
    assert again.to_bytes().split(b"\r\n\r\n")[0].count(b"\r\n") == original.split(b"\r\n\r\n")[
        0
    ].count(b"\r\n")


def test_request_response_equality_and_copy():
    m = parse_message(emergency_invite())
    c = m.copy()
    assert c == m and c is not m and c.headers is not m.headers
    c.headers.add("X", "1")
    assert c != m
    assert m != "not a message"
    r = parse_message(ringing())
    assert isinstance(r, Response) and r.copy() == r
    assert r.is_provisional and not r.is_final and not r.is_success
    ok = parse_message(ok_with_sdp())
    assert isinstance(ok, Response) and ok.is_success and ok.is_final
    assert repr(m) == "<Request INVITE urn:service:sos>" and repr(r) == "<Response 180 Ringing>"
    assert Response(486).reason == "Busy Here" and Response(299).reason == ""
    assert Response(200, "Fine").first_line == "SIP/2.0 200 Fine"


# --- make_response -------------------------------------------------------------------------


def test_make_response_copies_rfc3261_headers():
    req = parse_message(ringing().replace(b"SIP/2.0 180 Ringing", b"INVITE sip:psap@x SIP/2.0"))
    assert isinstance(req, Request)
    req.headers.set("To", "<urn:service:sos>")
    req.headers.add("Timestamp", "54")
    r = make_response(req, 180, to_tag="psaptag", extra=[("Contact", "<sip:psap@x>")])
    assert r.status == 180 and r.reason == "Ringing"
    assert [n for n, _ in r.headers] == [
        "Via", "Via", "From", "To", "Call-ID", "CSeq", "Record-Route", "Contact"
    ]  # fmt: skip
    assert r.headers.get_all("Via") == req.headers.get_all("Via")
    assert r.to_addr.tag == "psaptag" and r.headers.get("To") == "<urn:service:sos>;tag=psaptag"
    assert r.headers.get_all("Record-Route") == req.headers.get_all("Record-Route")
    assert "Timestamp" not in r.headers

    trying = make_response(req, 100)
    assert trying.reason == "Trying" and trying.headers.get("Timestamp") == "54"
    assert "Record-Route" not in trying.headers and trying.to_addr.tag is None

    busy = make_response(req, 486, to_tag="t")
    assert "Record-Route" not in busy.headers and busy.reason == "Busy Here"
    custom = make_response(req, 503, "Overloaded")
    assert custom.reason == "Overloaded"


def test_make_response_keeps_an_existing_to_tag_and_skips_rr_for_non_dialog():
    req = Request("OPTIONS", parse_uri("sip:x"), invite_headers())
    req.headers.set("CSeq", "1 OPTIONS")
    req.headers.set("To", "<sip:x>;tag=already")
    req.headers.add("Record-Route", "<sip:p;lr>")
    r = make_response(req, 200, to_tag="new")
    assert r.to_addr.tag == "already" and "Record-Route" not in r.headers
    # addr-spec To: the tag becomes a header parameter
    req.headers.set("To", "sip:x@example.com")
    assert make_response(req, 200, to_tag="t").to_addr.tag == "t"


def test_reasons_table():
    for code in (100, 180, 183, 200, 400, 404, 408, 413, 414, 416, 420, 481, 482, 483, 487, 488,
                 500, 503, 505, 603):  # fmt: skip
        assert REASONS[code]


# --- round-trip property -----------------------------------------------------------------------

_VALUE = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=30).map(
    str.strip
)
_EXTRA = st.lists(
    st.tuples(st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=12)
              .map(lambda s: "X-" + s), _VALUE),
    max_size=6,
)  # fmt: skip
_METHOD = st.sampled_from(["INVITE", "OPTIONS", "BYE", "MESSAGE", "SUBSCRIBE", "X-NEW"])


@given(_METHOD, sip_uris(), _EXTRA, st.binary(max_size=200))
def test_request_round_trip(method, uri, extra, body):
    headers = invite_headers()
    headers[-1] = ("CSeq", f"7 {method}")
    req = Request(method, uri, headers + extra, body)
    again = parse_message(req.to_bytes())
    assert again == req
    assert again.to_bytes() == req.to_bytes()


@given(st.integers(100, 699), _VALUE, _EXTRA, st.binary(max_size=200))
def test_response_round_trip(status, reason, extra, body):
    resp = Response(status, reason, invite_headers() + extra, body)
    again = parse_message(resp.to_bytes())
    assert again == resp
    assert isinstance(again, Response) and again.reason == reason


def test_via_object_as_header_value():
    v = Via("TLS", "esrp.esinet.example", 5061, (("branch", "z9hG4bKq"),))
    req = Request("INVITE", SipURI("sip", None, None, "psap.example"), invite_headers())
    req.headers.prepend("Via", str(v))
    assert req.top_via == v


def test_remove_first_tolerates_empty_list_elements():
    h = Headers([("Route", " , <sip:a;lr> ,<sip:b;lr>,"), ("Route", "<sip:c;lr>")])
    assert h.get("Route") == "<sip:a;lr>"
    assert h.remove_first("Route") == "<sip:a;lr>"
    assert h.get_field("Route") == "<sip:b;lr>,"
    assert h.remove_first("Route") == "<sip:b;lr>"
    assert h.get_all("Route") == ["<sip:c;lr>"]


_ROUTE = st.builds(lambda n: f"<sip:r{n}.example;lr>", st.integers(0, 99))


@given(st.lists(st.lists(_ROUTE, min_size=1, max_size=3), max_size=4))
def test_remove_first_pops_in_get_all_order(fields):
    h = Headers([("To", "x")] + [("Route", ", ".join(f)) for f in fields])
    expected = h.get_all("Route")
    assert expected == [r for f in fields for r in f]
    popped = []
    while (v := h.remove_first("Route")) is not None:
        popped.append(v)
        assert len(popped) <= len(expected)
    assert popped == expected and "Route" not in h and h.get("To") == "x"


_NAME = st.sampled_from(["Via", "v", "Route", "X-Tag", "x-tag", "Contact", "m", "Subject"])
_VALUE = st.text(alphabet=string.ascii_letters + string.digits + ";=<>:@.", max_size=12)
_EDIT = st.tuples(
    st.sampled_from(["add", "prepend", "set", "remove", "remove_first", "replace_first"]),
    _NAME,
    _VALUE,
)


@given(st.lists(st.tuples(_NAME, _VALUE), max_size=6), st.lists(_EDIT, max_size=12))
def test_header_edits_agree_with_a_list_of_fields(start, edits):
    """Headers keep their fields flat (three strings each); every edit gives what the same
    edit on a plain list of (key, name, value) fields gives (values without commas)."""
    h = Headers(start)
    model = [(*header_key(n), v) for n, v in start]
    for op, name, value in edits:
        key, out = header_key(name)
        at = next((i for i, f in enumerate(model) if f[0] == key), -1)
        if op == "add":
            h.add(name, value)
            model.append((key, out, value))
        elif op == "prepend":
            h.prepend(name, value)
            model.insert(max(at, 0), (key, out, value))
        elif op == "set":
            h.set(name, value)
            rest = [f for f in model if f[0] != key]
            field = (key, out, value)
            model = [*rest[:at], field, *rest[at:]] if at >= 0 else [*model, field]
        elif op == "remove":
            assert h.remove(name) == sum(f[0] == key for f in model)
            model = [f for f in model if f[0] != key]
        elif op == "remove_first":
            assert h.remove_first(name) == (model[at][2] if at >= 0 else None)
            if at >= 0:
                del model[at]
        else:
            assert h.replace_first(name, value) is (at >= 0)
            if at >= 0:
                model[at] = (key, model[at][1], value)
        assert h.fields() == model
        assert list(h) == [(o, v) for _, o, v in model] and len(h) == len(model)
        assert all(type(x) is str for x in h._items)  # no tuple per field held


def test_parsing_is_lazy():
    m = parse_message(emergency_invite())
    # Only CSeq (checked against the method while parsing) is parsed up front.
    assert set(m.headers._cache) <= {"cseq"}
    m.top_via  # noqa: B018
    assert "top_via" in m.headers._cache and "from" not in m.headers._cache


def test_essentials_keep_what_matching_and_answering_read() -> None:
    """`Request.essentials`: what a finished transaction holds for 64*T1 (RFC 6026)."""
    raw = (
        b"INVITE sip:psap@example.net SIP/2.0\r\n"
        b"v: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKa1, SIP/2.0/TLS 192.0.2.9;branch=z9hG4bKb\r\n"
        b"Record-Route: <sip:esrp.example;lr>\r\n"
        b"Max-Forwards: 69\r\n"
        b"f: <sip:alice@vsp.example>;tag=1\r\n"
        b"t: <urn:service:sos>\r\n"
        b"i: call-9\r\n"
        b"CSeq: 7 INVITE\r\n"
        b"m: <sip:alice@192.0.2.1:5061;transport=tls>\r\n"
        b"Geolocation: <cid:loc@vsp.example>\r\n"
        b"c: application/pidf+xml\r\n"
        b"l: 11\r\n\r\n<presence/>"
    )
    req = parse_message(raw)
    assert isinstance(req, Request)
    top = req.top_via  # parsed before; the essentials parse it again if asked
    slim = req.essentials()
    assert not slim.headers._cache  # nothing parsed comes along
    assert slim.body == b""
    assert [n for n, _ in slim.headers] == ["Via", "From", "To", "Call-ID", "CSeq"]
    assert (slim.method, slim.uri, slim.call_id, slim.cseq) == (
        req.method,
        req.uri,
        "call-9",
        req.cseq,
    )
    assert slim.headers.get_all("Via") == req.headers.get_all("Via")
    assert slim.top_via == top
    assert make_response(slim, 500).to_bytes() == make_response(req, 500).to_bytes()
    assert req.body == b"<presence/>" and "Geolocation" in req.headers  # the original is intact
    dialog = req.essentials(frozenset({"contact", "record-route"}))
    assert dialog.headers.get("Contact") == "<sip:alice@192.0.2.1:5061;transport=tls>"
    assert dialog.headers.get_all("Record-Route") == ["<sip:esrp.example;lr>"]
    assert "Geolocation" not in dialog.headers and dialog.body == b""
