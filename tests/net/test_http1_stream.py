"""`ng911.net.http1.StreamResponse` on real sockets: chunks arrive in order after a head
without Content-Length; a client that stops reading is cut off after `stall_timeout`; a
client that goes away, a producer that fails and a server that stops each end the stream and
close its iterator (its `finally` runs); the deadlines' sweep leaves a live stream alone;
plain requests on the same server, and before the stream on the same connection, still work.
Run on both loops the servers may use (asyncio and uvloop)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from ng911.net.http1 import (
    HttpLimits,
    HttpServer,
    Request,
    Response,
    StreamResponse,
    encode,
    encode_stream_head,
)


class Producer:
    """A stream's body that records how far it got and whether it was closed."""

    def __init__(self, chunks: int = 5, size: int = 0, *, wait: bool = False) -> None:
        self.chunks = chunks
        self.size = size
        self.wait = wait  # after the chunks, wait (forever) instead of ending
        self.yielded = 0
        self.closed = asyncio.Event()
        self.fail = False

    async def body(self) -> AsyncIterator[bytes]:
        try:
            for i in range(self.chunks):
                if self.fail and i == 2:
                    raise RuntimeError("the producer broke")
                self.yielded += 1
                yield (b"chunk %d\n" % i) if not self.size else b"x" * self.size
                await asyncio.sleep(0)
            if self.wait:
                await asyncio.Event().wait()
        finally:
            self.closed.set()


class App:
    """/plain answers at once; /stream (sync) and /astream (after an await) stream."""

    def __init__(self, producer: Producer, stall: float = 60.0, sndbuf: int = 0) -> None:
        self.producer = producer
        self.stall = stall
        self.sndbuf = sndbuf

    def __call__(self, req: Request) -> Any:
        if req.path == "/plain":
            return Response(200, b"plain " + req.body, (("Content-Type", "text/plain"),))
        if req.path == "/astream":
            return self._later()
        return self._stream(req)

    async def _later(self) -> StreamResponse:
        await asyncio.sleep(0.01)
        return self._stream(None)

    def _stream(self, req: Request | None) -> StreamResponse:
        if req is not None and self.sndbuf and req.conn.transport is not None:
            sock = req.conn.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
        headers = (("Content-Type", "text/event-stream"),)
        return StreamResponse(self.producer.body(), headers=headers, stall_timeout=self.stall)


@contextlib.asynccontextmanager
async def running(
    handler: Callable[[Request], Any], events: list[str] | None = None, **limits: float
) -> AsyncIterator[HttpServer]:
    def event(name: str, **fields: object) -> None:
        if events is not None:
            events.append(name)

    server = HttpServer(handler, HttpLimits(**limits), max_body=1000, event=event)
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.stop()


async def read_all(reader: asyncio.StreamReader, timeout: float = 10.0) -> bytes:
    got = b""
    with contextlib.suppress(TimeoutError, OSError):
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                got += chunk
    return got


async def read_until(reader: asyncio.StreamReader, marker: bytes, timeout: float = 10.0) -> bytes:
    async with asyncio.timeout(timeout):
        return await reader.readuntil(marker)


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run(kind: str, coro_fn: Callable[[], Any]) -> None:
    if kind == "uvloop":
        import uvloop

        uvloop.run(coro_fn())
    else:
        asyncio.run(coro_fn())


def test_chunks_arrive_in_order_after_a_close_delimited_head(loop_kind: str) -> None:
    async def main() -> None:
        for path in (b"/stream", b"/astream"):
            producer = Producer(chunks=5)
            async with running(App(producer)) as server:
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path)
                got = await read_all(reader)  # the stream ends: the server closes
                writer.close()
                head, _, body = got.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200 OK\r\nDate: ")
                assert b"Content-Type: text/event-stream" in head
                assert b"Connection: close" in head and b"Content-Length" not in head
                assert body == b"".join(b"chunk %d\n" % i for i in range(5))
                await asyncio.wait_for(producer.closed.wait(), 5)
                assert not server.connections

    run(loop_kind, main)


def test_plain_answers_before_a_stream_and_beside_it(loop_kind: str) -> None:
    """A pipelined plain request is answered before the stream on the same connection; a
    second connection's keep-alive requests are answered while the stream lives."""

    async def main() -> None:
        producer = Producer(chunks=1, wait=True)
        async with running(App(producer)) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                b"POST /plain HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
                b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n"
            )
            first = await read_until(reader, b"chunk 0\n")
            assert first.index(b"plain hi") < first.index(b"text/event-stream")
            plain = b"POST /plain HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\n%d"
            r2, w2 = await asyncio.open_connection("127.0.0.1", server.port)
            w2.write(plain % 1 + plain % 2 + b"GET /plain HTTP/1.1\r\nConnection: close\r\n\r\n")
            answers = await read_all(r2)
            w2.close()
            assert answers.count(b"HTTP/1.1 200 OK") == 3 and b"plain 2" in answers
            assert len(server.connections) == 1  # the stream is still there
            writer.close()

    run(loop_kind, main)


