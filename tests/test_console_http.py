"""The console's HTTP surface on `ng911.net.http1`, over real sockets and raw bytes (no client
library to normalise a path): unknown paths 404, wrong methods 405 with `Allow`, action
bodies 415/413/400 with a plain-text reason, the page's files with their content types and
nothing else of the package (no traversal), and the event stream's frames, which end when
the console closes. A console watching no chain (`own=False`) starts in milliseconds; the
route table is also tried alone on `serve_http`."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from ng911.console.routes import HttpError, Params, Routes, json_body, json_response
from ng911.console.server import Console
from ng911.net.http1 import Request, Response, serve_http


async def exchange(port: int, raw: bytes, timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """Send one request (with `Connection: close`), read the answer until the close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    got = b""
    with contextlib.suppress(TimeoutError, OSError):
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                got += chunk
    writer.close()
    head, _, body = got.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}, body


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()


def post(path: str, body: bytes, ctype: str = "application/json") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@contextlib.asynccontextmanager
async def watching_console() -> AsyncIterator[tuple[Console, int]]:
    console = Console(own=False)
    url = await console.start("127.0.0.1", 0)
    try:
        yield console, int(url.rstrip("/").rsplit(":", 1)[1])
    finally:
        await console.close()


async def test_unknown_paths_and_wrong_methods_get_clear_answers():
    async with watching_console() as (_console, port):
        status, _h, body = await exchange(port, get("/nope"))
        assert status == 404 and b"/nope" in body
        status, headers, body = await exchange(port, post("/api/topology", b"{}"))
        assert status == 405 and headers["allow"] == "GET" and b"GET" in body
        status, headers, _b = await exchange(port, get("/api/call"))
        assert status == 405 and headers["allow"] == "POST"
        status, _h, _b = await exchange(port, get("/api/takers/a/b/c"))
        assert status == 404
        status, headers, body = await exchange(port, get("/api/topology"))
        assert status == 200 and headers["content-type"].startswith("application/json")
        assert json.loads(body) == {"ready": False}


async def test_action_bodies_415_413_400():
    async with watching_console() as (_console, port):
        cases = [
            (post("/api/scenario", b'{"scenario": "plain"}', "text/plain"), 415),
            (post("/api/scenario", b"x" * 5000), 413),  # over the console's 4 KB
            (post("/api/scenario", b"{not json"), 400),
            (post("/api/scenario", b"\xff\xfe"), 400),
            (post("/api/scenario", b"[1, 2]"), 400),
            (post("/api/scenario", b'{"scenario": "nope"}'), 400),  # no such chain attached
            (post("/api/call", b'{"lat": 40.7, "lon": -73.9}'), 409),  # it only watches
            (post("/api/takers/t/answer", b"{}"), 409),
            (get("/api/message/abc"), 400),
            (get("/api/message/99"), 404),
        ]
        for raw, want in cases:
            status, headers, body = await exchange(port, raw)
            assert status == want, (raw[:60], status, body)
            assert headers["content-type"].startswith("text/plain") and body.strip(), raw[:60]


async def test_page_files_have_their_content_types_and_nothing_else_is_served():
    async with watching_console() as (_console, port):
        for path, ctype, marker in [
            ("/", "text/html", b"ng911 live console"),
            ("/static/index.html", "text/html", b"<html"),
            ("/static/app.js", "text/javascript", b"EventSource"),
            ("/static/style.css", "text/css", b"{"),
        ]:
            status, headers, body = await exchange(port, get(path))
            assert status == 200 and headers["content-type"].startswith(ctype), path
            assert marker in body, path
        for path in [
            "/static/../server.py",
            "/static/..%2Fserver.py",
            "/static/%2e%2e/server.py",
            "/static/%2e%2e%2f%2e%2e%2f__init__.py",
            "/static/server.py",
            "/static/",
            "/static//etc/passwd",
            "/static/app.js/..",
        ]:
            status, _h, body = await exchange(port, get(path))
            assert status == 404 and b"import" not in body, (path, status, body[:80])


async def test_the_event_stream_delivers_frames_and_ends_with_the_console():
    console = Console(own=False)
    url = await console.start("127.0.0.1", 0)
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    assert console.hub is not None
    console.hub.publish({"type": "before"})  # a new viewer catches up on it
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /api/events HTTP/1.1\r\nHost: t\r\n\r\n")
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK")
            assert b"Content-Type: text/event-stream" in head and b"Content-Length" not in head
            frames: list[dict] = []
            while len(frames) < 3:
                line = await reader.readline()
                if line.startswith(b"data: "):
                    frames.append(json.loads(line[6:]))
                if len(frames) == 2 and not console.hub.recent.get(2):
                    console.hub.publish({"type": "live"})
        assert [f["type"] for f in frames] == ["before", "state", "live"]
        assert frames[1]["ready"] is False
        assert len(console.hub.viewers) == 1
        await asyncio.wait_for(console.close(), 10)
        async with asyncio.timeout(10):
            await reader.read()  # returns: the console closed the stream
        assert not console.hub.viewers
    finally:
        writer.close()
        await console.close()


async def test_the_route_table_alone():
    async def echo(request: Request, params: Params) -> Response:
        body = json_body(request, 16)
        if body.get("fail"):
            raise HttpError(409, "asked to fail")
        return json_response({"params": dict(params), "body": body}, status=201)

    routes = Routes()
    routes.post("/a/{x}/b/{y}", echo)
    routes.get("/a/{x}/b/{y}", echo)
    server = await serve_http(routes, max_body=1000)
    try:
        status, headers, body = await exchange(server.port, post("/a/1/b/two%20words", b""))
        assert status == 201 and headers["content-type"].startswith("application/json")
        assert json.loads(body) == {"params": {"x": "1", "y": "two words"}, "body": {}}
        status, _h, body = await exchange(server.port, get("/a/1/b/%2F"))
        assert status == 201 and json.loads(body)["params"]["y"] == "/"  # one segment
        status, _h, body = await exchange(server.port, post("/a/1/b/2", b'{"fail": 1}'))
        assert (status, body) == (409, b"asked to fail\n")
        status, _h, body = await exchange(server.port, post("/a/1/b/2", b'{"k": "' + b"v" * 20))
        assert status == 413 and b"16 bytes" in body  # json_body's own limit
        status, headers, _b = await exchange(server.port, get("/a/1/b/2").replace(b"GET", b"PUT"))
        assert status == 405 and headers["allow"] == "GET, POST"
        for path in ("/a//b/2", "/a/1/b", "/a/1/b/2/3", "/"):
            status, _h, _b = await exchange(server.port, get(path))
            assert status == 404, path
    finally:
        await server.close()
