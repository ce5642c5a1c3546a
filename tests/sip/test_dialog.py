"""Dialogs (RFC 3261 §12): creation on both sides, in-dialog requests, routing, validation."""

from __future__ import annotations

from typing import Any

import pytest

from ng911.sip.dialog import AckWait, Dialog, DialogError, DialogId, DialogState
from ng911.sip.headers import Via
from ng911.sip.message import Request, Response, make_response
from ng911.sip.parse import parse_message
from ng911.sip.transaction import (
    Action,
    CancelTimer,
    Send,
    StartTimer,
    Timeout,
    TimerConfig,
)
from ng911.sip.uri import NameAddr, SipURI, parse_uri

INVITE = (
    "INVITE {ruri} SIP/2.0\r\n"
    "Via: SIP/2.0/{transport} 192.0.2.10:5060;branch=z9hG4bKinv1\r\n"
    "Max-Forwards: 70\r\n"
    'From: "Caller" <sip:alice@vsp.example>;tag=uac-tag\r\n'
    "To: <urn:service:sos>\r\n"
    "Call-ID: dlg-1@192.0.2.10\r\n"
    "CSeq: 10 INVITE\r\n"
    "Contact: <{contact}>\r\n"
    'Proxy-Authorization: Digest username="alice", realm="vsp"\r\n'
    "{extra}"
    "Content-Length: 0\r\n\r\n"
)


def invite(
    *,
    ruri: str = "urn:service:sos",
    contact: str = "sip:alice@192.0.2.10:5060",
    transport: str = "UDP",
    record_route: tuple[str, ...] = (),
    extra: str = "",
) -> Request:
    rr = "".join(f"Record-Route: {r}\r\n" for r in record_route)
    msg = parse_message(
        INVITE.format(ruri=ruri, contact=contact, transport=transport, extra=rr + extra).encode()
    )
    assert isinstance(msg, Request)
    return msg


def answer(
    req: Request,
    status: int = 200,
    *,
    to_tag: str | None = "uas-tag",
    contact: str | None = "sip:calltaker@203.0.113.5:5070",
    record_route: tuple[str, ...] | None = None,
) -> Response:
    resp = make_response(req, status, to_tag=to_tag)
    if record_route is not None:  # override what make_response copied from the request
        resp.headers.remove("Record-Route")
        for r in record_route:
            resp.headers.add("Record-Route", r)
    if contact is not None:
        resp.headers.add("Contact", f"<{contact}>")
    # over the wire and back, as the UAC would see it
    parsed = parse_message(resp.to_bytes())
    assert isinstance(parsed, Response)
    return parsed


RR = ("<sip:esrp.esinet.example;lr>", "<sip:vsp-proxy.example;lr>")  # as the UAS sees them


# --------------------------------------------------------------------------------------------
# Creation


def test_uac_dialog_from_2xx() -> None:
    inv = invite(record_route=RR)
    d = Dialog.uac_from_response(inv, answer(inv))
    assert d.id == DialogId("dlg-1@192.0.2.10", "uac-tag", "uas-tag")
    assert d.state is DialogState.CONFIRMED
    assert d.is_uac
    assert d.local_seq == 10 and d.remote_seq is None
    assert str(d.remote_target) == "sip:calltaker@203.0.113.5:5070"
    # §12.1.2: Record-Route reversed on the UAC side
    assert [str(r.uri) for r in d.route_set] == [
        "sip:vsp-proxy.example;lr",
        "sip:esrp.esinet.example;lr",
    ]
    assert str(d.local_uri.uri) == "sip:alice@vsp.example" and d.local_uri.tag is None
    assert d.local_uri.display == "Caller"
    assert str(d.remote_uri.uri) == "urn:service:sos"
    assert not d.secure
    assert str(d.local_target) == "sip:alice@192.0.2.10:5060"
    assert d.id == DialogId.of_received_response(answer(inv))


def test_uas_dialog_from_invite() -> None:
    inv = invite(record_route=RR)
    d = Dialog.uas_from_request(inv, "uas-tag", local_target=parse_uri("sip:ct@203.0.113.5"))
    assert d.id == DialogId("dlg-1@192.0.2.10", "uas-tag", "uac-tag")
    assert not d.is_uac
    assert d.local_seq is None and d.remote_seq == 10
    assert str(d.remote_target) == "sip:alice@192.0.2.10:5060"
    # §12.1.1: Record-Route in order on the UAS side
    assert [str(r.uri) for r in d.route_set] == [
        "sip:esrp.esinet.example;lr",
        "sip:vsp-proxy.example;lr",
    ]
    assert str(d.local_uri.uri) == "urn:service:sos"
    assert str(d.remote_uri.uri) == "sip:alice@vsp.example"


