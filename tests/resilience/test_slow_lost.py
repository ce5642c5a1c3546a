"""Issue 11 item 8: slow and greedy LoST clients cost the ECRF seconds, not minutes.

Before the HTTP limits (now `ng911.net.http1.HttpLimits`), 1,000 connections trickling a
body stayed open for more than 70 s and a connection that sent nothing was kept for aiohttp's
keep-alive (75 s). Here, with short configured deadlines, every trickling connection is cut
off (408, closed) at the deadline whatever its progress, a real query on another connection is
answered meanwhile, an oversize body gets 413, and one address cannot take more than its share
of connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import signal
import sys
import time
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

import aiohttp
import pytest

from ng911.cli import main
from ng911.lost.embedded import EmbeddedStore
from ng911.lost.engine import EngineConfig
from ng911.lost.protocol import FindServiceResponse, parse_response
from ng911.lost.server import LostServer, RunningServer, ServerConfig, serve
from ng911.net.http1 import HttpLimits

FIND = (
    b'<findService xmlns="urn:ietf:params:xml:ns:lost1" xmlns:gml="http://www.opengis.net/gml">'
    b'<location id="abc" profile="geodetic-2d"><gml:Point srsName="urn:ogc:def:crs:EPSG::4326">'
    b"<gml:pos>40.6782, -73.9442</gml:pos></gml:Point></location>"
    b"<service>urn:service:sos</service></findService>"
)
HEAD = b"POST /lost HTTP/1.1\r\nHost: ecrf\r\nContent-Type: application/lost+xml\r\n"
SLOW = 200  # trickling connections (bounded: 400 descriptors in this process)
GRACE = 8.0  # seconds past a deadline a loaded machine may take to act on it


@pytest.fixture(scope="module")
def store() -> EmbeddedStore:
    return EmbeddedStore.from_geojson()


@pytest.fixture(autouse=True, scope="module")
def enough_descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * SLOW + 256
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {want}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


async def start(store: EmbeddedStore, **limits: float) -> RunningServer:
    cfg = ServerConfig(engine=EngineConfig(source="ecrf.test"), limits=HttpLimits(**limits))
    return await serve(LostServer(store, cfg).app, "127.0.0.1", 0)


@contextlib.asynccontextmanager
async def running(store: EmbeddedStore, **limits: float) -> AsyncIterator[RunningServer]:
    server = await start(store, **limits)
    try:
        yield server
    finally:
        await server.close()


async def find(server: RunningServer) -> FindServiceResponse:
    async with aiohttp.ClientSession() as s, s.post(server.url, data=FIND) as r:
        assert r.status == 200
        resp = parse_response(await r.read())
    assert isinstance(resp, FindServiceResponse)
    return resp


async def until_closed(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    trickle: bytes,
    every: float,
    limit: float,
) -> tuple[float, bytes]:
    """Send `trickle` one byte per `every` s until the server closes; (seconds, bytes read)."""
    t0 = time.monotonic()
    got = b""
    i = 0
    while time.monotonic() - t0 < limit:
        if i < len(trickle) and not writer.is_closing():
            with contextlib.suppress(OSError):
                writer.write(trickle[i : i + 1])
                i += 1
        try:
            chunk = await asyncio.wait_for(reader.read(4096), every)
        except TimeoutError:
            continue
        except OSError:  # reset: closed as well
            break
        if not chunk:
            break
        got += chunk
    writer.close()
    return time.monotonic() - t0, got


async def slow_body(port: int, limit: float) -> tuple[float, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HEAD + f"Content-Length: {len(FIND)}\r\n\r\n".encode())
    return await until_closed(reader, writer, FIND, 0.5, limit)


async def test_trickling_bodies_are_cut_off_while_real_queries_are_answered(
    store: EmbeddedStore,
) -> None:
    body_timeout = 2.0
    limits = {"header_timeout": 2.0, "body_timeout": body_timeout, "max_per_source": 4 * SLOW}
    async with running(store, **limits) as server:
        limit = body_timeout + GRACE + 10.0  # the test's own bound, past the one asserted
        slow = [asyncio.ensure_future(slow_body(server.port, limit)) for _ in range(SLOW)]
        await asyncio.sleep(0.5)
        # (b) meanwhile a normal findService from another connection is answered
        resp = await asyncio.wait_for(find(server), 10.0)
        assert resp.mappings[0].uris == ("sip:psap-brooklyn@esinet.example",)
        results = await asyncio.gather(*slow)
        assert server.connections is not None
        stats = server.connections
    # (a) every trickling connection closed at the deadline, though it kept sending
    slowest = max(t for t, _ in results)
    assert slowest < body_timeout + GRACE, f"slowest closed after {slowest:.1f} s"
    answered_408 = sum(got.startswith(b"HTTP/1.1 408") for _, got in results)
    assert answered_408 == SLOW, f"only {answered_408} of {SLOW} got 408"
    assert stats.timed_out >= SLOW and stats.total == 0


async def test_slow_or_missing_headers_get_408_or_close(
    store: EmbeddedStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ng911.lost.server")
    header_timeout = 1.5
    async with running(store, header_timeout=header_timeout) as server:
        # a header a byte every 0.2 s: progress all along, cut off at the deadline anyway
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(HEAD)
        took, got = await until_closed(reader, writer, b"X-Slow: " + b"a" * 200, 0.2, 30.0)
        assert got.startswith(b"HTTP/1.1 408 Request Timeout")
        assert took < header_timeout + GRACE
        # a connection that never sends a byte is closed too (nothing to answer)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        took, got = await until_closed(reader, writer, b"", 0.2, 30.0)
        assert got == b"" and took < header_timeout + GRACE
    lines = [r.getMessage() for r in caplog.records if "lost.timeout" in r.getMessage()]
    assert lines and all(len(line) < 300 and "aaaa" not in line for line in lines)


async def test_idle_keep_alive_connection_is_closed(store: EmbeddedStore) -> None:
    async with running(store, idle_timeout=1.0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(HEAD + f"Content-Length: {len(FIND)}\r\n\r\n".encode() + FIND)
        took, got = await until_closed(reader, writer, b"", 0.2, 30.0)
        assert got.startswith(b"HTTP/1.1 200 OK") and b"findServiceResponse" in got
        assert took < 1.0 + GRACE


async def test_oversize_body_gets_413_before_it_is_read(store: EmbeddedStore) -> None:
    async with running(store) as server:
        # declared beyond max_body: answered at once, the body is never sent
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(HEAD + b"Content-Length: 10000000\r\n\r\n")
        took, got = await until_closed(reader, writer, b"", 0.2, 30.0)
        assert got.startswith(b"HTTP/1.1 413") and took < GRACE
        # chunked, so undeclared: refused once it passes the limit
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        chunk = b"<x>" + b"C" * 8000
        body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20))
        writer.write(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body)
        took, got = await until_closed(reader, writer, b"", 0.2, 30.0)
        assert got.startswith(b"HTTP/1.1 413") and took < GRACE


async def open_from(source: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def refused(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(100), 5.0) == b""
    except OSError:
        return True
    except TimeoutError:
        return False


async def test_per_source_and_total_connection_caps(
    store: EmbeddedStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ng911.lost.server")
    cap = 4
    async with running(store, max_per_source=cap, max_connections=cap + 2) as server:
        held = [await open_from("127.0.0.1", server.port) for _ in range(cap)]
        await asyncio.sleep(0.2)
        r, w = await open_from("127.0.0.1", server.port)  # the N+1st from one address
        assert await refused(r)
        w.close()
        # another address still gets in and is answered
        r2, w2 = await open_from("127.0.0.2", server.port)
        w2.write(HEAD + f"Content-Length: {len(FIND)}\r\nConnection: close\r\n\r\n".encode())
        w2.write(FIND)
        answer = await asyncio.wait_for(r2.read(), 10.0)
        assert answer.startswith(b"HTTP/1.1 200 OK") and b"psap-brooklyn" in answer
        w2.close()
        # the total cap: two more fill it, a third address is refused too
        more = [await open_from("127.0.0.2", server.port) for _ in range(2)]
        await asyncio.sleep(0.2)
        r3, w3 = await open_from("127.0.0.3", server.port)
        assert await refused(r3)
        w3.close()
        for _, w in held + more:
            w.close()
        assert server.connections is not None and server.connections.refused == 2
    reasons = [r.getMessage() for r in caplog.records if "lost.refused" in r.getMessage()]
    assert any('"max_per_source"' in x and '"127.0.0.1"' in x for x in reasons)
    assert any('"max_connections"' in x and '"127.0.0.3"' in x for x in reasons)


def lost_table() -> str:
    geo = resources.files("ng911") / "data" / "nyc-boroughs.geojson"
    return f'[ecrf]\nname = "ecrf"\nhost = "127.0.0.1"\nboundaries = "{geo}"\n'


def test_ng911_run_lost_refuses_a_bad_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "lost.toml"
    cfg.write_text(lost_table() + "header_timeout = 0\n")
    assert main(["run", "lost", "--config", str(cfg), "--table", "ecrf"]) == 2
    assert "header_timeout must be > 0" in capsys.readouterr().err


async def test_ng911_run_lost_takes_the_limits_from_its_table(tmp_path: Path) -> None:
    cfg = tmp_path / "lost.toml"
    table = lost_table()
    cfg.write_text(table + "header_timeout = 1.0\nmax_per_source = 1\nmax_body = 1000\n")
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "ng911", "run", "lost", "--config", str(cfg), "--table", "ecrf"),
        "--ready",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30.0))
        port = int(ready["url"].rsplit(":", 1)[1].split("/")[0])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        assert await refused(r2)  # max_per_source = 1
        w2.close()
        took, got = await until_closed(reader, writer, b"", 0.2, 30.0)
        assert got == b"" and took < 1.0 + GRACE  # header_timeout = 1.0
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HEAD + b"Content-Length: 1001\r\n\r\n")
        _, got = await until_closed(reader, writer, b"", 0.2, 30.0)
        assert got.startswith(b"HTTP/1.1 413")  # max_body = 1000
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()[-2000:]
