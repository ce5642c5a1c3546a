"""The lazy-parse cache of `Headers`: per-header invalidation, shared by copies, seeded by
writers; and `replace_first` (the §18.2.1 top-Via stamp). Each fast path is checked
against what a fresh parse of the serialised message says."""

import pytest

from ng911.sip.headers import Via, parse_via
from ng911.sip.message import CACHE_SLOTS, Headers, Request, Response
from ng911.sip.parse import parse_message

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa;rport, "
    b"SIP/2.0/TCP 192.0.2.9;branch=z9hG4bKb\r\n"
    b"Max-Forwards: 70\r\n"
    b"Route: <sip:p1.example;lr>\r\n"
    b"v: SIP/2.0/UDP 192.0.2.8;branch=z9hG4bKc\r\n"
    b'From: "A" <sip:alice@example.com>;tag=1\r\n'
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: c1@192.0.2.1\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def parsed() -> Request:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    return msg


def reparsed(msg: Request | Response) -> Request | Response:
    return parse_message(msg.to_bytes())


def same_views(a: Request | Response, b: Request | Response) -> None:
    """Every cached view of `a` equals a fresh parse (`b`)."""
    assert a.top_via == b.top_via
    assert a.vias == b.vias
    assert a.from_addr == b.from_addr
    assert a.to_addr == b.to_addr
    assert a.cseq == b.cseq


def test_via_edit_keeps_other_slots_and_drops_via_slots():
    msg = parsed()
    frm, to, cseq = msg.from_addr, msg.to_addr, msg.cseq
    assert msg.top_via.branch == "z9hG4bKa"
    msg.headers.prepend("Via", "SIP/2.0/UDP proxy.example:5060;branch=z9hG4bKp")
    # From/To/CSeq stay parsed (the same objects), Via is re-read
    assert msg.from_addr is frm and msg.to_addr is to and msg.cseq is cseq
    assert msg.top_via.branch == "z9hG4bKp"
    assert [v.branch for v in msg.vias] == ["z9hG4bKp", "z9hG4bKa", "z9hG4bKb", "z9hG4bKc"]
    same_views(msg, reparsed(msg))
    assert msg.headers.remove_first("Via") == "SIP/2.0/UDP proxy.example:5060;branch=z9hG4bKp"
    assert msg.top_via.branch == "z9hG4bKa" and msg.from_addr is frm
    same_views(msg, reparsed(msg))


@pytest.mark.parametrize(
    ("name", "value", "check"),
    [
        ("From", "<sip:carol@example.com>;tag=9", lambda m: m.from_addr.tag == "9"),
        ("To", "<sip:dave@example.com>;tag=8", lambda m: m.to_addr.tag == "8"),
        ("CSeq", "8 INVITE", lambda m: m.cseq.seq == 8),
        ("Via", "SIP/2.0/TLS x.example;branch=z9hG4bKz", lambda m: m.top_via.branch == "z9hG4bKz"),
    ],
)
def test_editing_a_header_drops_its_own_slots(name, value, check):
    msg = parsed()
    same_views(msg, parsed())  # warm every slot
    msg.headers.set(name, value)
    assert check(msg)
    same_views(msg, reparsed(msg))


def test_unknown_slots_are_dropped_on_any_edit():
    msg = parsed()
    calls = []
    msg.headers.cached("mine", lambda: calls.append(1) or len(calls))
    msg.headers.set("Subject", "x")
    assert msg.headers.cached("mine", lambda: calls.append(1) or len(calls)) == 2
    assert "mine" not in CACHE_SLOTS


def test_a_foreign_slot_is_dropped_by_any_edit_after_each_time_it_is_set():
    """A slot outside CACHE_SLOTS, seeded by `remember` or computed by `cached`, is dropped
    by every edit of any header, in a copy too, while the slots of other headers stay."""
    msg = parsed()
    frm = msg.from_addr
    msg.headers.remember("mine", 1)
    cp = msg.copy()
    msg.headers.set("Max-Forwards", "69")
    assert msg.headers.cached("mine", lambda: 2) == 2  # dropped, computed again
    assert msg.from_addr is frm  # a slot of another header survives
    msg.headers.add("Subject", "x")
    assert msg.headers.cached("mine", lambda: 3) == 3  # the second edit drops it again
    cp.headers.prepend("Via", "SIP/2.0/UDP p.example;branch=z9hG4bKq")
    assert cp.headers.cached("mine", lambda: 4) == 4  # the copy's flag came along
    assert cp.from_addr is frm and cp.top_via.branch == "z9hG4bKq"
    same_views(cp, reparsed(cp))


def test_remove_drops_slots_only_when_something_was_removed():
    msg = parsed()
    top = msg.top_via
    assert msg.headers.remove("Contact") == 0
    assert msg.top_via is top
    assert msg.headers.remove("Via") == 2  # fields, not values
    with pytest.raises(Exception, match="Via"):
        msg.top_via  # noqa: B018


def test_copy_shares_parsed_values_but_not_edits():
    msg = parsed()
    frm, top = msg.from_addr, msg.top_via
    cp = msg.copy()
    assert cp.from_addr is frm and cp.top_via is top  # not parsed again
    cp.headers.prepend("Via", "SIP/2.0/UDP p.example;branch=z9hG4bKq")
    cp.headers.set("From", "<sip:eve@example.com>;tag=2")
    assert cp.top_via.branch == "z9hG4bKq" and cp.from_addr.tag == "2"
    assert msg.top_via is top and msg.from_addr is frm  # the original is untouched
    same_views(cp, reparsed(cp))
    same_views(msg, reparsed(msg))


def test_remember_seeds_the_cache():
    msg = parsed()
    via = Via("UDP", "proxy.example", 5060, (("branch", "z9hG4bKr"), ("rport", None)))
    msg.headers.prepend("Via", str(via))
    msg.headers.remember("top_via", via)
    assert msg.top_via is via
    assert parse_via(str(via)) == via  # what a parse would have given
    same_views(msg, reparsed(msg))


def test_replace_first_single_value_field_in_place():
    msg = parsed()
    # make the top Via its own field first
    h = Headers(
        [
            ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"),
            ("To", "<sip:x@y>"),
            ("Via", "SIP/2.0/UDP b;branch=z9hG4bK2"),
        ]
    )
    assert h.replace_first("Via", "SIP/2.0/UDP a;branch=z9hG4bK1;received=192.0.2.7")
    assert list(h) == [
        ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1;received=192.0.2.7"),
        ("To", "<sip:x@y>"),
        ("Via", "SIP/2.0/UDP b;branch=z9hG4bK2"),
    ]
    assert not h.replace_first("Route", "<sip:r>")
    assert msg.headers.replace_first("Route", "<sip:p2.example;lr>")
    assert msg.routes[0].uri.host == "p2.example"


def test_replace_first_in_a_comma_list_keeps_the_rest_as_written():
    msg = parsed()
    stamped = str(msg.top_via.with_params(received="198.51.100.4", rport="4000"))
    assert msg.headers.replace_first("Via", stamped)
    vias = [v for n, v in msg.headers if n == "Via"]
    assert vias == [
        stamped,
        "SIP/2.0/TCP 192.0.2.9;branch=z9hG4bKb",
        "SIP/2.0/UDP 192.0.2.8;branch=z9hG4bKc",
    ]
    again = reparsed(msg)
    same_views(msg, again)
    assert again.top_via.received == "198.51.100.4" and again.top_via.rport == "4000"
    # equal to what the old remove_first + prepend produced
    old = parsed()
    old.headers.remove_first("Via")
    old.headers.prepend("Via", stamped)
    assert old == msg
