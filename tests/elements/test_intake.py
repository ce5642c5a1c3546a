"""Intake rules of the originating BCF (VSP) and the ESRP (issue 12): dial strings and bad
service URNs become `urn:service:sos`, Resource-Priority `esnet.1`, whatever reaches the ESRP
is an emergency call, each correction logged; the pure rules first, then over real sockets."""

import asyncio
import dataclasses

import pytest

from ng911.elements.emergency import DialPlan, service_of_urn
from ng911.elements.intake import priority_correction, take_in, user_part_problem
from ng911.net.events import MessageEvent
from ng911.sip.parse import parse_message
from ng911.sip.uri import parse_uri
from ng911.testbed.launcher import open_chain
from ng911.testbed.topology import load_topology
from udp_probe import udp_exchange

US = DialPlan.for_country("US")
MANHATTAN = load_topology().point("Manhattan")


# ------------------------------------------------------------------ the pure rules


@pytest.mark.parametrize(
    ("uri", "service", "rule", "test"),
    [
        ("urn:service:sos", "urn:service:sos", None, False),
        ("urn:service:sos.police", "urn:service:sos.police", None, False),
        ("urn:service:sos.ecall.manual", "urn:service:sos.ecall.manual", None, False),
        ("urn:service:SOS", "urn:service:sos", "service-urn-case", False),
        ("urn:service:sos.Fire", "urn:service:sos.fire", "service-urn-case", False),
        ("urn:service:sos.bogus-junk", "urn:service:sos", "unknown-sub-service", False),
        ("urn:service:sos;x", "urn:service:sos", "invalid-service-urn", False),
        ("urn:service:sos..", "urn:service:sos", "invalid-service-urn", False),
        ("urn:service:test.sos", "urn:service:test.sos", None, True),
        ("urn:service:test.sos.fire", "urn:service:test.sos.fire", None, True),
        ("urn:service:test.sos.junk", "urn:service:test.sos", "unknown-sub-service", True),
        ("urn:emergency:service:sos.psap", "urn:emergency:service:sos.psap", None, False),
    ],
)
def test_service_urns(uri, service, rule, test):
    match = service_of_urn(parse_uri(uri))
    assert match is not None
    assert (match.service, match.rule, match.test) == (service, rule, test)


@pytest.mark.parametrize("uri", ["urn:service:counseling", "urn:service:sosx", "urn:x:sos"])
def test_other_urns_are_no_emergency_service(uri):
    assert service_of_urn(parse_uri(uri)) is None


@pytest.mark.parametrize(
    ("uri", "vsp", "esrp"),
    [
        ("sip:911@vsp.example;user=phone", "dial-string", "dial-string"),
        ("tel:911", "dial-string", "dial-string"),
        ("sip:112@vsp.example", "dial-string", "dial-string"),
        ("urn:service:sos;x", "invalid-service-urn", "invalid-service-urn"),
        ("urn:service:sos", None, None),
        ("sip:alice@example.com", "normal", "non-emergency-at-esrp"),
        ("urn:service:counseling", "normal", "non-emergency-at-esrp"),
        ("sip:%00@vsp.example", "normal", "non-emergency-at-esrp"),
    ],
)
def test_take_in_at_the_vsp_and_at_the_esrp(make_invite, uri, vsp, esrp):
    req = make_invite(uri)
    at_vsp = take_in(req, US, at_esrp=False)
    if vsp == "normal":
        assert at_vsp is None  # a normal call at the VSP is never made an emergency call
    else:
        assert at_vsp is not None
        assert [c.rule for c in at_vsp.corrections] == ([vsp] if vsp else [])
    at_esrp = take_in(req, US, at_esrp=True)
    assert at_esrp is not None and at_esrp.service == "urn:service:sos"
    assert [c.rule for c in at_esrp.corrections] == ([esrp] if esrp else [])
    for c in at_esrp.corrections:
        assert (c.field, c.was, c.now) == ("request-uri", str(req.uri), "urn:service:sos")


@pytest.mark.parametrize(
    ("values", "new", "rule"),
    [
        ([], "esnet.1", "missing-resource-priority"),
        (["esnet.9"], "esnet.1", "invalid-resource-priority"),
        (["wps.2"], "esnet.1, wps.2", "no-esnet-resource-priority"),
        (["garbage"], "esnet.1", "no-esnet-resource-priority"),
        (["esnet.0"], "esnet.0", None),
    ],
)
def test_priority_correction(values, new, rule):
    value, fix = priority_correction(values)
    assert value == new
    assert (fix.rule if fix else None) == rule
    if fix is not None:
        assert (fix.field, fix.now) == ("resource-priority", new)


