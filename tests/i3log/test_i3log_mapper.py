"""node.logevents: an element's observations → LogEvents (no network: a collecting sender)."""

from __future__ import annotations

import logging
import time
from typing import Any

from ng911.elements.elementlog import EventLog
from ng911.i3log.events import LogEvent
from ng911.lost.events import LostQueryEvent
from ng911.net.events import MessageEvent
from ng911.node.logevents import LogEventMapper

CID = "urn:emergency:uid:callid:0123456789abcdef:esrp.esinet.example"
IID = "urn:emergency:uid:incidentid:0123456789abcdef:esrp.esinet.example"


class Collect:
    """Stands in for a LogSender: maps at once, keeps what is emitted."""

    def __init__(self) -> None:
        self.mapper: Any = None
        self.events: list[LogEvent] = []

    def submit(self, item: Any) -> None:
        self.mapper.map(item)

    def emit(self, event: LogEvent) -> None:
        self.events.append(event)

    def types(self) -> list[str]:
        return [e.TYPE for e in self.events]


def _mapper() -> tuple[LogEventMapper, Collect]:
    c = Collect()
    return LogEventMapper(c, "esrp.esinet.example", "esinet.example", hold=60), c  # type: ignore[arg-type]


def _msg(data: bytes, direction: str = "in", call_id: str | None = "sip-1") -> MessageEvent:
    return MessageEvent(
        ts=time.time(), mono=0.0, element="esrp", direction=direction, transport="udp",
        local=("127.0.0.1", 5060), remote=("127.0.0.2", 5070), sip_bytes=len(data),
        wire_bytes=len(data), data=data, call_id=call_id,
        first_line=data.split(b"\r\n", 1)[0].decode("utf-8", "replace"),
    )  # fmt: skip


def _invite(ids: bool) -> bytes:
    info = (
        f"Call-Info: <{CID}>;purpose=emergency-CallId, <{IID}>;purpose=emergency-IncidentId\r\n"
        if ids
        else ""
    )
    return (
        "INVITE urn:service:sos SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bKx\r\n"
        "From: <sip:alice@vsp.example>;tag=1\r\nTo: <urn:service:sos>\r\nCall-ID: sip-1\r\n"
        f"CSeq: 1 INVITE\r\nMax-Forwards: 70\r\n{info}Content-Length: 0\r\n\r\n"
    ).encode()


