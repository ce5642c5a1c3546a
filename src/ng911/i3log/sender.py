"""The element side of the Logging Service: sign LogEvents and POST them, off the call path.

A logger that is slow, down or refusing must cost an emergency call nothing (NENA i3 has
the element log; it never has a call wait for its log). So:

- `submit(item)` only appends to a BOUNDED queue (`max_queue`): it never awaits, never
  blocks and never raises. When the queue is full the OLDEST item is dropped and counted
  (`dropped`): the newest are the most useful to whoever looks after an outage, and memory
  stays bounded whatever the call rate. An item is a `LogEvent`, or anything `mapper`
  turns into LogEvents (an element's raw observations: `ng911.node.logevents`), so that
  even the mapping (parsing a SIP message) happens off the call path.
- `concurrency` background tasks (default 4) take items in order, map them (`mapper`
  calls `emit` with each LogEvent: a second bounded queue), sign each LogEvent
  (`jws.Signer`) and POST it to `{url}/LogEvents` over `ng911.net.http1client`'s keep-alive
  connections, one per task (https with the element's client context: mutual TLS when the
  logger asks for it). A task takes up to `pipeline` LogEvents (default 8) that are already
  waiting and sends them pipelined (RFC 9112 §9.3.2: one write, answers in order): i3 POSTs
  one LogEvent per request, and the send and the wake-ups were a large part of each one's
  cost; a lone LogEvent goes alone, at once.
- A connection error, a timeout or a 5xx is retried after a backoff (`backoff` doubling to
  `max_backoff`, at most `retries` times, counted in `retried`); then the event is counted
  `failed` and the next one is tried. Delivery is at least once: besides these retries, the
  HTTP client repeats a POST (a pipelined batch) once at once when a reused keep-alive
  connection was closed before any byte of its (first) answer (the logger's idle close
  racing it, RFC 9112 §9.3.1). A repeat is the same signed bytes, which the logger
  stores once and answers with the same logEventId (`store.event_id_for`). A 4xx
  is the logger refusing that event (bad signature, bad LogEvent): counted `refused`, never
  retried.
- `close()` gives the queue `drain` seconds to empty, then cancels the task.
- `pause()` keeps the background tasks from mapping, signing and sending (items still
  queue, bounded as ever) until `resume()`: a process that must not spend a cycle on logging
  while it measures calls (the in-process testbed shares one event loop among all elements
  and the logger) sends everything afterwards, with the events' own timestamps.

Counters: `sent`, `failed`, `refused`, `dropped`, `retried`, `unmapped` (a mapper that
raised: a bug, counted, never propagated); `stats()` for logs and tests.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import ssl
from typing import Any, Protocol

from ng911.i3log.events import LogEvent
from ng911.i3log.jws import Signer
from ng911.net.http1client import ClientLimits, HttpClient, HttpClientError, HttpResponse

__all__ = ["LogSender", "endpoint"]

log = logging.getLogger("ng911.i3log.sender")


class Mapper(Protocol):
    """Turns submitted items into LogEvents, handed to `LogSender.emit`."""

    def map(self, item: Any) -> None: ...

    def flush(self) -> None:
        """Emit whatever is held back (the sender is closing)."""


def endpoint(url: str) -> str:
    """`https://logger.example/` or `.../Logging/v1` → the POST URL `.../LogEvents`."""
    base = url.rstrip("/")
    return base if base.endswith("/LogEvents") else base + "/LogEvents"


class LogSender:
    """Bounded queue + background poster (module docstring). Start it inside a running
    loop (`start()`); `submit` before `start` only queues."""

    def __init__(
        self,
        url: str,
        signer: Signer,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_queue: int = 10_000,
        timeout: float = 2.0,
        retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 2.0,
        concurrency: int = 4,
        mapper: Mapper | None = None,
        pipeline: int = 8,
    ) -> None:
        self.url = endpoint(url)
        self.signer = signer
        self.ssl_context = ssl_context
        self.max_queue = max(1, max_queue)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.concurrency = max(1, concurrency)
        self.pipeline = max(1, pipeline)
        self.mapper = mapper
        self._queue: collections.deque[Any] = collections.deque()  # submitted items
        self._ready: collections.deque[LogEvent] = collections.deque()  # mapped, to send
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = 0
        self._closed = False
        self.paused = False
        self._http: HttpClient | None = None
        self.sent = self.failed = self.refused = self.dropped = self.retried = 0
        self.unmapped = 0
        self.ids: collections.deque[str] = collections.deque(maxlen=1000)  # last logEventIds

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._ready)

    def stats(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "failed": self.failed,
            "refused": self.refused,
            "dropped": self.dropped,
            "retried": self.retried,
            "unmapped": self.unmapped,
            "pending": self.pending,
        }

    def _push(self, queue: collections.deque[Any], item: Any) -> None:
        try:
            if not self._tasks and not self._closed:
                self._autostart()
            if len(queue) >= self.max_queue:
                queue.popleft()
                self.dropped += 1
            queue.append(item)
            self._wake.set()
        except Exception:  # an observer must never break the element
            self.dropped += 1

    def submit(self, item: Any) -> None:
        """Queue `item`; drop the oldest when full. Never blocks, never raises."""
        self._push(self._queue, item)

    def emit(self, event: LogEvent) -> None:
        """What `mapper` calls with each LogEvent it makes (bounded like `submit`)."""
        self._push(self._ready, event)

    def _autostart(self) -> None:
        """Start on the first item queued inside a running loop (an element built outside
        one starts sending once it runs)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self.start()

    def start(self) -> None:
        """Start the background tasks (inside the running loop)."""
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._run(), name=f"i3log-sender-{i}")
                for i in range(self.concurrency)
            ]

    def pause(self) -> None:
        """Queue only (see the module docstring) until `resume`."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self._wake.set()

    async def close(self, drain: float = 1.0) -> None:
        """Send what is queued (and what the mapper holds) for up to `drain` seconds, then
        stop; nothing submitted afterwards is sent. A paused sender resumes for it."""
        self.resume()
        tasks = self._tasks
        if tasks and drain > 0:
            await self.flush(drain)
        else:
            self._flush_mapper()
        self._closed = True
        self._tasks = []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def flush(self, timeout: float) -> bool:
        """Everything queued sent (or failed, refused), then what the mapper holds back
        emitted and sent too, in at most `timeout` s; True when done in time. The sender
        stays open: for when the calls so far are over and someone reads the logger (a test),
        and for `close`. (Queued items are mapped first: mapping may hold an event back.)
        A paused sender resumes."""
        self.resume()
        try:
            async with asyncio.timeout(timeout):
                await self._drained()
                self._flush_mapper()
                await self._drained()
        except TimeoutError:
            return False
        return True

    def _flush_mapper(self) -> None:
        if self.mapper is not None:
            try:
                self.mapper.flush()
            except Exception:
                self.unmapped += 1

    async def _drained(self) -> None:
        while self.pending or self._busy:
            await asyncio.sleep(0.01)

    def _next(self) -> LogEvent | None:
        """The next LogEvent to send, mapping submitted items as needed (synchronously, so
        the mapper sees items in submission order whatever task runs it)."""
        while not self._ready and self._queue:
            item = self._queue.popleft()
            if isinstance(item, LogEvent):
                return item
            if self.mapper is None:
                self.unmapped += 1
                continue
            try:
                self.mapper.map(item)
            except Exception as exc:  # a bug of ours: counted, logged, never raised
                self.unmapped += 1
                log.warning(json.dumps({"event": "logger.map_error", "error": repr(exc)}))
        return self._ready.popleft() if self._ready else None

    def _take(self) -> list[LogEvent]:
        """Up to `pipeline` LogEvents, in order (what one task sends on one connection)."""
        out: list[LogEvent] = []
        while len(out) < self.pipeline:
            event = self._next()
            if event is None:
                break
            out.append(event)
        return out

    async def _run(self) -> None:
        while True:
            events = [] if self.paused else self._take()
            if not events:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._busy += 1
            try:
                await self._deliver(events)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug of ours: count it, keep the loop alive
                self.failed += 1
                log.warning(json.dumps({"event": "logger.send_error", "error": repr(exc)}))
            finally:
                self._busy -= 1

    def _client(self) -> HttpClient:
        if self._http is None or self._http.closed:
            limits = ClientLimits(max_per_origin=self.concurrency, connect_timeout=self.timeout)
            self._http = HttpClient(self.ssl_context, limits)
        return self._http

    async def _deliver(self, events: list[LogEvent]) -> None:
        """Sign `events` and POST them (pipelined when more than one); those without a
        verdict (connection error, timeout, 5xx) are sent again after the backoff."""
        todo = [(e, json.dumps(self.signer.sign(e)).encode()) for e in events]
        delay = self.backoff
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += len(todo)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
            answers = await self._client().post_many(
                self.url, [body for _, body in todo], "application/json",
                timeout=self.timeout, retry=True,
            )  # fmt: skip
            todo = [
                item
                for item, answer in zip(todo, answers, strict=True)
                if isinstance(answer, HttpClientError) or not self._settled(item[0], answer)
            ]
            if not todo:
                return
        self.failed += len(todo)

    def _settled(self, event: LogEvent, resp: HttpResponse) -> bool:
        """Count a logger's verdict on one LogEvent: 201 sent, 4xx refused (never retried);
        False for anything else (retried)."""
        answer, status = resp.body, resp.status
        if status == 201:
            self.sent += 1
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                self.ids.append(str(json.loads(answer).get("id")))
            return True
        if 400 <= status < 500:
            self.refused += 1
            log.warning(
                json.dumps(
                    {"event": "logger.refused", "status": status, "type": event.TYPE,
                     "answer": answer[:200].decode("utf-8", "replace")}
                )
            )  # fmt: skip
            return True
        return False

    def __repr__(self) -> str:
        return f"LogSender({self.url!r}, {self.stats()})"
