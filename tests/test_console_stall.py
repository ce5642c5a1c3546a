"""The console never slows calls: a browser that stops reading loses frames, never calls.

A raw TCP client opens the event stream and never reads a byte. Calls keep completing, the
stalled viewer's queue stays within its bound and the hub counts the frames it dropped (no
timing assert: the point is that nothing waits for the browser). Also: hostile requests to
the console's API get a clear 4xx, never a crash.
"""

from __future__ import annotations

import asyncio
import socket

import aiohttp

from ng911.console.server import Console

BOUND = 32


async def test_a_stalled_viewer_drops_frames_and_calls_complete():
    console = Console(scenario="plain", viewer_size=BOUND)
    url = await console.start("127.0.0.1", 0)
    host, port = url.split("//")[1].rstrip("/").split(":")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    stalled.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(stalled, (host, int(port)))
        stalled.send(f"GET /api/events HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        assert console.hub is not None and console.chain is not None
        for _ in range(50):  # until the viewer has surely fallen behind
            if console.hub.viewers:
                break
            await asyncio.sleep(0.05)
        assert len(console.hub.viewers) == 1
        lat, lon = console.chain.topology.point("Queens")
        statuses = []
        for _ in range(150):  # bounded: stop as soon as frames were dropped
            rec = await console.chain.place_call(lat, lon)
            statuses.append(rec.status)
            stats = console.hub.stats()
            assert stats["max_viewer_queue"] <= BOUND
            if stats["viewer_dropped"] > 0 and len(statuses) >= 5:
                break
        assert set(statuses) == {200}, statuses
        stats = console.hub.stats()
        assert stats["viewer_dropped"] > 0, stats
        assert stats["raw_dropped"] == 0 and stats["errors"] == 0, stats
        # a second, healthy viewer still gets live frames
        async with aiohttp.ClientSession() as s, s.get(url + "api/events") as resp:
            line = await asyncio.wait_for(resp.content.readline(), 10)
            assert line.startswith(b"data: ")
    finally:
        stalled.close()
        await console.close()


async def test_hostile_api_requests_get_clear_errors():
    console = Console(scenario="plain")
    url = await console.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as s:
            cases = [
                ("post", "api/call", b"{not json", 400),
                ("post", "api/call", b"[1, 2]", 400),
                ("post", "api/call", b'{"lat": "x", "lon": 1}', 400),
                ("post", "api/call", b'{"lat": 91, "lon": 1}', 400),
                ("post", "api/call", b"x" * 10000, 413),
                ("post", "api/scenario", b'{"scenario": "nope"}', 400),
                ("post", "api/takers/nobody/answer", b"{}", 404),
                ("post", "api/takers/taker-brooklyn/dance", b"{}", 404),
                ("post", "api/takers/taker-brooklyn/answer", b'{"call_id": "x"}', 409),
                ("post", "api/takers/taker-brooklyn/hangup", b'{"call_id": "x"}', 409),
                ("get", "api/message/abc", None, 400),
                ("get", "api/message/999999", None, 404),
                ("get", "static/../server.py", None, 404),
            ]
            json_type = {"Content-Type": "application/json"}
            for method, path, body, status in cases:
                headers = json_type if body is not None else {}
                async with s.request(method, url + path, data=body, headers=headers) as resp:
                    assert resp.status == status, (path, body, resp.status, await resp.text())
            # an action's body must say it is JSON
            async with s.post(url + "api/call", data=b'{"lat": 40.7, "lon": -73.9}') as resp:
                assert resp.status == 415, await resp.text()
            async with s.get(url + "api/topology") as resp:
                topo = await resp.json()
                assert topo["scenario"] == "plain" and topo["hops"]["hop1"]["transport"] == "udp"
            async with s.get(url) as resp:
                assert "ng911 live console" in await resp.text()
            # switching scenario restarts the chain under it; a call then completes
            async with s.post(url + "api/scenario", json={"scenario": "tls-all"}) as resp:
                topo = await resp.json()
                assert topo["hops"]["hop4"]["transport"] == "tls" and topo["lost"]["mutual"]
            assert console.chain is not None
            rec = await console.chain.place_call(*console.chain.topology.point("Bronx"))
            assert rec.status == 200 and console.chain.psap_of(rec) == "psap-bronx"
    finally:
        await console.close()