def _response(status: int, method: str = "INVITE") -> bytes:
    return (
        f"SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bKx\r\n"
        "From: <sip:alice@vsp.example>;tag=1\r\nTo: <urn:service:sos>;tag=2\r\nCall-ID: sip-1\r\n"
        f"CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_messages_are_held_until_the_emergency_ids_are_known():
    m, c = _mapper()
    m.observe(_msg(_invite(ids=False)))
    assert c.events == []  # held: the ESRP has not minted the identifiers yet
    m.observe(_msg(_invite(ids=True), direction="out"))
    assert c.types() == [
        "CallStartLogEvent",
        "CallSignalingMessageLogEvent",
        "CallSignalingMessageLogEvent",
    ]
    assert all(e.call_id == CID and e.incident_id == IID for e in c.events)
    start = c.events[0]
    assert start.direction == "incoming" and start.call_id_sip == "sip-1"  # type: ignore[attr-defined]
    assert start.ip_address_port == "127.0.0.2:5070"


def test_proxy_call_end_is_the_failure_sent_upstream():
    m, c = _mapper()
    m.observe(_msg(_invite(ids=True)))
    m.observe(_msg(_response(503)))  # a PSAP failed: the ESRP may try another
    assert "CallEndLogEvent" not in c.types()
    m.observe(_msg(_response(480), direction="out"))
    assert c.types().count("CallEndLogEvent") == 1
    m.observe(_msg(_response(480), direction="out"))  # a retransmission ends nothing twice
    assert c.types().count("CallEndLogEvent") == 1


def test_keepalives_are_not_call_signalling_and_hostile_bytes_still_log():
    m, c = _mapper()
    m.observe(_msg(_response(200, "OPTIONS")))
    assert c.events == []
    m.observe(_msg(b"\x00\xffGARBAGE\r\n\r\n", call_id=None))
    assert c.types() == ["CallSignalingMessageLogEvent"]
    assert "GARBAGE" in c.events[0].text  # type: ignore[attr-defined]
    m.observe("not an event")  # other observer events are ignored
    assert len(c.events) == 1


def test_flush_releases_what_never_learned_its_ids():
    m, c = _mapper()
    m.observe(_msg(_invite(ids=False)))
    m.flush()
    assert c.types() == ["CallStartLogEvent", "CallSignalingMessageLogEvent"]
    assert c.events[0].call_id is None and c.events[0].call_id_sip == "sip-1"


def test_lost_queries_pair_and_failures_are_logged():
    m, c = _mapper()
    base = dict(ts=time.time(), mono=0.0, duration=0.01, element="esrp",
                url="https://lost.example/lost", transport="https", call_id=CID)  # fmt: skip
    m.observe(LostQueryEvent(**base, ok=True, result="sip:psap@x"))
    q, r = c.events
    assert (q.TYPE, r.TYPE) == ("LostQueryLogEvent", "LostResponseLogEvent")
    assert q.query_id == r.response_id and r.response_status == "ok"  # type: ignore[attr-defined]
    assert q.call_id == CID and q.direction == "outgoing" and r.direction == "incoming"  # type: ignore[attr-defined]
    c.events.clear()
    m.observe(LostQueryEvent(**base, ok=False, result="timeout"))
    assert c.events[1].response_status == "timeout"  # type: ignore[attr-defined]
    c.events.clear()
    m.observe(LostQueryEvent(**base, ok=False, result="protocol"))
    assert c.events[1].malformed_response  # type: ignore[attr-defined]
    c.events.clear()
    m.observe(LostQueryEvent(**base, ok=True, result="sip:psap@x", cached=True))
    assert c.events == []  # a cached answer asked nobody


def test_route_and_service_state_records():
    m, c = _mapper()
    log = EventLog("esrp")
    log.sinks.append(m.record)
    assert log.enabled
    log("route", call_id="sip-1", outcome="LostFound", plan=["sip:psap@manhattan"],
        reason="lost", ids=[CID, IID])  # fmt: skip
    log("route", call_id="sip-2", recipient="sip:psap@bronx", rule="r7", policy_owner="nyc",
        policy_type="OriginationPolicy", reason="alternate")  # fmt: skip
    log("service_state", state="Down", reason="maintenance")
    log("queued", call_id="sip-1", position=1)  # not a LogEvent
    m.flush()
    r1, ss, r2 = c.events  # sip-2's route waited for identifiers until the flush
    assert r1.recipient_uri == "sip:psap@manhattan" and r1.rule_id == "LostFound"  # type: ignore[attr-defined]
    assert r1.call_id == CID and r1.extension and r1.extension["plan"]
    assert (r2.recipient_uri, r2.rule_id, r2.policy_owner, r2.cause) == (  # type: ignore[attr-defined]
        "sip:psap@bronx", "r7", "nyc", "alternate")  # fmt: skip
    assert ss.TYPE == "ServiceStateChangeLogEvent" and ss.new_state == "Down"  # type: ignore[attr-defined]


def test_event_log_sinks_never_break_the_element():
    lg = logging.getLogger("ng911.elements")
    old = lg.level
    lg.setLevel(logging.WARNING)
    try:
        log = EventLog("x")
        assert not log.enabled  # nowhere to go: hot paths skip formatting
        got: list[dict[str, Any]] = []

        def broken(rec: dict[str, Any]) -> None:
            raise RuntimeError("bug")

        log.sinks += [broken, got.append]
        assert log.enabled
        log("something", call_id="c", n=1)
        assert got and got[0]["what"] == "something" and got[0]["call_id"] == "c"
    finally:
        lg.setLevel(old)


def test_psapd_answer_and_agent_records():
    """What a PSAP logs when a call taker answers (CallStateChange callAnswered, held until
    the call's identifiers are known) and when one comes or goes (AgentStateChange)."""
    m, c = _mapper()
    log = EventLog("psap")
    log.sinks.append(m.record)
    log("agent_state", taker="sip:taker1@psap.example", state="Available", reason="registered")
    log("call_answered", call_id="sip-1", taker="sip:taker1@psap.example", wait_s=0.25)
    log("call_log", call_id="sip-1", outcome="completed")  # not a LogEvent
    assert c.types() == ["AgentStateChangeLogEvent"]  # the answer waits for the call's ids
    m.observe(_msg(_invite(ids=True)))
    assert sorted(c.types()) == sorted(
        ["AgentStateChangeLogEvent", "CallStateChangeLogEvent", "CallStartLogEvent",
         "CallSignalingMessageLogEvent"]
    )  # fmt: skip
    agent = c.events[0]
    answered = next(e for e in c.events if e.TYPE == "CallStateChangeLogEvent")
    assert agent.primary_agent_state == "Available"  # type: ignore[attr-defined]
    assert agent.agency_agent_id == "sip:taker1@psap.example"
    assert agent.extension == {"reason": "registered"} and agent.call_id is None
    assert answered.state == "callAnswered" and answered.direction == "incoming"  # type: ignore[attr-defined]
    assert answered.call_id == CID and answered.call_id_sip == "sip-1"
    assert answered.agency_agent_id == "sip:taker1@psap.example"
    assert "0.25 s" in (answered.change_reason or "")  # type: ignore[attr-defined]
    js = answered.to_json()
    assert js["agencyAgentId"] == "sip:taker1@psap.example" and js["state"] == "callAnswered"