def test_the_deadline_sweep_leaves_a_live_stream_alone(loop_kind: str) -> None:
    """Idle and head deadlines of 0.2 s; a stream silent for well past them still delivers."""

    async def main() -> None:
        gate = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            yield b"first\n"
            await gate.wait()
            yield b"second\n"

        limits = {"idle_timeout": 0.2, "header_timeout": 0.2, "body_timeout": 0.2}
        async with running(lambda req: StreamResponse(body()), **limits) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            await read_until(reader, b"first\n")
            await asyncio.sleep(1.0)  # five deadlines' worth of sweeps
            gate.set()
            assert (await read_all(reader)).endswith(b"second\n")
            writer.close()

    run(loop_kind, main)


def test_a_stalled_reader_is_cut_off_after_stall_timeout(loop_kind: str) -> None:
    async def main() -> None:
        producer = Producer(chunks=4000, size=16384)  # 64 MB at most: bounded
        events: list[str] = []
        app = App(producer, stall=0.3, sndbuf=4096)
        async with running(app, events) as server:
            stalled = socket.socket()
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            stalled.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(stalled, ("127.0.0.1", server.port))
                stalled.send(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")  # and never reads
                await asyncio.wait_for(producer.closed.wait(), 20)
                assert "http.stalled" in events
                assert producer.yielded < producer.chunks  # it was not asked for everything
                for _ in range(100):  # bounded: the abort reaches connection_lost
                    if not server.connections:
                        break
                    await asyncio.sleep(0.05)
                assert not server.connections
            finally:
                stalled.close()

    run(loop_kind, main)


def test_a_client_that_goes_away_ends_the_stream(loop_kind: str) -> None:
    async def main() -> None:
        producer = Producer(chunks=1, wait=True)
        async with running(App(producer)) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
            await read_until(reader, b"chunk 0\n")
            writer.close()
            await asyncio.wait_for(producer.closed.wait(), 10)
            for _ in range(100):
                if not server.connections:
                    break
                await asyncio.sleep(0.05)
            assert not server.connections

    run(loop_kind, main)


def test_stopping_the_server_ends_its_streams(loop_kind: str) -> None:
    async def main() -> None:
        producer = Producer(chunks=1, wait=True)
        server = HttpServer(App(producer))
        await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        await read_until(reader, b"chunk 0\n")
        await asyncio.wait_for(server.stop(grace=5.0), 10)
        assert producer.closed.is_set()
        assert await read_all(reader, 5) == b""  # closed after what was sent
        writer.close()

    run(loop_kind, main)


def test_a_failing_producer_ends_its_stream_and_the_server_lives(
    loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        producer = Producer(chunks=5)
        producer.fail = True
        async with running(App(producer)) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
            got = await read_all(reader)
            writer.close()
            assert got.endswith(b"chunk 1\n")
            r2, w2 = await asyncio.open_connection("127.0.0.1", server.port)
            w2.write(b"GET /plain HTTP/1.1\r\nConnection: close\r\n\r\n")
            assert b"200 OK" in await read_all(r2)
            w2.close()

    run(loop_kind, main)
    assert "stream failed" in caplog.text


def test_plain_and_stream_heads_share_their_encoding() -> None:
    plain = encode(Response(200, b"abc", (("X-A", "1"),)), True)
    status, date, length, field, blank = plain.split(b"\r\n", 4)
    assert (status, length, field, blank) == (
        b"HTTP/1.1 200 OK", b"Content-Length: 3", b"X-A: 1", b"\r\nabc"
    )  # fmt: skip
    assert date.startswith(b"Date: ")

    async def nothing() -> AsyncIterator[bytes]:
        yield b""

    head = encode_stream_head(StreamResponse(nothing(), 200, (("X-A", "1"),))).split(b"\r\n")
    assert head[1].startswith(b"Date: ")  # (the second may have turned since `plain`)
    assert head[:1] + head[2:] == [status, b"X-A: 1", b"Connection: close", b"", b""]
    with pytest.raises(ValueError):
        StreamResponse(nothing(), stall_timeout=0)
