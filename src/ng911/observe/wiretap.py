"""A tap on `ng911.net` stream connections that reports the raw bytes written (`WireEvent`).

Why it exists: a TLS hop's capture must hold the TLS records exactly as they crossed the
socket, and only the connection sees them (`ng911.net.stream` runs TLS over memory BIOs and
reports per-message byte counts, not the bytes). Until `ng911.net` emits `WireEvent` itself,
this adapter wraps each new connection's asyncio transport so every `write()` (TLS handshake
records, application data, alerts; plain TCP segments) is reported to the layer's observers.

It is installed by the testbed for the duration of a run (`with wire_tap():`) and removed
afterwards; when `ng911.net.events` defines `WireEvent`, `wire_tap()` does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

from ng911.observe.wire import WireEvent


class _TapTransport(asyncio.Transport):
    """Forwards everything to the real transport; reports each write to the observers."""

    def __init__(self, inner: asyncio.Transport, conn: Any) -> None:
        super().__init__()
        self._inner = inner
        self._conn = conn
        sock = inner.get_extra_info("sockname")
        peer = inner.get_extra_info("peername")
        self._local = (str(sock[0]), int(sock[1])) if sock else ("?", 0)
        self._remote = (str(peer[0]), int(peer[1])) if peer else ("?", 0)

    def _report(self, data: bytes) -> None:
        layer = self._conn.layer
        if not layer.observers or not data:
            return
        ev = WireEvent(
            ts=time.time(),
            mono=time.perf_counter(),
            element=layer.element,
            transport=self._conn.kind,
            connection_id=self._conn.id,
            direction="out",
            local=self._local,
            remote=self._remote,
            data=bytes(data),
        )
        for obs in list(layer.observers):
            with contextlib.suppress(Exception):
                obs(ev)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._report(bytes(data))
        self._inner.write(data)

    def writelines(self, list_of_data: Any) -> None:
        for d in list_of_data:
            self.write(d)

    def is_closing(self) -> bool:
        return self._inner.is_closing()

    def close(self) -> None:
        self._inner.close()

    def abort(self) -> None:
        self._inner.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._inner.get_extra_info(name, default)

    def can_write_eof(self) -> bool:
        return self._inner.can_write_eof()

    def write_eof(self) -> None:
        self._inner.write_eof()

    def pause_reading(self) -> None:
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._inner.resume_reading()

    def is_reading(self) -> bool:
        return self._inner.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._inner.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._inner.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self._inner.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._inner.set_write_buffer_limits(high, low)


def net_reports_wire() -> bool:
    """True when ng911.net emits WireEvent itself (then no tap is needed)."""
    try:
        import ng911.net.events as ev
    except ImportError:
        return False
    return hasattr(ev, "WireEvent")


@contextlib.contextmanager
def wire_tap() -> Iterator[bool]:
    """Report raw stream writes while the block runs. Yields True if the tap is active."""
    if net_reports_wire():
        yield False
        return
    try:
        from ng911.net.stream import StreamConnection
    except ImportError:
        yield False
        return
    original = StreamConnection.connection_made

    def connection_made(self: Any, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.Transport) and not isinstance(transport, _TapTransport):
            transport = _TapTransport(transport, self)
        original(self, transport)

    StreamConnection.connection_made = connection_made  # type: ignore[method-assign]
    try:
        yield True
    finally:
        StreamConnection.connection_made = original  # type: ignore[method-assign]