def test_secure_flag_from_sips_request_uri() -> None:
    inv = invite(ruri="sips:psap@psap.example", transport="TLS")
    assert Dialog.uac_from_response(inv, answer(inv)).secure
    assert Dialog.uas_from_request(inv, "t").secure
    assert not Dialog.uas_from_request(invite(ruri="sip:psap@psap.example"), "t").secure
    assert not Dialog.uas_from_request(inv, "t", over_tls=False).secure
    assert not Dialog.uac_from_response(inv, answer(inv), over_tls=False).secure


def test_early_dialog_then_confirmed() -> None:
    inv = invite(record_route=RR)
    ringing = answer(inv, 180, contact=None, record_route=RR[:1])
    d = Dialog.uac_from_response(inv, ringing)
    assert d.state is DialogState.EARLY
    assert d.remote_target == inv.uri  # no Contact in the 180: the Request-URI stands in
    assert len(d.route_set) == 1
    d.confirm(answer(inv))
    assert d.state is DialogState.CONFIRMED
    assert str(d.remote_target) == "sip:calltaker@203.0.113.5:5070"
    assert len(d.route_set) == 2  # recomputed from the 2xx
    with pytest.raises(DialogError):
        d.confirm(answer(inv, 486))


def test_uas_early_dialog_confirm() -> None:
    d = Dialog.uas_from_request(invite(), "t", early=True)
    assert d.state is DialogState.EARLY
    d.confirm()
    assert d.state is DialogState.CONFIRMED


@pytest.mark.parametrize(
    ("status", "kw"),
    [
        (100, {}),  # 100 never creates a dialog
        (180, {"to_tag": None}),  # 1xx without To tag: no early dialog
        (200, {"contact": None}),  # 2xx without Contact
        (486, {}),  # failures create nothing
    ],
    ids=["100", "180 no tag", "200 no contact", "486"],
)
def test_uac_dialog_refused(status: int, kw: dict[str, Any]) -> None:
    inv = invite()
    with pytest.raises(DialogError) as e:
        Dialog.uac_from_response(inv, answer(inv, status, **kw))
    assert e.value.status == 400


def test_uac_dialog_response_of_another_request() -> None:
    inv = invite()
    other = invite(extra="")
    other.headers.set("CSeq", "11 INVITE")
    with pytest.raises(DialogError):
        Dialog.uac_from_response(inv, answer(other))


def test_uac_dialog_without_to_tag_in_2xx_is_a_null_tag() -> None:
    inv = invite()
    d = Dialog.uac_from_response(inv, answer(inv, to_tag=None))
    assert d.remote_tag == ""
    bye = d.create_request("BYE")
    assert bye.to_addr.tag is None


def test_uas_dialog_needs_contact() -> None:
    inv = invite()
    inv.headers.remove("Contact")
    with pytest.raises(DialogError) as e:
        Dialog.uas_from_request(inv, "t")
    assert e.value.status == 400


# --------------------------------------------------------------------------------------------
# In-dialog requests (§12.2.1.1)


def test_bye_from_uac_loose_routing() -> None:
    inv = invite(record_route=RR)
    d = Dialog.uac_from_response(inv, answer(inv))
    bye = d.create_request("BYE")
    assert bye.method == "BYE"
    assert str(bye.uri) == "sip:calltaker@203.0.113.5:5070"  # remote target
    assert bye.headers.get_all("Route") == [
        "<sip:vsp-proxy.example;lr>",
        "<sip:esrp.esinet.example;lr>",
    ]
    assert str(bye.cseq) == "11 BYE"
    assert bye.from_addr.tag == "uac-tag" and bye.to_addr.tag == "uas-tag"
    assert bye.call_id == inv.call_id
    assert bye.max_forwards == 70
    # Via from the INVITE's, with a fresh branch
    assert bye.top_via.host == "192.0.2.10" and bye.top_via.port == 5060
    assert bye.branch is not None and bye.branch.startswith("z9hG4bK")
    assert bye.branch != inv.branch
    assert "Contact" not in bye.headers  # BYE is not a target refresh
    assert d.next_hop() == d.route_set[0].uri
    # the next request numbers on
    info = d.create_request(
        "INFO", body=b"{}", content_type="application/json", extra=[("Info-Package", "x")]
    )
    assert str(info.cseq) == "12 INFO"
    assert info.content_type == "application/json" and info.body == b"{}"
    assert info.headers.get("Info-Package") == "x"
    assert info.branch != bye.branch
    # and it survives the wire
    again = parse_message(info.to_bytes())
    assert isinstance(again, Request) and again.body == b"{}"


