"""Observer events through a JSON-lines file and back: what element processes report."""

import dataclasses
import json
import time

import pytest

from ng911.lost.events import LostQueryEvent
from ng911.net.events import ConnectionEvent, HandshakeEvent, MessageEvent, WireEvent
from ng911.observe.eventlog import (
    EventLogError,
    EventRecorder,
    EventTail,
    event_line,
    event_to_json,
    read_events,
)

EVENTS = [
    MessageEvent(1.5, 2.5, "vsp", "out", "tls", ("127.0.0.2", 5061), ("127.0.0.3", 40000),
                 10, 32, b"INVITE sip:x SIP/2.0\r\n\r\n\xff", "abc", "INVITE sip:x SIP/2.0", 7),
    HandshakeEvent(1.0, 2.0, "vsp", ("127.0.0.2", 1), ("127.0.0.3", 5061), "client", False,
                   0.004, "TLSv1.3", "TLS_AES_128_GCM_SHA256", ("sip:esrp.example",), True, None),
    ConnectionEvent(1.0, 2.0, "vsp", "tls", ("127.0.0.2", 1), ("127.0.0.3", 5061), "open", None),
    WireEvent(1.0, 2.0, "vsp", "tls", 3, "out", ("127.0.0.2", 1), ("127.0.0.3", 5061), b"\x16\x03"),
    LostQueryEvent(1.0, 2.0, 0.003, "esrp", "https://x/lost", "https", True, call_id="urn:x",
                   request=b"<findService/>", response=b"<findServiceResponse>\xff"),
]  # fmt: skip


def test_every_event_kind_round_trips(tmp_path):
    path = tmp_path / "vsp.jsonl"
    rec = EventRecorder(path)
    for ev in EVENTS:
        rec(ev)
    rec("not an event")  # ignored, never written
    assert rec.close(element="vsp", cpu_seconds=0.25) == len(EVENTS)
    assert rec.close(element="vsp") == len(EVENTS)  # twice: nothing more
    ef = read_events(path)
    assert ef.events == EVENTS
    assert ef.element == "vsp" and ef.cpu_seconds == 0.25 and ef.complete and ef.dropped == 0


def test_the_writers_line_is_the_events_json():
    for ev in EVENTS:
        assert json.loads(event_line(ev)) == event_to_json(ev)
    assert event_line("not an event") is None


def test_events_reach_the_file_while_the_element_runs(tmp_path):
    path = tmp_path / "vsp.jsonl"
    rec = EventRecorder(path, interval=0.05)
    try:
        for ev in EVENTS * 10:
            rec(ev)
        deadline = time.monotonic() + 20
        while rec.written < len(EVENTS) * 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        ef = read_events(path)  # readable while open: every line whole, no closing line
        assert ef.events == EVENTS * 10 and not ef.complete
    finally:
        rec.close(element="vsp")
    assert read_events(path).complete


def test_a_full_buffer_drops_and_counts_instead_of_growing(tmp_path):
    path = tmp_path / "vsp.jsonl"
    rec = EventRecorder(path, max_pending=100, batch=10_000, interval=3600)
    for _ in range(1000):  # the writer sleeps (no batch reached, a long interval)
        rec(EVENTS[0])
    assert rec.pending <= 100 and rec.dropped >= 900
    rec.close(element="vsp")
    ef = read_events(path)
    assert ef.complete and len(ef.events) + ef.dropped == 1000


def test_big_messages_are_bounded_by_their_bytes_not_only_their_count(tmp_path):
    # 10,000 pending 64 KB TCP messages would be 640 MB: the byte bound refuses them first
    path = tmp_path / "vsp.jsonl"
    rec = EventRecorder(path, max_pending_bytes=64 * 1024, batch=10_000, interval=3600)
    big = dataclasses.replace(EVENTS[0], data=b"x" * 8192)
    for _ in range(100):  # the writer sleeps (no batch reached, a long interval)
        rec(big)
    assert 0 < rec.pending <= 8 and rec.dropped == 100 - rec.pending
    rec.close(element="vsp")
    ef = read_events(path)
    assert ef.complete and len(ef.events) + ef.dropped == 100
    assert rec._bytes_in == rec._bytes_out  # what was taken was all given back


def test_a_line_cut_short_by_a_kill_leaves_the_file_incomplete(tmp_path):
    path = tmp_path / "e.jsonl"
    rec = EventRecorder(path)
    rec(EVENTS[0])
    rec.close(element="vsp")
    whole = path.read_text().splitlines(keepends=True)
    path.write_text(whole[0] + whole[0][:20])  # killed in the middle of a write
    ef = read_events(path)
    assert ef.events == EVENTS[:1] and not ef.complete


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


def test_a_tail_reads_what_the_recorder_writes_as_it_writes_it(tmp_path):
    path = tmp_path / "esrp.jsonl"
    tail = EventTail(path)
    assert tail.read() == []  # nothing written yet: nothing, no error
    rec = EventRecorder(path, interval=0.01)
    rec(EVENTS[0])
    for _ in range(200):  # bounded: the writer thread's next period
        got = tail.read()
        if got:
            break
        time.sleep(0.01)
    assert got == [EVENTS[0]] and not tail.complete
    for ev in EVENTS[1:]:
        rec(ev)
    rec.close(element="esrp")
    assert tail.read() == EVENTS[1:] and tail.complete
    assert tail.read() == []
    tail.close()


def test_a_tail_keeps_half_lines_skips_hostile_ones_and_jumps_when_behind(tmp_path):
    path = tmp_path / "vsp.jsonl"
    line = event_line(EVENTS[0])
    assert line is not None
    with path.open("wb") as f:
        f.write(b'{"type": "nonsense"}\n[1, 2]\n{"type": "message", "local": {}}\nnot json\n')
        f.write(line[:10].encode())
    tail = EventTail(path, max_read=4096, max_backlog=4096)
    assert tail.read() == [] and tail.bad == 4  # refused, counted, never raised
    with path.open("ab") as f:
        f.write(line[10:].encode() + b"\n")
    assert tail.read() == [EVENTS[0]]  # the half line, completed
    with path.open("ab") as f:  # a flood the reader fell behind: it jumps, counting
        f.write(((line + "\n") * 200).encode())
    got = tail.read()
    assert 0 < len(got) < 200 and tail.skipped > 0
    assert all(ev == EVENTS[0] for ev in got)
    tail.close()
