"""Observer events as JSON lines: how an element in its own process reports to the testbed.

Why a file: in `ng911 testbed run --processes` every element is an OS process, and the trace
needs every event each one saw (`ng911.net.events`, `WireEvent`, `LostQueryEvent`).

Why streamed through a bounded buffer: the recorder sits on the measured path of every
message, so calling it only appends the event to a deque (a fraction of a microsecond); a
writer thread turns what is pending into JSON lines and appends them to the file every
`interval` seconds, or as soon as `batch` events wait. Memory is bounded by `max_pending`
events and `max_pending_bytes` of their message bytes (one bound alone would let 10,000
64 KB TCP messages wait): when the disk (or the writer's share of the CPU) cannot keep up,
new events are dropped and counted, never queued without end. Stopping (SIGTERM) writes
only what is still pending, so it takes milliseconds whatever the run's length. (Keeping
every event in memory until stop took 1.2 GB and 17 s after a long flood, past the
testbed's kill; issue 11, item 9.)
A child killed with SIGKILL leaves the events written so far and no closing line, which
`read_events` reports as incomplete.

Each line is one event: `{"type": "message"|"handshake"|"connection"|"wire"|"lost", ...}` with
the event's own fields; bytes are base64 (`data`, a LoST event's `request`/`response`),
address pairs are lists. The last line is
`{"type": "element", "name": ..., "cpu_seconds": ..., "events": N, "dropped": D}`.
`read_events` rebuilds the same dataclasses, so trace, measure and report cannot tell a child's
events from in-process ones. `mono` is `time.perf_counter()`, CLOCK_MONOTONIC on Linux: one
clock for every process of the machine (network namespaces included), so arrows between
processes keep their transit times.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ng911.lost.events import LostQueryEvent
from ng911.net.events import ConnectionEvent, HandshakeEvent, MessageEvent, WireEvent

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


# each type's field names, read once (dataclasses.fields() per event cost more than the rest)
_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _TYPES.values()
}
# each type's bytes fields (base64 in the file): `data`, a LoST event's `request`/`response`
_BYTES: dict[type[Any], frozenset[str]] = {
    cls: frozenset(f.name for f in dataclasses.fields(cls) if f.type in ("bytes", bytes))
    for cls in _TYPES.values()
}
_b64 = binascii.b2a_base64
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode


def _size(event: Any) -> int:
    """What an event holds in memory for the pending bound: its message bytes (a LoST event:
    its request and response), plus a flat 256 for the object and its other fields."""
    data = getattr(event, "data", None)
    if data is not None:
        return 256 + len(data)
    return 256 + len(getattr(event, "request", b"")) + len(getattr(event, "response", b""))


def _split(event: Any) -> tuple[dict[str, Any], list[tuple[str, bytes]]] | None:
    """An event's JSON-ready fields, and apart its bytes fields (raw); None if not carried."""
    cls = type(event)
    kind = _NAMES.get(cls)
    if kind is None:
        return None
    d: dict[str, Any] = {"type": kind}
    raws: list[tuple[str, bytes]] = []
    for name in _FIELDS[cls]:
        v = getattr(event, name)
        if isinstance(v, bytes | bytearray | memoryview):
            raws.append((name, bytes(v)))
            continue
        if isinstance(v, tuple):
            v = list(v) if name in _ADDR_FIELDS else [str(x) for x in v]
        elif name in _ADDR_FIELDS and v is not None and hasattr(v, "host"):
            v = [str(v.host), int(v.port)]
        d[name] = v
    return d, raws


def event_to_json(event: Any) -> dict[str, Any] | None:
    """One event as a JSON-ready dict; None for an event type this log does not carry."""
    split = _split(event)
    if split is None:
        return None
    d, raws = split
    for name, raw in raws:
        d[name] = _b64(raw, newline=False).decode("ascii")
    return d


