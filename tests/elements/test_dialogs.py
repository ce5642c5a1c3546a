"""The dialog-path table of the proxies (`ng911.elements.dialogs`): lookup by Call-ID and tags
in both directions, the route a request without one is given, and the bounds."""

from __future__ import annotations

from ng911.elements.dialogs import DialogTable, path_of, reroute
from ng911.sip.message import Request, Response
from ng911.sip.parse import parse_message
from ng911.sip.uri import URI, SipURI

INVITE = (
    "INVITE urn:service:sos SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa\r\n"
    "From: <sip:alice@vsp.example>;tag=caller\r\n"
    "To: <urn:service:sos>\r\n"
    "Call-ID: c1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:alice@10.0.0.1:5060>\r\n"
    "Content-Length: 0\r\n\r\n"
)
FORWARDED = INVITE.replace("To: ", "Route: <sip:esrp.example:5060;lr>\r\nTo: ")
OK = (
    "SIP/2.0 200 OK\r\n"
    "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa\r\n"
    "Record-Route: <sip:psap.example:5080;lr>, <sip:esrp.example:5060;lr>\r\n"
    "Record-Route: <sip:vsp.example:5070;lr>\r\n"
    "From: <sip:alice@vsp.example>;tag=caller\r\n"
    "To: <urn:service:sos>;tag=callee\r\n"
    "Call-ID: c1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:taker@10.0.0.9:5090>\r\n"
    "Content-Length: 0\r\n\r\n"
)


def msg(text: str) -> Request | Response:
    return parse_message(text.encode())


def in_dialog(method: str, from_tag: str, to_tag: str, call_id: str = "c1") -> Request:
    m = msg(
        f"{method} urn:service:sos SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKb\r\n"
        f"From: <sip:x@vsp.example>;tag={from_tag}\r\n"
        f"To: <urn:service:sos>;tag={to_tag}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 2 {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    assert isinstance(m, Request)
    return m


def own(host: str):
    def is_own(uri: URI) -> bool:
        return isinstance(uri, SipURI) and uri.host == host

    return is_own


def table() -> DialogTable:
    t = DialogTable(lifetime=100.0, max_entries=3)
    inv, fwd, ok = msg(INVITE), msg(FORWARDED), msg(OK)
    assert isinstance(inv, Request) and isinstance(fwd, Request) and isinstance(ok, Response)
    t.remember("c1", "caller", "callee", path_of(inv, fwd, ok, up_uri="sip:10.0.0.1;lr"), 0.0)
    return t


def test_lookup_both_directions_and_reroute() -> None:
    t = table()
    # the caller's BYE at the VSP: downstream, the route past the VSP, the taker's Contact
    bye = in_dialog("BYE", "caller", "callee")
    found = t.lookup(bye, 1.0)
    assert found is not None and found[1] is True
    reroute(bye, found[0], downstream=True, is_own=own("vsp.example"))
    assert str(bye.uri) == "sip:taker@10.0.0.9:5090"
    assert bye.headers.get_all("Route") == [
        "<sip:esrp.example:5060;lr>",
        "<sip:psap.example:5080;lr>",
    ]
    # the taker's BYE at the ESRP: upstream, the VSP still ahead, the caller's Contact
    back = in_dialog("BYE", "callee", "caller")
    found = t.lookup(back, 1.0)
    assert found is not None and found[1] is False
    reroute(back, found[0], downstream=False, is_own=own("esrp.example"))
    assert str(back.uri) == "sip:alice@10.0.0.1:5060"
    assert back.headers.get_all("Route") == ["<sip:vsp.example:5070;lr>"]
    # other dialogs (tags, Call-ID) and requests without both tags match nothing
    assert t.lookup(in_dialog("BYE", "caller", "other"), 1.0) is None
    assert t.lookup(in_dialog("BYE", "caller", "callee", call_id="c2"), 1.0) is None


def test_forget_expire_and_cap() -> None:
    t = table()
    bye = in_dialog("BYE", "callee", "caller")
    t.forget(bye)  # either direction's BYE ends it
    assert len(t) == 0 and t.lookup(bye, 1.0) is None
    t = table()
    assert t.lookup(bye, 99.0) is not None
    assert t.lookup(bye, 100.0) is None  # past its lifetime
    assert len(t) == 0
    t = table()
    path = t.lookup(bye, 1.0)
    assert path is not None
    for i in range(10):
        t.remember(f"x{i}", "a", "b", path[0], 2.0)
    assert len(t) == 3  # the cap: the oldest left first
    assert t.lookup(bye, 3.0) is None


def test_reroute_without_contacts_uses_what_was_seen() -> None:
    inv = msg(INVITE.replace("Contact: <sip:alice@10.0.0.1:5060>\r\n", ""))
    fwd = msg(FORWARDED)
    ok = msg(
        OK.replace("Contact: <sip:taker@10.0.0.9:5090>\r\n", "")
        .replace("Record-Route: <sip:psap.example:5080;lr>, <sip:esrp.example:5060;lr>\r\n", "")
        .replace("Record-Route: <sip:vsp.example:5070;lr>\r\n", "")
    )
    assert isinstance(inv, Request) and isinstance(fwd, Request) and isinstance(ok, Response)
    path = path_of(inv, fwd, ok, up_uri="sip:10.0.0.1:5060;transport=udp;lr")
    down = in_dialog("ACK", "caller", "callee")
    reroute(down, path, downstream=True, is_own=own("vsp.example"))
    assert str(down.uri) == "urn:service:sos"
    assert down.headers.get_all("Route") == ["<sip:esrp.example:5060;lr>"]
    up = in_dialog("BYE", "callee", "caller")
    reroute(up, path, downstream=False, is_own=own("vsp.example"))
    assert up.headers.get_all("Route") == ["<sip:10.0.0.1:5060;transport=udp;lr>"]
