"""`ng911.net.http1` on real sockets: keep-alive, pipelining, and hostile input (malformed
requests, huge heads, too many fields, upgrades, bodies beyond the cap, a client that does not
read) get a clear answer and a close, never a crash; graceful stop answers what is in progress.
Run on both loops the LoST server may use (asyncio and uvloop)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest

from ng911.net.http1 import MAX_HEAD, MAX_HEADERS, HttpLimits, HttpServer, Request, Response

POST = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"


def echo(req: Request) -> Response:
    return Response(200, b"%s %s %s" % (req.method.encode(), req.path.encode(), req.body))


async def slow(req: Request) -> Response:
    await asyncio.sleep(0.1)
    return echo(req)


@contextlib.asynccontextmanager
async def running(handler=echo, **limits: float) -> AsyncIterator[HttpServer]:  # type: ignore[no-untyped-def]
    server = HttpServer(handler, HttpLimits(**limits), max_body=1000)
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.stop()


async def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send `data`, read until the server closes (bounded)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    got = b""
    with contextlib.suppress(TimeoutError, OSError):
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                got += chunk
    writer.close()
    return got


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run(kind: str, coro_fn) -> None:  # type: ignore[no-untyped-def]
    if kind == "uvloop":
        import uvloop

        uvloop.run(coro_fn())
    else:
        asyncio.run(coro_fn())


def test_keep_alive_and_pipelined_requests_answered_in_order(loop_kind: str) -> None:
    async def main() -> None:
        async with running(slow) as server:
            reqs = b"".join(
                b"POST /%d HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\n%d" % (i, i % 10)
                for i in range(20)
            )
            last = b"GET /end HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            got = await exchange(server.port, reqs + last)
            answers = got.split(b"HTTP/1.1 200 OK")[1:]
            assert len(answers) == 21
            for i, a in enumerate(answers[:20]):
                assert a.endswith(b"POST /%d %d" % (i, i % 10))
            assert b"Connection: close" in answers[-1] and b"Date: " in answers[0]

    run(loop_kind, main)


@pytest.mark.parametrize(
    ("data", "status"),
    [  # an Upgrade is ignored (RFC 9110 §7.8): answered, then the connection closes
        (b"NOT HTTP AT ALL\r\n\r\n", b"400"),
        (b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", b"400"),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"400"),
        (b"GET /x HTTP/1.1\r\nBad Header\r\n\r\n", b"400"),
        (b"GET /x HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n", b"200"),
        (b"GET /" + b"a" * (MAX_HEAD + 10) + b" HTTP/1.1\r\n\r\n", b"431"),
        (b"GET /x HTTP/1.1\r\nX: " + b"v" * (MAX_HEAD + 10) + b"\r\n\r\n", b"431"),
        (
            b"GET /x HTTP/1.1\r\n"
            + b"".join(b"X%d: v\r\n" % i for i in range(MAX_HEADERS + 1))
            + b"\r\n",
            b"431",
        ),
        (b"POST /x HTTP/1.1\r\nContent-Length: 1001\r\n\r\n", b"413"),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n" + b"a" * 1001, b"413"),
    ],
)
def test_hostile_requests_get_an_error_and_a_close(
    loop_kind: str, data: bytes, status: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ng911.net.http1")

    async def main() -> None:
        async with running() as server:
            got = await exchange(server.port, data)
            assert got.startswith(b"HTTP/1.1 " + status), got[:80]
            assert b"Connection: close" in got
            # the server is still fine
            closing = POST.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
            assert (await exchange(server.port, closing)).endswith(b"POST /x hello")
            assert server.table.total == 0

    run(loop_kind, main)
    lines = [r.getMessage() for r in caplog.records]
    assert status == b"200" or any(
        '"http.bad_request"' in x or '"http.refused"' in x for x in lines
    )
    assert all("vvvv" not in x and "aaaa" not in x for x in lines)  # no echo of their bytes


def test_a_head_that_never_ends_is_refused_before_it_is_buffered(loop_kind: str) -> None:
    async def main() -> None:
        async with running() as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /x HTTP/1.1\r\nX: ")
            got = b""
            with contextlib.suppress(OSError):
                for _ in range(2 * MAX_HEAD // 4096):  # bounded: 16 chunks
                    writer.write(b"v" * 4096)
                    await writer.drain()
                async with asyncio.timeout(10):
                    while chunk := await reader.read(4096):
                        got += chunk
            writer.close()
            assert got.startswith(b"HTTP/1.1 431")

    run(loop_kind, main)


def test_expect_continue_and_a_handler_bug(loop_kind: str) -> None:
    def broken(req: Request) -> Response:
        raise RuntimeError("bug")

    async def main() -> None:
        async with running() as server:
            got = await exchange(
                server.port,
                POST.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"),
            )
            assert got.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")
        async with running(broken) as server:
            got = await exchange(server.port, POST)
            assert got.startswith(b"HTTP/1.1 500")

    run(loop_kind, main)


def test_a_client_that_does_not_read_is_not_read_either(loop_kind: str) -> None:
    """Pipelined requests from a client that never reads: reading pauses (bounded memory),
    the server stays responsive to others, and stopping it ends the connection."""

    async def main() -> None:
        big = Response(200, b"x" * 200_000)
        async with running(lambda _r: big) as server:
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(2):
                    for _ in range(2000):  # bounded
                        writer.write(POST)
                        await writer.drain()
            conn = next(iter(server.connections))
            assert len(conn.queue) <= 10
            other = await exchange(
                server.port, POST.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
            )
            assert other.startswith(b"HTTP/1.1 200")
            writer.close()

    run(loop_kind, main)


def test_stop_answers_requests_in_progress_and_closes_idle_ones(loop_kind: str) -> None:
    async def main() -> None:
        server = HttpServer(slow)
        port = await server.start("127.0.0.1", 0)
        idle_r, idle_w = await asyncio.open_connection("127.0.0.1", port)
        busy = asyncio.ensure_future(exchange(port, POST))
        await asyncio.sleep(0.1)
        await server.stop(grace=5.0)
        got = await busy
        assert got.startswith(b"HTTP/1.1 200") and b"Connection: close" in got
        assert await asyncio.wait_for(idle_r.read(), 5) == b""
        idle_w.close()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)

    run(loop_kind, main)


def test_deadlines_act_within_a_tick(loop_kind: str) -> None:
    async def main() -> None:
        async with running(header_timeout=0.5, body_timeout=0.5, idle_timeout=0.5) as server:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            got = await exchange(server.port, b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhe")
            assert got.startswith(b"HTTP/1.1 408") and loop.time() - t0 < 5
            got = await exchange(server.port, b"POST /x HTTP/1.1\r\n")
            assert got.startswith(b"HTTP/1.1 408")
            got = await exchange(server.port, POST)  # answered, then idle: closed
            assert got.startswith(b"HTTP/1.1 200") and loop.time() - t0 < 10
            assert server.table.timed_out == 2

    run(loop_kind, main)


def test_query_refuse_hook_and_serve_http(loop_kind: str) -> None:
    """`Request.query` is the raw text after "?"; `refuse` words the server's own 413 and
    408 (the Logging Service's i3 JSON); `serve_http` closes gracefully, then `cleanup`."""
    from ng911.net.http1 import serve_http

    cleaned: list[bool] = []

    def query(req: Request) -> Response:
        return Response(200, f"{req.path}|{req.query}".encode())

    def refuse(status: int, text: str) -> Response:
        return Response(status, b'{"refused": %d}' % status)

    async def cleanup() -> None:
        cleaned.append(True)

    async def main() -> None:
        srv = await serve_http(
            query, limits=HttpLimits(body_timeout=0.3), max_body=10, refuse=refuse,
            cleanup=cleanup, path="/x",
        )  # fmt: skip
        try:
            assert srv.url == f"http://127.0.0.1:{srv.port}/x"
            got = await exchange(
                srv.port, b"GET /a?b=1&c=%ff HTTP/1.1\r\nConnection: close\r\n\r\n"
            )
            assert got.endswith(b"/a|b=1&c=%ff")
            big = b"POST /a HTTP/1.1\r\nContent-Length: 11\r\n\r\n"
            assert (await exchange(srv.port, big)).endswith(b'{"refused": 413}')
            slow_body = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nab"
            assert (await exchange(srv.port, slow_body)).endswith(b'{"refused": 408}')
        finally:
            await srv.close()
        assert cleaned == [True]

    run(loop_kind, main)
