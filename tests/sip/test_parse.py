"""ng911.sip.parse: datagrams, stream framing, and every way a message can be bad."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ng911.sip.errors import SipParseError
from ng911.sip.headers import CSeq
from ng911.sip.message import Request, Response
from ng911.sip.parse import DEFAULT_MAX_SIZE, MAX_URI_LENGTH, StreamParser, parse_message
from ng911.sip.samples import emergency_invite, ok_with_sdp, ringing
from ng911.sip.uri import URN

OPTIONS = (
    b"OPTIONS sip:psap@esinet.example SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKopt1\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:monitor@example.net>;tag=m1\r\n"
    b"To: <sip:psap@esinet.example>\r\n"
    b"Call-ID: opt-1@192.0.2.1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def replace_line(data: bytes, prefix: bytes, new: bytes | None) -> bytes:
    """Replace (or drop, when `new` is None) the header line starting with `prefix`."""
    lines = data.split(b"\r\n")
    out = []
    for line in lines:
        if line.startswith(prefix) and prefix:
            if new is not None:
                out.append(new)
        else:
            out.append(line)
    return b"\r\n".join(out)


def parse_error(data: bytes, **kw: int) -> SipParseError:
    with pytest.raises(SipParseError) as ei:
        parse_message(data, **kw)
    return ei.value


# --- good messages -------------------------------------------------------------------------


def test_emergency_invite():
    m = parse_message(emergency_invite())
    assert isinstance(m, Request)
    assert m.method == "INVITE" and m.uri == URN("service", "sos")
    assert len(m.body) == int(m.headers.get("Content-Length") or -1)
    assert m.headers.get("Geolocation-Routing") == "yes"


def test_responses():
    r = parse_message(ringing())
    assert isinstance(r, Response) and (r.status, r.reason) == (180, "Ringing")
    assert len(r.vias) == 2 and r.body == b""
    ok = parse_message(ok_with_sdp())
    assert isinstance(ok, Response) and ok.body.startswith(b"v=0\r\n")
    odd = parse_message(OPTIONS.replace(b"OPTIONS sip:psap@esinet.example SIP/2.0", b"SIP/2.0 299"))
    assert isinstance(odd, Response) and odd.reason == ""
    spaced = parse_message(
        OPTIONS.replace(b"OPTIONS sip:psap@esinet.example SIP/2.0", b"SIP/2.0 404 Not  Found here")
    )
    assert isinstance(spaced, Response) and spaced.reason == "Not  Found here"


def test_tolerated_forms():
    data = (
        b"\r\n\r\n"  # RFC 3261 §7.5: leading CRLFs are ignored
        b"OPTIONS sip:psap@esinet.example SIP/2.0\n"  # bare LF line ends
        b"via   :   SIP/2.0/UDP 192.0.2.1:5060\n"  # LWS around the colon, lower-case name
        b"  ;branch=z9hG4bKfold\n"  # folded continuation (§7.3.1)
        b"f: <sip:monitor@example.net>;tag=m1\n"  # compact forms
        b"t: <sip:psap@esinet.example>\n"
        b"i: opt-2\n"
        b"CSEQ: 2 OPTIONS\n"
        b"Subject:\n"
        b"\tfolded subject\n"
        b"X-Empty:\n"
        b"l: 4\n"
        b"\n"
        b"bodyEXTRA"  # bytes beyond Content-Length are dropped (§18.3)
    )
    m = parse_message(data)
    assert isinstance(m, Request)
    assert m.top_via.branch == "z9hG4bKfold" and m.top_via.host == "192.0.2.1"
    assert m.call_id == "opt-2" and m.cseq.seq == 2
    assert m.headers.get("Subject") == "folded subject" and m.headers.get("X-Empty") == ""
    assert m.max_forwards is None  # a missing Max-Forwards is accepted
    assert m.body == b"body"


def test_datagram_without_content_length_takes_the_rest():
    m = parse_message(replace_line(OPTIONS, b"Content-Length", None) + b"abc")
    assert m.body == b"abc"


def test_header_only_datagram_without_blank_line():
    data = OPTIONS[: -len(b"\r\n")]  # ends after the last header line's CRLF
    assert parse_message(data).call_id == "opt-1@192.0.2.1"


def test_tel_and_sips_request_uris():
    for uri in (b"tel:+12125550100", b"sips:psap@esinet.example", b"urn:service:sos.fire"):
        m = parse_message(OPTIONS.replace(b"sip:psap@esinet.example SIP", uri + b" SIP"))
        assert isinstance(m, Request) and str(m.uri) == uri.decode()


def test_extension_method_and_version_case():
    data = OPTIONS.replace(b"OPTIONS sip", b"PUBLISH sip").replace(b"1 OPTIONS", b"1 PUBLISH")
    assert parse_message(data.replace(b"SIP/2.0\r\n", b"sip/2.0\r\n", 1)).method == "PUBLISH"


# --- bad messages: each a typed error with its status ---------------------------------------

ANSWERABLE = [
    # (what, mutation, status)
    ("SIP version 3.0", lambda d: d.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), 505),
    ("SIP version 1.0", lambda d: d.replace(b"SIP/2.0\r\n", b"SIP/1.0\r\n", 1), 505),
    ("unknown scheme", lambda d: d.replace(b"sip:psap@esinet.example", b"http://x/"), 416),
    ("cid scheme", lambda d: d.replace(b"sip:psap@esinet.example", b"cid:abc@x"), 416),
    (
        "URI too long",
        lambda d: d.replace(b"sip:psap@", b"sip:" + b"a" * MAX_URI_LENGTH + b"@"),
        414,
    ),
    ("bad URI", lambda d: d.replace(b"sip:psap@esinet.example", b"sip:psap@"), 400),
    ("bad URI no scheme", lambda d: d.replace(b"sip:psap@esinet.example", b"psap"), 400),
    ("CSeq not numeric", lambda d: replace_line(d, b"CSeq", b"CSeq: one OPTIONS"), 400),
    ("CSeq no method", lambda d: replace_line(d, b"CSeq", b"CSeq: 1"), 400),
    ("CSeq too big", lambda d: replace_line(d, b"CSeq", b"CSeq: 4294967296 OPTIONS"), 400),
    ("CSeq method mismatch", lambda d: replace_line(d, b"CSeq", b"CSeq: 1 INVITE"), 400),
    (
        "Content-Length > body",
        lambda d: replace_line(d, b"Content-Length", b"Content-Length: 10"),
        400,
    ),
    ("Content-Length negative", lambda d: replace_line(d, b"Content-Length", b"l: -1"), 400),
    ("Content-Length text", lambda d: replace_line(d, b"Content-Length", b"l: ten"), 400),
    ("Content-Length empty", lambda d: replace_line(d, b"Content-Length", b"l:"), 400),
    (
        "Content-Length conflicting",
        lambda d: replace_line(d, b"Content-Length", b"Content-Length: 0\r\nl: 3"),
        400,
    ),
    ("Max-Forwards text", lambda d: replace_line(d, b"Max-Forwards", b"Max-Forwards: many"), 400),
    ("Max-Forwards negative", lambda d: replace_line(d, b"Max-Forwards", b"Max-Forwards: -1"), 400),
    ("non-UTF-8 header", lambda d: replace_line(d, b"Max-Forwards", b"X-Name: caf\xe9"), 400),
    ("line without colon", lambda d: replace_line(d, b"Max-Forwards", b"Max-Forwards 70"), 400),
    ("space in name", lambda d: replace_line(d, b"Max-Forwards", b"Max Forwards: 70"), 400),
    ("empty name", lambda d: replace_line(d, b"Max-Forwards", b": 70"), 400),
    ("bad char in name", lambda d: replace_line(d, b"Max-Forwards", b"Max(Forwards): 70"), 400),
]


@pytest.mark.parametrize("what,mutate,status", ANSWERABLE, ids=[a[0] for a in ANSWERABLE])
def test_bad_request_is_answerable(what, mutate, status):
    err = parse_error(mutate(OPTIONS))
    assert err.status == status, err.reason
    assert isinstance(err.partial, Request)
    assert err.partial.call_id == "opt-1@192.0.2.1"
    assert err.reason and str(err).startswith(str(status))


@pytest.mark.parametrize("name", [b"Via", b"From", b"To", b"Call-ID", b"CSeq"])
def test_missing_mandatory_header(name):
    err = parse_error(replace_line(OPTIONS, name + b":", None))
    assert err.status == 400 and name.decode() in err.reason
    assert err.partial is None  # cannot be answered without it


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"hello",
        b"hello\r\n\r\n",
        b"OPTIONS\r\n\r\n",
        b"OPTIONS sip:x\r\n\r\n",
        b"OPTIONS sip:x SIP/2.0 extra\r\n\r\n",
        b"OPT@ONS sip:x SIP/2.0\r\n\r\n",
        b"OPTIONS sip:x HTTP/1.1\r\n\r\n",
        b"OPTIONS sip:x SIP/two\r\n\r\n",
        b"SIP/2.0\r\n\r\n",
        b"SIP/2.0 99 Low\r\n\r\n",
        b"SIP/2.0 700 High\r\n\r\n",
        b"SIP/2.0 2000 OK\r\n\r\n",
        "SIP/2.0 ١٠٠ OK\r\n\r\n".encode(),
        b"SIP/2.0 abc OK\r\n\r\n",
        b"SIP/3.0 200 OK\r\n\r\n",
        b"\xff\xfe\r\n\r\n",
        b"OPTIONS sip:x SIP/2.0\r\n folded first\r\n\r\n",
    ],
)
def test_garbage(data):
    err = parse_error(data)
    assert err.status == 400, err.reason


@pytest.mark.parametrize("line", [b"SIP/2.0 700 High", b"SIP/2.0 099 Low", b"SIP/2.0 20 OK"])
def test_status_code_out_of_range(line):
    err = parse_error(OPTIONS.replace(b"OPTIONS sip:psap@esinet.example SIP/2.0", line))
    assert err.status == 400 and "status" in err.reason


def test_response_missing_headers_is_400_without_partial():
    data = OPTIONS.replace(b"OPTIONS sip:psap@esinet.example SIP/2.0", b"SIP/2.0 200 OK")
    err = parse_error(replace_line(data, b"Call-ID", None))
    assert err.status == 400 and err.partial is None
    # a response's CSeq method is not compared with anything
    assert parse_message(replace_line(data, b"CSeq", b"CSeq: 1 INVITE")).cseq.method == "INVITE"


def test_oversize_datagram_is_413_with_partial():
    big = replace_line(OPTIONS, b"Content-Length", b"Content-Length: 70000") + b"x" * 70000
    err = parse_error(big)
    assert err.status == 413 and isinstance(err.partial, Request)
    err = parse_error(OPTIONS, max_size=100)
    assert err.status == 413 and err.partial is None  # the header section alone is too big
    err = parse_error(b"x" * (DEFAULT_MAX_SIZE + 1))
    assert err.status == 413


def test_uri_limit_is_configurable():
    assert parse_error(OPTIONS, max_uri=10).status == 414
    assert parse_message(OPTIONS, max_uri=len("sip:psap@esinet.example")).method == "OPTIONS"


def test_non_utf8_body_is_fine():
    data = replace_line(OPTIONS, b"Content-Length", b"Content-Length: 2") + b"\xff\xfe"
    assert parse_message(data).body == b"\xff\xfe"


# --- stream framing ------------------------------------------------------------------------


def test_stream_split_at_every_offset():
    data = emergency_invite() + ok_with_sdp()
    expected = [parse_message(emergency_invite()), parse_message(ok_with_sdp())]
    for cut in range(len(data) + 1):
        p = StreamParser()
        got = p.feed(data[:cut]) + p.feed(data[cut:])
        assert got == expected, cut
        assert p.buffered == 0


def test_stream_byte_by_byte_with_keepalives():
    data = b"\r\n\r\n" + OPTIONS + b"\r\n" + emergency_invite() + b"\r\n\r\n" + OPTIONS
    p = StreamParser()
    got = []
    for i in range(len(data)):
        got.extend(p.feed(data[i : i + 1]))
    assert [m.headers.get("CSeq") for m in got] == ["1 OPTIONS", "314159 INVITE", "1 OPTIONS"]
    assert p.keepalives >= 3 and not p.broken


def test_stream_many_messages_in_one_buffer():
    msgs = [OPTIONS, ringing(), emergency_invite(), ok_with_sdp()] * 5
    p = StreamParser()
    got = p.feed(b"".join(msgs))
    assert got == [parse_message(m) for m in msgs]
    assert p.feed(b"") == [] and p.feed(b"\r\n\r\n") == []


def test_stream_bare_lf():
    data = OPTIONS.replace(b"\r\n", b"\n")
    p = StreamParser()
    assert p.feed(data[:50]) == []
    (m,) = p.feed(data[50:])
    assert m.call_id == "opt-1@192.0.2.1"


def test_stream_unbounded_header_section_is_413():
    p = StreamParser(max_size=1000)
    p.feed(b"OPTIONS sip:x SIP/2.0\r\n")
    with pytest.raises(SipParseError) as ei:
        for _ in range(100):  # bounded: 100 x 30 bytes > max_size
            p.feed(b"X-Filler: aaaaaaaaaaaaaaaaaa\r\n")
    assert ei.value.status == 413
    assert p.broken and p.buffered == 0
    with pytest.raises(SipParseError):
        p.feed(OPTIONS)


def test_stream_declared_body_too_large_is_413_with_partial():
    p = StreamParser(max_size=2000)
    data = replace_line(OPTIONS, b"Content-Length", b"Content-Length: 5000")
    with pytest.raises(SipParseError) as ei:
        p.feed(data)
    assert ei.value.status == 413 and isinstance(ei.value.partial, Request)
    assert p.broken


def test_stream_missing_content_length_is_fatal():
    p = StreamParser()
    with pytest.raises(SipParseError) as ei:
        p.feed(OPTIONS + replace_line(OPTIONS, b"Content-Length", None))
    assert ei.value.status == 400 and "Content-Length" in ei.value.reason
    assert [m.method for m in ei.value.messages] == ["OPTIONS"]  # the good one came first
    assert isinstance(ei.value.partial, Request) and p.broken


@pytest.mark.parametrize(
    "bad",
    [
        b"garbage line\r\n\r\n",
        b"OPTIONS sip:x SIP/2.0\r\nContent-Length: -5\r\n\r\n",
        b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 1e3\r\n\r\n",
    ],
)
def test_stream_framing_garbage_is_fatal(bad):
    p = StreamParser()
    with pytest.raises(SipParseError) as ei:
        p.feed(bad)
    assert ei.value.status == 400 and p.broken


def test_stream_bad_but_framed_message_leaves_parser_usable():
    bad = replace_line(OPTIONS, b"Call-ID", None)
    p = StreamParser()
    with pytest.raises(SipParseError) as ei:
        p.feed(OPTIONS + bad + OPTIONS)
    assert ei.value.status == 400 and len(ei.value.messages) == 1
    assert not p.broken
    assert [m.method for m in p.feed(b"")] == ["OPTIONS"]  # the one after it is still there
    bad_version = OPTIONS.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1)
    with pytest.raises(SipParseError) as ei:
        p.feed(bad_version)
    assert ei.value.status == 505 and isinstance(ei.value.partial, Request) and not p.broken
    assert len(p.feed(OPTIONS)) == 1


# --- hostile input: only typed errors, never a crash ------------------------------------------

SAMPLES = [OPTIONS, emergency_invite(), ringing(), ok_with_sdp()]


def read_everything(m: Request | Response) -> None:
    """What an element might touch; each may raise only SipParseError."""
    for attr in ("call_id", "cseq", "from_addr", "to_addr", "vias", "top_via", "max_forwards",
                 "routes", "record_routes", "contacts"):  # fmt: skip
        try:
            getattr(m, attr)
        except SipParseError:
            pass
    m.to_bytes()


@settings(max_examples=300)
@given(st.sampled_from(SAMPLES), st.data())
def test_mutated_messages_raise_only_typed_errors(sample, data):
    buf = bytearray(sample)
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        pos = data.draw(st.integers(0, max(0, len(buf) - 1)))
        if op == "flip" and buf:
            buf[pos] = data.draw(st.sampled_from(b'\x00\r\n :;,<>"@%\\\xff\t=?/0'))
        elif op == "cut":
            del buf[pos:]
        elif op == "insert":
            buf[pos:pos] = data.draw(st.binary(max_size=8))
        elif buf:
            del buf[pos : pos + data.draw(st.integers(1, 20))]
    try:
        m = parse_message(bytes(buf))
    except SipParseError as e:
        assert 400 <= e.status <= 599 and e.reason
    else:
        read_everything(m)
    p = StreamParser(max_size=4096)
    try:
        for m in p.feed(bytes(buf)):
            read_everything(m)
    except SipParseError as e:
        assert 400 <= e.status <= 599


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_typed_errors(data):
    try:
        parse_message(data)
    except SipParseError:
        pass
    try:
        StreamParser(max_size=200).feed(data)
    except SipParseError:
        pass


@given(st.lists(st.sampled_from([*SAMPLES, b"\r\n\r\n", b"\r\n"]), max_size=6), st.data())
def test_stream_any_chunking(parts, data):
    stream = b"".join(parts)
    expected = [parse_message(m) for m in parts if m.strip()]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    p = StreamParser()
    got = []
    prev = 0
    for c in [*cuts, len(stream)]:
        got.extend(p.feed(stream[prev:c]))
        prev = c
    assert got == expected and p.buffered == 0


def test_stream_counts_rfc5626_pings():
    p = StreamParser()
    assert p.feed(b"\r\n\r\n") == [] and p.pings == 1
    assert p.feed(b"\r\n") == [] and p.pings == 1  # a pong
    assert len(p.feed(b"\r\n\r\n\r\n\r\n" + OPTIONS)) == 1 and p.pings == 3
    assert p.keepalives == 3


# --- RFC 4475 torture-test themes (messages written for these tests) ----------------------


def with_body(head: str, body: bytes = b"") -> bytes:
    return head.replace("\n", "\r\n").replace("{cl}", str(len(body))).encode() + body


def test_rfc4475_whitespace_torture():
    # §3.1.1.1 "wsinv": LWS, folding, odd case, compact forms everywhere; still valid.
    body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\n"
    data = with_body(
        "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\n"
        "TO :\n"
        " sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\n"
        'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>\n'
        "  ;\n"
        "  tag = 98asjd8\n"
        "MaX-fOrWaRdS: 0068\n"
        "Call-ID: wsinv.ndaksdj@192.0.2.1\n"
        "Content-Length   : {cl}\n"
        "cseq: 0009\n"
        "  INVITE\n"
        "Via  : SIP  /   2.0\n"
        " /UDP\n"
        "    192.0.2.2;branch=390skdjuw\n"
        "s :\n"
        "NewFangledHeader:   newfangled value\n"
        " continued newfangled value\n"
        "UnknownHeaderWithUnusualValue: ;;,,;;,;\n"
        "Content-Type: application/sdp\n"
        "Route:\n"
        " <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\n"
        "v:  SIP  / 2.0  / TCP     spindle.example.com   ;\n"
        "  branch  =   z9hG4bK9ikj8  ,\n"
        " SIP  /    2.0   / UDP  192.168.255.111   ; branch=\n"
        " z9hG4bK30239\n"
        'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =\n'
        "      newvalue ;\n"
        "  secondparam ; q = 0.33\n"
        "\n",
        body,
    )
    m = parse_message(data)
    assert isinstance(m, Request) and m.body == body
    m.validate()
    assert m.to_addr.tag == "1918181833n"
    assert m.from_addr.display == 'J Rosenberg \\"' and m.from_addr.tag == "98asjd8"
    assert m.max_forwards == 68 and m.cseq == CSeq(9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in m.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    (contact,) = m.contacts
    assert contact.display == 'Quoted string ""' and contact.param("q") == "0.33"
    assert contact.param("secondparam") == "" and contact.param("newparam") == "newvalue"
    assert m.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.headers.get("Subject") == ""
    assert m.routes[0].uri.has_param("unknown-no-value")  # type: ignore[union-attr]
    assert parse_message(m.to_bytes()) == m


def test_rfc4475_unusual_method_and_no_reason():
    # §3.1.1.2 "intmeth": a method of every token character; §3.1.1.13 "noreason".
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    data = OPTIONS.replace(b"OPTIONS sip", method.encode() + b" sip").replace(
        b"1 OPTIONS", b"1 " + method.encode()
    )
    assert parse_message(data).method == method
    resp = parse_message(
        OPTIONS.replace(b"OPTIONS sip:psap@esinet.example SIP/2.0", b"SIP/2.0 100 ")
    )
    assert isinstance(resp, Response) and resp.reason == ""


def test_rfc4475_two_requests_in_one_datagram():
    # §3.1.1.12 "dblreq": Content-Length 0 ends the message; what follows is ignored.
    m = parse_message(OPTIONS + OPTIONS.replace(b"opt-1", b"opt-2"))
    assert m.call_id == "opt-1@192.0.2.1" and m.body == b""


URI = b"sip:psap@esinet.example"
RFC4475_INVALID = [
    # (RFC 4475 test name, bytes of OPTIONS to replace, replacement, status)
    ("ncl: negative Content-Length", b"Length: 0", b"Length: -999", 400),
    ("scalarlg: CSeq 2**65", b"CSeq: 1 ", b"CSeq: 36893488147419103232 ", 400),
    ("scalarlg: Max-Forwards 300", b"Forwards: 70", b"Forwards: 300", 400),
    ("ltgtruri: <> around the URI", URI, b"<" + URI + b">", 400),
    ("lwsruri: LWS in the URI", URI, URI + b"; lr", 400),
    ("lwsstart: two spaces", b"OPTIONS sip", b"OPTIONS  sip", 400),
    ("trws: trailing space", b"SIP/2.0\r\nVia", b"SIP/2.0 \r\nVia", 400),
    ("escruri: unescaped space", URI, b"sip:user@example.com?Route=%3Csip:x%3E name", 400),
    ("multi01: two Call-IDs", b"CSeq:", b"Call-ID: other\r\nCSeq:", 400),
    ("multi01: two To", b"CSeq:", b"To: <sip:other@x>\r\nCSeq:", 400),
    ("multi01: two CSeq", b"CSeq: 1 OPTIONS", b"CSeq: 1 OPTIONS\r\nCSeq: 2 OPTIONS", 400),
    ("mismatch02: method vs CSeq", b"OPTIONS sip", b"NEWMETHOD sip", 400),
    ("unkscm: unknown scheme", URI, b"nobodyKnowsThisScheme:totally-opaque-content", 416),
    ("novelsc: novel scheme", URI, b"soap.beep://192.0.2.103:3002", 416),
    ("badvers: SIP/7.0", b"SIP/2.0\r\nVia", b"SIP/7.0\r\nVia", 505),
]


@pytest.mark.parametrize(
    "what,old,new,status", RFC4475_INVALID, ids=[t[0] for t in RFC4475_INVALID]
)
def test_rfc4475_invalid(what, old, new, status):
    data = OPTIONS.replace(old, new, 1)
    assert data != OPTIONS
    err = parse_error(data)
    assert err.status == status, err.reason


def test_rfc4475_unbalanced_quote_is_found_by_validate():
    # §3.1.2.7 "quotbal": headers are parsed lazily, so a proxy that never reads To
    # forwards it; a UAS calls validate() and answers 400.
    m = parse_message(replace_line(OPTIONS, b"To:", b'To: "Mr. J. User <sip:j.user@example.com>'))
    with pytest.raises(SipParseError) as ei:
        m.validate()
    assert ei.value.status == 400 and ei.value.partial is m


def test_a_folded_framing_header_is_read_whole() -> None:
    """CSeq, Content-Length and Max-Forwards are gathered while the lines are read; a
    continuation line that grows one of them afterwards is read as the whole value."""
    data = replace_line(OPTIONS, b"CSeq", b"CSeq: 7\r\n OPTIONS")
    data = replace_line(data, b"Content-Length", b"Content-Length:\r\n\t0")
    data = replace_line(data, b"Max-Forwards", b"Max-Forwards:\r\n 69")
    m = parse_message(data)
    assert isinstance(m, Request)
    assert m.cseq == CSeq(7, "OPTIONS") and m.max_forwards == 69 and m.body == b""
    assert StreamParser().feed(data)[0].cseq == CSeq(7, "OPTIONS")
    short = replace_line(OPTIONS, b"CSeq", b"CSeq: 7\r\n INVITE")  # folded into a mismatch
    with pytest.raises(SipParseError, match="CSeq method INVITE does not match OPTIONS"):
        parse_message(short)


def test_the_first_bad_line_is_reported_before_a_duplicate() -> None:
    """A duplicated single header is reported only when no line was bad in itself, as
    before the checks moved into the line loop."""
    dup = replace_line(OPTIONS, b"Call-ID", b"Call-ID: a\r\nCall-ID: b")
    with pytest.raises(SipParseError, match="more than one Call-ID"):
        parse_message(dup)
    both = replace_line(dup, b"Max-Forwards", b"Max-Forwards: 70\r\nno colon here")
    with pytest.raises(SipParseError, match="header line without a colon"):
        parse_message(both)


def test_a_bare_lf_anywhere_switches_to_lf_lines() -> None:
    """One bare LF among CRLF line ends (RFC 3261 §7.5 tolerance): every line is split."""
    mixed = replace_line(OPTIONS, b"Call-ID", b"Call-ID: mixed-1\nX-Bare: yes")
    m = parse_message(mixed)
    assert m.call_id == "mixed-1" and m.headers.get("X-Bare") == "yes"
    assert m.headers.get("CSeq") == "1 OPTIONS"  # the CRLF lines around it still end right