def test_user_part_problem():
    assert "control characters" in user_part_problem(parse_uri("sip:%00@host"))
    assert user_part_problem(parse_uri("sip:alice@host")) is None
    assert user_part_problem(parse_uri("tel:911")) is None


# ------------------------------------------------------------------ over real sockets


def raw(method: str, ruri: str, call_id: str) -> bytes:
    return (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{call_id.replace('@', '.')};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:bob@x.example>;tag=1\r\n"
        "To: <sip:bob@x.example>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def ask(addr, data: bytes):
    loop = asyncio.get_running_loop()
    return parse_message(await loop.run_in_executor(None, udp_exchange, addr, data))


def invite_in(chain, call_id, element):
    """The INVITE `element` received for the call, parsed."""
    for e in chain.events:
        if (
            isinstance(e, MessageEvent)
            and e.call_id == call_id
            and e.element == element
            and e.direction == "in"
            and e.first_line.startswith("INVITE")
        ):
            return parse_message(e.data)
    return None


def call_to_esrp(chain):
    """The caller sends its INVITEs straight to the ESRP (as a BCF in front of it would)."""
    esrp = chain.esrp.local("udp")
    chain.caller.proxy = parse_uri(f"sip:{esrp.host}:{esrp.port}")


async def close(chain):
    errors = {e.name: e.errors for e in chain.elements.values() if e.errors}
    await chain.close()
    assert not errors, errors


DIALLED = [
    ("sip:911@vsp.example", "dial-string"),
    ("tel:911", "dial-string"),
    ("sip:112@vsp.example", "dial-string"),
    ("urn:service:SOS", "service-urn-case"),
    ("urn:service:sos.bogus-junk", "unknown-sub-service"),
    ("urn:service:sos;x", "invalid-service-urn"),
]


async def test_dial_strings_and_bad_service_urns_become_sos_at_the_vsp():
    chain = await open_chain(hangup_after=0.01)
    try:
        for dialled, rule in DIALLED:
            rec = await asyncio.wait_for(chain.place_call(*MANHATTAN, dial=dialled), 10)
            assert rec.status == 200, (dialled, rec.status, rec.reason)
            fixes = chain.vsp.log.find("intake_corrected", call_id=rec.call_id)
            uri_fix = [f for f in fixes if f["field"] == "request-uri"]
            assert [(f["was"], f["now"], f["rule"]) for f in uri_fix] == [
                (str(parse_uri(dialled)) if ":" in dialled else dialled, "urn:service:sos", rule)
            ]
            assert [f["rule"] for f in fixes if f["field"] == "resource-priority"] == [
                "missing-resource-priority"
            ]
            at_esrp = invite_in(chain, rec.call_id, "esrp")
            assert str(at_esrp.uri) == "urn:service:sos"
            assert at_esrp.headers.get("Resource-Priority") == "esnet.1"
            assert chain.psap_of(rec) == "psap-manhattan"
        # a recognised sub-service stays as dialled
        rec = await asyncio.wait_for(
            chain.place_call(*MANHATTAN, dial="urn:service:sos.police"), 10
        )
        assert rec.status == 200
        assert str(invite_in(chain, rec.call_id, "esrp").uri) == "urn:service:sos.police"
        assert not [
            f
            for f in chain.vsp.log.find("intake_corrected", call_id=rec.call_id)
            if f["field"] == "request-uri"
        ]
    finally:
        await close(chain)


async def test_normal_calls_at_the_vsp_stay_normal_and_garbage_users_get_a_clear_400():
    chain = await open_chain(hangup_after=0.01)
    try:
        before = chain.vsp.emergency_calls
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN, dial="sip:alice@nowhere"), 10)
        assert rec.status != 200  # proxied towards its domain, as before: no emergency call
        assert chain.vsp.emergency_calls == before
        assert not chain.vsp.log.find("intake_corrected", call_id=rec.call_id)
        assert invite_in(chain, rec.call_id, "esrp") is None
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN, dial="sip:%00@vsp.example"), 10)
        assert (rec.status, rec.reason) == (400, "Request-URI user part has control characters")
        # a Request-URI that does not parse at all: 400 saying why
        vsp = chain.vsp.local("udp")
        resp = await ask((vsp.host, vsp.port), raw("INVITE", "sip:@vsp.example", "bad-1@x"))
        assert resp.status == 400 and "user" in resp.reason
    finally:
        await close(chain)


