"""The LoST server over real HTTP(S) on loopback: paths, content types, TLS, trees of servers."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from lost_data import BOROUGH_POINTS, OUTSIDE_POINTS, psap_uri

from ng911.location.geodetic import Point
from ng911.lost.embedded import EmbeddedStore
from ng911.lost.engine import EngineConfig, NextServer
from ng911.lost.protocol import (
    FindServiceRequest,
    FindServiceResponse,
    LostErrorResponse,
    LostLocation,
    Redirect,
    build_request,
    parse_response,
)
from ng911.lost.server import LostServer, RunningServer, ServerConfig, serve
from ng911.lost.store import BoundaryStore

FIND = (
    b'<findService xmlns="urn:ietf:params:xml:ns:lost1" xmlns:gml="http://www.opengis.net/gml">'
    b'<location id="abc" profile="geodetic-2d"><gml:Point srsName="urn:ogc:def:crs:EPSG::4326">'
    b"<gml:pos>40.6782, -73.9442</gml:pos></gml:Point></location>"
    b"<service>urn:service:sos</service></findService>"
)


async def post(
    url: str, body: bytes, ctype: str | None = "application/lost+xml", ssl_ctx: Any = None
) -> tuple[int, bytes]:
    headers = {"Content-Type": ctype} if ctype else {}
    async with aiohttp.ClientSession() as s:
        skip = () if ctype else ("Content-Type",)
        async with s.post(
            url,
            data=body,
            headers=headers,
            ssl=ssl_ctx if ssl_ctx else True,
            skip_auto_headers=skip,
        ) as r:
            return r.status, await r.read()


def base(running: RunningServer) -> str:
    return f"{running.scheme}://127.0.0.1:{running.port}"


@pytest.mark.parametrize("path", ["/lost", "/LoST", "/"])
@pytest.mark.parametrize("ctype", ["application/lost+xml", "application/xml", "text/xml", None])
async def test_paths_and_content_types(
    lost_server: RunningServer, path: str, ctype: str | None
) -> None:
    status, body = await post(base(lost_server) + path, FIND, ctype)
    assert status == 200
    resp = parse_response(body)
    assert isinstance(resp, FindServiceResponse)
    assert resp.mappings[0].uris == (psap_uri("brooklyn"),)
    assert resp.location_used == "abc" and resp.path == ("ecrf.test",)


async def test_http_level_errors(lost_server: RunningServer) -> None:
    status, _ = await post(lost_server.url, b'{"findService": 1}', "application/json")
    assert status == 415
    async with aiohttp.ClientSession() as s:
        async with s.get(lost_server.url) as r:
            assert r.status == 405
        async with s.post(base(lost_server) + "/nothing", data=FIND) as r:
            assert r.status == 404


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"garbage",
        b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b'<findService xmlns="urn:ietf:params:xml:ns:lost1">&e;</findService>',
        b"<findService xmlns='urn:ietf:params:xml:ns:lost1'>"
        + b"<a>" * 3000
        + b"</a>" * 3000
        + b"</findService>",
    ],
)
async def test_bad_bodies_get_bad_request(lost_server: RunningServer, body: bytes) -> None:
    status, raw = await post(lost_server.url, body)
    assert status == 200
    resp = parse_response(raw)
    assert isinstance(resp, LostErrorResponse) and resp.kind == "badRequest"


async def test_body_beyond_max_is_413(lost_server: RunningServer) -> None:
    status, _ = await post(lost_server.url, b"<x>" + b"C" * 1_100_000 + b"</x>")
    assert status == 413
    # beyond the default 64 KB: refused at the HTTP level before the XML parser sees it
    big = FIND.replace(b"</findService>", b"<x>" + b"B" * 300_000 + b"</x></findService>")
    status, _ = await post(lost_server.url, big)
    assert status == 413


async def test_many_requests_on_one_connection(lost_server: RunningServer) -> None:
    async with aiohttp.ClientSession() as s:
        for borough, (lat, lon) in BOROUGH_POINTS.items():
            req = FindServiceRequest(locations=(LostLocation("p", "geodetic-2d", Point(lat, lon)),))
            async with s.post(lost_server.url, data=build_request(req)) as r:
                resp = parse_response(await r.read())
                assert isinstance(resp, FindServiceResponse)
                assert resp.mappings[0].uris == (psap_uri(borough),)


async def test_forbidden_peer(embedded_store: EmbeddedStore) -> None:
    cfg = ServerConfig(
        engine=EngineConfig(source="ecrf.test"), allowed_peers=frozenset({"10.9.9.9"})
    )
    running = await serve(LostServer(embedded_store, cfg).app)
    try:
        _, raw = await post(running.url, FIND)
        resp = parse_response(raw)
        assert isinstance(resp, LostErrorResponse) and resp.kind == "forbidden"
    finally:
        await running.close()


# ----------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from ng911.pki.ca import init_ca
    from ng911.pki.certs import issue

    root = tmp_path_factory.mktemp("lostpki")
    ca = init_ca(root / "ca", name="LoST test CA")
    srv = issue(
        ca, "ecrf", dns=["ecrf.esinet.example", "localhost"], ips=["127.0.0.1"], out_dir=root
    )
    cli = issue(ca, "esrp", dns=["esrp.esinet.example"], out_dir=root)
    other_ca = init_ca(root / "other", name="Other CA")
    rogue = issue(other_ca, "rogue", dns=["rogue.example"], out_dir=root)
    return {
        "ca": ca.cert_path,
        "srv_cert": srv.chain_path,
        "srv_key": srv.key_path,
        "cli_cert": cli.chain_path,
        "cli_key": cli.key_path,
        "rogue_cert": rogue.chain_path,
        "rogue_key": rogue.key_path,
    }


@pytest.fixture
async def tls_server(
    embedded_store: EmbeddedStore, pki: dict[str, Path]
) -> AsyncIterator[RunningServer]:
    from ng911.pki.tls import server_context

    ctx = server_context(pki["srv_cert"], pki["srv_key"], [pki["ca"]], require_client_cert=True)
    cfg = ServerConfig(
        engine=EngineConfig(source="ecrf.test"), allowed_peers=frozenset({"esrp.esinet.example"})
    )
    running = await serve(LostServer(embedded_store, cfg).app, ssl_context=ctx)
    yield running
    await running.close()


async def test_https_mutual_tls(tls_server: RunningServer, pki: dict[str, Path]) -> None:
    from ng911.pki.tls import client_context

    assert tls_server.url.startswith("https://")
    ctx = client_context([pki["ca"]], cert=pki["cli_cert"], key=pki["cli_key"])
    status, raw = await post(tls_server.url, FIND, ssl_ctx=ctx)
    assert status == 200
    resp = parse_response(raw)
    assert isinstance(resp, FindServiceResponse) and resp.mappings[0].uris == (
        psap_uri("brooklyn"),
    )


def test_https_mutual_tls_on_uvloop(embedded_store: EmbeddedStore, pki: dict[str, Path]) -> None:
    """The loop `ng911 lost serve` runs on: client certificate checked and its names read
    (allowed_peers) from uvloop's TLS transport too."""
    import uvloop

    from ng911.pki.tls import client_context, server_context

    async def main() -> None:
        ctx = server_context(pki["srv_cert"], pki["srv_key"], [pki["ca"]], require_client_cert=True)
        cfg = ServerConfig(
            engine=EngineConfig(source="ecrf.test"),
            allowed_peers=frozenset({"esrp.esinet.example"}),
        )
        running = await serve(LostServer(embedded_store, cfg), ssl_context=ctx)
        try:
            cctx = client_context([pki["ca"]], cert=pki["cli_cert"], key=pki["cli_key"])
            status, raw = await post(running.url, FIND, ssl_ctx=cctx)
            resp = parse_response(raw)
            assert status == 200 and isinstance(resp, FindServiceResponse)
            with pytest.raises((aiohttp.ClientError, ssl.SSLError, OSError)):
                await post(running.url, FIND, ssl_ctx=client_context([pki["ca"]]))
        finally:
            await running.close()

    uvloop.run(main())