def test_bye_from_uas_uses_from_and_to_swapped() -> None:
    inv = invite(record_route=RR)
    d = Dialog.uas_from_request(inv, "uas-tag")
    via = Via("UDP", "203.0.113.5", 5070)
    bye = d.create_request("BYE", via=via)
    assert str(bye.cseq) == "1 BYE"  # local sequence starts here
    assert str(bye.uri) == "sip:alice@192.0.2.10:5060"
    assert bye.headers.get_all("Route") == list(RR)
    assert bye.from_addr.tag == "uas-tag" and str(bye.from_addr.uri) == "urn:service:sos"
    assert bye.to_addr.tag == "uac-tag" and str(bye.to_addr.uri) == "sip:alice@vsp.example"
    assert bye.top_via.host == "203.0.113.5" and bye.branch is not None
    # without any Via template the caller adds the Via
    assert "Via" not in Dialog.uas_from_request(inv, "x").create_request("BYE").headers


def test_no_route_set() -> None:
    inv = invite()
    d = Dialog.uac_from_response(inv, answer(inv))
    bye = d.create_request("BYE")
    assert "Route" not in bye.headers
    assert d.next_hop() == d.remote_target


def test_strict_router_fallback() -> None:
    # The first route (the UAC's nearest proxy) lacks lr: RFC 2543 strict routing.
    inv = invite(
        record_route=("<sip:esrp.esinet.example;lr>", "<sip:old.vsp.example;maddr=10.0.0.1>")
    )
    d = Dialog.uac_from_response(inv, answer(inv))
    bye = d.create_request("BYE")
    assert bye.uri == SipURI("sip", None, None, "old.vsp.example", None, (("maddr", "10.0.0.1"),))
    assert bye.headers.get_all("Route") == [
        "<sip:esrp.esinet.example;lr>",
        "<sip:calltaker@203.0.113.5:5070>",  # remote target last
    ]
    assert d.next_hop() == bye.uri


def test_strict_router_uri_loses_method_and_headers() -> None:
    route = NameAddr(parse_uri("sip:strict.example;method=INVITE?Subject=x"))
    inv = invite()
    d = Dialog.uac_from_response(inv, answer(inv))
    d.route_set = (route,)
    bye = d.create_request("BYE")
    assert str(bye.uri) == "sip:strict.example"
    assert bye.headers.get_all("Route") == ["<sip:calltaker@203.0.113.5:5070>"]


def test_reinvite_carries_contact() -> None:
    inv = invite()
    d = Dialog.uac_from_response(inv, answer(inv))
    reinv = d.create_request("INVITE", body=b"v=0\r\n", content_type="application/sdp")
    assert reinv.headers.get("Contact") == "<sip:alice@192.0.2.10:5060>"
    assert str(reinv.cseq) == "11 INVITE"


def test_create_ack_for_2xx() -> None:
    inv = invite(record_route=RR)
    d = Dialog.uac_from_response(inv, answer(inv))
    ack = d.create_ack(inv)
    assert ack.method == "ACK"
    assert str(ack.cseq) == "10 ACK"  # the INVITE's number (§13.2.2.4)
    assert d.local_seq == 10  # unchanged
    assert str(ack.uri) == "sip:calltaker@203.0.113.5:5070"
    assert ack.headers.get_all("Route") == [
        "<sip:vsp-proxy.example;lr>",
        "<sip:esrp.esinet.example;lr>",
    ]
    assert ack.headers.get("Proxy-Authorization") == inv.headers.get("Proxy-Authorization")
    assert ack.branch != inv.branch  # its own transaction
    assert ack.to_addr.tag == "uas-tag"
    sdp = d.create_ack(inv, body=b"v=0\r\n")
    assert sdp.content_type == "application/sdp"
    with pytest.raises(DialogError):
        d.create_ack(d.create_request("BYE"))


@pytest.mark.parametrize("method", ["ACK", "CANCEL", "ack"])
def test_ack_and_cancel_are_not_built_by_create_request(method: str) -> None:
    inv = invite()
    d = Dialog.uac_from_response(inv, answer(inv))
    with pytest.raises(DialogError):
        d.create_request(method)


def test_terminated_dialog_builds_nothing() -> None:
    inv = invite()
    d = Dialog.uac_from_response(inv, answer(inv))
    d.terminate()
    assert d.state is DialogState.TERMINATED
    with pytest.raises(DialogError) as e:
        d.create_request("BYE")
    assert e.value.status == 481


# --------------------------------------------------------------------------------------------
# Receiving in-dialog requests (§12.2.2)


def _pair() -> tuple[Request, Dialog, Dialog]:
    inv = invite(record_route=RR)
    uas = Dialog.uas_from_request(inv, "uas-tag", local_target=parse_uri("sip:ct@203.0.113.5"))
    uac = Dialog.uac_from_response(inv, answer(inv))
    return inv, uac, uas


def test_uas_accepts_the_uacs_requests() -> None:
    _, uac, uas = _pair()
    bye = parse_message(uac.create_request("BYE").to_bytes())
    assert isinstance(bye, Request)
    assert DialogId.of_received_request(bye) == uas.id
    uas.receive_request(bye)
    assert uas.remote_seq == 11