async def test_whatever_reaches_the_esrp_is_routed_as_an_emergency_call():
    chain = await open_chain(hangup_after=0.01)
    try:
        call_to_esrp(chain)
        cases = [*DIALLED, ("sip:alice@example.com", "non-emergency-at-esrp"),
                 ("urn:service:counseling", "non-emergency-at-esrp"),
                 ("sip:%00@vsp.example", "non-emergency-at-esrp")]  # fmt: skip
        for dialled, rule in cases:
            rec = await asyncio.wait_for(chain.place_call(*MANHATTAN, dial=dialled), 10)
            assert rec.status == 200, (dialled, rec.status, rec.reason)
            fixes = chain.esrp.log.find("intake_corrected", call_id=rec.call_id)
            assert {(f["field"], f["now"], f["rule"]) for f in fixes} == {
                ("request-uri", "urn:service:sos", rule),
                ("resource-priority", "esnet.1", "missing-resource-priority"),
            }, dialled
            at_psap = invite_in(chain, rec.call_id, "psap-manhattan")
            assert str(at_psap.uri) == "urn:service:sos"
            assert at_psap.headers.get("Resource-Priority") == "esnet.1"
            # routed by the ESRP itself: nothing went back to the VSP (`sip:911@vsp.example`)
            assert invite_in(chain, rec.call_id, "vsp") is None
        assert chain.vsp.emergency_calls == 0
    finally:
        await close(chain)


async def test_invalid_resource_priority_is_replaced_and_logged_at_the_esrp():
    chain = await open_chain(hangup_after=0.01)
    try:
        call_to_esrp(chain)
        chain.caller.edit_invite = lambda req: req.headers.add(
            "Resource-Priority", "esnet.9, wps.2"
        )
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN, dial="urn:service:sos"), 10)
        assert rec.status == 200
        fixes = chain.esrp.log.find("intake_corrected", call_id=rec.call_id)
        assert [(f["field"], f["was"], f["now"], f["rule"]) for f in fixes] == [
            ("resource-priority", "esnet.9, wps.2", "esnet.1, wps.2", "invalid-resource-priority")
        ]
        at_psap = invite_in(chain, rec.call_id, "psap-manhattan")
        assert at_psap.headers.get_field("Resource-Priority") == "esnet.1, wps.2"
    finally:
        await close(chain)


async def test_requests_for_the_esrp_itself_and_callbacks_keep_working():
    chain = await open_chain(hangup_after=0.01)
    try:
        esrp = chain.esrp.local("udp")
        addr = (esrp.host, esrp.port)
        resp = await ask(addr, raw("OPTIONS", f"sip:{esrp.host}:{esrp.port}", "opt-1@x"))
        assert resp.status == 200
        # a non-INVITE to a foreign URI is proxied as before (here: nowhere to go)
        resp = await ask(addr, raw("MESSAGE", "sip:alice@example.com", "msg-1@x"))
        assert resp.status == 503
        resp = await ask(addr, raw("MESSAGE", "urn:service:counseling", "msg-2@x"))
        assert resp.status == 404
        assert not chain.esrp.log.find("intake_corrected")
        # an INVITE from a `callbacks_from` host (a PSAP calling back) is proxied as it is
        call_to_esrp(chain)
        caller_host = chain.caller.local("udp").host
        chain.esrp.cfg = dataclasses.replace(chain.esrp.cfg, callbacks_from=(caller_host,))
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN, dial="sip:alice@example.com"), 10)
        assert rec.status == 503
        assert not chain.esrp.log.find("intake_corrected", call_id=rec.call_id)
        # ... while its emergency calls are emergency calls all the same
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN, dial="tel:911"), 10)
        assert rec.status == 200
    finally:
        await close(chain)


# ------------------------------------------------------------------ test calls