def event_line(event: Any) -> str | None:
    """`event_to_json` as one JSON text (no newline), for the writer: base64 needs no JSON
    escaping, so the message bytes are spliced in rather than scanned by the encoder (half
    the cost of a 1 KB message event)."""
    split = _split(event)
    if split is None:
        return None
    d, raws = split
    text = _encode(d)
    if not raws:
        return text
    tail = "".join(f',"{n}":"{_b64(r, newline=False).decode("ascii")}"' for n, r in raws)
    return text[:-1] + tail + "}"


def event_from_json(d: Mapping[str, Any]) -> Any:
    """The event a line of the log describes (the dataclass it was written from)."""
    cls = _TYPES.get(str(d.get("type")))
    if cls is None:
        raise EventLogError(f"unknown event type {d.get('type')!r}")
    kwargs: dict[str, Any] = {}
    raw = _BYTES[cls]
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        v = d[f.name]
        if f.name in raw and isinstance(v, str):
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


class EventRecorder:
    """An observer that streams events to `path` as JSON lines (module docstring).

    `__call__` is the hot path: a bounded deque append. A writer thread drains the deque every
    `interval` s (sooner once `batch` events wait) and writes them in chunks of `chunk`
    events, one `os.write` each (the GIL is released there, so the event loop is never held
    for longer than one chunk's encoding), taking at most about `share` of the time while
    the loop runs. `close` stops the thread, writes what is left and the closing `element`
    line. `dropped` counts the events refused while `max_pending` events (or
    `max_pending_bytes` of their bytes) waited. The byte count is kept as two counters,
    one per thread (bytes taken by the loop, bytes written by the writer), so neither
    thread's `+=` can lose the other's update.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_pending: int = 10_000,
        max_pending_bytes: int = 8 * 2**20,
        batch: int = 1024,
        interval: float = 0.5,
        chunk: int = 64,
        share: float = 0.25,
    ) -> None:
        self.path = path
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self._bytes_in = 0  # bytes of the events taken (event loop thread only)
        self._bytes_out = 0  # bytes of the events written or skipped (writer thread only)
        self.batch = batch
        self.interval = interval
        self.chunk = chunk
        if not 0.0 < share <= 1.0:
            raise ValueError("share must be in (0, 1]")
        self.share = share
        self.written = 0  # events in the file
        self.dropped = 0  # events refused: the buffer was full
        self.errors = 0  # write errors (disk full...): their events are lost too
        self._pending: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()
        self._stop = False
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._thread = threading.Thread(target=self._run, name="ng911-events", daemon=True)
        self._thread.start()

    def __call__(self, event: Any) -> None:
        pending = self._pending
        n = len(pending)
        size = _size(event)
        held = self._bytes_in - self._bytes_out + size
        if n < self.max_pending and held <= self.max_pending_bytes:
            self._bytes_in += size
            pending.append(event)  # the hot path: a deque append (thread-safe)
            if n == self.batch:
                self._wake.set()  # once per batch, not per event
        else:
            self.dropped += 1

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.interval)
            self._wake.clear()
            self._drain()
        self._drain()

    def _drain(self) -> None:
        """Write what is pending now, `chunk` events per write (writer thread only).

        Between chunks the writer sleeps until its CPU time since the drain began is no more
        than `share` of the wall time since then, so that it takes at most about that share
        of the interpreter from the event loop: under a flood the element keeps answering and
        the recorder drops (and counts) instead. CPU time, not wall time, is what the writer
        spent: under a flood it waits for the GIL for longer than it encodes, and that wait
        is the loop's time, not its own. (Sleeping three times each chunk's wall time, wait
        included, drained at a fraction of the share: a 20,000 OPTIONS flood dropped a
        quarter of its events.) When stopping it writes at full speed.
        """
        pending = self._pending
        wall0 = time.perf_counter()
        cpu0 = time.thread_time()
        while pending:
            lines = []
            done = 0
            for _ in range(min(self.chunk, len(pending))):
                event = pending.popleft()
                done += _size(event)
                line = event_line(event)
                if line is not None:
                    lines.append(line)
            self._bytes_out += done
            if lines:
                self._write(("\n".join(lines) + "\n").encode("utf-8"), len(lines))
            if not self._stop and pending:
                ahead = (time.thread_time() - cpu0) / self.share - (time.perf_counter() - wall0)
                if ahead > 0.0:
                    time.sleep(ahead)

    def _write(self, data: bytes, n: int) -> None:
        if self._fd < 0:
            return
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            self.written += n
        except OSError:
            self.errors += n

    def close(self, *, element: str, cpu_seconds: float = 0.0) -> int:
        """Write what is pending and the closing `element` line; returns the events written.

        Bounded: at most `max_pending` events remain to encode. Safe to call twice.
        """
        if self._fd < 0:
            return self.written
        self._stop = True
        self._wake.set()
        self._thread.join()
        end = {
            "type": "element",
            "name": element,
            "cpu_seconds": cpu_seconds,
            "events": self.written,
            "dropped": self.dropped + self.errors,
        }
        self._write((json.dumps(end) + "\n").encode("utf-8"), 0)
        os.close(self._fd)
        self._fd = -1
        return self.written


@dataclass
class EventFile:
    """What one element's event file held."""

    events: list[Any]
    element: str | None
    cpu_seconds: float
    complete: bool  # the closing `element` line was there
    dropped: int = 0  # events the element could not write (its buffer was full)


