"""LogEvent JSON (i3 member names) and the checks a Logging Service makes of a payload."""

from __future__ import annotations

import json
import time

import pytest

from ng911.i3log.errors import BadLogEvent
from ng911.i3log.events import (
    I3_LOG_EVENT_TYPES,
    CallEndLogEvent,
    CallSignalingMessageLogEvent,
    CallStartLogEvent,
    LostQueryLogEvent,
    LostResponseLogEvent,
    RouteLogEvent,
    ServiceStateChangeLogEvent,
    from_json,
    parse_payload,
    parse_rfc3339,
    rfc3339,
)

COMMON = {"timestamp": "2026-12-03T13:10:00.123Z", "element_id": "esrp.esinet.example",
          "agency_id": "esinet.example"}  # fmt: skip


def test_common_members_have_i3_names():
    ev = CallSignalingMessageLogEvent(
        **COMMON,
        call_id="urn:emergency:uid:callid:0123456789:esrp.esinet.example",
        incident_id="urn:emergency:uid:incidentid:0123456789:esrp.esinet.example",
        call_id_sip="abc@host",
        ip_address_port="127.0.0.1:5060",
        text="INVITE urn:service:sos SIP/2.0\r\n\r\n",
        direction="incoming",
    )
    d = ev.to_json()
    assert d["logEventType"] == "CallSignalingMessageLogEvent"
    assert {
        "timestamp",
        "elementId",
        "agencyId",
        "callId",
        "incidentId",
        "callIdSip",
        "ipAddressPort",
        "text",
        "direction",
        "protocol",
    } <= set(d)
    assert d["protocol"] == "sip"
    assert "extension" not in d  # None members are left out


def test_each_type_round_trips_and_uses_i3_type_names():
    events = [
        CallStartLogEvent(
            **COMMON, direction="incoming", to="<urn:service:sos>", from_="<sip:a@b>"
        ),
        CallEndLogEvent(**COMMON, direction="outgoing"),
        LostQueryLogEvent(**COMMON, query_adapter="q", query_id="1"),
        LostResponseLogEvent(**COMMON, response_adapter="r", response_id="1", response_status="ok"),
        RouteLogEvent(
            **COMMON,
            recipient_uri="sip:psap@x",
            rule_id="r1",
            policy_owner="o",
            policy_type="OriginationPolicy",
            cause="normal",
        ),
        ServiceStateChangeLogEvent(**COMMON, new_state="Down", affected_service_identifier="esrp"),
    ]
    for ev in events:
        d = json.loads(ev.to_bytes())
        assert d["logEventType"] in I3_LOG_EVENT_TYPES
        assert from_json(d) == ev
    assert json.loads(events[0].to_bytes())["from"] == "<sip:a@b>"
    pair = (events[2].to_json(), events[3].to_json())
    assert pair[0]["queryId"] == pair[1]["responseId"]  # how a query and its answer pair


def test_rfc3339():
    t = 1796303400.123
    text = rfc3339(t)
    assert text.endswith("Z") and "T" in text
    assert abs(parse_rfc3339(text).timestamp() - t) < 0.001
    assert parse_rfc3339("2020-03-10T11:00:01-05:00").timestamp() == 1583856001
    for bad in ("2020-03-10", "2020-03-10T11:00:01", "yesterday", "x" * 100, ""):
        with pytest.raises(ValueError):
            parse_rfc3339(bad)


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not an object"),
        (b"{}", "logEventType is required"),
        (
            {
                "logEventType": "NoSuchLogEvent",
                "timestamp": COMMON["timestamp"],
                "elementId": "e",
                "agencyId": "a",
            },
            "unknown logEventType",
        ),
        (
            {
                "logEventType": "CallStartLogEvent",
                "timestamp": "noon",
                "elementId": "e",
                "agencyId": "a",
                "direction": "incoming",
            },
            "timestamp",
        ),
        (
            {
                "logEventType": "CallStartLogEvent",
                "timestamp": COMMON["timestamp"],
                "elementId": "e",
                "agencyId": "a",
            },
            "requires direction",
        ),
        (
            {
                "logEventType": "CallStartLogEvent",
                "timestamp": COMMON["timestamp"],
                "elementId": "e",
                "agencyId": "a",
                "direction": "sideways",
            },
            "direction",
        ),
        (
            {
                "logEventType": "CallProcessLogEvent",
                "timestamp": COMMON["timestamp"],
                "elementId": "e",
                "agencyId": "a",
                "callId": 5,
            },
            "callId",
        ),
        (
            {
                "logEventType": "CallProcessLogEvent",
                "timestamp": COMMON["timestamp"],
                "elementId": "e",
                "agencyId": "a",
                "callId": "x" * 600,
            },
            "callId",
        ),
        (b"[" * 100_000, "not JSON"),
    ],
)
def test_bad_payloads_are_refused_with_the_reason(payload, why):
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    with pytest.raises(BadLogEvent, match=why) as err:
        parse_payload(data)
    assert err.value.code == 460


def test_a_type_we_do_not_produce_is_still_accepted():
    d = {"logEventType": "MediaStartLogEvent", "timestamp": rfc3339(time.time()),
         "elementId": "e", "agencyId": "a", "sdp": "v=0", "direction": "incoming"}  # fmt: skip
    assert parse_payload(json.dumps(d)).log_event_type == "MediaStartLogEvent"