def test_uac_accepts_the_uass_requests() -> None:
    _, uac, uas = _pair()
    info = uas.create_request("INFO")
    uac.receive_request(info)
    assert uac.remote_seq == 1
    uac.receive_request(uas.create_request("INFO"))
    assert uac.remote_seq == 2


def test_out_of_order_cseq_is_500() -> None:
    _, uac, uas = _pair()
    first = uac.create_request("INFO")
    second = uac.create_request("INFO")
    uas.receive_request(second)
    with pytest.raises(DialogError) as e:
        uas.receive_request(first)
    assert e.value.status == 500
    assert uas.remote_seq == 12  # unchanged by the rejected request


def test_ack_and_cancel_are_exempt_from_the_cseq_check() -> None:
    inv, uac, uas = _pair()
    uas.receive_request(uac.create_request("INFO"))
    ack = uac.create_ack(inv)  # CSeq 10, lower than 11
    uas.receive_request(ack)
    assert uas.remote_seq == 11


def test_request_of_another_dialog_is_481() -> None:
    _, uac, uas = _pair()
    bye = uac.create_request("BYE")
    bye.headers.set("From", "<sip:mallory@evil.example>;tag=other")
    with pytest.raises(DialogError) as e:
        uas.receive_request(bye)
    assert e.value.status == 481


def test_target_refresh_by_reinvite() -> None:
    _, uac, uas = _pair()
    uac.local_target = parse_uri("sip:alice@198.51.100.77:5062")
    reinv = uac.create_request("INVITE")
    uas.receive_request(reinv)
    assert str(uas.remote_target) == "sip:alice@198.51.100.77:5062"
    # a BYE with a Contact is not a target refresh
    bye = uac.create_request("BYE")
    bye.headers.add("Contact", "<sip:elsewhere@192.0.2.99>")
    uas.receive_request(bye)
    assert str(uas.remote_target) == "sip:alice@198.51.100.77:5062"
    # and the UAC takes a new target from the 2xx of its re-INVITE
    uac.refresh_target(answer(reinv, contact="sip:ct2@203.0.113.6"))
    assert str(uac.remote_target) == "sip:ct2@203.0.113.6"


# --------------------------------------------------------------------------------------------
# The UAS's 2xx retransmission (§13.3.1.4)


def _kinds(actions: list[Action]) -> list[str]:
    out = []
    for a in actions:
        if isinstance(a, Send):
            out.append(f"send {a.message.status if isinstance(a.message, Response) else '?'}")
        elif isinstance(a, StartTimer):
            out.append(f"start {a.name}={a.delay:g}")
        elif isinstance(a, CancelTimer):
            out.append(f"cancel {a.name}")
        elif isinstance(a, Timeout):
            out.append(f"timeout {a.cause}")
        else:
            out.append(type(a).__name__.lower())
    return out


def test_ack_wait_retransmits_until_ack() -> None:
    inv, uac, _ = _pair()
    ok = answer(inv)
    wait = AckWait(ok)
    assert _kinds(wait.start()) == ["send 200", "start 2xx=0.5", "start 2xx-timeout=32"]
    assert _kinds(wait.on_timer("2xx")) == ["send 200", "start 2xx=1"]
    assert _kinds(wait.on_timer("2xx")) == ["send 200", "start 2xx=2"]
    assert _kinds(wait.on_timer("2xx")) == ["send 200", "start 2xx=4"]
    assert _kinds(wait.on_timer("2xx")) == ["send 200", "start 2xx=4"]  # capped at T2
    assert wait.on_timer("other") == []
    # an ACK for another INVITE (an earlier re-INVITE) does not end the wait
    stale = uac.create_ack(inv)
    stale.headers.set("CSeq", "9 ACK")
    assert wait.on_ack(stale) == []
    assert _kinds(wait.on_ack(uac.create_ack(inv))) == [
        "cancel 2xx",
        "cancel 2xx-timeout",
        "terminated",
    ]
    assert wait.done
    assert wait.on_timer("2xx") == [] and wait.on_ack(uac.create_ack(inv)) == []


def test_ack_wait_gives_up_after_64_t1() -> None:
    inv = invite()
    wait = AckWait(answer(inv), timers=TimerConfig(t1=0.1, t2=0.4))
    assert _kinds(wait.start()) == ["send 200", "start 2xx=0.1", "start 2xx-timeout=6.4"]
    assert _kinds(wait.on_timer("2xx-timeout")) == ["cancel 2xx", "timeout no ACK", "terminated"]
    assert wait.on_timer("2xx") == []


@pytest.mark.parametrize("status", [180, 486])
def test_ack_wait_only_for_2xx(status: int) -> None:
    inv = invite()
    with pytest.raises(DialogError):
        AckWait(answer(inv, status))
