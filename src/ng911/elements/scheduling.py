"""The element's clock and tasks: timers and coroutines that run under its CPU accounting
and its error guard, so that a failing callback is logged and counted, never lost and never
fatal. A base class of `SipElement` (its `call_later`, `spawn`, `drive` are what every
element calls on itself)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ng911.elements.elementlog import EventLog

__all__ = ["Scheduler"]

log = logging.getLogger("ng911.elements")


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

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> asyncio.TimerHandle:
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