async def test_https_without_client_cert_is_refused(
    tls_server: RunningServer, pki: dict[str, Path]
) -> None:
    from ng911.pki.tls import client_context

    for ctx in (
        client_context([pki["ca"]]),
        client_context([pki["ca"]], cert=pki["rogue_cert"], key=pki["rogue_key"]),
    ):
        with pytest.raises((aiohttp.ClientError, ssl.SSLError, OSError)):
            await post(tls_server.url, FIND, ssl_ctx=ctx)


async def test_https_client_that_is_not_allowed_gets_forbidden(
    embedded_store: EmbeddedStore, pki: dict[str, Path]
) -> None:
    from ng911.pki.tls import client_context, server_context

    ctx = server_context(pki["srv_cert"], pki["srv_key"], [pki["ca"]], require_client_cert=True)
    cfg = ServerConfig(
        engine=EngineConfig(source="ecrf.test"), allowed_peers=frozenset({"psap.example"})
    )
    running = await serve(LostServer(embedded_store, cfg).app, ssl_context=ctx)
    try:
        cctx = client_context([pki["ca"]], cert=pki["cli_cert"], key=pki["cli_key"])
        _, raw = await post(running.url, FIND, ssl_ctx=cctx)
        resp = parse_response(raw)
        assert isinstance(resp, LostErrorResponse) and resp.kind == "forbidden"
    finally:
        await running.close()


# ----------------------------------------------------------------------------- RFC 5582 trees


def outside_request(recursive: bool, path: tuple[str, ...] = ()) -> bytes:
    lat, lon = OUTSIDE_POINTS["newark"]
    return build_request(
        FindServiceRequest(
            locations=(LostLocation("n1", "geodetic-2d", Point(lat, lon)),),
            recursive=recursive,
            path=path,
        )
    )