def read_events(path: Path) -> EventFile:
    """Read an event file written by `EventRecorder` (while it runs, or after it closed).

    A last line without its newline is a write cut short (the element was killed, or is
    writing it now): it is left out and the file is incomplete.
    """
    events: list[Any] = []
    element: str | None = None
    cpu = 0.0
    complete = False
    dropped = 0
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.endswith("\n"):
                break
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
                dropped = int(d.get("dropped") or 0)
                complete = True
                continue
            try:
                events.append(event_from_json(d))
            except EventLogError as exc:
                raise EventLogError(f"{path}:{lineno}: {exc}") from None
    return EventFile(events, element, cpu, complete, dropped)


class EventTail:
    """The events an `EventRecorder` appends to `path`, read while it writes them: each
    `read()` returns the events of the whole lines added since the last one (the live console
    watching element processes, `ng911 testbed run --processes --console`).

    Bounded: one `read()` takes at most `max_read` bytes; when more than `max_backlog` bytes
    wait (the reader fell behind a flood), it jumps to the newest `max_backlog` and counts the
    bytes skipped (`skipped`): a slow reader loses events, the writer never waits for it.
    A line that is not an event (cut by the jump, or hostile) is counted in `bad`, never
    raised. `complete` once the closing `element` line was read. A missing file (the process
    has not started writing) reads as nothing yet.
    """

    def __init__(self, path: Path, *, max_read: int = 1 << 20, max_backlog: int = 4 << 20) -> None:
        self.path = path
        self.max_read = max_read
        self.max_backlog = max(max_backlog, max_read)
        self.offset = 0
        self.skipped = 0
        self.bad = 0
        self.complete = False
        self._partial = b""
        self._resync = False  # after a jump: the first line is a fragment
        self._fh: Any = None

    def read(self) -> list[Any]:
        if self._fh is None:
            try:
                self._fh = self.path.open("rb")
            except OSError:
                return []
        try:
            size = os.fstat(self._fh.fileno()).st_size
            if size < self.offset:  # truncated: the file was written anew
                self.offset, self._partial = 0, b""
            if size - self.offset > self.max_backlog:
                jump = size - self.max_backlog
                self.skipped += jump - self.offset + len(self._partial)
                self.offset, self._partial, self._resync = jump, b"", True
            self._fh.seek(self.offset)
            data = self._fh.read(min(size - self.offset, self.max_read))
        except OSError:
            return []
        self.offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if self._resync and lines:
            self._resync = False
            lines.pop(0)
        events: list[Any] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                if d.get("type") == "element":
                    self.complete = True
                    continue
                events.append(event_from_json(d))
            except (ValueError, TypeError, AttributeError, KeyError, IndexError, EventLogError):
                self.bad += 1
        return events

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
