"""Which event loop `ng911 run` runs an element on: uvloop when installed, else asyncio's.

Why uvloop: the VSP proxy's per-datagram cost outside our own code (epoll wake-up, the
transport's read and `sendto`, timer bookkeeping) is asyncio's pure-Python plumbing; uvloop
does it in C (libuv). Measured on `bench/proxy.py --mode udp,udp-burst` (the proxy alone in a
process, interleaved A/B): ~10-20 % less CPU per call. TLS needs nothing of uvloop's own SSL
layer: `net/stream.py` runs TLS itself over a plain TCP transport (`ssl.MemoryBIO`), so
mutual TLS, SNI, session resumption, the key log and peer-certificate checks are the same
code on either loop (the TLS tests run on both: `NG911_TEST_LOOP=uvloop`).

`auto` (the default) takes uvloop when it can be imported; `asyncio` forces the standard
loop (a bisecting aid); `uvloop` requires it (an error when missing). The in-process testbed
chain stays on asyncio (`ng911 testbed run`): its figures are per element, not per loop.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ng911.elements.config import EVENT_LOOPS as LOOPS
from ng911.elements.config import ConfigError

__all__ = ["LOOPS", "loop_factory", "resolve_loop", "run"]

T = TypeVar("T")


def _have_uvloop() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def resolve_loop(choice: str) -> str:
    """ "uvloop" or "asyncio": what `choice` ("auto", "uvloop", "asyncio") means here."""
    if choice not in LOOPS:
        raise ConfigError(f"loop: {choice!r} is not one of {', '.join(LOOPS)}")
    if choice == "asyncio":
        return "asyncio"
    if _have_uvloop():
        return "uvloop"
    if choice == "uvloop":
        raise ConfigError("loop = uvloop, but uvloop is not installed (pip install uvloop)")
    return "asyncio"


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A factory of new event loops of the kind `choice` resolves to."""
    if resolve_loop(choice) == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """`asyncio.run(main)` on the loop `choice` picks."""
    try:
        factory = loop_factory(choice)
    except ConfigError:
        main.close()  # never awaited: no "coroutine was never awaited" warning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
