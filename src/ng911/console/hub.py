"""Bounded fan-out of console frames: the chain never waits for a browser.

The chain's observer hook (`Hub.observe`) runs inside the elements' send and receive paths,
so it does one O(1) thing: append the event to a bounded deque (a full deque drops the
oldest and counts it) and wake the pump. The pump task turns events into frames (the
`describe` callable) and hands each frame to every viewer's own bounded deque; a viewer
whose browser does not read (a stalled EventSource, a slow link) loses its oldest frames,
counted in `Viewer.dropped`, and never holds up another viewer or a call.

A viewer's frames are sent in batches: once a frame waits, the viewer lingers (`linger`,
40 ms by default) for more before its stream writes them all at once, so a call's few dozen
frames cost a browser a few writes, not one each (`bench/console.py`: the chain's CPU per
call with three browsers reading). A queue half full ends the linger early.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

Frame = dict[str, Any]
LINGER = 0.04  # s a viewer waits for more frames once one is waiting (one write for them all)


class Viewer:
    """One browser's queue of frames (JSON text), at most `size` of them."""

    def __init__(self, size: int, linger: float = 0.0) -> None:
        self.size = max(1, size)
        self.linger = linger
        self.frames: deque[str] = deque()
        self.dropped = 0
        self.sent = 0
        self.batches = 0
        self.wake = asyncio.Event()
        self._wake_at = 1  # queue length that wakes the stream (higher while lingering)

    def push(self, text: str) -> None:
        if len(self.frames) >= self.size:
            self.frames.popleft()
            self.dropped += 1
        self.frames.append(text)
        if len(self.frames) >= self._wake_at:
            self.wake.set()

    async def next_batch(self, timeout: float, linger: float | None = None) -> list[str]:
        """The frames waiting (empty after `timeout` s of silence: time for a keep-alive).
        Once one waits, the frames that come within `linger` s (default: the viewer's) join
        it, unless the queue gets half full first."""
        if not self.frames:
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)
        linger = self.linger if linger is None else linger
        half = max(1, self.size // 2)
        if self.frames and linger > 0 and len(self.frames) < half:
            self.wake.clear()
            self._wake_at = half
            timer = asyncio.get_running_loop().call_later(linger, self.wake.set)
            try:
                await self.wake.wait()  # the linger's end, a half-full queue or close()
            finally:
                timer.cancel()
                self._wake_at = 1
        out = list(self.frames)
        self.frames.clear()
        self.sent += len(out)
        self.batches += 1 if out else 0
        return out


class Hub:
    """Events in (`observe`), frames out to every viewer; the last `keep` frames kept by id
    for the message inspector."""

    def __init__(
        self,
        describe: Callable[[Any], Frame | None],
        *,
        raw_size: int = 20000,
        viewer_size: int = 2000,
        keep: int = 3000,
        linger: float = LINGER,
    ) -> None:
        self.describe = describe
        self.linger = linger  # each viewer's, unless `join` is told otherwise
        self.raw: deque[Any] = deque()
        self.raw_size = raw_size
        self.raw_dropped = 0
        self.viewer_size = viewer_size
        self.viewers: set[Viewer] = set()
        self.left_dropped = 0  # frames lost by viewers that have left (the total stays whole)
        self.left_sent = 0  # frames and batches (stream writes) of the viewers that have left
        self.left_batches = 0
        # id -> (frame, its source event, its JSON text: encoded once, so a browser that
        # (re)connects catches up without re-encoding the frames it missed)
        self.recent: OrderedDict[int, tuple[Frame, Any, str]] = OrderedDict()
        self.keep = keep
        self.seq = 0
        self.errors = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ the chain's side

    def observe(self, event: Any) -> None:
        """The chain's observer: O(1), never raises (a console bug must not fail a call)."""
        try:
            if len(self.raw) >= self.raw_size:
                self.raw.popleft()
                self.raw_dropped += 1
            self.raw.append(event)
            self._wake.set()
        except Exception:
            self.errors += 1

    def start(self) -> None:
        """Start (or resume) the pump; events observed meanwhile are processed first."""
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._pump())

    async def stop_pump(self) -> None:
        """Stop turning events into frames (they wait, bounded) until `start()` again."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def drop_pending(self) -> None:
        """Forget the events not yet turned into frames (the chain they came from is no
        longer the one shown: its hosts would name them wrongly)."""
        self.raw.clear()

    async def close(self) -> None:
        await self.stop_pump()
        for v in list(self.viewers):
            v.wake.set()

    async def _pump(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch = 0
            while self.raw:
                event = self.raw.popleft()
                try:
                    frame = self.describe(event)
                except Exception:
                    self.errors += 1
                    continue
                if frame is not None:
                    self.publish(frame, event)
                batch += 1
                if batch >= 200:  # let the calls run between batches
                    batch = 0
                    await asyncio.sleep(0)

    # ------------------------------------------------------------ the browsers' side

    def publish(self, frame: Frame, source: Any = None, *, keep: bool = True) -> int:
        """Number `frame`, keep it (with its source event; not a state snapshot, which the
        next one replaces) and send it to every viewer."""
        self.seq += 1
        frame["id"] = self.seq
        text = json.dumps(frame, separators=(",", ":"))
        if keep:
            self.recent[self.seq] = (frame, source, text)
            while len(self.recent) > self.keep:
                self.recent.popitem(last=False)
        for v in self.viewers:
            v.push(text)
        return self.seq

    def texts_since(self, since: int, last: int) -> list[str]:
        """The JSON text of at most the `last` kept frames after `since` (a viewer that just
        connected catches up), newest last; walks only those `last` frames."""
        out: list[str] = []
        for i, (_f, _src, text) in reversed(self.recent.items()):
            if i <= since or len(out) >= last:
                break
            out.append(text)
        out.reverse()
        return out

    def lookup(self, frame_id: int) -> tuple[Frame, Any] | None:
        found = self.recent.get(frame_id)
        return None if found is None else (found[0], found[1])

    def join(self, size: int | None = None, linger: float | None = None) -> Viewer:
        v = Viewer(
            self.viewer_size if size is None else size, self.linger if linger is None else linger
        )
        self.viewers.add(v)
        return v

    def leave(self, viewer: Viewer) -> None:
        if viewer in self.viewers:
            self.viewers.discard(viewer)
            self.left_dropped += viewer.dropped
            self.left_sent += viewer.sent
            self.left_batches += viewer.batches

    def stats(self) -> dict[str, Any]:
        return {
            "viewers": len(self.viewers),
            "frames": self.seq,
            "raw_waiting": len(self.raw),
            "raw_dropped": self.raw_dropped,
            "viewer_dropped": sum(v.dropped for v in self.viewers),
            # every viewer's, including those gone (a reconnecting browser's losses too)
            "viewer_dropped_total": self.left_dropped + sum(v.dropped for v in self.viewers),
            "viewer_sent_total": self.left_sent + sum(v.sent for v in self.viewers),
            "viewer_batches_total": self.left_batches + sum(v.batches for v in self.viewers),
            "max_viewer_queue": max((len(v.frames) for v in self.viewers), default=0),
            "errors": self.errors,
        }
