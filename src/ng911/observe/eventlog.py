"""Observer events as JSON lines: how an element in its own process reports to the testbed.

Why a file written at exit: in `ng911 testbed run --processes` every element is an OS process,
and the trace needs every event each one saw (`ng911.net.events`, `WireEvent`,
`LostQueryEvent`). Sending each event as it happens would put a JSON encode and a socket write
on the measured path of every message; `EventRecorder` only appends to a list (as the
in-process `Trace` does) and writes the file when the element stops. The cost: a child killed
with SIGKILL leaves no events, which the testbed reports as a failed run.

Each line is one event: `{"type": "message"|"handshake"|"connection"|"wire"|"lost", ...}` with
the event's own fields; bytes are base64 (`data`), address pairs are lists. The last line is
`{"type": "element", "name": ..., "cpu_seconds": ...}`. `read_events` rebuilds the same
dataclasses, so trace, measure and report cannot tell a child's events from in-process ones.
`mono` is `time.perf_counter()`, CLOCK_MONOTONIC on Linux: one clock for every process of the
machine (network namespaces included), so arrows between processes keep their transit times.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ng911.net.events import ConnectionEvent, HandshakeEvent, MessageEvent, WireEvent
from ng911.observe.wire import LostQueryEvent

_TYPES: dict[str, type[Any]] = {
    "message": MessageEvent,
    "handshake": HandshakeEvent,
    "connection": ConnectionEvent,
    "wire": WireEvent,
    "lost": LostQueryEvent,
}
_NAMES: dict[type[Any], str] = {v: k for k, v in _TYPES.items()}
_ADDR_FIELDS = ("local", "remote")


class EventLogError(ValueError):
    """A line of an event file that is not an event this module wrote."""


def event_to_json(event: Any) -> dict[str, Any] | None:
    """One event as a JSON-ready dict; None for an event type this log does not carry."""
    kind = _NAMES.get(type(event))
    if kind is None:
        return None
    d: dict[str, Any] = {"type": kind}
    for f in dataclasses.fields(event):
        v = getattr(event, f.name)
        if isinstance(v, bytes | bytearray | memoryview):
            v = base64.b64encode(bytes(v)).decode("ascii")
        elif isinstance(v, tuple):
            v = list(v) if f.name in _ADDR_FIELDS else [str(x) for x in v]
        elif f.name in _ADDR_FIELDS and v is not None and hasattr(v, "host"):
            v = [str(v.host), int(v.port)]
        d[f.name] = v
    return d


def event_from_json(d: Mapping[str, Any]) -> Any:
    """The event a line of the log describes (the dataclass it was written from)."""
    cls = _TYPES.get(str(d.get("type")))
    if cls is None:
        raise EventLogError(f"unknown event type {d.get('type')!r}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        v = d[f.name]
        if f.name == "data" and isinstance(v, str):
            v = base64.b64decode(v)
        elif f.name in _ADDR_FIELDS and isinstance(v, list):
            v = (str(v[0]), int(v[1])) if len(v) == 2 else ("", 0)
        elif isinstance(v, list):
            v = tuple(v)
        kwargs[f.name] = v
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise EventLogError(f"{d.get('type')} event: {exc}") from None


@dataclass
class EventRecorder:
    """An observer that keeps every event in memory, then writes them as JSON lines."""

    events: list[Any] = field(default_factory=list)

    def __call__(self, event: Any) -> None:
        self.events.append(event)  # the hot path: nothing else

    def write(self, path: Path, *, element: str, cpu_seconds: float = 0.0) -> int:
        """Write the events and a closing `element` line; returns how many events."""
        n = 0
        tmp = path.with_name(path.name + ".part")
        with tmp.open("w", encoding="utf-8") as fh:
            for ev in self.events:
                d = event_to_json(ev)
                if d is None:
                    continue
                fh.write(json.dumps(d, separators=(",", ":")) + "\n")
                n += 1
            end = {"type": "element", "name": element, "cpu_seconds": cpu_seconds, "events": n}
            fh.write(json.dumps(end) + "\n")
        tmp.replace(path)  # whole or absent: a reader never sees half a file
        return n


@dataclass
class EventFile:
    """What one element's event file held."""

    events: list[Any]
    element: str | None
    cpu_seconds: float
    complete: bool  # the closing `element` line was there


def read_events(path: Path) -> EventFile:
    """Read an event file written by `EventRecorder.write`."""
    events: list[Any] = []
    element: str | None = None
    cpu = 0.0
    complete = False
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EventLogError(f"{path}:{lineno}: not JSON: {exc}") from None
            if not isinstance(d, dict):
                raise EventLogError(f"{path}:{lineno}: not an object")
            if d.get("type") == "element":
                element = str(d.get("name"))
                cpu = float(d.get("cpu_seconds") or 0.0)
                complete = True
                continue
            try:
                events.append(event_from_json(d))
            except EventLogError as exc:
                raise EventLogError(f"{path}:{lineno}: {exc}") from None
    return EventFile(events, element, cpu, complete)
