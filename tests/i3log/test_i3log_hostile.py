"""Hostile clients of the Logging Service, now on `ng911.net.http1`: a slow head or body is a
408, a declared body beyond `max_body` a 413 before a byte of it is read, both with i3's JSON
body; connections beyond the per-source cap are cut before a byte is read; a query string
that is not UTF-8, a wrong method and an unknown path are clear JSON answers. Each refusal
or timeout is one `logger.*` log line."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ng911.i3log.jws import Verifier
from ng911.i3log.server import LoggingServer, LoggingServerConfig, serve_logging
from ng911.i3log.store import SqliteStore
from ng911.net.http1 import HttpLimits, RunningServer

LIMITS = HttpLimits(header_timeout=0.5, body_timeout=0.5, idle_timeout=5.0, max_per_source=2)


@pytest.fixture
async def running(tmp_path: Path, verifier: Verifier) -> AsyncIterator[RunningServer]:
    store = await SqliteStore(str(tmp_path / "h.sqlite")).open()
    cfg = LoggingServerConfig(max_body=4096, limits=LIMITS)
    server = await serve_logging(LoggingServer(store, verifier, cfg), cleanup=store.close)
    yield server
    await server.close()


async def exchange(server: RunningServer, data: bytes, wait: float = 3.0) -> bytes:
    """Send `data`, then read until the server closes (bounded by `wait`)."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(65536), wait)
    finally:
        writer.close()


def answer(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def events(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    out = []
    for r in caplog.records:
        if r.name == "ng911.i3log.server" and r.getMessage().startswith("{"):
            out.append(json.loads(r.getMessage()))
    return out


async def test_slow_head_and_slow_body_are_408_with_i3_json(
    running: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ng911.i3log.server")
    status, body = answer(await exchange(running, b"POST /LogEvents HTTP/1.1\r\nHost: x\r\n"))
    assert status == 408 and body["code"] == 454 and body["reason"] == "Request Timeout"
    head = b"POST /LogEvents HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
    status, body = answer(await exchange(running, head))
    assert status == 408 and body["code"] == 454
    phases = [e["phase"] for e in events(caplog) if e["event"] == "logger.timeout"]
    assert phases == ["headers", "body"]
    assert all(e["element"] == "logger" for e in events(caplog))


async def test_declared_oversize_body_is_413_before_it_is_read(
    running: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ng911.i3log.server")
    head = b"POST /LogEvents HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n"
    # no byte of the body is sent: the answer cannot wait for it
    status, body = answer(await exchange(running, head, wait=0.4))
    assert status == 413 and body["code"] == 461
    assert any(e.get("reason") == "max_body" for e in events(caplog))


async def test_connections_beyond_the_per_source_cap_are_cut(running: RunningServer) -> None:
    held = [await asyncio.open_connection(running.host, running.port) for _ in range(2)]
    try:
        await asyncio.sleep(0.05)
        assert running.connections is not None and running.connections.total == 2
        reader, writer = await asyncio.open_connection(running.host, running.port)
        writer.write(b"GET /Versions HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            got = await asyncio.wait_for(reader.read(1024), 2.0)
        except ConnectionError:
            got = b""
        writer.close()
        assert got == b"" and running.connections.refused == 1
        # the held ones are still served
        held[0][1].write(b"GET /Versions HTTP/1.1\r\nHost: x\r\n\r\n")
        line = await asyncio.wait_for(held[0][0].readline(), 2.0)
        assert line.startswith(b"HTTP/1.1 200")
    finally:
        for _r, w in held:
            w.close()


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        (b"GET /LogEvents?callId=%ff%fe", 400),  # not UTF-8
        (b"GET /LogEvents?" + b"&".join(b"callId=%d" % i for i in range(40)), 400),
        (b"PUT /LogEvents", 405),
        (b"DELETE /LogEvents/abc", 405),
        (b"GET /LogEvents/a/b", 404),
        (b"GET /nothing", 404),
    ],
)
async def test_bad_targets_get_clear_json(
    running: RunningServer, request_line: bytes, status: int
) -> None:
    req = request_line + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    got, body = answer(await exchange(running, req))
    assert got == status and body["code"] == 454 and body["reason"]