async def test_test_call_answered_by_the_psap_not_a_call_taker():
    """RFC 6881 §15: the test call goes the emergency call's way and psapd answers it."""
    chain = await open_chain(hangup_after=0.05)
    try:
        psap = chain.psaps["psap-manhattan"]
        takers = [el for name, el in chain.elements.items() if name.startswith("taker-")]
        offered = {t.name: t.offered for t in takers}
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN, dial="urn:service:test.sos"), 10)
        assert (rec.status, rec.ended_by) == (200, "caller")
        assert rec.answered_by.startswith("sip:manhattan.psap.nyc.example")
        # LoST was asked for the emergency service: the PSAP of the caller's location
        assert chain.esrp.log.find("route", call_id=rec.call_id)[0]["plan"][0].startswith(
            "sip:psap-manhattan@"
        )
        # no call taker saw it, nobody queued it, nothing is left
        for e in chain.events:
            if isinstance(e, MessageEvent) and e.call_id == rec.call_id:
                assert not e.element.startswith("taker-"), e
        assert {t.name: t.offered for t in takers} == offered
        assert not psap.acd.queue and not psap.tests
        assert not psap.log.find("call_received", call_id=rec.call_id)
        [logged] = psap.log.find("test_call", call_id=rec.call_id)
        assert logged["service"] == "urn:service:test.sos"
        assert logged["answered_by"] == rec.answered_by
        # the 200 carries the SDP answer and NENA's text: PSAP, service, location
        ok = next(
            parse_message(e.data)
            for e in chain.events
            if isinstance(e, MessageEvent)
            and e.call_id == rec.call_id
            and e.element == "psap-manhattan"
            and e.direction == "out"
            and e.first_line.startswith("SIP/2.0 200")
        )
        assert b"m=audio " in ok.body
        assert b"psap-manhattan\r\nurn:service:test.sos\r\nPoint 40.758" in ok.body
        # ACK and BYE reached psapd, which ended the test call
        methods = {
            e.first_line.split()[0]
            for e in chain.events
            if isinstance(e, MessageEvent)
            and e.call_id == rec.call_id
            and e.element == "psap-manhattan"
            and e.direction == "in"
        }
        assert {"INVITE", "ACK", "BYE"} <= methods
        assert psap.log.find("test_call_ended", call_id=rec.call_id)[0]["reason"] == (
            "caller hung up"
        )
        # no emergency priority on a test call (RFC 6881 §15 tests the path, not a call)
        at_psap = invite_in(chain, rec.call_id, "psap-manhattan")
        assert at_psap.headers.get("Resource-Priority") is None
        assert chain.vsp.emergency_calls == 0
        # normal emergency calls still reach the call takers
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN), 10)
        assert rec.status == 200 and "taker-manhattan" in rec.answered_by
    finally:
        await close(chain)


async def test_test_calls_refused_when_off_or_over_the_limit_and_ended_after_max():
    chain = await open_chain(hangup_after=0.01)
    try:
        psaps = chain.psaps
        manhattan = psaps["psap-manhattan"]
        manhattan.cfg = dataclasses.replace(manhattan.cfg, test_calls=False)
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN, dial="urn:service:test.sos"), 10)
        assert rec.status == 404
        assert manhattan.log.find("test_call_refused", call_id=rec.call_id)
        # the caller's PSAP at its limit: 486, and the ESRP does not spread the test to the
        # alternates, which would take it (RFC 6881 §15: the refusal is the test's answer)
        for p in psaps.values():
            p.cfg = dataclasses.replace(p.cfg, test_calls=True)
        manhattan.cfg = dataclasses.replace(manhattan.cfg, test_call_limit=0)
        rec = await asyncio.wait_for(chain.place_call(*MANHATTAN, dial="urn:service:test.sos"), 10)
        assert rec.status == 486
        assert chain.esrp.log.find("test_call_refused", call_id=rec.call_id)
        assert not any(p.log.find("test_call", call_id=rec.call_id) for p in psaps.values())
        assert manhattan.log.find("test_call_refused", call_id=rec.call_id)[0]["reason"] == (
            "Too many test calls"
        )
        # a test call the caller does not end is ended by psapd after test_call_max
        manhattan.cfg = dataclasses.replace(manhattan.cfg, test_call_limit=1, test_call_max=0.2)
        rec = await asyncio.wait_for(
            chain.place_call(*MANHATTAN, dial="urn:service:test.sos", hangup_after=30), 10
        )
        assert (rec.status, rec.ended_by) == (200, "remote")
        assert manhattan.log.find("test_call_ended", call_id=rec.call_id)[0]["bye_sent"]
        assert not manhattan.tests
    finally:
        await close(chain)
