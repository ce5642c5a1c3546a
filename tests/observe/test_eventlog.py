"""Observer events through a JSON-lines file and back: what element processes report."""

import json

import pytest

from ng911.net.events import ConnectionEvent, HandshakeEvent, MessageEvent, WireEvent
from ng911.observe.eventlog import EventLogError, EventRecorder, read_events
from ng911.observe.wire import LostQueryEvent

EVENTS = [
    MessageEvent(1.5, 2.5, "vsp", "out", "tls", ("127.0.0.2", 5061), ("127.0.0.3", 40000),
                 10, 32, b"INVITE sip:x SIP/2.0\r\n\r\n\xff", "abc", "INVITE sip:x SIP/2.0", 7),
    HandshakeEvent(1.0, 2.0, "vsp", ("127.0.0.2", 1), ("127.0.0.3", 5061), "client", False,
                   0.004, "TLSv1.3", "TLS_AES_128_GCM_SHA256", ("sip:esrp.example",), True, None),
    ConnectionEvent(1.0, 2.0, "vsp", "tls", ("127.0.0.2", 1), ("127.0.0.3", 5061), "open", None),
    WireEvent(1.0, 2.0, "vsp", "tls", 3, "out", ("127.0.0.2", 1), ("127.0.0.3", 5061), b"\x16\x03"),
    LostQueryEvent(1.0, 2.0, 0.003, "esrp", "https://x/lost", "https", True, call_id="urn:x"),
]  # fmt: skip


def test_every_event_kind_round_trips(tmp_path):
    rec = EventRecorder()
    for ev in EVENTS:
        rec(ev)
    rec("not an event")  # ignored, never written
    path = tmp_path / "vsp.jsonl"
    assert rec.write(path, element="vsp", cpu_seconds=0.25) == len(EVENTS)
    ef = read_events(path)
    assert ef.events == EVENTS
    assert ef.element == "vsp" and ef.cpu_seconds == 0.25 and ef.complete
    assert not path.with_name("vsp.jsonl.part").exists()


@pytest.mark.parametrize(
    ("line", "error"),
    [("{", "not JSON"), ("[1]", "not an object"), ('{"type": "x"}', "unknown event type"),
     ('{"type": "message", "ts": 1}', "message event")],
)  # fmt: skip
def test_a_bad_line_is_a_typed_error_naming_the_line(tmp_path, line, error):
    path = tmp_path / "e.jsonl"
    path.write_text(json.dumps({"type": "element", "name": "a"}) + "\n" + line + "\n")
    with pytest.raises(EventLogError, match=rf"e\.jsonl:2: .*{error}"):
        read_events(path)


def test_a_file_without_its_closing_line_is_incomplete(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text("")
    ef = read_events(path)
    assert ef.events == [] and not ef.complete and ef.element is None
