"""The element's event log: what `--quiet` keeps."""

from __future__ import annotations

import io
import json
import logging

from ng911.elements.elementlog import EventLog


def test_quiet_keeps_overload_notices_and_drops_ordinary_events(caplog):
    """`--quiet` (no stream) drops the per-event log, but an operator must still see overload
    begin, shed and end: before, `bench/load.py` could not tell why a step failed on 503s,
    and neither could an operator of a quiet element."""
    caplog.set_level(logging.WARNING, logger="ng911.elements")
    quiet = EventLog("vsp")
    quiet("request", call_id="c1", method="INVITE")
    quiet.notice("overload", signal="backlog", lag_ms=2.0, queue_wait_ms=61.5)
    lines = [r.getMessage() for r in caplog.records if r.name == "ng911.elements"]
    assert len(lines) == 1, lines
    rec = json.loads(lines[0])
    assert rec["what"] == "overload" and rec["signal"] == "backlog"
    assert rec["element"] == "vsp" and rec["queue_wait_ms"] == 61.5

    # with a stream the notice is one line there, like any event, and not repeated
    caplog.clear()
    out = io.StringIO()
    loud = EventLog("vsp", stream=out)
    loud.notice("overload_end", signal="")
    assert [json.loads(x)["what"] for x in out.getvalue().splitlines()] == ["overload_end"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
