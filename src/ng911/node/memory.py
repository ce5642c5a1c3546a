"""The collector and the heap of an element process: `gc.freeze()` on a timer, malloc_trim.

Process policy, not element behaviour: both act on the whole interpreter (every element and
library it holds), so `ng911 run` (and the benches that imitate it) turn them on; an element
in a test process only gets the memory hook when `ng911.node.build` builds it.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

__all__ = ["GcFreezer", "release_freed_memory"]

_libc_trim: Callable[[int], int] | bool | None = False  # False: not looked up yet


def release_freed_memory() -> bool:
    """Hand memory that is free inside the process back to the OS (glibc `malloc_trim`).

    Why: after a flood the transactions expire and Python frees their objects, but the
    ~1-2 KB message buffers came from malloc, whose heap keeps the freed space: RSS stayed
    at its flood peak for good (70 → 211 MB after 30,000 INVITEs, never back). Trimming
    returns it. False where there is no glibc."""
    global _libc_trim
    if _libc_trim is False:
        try:
            import ctypes

            _libc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _libc_trim = None
    if _libc_trim is None or _libc_trim is True:
        return False
    _libc_trim(0)
    return True


class GcFreezer:
    """Calls `gc.freeze()` every `interval` seconds (`every(0)` or `stop()`: no more).

    Why: each call leaves ~190 GC-tracked objects alive for the 32 s its transactions wait
    out (RFC 3261/6026 timers over UDP), and a full collection walks every one of them
    (~30 µs per held call): at 300 calls/s a pass stalls the loop for 0.3 s and the setup
    delay's p99 goes past 100 ms. Frozen objects are never walked again, yet still freed by
    reference counting when their call ends; only cyclic garbage frozen before it was
    collected would stay. A call leaves none (the transactions break their cycles in
    `SipElement._release`; tests/elements count it), so this is off in a library and on in
    the element process (`ng911 run --gc-freeze`). bench/load.py (`ng911-gc-freeze` row):
    1,000 calls/s with p99 < 10 ms, against 300 without.
    """

    def __init__(self) -> None:
        self._handle: asyncio.TimerHandle | None = None

    def every(self, interval: float) -> None:
        self.stop()
        if interval > 0:
            loop = asyncio.get_running_loop()
            self._handle = loop.call_later(interval, self._freeze, loop, interval)

    def _freeze(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        gc.freeze()
        self._handle = loop.call_later(interval, self._freeze, loop, interval)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
