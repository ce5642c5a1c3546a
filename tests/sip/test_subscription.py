"""The RFC 6665 core without sockets: notifier decisions, subscriber state, NOTIFY before 200."""

import pytest

from ng911.sip.headers import parse_via
from ng911.sip.message import Request, make_response
from ng911.sip.subscription import (
    ClientSubscription,
    EventHeader,
    Notifier,
    NotifierPolicy,
    SubscriptionError,
    accepts_type,
    parse_event,
    parse_subscription_state,
)
from ng911.sip.uri import NameAddr, parse_uri

PKG = "emergency-QueueState"
VIA = parse_via("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx")


def subscribe(event=PKG, expires="600", *, tag=None, seq=1, call_id="c1", accept=None):
    headers = [
        ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKs"),
        ("Max-Forwards", "70"),
        ("From", "<sip:esrp@esrp.example>;tag=sub"),
        ("To", "<sip:psap.example>" + (f";tag={tag}" if tag else "")),
        ("Call-ID", call_id),
        ("CSeq", f"{seq} SUBSCRIBE"),
        ("Contact", "<sip:esrp@127.0.0.1:5070>"),
    ]
    if event is not None:
        headers.append(("Event", event))
    if expires is not None:
        headers.append(("Expires", expires))
    if accept is not None:
        headers.append(("Accept", accept))
    return Request("SUBSCRIBE", parse_uri("sip:psap.example"), headers)


def notifier(**kw):
    return Notifier(NotifierPolicy(packages=(PKG,), **kw))


def test_refusals():
    n = notifier(min_expires=60)
    assert n.on_subscribe(subscribe(event=None), "h", 0).status == 400
    bad = n.on_subscribe(subscribe(event="presence"), "h", 0)
    assert bad.status == 489 and ("Allow-Events", PKG) in bad.headers
    assert n.on_subscribe(subscribe(accept="application/pidf+xml"), "h", 0).status == 406
    brief = n.on_subscribe(subscribe(expires="10"), "h", 0)
    assert brief.status == 423 and ("Min-Expires", "60") in brief.headers
    assert n.on_subscribe(subscribe(expires="ten"), "h", 0).status == 400
    assert n.on_subscribe(subscribe(tag="nope"), "h", 0).status == 481
    assert len(n) == 0


def test_accept_expires_cut_refresh_unsubscribe_and_fetch():
    n = notifier(max_expires=3600)
    a = n.on_subscribe(subscribe(expires="99999", event="Emergency-QueueState;id=7"), "h", 0)
    assert a.status == 200 and ("Expires", "3600") in a.headers and a.to_tag
    sub = a.subscription
    assert sub.event == EventHeader(PKG, "7") and len(n) == 1
    notify = n.notify(sub, b"{}", 100.0, via=VIA)
    assert notify.headers.get("Subscription-State") == "active;expires=3500"
    assert notify.headers.get("Event") == f"{PKG};id=7" and notify.cseq.seq == 1
    assert not n.notify_done(sub, 200)
    # a refresh in the dialog; a CSeq going back is 500 (RFC 3261 §12.2.2)
    ev = f"{PKG};id=7"
    again = n.on_subscribe(subscribe(expires="60", tag=a.to_tag, seq=2, event=ev), "h", 200)
    assert again.status == 200 and sub.expires_at == 260
    old = n.on_subscribe(subscribe(expires="60", tag=a.to_tag, seq=1, event=ev), "h", 200)
    assert old.status == 500
    gone = n.on_subscribe(subscribe(expires="0", tag=a.to_tag, seq=3, event=ev), "h", 210)
    assert gone.status == 200 and sub.terminated == "timeout" and len(n) == 0
    assert n.notify(sub, b"{}", 210).headers.get("Subscription-State") == (
        "terminated;reason=timeout"
    )
    fetch = n.on_subscribe(subscribe(expires="0", call_id="c2"), "h", 0)
    assert fetch.status == 200 and fetch.subscription.terminated and len(n) == 0


def test_bounded_table_one_notify_in_flight_and_expiry():
    n = notifier(max_subscriptions=3, max_per_source=2)
    ok = [n.on_subscribe(subscribe(call_id=f"a{i}"), "a", 0).status for i in range(3)]
    assert ok == [200, 200, 503]  # two per source
    assert n.on_subscribe(subscribe(call_id="b1"), "b", 0).status == 200
    full = n.on_subscribe(subscribe(call_id="c1"), "c", 0)
    assert full.status == 503 and ("Retry-After", "30") in full.headers
    sub = n.subscriptions()[0]
    n.notify(sub, b"{}", 0)
    sub.dirty = True  # the state changed while in flight
    assert n.notify_done(sub, 200)  # so another one is due
    n.notify(sub, b"{}", 0)
    assert not n.notify_done(sub, 481) and sub.terminated and len(n) == 2
    assert [s.terminated for s in n.expired(601)] == ["timeout", "timeout"] and len(n) == 0
    assert n.on_subscribe(subscribe(call_id="c2"), "c", 700).status == 200  # room again


