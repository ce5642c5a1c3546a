"""The element's clock and tasks: timers and coroutines that run under its CPU accounting
and its error guard, so that a failing callback is logged and counted, never lost and never
fatal. A base class of `SipElement` (its `call_later`, `spawn`, `drive` are what every
element calls on itself)."""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

from ng911.elements.elementlog import EventLog
from ng911.elements.native import mypyc_attr

__all__ = ["LoopTimer", "Scheduler", "TimerHeap"]

# A timer of the event loop: asyncio's `TimerHandle`, or uvloop's (not a subclass of it).
# `Any`, because the compiled build checks a declared class at run time.
LoopTimer = Any

log = logging.getLogger("ng911.elements")


class TimerHeap:
    """Many one-shot timers in one heap behind ONE event-loop timer: the transactions' timers.

    Why: an element runs ~8 RFC 3261 timers per proxied call (A/B, M, L, E/F, K, J), most
    cancelled within milliseconds. As `loop.call_later` handles each is an object with a
    context copy, pushed on the loop's heap and swept from it after cancellation. Here a
    timer is a `(deadline, number)` pair of plain numbers on a heap (not tracked by the
    cyclic collector) and an entry in `_live`; cancelling it just forgets the number (its
    pair is dropped when it reaches the top, or in a compaction when most pairs are dead);
    one loop timer is armed for the earliest deadline, and every timer due within `SLACK`
    of it runs at the same wake-up. `fire(owner, name)` runs a timer that came due; it
    must not raise (the element passes its guarded, accounted runner).
    """

    __slots__ = ("_armed", "_fire", "_handle", "_heap", "_live", "_loop", "_seq")

    SLACK: ClassVar[float] = 0.001  # timers due this close together run at one wake-up

    def __init__(self, fire: Callable[[Any, str], None]) -> None:
        self._fire = fire
        self._heap: list[tuple[float, int]] = []
        self._live: dict[int, tuple[Any, str]] = {}
        self._seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: LoopTimer = None
        self._armed = 0.0  # deadline the loop timer is set for

    def __len__(self) -> int:
        return len(self._live)

    def start(self, loop: asyncio.AbstractEventLoop, delay: float, owner: Any, name: str) -> int:
        """Start a timer; its number, which `cancel` takes."""
        self._loop = loop
        self._seq = seq = self._seq + 1
        when = loop.time() + delay
        heapq.heappush(self._heap, (when, seq))
        self._live[seq] = (owner, name)
        if self._handle is None or when < self._armed:
            self._arm(when)
        return seq

    def cancel(self, seq: int) -> None:
        live = self._live
        if live.pop(seq, None) is not None and len(self._heap) > 1024 + 2 * len(live):
            # mostly dead pairs (UDP's B/F, cancelled at the answer, wait 32 s): rebuild
            self._heap = [e for e in self._heap if e[1] in live]
            heapq.heapify(self._heap)

    def stop(self) -> None:
        """Forget every timer (the element closes)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._heap.clear()
        self._live.clear()

    def _arm(self, when: float) -> None:
        assert self._loop is not None
        if self._handle is not None:
            self._handle.cancel()
        self._armed = when
        self._handle = self._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._handle = None
        assert self._loop is not None
        heap, live = self._heap, self._live
        due = self._loop.time() + self.SLACK
        while heap and heap[0][0] <= due:
            item = live.pop(heapq.heappop(heap)[1], None)
            if item is not None:
                self._fire(*item)
        while heap and heap[0][1] not in live:
            heapq.heappop(heap)  # dead pairs at the top: no wake-up for them
        # a fired timer may have started one (and armed for it): arm for the earliest
        if heap and (self._handle is None or heap[0][0] < self._armed):
            self._arm(heap[0][0])


@mypyc_attr(allow_interpreted_subclasses=True)
class Scheduler:
    """Timers, tasks and the CPU/error counters of one element."""

    name: str
    log: EventLog

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.cpu_seconds = 0.0  # time.thread_time() spent in handlers and callbacks
        self.errors = 0

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def drive(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` now, as far as it goes without waiting; a task only if it must wait.

        Why: a send over UDP, or over an open TCP/TLS connection, never waits, and a task
        per message costs more than the send itself. The coroutine is stepped here; only
        when it waits (a TCP connect, a TLS handshake) is the rest handed to a task that
        resumes it, so the messages of one transaction still leave in order.
        """
        try:
            fut = coro.send(None)
        except StopIteration:
            return
        except Exception as exc:
            self.errors += 1
            self.log("task_failed", error=f"{type(exc).__name__}: {exc}")
            return
        self.spawn(_resume(coro, fut))

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run a coroutine as a task whose failure is logged, never lost."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.errors += 1
            self.log("task_failed", error=f"{type(exc).__name__}: {exc}")
            log.error("%s: task failed", self.name, exc_info=exc)

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> LoopTimer:
        """A timer whose callback runs under this element's accounting and error guard."""
        return self.loop.call_later(delay, self._guarded, fn, args)

    def _guarded(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        t0 = time.thread_time()
        try:
            fn(*args)
        except Exception as exc:
            self.errors += 1
            self.log("handler_failed", error=f"{type(exc).__name__}: {exc}")
            log.error("%s: timer handler failed", self.name, exc_info=exc)
        finally:
            self.cpu_seconds += time.thread_time() - t0

    def _accounted(self, fn: Callable[..., None], *args: Any) -> None:
        t0 = time.thread_time()
        try:
            fn(*args)
        finally:
            self.cpu_seconds += time.thread_time() - t0


async def _resume(coro: Coroutine[Any, Any, None], fut: Any) -> None:
    """Continue a coroutine that `SipElement.drive` started and that now waits on `fut`."""
    while True:
        try:
            if fut is None:
                await asyncio.sleep(0)  # a bare yield
            else:
                # what Task.__step does with a yielded future: clear its "blocking" flag,
                # then wait for it (here by awaiting it ourselves)
                fut._asyncio_future_blocking = False
                await fut
        except asyncio.CancelledError:
            coro.close()
            raise
        except BaseException:
            pass  # the coroutine reads the future's outcome itself when resumed
        try:
            fut = coro.send(None)
        except StopIteration:
            return
