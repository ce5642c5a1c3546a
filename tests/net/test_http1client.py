"""`ng911.net.http1client` on real sockets, on asyncio and uvloop: keep-alive reuse within a
bounded pool, chunked and close-delimited answers, mutual TLS with the project's CA, the one
retry of a request a reused connection lost, and hostile servers (garbage, huge heads and
bodies, a close mid-answer, silence) costing a request a typed error, never a crash or a hang."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from test_http1 import echo, run  # the same two loops, the same echo handler

from ng911.net.http1 import HttpServer, Request, Response
from ng911.net.http1client import ClientLimits, HttpClient, HttpClientError
from ng911.pki.testpki import TestPki

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def slow_echo(req: Request) -> Response:
    await asyncio.sleep(0.02)
    return echo(req)


@contextlib.asynccontextmanager
async def http_server(handler=echo, ssl_context=None) -> AsyncIterator[HttpServer]:  # type: ignore[no-untyped-def]
    server = HttpServer(handler)
    await server.start("127.0.0.1", 0, ssl_context)
    try:
        yield server
    finally:
        await server.stop()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


@contextlib.asynccontextmanager
async def raw_server(script: Script) -> AsyncIterator[tuple[str, list[int]]]:
    """A scripted server: `script(reader, writer)` per connection; yields the URL and a list
    holding the number of connections accepted."""
    accepted = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        try:
            await script(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/x", accepted
    finally:
        srv.close()


async def answer_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        await read_request(reader)
        writer.write(OK)


def answers(*raw: bytes) -> Script:
    """A server that reads one request and answers it with `raw` (written piece by piece),
    then closes."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        for part in raw:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.01)

    return script


async def kind_of(client: HttpClient, url: str, timeout: float = 2.0) -> str:
    with pytest.raises(HttpClientError) as ei:
        await client.post(url, b"q", "text/plain", timeout=timeout)
    return ei.value.kind


def test_keep_alive_reuse_within_a_bounded_pool(loop_kind: str) -> None:
    async def main() -> None:
        seen: set[int] = set()

        async def handler(req: Request) -> Response:
            seen.add(id(req.conn))
            return await slow_echo(req)

        async with http_server(handler) as srv:
            url = f"http://127.0.0.1:{srv.port}/lost?a=1"
            client = HttpClient(limits=ClientLimits(max_per_origin=2))
            for i in range(5):  # one after another: one connection
                r = await client.post(url, b"%d" % i, "text/plain", timeout=5)
                assert (r.status, r.body) == (200, b"POST /lost %d" % i)
            assert len(seen) == 1 and client.connections == 1
            bodies = [b"%d" % i for i in range(20)]  # at once: never more than 2
            got = await asyncio.gather(
                *(client.post(url, b, "text/plain", timeout=5) for b in bodies)
            )
            assert [r.body for r in got] == [b"POST /lost " + b for b in bodies]
            assert len(seen) == 2 and srv.table.total <= 2
            r = await client.request("GET", url, timeout=5)
            assert r.body == b"GET /lost " and r.headers["content-length"] == "10"
            await client.close()
            with pytest.raises(HttpClientError) as ei:
                await client.post(url, b"", "text/plain", timeout=1)
            assert ei.value.kind == "closed"

    run(loop_kind, main)