def nj_store(tmp_path: Path) -> EmbeddedStore:
    """A second ECRF's data: one area around Newark."""
    p = tmp_path / "nj.geojson"
    p.write_text(
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties":'
        ' {"name": "Newark", "key": "nj-newark", "uri": "sip:psap-newark@nj.example"},'
        ' "geometry": {"type": "Polygon", "coordinates": [[[-74.25, 40.68], [-74.10, 40.68],'
        " [-74.10, 40.80], [-74.25, 40.80], [-74.25, 40.68]]]}}]}"
    )
    return EmbeddedStore.from_geojson(p)


async def test_recursion_redirect_and_loop_across_two_servers(
    store: BoundaryStore, tmp_path: Path
) -> None:
    # B (the NJ ECRF) knows Newark; its own next server is A: a query that neither
    # covers goes A -> B -> A and must be stopped as a loop.
    b_server = LostServer(
        nj_store(tmp_path), ServerConfig(engine=EngineConfig(source="ecrf-b.test"))
    )
    b = await serve(b_server.app)
    a_server = LostServer(
        store,
        ServerConfig(engine=EngineConfig(source="ecrf-a.test", next_server=NextServer(b.url))),
    )
    a = await serve(a_server.app)
    b_server.engine.config = EngineConfig(source="ecrf-b.test", next_server=NextServer(a.url))
    try:
        # Recursive: A forwards to B, B answers; the path shows both, A first.
        _, raw = await post(a.url, outside_request(True, ("esrp.test",)))
        resp = parse_response(raw)
        assert isinstance(resp, FindServiceResponse), resp
        assert resp.mappings[0].uris == ("sip:psap-newark@nj.example",)
        assert resp.mappings[0].source == "ecrf-b.test"
        assert resp.path == ("esrp.test", "ecrf-a.test", "ecrf-b.test")
        assert resp.location_used == "n1"
        # Iterative: A redirects to B.
        _, raw = await post(a.url, outside_request(False))
        red = parse_response(raw)
        assert isinstance(red, Redirect) and red.target == b.url and red.source == "ecrf-a.test"
        # A covered location is still answered by A itself.
        _, raw = await post(a.url, FIND)
        local = parse_response(raw)
        assert isinstance(local, FindServiceResponse) and local.path == ("ecrf-a.test",)
        # Atlantic: neither covers it; A -> B -> A: loop.
        lat, lon = OUTSIDE_POINTS["atlantic"]
        req = FindServiceRequest(
            locations=(LostLocation("z", "geodetic-2d", Point(lat, lon)),), recursive=True
        )
        _, raw = await post(a.url, build_request(req))
        loop = parse_response(raw)
        assert isinstance(loop, LostErrorResponse) and loop.kind == "loop"
        assert loop.source == "ecrf-a.test"
    finally:
        await a.close()
        await b.close()


async def test_next_server_timeout_and_error(embedded_store: EmbeddedStore) -> None:
    # A listener that accepts and never answers -> serverTimeout.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    silent_url = f"http://127.0.0.1:{silent.getsockname()[1]}/lost"
    # A port nobody listens on -> serverError.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_url = f"http://127.0.0.1:{closed.getsockname()[1]}/lost"
    closed.close()
    try:
        for url, kind in ((silent_url, "serverTimeout"), (closed_url, "serverError")):
            cfg = ServerConfig(
                engine=EngineConfig(source="ecrf.test", next_server=NextServer(url)),
                forward_timeout=0.3,
            )
            running = await serve(LostServer(embedded_store, cfg).app)
            try:
                _, raw = await asyncio.wait_for(post(running.url, outside_request(True)), 5)
                resp = parse_response(raw)
                assert isinstance(resp, LostErrorResponse) and resp.kind == kind, resp
            finally:
                await running.close()
    finally:
        silent.close()


async def test_next_server_answering_nonsense_is_server_error(
    embedded_store: EmbeddedStore,
) -> None:
    from ng911.net.http1 import Request, Response, serve_http

    def handler(_r: Request) -> Response:
        return Response(200, b"<html>hello</html>", (("Content-Type", "text/html"),))

    j = await serve_http(handler, path="/lost")
    cfg = ServerConfig(engine=EngineConfig(source="ecrf.test", next_server=NextServer(j.url)))
    running = await serve(LostServer(embedded_store, cfg).app)
    try:
        _, raw = await post(running.url, outside_request(True))
        resp = parse_response(raw)
        assert isinstance(resp, LostErrorResponse) and resp.kind == "serverError"
    finally:
        await running.close()
        await j.close()


async def test_errors_are_logged_as_json(
    lost_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    import json
    import logging

    with caplog.at_level(logging.INFO, logger="ng911.lost.server"):
        await post(lost_server.url, b"<oops")
    events = [json.loads(r.getMessage()) for r in caplog.records if r.name == "ng911.lost.server"]
    assert any(e["event"] == "lost.error" and e["kind"] == "badRequest" for e in events)