def held():
    return ClientSubscription(
        parse_uri("sip:psap.example"),
        NameAddr(parse_uri("sip:state@esrp.example")),
        EventHeader(PKG),
        expires=90,
        retry_min=1,
        retry_max=8,
    )


def notify_for(req, seq=1, state="active;expires=90", event=PKG):
    headers = [
        ("Via", "SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKn"),
        ("Max-Forwards", "70"),
        ("From", "<sip:psap.example>;tag=psap"),
        ("To", req.headers.get("From")),
        ("Call-ID", req.call_id),
        ("CSeq", f"{seq} NOTIFY"),
        ("Contact", "<sip:psap.example>"),
        ("Event", event),
        ("Subscription-State", state),
    ]
    return Request("NOTIFY", parse_uri("sip:state@127.0.0.1"), headers)


def test_notify_before_the_200_creates_the_dialog():
    sub = held()
    contact = NameAddr(parse_uri("sip:state@127.0.0.1:5070"))
    req = sub.subscribe(contact=contact, via=VIA)
    assert req.headers.get("Expires") == "90" and sub.state == "trying"
    n = notify_for(req)
    assert sub.matches(n)
    check = sub.check_notify(n, 0)
    assert not check.terminated and sub.state == "active" and sub.dialog is not None
    ok = make_response(req, 200, to_tag="psap", extra=(("Expires", "60"),))
    ok.headers.add("Contact", "<sip:psap.example>")
    sub.on_response(ok, 1)
    assert sub.state == "active" and sub.expires_at == 61 and sub.refresh_in(1) == 30
    with pytest.raises(SubscriptionError) as exc:
        sub.check_notify(notify_for(req, event="emergency-ServiceState", seq=2), 2)
    assert exc.value.status == 489
    with pytest.raises(SubscriptionError) as exc:
        sub.check_notify(notify_for(req, state=""), 2)
    assert exc.value.status == 400
    refresh = sub.subscribe(contact=contact, via=VIA)
    assert refresh.cseq.seq == 2 and refresh.call_id == req.call_id
    assert refresh.to_addr.tag == "psap"
    end = sub.check_notify(notify_for(req, seq=3, state="terminated;reason=deactivated"), 3)
    assert end.terminated and sub.state == "terminated" and sub.retry_in() == 0.0
    fresh = sub.subscribe(contact=contact, via=VIA)
    assert fresh.call_id != req.call_id and fresh.to_addr.tag is None


def test_backoff_after_failures_and_retry_after():
    sub = held()
    contact = NameAddr(parse_uri("sip:state@127.0.0.1:5070"))
    delays = []
    for _ in range(5):
        sub.subscribe(contact=contact, via=VIA)
        sub.on_failure("timeout", 0)
        delays.append(sub.retry_in())
    assert delays == [1, 2, 4, 8, 8]
    req = sub.subscribe(contact=contact, via=VIA)
    sub.on_response(make_response(req, 503, extra=(("Retry-After", "5"),)), 0)
    assert sub.state == "terminated" and sub.retry_in() == 5
    req = sub.subscribe(contact=contact, via=VIA)
    sub.on_response(make_response(req, 423, extra=(("Min-Expires", "120"),)), 0)
    assert sub.expires == 120 and sub.retry_in() == 0.0


def test_header_parsers():
    assert parse_event(f"{PKG} ;id=1") == EventHeader(PKG, "1")
    for bad in (None, "", "a b", "x;=1"):
        with pytest.raises(SubscriptionError):
            parse_event(bad)
    st = parse_subscription_state("Terminated;reason=Probation;retry-after=30")
    assert (st.state, st.reason, st.retry_after) == ("terminated", "probation", 30)
    with pytest.raises(SubscriptionError):
        parse_subscription_state("active;expires=9" + "9" * 5000)
    assert accepts_type(None, "application/json")
    assert accepts_type("application/*", "application/json")
    assert accepts_type("application/vnd.x+json", "application/json")
    assert not accepts_type("text/plain", "application/json")