def test_chunked_close_delimited_and_interim_answers(loop_kind: str) -> None:
    async def main() -> None:
        client = HttpClient()
        chunked = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
            b"5\r\nhello\r\n",
            b"6\r\n world\r\n0\r\n\r\n",
        )
        async with raw_server(answers(*chunked)) as (url, _):
            r = await client.post(url, b"q", "text/plain", timeout=2)
            assert (r.status, r.body, r.headers["x-a"]) == (200, b"hello world", "1, 2")
        until_close = (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall ", b"of it")
        async with raw_server(answers(*until_close)) as (url, _):
            r = await client.post(url, b"q", "text/plain", timeout=2)
            assert r.body == b"all of it"
        interim = (b"HTTP/1.1 100 Continue\r\n\r\n", OK)
        async with raw_server(answers(*interim)) as (url, _):
            r = await client.post(url, b"q", "text/plain", timeout=2)
            assert (r.status, r.body) == (200, b"ok")
        await asyncio.sleep(0.1)
        assert client.connections == 0  # each server closed: nothing kept
        await client.close()

    run(loop_kind, main)


def test_hostile_servers_cost_an_error_never_a_hang(loop_kind: str) -> None:
    big = 10 * 1024 * 1024
    cases: list[tuple[tuple[bytes, ...], str]] = [
        ((b"garbage\r\n\r\n",), "protocol"),
        ((b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",), "too_large"),
        ((b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 200 + b"\r\n",), "too_large"),
        ((b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % big,), "too_large"),
        (
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",)
            + (b"10000\r\n" + b"z" * 0x10000 + b"\r\n",) * 20,
            "too_large",
        ),
        ((b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a part",), "closed"),
        ((b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",), "protocol"),
        ((b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",), "ok"),
    ]

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async def main() -> None:
        client = HttpClient(limits=ClientLimits(max_body=1024 * 1024))
        for raw, want in cases:
            async with raw_server(answers(*raw)) as (url, _):
                async with asyncio.timeout(5):
                    if want == "ok":  # bytes after a complete answer: answer kept, conn not
                        r = await client.post(url, b"q", "text/plain", timeout=2)
                        assert r.body == b"ok"
                        await asyncio.sleep(0.05)
                        assert client.connections == 0
                    else:
                        assert await kind_of(client, url) == want, raw[0][:40]
        async with raw_server(silent) as (url, _):
            t0 = asyncio.get_running_loop().time()
            assert await kind_of(client, url, timeout=0.3) == "timeout"
            assert asyncio.get_running_loop().time() - t0 < 2
        # after all that, the same client still works
        async with raw_server(answer_each) as (url, _):
            assert (await client.post(url, b"q", "text/plain", timeout=2)).body == b"ok"
        assert await kind_of(client, "ftp://x/") == "url"
        assert await kind_of(client, "http://[::1/") == "url"
        await client.close()

    run(loop_kind, main)


def test_unreachable_and_a_full_pool_time_out(loop_kind: str) -> None:
    async def main() -> None:
        client = HttpClient(limits=ClientLimits(max_per_origin=1))
        async with raw_server(answer_each) as (url, _):
            pass  # closed: nobody listens on that port now
        assert await kind_of(client, url) == "unreachable"

        async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            await asyncio.sleep(0.5)
            writer.write(OK)
            await answer_each(reader, writer)

        async with raw_server(slow) as (url, accepted):
            first = asyncio.ensure_future(client.post(url, b"1", "text/plain", timeout=2))
            await asyncio.sleep(0.05)
            # the one connection is busy: the second request waits, then times out
            assert await kind_of(client, url, timeout=0.1) == "timeout"
            assert (await first).body == b"ok"
            assert (await client.post(url, b"3", "text/plain", timeout=2)).body == b"ok"
            assert accepted[0] == 1
        await client.close()

    run(loop_kind, main)


def test_one_retry_only_for_a_reused_connection_and_a_safe_request(loop_kind: str) -> None:
    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)
        await read_request(reader)  # the next request on this connection: closed unanswered

    async def main() -> None:
        async with raw_server(answer_once) as (url, accepted):
            client = HttpClient()
            assert (await client.post(url, b"1", "text/plain", timeout=2)).body == b"ok"
            r = await client.post(url, b"2", "text/plain", timeout=2, retry=True)
            assert r.body == b"ok" and accepted[0] == 2  # repeated on a fresh connection
            with pytest.raises(HttpClientError) as ei:  # not safe to repeat: the error
                await client.post(url, b"3", "text/plain", timeout=2)
            assert ei.value.kind == "closed" and accepted[0] == 2
            await client.close()

        async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)

        async with raw_server(never) as (url, accepted):  # a fresh connection: no retry
            client = HttpClient()
            with pytest.raises(HttpClientError) as ei:
                await client.post(url, b"1", "text/plain", timeout=2, retry=True)
            assert ei.value.kind == "closed" and accepted[0] == 1
            await client.close()

    run(loop_kind, main)


def test_mutual_tls_with_the_project_ca(loop_kind: str, pki: TestPki) -> None:
    async def main() -> None:
        ctx = pki.server_context("lost", require_client_cert=True)
        async with http_server(echo, ctx) as srv:
            url = f"https://127.0.0.1:{srv.port}/lost"
            client = HttpClient(pki.client_context("esrp"))
            for i in range(3):
                r = await client.post(url, b"%d" % i, "text/plain", timeout=5)
                assert r.body == b"POST /lost %d" % i
            assert client.connections == 1  # one handshake, reused
            await client.close()
            for bad in (pki.client_context(None), pki.client_context("esrp", trust=["vsp"])):
                client = HttpClient(bad)  # no client certificate / server's CA not trusted
                with pytest.raises(HttpClientError) as ei:
                    await client.post(url, b"x", "text/plain", timeout=5)
                assert ei.value.kind in ("tls", "closed", "unreachable"), ei.value
                await client.close()

    run(loop_kind, main)


def test_cancelled_request_frees_its_connection(loop_kind: str) -> None:
    async def main() -> None:
        async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            await asyncio.sleep(1)

        client = HttpClient(limits=ClientLimits(max_per_origin=1))
        async with raw_server(slow) as (url, _):
            task = asyncio.ensure_future(client.post(url, b"1", "text/plain", timeout=5))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.01)
            assert client.connections == 0
        async with raw_server(answer_each) as (url, _):
            assert (await client.post(url, b"2", "text/plain", timeout=2)).body == b"ok"
        await client.close()

    run(loop_kind, main)


def test_pipelined_posts_answered_in_order(loop_kind: str) -> None:
    async def two_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            await read_request(reader)
            writer.write(OK)
        await writer.drain()

    async def main() -> None:
        async with http_server(slow_echo) as srv:
            url = f"http://127.0.0.1:{srv.port}/LogEvents"
            client = HttpClient(limits=ClientLimits(max_per_origin=1))
            bodies = [b"e%d" % i for i in range(10)]
            got = await client.post_many(url, bodies, "application/json", timeout=5)
            assert [r.body for r in got] == [b"POST /LogEvents " + b for b in bodies]  # type: ignore[union-attr]
            assert client.connections == 1  # kept for the next batch
            await client.close()
        async with raw_server(two_then_close) as (url, accepted):
            client = HttpClient()
            got = await client.post_many(url, [b"1", b"2", b"3", b"4"], "text/plain", timeout=2)
            assert [getattr(r, "body", None) for r in got[:2]] == [b"ok", b"ok"]
            assert all(isinstance(r, HttpClientError) and r.kind == "closed" for r in got[2:])
            got = await client.post_many(url, [b"1", b"2"], "text/plain", timeout=2)
            assert [getattr(r, "body", None) for r in got] == [b"ok", b"ok"]
            # that connection, reused, is closed before the first answer: once more, fresh
            got = await client.post_many(url, [b"1", b"2"], "text/plain", timeout=2, retry=True)
            assert [getattr(r, "body", None) for r in got] == [b"ok", b"ok"]
            await asyncio.sleep(0.1)
            assert accepted[0] == 3 and client.connections == 0
            await client.close()

    run(loop_kind, main)
